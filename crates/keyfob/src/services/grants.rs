//! Grants: what an end user allowed an application; revoked by the user or by the account that
//! owns the application.

use keyfob_domain::audit::action;
use keyfob_domain::time::Timestamp;
use keyfob_store::{GrantId, GrantRow};

use super::{Caller, ServiceError};
use crate::audit::AuditEvent;
use crate::state::AppState;

/// Revokes `grant` (which the caller was found allowed to revoke) and ends the sessions it
/// started; this node refuses their access tokens at once.
pub async fn revoke(
    state: &AppState,
    grant: &GrantRow,
    by: &Caller<'_>,
) -> Result<(), ServiceError> {
    if grant.revoked_at.is_some()
        || !state
            .store
            .revoke_grant(&grant.id, Timestamp::now())
            .await?
    {
        return Err(ServiceError::NotFound("no such live grant".into()));
    }
    crate::auth::catch_up(state).await?;
    tracing::info!(grant_id = %grant.id, "grant revoked");
    state.audit.record(
        AuditEvent::new(
            Some(&grant.account_id),
            by.actor.clone(),
            action::GRANT_REVOKED,
        )
        .target(&grant.id)
        .ip(by.ip)
        .detail(serde_json::json!({ "client_id": grant.client_id })),
    );
    Ok(())
}

/// Revokes the grant `id` if it is live and `theirs` says the caller may revoke it (a grant of
/// theirs, or to one of their applications); otherwise `ServiceError::NotFound`, whichever it was.
pub async fn revoke_by_id(
    state: &AppState,
    id: &GrantId,
    theirs: impl FnOnce(&GrantRow) -> bool,
    by: &Caller<'_>,
) -> Result<(), ServiceError> {
    let grant = state
        .store
        .find_grant_by_id(id)
        .await?
        .filter(theirs)
        .ok_or_else(|| ServiceError::NotFound("no such grant".into()))?;
    revoke(state, &grant, by).await
}
