//! The account's API keys: list, create (the key is shown once, on the page that answers the
//! form), revoke.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use keyfob_store::{ApiKeyRow, KeyId};
use serde::Deserialize;

use super::page::{Layout, PageError, PageForm, TimeView, render, render_with_status};
use crate::audit::Actor;
use crate::services::MAX_NAME_LEN;
use crate::services::{self, Caller, ServiceError};
use crate::state::AppState;
use crate::web::{ClientIp, CsrfForm, OwnerLogin};

const NO_SUCH_KEY: &str = "Your account has no active API key with this id.";

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
            id: row.id.into(),
            name: row.name,
            prefix: row.prefix,
            created: TimeView::from(row.created_at),
            last_used: row.last_used_at.map(TimeView::from),
            revoked: row.revoked_at.map(TimeView::from),
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
    login: &OwnerLogin,
    notice: Option<&'static str>,
    error: Option<String>,
    name: String,
) -> Result<KeysPage, PageError> {
    let keys = state.store.list_api_keys(login.account_id()).await?;
    Ok(KeysPage {
        layout: login.layout("keys"),
        keys: keys.into_iter().map(KeyView::from).collect(),
        notice,
        error,
        name,
        max_name_len: MAX_NAME_LEN,
    })
}

/// `GET /dashboard/keys`.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn list(
    login: OwnerLogin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let notice = (query.as_deref() == Some(&format!("done={KEY_REVOKED}"))).then_some(
        "The key was revoked, and every token it minted with it. Requests that use them are \
         refused from now on.",
    );
    render(&keys_page(&state, &login, notice, None, String::new()).await?)
}

/// `POST /dashboard/keys`: makes a key and shows it, this once.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn create(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    PageForm(form): PageForm<CreateKeyForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    match services::keys::create(&state, login.account_id(), &by, &form.name).await {
        Ok((row, key)) => {
            let page = KeyCreatedPage {
                layout: login.layout("keys"),
                name: row.name,
                key: key.expose().to_owned(),
            };
            Ok(render(&page)?.into_response())
        }
        Err(ServiceError::Invalid(message)) => {
            let page = keys_page(&state, &login, None, Some(message), form.name).await?;
            render_with_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(err) => Err(PageError::from_service(err, NO_SUCH_KEY)),
    }
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
