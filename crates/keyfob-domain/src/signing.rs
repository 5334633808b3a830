//! Signing keys: the algorithms Keyfob signs with, and the rule for retiring a key at once (a
//! compromised key): which key signs afterwards, and when retiring is refused because nothing
//! could sign.

use crate::ids::Kid;
use crate::time::Timestamp;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An algorithm Keyfob signs tokens with, by its JOSE name (RFC 7518).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlg {
    /// Ed25519 (`EdDSA`): the default.
    EdDsa,
    /// ECDSA on P-256 with SHA-256 (`ES256`).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`RS256`), on a 2048-bit key: what many gateways and
    /// relying parties accept and nothing else.
    Rs256,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 3] = [SigningAlg::EdDsa, SigningAlg::Es256, SigningAlg::Rs256];

    /// Its JOSE name, as in a JWT header and a JWK.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::EdDsa => "EdDSA",
            SigningAlg::Es256 => "ES256",
            SigningAlg::Rs256 => "RS256",
        }
    }
}

/// A signing algorithm Keyfob does not sign with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signing algorithm `{0}`: use EdDSA, ES256 or RS256")]
pub struct UnknownAlg(pub String);

impl FromStr for SigningAlg {
    type Err = UnknownAlg;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SigningAlg::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| UnknownAlg(s.to_owned()))
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SigningAlg {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SigningAlg {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A signing key's times, as the rule needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTimes<'a> {
    pub kid: &'a str,
    /// From when it signs.
    pub activates_at: Timestamp,
    /// From when it no longer signs.
    pub retires_at: Option<Timestamp>,
    /// From when it leaves the JWKS.
    pub expires_at: Option<Timestamp>,
    /// When the operator retired it.
    pub revoked_at: Option<Timestamp>,
}

impl KeyTimes<'_> {
    fn signs_at(&self, t: Timestamp) -> bool {
        self.activates_at <= t && self.retires_at.is_none_or(|r| r > t)
    }

    /// Whether it signs now or will later.
    fn signs_from(&self, now: Timestamp) -> bool {
        self.retires_at.is_none_or(|r| r > now)
    }

    fn usable(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// The key that signs once another is retired, and how it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heir {
    pub kid: Kid,
    /// It signs from here (brought forward to now when it would have started later).
    pub activates_at: Timestamp,
    /// It was to hand over to the retired key: it now keeps signing until the next rotation.
    pub keep_signing: bool,
}

/// Why a signing key cannot be retired; each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetireError {
    #[error("there is no signing key {0}; `keyfob signing-keys list` shows them")]
    Unknown(String),
    #[error("signing key {0} is retired already")]
    AlreadyRetired(String),
    #[error(
        "{0} is the only signing key, and retiring it would leave nothing to sign tokens with: \
         publish a new one first with `keyfob signing-keys rotate --activate-in 0`, then retire {0}"
    )]
    OnlyKey(String),
    #[error(
        "{0} signs tokens and no other key could take over: publish a successor first with \
         `keyfob signing-keys rotate --activate-in 0`, then retire {0}"
    )]
    NoSuccessor(String),
}

