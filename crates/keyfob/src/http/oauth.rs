//! The OAuth 2.1 endpoints a client library talks to: `POST /auth/token` (authorization code,
//! refresh token and client credentials grants), `POST /auth/revoke` (RFC 7009), `POST /auth/introspect` (RFC 7662, for
//! API keys). Errors follow RFC 6749 §5.2: `{"error", "error_description"}`. The discovery
//! documents that name them are in [`super::wellknown`].

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use keyfob_domain::claims::Bearer;
use keyfob_domain::expiry::format_instant;
use keyfob_domain::oauth::{ScopeError, app_scope, pkce_matches};
use keyfob_domain::secret::hash_secret;
use keyfob_domain::time::Timestamp;
use keyfob_domain::{Claims, Credential, PrincipalKind};
use keyfob_store::{AccountId, AppRow, FamilyId, Jti, Permissions, RefreshSession, TokenRow};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{Actor, AuditEvent};
use crate::auth::Auth;
use crate::http::error::ApiError;
use crate::http::extract::{Unreadable, body_bytes, form_bytes, is_form, is_json, parse_json};
use crate::http::openapi::OAuthUnavailable;
use crate::services::{Caller, ServiceError};
use crate::sessions::{
    self, ACCESS_TOKEN_LIFETIME, ACCESS_TOKEN_SECS, IssuedPair, REFRESH_PREFIX, SessionError,
};
use crate::state::AppState;
use crate::web::client_ip::ClientIp;

/// The endpoints a browser app calls (CORS applies).
pub fn browser_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(revoke))
        .routes(routes!(
            super::userinfo::userinfo,
            super::userinfo::userinfo_post
        ))
}

/// The endpoints for back ends.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(introspect))
}

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// Answer `WWW-Authenticate: Basic` (the client tried HTTP Basic and failed).
    basic_challenge: bool,
}

#[derive(Serialize, ToSchema)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type` or `invalid_scope`; at userinfo, `invalid_token` or
    /// `insufficient_scope` (RFC 6750).
    pub error: String,
    pub error_description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }

    /// The RFC 6749 error for a refusal known only by its status: a request Keyfob cannot read
    /// is `invalid_request`; a failure on Keyfob's side is `server_error`, or
    /// `temporarily_unavailable` when retrying later may help.
    pub(crate) fn for_status(status: StatusCode, description: String) -> Self {
        let error = match status {
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                "temporarily_unavailable"
            }
            s if s.is_server_error() => "server_error",
            _ => "invalid_request",
        };
        Self::new(status, error, description)
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    fn invalid_client(basic: bool) -> Self {
        OAuthError {
            basic_challenge: basic,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
        }
    }
}

impl From<ApiError> for OAuthError {
    fn from(err: ApiError) -> Self {
        match err.outage_as_unavailable() {
            ApiError::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "storage is unavailable",
            ),
            other => {
                tracing::error!(error = ?other, "internal error on an OAuth endpoint");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error",
                )
            }
        }
    }
}

impl From<keyfob_store::StoreError> for OAuthError {
    fn from(err: keyfob_store::StoreError) -> Self {
        ApiError::from(err).into()
    }
}

