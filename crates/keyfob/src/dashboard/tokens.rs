//! The JWTs minted for the account: listed a page at a time and filtered by the key that minted
//! them, a permission and their state, so that no token can hide behind others; revoked one by one
//! or all of one key's at once.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::time::Timestamp;
use keyfob_domain::token_list::{TokenQuery, TokenStatus};
use keyfob_store::{ApiKeyRow, Jti, KeyId, TokenFilter, TokenRow};
use serde::Deserialize;

use super::once;
use super::page::{Layout, PageError, PageForm, TimeView, page_links, render, render_with_status};
use crate::audit::Actor;
use crate::auth::usage::day_of;
use crate::http::extract::QueryPairs;
use crate::services::{self, Caller};
use crate::state::AppState;
use crate::web::filters;
use crate::web::{ClientIp, CsrfForm, OwnerLogin};

const TOKEN_REVOKED: &str = "token-revoked";
const KEY_TOKENS_REVOKED: &str = "key-tokens-revoked";

#[derive(Template)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    layout: Layout,
    tokens: Vec<TokenView>,
    notice: Option<&'static str>,
    error: Option<String>,
    /// The account's keys, for the filter.
    keys: Vec<KeyChoice>,
    /// The filters as typed, to show them again.
    key: String,
    permission: String,
    status: String,
    q: String,
    /// The key filtered on, when it is live: the page offers to revoke all its tokens.
    revocable_key: Option<KeyChoice>,
    page: u32,
    pages: u64,
    total: u64,
    prev_query: Option<String>,
    next_query: Option<String>,
}

#[derive(Clone)]
pub struct KeyChoice {
    id: String,
    label: String,
}

pub struct TokenView {
    jti: String,
    /// The name and metadata given at minting.
    name: Option<String>,
    metadata: Option<String>,
    permissions: String,
    /// The API key that minted it, by name and prefix, or the application that got it for itself
    /// (`client_credentials`), by `client_id`.
    minted_by: Option<String>,
    issued: TimeView,
    expires: TimeView,
    revoked: Option<TimeView>,
    expired: bool,
    last_used: Option<TimeView>,
    /// Requests over the last [`SPARK_DAYS`] days, and the SVG drawing them.
    recent: i64,
    sparkline: String,
}

/// Days of usage in each row's sparkline.
const SPARK_DAYS: i64 = 14;

impl TokenView {
    fn new(
        row: TokenRow,
        key_names: &HashMap<KeyId, String>,
        now: Timestamp,
        daily: &[i64],
    ) -> TokenView {
        let permissions = row.permissions.names().join(", ");
        TokenView {
            last_used: row.last_used_at.map(TimeView::from),
            recent: daily.iter().sum(),
            sparkline: super::charts::sparkline(
                daily,
                &format!("Requests per day, token {}", row.jti),
            ),
            minted_by: match &row.api_key_id {
                Some(id) => key_names.get(id).cloned(),
                None => Some(format!("application {}", row.subject)),
            },
            jti: row.jti.into(),
            name: row.name,
            metadata: row
                .metadata
                .map(|m| serde_json::Value::Object(m.0).to_string()),
            permissions,
            issued: TimeView::from(row.issued_at),
            expires: TimeView::from(row.expires_at),
            revoked: row.revoked_at.map(TimeView::from),
            expired: row.expires_at <= now,
        }
    }
}

fn key_label(key: &ApiKeyRow) -> String {
    let state = if key.revoked_at.is_some() {
        " — revoked"
    } else {
        ""
    };
    format!("{} ({}…){state}", key.name, key.prefix)
}

fn value_of(pairs: &[(String, String)], name: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().chars().take(128).collect())
        .unwrap_or_default()
}

