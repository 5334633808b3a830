//! Logins on Keyfob's own pages: an owner's on the dashboard ([`OwnerLogin`]), an end user's on
//! their pages ([`UserLogin`]). (A *session*, by contrast, is an application's refresh family.)
//!
//! A login is a random 256-bit token in an `HttpOnly; SameSite=Lax` cookie scoped to its pages;
//! the database keeps only its SHA-256, with the login's CSRF token, which every form of a page
//! shown after login carries and every POST must send back (compared in constant time). The
//! cookies themselves, and the signed form tokens of the pages shown before login, are kept by the
//! rules of [`super::pages`]; what differs between owners and end users is [`LoginSubject`]'s.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::secret::{constant_time_eq, hash_secret, random_token};
use keyfob_domain::time::Timestamp;
use keyfob_store::{AccountId, Owner, OwnerId, OwnerLoginRow, UserId, UserLoginRow, UserRow};

use super::{LoginClient, LoginSubject};
use crate::logins::LoginKind;
use crate::state::AppState;
use crate::web::PageError;

/// A login's row in the database, whoever it names.
pub trait LoginRow: Send + Sync + 'static {
    /// SHA-256 of the cookie's value: the login's key.
    fn id_hash(&self) -> &str;
    /// The token the forms of its pages carry.
    fn csrf_token(&self) -> &str;
    /// The id of whom it names.
    fn subject_id(&self) -> &str;
    /// The account it acts in, when it names an account's owner.
    fn account(&self) -> Option<&str>;
    /// When it was made: when whom it names typed their password (or signed up). Every login
    /// form makes a new one, so this is the time of the latest authentication in the browser.
    fn created_at(&self) -> Timestamp;
}

impl LoginRow for OwnerLoginRow {
    fn id_hash(&self) -> &str {
        &self.id_hash
    }
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
    fn subject_id(&self) -> &str {
        &self.owner_id
    }
    fn account(&self) -> Option<&str> {
        Some(self.account_id.as_str())
    }
    fn created_at(&self) -> Timestamp {
        self.created_at
    }
}

impl LoginRow for UserLoginRow {
    fn id_hash(&self) -> &str {
        &self.id_hash
    }
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
    fn subject_id(&self) -> &str {
        &self.user_id
    }
    fn account(&self) -> Option<&str> {
        None
    }
    fn created_at(&self) -> Timestamp {
        self.created_at
    }
}

/// A live login of a `T`. As an extractor it answers a request without one with a redirect to
/// `T`'s login page, so a handler that takes it is reachable only once logged in; as an
/// `Option` it lets the handler decide.
pub struct Login<T: LoginSubject> {
    row: T::LoginRow,
    /// The email of whom it names.
    pub email: String,
}

/// An owner logged in to the dashboard.
pub type OwnerLogin = Login<Owner>;
/// An end user logged in to their pages.
pub type UserLogin = Login<UserRow>;

impl<T: LoginSubject> Login<T> {
    /// SHA-256 of the cookie's value: the login's key in the database.
    pub fn id_hash(&self) -> &str {
        self.row.id_hash()
    }

    /// The CSRF token to put in the forms of the pages shown after login.
    pub fn csrf(&self) -> &str {
        self.row.csrf_token()
    }

    /// When whom it names last authenticated in this browser (typed their password or signed up):
    /// the login's creation, since a login form always starts a new login. What `max_age` is
    /// measured against, and an ID token's `auth_time`.
    pub fn authenticated_at(&self) -> Timestamp {
        self.row.created_at()
    }

    /// Checks a submitted CSRF token against this login's, in constant time.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), PageError> {
        if !submitted.is_empty() && constant_time_eq(submitted, self.row.csrf_token()) {
            return Ok(());
        }
        let id = self.row.subject_id();
        match T::PAGES.kind {
            LoginKind::Owner => {
                tracing::warn!(owner_id = %id, "dashboard form refused: bad CSRF token");
            }
            LoginKind::User => {
                tracing::warn!(user_id = %id, "user form refused: bad CSRF token");
            }
        }
        Err(PageError::csrf())
    }

    /// Logs `subject` in and sets the cookie. A login the browser already had is ended first, so
    /// a login token planted before is never the one that gets signed in.
    pub async fn start(
        state: &AppState,
        jar: CookieJar,
        subject: &T,
    ) -> Result<CookieJar, PageError> {
        Self::start_from(state, jar, subject, LoginClient::default()).await
    }

    /// [`Login::start`], recording the browser it is started from.
    pub async fn start_from(
        state: &AppState,
        jar: CookieJar,
        subject: &T,
        client: LoginClient<'_>,
    ) -> Result<CookieJar, PageError> {
        let pages = T::PAGES;
        if let Some(old) = pages.login_token(&jar) {
            T::delete_login(state, &hash_secret(old)).await?;
        }
        let token = random_token();
        let now = Timestamp::now();
        let row = subject.new_login(
            hash_secret(&token),
            random_token(),
            now,
            now + pages.login_lifetime,
            &client,
        );
        T::insert_login(state, &row).await?;
        Ok(jar.add(pages.login_cookie(state, token)))
    }

    /// Logs the browser out and clears the cookie. With a live `login` the form must carry its
    /// CSRF token (`csrf`); without one there is nothing to protect, and only the cookie is
    /// cleared.
    pub async fn log_out(
        state: &AppState,
        jar: CookieJar,
        login: Option<&Self>,
        csrf: &str,
    ) -> Result<CookieJar, PageError> {
        if let Some(login) = login {
            login.check_csrf(csrf)?;
        }
        Self::end(state, jar, login).await
    }

    /// Ends `login` (if any) and clears the cookie, without a form's CSRF token: only for a
    /// request the caller has shown to be the user's own by other means (an application's ID
    /// token naming them, at the end-session endpoint).
    pub async fn end(
        state: &AppState,
        jar: CookieJar,
        login: Option<&Self>,
    ) -> Result<CookieJar, PageError> {
        if let Some(login) = login {
            T::delete_login(state, login.id_hash()).await?;
        }
        Ok(T::PAGES.clear_login(state, jar))
    }
}

impl OwnerLogin {
    pub fn owner_id(&self) -> &OwnerId {
        &self.row.owner_id
    }

    pub fn account_id(&self) -> &AccountId {
        &self.row.account_id
    }
}

impl UserLogin {
    pub fn user_id(&self) -> &UserId {
        &self.row.user_id
    }
}

impl<T: LoginSubject> OptionalFromRequestParts<AppState> for Login<T> {
    type Rejection = T::Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, T::Error> {
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = T::PAGES.login_token(&jar) else {
            return Ok(None);
        };
        let found = T::find_login(state, &hash_secret(token), Timestamp::now())
            .await
            .map_err(PageError::from)?;
        if let Some((row, _)) = &found {
            let credential = match T::PAGES.kind {
                LoginKind::Owner => "owner_login",
                LoginKind::User => "user_login",
            };
            crate::telemetry::record_caller(&parts.extensions, row.account(), credential);
        }
        Ok(found.map(|(row, email)| Login { row, email }))
    }
}

impl<T: LoginSubject> FromRequestParts<AppState> for Login<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match <Self as OptionalFromRequestParts<AppState>>::from_request_parts(parts, state).await {
            Ok(Some(login)) => Ok(login),
            Ok(None) => Err(Redirect::to(T::PAGES.login_path).into_response()),
            Err(err) => Err(err.into_response()),
        }
    }
}
