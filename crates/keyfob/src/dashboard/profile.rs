//! The owner's own account page (`/dashboard/account`): their email (confirmed or not, and a
//! change of it, confirmed at the new address), their password (the current one required), the
//! browsers they are logged in from, and the account's settings. Every change is audited.

use askama::Template;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_domain::email::Email;
use keyfob_domain::time::Timestamp;
use keyfob_store::{Owner, StoreError};
use serde::Deserialize;

use super::account::{Done, PASSWORD_CHANGED};
use super::page::{Layout, PageError, PageForm, TimeView, render, render_with_status};
use super::recovery::NoticePage;
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::logins::LoginKind;
use crate::passwords::check_new_password;
use crate::state::AppState;
use crate::web::filters;
use crate::web::recovery;
use crate::web::{ClientIp, CsrfForm, DASHBOARD, OwnerLogin};

const ACCOUNT_PATH: &str = "/dashboard/account";
const PASSWORD_REFUSED: &str = "Your password is incorrect. Nothing was changed.";

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    email: String,
    verified: bool,
    notice: Option<String>,
    error: Option<String>,
    logins: Vec<LoginView>,
    require_verified_users: bool,
}

struct LoginView {
    /// The login's id in links: the hash of its cookie, never the cookie.
    id: String,
    created: TimeView,
    expires: TimeView,
    ip: String,
    browser: String,
    current: bool,
}

/// The owner's page, with a notice or an error, in `status`.
async fn account_page(
    state: &AppState,
    login: &OwnerLogin,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let owner = current_owner(state, login).await?;
    let account = state
        .store
        .find_account(login.account_id())
        .await?
        .ok_or_else(|| PageError::Forbidden("Log in again.".into()))?;
    let logins = state
        .store
        .list_owner_logins(&owner.id, Timestamp::now())
        .await?
        .into_iter()
        .map(|row| LoginView {
            current: row.id_hash == login.id_hash(),
            id: row.id_hash,
            created: row.created_at.into(),
            expires: row.expires_at.into(),
            ip: row.ip.unwrap_or_else(|| "—".into()),
            browser: row
                .user_agent
                .map(|ua| browser_name(&ua))
                .unwrap_or_else(|| "—".into()),
        })
        .collect();
    let page = AccountPage {
        layout: login.layout("account"),
        verified: owner.email_verified_at.is_some(),
        email: owner.email,
        notice,
        error,
        logins,
        require_verified_users: account.require_verified_users,
    };
    render_with_status(status, &page)
}

/// An event the owner caused on their own account page, from `ip` with `user_agent`.
fn event(login: &OwnerLogin, action: &'static str, ip: &str, user_agent: &UserAgent) -> AuditEvent {
    AuditEvent::new(
        Some(login.account_id()),
        Actor::owner(login.owner_id()),
        action,
    )
    .ip(ip)
    .user_agent(user_agent)
}

/// A browser's name and system, from its user agent, as people know them.
fn browser_name(user_agent: &str) -> String {
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .into_iter()
    .find(|(token, _)| user_agent.contains(token))
    .map(|(_, name)| name);
    let system = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ]
    .into_iter()
    .find(|(token, _)| user_agent.contains(token))
    .map(|(_, name)| name);
    match (browser, system) {
        (Some(b), Some(s)) => format!("{b} on {s}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(s)) => s.to_owned(),
        (None, None) => user_agent.chars().take(60).collect(),
    }
}

async fn current_owner(state: &AppState, login: &OwnerLogin) -> Result<Owner, PageError> {
    state
        .store
        .find_owner(login.owner_id())
        .await?
        .ok_or_else(|| PageError::Forbidden("Log in again.".into()))
}

/// `?done=` values this page explains.
fn done_notice(done: &str) -> Option<String> {
    Some(
        match done {
            "verify-sent" => "A new confirmation link is on its way to your address.",
            "email-sent" => {
                "A link is on its way to the new address. Your email changes when you follow it."
            }
            PASSWORD_CHANGED => "Your password was changed, and your other logins ended.",
            "logins-ended" => "Those logins ended.",
            "settings-saved" => "Settings saved.",
            _ => return None,
        }
        .to_owned(),
    )
}

/// `GET /dashboard/account`.
#[tracing::instrument(skip_all)]
pub async fn show(
    login: OwnerLogin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let done: Done = serde_urlencoded::from_str(&query.unwrap_or_default()).unwrap_or_default();
    let notice = done.done.as_deref().and_then(done_notice);
    account_page(&state, &login, notice, None, StatusCode::OK).await
}

