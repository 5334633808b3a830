//! The account's API keys: list, create (the key is shown once, on the page that answers the
//! form), revoke.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use keyfob_domain::audit::action;
use keyfob_store::ApiKeyRow;
use serde::Deserialize;

use super::account::CsrfForm;
use super::page::{Layout, PageError, PageForm, TimeView, render, render_with_status};
use super::session::Session;
use crate::audit::{Actor, AuditEvent};
use crate::clock::now_ms;
use crate::ops::{self, MAX_KEY_NAME_LEN, OpsError};
use crate::state::AppState;
use crate::web::ClientIp;

const KEY_REVOKED: &str = "key-revoked";

#[derive(Template)]
#[template(path = "keys.html")]
pub struct KeysPage {
    layout: Layout,
    keys: Vec<KeyView>,
    notice: Option<&'static str>,
    error: Option<String>,
    /// The name typed in the create form, kept when it is shown again with an error.
    name: String,
    max_name_len: usize,
}

pub struct KeyView {
    id: String,
    name: String,
    prefix: String,
    created: TimeView,
    last_used: Option<TimeView>,
    revoked: Option<TimeView>,
}

impl From<ApiKeyRow> for KeyView {
    fn from(row: ApiKeyRow) -> Self {
        KeyView {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            created: TimeView::from_ms(row.created_at),
            last_used: row.last_used_at.map(TimeView::from_ms),
            revoked: row.revoked_at.map(TimeView::from_ms),
        }
    }
}

#[derive(Template)]
#[template(path = "key_created.html")]
pub struct KeyCreatedPage {
    layout: Layout,
    name: String,
    key: String,
}

#[derive(Deserialize)]
pub struct CreateKeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

async fn keys_page(
    state: &AppState,
    session: &Session,
    notice: Option<&'static str>,
    error: Option<String>,
    name: String,
) -> Result<KeysPage, PageError> {
    let keys = state.store.list_api_keys(&session.account_id).await?;
    Ok(KeysPage {
        layout: session.layout("keys"),
        keys: keys.into_iter().map(KeyView::from).collect(),
        notice,
        error,
        name,
        max_name_len: MAX_KEY_NAME_LEN,
    })
}

/// `GET /dashboard/keys`.
#[tracing::instrument(skip_all, fields(account_id = %session.account_id))]
pub async fn list(
    session: Session,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let notice = (query.as_deref() == Some(&format!("done={KEY_REVOKED}"))).then_some(
        "The key was revoked, and every token it minted with it. Requests that use them are \
         refused from now on.",
    );
    render(&keys_page(&state, &session, notice, None, String::new()).await?)
}

/// `POST /dashboard/keys`: makes a key and shows it, this once.
#[tracing::instrument(skip_all, fields(account_id = %session.account_id))]
pub async fn create(
    session: Session,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    PageForm(form): PageForm<CreateKeyForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    match ops::create_api_key(state.store.as_ref(), &session.account_id, &form.name).await {
        Ok((row, key)) => {
            // This node accepts the key at once; the others learn of it from the change feed.
            state.index.add_key(&row);
            tracing::info!(key_id = %row.id, "API key created in the dashboard");
            state.audit.record(
                AuditEvent::new(
                    Some(&session.account_id),
                    Actor::owner(&session.owner_id),
                    action::API_KEY_CREATED,
                )
                .target(&row.id)
                .ip(&ip)
                .detail(serde_json::json!({ "name": row.name, "prefix": row.prefix })),
            );
            let page = KeyCreatedPage {
                layout: session.layout("keys"),
                name: row.name,
                key: key.expose().to_owned(),
            };
            Ok(render(&page)?.into_response())
        }
        Err(OpsError::Invalid(message)) => {
            let page = keys_page(&state, &session, None, Some(message), form.name).await?;
            render_with_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(OpsError::Store(err)) => Err(err.into()),
        Err(err) => Err(PageError::Internal(err.into())),
    }
}

/// `POST /dashboard/keys/{id}/revoke`: only a live key of the session's own account.
#[tracing::instrument(skip_all, fields(account_id = %session.account_id, key_id = %id))]
pub async fn revoke(
    session: Session,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Redirect, PageError> {
    session.check_csrf(&form.csrf)?;
    let at = now_ms();
    let revoked = state
        .store
        .revoke_api_key(Some(&session.account_id), &id, at)
        .await?;
    if !revoked {
        return Err(PageError::NotFound(
            "Your account has no active API key with this id.".into(),
        ));
    }
    // This node refuses the key and every token it minted at once; the others learn of it from
    // the change feed.
    state.index.remove_key(&id);
    crate::auth::note_key_cutoff(&state, &id, i64::MAX, at);
    tracing::info!("API key revoked in the dashboard");
    state.audit.record(
        AuditEvent::new(
            Some(&session.account_id),
            Actor::owner(&session.owner_id),
            action::API_KEY_REVOKED,
        )
        .target(&id)
        .ip(&ip),
    );
    Ok(Redirect::to(&format!("/dashboard/keys?done={KEY_REVOKED}")))
}
