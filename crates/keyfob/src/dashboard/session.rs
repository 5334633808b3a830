//! Owner sessions and CSRF protection.
//!
//! A session is a random 256-bit token in an `HttpOnly; SameSite=Lax` cookie scoped to
//! `/dashboard`; the database keeps only its SHA-256, with the session's CSRF token, which every
//! form of a signed-in page carries and every POST must send back (compared in constant time).
//! The cookies themselves, and the signed form tokens of the pages shown before login, are kept by
//! the rules shared with the end users' pages ([`crate::web::pages`]).

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::secret::{constant_time_eq, hash_secret, random_token};
use keyfob_store::{Owner, OwnerLoginRow};

use super::page::{Layout, PageError};
use crate::clock::now_ms;
use crate::state::AppState;
use crate::web::DASHBOARD;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = DASHBOARD.session_cookie;
/// The double-submit cookie of the sign-up and login forms.
pub const FORM_COOKIE: &str = DASHBOARD.form_cookie;
/// The cookie that marks a browser an owner has logged in from (see `crate::logins`).
pub const DEVICE_COOKIE: &str = DASHBOARD.device_cookie;
/// Where a request without a session is sent.
pub const LOGIN_PATH: &str = DASHBOARD.login_path;

/// A signed-in owner. As an extractor it answers a request without a live session with a redirect
/// to the login page, so a handler that takes it is reachable only by the owner.
pub struct Session {
    /// SHA-256 of the cookie's value: the session's key in the database.
    pub id_hash: String,
    pub owner_id: String,
    pub account_id: String,
    pub email: String,
    csrf_token: String,
}

impl Session {
    /// Checks a submitted CSRF token against this session's, in constant time.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), PageError> {
        if !submitted.is_empty() && constant_time_eq(submitted, &self.csrf_token) {
            Ok(())
        } else {
            tracing::warn!(owner_id = %self.owner_id, "dashboard form refused: bad CSRF token");
            Err(PageError::csrf())
        }
    }

    /// The layout of a signed-in page in `section`.
    pub fn layout(&self, section: &'static str) -> Layout {
        Layout {
            email: Some(self.email.clone()),
            csrf: self.csrf_token.clone(),
            section,
        }
    }
}

impl OptionalFromRequestParts<AppState> for Session {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, PageError> {
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = DASHBOARD.session_token(&jar) else {
            return Ok(None);
        };
        let id_hash = hash_secret(token);
        let Some(row) = state.store.find_owner_login(&id_hash, now_ms()).await? else {
            return Ok(None);
        };
        let Some(owner) = state.store.find_owner(&row.owner_id).await? else {
            return Ok(None);
        };
        Ok(Some(Session {
            id_hash,
            owner_id: row.owner_id,
            account_id: row.account_id,
            email: owner.email,
            csrf_token: row.csrf_token,
        }))
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match <Session as OptionalFromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
        {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(Redirect::to(LOGIN_PATH).into_response()),
            Err(err) => Err(err.into_response()),
        }
    }
}

/// Starts a session for `owner` and sets its cookie. A session the browser already had is ended
/// first, so a session id planted before login is never the one that gets signed in.
pub async fn start(
    state: &AppState,
    jar: CookieJar,
    owner: &Owner,
) -> Result<CookieJar, PageError> {
    if let Some(old) = DASHBOARD.session_token(&jar) {
        state.store.delete_owner_login(&hash_secret(old)).await?;
    }
    let token = random_token();
    let now = now_ms();
    let row = OwnerLoginRow {
        id_hash: hash_secret(&token),
        owner_id: owner.id.clone(),
        account_id: owner.account_id.clone(),
        csrf_token: random_token(),
        created_at: now,
        expires_at: now + DASHBOARD.session_lifetime.whole_seconds() * 1000,
    };
    state.store.insert_owner_login(&row).await?;
    Ok(jar.add(DASHBOARD.session_cookie(state, token)))
}

/// Ends `session` and clears the cookie.
pub async fn end(
    state: &AppState,
    jar: CookieJar,
    session: Option<&Session>,
) -> Result<CookieJar, PageError> {
    if let Some(session) = session {
        state.store.delete_owner_login(&session.id_hash).await?;
    }
    Ok(DASHBOARD.clear_session(state, jar))
}
