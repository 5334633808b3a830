//! An end user's second factor (TOTP): `/auth/security/totp` to set it up, make new recovery
//! codes or remove it, and `/auth/login/totp`, the code step of a login. An authorization request
//! in progress rides along through the code step as it does through the login page (the page's
//! query, the form's `request` field), so the user lands back on `GET /auth` and goes on to
//! consent. The rules are [`crate::mfa`]'s.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_store::{AccountId, FactorHolder, UserRow};
use serde::Deserialize;

use super::account::{context, request_field};
use super::page::{UserForm, UserLayout, UserPageError, content_security_policy, page, see_other};
use super::request::AuthorizeParams;
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::dashboard::page::TimeView;
use crate::logins::LoginKind;
use crate::mfa::{
    self, Accepted, Attempt, CODE_MISSING, CODE_REFUSED, CodeCheck, Confirmation, Enrolment,
    MfaSubject,
};
use crate::state::AppState;
use crate::web::filters;
use crate::web::{ClientIp, PageError, USER_PAGES, UserLogin};

/// The user's second-factor page.
pub const PAGE_PATH: &str = "/auth/security/totp";
/// The code step of a login.
pub const CODE_PATH: &str = "/auth/login/totp";

const REMOVED: &str = "removed";
const EXPIRED_ENROLMENT: &str = "This setup form has expired or was changed. Nothing was \
     changed. Reload the page and scan the new code.";

#[derive(Template)]
#[template(path = "auth/security_totp.html")]
struct TotpPage {
    layout: UserLayout,
    base: &'static str,
    enrolment: Option<Enrolment>,
    since: Option<TimeView>,
    codes_left: u64,
    notice: Option<&'static str>,
    error: Option<String>,
    manage_error: Option<String>,
}

#[derive(Template)]
#[template(path = "auth/security_totp_codes.html")]
struct CodesPage {
    layout: UserLayout,
    base: &'static str,
    codes: Vec<String>,
    enrolled: bool,
}

#[derive(Template)]
#[template(path = "auth/login_totp.html")]
struct CodePage {
    layout: UserLayout,
    csrf: String,
    error: Option<String>,
    app_name: Option<String>,
    request: String,
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    code: String,
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
pub struct LoginCodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    request: String,
}

fn holder(user: &UserLogin) -> FactorHolder {
    FactorHolder::User(user.user_id().clone())
}

async fn totp_page(
    state: &AppState,
    user: &UserLogin,
    notice: Option<&'static str>,
    errors: (Option<String>, Option<String>),
    enrolment: Option<Enrolment>,
) -> Result<TotpPage, UserPageError> {
    let holder = holder(user);
    let factor = state.store.find_totp_factor(&holder).await?;
    let (enrolment, since, codes_left) = match &factor {
        Some(factor) => (
            None,
            Some(TimeView::from(factor.created_at)),
            mfa::recovery_codes_left(state, &holder).await?,
        ),
        None => (
            Some(enrolment.unwrap_or_else(|| Enrolment::start(state, &holder, &user.email))),
            None,
            0,
        ),
    };
    Ok(TotpPage {
        layout: UserLayout::of(user),
        base: PAGE_PATH,
        enrolment,
        since,
        codes_left,
        notice,
        error: errors.0,
        manage_error: errors.1,
    })
}

fn show<T: Template>(status: StatusCode, template: &T) -> Result<Response, UserPageError> {
    page(status, template, content_security_policy(None))
}

fn event(user: &UserLogin, action: &'static str, ip: &str, ua: &UserAgent) -> AuditEvent {
    AuditEvent::new(None, Actor::user(user.user_id()), action)
        .target(user.user_id().as_str())
        .ip(ip)
        .user_agent(ua)
}