impl From<SessionError> for OAuthError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::Store(e) => e.into(),
            SessionError::Other(e) => ApiError::Internal(e).into(),
            other => OAuthError::invalid_grant(other.to_string()),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(OAuthErrorBody {
                error: self.error.to_owned(),
                error_description: self.description,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self.basic_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"keyfob\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::http::error::UNAVAILABLE_RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// The parameters of an OAuth endpoint: a form (`application/x-www-form-urlencoded`) or JSON
/// body, within the size limit, every field text that storage can keep; refused in RFC 6749's
/// format, naming the field.
pub struct OAuthParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OAuthParams<T> {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, OAuthError> {
        if is_form(req.headers()) {
            let bytes = form_bytes(req, state).await?;
            serde_urlencoded::from_bytes(&bytes)
                .map(OAuthParams)
                .map_err(|e| OAuthError::invalid_request(format!("the form is not valid: {e}")))
        } else if is_json(req.headers()) {
            let bytes = body_bytes(req, state).await?;
            Ok(OAuthParams(parse_json(&bytes)?))
        } else {
            Err(Unreadable::WrongType {
                expected: "application/x-www-form-urlencoded` or `application/json",
            }
            .into())
        }
    }
}

impl From<Unreadable> for OAuthError {
    fn from(err: Unreadable) -> Self {
        let description = match &err {
            Unreadable::Text(input) => format!("the parameter {input}"),
            _ => err.message(),
        };
        // RFC 6749 §5.2 answers a malformed request with 400, a wrong media type included; only
        // a body too large to read keeps its own status.
        let status = match err {
            Unreadable::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        OAuthError::new(status, "invalid_request", description)
    }
}

/// `POST /auth/token` parameters.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// `authorization_code`, `refresh_token` or `client_credentials`.
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub client_id: Option<String>,
    /// For `client_secret_post`; HTTP Basic is accepted too.
    pub client_secret: Option<String>,
    /// For `client_credentials`: the permissions wanted, within the app's maximum (default: all
    /// of it). Ignored on refresh: a session keeps what the user granted.
    pub scope: Option<String>,
}

/// A successful token response (RFC 6749 §5.1), with Keyfob's `token`/`expires` aliases.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds: 600.
    pub expires_in: i64,
    /// For user sessions; never for `client_credentials`, which needs none (the app asks again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// What was granted, space-separated: identity scopes (`openid`, `profile`, `email`), then
    /// permissions.
    pub scope: String,
    /// Same as `access_token`.
    pub token: String,
    /// When the access token expires, RFC 3339.
    pub expires: String,
    /// With the `openid` scope, from a code exchange or a refresh: who the user is (OpenID
    /// Connect Core 1.0 §3.1.3.3), for the application to check and read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl From<IssuedPair> for TokenResponse {
    fn from(pair: IssuedPair) -> Self {
        let expires = time::OffsetDateTime::from_unix_timestamp(pair.expires_at)
            .map(format_instant)
            .unwrap_or_default();
        TokenResponse {
            token: pair.access_token.clone(),
            access_token: pair.access_token,
            token_type: "Bearer".into(),
            expires_in: ACCESS_TOKEN_SECS,
            refresh_token: Some(pair.refresh_token),
            scope: pair.scope,
            expires,
            id_token: pair.id_token,
        }
    }
}

fn no_store(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1) or the body.
struct ClientCredentials {
    client_id: String,
    secret: Option<String>,
    basic: bool,
}

fn client_credentials(
    headers: &HeaderMap,
    body_id: Option<&str>,
    body_secret: Option<&str>,
) -> Result<ClientCredentials, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        });
    if let Some(encoded) = basic {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| OAuthError::invalid_client(true))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| OAuthError::invalid_client(true))?;
        let id = form_decode(id).ok_or_else(|| OAuthError::invalid_client(true))?;
        let secret = form_decode(secret).ok_or_else(|| OAuthError::invalid_client(true))?;
        // Decoded twice (base64, then form encoding), so the body's checks have not seen these.
        for (name, value) in [("client_id", &id), ("client_secret", &secret)] {
            keyfob_domain::input::check_text(value).map_err(|problem| {
                OAuthError::invalid_request(format!(
                    "the `{name}` of the Basic credentials {problem}"
                ))
            })?;
        }
        if body_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not both",
            ));
        }
        if body_id.is_some_and(|b| b != id) {
            return Err(OAuthError::invalid_client(true));
        }
        return Ok(ClientCredentials {
            client_id: id,
            secret: Some(secret),
            basic: true,
        });
    }
    let client_id = body_id
        .ok_or_else(|| OAuthError::invalid_request("`client_id` is required"))?
        .to_owned();
    Ok(ClientCredentials {
        client_id,
        secret: body_secret.map(str::to_owned),
        basic: false,
    })
}

/// RFC 6749 Appendix B: Basic credentials are form-urlencoded before base64.
fn form_decode(s: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
        .ok()?
        .pop()
        .map(|(_, v)| v)
}

