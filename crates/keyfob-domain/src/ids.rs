//! Ids as types of their own, so that a key's id cannot be passed where a token's is expected.
//! Each is text (a UUID, a `jti`, a `client_id`, a `kid`) and reads as a `&str` where one is needed.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! id_types {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl From<&$name> for String {
            fn from(id: &$name) -> String {
                id.0.clone()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    )*};
}

id_types!(
    /// An account (a tenant).
    AccountId,
    /// An account owner: the person who signs in to the dashboard.
    OwnerId,
    /// An end user of the deployment's user pool, who signs in to applications.
    UserId,
    /// A user's consent to an application.
    GrantId,
    /// A record of a resource.
    RecordId,
    /// An event of the audit log.
    EventId,
    /// A signing key's `kid`.
    Kid,
    /// An API key (not the key itself, which is a secret).
    KeyId,
    /// A minted token's `jti`.
    Jti,
    /// An application's `client_id`.
    ClientId,
    /// A session: a refresh family, the login of a user in an application (a token's `sid`).
    FamilyId,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_as_text_and_compare_with_it() {
        let key = KeyId::from("k-1");
        assert_eq!(key, "k-1");
        assert_eq!("k-1", key);
        assert_eq!(key.as_str(), "k-1");
        assert_eq!(key.len(), 3);
        assert_eq!(key.to_string(), "k-1");
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"k-1\"");
        let back: KeyId = serde_json::from_str("\"k-1\"").unwrap();
        assert_eq!(back, key);
        let mut by_id = std::collections::HashMap::new();
        by_id.insert(key.clone(), 1);
        assert_eq!(by_id.get("k-1"), Some(&1));
    }
}
