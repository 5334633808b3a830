//! End users: made by an operator or a test (users normally sign up on Keyfob's pages),
//! disabled, enabled and deleted by the operator, removed from one account by its owners.

use keyfob_domain::audit::action;
use keyfob_domain::email::Email;
use keyfob_domain::time::Timestamp;
use keyfob_store::{AccountId, Store, UserId, UserRow};

use super::{Caller, ServiceError, Site};
use crate::audit::AuditEvent;
use crate::passwords::{Passwords, check_new_password};
use crate::state::AppState;

/// Makes an end user (imports and tests; users normally sign up on Keyfob's pages).
pub async fn create_user(
    store: &dyn Store,
    passwords: &Passwords,
    email: &str,
    password: String,
) -> Result<UserRow, ServiceError> {
    let email = Email::parse(email).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    check_new_password(&password).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    if store.find_user_by_email(email.as_str()).await?.is_some() {
        return Err(keyfob_store::StoreError::Conflict("email").into());
    }
    let password_hash = passwords
        .hash(password)
        .await
        .map_err(|e| ServiceError::Internal(e.into()))?;
    let now = Timestamp::now();
    let user = UserRow {
        id: UserId::from(uuid::Uuid::now_v7().to_string()),
        email: email.as_str().to_owned(),
        password_hash,
        created_at: now,
        password_changed_at: now,
        email_verified_at: None,
        disabled_at: None,
    };
    store.insert_user(&user).await?;
    Ok(user)
}

/// Disables an end user (the operator's call: users are shared by every account): their logins
/// and sessions end at once, every node refuses their access tokens within its sync interval, and
/// they cannot log in again, with a password or a passkey, until enabled. Or enables them again.
pub async fn set_disabled(
    site: Site<'_>,
    user_id: &UserId,
    disabled: bool,
    by: &Caller<'_>,
) -> Result<(), ServiceError> {
    if site.store().find_user(user_id).await?.is_none() {
        return Err(ServiceError::NotFound(format!("no user {user_id}")));
    }
    if !site
        .store()
        .set_user_disabled(user_id, disabled, Timestamp::now())
        .await?
    {
        return Err(ServiceError::Invalid(format!(
            "the user is already {}",
            if disabled { "disabled" } else { "enabled" }
        )));
    }
    let what = if disabled {
        action::USER_DISABLED
    } else {
        action::USER_ENABLED
    };
    tracing::info!(%user_id, what, "user disabled or enabled");
    site.done(
        AuditEvent::new(None, by.actor.clone(), what)
            .target(user_id.as_str())
            .ip(by.ip),
    )
    .await
}

/// Deletes an end user and everything tied to them (see [`Store::delete_user`]); their sessions
/// end first, so every node refuses their access tokens.
pub async fn delete(site: Site<'_>, user_id: &UserId, by: &Caller<'_>) -> Result<(), ServiceError> {
    if !site.store().delete_user(user_id, Timestamp::now()).await? {
        return Err(ServiceError::NotFound(format!("no user {user_id}")));
    }
    tracing::info!(%user_id, "user deleted");
    site.done(
        AuditEvent::new(None, by.actor.clone(), action::USER_DELETED)
            .target(user_id.as_str())
            .ip(by.ip),
    )
    .await
}

/// Removes an end user from one account: every grant of theirs to the account's applications is
/// revoked and the sessions under them end; other accounts' grants are left alone (the user
/// belongs to the whole deployment, so an owner cannot disable or delete them).
pub async fn remove_from_account(
    state: &AppState,
    account_id: &AccountId,
    user_id: &UserId,
    by: &Caller<'_>,
) -> Result<u64, ServiceError> {
    let revoked = state
        .store
        .remove_user_from_account(account_id, user_id, Timestamp::now())
        .await?;
    if revoked == 0 {
        return Err(ServiceError::NotFound(
            "this user has no active grant to the account's applications".into(),
        ));
    }
    tracing::info!(%user_id, revoked, "user removed from the account");
    Site::Node(state)
        .done(
            AuditEvent::new(
                Some(account_id),
                by.actor.clone(),
                action::USER_REMOVED_FROM_ACCOUNT,
            )
            .target(user_id.as_str())
            .ip(by.ip)
            .detail(serde_json::json!({ "grants": revoked })),
        )
        .await?;
    Ok(revoked)
}
