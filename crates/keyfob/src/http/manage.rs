//! The management API: what the dashboard does with the account's API keys (their settings and
//! usage, never a key), minted tokens, applications, users and grants, as JSON, for a caller
//! holding `keys.*`, `tokens.*`, `apps.*`, `users.*` or `grants.*`. Those are reserved resources: a
//! wildcard never grants them, so an owner hands them to a key deliberately, by name (a full-access
//! key holds them all). No route here makes an API key: keys are made on the dashboard or at the
//! command line only.
//!
//! Every change goes through the same service as the dashboard's form ([`crate::services`]), which
//! checks it by the same rules, brings this node up to date and records the audit event, with the
//! calling key (or token) as its actor. Only the caller's account is seen: another account's ids
//! are not found.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyfob_domain::Action;
use keyfob_domain::key_policy::parse_span;
use keyfob_domain::time::Timestamp;
use keyfob_domain::token_list::{TokenQuery, TokenStatus};
use keyfob_store::{
    AccountId, ApiKeyRow, AppRow, ClientId, GrantId, GrantRow, Jti, KeyId, TokenFilter, TokenRow,
    UsageCounts, UsageVia, UserId, UserRow,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JsonBody, QueryPairs};
use super::openapi::Unavailable;
use crate::audit::Actor;
use crate::auth::Auth;
use crate::auth::usage::day_of;
use crate::services::apps::AppChanges;
use crate::services::{self, Caller, ServiceError, Site};
use crate::state::AppState;
use crate::web::ClientIp;

/// Days of usage `GET /api/keys/{id}/usage` gives when not asked: as on the key's dashboard page.
pub const DEFAULT_USAGE_DAYS: i64 = 30;
/// The most days of usage it gives.
pub const MAX_USAGE_DAYS: i64 = 90;

/// Every route of the management API, with its operation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys))
        .routes(routes!(key_usage))
        .routes(routes!(revoke_key_tokens))
        .routes(routes!(list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(list_apps, create_app))
        .routes(routes!(show_app, update_app, delete_app))
        .routes(routes!(rotate_app_secret))
        .routes(routes!(disable_app))
        .routes(routes!(enable_app))
        .routes(routes!(list_users))
        .routes(routes!(show_user))
        .routes(routes!(remove_user))
        .routes(routes!(list_grants))
        .routes(routes!(revoke_grant))
}

/// A service's refusal as the API answers it: bad input a 400 with `code`, nothing of the
/// caller's account by that id a 404.
fn refused(err: ServiceError, code: &'static str) -> ApiError {
    match err {
        ServiceError::Invalid(message) => ApiError::bad_request(code, message),
        ServiceError::NotFound(message) => ApiError::NotFound(message),
        ServiceError::Store(err) => err.into(),
        ServiceError::Internal(err) => ApiError::Internal(err),
    }
}

/// The caller as the audit log names it, and where from.
fn caller<'a>(auth: &Auth, ip: &'a str) -> Caller<'a> {
    Caller::new(Actor::of(&auth.0), ip)
}

fn rfc3339(at: Timestamp) -> String {
    at.rfc3339()
}

/// What `DELETE` and the action routes answer: the change is made.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Done {
    /// Always `true`.
    pub ok: bool,
}

const DONE: Done = Done { ok: true };

// ---------------------------------------------------------------------------------------------
// API keys: settings and usage, never a key.

/// An API key's settings and state; never the key nor its hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// `kf_` and the key's first characters, to recognise it.
    pub prefix: String,
    /// RFC 3339.
    pub created: String,
    /// When the key itself was last used (RFC 3339; written in batches, so up to a few seconds
    /// late).
    pub last_used: Option<String>,
    /// The client address of that use.
    pub last_used_ip: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub state: String,
    /// What the key may do; `null` for full access to the account.
    pub permissions: Option<Vec<String>>,
    /// When the key (and every token it minted) stops working (RFC 3339).
    pub expires: Option<String>,
    /// E.g. `600/min`.
    pub rate_limit: Option<String>,
    /// The key this one replaced when that one was rolled.
    pub rolled_from: Option<String>,
}

impl KeyView {
    fn new(row: ApiKeyRow, now: Timestamp) -> KeyView {
        let state = if row.revoked_at.is_some() {
            "revoked"
        } else if row.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        KeyView {
            permissions: row.permissions.as_ref().map(|p| p.names()),
            rate_limit: row.rate_limit().map(|r| r.to_string()),
            id: row.id.to_string(),
            name: row.name,
            prefix: row.prefix,
            created: rfc3339(row.created_at),
            last_used: row.last_used_at.map(rfc3339),
            last_used_ip: row.last_used_ip,
            state: state.into(),
            expires: row.expires_at.map(rfc3339),
            rolled_from: row.rolled_from.map(String::from),
        }
    }
}

