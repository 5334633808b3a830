//! An end user's passkeys: `/auth/security/passkeys` (linked from `/auth/grants`) to add, list
//! and remove them; `/auth/login/passkey`, signing in with one during an authorization request
//! (or without one), which then goes on as a login with a password and second factor would. These
//! pages run Keyfob's passkey script: their policy allows `script-src 'self'`. The ceremonies are
//! [`crate::passkeys`]'.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_store::{FactorHolder, UserRow};
use serde::Deserialize;
use serde_json::json;

use super::account::{context, request_field};
use super::page::{
    UserForm, UserLayout, UserPageError, allowing_own_script, content_security_policy, page,
    see_other,
};
use super::request::AuthorizeParams;
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::logins::LoginKind;
use crate::passkeys::{self, PasskeyError, PasskeyView};
use crate::state::AppState;
use crate::web::filters;
use crate::web::{ClientIp, LoginSubject, PageError, USER_PAGES, UserLogin};

/// The user's passkeys page.
pub const PAGE_PATH: &str = "/auth/security/passkeys";
/// Signing in with a passkey.
pub const SIGN_IN_PATH: &str = "/auth/login/passkey";

const ADDED: &str = "added";
const REMOVED: &str = "removed";

#[derive(Template)]
#[template(path = "auth/security_passkeys.html")]
pub struct PasskeysPage {
    layout: UserLayout,
    base: &'static str,
    options: String,
    passkeys: Vec<PasskeyView>,
    notice: Option<&'static str>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "auth/login_passkey.html")]
pub struct SignInPage {
    layout: UserLayout,
    csrf: String,
    request: String,
    app_name: Option<String>,
    options: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    credential: String,
}

#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request: String,
    #[serde(default)]
    credential: String,
}

fn holder(user: &UserLogin) -> FactorHolder {
    FactorHolder::User(user.user_id().clone())
}

fn event(user: &UserLogin, action: &'static str, ip: &str, ua: &UserAgent) -> AuditEvent {
    AuditEvent::new(None, Actor::user(user.user_id()), action)
        .target(user.user_id().as_str())
        .ip(ip)
        .user_agent(ua)
}

fn show(status: StatusCode, template: &impl Template) -> Result<Response, UserPageError> {
    page(
        status,
        template,
        allowing_own_script(&content_security_policy(None)),
    )
}

