//! End users' forgotten passwords and email verification, as the dashboard has them for owners
//! (`crate::dashboard::recovery`): "Forgot password?" answers the same whether or not the email
//! has an account, a reset ends every login and session of the user, and a verification link
//! leads back into the authorization request the user signed up during.

use askama::Template;
use axum::extract::{Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_domain::mail::LinkPurpose;
use keyfob_domain::time::Timestamp;
use keyfob_store::{AccountId, UserRow};
use serde::Deserialize;

use super::page::{UserForm, UserLayout, UserPageError, content_security_policy, page, see_other};
use super::request::AuthorizeParams;
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::dashboard::page::PageError;
use crate::state::AppState;
use crate::web::filters;
use crate::web::recovery::{self, ResetOutcome, ResetRequest};
use crate::web::{ClientIp, USER_PAGES, UserLogin};

/// `?done=` of the login page after a reset.
pub const PASSWORD_RESET: &str = "password-reset";

/// A page that only says something, with an optional link.
#[derive(Template)]
#[template(path = "auth/notice.html")]
pub struct NoticePage {
    pub layout: UserLayout,
    pub title: &'static str,
    pub paragraphs: Vec<String>,
    pub link_label: Option<&'static str>,
    pub link_href: String,
}

impl NoticePage {
    pub fn new(title: &'static str, paragraphs: Vec<String>) -> NoticePage {
        NoticePage {
            layout: UserLayout::anonymous(),
            title,
            paragraphs,
            link_label: None,
            link_href: String::new(),
        }
    }

    pub fn link(mut self, label: &'static str, href: impl Into<String>) -> NoticePage {
        self.link_label = Some(label);
        self.link_href = href.into();
        self
    }

    pub fn show(&self, status: StatusCode) -> Result<Response, UserPageError> {
        page(status, self, content_security_policy(None))
    }
}

/// The login page's address, carrying the authorization request if there is one.
fn login_href(request: &str) -> String {
    if request.is_empty() {
        super::LOGIN_PATH.to_owned()
    } else {
        format!("{}?{request}", super::LOGIN_PATH)
    }
}

/// What sign-up and "Forgot password?" answer, whoever has the address.
pub fn check_your_inbox(email: &str, what: &str, request: &str) -> NoticePage {
    NoticePage::new(
        "Check your inbox",
        vec![
            format!("If {email} can receive mail, a message is on its way to it {what}."),
            "It can take a minute or two. Look in the spam folder too.".into(),
        ],
    )
    .link("Log in", login_href(request))
}

fn dead_link(request: &str) -> NoticePage {
    NoticePage::new(
        "This link does not work",
        vec![
            "It has expired, was used already, or a newer one was sent since. Links in our \
             messages work once."
                .into(),
        ],
    )
    .link("Log in", login_href(request))
}

#[derive(Template)]
#[template(path = "auth/forgot.html")]
struct ForgotPage {
    layout: UserLayout,
    csrf: String,
    email: String,
    error: Option<String>,
    request: String,
}

#[derive(Template)]
#[template(path = "auth/reset.html")]
struct ResetPage {
    layout: UserLayout,
    csrf: String,
    token: String,
    email: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    request: String,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// The account whose application an authorization request (as a query) names, for the audit log.
async fn account_of(state: &AppState, request: Option<&str>) -> Option<AccountId> {
    let params = AuthorizeParams::from_query(request?)?;
    let client_id = params.client_id?;
    state
        .find_app(&client_id)
        .await
        .ok()
        .flatten()
        .map(|app| app.account_id)
}

/// `GET /auth/forgot`, carrying the authorization request in its query.
#[tracing::instrument(skip_all)]
pub async fn forgot_page(
    State(state): State<AppState>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Result<Response, UserPageError> {
    let params = AuthorizeParams::from_query(&query.unwrap_or_default()).unwrap_or_default();
    let (jar, csrf) = USER_PAGES.form_token(&state, jar);
    let form = ForgotPage {
        layout: UserLayout::anonymous(),
        csrf,
        email: String::new(),
        error: None,
        request: params.to_query(),
    };
    Ok((
        jar,
        page(StatusCode::OK, &form, content_security_policy(None))?,
    )
        .into_response())
}

/// `POST /auth/forgot`: within the mail budgets, answers "check your inbox" at once and looks the
/// email up afterwards, off the request, so that neither the answer nor its timing tells whether
/// the email has an account.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn forgot(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    UserForm(form): UserForm<ForgotForm>,
) -> Result<Response, UserPageError> {
    USER_PAGES.check_form_token(&state, &jar, &form.csrf)?;
    let params = AuthorizeParams::from_form_field(&form.request).map_err(|err| {
        PageError::BadRequest(format!(
            "The form field `request` is not valid: its parameter {err}. Nothing was changed."
        ))
    })?;
    let request = params.to_query();
    let email = match keyfob_domain::email::Email::parse(&form.email) {
        Ok(email) => email,
        Err(err) => {
            let again = ForgotPage {
                layout: UserLayout::anonymous(),
                csrf: form.csrf,
                email: form.email,
                error: Some(super::capitalized(&err.to_string())),
                request,
            };
            return page(
                StatusCode::BAD_REQUEST,
                &again,
                content_security_policy(None),
            );
        }
    };
    state
        .logins
        .mail(&ip, email.as_str())
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    let shown = email.as_str().to_owned();
    let task_state = state.clone();
    let next = (!request.is_empty()).then(|| request.clone());
    tokio::spawn(async move {
        match recovery::request_reset::<UserRow>(&task_state, email.as_str(), next.clone()).await {
            Ok(ResetRequest::Sent(user)) => {
                let account = account_of(&task_state, next.as_deref()).await;
                task_state.audit.record_unauthenticated(
                    AuditEvent::new(
                        account.as_ref(),
                        Actor::anonymous(),
                        action::PASSWORD_RESET_REQUESTED,
                    )
                    .target(&user.id)
                    .ip(&ip)
                    .user_agent(&user_agent),
                );
            }
            Ok(ResetRequest::NoSuchPerson) => {}
            Err(err) => tracing::error!(error = %err, "a reset link could not be sent"),
        }
    });
    check_your_inbox(&shown, "with a link to choose a new password", &request).show(StatusCode::OK)
}

/// `GET /auth/reset?token=…`: the new-password form, for a link that works (not used up yet).
#[tracing::instrument(skip_all)]
pub async fn reset_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(query): Query<TokenQuery>,
) -> Result<Response, UserPageError> {
    let link = match recovery::token_hash(&query.token) {
        Some(hash) => {
            state
                .store
                .find_email_link(&hash, LinkPurpose::Reset, Timestamp::now())
                .await?
        }
        None => None,
    };
    let Some(link) = link else {
        return dead_link("").show(StatusCode::NOT_FOUND);
    };
    let (jar, csrf) = USER_PAGES.form_token(&state, jar);
    let form = ResetPage {
        layout: UserLayout::anonymous(),
        csrf,
        token: query.token,
        email: link.email,
        error: None,
    };
    Ok((
        jar,
        page(StatusCode::OK, &form, content_security_policy(None))?,
    )
        .into_response())
}

/// `POST /auth/reset`: the new password, set with the link in one transaction that also ends
/// every login and session of the user. Audited; the user is mailed that it changed; then the
/// login page, carrying the authorization request the link was asked for during.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    UserForm(form): UserForm<ResetForm>,
) -> Result<Response, UserPageError> {
    USER_PAGES.check_form_token(&state, &jar, &form.csrf)?;
    let link =
        match recovery::reset_password(&state, &form.token, form.password, &form.confirm).await? {
            ResetOutcome::Done(link) => link,
            ResetOutcome::DeadLink => return dead_link("").show(StatusCode::NOT_FOUND),
            ResetOutcome::Refused { email, message } => {
                let again = ResetPage {
                    layout: UserLayout::anonymous(),
                    csrf: form.csrf,
                    token: form.token,
                    email,
                    error: Some(message),
                };
                return page(
                    StatusCode::BAD_REQUEST,
                    &again,
                    content_security_policy(None),
                );
            }
        };
    let request = link.next.clone().unwrap_or_default();
    if let Some(user) = state
        .store
        .find_user(&link.subject_id.as_str().into())
        .await?
    {
        tracing::info!(user_id = %user.id, "user password reset");
        let account = account_of(&state, link.next.as_deref()).await;
        state.audit.record(
            AuditEvent::new(
                account.as_ref(),
                Actor::user(&user.id),
                action::PASSWORD_RESET,
            )
            .ip(&ip)
            .user_agent(&user_agent),
        );
        recovery::send_password_changed(&state, &user);
    }
    let jar = USER_PAGES.clear_login(&state, jar);
    let separator = if request.is_empty() { "" } else { "&" };
    Ok((
        jar,
        see_other(&format!(
            "{}?{request}{separator}done={PASSWORD_RESET}",
            super::LOGIN_PATH
        ))?,
    )
        .into_response())
}

