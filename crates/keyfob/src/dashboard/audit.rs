//! The account's audit log, newest first, with filters by action, actor and time.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyfob_domain::audit::{AuditQuery, action};
use keyfob_store::AuditEventRow;

use super::page::{Layout, PageError, TimeView, page_links, render, render_with_status};
use crate::http::extract::QueryPairs;
use crate::state::AppState;
use crate::web::OwnerLogin;

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPageView {
    layout: Layout,
    events: Vec<EventView>,
    actions: &'static [&'static str],
    error: Option<String>,
    /// The filters as typed, to show them again.
    action: String,
    actor: String,
    since: String,
    until: String,
    page: u32,
    total: u64,
    prev_query: Option<String>,
    next_query: Option<String>,
}

pub struct EventView {
    at: TimeView,
    actor_kind: String,
    actor_id: String,
    action: String,
    target: String,
    ip: String,
    detail: String,
}

impl From<AuditEventRow> for EventView {
    fn from(row: AuditEventRow) -> Self {
        EventView {
            at: TimeView::from(row.at),
            actor_kind: row.actor_kind.to_string(),
            actor_id: row.actor_id,
            action: row.action,
            target: row.target.unwrap_or_default(),
            ip: row.ip.unwrap_or_default(),
            detail: row.detail.map(|d| d.0.to_string()).unwrap_or_default(),
        }
    }
}

fn value_of(pairs: &[(String, String)], name: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.chars().take(128).collect())
        .unwrap_or_default()
}

/// `GET /dashboard/audit`.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn list(
    login: OwnerLogin,
    State(state): State<AppState>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, PageError> {
    let mut view = AuditPageView {
        layout: login.layout("audit"),
        events: Vec::new(),
        actions: action::ALL,
        error: None,
        action: value_of(&pairs, "action"),
        actor: value_of(&pairs, "actor"),
        since: value_of(&pairs, "since"),
        until: value_of(&pairs, "until"),
        page: 1,
        total: 0,
        prev_query: None,
        next_query: None,
    };
    let query = match AuditQuery::from_pairs(&pairs) {
        Ok(query) => query,
        Err(err) => {
            view.error = Some(err.to_string());
            return render_with_status(StatusCode::BAD_REQUEST, &view);
        }
    };
    let (rows, total) = crate::http::audit::events(&state, login.account_id(), &query).await?;
    let link = |page: u32| {
        serde_urlencoded::to_string([
            ("action", view.action.as_str()),
            ("actor", view.actor.as_str()),
            ("since", view.since.as_str()),
            ("until", view.until.as_str()),
            ("page", &page.to_string()),
        ])
        .ok()
    };
    (view.prev_query, view.next_query) = page_links(query.page, query.limit, total, link);
    view.page = query.page;
    view.total = total;
    view.events = rows.into_iter().map(EventView::from).collect();
    Ok(render(&view)?.into_response())
}