fn back(done: &str) -> Response {
    Redirect::to(&format!("{ACCOUNT_PATH}?done={done}")).into_response()
}

/// Checks the owner's password under the login budgets (a stolen login cannot guess it faster
/// than a stranger could); `Ok(false)` when it is wrong.
async fn password_is_right(
    state: &AppState,
    login: &OwnerLogin,
    ip: &str,
    jar: &CookieJar,
    password: String,
) -> Result<bool, PageError> {
    let attempt = state
        .logins
        .begin(
            LoginKind::Owner,
            &login.email,
            ip,
            DASHBOARD.device_token(jar),
        )
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    let owner = current_owner(state, login).await?;
    if state
        .passwords
        .verify(password, Some(owner.password_hash))
        .await
    {
        attempt.succeeded();
        Ok(true)
    } else {
        attempt.failed();
        Ok(false)
    }
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /dashboard/account/password`: the current password, then the new one twice; the other
/// logins end and the owner is mailed that the password changed.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn change_password(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    PageForm(form): PageForm<PasswordForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let refuse = |error: &str| {
        account_page(
            &state,
            &login,
            None,
            Some(error.to_owned()),
            StatusCode::BAD_REQUEST,
        )
    };
    if form.password != form.confirm {
        return refuse("The two new passwords do not match. Nothing was changed.").await;
    }
    if let Err(err) = check_new_password(&form.password) {
        return refuse(&format!(
            "{} Nothing was changed.",
            crate::user_pages::capitalized(&err.to_string())
        ))
        .await;
    }
    if !password_is_right(&state, &login, &ip, &jar, form.current).await? {
        tracing::info!("owner password change refused: wrong password");
        return account_page(
            &state,
            &login,
            None,
            Some(PASSWORD_REFUSED.into()),
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    let password_hash = state
        .passwords
        .hash(form.password)
        .await
        .map_err(|e| PageError::Internal(e.into()))?;
    let ended = state
        .store
        .change_owner_password(login.owner_id(), &password_hash, Some(login.id_hash()))
        .await?
        .ok_or_else(|| PageError::Forbidden("Log in again.".into()))?;
    state.audit.record(
        event(&login, action::PASSWORD_CHANGED, &ip, &user_agent)
            .detail(serde_json::json!({ "logins_ended": ended })),
    );
    let owner = current_owner(&state, &login).await?;
    recovery::send_password_changed(&state, &owner);
    Ok(back(PASSWORD_CHANGED))
}

#[derive(Deserialize)]
pub struct EmailForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// `POST /dashboard/account/email`: with the password, mails a link to the new address (the
/// change happens when it is followed) and a note to the current one. Whether another account has
/// the new address is not said here: following the link says so, to its holder only.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn change_email(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    PageForm(form): PageForm<EmailForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let email = match Email::parse(&form.email) {
        Ok(email) => email,
        Err(err) => {
            let message = format!(
                "{} Nothing was changed.",
                crate::user_pages::capitalized(&err.to_string())
            );
            return account_page(&state, &login, None, Some(message), StatusCode::BAD_REQUEST)
                .await;
        }
    };
    if email.as_str() == login.email {
        let message = "That is already your email. Nothing was changed.".to_owned();
        return account_page(&state, &login, None, Some(message), StatusCode::BAD_REQUEST).await;
    }
    if !password_is_right(&state, &login, &ip, &jar, form.password).await? {
        return account_page(
            &state,
            &login,
            None,
            Some(PASSWORD_REFUSED.into()),
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    state
        .logins
        .mail(&ip, email.as_str())
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    let owner = current_owner(&state, &login).await?;
    recovery::send_change_email(&state, &owner, email.as_str()).await?;
    state.audit.record(
        event(&login, action::EMAIL_CHANGE_REQUESTED, &ip, &user_agent)
            .detail(serde_json::json!({ "new_email": email.as_str() })),
    );
    Ok(back("email-sent"))
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// `GET /dashboard/account/email/confirm?token=…`: follows the link mailed to a new address; the
/// owner's email becomes it, confirmed. Audited.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn confirm_email(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let dead = || {
        NoticePage::new(
            "This link does not work",
            vec![
                "It has expired, was used already, or a newer one was sent since. Ask for the \
                 change again on your account page."
                    .into(),
            ],
        )
        .link("Your account", ACCOUNT_PATH)
    };
    let Some(hash) = recovery::token_hash(&query.token) else {
        return render_with_status(StatusCode::NOT_FOUND, &dead());
    };
    let link = match state
        .store
        .use_change_email_link(&hash, Timestamp::now())
        .await
    {
        Ok(Some(link)) => link,
        Ok(None) => return render_with_status(StatusCode::NOT_FOUND, &dead()),
        Err(StoreError::Conflict(_)) => {
            let page = NoticePage::new(
                "This address is taken",
                vec![
                    "Another Keyfob account logs in with this address, so yours cannot move to \
                     it. Your email was not changed."
                        .into(),
                ],
            )
            .link("Your account", ACCOUNT_PATH);
            return render_with_status(StatusCode::CONFLICT, &page);
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(owner) = state
        .store
        .find_owner(&link.subject_id.as_str().into())
        .await?
    {
        tracing::info!(owner_id = %owner.id, "owner email changed");
        state.audit.record(
            AuditEvent::new(
                Some(&owner.account_id),
                Actor::owner(&owner.id),
                action::EMAIL_CHANGED,
            )
            .ip(&ip)
            .user_agent(&user_agent)
            .detail(serde_json::json!({ "email": link.email })),
        );
    }
    let page = NoticePage::new(
        "Email address changed",
        vec![format!(
            "You now log in to the dashboard as {}, and it is confirmed.",
            link.email
        )],
    )
    .link("Go to the dashboard", "/dashboard");
    render(&page).map(IntoResponse::into_response)
}

/// `POST /dashboard/account/verify`: mails the owner a new confirmation link (within the mail
/// budgets).
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn resend_verification(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let owner = current_owner(&state, &login).await?;
    if owner.email_verified_at.is_some() {
        return Ok(Redirect::to(ACCOUNT_PATH).into_response());
    }
    state
        .logins
        .mail(&ip, &owner.email)
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    recovery::send_verification(&state, &owner, None).await?;
    state.audit.record(event(
        &login,
        action::EMAIL_VERIFICATION_SENT,
        &ip,
        &user_agent,
    ));
    Ok(back("verify-sent"))
}

/// `POST /dashboard/account/logins/{id}/end`: ends one of the owner's logins (their own only; the
/// current one is a logout).
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn end_login(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    Path(id): Path<String>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PageError::NotFound(
            "There is no such login. Nothing was changed.".into(),
        ));
    }
    if !state
        .store
        .delete_owner_login_of(login.owner_id(), &id)
        .await?
    {
        return Err(PageError::NotFound(
            "There is no such login of yours; it may have ended already. Nothing was changed."
                .into(),
        ));
    }
    state.audit.record(
        event(&login, action::OWNER_LOGINS_ENDED, &ip, &user_agent)
            .detail(serde_json::json!({ "ended": 1 })),
    );
    if id == login.id_hash() {
        let jar = DASHBOARD.clear_login(&state, jar);
        return Ok((jar, Redirect::to(super::LOGIN_PATH)).into_response());
    }
    Ok(back("logins-ended"))
}

/// `POST /dashboard/account/logins/end-others`: ends every login of the owner but this one.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn end_other_logins(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let ended = state
        .store
        .delete_owner_logins(login.owner_id(), Some(login.id_hash()))
        .await?;
    state.audit.record(
        event(&login, action::OWNER_LOGINS_ENDED, &ip, &user_agent)
            .detail(serde_json::json!({ "ended": ended })),
    );
    Ok(back("logins-ended"))
}

#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    /// A checkbox: `on` when ticked, absent otherwise.
    #[serde(default)]
    require_verified_users: Option<String>,
}

/// `POST /dashboard/account/settings`: the account's settings. Audited with what changed.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn save_settings(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    PageForm(form): PageForm<SettingsForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let on = match form.require_verified_users.as_deref() {
        None => false,
        Some("on") => true,
        Some(_) => {
            return Err(PageError::BadRequest(
                "The field `require_verified_users` must be `on` or absent. Nothing was changed."
                    .into(),
            ));
        }
    };
    if !state
        .store
        .set_require_verified_users(login.account_id(), on)
        .await?
    {
        return Err(PageError::Forbidden("Log in again.".into()));
    }
    state.audit.record(
        event(&login, action::ACCOUNT_SETTINGS_CHANGED, &ip, &user_agent)
            .detail(serde_json::json!({ "require_verified_users": on })),
    );
    Ok(back("settings-saved"))
}
