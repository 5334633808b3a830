//! Signing keys: generated with aws-lc-rs, stored sealed by the master key, published as a JWKS.
//!
//! A key signs from `activates_at` until `retires_at`, and its public half stays in the JWKS until
//! `expires_at`, when no token it signed is alive any more. Rotation adds the next key with a later
//! `activates_at`, so it is published before it signs.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, bail};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair,
    RsaPublicKeyComponents,
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
    /// The same algorithm, by Keyfob's name for it.
    pub signing_alg: SigningAlg,
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

    /// The algorithms of the keys that sign now or will sign later (a published successor).
    pub fn signing_algs(&self) -> Vec<SigningAlg> {
        self.signers.iter().map(|s| s.signing_alg).collect()
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
        SigningAlg::Rs256 => Algorithm::RS256,
    }
}

/// The size of a new RS256 key. 2048 bits is what the large providers publish and every RS256
/// verifier accepts, good (NIST SP 800-57: 112 bits of security) through 2030; a signing key
/// lives for weeks to months between rotations. 3072 bits would make every signature some three
/// times as slow (RSA's private operation grows with the cube of the key size), on the token
/// endpoint's path, for a margin that rotation already gives.
const RSA_KEY_SIZE: KeySize = KeySize::Rsa2048;

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
        SigningAlg::Rs256 => {
            let pair = RsaKeyPair::generate(RSA_KEY_SIZE).context("generating an RSA key")?;
            let doc = pair.as_der().context("encoding the new RSA key")?;
            let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            let jwk = serde_json::json!({
                "kty": "RSA",
                "n": B64URL.encode(&public.n),
                "e": B64URL.encode(&public.e),
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
    super::provider::install();
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
            let key = match row.alg {
                SigningAlg::EdDsa => EncodingKey::from_ed_der(&der),
                SigningAlg::Es256 => EncodingKey::from_ec_der(&der),
                SigningAlg::Rs256 => EncodingKey::from_rsa_der(
                    &rsa_private_key(&der)
                        .with_context(|| format!("signing key {} is not an RSA key", row.kid))?,
                ),
            };
            signers.push(Signer {
                kid: row.kid.clone(),
                alg,
                signing_alg: row.alg,
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

/// `rsaEncryption` (RFC 8017, appendix C): the algorithm of an RSA key's PKCS #8 document.
const RSA_ENCRYPTION: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The PKCS #1 `RSAPrivateKey` inside an RSA key's PKCS #8 document, which is what jsonwebtoken
/// signs with. The key is stored as PKCS #8, as the other algorithms' keys are; this reads the
/// `privateKey` of its `PrivateKeyInfo` (RFC 5208) with the `pkcs8` crate and checks that
/// aws-lc-rs reads it as an RSA key, so a damaged key fails when it is loaded rather than at its
/// first signature.
fn rsa_private_key(document: &[u8]) -> anyhow::Result<Vec<u8>> {
    let info = pkcs8::PrivateKeyInfo::try_from(document)
        .map_err(|e| anyhow::anyhow!("not a PKCS #8 document: {e}"))?;
    if info.algorithm.oid != RSA_ENCRYPTION {
        bail!(
            "a PKCS #8 document of another algorithm ({})",
            info.algorithm.oid
        );
    }
    RsaKeyPair::from_der(info.private_key)
        .map_err(|e| anyhow::anyhow!("unreadable RSA key: {e}"))?;
    Ok(info.private_key.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_makes_a_key_that_signs_and_is_published() {
        let master = MasterKey::generate();
        let epoch = Timestamp::UNIX_EPOCH;
        for alg in SigningAlg::ALL {
            let row = generate_signing_key(alg, &master, epoch, epoch).unwrap();
            assert_eq!(row.alg, alg);
            let jwk: serde_json::Value = serde_json::from_str(&row.public_jwk).unwrap();
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], row.kid.as_str());
            let set = load_key_set(&[row], &master, epoch).unwrap();
            let signer = set.signer(epoch).expect("the new key signs");
            assert_eq!(signer.alg, jwt_alg(alg));
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(signer.alg),
                &serde_json::json!({"sub": "x"}),
                &signer.key,
            )
            .unwrap();
            let verifier = set.verifier(&signer.kid).unwrap();
            let mut validation = jsonwebtoken::Validation::new(verifier.alg);
            validation.required_spec_claims.clear();
            validation.validate_exp = false;
            validation.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, &verifier.key, &validation)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
        }
    }

    #[test]
    fn an_rsa_key_is_published_with_its_modulus_and_exponent() {
        let master = MasterKey::generate();
        let epoch = Timestamp::UNIX_EPOCH;
        let row = generate_signing_key(SigningAlg::Rs256, &master, epoch, epoch).unwrap();
        let jwk: serde_json::Value = serde_json::from_str(&row.public_jwk).unwrap();
        assert_eq!(jwk["kty"], "RSA");
        let n = B64URL.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len() * 8, 2048);
        assert_eq!(jwk["e"], "AQAB");
        // The private half is sealed like the others' keys, bound to its kid.
        assert!(
            master
                .open(&row.private_key, &signing_key_aad("another"))
                .is_err()
        );
        let pkcs8 = master
            .open(&row.private_key, &signing_key_aad(&row.kid))
            .unwrap();
        assert!(rsa_private_key(&pkcs8).is_ok());
    }

    #[test]
    fn a_damaged_rsa_key_is_refused() {
        assert!(rsa_private_key(b"").is_err());
        assert!(rsa_private_key(&[0x30, 0x82, 0xff]).is_err());
        assert!(rsa_private_key(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        assert!(rsa_private_key(doc.as_ref()).is_err());
    }
}