/// `GET /dashboard/tokens?key=…&permission=…&status=live|revoked|expired&q=…&page=N`.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn list(
    login: OwnerLogin,
    State(state): State<AppState>,
    QueryPairs(mut pairs): QueryPairs,
) -> Result<Response, PageError> {
    // `done` only says which notice to show after a form; it is no filter.
    let done = value_of(&pairs, "done");
    pairs.retain(|(k, _)| k != "done");
    let notice = match done.as_str() {
        TOKEN_REVOKED => {
            Some("The token was revoked. Requests that use it are refused from now on.")
        }
        KEY_TOKENS_REVOKED => Some(
            "Every token this key had minted was revoked and is refused from now on. The key \
             itself still works, and so do the tokens it mints from now on.",
        ),
        _ => None,
    };
    let keys = state.store.list_api_keys(login.account_id()).await?;
    let mut view = TokensPage {
        layout: login.layout("tokens"),
        tokens: Vec::new(),
        notice,
        error: None,
        keys: keys
            .iter()
            .map(|k| KeyChoice {
                id: k.id.to_string(),
                label: key_label(k),
            })
            .collect(),
        key: value_of(&pairs, "key"),
        permission: value_of(&pairs, "permission"),
        status: value_of(&pairs, "status"),
        q: value_of(&pairs, "q"),
        revocable_key: None,
        page: 1,
        pages: 0,
        total: 0,
        prev_query: None,
        next_query: None,
    };
    let query = match TokenQuery::from_pairs(&pairs) {
        Ok(query) => query,
        Err(err) => {
            view.error = Some(err.to_string());
            return render_with_status(StatusCode::BAD_REQUEST, &view);
        }
    };
    if let Some(id) = &query.key {
        let Some(key) = keys.iter().find(|k| &k.id == id) else {
            view.error = Some("`key` names no API key of this account".into());
            return render_with_status(StatusCode::BAD_REQUEST, &view);
        };
        if key.revoked_at.is_none() {
            view.revocable_key = Some(KeyChoice {
                id: key.id.to_string(),
                label: key_label(key),
            });
        }
    }
    let now = Timestamp::now();
    let permission = query.permission.as_ref().map(ToString::to_string);
    let (rows, total) = state
        .store
        .list_tokens_page(&TokenFilter {
            account_id: login.account_id(),
            api_key_id: query.key.as_ref(),
            permission: permission.as_deref(),
            status: query.status,
            text: query.text.as_deref(),
            now,
            limit: query.limit,
            offset: query.offset(),
        })
        .await?;
    let key_names: HashMap<KeyId, String> =
        keys.iter().map(|k| (k.id.clone(), key_label(k))).collect();
    let link = |page: u32| {
        serde_urlencoded::to_string([
            ("key", query.key.as_deref().unwrap_or_default()),
            ("permission", permission.as_deref().unwrap_or_default()),
            (
                "status",
                query.status.map(TokenStatus::as_str).unwrap_or_default(),
            ),
            ("limit", &query.limit.to_string()),
            ("page", &page.to_string()),
            ("q", query.text.as_deref().unwrap_or_default()),
        ])
        .ok()
    };
    (view.prev_query, view.next_query) = page_links(query.page, query.limit, total, link);
    view.page = query.page;
    view.total = total;
    view.pages = total.div_ceil(u64::from(query.limit));
    let today = day_of(now);
    let jtis: Vec<Jti> = rows.iter().map(|r| r.jti.clone()).collect();
    let mut daily: HashMap<Jti, Vec<i64>> = HashMap::new();
    for usage in state
        .store
        .token_usage(login.account_id(), &jtis, today - SPARK_DAYS + 1)
        .await?
    {
        let index = usage.day - (today - SPARK_DAYS + 1);
        if let Some(slot) = usize::try_from(index)
            .ok()
            .filter(|i| *i < SPARK_DAYS as usize)
        {
            daily
                .entry(usage.jti)
                .or_insert_with(|| vec![0; SPARK_DAYS as usize])[slot] += usage.counts.total();
        }
    }
    let none = vec![0; SPARK_DAYS as usize];
    view.tokens = rows
        .into_iter()
        .map(|row| {
            let days = daily.get(&row.jti).unwrap_or(&none).clone();
            TokenView::new(row, &key_names, now, &days)
        })
        .collect();
    Ok(render(&view)?.into_response())
}

/// `POST /dashboard/tokens/{jti}/revoke`: only a live token of the login's own account.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), jti = %jti))]
pub async fn revoke(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(jti): Path<Jti>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Redirect, PageError> {
    login.check_csrf(&form.csrf)?;
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    services::tokens::revoke(&state, login.account_id(), &by, &jti)
        .await
        .map_err(|err| {
            PageError::from_service(err, "Your account has no active token with this id.")
        })?;
    Ok(Redirect::to(&format!(
        "/dashboard/tokens?done={TOKEN_REVOKED}"
    )))
}

#[derive(Deserialize)]
pub struct RevokeAllForm {
    #[serde(default)]
    csrf: String,
    /// The ticked confirmation box: `yes`.
    #[serde(default)]
    confirm: String,
}

/// `POST /dashboard/keys/{id}/revoke-tokens`: revokes every token a live key of the login's
/// account has minted so far. The key stays live; tokens it mints afterwards work.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), key_id = %id))]
pub async fn revoke_key_tokens(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(id): Path<KeyId>,
    PageForm(form): PageForm<RevokeAllForm>,
) -> Result<Redirect, PageError> {
    login.check_csrf(&form.csrf)?;
    if form.confirm != "yes" {
        return Err(PageError::BadRequest(
            "Tick “I understand” to confirm that every token of this key should stop working. \
             Nothing was revoked."
                .into(),
        ));
    }
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    services::tokens::revoke_all_of_key(&state, login.account_id(), &by, &id)
        .await
        .map_err(|err| {
            PageError::from_service(err, "Your account has no active API key with this id.")
        })?;
    let query = serde_urlencoded::to_string([("key", id.as_str()), ("done", KEY_TOKENS_REVOKED)])
        .map_err(|e| PageError::Internal(e.into()))?;
    Ok(Redirect::to(&format!("/dashboard/tokens?{query}")))
}

#[derive(Template)]
#[template(path = "mint.html")]
pub struct MintPage {
    layout: Layout,
    /// The account's live keys, by name.
    keys: Vec<KeyChoice>,
    form: MintForm,
    error: Option<String>,
    /// The field the error is about.
    error_field: &'static str,
}

/// The mint form, as typed (kept when it is shown again with an error).
#[derive(Deserialize, Default)]
pub struct MintForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    permissions: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    name: String,
}

