//! The account's audit log, newest first, with filters by action, actor and time. Actors and
//! targets are shown by name (a key's name, an owner's or user's email, an application's name)
//! where the account knows one, with the id beside it.

use std::collections::{HashMap, HashSet};

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyfob_domain::audit::ActorKind;
use keyfob_domain::audit::{AuditQuery, action};
use keyfob_domain::ids::{OwnerId, UserId};
use keyfob_domain::time::Timestamp;
use keyfob_store::AuditEventRow;

use super::page::{Layout, PageError, TimeView, page_links, render, render_with_status};
use crate::http::extract::QueryPairs;
use crate::state::AppState;
use crate::web::OwnerLogin;
use crate::web::filters::{self, field_named};

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPageView {
    layout: Layout,
    events: Vec<EventView>,
    actions: &'static [&'static str],
    error: Option<String>,
    /// The filter the error is about, marked invalid and focused.
    error_field: &'static str,
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
    /// How long ago, in words (“3 min ago”).
    ago: String,
    actor_kind: String,
    actor_id: String,
    /// The actor's name or email, where the account knows one.
    actor_name: Option<String>,
    action: String,
    target: String,
    /// The target's name or email, where the account knows one.
    target_name: Option<String>,
    ip: String,
    detail: String,
}

/// The names the account knows for the ids its audit events name: its keys, tokens (named at
/// minting), applications, owners, and the users who gave its applications a grant.
#[derive(Default)]
struct Names(HashMap<String, String>);

impl Names {
    /// Looks up the names of the actors and targets of `rows`; only this account's own keys,
    /// tokens, apps, owners and users are named.
    async fn of(
        state: &AppState,
        login: &OwnerLogin,
        rows: &[AuditEventRow],
    ) -> Result<Names, PageError> {
        let store = state.store.as_ref();
        let account = login.account_id();
        let mut names = HashMap::new();
        let ids: HashSet<&str> = rows
            .iter()
            .flat_map(|r| std::iter::once(r.actor_id.as_str()).chain(r.target.as_deref()))
            .collect();
        for key in store.list_api_keys(account).await? {
            if ids.contains(key.id.as_str()) {
                names.insert(key.id.into_string(), key.name);
            }
        }
        if rows.iter().any(|r| r.actor_kind == ActorKind::Token) {
            for token in store.list_tokens(account, 1000).await? {
                if let Some(name) = token.name.filter(|_| ids.contains(token.jti.as_str())) {
                    names.insert(token.jti.into_string(), name);
                }
            }
        }
        for app in store.list_apps(account).await? {
            if ids.contains(app.client_id.as_str()) {
                names.insert(app.client_id.into_string(), app.name);
            }
        }
        let users: HashSet<String> = store
            .list_account_grants(account)
            .await?
            .into_iter()
            .map(|g| g.user_id.into_string())
            .filter(|id| ids.contains(id.as_str()))
            .collect();
        for id in users {
            if let Some(user) = store.find_user(&UserId::from(id.as_str())).await? {
                names.insert(id, user.email);
            }
        }
        for row in rows.iter().filter(|r| r.actor_kind == ActorKind::Owner) {
            if names.contains_key(&row.actor_id) {
                continue;
            }
            if let Some(owner) = store
                .find_owner(&OwnerId::from(row.actor_id.as_str()))
                .await?
                && &owner.account_id == account
            {
                names.insert(row.actor_id.clone(), owner.email);
            }
        }
        Ok(Names(names))
    }

    fn get(&self, id: &str) -> Option<String> {
        self.0.get(id).cloned()
    }
}

impl EventView {
    fn new(row: AuditEventRow, names: &Names, now: Timestamp) -> Self {
        let target = row.target.unwrap_or_default();
        EventView {
            ago: ago(now, row.at),
            at: TimeView::from(row.at),
            actor_kind: row.actor_kind.to_string().replace('_', " "),
            actor_name: names.get(&row.actor_id),
            actor_id: row.actor_id,
            action: row.action,
            target_name: names.get(&target),
            target,
            ip: row.ip.unwrap_or_default(),
            detail: row.detail.map(|d| d.0.to_string()).unwrap_or_default(),
        }
    }
}

/// How long before `now` the instant `at` was, in words: “just now”, “3 min ago”, “5 h ago”,
/// “2 days ago”; an instant after `now` (a clock step) is “just now”.
pub fn ago(now: Timestamp, at: Timestamp) -> String {
    let secs = now.unix_secs().saturating_sub(at.unix_secs());
    match secs {
        ..60 => "just now".to_owned(),
        60..3_600 => format!("{} min ago", secs / 60),
        3_600..86_400 => format!("{} h ago", secs / 3_600),
        86_400..172_800 => "yesterday".to_owned(),
        _ => format!("{} days ago", secs / 86_400),
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
        error_field: "",
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
            let message = err.to_string();
            view.error_field = field_named(&message, &["action", "actor", "since", "until"]);
            view.error = Some(message);
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
    let names = Names::of(&state, &login, &rows).await?;
    let now = Timestamp::now();
    view.events = rows
        .into_iter()
        .map(|row| EventView::new(row, &names, now))
        .collect();
    Ok(render(&view)?.into_response())
}
