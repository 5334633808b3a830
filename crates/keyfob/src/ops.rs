//! Operations that both the CLI and the dashboard perform, so each rule is written once.

use keyfob_domain::ApiKey;
use keyfob_domain::email::Email;
use keyfob_domain::oauth;
use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_store::{Account, ApiKeyRow, AppRow, Owner, SigningKeyRow, Store, UserRow};

use crate::clock::now_ms;
use crate::config::SigningAlg;
use crate::crypto::MasterKey;
use crate::passwords::{Passwords, check_new_password};
use crate::tokens::generate_signing_key;

/// Longest API key name.
pub const MAX_KEY_NAME_LEN: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] keyfob_store::StoreError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Makes an account with its first owner.
pub async fn create_account(
    store: &dyn Store,
    passwords: &Passwords,
    email: &str,
    password: String,
) -> Result<(Account, Owner), OpsError> {
    let email = Email::parse(email).map_err(|e| OpsError::Invalid(e.to_string()))?;
    check_new_password(&password).map_err(|e| OpsError::Invalid(e.to_string()))?;
    if store.find_owner_by_email(email.as_str()).await?.is_some() {
        return Err(keyfob_store::StoreError::Conflict("email").into());
    }
    let password_hash = passwords
        .hash(password)
        .await
        .map_err(|e| OpsError::Other(e.into()))?;
    let now = now_ms();
    let account = Account {
        id: uuid::Uuid::now_v7().to_string(),
        name: email.as_str().to_owned(),
        created_at: now,
    };
    let owner = Owner {
        id: uuid::Uuid::now_v7().to_string(),
        account_id: account.id.clone(),
        email: email.as_str().to_owned(),
        password_hash,
        created_at: now,
    };
    store.create_account(&account, &owner).await?;
    Ok((account, owner))
}

/// Finds an account by its id or by an owner's email.
pub async fn resolve_account(store: &dyn Store, id_or_email: &str) -> Result<Account, OpsError> {
    let not_found = || OpsError::NotFound(format!("no account {id_or_email}"));
    if id_or_email.contains('@') {
        let email = Email::parse(id_or_email).map_err(|_| not_found())?;
        let owner = store
            .find_owner_by_email(email.as_str())
            .await?
            .ok_or_else(not_found)?;
        return store
            .find_account(&owner.account_id)
            .await?
            .ok_or_else(not_found);
    }
    store.find_account(id_or_email).await?.ok_or_else(not_found)
}

/// Makes an API key; the key itself is returned once and never stored.
pub async fn create_api_key(
    store: &dyn Store,
    account_id: &str,
    name: &str,
) -> Result<(ApiKeyRow, ApiKey), OpsError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_KEY_NAME_LEN {
        return Err(OpsError::Invalid(format!(
            "the key name must be 1 to {MAX_KEY_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(OpsError::Invalid(
            "the key name must not contain control characters".into(),
        ));
    }
    let key = ApiKey::generate();
    let row = ApiKeyRow {
        id: uuid::Uuid::now_v7().to_string(),
        account_id: account_id.to_owned(),
        name: name.to_owned(),
        prefix: key.display_prefix().to_owned(),
        key_hash: key.hash(),
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
        tokens_revoked_before: None,
    };
    store.insert_api_key(&row).await?;
    Ok((row, key))
}

/// Makes the first signing key of a new database.
pub async fn ensure_signing_key(
    store: &dyn Store,
    master: &MasterKey,
    alg: SigningAlg,
) -> Result<(), OpsError> {
    let now = now_ms();
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
) -> Result<SigningKeyRow, OpsError> {
    let now = now_ms();
    let row = generate_signing_key(alg, master, now, now + publish_secs * 1000)?;
    store
        .rotate_signing_key(&row, keep_public_secs * 1000)
        .await?;
    Ok(row)
}

/// A signing key retired at once, and the key that signs in its place if that changed.
#[derive(Debug)]
pub struct RetiredSigningKey {
    pub kid: String,
    pub heir: Option<keyfob_domain::signing::Heir>,
}

/// Retires a signing key at once (it is compromised): it leaves the JWKS, every token it signed is
/// refused by every node within the sync interval, and, when it was the one signing, its published
/// successor signs from now on. Refused, changing nothing, when no other key could sign.
pub async fn retire_signing_key(
    store: &dyn Store,
    kid: &str,
) -> Result<RetiredSigningKey, OpsError> {
    use keyfob_domain::signing::{KeyTimes, RetireError, plan_retirement};
    let now = now_ms();
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
        RetireError::Unknown(_) => OpsError::NotFound(e.to_string()),
        other => OpsError::Invalid(other.to_string()),
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
        return Err(OpsError::Invalid(
            RetireError::AlreadyRetired(kid.to_owned()).to_string(),
        ));
    }
    Ok(RetiredSigningKey {
        kid: kid.to_owned(),
        heir,
    })
}

/// What registering an application needs.
#[derive(Debug, Clone, Default)]
pub struct NewApp {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub origins: Vec<String>,
    /// A public app (a single-page or mobile app) has no secret and must use PKCE.
    pub public: bool,
    /// The most permissions the app may ask a user for, comma- or space-separated.
    pub max_permissions: String,
    /// A session ends when its refresh token goes unused this long (seconds); `None`: never.
    pub refresh_idle_secs: Option<i64>,
    /// A session ends this long after login whatever its use (seconds); `None`: never.
    pub refresh_max_age_secs: Option<i64>,
    /// Whether the app may receive tokens in the URL fragment (`response_type=token`, the
    /// guide's flow for apps without a back end). Off unless asked for: tokens in a URL are
    /// easier to leak (history, logs) than a code exchanged with PKCE.
    pub allow_fragment: bool,
}