/// Finds and authenticates the client: a confidential app must present its secret; a public
/// app must not have one to present. A failure to authenticate as a known application is written
/// to its account's audit log (as an unauthenticated client's event, throttled per address).
async fn authenticate_client(
    state: &AppState,
    credentials: ClientCredentials,
    ip: &str,
) -> Result<AppRow, OAuthError> {
    let invalid = || OAuthError::invalid_client(credentials.basic);
    if credentials.client_id.len() > 128 {
        return Err(invalid());
    }
    let app = state
        .find_app(&credentials.client_id)
        .await?
        .filter(|a| a.revoked_at.is_none())
        .ok_or_else(invalid)?;
    let failure = match (&app.client_secret_hash, &credentials.secret) {
        // The secret, or the one a rotation replaced while its overlap lasts.
        (Some(_), Some(given))
            if app.accepts_secret_hash(&hash_secret(given), Timestamp::now()) =>
        {
            None
        }
        (None, None) => None,
        (Some(_), Some(_)) => Some("wrong_secret"),
        (Some(_), None) => Some("no_secret"),
        (None, Some(_)) => Some("public_app_sent_a_secret"),
    };
    let Some(reason) = failure else {
        return Ok(app);
    };
    tracing::info!(client_id = %app.client_id, reason, "client authentication failed");
    state.audit.record_unauthenticated(
        AuditEvent::new(
            Some(&app.account_id),
            Actor::anonymous(),
            keyfob_domain::audit::action::APP_AUTH_FAILED,
        )
        .target(&app.client_id)
        .ip(ip)
        .detail(serde_json::json!({ "reason": reason })),
    );
    Err(invalid())
}

/// Exchange an authorization code or a refresh token, or get an application's own token.
///
/// `client_credentials` is for confidential applications acting for themselves (machine to
/// machine): the token carries `scope` if given, else the application's maximum permissions,
/// and comes without a refresh token.
#[utoipa::path(
    post,
    path = "/auth/token",
    tag = "sessions",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded",
        description = "Form or JSON"),
    responses(
        (status = 200, description = "Tokens", body = TokenResponse),
        (status = 400, description = "RFC 6749 error", body = OAuthErrorBody),
        (status = 401, description = "Client authentication failed", body = OAuthErrorBody),
        (status = 503, response = OAuthUnavailable),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    access: Option<axum::Extension<crate::telemetry::Caller>>,
    headers: HeaderMap,
    OAuthParams(request): OAuthParams<TokenRequest>,
) -> Result<Response, OAuthError> {
    let credentials = client_credentials(
        &headers,
        request.client_id.as_deref(),
        request.client_secret.as_deref(),
    )?;
    let grant_type = request
        .grant_type
        .clone()
        .ok_or_else(|| OAuthError::invalid_request("`grant_type` is required"))?;
    if !["authorization_code", "refresh_token", "client_credentials"].contains(&grant_type.as_str())
    {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "use `authorization_code`, `refresh_token` or `client_credentials`",
        ));
    }
    let app = authenticate_client(&state, credentials, &ip).await?;
    if let Some(axum::Extension(caller)) = &access {
        caller.record(Some(app.account_id.as_str()), "client");
    }
    if grant_type == "client_credentials" {
        let answer = grant_client_credentials(&state, &app, &request, &ip).await?;
        crate::measures::session_token_issued("client_credentials");
        return Ok(no_store(Json(answer)));
    }
    let pair = if grant_type == "authorization_code" {
        let pair = exchange_code(&state, &app, &request).await?;
        crate::measures::session_token_issued("authorization_code");
        pair
    } else {
        let refresh_token = request
            .refresh_token
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("`refresh_token` is required"))?;
        let pair = sessions::refresh(&state, &app, refresh_token).await?;
        crate::measures::session_token_issued("refresh_token");
        pair
    };
    Ok(no_store(Json(TokenResponse::from(pair))))
}

