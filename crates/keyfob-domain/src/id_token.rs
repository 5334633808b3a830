//! What an OpenID Connect id_token says (OpenID Connect Core 1.0 §2), and how its `at_hash` is
//! made. An id_token is for the application, not for resource servers: it tells the application
//! who signed in, when, and through which request (`nonce`). Its header's `typ` is
//! [`ID_TOKEN_TYP`], never an access token's `at+jwt`, and it has no `permissions`, so neither kind
//! can be taken for the other.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::identity::IdentityScopes;
use crate::ids::{ClientId, FamilyId, UserId};
use crate::signing::SigningAlg;
use crate::time::Timestamp;

/// The `typ` header of an id_token.
pub const ID_TOKEN_TYP: &str = "JWT";

/// The claims of an id_token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    /// The user: their Keyfob user id, the same for every application (public subjects).
    pub sub: String,
    /// The application (its `client_id`).
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    /// When the user last logged in, in Unix seconds.
    pub auth_time: i64,
    /// The authorization request's `nonce`, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The party the token was issued to: the application, as `aud`.
    pub azp: String,
    /// The left half of the hash of the access token issued with it, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// The session (refresh-token family) the tokens belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<FamilyId>,
    /// With the `email` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// With the `profile` scope: when the user's profile last changed, in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// What Keyfob knows of a user that an id_token or userinfo may tell.
#[derive(Debug, Clone, Copy)]
pub struct UserFacts<'a> {
    pub user_id: &'a UserId,
    pub email: &'a str,
    pub email_verified: bool,
    pub updated_at: Timestamp,
}

/// The user's claims that `scopes` release, `sub` always (userinfo's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

impl UserClaims {
    pub fn new(user: &UserFacts<'_>, scopes: IdentityScopes) -> UserClaims {
        UserClaims {
            sub: user.user_id.to_string(),
            email: scopes.email.then(|| user.email.to_owned()),
            email_verified: scopes.email.then_some(user.email_verified),
            updated_at: scopes.profile.then(|| user.updated_at.unix_secs()),
        }
    }
}

/// What an id_token is issued for.
#[derive(Debug, Clone, Copy)]
pub struct IdTokenFor<'a> {
    pub issuer: &'a str,
    pub client_id: &'a ClientId,
    pub user: UserFacts<'a>,
    pub scopes: IdentityScopes,
    pub auth_time: Timestamp,
    pub nonce: Option<&'a str>,
    pub session: Option<&'a FamilyId>,
    /// The access token issued beside it.
    pub access_token: Option<&'a str>,
}

impl IdTokenClaims {
    /// The claims of an id_token to be signed with `alg`, issued at `issued`, expiring at
    /// `expires`.
    pub fn new(
        to: &IdTokenFor<'_>,
        alg: SigningAlg,
        issued: Timestamp,
        expires: Timestamp,
    ) -> IdTokenClaims {
        let user = UserClaims::new(&to.user, to.scopes);
        IdTokenClaims {
            iss: to.issuer.to_owned(),
            sub: user.sub,
            aud: to.client_id.to_string(),
            exp: expires.unix_secs(),
            iat: issued.unix_secs(),
            auth_time: to.auth_time.unix_secs(),
            nonce: to.nonce.map(str::to_owned),
            azp: to.client_id.to_string(),
            at_hash: to
                .access_token
                .map(|token| token_hash(token.as_bytes(), alg)),
            sid: to.session.cloned(),
            email: user.email,
            email_verified: user.email_verified,
            updated_at: user.updated_at,
        }
    }
}

/// An `at_hash` (OpenID Connect Core 1.0 §3.1.3.6): the left half of the hash of `value` with the
/// hash of `alg`, base64url. SHA-256 for ES256 and RS256; SHA-512 for EdDSA on Ed25519, as the
/// relying-party libraries that check it compute it.
pub fn token_hash(value: &[u8], alg: SigningAlg) -> String {
    match alg {
        SigningAlg::Es256 | SigningAlg::Rs256 => {
            let digest = Sha256::digest(value);
            URL_SAFE_NO_PAD.encode(&digest[..16])
        }
        SigningAlg::EdDsa => {
            let digest = Sha512::digest(value);
            URL_SAFE_NO_PAD.encode(&digest[..32])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half_of_the_algorithms_hash() {
        // OpenID Connect Core 1.0, appendix A.3: the access token of that example and its at_hash
        // (RS256, so SHA-256).
        assert_eq!(
            token_hash(
                b"jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
                SigningAlg::Rs256
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(
            token_hash(
                b"jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
                SigningAlg::Es256
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        // EdDSA: 32 bytes of SHA-512, 43 characters.
        let ed = token_hash(b"abc", SigningAlg::EdDsa);
        assert_eq!(ed.len(), 43);
        assert_eq!(ed, URL_SAFE_NO_PAD.encode(&Sha512::digest(b"abc")[..32]));
    }

    #[test]
    fn scopes_decide_which_user_claims_are_told() {
        let user_id = UserId::from("usr_1".to_owned());
        let client_id = ClientId::from("app_1".to_owned());
        let family = FamilyId::from("fam_1".to_owned());
        let facts = UserFacts {
            user_id: &user_id,
            email: "ada@example.com",
            email_verified: false,
            updated_at: Timestamp::from_unix_secs(1_700_000_000),
        };
        let mut to = IdTokenFor {
            issuer: "https://id.test",
            client_id: &client_id,
            user: facts,
            scopes: IdentityScopes::OPENID,
            auth_time: Timestamp::from_unix_secs(1_700_000_100),
            nonce: Some("n-1"),
            session: Some(&family),
            access_token: Some("token"),
        };
        let now = Timestamp::from_unix_secs(1_700_000_200);
        let plain = IdTokenClaims::new(
            &to,
            SigningAlg::Es256,
            now,
            now + std::time::Duration::from_secs(600),
        );
        assert_eq!(plain.sub, "usr_1");
        assert_eq!((plain.aud.as_str(), plain.azp.as_str()), ("app_1", "app_1"));
        assert_eq!(plain.exp - plain.iat, 600);
        assert_eq!(plain.auth_time, 1_700_000_100);
        assert_eq!(plain.nonce.as_deref(), Some("n-1"));
        assert_eq!(
            plain.at_hash.as_deref(),
            Some(token_hash(b"token", SigningAlg::Es256).as_str())
        );
        assert_eq!(
            (plain.email, plain.email_verified, plain.updated_at),
            (None, None, None)
        );

        to.scopes = "openid profile email".parse().unwrap();
        to.nonce = None;
        let full = IdTokenClaims::new(&to, SigningAlg::EdDsa, now, now);
        assert_eq!(full.email.as_deref(), Some("ada@example.com"));
        assert_eq!(full.email_verified, Some(false));
        assert_eq!(full.updated_at, Some(1_700_000_000));
        let json = serde_json::to_value(&full).unwrap();
        assert!(json.get("nonce").is_none(), "no nonce sent, none told");
        assert!(json.get("permissions").is_none());
    }
}
