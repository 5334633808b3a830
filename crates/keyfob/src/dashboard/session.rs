//! Owner sessions and CSRF protection.
//!
//! A session is a random 256-bit token in an `HttpOnly; SameSite=Lax` cookie scoped to
//! `/dashboard`; the database keeps only its SHA-256, with the session's CSRF token, which every
//! form of a signed-in page carries and every POST must send back (compared in constant time).
//! The forms shown before login (sign-up, login) have no session to bind a token to, so they use a
//! signed double-submit cookie: a random value signed with a key derived from the master key
//! (`Logins::form_token`), in an `HttpOnly; SameSite=Strict` cookie that the form must repeat. A
//! value the browser or anyone else made up is refused, however well it matches.
//!
//! After a successful login the browser also gets a device cookie (`Logins::device_cookie`),
//! which lets it try that owner's password on its own budget.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use keyfob_domain::secret::{constant_time_eq, hash_secret, random_token};
use keyfob_store::{Owner, SessionRow};

use super::page::{Layout, PageError};
use crate::clock::now_ms;
use crate::logins::{DEVICE_LIFETIME, LoginKind};
use crate::state::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "kf_session";
/// The double-submit cookie of the sign-up and login forms.
pub const FORM_COOKIE: &str = "kf_form";
/// The cookie that marks a browser an owner has logged in from (see `crate::logins`).
pub const DEVICE_COOKIE: &str = "kf_device";
/// What the form tokens of the dashboard are signed for.
const FORM_PAGES: &str = "dashboard";
/// How long a session lasts from login.
pub const SESSION_LIFETIME: time::Duration = time::Duration::hours(12);
const COOKIE_PATH: &str = "/dashboard";
/// Where a request without a session is sent.
pub const LOGIN_PATH: &str = "/dashboard/login";

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
        let Some(cookie) = jar.get(SESSION_COOKIE) else {
            return Ok(None);
        };
        let id_hash = hash_secret(cookie.value());
        let Some(row) = state.store.find_session(&id_hash, now_ms()).await? else {
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

/// A cookie only the pages under `path` receive and no script can read, that lasts `max_age`.
/// Shared by the dashboard and the end-user pages.
pub(crate) fn cookie(
    path: &'static str,
    name: &'static str,
    value: String,
    secure: bool,
    same_site: SameSite,
    max_age: time::Duration,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .secure(secure)
        .same_site(same_site)
        .max_age(max_age)
        .build()
}

/// Starts a session for `owner` and sets its cookie. A session the browser already had is ended
/// first, so a session id planted before login is never the one that gets signed in.
pub async fn start(
    state: &AppState,
    jar: CookieJar,
    owner: &Owner,
) -> Result<CookieJar, PageError> {
    if let Some(old) = jar.get(SESSION_COOKIE) {
        state
            .store
            .delete_session(&hash_secret(old.value()))
            .await?;
    }
    let token = random_token();
    let now = now_ms();
    let row = SessionRow {
        id_hash: hash_secret(&token),
        owner_id: owner.id.clone(),
        account_id: owner.account_id.clone(),
        csrf_token: random_token(),
        created_at: now,
        expires_at: now + SESSION_LIFETIME.whole_seconds() * 1000,
    };
    state.store.insert_session(&row).await?;
    Ok(jar.add(cookie(
        COOKIE_PATH,
        SESSION_COOKIE,
        token,
        state.config.secure_cookies(),
        SameSite::Lax,
        SESSION_LIFETIME,
    )))
}

/// Ends `session` and clears the cookie.
pub async fn end(
    state: &AppState,
    jar: CookieJar,
    session: Option<&Session>,
) -> Result<CookieJar, PageError> {
    if let Some(session) = session {
        state.store.delete_session(&session.id_hash).await?;
    }
    let mut removal = cookie(
        COOKIE_PATH,
        SESSION_COOKIE,
        String::new(),
        state.config.secure_cookies(),
        SameSite::Lax,
        time::Duration::ZERO,
    );
    removal.make_removal();
    Ok(jar.add(removal))
}

/// The double-submit token for a form shown before login: the browser's existing one if this
/// service signed it and it has not expired (so several tabs keep working), or a new one set in a
/// cookie.
pub fn form_token(state: &AppState, jar: CookieJar) -> (CookieJar, String) {
    if let Some(existing) = jar.get(FORM_COOKIE)
        && form_token_is_valid(state, existing.value())
    {
        let value = existing.value().to_owned();
        return (jar, value);
    }
    let token = state.logins.form_token(FORM_PAGES);
    let cookie = cookie(
        COOKIE_PATH,
        FORM_COOKIE,
        token.clone(),
        state.config.secure_cookies(),
        SameSite::Strict,
        SESSION_LIFETIME,
    );
    (jar.add(cookie), token)
}

fn form_token_is_valid(state: &AppState, token: &str) -> bool {
    let max_age = Duration::from_secs(SESSION_LIFETIME.whole_seconds().unsigned_abs());
    state.logins.form_token_is_valid(FORM_PAGES, token, max_age)
}

/// Checks that a form shown before login sent back the token in its cookie, and that the token is
/// one this service signed.
pub fn check_form_token(
    state: &AppState,
    jar: &CookieJar,
    submitted: &str,
) -> Result<(), PageError> {
    match jar.get(FORM_COOKIE) {
        Some(cookie)
            if constant_time_eq(submitted, cookie.value())
                && form_token_is_valid(state, cookie.value()) =>
        {
            Ok(())
        }
        _ => {
            tracing::warn!("dashboard form refused: bad CSRF token");
            Err(PageError::csrf())
        }
    }
}

/// Gives the browser a device cookie for `email` after a successful login.
pub fn remember_device(state: &AppState, jar: CookieJar, email: &str) -> CookieJar {
    jar.add(cookie(
        COOKIE_PATH,
        DEVICE_COOKIE,
        state.logins.device_cookie(LoginKind::Owner, email),
        state.config.secure_cookies(),
        SameSite::Strict,
        DEVICE_LIFETIME,
    ))
}

/// The browser's device cookie, if it sent one.
pub fn device_cookie(jar: &CookieJar) -> Option<&str> {
    jar.get(DEVICE_COOKIE).map(|c| c.value())
}

/// The client's IP address, for per-IP limits and the audit log: the connection's peer, or behind
/// a trusted proxy the address it forwards (`keyfob_domain::net::client_ip`); `unknown` when the
/// server was not started with connection info.
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(ClientIp("unknown".to_owned()));
        };
        let trusted = &state.config.trusted_proxies;
        if trusted.is_empty() {
            return Ok(ClientIp(peer.ip().to_canonical().to_string()));
        }
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        let ip = keyfob_domain::net::client_ip(peer.ip(), &forwarded, trusted);
        Ok(ClientIp(ip.to_string()))
    }
}
