//! The end-session endpoint (OpenID Connect RP-Initiated Logout 1.0): an application sends the
//! browser to `GET /auth/end-session` (or posts a form there) to log the user out of Keyfob, and
//! asks to have the browser sent back to one of its registered post-logout redirect URIs.
//!
//! The request is checked in full before anything happens, and a bad one gets an error page,
//! never a redirect: an `id_token_hint` must be an ID token Keyfob signed (an expired one will do);
//! `client_id` and the hint must name the same application; a `post_logout_redirect_uri` needs
//! that application and must be registered for it exactly (`keyfob_domain::logout`).
//!
//! Logging out must not be something another site can do to a user (logout CSRF): the login ends
//! at once only when the hint names the logged-in user. Otherwise the user is asked, on a page
//! whose form carries the login's CSRF token, and the request is checked again when it comes back.
//!
//! `end_app_session=true`, Keyfob's own parameter, ends the application's session the hint was
//! issued in as well (its `sid`: refresh tokens at once, access tokens within the sync bound),
//! when it is that user's session with that application.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_domain::logout::{self, LogoutError};
use keyfob_domain::time::Timestamp;
use keyfob_store::{AppRow, FamilyId};
use serde::Deserialize;

use super::account::capitalized;
use super::page::{UserForm, UserLayout, UserPageError, content_security_policy, found, page};
use super::request::ClientError;
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::sessions;
use crate::state::AppState;
use crate::tokens::IdTokenHint;
use crate::web::{ClientIp, PageError, UserLogin};

/// The longest `id_token_hint` read; Keyfob's ID tokens are far shorter.
const MAX_HINT_LEN: usize = 8192;
/// The longest `client_id` looked up.
const MAX_CLIENT_ID_LEN: usize = 200;

/// The parameters of a logout request, as sent. Unknown parameters are ignored, and so are the
/// specification's `logout_hint` (the hint, or the login, says who) and `ui_locales` (Keyfob's
/// pages are in English).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndSessionParams {
    #[serde(default)]
    pub id_token_hint: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub post_logout_redirect_uri: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    /// Keyfob's: `true` ends the application's session the hint names too.
    #[serde(default)]
    pub end_app_session: Option<String>,
}

/// The confirmation form: the request again, with the login's CSRF token.
#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id_token_hint: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    post_logout_redirect_uri: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    end_app_session: Option<String>,
}

impl ConfirmForm {
    fn params(self) -> (String, EndSessionParams) {
        let params = EndSessionParams {
            id_token_hint: self.id_token_hint,
            client_id: self.client_id,
            post_logout_redirect_uri: self.post_logout_redirect_uri,
            state: self.state,
            end_app_session: self.end_app_session,
        };
        (self.csrf, params)
    }
}

#[derive(Template)]
#[template(path = "auth/end_session.html")]
struct ConfirmPage {
    layout: UserLayout,
    email: String,
    app_name: Option<String>,
    params: EndSessionParams,
    /// Whether the application's session ends too.
    ends_app_session: bool,
}

#[derive(Template)]
#[template(path = "auth/logged_out.html")]
struct LoggedOutPage {
    layout: UserLayout,
    app_name: Option<String>,
}

/// A logout request that checked out.
struct Checked {
    hint: Option<IdTokenHint>,
    /// The application the request names, if any.
    app: Option<AppRow>,
    /// Where to send the browser afterwards: registered for `app`, exactly.
    redirect: Option<String>,
    state: Option<String>,
    /// The session to end too: the hint's `sid`, when `end_app_session=true`.
    end_app_session: Option<FamilyId>,
}

impl Checked {
    /// Whether the hint names `user`: then the request is theirs to make, and no confirmation is
    /// needed.
    fn names(&self, user: &UserLogin) -> bool {
        self.hint
            .as_ref()
            .is_some_and(|hint| hint.user_id == *user.user_id())
    }
}

