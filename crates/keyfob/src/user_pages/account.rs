//! End users' login, sign-up and logout. An authorization request in progress rides along as
//! the pages' query (and the forms' `request` field), so that the user lands back on `GET /auth`,
//! where it is checked again in full.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_domain::authorize::interaction::parse_login_hint;
use keyfob_domain::time::Timestamp;
use keyfob_store::UserRow;
use serde::Deserialize;

use super::page::{UserForm, UserLayout, UserPageError, content_security_policy, page, see_other};
use super::request::{AuthorizeParams, check_client, facts};
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::dashboard::page::PageError;
use crate::state::AppState;
use crate::web::filters;
use crate::web::{
    ClientIp, LoginFields, LoginOutcome, SignupFields, SignupOutcome, USER_PAGES, UserLogin,
    check_login, sign_up,
};

/// The one answer to a failed login, whichever part was wrong.
pub const LOGIN_FAILED: &str = "The email or password is incorrect.";
/// The answer to a disabled user's login (with the right password, or a passkey): said plainly,
/// since only the person who holds the credential sees it.
pub const USER_DISABLED: &str =
    "This account is disabled. Ask the operator of this service to enable it again.";
/// `?done=` values the login page explains.
pub const PASSWORD_CHANGED: &str = "password-changed";
pub const LOGGED_OUT: &str = "logged-out";
/// What the login page says to a logged-in user the application wants to log in again.
const LOG_IN_AGAIN: &str = "Log in again to continue.";

#[derive(Template)]
#[template(path = "auth/login.html")]
struct LoginPage {
    layout: UserLayout,
    csrf: String,
    email: String,
    error: Option<String>,
    notice: Option<&'static str>,
    /// The application the user is logging in for, if any.
    app_name: Option<String>,
    /// The authorization request, as a query string.
    request: String,
}

#[derive(Template)]
#[template(path = "auth/signup.html")]
struct SignupPage {
    layout: UserLayout,
    csrf: String,
    email: String,
    error: Option<String>,
    app_name: Option<String>,
    request: String,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    request: String,
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
    #[serde(default)]
    request: String,
}

#[derive(Deserialize, Default)]
struct Done {
    #[serde(default)]
    done: Option<String>,
}

/// The application an authorization request names (when it checks out), and the policy that lets
/// the page's form lead back to it.
pub(super) async fn context(
    state: &AppState,
    params: &AuthorizeParams,
) -> Result<(Option<String>, HeaderValue), UserPageError> {
    if params.is_empty() {
        return Ok((None, content_security_policy(None)));
    }
    Ok(match check_client(state, params).await? {
        Ok(client) => (
            Some(client.app.name),
            content_security_policy(Some(&client.redirect_uri)),
        ),
        Err(_) => (None, content_security_policy(None)),
    })
}

/// The authorization request carried in a form's `request` field.
pub(super) fn request_field(request: &str) -> Result<AuthorizeParams, UserPageError> {
    AuthorizeParams::from_form_field(request).map_err(|err| {
        PageError::BadRequest(format!(
            "The form field `request` is not valid: its parameter {err}. Nothing was changed."
        ))
        .into()
    })
}

/// Whether a logged-in user must log in again before the request goes on: it asks for a login
/// (`prompt=login`), finds theirs older than `max_age`, or hints at someone else (`login_hint`).
/// A request whose parameters cannot be read goes on, to be refused by `GET /auth`.
fn must_log_in_again(params: &AuthorizeParams, user: &UserLogin) -> bool {
    params
        .interaction()
        .and_then(|i| i.login_need(Some(facts(user)), Timestamp::now()))
        .is_some()
}

/// What the email field starts with: the request's `login_hint` when it is an email address,
/// else, for a user logging in again, their own email. Only ever shown (escaped) in the form.
fn email_to_fill(params: &AuthorizeParams, user: Option<&UserLogin>) -> String {
    match parse_login_hint(params.login_hint.as_deref()) {
        Some(hint) => hint.as_str().to_owned(),
        None => user.map(|u| u.email.clone()).unwrap_or_default(),
    }
}

