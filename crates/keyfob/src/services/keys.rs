//! API keys: made and revoked by their account's owners.

use keyfob_domain::ApiKey;
use keyfob_domain::audit::action;
use keyfob_domain::time::Timestamp;
use keyfob_store::{AccountId, ApiKeyRow, KeyId, Store};

use super::{Caller, MAX_NAME_LEN, ServiceError};
use crate::audit::AuditEvent;
use crate::state::AppState;

/// Makes a key in `account_id`. This node accepts it at once.
pub async fn create(
    state: &AppState,
    account_id: &AccountId,
    by: &Caller<'_>,
    name: &str,
) -> Result<(ApiKeyRow, ApiKey), ServiceError> {
    let (row, key) = create_api_key(state.store.as_ref(), account_id, name).await?;
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
    account_id: &AccountId,
    by: &Caller<'_>,
    key_id: &KeyId,
) -> Result<(), ServiceError> {
    let at = Timestamp::now();
    if !state
        .store
        .revoke_api_key(Some(account_id), key_id, at)
        .await?
    {
        return Err(ServiceError::NotFound(format!(
            "no live API key {key_id} in this account"
        )));
    }
    state.index.remove_key(key_id);
    crate::auth::note_key_cutoff(state, key_id, Timestamp::MAX, at);
    tracing::info!(%key_id, "API key revoked");
    state.audit.record(
        AuditEvent::new(Some(account_id), by.actor.clone(), action::API_KEY_REVOKED)
            .target(key_id)
            .ip(by.ip),
    );
    Ok(())
}

/// Makes an API key; the key itself is returned once and never stored.
pub async fn create_api_key(
    store: &dyn Store,
    account_id: &AccountId,
    name: &str,
) -> Result<(ApiKeyRow, ApiKey), ServiceError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(ServiceError::Invalid(format!(
            "the key name must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ServiceError::Invalid(
            "the key name must not contain control characters".into(),
        ));
    }
    let key = ApiKey::generate();
    let row = ApiKeyRow {
        id: KeyId::from(uuid::Uuid::now_v7().to_string()),
        account_id: account_id.to_owned(),
        name: name.to_owned(),
        prefix: key.display_prefix().to_owned(),
        key_hash: key.hash(),
        created_at: Timestamp::now(),
        last_used_at: None,
        revoked_at: None,
        tokens_revoked_before: None,
    };
    store.insert_api_key(&row).await?;
    Ok((row, key))
}