/// A refused request, on an error page: what was wrong, and that nothing changed.
fn refused(message: &str) -> UserPageError {
    PageError::BadRequest(format!(
        "{} Nothing was changed.",
        capitalized(&format!(
            "This logout request cannot be followed: {message}"
        ))
    ))
    .into()
}

/// Checks a logout request in full, before anything happens.
async fn check(state: &AppState, params: &EndSessionParams) -> Result<Checked, UserPageError> {
    let hint = match params.id_token_hint.as_deref().filter(|h| !h.is_empty()) {
        None => None,
        Some(hint) if hint.len() > MAX_HINT_LEN => {
            return Err(refused("the id_token_hint is too long"));
        }
        Some(hint) => Some(
            state
                .tokens
                .verify_id_token_hint(hint, Timestamp::now())
                .map_err(|err| refused(&format!("the id_token_hint was refused: {err}")))?,
        ),
    };
    let lift = |err: LogoutError| refused(&err.to_string());
    let client_id = logout::settle_client(
        params.client_id.as_deref(),
        hint.as_ref().map(|h| h.client_id.as_str()),
    )
    .map_err(lift)?;
    let app = match client_id {
        None => None,
        Some(client_id) => {
            let app = if client_id.len() > MAX_CLIENT_ID_LEN {
                None
            } else {
                state.find_app(client_id).await?
            };
            match app.filter(|app| app.revoked_at.is_none()) {
                Some(app) => Some(app),
                None => {
                    return Err(PageError::BadRequest(format!(
                        "{} Nothing was changed.",
                        ClientError::UnknownClient
                    ))
                    .into());
                }
            }
        }
    };
    let redirect = logout::resolve_post_logout_redirect(
        app.as_ref().map(|a| &a.post_logout_redirect_uris[..]),
        params.post_logout_redirect_uri.as_deref(),
    )
    .map_err(lift)?;
    let sid = hint.as_ref().and_then(|h| h.sid.clone());
    let end_app_session = logout::parse_end_app_session(
        params.end_app_session.as_deref(),
        sid.as_ref().map(|s| s.as_str()),
    )
    .map_err(lift)?
    .then_some(sid)
    .flatten();
    Ok(Checked {
        hint,
        app,
        redirect,
        state: params.state.clone(),
        end_app_session,
    })
}

/// Reads a query string; a parameter given twice, or text Keyfob does not accept, is refused.
fn read_query(query: &str) -> Result<EndSessionParams, UserPageError> {
    keyfob_domain::input::check_urlencoded(query.as_bytes())
        .map_err(|err| refused(&format!("its parameter {err}")))?;
    serde_urlencoded::from_str(query)
        .map_err(|err| refused(&format!("its parameters cannot be read ({err})")))
}

/// `GET /auth/end-session`: an application's logout request.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn end_session(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    user: Option<UserLogin>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Result<Response, UserPageError> {
    let params = read_query(&query.unwrap_or_default())?;
    answer(&state, &ip, &user_agent, user, jar, &params).await
}

/// `POST /auth/end-session`: the same request as a form (the specification allows either).
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn end_session_form(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    user: Option<UserLogin>,
    jar: CookieJar,
    UserForm(params): UserForm<EndSessionParams>,
) -> Result<Response, UserPageError> {
    answer(&state, &ip, &user_agent, user, jar, &params).await
}

/// Logs out at once when the hint names the logged-in user (or nobody is logged in); otherwise
/// asks the user.
async fn answer(
    state: &AppState,
    ip: &str,
    user_agent: &UserAgent,
    user: Option<UserLogin>,
    jar: CookieJar,
    params: &EndSessionParams,
) -> Result<Response, UserPageError> {
    let checked = check(state, params).await?;
    match &user {
        Some(login) if !checked.names(login) => {
            let confirm = ConfirmPage {
                layout: UserLayout::of(login),
                email: login.email.clone(),
                app_name: checked.app.as_ref().map(|a| a.name.clone()),
                params: params.clone(),
                ends_app_session: checked.end_app_session.is_some(),
            };
            // The form leads, through a redirect, to the application's address.
            let csp = content_security_policy(checked.redirect.as_deref());
            page(StatusCode::OK, &confirm, csp)
        }
        _ => finish(state, ip, user_agent, user.as_ref(), jar, checked).await,
    }
}

