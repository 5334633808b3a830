//! The account's API keys: list (with what each may do, until when, how much it is used), create
//! (the key is shown once, on the page that answers the form), a page per key with its usage,
//! roll, revoke.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::key_policy::parse_span;
use keyfob_domain::time::Timestamp;
use keyfob_store::{ApiKeyRow, KeyId, UsageCounts, UsageRow, UsageVia};
use serde::Deserialize;

use super::charts;
use super::once;
use super::page::{Layout, PageError, PageForm, TimeView, render, render_with_status};
use crate::audit::Actor;
use crate::auth::usage::day_of;
use crate::services::MAX_NAME_LEN;
use crate::services::keys::KeySpec;
use crate::services::{self, Caller, ServiceError};
use crate::state::AppState;
use crate::web::filters;
use crate::web::{ClientIp, CsrfForm, OwnerLogin};

const NO_SUCH_KEY: &str = "Your account has no active API key with this id.";

const KEY_REVOKED: &str = "key-revoked";

/// Days of usage in each row's sparkline.
const SPARK_DAYS: i64 = 14;
/// Days of usage on a key's own page.
const CHART_DAYS: i64 = 30;
/// What the roll form offers as the old key's overlap.
const OVERLAPS: &[(&str, &str)] = &[
    ("0s", "none: refuse the old key now"),
    ("1h", "1 hour"),
    ("24h", "24 hours"),
    ("7d", "7 days"),
];

#[derive(Template)]
#[template(path = "keys.html")]
pub struct KeysPage {
    layout: Layout,
    keys: Vec<KeyView>,
    notice: Option<&'static str>,
    error: Option<String>,
    /// The field the error is about.
    error_field: &'static str,
    form: CreateKeyForm,
    max_name_len: usize,
    /// Whether revoked and expired keys are left out.
    hide_dead: bool,
    /// How many keys are left out.
    hidden: usize,
    /// This server's public URL, for the first-run commands.
    public_url: String,
}

pub struct KeyView {
    id: String,
    name: String,
    prefix: String,
    created: TimeView,
    last_used: Option<TimeView>,
    last_used_ip: Option<String>,
    revoked: Option<TimeView>,
    /// Past its expiry (and not revoked).
    expired: bool,
    expires: Option<TimeView>,
    /// Its permissions; empty for full access.
    permissions: Vec<String>,
    rate_limit: Option<String>,
    /// Requests over the last [`SPARK_DAYS`] days, and the SVG drawing them.
    recent: i64,
    sparkline: String,
    rolled_from: Option<String>,
}

impl KeyView {
    fn new(row: ApiKeyRow, now: Timestamp, daily: &[i64]) -> Self {
        let expired = row.revoked_at.is_none() && row.expires_at.is_some_and(|at| at <= now);
        KeyView {
            sparkline: charts::sparkline(daily, &format!("Requests per day, {}", row.name)),
            recent: daily.iter().sum(),
            id: row.id.to_string(),
            permissions: row
                .permissions
                .as_ref()
                .map(|p| p.names())
                .unwrap_or_default(),
            rate_limit: row.rate_limit().map(|r| r.to_string()),
            expires: row.expires_at.map(TimeView::from),
            expired,
            name: row.name,
            prefix: row.prefix,
            created: TimeView::from(row.created_at),
            last_used: row.last_used_at.map(TimeView::from),
            last_used_ip: row.last_used_ip,
            revoked: row.revoked_at.map(TimeView::from),
            rolled_from: row.rolled_from.map(String::from),
        }
    }

    fn is_live(&self) -> bool {
        self.revoked.is_none() && !self.expired
    }
}

#[derive(Template)]
#[template(path = "key_created.html")]
pub struct KeyCreatedPage {
    layout: Layout,
    id: String,
    name: String,
    /// `None`: the key was shown already (or the page was opened too late, or elsewhere).
    key: Option<String>,
    /// After a roll: until when the old key works (`None`: it is refused already).
    old_until: Option<TimeView>,
    rolled: bool,
}

/// The create form, as typed (kept when it is shown again with an error).
#[derive(Deserialize, Default)]
pub struct CreateKeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    /// `full` or `restricted`.
    #[serde(default)]
    access: String,
    #[serde(default)]
    perm_all_read: Option<String>,
    #[serde(default)]
    perm_all_write: Option<String>,
    #[serde(default)]
    perm_sensitive_read: Option<String>,
    #[serde(default)]
    perm_audit_read: Option<String>,
    /// More permissions, separated by commas or spaces.
    #[serde(default)]
    permissions: String,
    #[serde(default)]
    expires_in: String,
    #[serde(default)]
    rate_limit: String,
}

impl CreateKeyForm {
    fn restricted(&self) -> bool {
        self.access == "restricted"
    }

    /// The permissions asked for: the boxes ticked and the ones typed.
    fn permission_list(&self) -> String {
        let mut list: Vec<&str> = [
            (&self.perm_all_read, "*.read"),
            (&self.perm_all_write, "*.write"),
            (&self.perm_sensitive_read, "sensitive.read"),
            (&self.perm_audit_read, "audit.read"),
        ]
        .into_iter()
        .filter(|(ticked, _)| ticked.is_some())
        .map(|(_, name)| name)
        .collect();
        list.push(&self.permissions);
        list.join(",")
    }

