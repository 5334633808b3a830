//! Minted tokens: minted from the dashboard with one of the account's keys, revoked one at a
//! time, or every token of one key.

use keyfob_domain::audit::action;
use keyfob_domain::claims::Bearer;
use keyfob_domain::expiry::format_instant;
use keyfob_domain::ids::{AccountId, Jti, KeyId};
use keyfob_domain::time::Timestamp;
use keyfob_domain::{Claims, ExpiryPolicy, PermissionSet};
use keyfob_store::{Permissions, TokenRow};

use super::{Caller, ServiceError};
use crate::audit::AuditEvent;
use crate::state::AppState;

/// A token an API key mints, as `POST /auth` and the dashboard's form make it.
pub struct KeyToken<'a> {
    pub account_id: &'a AccountId,
    pub key_id: &'a KeyId,
    /// Already checked against what the key holds.
    pub permissions: &'a PermissionSet,
    /// `iat`, and the instant in the `jti` (a UUIDv7) that "revoke every token of this key"
    /// compares against.
    pub issued: Timestamp,
    /// Already capped at the key's own expiry.
    pub expires: Timestamp,
    pub name: Option<String>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Signs a key's token and records it (the mint waits for the record, so that the token can be
/// listed and revoked at once); the signed token and its claims. Counting and auditing are the
/// caller's, who knows who asked.
pub async fn sign_and_record(
    state: &AppState,
    token: KeyToken<'_>,
) -> Result<(String, Claims), MintFailure> {
    let claims = Claims::new(
        state.tokens.issuer(),
        state.tokens.audience(),
        Bearer::Key {
            account_id: token.account_id,
            key_id: token.key_id,
        },
        token.permissions.to_strings(),
        token.issued,
        token.expires,
    );
    let signed = state
        .tokens
        .sign(&claims, token.issued)
        .map_err(|e| MintFailure::Internal(e.into()))?;
    state
        .recorder
        .record(TokenRow {
            jti: Jti::from(claims.jti.as_str()),
            account_id: claims.account_id.clone(),
            api_key_id: Some(token.key_id.clone()),
            subject: claims.sub.clone(),
            permissions: Permissions::parse(&claims.permissions)
                .map_err(|e| MintFailure::Internal(e.into()))?,
            issued_at: token.issued,
            expires_at: claims.expires_at(),
            revoked_at: None,
            name: token.name,
            metadata: token.metadata.map(keyfob_store::JsonText),
            last_used_at: None,
        })
        .await
        .map_err(MintFailure::Record)?;
    Ok((signed, claims))
}

/// Why [`sign_and_record`] failed: signing (a bug), or the record's batch (the database).
#[derive(Debug)]
pub enum MintFailure {
    Internal(anyhow::Error),
    Record(std::sync::Arc<keyfob_store::StoreError>),
}

impl From<MintFailure> for ServiceError {
    fn from(failure: MintFailure) -> Self {
        match failure {
            MintFailure::Internal(err) => ServiceError::Internal(err),
            MintFailure::Record(err) => ServiceError::Internal(anyhow::anyhow!("{err}")),
        }
    }
}

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

/// The most permissions a token minted from the dashboard holds, as `POST /auth` allows.
const MAX_MINT_PERMISSIONS: usize = 100;
/// The longest name a minted token may have, as `POST /auth` allows.
const MAX_TOKEN_NAME_LEN: usize = 100;

/// What the dashboard's mint form asks for, as typed.
pub struct MintSpec<'a> {
    /// Comma- or space-separated.
    pub permissions: &'a str,
    /// An RFC 3339 date-time or a date; blank: the default lifetime (never past the key's).
    pub expires: &'a str,
    /// Blank: none.
    pub name: &'a str,
}

/// A token just minted: the JWT (shown once), its id and expiry.
pub struct Minted {
    pub token: String,
    pub jti: Jti,
    pub expires: String,
}

/// Mints a token with the authority of the live key `key_id` of `account_id`, as `POST /auth`
/// with that key would: within the key's permissions, dying with it, never outliving it. The
/// dashboard needs no copy of the key (Keyfob keeps only its hash): the owner of the account acts
/// for it, and the audit log says so (`token.minted` by the owner, naming the key).
pub async fn mint_with_key(
    state: &AppState,
    account_id: &AccountId,
    key_id: &KeyId,
    spec: &MintSpec<'_>,
    by: &Caller<'_>,
) -> Result<Minted, ServiceError> {
    let invalid = |m: String| ServiceError::Invalid(m);
    let now = Timestamp::now();
    let key = state
        .store
        .find_api_key(key_id)
        .await?
        .filter(|k| k.account_id == *account_id)
        .filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|at| at > now))
        .ok_or_else(|| invalid("choose one of this account's live API keys".into()))?;
    let items: Vec<&str> = spec
        .permissions
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .collect();
    if items.is_empty() {
        return Err(invalid(
            "`permissions`: give at least one, such as deals.read".into(),
        ));
    }
    if items.len() > MAX_MINT_PERMISSIONS {
        return Err(invalid(format!(
            "`permissions`: at most {MAX_MINT_PERMISSIONS}"
        )));
    }
    let permissions =
        PermissionSet::parse(items).map_err(|e| invalid(format!("`permissions`: {e}")))?;
    let held = key.permission_set();
    let missing = held.missing(&permissions);
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
        return Err(invalid(format!(
            "`permissions`: the key {} may not grant {}",
            key.name,
            names.join(", ")
        )));
    }
    let name = spec.name.trim();
    if name.chars().count() > MAX_TOKEN_NAME_LEN || name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "`name`: at most {MAX_TOKEN_NAME_LEN} characters, none of them control characters"
        )));
    }
    let name = (!name.is_empty()).then(|| name.to_owned());
    let policy = ExpiryPolicy {
        default: time::Duration::days(state.config.token_default_days),
        max: time::Duration::days(state.config.token_max_days),
    };
    let issued = Timestamp::now();
    let requested = Some(spec.expires.trim()).filter(|e| !e.is_empty());
    let mut expires = policy
        .resolve("expires", requested, issued.whole_secs().to_date_time())
        .map_err(|e| invalid(e.to_string()))?;
    if let Some(key_expires) = key.expires_at {
        let key_expires = key_expires.whole_secs().to_date_time();
        if expires > key_expires {
            if requested.is_some() {
                return Err(invalid(format!(
                    "`expires` is after the key's own expiry, {}: a token cannot outlive the key that mints it",
                    format_instant(key_expires)
                )));
            }
            expires = key_expires;
        }
    }
    let (token, claims) = sign_and_record(
        state,
        KeyToken {
            account_id,
            key_id: &key.id,
            permissions: &permissions,
            issued,
            expires: Timestamp::from(expires),
            name: name.clone(),
            metadata: None,
        },
    )
    .await?;
    let jti = Jti::from(claims.jti.as_str());
    state.audit.record(
        AuditEvent::new(Some(account_id), by.actor.clone(), action::TOKEN_MINTED)
            .target(&jti)
            .ip(by.ip)
            .detail(serde_json::json!({
                "permissions": claims.permissions,
                "expires": claims.exp,
                "name": name,
                "key": key.id,
            })),
    );
    crate::measures::token_minted(crate::measures::MintedAt::Dashboard);
    Ok(Minted {
        token,
        jti,
        expires: format_instant(expires),
    })
}
