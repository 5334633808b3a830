//! `POST /auth` mints a JWT for an API key; `GET /auth/whoami` says who the caller is.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keyfob_domain::claims::Bearer;
use keyfob_domain::expiry::format_instant;
use keyfob_domain::{Claims, ExpiryPolicy, PermissionSet, PrincipalKind};
use keyfob_store::{Jti, Permissions, Timestamp, TokenRow};
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
        (status = 403, description = "Only an API key can mint", body = ErrorBody),
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
    let expires = policy
        .resolve(
            field,
            requested.as_deref(),
            issued.whole_secs().to_date_time(),
        )
        .map_err(|e| ApiError::bad_request("invalid_expires", e.to_string()))?;
    let bearer = Bearer::Key {
        account_id: &auth.0.account_id,
        key_id,
    };
    let claims = Claims::new(
        state.tokens.issuer(),
        state.tokens.audience(),
        bearer,
        permissions.to_strings(),
        issued,
        Timestamp::from(expires),
    );
    let token = state
        .tokens
        .sign(&claims, issued)
        .map_err(|e| ApiError::Internal(e.into()))?;
    state
        .recorder
        .record(TokenRow {
            jti: Jti::from(claims.jti.as_str()),
            account_id: claims.account_id.clone(),
            api_key_id: Some(key_id.clone()),
            subject: claims.sub.clone(),
            permissions: Permissions::parse(&claims.permissions)
                .map_err(|e| ApiError::Internal(e.into()))?,
            issued_at: issued,
            expires_at: claims.expires_at(),
            revoked_at: None,
        })
        .await?;
    // Queued, not awaited: the token's own record above is what the mint waits for.
    state.audit.record(
        AuditEvent::new(
            Some(&claims.account_id),
            Actor::api_key(key_id),
            keyfob_domain::audit::action::TOKEN_MINTED,
        )
        .target(&claims.jti)
        .detail(serde_json::json!({ "permissions": claims.permissions, "expires": claims.exp })),
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
    /// When the credential expires (RFC 3339); null for API keys.
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