/// `GET /auth/security/totp`.
#[tracing::instrument(skip_all, fields(user_id = %user.user_id()))]
pub async fn manage(
    user: UserLogin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, UserPageError> {
    let notice = (query.as_deref() == Some(&format!("done={REMOVED}")))
        .then_some("The second factor was removed. Your login needs only your password now.");
    let page = totp_page(&state, &user, notice, (None, None), None).await?;
    show(StatusCode::OK, &page)
}

/// `POST /auth/security/totp/confirm`.
#[tracing::instrument(skip_all, fields(user_id = %user.user_id()))]
pub async fn confirm(
    user: UserLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    UserForm(form): UserForm<ConfirmForm>,
) -> Result<Response, UserPageError> {
    user.check_csrf(&form.csrf)?;
    let holder = holder(&user);
    let (enrolment, secret) = Enrolment::resume(&state, &holder, &user.email, &form.secret)
        .ok_or_else(|| PageError::BadRequest(EXPIRED_ENROLMENT.into()))?;
    match mfa::confirm(&state, &holder, &secret, &form.code).await? {
        Confirmation::Enrolled(codes) => {
            tracing::info!("second factor enrolled");
            state
                .audit
                .record(event(&user, action::MFA_ENROLLED, &ip, &user_agent));
            show(
                StatusCode::OK,
                &CodesPage {
                    layout: UserLayout::of(&user),
                    base: PAGE_PATH,
                    codes,
                    enrolled: true,
                },
            )
        }
        Confirmation::WrongCode => {
            let error = Some(
                "The code is incorrect. Enter the 6-digit code your authenticator app shows now."
                    .to_owned(),
            );
            let page = totp_page(&state, &user, None, (error, None), Some(enrolment)).await?;
            show(StatusCode::BAD_REQUEST, &page)
        }
        Confirmation::AlreadyEnrolled => Err(PageError::BadRequest(
            "You already have a second factor. Nothing was changed.".into(),
        )
        .into()),
    }
}

async fn user_code(
    state: &AppState,
    user: &UserLogin,
    jar: &CookieJar,
    (ip, user_agent): (&str, &UserAgent),
    code: &str,
    at: &str,
) -> Result<CodeCheck, UserPageError> {
    let attempt = Attempt {
        kind: LoginKind::User,
        email: &user.email,
        ip,
        device: USER_PAGES.device_token(jar),
    };
    let check = mfa::check_code(state, &holder(user), attempt, code).await?;
    mfa::audit_check(state, check, at, |action| {
        event(user, action, ip, user_agent)
    });
    Ok(check)
}

async fn refused(
    state: &AppState,
    user: &UserLogin,
    check: CodeCheck,
) -> Result<Response, UserPageError> {
    let message = match check {
        CodeCheck::Missing => CODE_MISSING,
        _ => CODE_REFUSED,
    };
    let page = totp_page(state, user, None, (None, Some(message.to_owned())), None).await?;
    show(StatusCode::BAD_REQUEST, &page)
}

/// `POST /auth/security/totp/recovery-codes`.
#[tracing::instrument(skip_all, fields(user_id = %user.user_id()))]
pub async fn recovery_codes(
    user: UserLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    UserForm(form): UserForm<CodeForm>,
) -> Result<Response, UserPageError> {
    user.check_csrf(&form.csrf)?;
    let check = user_code(
        &state,
        &user,
        &jar,
        (&ip, &user_agent),
        &form.code,
        "recovery_codes",
    )
    .await?;
    match check {
        CodeCheck::Accepted(_) => {}
        CodeCheck::NoFactor => return see_other(PAGE_PATH),
        other => return refused(&state, &user, other).await,
    }
    let Some(codes) = mfa::regenerate_recovery_codes(&state, &holder(&user)).await? else {
        return see_other(PAGE_PATH);
    };
    state.audit.record(event(
        &user,
        action::MFA_RECOVERY_REGENERATED,
        &ip,
        &user_agent,
    ));
    show(
        StatusCode::OK,
        &CodesPage {
            layout: UserLayout::of(&user),
            base: PAGE_PATH,
            codes,
            enrolled: false,
        },
    )
}

/// `POST /auth/security/totp/remove`: with the password and a current code.
#[tracing::instrument(skip_all, fields(user_id = %user.user_id()))]
pub async fn remove(
    user: UserLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    UserForm(form): UserForm<RemoveForm>,
) -> Result<Response, UserPageError> {
    user.check_csrf(&form.csrf)?;
    let attempt = state
        .logins
        .begin(
            LoginKind::User,
            &user.email,
            &ip,
            USER_PAGES.device_token(&jar),
        )
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    let Some(row) = state.store.find_user(user.user_id()).await? else {
        return Err(PageError::NotFound("Your account no longer exists.".into()).into());
    };
    if !state
        .passwords
        .verify(form.password, Some(row.password_hash))
        .await
    {
        attempt.failed();
        let message = Some("The password is incorrect. Nothing was changed.".to_owned());
        let page = totp_page(&state, &user, None, (None, message), None).await?;
        return show(StatusCode::BAD_REQUEST, &page);
    }
    attempt.succeeded();
    let check = user_code(
        &state,
        &user,
        &jar,
        (&ip, &user_agent),
        &form.code,
        "remove",
    )
    .await?;
    match check {
        CodeCheck::Accepted(_) => {}
        CodeCheck::NoFactor => return see_other(PAGE_PATH),
        other => return refused(&state, &user, other).await,
    }
    if state.store.delete_totp_factor(&holder(&user)).await? {
        tracing::info!("second factor removed");
        state
            .audit
            .record(event(&user, action::MFA_REMOVED, &ip, &user_agent));
    }
    see_other(&format!("{PAGE_PATH}?done={REMOVED}"))
}

/// Whether the password step of `user`'s login must be followed by a code.
pub async fn needs_code(state: &AppState, user: &UserRow) -> Result<bool, UserPageError> {
    Ok(mfa::has_factor(state, &user.holder()).await?)
}

/// The code page's address, carrying the authorization request.
fn code_path(params: &AuthorizeParams) -> String {
    if params.is_empty() {
        CODE_PATH.to_owned()
    } else {
        format!("{CODE_PATH}?{}", params.to_query())
    }
}

/// The password was right and `user` has a factor: a pending-login cookie and the code page,
/// with the request.
pub fn ask_code(
    state: &AppState,
    jar: CookieJar,
    user: &UserRow,
    params: &AuthorizeParams,
) -> Result<Response, UserPageError> {
    let jar = mfa::defer_login(state, jar, user);
    tracing::info!(user_id = %user.id, "user login waits for a second factor");
    Ok((jar, see_other(&code_path(params))?).into_response())
}

/// The account whose application the request names, if any.
async fn request_account(
    state: &AppState,
    params: &AuthorizeParams,
) -> Result<Option<AccountId>, UserPageError> {
    Ok(match params.client_id.as_deref() {
        Some(client_id) => state.find_app(client_id).await?.map(|a| a.account_id),
        None => None,
    })
}

fn expired(state: &AppState, jar: CookieJar) -> Response {
    (
        mfa::clear_pending::<UserRow>(state, jar),
        UserPageError(mfa::pending_expired()),
    )
        .into_response()
}

/// `GET /auth/login/totp?<request>`: the code form of a login whose password was right.
#[tracing::instrument(skip_all)]
pub async fn code_page(
    State(state): State<AppState>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Result<Response, UserPageError> {
    if mfa::pending_subject::<UserRow>(&state, &jar)
        .await?
        .is_none()
    {
        return Ok(expired(&state, jar));
    }
    let params = AuthorizeParams::from_query(&query.unwrap_or_default()).unwrap_or_default();
    let (app_name, csp) = context(&state, &params).await?;
    let (jar, csrf) = USER_PAGES.form_token(&state, jar);
    let code = CodePage {
        layout: UserLayout::anonymous(),
        csrf,
        error: None,
        app_name,
        request: params.to_query(),
    };
    Ok((jar, page(StatusCode::OK, &code, csp)?).into_response())
}

/// `POST /auth/login/totp`: a TOTP or recovery code, within the login budgets; right, the login
/// starts as after a password alone and the request goes on.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn code(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    UserForm(form): UserForm<LoginCodeForm>,
) -> Result<Response, UserPageError> {
    USER_PAGES.check_form_token(&state, &jar, &form.csrf)?;
    let params = request_field(&form.request)?;
    // A user disabled since their password was checked starts again, and is told at the password.
    let Some(user) = mfa::pending_subject::<UserRow>(&state, &jar)
        .await?
        .filter(|user| user.disabled_at.is_none())
    else {
        return Ok(expired(&state, jar));
    };
    let attempt = Attempt {
        kind: LoginKind::User,
        email: &user.email,
        ip: &ip,
        device: USER_PAGES.device_token(&jar),
    };
    let check = mfa::check_code(&state, &user.holder(), attempt, &form.code).await?;
    let account_id = request_account(&state, &params).await?;
    let client_id = account_id.as_ref().and(params.client_id.as_ref());
    let how = match check {
        CodeCheck::Accepted(how) => how,
        CodeCheck::NoFactor => return Ok(expired(&state, jar)),
        check => {
            if check == CodeCheck::Refused {
                tracing::info!("user login refused: wrong second-factor code");
                state.audit.record_unauthenticated(
                    AuditEvent::new(account_id.as_ref(), Actor::anonymous(), action::MFA_FAILED)
                        .target(user.id.as_str())
                        .ip(&ip)
                        .user_agent(&user_agent)
                        .detail(serde_json::json!({ "at": "login", "client_id": client_id })),
                );
            }
            let message = match check {
                CodeCheck::Missing => CODE_MISSING,
                _ => CODE_REFUSED,
            };
            let (app_name, csp) = context(&state, &params).await?;
            let again = CodePage {
                layout: UserLayout::anonymous(),
                csrf: form.csrf,
                error: Some(message.to_owned()),
                app_name,
                request: params.to_query(),
            };
            return page(StatusCode::BAD_REQUEST, &again, csp);
        }
    };
    let jar = mfa::clear_pending::<UserRow>(&state, jar);
    let jar = UserLogin::start(&state, jar, &user).await?;
    let jar = USER_PAGES.remember_device(&state, jar, &user.email);
    tracing::info!(user_id = %user.id, "user login");
    let event = |action| {
        AuditEvent::new(account_id.as_ref(), Actor::user(&user.id), action)
            .ip(&ip)
            .user_agent(&user_agent)
    };
    state.audit.record(
        event(action::USER_LOGIN)
            .detail(serde_json::json!({ "client_id": client_id, "mfa": how.method() })),
    );
    if let Accepted::Recovery { remaining } = how {
        state.audit.record(
            event(action::MFA_RECOVERY_USED)
                .target(user.id.as_str())
                .detail(serde_json::json!({ "at": "login", "remaining": remaining })),
        );
    }
    // This login answers what the request asked of one (prompt=login, max_age, login_hint).
    Ok((jar, see_other(&params.after_login().continue_path())?).into_response())
}
