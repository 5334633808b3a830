//! `/auth/grants`: a logged-in user's applications and what each may do, with a way to revoke
//! each; logging out everywhere; changing the password.
//!
//! Revoking a grant or logging out everywhere ends the sessions in the database at once (their
//! refresh tokens stop working) and logs each ended session in the change feed, from which every
//! node, this one included, refuses their access tokens within the sync interval.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::oauth;
use keyfob_store::{GrantId, GrantRow};
use serde::Deserialize;

use super::account::{PASSWORD_CHANGED, capitalized};
use super::page::{UserForm, UserLayout, UserPageError, content_security_policy, page, see_other};
use crate::audit::Actor;
use crate::dashboard::page::{PageError, TimeView};
use crate::logins::LoginKind;
use crate::passwords::check_new_password;
use crate::services::{self, Caller};
use crate::state::AppState;
use crate::web::filters;
use crate::web::{ClientIp, CsrfForm, USER_PAGES, UserLogin};

const GRANT_REVOKED: &str = "grant-revoked";
const LOGGED_OUT_ELSEWHERE: &str = "logged-out-everywhere";

#[derive(Template)]
#[template(path = "auth/grants.html")]
struct GrantsPage {
    layout: UserLayout,
    grants: Vec<GrantView>,
    notice: Option<&'static str>,
    password_error: Option<String>,
    /// Whether the user has confirmed their address (a link mailed to it).
    email_verified: bool,
}

