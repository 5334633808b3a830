//! `GET /.well-known/jwks.json`: the public keys that verify Keyfob's tokens.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// `GET /.well-known/jwks.json`, with its operation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(jwks))
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