/// The `client_credentials` grant: an access token for `app` itself, within its maximum
/// permissions, recorded (so that it can be listed, revoked and refused on every node) and
/// audited. Only a confidential application, authenticated by its secret, may ask.
async fn grant_client_credentials(
    state: &AppState,
    app: &AppRow,
    request: &TokenRequest,
    ip: &str,
) -> Result<TokenResponse, OAuthError> {
    if app.public || app.client_secret_hash.is_none() {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "a public application cannot use `client_credentials`: it has no secret to prove \
             who it is",
        ));
    }
    for (name, value) in [
        ("code", &request.code),
        ("code_verifier", &request.code_verifier),
        ("redirect_uri", &request.redirect_uri),
        ("refresh_token", &request.refresh_token),
    ] {
        if value.is_some() {
            return Err(OAuthError::invalid_request(format!(
                "`{name}` is not a parameter of the `client_credentials` grant"
            )));
        }
    }
    let permissions: Vec<String> = app_scope(&app.max_permissions, request.scope.as_deref())
        .map_err(|err| match err {
            ScopeError::Invalid(e) => OAuthError::invalid_scope(format!("`scope`: {e}")),
            outside @ ScopeError::Outside(_) => OAuthError::invalid_scope(outside.to_string()),
        })?
        .iter()
        .map(ToString::to_string)
        .collect();
    let issued = Timestamp::now();
    let bearer = Bearer::App {
        account_id: &app.account_id,
        client_id: &app.client_id,
    };
    let claims = Claims::new(
        state.tokens.issuer(),
        state.tokens.audience(),
        bearer,
        permissions,
        issued,
        issued + ACCESS_TOKEN_LIFETIME,
    );
    let token = state
        .tokens
        .sign(&claims, issued)
        .map_err(|e| ApiError::Internal(e.into()))?;
    state
        .recorder
        .record(TokenRow {
            jti: Jti::from(claims.jti.as_str()),
            account_id: app.account_id.clone(),
            api_key_id: None,
            subject: claims.sub.clone(),
            permissions: Permissions::parse(&claims.permissions)
                .map_err(|e| ApiError::Internal(e.into()))?,
            issued_at: issued,
            expires_at: claims.expires_at(),
            revoked_at: None,
            name: None,
            metadata: None,
            last_used_at: None,
        })
        .await
        .map_err(ApiError::from)?;
    // Queued, not awaited: the token's own record above is what the grant waits for.
    state.audit.record(
        AuditEvent::new(
            Some(&app.account_id),
            Actor::app(&app.client_id),
            keyfob_domain::audit::action::TOKEN_MINTED,
        )
        .target(&claims.jti)
        .ip(ip)
        .detail(serde_json::json!({
            "grant_type": "client_credentials",
            "permissions": claims.permissions,
            "expires": claims.exp,
        })),
    );
    let scope = claims.permissions.join(" ");
    Ok(TokenResponse {
        token: token.clone(),
        access_token: token,
        token_type: "Bearer".into(),
        expires_in: ACCESS_TOKEN_SECS,
        refresh_token: None,
        scope,
        expires: claims
            .expires_at()
            .date_time()
            .map(format_instant)
            .unwrap_or_default(),
        id_token: None,
    })
}

async fn exchange_code(
    state: &AppState,
    app: &AppRow,
    request: &TokenRequest,
) -> Result<IssuedPair, OAuthError> {
    let code = request
        .code
        .as_deref()
        .ok_or_else(|| OAuthError::invalid_request("`code` is required"))?;
    let redirect_uri = request
        .redirect_uri
        .as_deref()
        .ok_or_else(|| OAuthError::invalid_request("`redirect_uri` is required"))?;
    let code_hash = hash_secret(code);
    let now = Timestamp::now();
    let stored = state
        .store
        .find_auth_code(&code_hash)
        .await?
        .ok_or_else(|| OAuthError::invalid_grant("the code is unknown"))?;
    if stored.used_at.is_some() {
        // A replayed code: whoever holds it is not to be trusted with the session it started.
        if let Some(family) = &stored.family_id {
            sessions::end_family(state, family).await?;
        }
        tracing::warn!(client_id = %app.client_id, "authorization code replayed");
        return Err(OAuthError::invalid_grant("the code was already used"));
    }
    if stored.client_id != app.client_id {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if stored.expires_at <= now {
        return Err(OAuthError::invalid_grant("the code has expired"));
    }
    if stored.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "`redirect_uri` differs from the one the code was issued for",
        ));
    }
    match (&stored.code_challenge, &request.code_verifier) {
        (Some(challenge), Some(verifier)) if pkce_matches(verifier, challenge) => {}
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_grant(
                "the code_verifier does not match",
            ));
        }
        (Some(_), None) => {
            return Err(OAuthError::invalid_grant("`code_verifier` is required"));
        }
        (None, Some(_)) => {
            return Err(OAuthError::invalid_grant(
                "a code_verifier was sent but the code has no challenge",
            ));
        }
        (None, None) if app.public => {
            return Err(OAuthError::invalid_grant("public clients must use PKCE"));
        }
        (None, None) => {}
    }
    let grant = state
        .store
        .find_grant_by_id(&stored.grant_id)
        .await?
        .filter(|g| g.revoked_at.is_none())
        .ok_or_else(|| OAuthError::invalid_grant("the grant has been revoked"))?;
    let permissions = stored.permissions.names();
    let sign_in = sessions::SignIn {
        identity: stored.identity,
        auth_time: stored.auth_time,
        nonce: stored.nonce.as_deref(),
        id_token: true,
    };
    Ok(sessions::start(
        state,
        app,
        &stored.user_id,
        &grant,
        &permissions,
        sign_in,
        Some(&code_hash),
    )
    .await?)
}