/// The account's API keys, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub docs: Vec<KeyView>,
}

/// List the account's API keys (never a key: keys are made on the dashboard or the command line).
#[utoipa::path(
    get,
    path = "/api/keys",
    operation_id = "list_keys",
    tag = "management",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account's keys, revoked and expired ones included", body = KeyList),
        (status = 403, description = "Needs `keys.read`", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id))]
pub async fn list_keys(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<KeyList>> {
    auth.require("keys", Action::Read)?;
    let now = Timestamp::now();
    let rows = state.store.list_api_keys(&auth.0.account_id).await?;
    Ok(Json(KeyList {
        docs: rows.into_iter().map(|row| KeyView::new(row, now)).collect(),
    }))
}

/// Requests counted on one day, by outcome.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageCountsView {
    /// Answered with a 1xx, 2xx or 3xx.
    pub ok: i64,
    /// Answered with a 4xx other than 429.
    pub client_errors: i64,
    /// Refused by the key's rate limit (429).
    pub limited: i64,
    /// Answered with a 5xx.
    pub server_errors: i64,
}

impl UsageCountsView {
    fn add(&mut self, counts: &UsageCounts) {
        self.ok += counts.ok;
        self.client_errors += counts.client_errors;
        self.limited += counts.limited;
        self.server_errors += counts.server_errors;
    }
}

/// One UTC day of a key's use.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageDay {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// Requests made with the key itself.
    pub key: UsageCountsView,
    /// Requests made with tokens the key minted.
    pub token: UsageCountsView,
}

/// A key's use, one entry per day, oldest first, today last (days without use are zeros).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyUsage {
    pub key_id: String,
    pub days: Vec<UsageDay>,
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01.
fn day_label(day: i64) -> String {
    Timestamp::from_unix_ms(day * 86_400_000)
        .to_date_time()
        .format(time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

/// Reads `days=N` (1 to [`MAX_USAGE_DAYS`]); no other parameter.
fn usage_days(pairs: &[(String, String)]) -> ApiResult<i64> {
    let mut days = None;
    for (name, value) in pairs {
        if name != "days" {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "unknown query parameter `{}`: use `days`",
                    name.chars().take(80).collect::<String>()
                ),
            ));
        }
        if days.is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`days` is given more than once",
            ));
        }
        days = Some(
            value
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_USAGE_DAYS).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("`days` must be a whole number from 1 to {MAX_USAGE_DAYS}"),
                    )
                })?,
        );
    }
    Ok(days.unwrap_or(DEFAULT_USAGE_DAYS))
}

/// One key's requests per day: with the key itself and with the tokens it minted, by outcome.
#[utoipa::path(
    get,
    path = "/api/keys/{id}/usage",
    operation_id = "key_usage",
    tag = "management",
    params(
        ("id" = String, Path, description = "The key's id"),
        ("days" = Option<u32>, Query, description = "How many days back, today included: 1 to 90, default 30"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One entry per day, oldest first", body = KeyUsage),
        (status = 400, description = "Bad `days`", body = ErrorBody),
        (status = 403, description = "Needs `keys.read`", body = ErrorBody),
        (status = 404, description = "The account has no key with this id", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, key_id = %id))]
pub async fn key_usage(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<KeyId>,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Json<KeyUsage>> {
    auth.require("keys", Action::Read)?;
    let days = usage_days(&pairs)?;
    let account_id = &auth.0.account_id;
    state
        .store
        .find_api_key(&id)
        .await?
        .filter(|row| row.account_id == *account_id)
        .ok_or_else(|| ApiError::NotFound(format!("no API key {id} in this account")))?;
    let today = day_of(Timestamp::now());
    let first = today - days + 1;
    let rows = state.store.key_usage(account_id, Some(&id), first).await?;
    let mut out: Vec<UsageDay> = (first..=today)
        .map(|day| UsageDay {
            day: day_label(day),
            key: UsageCountsView::default(),
            token: UsageCountsView::default(),
        })
        .collect();
    for row in rows {
        let Some(day) = usize::try_from(row.day - first)
            .ok()
            .and_then(|i| out.get_mut(i))
        else {
            continue;
        };
        match row.via {
            UsageVia::Key => day.key.add(&row.counts),
            UsageVia::Token => day.token.add(&row.counts),
        }
    }
    Ok(Json(KeyUsage {
        key_id: id.to_string(),
        days: out,
    }))
}

/// Revoke every token a live key of the account has minted so far; the key stays live, and tokens
/// it mints afterwards work.
#[utoipa::path(
    post,
    path = "/api/keys/{id}/revoke-tokens",
    operation_id = "revoke_key_tokens",
    tag = "management",
    params(("id" = String, Path, description = "The key's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every token the key minted so far is refused from now on", body = Done),
        (status = 403, description = "Needs `tokens.write`", body = ErrorBody),
        (status = 404, description = "The account has no live key with this id", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, key_id = %id))]
