//! API keys: made, rolled and revoked by their account's owners (and by the operator's CLI).

use std::time::Duration;

use keyfob_domain::audit::action;
use keyfob_domain::key_policy::{RateLimit, parse_span};
use keyfob_domain::time::Timestamp;
use keyfob_domain::{ApiKey, Permission, PermissionSet};
use keyfob_store::{AccountId, ApiKeyRow, KeyId, Permissions, Store};

use super::{Caller, MAX_NAME_LEN, ServiceError};
use crate::audit::AuditEvent;
use crate::state::AppState;

/// Most permissions a restricted key may hold.
pub const MAX_KEY_PERMISSIONS: usize = 100;

/// What a new key is: its name, and what sets it apart from the guide's full-access key that
/// lasts until revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    /// `None`: the whole account. Otherwise a non-empty list.
    pub permissions: Option<Vec<Permission>>,
    pub expires_in: Option<Duration>,
    pub rate_limit: Option<RateLimit>,
}

impl KeySpec {
    /// A full-access key that lasts until revoked.
    pub fn full_access(name: &str) -> KeySpec {
        KeySpec {
            name: name.to_owned(),
            permissions: None,
            expires_in: None,
            rate_limit: None,
        }
    }

    /// Reads a key's settings as a person types them (CLI flags, dashboard fields); blank means
    /// not set. Permissions are separated by commas or white space.
    pub fn parse(
        name: &str,
        permissions: Option<&str>,
        expires_in: Option<&str>,
        rate_limit: Option<&str>,
    ) -> Result<KeySpec, ServiceError> {
        fn present(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        Ok(KeySpec {
            name: name.to_owned(),
            permissions: present(permissions)
                .map(|list| {
                    parse_permission_list(
                        list.split(|c: char| c == ',' || c.is_whitespace())
                            .filter(|p| !p.is_empty()),
                    )
                })
                .transpose()?,
            expires_in: present(expires_in)
                .map(|span| {
                    let span = parse_span(span)
                        .map_err(|e| ServiceError::Invalid(format!("expiry: {e}")))?;
                    if span.is_zero() {
                        return Err(ServiceError::Invalid(
                            "expiry: a key must live longer than 0s".into(),
                        ));
                    }
                    Ok(span)
                })
                .transpose()?,
            rate_limit: present(rate_limit)
                .map(|r| {
                    r.parse()
                        .map_err(|e| ServiceError::Invalid(format!("rate limit: {e}")))
                })
                .transpose()?,
        })
    }
}

/// Reads a restricted key's permission list: one to [`MAX_KEY_PERMISSIONS`] permissions, each
/// named when it does not parse.
pub fn parse_permission_list<'a>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Permission>, ServiceError> {
    let list = items
        .into_iter()
        .map(|p| {
            p.parse::<Permission>()
                .map_err(|e| ServiceError::Invalid(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err(ServiceError::Invalid(
            "a restricted key needs at least one permission".into(),
        ));
    }
    if list.len() > MAX_KEY_PERMISSIONS {
        return Err(ServiceError::Invalid(format!(
            "a key may hold at most {MAX_KEY_PERMISSIONS} permissions"
        )));
    }
    match PermissionSet::only(list) {
        PermissionSet::Only(list) => Ok(list.to_vec()),
        PermissionSet::All => unreachable!("a list stays a list"),
    }
}

/// What an audit event says of a key's settings (never the key).
fn describe(row: &ApiKeyRow) -> serde_json::Value {
    serde_json::json!({
        "name": row.name,
        "prefix": row.prefix,
        "permissions": row.permissions.as_ref().map(Permissions::names),
        "expires": row.expires_at.map(Timestamp::rfc3339),
        "rate_limit": row.rate_limit().map(|r| r.to_string()),
    })
}

/// Makes a key in `account_id`. This node accepts it at once.
pub async fn create(
    state: &AppState,
    account_id: &AccountId,
    by: &Caller<'_>,
    spec: &KeySpec,
) -> Result<(ApiKeyRow, ApiKey), ServiceError> {
    let (row, key) = create_api_key(state.store.as_ref(), account_id, spec).await?;
    state.index.add_key(&row);
    tracing::info!(key_id = %row.id, "API key created");
    state.audit.record(
        AuditEvent::new(Some(account_id), by.actor.clone(), action::API_KEY_CREATED)
            .target(&row.id)
            .ip(by.ip)
            .detail(describe(&row)),
    );
    Ok((row, key))
}

/// Rolls a live key of `account_id`: see [`roll_api_key`]. This node takes both changes at once.
pub async fn roll(
    state: &AppState,
    account_id: &AccountId,
    by: &Caller<'_>,
    key_id: &KeyId,
    overlap: Duration,
) -> Result<(ApiKeyRow, ApiKey), ServiceError> {
    let rolled = roll_api_key(state.store.as_ref(), Some(account_id), key_id, overlap).await?;
    state.index.add_key(&rolled.old);
    state.index.add_key(&rolled.new);
    tracing::info!(key_id = %key_id, new_key_id = %rolled.new.id, "API key rolled");
    state
        .audit
        .record(rolled.event(Some(account_id), by.actor.clone()).ip(by.ip));
    Ok((rolled.new, rolled.key))
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
    spec: &KeySpec,
) -> Result<(ApiKeyRow, ApiKey), ServiceError> {
    let (row, key) = new_row(account_id, spec, Timestamp::now())?;
    store.insert_api_key(&row).await?;
    Ok((row, key))
}

/// A key and its row, checked, not stored yet.
fn new_row(
    account_id: &AccountId,
    spec: &KeySpec,
    now: Timestamp,
) -> Result<(ApiKeyRow, ApiKey), ServiceError> {
    let name = spec.name.trim();
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
    if spec.permissions.as_ref().is_some_and(Vec::is_empty) {
        return Err(ServiceError::Invalid(
            "a restricted key needs at least one permission".into(),
        ));
    }
    let key = ApiKey::generate();
    let row = ApiKeyRow {
        id: KeyId::from(uuid::Uuid::now_v7().to_string()),
        account_id: account_id.to_owned(),
        name: name.to_owned(),
        prefix: key.display_prefix().to_owned(),
        key_hash: key.hash(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
        tokens_revoked_before: None,
        permissions: spec.permissions.clone().map(Permissions::from),
        expires_at: spec.expires_in.map(|span| now + span),
        rate_limit_requests: spec.rate_limit.map(|r| i64::from(r.requests)),
        rate_limit_window_secs: spec
            .rate_limit
            .map(|r| i64::try_from(r.window.as_secs()).unwrap_or(i64::MAX)),
        rolled_from: None,
        last_used_ip: None,
    };
    Ok((row, key))
}

/// A rolled key: the old row as it now is, the new row, and the new key (shown once).
pub struct Rolled {
    pub old: ApiKeyRow,
    pub new: ApiKeyRow,
    pub key: ApiKey,
}

impl Rolled {
    /// The audit event of the roll (the old key its target).
    pub fn event(&self, account_id: Option<&AccountId>, actor: crate::audit::Actor) -> AuditEvent {
        AuditEvent::new(account_id, actor, action::API_KEY_ROLLED)
            .target(&self.old.id)
            .detail(serde_json::json!({
                "new_key": self.new.id,
                "new_prefix": self.new.prefix,
                "old_expires": self.old.expires_at.map(Timestamp::rfc3339),
                "name": self.new.name,
            }))
    }
}

/// Rolls a live key (of `account_id`, when given): a new key with the same name, permissions,
/// rate limit and lifetime (counted from now), and the old key working until `overlap` has
/// passed (or until its own expiry, if sooner), then refused with every token it minted.
pub async fn roll_api_key(
    store: &dyn Store,
    account_id: Option<&AccountId>,
    key_id: &KeyId,
    overlap: Duration,
) -> Result<Rolled, ServiceError> {
    let now = Timestamp::now();
    let not_found = || ServiceError::NotFound(format!("no live API key {key_id}"));
    let old = store
        .find_api_key(key_id)
        .await?
        .filter(|row| !row.is_dead(now) && account_id.is_none_or(|a| *a == row.account_id))
        .ok_or_else(not_found)?;
    let lifetime = old.expires_at.map(|at| at.since(old.created_at));
    let spec = KeySpec {
        name: old.name.clone(),
        permissions: old.permissions.clone().map(Permissions::into_vec),
        expires_in: lifetime,
        rate_limit: old.rate_limit(),
    };
    let (mut new, key) = new_row(&old.account_id, &spec, now)?;
    new.rolled_from = Some(old.id.clone());
    // The CASE in the store keeps an earlier expiry; the row read back says which it was.
    if !store
        .roll_api_key(account_id, key_id, &new, now + overlap, now)
        .await?
    {
        return Err(not_found());
    }
    let old = store.find_api_key(key_id).await?.ok_or_else(not_found)?;
    Ok(Rolled { old, new, key })
}