/// `POST /auth/end-session/confirm`: the user said yes. The request is checked again in full (the
/// browser could change it), and the form must carry the login's CSRF token.
#[tracing::instrument(skip_all, fields(ip = %ip))]
pub async fn confirm(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    user: Option<UserLogin>,
    jar: CookieJar,
    UserForm(form): UserForm<ConfirmForm>,
) -> Result<Response, UserPageError> {
    let (csrf, params) = form.params();
    // The token first: a form from elsewhere changes nothing, whatever it asks.
    if let Some(login) = &user {
        login.check_csrf(&csrf)?;
    }
    let checked = check(&state, &params).await?;
    finish(&state, &ip, &user_agent, user.as_ref(), jar, checked).await
}

/// Ends the login (if any) and, when asked, the application's session; audits both; then sends
/// the browser to the application or shows that the user is logged out.
async fn finish(
    state: &AppState,
    ip: &str,
    user_agent: &UserAgent,
    login: Option<&UserLogin>,
    jar: CookieJar,
    checked: Checked,
) -> Result<Response, UserPageError> {
    let account_id = checked.app.as_ref().map(|a| &a.account_id);
    let client_id = checked.app.as_ref().map(|a| a.client_id.as_str());
    let ended = match (&checked.end_app_session, &checked.hint) {
        (Some(sid), Some(hint)) => end_app_session(state, ip, sid, hint, account_id).await?,
        _ => None,
    };
    let jar = UserLogin::end(state, jar, login).await?;
    if let Some(login) = login {
        tracing::info!(user_id = %login.user_id(), client_id, "user logged out by the application");
        state.audit.record(
            AuditEvent::new(
                account_id,
                Actor::user(login.user_id()),
                action::USER_LOGOUT,
            )
            .target(login.user_id())
            .ip(ip)
            .user_agent(user_agent)
            .detail(serde_json::json!({
                "client_id": client_id,
                "session_ended": ended,
            })),
        );
    }
    match &checked.redirect {
        Some(uri) => {
            let location = logout::logout_location(uri, checked.state.as_deref());
            Ok((jar, found(&location)?).into_response())
        }
        None => {
            let done = LoggedOutPage {
                layout: UserLayout::anonymous(),
                app_name: checked.app.map(|a| a.name),
            };
            Ok((
                jar,
                page(StatusCode::OK, &done, content_security_policy(None))?,
            )
                .into_response())
        }
    }
}

/// Ends the session `sid` when it is the hint's user's session with the hint's application, and
/// live; answers its id when it ended now.
async fn end_app_session(
    state: &AppState,
    ip: &str,
    sid: &FamilyId,
    hint: &IdTokenHint,
    account_id: Option<&keyfob_store::AccountId>,
) -> Result<Option<FamilyId>, UserPageError> {
    let Some(family) = state.store.find_family(sid).await? else {
        return Ok(None);
    };
    if family.user_id != hint.user_id || family.client_id != hint.client_id {
        tracing::warn!(family_id = %sid, "logout: the hint's session is not its user's with its application");
        return Ok(None);
    }
    let ended = sessions::end_family(state, &family.id)
        .await
        .map_err(|err| match err {
            sessions::SessionError::Store(err) => PageError::from(err),
            other => PageError::Internal(anyhow::Error::new(other)),
        })?;
    if !ended {
        return Ok(None);
    }
    state.audit.record(
        AuditEvent::new(
            account_id,
            Actor::user(&family.user_id),
            action::SESSION_ENDED,
        )
        .target(&family.id)
        .ip(ip)
        .detail(serde_json::json!({ "reason": "logout", "client_id": family.client_id })),
    );
    Ok(Some(family.id))
}
