//! Users and grants: which users allowed which of the account's applications to do what, with a
//! way to revoke each grant, or to remove a user from the account (every grant of theirs to the
//! account's applications revoked at once). Only grants to the account's own applications are
//! listed or revoked: users belong to the whole deployment, so only the operator may disable or
//! delete one (`keyfob users`).

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, Redirect};
use keyfob_domain::oauth;
use keyfob_store::{GrantId, GrantRow, UserId};

use super::page::{Layout, PageError, PageForm, TimeView, render};
use crate::audit::Actor;
use crate::services::{self, Caller};
use crate::state::AppState;
use crate::web::filters;
use crate::web::{ClientIp, CsrfForm, OwnerLogin};

const GRANT_REVOKED: &str = "grant-revoked";
const USER_REMOVED: &str = "user-removed";

#[derive(Template)]
#[template(path = "grants.html")]
pub struct GrantsPage {
    layout: Layout,
    grants: Vec<GrantView>,
    notice: Option<&'static str>,
}

pub struct GrantView {
    id: String,
    user_id: String,
    user_email: String,
    /// Whether the user confirmed their address.
    user_verified: bool,
    app_name: String,
    permissions: Vec<(String, String)>,
    since: TimeView,
    revoked: Option<TimeView>,
}

/// `GET /dashboard/grants`.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn list(
    login: OwnerLogin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let notice = match query.as_deref().and_then(|q| q.strip_prefix("done=")) {
        Some(GRANT_REVOKED) => {
            Some("The grant was revoked. The user's sessions in that application have ended.")
        }
        Some(USER_REMOVED) => Some(
            "The user was removed from this account: every grant of theirs to its applications is revoked and their sessions in them have ended.",
        ),
        _ => None,
    };
    let apps = state.store.list_apps(login.account_id()).await?;
    let rows = state.store.list_account_grants(login.account_id()).await?;
    let mut grants = Vec::with_capacity(rows.len());
    for row in rows {
        let (user_email, user_verified) = match state.store.find_user(&row.user_id).await? {
            Some(user) => (user.email, user.email_verified_at.is_some()),
            None => (row.user_id.to_string(), false),
        };
        let app_name = apps
            .iter()
            .find(|a| a.client_id == row.client_id)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| row.client_id.to_string());
        grants.push(GrantView {
            id: row.id.into(),
            user_id: row.user_id.to_string(),
            user_email,
            user_verified,
            app_name,
            permissions: row
                .permissions
                .iter()
                .map(|p| (p.to_string(), oauth::describe(p)))
                .collect(),
            since: TimeView::from(row.created_at),
            revoked: row.revoked_at.map(TimeView::from),
        });
    }
    render(&GrantsPage {
        layout: login.layout("grants"),
        grants,
        notice,
    })
}

/// `POST /dashboard/grants/{id}/revoke`: only a live grant to one of the account's applications.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), grant_id = %id))]
pub async fn revoke(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(id): Path<GrantId>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Redirect, PageError> {
    login.check_csrf(&form.csrf)?;
    const NO_SUCH_GRANT: &str = "Your account's applications have no active grant with this id.";
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    let theirs = |g: &GrantRow| g.account_id == *login.account_id();
    services::grants::revoke_by_id(&state, &id, theirs, &by)
        .await
        .map_err(|err| PageError::from_service(err, NO_SUCH_GRANT))?;
    Ok(Redirect::to(&format!(
        "/dashboard/grants?done={GRANT_REVOKED}"
    )))
}

/// `POST /dashboard/users/{user_id}/remove`: revokes every live grant of the user to the
/// account's applications and ends the sessions under them; other accounts' grants are left
/// alone. A user with no live grant here is not found, whoever they are.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), user_id = %user_id))]
pub async fn remove_user(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(user_id): Path<UserId>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Redirect, PageError> {
    login.check_csrf(&form.csrf)?;
    const NO_SUCH_USER: &str =
        "No user with this id has an active grant to your account's applications.";
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    services::users::remove_from_account(&state, login.account_id(), &user_id, &by)
        .await
        .map_err(|err| PageError::from_service(err, NO_SUCH_USER))?;
    Ok(Redirect::to(&format!(
        "/dashboard/grants?done={USER_REMOVED}"
    )))
}
