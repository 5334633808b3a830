//! An owner's second factor (TOTP): `/dashboard/security/totp` to set it up, make new recovery
//! codes or remove it, and to require one of every owner of the account; `/dashboard/login/totp`,
//! the code step of a login; and the gate that sends an owner of such an account who has no
//! factor to set one up before any other page. The rules are [`crate::mfa`]'s.

use askama::Template;
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_domain::secret::hash_secret;
use keyfob_domain::time::Timestamp;
use keyfob_store::{FactorHolder, Owner};
use serde::Deserialize;

use super::account::HOME_PATH;
use super::page::{Layout, PageError, PageForm, TimeView, render, render_with_status};
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::logins::LoginKind;
use crate::mfa::{
    self, Accepted, Attempt, CODE_MISSING, CODE_REFUSED, CodeCheck, Confirmation, Enrolment,
    MfaSubject,
};
use crate::state::AppState;
use crate::web::filters;
use crate::web::{ClientIp, DASHBOARD, OwnerLogin};

/// The owner's second-factor page.
pub const PAGE_PATH: &str = "/dashboard/security/totp";
/// The code step of a login.
pub const CODE_PATH: &str = "/dashboard/login/totp";

const REMOVED: &str = "removed";
const REQUIRED_ON: &str = "required-on";
const REQUIRED_OFF: &str = "required-off";
const EXPIRED_ENROLMENT: &str = "This setup form has expired or was changed. Nothing was \
     changed. Reload the page and scan the new code.";

#[derive(Template)]
#[template(path = "security_totp.html")]
pub struct TotpPage {
    layout: Layout,
    base: &'static str,
    enrolment: Option<Enrolment>,
    since: Option<TimeView>,
    codes_left: u64,
    notice: Option<&'static str>,
    error: Option<String>,
    manage_error: Option<String>,
    /// Whether the account requires a second factor of its owners.
    required: bool,
    /// Whether this owner may use no other page until enrolled.
    must_enrol: bool,
}

#[derive(Template)]
#[template(path = "security_totp_codes.html")]
pub struct CodesPage {
    layout: Layout,
    base: &'static str,
    codes: Vec<String>,
    enrolled: bool,
}

#[derive(Template)]
#[template(path = "login_totp.html")]
pub struct CodePage {
    layout: Layout,
    csrf: String,
    error: Option<String>,
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
pub struct RequiredForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    required: String,
}

fn holder(login: &OwnerLogin) -> FactorHolder {
    FactorHolder::Owner(login.owner_id().clone())
}

