//! Every route Keyfob serves, as a table the edge tests walk: its surface (the format of its
//! errors), who may call it, and the inputs it reads. The JSON API's part is read from the OpenAPI
//! document the server builds from the same declarations as its router ([`api_routes`]); the
//! pages' part, which the document does not cover, is listed here ([`PAGE_ROUTES`]).
//! [`served_routes`] reads the routes from the real router, so a page route added there and not
//! here, or an API route the document does not describe, fails `the_table_lists_every_served_route`.
//!
//! [`Fixture`] is one account with everything a route may need to act on: an API key, a token, a
//! record, an application with a user's grant and session, a signed-in owner and a logged-in end
//! user.

use keyfob_domain::ids::{AccountId, GrantId};
use keyfob_domain::time::Timestamp;
use std::collections::BTreeSet;
use std::sync::LazyLock;

use keyfob::services::apps::NewApp;
use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_store::{AuthCodeRow, GrantRow, RecordScope};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::{OpenApi, RefOr, Schema};

use crate::dashboard::Browser;
use crate::helpers::*;

/// The format of a route's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// `{"error", "message"}`.
    Api,
    /// RFC 6749 `{"error", "error_description"}`.
    OAuth,
    /// The dashboard's HTML error page.
    Dashboard,
    /// The end users' HTML error page.
    UserPage,
}

/// Who calls a route in the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Anyone,
    /// `Authorization: Bearer <API key>`.
    ApiKey,
    /// The application's client credentials, in the body (`client_secret_post`).
    Client,
    /// A signed-in owner's browser.
    Owner,
    /// A browser on a dashboard form shown before login (it holds the form's cookie).
    OwnerForm,
    /// A logged-in end user's browser.
    User,
    /// A browser on an end-user form shown before login.
    UserForm,
}

/// What a route reads from its body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    None,
    /// A JSON document; the test sends NUL in each of these documents' cases.
    Json,
    /// A URL-encoded form with these fields.
    Form(&'static [&'static str]),
    /// An OAuth endpoint's parameters, as a form or as JSON.
    OAuth(&'static [&'static str]),
}

pub struct Route {
    /// `*` for a route that answers every method.
    pub method: &'static str,
    pub path: &'static str,
    pub face: Face,
    pub who: Who,
    /// The query parameters the route reads (or, for one that reads none, any one).
    pub query: &'static [&'static str],
    pub body: Body,
}

const fn route(
    method: &'static str,
    path: &'static str,
    face: Face,
    who: Who,
    query: &'static [&'static str],
    body: Body,
) -> Route {
    Route {
        method,
        path,
        face,
        who,
        query,
        body,
    }
}

use Body as B;
use Face as F;
use Who as W;

const CSRF: &[&str] = &["csrf"];
/// What an application's logout request reads (`GET` or `POST /auth/end-session`).
const END_SESSION_PARAMS: &[&str] = &[
    "id_token_hint",
    "client_id",
    "post_logout_redirect_uri",
    "state",
    "end_app_session",
];

