//! The master key and what it protects. The master key (256 bits) seals the signing keys, the
//! accounts' vault data keys and the refresh retry answers in the database with AES-256-GCM; nodes
//! that share a database share the master key through configuration (`KEYFOB_MASTER_KEY`) or a
//! copied `master.key` file. A [`DataKey`] (one per account) encrypts that account's sensitive
//! field values.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};

const NONCE_LEN: usize = 12;
const CHECK_PLAINTEXT: &[u8] = b"keyfob master key check";
const CHECK_AAD: &[u8] = b"master-key-check";
pub const CHECK_SETTING: &str = "master_key_check";

/// The key that seals every other secret at rest. Never printed.
pub struct MasterKey(SecretBox<[u8; 32]>);

impl MasterKey {
    pub fn from_hex(hex_key: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(hex_key.trim()).context("the master key is not hex")?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the master key must be 32 bytes (64 hex characters)"))?;
        Ok(MasterKey(SecretBox::new(Box::new(key))))
    }

    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        MasterKey(SecretBox::new(Box::new(key)))
    }

    /// Reads the key file at `path`, or makes it (mode 0600) when it does not exist yet: the
    /// default `DIR/master.key` on first start.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            return Self::load(path);
        }
        let key = Self::generate();
        let mut file = private_file(path)?;
        writeln!(file, "{}", key.to_hex())?;
        file.sync_all()?;
        Ok(key)
    }

    /// Reads a key file (64 hex characters). A file others may read is reported, since the key
    /// opens every secret Keyfob keeps; it is not changed, as the operator may share it on purpose
    /// (a group that runs several nodes).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the master key file {}", path.display()))?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "the master key file can be read by other users; make it private (chmod 600)"
                );
            }
        }
        Self::from_hex(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Writes this key beside the key file at `path`, as `PATH.new` (mode 0600), ahead of
    /// [`MasterKey::install_pending`]: a rotation writes the new key to disk before it changes the
    /// database, so the key that opens the database is never only in memory.
    pub fn write_pending(&self, path: &Path) -> anyhow::Result<()> {
        let pending = pending_path(path);
        let _ = std::fs::remove_file(&pending);
        let mut file = private_file(&pending)?;
        writeln!(file, "{}", self.to_hex())?;
        file.sync_all()?;
        Ok(())
    }

    /// Puts `PATH.new` in place of the key file at `path` (an atomic rename).
    pub fn install_pending(path: &Path) -> anyhow::Result<()> {
        let from = pending_path(path);
        std::fs::rename(&from, path)
            .with_context(|| format!("cannot move {} to {}", from.display(), path.display()))
    }

    /// Forgets a pending key that was not used.
    pub fn discard_pending(path: &Path) {
        let _ = std::fs::remove_file(pending_path(path));
    }

    /// The key as hex, to write it to its file (or show it once, after a rotation).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.expose_secret())
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.expose_secret()).expect("32-byte key")
    }

    /// An HMAC-SHA256 key for one purpose (`info`), derived from the master key with
    /// HKDF-SHA256: every node with the same master key derives the same key, and neither reveals
    /// the master key nor the other purposes' keys.
    pub fn derive_hmac_key(&self, info: &'static [u8]) -> aws_lc_rs::hmac::Key {
        use aws_lc_rs::{hkdf, hmac};
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"keyfob").extract(self.0.expose_secret());
        let infos = [info];
        let okm = prk
            .expand(&infos, hmac::HMAC_SHA256)
            .expect("32 bytes are within HKDF-SHA256's output limit");
        hmac::Key::from(okm)
    }

    /// Encrypts `plaintext`, bound to `aad` (what it is and whose), as base64 of nonce and
    /// ciphertext.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        seal_with(&self.cipher(), plaintext, aad)
    }

    /// Decrypts what [`MasterKey::seal`] made with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        open_with(&self.cipher(), sealed, aad)
            .map_err(|_| anyhow::anyhow!("cannot decrypt: wrong master key or tampered value"))
    }

    /// A value stored once per database, so a node with the wrong master key refuses to start.
    pub fn check_value(&self) -> String {
        self.seal(CHECK_PLAINTEXT, CHECK_AAD)
    }

    pub fn verify_check_value(&self, stored: &str) -> anyhow::Result<()> {
        match self.open(stored, CHECK_AAD) {
            Ok(plain) if plain == CHECK_PLAINTEXT => Ok(()),
            _ => bail!(
                "the master key does not match this database: give every node the same key (KEYFOB_MASTER_KEY, --master-key-file or master.key)"
            ),
        }
    }
}

