//! Owner sign-up, login and logout.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_store::StoreError;
use serde::Deserialize;

use super::page::{Layout, PageError, PageForm, render, render_with_status};
use super::session::{self, LOGIN_PATH, Session};
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::services::{self, ServiceError};
use crate::state::AppState;
use crate::web::{ClientIp, DASHBOARD, LoginFields, LoginOutcome, check_login};

/// Where an owner lands after login.
pub const HOME_PATH: &str = "/dashboard/keys";

/// The one answer to a failed login, whichever part was wrong.
const LOGIN_FAILED: &str = "The email or password is incorrect.";
const SIGNUP_CLOSED: &str =
    "Sign-up is closed on this server. Ask its operator to create an account for you.";

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    layout: Layout,
    csrf: String,
    email: String,
    error: Option<String>,
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

/// A form whose only field is its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// `GET /dashboard`: the keys for an owner, the login page for anyone else.
pub async fn home(session: Option<Session>) -> Redirect {
    match session {
        Some(_) => Redirect::to(HOME_PATH),
        None => Redirect::to(LOGIN_PATH),
    }
}

/// Counts one attempt under `key`, refusing it once over the limit.
fn limit(state: &AppState, key: &str) -> Result<(), PageError> {
    state
        .logins
        .check(key)
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })
}

#[tracing::instrument(skip_all)]
pub async fn login_page(
    State(state): State<AppState>,
    session: Option<Session>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    if session.is_some() {
        return Ok(Redirect::to(HOME_PATH).into_response());
    }
    let (jar, csrf) = DASHBOARD.form_token(&state, jar);
    let page = LoginPage {
        layout: Layout::anonymous(),
        csrf,
        email: String::new(),
        error: None,
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
    let outcome = check_login(
        &state,
        &DASHBOARD,
        &jar,
        &ip,
        LoginFields {
            csrf: &form.csrf,
            email: &form.email,
            password: form.password,
        },
        async |email| state.store.find_owner_by_email(email).await,
    )
    .await?;
    let owner = match outcome {
        LoginOutcome::Verified(owner) => owner,
        LoginOutcome::Refused(owner) => {
            tracing::info!("dashboard login refused");
            let mut event = AuditEvent::new(
                owner.as_ref().map(|o| o.account_id.as_str()),
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
                signup_open: state.config.signup_open,
            };
            return render_with_status(StatusCode::BAD_REQUEST, &page);
        }
    };
    let jar = session::start(&state, jar, &owner).await?;
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
    session: Option<Session>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    if !state.config.signup_open {
        return Err(PageError::Forbidden(SIGNUP_CLOSED.into()));
    }
    if session.is_some() {
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

/// Makes an account and its owner (the rules are [`services::accounts::create_account`]'s) and signs them in.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    jar: CookieJar,
    PageForm(form): PageForm<SignupForm>,
) -> Result<Response, PageError> {
    DASHBOARD.check_form_token(&state, &jar, &form.csrf)?;
    if !state.config.signup_open {
        return Err(PageError::Forbidden(SIGNUP_CLOSED.into()));
    }
    limit(&state, &format!("dashboard-signup-ip:{ip}"))?;
    let again = |status: StatusCode, error: String| {
        let page = SignupPage {
            layout: Layout::anonymous(),
            csrf: form.csrf.clone(),
            email: form.email.clone(),
            error: Some(error),
        };
        render_with_status(status, &page)
    };
    if form.password != form.confirm {
        return again(
            StatusCode::BAD_REQUEST,
            "The two passwords do not match.".into(),
        );
    }
    let created = services::accounts::create_account(
        state.store.as_ref(),
        &state.passwords,
        &form.email,
        form.password.clone(),
    )
    .await;
    let owner = match created {
        Ok((_, owner)) => owner,
        Err(ServiceError::Invalid(message)) => return again(StatusCode::BAD_REQUEST, message),
        Err(ServiceError::Store(StoreError::Conflict(_))) => {
            return again(
                StatusCode::CONFLICT,
                "An account with this email already exists. Log in instead.".into(),
            );
        }
        Err(ServiceError::Store(err)) => return Err(err.into()),
        Err(err) => return Err(PageError::Internal(err.into())),
    };
    let jar = session::start(&state, jar, &owner).await?;
    let jar = DASHBOARD.remember_device(&state, jar, &owner.email);
    tracing::info!(
        owner_id = %owner.id,
        account_id = %owner.account_id,
        "account created in the dashboard"
    );
    Ok((jar, Redirect::to(HOME_PATH)).into_response())
}

/// Ends the session. Without a live session there is nothing to protect, so only the cookie is
/// cleared; with one, the form must carry its CSRF token.
#[tracing::instrument(skip_all)]
pub async fn logout(
    State(state): State<AppState>,
    session: Option<Session>,
    jar: CookieJar,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    if let Some(session) = &session {
        session.check_csrf(&form.csrf)?;
    }
    let jar = session::end(&state, jar, session.as_ref()).await?;
    Ok((jar, Redirect::to(LOGIN_PATH)).into_response())
}