/// The dashboard's and the end users' routes, every method: HTML pages, not in the OpenAPI
/// document.
pub const PAGE_ROUTES: &[Route] = &[
    route("GET", "/dashboard", F::Dashboard, W::Owner, &["x"], B::None),
    route(
        "GET",
        "/dashboard/forgot",
        F::Dashboard,
        W::Anyone,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/forgot",
        F::Dashboard,
        W::OwnerForm,
        &["x"],
        B::Form(&["csrf", "email"]),
    ),
    route(
        "GET",
        "/dashboard/reset",
        F::Dashboard,
        W::Anyone,
        &["token"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/reset",
        F::Dashboard,
        W::OwnerForm,
        &["x"],
        B::Form(&["csrf", "token", "password", "confirm"]),
    ),
    route(
        "GET",
        "/dashboard/verify",
        F::Dashboard,
        W::Anyone,
        &["token"],
        B::None,
    ),
    route(
        "GET",
        "/dashboard/account",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/account/password",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "current", "password", "confirm"]),
    ),
    route(
        "POST",
        "/dashboard/account/email",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "email", "password"]),
    ),
    route(
        "GET",
        "/dashboard/account/email/confirm",
        F::Dashboard,
        W::Anyone,
        &["token"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/account/verify",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "POST",
        "/dashboard/account/logins/end-others",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "POST",
        "/dashboard/account/logins/{id}/end",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "POST",
        "/dashboard/account/settings",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "require_verified_users"]),
    ),
    route(
        "GET",
        "/dashboard/",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "GET",
        "/dashboard/signup",
        F::Dashboard,
        W::Anyone,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/signup",
        F::Dashboard,
        W::OwnerForm,
        &["x"],
        B::Form(&["csrf", "email", "password", "confirm"]),
    ),
    route(
        "GET",
        "/dashboard/login",
        F::Dashboard,
        W::Anyone,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/login",
        F::Dashboard,
        W::OwnerForm,
        &["x"],
        B::Form(&["csrf", "email", "password"]),
    ),
    route(
        "POST",
        "/dashboard/logout",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "GET",
        "/dashboard/keys",
        F::Dashboard,
        W::Owner,
        &["done"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/keys",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&[
            "csrf",
            "name",
            "access",
            "perm_all_read",
            "perm_all_write",
            "perm_sensitive_read",
            "perm_audit_read",
            "permissions",
            "expires_in",
            "rate_limit",
        ]),
    ),
    route(
        "GET",
        "/dashboard/keys/{id}",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "GET",
        "/dashboard/keys/{id}/created",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/keys/{id}/roll",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "overlap"]),
    ),
    route(
        "GET",
        "/dashboard/keys/{id}/revoke",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/keys/{id}/revoke",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "POST",
        "/dashboard/keys/{id}/revoke-tokens",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "confirm"]),
    ),
    route(
        "GET",
        "/dashboard/apps",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/apps",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&[
            "csrf",
            "name",
            "redirect_uris",
            "origins",
            "kind",
            "max_permissions",
            "refresh_idle_secs",
            "refresh_max_age_secs",
            "allow_fragment",
        ]),
    ),
    route(
        "GET",
        "/dashboard/apps/{client_id}",
        F::Dashboard,
        W::Owner,
        &["done"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/apps/{client_id}",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&[
            "csrf",
            "name",
            "redirect_uris",
            "post_logout_redirect_uris",
            "origins",
            "max_permissions",
            "refresh_idle_secs",
            "refresh_max_age_secs",
            "allow_fragment",
        ]),
    ),
    route(
        "POST",
        "/dashboard/apps/{client_id}/links",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "logo_uri", "homepage_uri", "policy_uri"]),
    ),
    route(
        "GET",
        "/dashboard/apps/{client_id}/secret",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/apps/{client_id}/rotate-secret",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "overlap_secs"]),
    ),
    route(
        "POST",
        "/dashboard/apps/{client_id}/disable",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "GET",
        "/dashboard/apps/{client_id}/disable",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/apps/{client_id}/enable",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "GET",
        "/dashboard/apps/{client_id}/delete",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/apps/{client_id}/delete",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "GET",
        "/dashboard/users/{user_id}/remove",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/users/{user_id}/remove",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "GET",
        "/dashboard/grants",
        F::Dashboard,
        W::Owner,
        &["done"],
        B::None,
    ),
    route(
        "GET",
        "/dashboard/grants/{id}/revoke",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/grants/{id}/revoke",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "GET",
        "/dashboard/tokens",
        F::Dashboard,
        W::Owner,
        &["done"],
        B::None,
    ),
    route(
        "GET",
        "/dashboard/tokens/new",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/tokens/new",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "key", "permissions", "expires", "name"]),
    ),
    route(
        "GET",
        "/dashboard/tokens/{jti}/minted",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "GET",
        "/dashboard/tokens/{jti}/revoke",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/tokens/{jti}/revoke",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "GET",
        "/dashboard/audit",
        F::Dashboard,
        W::Owner,
        &["actor"],
        B::None,
    ),
    route(
        "GET",
        "/dashboard/data",
        F::Dashboard,
        W::Owner,
        &["done"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/data/_fields",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "fields"]),
    ),
    route(
        "GET",
        "/dashboard/data/{resource}",
        F::Dashboard,
        W::Owner,
        &["page"],
        B::None,
    ),
    route(
        "GET",
        "/dashboard/data/{resource}/{id}",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/data/{resource}/{id}/reveal",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "field", "password", "code"]),
    ),
    route(
        "GET",
        "/dashboard/security/totp",
        F::Dashboard,
        W::Owner,
        &["done"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/security/totp/confirm",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "secret", "code"]),
    ),
    route(
        "POST",
        "/dashboard/security/totp/recovery-codes",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "code"]),
    ),
    route(
        "POST",
        "/dashboard/security/totp/remove",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "code", "password"]),
    ),
    route(
        "POST",
        "/dashboard/security/totp/required",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "required"]),
    ),
    route(
        "GET",
        "/dashboard/login/totp",
        F::Dashboard,
        W::Anyone,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/login/totp",
        F::Dashboard,
        W::OwnerForm,
        &["x"],
        B::Form(&["csrf", "code"]),
    ),
    route(
        "GET",
        "/dashboard/security/passkeys",
        F::Dashboard,
        W::Owner,
        &["done"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/security/passkeys",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "name", "credential"]),
    ),
    route(
        "POST",
        "/dashboard/security/passkeys/remove",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::Form(&["csrf", "id"]),
    ),
    route(
        "GET",
        "/dashboard/login/passkey",
        F::Dashboard,
        W::Anyone,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/dashboard/login/passkey",
        F::Dashboard,
        W::OwnerForm,
        &["x"],
        B::Form(&["csrf", "credential"]),
    ),
    route(
        "GET",
        "/dashboard/static/passkeys.js",
        F::Dashboard,
        W::Anyone,
        &["x"],
        B::None,
    ),
    route(
        "GET",
        "/dashboard/static/copy.js",
        F::Dashboard,
        W::Anyone,
        &["x"],
        B::None,
    ),
    route(
        "GET",
        "/dashboard/static/app.css",
        F::Dashboard,
        W::Anyone,
        &["x"],
        B::None,
    ),
    route(
        "*",
        "/dashboard/{*rest}",
        F::Dashboard,
        W::Owner,
        &["x"],
        B::None,
    ),
    route(
        "GET",
        "/auth",
        F::UserPage,
        W::User,
        &["client_id"],
        B::None,
    ),
    route(
        "POST",
        "/auth/consent",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(&[
            "csrf",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "response_type",
            "permission",
            "decision",
        ]),
    ),
    route(
        "GET",
        "/auth/login",
        F::UserPage,
        W::Anyone,
        &["client_id"],
        B::None,
    ),
    route(
        "POST",
        "/auth/login",
        F::UserPage,
        W::UserForm,
        &["x"],
        B::Form(&["csrf", "email", "password", "request"]),
    ),
    route(
        "GET",
        "/auth/signup",
        F::UserPage,
        W::Anyone,
        &["client_id"],
        B::None,
    ),
    route(
        "POST",
        "/auth/signup",
        F::UserPage,
        W::UserForm,
        &["x"],
        B::Form(&["csrf", "email", "password", "confirm", "request"]),
    ),
    route(
        "POST",
        "/auth/logout",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(&["csrf", "request"]),
    ),
    route(
        "GET",
        "/auth/end-session",
        F::UserPage,
        W::User,
        END_SESSION_PARAMS,
        B::None,
    ),
    route(
        "POST",
        "/auth/end-session",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(END_SESSION_PARAMS),
    ),
    route(
        "POST",
        "/auth/end-session/confirm",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(&[
            "csrf",
            "id_token_hint",
            "client_id",
            "post_logout_redirect_uri",
            "state",
            "end_app_session",
        ]),
    ),
    route(
        "GET",
        "/auth/grants",
        F::UserPage,
        W::User,
        &["done"],
        B::None,
    ),
    route(
        "GET",
        "/auth/grants/{id}/revoke",
        F::UserPage,
        W::User,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/auth/grants/{id}/revoke",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "POST",
        "/auth/logout-everywhere",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(CSRF),
    ),
    route(
        "POST",
        "/auth/password",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(&["csrf", "current", "new", "confirm"]),
    ),
    route(
        "GET",
        "/auth/security/totp",
        F::UserPage,
        W::User,
        &["done"],
        B::None,
    ),
    route(
        "POST",
        "/auth/security/totp/confirm",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(&["csrf", "secret", "code"]),
    ),
    route(
        "POST",
        "/auth/security/totp/recovery-codes",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(&["csrf", "code"]),
    ),
    route(
        "POST",
        "/auth/security/totp/remove",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(&["csrf", "code", "password"]),
    ),
    route(
        "GET",
        "/auth/login/totp",
        F::UserPage,
        W::Anyone,
        &["client_id"],
        B::None,
    ),
    route(
        "POST",
        "/auth/login/totp",
        F::UserPage,
        W::UserForm,
        &["x"],
        B::Form(&["csrf", "code", "request"]),
    ),
    route(
        "GET",
        "/auth/security/passkeys",
        F::UserPage,
        W::User,
        &["done"],
        B::None,
    ),
    route(
        "POST",
        "/auth/security/passkeys",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(&["csrf", "name", "credential"]),
    ),
    route(
        "POST",
        "/auth/security/passkeys/remove",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(&["csrf", "id"]),
    ),
    route(
        "GET",
        "/auth/login/passkey",
        F::UserPage,
        W::Anyone,
        &["client_id"],
        B::None,
    ),
    route(
        "POST",
        "/auth/login/passkey",
        F::UserPage,
        W::UserForm,
        &["x"],
        B::Form(&["csrf", "credential", "request"]),
    ),
    route(
        "GET",
        "/auth/forgot",
        F::UserPage,
        W::Anyone,
        &["x"],
        B::None,
    ),
    route(
        "POST",
        "/auth/forgot",
        F::UserPage,
        W::UserForm,
        &["x"],
        B::Form(&["csrf", "email", "request"]),
    ),
    route(
        "GET",
        "/auth/reset",
        F::UserPage,
        W::Anyone,
        &["token"],
        B::None,
    ),
    route(
        "POST",
        "/auth/reset",
        F::UserPage,
        W::UserForm,
        &["x"],
        B::Form(&["csrf", "token", "password", "confirm"]),
    ),
    route(
        "GET",
        "/auth/verify",
        F::UserPage,
        W::Anyone,
        &["token"],
        B::None,
    ),
    route(
        "POST",
        "/auth/verify/resend",
        F::UserPage,
        W::User,
        &["x"],
        B::Form(&["csrf", "request"]),
    ),
];

