//! End users' sessions with applications (refresh-token families) and their Keyfob logins,
//! ended by the user.

use std::collections::BTreeMap;

use keyfob_domain::audit::action;
use keyfob_domain::ids::{AccountId, UserId};
use keyfob_domain::time::Timestamp;

use super::{Caller, ServiceError};
use crate::audit::AuditEvent;
use crate::state::AppState;

/// Why a user's sessions end, as the audit events say it.
#[derive(Debug, Clone, Copy)]
pub enum EndReason {
    LogoutEverywhere,
    PasswordChanged,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            EndReason::LogoutEverywhere => "logout_everywhere",
            EndReason::PasswordChanged => "password_changed",
        }
    }
}

/// Tells each account the user has granted access to that the user's sessions with its apps are
/// ending (one event per account, naming the apps), before they are ended.
async fn audit_sessions_ended(
    state: &AppState,
    user_id: &UserId,
    reason: EndReason,
    by: &Caller<'_>,
) -> Result<(), ServiceError> {
    let mut apps_by_account: BTreeMap<AccountId, Vec<String>> = BTreeMap::new();
    for grant in state
        .store
        .list_user_grants(user_id)
        .await?
        .into_iter()
        .filter(|g| g.revoked_at.is_none())
    {
        apps_by_account
            .entry(grant.account_id)
            .or_default()
            .push(grant.client_id.into());
    }
    for (account_id, client_ids) in apps_by_account {
        state.audit.record(
            AuditEvent::new(Some(&account_id), by.actor.clone(), action::SESSION_ENDED)
                .target(user_id)
                .ip(by.ip)
                .detail(serde_json::json!({ "reason": reason.as_str(), "client_ids": client_ids })),
        );
    }
    Ok(())
}

/// Ends every application session of the user and every Keyfob login but `keep_login` (the
/// SHA-256 of the login to keep, the caller's own). This node refuses their access tokens at
/// once. Answers how many sessions and logins ended.
pub async fn log_out_everywhere(
    state: &AppState,
    user_id: &UserId,
    keep_login: Option<&str>,
    by: &Caller<'_>,
) -> Result<(u64, u64), ServiceError> {
    audit_sessions_ended(state, user_id, EndReason::LogoutEverywhere, by).await?;
    let sessions = state
        .store
        .revoke_user_families(user_id, None, Timestamp::now())
        .await?;
    let logins = state.store.delete_user_logins(user_id, keep_login).await?;
    crate::auth::catch_up(state).await?;
    tracing::info!(sessions, logins, "user logged out everywhere");
    Ok((sessions, logins))
}

/// Sets the user's password to `hash` (checked and hashed by the caller), which ends every
/// session and login of the user. This node refuses their access tokens at once.
pub async fn change_password(
    state: &AppState,
    user_id: &UserId,
    hash: &str,
    by: &Caller<'_>,
) -> Result<(), ServiceError> {
    audit_sessions_ended(state, user_id, EndReason::PasswordChanged, by).await?;
    state
        .store
        .change_user_password(user_id, hash, Timestamp::now())
        .await?;
    crate::auth::catch_up(state).await?;
    tracing::info!("user changed their password");
    Ok(())
}