pub async fn revoke_key_tokens(
    State(state): State<AppState>,
    auth: Auth,
    ClientIp(ip): ClientIp,
    Path(id): Path<KeyId>,
) -> ApiResult<Json<Done>> {
    auth.require("tokens", Action::Write)?;
    services::tokens::revoke_all_of_key(&state, &auth.0.account_id, &caller(&auth, &ip), &id)
        .await
        .map_err(|err| refused(err, "invalid_request"))?;
    Ok(Json(DONE))
}

// ---------------------------------------------------------------------------------------------
// Minted tokens.

/// A token minted for the account (never the token itself).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub jti: String,
    /// The name given at minting.
    pub name: Option<String>,
    /// The metadata given at minting.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub permissions: Vec<String>,
    /// The API key that minted it; `null` for an application's own token (`client_credentials`),
    /// whose `client_id` is the subject.
    pub key_id: Option<String>,
    pub subject: String,
    /// RFC 3339.
    pub issued: String,
    pub expires: String,
    pub revoked: Option<String>,
    /// `live`, `revoked` or `expired`.
    pub status: String,
}

impl TokenView {
    fn new(row: TokenRow, now: Timestamp) -> TokenView {
        let status = if row.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if row.expires_at <= now {
            TokenStatus::Expired
        } else {
            TokenStatus::Live
        };
        TokenView {
            permissions: row.permissions.names(),
            jti: row.jti.into(),
            name: row.name,
            metadata: row.metadata.map(|m| m.0),
            key_id: row.api_key_id.map(String::from),
            subject: row.subject,
            issued: rfc3339(row.issued_at),
            expires: rfc3339(row.expires_at),
            revoked: row.revoked_at.map(rfc3339),
            status: status.as_str().into(),
        }
    }
}

/// A page of tokens, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenPage {
    pub docs: Vec<TokenView>,
    /// How many match in all.
    pub total: u64,
    pub page: u32,
    pub limit: u32,
}

/// List the tokens minted for the account, filtered as on the dashboard's tokens page.
#[utoipa::path(
    get,
    path = "/api/tokens",
    operation_id = "list_tokens",
    tag = "management",
    params(
        ("key" = Option<String>, Query, description = "Only tokens minted by this API key (its id)"),
        ("permission" = Option<String>, Query, description = "Only tokens carrying exactly this permission"),
        ("status" = Option<String>, Query, description = "`live`, `revoked` or `expired`"),
        ("q" = Option<String>, Query, description = "Only tokens whose name or metadata contains this text"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 50"),
        ("page" = Option<u32>, Query, description = "From 1"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of tokens, newest first", body = TokenPage),
        (status = 400, description = "Bad query; the message names the parameter", body = ErrorBody),
        (status = 403, description = "Needs `tokens.read`", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id))]
pub async fn list_tokens(
    State(state): State<AppState>,
    auth: Auth,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Json<TokenPage>> {
    auth.require("tokens", Action::Read)?;
    let query = TokenQuery::from_pairs(&pairs)
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let account_id = &auth.0.account_id;
    if let Some(id) = &query.key
        && state
            .store
            .find_api_key(id)
            .await?
            .is_none_or(|key| key.account_id != *account_id)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`key` names no API key of this account",
        ));
    }
    let now = Timestamp::now();
    let permission = query.permission.as_ref().map(ToString::to_string);
    let (rows, total) = state
        .store
        .list_tokens_page(&TokenFilter {
            account_id,
            api_key_id: query.key.as_ref(),
            permission: permission.as_deref(),
            status: query.status,
            text: query.text.as_deref(),
            now,
            limit: query.limit,
            offset: query.offset(),
        })
        .await?;
    Ok(Json(TokenPage {
        docs: rows
            .into_iter()
            .map(|row| TokenView::new(row, now))
            .collect(),
        total,
        page: query.page,
        limit: query.limit,
    }))
}

