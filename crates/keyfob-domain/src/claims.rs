//! What a Keyfob JWT says. The same claims for minted tokens, user-session access tokens and the
//! tokens an application gets for itself with the `client_credentials` grant; the second also name
//! the session, the third say what they are with `gty`. All are access tokens in the sense of RFC 9068 (the JWT
//! profile for OAuth 2.0 access tokens): `iss`, `sub`, `aud`, `exp`, `iat`, `jti`, `client_id` and
//! `scope`, and the header's `typ` is `at+jwt` ([`ACCESS_TOKEN_TYP`]). Tokens signed before
//! Keyfob followed RFC 9068 have neither `scope` nor `client_id` for minted tokens, and still
//! verify.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, ClientId, FamilyId, Jti, KeyId, UserId};
use crate::time::Timestamp;

/// The `typ` header of every access token Keyfob signs (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The `gty` claim of a token an application got for itself with the `client_credentials` grant
/// (the name Auth0 and others give the grant-type claim). Its `sub` and `client_id` are both the
/// application's `client_id`, which alone would read like a minted token's (whose `sub` and
/// `client_id` are both the minting key): `gty` is what tells them apart.
pub const CLIENT_CREDENTIALS_GTY: &str = "client_credentials";

/// The claims of every token Keyfob signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The subject: the API key that minted the token, the end user of a session, or the
    /// application itself for a `client_credentials` token.
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Jti,
    pub permissions: Vec<String>,
    /// The permissions again, space-separated: RFC 9068's `scope`. `permissions` is the one
    /// Keyfob reads; tokens signed before RFC 9068 have no `scope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The account (tenant) the token acts in.
    pub account_id: AccountId,
    /// RFC 9068's `client_id`, the client that asked for the token: for a user session, the
    /// application the user granted access to; for a `client_credentials` token, the application
    /// (the same as `sub`); for a token minted with `POST /auth`, the API key
    /// that minted it (the same as `sub`). Text rather than an id type, since it is one of two
    /// kinds of id; [`Claims::application`] reads the application's. Minted tokens signed before
    /// RFC 9068 have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// For user sessions: the session (refresh-token family) the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<FamilyId>,
    /// [`CLIENT_CREDENTIALS_GTY`] for a token an application got for itself; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gty: Option<String>,
}

/// Who a new token is for: the API key that mints it, or a user session's access token.
#[derive(Debug, Clone, Copy)]
pub enum Bearer<'a> {
    /// A token minted with `POST /auth`: its subject is the key.
    Key {
        account_id: &'a AccountId,
        key_id: &'a KeyId,
    },
    /// A user session's access token: its subject is the end user, and it names the application
    /// and the session (refresh-token family).
    Session {
        account_id: &'a AccountId,
        client_id: &'a ClientId,
        user_id: &'a UserId,
        family_id: &'a FamilyId,
    },
    /// A token an application got for itself (`client_credentials`): no user is involved, so its
    /// subject is the application.
    App {
        account_id: &'a AccountId,
        client_id: &'a ClientId,
    },
}

impl Claims {
    /// The claims of a new token from `iss` for `aud`, issued at `issued` (`iat` and `nbf` are its
    /// second, and the `jti` carries the millisecond, see [`Claims::issued_at`]) and expiring at
    /// `expires` (`exp` is its second).
    pub fn new(
        iss: &str,
        aud: &str,
        bearer: Bearer<'_>,
        permissions: Vec<String>,
        issued: Timestamp,
        expires: Timestamp,
    ) -> Claims {
        let iat = issued.unix_secs();
        let (sub, account_id, client_id, sid) = match bearer {
            Bearer::Key { account_id, key_id } => {
                (key_id.as_str(), account_id, key_id.as_str(), None)
            }
            Bearer::App {
                account_id,
                client_id,
            } => (client_id.as_str(), account_id, client_id.as_str(), None),
            Bearer::Session {
                account_id,
                client_id,
                user_id,
                family_id,
            } => (
                user_id.as_str(),
                account_id,
                client_id.as_str(),
                Some(family_id.clone()),
            ),
        };
        let scope = Some(permissions.join(" "));
        Claims {
            iss: iss.to_owned(),
            sub: sub.to_owned(),
            aud: aud.to_owned(),
            iat,
            nbf: iat,
            exp: expires.unix_secs(),
            jti: Jti::from(new_jti(issued)),
            permissions,
            scope,
            account_id: account_id.clone(),
            client_id: Some(client_id.to_owned()),
            sid,
            gty: matches!(bearer, Bearer::App { .. }).then(|| CLIENT_CREDENTIALS_GTY.to_owned()),
        }
    }

