//! What a Keyfob JWT says. The same claims for minted tokens and for user-session access tokens;
//! the latter also name the application and the session.

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, ClientId, FamilyId, Jti, KeyId, UserId};

/// The claims of every token Keyfob signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The subject: the API key that minted the token, or the end user of a session.
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Jti,
    pub permissions: Vec<String>,
    /// The account (tenant) the token acts in.
    pub account_id: AccountId,
    /// For user sessions: the application the user granted access to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<ClientId>,
    /// For user sessions: the session (refresh-token family) the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<FamilyId>,
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
}

impl Claims {
    /// The claims of a new token from `iss` for `aud`, issued at `issued_ms` (Unix milliseconds:
    /// `iat` and `nbf` are its second, and the `jti` carries the millisecond, see
    /// [`Claims::issued_at_ms`]) and expiring at `exp` (Unix seconds).
    pub fn new(
        iss: &str,
        aud: &str,
        bearer: Bearer<'_>,
        permissions: Vec<String>,
        issued_ms: i64,
        exp: i64,
    ) -> Claims {
        let iat = issued_ms.div_euclid(1000);
        let (sub, account_id, client_id, sid) = match bearer {
            Bearer::Key { account_id, key_id } => (key_id.as_str(), account_id, None, None),
            Bearer::Session {
                account_id,
                client_id,
                user_id,
                family_id,
            } => (
                user_id.as_str(),
                account_id,
                Some(client_id.clone()),
                Some(family_id.clone()),
            ),
        };
        Claims {
            iss: iss.to_owned(),
            sub: sub.to_owned(),
            aud: aud.to_owned(),
            iat,
            nbf: iat,
            exp,
            jti: Jti::from(new_jti(issued_ms)),
            permissions,
            account_id: account_id.clone(),
            client_id,
            sid,
        }
    }

    /// The API key that minted this token, or `None` for a user-session token (which names its
    /// session and application instead, and whose `sub` is an end user, not a key).
    pub fn minting_key(&self) -> Option<&str> {
        (self.sid.is_none() && self.client_id.is_none()).then_some(self.sub.as_str())
    }

    /// When the token was minted, in Unix milliseconds. `iat` has whole seconds only, which cannot
    /// tell a token minted just before "revoke all tokens of this key" from one minted just after
    /// in the same second; Keyfob's `jti` is a UUIDv7 whose timestamp is the minting millisecond,
    /// so that is used when it agrees with `iat`. Otherwise the start of `iat`'s second: the
    /// earliest the token can have been minted, so a cutoff never lets an older token through.
    pub fn issued_at_ms(&self) -> i64 {
        let floor = self.iat.saturating_mul(1000);
        uuid::Uuid::parse_str(&self.jti)
            .ok()
            .filter(|id| id.get_version_num() == 7)
            .and_then(|id| id.get_timestamp())
            .map(|ts| {
                let (secs, nanos) = ts.to_unix();
                i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
                    + i64::from(nanos / 1_000_000)
            })
            .filter(|ms| (floor..floor.saturating_add(2000)).contains(ms))
            .unwrap_or(floor)
    }
}

/// The last millisecond a `jti` was made for, and how many were made for it.
static LAST_JTI: std::sync::Mutex<(u64, u16)> = std::sync::Mutex::new((0, 0));

/// A fresh `jti` for a token minted at `issued_ms` (Unix ms): a UUIDv7 carrying exactly that
/// millisecond, so that [`Claims::issued_at_ms`] reads it back. Its 12 `rand_a` bits count the
/// `jti`s this process made for the same millisecond (RFC 9562's fixed-length counter), so tokens
/// minted within one millisecond sort in the order they were minted; the other 62 bits are
/// random.
pub fn new_jti(issued_ms: i64) -> String {
    let ms = u64::try_from(issued_ms).unwrap_or(0);
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
            account_id: "acc".into(),
            client_id: None,
            sid: None,
        }
    }

    #[test]
    fn issued_at_has_the_jti_milliseconds() {
        let ms = 1_767_225_600_123;
        assert_eq!(claims(ms / 1000, &new_jti(ms)).issued_at_ms(), ms);
        // Two tokens of one second are told apart.
        let later = claims(ms / 1000, &new_jti(ms + 500)).issued_at_ms();
        assert!(later > ms);
    }

    #[test]
    fn a_jti_that_disagrees_with_iat_falls_back_to_the_start_of_its_second() {
        let ms = 1_767_225_600_123;
        assert_eq!(
            claims(ms / 1000 - 10, &new_jti(ms)).issued_at_ms(),
            (ms / 1000 - 10) * 1000
        );
        assert_eq!(claims(5, "not-a-uuid").issued_at_ms(), 5000);
        assert_eq!(
            claims(5, &uuid::Uuid::new_v4().to_string()).issued_at_ms(),
            5000
        );
    }

    #[test]
    fn new_claims_say_who_the_token_is_for_and_when_it_was_issued() {
        let ms = 1_767_225_600_123;
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
            ms,
            ms / 1000 + 60,
        );
        assert_eq!((minted.iat, minted.nbf), (ms / 1000, ms / 1000));
        assert_eq!(minted.issued_at_ms(), ms);
        assert_eq!(minted.minting_key(), Some("key-1"));
        assert_eq!((minted.iss.as_str(), minted.aud.as_str()), ("iss", "aud"));
        assert_eq!(minted.account_id, "acc");
        assert_eq!(minted.permissions, ["deals.read"]);

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
        let access = Claims::new("iss", "aud", session, vec![], ms, ms / 1000 + 600);
        assert_eq!(access.sub, "user-1");
        assert_eq!(access.client_id.as_deref(), Some("app_1"));
        assert_eq!(access.sid.as_deref(), Some("fam-1"));
        assert_eq!(access.minting_key(), None);
        assert_ne!(access.jti, minted.jti, "every token has its own jti");
    }

    #[test]
    fn jtis_of_one_millisecond_sort_in_the_order_they_were_made() {
        let ms = 1_767_225_600_123;
        let jtis: Vec<String> = (0..1000).map(|_| new_jti(ms)).collect();
        assert!(
            jtis.windows(2).all(|w| w[0] < w[1]),
            "made in order, sorted in order"
        );
        for jti in &jtis {
            assert_eq!(claims(ms / 1000, jti).issued_at_ms(), ms);
        }
    }

    #[test]
    fn only_api_key_tokens_name_a_minting_key() {
        let mut c = claims(1, "x");
        assert_eq!(c.minting_key(), Some("key-1"));
        c.sid = Some("family".into());
        c.client_id = Some("app_1".into());
        assert_eq!(c.minting_key(), None);
    }
}