/// Revoke one live token of the account.
#[utoipa::path(
    delete,
    path = "/api/tokens/{jti}",
    operation_id = "revoke_token",
    tag = "management",
    params(("jti" = String, Path, description = "The token's id (its `jti` claim)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token is refused from now on", body = Done),
        (status = 403, description = "Needs `tokens.write`", body = ErrorBody),
        (status = 404, description = "The account has no live token with this id", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, jti = %jti))]
pub async fn revoke_token(
    State(state): State<AppState>,
    auth: Auth,
    ClientIp(ip): ClientIp,
    Path(jti): Path<Jti>,
) -> ApiResult<Json<Done>> {
    auth.require("tokens", Action::Write)?;
    services::tokens::revoke(&state, &auth.0.account_id, &caller(&auth, &ip), &jti)
        .await
        .map_err(|err| refused(err, "invalid_request"))?;
    Ok(Json(DONE))
}

// ---------------------------------------------------------------------------------------------
// Applications.

/// An application's settings; never its secret nor the secret's hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppView {
    pub client_id: String,
    pub name: String,
    /// A public app (single-page or mobile) has no secret and must use PKCE.
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Browser origins allowed by CORS.
    pub origins: Vec<String>,
    /// The most permissions the app may ask a user for.
    pub max_permissions: Vec<String>,
    /// A session ends when its refresh token goes unused this long; `null`: never.
    pub refresh_idle_secs: Option<i64>,
    /// A session ends this long after login; `null`: never.
    pub refresh_max_age_secs: Option<i64>,
    /// May receive tokens in the URL fragment.
    pub allow_fragment: bool,
    /// The logo the consent page shows.
    pub logo_uri: Option<String>,
    /// The home page the consent page links to.
    pub homepage_uri: Option<String>,
    /// The privacy policy the consent page links to.
    pub policy_uri: Option<String>,
    /// RFC 3339.
    pub created: String,
    /// Refused everywhere until enabled.
    pub disabled: bool,
    /// Until when the secret a rotation replaced still works (RFC 3339).
    pub previous_secret_until: Option<String>,
}

impl From<AppRow> for AppView {
    fn from(row: AppRow) -> Self {
        AppView {
            max_permissions: row.max_permissions.names(),
            client_id: row.client_id.into(),
            name: row.name,
            public: row.public,
            redirect_uris: row.redirect_uris.into_vec(),
            post_logout_redirect_uris: row.post_logout_redirect_uris.into_vec(),
            origins: row.origins.into_vec(),
            refresh_idle_secs: row.refresh_idle_secs,
            refresh_max_age_secs: row.refresh_absolute_secs,
            allow_fragment: row.allow_fragment,
            logo_uri: row.links.logo_uri,
            homepage_uri: row.links.homepage_uri,
            policy_uri: row.links.policy_uri,
            created: rfc3339(row.created_at),
            disabled: row.revoked_at.is_some(),
            previous_secret_until: row
                .previous_secret_expires_at
                .filter(|until| *until > Timestamp::now())
                .map(rfc3339),
        }
    }
}

/// The account's applications.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppList {
    pub docs: Vec<AppView>,
}

const NO_SUCH_APP: &str = "The account has no application with this client id";

/// List the account's applications.
#[utoipa::path(
    get,
    path = "/api/apps",
    operation_id = "list_apps",
    tag = "management",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account's applications", body = AppList),
        (status = 403, description = "Needs `apps.read`", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id))]
pub async fn list_apps(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<AppList>> {
    auth.require("apps", Action::Read)?;
    let rows = state.store.list_apps(&auth.0.account_id).await?;
    Ok(Json(AppList {
        docs: rows.into_iter().map(AppView::from).collect(),
    }))
}

/// An application to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAppBody {
    /// Read after the permission is checked, so a caller without it learns nothing from the body.
    #[serde(default)]
    pub name: Option<String>,
    /// Exact redirect URIs: at least one.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Browser origins allowed to call Keyfob (CORS).
    #[serde(default)]
    pub origins: Vec<String>,
    /// A public app (single-page or mobile): no secret, PKCE required. Default `false`.
    #[serde(default)]
    pub public: bool,
    /// E.g. `["deals.read", "deals.write"]`; never a reserved permission.
    #[serde(default)]
    pub max_permissions: Vec<String>,
    /// Seconds from 1 to ten years; absent or `null`: no idle limit.
    #[serde(default)]
    pub refresh_idle_secs: Option<i64>,
    /// Seconds from 1 to ten years; absent or `null`: no maximum session age.
    #[serde(default)]
    pub refresh_max_age_secs: Option<i64>,
    /// Whether it may receive tokens in the URL fragment. Default `false`.
    #[serde(default)]
    pub allow_fragment: bool,
}

