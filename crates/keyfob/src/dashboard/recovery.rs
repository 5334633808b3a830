//! Owners' forgotten passwords and email verification: "Forgot password?" (the same answer
//! whether or not the email has an account), the reset link's form, and the verification link.
//! The links and their mail are `crate::web::recovery`'s.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_domain::mail::LinkPurpose;
use keyfob_domain::time::Timestamp;
use keyfob_store::Owner;
use serde::Deserialize;

use super::LOGIN_PATH;
use super::page::{Layout, PageError, PageForm, render, render_with_status};
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::state::AppState;
use crate::web::filters;
use crate::web::recovery::{self, ResetOutcome, ResetRequest};
use crate::web::{ClientIp, DASHBOARD};

/// `?done=` of the login page after a reset.
pub const PASSWORD_RESET: &str = "password-reset";

/// A page that only says something, with an optional link.
#[derive(Template)]
#[template(path = "notice.html")]
pub struct NoticePage {
    pub layout: Layout,
    pub title: &'static str,
    pub paragraphs: Vec<String>,
    pub link_label: Option<&'static str>,
    pub link_href: String,
}

impl NoticePage {
    pub fn new(title: &'static str, paragraphs: Vec<String>) -> NoticePage {
        NoticePage {
            layout: Layout::anonymous(),
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
}

/// What sign-up and "Forgot password?" answer, whoever has the address.
pub fn check_your_inbox(email: &str, what: &str) -> NoticePage {
    NoticePage::new(
        "Check your inbox",
        vec![
            format!("If {email} can receive mail, a message is on its way to it {what}."),
            "It can take a minute or two. Look in the spam folder too.".into(),
        ],
    )
    .link("Back to log in", LOGIN_PATH)
}

/// The page of a link that does not work (any more).
fn dead_link() -> NoticePage {
    NoticePage::new(
        "This link does not work",
        vec![
            "It has expired, was used already, or a newer one was sent since. Links in our \
             messages work once."
                .into(),
        ],
    )
}

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    layout: Layout,
    csrf: String,
    email: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    layout: Layout,
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

/// `GET /dashboard/forgot`.
#[tracing::instrument(skip_all)]
pub async fn forgot_page(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    let (jar, csrf) = DASHBOARD.form_token(&state, jar);
    let page = ForgotPage {
        layout: Layout::anonymous(),
        csrf,
        email: String::new(),
        error: None,
    };
    Ok((jar, render(&page)?).into_response())
}

/// `POST /dashboard/forgot`: within the mail budgets, answers "check your inbox" at once and
/// looks the email up afterwards, off the request, so that neither the answer nor its timing
/// tells whether the email has an account.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn forgot(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    PageForm(form): PageForm<ForgotForm>,
) -> Result<Response, PageError> {
    DASHBOARD.check_form_token(&state, &jar, &form.csrf)?;
    let email = match keyfob_domain::email::Email::parse(&form.email) {
        Ok(email) => email,
        Err(err) => {
            let page = ForgotPage {
                layout: Layout::anonymous(),
                csrf: form.csrf,
                email: form.email,
                error: Some(format!(
                    "{}.",
                    crate::user_pages::capitalized(&err.to_string())
                )),
            };
            return render_with_status(StatusCode::BAD_REQUEST, &page);
        }
    };
    state
        .logins
        .mail(&ip, email.as_str())
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    let shown = email.as_str().to_owned();
    let task_state = state.clone();
    tokio::spawn(async move {
        match recovery::request_reset::<Owner>(&task_state, email.as_str(), None).await {
            Ok(ResetRequest::Sent(owner)) => {
                task_state.audit.record_unauthenticated(
                    AuditEvent::new(
                        Some(&owner.account_id),
                        Actor::anonymous(),
                        action::PASSWORD_RESET_REQUESTED,
                    )
                    .target(&owner.id)
                    .ip(&ip)
                    .user_agent(&user_agent),
                );
            }
            Ok(ResetRequest::NoSuchPerson) => {}
            Err(err) => tracing::error!(error = %err, "a reset link could not be sent"),
        }
    });
    render(&check_your_inbox(
        &shown,
        "with a link to choose a new password",
    ))
    .map(IntoResponse::into_response)
}

/// `GET /dashboard/reset?token=…`: the new-password form, for a link that works. The link is not
/// used up until the form is sent.
#[tracing::instrument(skip_all)]
pub async fn reset_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
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
        let page = dead_link().link("Send a new link", "/dashboard/forgot");
        return render_with_status(StatusCode::NOT_FOUND, &page);
    };
    let (jar, csrf) = DASHBOARD.form_token(&state, jar);
    let page = ResetPage {
        layout: Layout::anonymous(),
        csrf,
        token: query.token,
        email: link.email,
        error: None,
    };
    Ok((jar, render(&page)?).into_response())
}