/// Every route, every method: the JSON API's, then the pages'.
pub static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    let mut routes = api_routes(keyfob::http::openapi::document());
    routes.extend(
        PAGE_ROUTES
            .iter()
            .map(|r| route(r.method, r.path, r.face, r.who, r.query, r.body)),
    );
    routes
});

/// The JSON API's routes as the OpenAPI document describes them: the surface by the path, who
/// calls it by its security (an OAuth endpoint without it authenticates the client), the query
/// parameters it documents, and its body: JSON, or an OAuth endpoint's parameters (the fields of
/// the body's schema).
pub fn api_routes(document: &'static OpenApi) -> Vec<Route> {
    let mut routes = Vec::new();
    for (path, item) in &document.paths.paths {
        for (method, operation) in operations(item) {
            use keyfob::http::guard::Surface;
            let face = match Surface::of(&Method::from_bytes(method.as_bytes()).unwrap(), path) {
                Surface::Api => Face::Api,
                Surface::OAuth => Face::OAuth,
                other => panic!("{method} {path} is documented but answers as {other:?}"),
            };
            let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            let who = match face {
                _ if secured => Who::ApiKey,
                Face::OAuth => Who::Client,
                _ => Who::Anyone,
            };
            let query: Vec<&'static str> = operation
                .parameters
                .iter()
                .flatten()
                .filter(|p| p.parameter_in == ParameterIn::Query)
                .map(|p| p.name.as_str())
                .collect();
            let query: &'static [&'static str] = if query.is_empty() {
                &["x"]
            } else {
                // Built once per test binary (see `ROUTES`), like the document it borrows from.
                query.leak()
            };
            let body = match &operation.request_body {
                None => Body::None,
                Some(body) if body.content.contains_key("application/json") => Body::Json,
                Some(body) => {
                    let schema = body
                        .content
                        .values()
                        .find_map(|c| c.schema.as_ref())
                        .unwrap_or_else(|| panic!("{method} {path}: a body without a schema"));
                    Body::OAuth(fields(document, schema).leak())
                }
            };
            routes.push(route(method, path.as_str(), face, who, query, body));
        }
    }
    routes
}

