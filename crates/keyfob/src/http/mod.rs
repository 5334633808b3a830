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
pub mod manage;
pub mod oauth;
pub mod openapi;
pub mod rate_limit;
pub mod resources;
pub mod serve;
pub mod userinfo;
pub mod wellknown;

use std::convert::Infallible;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, ApiResult};
pub use rate_limit::RateLimiter;

use crate::state::AppState;

/// The JSON API: every route with its OpenAPI operation, by area.
pub struct Api {
    /// What browser apps on registered origins call directly: served with CORS for those origins.
    pub browser: OpenApiRouter<AppState>,
    /// What anyone may read, the discovery documents and the JWKS: served with CORS for every
    /// origin.
    pub public: OpenApiRouter<AppState>,
    /// The rest of the API.
    pub other: OpenApiRouter<AppState>,
}

/// The JSON API's routes and their operations, from each area's one declaration.
pub fn api() -> Api {
    Api {
        browser: OpenApiRouter::new()
            .merge(oauth::browser_router())
            .merge(resources::router()),
        public: wellknown::router(),
        other: OpenApiRouter::new()
            .merge(auth::router())
            .merge(audit::router())
            .merge(manage::router())
            .merge(oauth::router())
            .merge(health::router())
            .merge(openapi::router()),
    }
}

/// What the server runs: [`router`] inside the layers that need no route, applied once around it
/// rather than around every route (see [`app`]).
pub type App = BoxCloneSyncService<Request, Response, Infallible>;

/// The application as a service: [`router`], and around it, once, a default body limit of
/// `max_body_bytes`, the security headers, the error bodies for the framework's own refusals, and
/// the metering of API keys' requests ([`crate::auth::meter`]).
pub fn app(state: AppState, max_body_bytes: usize) -> App {
    let router = router(state.clone());
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(DefaultBodyLimit::max(max_body_bytes))
            .layer(middleware::from_fn(security_headers))
            .layer(middleware::from_fn(guard::error_bodies))
            .layer(middleware::from_fn_with_state(
                state,
                crate::auth::meter::meter,
            ))
            .service(router),
    )
}

/// Every route Keyfob serves, with the middleware that needs the matched route: the request's
/// id, span, metrics and panic catching ([`crate::telemetry::trace_requests`]) and the check of
/// the path and query ([`guard::refuse_unreadable_input`], which names a bad segment by the
/// route's template). `Router::layer` wraps each route in each layer, and every request clones
/// its route's chain of them, so what does not need the route goes around the whole router in
/// [`app`] instead.
pub fn router(state: AppState) -> Router {
    let Api {
        browser,
        public,
        other,
    } = api();
    // A router with layers of its own sets the 405 answer before them (the root's would replace
    // the layered default): here CORS must see it, to answer preflights.
    let browser = Router::from(browser)
        .method_not_allowed_fallback(guard::method_not_allowed)
        .layer(cors(state.index.clone()));
    let router = Router::new()
        .merge(Router::from(other))
        .merge(browser)
        .merge(wellknown::with_cors(Router::from(public)))
        .merge(crate::dashboard::router(state.clone()))
        .merge(crate::user_pages::router())
        .fallback(guard::not_found)
        .method_not_allowed_fallback(guard::method_not_allowed)
        .layer(middleware::from_fn(guard::refuse_unreadable_input));
    let access_log = state.config.access_log;
    crate::telemetry::trace_requests(router, panic_answer, access_log).with_state(state)
}

/// The answer to a request whose handler panicked (logged as an internal error).
fn panic_answer() -> Response {
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
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
        // A page's script may read where its key stands against its rate limit.
        .expose_headers([
            header::RETRY_AFTER,
            header::HeaderName::from_static("ratelimit"),
            header::HeaderName::from_static("ratelimit-policy"),
            header::HeaderName::from_static("ratelimit-limit"),
            header::HeaderName::from_static("ratelimit-remaining"),
            header::HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(std::time::Duration::from_secs(600))
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
