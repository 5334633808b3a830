//! The sign-up form, the same for owners on the dashboard and end users on their pages: the form's
//! signed token, whether sign-up is open, a budget per client address, the two passwords, then
//! the new owner or user made by its service (email, password policy, hashing off the async
//! threads) and logged in.

use axum::http::StatusCode;
use axum_extra::extract::CookieJar;
use keyfob_store::StoreError;

use super::{Login, LoginSubject};
use crate::services::ServiceError;
use crate::state::AppState;
use crate::web::PageError;

/// What a sign-up form sends.
pub struct SignupFields<'a> {
    pub csrf: &'a str,
    pub email: &'a str,
    pub password: String,
    pub confirm: &'a str,
}

/// What became of a sign-up.
pub enum SignupOutcome<T> {
    /// Made and logged in; the cookies carry the login and a device cookie.
    SignedUp(CookieJar, T),
    /// Refused: the status and the message of the form shown again.
    Refused(StatusCode, String),
}

/// Checks a sign-up form from a client at `ip` and, if it holds, makes a `T` and logs them in.
/// A refusal the form can explain is a [`SignupOutcome::Refused`] for the caller to show with the
/// form; any other is an error page.
pub async fn sign_up<T: LoginSubject>(
    state: &AppState,
    jar: CookieJar,
    ip: &str,
    fields: SignupFields<'_>,
) -> Result<SignupOutcome<T>, PageError> {
    let SignupFields {
        csrf,
        email,
        password,
        confirm,
    } = fields;
    T::PAGES.check_form_token(state, &jar, csrf)?;
    T::may_sign_up(state)?;
    state
        .logins
        .check(&format!("{}:{ip}", T::SIGNUP_BUDGET))
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    if password != confirm {
        return Ok(SignupOutcome::Refused(
            StatusCode::BAD_REQUEST,
            "The two passwords do not match.".into(),
        ));
    }
    let subject = match T::create(state, email, password).await {
        Ok(subject) => subject,
        Err(ServiceError::Invalid(message)) => {
            return Ok(SignupOutcome::Refused(StatusCode::BAD_REQUEST, message));
        }
        Err(ServiceError::Store(StoreError::Conflict(_))) => {
            return Ok(SignupOutcome::Refused(
                StatusCode::CONFLICT,
                "An account with this email already exists. Log in instead.".into(),
            ));
        }
        Err(ServiceError::Store(err)) => return Err(err.into()),
        Err(err) => return Err(PageError::Internal(err.into())),
    };
    let jar = Login::start(state, jar, &subject).await?;
    let jar = T::PAGES.remember_device(state, jar, subject.email());
    Ok(SignupOutcome::SignedUp(jar, subject))
}
