//! The HTTP API. One module per area, each with its own `router()`, merged in [`router`].
//!
//! The JSON API's areas declare each route with utoipa-axum's `routes!`, which routes a handler
//! and adds its `#[utoipa::path]` operation to the OpenAPI document in one step; [`api`] gathers
//! them, and both the router and `/openapi.json` ([`openapi::document`]) are built from it, so a
//! handler cannot be routed without being documented, nor documented without being routed. The
//! dashboard and the end users' pages are HTML and not in the document: plain axum routers.

pub mod audit;
pub mod auth;
pub mod error;
pub mod extract;
pub mod guard;
pub mod health;
pub mod oauth;
pub mod openapi;
pub mod rate_limit;
pub mod resources;
pub mod serve;
pub mod wellknown;

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, ApiResult};
pub use rate_limit::RateLimiter;

use crate::state::AppState;

/// The JSON API: every route with its OpenAPI operation, by area.
pub struct Api {
    /// What browser apps on registered origins call directly: served with CORS.
    pub browser: OpenApiRouter<AppState>,
    /// The rest of the API.
    pub other: OpenApiRouter<AppState>,
}

/// The JSON API's routes and their operations, from each area's one declaration.
pub fn api() -> Api {
    Api {
        browser: OpenApiRouter::new()
            .merge(oauth::browser_router())
            .merge(resources::router()),
        other: OpenApiRouter::new()
            .merge(auth::router())
            .merge(audit::router())
            .merge(oauth::router())
            .merge(wellknown::router())
            .merge(health::router())
            .merge(openapi::router()),
    }
}

/// Every route Keyfob serves, with its middleware.
pub fn router(state: AppState) -> Router {
    let Api { browser, other } = api();
    // A router with layers of its own sets the 405 answer before them (the root's would replace
    // the layered default): here CORS must see it, to answer preflights.
    let browser = Router::from(browser)
        .method_not_allowed_fallback(guard::method_not_allowed)
        .layer(cors(state.index.clone()));
    let router = Router::new()
        .merge(Router::from(other))
        .merge(browser)
        .merge(crate::dashboard::router())
        .merge(crate::user_pages::router())
        .fallback(guard::not_found)
        .method_not_allowed_fallback(guard::method_not_allowed)
        .layer(middleware::from_fn(guard::refuse_unreadable_input))
        .layer(middleware::from_fn(guard::error_bodies))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(track_metrics))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response_owned()
        }));
    crate::telemetry::trace_requests(router).with_state(state)
}

/// CORS for the origins registered on live applications, and no others.
fn cors(index: std::sync::Arc<crate::auth::AuthIndex>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| index.origin_allowed(o))
        }))
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(600))
}

impl ApiError {
    fn into_response_owned(self) -> Response {
        axum::response::IntoResponse::into_response(self)
    }
}

/// Counts requests and their latency per route and status, for `/metrics`. Every label comes
/// from a closed set (a route template or `unmatched`, a known method or `other`, a status), so
/// no request can add a series of its own.
async fn track_metrics(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status),
    ];
    metrics::counter!("keyfob_http_requests_total", &labels).increment(1);
    metrics::histogram!("keyfob_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    response
}

/// The method as a metric label: the standard ones by name, any other (a client may send any
/// token as a method) as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Headers every answer carries; pages add a CSP of their own.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers
        .entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    response
}