/// What the page shows; `errors` are the enrolment form's and the management forms' messages,
/// `sealed` an enrolment to show again (after a wrong code).
async fn totp_page(
    state: &AppState,
    login: &OwnerLogin,
    notice: Option<&'static str>,
    errors: (Option<String>, Option<String>),
    enrolment: Option<Enrolment>,
) -> Result<TotpPage, PageError> {
    let holder = holder(login);
    let factor = state.store.find_totp_factor(&holder).await?;
    let (enrolment, since, codes_left) = match &factor {
        Some(factor) => (
            None,
            Some(TimeView::from(factor.created_at)),
            mfa::recovery_codes_left(state, &holder).await?,
        ),
        None => (
            Some(enrolment.unwrap_or_else(|| Enrolment::start(state, &holder, &login.email))),
            None,
            0,
        ),
    };
    let required = state.store.account_requires_mfa(login.account_id()).await?;
    Ok(TotpPage {
        layout: login.layout("security"),
        base: PAGE_PATH,
        enrolment,
        since,
        codes_left,
        notice,
        error: errors.0,
        manage_error: errors.1,
        required,
        must_enrol: required && factor.is_none(),
    })
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

/// `GET /dashboard/security/totp`: a new secret to scan and confirm, or the factor's state.
#[tracing::instrument(skip_all, fields(owner_id = %login.owner_id()))]
pub async fn page(
    login: OwnerLogin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let notice = match query.as_deref() {
        Some(q) if q == format!("done={REMOVED}") => {
            Some("The second factor was removed. Your login needs only your password now.")
        }
        Some(q) if q == format!("done={REQUIRED_ON}") => {
            Some("Every owner of this account must now use a second factor.")
        }
        Some(q) if q == format!("done={REQUIRED_OFF}") => {
            Some("Owners of this account may now log in without a second factor.")
        }
        _ => None,
    };
    let page = totp_page(&state, &login, notice, (None, None), None).await?;
    Ok(render(&page)?.into_response())
}

/// `POST /dashboard/security/totp/confirm`: stores the factor once a current code of the form's
/// secret is right, and shows the recovery codes, once.
#[tracing::instrument(skip_all, fields(owner_id = %login.owner_id()))]
pub async fn confirm(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    PageForm(form): PageForm<ConfirmForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let holder = holder(&login);
    let (enrolment, secret) = Enrolment::resume(&state, &holder, &login.email, &form.secret)
        .ok_or_else(|| PageError::BadRequest(EXPIRED_ENROLMENT.into()))?;
    match mfa::confirm(&state, &holder, &secret, &form.code).await? {
        Confirmation::Enrolled(codes) => {
            tracing::info!("second factor enrolled");
            state
                .audit
                .record(event(&login, action::MFA_ENROLLED, &ip, &user_agent));
            render_with_status(
                StatusCode::OK,
                &CodesPage {
                    layout: login.layout("security"),
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
            let page = totp_page(&state, &login, None, (error, None), Some(enrolment)).await?;
            render_with_status(StatusCode::BAD_REQUEST, &page)
        }
        Confirmation::AlreadyEnrolled => Err(PageError::BadRequest(
            "You already have a second factor. Nothing was changed.".into(),
        )),
    }
}

/// Checks a code typed by the logged-in owner (recording a wrong one, or a recovery code used).
async fn owner_code(
    state: &AppState,
    login: &OwnerLogin,
    jar: &CookieJar,
    (ip, user_agent): (&str, &UserAgent),
    code: &str,
    at: &str,
) -> Result<CodeCheck, PageError> {
    let attempt = Attempt {
        kind: LoginKind::Owner,
        email: &login.email,
        ip,
        device: DASHBOARD.device_token(jar),
    };
    let check = mfa::check_code(state, &holder(login), attempt, code).await?;
    mfa::audit_check(state, check, at, |action| {
        event(login, action, ip, user_agent)
    });
    Ok(check)
}

/// The page again with an error for the management forms.
async fn refused(
    state: &AppState,
    login: &OwnerLogin,
    check: CodeCheck,
) -> Result<Response, PageError> {
    let message = match check {
        CodeCheck::Missing => CODE_MISSING,
        _ => CODE_REFUSED,
    }
    .to_owned();
    let page = totp_page(state, login, None, (None, Some(message)), None).await?;
    render_with_status(StatusCode::BAD_REQUEST, &page)
}

/// `POST /dashboard/security/totp/recovery-codes`: a new set of recovery codes, with a current
/// code (or an unused recovery code); the old set stops working.
#[tracing::instrument(skip_all, fields(owner_id = %login.owner_id()))]
pub async fn recovery_codes(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    PageForm(form): PageForm<CodeForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let check = owner_code(
        &state,
        &login,
        &jar,
        (&ip, &user_agent),
        &form.code,
        "recovery_codes",
    )
    .await?;
    match check {
        CodeCheck::Accepted(_) => {}
        CodeCheck::NoFactor => return Ok(Redirect::to(PAGE_PATH).into_response()),
        other => return refused(&state, &login, other).await,
    }
    let Some(codes) = mfa::regenerate_recovery_codes(&state, &holder(&login)).await? else {
        return Ok(Redirect::to(PAGE_PATH).into_response());
    };
    state.audit.record(event(
        &login,
        action::MFA_RECOVERY_REGENERATED,
        &ip,
        &user_agent,
    ));
    render_with_status(
        StatusCode::OK,
        &CodesPage {
            layout: login.layout("security"),
            base: PAGE_PATH,
            codes,
            enrolled: false,
        },
    )
}

/// `POST /dashboard/security/totp/remove`: removes the factor, with the password and a current
/// code (or a recovery code).
#[tracing::instrument(skip_all, fields(owner_id = %login.owner_id()))]
pub async fn remove(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    PageForm(form): PageForm<RemoveForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    // The password under the same budgets as a login, then the code.
    let attempt = state
        .logins
        .begin(
            LoginKind::Owner,
            &login.email,
            &ip,
            DASHBOARD.device_token(&jar),
        )
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    let owner = state
        .store
        .find_owner(login.owner_id())
        .await?
        .ok_or_else(|| PageError::Forbidden("Log in again.".into()))?;
    if !state
        .passwords
        .verify(form.password, Some(owner.password_hash))
        .await
    {
        attempt.failed();
        let message = Some("The password is incorrect. Nothing was changed.".to_owned());
        let page = totp_page(&state, &login, None, (None, message), None).await?;
        return render_with_status(StatusCode::BAD_REQUEST, &page);
    }
    attempt.succeeded();
    let check = owner_code(
        &state,
        &login,
        &jar,
        (&ip, &user_agent),
        &form.code,
        "remove",
    )
    .await?;
    match check {
        CodeCheck::Accepted(_) => {}
        CodeCheck::NoFactor => return Ok(Redirect::to(PAGE_PATH).into_response()),
        other => return refused(&state, &login, other).await,
    }
    if state.store.delete_totp_factor(&holder(&login)).await? {
        tracing::info!("second factor removed");
        state
            .audit
            .record(event(&login, action::MFA_REMOVED, &ip, &user_agent));
    }
    Ok(Redirect::to(&format!("{PAGE_PATH}?done={REMOVED}")).into_response())
}

/// `POST /dashboard/security/totp/required`: whether every owner of the account must use a
/// second factor (`required` = `yes` or `no`). Only an owner who has one may require it.
#[tracing::instrument(skip_all, fields(owner_id = %login.owner_id()))]
pub async fn required(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    PageForm(form): PageForm<RequiredForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let required = match form.required.as_str() {
        "yes" => true,
        "no" => false,
        _ => {
            return Err(PageError::BadRequest(
                "The form field `required` must be `yes` or `no`. Nothing was changed.".into(),
            ));
        }
    };
    if required && !mfa::has_factor(&state, &holder(&login)).await? {
        let message =
            Some("Set up your own second factor first, then require one of every owner.".into());
        let page = totp_page(&state, &login, None, (None, message), None).await?;
        return render_with_status(StatusCode::BAD_REQUEST, &page);
    }
    let before = state.store.account_requires_mfa(login.account_id()).await?;
    state
        .store
        .set_account_requires_mfa(login.account_id(), required)
        .await?;
    if before != required {
        state.audit.record(
            AuditEvent::new(
                Some(login.account_id()),
                Actor::owner(login.owner_id()),
                action::ACCOUNT_MFA_REQUIRED_CHANGED,
            )
            .target(login.account_id().as_str())
            .ip(&ip)
            .user_agent(&user_agent)
            .detail(serde_json::json!({ "required": required })),
        );
    }
    let done = if required { REQUIRED_ON } else { REQUIRED_OFF };
    Ok(Redirect::to(&format!("{PAGE_PATH}?done={done}")).into_response())
}

/// The password was right and `owner` has a factor: no login yet, but a pending-login cookie and
/// the code page.
pub fn ask_code(state: &AppState, jar: CookieJar, owner: &Owner) -> Response {
    let jar = mfa::defer_login(state, jar, owner);
    tracing::info!(owner_id = %owner.id, "dashboard login waits for a second factor");
    (jar, Redirect::to(CODE_PATH)).into_response()
}

/// Whether the password step of `owner`'s login must be followed by a code.
pub async fn needs_code(state: &AppState, owner: &Owner) -> Result<bool, PageError> {
    Ok(mfa::has_factor(state, &owner.holder()).await?)
}

/// `GET /dashboard/login/totp`: the code form of a login whose password was right.
#[tracing::instrument(skip_all)]
pub async fn code_page(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    if mfa::pending_subject::<Owner>(&state, &jar).await?.is_none() {
        return Ok((
            mfa::clear_pending::<Owner>(&state, jar),
            mfa::pending_expired(),
        )
            .into_response());
    }
    let (jar, csrf) = DASHBOARD.form_token(&state, jar);
    let page = CodePage {
        layout: Layout::anonymous(),
        csrf,
        error: None,
    };
    Ok((jar, render(&page)?).into_response())
}

/// `POST /dashboard/login/totp`: a TOTP or recovery code, within the login budgets; right, the
/// login starts as after a password alone.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn code(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    PageForm(form): PageForm<CodeForm>,
) -> Result<Response, PageError> {
    DASHBOARD.check_form_token(&state, &jar, &form.csrf)?;
    let Some(owner) = mfa::pending_subject::<Owner>(&state, &jar).await? else {
        return Ok((
            mfa::clear_pending::<Owner>(&state, jar),
            mfa::pending_expired(),
        )
            .into_response());
    };
    let attempt = Attempt {
        kind: LoginKind::Owner,
        email: &owner.email,
        ip: &ip,
        device: DASHBOARD.device_token(&jar),
    };
    let how = match mfa::check_code(&state, &owner.holder(), attempt, &form.code).await? {
        CodeCheck::Accepted(how) => how,
        CodeCheck::NoFactor => {
            return Ok((
                mfa::clear_pending::<Owner>(&state, jar),
                mfa::pending_expired(),
            )
                .into_response());
        }
        check => {
            if check == CodeCheck::Refused {
                tracing::info!("dashboard login refused: wrong second-factor code");
                state.audit.record_unauthenticated(
                    AuditEvent::new(
                        Some(&owner.account_id),
                        Actor::anonymous(),
                        action::MFA_FAILED,
                    )
                    .target(owner.id.as_str())
                    .ip(&ip)
                    .user_agent(&user_agent)
                    .detail(serde_json::json!({ "at": "login" })),
                );
            }
            let message = match check {
                CodeCheck::Missing => CODE_MISSING,
                _ => CODE_REFUSED,
            };
            let page = CodePage {
                layout: Layout::anonymous(),
                csrf: form.csrf,
                error: Some(message.to_owned()),
            };
            return render_with_status(StatusCode::BAD_REQUEST, &page);
        }
    };
    let jar = mfa::clear_pending::<Owner>(&state, jar);
    let jar = OwnerLogin::start_from(
        &state,
        jar,
        &owner,
        crate::web::LoginClient {
            ip: Some(&ip),
            user_agent: user_agent.0.as_deref(),
        },
    )
    .await?;
    let jar = DASHBOARD.remember_device(&state, jar, &owner.email);
    tracing::info!(owner_id = %owner.id, account_id = %owner.account_id, "dashboard login");
    let event = |action| {
        AuditEvent::new(Some(&owner.account_id), Actor::owner(&owner.id), action)
            .ip(&ip)
            .user_agent(&user_agent)
    };
    state
        .audit
        .record(event(action::OWNER_LOGIN).detail(serde_json::json!({ "mfa": how.method() })));
    if let Accepted::Recovery { remaining } = how {
        state.audit.record(
            event(action::MFA_RECOVERY_USED)
                .target(owner.id.as_str())
                .detail(serde_json::json!({ "at": "login", "remaining": remaining })),
        );
    }
    Ok((jar, Redirect::to(HOME_PATH)).into_response())
}

/// Pages an owner who must enrol may still use: logging in and out, the second-factor page.
fn open_without_factor(path: &str) -> bool {
    matches!(
        path,
        "/dashboard/login"
            | "/dashboard/signup"
            | "/dashboard/logout"
            | "/dashboard/static/app.css"
    ) || path == CODE_PATH
        || path == PAGE_PATH
        || path
            .strip_prefix(PAGE_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The gate in front of every dashboard page: an owner whose account requires a second factor
/// and who has none is sent to set one up, whatever page was asked for (logging out and the
/// second-factor page itself excepted).
pub async fn require_enrolment(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if open_without_factor(request.uri().path()) {
        return next.run(request).await;
    }
    let jar = CookieJar::from_headers(request.headers());
    if let Some(token) = DASHBOARD.login_token(&jar) {
        let must = async {
            let Some(row) = state
                .store
                .find_owner_login(&hash_secret(token), Timestamp::now())
                .await?
            else {
                return Ok(false);
            };
            state.store.owner_must_enrol(&row.owner_id).await
        };
        match must.await {
            Ok(true) => return Redirect::to(PAGE_PATH).into_response(),
            Ok(false) => {}
            Err(err) => return PageError::from(err).into_response(),
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_logging_in_and_out_and_the_factor_page_are_open_without_a_factor() {
        for open in [
            "/dashboard/login",
            "/dashboard/logout",
            "/dashboard/login/totp",
            "/dashboard/security/totp",
            "/dashboard/security/totp/confirm",
            "/dashboard/static/app.css",
        ] {
            assert!(open_without_factor(open), "{open}");
        }
        for closed in [
            "/dashboard",
            "/dashboard/keys",
            "/dashboard/data/deals",
            "/dashboard/security/totpx",
            "/dashboard/account",
        ] {
            assert!(!open_without_factor(closed), "{closed}");
        }
    }
}