    /// The token with the identity scopes of its session in `scope`, before the permissions
    /// (`openid email deals.read`): what the userinfo endpoint reads. `permissions` is unchanged.
    pub fn with_identity(mut self, identity: crate::identity::IdentityScopes) -> Claims {
        if !identity.is_empty() {
            self.scope = Some(crate::identity::scope_string(identity, &self.permissions));
        }
        self
    }

    /// The identity scopes the token's `scope` names (none for tokens without `scope`).
    pub fn identity(&self) -> crate::identity::IdentityScopes {
        let mut scopes = crate::identity::IdentityScopes::NONE;
        for word in self.scope.as_deref().unwrap_or_default().split(' ') {
            if let Ok(one) = word.parse::<crate::identity::IdentityScopes>() {
                scopes = scopes.union(one);
            }
        }
        scopes
    }

    /// The API key that minted this token, or `None` for a user-session token (which names its
    /// session and application instead, and whose `sub` is an end user, not a key) and for an
    /// application's own token (marked by `gty`). A minted token's `client_id` is its key, as its
    /// `sub` is, or absent in tokens signed before RFC 9068.
    pub fn minting_key(&self) -> Option<&str> {
        (self.sid.is_none()
            && self.gty.is_none()
            && self.client_id.as_deref().is_none_or(|c| c == self.sub))
        .then_some(self.sub.as_str())
    }

    /// Whether an application got this token for itself with the `client_credentials` grant.
    pub fn is_app_token(&self) -> bool {
        self.gty.as_deref() == Some(CLIENT_CREDENTIALS_GTY)
    }

    /// The application the token was issued to: for a user-session token, the one the user
    /// granted access to; for a `client_credentials` token, the application itself. `None` for
    /// a minted token.
    pub fn application(&self) -> Option<ClientId> {
        (self.sid.is_some() || self.is_app_token())
            .then_some(self.client_id.as_deref())
            .flatten()
            .map(ClientId::from)
    }

    /// When the token expires: the start of its `exp` second.
    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_secs(self.exp)
    }

    /// When the token was minted, to the millisecond. `iat` has whole seconds only, which cannot
    /// tell a token minted just before "revoke all tokens of this key" from one minted just after
    /// in the same second; Keyfob's `jti` is a UUIDv7 whose timestamp is the minting millisecond,
    /// so that is used when it agrees with `iat`. Otherwise the start of `iat`'s second: the
    /// earliest the token can have been minted, so a cutoff never lets an older token through.
    pub fn issued_at(&self) -> Timestamp {
        let floor = Timestamp::from_unix_secs(self.iat);
        uuid::Uuid::parse_str(&self.jti)
            .ok()
            .filter(|id| id.get_version_num() == 7)
            .and_then(|id| id.get_timestamp())
            .map(|ts| {
                let (secs, nanos) = ts.to_unix();
                Timestamp::from_unix_secs(i64::try_from(secs).unwrap_or(i64::MAX))
                    + Duration::from_nanos(u64::from(nanos))
            })
            .filter(|at| (floor..floor + Duration::from_secs(2)).contains(at))
            .unwrap_or(floor)
    }
}