/// `GET /auth/verify?token=…`: uses a verification link. A user who signed up during an
/// authorization request goes on with it; anyone else is told their address is confirmed.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn verify(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    Query(query): Query<TokenQuery>,
) -> Result<Response, UserPageError> {
    let link = match recovery::token_hash(&query.token) {
        Some(hash) => state.store.use_verify_link(&hash, Timestamp::now()).await?,
        None => None,
    };
    let Some(link) = link else {
        return dead_link("").show(StatusCode::NOT_FOUND);
    };
    let user = state
        .store
        .find_user(&link.subject_id.as_str().into())
        .await?;
    let Some(user) = user.filter(|u| u.email == link.email) else {
        return dead_link("").show(StatusCode::NOT_FOUND);
    };
    let account = account_of(&state, link.next.as_deref()).await;
    state.audit.record(
        AuditEvent::new(
            account.as_ref(),
            Actor::user(&user.id),
            action::EMAIL_VERIFIED,
        )
        .ip(&ip)
        .user_agent(&user_agent),
    );
    let params = link
        .next
        .as_deref()
        .and_then(AuthorizeParams::from_query)
        .unwrap_or_default();
    if !params.is_empty() {
        return see_other(&params.continue_path());
    }
    NoticePage::new(
        "Email address confirmed",
        vec![format!("{} is confirmed. Thank you.", link.email)],
    )
    .link("Your account", super::GRANTS_PATH)
    .show(StatusCode::OK)
}

