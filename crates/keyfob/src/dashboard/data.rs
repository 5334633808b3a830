//! The data browser: the account's collections, their records page by page, one record's JSON
//! with sensitive fields masked, and a reveal that asks for the owner's password again and is
//! written to the audit log. Also the account's list of sensitive field names.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_domain::audit::action;
use keyfob_domain::query::{ListQuery, parse_page, valid_resource};
use keyfob_domain::vault::{RevealRequest, SensitiveFields};
use keyfob_store::{RecordId, RecordRow, RecordScope};
use serde::Deserialize;
use serde_json::Value;

use super::page::{Layout, PageError, PageForm, TimeView, render, render_with_status};
use crate::audit::{Actor, AuditEvent, UserAgent};
use crate::logins::LoginKind;
use crate::state::AppState;
use crate::vault::{AccountVault, VaultServiceError};
use crate::web::filters;
use crate::web::{ClientIp, DASHBOARD, OwnerLogin};

const PAGE_SIZE: u32 = 20;
const FIELDS_SAVED: &str = "fields-saved";
const REVEAL_REFUSED: &str = "The password is incorrect. Nothing was revealed.";
const REVEAL_CODE_REFUSED: &str =
    "The code is incorrect or was already used. Nothing was revealed.";

impl From<VaultServiceError> for PageError {
    fn from(err: VaultServiceError) -> Self {
        match err {
            VaultServiceError::Invalid(e) => PageError::BadRequest(e.to_string()),
            VaultServiceError::Store(e) => e.into(),
            VaultServiceError::StaleMasterKey => PageError::Unavailable,
            VaultServiceError::Internal(e) => PageError::Internal(e),
        }
    }
}

#[derive(Template)]
#[template(path = "data.html")]
pub struct CollectionsPage {
    layout: Layout,
    collections: Vec<(String, i64)>,
    fields: String,
    notice: Option<&'static str>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "data_records.html")]
pub struct RecordsPage {
    layout: Layout,
    resource: String,
    records: Vec<RecordView>,
    page: u32,
    total: u64,
    prev: Option<u32>,
    next: Option<u32>,
}

pub struct RecordView {
    id: String,
    created: TimeView,
    /// The document, masked, on one line.
    summary: String,
}

#[derive(Template)]
#[template(path = "data_record.html")]
pub struct RecordPage {
    layout: Layout,
    resource: String,
    id: String,
    created: TimeView,
    updated: TimeView,
    /// The document, masked except what was just revealed, pretty-printed.
    json: String,
    sealed_paths: Vec<String>,
    revealed: Vec<String>,
    error: Option<&'static str>,
    /// The reveal form's field the error is about.
    error_field: &'static str,
    /// Whether the reveal form asks for a second factor's code too (the owner has one).
    ask_code: bool,
}

fn check_resource(resource: &str) -> Result<(), PageError> {
    if valid_resource(resource) {
        Ok(())
    } else {
        Err(PageError::NotFound("There is no such collection.".into()))
    }
}

fn present(
    vault: &AccountVault,
    mut row: RecordRow,
    reveal: &RevealRequest,
) -> (Value, Vec<String>) {
    let revealed = vault.present(&row.id, &mut row.doc, reveal);
    crate::measures::revealed("dashboard", revealed.len());
    (row.doc, revealed)
}

async fn collections_page(
    state: &AppState,
    login: &OwnerLogin,
    notice: Option<&'static str>,
    error: Option<String>,
    fields: Option<String>,
) -> Result<CollectionsPage, PageError> {
    let vault = state.vault.account(login.account_id()).await?;
    Ok(CollectionsPage {
        layout: login.layout("data"),
        collections: state.store.list_resources(login.account_id()).await?,
        fields: fields.unwrap_or_else(|| vault.fields.names().join(", ")),
        notice,
        error,
    })
}

/// `GET /dashboard/data`: the collections, and the sensitive field list.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn collections(
    login: OwnerLogin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let notice = (query.as_deref() == Some(&format!("done={FIELDS_SAVED}")))
        .then_some("The sensitive field list was saved. New and changed records use it.");
    render(&collections_page(&state, &login, notice, None, None).await?)
}

#[derive(Deserialize)]
pub struct FieldsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    fields: String,
}