/// A path item's operations, by method.
fn operations(item: &PathItem) -> impl Iterator<Item = (&'static str, &Operation)> {
    [
        ("GET", &item.get),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
        ("HEAD", &item.head),
        ("OPTIONS", &item.options),
        ("TRACE", &item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_ref().map(|o| (method, o)))
}

/// The property names of an object schema, following a `$ref` to the document's components.
fn fields(document: &'static OpenApi, schema: &'static RefOr<Schema>) -> Vec<&'static str> {
    let schema = match schema {
        RefOr::Ref(reference) => {
            let name = reference.ref_location.rsplit('/').next().unwrap();
            document
                .components
                .as_ref()
                .and_then(|c| c.schemas.get(name))
                .unwrap_or_else(|| panic!("no schema `{name}` in the document"))
        }
        inline => inline,
    };
    match schema {
        RefOr::T(Schema::Object(object)) => object.properties.keys().map(String::as_str).collect(),
        _ => panic!("a body schema that is not an object"),
    }
}

/// The `(method, path)` pairs the real router serves: its paths read from the router itself, and
/// each path's methods from the `Allow` header of a 405 to a method no route serves (`*` for a
/// path that answers every method). `HEAD` is left out: it comes with `GET`.
pub async fn served_routes(app: &TestApp, fixture: &Fixture) -> BTreeSet<(String, String)> {
    let router = format!("{:?}", keyfob::http::router(app.state.clone()));
    // The router's debug output lists its paths as `RouteId(n): "/path"`; the fallback router's
    // come after `fallback_router` and are not routes.
    let routes_part = &router[..router.find("fallback_router").unwrap_or(router.len())];
    let mut paths = BTreeSet::new();
    for (at, _) in routes_part.match_indices("RouteId(") {
        let rest = &routes_part[at..];
        let Some(open) = rest.find("): \"") else {
            continue;
        };
        if rest[..open]
            .chars()
            .skip("RouteId(".len())
            .all(|c| c.is_ascii_digit())
        {
            let start = open + 4;
            let end = start + rest[start..].find('"').unwrap();
            paths.insert(rest[start..end].to_owned());
        }
    }
    assert!(
        paths.len() > 40 && paths.contains("/auth/token"),
        "the router's paths could not be read from its debug output: {paths:?}"
    );
    let probe = Method::from_bytes(b"PROBE").unwrap();
    let mut served = BTreeSet::new();
    for path in paths {
        let response = fixture
            .anyone
            .http
            .request(probe.clone(), fixture.anyone.url(&fixture.concrete(&path)))
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::METHOD_NOT_ALLOWED {
            served.insert(("*".to_owned(), path));
            continue;
        }
        let allow = response
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("a 405 on {path} without Allow"))
            .to_str()
            .unwrap()
            .to_owned();
        for method in allow.split(',').map(str::trim).filter(|m| *m != "HEAD") {
            served.insert((method.to_owned(), path.clone()));
        }
    }
    served
}