/// The last millisecond a `jti` was made for, and how many were made for it.
static LAST_JTI: std::sync::Mutex<(u64, u16)> = std::sync::Mutex::new((0, 0));

/// A fresh `jti` for a token minted at `issued`: a UUIDv7 carrying exactly that millisecond, so
/// that [`Claims::issued_at`] reads it back. Its 12 `rand_a` bits count the `jti`s this process
/// made for the same millisecond (RFC 9562's fixed-length counter), so tokens minted within one
/// millisecond sort in the order they were minted; the other 62 bits are random.
pub fn new_jti(issued: Timestamp) -> String {
    let ms = u64::try_from(issued.unix_ms()).unwrap_or(0);
    let count = {
        let mut last = LAST_JTI
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.0 == ms && last.1 < 0x0fff {
            last.1 += 1;
        } else {
            *last = (ms, 0);
        }
        last.1
    };
    let mut bytes: [u8; 10] = rand::random();
    bytes[..2].copy_from_slice(&count.to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iat: i64, jti: &str) -> Claims {
        Claims {
            iss: "i".into(),
            sub: "key-1".into(),
            aud: "a".into(),
            iat,
            nbf: iat,
            exp: iat + 60,
            jti: jti.into(),
            permissions: vec![],
            scope: None,
            account_id: "acc".into(),
            client_id: None,
            sid: None,
            gty: None,
        }
    }

    const AT: Timestamp = Timestamp::from_unix_ms(1_767_225_600_123);

    #[test]
    fn issued_at_has_the_jti_milliseconds() {
        assert_eq!(claims(AT.unix_secs(), &new_jti(AT)).issued_at(), AT);
        // Two tokens of one second are told apart.
        let later = claims(AT.unix_secs(), &new_jti(AT + Duration::from_millis(500))).issued_at();
        assert!(later > AT);
    }

    #[test]
    fn a_jti_that_disagrees_with_iat_falls_back_to_the_start_of_its_second() {
        let iat = AT.unix_secs() - 10;
        assert_eq!(
            claims(iat, &new_jti(AT)).issued_at(),
            Timestamp::from_unix_secs(iat)
        );
        let five = Timestamp::from_unix_secs(5);
        assert_eq!(claims(5, "not-a-uuid").issued_at(), five);
        assert_eq!(
            claims(5, &uuid::Uuid::new_v4().to_string()).issued_at(),
            five
        );
    }

    #[test]
    fn new_claims_say_who_the_token_is_for_and_when_it_was_issued() {
        let (acc, key_id) = (AccountId::from("acc"), KeyId::from("key-1"));
        let key = Bearer::Key {
            account_id: &acc,
            key_id: &key_id,
        };
        let minted = Claims::new(
            "iss",
            "aud",
            key,
            vec!["deals.read".into()],
            AT,
            AT + Duration::from_secs(60),
        );
        let secs = AT.unix_secs();
        assert_eq!(
            (minted.iat, minted.nbf, minted.exp),
            (secs, secs, secs + 60)
        );
        assert_eq!(minted.issued_at(), AT);
        assert_eq!(minted.expires_at(), Timestamp::from_unix_secs(secs + 60));
        assert_eq!(minted.minting_key(), Some("key-1"));
        assert_eq!((minted.iss.as_str(), minted.aud.as_str()), ("iss", "aud"));
        assert_eq!(minted.account_id, "acc");
        assert_eq!(minted.permissions, ["deals.read"]);
        // RFC 9068: the client is the key, the scope the permissions.
        assert_eq!(minted.client_id.as_deref(), Some("key-1"));
        assert_eq!(minted.scope.as_deref(), Some("deals.read"));
        assert_eq!(minted.application(), None);

        let (client, user, family) = (
            ClientId::from("app_1"),
            UserId::from("user-1"),
            FamilyId::from("fam-1"),
        );
        let session = Bearer::Session {
            account_id: &acc,
            client_id: &client,
            user_id: &user,
            family_id: &family,
        };
        let access = Claims::new(
            "iss",
            "aud",
            session,
            vec!["deals.read".into(), "deals.write".into()],
            AT,
            AT + Duration::from_secs(600),
        );
        assert_eq!(access.sub, "user-1");
        assert_eq!(access.client_id.as_deref(), Some("app_1"));
        assert_eq!(access.application(), Some(ClientId::from("app_1")));
        assert_eq!(access.scope.as_deref(), Some("deals.read deals.write"));
        assert_eq!(access.sid.as_deref(), Some("fam-1"));
        assert_eq!(access.minting_key(), None);
        assert_ne!(access.jti, minted.jti, "every token has its own jti");
    }

    #[test]
    fn jtis_of_one_millisecond_sort_in_the_order_they_were_made() {
        let jtis: Vec<String> = (0..1000).map(|_| new_jti(AT)).collect();
        assert!(
            jtis.windows(2).all(|w| w[0] < w[1]),
            "made in order, sorted in order"
        );
        for jti in &jtis {
            assert_eq!(claims(AT.unix_secs(), jti).issued_at(), AT);
        }
    }

    #[test]
    fn only_api_key_tokens_name_a_minting_key() {
        // Signed before RFC 9068: no client_id.
        let mut c = claims(1, "x");
        assert_eq!(c.minting_key(), Some("key-1"));
        // Signed since: the key is the client too.
        c.client_id = Some("key-1".into());
        assert_eq!(c.minting_key(), Some("key-1"));
        c.sid = Some("family".into());
        c.client_id = Some("app_1".into());
        assert_eq!(c.minting_key(), None);
    }

    #[test]
    fn an_application_token_names_the_app_and_no_key() {
        let (acc, client) = (AccountId::from("acc"), ClientId::from("app_1"));
        let bearer = Bearer::App {
            account_id: &acc,
            client_id: &client,
        };
        let token = Claims::new(
            "i",
            "a",
            bearer,
            vec!["deals.read".into()],
            AT,
            AT + Duration::from_secs(600),
        );
        assert_eq!(token.sub, "app_1");
        assert_eq!(token.client_id.as_deref(), Some("app_1"));
        assert_eq!(token.sid, None);
        assert!(token.is_app_token());
        // `sub` equals `client_id`, as in a minted token; `gty` says it is not one.
        assert_eq!(token.minting_key(), None);
        assert_eq!(token.application(), Some(client));
        let json = serde_json::to_value(&token).unwrap();
        assert_eq!(json["gty"], "client_credentials");
        // Other tokens carry no `gty`.
        let mut minted = claims(1, "x");
        minted.client_id = Some("key-1".into());
        assert!(!minted.is_app_token());
        assert!(serde_json::to_value(&minted).unwrap().get("gty").is_none());
    }

    #[test]
    fn a_token_signed_before_rfc_9068_reads_without_scope_or_client_id() {
        let old = serde_json::json!({
            "iss": "i", "sub": "key-1", "aud": "a", "iat": 1, "nbf": 1, "exp": 61,
            "jti": "x", "permissions": ["deals.read"], "account_id": "acc",
        });
        let c: Claims = serde_json::from_value(old).unwrap();
        assert_eq!((c.scope.as_deref(), c.client_id.as_deref()), (None, None));
        assert_eq!(c.minting_key(), Some("key-1"));
        // And a new one writes both.
        let (acc, key_id) = (AccountId::from("acc"), KeyId::from("key-1"));
        let key = Bearer::Key {
            account_id: &acc,
            key_id: &key_id,
        };
        let new = Claims::new(
            "i",
            "a",
            key,
            vec!["a.read".into(), "b.write".into()],
            AT,
            AT,
        );
        let json = serde_json::to_value(&new).unwrap();
        assert_eq!(json["scope"], "a.read b.write");
        assert_eq!(json["client_id"], "key-1");
    }
}
