//! jsonwebtoken's cryptography, with one change: an RS256 signer keeps its parsed key.
//!
//! jsonwebtoken's aws-lc-rs provider parses an RSA key's DER for every signature, which costs
//! about half as much again as the RSA signature itself (see docs/BENCHMARKS.md, "RS256"). This
//! provider hands RS256 signing to a key pair parsed once per signing key and kept; every other
//! algorithm, every verification and the JWK helpers are jsonwebtoken's own. The signing itself
//! is aws-lc-rs's (`RsaKeyPair::sign`, PKCS #1 v1.5 with SHA-256), as in jsonwebtoken.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, aws_lc};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, EncodingKey};

/// Parsed RSA keys by their DER. A node holds a few signing keys at a time; past this many the
/// cache starts over rather than keep the keys of long-retired rotations.
const MAX_KEPT_KEYS: usize = 16;

static RSA_KEYS: LazyLock<RwLock<HashMap<Vec<u8>, Arc<RsaKeyPair>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// Makes this provider the process's, once; later calls do nothing. Until it is installed (or if
/// jsonwebtoken was used before), jsonwebtoken's own provider signs, correctly and more slowly.
pub fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| CryptoProvider {
        signer_factory: signer,
        verifier_factory: aws_lc::DEFAULT_PROVIDER.verifier_factory,
        key_utils: aws_lc::DEFAULT_PROVIDER.key_utils.clone(),
    });
    let _ = provider.install_default();
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    if *algorithm != Algorithm::RS256 {
        return (aws_lc::DEFAULT_PROVIDER.signer_factory)(algorithm, key);
    }
    Ok(Box::new(Rs256Signer(rsa_key(key.as_bytes())?)))
}

/// The parsed key pair of a PKCS #1 DER RSA key, parsed once.
fn rsa_key(der: &[u8]) -> Result<Arc<RsaKeyPair>> {
    if let Some(pair) = RSA_KEYS.read().expect("key cache lock").get(der) {
        return Ok(pair.clone());
    }
    let pair =
        Arc::new(RsaKeyPair::from_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?);
    let mut keys = RSA_KEYS.write().expect("key cache lock");
    if keys.len() >= MAX_KEPT_KEYS {
        keys.clear();
    }
    keys.insert(der.to_vec(), pair.clone());
    Ok(pair)
}

struct Rs256Signer(Arc<RsaKeyPair>);

impl signature::Signer<Vec<u8>> for Rs256Signer {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let mut signature = vec![0; self.0.public_modulus_len()];
        self.0
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(signature::Error::from_source)?;
        Ok(signature)
    }
}

impl JwtSigner for Rs256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{KeyPair as _, RsaPublicKeyComponents};
    use jsonwebtoken::{DecodingKey, Header, Validation, decode, encode};

    use super::*;

    #[test]
    fn rs256_tokens_signed_with_a_kept_key_verify() {
        install();
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let der = pkcs8::PrivateKeyInfo::try_from(pkcs8.as_ref())
            .unwrap()
            .private_key
            .to_vec();
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let encoding = EncodingKey::from_rsa_der(&der);
        let decoding = DecodingKey::from_rsa_raw_components(&public.n, &public.e);
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        for n in 0..3 {
            let claims = serde_json::json!({"sub": "x", "n": n});
            let token = encode(&Header::new(Algorithm::RS256), &claims, &encoding).unwrap();
            let back = decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
            assert_eq!(back.claims, claims);
        }
        // The signer this provider makes (whichever provider the process installed first).
        let kept = signer(&Algorithm::RS256, &encoding).unwrap();
        let signature = signature::Signer::try_sign(kept.as_ref(), b"message").unwrap();
        public
            .verify(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                b"message",
                &signature,
            )
            .unwrap();
        assert!(RSA_KEYS.read().unwrap().contains_key(&der));
        // Not an RSA key: refused, not cached.
        assert!(rsa_key(b"not a key").is_err());
    }
}