    fn spec(&self) -> Result<KeySpec, ServiceError> {
        let permissions = match self.access.as_str() {
            "" | "full" => None,
            "restricted" => {
                let list = self.permission_list();
                if list.split(',').all(|p| p.trim().is_empty()) {
                    return Err(ServiceError::Invalid(
                        "A restricted key needs at least one permission: tick one or type some."
                            .into(),
                    ));
                }
                Some(list)
            }
            _ => {
                return Err(ServiceError::Invalid(
                    "Choose full access or restricted.".into(),
                ));
            }
        };
        KeySpec::parse(
            &self.name,
            permissions.as_deref(),
            Some(&self.expires_in),
            Some(&self.rate_limit),
        )
    }
}

/// The field of the key form an error message is about.
fn key_error_field(message: &str) -> &'static str {
    if message.contains("name") {
        "name"
    } else if message.starts_with("expiry") {
        "expires_in"
    } else if message.starts_with("rate limit") {
        "rate_limit"
    } else if message.contains("permission") {
        "permissions"
    } else {
        ""
    }
}

/// Each key's daily totals (all ways in, all outcomes) over the last `days` days, oldest first.
fn daily_totals(rows: &[UsageRow], today: i64, days: i64) -> HashMap<KeyId, Vec<i64>> {
    let mut totals: HashMap<KeyId, Vec<i64>> = HashMap::new();
    for row in rows {
        let index = row.day - (today - days + 1);
        if !(0..days).contains(&index) {
            continue;
        }
        totals
            .entry(row.key_id.clone())
            .or_insert_with(|| vec![0; days as usize])[index as usize] += row.counts.total();
    }
    totals
}

async fn keys_page(
    state: &AppState,
    login: &OwnerLogin,
    notice: Option<&'static str>,
    error: Option<String>,
    form: CreateKeyForm,
    hide_dead: bool,
) -> Result<KeysPage, PageError> {
    let now = Timestamp::now();
    let today = day_of(now);
    let keys = state.store.list_api_keys(login.account_id()).await?;
    let usage = state
        .store
        .key_usage(login.account_id(), None, today - SPARK_DAYS + 1)
        .await?;
    let totals = daily_totals(&usage, today, SPARK_DAYS);
    let none = vec![0; SPARK_DAYS as usize];
    let all: Vec<KeyView> = keys
        .into_iter()
        .map(|row| {
            let daily = totals.get(&row.id).unwrap_or(&none).clone();
            KeyView::new(row, now, &daily)
        })
        .collect();
    let count = all.len();
    let keys: Vec<KeyView> = all
        .into_iter()
        .filter(|key| !hide_dead || key.is_live())
        .collect();
    Ok(KeysPage {
        layout: login.layout("keys"),
        hidden: count - keys.len(),
        keys,
        notice,
        error_field: error.as_deref().map_or("", key_error_field),
        error,
        form,
        max_name_len: MAX_NAME_LEN,
        hide_dead,
        public_url: state.config.issuer(),
    })
}

/// `GET /dashboard/keys[?hide=dead]`.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn list(
    login: OwnerLogin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let query = query.unwrap_or_default();
    let params: Vec<(String, String)> = serde_urlencoded::from_str(&query)
        .map_err(|_| PageError::BadRequest("The address's query string is not readable.".into()))?;
    let has = |k: &str, v: &str| params.iter().any(|(pk, pv)| pk == k && pv == v);
    let notice = has("done", KEY_REVOKED).then_some(
        "The key was revoked, and every token it minted with it. Requests that use them are \
         refused from now on.",
    );
    let form = CreateKeyForm {
        access: "full".into(),
        ..CreateKeyForm::default()
    };
    let page = keys_page(&state, &login, notice, None, form, has("hide", "dead")).await?;
    let policy = [(header::CONTENT_SECURITY_POLICY, super::COPY_CSP)];
    Ok((policy, render(&page)?).into_response())
}

/// `POST /dashboard/keys`: makes a key, and sends the browser to the page that shows it once.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn create(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    jar: CookieJar,
    PageForm(form): PageForm<CreateKeyForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    let created = match form.spec() {
        Ok(spec) => services::keys::create(&state, login.account_id(), &by, &spec).await,
        Err(err) => Err(err),
    };
    match created {
        Ok((row, key)) => {
            let page = format!("/dashboard/keys/{}/created", row.id);
            let shown = once::Shown::new(page.clone(), row.name, key.expose().to_owned());
            Ok((once::keep(&state, &login, jar, &shown), Redirect::to(&page)).into_response())
        }
        Err(ServiceError::Invalid(message)) => {
            let page = keys_page(&state, &login, None, Some(message), form, false).await?;
            render_with_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(err) => Err(PageError::from_service(err, NO_SUCH_KEY)),
    }
}

