//! End users' logins on Keyfob's own pages, and the CSRF tokens of their forms.
//!
//! Like the dashboard's (see `dashboard::session`), with its own cookies scoped to `/auth`: a login
//! is a random 256-bit token in an `HttpOnly; SameSite=Lax` cookie, kept in `user_sessions` only as
//! its SHA-256 with the session's CSRF token. The login and sign-up forms, shown before there is a
//! session, use a signed double-submit cookie, and a successful login leaves a device cookie.

use std::time::Duration;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::SameSite;
use keyfob_domain::secret::{constant_time_eq, hash_secret, random_token};
use keyfob_store::{UserRow, UserSessionRow};

use super::page::UserPageError;
use crate::clock::now_ms;
use crate::dashboard::page::PageError;
use crate::dashboard::session::cookie;
use crate::logins::{DEVICE_LIFETIME, LoginKind};
use crate::state::AppState;

/// The login cookie's name.
pub const USER_COOKIE: &str = "kf_user";
/// The double-submit cookie of the login and sign-up forms.
pub const USER_FORM_COOKIE: &str = "kf_user_form";
/// The cookie that marks a browser an end user has logged in from (see `crate::logins`).
pub const USER_DEVICE_COOKIE: &str = "kf_user_device";
/// What the form tokens of the end users' pages are signed for.
const FORM_PAGES: &str = "auth";
/// How long a login lasts.
pub const USER_SESSION_LIFETIME: time::Duration = time::Duration::days(7);
const COOKIE_PATH: &str = "/auth";

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
        let Some(cookie) = jar.get(USER_COOKIE) else {
            return Ok(None);
        };
        let id_hash = hash_secret(cookie.value());
        let Some(row) = state.store.find_user_session(&id_hash, now_ms()).await? else {
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
    if let Some(old) = jar.get(USER_COOKIE) {
        state
            .store
            .delete_user_session(&hash_secret(old.value()))
            .await?;
    }
    let token = random_token();
    let now = now_ms();
    let row = UserSessionRow {
        id_hash: hash_secret(&token),
        user_id: user.id.clone(),
        csrf_token: random_token(),
        created_at: now,
        expires_at: now + USER_SESSION_LIFETIME.whole_seconds() * 1000,
    };
    state.store.insert_user_session(&row).await?;
    Ok(jar.add(cookie(
        COOKIE_PATH,
        USER_COOKIE,
        token,
        state.config.secure_cookies(),
        SameSite::Lax,
        USER_SESSION_LIFETIME,
    )))
}

/// Clears the login cookie (the caller ends the login in the database).
pub fn clear(state: &AppState, jar: CookieJar) -> CookieJar {
    let mut removal = cookie(
        COOKIE_PATH,
        USER_COOKIE,
        String::new(),
        state.config.secure_cookies(),
        SameSite::Lax,
        time::Duration::ZERO,
    );
    removal.make_removal();
    jar.add(removal)
}

/// The double-submit token for the login and sign-up forms: the browser's own if this service
/// signed it and it has not expired, or a new one.
pub fn form_token(state: &AppState, jar: CookieJar) -> (CookieJar, String) {
    if let Some(existing) = jar.get(USER_FORM_COOKIE)
        && form_token_is_valid(state, existing.value())
    {
        let value = existing.value().to_owned();
        return (jar, value);
    }
    let token = state.logins.form_token(FORM_PAGES);
    let cookie = cookie(
        COOKIE_PATH,
        USER_FORM_COOKIE,
        token.clone(),
        state.config.secure_cookies(),
        // Lax, not Strict: a user arriving from an application's site (a cross-site navigation)
        // must be able to use a token set earlier; a cross-site POST still never carries it.
        SameSite::Lax,
        USER_SESSION_LIFETIME,
    );
    (jar.add(cookie), token)
}

fn form_token_is_valid(state: &AppState, token: &str) -> bool {
    let max_age = Duration::from_secs(USER_SESSION_LIFETIME.whole_seconds().unsigned_abs());
    state.logins.form_token_is_valid(FORM_PAGES, token, max_age)
}

/// Checks that a login or sign-up form sent back the token in its cookie, and that the token is
/// one this service signed.
pub fn check_form_token(
    state: &AppState,
    jar: &CookieJar,
    submitted: &str,
) -> Result<(), UserPageError> {
    match jar.get(USER_FORM_COOKIE) {
        Some(cookie)
            if constant_time_eq(submitted, cookie.value())
                && form_token_is_valid(state, cookie.value()) =>
        {
            Ok(())
        }
        _ => {
            tracing::warn!("user form refused: bad CSRF token");
            Err(PageError::csrf().into())
        }
    }
}

/// Gives the browser a device cookie for `email` after a successful login.
pub fn remember_device(state: &AppState, jar: CookieJar, email: &str) -> CookieJar {
    jar.add(cookie(
        COOKIE_PATH,
        USER_DEVICE_COOKIE,
        state.logins.device_cookie(LoginKind::User, email),
        state.config.secure_cookies(),
        SameSite::Strict,
        DEVICE_LIFETIME,
    ))
}

/// The browser's device cookie, if it sent one.
pub fn device_cookie(jar: &CookieJar) -> Option<&str> {
    jar.get(USER_DEVICE_COOKIE).map(|c| c.value())
}
