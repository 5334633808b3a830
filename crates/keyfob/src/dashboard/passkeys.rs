//! An owner's passkeys: `/dashboard/security/passkeys` to add one (named), list them and remove
//! one; `/dashboard/login/passkey`, signing in with one instead of a password and second factor.
//! These pages run Keyfob's passkey script, so they are sent with [`passkeys::SCRIPT_CSP`]
//! instead of the dashboard's no-script policy. The ceremonies are [`crate::passkeys`]'.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_store::{FactorHolder, Owner};
use serde::Deserialize;
use serde_json::json;

use super::account::HOME_PATH;
use super::page::{Layout, PageError, PageForm, render_with_status};
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::logins::LoginKind;
use crate::passkeys::{self, PasskeyError, PasskeyView};
use crate::state::AppState;
use crate::web::filters;
use crate::web::{ClientIp, DASHBOARD, LoginClient, LoginSubject, OwnerLogin};

/// The owner's passkeys page.
pub const PAGE_PATH: &str = "/dashboard/security/passkeys";
/// Signing in with a passkey.
pub const SIGN_IN_PATH: &str = "/dashboard/login/passkey";

const ADDED: &str = "added";
const REMOVED: &str = "removed";

#[derive(Template)]
#[template(path = "security_passkeys.html")]
pub struct PasskeysPage {
    layout: Layout,
    base: &'static str,
    options: String,
    passkeys: Vec<PasskeyView>,
    notice: Option<&'static str>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "login_passkey.html")]
pub struct SignInPage {
    layout: Layout,
    action: &'static str,
    back: &'static str,
    csrf: String,
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
    credential: String,
}

/// A page with the script-allowing policy.
fn with_script(status: StatusCode, page: &impl Template) -> Result<Response, PageError> {
    let mut response = render_with_status(status, page)?;
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(passkeys::SCRIPT_CSP),
    );
    Ok(response)
}

fn holder(login: &OwnerLogin) -> FactorHolder {
    FactorHolder::Owner(login.owner_id().clone())
}

fn event(login: &OwnerLogin, action: &'static str, ip: &str, ua: &UserAgent) -> AuditEvent {
    AuditEvent::new(
        Some(login.account_id()),
        Actor::owner(login.owner_id()),
        action,
    )
    .target(login.owner_id().as_str())
    .ip(ip)
    .user_agent(ua)
}

