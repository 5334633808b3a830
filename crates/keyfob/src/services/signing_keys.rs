//! Signing keys: the first one, rotation, and retiring a compromised one.

use keyfob_domain::time::{Timestamp, secs};
use keyfob_store::{Kid, SigningKeyRow, Store};

use super::ServiceError;
use crate::config::SigningAlg;
use crate::crypto::MasterKey;
use crate::tokens::generate_signing_key;

/// Makes the first signing key of a new database.
pub async fn ensure_signing_key(
    store: &dyn Store,
    master: &MasterKey,
    alg: SigningAlg,
) -> Result<(), ServiceError> {
    let now = Timestamp::now();
    let keys = store.list_signing_keys().await?;
    if keys.iter().any(|k| k.retires_at.is_none_or(|r| r > now)) {
        return Ok(());
    }
    let row = generate_signing_key(alg, master, now, now)?;
    store.insert_signing_key(&row).await?;
    Ok(())
}

/// Publishes a new signing key now and makes it sign `publish_secs` later; the keys it replaces
/// stop signing then and stay published for `keep_public_secs` more (the longest token lifetime),
/// so every token they signed keeps verifying.
pub async fn rotate_signing_key(
    store: &dyn Store,
    master: &MasterKey,
    alg: SigningAlg,
    publish_secs: i64,
    keep_public_secs: i64,
) -> Result<SigningKeyRow, ServiceError> {
    let now = Timestamp::now();
    let row = generate_signing_key(alg, master, now, now + secs(publish_secs))?;
    store
        .rotate_signing_key(&row, secs(keep_public_secs))
        .await?;
    Ok(row)
}

/// A signing key retired at once, and the key that signs in its place if that changed.
#[derive(Debug)]
pub struct RetiredSigningKey {
    pub kid: Kid,
    pub heir: Option<keyfob_domain::signing::Heir>,
}

/// Retires a signing key at once (it is compromised): it leaves the JWKS, every token it signed is
/// refused by every node within the sync interval, and, when it was the one signing, its published
/// successor signs from now on. Refused, changing nothing, when no other key could sign.
pub async fn retire_signing_key(
    store: &dyn Store,
    kid: &Kid,
) -> Result<RetiredSigningKey, ServiceError> {
    use keyfob_domain::signing::{KeyTimes, RetireError, plan_retirement};
    let now = Timestamp::now();
    let rows = store.list_signing_keys().await?;
    let times: Vec<KeyTimes<'_>> = rows
        .iter()
        .map(|r| KeyTimes {
            kid: &r.kid,
            activates_at: r.activates_at,
            retires_at: r.retires_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        })
        .collect();
    let heir = plan_retirement(&times, kid, now).map_err(|e| match e {
        RetireError::Unknown(_) => ServiceError::NotFound(e.to_string()),
        other => ServiceError::Invalid(other.to_string()),
    })?;
    let stored_heir = heir.as_ref().map(|h| keyfob_store::SigningHeir {
        kid: h.kid.clone(),
        activates_at: h.activates_at,
        keep_signing: h.keep_signing,
    });
    if !store
        .retire_signing_key(kid, now, stored_heir.as_ref())
        .await?
    {
        return Err(ServiceError::Invalid(
            RetireError::AlreadyRetired(kid.to_string()).to_string(),
        ));
    }
    Ok(RetiredSigningKey {
        kid: kid.to_owned(),
        heir,
    })
}