async fn passkeys_page(
    state: &AppState,
    user: &UserLogin,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Result<PasskeysPage, UserPageError> {
    let holder = holder(user);
    let passkeys = state.store.list_passkeys(&holder).await?;
    let options = passkeys::start_registration(state, &holder, &user.email, &passkeys)?;
    Ok(PasskeysPage {
        layout: UserLayout::of(user),
        base: PAGE_PATH,
        options,
        passkeys: passkeys.into_iter().map(PasskeyView::from).collect(),
        notice,
        error,
    })
}

/// `GET /auth/security/passkeys`.
#[tracing::instrument(skip_all, fields(user_id = %user.user_id()))]
pub async fn manage(
    user: UserLogin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, UserPageError> {
    let notice = match query.as_deref() {
        Some(q) if q == format!("done={ADDED}") => Some("The passkey was added."),
        Some(q) if q == format!("done={REMOVED}") => Some("The passkey was removed."),
        _ => None,
    };
    let page = passkeys_page(&state, &user, notice, None).await?;
    show(StatusCode::OK, &page)
}

/// `POST /auth/security/passkeys`: verifies the new passkey the script sent and stores it.
#[tracing::instrument(skip_all, fields(user_id = %user.user_id()))]
pub async fn add(
    user: UserLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    UserForm(form): UserForm<AddForm>,
) -> Result<Response, UserPageError> {
    user.check_csrf(&form.csrf)?;
    match passkeys::finish_registration(&state, &holder(&user), &form.name, &form.credential).await
    {
        Ok(row) => {
            tracing::info!("passkey registered");
            state.audit.record(
                event(&user, action::PASSKEY_REGISTERED, &ip, &user_agent)
                    .detail(json!({ "name": row.name })),
            );
            see_other(&format!("{PAGE_PATH}?done={ADDED}"))
        }
        Err(err @ (PasskeyError::Store(_) | PasskeyError::Unavailable)) => {
            Err(PageError::from(err).into())
        }
        Err(err) => {
            tracing::info!(error = %err, "passkey registration refused");
            let page = passkeys_page(&state, &user, None, Some(err.to_string())).await?;
            show(StatusCode::BAD_REQUEST, &page)
        }
    }
}

/// `POST /auth/security/passkeys/remove`.
#[tracing::instrument(skip_all, fields(user_id = %user.user_id()))]
pub async fn remove(
    user: UserLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    UserForm(form): UserForm<RemoveForm>,
) -> Result<Response, UserPageError> {
    user.check_csrf(&form.csrf)?;
    if !state.store.delete_passkey(&holder(&user), &form.id).await? {
        return Err(PageError::NotFound("You have no such passkey.".into()).into());
    }
    state.audit.record(
        event(&user, action::PASSKEY_REMOVED, &ip, &user_agent)
            .detail(json!({ "credential_id": form.id })),
    );
    see_other(&format!("{PAGE_PATH}?done={REMOVED}"))
}

async fn sign_in_page(
    state: &AppState,
    params: &AuthorizeParams,
    csrf: String,
    error: Option<String>,
) -> Result<(SignInPage, HeaderValue), UserPageError> {
    let (app_name, csp) = context(state, params).await?;
    let page = SignInPage {
        layout: UserLayout::anonymous(),
        csrf,
        request: params.to_query(),
        app_name,
        options: passkeys::start_sign_in(state, LoginKind::User)?,
        error,
    };
    Ok((page, allowing_own_script(&csp)))
}

/// `GET /auth/login/passkey`: the sign-in form, with a new ceremony; the authorization request
/// rides along as on the login page.
#[tracing::instrument(skip_all)]
pub async fn sign_in_form(
    State(state): State<AppState>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Result<Response, UserPageError> {
    let params = AuthorizeParams::from_query(&query.unwrap_or_default()).unwrap_or_default();
    let (jar, csrf) = USER_PAGES.form_token(&state, jar);
    let (form, csp) = sign_in_page(&state, &params, csrf, None).await?;
    Ok((jar, page(StatusCode::OK, &form, csp)?).into_response())
}

/// `POST /auth/login/passkey`: verifies the assertion, logs the user in and goes on with the
/// authorization request, as a password and second factor would.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    UserForm(form): UserForm<SignInForm>,
) -> Result<Response, UserPageError> {
    USER_PAGES.check_form_token(&state, &jar, &form.csrf)?;
    let params = request_field(&form.request)?;
    let account_id = match params.client_id.as_deref() {
        Some(client_id) => state.find_app(client_id).await?.map(|a| a.account_id),
        None => None,
    };
    let client_id = account_id.as_ref().and(params.client_id.as_ref());
    let row = match passkeys::finish_sign_in(&state, LoginKind::User, &form.credential).await {
        Ok(row) => row,
        Err(err @ (PasskeyError::Store(_) | PasskeyError::Unavailable)) => {
            return Err(PageError::from(err).into());
        }
        Err(err) => {
            tracing::info!(error = %err, "passkey sign-in refused");
            if let Some((holder, reason)) = err.audited() {
                let event = AuditEvent::new(
                    account_id.as_ref(),
                    Actor::anonymous(),
                    action::PASSKEY_FAILED,
                )
                .target(holder.id())
                .ip(&ip)
                .user_agent(&user_agent)
                .detail(json!({ "reason": reason, "client_id": client_id }));
                state.audit.record_unauthenticated(event);
            }
            let (again, csp) =
                sign_in_page(&state, &params, form.csrf, Some(err.to_string())).await?;
            return page(StatusCode::BAD_REQUEST, &again, csp);
        }
    };
    let Some(user) = UserRow::find_by_id(&state, row.holder.id()).await? else {
        return Err(PageError::BadRequest(PasskeyError::UnknownCredential.to_string()).into());
    };
    if user.disabled_at.is_some() {
        tracing::info!(user_id = %user.id, "disabled user's passkey login refused");
        state.audit.record_unauthenticated(
            AuditEvent::new(
                account_id.as_ref(),
                Actor::anonymous(),
                action::PASSKEY_FAILED,
            )
            .target(user.id.as_str())
            .ip(&ip)
            .user_agent(&user_agent)
            .detail(json!({ "reason": "disabled", "client_id": client_id })),
        );
        let message = super::account::USER_DISABLED.to_owned();
        let (again, csp) = sign_in_page(&state, &params, form.csrf, Some(message)).await?;
        return page(StatusCode::FORBIDDEN, &again, csp);
    }
    let jar = UserLogin::start(&state, jar, &user).await?;
    let jar = USER_PAGES.remember_device(&state, jar, &user.email);
    tracing::info!(user_id = %user.id, "user passkey login");
    let params = params.after_login();
    state.audit.record(
        AuditEvent::new(
            account_id.as_ref(),
            Actor::user(&user.id),
            action::PASSKEY_LOGIN,
        )
        .target(user.id.as_str())
        .ip(&ip)
        .user_agent(&user_agent)
        .detail(json!({ "name": row.name, "client_id": client_id })),
    );
    Ok((jar, see_other(&params.continue_path())?).into_response())
}
