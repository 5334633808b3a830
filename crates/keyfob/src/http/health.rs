//! `/healthz` (the process is up), `/readyz` (storage answers), `/metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use keyfob_domain::secret::{constant_time_eq, hash_secret};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// `/healthz`, `/readyz` and `/metrics`, each with its operation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable`.
    pub status: &'static str,
    /// `sqlite` or `postgres`, for `/readyz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<&'static str>,
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        database: None,
    })
}

/// Readiness: storage answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Storage is down", body = Health),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let database = Some(state.store.backend());
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ok",
                database,
            }),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
                database,
            }),
        ),
    }
}

/// Prometheus metrics.
///
/// As the operator sets it up: served here by default; with `metrics_listen`, only on that
/// address (here: 404); with `metrics_token_file`, only to a request bearing that token
/// (`Authorization: Bearer …`; else 401).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn metrics(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if state.config.metrics_listen.is_some() {
        return super::guard::not_found(method, uri).await;
    }
    scrape(&state, &headers)
}

/// `/metrics` alone, for its own listener (`metrics_listen`).
pub fn metrics_only(state: AppState) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |State(state): State<AppState>, headers: HeaderMap| async move {
                    scrape(&state, &headers)
                },
            ),
        )
        .with_state(state)
}

/// The metrics as Prometheus text, or a 401 when a token is set and `headers` do not bear it.
fn scrape(state: &AppState, headers: &HeaderMap) -> Response {
    if let Some(expected) = &state.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(hash_secret);
        if !given.is_some_and(|given| constant_time_eq(&given, expected)) {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                "a bearer token is needed for /metrics\n",
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keyfob metrics\""),
            );
            return response;
        }
    }
    crate::measures::refresh_gauges(state);
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
