//! End users' logins on Keyfob's own pages.
//!
//! Like the dashboard's (see `dashboard::session`), with its own cookies scoped to `/auth`: a login
//! is a random 256-bit token in an `HttpOnly; SameSite=Lax` cookie, kept in `user_sessions` only as
//! its SHA-256 with the session's CSRF token. The cookies, and the signed form tokens of the login
//! and sign-up forms, follow the rules shared with the dashboard ([`crate::web::pages`]).

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::secret::{constant_time_eq, hash_secret, random_token};
use keyfob_store::{UserLoginRow, UserRow};

use super::page::UserPageError;
use crate::clock::now_ms;
use crate::dashboard::page::PageError;
use crate::state::AppState;
use crate::web::USER_PAGES;

/// The login cookie's name.
pub const USER_COOKIE: &str = USER_PAGES.session_cookie;
/// The double-submit cookie of the login and sign-up forms.
pub const USER_FORM_COOKIE: &str = USER_PAGES.form_cookie;
/// The cookie that marks a browser an end user has logged in from (see `crate::logins`).
pub const USER_DEVICE_COOKIE: &str = USER_PAGES.device_cookie;

/// A logged-in end user. As an extractor it sends a request without a live login to the login
/// page.
pub struct UserSession {
    /// SHA-256 of the cookie's value: the login's key in the database.
    pub id_hash: String,
    pub user_id: String,
    pub email: String,
    csrf_token: String,
}

impl UserSession {
    /// Checks a submitted CSRF token against this login's, in constant time.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), UserPageError> {
        if !submitted.is_empty() && constant_time_eq(submitted, &self.csrf_token) {
            Ok(())
        } else {
            tracing::warn!(user_id = %self.user_id, "user form refused: bad CSRF token");
            Err(PageError::csrf().into())
        }
    }

    /// The CSRF token to put in this user's forms.
    pub fn csrf(&self) -> &str {
        &self.csrf_token
    }
}

impl OptionalFromRequestParts<AppState> for UserSession {
    type Rejection = UserPageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, UserPageError> {
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = USER_PAGES.session_token(&jar) else {
            return Ok(None);
        };
        let id_hash = hash_secret(token);
        let Some(row) = state.store.find_user_login(&id_hash, now_ms()).await? else {
            return Ok(None);
        };
        let Some(user) = state.store.find_user(&row.user_id).await? else {
            return Ok(None);
        };
        Ok(Some(UserSession {
            id_hash,
            user_id: row.user_id,
            email: user.email,
            csrf_token: row.csrf_token,
        }))
    }
}

impl FromRequestParts<AppState> for UserSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match <UserSession as OptionalFromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
        {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(Redirect::to(super::LOGIN_PATH).into_response()),
            Err(err) => Err(err.into_response()),
        }
    }
}

/// Logs `user` in and sets the cookie, ending first any login the browser already had, so a
/// session id planted before login is never the one that gets signed in.
pub async fn start(
    state: &AppState,
    jar: CookieJar,
    user: &UserRow,
) -> Result<CookieJar, UserPageError> {
    if let Some(old) = USER_PAGES.session_token(&jar) {
        state.store.delete_user_login(&hash_secret(old)).await?;
    }
    let token = random_token();
    let now = now_ms();
    let row = UserLoginRow {
        id_hash: hash_secret(&token),
        user_id: user.id.clone(),
        csrf_token: random_token(),
        created_at: now,
        expires_at: now + USER_PAGES.session_lifetime.whole_seconds() * 1000,
    };
    state.store.insert_user_login(&row).await?;
    Ok(jar.add(USER_PAGES.session_cookie(state, token)))
}