/// `POST /auth/revoke` parameters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub token: Option<String>,
    /// `refresh_token` or `access_token`; a hint only.
    pub token_type_hint: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// Revoke a refresh or access token (RFC 7009).
///
/// Ends the session the token belongs to, on every node. Answers 200 for unknown tokens too.
#[utoipa::path(
    post,
    path = "/auth/revoke",
    tag = "sessions",
    request_body(content = RevokeRequest, content_type = "application/x-www-form-urlencoded",
        description = "Form or JSON"),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke"),
        (status = 400, description = "RFC 6749 error", body = OAuthErrorBody),
        (status = 401, description = "Client authentication failed", body = OAuthErrorBody),
        (status = 503, response = OAuthUnavailable),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    access: Option<axum::Extension<crate::telemetry::Caller>>,
    headers: HeaderMap,
    OAuthParams(request): OAuthParams<RevokeRequest>,
) -> Result<Response, OAuthError> {
    let credentials = client_credentials(
        &headers,
        request.client_id.as_deref(),
        request.client_secret.as_deref(),
    )?;
    let token = request
        .token
        .ok_or_else(|| OAuthError::invalid_request("`token` is required"))?;
    let app = authenticate_client(&state, credentials, &ip).await?;
    if let Some(axum::Extension(caller)) = &access {
        caller.record(Some(app.account_id.as_str()), "client");
    }
    if let Some(jti) = own_app_token(&state, &app, &token) {
        let by = Caller::new(Actor::app(&app.client_id), &ip);
        match crate::services::tokens::revoke(&state, &app.account_id, &by, &jti).await {
            // Revoked already (or expired and pruned): nothing to do, and RFC 7009 says 200.
            Ok(()) | Err(ServiceError::NotFound(_)) => {}
            Err(ServiceError::Store(e)) => return Err(e.into()),
            Err(other) => return Err(ApiError::Internal(other.into()).into()),
        }
        return Ok(no_store(StatusCode::OK));
    }
    if let Some(family) = session_of(&state, &token).await?
        && family.client_id == app.client_id
        && sessions::end_family(&state, &family.id).await?
    {
        state.audit.record(
            AuditEvent::new(
                Some(&app.account_id),
                Actor::app(&app.client_id),
                keyfob_domain::audit::action::SESSION_ENDED,
            )
            .target(&family.id)
            .detail(serde_json::json!({ "reason": "revoked_by_app", "user": family.user_id })),
        );
    }
    Ok(no_store(StatusCode::OK))
}

/// The `jti` of `token` when it is a live `client_credentials` token of `app` itself: an
/// application revokes only its own tokens.
fn own_app_token(state: &AppState, app: &AppRow, token: &str) -> Option<Jti> {
    if token.starts_with(REFRESH_PREFIX) {
        return None;
    }
    let claims = state.tokens.verify(token, Timestamp::now()).ok()?;
    (claims.is_app_token()
        && claims.client_id.as_deref() == Some(app.client_id.as_str())
        && claims.account_id == app.account_id)
        .then(|| Jti::from(claims.jti.as_str()))
}

/// The session a refresh token or session access token belongs to.
async fn session_of(
    state: &AppState,
    token: &str,
) -> Result<Option<keyfob_store::FamilyRow>, OAuthError> {
    let family_id = if token.starts_with(REFRESH_PREFIX) {
        match state.store.find_refresh(&hash_secret(token)).await? {
            Some(row) => row.family_id,
            None => return Ok(None),
        }
    } else {
        match state.tokens.verify(token, Timestamp::now()) {
            Ok(claims) => match &claims.sid {
                Some(sid) => FamilyId::from(sid.as_str()),
                None => return Ok(None),
            },
            Err(_) => return Ok(None),
        }
    };
    Ok(state.store.find_family(&family_id).await?)
}

