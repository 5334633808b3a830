//! Passkeys (WebAuthn credentials) of owners and end users: what the relying-party library
//! serialised of each (public key, dynamic state), its name, signature counter and times of
//! creation and last use. [`PasskeyStore`] is part of [`Store`] (a supertrait), kept in its own
//! file; [`SqlStore`] implements it once for both databases and [`Guarded`] forwards it.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use crate::guard::Guarded;
use crate::mfa::FactorHolder;
use crate::sql::{Dialect, RowsAffected, SqlStore};
use crate::{Result, Store, Timestamp};

/// A registered passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRow {
    /// The credential id, base64url without padding.
    pub credential_id: String,
    pub holder: FactorHolder,
    /// What its holder called it.
    pub name: String,
    /// The credential's static state (public key and extensions), base64 of its binary encoding.
    pub public_key: String,
    /// Its dynamic state (counter, user verification, backup), base64 of its binary encoding.
    pub dynamic_state: String,
    /// The signature counter of the last assertion accepted (0 for authenticators that keep none).
    pub sign_count: i64,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

/// The change a sign-in makes to a passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyUse<'a> {
    pub credential_id: &'a str,
    /// The counter the sign-in was checked against: the update happens only if it is still the
    /// stored one.
    pub expected_sign_count: i64,
    pub dynamic_state: &'a str,
    pub sign_count: i64,
    pub at: Timestamp,
}

/// What the store keeps of passkeys. Part of [`Store`].
#[async_trait]
pub trait PasskeyStore: Send + Sync + 'static {
    /// Stores a new passkey; `false`, and nothing written, when its credential id is taken.
    async fn insert_passkey(&self, row: &PasskeyRow) -> Result<bool>;
    /// The passkey with this credential id, whoever holds it.
    async fn find_passkey(&self, credential_id: &str) -> Result<Option<PasskeyRow>>;
    /// The holder's passkeys, oldest first.
    async fn list_passkeys(&self, holder: &FactorHolder) -> Result<Vec<PasskeyRow>>;
    /// Records a sign-in: the new dynamic state and counter and the time, only if the stored
    /// counter is still `expected_sign_count` (one conditional UPDATE, so that two nodes given
    /// the same assertion cannot both accept it). `true` when this call made the change.
    async fn record_passkey_use(&self, change: &PasskeyUse<'_>) -> Result<bool>;
    /// Removes the holder's passkey with this credential id; `false` when they have none such.
    async fn delete_passkey(&self, holder: &FactorHolder, credential_id: &str) -> Result<bool>;
}

type Columns = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
);

const COLUMNS: &str = "credential_id, holder_kind, holder_id, name, public_key, dynamic_state, \
     sign_count, created_at, last_used_at";

fn from_columns(c: Columns) -> Result<PasskeyRow> {
    let (credential_id, kind, id, name, public_key, dynamic_state, sign_count, created, used) = c;
    Ok(PasskeyRow {
        credential_id,
        holder: FactorHolder::from_parts(&kind, id)?,
        name,
        public_key,
        dynamic_state,
        sign_count,
        created_at: Timestamp::from_unix_ms(created),
        last_used_at: used.map(Timestamp::from_unix_ms),
    })
}

#[async_trait]
impl<DB: Dialect> PasskeyStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Json<&'q Value>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<Value>: Decode<'q, DB> + Type<DB>,
{
    async fn insert_passkey(&self, row: &PasskeyRow) -> Result<bool> {
        Ok(sqlx::query(&format!(
            "INSERT INTO passkeys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (credential_id) DO NOTHING"
        ))
        .bind(row.credential_id.as_str())
        .bind(row.holder.kind())
        .bind(row.holder.id())
        .bind(row.name.as_str())
        .bind(row.public_key.as_str())
        .bind(row.dynamic_state.as_str())
        .bind(row.sign_count)
        .bind(row.created_at.unix_ms())
        .bind(row.last_used_at.map(|t| t.unix_ms()))
        .execute(self.conn())
        .await?
        .rows_affected()
            > 0)
    }

    async fn find_passkey(&self, credential_id: &str) -> Result<Option<PasskeyRow>> {
        let row: Option<Columns> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM passkeys WHERE credential_id = $1"
        ))
        .bind(credential_id)
        .fetch_optional(self.conn())
        .await?;
        row.map(from_columns).transpose()
    }

    async fn list_passkeys(&self, holder: &FactorHolder) -> Result<Vec<PasskeyRow>> {
        let rows: Vec<Columns> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM passkeys WHERE holder_kind = $1 AND holder_id = $2 \
             ORDER BY created_at, credential_id"
        ))
        .bind(holder.kind())
        .bind(holder.id())
        .fetch_all(self.conn())
        .await?;
        rows.into_iter().map(from_columns).collect()
    }

    async fn record_passkey_use(&self, change: &PasskeyUse<'_>) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE passkeys SET dynamic_state = $1, sign_count = $2, last_used_at = $3 \
             WHERE credential_id = $4 AND sign_count = $5",
        )
        .bind(change.dynamic_state)
        .bind(change.sign_count)
        .bind(change.at.unix_ms())
        .bind(change.credential_id)
        .bind(change.expected_sign_count)
        .execute(self.conn())
        .await?
        .rows_affected()
            > 0)
    }

    async fn delete_passkey(&self, holder: &FactorHolder, credential_id: &str) -> Result<bool> {
        Ok(sqlx::query(
            "DELETE FROM passkeys WHERE credential_id = $1 AND holder_kind = $2 AND holder_id = $3",
        )
        .bind(credential_id)
        .bind(holder.kind())
        .bind(holder.id())
        .execute(self.conn())
        .await?
        .rows_affected()
            > 0)
    }
}

#[async_trait]
impl<S: Store> PasskeyStore for Guarded<S> {
    async fn insert_passkey(&self, row: &PasskeyRow) -> Result<bool> {
        self.run(self.inner().insert_passkey(row)).await
    }

    async fn find_passkey(&self, credential_id: &str) -> Result<Option<PasskeyRow>> {
        self.run(self.inner().find_passkey(credential_id)).await
    }

    async fn list_passkeys(&self, holder: &FactorHolder) -> Result<Vec<PasskeyRow>> {
        self.run(self.inner().list_passkeys(holder)).await
    }

    async fn record_passkey_use(&self, change: &PasskeyUse<'_>) -> Result<bool> {
        self.run(self.inner().record_passkey_use(change)).await
    }

    async fn delete_passkey(&self, holder: &FactorHolder, credential_id: &str) -> Result<bool> {
        self.run(self.inner().delete_passkey(holder, credential_id))
            .await
    }
}