/// A registered application and, for a confidential one, its secret, shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedAppView {
    #[serde(flatten)]
    pub app: AppView,
    /// The client secret (`kfs_…`) of a confidential app; only its hash is kept.
    pub client_secret: Option<String>,
}

/// Register an application (the dashboard's rules: exact redirect URIs, no reserved permission).
#[utoipa::path(
    post,
    path = "/api/apps",
    operation_id = "create_app",
    tag = "management",
    request_body = NewAppBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered; the secret is shown this once", body = CreatedAppView),
        (status = 400, description = "A setting breaks a rule; the message names it", body = ErrorBody),
        (status = 403, description = "Needs `apps.write`", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id))]
pub async fn create_app(
    State(state): State<AppState>,
    auth: Auth,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<NewAppBody>,
) -> ApiResult<(StatusCode, Json<CreatedAppView>)> {
    auth.require("apps", Action::Write)?;
    let name = body
        .name
        .ok_or_else(|| ApiError::bad_request("invalid_app", "`name` is required"))?;
    let new = services::apps::NewApp {
        name,
        redirect_uris: body.redirect_uris,
        post_logout_redirect_uris: body.post_logout_redirect_uris,
        origins: body.origins,
        public: body.public,
        max_permissions: body.max_permissions.join(","),
        refresh_idle_secs: body.refresh_idle_secs,
        refresh_max_age_secs: body.refresh_max_age_secs,
        allow_fragment: body.allow_fragment,
    };
    let by = caller(&auth, &ip);
    let created = services::apps::register(Site::Node(&state), &auth.0.account_id, new, &by)
        .await
        .map_err(|err| refused(err, "invalid_app"))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedAppView {
            app: created.app.into(),
            client_secret: created.client_secret,
        }),
    ))
}

/// One of the account's applications.
#[utoipa::path(
    get,
    path = "/api/apps/{client_id}",
    operation_id = "show_app",
    tag = "management",
    params(("client_id" = String, Path, description = "The application's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The application", body = AppView),
        (status = 403, description = "Needs `apps.read`", body = ErrorBody),
        (status = 404, description = NO_SUCH_APP, body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, client_id = %client_id))]
pub async fn show_app(
    State(state): State<AppState>,
    auth: Auth,
    Path(client_id): Path<ClientId>,
) -> ApiResult<Json<AppView>> {
    auth.require("apps", Action::Read)?;
    let app = services::apps::find(state.store.as_ref(), Some(&auth.0.account_id), &client_id)
        .await
        .map_err(|err| refused(err, "invalid_app"))?;
    Ok(Json(app.into()))
}

/// `Some(value)` for a field present, `null` included; with `#[serde(default)]`, `None` for a
/// field absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The settings to change (a JSON merge patch: a field left out stays as it is; a list given
/// replaces the whole list).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
    pub origins: Option<Vec<String>>,
    /// E.g. `["deals.read", "deals.write"]`; never a reserved permission.
    pub max_permissions: Option<Vec<String>>,
    /// Seconds from 1 to ten years; `null`: no idle limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub refresh_idle_secs: Option<Option<i64>>,
    /// Seconds from 1 to ten years; `null`: no maximum session age.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub refresh_max_age_secs: Option<Option<i64>>,
    pub allow_fragment: Option<bool>,
}

/// Change an application's settings, by the rules of registration: nothing changes when one is
/// broken.
#[utoipa::path(
    patch,
    path = "/api/apps/{client_id}",
    operation_id = "update_app",
    tag = "management",
    params(("client_id" = String, Path, description = "The application's client id")),
    request_body = AppPatch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The application as it is now", body = AppView),
        (status = 400, description = "A setting breaks a rule; the message names it", body = ErrorBody),
        (status = 403, description = "Needs `apps.write`", body = ErrorBody),
        (status = 404, description = NO_SUCH_APP, body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, client_id = %client_id))]