/// Plans retiring `kid` at `now`: `Ok(None)` when no other key has to change (the key no longer
/// signs, or another one signs now and after it), `Ok(Some(heir))` for the key that must sign
/// from now on in its place. Refused when no other key could sign.
pub fn plan_retirement(
    keys: &[KeyTimes<'_>],
    kid: &str,
    now: Timestamp,
) -> Result<Option<Heir>, RetireError> {
    let target = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| RetireError::Unknown(kid.to_owned()))?;
    if target.revoked_at.is_some() {
        return Err(RetireError::AlreadyRetired(kid.to_owned()));
    }
    if !target.signs_from(now) {
        // An old key, still published for the tokens it signed: signing is not affected.
        return Ok(None);
    }
    let others: Vec<&KeyTimes<'_>> = keys
        .iter()
        .filter(|k| k.kid != kid && k.usable(now))
        .collect();
    let candidates: Vec<&KeyTimes<'_>> = others
        .iter()
        .copied()
        .filter(|k| k.signs_from(now))
        .collect();
    if candidates.is_empty() {
        return Err(if others.is_empty() {
            RetireError::OnlyKey(kid.to_owned())
        } else {
            RetireError::NoSuccessor(kid.to_owned())
        });
    }
    // The key that would sign last: the one with no end, or else the latest, which was to hand
    // over to the retired key.
    let heir = candidates
        .iter()
        .filter(|k| k.retires_at.is_none())
        .max_by_key(|k| k.activates_at)
        .or_else(|| candidates.iter().max_by_key(|k| k.activates_at))
        .copied()
        .expect("candidates is not empty");
    let keep_signing = heir.retires_at.is_some();
    let activates_at = if candidates.iter().any(|k| k.signs_at(now)) {
        heir.activates_at
    } else {
        now
    };
    if activates_at == heir.activates_at && !keep_signing {
        return Ok(None);
    }
    Ok(Some(Heir {
        kid: Kid::from(heir.kid),
        activates_at,
        keep_signing,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(ms)
    }

    fn key(kid: &str, activates_at: i64, retires_at: Option<i64>) -> KeyTimes<'_> {
        KeyTimes {
            kid,
            activates_at: t(activates_at),
            retires_at: retires_at.map(t),
            expires_at: retires_at.map(|r| t(r + 500_000)),
            revoked_at: None,
        }
    }

    #[test]
    fn the_only_key_cannot_be_retired() {
        let keys = [key("a", 0, None)];
        assert_eq!(
            plan_retirement(&keys, "a", t(NOW)),
            Err(RetireError::OnlyKey("a".into()))
        );
        let message = RetireError::OnlyKey("a".into()).to_string();
        assert!(message.contains("signing-keys rotate"), "{message}");
    }

    #[test]
    fn the_active_key_without_a_successor_cannot_be_retired() {
        // An old key is still published, but it cannot sign any more.
        let keys = [key("old", 0, Some(NOW - 10)), key("a", NOW - 10, None)];
        assert_eq!(
            plan_retirement(&keys, "a", t(NOW)),
            Err(RetireError::NoSuccessor("a".into()))
        );
    }

    #[test]
    fn a_published_successor_signs_from_now() {
        let keys = [key("a", 0, Some(NOW + 300)), key("b", NOW + 300, None)];
        assert_eq!(
            plan_retirement(&keys, "a", t(NOW)),
            Ok(Some(Heir {
                kid: "b".into(),
                activates_at: t(NOW),
                keep_signing: false
            }))
        );
    }

    #[test]
    fn retiring_the_pending_successor_keeps_the_active_key_signing() {
        let keys = [key("a", 0, Some(NOW + 300)), key("b", NOW + 300, None)];
        assert_eq!(
            plan_retirement(&keys, "b", t(NOW)),
            Ok(Some(Heir {
                kid: "a".into(),
                activates_at: t(0),
                keep_signing: true
            }))
        );
    }

    #[test]
    fn an_old_published_key_is_retired_without_changing_anything() {
        let keys = [key("old", 0, Some(NOW - 10)), key("a", NOW - 10, None)];
        assert_eq!(plan_retirement(&keys, "old", t(NOW)), Ok(None));
    }

    #[test]
    fn unknown_and_retired_keys_are_named() {
        let mut keys = [key("a", 0, None), key("b", 0, None)];
        assert_eq!(
            plan_retirement(&keys, "zz", t(NOW)),
            Err(RetireError::Unknown("zz".into()))
        );
        keys[1].revoked_at = Some(t(5));
        assert_eq!(
            plan_retirement(&keys, "b", t(NOW)),
            Err(RetireError::AlreadyRetired("b".into()))
        );
        // A retired key is no successor.
        assert_eq!(
            plan_retirement(&keys, "a", t(NOW)),
            Err(RetireError::OnlyKey("a".into()))
        );
    }

    #[test]
    fn algorithms_read_back_from_their_jose_names_only() {
        for alg in SigningAlg::ALL {
            assert_eq!(alg.as_str().parse::<SigningAlg>(), Ok(alg));
            assert_eq!(alg.to_string(), alg.as_str());
        }
        for bad in [
            "", "eddsa", "rs256", "RS512", "PS256", "HS256", "none", "ES256 ",
        ] {
            assert_eq!(bad.parse::<SigningAlg>(), Err(UnknownAlg(bad.to_owned())));
        }
        let json = serde_json::to_string(&SigningAlg::Es256).unwrap();
        assert_eq!(json, "\"ES256\"");
        assert_eq!("RS256".parse::<SigningAlg>(), Ok(SigningAlg::Rs256));
        let refused = "RS512".parse::<SigningAlg>().unwrap_err().to_string();
        assert!(refused.contains("EdDSA, ES256 or RS256"), "{refused}");
        assert!(serde_json::from_str::<SigningAlg>("\"HS256\"").is_err());
    }
}
