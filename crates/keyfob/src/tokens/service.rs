//! Minting and verifying JWTs. A verified token is remembered by the SHA-256 of its bytes until it
//! expires, so a client that reuses its token pays a hash and a lookup instead of a signature
//! check. Revocation is checked by the caller on every request, cached or not.

use std::sync::{Arc, RwLock};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation, decode, decode_header, encode};
use keyfob_domain::{Claims, PermissionSet};
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use super::keys::KeySet;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;
/// Verified tokens remembered at once.
const CACHE_CAPACITY: usize = 100_000;

/// Why a JWT was refused. Each is a 401; the message says which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's signing key (kid) is unknown")]
    UnknownKey,
    #[error("the token's signing key has been retired")]
    RetiredKey,
    #[error("the token's algorithm does not match its key")]
    WrongAlgorithm,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by someone else")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("no signing key is active")]
    NoSigningKey,
    #[error("the token's permissions are malformed")]
    BadPermissions,
}

/// A token whose signature and claims checked out, with its permissions already parsed.
#[derive(Debug)]
pub struct Verified {
    /// The signing key it was verified with: a cached token is refused once that key is retired.
    pub kid: String,
    pub claims: Claims,
    pub permission_set: PermissionSet,
}

impl std::ops::Deref for Verified {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.claims
    }
}

pub struct TokenService {
    keys: RwLock<Arc<KeySet>>,
    issuer: String,
    audience: String,
    verified: Cache<[u8; 32], Arc<Verified>>,
}

impl TokenService {
    pub fn new(keys: KeySet, issuer: String, audience: String) -> Self {
        TokenService {
            keys: RwLock::new(Arc::new(keys)),
            issuer,
            audience,
            verified: Cache::new(CACHE_CAPACITY),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.read().expect("key lock poisoned").clone()
    }

    /// Swaps in a freshly loaded key set. A key leaves the set once every token it signed has
    /// expired, or when the operator retires it: a cached token is checked against the set on
    /// every use, so it is refused then too.
    pub fn replace_keys(&self, keys: KeySet) {
        *self.keys.write().expect("key lock poisoned") = Arc::new(keys);
    }

    /// Signs `claims` with the key active at `now_ms`.
    pub fn sign(&self, claims: &Claims, now_ms: i64) -> Result<String, TokenError> {
        let keys = self.keys();
        let signer = keys.signer(now_ms).ok_or(TokenError::NoSigningKey)?;
        let mut header = Header::new(signer.alg);
        header.kid = Some(signer.kid.clone());
        encode(&header, claims, &signer.key).map_err(|_| TokenError::NoSigningKey)
    }

    /// Verifies a JWT's signature, algorithm, issuer, audience and times.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Arc<Verified>, TokenError> {
        let fingerprint: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.verified.get(&fingerprint) {
            let keys = self.keys();
            if keys.verifier(&claims.kid).is_none() {
                self.verified.remove(&fingerprint);
                return Err(unknown_key(&keys, &claims.kid));
            }
            if claims.exp + LEEWAY_SECS as i64 > now_secs {
                return Ok(claims);
            }
            self.verified.remove(&fingerprint);
            return Err(TokenError::Expired);
        }
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let keys = self.keys();
        let verifier = keys.verifier(kid).ok_or_else(|| unknown_key(&keys, kid))?;
        if header.alg != verifier.alg {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(verifier.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let data =
            decode::<Claims>(token, &verifier.key, &validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                _ => TokenError::Malformed,
            })?;
        let permissions = PermissionSet::parse(&data.claims.permissions)
            .map_err(|_| TokenError::BadPermissions)?;
        let verified = Arc::new(Verified {
            kid: kid.to_owned(),
            claims: data.claims,
            permission_set: permissions,
        });
        self.verified.insert(fingerprint, verified.clone());
        Ok(verified)
    }
}

/// A `kid` the key set cannot verify with: retired by the operator, or never known.
fn unknown_key(keys: &KeySet, kid: &str) -> TokenError {
    if keys.is_retired(kid) {
        TokenError::RetiredKey
    } else {
        TokenError::UnknownKey
    }
}
