//! `GET /api/audit`: the account's audit log, for a caller holding `audit.read` (an API key, or a
//! token minted with it; a wildcard does not grant it).

use axum::Json;
use axum::extract::State;
use keyfob_domain::Action;
use keyfob_domain::audit::AuditQuery;
use keyfob_store::{AccountId, AuditEventRow, AuditFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::QueryPairs;
use super::openapi::Unavailable;
use crate::auth::Auth;

use crate::state::AppState;

/// `GET /api/audit`, with its operation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Who did it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditActor {
    /// `api_key`, `token`, `owner`, `user`, `app`, `operator`, `system`, or `anonymous` (a client that has not authenticated: a failed login).
    pub kind: String,
    /// The API key's id, the token's `jti`, the owner's or user's id.
    pub id: String,
}

/// One audit event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEventView {
    pub id: String,
    /// When (RFC 3339).
    pub at: String,
    pub actor: AuditActor,
    /// E.g. `api_key.created`, `sensitive.revealed`, `refresh.reuse_detected`.
    pub action: String,
    /// What was acted on: a key or token id, `resource/recordId#field.path`, …
    pub target: Option<String>,
    /// The client's IP address, when known.
    pub ip: Option<String>,
    /// More detail; never a secret or a sensitive value.
    #[schema(value_type = Object)]
    pub detail: Option<Value>,
}

impl From<AuditEventRow> for AuditEventView {
    fn from(row: AuditEventRow) -> Self {
        AuditEventView {
            id: row.id.into(),
            at: row.at.rfc3339(),
            actor: AuditActor {
                kind: row.actor_kind.to_string(),
                id: row.actor_id,
            },
            action: row.action,
            target: row.target,
            ip: row.ip,
            detail: row.detail.map(|d| d.0),
        }
    }
}

/// A page of audit events, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub docs: Vec<AuditEventView>,
    pub total_docs: u64,
    pub limit: u32,
    pub page: u32,
    pub total_pages: u64,
    pub has_next_page: bool,
}

/// Reads an account's events for a query; shared with the dashboard.
pub async fn events(
    state: &AppState,
    account_id: &AccountId,
    query: &AuditQuery,
) -> Result<(Vec<AuditEventRow>, u64), keyfob_store::StoreError> {
    state
        .store
        .list_audit_events(&AuditFilter {
            account_id,
            action: query.action,
            actor_id: query.actor.as_deref(),
            since: query.since,
            until: query.until,
            limit: query.limit,
            offset: query.offset(),
        })
        .await
}

/// List the account's audit events.
#[utoipa::path(
    get,
    path = "/api/audit",
    operation_id = "list_audit_events",
    tag = "audit",
    params(
        ("action" = Option<String>, Query, description = "Only this action, e.g. `sensitive.revealed`"),
        ("actor" = Option<String>, Query, description = "Only events by this actor id (API key id, token id, owner or user id)"),
        ("since" = Option<String>, Query, description = "From this instant (RFC 3339 or a date), inclusive"),
        ("until" = Option<String>, Query, description = "Before this instant (RFC 3339 or a date), exclusive"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 50"),
        ("page" = Option<u32>, Query, description = "From 1"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of events, newest first", body = AuditPage),
        (status = 400, description = "Bad query; the message names the parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid credential", body = ErrorBody),
        (status = 403, description = "Needs `audit.read`", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Json<AuditPage>> {
    auth.require("audit", Action::Read)?;
    let query = AuditQuery::from_pairs(&pairs)
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let (rows, total) = events(&state, &auth.0.account_id, &query).await?;
    let total_pages = total.div_ceil(u64::from(query.limit));
    Ok(Json(AuditPage {
        docs: rows.into_iter().map(AuditEventView::from).collect(),
        total_docs: total,
        limit: query.limit,
        page: query.page,
        total_pages,
        has_next_page: u64::from(query.page) < total_pages,
    }))
}
