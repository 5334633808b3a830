//! The master key and what it protects. The master key (256 bits) seals the signing keys in the
//! database with AES-256-GCM; nodes that share a database share the master key through
//! configuration (`KEYFOB_MASTER_KEY`) or a copied `master.key` file.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};

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

    /// Reads `DIR/master.key`, or makes it (mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("master.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return Self::from_hex(&text).with_context(|| format!("in {}", path.display()));
        }
        let key = Self::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        writeln!(file, "{}", hex::encode(key.0.expose_secret()))?;
        Ok(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.expose_secret()).expect("32-byte key")
    }

    /// Encrypts `plaintext`, bound to `aad` (what it is and whose), as base64 of nonce and
    /// ciphertext.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
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

    /// Decrypts what [`MasterKey::seal`] made with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        let bytes = B64.decode(sealed).context("sealed value is not base64")?;
        if bytes.len() < NONCE_LEN + 16 {
            bail!("sealed value is too short");
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
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
                "the master key does not match this database: give the same KEYFOB_MASTER_KEY (or master.key) to every node"
            ),
        }
    }
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
    fn check_value_detects_wrong_key() {
        let key = MasterKey::generate();
        let check = key.check_value();
        key.verify_check_value(&check).unwrap();
        assert!(MasterKey::generate().verify_check_value(&check).is_err());
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::load_or_create(dir.path()).unwrap();
        let b = MasterKey::load_or_create(dir.path()).unwrap();
        let sealed = a.seal(b"x", b"");
        assert_eq!(b.open(&sealed, b"").unwrap(), b"x");
    }
}
