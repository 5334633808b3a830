//! Minted tokens: revoked one at a time, or every token of one key.

use keyfob_domain::audit::action;
use keyfob_domain::ids::{AccountId, Jti, KeyId};
use keyfob_domain::time::Timestamp;

use super::{Caller, ServiceError};
use crate::audit::AuditEvent;
use crate::state::AppState;

/// Revokes a live token of `account_id`. This node refuses it at once.
pub async fn revoke(
    state: &AppState,
    account_id: &AccountId,
    by: &Caller<'_>,
    jti: &Jti,
) -> Result<(), ServiceError> {
    let token = state
        .store
        .find_token(jti)
        .await?
        .filter(|token| token.account_id == *account_id)
        .ok_or_else(|| ServiceError::NotFound(format!("no live token {jti} in this account")))?;
    // The store checks the account again, in the same statement that revokes.
    if !state
        .store
        .revoke_token(account_id, jti, Timestamp::now())
        .await?
    {
        return Err(ServiceError::NotFound(format!(
            "no live token {jti} in this account"
        )));
    }
    state.index.revoke_token(jti, token.expires_at);
    tracing::info!(%jti, "token revoked");
    state.audit.record(
        AuditEvent::new(Some(account_id), by.actor.clone(), action::TOKEN_REVOKED)
            .target(jti)
            .ip(by.ip),
    );
    Ok(())
}

/// Revokes every token a live key of `account_id` has minted so far. The key stays live, and
/// tokens it mints afterwards work. This node refuses the old ones at once.
pub async fn revoke_all_of_key(
    state: &AppState,
    account_id: &AccountId,
    by: &Caller<'_>,
    key_id: &KeyId,
) -> Result<(), ServiceError> {
    let at = Timestamp::now();
    // The store checks the account in the same statement that revokes.
    if !state
        .store
        .revoke_key_tokens(Some(account_id), key_id, at)
        .await?
    {
        return Err(ServiceError::NotFound(format!(
            "no live API key {key_id} in this account"
        )));
    }
    crate::auth::note_key_cutoff(state, key_id, at, at);
    tracing::info!(%key_id, "every token of an API key revoked");
    state.audit.record(
        AuditEvent::new(
            Some(account_id),
            by.actor.clone(),
            action::API_KEY_TOKENS_REVOKED,
        )
        .target(key_id)
        .ip(by.ip),
    );
    Ok(())
}