pub async fn update_app(
    State(state): State<AppState>,
    auth: Auth,
    ClientIp(ip): ClientIp,
    Path(client_id): Path<ClientId>,
    JsonBody(patch): JsonBody<AppPatch>,
) -> ApiResult<Json<AppView>> {
    auth.require("apps", Action::Write)?;
    let changes = AppChanges {
        name: patch.name,
        redirect_uris: patch.redirect_uris,
        post_logout_redirect_uris: patch.post_logout_redirect_uris,
        origins: patch.origins,
        max_permissions: patch.max_permissions.map(|list| list.join(",")),
        refresh_idle_secs: patch.refresh_idle_secs,
        refresh_max_age_secs: patch.refresh_max_age_secs,
        allow_fragment: patch.allow_fragment,
    };
    let account = Some(&auth.0.account_id);
    let by = caller(&auth, &ip);
    let app = services::apps::update(Site::Node(&state), account, &client_id, changes, &by)
        .await
        .map_err(|err| refused(err, "invalid_app"))?;
    Ok(Json(app.into()))
}

/// How long the old secret keeps working.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// `0s` (refused at once) up to `30d`: e.g. `1h`, `24h`, `7d`. Required (read after the
    /// permission is checked, so a caller without it learns nothing from the body).
    #[serde(default)]
    pub overlap: Option<String>,
}

/// A confidential application's new secret, shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NewSecret {
    pub client_id: String,
    /// The new client secret (`kfs_…`); only its hash is kept.
    pub client_secret: String,
    /// Until when the old secret keeps working (RFC 3339); `null`: it is refused already.
    pub previous_secret_until: Option<String>,
}

/// Give a confidential application a new secret, returned this once; the old one keeps working
/// for the overlap asked.
#[utoipa::path(
    post,
    path = "/api/apps/{client_id}/rotate-secret",
    operation_id = "rotate_app_secret",
    tag = "management",
    params(("client_id" = String, Path, description = "The application's client id")),
    request_body = RotateSecret,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new secret, shown once", body = NewSecret),
        (status = 400, description = "A bad overlap, or a public application (it has no secret)", body = ErrorBody),
        (status = 403, description = "Needs `apps.write`", body = ErrorBody),
        (status = 404, description = NO_SUCH_APP, body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, client_id = %client_id))]
pub async fn rotate_app_secret(
    State(state): State<AppState>,
    auth: Auth,
    ClientIp(ip): ClientIp,
    Path(client_id): Path<ClientId>,
    JsonBody(body): JsonBody<RotateSecret>,
) -> ApiResult<Json<NewSecret>> {
    auth.require("apps", Action::Write)?;
    let overlap = body.overlap.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_overlap",
            "`overlap` is missing: how long the old secret keeps working, e.g. `24h` or `0s`",
        )
    })?;
    let overlap: Duration = parse_span(&overlap).map_err(|e| {
        ApiError::bad_request("invalid_overlap", format!("`overlap` is not valid: {e}"))
    })?;
    let account = Some(&auth.0.account_id);
    let by = caller(&auth, &ip);
    let secret =
        services::apps::rotate_secret(Site::Node(&state), account, &client_id, overlap, &by)
            .await
            .map_err(|err| refused(err, "invalid_overlap"))?;
    Ok(Json(NewSecret {
        client_id: client_id.into(),
        client_secret: secret,
        previous_secret_until: (!overlap.is_zero()).then(|| rfc3339(Timestamp::now() + overlap)),
    }))
}

async fn set_app_disabled(
    state: &AppState,
    auth: &Auth,
    ip: &str,
    client_id: &ClientId,
    disabled: bool,
) -> ApiResult<Json<Done>> {
    auth.require("apps", Action::Write)?;
    let account = Some(&auth.0.account_id);
    services::apps::set_disabled(
        Site::Node(state),
        account,
        client_id,
        disabled,
        &caller(auth, ip),
    )
    .await
    .map_err(|err| refused(err, "invalid_state"))?;
    Ok(Json(DONE))
}

/// Disable an application: refused at authorization and the token endpoint, its sessions ended
/// and their access tokens refused, until enabled.
#[utoipa::path(
    post,
    path = "/api/apps/{client_id}/disable",
    operation_id = "disable_app",
    tag = "management",
    params(("client_id" = String, Path, description = "The application's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The application is disabled", body = Done),
        (status = 400, description = "It is disabled already", body = ErrorBody),
        (status = 403, description = "Needs `apps.write`", body = ErrorBody),
        (status = 404, description = NO_SUCH_APP, body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, client_id = %client_id))]
