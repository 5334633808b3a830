//! The sign-up form, the same for owners on the dashboard and end users on their pages: the form's
//! signed token, whether sign-up is open, a budget per client address, the two passwords, the
//! mail budgets, then the new owner or user made by its service (email, password policy, hashing
//! off the async threads) and mailed a verification link.
//!
//! Sign-up does not say whether an address has an account already: with a taken address it hashes
//! the password all the same, mails the holder of the address that they have an account, and
//! answers exactly as for a new one ("check your inbox"). Nobody is logged in by signing up; the
//! new owner or user logs in with the password they chose.

use axum::http::StatusCode;
use axum_extra::extract::CookieJar;
use keyfob_store::StoreError;

use keyfob_domain::email::Email;

use super::LoginSubject;
use crate::passwords::check_new_password;
use crate::services::ServiceError;
use crate::state::AppState;
use crate::web::PageError;

/// What a sign-up form sends.
pub struct SignupFields<'a> {
    pub csrf: &'a str,
    pub email: &'a str,
    pub password: String,
    pub confirm: &'a str,
    /// Where a verified user goes on: an end user's authorization request, as a query.
    pub next: &'a str,
}

/// What became of a sign-up.
pub enum SignupOutcome {
    /// Answered "check your inbox at this address": a new account was made and mailed a link, or
    /// the address had one and its holder was told. The two are not told apart.
    Sent(String),
    /// Refused: the status and the message of the form shown again.
    Refused(StatusCode, String),
}

/// Checks a sign-up form from a client at `ip` and, if it holds, makes a `T` and mails them a
/// verification link (or mails the holder of a taken address). A refusal the form can explain is
/// a [`SignupOutcome::Refused`] for the caller to show with the form; any other is an error page.
pub async fn sign_up<T: LoginSubject>(
    state: &AppState,
    jar: &CookieJar,
    ip: &str,
    fields: SignupFields<'_>,
) -> Result<SignupOutcome, PageError> {
    let SignupFields {
        csrf,
        email,
        password,
        confirm,
        next,
    } = fields;
    T::PAGES.check_form_token(state, jar, csrf)?;
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
    // The address is checked before any mail budget is spent on it.
    let address = match Email::parse(email) {
        Ok(address) => address,
        Err(err) => {
            return Ok(SignupOutcome::Refused(
                StatusCode::BAD_REQUEST,
                err.to_string(),
            ));
        }
    };
    if let Err(message) = check_new_password(&password) {
        return Ok(SignupOutcome::Refused(
            StatusCode::BAD_REQUEST,
            message.to_string(),
        ));
    }
    state
        .logins
        .mail(ip, address.as_str())
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    let sent = SignupOutcome::Sent(address.as_str().to_owned());
    match T::create(state, address.as_str(), password.clone()).await {
        Ok(subject) => {
            tracing::info!(person = %T::PERSON, id = subject.id_str(), "signed up");
            super::recovery::send_verification(state, &subject, Some(next.to_owned())).await?;
            Ok(sent)
        }
        Err(ServiceError::Invalid(message)) => {
            Ok(SignupOutcome::Refused(StatusCode::BAD_REQUEST, message))
        }
        Err(ServiceError::Store(StoreError::Conflict(_))) => {
            // As long as a new sign-up takes: the password is hashed all the same.
            let _ = state.passwords.hash(password).await;
            if let Some(holder) = T::find_by_email(state, address.as_str()).await? {
                super::recovery::send_already_registered(state, &holder, next);
            }
            Ok(sent)
        }
        Err(ServiceError::Store(err)) => Err(err.into()),
        Err(err) => Err(PageError::Internal(err.into())),
    }
}
