//! Owner sign-up, login and logout.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_store::Owner;
use serde::Deserialize;

use super::LOGIN_PATH;
use super::page::{Layout, PageError, PageForm, render, render_with_status};
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::state::AppState;
use crate::web::filters;
use crate::web::{
    ClientIp, CsrfForm, DASHBOARD, LoginClient, LoginFields, LoginOutcome, LoginSubject,
    OwnerLogin, SignupFields, SignupOutcome, check_login, sign_up,
};

/// Where an owner lands after login.
pub const HOME_PATH: &str = "/dashboard/keys";

/// The one answer to a failed login, whichever part was wrong.
const LOGIN_FAILED: &str = "The email or password is incorrect.";

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    layout: Layout,
    csrf: String,
    email: String,
    error: Option<String>,
    notice: Option<&'static str>,
    signup_open: bool,
}

#[derive(Template)]
#[template(path = "signup.html")]
pub struct SignupPage {
    layout: Layout,
    csrf: String,
    email: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// `GET /dashboard`: the keys for an owner, the login page for anyone else.
pub async fn home(login: Option<OwnerLogin>) -> Redirect {
    match login {
        Some(_) => Redirect::to(HOME_PATH),
        None => Redirect::to(LOGIN_PATH),
    }
}

/// `?done=` of the login page.
#[derive(Deserialize, Default)]
pub struct Done {
    #[serde(default)]
    pub done: Option<String>,
}

/// `?done=` values the login page explains.
pub const EMAIL_CHANGED: &str = "email-changed";
pub const PASSWORD_CHANGED: &str = "password-changed";

#[tracing::instrument(skip_all)]
pub async fn login_page(
    State(state): State<AppState>,
    login: Option<OwnerLogin>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let done: Done = serde_urlencoded::from_str(&query.unwrap_or_default()).unwrap_or_default();
    if login.is_some() {
        return Ok(Redirect::to(HOME_PATH).into_response());
    }
    let notice = match done.done.as_deref() {
        Some(super::recovery::PASSWORD_RESET) => {
            Some("Your new password is saved and every login ended. Log in with it.")
        }
        Some(PASSWORD_CHANGED) => Some("Your password was changed. Log in with the new one."),
        Some(EMAIL_CHANGED) => Some("Your email address was changed. Log in with the new one."),
        _ => None,
    };
    let (jar, csrf) = DASHBOARD.form_token(&state, jar);
    let page = LoginPage {
        layout: Layout::anonymous(),
        csrf,
        email: String::new(),
        error: None,
        notice,
        signup_open: state.config.signup_open,
    };
    Ok((jar, render(&page)?).into_response())
}

/// Logs an owner in. The attempt must fit the login budgets (`crate::logins`) before any password
/// is checked; an unknown email costs the same hash as a wrong password and gets the same answer.
/// A failure is audited as an unauthenticated event; a success gives the browser a device cookie.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    PageForm(form): PageForm<LoginForm>,
) -> Result<Response, PageError> {
    let outcome = check_login::<Owner>(
        &state,
        &jar,
        &ip,
        LoginFields {
            csrf: &form.csrf,
            email: &form.email,
            password: form.password,
        },
    )
    .await?;
    let owner = match outcome {
        LoginOutcome::Verified(owner) => owner,
        LoginOutcome::Refused(owner) => {
            tracing::info!("dashboard login refused");
            let mut event = AuditEvent::new(
                owner.as_ref().map(|o| &o.account_id),
                Actor::anonymous(),
                action::OWNER_LOGIN_FAILED,
            )
            .ip(&ip)
            .user_agent(&user_agent);
            if let Some(owner) = &owner {
                event = event.target(&owner.id);
            }
            state.audit.record_unauthenticated(event);
            let page = LoginPage {
                layout: Layout::anonymous(),
                csrf: form.csrf,
                email: form.email,
                error: Some(LOGIN_FAILED.into()),
                notice: None,
                signup_open: state.config.signup_open,
            };
            return render_with_status(StatusCode::BAD_REQUEST, &page);
        }
    };
    // With a second factor the login waits for its code (`super::totp`).
    if super::totp::needs_code(&state, &owner).await? {
        return Ok(super::totp::ask_code(&state, jar, &owner));
    }
    let jar = OwnerLogin::start_from(
        &state,
        jar,
        &owner,
        LoginClient {
            ip: Some(&ip),
            user_agent: user_agent.0.as_deref(),
        },
    )
    .await?;
    let jar = DASHBOARD.remember_device(&state, jar, &owner.email);
    tracing::info!(owner_id = %owner.id, account_id = %owner.account_id, "dashboard login");
    state.audit.record(
        AuditEvent::new(
            Some(&owner.account_id),
            Actor::owner(&owner.id),
            action::OWNER_LOGIN,
        )
        .ip(&ip)
        .user_agent(&user_agent),
    );
    Ok((jar, Redirect::to(HOME_PATH)).into_response())
}

#[tracing::instrument(skip_all)]
pub async fn signup_page(
    State(state): State<AppState>,
    login: Option<OwnerLogin>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    Owner::may_sign_up(&state)?;
    if login.is_some() {
        return Ok(Redirect::to(HOME_PATH).into_response());
    }
    let (jar, csrf) = DASHBOARD.form_token(&state, jar);
    let page = SignupPage {
        layout: Layout::anonymous(),
        csrf,
        email: String::new(),
        error: None,
    };
    Ok((jar, render(&page)?).into_response())
}

/// Makes an account and its owner (the rules are [`crate::services::accounts::create_account`]'s)
/// and mails a verification link, through the sign-up shared with the end users' pages
/// ([`sign_up`]). The answer is the same whether or not the email had an account.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    jar: CookieJar,
    PageForm(form): PageForm<SignupForm>,
) -> Result<Response, PageError> {
    let outcome = sign_up::<Owner>(
        &state,
        &jar,
        &ip,
        SignupFields {
            csrf: &form.csrf,
            email: &form.email,
            password: form.password,
            confirm: &form.confirm,
            next: "",
        },
    )
    .await?;
    match outcome {
        SignupOutcome::Sent(email) => {
            let page = super::recovery::check_your_inbox(
                &email,
                "with a link to confirm the address; then log in with the password you chose",
            );
            render(&page).map(IntoResponse::into_response)
        }
        SignupOutcome::Refused(status, error) => {
            let page = SignupPage {
                layout: Layout::anonymous(),
                csrf: form.csrf,
                email: form.email,
                error: Some(error),
            };
            render_with_status(status, &page)
        }
    }
}

/// Ends the login. Without a live login there is nothing to protect, so only the cookie is
/// cleared; with one, the form must carry its CSRF token.
#[tracing::instrument(skip_all)]
pub async fn logout(
    State(state): State<AppState>,
    login: Option<OwnerLogin>,
    jar: CookieJar,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let jar = OwnerLogin::log_out(&state, jar, login.as_ref(), &form.csrf).await?;
    Ok((jar, Redirect::to(LOGIN_PATH)).into_response())
}
