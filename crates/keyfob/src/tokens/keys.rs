//! Signing keys: generated with aws-lc-rs, stored sealed by the master key, published as a JWKS.
//!
//! A key signs from `activates_at` until `retires_at`, and its public half stays in the JWKS until
//! `expires_at`, when no token it signed is alive any more. Rotation adds the next key with a later
//! `activates_at`, so it is published before it signs.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use keyfob_store::{Kid, SigningKeyRow, Timestamp};

use crate::config::SigningAlg;
use crate::crypto::MasterKey;

/// A key that can sign.
pub struct Signer {
    pub kid: Kid,
    pub alg: Algorithm,
    pub key: EncodingKey,
    pub activates_at: Timestamp,
    pub retires_at: Option<Timestamp>,
}

/// A key that can verify.
pub struct Verifier {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// Every key a node knows, as loaded from the database.
pub struct KeySet {
    signers: Vec<Signer>,
    verifiers: HashMap<Kid, Verifier>,
    /// Keys the operator retired (compromised): out of the JWKS, every token they signed refused.
    retired: HashSet<Kid>,
    /// The JWKS document, serialised once.
    pub jwks_json: String,
}

impl KeySet {
    /// The key that signs at `now`: the latest activated one that has not retired.
    pub fn signer(&self, now: Timestamp) -> Option<&Signer> {
        self.signers
            .iter()
            .filter(|s| s.activates_at <= now && s.retires_at.is_none_or(|r| r > now))
            .max_by_key(|s| s.activates_at)
    }

    pub fn verifier(&self, kid: &str) -> Option<&Verifier> {
        self.verifiers.get(kid)
    }

    /// Whether the operator retired `kid` (`keyfob signing-keys retire`).
    pub fn is_retired(&self, kid: &str) -> bool {
        self.retired.contains(kid)
    }

    pub fn kids(&self) -> Vec<&str> {
        self.verifiers.keys().map(Kid::as_str).collect()
    }
}

/// What a signing key's private half is sealed with: its `kid`.
pub fn signing_key_aad(kid: &str) -> Vec<u8> {
    format!("signing-key:{kid}").into_bytes()
}

fn jwt_alg(alg: SigningAlg) -> Algorithm {
    match alg {
        SigningAlg::EdDsa => Algorithm::EdDSA,
        SigningAlg::Es256 => Algorithm::ES256,
    }
}

/// Makes a new key pair, sealed with the master key. It signs from `activates_at`.
pub fn generate_signing_key(
    alg: SigningAlg,
    master: &MasterKey,
    now: Timestamp,
    activates_at: Timestamp,
) -> anyhow::Result<SigningKeyRow> {
    let rng = SystemRandom::new();
    let kid = Kid::from(uuid::Uuid::now_v7().simple().to_string());
    let (pkcs8, jwk) = match alg {
        SigningAlg::EdDsa => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).context("generating an Ed25519 key")?;
            let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).context("reading the new key")?;
            let jwk = serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": B64URL.encode(pair.public_key().as_ref()),
                "kid": kid,
                "use": "sig",
                "alg": alg.as_str(),
            });
            (doc.as_ref().to_vec(), jwk)
        }
        SigningAlg::Es256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .context("generating a P-256 key")?;
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                .context("reading the new key")?;
            // An uncompressed point: 0x04, then x and y of 32 bytes each.
            let point = pair.public_key().as_ref();
            if point.len() != 65 || point[0] != 4 {
                bail!("unexpected P-256 public key encoding");
            }
            let jwk = serde_json::json!({
                "kty": "EC",
                "crv": "P-256",
                "x": B64URL.encode(&point[1..33]),
                "y": B64URL.encode(&point[33..65]),
                "kid": kid,
                "use": "sig",
                "alg": alg.as_str(),
            });
            (doc.as_ref().to_vec(), jwk)
        }
    };
    let sealed = master.seal(&pkcs8, &signing_key_aad(&kid));
    Ok(SigningKeyRow {
        private_key: sealed,
        public_jwk: serde_json::to_string(&jwk)?,
        kid,
        alg,
        created_at: now,
        activates_at,
        retires_at: None,
        expires_at: None,
        revoked_at: None,
    })
}

/// Builds the key set from stored rows, dropping keys whose public half has expired and keys the
/// operator retired.
pub fn load_key_set(
    rows: &[SigningKeyRow],
    master: &MasterKey,
    now: Timestamp,
) -> anyhow::Result<KeySet> {
    let mut signers = Vec::new();
    let mut verifiers = HashMap::new();
    let mut retired = HashSet::new();
    let mut jwks = JwkSet { keys: Vec::new() };
    for row in rows {
        if row.revoked_at.is_some() {
            retired.insert(row.kid.clone());
            continue;
        }
        if row.expires_at.is_some_and(|e| e <= now) {
            continue;
        }
        let alg = jwt_alg(row.alg);
        let jwk: Jwk = serde_json::from_str(&row.public_jwk)
            .with_context(|| format!("public key of {} is not a JWK", row.kid))?;
        let decoding = DecodingKey::from_jwk(&jwk)
            .with_context(|| format!("public key of {} is unusable", row.kid))?;
        verifiers.insert(row.kid.clone(), Verifier { alg, key: decoding });
        jwks.keys.push(jwk);
        if row.retires_at.is_none_or(|r| r > now) {
            let der = master
                .open(&row.private_key, &signing_key_aad(&row.kid))
                .with_context(|| format!("cannot open signing key {}", row.kid))?;
            let key = match alg {
                Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
                _ => EncodingKey::from_ec_der(&der),
            };
            signers.push(Signer {
                kid: row.kid.clone(),
                alg,
                key,
                activates_at: row.activates_at,
                retires_at: row.retires_at,
            });
        }
    }
    Ok(KeySet {
        signers,
        verifiers,
        retired,
        jwks_json: serde_json::to_string(&jwks)?,
    })
}