/// `POST /dashboard/reset`: the new password, set with the link in one statement that also ends
/// every login of the owner. Audited; the owner is mailed that it changed.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    PageForm(form): PageForm<ResetForm>,
) -> Result<Response, PageError> {
    DASHBOARD.check_form_token(&state, &jar, &form.csrf)?;
    let link =
        match recovery::reset_password(&state, &form.token, form.password, &form.confirm).await? {
            ResetOutcome::Done(link) => link,
            ResetOutcome::DeadLink => {
                let page = dead_link().link("Send a new link", "/dashboard/forgot");
                return render_with_status(StatusCode::NOT_FOUND, &page);
            }
            ResetOutcome::Refused { email, message } => {
                let page = ResetPage {
                    layout: Layout::anonymous(),
                    csrf: form.csrf,
                    token: form.token,
                    email,
                    error: Some(message),
                };
                return render_with_status(StatusCode::BAD_REQUEST, &page);
            }
        };
    let owner = state
        .store
        .find_owner(&link.subject_id.as_str().into())
        .await?;
    if let Some(owner) = &owner {
        tracing::info!(owner_id = %owner.id, "owner password reset");
        state.audit.record(
            AuditEvent::new(
                Some(&owner.account_id),
                Actor::owner(&owner.id),
                action::PASSWORD_RESET,
            )
            .ip(&ip)
            .user_agent(&user_agent),
        );
        recovery::send_password_changed(&state, owner);
    }
    let jar = DASHBOARD.clear_login(&state, jar);
    Ok((
        jar,
        Redirect::to(&format!("{LOGIN_PATH}?done={PASSWORD_RESET}")),
    )
        .into_response())
}

/// `GET /dashboard/verify?token=…`: uses a verification link; the owner's address is verified if
/// it is still the one the link went to. Audited.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn verify(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let link = match recovery::token_hash(&query.token) {
        Some(hash) => state.store.use_verify_link(&hash, Timestamp::now()).await?,
        None => None,
    };
    let Some(link) = link else {
        let page = dead_link().link("Log in to send a new one", "/dashboard/account");
        return render_with_status(StatusCode::NOT_FOUND, &page);
    };
    let owner = state
        .store
        .find_owner(&link.subject_id.as_str().into())
        .await?;
    let Some(owner) = owner.filter(|o| o.email == link.email) else {
        let page = dead_link().link("Log in to send a new one", "/dashboard/account");
        return render_with_status(StatusCode::NOT_FOUND, &page);
    };
    state.audit.record(
        AuditEvent::new(
            Some(&owner.account_id),
            Actor::owner(&owner.id),
            action::EMAIL_VERIFIED,
        )
        .ip(&ip)
        .user_agent(&user_agent)
        .detail(serde_json::json!({ "email": link.email })),
    );
    let page = NoticePage::new(
        "Email address confirmed",
        vec![format!("{} is confirmed. Thank you.", link.email)],
    )
    .link("Go to the dashboard", "/dashboard");
    render(&page).map(IntoResponse::into_response)
}
