//! `POST /auth` mints a JWT for an API key; `GET /auth/whoami` says who the caller is.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keyfob_domain::expiry::format_instant;
use keyfob_domain::{ExpiryPolicy, PermissionSet, PrincipalKind};
use keyfob_store::Timestamp;
use serde::{Deserialize, Serialize};
use time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::JsonBody;
use super::openapi::Unavailable;
use crate::audit::{Actor, AuditEvent};
use crate::auth::Auth;
use crate::state::AppState;

/// Most permissions one token may carry.
const MAX_PERMISSIONS: usize = 100;

/// `POST /auth` and `GET /auth/whoami`, each with its operation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(mint))
        .routes(routes!(whoami))
}

/// What to mint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    /// Permissions such as `deals.read`, `deals.write`, `*.read`.
    #[schema(example = json!(["deals.read", "services.read"]))]
    pub permissions: Option<serde_json::Value>,
    /// ISO-8601 date-time or date; default now + 1 year.
    #[schema(example = "2027-01-01T00:00:00Z")]
    pub expires: Option<String>,
    /// Synonym of `expires`.
    pub expiration: Option<String>,
    /// A name to find the token by on the dashboard's tokens page (up to 100 characters).
    #[schema(example = "nightly export")]
    pub name: Option<serde_json::Value>,
    /// A small JSON object kept with the token (at most 20 members, 1,024 bytes as JSON), returned
    /// by introspection and searchable on the tokens page. Not put in the token itself.
    #[schema(value_type = Option<Object>, example = json!({"customer": "acme", "ticket": 42}))]
    pub metadata: Option<serde_json::Value>,
}

/// The longest name of a minted token, in characters.
pub const MAX_TOKEN_NAME_LEN: usize = 100;
/// The most members a minted token's metadata may have.
pub const MAX_METADATA_MEMBERS: usize = 20;
/// The largest a minted token's metadata may be, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 1024;

/// Reads the optional name, naming what is wrong with it.
fn parse_name(value: Option<serde_json::Value>) -> ApiResult<Option<String>> {
    let invalid = |message: String| ApiError::bad_request("invalid_name", message);
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(name)) => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME_LEN {
                return Err(invalid(format!(
                    "`name` must be 1 to {MAX_TOKEN_NAME_LEN} characters"
                )));
            }
            if name.chars().any(char::is_control) {
                return Err(invalid("`name` must not contain control characters".into()));
            }
            Ok(Some(name.to_owned()))
        }
        Some(_) => Err(invalid("`name` must be a string".into())),
    }
}

/// Reads the optional metadata object, naming what is wrong with it.
fn parse_metadata(
    value: Option<serde_json::Value>,
) -> ApiResult<Option<serde_json::Map<String, serde_json::Value>>> {
    let invalid = |message: String| ApiError::bad_request("invalid_metadata", message);
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(map)) => {
            if map.len() > MAX_METADATA_MEMBERS {
                return Err(invalid(format!(
                    "`metadata` may have at most {MAX_METADATA_MEMBERS} members"
                )));
            }
            let size = serde_json::Value::Object(map.clone()).to_string().len();
            if size > MAX_METADATA_BYTES {
                return Err(invalid(format!(
                    "`metadata` is {size} bytes as JSON; at most {MAX_METADATA_BYTES}"
                )));
            }
            Ok(Some(map))
        }
        Some(_) => Err(invalid("`metadata` must be a JSON object".into())),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MintResponse {
    /// The signed JWT.
    pub token: String,
    /// When it expires, RFC 3339.
    pub expires: String,
}

/// Reads the permission list, naming whatever is wrong with it.
fn parse_permissions(value: Option<serde_json::Value>) -> ApiResult<PermissionSet> {
    let invalid = |message: String| ApiError::bad_request("invalid_permissions", message);
    let Some(value) = value else {
        return Err(invalid(
            "`permissions` is required: a list such as [\"deals.read\"]".into(),
        ));
    };
    let serde_json::Value::Array(items) = value else {
        return Err(invalid("`permissions` must be a list of strings".into()));
    };
    if items.is_empty() {
        return Err(invalid("`permissions` must not be empty".into()));
    }
    if items.len() > MAX_PERMISSIONS {
        return Err(invalid(format!(
            "`permissions` may hold at most {MAX_PERMISSIONS} entries"
        )));
    }
    let strings = items
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or_else(|| invalid(format!("`permissions` holds a non-string: {item}")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    PermissionSet::parse(strings)
        .map_err(|e| ApiError::bad_request("invalid_permission", e.to_string()))
}

/// Mint a JWT.
///
/// Needs an API key. The token carries the permissions asked for and expires at `expires`.
#[utoipa::path(
    post,
    path = "/auth",
    tag = "tokens",
    request_body = MintRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Minted", body = MintResponse),
        (status = 400, description = "Bad permissions or expiry", body = ErrorBody),
        (status = 401, description = "Missing or invalid credential", body = ErrorBody),
        (status = 403, description = "Only an API key can mint, and a restricted key only within its permissions", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id))]
