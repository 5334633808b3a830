//! The OpenAPI document at `/openapi.json`, built from the handlers' annotations.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keyfob",
        description = "Authentication and authorization for APIs: API keys, scoped JWTs, resources."
    ),
    paths(
        super::auth::mint,
        super::auth::whoami,
        super::resources::list,
        super::resources::create,
        super::resources::read,
        super::resources::patch,
        super::resources::replace,
        super::resources::remove,
        super::audit::list,
        super::wellknown::jwks,
        super::oauth::token,
        super::oauth::revoke,
        super::oauth::introspect,
        super::oauth::metadata,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        openapi_json,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "tokens", description = "Minting and inspecting credentials"),
        (name = "sessions", description = "User sessions: OAuth 2.1 token, revocation, introspection"),
        (name = "resources", description = "The account's records"),
        (name = "audit", description = "The account's audit log"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`kf_…`) or a JWT, as `Bearer <credential>` or bare",
                    ))
                    .build(),
            ),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
