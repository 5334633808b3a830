//! Rotating the master key.

use keyfob_store::Store;

use super::ServiceError;
use crate::crypto::MasterKey;

/// What a master-key rotation sealed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterKeyRotation {
    pub signing_keys: usize,
    pub data_keys: usize,
    pub refresh_answers: usize,
    pub totp_secrets: usize,
}

/// Seals everything the master key protects under `new`, in one transaction: the signing keys,
/// the accounts' data keys (not the values they encrypt, which stay as they are), the refresh
/// retry answers still kept and the second factors' TOTP secrets, and stores `new`'s check value. Fails, changing nothing, if `old` is
/// not the database's master key or anything it sealed does not open.
pub async fn rotate_master_key(
    store: &dyn Store,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<MasterKeyRotation, ServiceError> {
    let check = store
        .get_setting(crate::crypto::CHECK_SETTING)
        .await?
        .ok_or_else(|| ServiceError::Invalid("this database has no master key yet".into()))?;
    old.verify_check_value(&check)?;
    let mut resealed = keyfob_store::Resealed {
        check: new.check_value(),
        ..Default::default()
    };
    for key in store.list_signing_keys().await? {
        let aad = crate::tokens::signing_key_aad(&key.kid);
        let der = secrecy::SecretBox::new(Box::new(
            old.open(&key.private_key, &aad)
                .map_err(|e| anyhow::anyhow!("signing key {}: {e}", key.kid))?,
        ));
        resealed.signing_keys.push((
            key.kid.clone(),
            new.seal(secrecy::ExposeSecret::expose_secret(&der), &aad),
        ));
    }
    for vault in store.list_account_vaults().await? {
        let sealed =
            crate::crypto::DataKey::reseal(old, new, &vault.account_id, &vault.data_key)
                .map_err(|e| anyhow::anyhow!("data key of account {}: {e}", vault.account_id))?;
        resealed.data_keys.push((vault.account_id, sealed));
    }
    for (hash, sealed) in store.sealed_refresh_answers().await? {
        let aad = crate::sessions::retry_aad(&hash);
        // An answer that does not open is useless anyway; it is left to expire.
        if let Ok(plain) = old.open(&sealed, &aad) {
            let plain = secrecy::SecretBox::new(Box::new(plain));
            resealed.refresh_answers.push((
                hash,
                new.seal(secrecy::ExposeSecret::expose_secret(&plain), &aad),
            ));
        }
    }
    for (holder, sealed) in store.list_totp_secrets().await? {
        let aad = crate::mfa::secret_aad(&holder);
        let plain = secrecy::SecretBox::new(Box::new(old.open(&sealed, &aad).map_err(|e| {
            anyhow::anyhow!("TOTP secret of {} {}: {e}", holder.kind(), holder.id())
        })?));
        resealed.totp_secrets.push((
            holder,
            new.seal(secrecy::ExposeSecret::expose_secret(&plain), &aad),
        ));
    }
    store.write_resealed(&resealed).await?;
    Ok(MasterKeyRotation {
        signing_keys: resealed.signing_keys.len(),
        data_keys: resealed.data_keys.len(),
        refresh_answers: resealed.refresh_answers.len(),
        totp_secrets: resealed.totp_secrets.len(),
    })
}