struct GrantView {
    id: String,
    app_name: String,
    permissions: Vec<String>,
    since: TimeView,
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

async fn grants_page(
    state: &AppState,
    user: &UserLogin,
    notice: Option<&'static str>,
    password_error: Option<String>,
) -> Result<GrantsPage, UserPageError> {
    let rows = state.store.list_user_grants(user.user_id()).await?;
    let mut grants = Vec::with_capacity(rows.len());
    for row in rows {
        let app_name = match state.find_app(&row.client_id).await? {
            Some(app) => app.name,
            None => row.client_id.to_string(),
        };
        grants.push(GrantView {
            id: row.id.into(),
            app_name,
            // What the application learns about the user, then what it may do.
            permissions: row
                .identity
                .describe()
                .into_iter()
                .map(|(_, words)| words.to_owned())
                .chain(row.permissions.iter().map(oauth::describe))
                .collect(),
            since: TimeView::from(row.created_at),
        });
    }
    let email_verified = state
        .store
        .find_user(user.user_id())
        .await?
        .is_some_and(|u| u.email_verified_at.is_some());
    Ok(GrantsPage {
        layout: UserLayout::of(user),
        grants,
        notice,
        password_error,
        email_verified,
    })
}

/// `GET /auth/grants`.
#[tracing::instrument(skip_all, fields(user_id = %user.user_id()))]
pub async fn list(
    user: UserLogin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, UserPageError> {
    let notice = match query.as_deref() {
        Some(q) if q == format!("done={GRANT_REVOKED}") => Some(
            "Access was revoked. The application's sessions have ended and it must ask you again.",
        ),
        Some(q) if q == format!("done={LOGGED_OUT_ELSEWHERE}") => {
            Some("Every application session has ended, and you are logged out everywhere else.")
        }
        _ => None,
    };
    let grants = grants_page(&state, &user, notice, None).await?;
    page(StatusCode::OK, &grants, content_security_policy(None))
}

#[derive(Template)]
#[template(path = "auth/confirm_revoke.html")]
struct ConfirmRevokePage {
    layout: UserLayout,
    id: String,
    app_name: String,
}

/// `GET /auth/grants/{id}/revoke`: asks before revoking one of the user's own live grants (the
/// list links here; the form posts below).
#[tracing::instrument(skip_all, fields(user_id = %user.user_id(), grant_id = %id))]
pub async fn confirm_revoke(
    user: UserLogin,
    State(state): State<AppState>,
    Path(id): Path<GrantId>,
) -> Result<Response, UserPageError> {
    let missing = || PageError::NotFound("You have given no such access.".into());
    let grant = state
        .store
        .find_grant_by_id(&id)
        .await?
        .filter(|g| g.user_id == *user.user_id() && g.revoked_at.is_none())
        .ok_or_else(missing)?;
    let app = state
        .store
        .find_app(&grant.client_id)
        .await?
        .ok_or_else(missing)?;
    let confirm = ConfirmRevokePage {
        layout: UserLayout::of(&user),
        id: id.to_string(),
        app_name: app.name,
    };
    page(StatusCode::OK, &confirm, content_security_policy(None))
}

/// `POST /auth/grants/{id}/revoke`: only one of the user's own live grants.
#[tracing::instrument(skip_all, fields(user_id = %user.user_id(), grant_id = %id))]
pub async fn revoke(
    user: UserLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(id): Path<GrantId>,
    UserForm(form): UserForm<CsrfForm>,
) -> Result<Response, UserPageError> {
    user.check_csrf(&form.csrf)?;
    const NO_SUCH_GRANT: &str = "You have given no such access.";
    let by = Caller::new(Actor::user(user.user_id()), &ip);
    let theirs = |g: &GrantRow| g.user_id == *user.user_id();
    services::grants::revoke_by_id(&state, &id, theirs, &by)
        .await
        .map_err(|err| PageError::from_service(err, NO_SUCH_GRANT))?;
    see_other(&format!("{}?done={GRANT_REVOKED}", super::GRANTS_PATH))
}

/// `POST /auth/logout-everywhere`: ends every application session of the user and every other
/// Keyfob login; this browser stays logged in.
#[tracing::instrument(skip_all, fields(user_id = %user.user_id()))]
pub async fn logout_everywhere(
    user: UserLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    UserForm(form): UserForm<CsrfForm>,
) -> Result<Response, UserPageError> {
    user.check_csrf(&form.csrf)?;
    let by = Caller::new(Actor::user(user.user_id()), &ip);
    services::sessions::log_out_everywhere(&state, user.user_id(), Some(user.id_hash()), &by)
        .await
        .map_err(|err| PageError::from_service(err, "Your account no longer exists."))?;
    see_other(&format!(
        "{}?done={LOGGED_OUT_ELSEWHERE}",
        super::GRANTS_PATH
    ))
}

/// `POST /auth/password`: needs the current password; the new one follows the sign-up rules.
/// Every session ends, this login too, so the user logs in again with the new password.
#[tracing::instrument(skip_all, fields(user_id = %user.user_id()))]
pub async fn change_password(
    user: UserLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    jar: CookieJar,
    UserForm(form): UserForm<PasswordForm>,
) -> Result<Response, UserPageError> {
    user.check_csrf(&form.csrf)?;
    // The current password is checked under the same budgets as a login.
    let attempt = state
        .logins
        .begin(
            LoginKind::User,
            &user.email,
            &ip,
            USER_PAGES.device_token(&jar),
        )
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    let again = |message: String| async {
        let grants = grants_page(&state, &user, None, Some(message)).await?;
        page(
            StatusCode::BAD_REQUEST,
            &grants,
            content_security_policy(None),
        )
    };
    let Some(row) = state.store.find_user(user.user_id()).await? else {
        return Err(PageError::NotFound("Your account no longer exists.".into()).into());
    };
    if !state
        .passwords
        .verify(form.current.clone(), Some(row.password_hash))
        .await
    {
        attempt.failed();
        return again("The current password is incorrect.".into()).await;
    }
    attempt.succeeded();
    if form.new != form.confirm {
        return again("The two new passwords do not match.".into()).await;
    }
    if let Err(err) = check_new_password(&form.new) {
        return again(capitalized(&err.to_string())).await;
    }
    let hash = state
        .passwords
        .hash(form.new.clone())
        .await
        .map_err(|e| PageError::Internal(e.into()))?;
    let by = Caller::new(Actor::user(user.user_id()), &ip);
    services::sessions::change_password(&state, user.user_id(), &hash, &by)
        .await
        .map_err(|err| PageError::from_service(err, "Your account no longer exists."))?;
    let jar = USER_PAGES.clear_login(&state, jar);
    Ok((
        jar,
        see_other(&format!("{}?done={PASSWORD_CHANGED}", super::LOGIN_PATH))?,
    )
        .into_response())
}
