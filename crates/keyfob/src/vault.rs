//! The vault at work: each account's data key (unsealed once, then kept in memory) and field list
//! (reread every few seconds, so a change made on another node applies within that time), and the
//! sealing, masking and revealing of sensitive values in records.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keyfob_domain::time::Timestamp;
use keyfob_domain::vault::{
    self, RevealRequest, SensitiveFields, SensitiveKind, VaultError, associated_data, make_envelope,
};
use keyfob_store::{AccountId, AccountVaultRow, Store, StoreError};
use serde_json::{Map, Value};

use crate::crypto::{CHECK_SETTING, DataKey, MasterKey};

/// How long a node trusts the field list it read before reading it again.
const FIELDS_TTL: Duration = Duration::from_secs(5);
/// What a value that cannot be decrypted (tampered, moved, or sealed with another key) reads as.
pub const UNREADABLE: &str = "[unreadable]";

#[derive(Debug, thiserror::Error)]
pub enum VaultServiceError {
    #[error(transparent)]
    Invalid(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This node's master key no longer opens the database's data keys: it was rotated while the
    /// node ran. The node keeps serving what it holds, and needs a restart with the new key.
    #[error("the master key was rotated; restart this node with the new key")]
    StaleMasterKey,
    #[error("{0}")]
    Internal(#[from] anyhow::Error),
}

/// One account's vault, as a node holds it.
pub struct AccountVault {
    account_id: AccountId,
    key: Arc<DataKey>,
    pub fields: SensitiveFields,
    loaded_at: Timestamp,
}

/// Every account's vault this node has used.
pub struct Vault {
    store: Arc<dyn Store>,
    master: Arc<MasterKey>,
    accounts: RwLock<HashMap<AccountId, Arc<AccountVault>>>,
}

impl Vault {
    pub fn new(store: Arc<dyn Store>, master: Arc<MasterKey>) -> Vault {
        Vault {
            store,
            master,
            accounts: RwLock::new(HashMap::new()),
        }
    }

    /// The account's vault, made on first use (a new data key, the default field list).
    pub async fn account(
        &self,
        account_id: &AccountId,
    ) -> Result<Arc<AccountVault>, VaultServiceError> {
        let now = Timestamp::now();
        let cached = self
            .accounts
            .read()
            .expect("vault cache lock")
            .get(account_id)
            .cloned();
        if let Some(vault) = &cached
            && now.since(vault.loaded_at) < FIELDS_TTL
        {
            return Ok(vault.clone());
        }
        let row = match self.store.find_account_vault(account_id).await? {
            Some(row) => row,
            None => self.create(account_id, now).await?,
        };
        let key = match cached {
            // The data key never changes (a master-key rotation seals the same key again).
            Some(old) => old.key.clone(),
            None => match DataKey::unseal(&self.master, account_id, &row.data_key) {
                Ok(key) => Arc::new(key),
                Err(err) => {
                    self.check_master().await?;
                    return Err(err.into());
                }
            },
        };
        let vault = Arc::new(AccountVault {
            account_id: account_id.to_owned(),
            key,
            fields: SensitiveFields::from_names(row.sensitive_fields.into_vec()).map_err(|e| {
                anyhow::anyhow!("the stored sensitive fields of {account_id} do not read: {e}")
            })?,
            loaded_at: now,
        });
        self.accounts
            .write()
            .expect("vault cache lock")
            .insert(account_id.clone(), vault.clone());
        Ok(vault)
    }

    async fn create(
        &self,
        account_id: &AccountId,
        now: Timestamp,
    ) -> Result<AccountVaultRow, VaultServiceError> {
        // A node still running with a master key that was rotated away must not seal a new data
        // key with it: the key would be lost at its next start.
        self.check_master().await?;
        let (_, sealed) = DataKey::generate(&self.master, account_id);

        let row = AccountVaultRow {
            account_id: account_id.to_owned(),
            data_key: sealed,
            sensitive_fields: vault::DEFAULT_SENSITIVE_FIELDS
                .iter()
                .map(|f| f.to_string())
                .collect(),
            created_at: now,
            updated_at: now,
        };
        Ok(self.store.init_account_vault(&row).await?)
    }

    /// Fails with [`VaultServiceError::StaleMasterKey`] if the database's master key is no longer
    /// this node's.
    async fn check_master(&self) -> Result<(), VaultServiceError> {
        let check = self
            .store
            .get_setting(CHECK_SETTING)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the master key check value is missing"))?;
        self.master.verify_check_value(&check).map_err(|_| {
            tracing::error!("the master key was rotated: restart this node with the new key");
            VaultServiceError::StaleMasterKey
        })
    }

    /// Replaces an account's field list; this node uses it at once, the others within seconds.
    pub async fn set_fields(
        &self,
        account_id: &AccountId,
        fields: &SensitiveFields,
    ) -> Result<(), VaultServiceError> {
        self.account(account_id).await?;
        self.store
            .set_sensitive_fields(
                account_id,
                &fields.names().to_vec().into(),
                Timestamp::now(),
            )
            .await?;
        self.accounts
            .write()
            .expect("vault cache lock")
            .remove(account_id);
        Ok(())
    }
}

impl AccountVault {
    /// Seals every sensitive value of a document a client sent (checking them first) in place.
    pub fn seal_new(
        &self,
        record_id: &str,
        doc: &mut Map<String, Value>,
    ) -> Result<(), VaultError> {
        vault::seal_document::<VaultError>(doc, &self.fields, &mut |path, value| {
            Ok(self.seal_value(record_id, path, &value))
        })
    }

    /// Checks a client's patch without sealing it (it is sealed once merged).
    pub fn check_patch(&self, patch: &Map<String, Value>) -> Result<(), VaultError> {
        let mut copy = patch.clone();
        vault::seal_document::<VaultError>(&mut copy, &self.fields, &mut |_, _| Ok(Value::Null))
    }

    /// Seals what is still in clear in a stored document merged with a checked patch.
    pub fn seal_merged(
        &self,
        record_id: &str,
        doc: &mut Map<String, Value>,
    ) -> Result<(), VaultError> {
        vault::reseal_document::<VaultError>(doc, &self.fields, &mut |path, value| {
            Ok(self.seal_value(record_id, path, &value))
        })
    }

    fn seal_value(&self, record_id: &str, path: &str, value: &str) -> Value {
        let aad = associated_data(&self.account_id, record_id, path);
        make_envelope(self.key.seal(value.as_bytes(), &aad))
    }

    /// The paths of the encrypted values in a stored document.
    pub fn sealed_paths(doc: &Value) -> Vec<String> {
        let mut copy = doc.clone();
        let mut paths = Vec::new();
        let _ = vault::open_document::<()>(&mut copy, &mut |found, _| {
            paths.push(found.path);
            Ok(Value::Null)
        });
        paths.sort();
        paths
    }

    /// Replaces every encrypted value of a stored document with its masked form, or its clear form
    /// where `reveal` asks for it. Returns the paths revealed.
    pub fn present(&self, record_id: &str, doc: &mut Value, reveal: &RevealRequest) -> Vec<String> {
        let mut revealed = Vec::new();
        let _ = vault::open_document::<()>(doc, &mut |found, payload| {
            let aad = associated_data(&self.account_id, record_id, &found.path);
            let Ok(plain) = self.key.open(payload, &aad) else {
                tracing::warn!(record_id, path = %found.path, "a sensitive value cannot be decrypted");
                return Ok(Value::String(UNREADABLE.to_owned()));
            };
            let text = String::from_utf8_lossy(&plain).into_owned();
            if reveal.wants(&found.path, found.name) {
                revealed.push(found.path);
                Ok(Value::String(text))
            } else {
                Ok(Value::String(vault::mask(
                    SensitiveKind::for_field(found.name),
                    &text,
                )))
            }
        });
        revealed
    }
}