fn seal_with(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption does not fail for in-memory buffers");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    B64.encode(out)
}

fn open_with(cipher: &Aes256Gcm, sealed: &str, aad: &[u8]) -> anyhow::Result<Vec<u8>> {
    let bytes = B64.decode(sealed).context("sealed value is not base64")?;
    if bytes.len() < NONCE_LEN + 16 {
        bail!("sealed value is too short");
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| anyhow::anyhow!("cannot decrypt: wrong key or tampered value"))
}

/// What a data key is sealed with: its account, so a sealed key copied to another account's row
/// does not open.
fn data_key_aad(account_id: &str) -> Vec<u8> {
    format!("vault-data-key:{account_id}").into_bytes()
}

/// An account's data key (256 random bits): encrypts its sensitive values. Kept in the database
/// only sealed with the master key; held unsealed in memory once used, so requests do not unseal
/// it each time.
pub struct DataKey(Aes256Gcm);

impl DataKey {
    /// A new random key, and its sealed form to store.
    pub fn generate(master: &MasterKey, account_id: &str) -> (DataKey, String) {
        let mut key = SecretBox::new(Box::new([0u8; 32]));
        rand::rngs::OsRng.fill_bytes(key.expose_secret_mut());
        let sealed = master.seal(key.expose_secret(), &data_key_aad(account_id));
        let cipher = Aes256Gcm::new_from_slice(key.expose_secret()).expect("32-byte key");
        (DataKey(cipher), sealed)
    }

    /// Unseals a stored data key.
    pub fn unseal(master: &MasterKey, account_id: &str, sealed: &str) -> anyhow::Result<DataKey> {
        let bytes = SecretBox::new(Box::new(master.open(sealed, &data_key_aad(account_id))?));
        let cipher = Aes256Gcm::new_from_slice(bytes.expose_secret())
            .map_err(|_| anyhow::anyhow!("a data key must be 32 bytes"))?;
        Ok(DataKey(cipher))
    }

    /// Seals a stored data key again under another master key, without changing the data key.
    pub fn reseal(
        old: &MasterKey,
        new: &MasterKey,
        account_id: &str,
        sealed: &str,
    ) -> anyhow::Result<String> {
        let aad = data_key_aad(account_id);
        let bytes = SecretBox::new(Box::new(old.open(sealed, &aad)?));
        Ok(new.seal(bytes.expose_secret(), &aad))
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        seal_with(&self.0, plaintext, aad)
    }

    pub fn open(&self, sealed: &str, aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        open_with(&self.0, sealed, aad)
    }
}

/// Where a rotation writes the next key before it is installed: `PATH.new`.
fn pending_path(path: &Path) -> PathBuf {
    let mut pending = path.as_os_str().to_owned();
    pending.push(".new");
    PathBuf::from(pending)
}

/// Creates a new file that only its owner may read or write (mode 0600 on Unix).
fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_bound_to_aad() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"secret", b"kid-1");
        assert_eq!(key.open(&sealed, b"kid-1").unwrap(), b"secret");
        assert!(key.open(&sealed, b"kid-2").is_err());
        assert!(MasterKey::generate().open(&sealed, b"kid-1").is_err());
    }

    #[test]
    fn data_keys_are_sealed_per_account_and_survive_resealing() {
        let master = MasterKey::generate();
        let (key, sealed) = DataKey::generate(&master, "acct-1");
        let value = key.seal(b"123-45-6789", b"place");
        assert!(DataKey::unseal(&master, "acct-2", &sealed).is_err());
        let again = DataKey::unseal(&master, "acct-1", &sealed).unwrap();
        assert_eq!(again.open(&value, b"place").unwrap(), b"123-45-6789");
        assert!(again.open(&value, b"elsewhere").is_err());
        let next = MasterKey::generate();
        let resealed = DataKey::reseal(&master, &next, "acct-1", &sealed).unwrap();
        assert!(DataKey::unseal(&master, "acct-1", &resealed).is_err());
        let moved = DataKey::unseal(&next, "acct-1", &resealed).unwrap();
        assert_eq!(moved.open(&value, b"place").unwrap(), b"123-45-6789");
    }

    #[test]
    fn check_value_detects_wrong_key() {
        let key = MasterKey::generate();
        let check = key.check_value();
        key.verify_check_value(&check).unwrap();
        assert!(MasterKey::generate().verify_check_value(&check).is_err());
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let b = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let sealed = a.seal(b"x", b"");
        assert_eq!(b.open(&sealed, b"").unwrap(), b"x");
    }
}