pub async fn disable_app(
    State(state): State<AppState>,
    auth: Auth,
    ClientIp(ip): ClientIp,
    Path(client_id): Path<ClientId>,
) -> ApiResult<Json<Done>> {
    set_app_disabled(&state, &auth, &ip, &client_id, true).await
}

/// Enable a disabled application again.
#[utoipa::path(
    post,
    path = "/api/apps/{client_id}/enable",
    operation_id = "enable_app",
    tag = "management",
    params(("client_id" = String, Path, description = "The application's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The application is enabled", body = Done),
        (status = 400, description = "It is enabled already", body = ErrorBody),
        (status = 403, description = "Needs `apps.write`", body = ErrorBody),
        (status = 404, description = NO_SUCH_APP, body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, client_id = %client_id))]
pub async fn enable_app(
    State(state): State<AppState>,
    auth: Auth,
    ClientIp(ip): ClientIp,
    Path(client_id): Path<ClientId>,
) -> ApiResult<Json<Done>> {
    set_app_disabled(&state, &auth, &ip, &client_id, false).await
}

/// Delete an application: its sessions end, its grants are revoked, and its client id is never
/// issued again.
#[utoipa::path(
    delete,
    path = "/api/apps/{client_id}",
    operation_id = "delete_app",
    tag = "management",
    params(("client_id" = String, Path, description = "The application's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The application is deleted", body = Done),
        (status = 403, description = "Needs `apps.write`", body = ErrorBody),
        (status = 404, description = NO_SUCH_APP, body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, client_id = %client_id))]
pub async fn delete_app(
    State(state): State<AppState>,
    auth: Auth,
    ClientIp(ip): ClientIp,
    Path(client_id): Path<ClientId>,
) -> ApiResult<Json<Done>> {
    auth.require("apps", Action::Write)?;
    let account = Some(&auth.0.account_id);
    services::apps::delete(Site::Node(&state), account, &client_id, &caller(&auth, &ip))
        .await
        .map_err(|err| refused(err, "invalid_app"))?;
    Ok(Json(DONE))
}

// ---------------------------------------------------------------------------------------------
// Users and grants: only the users with a grant to one of the account's applications, and only
// those grants. Users belong to the whole deployment: an account removes one from itself, never
// disables or deletes one.

/// What a user allowed one of the account's applications.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    pub permissions: Vec<String>,
    /// The identity scopes granted (`openid profile email`), space-separated; empty for none.
    pub identity: String,
    /// RFC 3339.
    pub created: String,
    pub updated: String,
    pub revoked: Option<String>,
}

impl From<GrantRow> for GrantView {
    fn from(row: GrantRow) -> Self {
        GrantView {
            permissions: row.permissions.names(),
            identity: row.identity.to_string(),
            id: row.id.into(),
            user_id: row.user_id.to_string(),
            client_id: row.client_id.to_string(),
            created: rfc3339(row.created_at),
            updated: rfc3339(row.updated_at),
            revoked: row.revoked_at.map(rfc3339),
        }
    }
}

/// An end user with grants to the account's applications; never a password or its hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    /// Whether the user confirmed their address.
    pub email_verified: bool,
    /// Disabled by the operator: no login, no session.
    pub disabled: bool,
    /// RFC 3339.
    pub created: String,
    /// Their grants to the account's applications, revoked ones included.
    pub grants: Vec<GrantView>,
}

impl UserView {
    fn new(user: UserRow, grants: Vec<GrantRow>) -> UserView {
        UserView {
            id: user.id.to_string(),
            email: user.email,
            email_verified: user.email_verified_at.is_some(),
            disabled: user.disabled_at.is_some(),
            created: rfc3339(user.created_at),
            grants: grants.into_iter().map(GrantView::from).collect(),
        }
    }
}

/// The users with a grant to the account's applications.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub docs: Vec<UserView>,
}

/// The account's grants by user, in the order of their first grant.
async fn users_of(
    state: &AppState,
    account_id: &AccountId,
    only: Option<&UserId>,
) -> ApiResult<Vec<UserView>> {
    let grants = state.store.list_account_grants(account_id).await?;
    let mut order: Vec<UserId> = Vec::new();
    let mut by_user: HashMap<UserId, Vec<GrantRow>> = HashMap::new();
    for grant in grants {
        if only.is_some_and(|id| *id != grant.user_id) {
            continue;
        }
        if !by_user.contains_key(&grant.user_id) {
            order.push(grant.user_id.clone());
        }
        by_user
            .entry(grant.user_id.clone())
            .or_default()
            .push(grant);
    }
    let mut users = Vec::with_capacity(order.len());
    for id in order {
        if let Some(user) = state.store.find_user(&id).await? {
            users.push(UserView::new(user, by_user.remove(&id).unwrap_or_default()));
        }
    }
    Ok(users)
}