/// `POST /auth/introspect` parameters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectRequest {
    pub token: Option<String>,
    pub token_type_hint: Option<String>,
}

/// What introspection says of a token (RFC 7662).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The session, for user-session tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The name given when the token was minted (`POST /auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The metadata object given when the token was minted (`POST /auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Introspect a token (RFC 7662).
///
/// Needs an API key; tokens of other accounts are reported inactive.
#[utoipa::path(
    post,
    path = "/auth/introspect",
    tag = "sessions",
    request_body(content = IntrospectRequest, content_type = "application/x-www-form-urlencoded",
        description = "Form or JSON"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Whether the token is active, and its claims", body = Introspection),
        (status = 400, description = "RFC 6749 error", body = OAuthErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::http::error::ErrorBody),
        (status = 403, description = "Not an API key", body = crate::http::error::ErrorBody),
        (status = 503, response = OAuthUnavailable),
    )
)]
pub async fn introspect(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<OAuthParams<IntrospectRequest>, OAuthError>,
) -> Result<Response, Response> {
    if !auth.0.is_api_key() {
        return Err(ApiError::Forbidden("introspection needs an API key".into()).into_response());
    }
    let OAuthParams(request) = params.map_err(IntoResponse::into_response)?;
    let token = request
        .token
        .ok_or_else(|| OAuthError::invalid_request("`token` is required").into_response())?;
    let answer = describe_token(&state, &token, &auth.0.account_id)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(no_store(Json(answer)))
}

async fn describe_token(
    state: &AppState,
    token: &str,
    account_id: &AccountId,
) -> Result<Introspection, OAuthError> {
    let inactive = Introspection::default();
    if token.starts_with(REFRESH_PREFIX) {
        let Some(session) = state
            .store
            .find_refresh_session(&hash_secret(token))
            .await?
        else {
            return Ok(inactive);
        };
        let Some(app) = state.find_app(&session.family.client_id).await? else {
            return Ok(inactive);
        };
        // The token endpoint's own rule: active only when a refresh would rotate it now.
        if app.account_id != *account_id
            || app.revoked_at.is_some()
            || !sessions::state_of(state, &app, &session, Timestamp::now()).is_active()
        {
            return Ok(inactive);
        }
        let RefreshSession { token, family, .. } = session;
        let permissions = token.permissions.names();
        return Ok(Introspection {
            active: true,
            scope: Some(permissions.join(" ")),
            client_id: Some(family.client_id.into()),
            sub: Some(family.user_id.into()),
            iat: Some(token.created_at.unix_secs()),
            token_type: Some("refresh_token".into()),
            account_id: Some(app.account_id.into()),
            sid: Some(family.id.into()),
            iss: Some(state.tokens.issuer().to_owned()),
            ..inactive
        });
    }
    if matches!(Credential::from_header(token), Ok(Credential::Jwt(_))) {
        let Ok(principal) = crate::auth::authenticate(state, token) else {
            return Ok(inactive);
        };
        if principal.account_id != *account_id {
            return Ok(inactive);
        }
        let Ok(claims) = state.tokens.verify(token, Timestamp::now()) else {
            return Ok(inactive);
        };
        let jti = match &principal.kind {
            PrincipalKind::Jwt { jti, .. } => Some(jti.clone()),
            PrincipalKind::ApiKey { .. } => None,
        };
        // A minted token's name and metadata live in its record, not in the token.
        let record = match (&jti, principal.key_behind()) {
            (Some(jti), Some(_)) => state.store.find_token(jti).await?,
            _ => None,
        };
        let (name, metadata) = record
            .map(|r| (r.name, r.metadata.map(|m| m.0)))
            .unwrap_or_default();
        return Ok(Introspection {
            active: true,
            scope: Some(claims.permissions.join(" ")),
            client_id: claims.client_id.clone(),
            sub: Some(claims.sub.clone()),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            iss: Some(claims.iss.clone()),
            aud: Some(claims.aud.clone()),
            jti: jti.map(Into::into),
            token_type: Some("access_token".into()),
            account_id: Some(claims.account_id.to_string()),
            sid: claims.sid.clone().map(Into::into),
            name,
            metadata,
        });
    }
    Ok(inactive)
}
