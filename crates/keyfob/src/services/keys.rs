//! API keys: made and revoked by their account's owners.

use keyfob_domain::ApiKey;
use keyfob_domain::audit::action;
use keyfob_store::ApiKeyRow;

use super::{Caller, ServiceError};
use crate::audit::AuditEvent;
use crate::clock::now_ms;
use crate::ops;
use crate::state::AppState;

/// Makes a key in `account_id`. This node accepts it at once.
pub async fn create(
    state: &AppState,
    account_id: &str,
    by: &Caller<'_>,
    name: &str,
) -> Result<(ApiKeyRow, ApiKey), ServiceError> {
    let (row, key) = ops::create_api_key(state.store.as_ref(), account_id, name).await?;
    state.index.add_key(&row);
    tracing::info!(key_id = %row.id, "API key created");
    state.audit.record(
        AuditEvent::new(Some(account_id), by.actor.clone(), action::API_KEY_CREATED)
            .target(&row.id)
            .ip(by.ip)
            .detail(serde_json::json!({ "name": row.name, "prefix": row.prefix })),
    );
    Ok((row, key))
}

/// Revokes a live key of `account_id`, and with it every token it minted. This node refuses
/// both at once.
pub async fn revoke(
    state: &AppState,
    account_id: &str,
    by: &Caller<'_>,
    key_id: &str,
) -> Result<(), ServiceError> {
    let at = now_ms();
    if !state
        .store
        .revoke_api_key(Some(account_id), key_id, at)
        .await?
    {
        return Err(ServiceError::NotFound);
    }
    state.index.remove_key(key_id);
    crate::auth::note_key_cutoff(state, key_id, i64::MAX, at);
    tracing::info!(key_id, "API key revoked");
    state.audit.record(
        AuditEvent::new(Some(account_id), by.actor.clone(), action::API_KEY_REVOKED)
            .target(key_id)
            .ip(by.ip),
    );
    Ok(())
}
