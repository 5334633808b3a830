//! What anyone may read to use Keyfob without being told: the public keys that verify its tokens
//! (`GET /.well-known/jwks.json`) and the discovery documents that say what it serves, OpenID
//! Connect Discovery's (`GET /.well-known/openid-configuration`) and RFC 8414's
//! (`GET /.well-known/oauth-authorization-server`). Both documents are one, built by
//! [`server_metadata`], so they cannot disagree.
//!
//! These are the only routes any origin may read from a browser (CORS `*`, without credentials):
//! nothing here depends on who asks.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use keyfob_domain::signing::SigningAlg;
use serde::{Deserialize, Serialize};
use tower_http::cors::{Any, CorsLayer};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The public documents, with their operations.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(jwks))
        .routes(routes!(openid_configuration))
        .routes(routes!(metadata))
}

/// CORS for the public documents: any origin may read them, and a preflight is answered. No
/// credentials are allowed, and none is needed.
pub fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD])
        .max_age(Duration::from_secs(600))
}

/// [`router`]'s routes with [`cors`] around them alone.
pub fn with_cors(routes: Router<AppState>) -> Router<AppState> {
    // A router with layers of its own sets the 405 answer before them (the root's would replace
    // the layered default): CORS must see it, to answer preflights.
    routes
        .method_not_allowed_fallback(super::guard::method_not_allowed)
        .layer(cors())
}

/// The JSON Web Key Set.
///
/// Every public key whose tokens may still be alive, and the next key before it signs.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "tokens",
    responses((status = 200, description = "JWKS (RFC 7517)", content_type = "application/json", body = Object))
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let body = state.tokens.keys().jwks_json.clone();
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// What Keyfob serves, as OpenID Connect Discovery 1.0 and RFC 8414 describe a server. Every value
/// is true of the server as it runs: a client may rely on each.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServerMetadata {
    /// Exactly the `iss` of Keyfob's tokens.
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    /// OpenID Connect's UserInfo endpoint (GET and POST, Bearer access token).
    pub userinfo_endpoint: String,
    pub jwks_uri: String,
    /// Where an application logs its user out (OpenID Connect RP-Initiated Logout 1.0):
    /// `GET` or `POST /auth/end-session`.
    pub end_session_endpoint: String,
    /// The identity scopes (`openid`, `profile`, `email`), then the permissions that hold for
    /// every resource; `<resource>.read` and `<resource>.write` for any resource are scopes too.
    pub scopes_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub response_modes_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    /// `public`: a user's `sub` is the same for every application.
    pub subject_types_supported: Vec<String>,
    /// The algorithms of the keys that sign now or will sign next.
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// The claims of Keyfob's id_tokens, userinfo answers and access tokens.
    pub claims_supported: Vec<String>,
    /// `normal`: claims come in the id_token and from userinfo, never from elsewhere.
    pub claim_types_supported: Vec<String>,
    /// The `prompt` values `GET /auth` takes.
    pub prompt_values_supported: Vec<String>,
    /// `false`: the `claims` request parameter is not read.
    pub claims_parameter_supported: bool,
    /// `false`: request objects (`request`) are not read.
    pub request_parameter_supported: bool,
    /// `false`: request objects by reference (`request_uri`) are not read.
    pub request_uri_parameter_supported: bool,
    /// Always `true`: every authorization response carries `iss` (RFC 9207).
    pub authorization_response_iss_parameter_supported: bool,
}

/// The one description of what Keyfob serves, for both discovery documents.
///
/// What Keyfob does not serve is left out rather than announced: `id_token` response types (the
/// implicit and hybrid flows), request objects, the `claims` parameter. Each is added here, with
/// its field in [`ServerMetadata`], when it is served (see docs/OIDC.md).
pub fn server_metadata(state: &AppState) -> ServerMetadata {
    let issuer = state.tokens.issuer().to_owned();
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let client_auth = strings(&["client_secret_basic", "client_secret_post", "none"]);
    let mut algs: Vec<SigningAlg> = state.tokens.keys().signing_algs();
    algs.sort_by_key(|alg| alg.as_str());
    algs.dedup();
    ServerMetadata {
        authorization_endpoint: format!("{issuer}/auth"),
        token_endpoint: format!("{issuer}/auth/token"),
        revocation_endpoint: format!("{issuer}/auth/revoke"),
        introspection_endpoint: format!("{issuer}/auth/introspect"),
        userinfo_endpoint: format!("{issuer}/auth/userinfo"),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        end_session_endpoint: format!("{issuer}{}", crate::user_pages::END_SESSION_PATH),
        scopes_supported: strings(&["openid", "profile", "email", "*.read", "*.write"]),
        response_types_supported: strings(&["code", "token"]),
        response_modes_supported: strings(&["query", "fragment"]),
        grant_types_supported: strings(&[
            "authorization_code",
            "refresh_token",
            "client_credentials",
        ]),
        subject_types_supported: strings(&["public"]),
        id_token_signing_alg_values_supported: algs
            .iter()
            .map(|alg| alg.as_str().to_owned())
            .collect(),
        code_challenge_methods_supported: strings(&["S256"]),
        token_endpoint_auth_methods_supported: client_auth.clone(),
        revocation_endpoint_auth_methods_supported: client_auth,
        introspection_endpoint_auth_methods_supported: strings(&["bearer"]),
        claims_supported: strings(&[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "azp",
            "at_hash",
            "sid",
            "email",
            "email_verified",
            "updated_at",
            "nbf",
            "jti",
            "client_id",
            "scope",
            "permissions",
            "account_id",
        ]),
        claim_types_supported: strings(&["normal"]),
        prompt_values_supported: strings(&["none", "login", "consent", "select_account"]),
        claims_parameter_supported: false,
        request_parameter_supported: false,
        request_uri_parameter_supported: false,
        authorization_response_iss_parameter_supported: true,
        issuer,
    }
}

/// OpenID Provider metadata.
///
/// OpenID Connect Discovery 1.0; the same document as RFC 8414's.
#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "sessions",
    responses((status = 200, description = "OpenID Provider metadata", body = ServerMetadata))
)]
pub async fn openid_configuration(State(state): State<AppState>) -> Json<ServerMetadata> {
    Json(server_metadata(&state))
}

/// Authorization server metadata.
///
/// RFC 8414; the same document as OpenID Connect Discovery's.
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    tag = "sessions",
    responses((status = 200, description = "RFC 8414 metadata", body = ServerMetadata))
)]
pub async fn metadata(State(state): State<AppState>) -> Json<ServerMetadata> {
    Json(server_metadata(&state))
}