async fn mint_page(
    state: &AppState,
    login: &OwnerLogin,
    form: MintForm,
    error: Option<String>,
) -> Result<MintPage, PageError> {
    let now = Timestamp::now();
    let keys = state
        .store
        .list_api_keys(login.account_id())
        .await?
        .into_iter()
        .filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|at| at > now))
        .map(|k| KeyChoice {
            label: key_label(&k),
            id: k.id.into(),
        })
        .collect();
    let error_field = match error.as_deref() {
        Some(m) if m.contains("`permissions`") => "permissions",
        Some(m) if m.contains("`name`") => "name",
        Some(m) if m.contains("expires") || m.contains("expir") => "expires",
        Some(_) => "key",
        None => "",
    };
    Ok(MintPage {
        layout: login.layout("tokens"),
        keys,
        form,
        error,
        error_field,
    })
}

/// `GET /dashboard/tokens/new`: the form that mints a token with one of the account's keys.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn mint_form(
    login: OwnerLogin,
    State(state): State<AppState>,
) -> Result<Response, PageError> {
    let form = MintForm {
        permissions: "deals.read".into(),
        ..MintForm::default()
    };
    Ok(render(&mint_page(&state, &login, form, None).await?)?.into_response())
}

/// `POST /dashboard/tokens/new`: mints the token, and sends the browser to the page that shows
/// it once.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn mint(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    jar: CookieJar,
    PageForm(form): PageForm<MintForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    let spec = services::tokens::MintSpec {
        permissions: &form.permissions,
        expires: &form.expires,
        name: &form.name,
    };
    let key = KeyId::from(form.key.as_str());
    match services::tokens::mint_with_key(&state, login.account_id(), &key, &spec, &by).await {
        Ok(minted) => {
            let page = format!("/dashboard/tokens/{}/minted", minted.jti);
            let label = form.name.trim();
            let label = if label.is_empty() {
                minted.jti.to_string()
            } else {
                label.to_owned()
            };
            let shown = once::Shown::new(page.clone(), label, minted.token);
            Ok((once::keep(&state, &login, jar, &shown), Redirect::to(&page)).into_response())
        }
        Err(services::ServiceError::Invalid(message)) => {
            let page = mint_page(&state, &login, form, Some(message)).await?;
            render_with_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(err) => Err(PageError::from_service(
            err,
            "Your account has no such key.",
        )),
    }
}

#[derive(Template)]
#[template(path = "minted.html")]
pub struct MintedPage {
    layout: Layout,
    jti: String,
    name: String,
    /// `None`: shown once already.
    token: Option<String>,
    expires: TimeView,
    permissions: String,
    public_url: String,
}

/// `GET /dashboard/tokens/{jti}/minted`: the token just minted, shown this once.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), jti = %jti))]
pub async fn minted(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(jti): Path<Jti>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    let row = state
        .store
        .find_token(&jti)
        .await?
        .filter(|row| row.account_id == *login.account_id())
        .ok_or_else(|| PageError::NotFound("Your account has no token with this id.".into()))?;
    let (jar, shown) = once::take(
        &state,
        &login,
        jar,
        &format!("/dashboard/tokens/{jti}/minted"),
    );
    let page = MintedPage {
        layout: login.layout("tokens"),
        jti: jti.to_string(),
        name: row.name.clone().unwrap_or_else(|| jti.to_string()),
        token: shown.map(|s| s.secret),
        expires: TimeView::from(row.expires_at),
        permissions: row.permissions.names().join(", "),
        public_url: state.config.issuer(),
    };
    let policy = [(header::CONTENT_SECURITY_POLICY, super::COPY_CSP)];
    Ok((policy, jar, render(&page)?).into_response())
}