/// `POST /auth/verify/resend`: a logged-in user whose address is not verified yet asks for a
/// new link (within the mail budgets). The form may carry the authorization request to go on
/// with afterwards.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn resend(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    login: UserLogin,
    UserForm(form): UserForm<ResendForm>,
) -> Result<Response, UserPageError> {
    login.check_csrf(&form.csrf)?;
    let params = AuthorizeParams::from_form_field(&form.request).map_err(|err| {
        PageError::BadRequest(format!(
            "The form field `request` is not valid: its parameter {err}. Nothing was changed."
        ))
    })?;
    let request = params.to_query();
    let user = state
        .store
        .find_user(login.user_id())
        .await?
        .ok_or_else(|| PageError::Forbidden("Log in again.".into()))?;
    if user.email_verified_at.is_some() {
        return see_other(&params.continue_path());
    }
    state
        .logins
        .mail(&ip, &user.email)
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    recovery::send_verification(
        &state,
        &user,
        (!request.is_empty()).then(|| request.clone()),
    )
    .await?;
    let account = account_of(&state, Some(&request)).await;
    state.audit.record(
        AuditEvent::new(
            account.as_ref(),
            Actor::user(&user.id),
            action::EMAIL_VERIFICATION_SENT,
        )
        .ip(&ip)
        .user_agent(&user_agent),
    );
    let mut page = check_your_inbox(&user.email, "with a link to confirm the address", &request);
    page.layout = UserLayout::of(&login);
    page.link_label = None;
    page.show(StatusCode::OK)
}

#[derive(Deserialize)]
pub struct ResendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request: String,
}

#[derive(Template)]
#[template(path = "auth/verify_first.html")]
struct VerifyFirstPage {
    layout: UserLayout,
    app_name: String,
    email: String,
    request: String,
}

/// The page that stops a user whose address is not verified at an application whose account
/// requires verified users (`require_verified_users`), with a button to mail the link again;
/// `None` when the user may go on.
pub async fn verification_gate(
    state: &AppState,
    login: &UserLogin,
    app: &keyfob_store::AppRow,
    request: &str,
) -> Result<Option<Response>, UserPageError> {
    let required = state
        .store
        .find_account(&app.account_id)
        .await?
        .is_some_and(|account| account.require_verified_users);
    if !required {
        return Ok(None);
    }
    let user = state.store.find_user(login.user_id()).await?;
    if user.as_ref().is_some_and(|u| u.email_verified_at.is_some()) {
        return Ok(None);
    }
    tracing::info!(user_id = %login.user_id(), client_id = %app.client_id, "email not verified yet");
    let gate = VerifyFirstPage {
        layout: UserLayout::of(login),
        app_name: app.name.clone(),
        email: login.email.clone(),
        request: request.to_owned(),
    };
    page(StatusCode::FORBIDDEN, &gate, content_security_policy(None)).map(Some)
}
