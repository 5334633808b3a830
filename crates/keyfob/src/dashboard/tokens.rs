//! The JWTs minted for the account: list and revoke.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, Redirect};
use keyfob_store::TokenRow;

use super::account::CsrfForm;
use super::page::{Layout, PageError, PageForm, TimeView, render};
use super::session::{ClientIp, Session};
use crate::audit::{Actor, AuditEvent};
use crate::clock::now_ms;
use crate::state::AppState;

/// Most tokens one page lists, newest first.
const LIST_LIMIT: u32 = 200;
const TOKEN_REVOKED: &str = "token-revoked";

#[derive(Template)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    layout: Layout,
    tokens: Vec<TokenView>,
    notice: Option<&'static str>,
    limit: u32,
}

pub struct TokenView {
    jti: String,
    permissions: String,
    /// The API key that minted it, by name and prefix.
    minted_by: Option<String>,
    issued: TimeView,
    expires: TimeView,
    revoked: Option<TimeView>,
    expired: bool,
}

impl TokenView {
    fn new(row: TokenRow, key_names: &HashMap<String, String>, now: i64) -> TokenView {
        let permissions = serde_json::from_str::<Vec<String>>(&row.permissions)
            .map(|list| list.join(", "))
            .unwrap_or(row.permissions);
        TokenView {
            minted_by: row
                .api_key_id
                .as_ref()
                .and_then(|id| key_names.get(id).cloned()),
            jti: row.jti,
            permissions,
            issued: TimeView::from_ms(row.issued_at),
            expires: TimeView::from_ms(row.expires_at),
            revoked: row.revoked_at.map(TimeView::from_ms),
            expired: row.expires_at <= now,
        }
    }
}

/// `GET /dashboard/tokens`.
#[tracing::instrument(skip_all, fields(account_id = %session.account_id))]
pub async fn list(
    session: Session,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let rows = state
        .store
        .list_tokens(&session.account_id, LIST_LIMIT)
        .await?;
    let key_names: HashMap<String, String> = state
        .store
        .list_api_keys(&session.account_id)
        .await?
        .into_iter()
        .map(|key| (key.id, format!("{} ({}…)", key.name, key.prefix)))
        .collect();
    let now = now_ms();
    let notice = (query.as_deref() == Some(&format!("done={TOKEN_REVOKED}")))
        .then_some("The token was revoked. Requests that use it are refused from now on.");
    render(&TokensPage {
        layout: session.layout("tokens"),
        tokens: rows
            .into_iter()
            .map(|row| TokenView::new(row, &key_names, now))
            .collect(),
        notice,
        limit: LIST_LIMIT,
    })
}

/// `POST /dashboard/tokens/{jti}/revoke`: only a live token of the session's own account.
#[tracing::instrument(skip_all, fields(account_id = %session.account_id, jti = %jti))]
pub async fn revoke(
    session: Session,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(jti): Path<String>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Redirect, PageError> {
    session.check_csrf(&form.csrf)?;
    let not_found = || PageError::NotFound("Your account has no active token with this id.".into());
    let token = state
        .store
        .find_token(&jti)
        .await?
        .filter(|token| token.account_id == session.account_id)
        .ok_or_else(not_found)?;
    // The store checks the account again, in the same statement that revokes.
    let revoked = state
        .store
        .revoke_token(&session.account_id, &jti, now_ms())
        .await?;
    if !revoked {
        return Err(not_found());
    }
    // This node refuses the token at once; the others learn of it from the change feed.
    state.index.revoke_token(&jti, token.expires_at / 1000);
    tracing::info!("token revoked in the dashboard");
    state.audit.record(
        AuditEvent::new(
            Some(&session.account_id),
            Actor::owner(&session.owner_id),
            keyfob_domain::audit::action::TOKEN_REVOKED,
        )
        .target(&jti)
        .ip(&ip),
    );
    Ok(Redirect::to(&format!(
        "/dashboard/tokens?done={TOKEN_REVOKED}"
    )))
}