#[derive(Template)]
#[template(path = "key.html")]
pub struct KeyPage {
    layout: Layout,
    key: KeyView,
    chart: String,
    /// The last [`CHART_DAYS`] days' counts: with the key, with its tokens, in all.
    by_key: UsageCounts,
    by_tokens: UsageCounts,
    overlaps: &'static [(&'static str, &'static str)],
}

/// `GET /dashboard/keys/{id}`: one key of the login's account, its settings and usage.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), key_id = %id))]
pub async fn show(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(id): Path<KeyId>,
) -> Result<Html<String>, PageError> {
    let row = state
        .store
        .find_api_key(&id)
        .await?
        .filter(|row| row.account_id == *login.account_id())
        .ok_or_else(|| PageError::NotFound("Your account has no API key with this id.".into()))?;
    let now = Timestamp::now();
    let today = day_of(now);
    let usage = state
        .store
        .key_usage(login.account_id(), Some(&id), today - CHART_DAYS + 1)
        .await?;
    let (mut by_key, mut by_tokens) = (UsageCounts::default(), UsageCounts::default());
    let mut days = vec![UsageCounts::default(); CHART_DAYS as usize];
    for row in &usage {
        let index = row.day - (today - CHART_DAYS + 1);
        if let Some(day) = usize::try_from(index).ok().and_then(|i| days.get_mut(i)) {
            day.add(&row.counts);
        }
        match row.via {
            UsageVia::Key => by_key.add(&row.counts),
            UsageVia::Token => by_tokens.add(&row.counts),
        }
    }
    let labelled: Vec<(String, UsageCounts)> = days
        .into_iter()
        .enumerate()
        .map(|(i, counts)| {
            let day = today - CHART_DAYS + 1 + i as i64;
            let label = Timestamp::from_unix_ms(day * 86_400_000)
                .to_date_time()
                .format(time::macros::format_description!("[month]-[day]"))
                .unwrap_or_default();
            (label, counts)
        })
        .collect();
    let daily: Vec<i64> = labelled.iter().map(|(_, c)| c.total()).collect();
    let page = KeyPage {
        layout: login.layout("keys"),
        chart: charts::usage_bars(&labelled),
        key: KeyView::new(row, now, &daily),
        by_key,
        by_tokens,
        overlaps: OVERLAPS,
    };
    render(&page)
}

#[derive(Deserialize)]
pub struct RollForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    overlap: String,
}

/// `POST /dashboard/keys/{id}/roll`: a new key in place of a live one of the login's account,
/// shown once; the old one works for the overlap chosen.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), key_id = %id))]
pub async fn roll(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(id): Path<KeyId>,
    jar: CookieJar,
    PageForm(form): PageForm<RollForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let overlap = parse_span(&form.overlap)
        .map_err(|e| PageError::BadRequest(format!("The overlap is not valid: {e}")))?;
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    let (new, key) = services::keys::roll(&state, login.account_id(), &by, &id, overlap)
        .await
        .map_err(|err| PageError::from_service(err, NO_SUCH_KEY))?;
    let old_until = state
        .store
        .find_api_key(&id)
        .await?
        .and_then(|old| old.expires_at)
        .filter(|at| *at > Timestamp::now());
    let page = format!("/dashboard/keys/{}/created", new.id);
    let shown =
        once::Shown::new(page.clone(), new.name, key.expose().to_owned()).replacing(old_until);
    Ok((once::keep(&state, &login, jar, &shown), Redirect::to(&page)).into_response())
}

/// `GET /dashboard/keys/{id}/created`: the key just made (or rolled), shown this once; opened
/// again, the page says it was shown already.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), key_id = %id))]
pub async fn created(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(id): Path<KeyId>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    let row = state
        .store
        .find_api_key(&id)
        .await?
        .filter(|row| row.account_id == *login.account_id())
        .ok_or_else(|| PageError::NotFound("Your account has no API key with this id.".into()))?;
    let (jar, shown) = once::take(
        &state,
        &login,
        jar,
        &format!("/dashboard/keys/{id}/created"),
    );
    let page = KeyCreatedPage {
        layout: login.layout("keys"),
        id: id.to_string(),
        name: row.name,
        rolled: shown.as_ref().is_some_and(|s| s.replaced),
        old_until: shown
            .as_ref()
            .and_then(|s| s.old_until)
            .map(|ms| TimeView::from(Timestamp::from_unix_ms(ms))),
        key: shown.map(|s| s.secret),
    };
    let policy = [(header::CONTENT_SECURITY_POLICY, super::COPY_CSP)];
    Ok((policy, jar, render(&page)?).into_response())
}

/// `POST /dashboard/keys/{id}/revoke`: only a live key of the login's own account.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), key_id = %id))]
pub async fn revoke(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(id): Path<KeyId>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Redirect, PageError> {
    login.check_csrf(&form.csrf)?;
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    services::keys::revoke(&state, login.account_id(), &by, &id)
        .await
        .map_err(|err| PageError::from_service(err, NO_SUCH_KEY))?;
    Ok(Redirect::to(&format!("/dashboard/keys?done={KEY_REVOKED}")))
}
