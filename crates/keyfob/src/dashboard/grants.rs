//! Users and grants: which users allowed which of the account's applications to do what, with a
//! way to revoke each grant. Only grants to the account's own applications are listed or revoked.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, Redirect};
use keyfob_domain::oauth;
use keyfob_store::{GrantId, GrantRow};

use super::page::{Layout, PageError, PageForm, TimeView, render};
use crate::audit::Actor;
use crate::services::{self, Caller};
use crate::state::AppState;
use crate::web::{ClientIp, CsrfForm, OwnerLogin};

const GRANT_REVOKED: &str = "grant-revoked";

#[derive(Template)]
#[template(path = "grants.html")]
pub struct GrantsPage {
    layout: Layout,
    grants: Vec<GrantView>,
    notice: Option<&'static str>,
}

pub struct GrantView {
    id: String,
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
    let notice = (query.as_deref() == Some(&format!("done={GRANT_REVOKED}")))
        .then_some("The grant was revoked. The user's sessions in that application have ended.");
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
