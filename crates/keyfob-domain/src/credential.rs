//! Credentials as they arrive in `Authorization`: `Bearer <credential>` or the bare credential.
//! An API key starts with `kf_`; anything shaped like a compact JWS is a JWT.

use std::fmt;

use crate::secret::{hash_secret, random_bytes};

/// Every API key starts with this.
pub const API_KEY_PREFIX: &str = "kf_";
/// Hex characters after the prefix: 32 random bytes.
const API_KEY_BODY_LEN: usize = 64;
/// How much of a key is kept in clear to recognise it in a listing (`kf_` and 8 characters).
const DISPLAY_PREFIX_LEN: usize = API_KEY_PREFIX.len() + 8;
/// Longer headers are refused before any parsing.
pub const MAX_CREDENTIAL_LEN: usize = 8 * 1024;

/// A syntactically valid API key. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A new key with 256 random bits.
    pub fn generate() -> Self {
        ApiKey(format!("{API_KEY_PREFIX}{}", hex::encode(random_bytes())))
    }

    /// Accepts exactly `kf_` followed by 64 lowercase hex characters.
    pub fn parse(s: &str) -> Result<Self, CredentialError> {
        let body = s
            .strip_prefix(API_KEY_PREFIX)
            .ok_or(CredentialError::Malformed)?;
        if body.len() != API_KEY_BODY_LEN
            || !body.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(CredentialError::MalformedApiKey);
        }
        Ok(ApiKey(s.to_owned()))
    }

    /// The key itself: shown to its owner once, then never again.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 the database keeps instead of the key.
    pub fn hash(&self) -> String {
        hash_secret(&self.0)
    }

    /// The first characters, safe to show in listings and logs.
    pub fn display_prefix(&self) -> &str {
        &self.0[..DISPLAY_PREFIX_LEN]
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

/// A credential, told apart by its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    ApiKey(ApiKey),
    Jwt(String),
}

/// Why an `Authorization` header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the Authorization header is missing")]
    Missing,
    #[error("the Authorization header is neither an API key nor a JWT")]
    Malformed,
    #[error("the API key is malformed")]
    MalformedApiKey,
    #[error("the Authorization header is too long")]
    TooLong,
}

impl Credential {
    /// Reads an `Authorization` header value: `Bearer <credential>` (scheme case-insensitive) or
    /// the bare credential.
    pub fn from_header(value: &str) -> Result<Credential, CredentialError> {
        if value.len() > MAX_CREDENTIAL_LEN {
            return Err(CredentialError::TooLong);
        }
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("bearer") {
            return Err(CredentialError::Missing);
        }
        let credential = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            Some(_) => return Err(CredentialError::Malformed),
            None => value,
        };
        if credential.is_empty() {
            return Err(CredentialError::Missing);
        }
        if credential.starts_with(API_KEY_PREFIX) {
            return ApiKey::parse(credential).map(Credential::ApiKey);
        }
        if looks_like_jws(credential) {
            return Ok(Credential::Jwt(credential.to_owned()));
        }
        Err(CredentialError::Malformed)
    }
}

/// Three non-empty base64url segments separated by dots.
fn looks_like_jws(s: &str) -> bool {
    let mut parts = 0;
    for part in s.split('.') {
        parts += 1;
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hide_in_debug() {
        let key = ApiKey::generate();
        assert_eq!(key.expose().len(), 3 + 64);
        assert_eq!(ApiKey::parse(key.expose()).unwrap(), key);
        let debug = format!("{key:?}");
        assert!(!debug.contains(&key.expose()[12..]));
        assert_eq!(key.display_prefix().len(), 11);
    }

    #[test]
    fn both_header_forms_are_accepted() {
        let key = ApiKey::generate();
        for header in [
            format!("Bearer {}", key.expose()),
            format!("bearer {}", key.expose()),
            key.expose().to_owned(),
        ] {
            assert_eq!(
                Credential::from_header(&header).unwrap(),
                Credential::ApiKey(key.clone())
            );
        }
        assert_eq!(
            Credential::from_header("Bearer aaa.bbb.ccc").unwrap(),
            Credential::Jwt("aaa.bbb.ccc".into())
        );
        assert_eq!(
            Credential::from_header("aaa.bbb.ccc").unwrap(),
            Credential::Jwt("aaa.bbb.ccc".into())
        );
    }

    #[test]
    fn bad_headers_are_refused() {
        assert_eq!(
            Credential::from_header("Basic dXNlcjpwYXNz"),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            Credential::from_header("Bearer "),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            Credential::from_header("kf_short"),
            Err(CredentialError::MalformedApiKey)
        );
        assert_eq!(
            Credential::from_header(&format!("kf_{}", "G".repeat(64))),
            Err(CredentialError::MalformedApiKey)
        );
        assert_eq!(
            Credential::from_header("aaa.bbb"),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            Credential::from_header("aaa..ccc"),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            Credential::from_header("a+a.bbb.ccc"),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            Credential::from_header(&"a".repeat(MAX_CREDENTIAL_LEN + 1)),
            Err(CredentialError::TooLong)
        );
    }
}
