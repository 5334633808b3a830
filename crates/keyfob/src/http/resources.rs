//! `/api/{resource}`: the account's JSON records, guarded by `<resource>.read` and
//! `<resource>.write`. A user-session token sees and changes only its user's records.
//!
//! Sensitive fields (the account's list, at any depth) are checked, sealed with the account's
//! data key before a record is stored, and read back masked; `?reveal=` on one record shows them
//! in clear to a caller holding `sensitive.read`, and every reveal is on the audit log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyfob_domain::Action;
use keyfob_domain::audit::action;
use keyfob_domain::document::{DocumentError, check_depth, check_document, merge_patch};
use keyfob_domain::permission::RESERVED_RESOURCES;
use keyfob_domain::query::{Field, ListQuery, valid_resource};
use keyfob_domain::time::Timestamp;
use keyfob_domain::vault::{RevealRequest, VaultError};
use keyfob_store::{RecordId, RecordRow, RecordScope};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JsonBody, QueryPairs};
use super::openapi::Unavailable;
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::auth::Auth;
use crate::state::AppState;
use crate::vault::{AccountVault, VaultServiceError};
use crate::web::ClientIp;

/// `/api/{resource}` and `/api/{resource}/{id}`, each method with its operation. (One `routes!`
/// per path: it routes all its handlers on each of their paths.)
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, patch, replace, remove))
}

/// A page of records.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse {
    /// The records, each with `id`, `createdAt` and `updatedAt`.
    pub docs: Vec<Value>,
    pub total_docs: u64,
    pub limit: u32,
    pub page: u32,
    pub total_pages: u64,
    pub has_next_page: bool,
}

/// Checks the resource name and the caller's permission, and gives the records it may touch.
fn scope<'a>(auth: &'a Auth, resource: &'a str, action: Action) -> ApiResult<RecordScope<'a>> {
    if !valid_resource(resource) {
        return Err(ApiError::bad_request(
            "invalid_resource",
            "the resource name must be a letter, then up to 63 letters, digits, `_` or `-`",
        ));
    }
    if RESERVED_RESOURCES.contains(&resource) {
        return Err(ApiError::bad_request(
            "reserved_resource",
            format!("`{resource}` is reserved and cannot hold records"),
        ));
    }
    auth.require(resource, action)?;
    Ok(RecordScope {
        account_id: &auth.0.account_id,
        resource,
        owner_user_id: auth.0.session_user(),
    })
}

impl From<VaultError> for ApiError {
    fn from(err: VaultError) -> Self {
        let code = match err {
            VaultError::SecurityCode(_) => "card_security_code",
            VaultError::ReservedKey(_) => "invalid_body",
            VaultError::BadFieldName(_)
            | VaultError::TooManyFields
            | VaultError::SecurityCodeListed(_) => "invalid_sensitive_fields",
            VaultError::Ssn(_)
            | VaultError::Card(_)
            | VaultError::NotText(_)
            | VaultError::TooLong(_) => "invalid_sensitive_value",
        };
        ApiError::bad_request(code, err.to_string())
    }
}

impl From<VaultServiceError> for ApiError {
    fn from(err: VaultServiceError) -> Self {
        match err {
            VaultServiceError::Invalid(e) => e.into(),
            VaultServiceError::Store(e) => e.into(),
            VaultServiceError::StaleMasterKey => ApiError::Unavailable,
            VaultServiceError::Internal(e) => ApiError::Internal(e),
        }
    }
}

/// A record as the API shows it: its document, sensitive values masked (or revealed where asked
/// and allowed), with `id`, `createdAt` and `updatedAt`.
fn to_json(
    mut row: RecordRow,
    vault: &AccountVault,
    reveal: &RevealRequest,
) -> (Value, Vec<String>) {
    let revealed = vault.present(&row.id, &mut row.doc, reveal);
    crate::measures::revealed("api", revealed.len());
    (to_plain_json(row), revealed)
}

/// A record whose document holds nothing sealed any more.
fn to_plain_json(row: RecordRow) -> Value {
    let mut doc = match row.doc {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    doc.insert("id".into(), Value::String(row.id.into()));
    doc.insert("createdAt".into(), Value::String(row.created_at.rfc3339()));
    doc.insert("updatedAt".into(), Value::String(row.updated_at.rfc3339()));
    Value::Object(doc)
}

impl From<DocumentError> for ApiError {
    fn from(err: DocumentError) -> Self {
        ApiError::bad_request("invalid_body", err.to_string())
    }
}

fn not_found(resource: &str) -> ApiError {
    ApiError::NotFound(format!("no such record in `{resource}`"))
}

/// Record ids are UUIDs; anything else cannot name a record.
fn check_id(resource: &str, id: &str) -> ApiResult<()> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| not_found(resource))
}