/// List the users with a grant (live or revoked) to the account's applications.
#[utoipa::path(
    get,
    path = "/api/users",
    operation_id = "list_users",
    tag = "management",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The users, each with their grants to the account's applications", body = UserList),
        (status = 403, description = "Needs `users.read`", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id))]
pub async fn list_users(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<UserList>> {
    auth.require("users", Action::Read)?;
    Ok(Json(UserList {
        docs: users_of(&state, &auth.0.account_id, None).await?,
    }))
}

const NO_SUCH_USER: &str = "No user with this id has a grant to the account's applications";

/// One user with a grant to the account's applications.
#[utoipa::path(
    get,
    path = "/api/users/{user_id}",
    operation_id = "show_user",
    tag = "management",
    params(("user_id" = String, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user and their grants to the account's applications", body = UserView),
        (status = 403, description = "Needs `users.read`", body = ErrorBody),
        (status = 404, description = NO_SUCH_USER, body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, user_id = %user_id))]
pub async fn show_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(user_id): Path<UserId>,
) -> ApiResult<Json<UserView>> {
    auth.require("users", Action::Read)?;
    users_of(&state, &auth.0.account_id, Some(&user_id))
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(NO_SUCH_USER.to_lowercase()))
}

/// How many grants a removal revoked.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Removed {
    pub grants_revoked: u64,
}

/// Remove a user from the account: every live grant of theirs to the account's applications is
/// revoked and the sessions under them end; other accounts' grants are left alone.
#[utoipa::path(
    post,
    path = "/api/users/{user_id}/remove",
    operation_id = "remove_user",
    tag = "management",
    params(("user_id" = String, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user's grants here are revoked", body = Removed),
        (status = 403, description = "Needs `users.write`", body = ErrorBody),
        (status = 404, description = "No user with this id has a live grant to the account's applications", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, user_id = %user_id))]
pub async fn remove_user(
    State(state): State<AppState>,
    auth: Auth,
    ClientIp(ip): ClientIp,
    Path(user_id): Path<UserId>,
) -> ApiResult<Json<Removed>> {
    auth.require("users", Action::Write)?;
    let by = caller(&auth, &ip);
    let revoked = services::users::remove_from_account(&state, &auth.0.account_id, &user_id, &by)
        .await
        .map_err(|err| refused(err, "invalid_request"))?;
    Ok(Json(Removed {
        grants_revoked: revoked,
    }))
}

/// The grants to the account's applications.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantList {
    pub docs: Vec<GrantView>,
}

/// List the grants (live and revoked) to the account's applications.
#[utoipa::path(
    get,
    path = "/api/grants",
    operation_id = "list_grants",
    tag = "management",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The grants", body = GrantList),
        (status = 403, description = "Needs `grants.read`", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id))]
pub async fn list_grants(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<GrantList>> {
    auth.require("grants", Action::Read)?;
    let rows = state.store.list_account_grants(&auth.0.account_id).await?;
    Ok(Json(GrantList {
        docs: rows.into_iter().map(GrantView::from).collect(),
    }))
}

/// Revoke a live grant to one of the account's applications; the sessions it started end.
#[utoipa::path(
    delete,
    path = "/api/grants/{id}",
    operation_id = "revoke_grant",
    tag = "management",
    params(("id" = String, Path, description = "The grant's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The grant is revoked", body = Done),
        (status = 403, description = "Needs `grants.write`", body = ErrorBody),
        (status = 404, description = "The account's applications have no live grant with this id", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(account = %auth.0.account_id, grant_id = %id))]
pub async fn revoke_grant(
    State(state): State<AppState>,
    auth: Auth,
    ClientIp(ip): ClientIp,
    Path(id): Path<GrantId>,
) -> ApiResult<Json<Done>> {
    auth.require("grants", Action::Write)?;
    let account_id = auth.0.account_id.clone();
    let theirs = |g: &GrantRow| g.account_id == account_id;
    services::grants::revoke_by_id(&state, &id, theirs, &caller(&auth, &ip))
        .await
        .map_err(|err| refused(err, "invalid_request"))?;
    Ok(Json(DONE))
}