/// The longest idle or absolute session limit an app may set: ten years, in seconds.
pub const MAX_SESSION_LIMIT_SECS: i64 = 10 * 365 * 24 * 3600;

/// A registered application and, for a confidential one, its secret (shown once).
#[derive(Debug)]
pub struct CreatedApp {
    pub app: AppRow,
    pub client_secret: Option<String>,
}

/// Registers an application after checking every URI, origin and permission.
pub async fn create_app(
    store: &dyn Store,
    account_id: &str,
    new: NewApp,
) -> Result<CreatedApp, OpsError> {
    let invalid = |m: String| OpsError::Invalid(m);
    let name = new.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_KEY_NAME_LEN
        || name.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "the app name must be 1 to {MAX_KEY_NAME_LEN} printable characters"
        )));
    }
    if new.redirect_uris.is_empty() {
        return Err(invalid("give at least one redirect URI".into()));
    }
    if new.redirect_uris.len() > 20 || new.origins.len() > 20 {
        return Err(invalid("at most 20 redirect URIs and 20 origins".into()));
    }
    for uri in &new.redirect_uris {
        oauth::check_redirect_uri(uri).map_err(|e| invalid(e.to_string()))?;
    }
    for origin in &new.origins {
        oauth::check_origin(origin).map_err(|e| invalid(e.to_string()))?;
    }
    let max = oauth::parse_scope(&new.max_permissions).map_err(|e| invalid(e.to_string()))?;
    if let Some(reserved) = max
        .iter()
        .find(|p| keyfob_domain::permission::RESERVED_RESOURCES.contains(&p.resource()))
    {
        return Err(invalid(format!(
            "`{reserved}` cannot be granted by users to an application; only the account's API keys and the tokens they mint hold it"
        )));
    }
    if max.is_empty() {
        return Err(invalid(
            "give the most permissions the app may ask for, e.g. deals.read,deals.write".into(),
        ));
    }
    for (limit, what) in [
        (new.refresh_idle_secs, "idle limit"),
        (new.refresh_max_age_secs, "maximum session age"),
    ] {
        if limit.is_some_and(|secs| !(1..=MAX_SESSION_LIMIT_SECS).contains(&secs)) {
            return Err(invalid(format!(
                "the {what} must be a whole number of seconds from 1 to {MAX_SESSION_LIMIT_SECS}"
            )));
        }
    }
    let client_secret = (!new.public).then(|| format!("kfs_{}", random_token()));
    let app = AppRow {
        client_id: format!("app_{}", uuid::Uuid::new_v4().simple()),
        account_id: account_id.to_owned(),
        name: name.to_owned(),
        public: i64::from(new.public),
        client_secret_hash: client_secret.as_deref().map(hash_secret),
        redirect_uris: serde_json::to_string(&new.redirect_uris).map_err(anyhow::Error::from)?,
        origins: serde_json::to_string(&new.origins).map_err(anyhow::Error::from)?,
        max_permissions: serde_json::to_string(
            &max.iter().map(ToString::to_string).collect::<Vec<_>>(),
        )
        .map_err(anyhow::Error::from)?,
        refresh_idle_secs: new.refresh_idle_secs,
        refresh_absolute_secs: new.refresh_max_age_secs,
        allow_fragment: new.allow_fragment,
        created_at: now_ms(),
        revoked_at: None,
    };
    store.insert_app(&app).await?;
    Ok(CreatedApp { app, client_secret })
}

/// Makes an end user (imports and tests; users normally sign up on Keyfob's pages).
pub async fn create_user(
    store: &dyn Store,
    passwords: &Passwords,
    email: &str,
    password: String,
) -> Result<UserRow, OpsError> {
    let email = Email::parse(email).map_err(|e| OpsError::Invalid(e.to_string()))?;
    check_new_password(&password).map_err(|e| OpsError::Invalid(e.to_string()))?;
    if store.find_user_by_email(email.as_str()).await?.is_some() {
        return Err(keyfob_store::StoreError::Conflict("email").into());
    }
    let password_hash = passwords
        .hash(password)
        .await
        .map_err(|e| OpsError::Other(e.into()))?;
    let now = now_ms();
    let user = UserRow {
        id: uuid::Uuid::now_v7().to_string(),
        email: email.as_str().to_owned(),
        password_hash,
        created_at: now,
        password_changed_at: now,
    };
    store.insert_user(&user).await?;
    Ok(user)
}

/// What a master-key rotation sealed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterKeyRotation {
    pub signing_keys: usize,
    pub data_keys: usize,
    pub refresh_answers: usize,
}

/// Seals everything the master key protects under `new`, in one transaction: the signing keys,
/// the accounts' data keys (not the values they encrypt, which stay as they are) and the refresh
/// retry answers still kept, and stores `new`'s check value. Fails, changing nothing, if `old` is
/// not the database's master key or anything it sealed does not open.
pub async fn rotate_master_key(
    store: &dyn Store,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<MasterKeyRotation, OpsError> {
    let check = store
        .get_setting(crate::crypto::CHECK_SETTING)
        .await?
        .ok_or_else(|| OpsError::Invalid("this database has no master key yet".into()))?;
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
    store.write_resealed(&resealed).await?;
    Ok(MasterKeyRotation {
        signing_keys: resealed.signing_keys.len(),
        data_keys: resealed.data_keys.len(),
        refresh_answers: resealed.refresh_answers.len(),
    })
}