async fn passkeys_page(
    state: &AppState,
    login: &OwnerLogin,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Result<PasskeysPage, PageError> {
    let holder = holder(login);
    let passkeys = state.store.list_passkeys(&holder).await?;
    let options = passkeys::start_registration(state, &holder, &login.email, &passkeys)?;
    Ok(PasskeysPage {
        layout: login.layout("passkeys"),
        base: PAGE_PATH,
        options,
        passkeys: passkeys.into_iter().map(PasskeyView::from).collect(),
        notice,
        error,
    })
}

/// `GET /dashboard/security/passkeys`: the owner's passkeys, and a form to add one (a new
/// registration ceremony each time it is shown).
#[tracing::instrument(skip_all, fields(owner_id = %login.owner_id()))]
pub async fn page(
    login: OwnerLogin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let notice = match query.as_deref() {
        Some(q) if q == format!("done={ADDED}") => Some("The passkey was added."),
        Some(q) if q == format!("done={REMOVED}") => Some("The passkey was removed."),
        _ => None,
    };
    let page = passkeys_page(&state, &login, notice, None).await?;
    with_script(StatusCode::OK, &page)
}

/// `POST /dashboard/security/passkeys`: verifies the new passkey the script sent and stores it.
#[tracing::instrument(skip_all, fields(owner_id = %login.owner_id()))]
pub async fn add(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    PageForm(form): PageForm<AddForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    match passkeys::finish_registration(&state, &holder(&login), &form.name, &form.credential).await
    {
        Ok(row) => {
            tracing::info!("passkey registered");
            state.audit.record(
                event(&login, action::PASSKEY_REGISTERED, &ip, &user_agent)
                    .detail(json!({ "name": row.name })),
            );
            Ok(Redirect::to(&format!("{PAGE_PATH}?done={ADDED}")).into_response())
        }
        Err(err @ (PasskeyError::Store(_) | PasskeyError::Unavailable)) => Err(err.into()),
        Err(err) => {
            tracing::info!(error = %err, "passkey registration refused");
            let page = passkeys_page(&state, &login, None, Some(err.to_string())).await?;
            with_script(StatusCode::BAD_REQUEST, &page)
        }
    }
}

/// `POST /dashboard/security/passkeys/remove`: removes one of the owner's passkeys.
#[tracing::instrument(skip_all, fields(owner_id = %login.owner_id()))]
pub async fn remove(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    PageForm(form): PageForm<RemoveForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    if !state
        .store
        .delete_passkey(&holder(&login), &form.id)
        .await?
    {
        return Err(PageError::NotFound("You have no such passkey.".into()));
    }
    state.audit.record(
        event(&login, action::PASSKEY_REMOVED, &ip, &user_agent)
            .detail(json!({ "credential_id": form.id })),
    );
    Ok(Redirect::to(&format!("{PAGE_PATH}?done={REMOVED}")).into_response())
}

fn sign_in_page(
    state: &AppState,
    csrf: String,
    error: Option<String>,
) -> Result<SignInPage, PageError> {
    Ok(SignInPage {
        layout: Layout::anonymous(),
        action: SIGN_IN_PATH,
        back: super::LOGIN_PATH,
        csrf,
        options: passkeys::start_sign_in(state, LoginKind::Owner)?,
        error,
    })
}

/// `GET /dashboard/login/passkey`: the sign-in form, with a new ceremony.
#[tracing::instrument(skip_all)]
pub async fn sign_in_form(
    State(state): State<AppState>,
    login: Option<OwnerLogin>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    if login.is_some() {
        return Ok(Redirect::to(HOME_PATH).into_response());
    }
    let (jar, csrf) = DASHBOARD.form_token(&state, jar);
    let page = sign_in_page(&state, csrf, None)?;
    Ok((jar, with_script(StatusCode::OK, &page)?).into_response())
}

/// `POST /dashboard/login/passkey`: verifies the assertion and logs the owner in, as a password
/// and a second factor would.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    PageForm(form): PageForm<SignInForm>,
) -> Result<Response, PageError> {
    DASHBOARD.check_form_token(&state, &jar, &form.csrf)?;
    let row = match passkeys::finish_sign_in(&state, LoginKind::Owner, &form.credential).await {
        Ok(row) => row,
        Err(err @ (PasskeyError::Store(_) | PasskeyError::Unavailable)) => return Err(err.into()),
        Err(err) => {
            tracing::info!(error = %err, "passkey sign-in refused");
            if let Some((holder, reason)) = err.audited() {
                let owner = Owner::find_by_id(&state, holder.id()).await?;
                let event = AuditEvent::new(
                    owner.as_ref().map(|o| &o.account_id),
                    Actor::anonymous(),
                    action::PASSKEY_FAILED,
                )
                .target(holder.id())
                .ip(&ip)
                .user_agent(&user_agent)
                .detail(json!({ "reason": reason }));
                state.audit.record_unauthenticated(event);
            }
            let page = sign_in_page(&state, form.csrf, Some(err.to_string()))?;
            return with_script(StatusCode::BAD_REQUEST, &page);
        }
    };
    let Some(owner) = Owner::find_by_id(&state, row.holder.id()).await? else {
        return Err(PageError::BadRequest(
            PasskeyError::UnknownCredential.to_string(),
        ));
    };
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
    tracing::info!(owner_id = %owner.id, account_id = %owner.account_id, "dashboard passkey login");
    state.audit.record(
        AuditEvent::new(
            Some(&owner.account_id),
            Actor::owner(&owner.id),
            action::PASSKEY_LOGIN,
        )
        .target(owner.id.as_str())
        .ip(&ip)
        .user_agent(&user_agent)
        .detail(json!({ "name": row.name })),
    );
    Ok((jar, Redirect::to(HOME_PATH)).into_response())
}