/// `GET /auth/login`: the login form, or straight on for a user already logged in (unless the
/// request wants them to log in again).
#[tracing::instrument(skip_all)]
pub async fn login_page(
    State(state): State<AppState>,
    user: Option<UserLogin>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Result<Response, UserPageError> {
    let query = query.unwrap_or_default();
    let params = AuthorizeParams::from_query(&query).unwrap_or_default();
    if let Some(user) = &user
        && !must_log_in_again(&params, user)
    {
        return see_other(&params.continue_path());
    }
    let done: Done = serde_urlencoded::from_str(&query).unwrap_or_default();
    let notice = match done.done.as_deref() {
        Some(PASSWORD_CHANGED) => {
            Some("Your password was changed and every session ended. Log in with the new one.")
        }
        Some(LOGGED_OUT) => Some("You are logged out."),
        Some(super::recovery::PASSWORD_RESET) => {
            Some("Your new password is saved and every session ended. Log in with it.")
        }
        _ if user.is_some() => Some(LOG_IN_AGAIN),
        _ => None,
    };
    let (app_name, csp) = context(&state, &params).await?;
    let (jar, csrf) = USER_PAGES.form_token(&state, jar);
    let login = LoginPage {
        layout: UserLayout::anonymous(),
        csrf,
        email: email_to_fill(&params, user.as_ref()),
        error: None,
        notice,
        app_name,
        request: params.to_query(),
    };
    Ok((jar, page(StatusCode::OK, &login, csp)?).into_response())
}

/// `POST /auth/login`. The attempt must fit the login budgets (`crate::logins`) before any
/// password is checked; an unknown email costs the same hash as a wrong password and gets the same
/// answer. A failure is audited, in the log of the account whose application the request names, as
/// an unauthenticated event; a success gives the browser a device cookie.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    UserForm(form): UserForm<LoginForm>,
) -> Result<Response, UserPageError> {
    // The token first, as on every form (check_login checks it again); then the request, before
    // any budget is spent.
    USER_PAGES.check_form_token(&state, &jar, &form.csrf)?;
    let params = request_field(&form.request)?;
    let outcome = check_login::<UserRow>(
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
    // The account whose application the user is logging in to, if the request names one.
    let account_id = match params.client_id.as_deref() {
        Some(client_id) => state.find_app(client_id).await?.map(|a| a.account_id),
        None => None,
    };
    let client_id = account_id.as_ref().and(params.client_id.as_ref());
    let user = match outcome {
        LoginOutcome::Verified(user) => user,
        LoginOutcome::Refused(user) => {
            tracing::info!("user login refused");
            let mut event = AuditEvent::new(
                account_id.as_ref(),
                Actor::anonymous(),
                action::USER_LOGIN_FAILED,
            )
            .ip(&ip)
            .user_agent(&user_agent)
            .detail(serde_json::json!({ "client_id": client_id }));
            if let Some(user) = &user {
                event = event.target(&user.id);
            }
            state.audit.record_unauthenticated(event);
            let (app_name, csp) = context(&state, &params).await?;
            let again = LoginPage {
                layout: UserLayout::anonymous(),
                csrf: form.csrf,
                email: form.email,
                error: Some(LOGIN_FAILED.into()),
                notice: None,
                app_name,
                request: params.to_query(),
            };
            return page(StatusCode::BAD_REQUEST, &again, csp);
        }
    };
    if user.disabled_at.is_some() {
        tracing::info!(user_id = %user.id, "disabled user's login refused");
        state.audit.record_unauthenticated(
            AuditEvent::new(
                account_id.as_ref(),
                Actor::anonymous(),
                action::USER_LOGIN_FAILED,
            )
            .target(&user.id)
            .ip(&ip)
            .user_agent(&user_agent)
            .detail(serde_json::json!({ "client_id": client_id, "reason": "disabled" })),
        );
        let (app_name, csp) = context(&state, &params).await?;
        let again = LoginPage {
            layout: UserLayout::anonymous(),
            csrf: form.csrf,
            email: form.email,
            error: Some(USER_DISABLED.into()),
            notice: None,
            app_name,
            request: params.to_query(),
        };
        return page(StatusCode::FORBIDDEN, &again, csp);
    }
    // With a second factor the login waits for its code (`super::totp`), the request with it.
    if super::totp::needs_code(&state, &user).await? {
        return super::totp::ask_code(&state, jar, &user, &params);
    }
    let jar = UserLogin::start(&state, jar, &user).await?;
    let jar = USER_PAGES.remember_device(&state, jar, &user.email);
    tracing::info!(user_id = %user.id, "user login");
    // This login answers what the request asked of one (prompt=login, max_age, login_hint).
    let params = params.after_login();
    state.audit.record(
        AuditEvent::new(
            account_id.as_ref(),
            Actor::user(&user.id),
            action::USER_LOGIN,
        )
        .ip(&ip)
        .user_agent(&user_agent)
        .detail(serde_json::json!({ "client_id": client_id })),
    );
    Ok((jar, see_other(&params.continue_path())?).into_response())
}

/// `GET /auth/signup`.
#[tracing::instrument(skip_all)]
pub async fn signup_page(
    State(state): State<AppState>,
    user: Option<UserLogin>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Result<Response, UserPageError> {
    let params = AuthorizeParams::from_query(&query.unwrap_or_default()).unwrap_or_default();
    if let Some(user) = &user
        && !must_log_in_again(&params, user)
    {
        return see_other(&params.continue_path());
    }
    let (app_name, csp) = context(&state, &params).await?;
    let (jar, csrf) = USER_PAGES.form_token(&state, jar);
    let signup = SignupPage {
        layout: UserLayout::anonymous(),
        csrf,
        email: parse_login_hint(params.login_hint.as_deref())
            .map(|hint| hint.as_str().to_owned())
            .unwrap_or_default(),
        error: None,
        app_name,
        request: params.to_query(),
    };
    Ok((jar, page(StatusCode::OK, &signup, csp)?).into_response())
}

/// `POST /auth/signup`: makes a user (the rules are [`crate::services::users::create_user`]'s,
/// common passwords included) and mails a verification link that leads back into the
/// authorization request, through the sign-up shared with the dashboard ([`sign_up`]). The answer
/// is the same whether or not the email had an account; the user then logs in.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    jar: CookieJar,
    UserForm(form): UserForm<SignupForm>,
) -> Result<Response, UserPageError> {
    // The token first, as on every form (sign_up checks it again); then the request, before any
    // budget is spent.
    USER_PAGES.check_form_token(&state, &jar, &form.csrf)?;
    let params = request_field(&form.request)?;
    let request = params.after_login().to_query();
    let outcome = sign_up::<UserRow>(
        &state,
        &jar,
        &ip,
        SignupFields {
            csrf: &form.csrf,
            email: &form.email,
            password: form.password,
            confirm: &form.confirm,
            next: &request,
        },
    )
    .await?;
    match outcome {
        SignupOutcome::Sent(email) => super::recovery::check_your_inbox(
            &email,
            "with a link to confirm the address; then log in with the password you chose",
            &params.to_query(),
        )
        .show(StatusCode::OK),
        SignupOutcome::Refused(status, error) => {
            let (app_name, csp) = context(&state, &params).await?;
            let again = SignupPage {
                layout: UserLayout::anonymous(),
                csrf: form.csrf,
                email: form.email,
                error: Some(capitalized(&error)),
                app_name,
                request: params.to_query(),
            };
            page(status, &again, csp)
        }
    }
}

/// What the logout form sends: its CSRF token, and the authorization request to log in for again
/// (the consent page's “Not you?”), if any.
#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request: String,
}

/// `POST /auth/logout`. Without a live login only the cookie is cleared; with one, the form must
/// carry its CSRF token.
#[tracing::instrument(skip_all)]
pub async fn logout(
    State(state): State<AppState>,
    user: Option<UserLogin>,
    jar: CookieJar,
    UserForm(form): UserForm<LogoutForm>,
) -> Result<Response, UserPageError> {
    // “Not you?”: back to the login page with the application's request kept, which the login
    // page reads (and `GET /auth` checks again in full after the login).
    let request = request_field(&form.request)?.to_query();
    let jar = UserLogin::log_out(&state, jar, user.as_ref(), &form.csrf).await?;
    let to = if request.is_empty() {
        format!("{}?done={LOGGED_OUT}", super::LOGIN_PATH)
    } else {
        format!("{}?{request}", super::LOGIN_PATH)
    };
    Ok((jar, see_other(&to)?).into_response())
}

/// A rule's message as a sentence on a page.
pub fn capitalized(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => {
            let mut out: String = first.to_uppercase().collect();
            out.push_str(chars.as_str());
            if !out.ends_with('.') {
                out.push('.');
            }
            out
        }
        None => String::new(),
    }
}