/// List records.
#[utoipa::path(
    get,
    path = "/api/{resource}",
    tag = "resources",
    params(
        ("resource" = String, Path, description = "Collection name, e.g. `deals`"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 10"),
        ("page" = Option<u32>, Query, description = "From 1"),
        ("sort" = Option<String>, Query, description = "Field name; `-` prefix for descending"),
        ("where[field][equals]" = Option<String>, Query, description = "Equality filter on a field"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of records", body = ListResponse),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or invalid credential", body = ErrorBody),
        (status = 403, description = "Needs `<resource>.read`", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(resource): Path<String>,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Json<ListResponse>> {
    let scope = scope(&auth, &resource, Action::Read)?;
    let query = ListQuery::from_pairs(&pairs)
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    if pairs.iter().any(|(k, _)| k == "reveal") {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`reveal` works on one record: GET /api/{resource}/{id}?reveal=field",
        ));
    }
    let vault = state.vault.account(scope.account_id).await?;
    refuse_sensitive_query(&vault, &query)?;
    let (rows, total) = state.store.list_records(&scope, &query).await?;
    let total_pages = total.div_ceil(u64::from(query.limit));
    let none = RevealRequest::default();
    Ok(Json(ListResponse {
        docs: rows
            .into_iter()
            .map(|row| to_json(row, &vault, &none).0)
            .collect(),
        total_docs: total,
        limit: query.limit,
        page: query.page,
        total_pages,
        has_next_page: u64::from(query.page) < total_pages,
    }))
}

/// Create a record.
#[utoipa::path(
    post,
    path = "/api/{resource}",
    tag = "resources",
    params(("resource" = String, Path, description = "Collection name")),
    request_body(content = Object, description = "The document"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the record with its id", body = Object),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 401, description = "Missing or invalid credential", body = ErrorBody),
        (status = 403, description = "Needs `<resource>.write`", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Path(resource): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let scope = scope(&auth, &resource, Action::Write)?;
    let mut doc = check_document(body)?;
    let vault = state.vault.account(scope.account_id).await?;
    let id = RecordId::from(uuid::Uuid::now_v7().to_string());
    vault.seal_new(&id, &mut doc)?;
    let now = Timestamp::now();
    let row = RecordRow {
        id,
        account_id: scope.account_id.clone(),
        resource: resource.clone(),
        owner_user_id: scope.owner_user_id.cloned(),
        doc: Value::Object(doc),
        created_at: now,
        updated_at: now,
    };
    state.store.insert_record(&row).await?;
    let (body, _) = to_json(row, &vault, &RevealRequest::default());
    Ok((StatusCode::CREATED, Json(body)))
}

/// Read a record.
///
/// Sensitive fields come back masked. `reveal` (comma-separated or repeated: field names such as
/// `ssn`, or paths such as `primaryApplicant.ssn`) shows them in clear to a caller holding
/// `sensitive.read`; each field revealed is written to the audit log before the answer is sent.
#[utoipa::path(
    get,
    path = "/api/{resource}/{id}",
    tag = "resources",
    params(
        ("resource" = String, Path),
        ("id" = String, Path),
        ("reveal" = Option<String>, Query, description = "Sensitive fields to show in clear (needs `sensitive.read`)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The record", body = Object),
        (status = 400, description = "Bad `reveal`", body = ErrorBody),
        (status = 401, description = "Missing or invalid credential", body = ErrorBody),
        (status = 403, description = "Needs `<resource>.read`, and `sensitive.read` to reveal", body = ErrorBody),
        (status = 404, description = "No such record", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub async fn read(
    State(state): State<AppState>,
    auth: Auth,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    Path((resource, id)): Path<(String, RecordId)>,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Json<Value>> {
    let scope = scope(&auth, &resource, Action::Read)?;
    let reveal = RevealRequest::parse(
        pairs
            .iter()
            .filter(|(k, _)| k == "reveal")
            .map(|(_, v)| v.as_str()),
    )
    .map_err(|message| ApiError::bad_request("invalid_reveal", message))?;
    if !reveal.is_empty() {
        auth.require("sensitive", Action::Read)?;
    }
    check_id(&resource, &id)?;
    let vault = state.vault.account(scope.account_id).await?;
    let row = state
        .store
        .get_record(&scope, &id)
        .await?
        .ok_or_else(|| not_found(&resource))?;
    // A field on the list, or one sealed in this record (listed when it was written).
    let sealed = AccountVault::sealed_paths(&row.doc);
    if let Some(unknown) = reveal.items().iter().find(|item| {
        !vault.fields.contains(leaf(item)) && !sealed.iter().any(|p| leaf(p) == leaf(item))
    }) {
        return Err(ApiError::bad_request(
            "invalid_reveal",
            format!("`{unknown}` is not a sensitive field of this account"),
        ));
    }
    let (body, revealed) = to_json(row, &vault, &reveal);
    for path in revealed {
        state
            .audit
            .record_durably(
                AuditEvent::new(Some(scope.account_id), Actor::of(&auth.0), action::SENSITIVE_REVEALED)
                    .target(format!("{resource}/{id}#{path}"))
                    .ip(&ip)
                    .user_agent(&user_agent)
                    .detail(serde_json::json!({ "resource": resource, "record": id, "field": path, "via": "api" })),
            )
            .await?;
    }
    Ok(Json(body))
}

/// The field name a reveal item ends in: `ssn` for `applicants[0].ssn`.
fn leaf(item: &str) -> &str {
    let last = item.rsplit('.').next().unwrap_or(item);
    last.split('[').next().unwrap_or(last)
}

/// Listing by a sensitive field would leak it through order or matches: refused.
fn refuse_sensitive_query(vault: &AccountVault, query: &ListQuery) -> ApiResult<()> {
    let fields = query
        .filters
        .iter()
        .map(|(f, _)| (f, "filtered"))
        .chain(query.sort.iter().map(|s| (&s.field, "sorted")));
    for (field, how) in fields {
        if let Field::Doc(path) = field
            && vault.fields.covers_path(path)
        {
            return Err(ApiError::bad_request(
                "sensitive_field",
                format!(
                    "`{}` is a sensitive field: records cannot be {how} by it",
                    path.join(".")
                ),
            ));
        }
    }
    Ok(())
}

/// Merge a JSON patch (RFC 7396) into a record.
#[utoipa::path(
    patch,
    path = "/api/{resource}/{id}",
    tag = "resources",
    params(("resource" = String, Path), ("id" = String, Path)),
    request_body(content = Object, description = "Fields to set; `null` removes a field"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated record", body = Object),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 403, description = "Needs `<resource>.write`", body = ErrorBody),
        (status = 404, description = "No such record", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    auth: Auth,
    Path((resource, id)): Path<(String, RecordId)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let scope = scope(&auth, &resource, Action::Write)?;
    check_id(&resource, &id)?;
    let changes = check_document(body)?;
    let vault = state.vault.account(scope.account_id).await?;
    vault.check_patch(&changes)?;
    let mut row = state
        .store
        .get_record(&scope, &id)
        .await?
        .ok_or_else(|| not_found(&resource))?;
    merge_patch(&mut row.doc, Value::Object(changes));
    check_depth(&row.doc)?;
    if let Value::Object(doc) = &mut row.doc {
        vault.seal_merged(&id, doc)?;
    }
    row.updated_at = Timestamp::now();
    if !state
        .store
        .update_record(&scope, &id, &row.doc, row.updated_at)
        .await?
    {
        return Err(not_found(&resource));
    }
    Ok(Json(to_json(row, &vault, &RevealRequest::default()).0))
}

/// Replace a record's document.
#[utoipa::path(
    put,
    path = "/api/{resource}/{id}",
    tag = "resources",
    params(("resource" = String, Path), ("id" = String, Path)),
    request_body(content = Object, description = "The new document"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The replaced record", body = Object),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 403, description = "Needs `<resource>.write`", body = ErrorBody),
        (status = 404, description = "No such record", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub async fn replace(
    State(state): State<AppState>,
    auth: Auth,
    Path((resource, id)): Path<(String, RecordId)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let scope = scope(&auth, &resource, Action::Write)?;
    check_id(&resource, &id)?;
    let mut doc = check_document(body)?;
    let vault = state.vault.account(scope.account_id).await?;
    vault.seal_new(&id, &mut doc)?;
    let doc = Value::Object(doc);
    let now = Timestamp::now();
    if !state.store.update_record(&scope, &id, &doc, now).await? {
        return Err(not_found(&resource));
    }
    let row = state
        .store
        .get_record(&scope, &id)
        .await?
        .ok_or_else(|| not_found(&resource))?;
    Ok(Json(to_json(row, &vault, &RevealRequest::default()).0))
}

/// Delete a record.
#[utoipa::path(
    delete,
    path = "/api/{resource}/{id}",
    tag = "resources",
    params(("resource" = String, Path), ("id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Needs `<resource>.write`", body = ErrorBody),
        (status = 404, description = "No such record", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    Path((resource, id)): Path<(String, RecordId)>,
) -> ApiResult<StatusCode> {
    let scope = scope(&auth, &resource, Action::Write)?;
    check_id(&resource, &id)?;
    if state.store.delete_record(&scope, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&resource))
    }
}
