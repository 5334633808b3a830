//! Minting and verifying JWTs. A verified token is remembered by the SHA-256 of its bytes until it
//! expires, so a client that reuses its token pays a hash and a lookup instead of a signature
//! check. Revocation is checked by the caller on every request, cached or not.
//!
//! The cache is bounded in bytes, not entries: every distinct token a client sends may add an
//! entry, and tokens differ in size (permissions, long subjects), so a count alone would not bound
//! the memory. Each entry is weighed by the heap it keeps alive (see [`entry_bytes`]).

use std::sync::{Arc, RwLock};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation, decode, decode_header, encode};
use keyfob_domain::claims::ACCESS_TOKEN_TYP;
use keyfob_domain::id_token::{ID_TOKEN_TYP, IdTokenClaims, IdTokenFor};
use keyfob_domain::{Claims, PermissionSet, Timestamp};
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use super::keys::KeySet;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;
/// Default memory for verified tokens: about 8,000 typical tokens, which keeps the whole server
/// under 100 MB through the load test (docs/BENCHMARKS.md, "Memory").
pub const DEFAULT_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// What a typical entry weighs (a minted token with one permission: 1,000 bytes; measured, it
/// costs the process about 870), used only to tell the cache roughly how many entries to expect:
/// it sizes its table of recently evicted keys from that.
const TYPICAL_ENTRY_BYTES: u64 = 1000;

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
    #[error("the token is not an ID token")]
    NotAnIdToken,
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
    verified: Cache<[u8; 32], Arc<Verified>, EntryWeighter>,
}

/// Weighs a cache entry by the bytes it holds; see [`entry_bytes`].
#[derive(Debug, Clone, Copy)]
struct EntryWeighter;

impl Weighter<[u8; 32], Arc<Verified>> for EntryWeighter {
    fn weight(&self, _fingerprint: &[u8; 32], verified: &Arc<Verified>) -> u64 {
        entry_bytes(verified) as u64
    }
}

/// What one heap allocation of `len` bytes occupies: glibc's malloc rounds a request plus its
/// 8-byte header up to 16 bytes, 32 at least. Nothing is allocated for an empty string or list.
fn allocation(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len + 8).next_multiple_of(16).max(32)
    }
}

fn string_bytes(s: &str) -> usize {
    // Text read from a token is allocated to its length.
    allocation(s.len())
}

/// The cache's own bookkeeping per entry, beyond the key and the `Arc` it stores: its slab slot
/// and hash-table slot (with the slack of a growing table), and a share of the table of recently
/// evicted keys. An estimate; it is the same for every entry.
const ENTRY_OVERHEAD_BYTES: usize = 160;

/// The memory a cached token keeps alive: the key, the shared `Verified` allocation and every
/// string and list inside it (its `kid`, claims and parsed permissions), each as the allocator
/// rounds it, and the cache's bookkeeping. Never zero, so every entry can be evicted.
fn entry_bytes(verified: &Verified) -> usize {
    let claims = &verified.claims;
    let strings = [
        verified.kid.as_str(),
        &claims.iss,
        &claims.sub,
        &claims.aud,
        &claims.jti,
        &claims.account_id,
    ]
    .into_iter()
    .chain(claims.scope.as_deref())
    .chain(claims.client_id.as_deref())
    .chain(claims.sid.as_deref())
    .map(string_bytes)
    .sum::<usize>();
    let permission_strings = allocation(claims.permissions.capacity() * size_of::<String>())
        + claims
            .permissions
            .iter()
            .map(|p| string_bytes(p))
            .sum::<usize>();
    let parsed = match &verified.permission_set {
        PermissionSet::All => 0,
        // One shared allocation: two counters, then the permissions.
        PermissionSet::Only(list) => {
            allocation(2 * size_of::<usize>() + list.len() * size_of::<keyfob_domain::Permission>())
                + list
                    .iter()
                    .map(|p| allocation(p.resource().len()))
                    .sum::<usize>()
        }
    };
    // An `Arc` allocation holds two counters before the value.
    let shared = allocation(2 * size_of::<usize>() + size_of::<Verified>());
    size_of::<([u8; 32], Arc<Verified>)>()
        + ENTRY_OVERHEAD_BYTES
        + shared
        + strings
        + permission_strings
        + parsed
}

