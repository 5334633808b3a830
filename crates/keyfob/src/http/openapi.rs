//! The OpenAPI document at `/openapi.json`, built from the handlers' annotations as the areas
//! route them ([`super::api`]).

use std::sync::LazyLock;

use axum::Json;
use axum::http::Method;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi, ToResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::guard::Surface;
use crate::state::AppState;

/// What the document says besides its operations, which the routes bring ([`document`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keyfob",
        description = "Authentication and authorization for APIs: API keys, scoped JWTs, resources."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "tokens", description = "Minting and inspecting credentials"),
        (name = "sessions", description = "User sessions: OAuth 2.1 token, revocation, introspection"),
        (name = "resources", description = "The account's records"),
        (name = "audit", description = "The account's audit log"),
        (name = "management", description = "The account's API keys (never a key), tokens, applications, users and grants"),
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

/// Declares a shared error response: its component name is the type's name, its body the schema
/// named.
macro_rules! error_response {
    ($($(#[$doc:meta])* $name:ident: $builder:expr, $schema:literal, $description:literal;)*) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl<'s> ToResponse<'s> for $name {
                fn response() -> (&'s str, RefOr<Response>) {
                    (stringify!($name), error($builder, $schema, $description))
                }
            }
        )*

        /// Every shared error response, for the document's components.
        fn shared_responses() -> Vec<(&'static str, RefOr<Response>)> {
            vec![$(<$name as ToResponse>::response()),*]
        }
    };
}

fn error(builder: ResponseBuilder, schema: &str, description: &str) -> RefOr<Response> {
    builder
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        )
        .build()
        .into()
}

/// A 429 for an API key's rate limit: when to try again, and where the key stands.
fn rate_limited() -> ResponseBuilder {
    let text = |description: &str| {
        HeaderBuilder::new()
            .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::String))
            .description(Some(description.to_owned()))
            .build()
    };
    retry_after()
        .header(
            "RateLimit-Policy",
            text("`\"key\";q=<requests>;w=<window seconds>`: the limit this node enforces"),
        )
        .header(
            "RateLimit",
            text("`\"key\";r=<remaining>;t=<seconds until the budget is full>`"),
        )
}

/// A 503 says when to try again.
fn retry_after() -> ResponseBuilder {
    let header = HeaderBuilder::new()
        .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some("Seconds to wait before trying again"))
        .build();
    ResponseBuilder::new().header("Retry-After", header)
}

error_response! {
    /// Any operation: a path segment or query parameter holding a NUL character or bytes that are
    /// not UTF-8, and whatever the operation itself documents as bad input.
    BadRequest: ResponseBuilder::new(), "ErrorBody",
        "Bad input; the message names the field, parameter or path segment";
    /// Any operation with a JSON body.
    PayloadTooLarge: ResponseBuilder::new(), "ErrorBody",
        "The body is larger than the server accepts (`max_body_bytes`, 64 KiB by default)";
    /// Any operation with a JSON body.
    UnsupportedMediaType: ResponseBuilder::new(), "ErrorBody",
        "The body must be sent with `Content-Type: application/json`";
    /// A request made with an API key (or a token it minted) past the key's rate limit. Every
    /// answer to such a key carries the `RateLimit` headers.
    RateLimited: rate_limited(), "ErrorBody",
        "The API key's rate limit is spent; retry after `Retry-After` seconds";
    /// An operation that needs storage, while storage does not answer.
    Unavailable: retry_after(), "ErrorBody", "Storage is unavailable; retry later";
    /// The OAuth endpoints' bad input.
    OAuthBadRequest: ResponseBuilder::new(), "OAuthErrorBody",
        "RFC 6749 error: `invalid_request` and the like";
    /// The OAuth endpoints' oversized body.
    OAuthPayloadTooLarge: ResponseBuilder::new(), "OAuthErrorBody",
        "`invalid_request`: the body is larger than the server accepts";
    /// The OAuth endpoints' storage outage.
    OAuthUnavailable: retry_after(), "OAuthErrorBody",
        "`temporarily_unavailable`: storage is unavailable";
}

/// A 401 names the problem in `WWW-Authenticate` too.
pub struct Unauthorized;

impl<'s> ToResponse<'s> for Unauthorized {
    fn response() -> (&'s str, RefOr<Response>) {
        let challenge = HeaderBuilder::new()
            .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::String))
            .description(Some(
                "`Bearer realm=\"keyfob\", error=\"invalid_token\", …`",
            ))
            .build();
        (
            "Unauthorized",
            error(
                ResponseBuilder::new().header("WWW-Authenticate", challenge),
                "ErrorBody",
                "Missing, malformed, expired or revoked credential",
            ),
        )
    }
}

/// Adds the shared responses to the components, and to every operation the errors that the edge
/// answers whatever the handler: 400 for an unreadable address (every operation), 401 and 503
/// where a credential is needed (an API key new to this node is read from storage), 413 and 415
/// where there is a body. What an operation documents itself is kept.
struct SharedErrors;

impl Modify for SharedErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, response) in shared_responses()
            .into_iter()
            .chain([<Unauthorized as ToResponse>::response()])
        {
            components.responses.insert(name.to_owned(), response);
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let oauth = Surface::of(&Method::POST, path) == Surface::OAuth;
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, name: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| Ref::from_response_name(name).into());
                };
                add(
                    "400",
                    if oauth {
                        "OAuthBadRequest"
                    } else {
                        "BadRequest"
                    },
                );
                if secured {
                    add("401", "Unauthorized");
                    // An API key this node does not know yet is read from storage.
                    add("503", "Unavailable");
                    // A key's rate limit covers every request made with it or its tokens; the
                    // userinfo endpoint takes only end users' tokens, which no key limits.
                    if !path.ends_with("/userinfo") {
                        add("429", "RateLimited");
                    }
                }
                if has_body {
                    add(
                        "413",
                        if oauth {
                            "OAuthPayloadTooLarge"
                        } else {
                            "PayloadTooLarge"
                        },
                    );
                    if !oauth {
                        add("415", "UnsupportedMediaType");
                    }
                }
            }
        }
    }
}

/// The document: [`ApiDoc`], the operations of every route the API serves, and the shared errors
/// added to each. Built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
        let api = super::api();
        let mut document = ApiDoc::openapi();
        document.merge(api.browser.into_openapi());
        document.merge(api.public.into_openapi());
        document.merge(api.other.into_openapi());
        SharedErrors.modify(&mut document);
        document
    });
    &DOCUMENT
}

/// `GET /openapi.json`, with its operation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}