pub async fn mint(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(request): JsonBody<MintRequest>,
) -> ApiResult<(StatusCode, Json<MintResponse>)> {
    let PrincipalKind::ApiKey { key_id } = &auth.0.kind else {
        return Err(ApiError::Forbidden(
            "only an API key can mint tokens; a token cannot mint another".into(),
        ));
    };
    let permissions = parse_permissions(request.permissions)?;
    // A restricted key mints only within what it holds.
    let missing = auth.0.permissions.missing(&permissions);
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
        return Err(ApiError::Forbidden(format!(
            "this API key may not grant {}: it holds only {}",
            names.join(", "),
            auth.0.permissions.to_strings().join(", ")
        )));
    }
    let name = parse_name(request.name)?;
    let metadata = parse_metadata(request.metadata)?;
    let (field, requested) = match (request.expires, request.expiration) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_expires",
                "give `expires` or `expiration`, not both",
            ));
        }
        (Some(e), None) => ("expires", Some(e)),
        (None, Some(e)) => ("expiration", Some(e)),
        (None, None) => ("expires", None),
    };
    let policy = ExpiryPolicy {
        default: Duration::days(state.config.token_default_days),
        max: Duration::days(state.config.token_max_days),
    };
    // One instant for `iat`, the `jti` (a UUIDv7 carrying the millisecond, which "revoke all
    // tokens of this key" compares against) and the stored record.
    let issued = Timestamp::now();
    let mut expires = policy
        .resolve(
            field,
            requested.as_deref(),
            issued.whole_secs().to_date_time(),
        )
        .map_err(|e| ApiError::bad_request("invalid_expires", e.to_string()))?;
    // A token dies with the key that minted it: it cannot be given a later expiry, and the
    // default stops at the key's.
    if let Some(key_expires) = auth.0.expires_at {
        let key_expires = key_expires.whole_secs().to_date_time();
        if expires > key_expires {
            if requested.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_expires",
                    format!(
                        "`{field}` is after this API key's own expiry, {}: a token cannot outlive the key that mints it",
                        format_instant(key_expires)
                    ),
                ));
            }
            expires = key_expires;
        }
    }
    let (token, claims) = crate::services::tokens::sign_and_record(
        &state,
        crate::services::tokens::KeyToken {
            account_id: &auth.0.account_id,
            key_id,
            permissions: &permissions,
            issued,
            expires: Timestamp::from(expires),
            name: name.clone(),
            metadata,
        },
    )
    .await
    .map_err(|failure| match failure {
        crate::services::tokens::MintFailure::Record(err) => ApiError::from(err),
        crate::services::tokens::MintFailure::Internal(err) => ApiError::Internal(err),
    })?;
    crate::measures::token_minted(crate::measures::MintedAt::Api);
    // Queued, not awaited: the token's own record above is what the mint waits for.
    state.audit.record(
        AuditEvent::new(
            Some(&claims.account_id),
            Actor::api_key(key_id),
            keyfob_domain::audit::action::TOKEN_MINTED,
        )
        .target(&claims.jti)
        .detail(serde_json::json!({
            "permissions": claims.permissions,
            "expires": claims.exp,
            "name": name,
        })),
    );
    Ok((
        StatusCode::CREATED,
        Json(MintResponse {
            token,
            expires: format_instant(expires),
        }),
    ))
}

/// Who the caller is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// `api_key` or `jwt`.
    pub kind: String,
    pub account_id: String,
    /// The API key's id, or the token's `sub` (for an application's own token, its `client_id`).
    pub subject: String,
    /// The API key's id, for an API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The token's id, for a JWT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The application, for a user-session token or an application's own
    /// (`client_credentials`) token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `["*"]` stands for an API key's full access.
    pub permissions: Vec<String>,
    /// When the credential expires (RFC 3339); null for an API key made without an expiry.
    pub expires: Option<String>,
}

/// Who am I?
///
/// Describes the credential in `Authorization`.
#[utoipa::path(
    get,
    path = "/auth/whoami",
    tag = "tokens",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = WhoAmI),
        (status = 401, description = "Missing or invalid credential", body = ErrorBody),
    )
)]
pub async fn whoami(auth: Auth) -> Json<WhoAmI> {
    let p = auth.0;
    let (kind, key_id, jti, client_id) = match &p.kind {
        PrincipalKind::ApiKey { key_id } => ("api_key", Some(key_id.clone()), None, None),
        PrincipalKind::Jwt { jti, client_id, .. } => {
            ("jwt", None, Some(jti.clone()), client_id.clone())
        }
    };
    Json(WhoAmI {
        kind: kind.to_owned(),
        account_id: p.account_id.into(),
        subject: p.subject,
        key_id: key_id.map(Into::into),
        jti: jti.map(Into::into),
        client_id: client_id.map(Into::into),
        permissions: p.permissions.to_strings(),
        expires: p
            .expires_at
            .and_then(Timestamp::date_time)
            .map(format_instant),
    })
}
