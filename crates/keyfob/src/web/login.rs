//! The password check of a login form, the same for owners on the dashboard and end users on
//! their pages: the form's signed token, then the login budgets (`crate::logins`) before any
//! password is hashed, then the password, with an unknown email costing the same hash as a wrong
//! password.

use axum_extra::extract::CookieJar;
use keyfob_domain::email::Email;
use keyfob_store::{Owner, StoreError, UserRow};

use super::Pages;
use crate::dashboard::page::PageError;
use crate::state::AppState;

/// Someone who logs in with an email and a password.
pub trait LoginSubject {
    /// The PHC string of their password.
    fn password_hash(&self) -> &str;
}

impl LoginSubject for Owner {
    fn password_hash(&self) -> &str {
        &self.password_hash
    }
}

impl LoginSubject for UserRow {
    fn password_hash(&self) -> &str {
        &self.password_hash
    }
}

/// What a login form's password check found.
pub enum LoginOutcome<T> {
    /// The password is theirs.
    Verified(T),
    /// It is not, or no one has this email; `T` is whom the email named, for the audit log.
    Refused(Option<T>),
}

/// What a login form sends.
pub struct LoginFields<'a> {
    pub csrf: &'a str,
    pub email: &'a str,
    pub password: String,
}

/// Checks a login form's token and, within the login budgets, its password, for a client at
/// `ip`. `find` looks the email up (it is called only with an email that parses). A throttled
/// attempt is a `PageError::TooManyRequests`, before any password is hashed.
pub async fn check_login<T: LoginSubject>(
    state: &AppState,
    pages: &Pages,
    jar: &CookieJar,
    ip: &str,
    fields: LoginFields<'_>,
    find: impl AsyncFnOnce(&str) -> Result<Option<T>, StoreError>,
) -> Result<LoginOutcome<T>, PageError> {
    let LoginFields {
        csrf,
        email,
        password,
    } = fields;
    pages.check_form_token(state, jar, csrf)?;
    let attempt = state
        .logins
        .begin(pages.kind, email, ip, pages.device_token(jar))
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    let subject = match Email::parse(email) {
        Ok(email) => find(email.as_str()).await?,
        Err(_) => None,
    };
    let phc = subject.as_ref().map(|s| s.password_hash().to_owned());
    let verified = state.passwords.verify(password, phc).await;
    match subject {
        Some(subject) if verified => {
            attempt.succeeded();
            Ok(LoginOutcome::Verified(subject))
        }
        other => {
            attempt.failed();
            Ok(LoginOutcome::Refused(other))
        }
    }
}
