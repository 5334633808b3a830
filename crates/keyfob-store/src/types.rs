//! Column types: what a row holds, read once at the storage edge. A list is kept as a JSON array
//! in one text column ([`JsonList`]); a change's kind as its name ([`ChangeKind`]); the domain's
//! actor kinds and signing algorithms as their names (`keyfob_domain::column`).
//!
//! One rule for stored data that no longer reads: the read fails with
//! [`crate::StoreError::Corrupt`], naming the column, and the caller answers as for any store
//! error. Nothing falls back to an empty or default value.

use std::fmt;
use std::ops::Deref;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use keyfob_domain::{Permission, PermissionError};

/// A list kept as a JSON array in one text column.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JsonList<T>(pub Vec<T>);

/// A list of permissions (`["deals.read", …]`): every one parsed when read.
pub type Permissions = JsonList<Permission>;
/// A list of plain strings: redirect URIs, origins, field names.
pub type Strings = JsonList<String>;

impl<T> JsonList<T> {
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
}

impl JsonList<Permission> {
    /// Reads permission names, each checked; the first that does not parse is the error.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, PermissionError> {
        names.iter().map(|name| name.as_ref().parse()).collect()
    }

    /// Each permission's name, in order.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl<T> Default for JsonList<T> {
    fn default() -> Self {
        JsonList(Vec::new())
    }
}

impl<T> Deref for JsonList<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T> From<Vec<T>> for JsonList<T> {
    fn from(items: Vec<T>) -> Self {
        JsonList(items)
    }
}

impl<T> FromIterator<T> for JsonList<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        JsonList(iter.into_iter().collect())
    }
}

impl<'a, T> IntoIterator for &'a JsonList<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T> IntoIterator for JsonList<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<T: fmt::Debug> fmt::Debug for JsonList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl<T: Serialize> JsonList<T> {
    /// The stored form: a JSON array.
    pub fn to_json(&self) -> String {
        // A list of strings and of permissions (serialized as strings) always serializes.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".to_owned())
    }
}

impl<T: DeserializeOwned> JsonList<T> {
    /// Reads the stored form; an error when it is not a JSON array of `T`.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json).map(JsonList)
    }
}

impl<T, DB: Database> Type<DB> for JsonList<T>
where
    String: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as Type<DB>>::compatible(ty)
    }
}

impl<'q, T: Serialize, DB: Database> Encode<'q, DB> for JsonList<T>
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, DB>>::encode(self.to_json(), buf)
    }
}

impl<'r, T: DeserializeOwned, DB: Database> Decode<'r, DB> for JsonList<T>
where
    String: Decode<'r, DB>,
{
    fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <String as Decode<'r, DB>>::decode(value)?;
        Ok(JsonList::from_json(&text)?)
    }
}

/// A JSON document kept in one text column (an audit event's detail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText<T>(pub T);

impl<T, DB: Database> Type<DB> for JsonText<T>
where
    String: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as Type<DB>>::compatible(ty)
    }
}

impl<'q, T: Serialize, DB: Database> Encode<'q, DB> for JsonText<T>
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, DB>>::encode(serde_json::to_string(&self.0)?, buf)
    }
}

impl<'r, T: DeserializeOwned, DB: Database> Decode<'r, DB> for JsonText<T>
where
    String: Decode<'r, DB>,
{
    fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <String as Decode<'r, DB>>::decode(value)?;
        Ok(JsonText(serde_json::from_str(&text)?))
    }
}

/// What a change-feed entry tells the other nodes to reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    ApiKeyCreated,
    ApiKeyRevoked,
    /// A key's expiry changed (it was rolled): reload its row.
    ApiKeyChanged,
    /// Every token an API key minted so far was revoked (the key stays live).
    ApiKeyTokensRevoked,
    TokenRevoked,
    SigningKeysChanged,
    /// An application was registered or changed: its origins (CORS) may differ.
    AppChanged,
    /// A refresh family (a user session) ended: its access tokens are refused.
    SessionRevoked,
    /// A kind this version does not know, written by a newer node during a rolling upgrade: read
    /// and skipped, never an error, so an older node keeps following the feed.
    Other(String),
}

impl ChangeKind {
    const KNOWN: [ChangeKind; 8] = [
        ChangeKind::ApiKeyCreated,
        ChangeKind::ApiKeyRevoked,
        ChangeKind::ApiKeyChanged,
        ChangeKind::ApiKeyTokensRevoked,
        ChangeKind::TokenRevoked,
        ChangeKind::SigningKeysChanged,
        ChangeKind::AppChanged,
        ChangeKind::SessionRevoked,
    ];

    /// Its stored name.
    pub fn as_str(&self) -> &str {
        match self {
            ChangeKind::ApiKeyCreated => "api_key.created",
            ChangeKind::ApiKeyRevoked => "api_key.revoked",
            ChangeKind::ApiKeyChanged => "api_key.changed",
            ChangeKind::ApiKeyTokensRevoked => "api_key.tokens_revoked",
            ChangeKind::TokenRevoked => "token.revoked",
            ChangeKind::SigningKeysChanged => "signing_keys.changed",
            ChangeKind::AppChanged => "app.changed",
            ChangeKind::SessionRevoked => "session.revoked",
            ChangeKind::Other(name) => name,
        }
    }

    /// Reads a stored name; any name reads.
    pub fn from_name(name: &str) -> ChangeKind {
        ChangeKind::KNOWN
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .unwrap_or_else(|| ChangeKind::Other(name.to_owned()))
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<DB: Database> Type<DB> for ChangeKind
where
    String: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: Database> Encode<'q, DB> for ChangeKind
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, DB>>::encode(self.as_str().to_owned(), buf)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for ChangeKind
where
    String: Decode<'r, DB>,
{
    fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <String as Decode<'r, DB>>::decode(value)?;
        Ok(ChangeKind::from_name(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keep_their_json_form() {
        let list: Permissions = JsonList(vec!["deals.read".parse().unwrap()]);
        assert_eq!(list.to_json(), r#"["deals.read"]"#);
        assert_eq!(Permissions::from_json(r#"["deals.read"]"#).unwrap(), list);
        assert_eq!(Strings::default().to_json(), "[]");
    }

    #[test]
    fn a_list_that_no_longer_reads_is_an_error_not_an_empty_list() {
        for bad in ["", "{}", "[1]", "not json", r#"["deals.fly"]"#, "null"] {
            assert!(Permissions::from_json(bad).is_err(), "{bad}");
        }
        assert!(Strings::from_json("[1]").is_err());
    }

    #[test]
    fn change_kinds_read_back_and_unknown_ones_are_kept() {
        for kind in ChangeKind::KNOWN {
            assert_eq!(ChangeKind::from_name(kind.as_str()), kind);
        }
        let newer = ChangeKind::from_name("owner.mfa_changed");
        assert_eq!(newer, ChangeKind::Other("owner.mfa_changed".into()));
        assert_eq!(newer.as_str(), "owner.mfa_changed");
    }
}