/// The redirect URI of the fixture's application.
pub const CALLBACK: &str = "https://client.example.com/cb";
/// The email the tests try to sign up with through refused forms; it must never exist.
pub const PROBE_EMAIL: &str = "nul-probe@example.com";

/// One account with something for every route to act on.
pub struct Fixture {
    pub account: AccountId,
    pub key: String,
    pub key_id: String,
    pub jwt: String,
    pub jti: String,
    pub record_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub user_email: String,
    pub user_id: String,
    pub grant_id: String,
    pub refresh_token: String,
    pub access_token: String,
    pub owner: Browser,
    pub owner_csrf: String,
    pub owner_form: Browser,
    pub owner_form_csrf: String,
    pub user: Browser,
    pub user_csrf: String,
    pub user_form: Browser,
    pub user_form_csrf: String,
    pub anyone: Browser,
}

impl Fixture {
    pub async fn new(app: &TestApp) -> Fixture {
        let owner = Browser::signed_up(app).await;
        let account = app
            .state
            .store
            .find_owner_by_email(&owner.email)
            .await
            .unwrap()
            .unwrap()
            .account_id;
        let key = owner.create_key("probe").await;
        app.wait_until_status(&key, 200).await;
        let key_id = app.state.store.list_api_keys(&account).await.unwrap()[0]
            .id
            .clone();
        let jwt = app.mint_token(&key, &["deals.read", "deals.write"]).await;
        let jti = app.state.store.list_tokens(&account, 10).await.unwrap()[0]
            .jti
            .clone();
        let created = app
            .request(Method::POST, "/api/deals", Some(&key))
            .json(&json!({"name": "first", "customer": {"name": "Ada"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let record_id = created.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let registered = keyfob::services::apps::create_app(
            app.state.store.as_ref(),
            &account,
            NewApp {
                name: "Probe app".into(),
                redirect_uris: vec![CALLBACK.into()],
                post_logout_redirect_uris: vec![],
                origins: vec![],
                public: false,
                max_permissions: "deals.read,deals.write".into(),
                refresh_idle_secs: None,
                refresh_max_age_secs: None,
                allow_fragment: false,
            },
        )
        .await
        .unwrap();
        let client_id = registered.app.client_id.clone();
        let client_secret = registered.client_secret.clone().unwrap();
        let user_email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let user_id = keyfob::services::users::create_user(
            app.state.store.as_ref(),
            &app.state.passwords,
            &user_email,
            PASSWORD.into(),
        )
        .await
        .unwrap()
        .id;
        let now = Timestamp::now();
        let grant = app
            .state
            .store
            .upsert_grant(&GrantRow {
                id: GrantId::from(uuid::Uuid::now_v7().to_string()),
                user_id: user_id.clone(),
                client_id: client_id.clone(),
                account_id: account.clone(),
                permissions: keyfob_store::JsonList::from_json(r#"["deals.read"]"#).unwrap(),
                identity: Default::default(),
                created_at: now,
                updated_at: now,
                revoked_at: None,
            })
            .await
            .unwrap();
        let code = random_token();
        app.state
            .store
            .insert_auth_code(&AuthCodeRow {
                code_hash: hash_secret(&code),
                client_id: client_id.clone(),
                user_id,
                grant_id: grant.id.clone(),
                redirect_uri: CALLBACK.into(),
                permissions: keyfob_store::JsonList::from_json(r#"["deals.read"]"#).unwrap(),
                identity: Default::default(),
                nonce: None,
                auth_time: None,
                code_challenge: None,
                family_id: None,
                created_at: now,
                expires_at: now + std::time::Duration::from_secs(60),
                used_at: None,
            })
            .await
            .unwrap();
        let tokens: Value = app
            .client
            .post(app.url("/auth/token"))
            .basic_auth(&client_id, Some(&client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
        let access_token = tokens["access_token"].as_str().unwrap().to_owned();
        let owner_csrf = owner.csrf("/dashboard/keys").await;
        let owner_form = Browser::new(app);
        let owner_form_csrf = owner_form.csrf("/dashboard/login").await;
        let user = Browser::new(app);
        let login_csrf = user.csrf("/auth/login").await;
        let response = user
            .post(
                "/auth/login",
                &[
                    ("csrf", &login_csrf),
                    ("email", &user_email),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let user_csrf = user.csrf("/auth/grants").await;
        let user_form = Browser::new(app);
        let user_form_csrf = user_form.csrf("/auth/login").await;
        Fixture {
            account,
            key,
            key_id: key_id.into(),
            jwt,
            jti: jti.into(),
            record_id,
            client_id: client_id.into(),
            client_secret,
            user_email,
            user_id: grant.user_id.to_string(),
            grant_id: grant.id.into(),
            refresh_token,
            access_token,
            owner,
            owner_csrf,
            owner_form,
            owner_form_csrf,
            user,
            user_csrf,
            user_form,
            user_form_csrf,
            anyone: Browser::new(app),
        }
    }

    /// A path template with its parameters filled in with what the fixture holds.
    pub fn concrete(&self, template: &str) -> String {
        self.fill(template, None)
    }

    /// A path template filled in, with `bad` in place of the parameter it names.
    pub fn fill(&self, template: &str, bad: Option<(&str, &str)>) -> String {
        let id = if template.starts_with("/dashboard/keys") || template.starts_with("/api/keys") {
            &self.key_id
        } else if template.contains("/grants/") {
            &self.grant_id
        } else {
            &self.record_id
        };
        let mut out = Vec::new();
        for segment in template.split('/') {
            let value = match segment {
                "{resource}" => "deals",
                "{id}" => id,
                "{jti}" => &self.jti,
                "{client_id}" => &self.client_id,
                "{user_id}" => &self.user_id,
                "{*rest}" => "nowhere",
                other => {
                    out.push(other.to_owned());
                    continue;
                }
            };
            match bad {
                Some((name, replacement)) if name == segment => out.push(replacement.to_owned()),
                _ => out.push(value.to_owned()),
            }
        }
        out.join("/")
    }

    /// The browser a route is called from.
    pub fn browser(&self, who: Who) -> &Browser {
        match who {
            Who::Owner => &self.owner,
            Who::OwnerForm => &self.owner_form,
            Who::User => &self.user,
            Who::UserForm => &self.user_form,
            Who::Anyone | Who::ApiKey | Who::Client => &self.anyone,
        }
    }

    /// A request to `path` as `who`, with the credential it needs.
    pub fn request(&self, who: Who, method: &str, path: &str) -> RequestBuilder {
        let method = if method == "*" { "GET" } else { method };
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let browser = self.browser(who);
        let builder = browser.http.request(method, browser.url(path));
        match who {
            Who::ApiKey => builder.bearer_auth(&self.key),
            _ => builder,
        }
    }

    /// A value of `field` that the route would accept, so that only the character added to it is
    /// wrong.
    pub fn valid(&self, route: &Route, field: &str) -> String {
        let owner_route = route.path.starts_with("/dashboard");
        match field {
            "csrf" => match route.who {
                Who::Owner => self.owner_csrf.clone(),
                Who::OwnerForm => self.owner_form_csrf.clone(),
                Who::User => self.user_csrf.clone(),
                Who::UserForm => self.user_form_csrf.clone(),
                _ => String::new(),
            },
            "email" if route.path.ends_with("/login") && owner_route => self.owner.email.clone(),
            "email" if route.path.ends_with("/login") => self.user_email.clone(),
            "email" => PROBE_EMAIL.to_owned(),
            "password" | "current" => PASSWORD.to_owned(),
            "confirm" if route.path == "/auth/password" => "a brand new passphrase 42".to_owned(),
            "confirm" if route.path.ends_with("/revoke-tokens") => "yes".to_owned(),
            "confirm" => PASSWORD.to_owned(),
            "new" => "a brand new passphrase 42".to_owned(),
            "name" => "probe".to_owned(),
            // The mint form's key, and an expiry left to the default.
            "key" => self.key_id.clone(),
            "expires" => String::new(),
            "access" => "restricted".to_owned(),
            "perm_all_read" | "perm_all_write" | "perm_sensitive_read" | "perm_audit_read" => {
                "on".to_owned()
            }
            "expires_in" => "90d".to_owned(),
            "rate_limit" => "600/min".to_owned(),
            "permissions" => "deals.read, services.write".to_owned(),
            "overlap" => "1h".to_owned(),
            "redirect_uris" => "https://probe.example.com/cb".to_owned(),
            "post_logout_redirect_uris" => "https://probe.example.com/bye".to_owned(),
            "logo_uri" => "https://probe.example.com/logo.png".to_owned(),
            "homepage_uri" => "https://probe.example.com/".to_owned(),
            "policy_uri" => "https://probe.example.com/privacy".to_owned(),
            "overlap_secs" => "3600".to_owned(),
            "origins" => "https://probe.example.com".to_owned(),
            "kind" => "confidential".to_owned(),
            "allow_fragment" => "yes".to_owned(),
            "max_permissions" => "deals.read".to_owned(),
            "refresh_idle_secs" | "refresh_max_age_secs" => "3600".to_owned(),
            "fields" => "ssn, customer.tax_id".to_owned(),
            // A second factor's enrolment: its sealed secret, and whether the account requires one.
            "secret" => "sealed-probe".to_owned(),
            "required" => "no".to_owned(),
            "field" => "ssn".to_owned(),
            // A passkey ceremony's response (well-formed JSON the server refuses), and the
            // credential id of a passkey to remove (no such one).
            "credential" => "{}".to_owned(),
            "id" => "probe-credential".to_owned(),
            "client_id" => self.client_id.clone(),
            "client_secret" => self.client_secret.clone(),
            "redirect_uri" => CALLBACK.to_owned(),
            "scope" => "deals.read".to_owned(),
            "state" => "st8".to_owned(),
            "response_type" => "code".to_owned(),
            "permission" => "deals.read".to_owned(),
            "decision" => "allow".to_owned(),
            "request" => serde_urlencoded::to_string([
                ("client_id", self.client_id.as_str()),
                ("redirect_uri", CALLBACK),
                ("scope", "deals.read"),
            ])
            .unwrap(),
            "grant_type" => "refresh_token".to_owned(),
            "code" => "kfc_probe".to_owned(),
            "code_verifier" => "v".repeat(43),
            "refresh_token" => self.refresh_token.clone(),
            // A mailed link's token: well formed, for no link (the route looks it up, finds none,
            // and changes nothing).
            "token"
                if route.path.starts_with("/dashboard")
                    || route.path.starts_with("/auth/reset")
                    || route.path.starts_with("/auth/verify") =>
            {
                "A".repeat(43)
            }
            "token" => self.refresh_token.clone(),
            "require_verified_users" => "on".to_owned(),
            "token_type_hint" => "refresh_token".to_owned(),
            // A logout request without a hint or an address: it only asks the user.
            "id_token_hint" | "post_logout_redirect_uri" => String::new(),
            "end_app_session" => "false".to_owned(),
            // Userinfo's token in a form body: any text will do, the token is checked after.
            "access_token" => "not-a-token".to_owned(),
            other => panic!("no valid value for `{other}`"),
        }
    }

    /// A whole valid form for `route`.
    pub fn form(&self, route: &Route, fields: &[&str]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|f| ((*f).to_owned(), self.valid(route, f)))
            .collect()
    }
}

/// What the account holds, to compare before and after hostile requests.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    keys: Vec<(String, bool)>,
    tokens: Vec<(String, bool)>,
    apps: Vec<String>,
    grants: Vec<(String, bool)>,
    records: Vec<Value>,
    fields: Option<String>,
    audit_events: u64,
    probe_owner: bool,
    probe_user: bool,
    key_works: u16,
    jwt_works: u16,
    session_works: u16,
    family_live: bool,
    owner_signed_in: bool,
    user_logged_in: bool,
    user_password_hash: String,
}

impl Snapshot {
    pub async fn take(app: &TestApp, f: &Fixture) -> Snapshot {
        let store = &app.state.store;
        let scope = RecordScope {
            account_id: &f.account,
            resource: "deals",
            owner_user_id: None,
        };
        let list = keyfob_domain::query::ListQuery::from_pairs(&[]).unwrap();
        let (records, _) = store.list_records(&scope, &list).await.unwrap();
        let (_, audit_events) = store
            .list_audit_events(&keyfob_store::AuditFilter {
                account_id: &f.account,
                action: None,
                actor_id: None,
                since: None,
                until: None,
                limit: 1,
                offset: 0,
            })
            .await
            .unwrap();
        let family = store
            .find_refresh(&hash_secret(&f.refresh_token))
            .await
            .unwrap()
            .unwrap();
        let family = store.find_family(&family.family_id).await.unwrap().unwrap();
        let user = store
            .find_user_by_email(&f.user_email)
            .await
            .unwrap()
            .unwrap();
        Snapshot {
            keys: store
                .list_api_keys(&f.account)
                .await
                .unwrap()
                .into_iter()
                .map(|k| (k.id.into(), k.revoked_at.is_none()))
                .collect(),
            tokens: store
                .list_tokens(&f.account, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|t| (t.jti.into(), t.revoked_at.is_none()))
                .collect(),
            apps: store
                .list_apps(&f.account)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.client_id.into())
                .collect(),
            grants: store
                .list_account_grants(&f.account)
                .await
                .unwrap()
                .into_iter()
                .map(|g| (g.id.into(), g.revoked_at.is_none()))
                .collect(),
            records: records.into_iter().map(|r| r.doc).collect(),
            fields: store
                .find_account_vault(&f.account)
                .await
                .unwrap()
                .map(|v| v.sensitive_fields.to_json()),
            audit_events,
            probe_owner: store
                .find_owner_by_email(PROBE_EMAIL)
                .await
                .unwrap()
                .is_some(),
            probe_user: store
                .find_user_by_email(PROBE_EMAIL)
                .await
                .unwrap()
                .is_some(),
            key_works: app.whoami_status(&f.key).await,
            jwt_works: app.whoami_status(&f.jwt).await,
            session_works: app.whoami_status(&f.access_token).await,
            family_live: family.revoked_at.is_none(),
            owner_signed_in: f.owner.signed_in().await,
            user_logged_in: f.user.get("/auth/grants").await.status() == StatusCode::OK,
            user_password_hash: user.password_hash,
        }
    }
}

/// Reads an error answer in the format of `face` and checks that it names `field`; returns the
/// message.
pub async fn expect_named(
    response: Response,
    face: Face,
    status: u16,
    field: &str,
    what: &str,
) -> String {
    assert_eq!(response.status().as_u16(), status, "{what}: status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let message = match face {
        Face::Api | Face::OAuth => {
            assert!(
                content_type.starts_with("application/json"),
                "{what}: content type {content_type}: {text}"
            );
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
            let (code, message) = if face == Face::Api {
                ("error", "message")
            } else {
                ("error", "error_description")
            };
            assert!(
                body[code].as_str().is_some_and(|c| !c.is_empty()),
                "{what}: no `{code}` in {body}"
            );
            if face == Face::OAuth && status == 400 {
                assert_eq!(body["error"], "invalid_request", "{what}: {body}");
            }
            body[message]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no `{message}` in {body}"))
                .to_owned()
        }
        Face::Dashboard | Face::UserPage => {
            assert!(
                content_type.starts_with("text/html"),
                "{what}: content type {content_type}: {text}"
            );
            html_text(&text)
        }
    };
    assert!(
        message.contains(&format!("`{field}`")),
        "{what}: the answer does not name `{field}`: {message}"
    );
    message
}

/// The text of an HTML page with its character references undone (enough for error pages), and
/// its `<code>` elements written back as the backticks of the message they came from.
pub fn html_text(html: &str) -> String {
    html.replace("<code>", "`")
        .replace("</code>", "`")
        .replace("&#96;", "`")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