impl TokenService {
    /// A service whose cache of verified tokens may hold `cache_bytes` (see [`entry_bytes`]).
    pub fn new(keys: KeySet, issuer: String, audience: String, cache_bytes: u64) -> Self {
        TokenService {
            keys: RwLock::new(Arc::new(keys)),
            issuer,
            audience,
            verified: Cache::with_weighter(
                (cache_bytes / TYPICAL_ENTRY_BYTES).max(1) as usize,
                cache_bytes,
                EntryWeighter,
            ),
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

    /// Signs `claims` as an access token (`typ: at+jwt`, RFC 9068) with the key active at `now`.
    pub fn sign(&self, claims: &Claims, now: Timestamp) -> Result<String, TokenError> {
        let keys = self.keys();
        let signer = keys.signer(now).ok_or(TokenError::NoSigningKey)?;
        let mut header = Header::new(signer.alg);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(signer.kid.to_string());
        encode(&header, claims, &signer.key).map_err(|_| TokenError::NoSigningKey)
    }

    /// Signs an id_token for `to` (`typ: JWT`) with the key active at `now`, valid for `lifetime`;
    /// its `at_hash` is made with that key's algorithm.
    pub fn sign_id_token(
        &self,
        to: &IdTokenFor<'_>,
        now: Timestamp,
        lifetime: std::time::Duration,
    ) -> Result<String, TokenError> {
        let keys = self.keys();
        let signer = keys.signer(now).ok_or(TokenError::NoSigningKey)?;
        let claims = IdTokenClaims::new(to, signer.signing_alg, now, now + lifetime);
        let mut header = Header::new(signer.alg);
        header.typ = Some(ID_TOKEN_TYP.to_owned());
        header.kid = Some(signer.kid.to_string());
        encode(&header, &claims, &signer.key).map_err(|_| TokenError::NoSigningKey)
    }

    /// Verifies a JWT's signature, algorithm, issuer, audience and times. Its `typ` is not
    /// checked: tokens signed before RFC 9068 say `JWT`, and every token signed with Keyfob's keys
    /// for this audience is an access token.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Arc<Verified>, TokenError> {
        let fingerprint: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.verified.get(&fingerprint) {
            let keys = self.keys();
            if keys.verifier(&claims.kid).is_none() {
                self.verified.remove(&fingerprint);
                return Err(unknown_key(&keys, &claims.kid));
            }
            if claims.exp.saturating_add(LEEWAY_SECS as i64) > now.unix_secs() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningAlg;
    use crate::crypto::MasterKey;
    use crate::tokens::keys::{generate_signing_key, load_key_set};

    const ISSUER: &str = "https://keyfob.example";

    fn service(cache_bytes: u64) -> TokenService {
        let master = MasterKey::generate();
        let epoch = Timestamp::UNIX_EPOCH;
        let row = generate_signing_key(SigningAlg::EdDsa, &master, epoch, epoch).unwrap();
        let keys = load_key_set(&[row], &master, epoch).unwrap();
        TokenService::new(keys, ISSUER.to_owned(), "keyfob".to_owned(), cache_bytes)
    }

    /// A token as large as a client might make one: many permissions, long names.
    fn large_claims(n: usize, now: Timestamp) -> Claims {
        let now = now.unix_secs();
        Claims {
            iss: ISSUER.to_owned(),
            sub: format!("{n:0>36}"),
            aud: "keyfob".to_owned(),
            iat: now,
            nbf: now,
            exp: now + 3600,
            jti: uuid::Uuid::now_v7().to_string().into(),
            permissions: (0..40)
                .map(|i| format!("resource_with_a_long_name_{i}.read"))
                .collect(),
            scope: None,
            account_id: uuid::Uuid::now_v7().to_string().into(),
            client_id: Some(format!("client-{n:0>40}")),
            sid: Some(uuid::Uuid::now_v7().to_string().into()),
            gty: None,
        }
    }

    #[test]
    fn the_verified_token_cache_stays_within_its_byte_budget() {
        const BUDGET: u64 = 1024 * 1024;
        let tokens = service(BUDGET);
        let now = Timestamp::now();
        let mut largest_entry = 0;
        let mut smallest_entry = usize::MAX;
        for n in 0..3_000 {
            let token = tokens.sign(&large_claims(n, now), now).unwrap();
            let verified = tokens.verify(&token, now).unwrap();
            let bytes = entry_bytes(&verified);
            largest_entry = largest_entry.max(bytes);
            smallest_entry = smallest_entry.min(bytes);
        }
        // The tokens would take far more than the budget if all were kept...
        assert!(3_000 * smallest_entry as u64 > 5 * BUDGET);
        // ...but the cache holds no more than the budget allows, by its own weights and by the
        // smallest real size of an entry.
        assert!(
            tokens.verified.weight() <= BUDGET,
            "{}",
            tokens.verified.weight()
        );
        let kept = tokens.verified.len() as u64;
        assert!(
            kept * smallest_entry as u64 <= BUDGET,
            "{kept} entries kept"
        );
        // It still caches: most of the budget is in use.
        assert!(
            kept * largest_entry as u64 >= BUDGET / 2,
            "only {kept} entries kept"
        );
    }

    /// Found with the `jwt` fuzz target (seed `exp_end_of_time`): a token whose `exp` is near
    /// `i64::MAX` passes `jsonwebtoken`'s checks, and adding the leeway to it on the next request
    /// overflowed (a panic in debug builds, a wrongly expired token in release ones).
    #[test]
    fn a_token_expiring_at_the_end_of_time_verifies_from_the_cache_too() {
        let tokens = service(DEFAULT_CACHE_BYTES);
        let now = Timestamp::now();
        let claims = Claims {
            exp: i64::MAX - 1,
            ..large_claims(3, now)
        };
        let token = tokens.sign(&claims, now).unwrap();
        assert_eq!(tokens.verify(&token, now).unwrap().exp, i64::MAX - 1);
        assert_eq!(tokens.verify(&token, now).unwrap().exp, i64::MAX - 1);
    }

    #[test]
    fn an_entry_weighs_at_least_what_it_allocates() {
        let tokens = service(DEFAULT_CACHE_BYTES);
        let now = Timestamp::now();
        let token = tokens.sign(&large_claims(1, now), now).unwrap();
        let verified = tokens.verify(&token, now).unwrap();
        let text: usize = verified.permissions.iter().map(String::len).sum::<usize>()
            + verified.sub.len()
            + verified.jti.len()
            + verified.account_id.len();
        // The permission names are kept twice (as received and parsed), plus the other strings.
        assert!(entry_bytes(&verified) > text + 40 * "resource_with_a_long_name_0".len());
        // A small token still weighs its bookkeeping: never zero, so it can be evicted.
        let small = Claims {
            permissions: vec!["deals.read".to_owned()],
            client_id: None,
            sid: None,
            ..large_claims(2, now)
        };
        let small = tokens
            .verify(&tokens.sign(&small, now).unwrap(), now)
            .unwrap();
        assert!(entry_bytes(&small) > ENTRY_OVERHEAD_BYTES);
        assert!(entry_bytes(&small) < entry_bytes(&verified));
    }
}