/// `POST /dashboard/data/fields`: replaces the sensitive field list.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn save_fields(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    PageForm(form): PageForm<FieldsForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let fields = match SensitiveFields::parse(&form.fields) {
        Ok(fields) if !fields.names().is_empty() => fields,
        Ok(_) => {
            let message = "List at least one field name.".to_owned();
            let page =
                collections_page(&state, &login, None, Some(message), Some(form.fields)).await?;
            return render_with_status(StatusCode::BAD_REQUEST, &page);
        }
        Err(err) => {
            let page = collections_page(
                &state,
                &login,
                None,
                Some(err.to_string()),
                Some(form.fields),
            )
            .await?;
            return render_with_status(StatusCode::BAD_REQUEST, &page);
        }
    };
    state.vault.set_fields(login.account_id(), &fields).await?;
    state.audit.record(
        AuditEvent::new(
            Some(login.account_id()),
            Actor::owner(login.owner_id()),
            action::SENSITIVE_FIELDS_CHANGED,
        )
        .ip(&ip)
        .detail(serde_json::json!({ "fields": fields.names() })),
    );
    Ok(axum::response::IntoResponse::into_response(Redirect::to(
        &format!("/dashboard/data?done={FIELDS_SAVED}"),
    )))
}

/// `GET /dashboard/data/{resource}?page=N`: a collection's records, newest first.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn records(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(resource): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    check_resource(&resource)?;
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let page = match pairs.iter().find(|(k, _)| k == "page") {
        Some((_, value)) => parse_page(value).ok_or_else(|| {
            PageError::BadRequest(format!(
                "This address is not valid: {}.",
                keyfob_domain::query::QueryError::Page
            ))
        })?,
        None => 1,
    };
    let list = ListQuery {
        limit: PAGE_SIZE,
        page,
        sort: None,
        filters: Vec::new(),
    };
    let scope = RecordScope {
        account_id: login.account_id(),
        resource: &resource,
        owner_user_id: None,
    };
    let vault = state.vault.account(login.account_id()).await?;
    let (rows, total) = state.store.list_records(&scope, &list).await?;
    let none = RevealRequest::default();
    let records = rows
        .into_iter()
        .map(|row| {
            let (id, created) = (row.id.clone(), TimeView::from(row.created_at));
            let (doc, _) = present(&vault, row, &none);
            let mut summary = doc.to_string();
            if summary.len() > 160 {
                let cut = (0..=157)
                    .rev()
                    .find(|i| summary.is_char_boundary(*i))
                    .unwrap_or(0);
                summary.truncate(cut);
                summary.push('…');
            }
            RecordView {
                id: id.into(),
                created,
                summary,
            }
        })
        .collect();
    let shown = list.offset() + u64::from(PAGE_SIZE);
    render(&RecordsPage {
        layout: login.layout("data"),
        resource,
        records,
        page,
        total,
        prev: (page > 1).then(|| page - 1),
        next: (shown < total).then(|| page + 1),
    })
}

async fn record_page(
    state: &AppState,
    login: &OwnerLogin,
    resource: String,
    id: RecordId,
    reveal: &RevealRequest,
    error: Option<&'static str>,
) -> Result<(RecordPage, Vec<String>), PageError> {
    check_resource(&resource)?;
    let missing = || PageError::NotFound("This collection has no such record.".into());
    uuid::Uuid::parse_str(&id).map_err(|_| missing())?;
    let scope = RecordScope {
        account_id: login.account_id(),
        resource: &resource,
        owner_user_id: None,
    };
    let row = state
        .store
        .get_record(&scope, &id)
        .await?
        .ok_or_else(missing)?;
    let vault = state.vault.account(login.account_id()).await?;
    let sealed_paths = AccountVault::sealed_paths(&row.doc);
    let (created, updated) = (
        TimeView::from(row.created_at),
        TimeView::from(row.updated_at),
    );
    let (doc, revealed) = present(&vault, row, reveal);
    let json = serde_json::to_string_pretty(&doc).map_err(anyhow::Error::from)?;
    let ask_code = crate::mfa::has_factor(state, &owner_holder(login)).await?;
    Ok((
        RecordPage {
            layout: login.layout("data"),
            resource,
            id: id.into(),
            created,
            updated,
            json,
            sealed_paths,
            revealed: revealed.clone(),
            error_field: match error {
                Some(REVEAL_REFUSED) => "password",
                Some(_) => "code",
                None => "",
            },
            error,
            ask_code,
        },
        revealed,
    ))
}

/// `GET /dashboard/data/{resource}/{id}`: one record, masked.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn record(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path((resource, id)): Path<(String, RecordId)>,
) -> Result<Html<String>, PageError> {
    let (page, _) = record_page(
        &state,
        &login,
        resource,
        id,
        &RevealRequest::default(),
        None,
    )
    .await?;
    render(&page)
}

#[derive(Deserialize)]
pub struct RevealForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    field: String,
    #[serde(default)]
    password: String,
    /// A second factor's code, for an owner who has one.
    #[serde(default)]
    code: String,
}

fn owner_holder(login: &OwnerLogin) -> keyfob_store::FactorHolder {
    keyfob_store::FactorHolder::Owner(login.owner_id().clone())
}

/// `POST /dashboard/data/{resource}/{id}/reveal`: shows one sensitive field in clear, once the
/// owner has typed their password again (and, if they have a second factor, a current code);
/// every reveal is written to the audit log first.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn reveal(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user_agent: UserAgent,
    jar: CookieJar,
    Path((resource, id)): Path<(String, RecordId)>,
    PageForm(form): PageForm<RevealForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let request = RevealRequest::parse([form.field.as_str()])
        .ok()
        .filter(|r| r.items().len() == 1)
        .ok_or_else(|| PageError::BadRequest("Choose one field to reveal.".into()))?;
    // The password is checked under the same budgets as a login, so a stolen login cannot
    // guess it faster than a stranger could.
    let attempt = state
        .logins
        .begin(
            LoginKind::Owner,
            &login.email,
            &ip,
            DASHBOARD.device_token(&jar),
        )
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    let owner = state
        .store
        .find_owner(login.owner_id())
        .await?
        .ok_or_else(|| PageError::Forbidden("Log in again.".into()))?;
    if !state
        .passwords
        .verify(form.password, Some(owner.password_hash))
        .await
    {
        attempt.failed();
        tracing::info!("dashboard reveal refused: wrong password");
        let (page, _) = record_page(
            &state,
            &login,
            resource,
            id,
            &RevealRequest::default(),
            Some(REVEAL_REFUSED),
        )
        .await?;
        return render_with_status(StatusCode::FORBIDDEN, &page);
    }
    attempt.succeeded();
    // Step-up: an owner with a second factor gives a current code too (`crate::mfa`).
    let holder = owner_holder(&login);
    if crate::mfa::has_factor(&state, &holder).await? {
        let attempt = crate::mfa::Attempt {
            kind: LoginKind::Owner,
            email: &login.email,
            ip: &ip,
            device: DASHBOARD.device_token(&jar),
        };
        let check = crate::mfa::check_code(&state, &holder, attempt, &form.code).await?;
        crate::mfa::audit_check(&state, check, "reveal", |action| {
            AuditEvent::new(
                Some(login.account_id()),
                Actor::owner(login.owner_id()),
                action,
            )
            .target(login.owner_id().as_str())
            .ip(&ip)
            .user_agent(&user_agent)
        });
        if !matches!(check, crate::mfa::CodeCheck::Accepted(_)) {
            tracing::info!("dashboard reveal refused: no valid second-factor code");
            let (page, _) = record_page(
                &state,
                &login,
                resource,
                id,
                &RevealRequest::default(),
                Some(REVEAL_CODE_REFUSED),
            )
            .await?;
            return render_with_status(StatusCode::FORBIDDEN, &page);
        }
    }
    let (page, revealed) =
        record_page(&state, &login, resource.clone(), id.clone(), &request, None).await?;
    if revealed.is_empty() {
        return Err(PageError::BadRequest(
            "This record has no such sensitive field.".into(),
        ));
    }
    for path in &revealed {
        state
            .audit
            .record_durably(
                AuditEvent::new(
                    Some(login.account_id()),
                    Actor::owner(login.owner_id()),
                    action::SENSITIVE_REVEALED,
                )
                .target(format!("{resource}/{id}#{path}"))
                .ip(&ip)
                .user_agent(&user_agent)
                .detail(serde_json::json!({
                    "resource": resource, "record": id, "field": path, "via": "dashboard"
                })),
            )
            .await
            .map_err(|e| PageError::Internal(anyhow::anyhow!("{e}")))?;
    }
    render_with_status(StatusCode::OK, &page)
}
