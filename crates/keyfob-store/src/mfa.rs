//! Second factors: an owner's or end user's TOTP secret (sealed by the caller with the master key),
//! the time step of the last code accepted, their single-use recovery codes (SHA-256 hashes), and
//! the account setting that requires a factor of every owner. [`MfaStore`] is part of [`Store`]
//! (a supertrait), kept in its own file; [`SqlStore`] implements it once for both databases and
//! [`Guarded`] forwards it through its breaker.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Transaction, Type};

use crate::guard::Guarded;
use crate::sql::{Dialect, RowsAffected, SqlStore};
use crate::{Result, Store, StoreError, Timestamp};
use keyfob_domain::ids::{AccountId, OwnerId, UserId};

/// Whose second factor: an account owner's (dashboard) or an end user's (their pages).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FactorHolder {
    Owner(OwnerId),
    User(UserId),
}

impl FactorHolder {
    /// `owner` or `user`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            FactorHolder::Owner(_) => "owner",
            FactorHolder::User(_) => "user",
        }
    }

    /// The owner's or user's id.
    pub fn id(&self) -> &str {
        match self {
            FactorHolder::Owner(id) => id.as_str(),
            FactorHolder::User(id) => id.as_str(),
        }
    }

    pub(crate) fn from_parts(kind: &str, id: String) -> Result<FactorHolder> {
        match kind {
            "owner" => Ok(FactorHolder::Owner(id.into())),
            "user" => Ok(FactorHolder::User(id.into())),
            other => Err(StoreError::Corrupt(format!(
                "a second factor of an unknown kind `{other}`"
            ))),
        }
    }
}

/// A confirmed TOTP factor.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpFactorRow {
    pub holder: FactorHolder,
    /// The secret, sealed with the master key (base64 of nonce and ciphertext).
    pub secret: String,
    /// The time step (Unix seconds / 30) of the last code accepted; no code of this step or an
    /// earlier one is accepted again.
    pub last_step: i64,
    /// When it was confirmed.
    pub created_at: Timestamp,
}

impl std::fmt::Debug for TotpFactorRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpFactorRow")
            .field("holder", &self.holder)
            .field("last_step", &self.last_step)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// What the store keeps of second factors. Part of [`Store`].
#[async_trait]
pub trait MfaStore: Send + Sync + 'static {
    /// Stores a confirmed factor and its recovery codes (hashes) in one transaction. `false`, and
    /// nothing written, when the holder has a factor already.
    async fn insert_totp_factor(
        &self,
        factor: &TotpFactorRow,
        recovery_hashes: &[String],
    ) -> Result<bool>;
    async fn find_totp_factor(&self, holder: &FactorHolder) -> Result<Option<TotpFactorRow>>;
    /// Records that a code of time step `step` was accepted, unless one of that step or a later
    /// one was already: `true` when this call is the one that accepted it. One conditional
    /// UPDATE, so that of two nodes given the same code at once only one succeeds.
    async fn advance_totp_step(&self, holder: &FactorHolder, step: i64) -> Result<bool>;
    /// Uses up the holder's unused recovery code with this hash: `true` when this call did.
    async fn use_recovery_code(
        &self,
        holder: &FactorHolder,
        code_hash: &str,
        at: Timestamp,
    ) -> Result<bool>;
    /// Replaces every recovery code of the holder (used or not) with these, in one transaction.
    /// `false`, and nothing written, when the holder has no factor.
    async fn replace_recovery_codes(
        &self,
        holder: &FactorHolder,
        recovery_hashes: &[String],
        at: Timestamp,
    ) -> Result<bool>;
    /// How many of the holder's recovery codes are still unused.
    async fn unused_recovery_codes(&self, holder: &FactorHolder) -> Result<u64>;
    /// Removes the holder's factor and recovery codes. `false` when there was none.
    async fn delete_totp_factor(&self, holder: &FactorHolder) -> Result<bool>;
    /// Every factor's sealed secret, for a master-key rotation.
    async fn list_totp_secrets(&self) -> Result<Vec<(FactorHolder, String)>>;

    /// Whether the account requires a second factor of its owners.
    async fn account_requires_mfa(&self, account_id: &AccountId) -> Result<bool>;
    /// Sets it; `false` when there is no such account.
    async fn set_account_requires_mfa(
        &self,
        account_id: &AccountId,
        required: bool,
    ) -> Result<bool>;
    /// Whether the owner's account requires a second factor and the owner has none.
    async fn owner_must_enrol(&self, owner_id: &OwnerId) -> Result<bool>;
}

/// Writes resealed TOTP secrets in a master-key rotation's transaction.
pub(crate) async fn write_resealed_totp<DB: Dialect>(
    tx: &mut Transaction<'_, DB>,
    secrets: &[(FactorHolder, String)],
) -> Result<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    for (holder, sealed) in secrets {
        sqlx::query(
            "UPDATE totp_factors SET secret = $1 WHERE holder_kind = $2 AND holder_id = $3",
        )
        .bind(sealed.as_str())
        .bind(holder.kind())
        .bind(holder.id())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Inserts recovery code hashes in `tx`.
async fn insert_codes<DB: Dialect>(
    tx: &mut Transaction<'_, DB>,
    holder: &FactorHolder,
    hashes: &[String],
    at: Timestamp,
) -> Result<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    for hash in hashes {
        sqlx::query(
            "INSERT INTO totp_recovery_codes (holder_kind, holder_id, code_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(holder.kind())
        .bind(holder.id())
        .bind(hash.as_str())
        .bind(at.unix_ms())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl<DB: Dialect> MfaStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Timestamp>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<&'q Value>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<Value>: Decode<'q, DB> + Type<DB>,
{
    async fn insert_totp_factor(
        &self,
        factor: &TotpFactorRow,
        recovery_hashes: &[String],
    ) -> Result<bool> {
        let holder = &factor.holder;
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let inserted = sqlx::query(
            "INSERT INTO totp_factors (holder_kind, holder_id, secret, last_step, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (holder_kind, holder_id) DO NOTHING",
        )
        .bind(holder.kind())
        .bind(holder.id())
        .bind(factor.secret.as_str())
        .bind(factor.last_step)
        .bind(factor.created_at.unix_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !inserted {
            return Ok(false);
        }
        // Codes left from an earlier factor of the holder (removed since) are gone already; the
        // delete makes sure.
        sqlx::query("DELETE FROM totp_recovery_codes WHERE holder_kind = $1 AND holder_id = $2")
            .bind(holder.kind())
            .bind(holder.id())
            .execute(&mut *tx)
            .await?;
        insert_codes(&mut tx, holder, recovery_hashes, factor.created_at).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn find_totp_factor(&self, holder: &FactorHolder) -> Result<Option<TotpFactorRow>> {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT secret, last_step, created_at FROM totp_factors \
             WHERE holder_kind = $1 AND holder_id = $2",
        )
        .bind(holder.kind())
        .bind(holder.id())
        .fetch_optional(self.conn())
        .await?;
        Ok(row.map(|(secret, last_step, created_at)| TotpFactorRow {
            holder: holder.clone(),
            secret,
            last_step,
            created_at: Timestamp::from_unix_ms(created_at),
        }))
    }

    async fn advance_totp_step(&self, holder: &FactorHolder, step: i64) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE totp_factors SET last_step = $1 \
             WHERE holder_kind = $2 AND holder_id = $3 AND last_step < $1",
        )
        .bind(step)
        .bind(holder.kind())
        .bind(holder.id())
        .execute(self.conn())
        .await?
        .rows_affected()
            > 0)
    }

    async fn use_recovery_code(
        &self,
        holder: &FactorHolder,
        code_hash: &str,
        at: Timestamp,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE totp_recovery_codes SET used_at = $1 \
             WHERE holder_kind = $2 AND holder_id = $3 AND code_hash = $4 AND used_at IS NULL",
        )
        .bind(at.unix_ms())
        .bind(holder.kind())
        .bind(holder.id())
        .bind(code_hash)
        .execute(self.conn())
        .await?
        .rows_affected()
            > 0)
    }

    async fn replace_recovery_codes(
        &self,
        holder: &FactorHolder,
        recovery_hashes: &[String],
        at: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let has_factor: Option<i64> = sqlx::query_scalar(
            "SELECT last_step FROM totp_factors WHERE holder_kind = $1 AND holder_id = $2",
        )
        .bind(holder.kind())
        .bind(holder.id())
        .fetch_optional(&mut *tx)
        .await?;
        if has_factor.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM totp_recovery_codes WHERE holder_kind = $1 AND holder_id = $2")
            .bind(holder.kind())
            .bind(holder.id())
            .execute(&mut *tx)
            .await?;
        insert_codes(&mut tx, holder, recovery_hashes, at).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn unused_recovery_codes(&self, holder: &FactorHolder) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM totp_recovery_codes \
             WHERE holder_kind = $1 AND holder_id = $2 AND used_at IS NULL",
        )
        .bind(holder.kind())
        .bind(holder.id())
        .fetch_one(self.conn())
        .await?;
        Ok(count.unsigned_abs())
    }

    async fn delete_totp_factor(&self, holder: &FactorHolder) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let deleted =
            sqlx::query("DELETE FROM totp_factors WHERE holder_kind = $1 AND holder_id = $2")
                .bind(holder.kind())
                .bind(holder.id())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
        sqlx::query("DELETE FROM totp_recovery_codes WHERE holder_kind = $1 AND holder_id = $2")
            .bind(holder.kind())
            .bind(holder.id())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn list_totp_secrets(&self) -> Result<Vec<(FactorHolder, String)>> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT holder_kind, holder_id, secret FROM totp_factors")
                .fetch_all(self.conn())
                .await?;
        rows.into_iter()
            .map(|(kind, id, secret)| Ok((FactorHolder::from_parts(&kind, id)?, secret)))
            .collect()
    }

    async fn account_requires_mfa(&self, account_id: &AccountId) -> Result<bool> {
        let required: Option<bool> =
            sqlx::query_scalar("SELECT mfa_required FROM accounts WHERE id = $1")
                .bind(account_id.as_str())
                .fetch_optional(self.conn())
                .await?;
        Ok(required.unwrap_or(false))
    }

    async fn set_account_requires_mfa(
        &self,
        account_id: &AccountId,
        required: bool,
    ) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE accounts SET mfa_required = $1 WHERE id = $2")
                .bind(required)
                .bind(account_id.as_str())
                .execute(self.conn())
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn owner_must_enrol(&self, owner_id: &OwnerId) -> Result<bool> {
        let must: Option<i64> = sqlx::query_scalar(
            "SELECT CASE WHEN a.mfa_required AND NOT EXISTS (\
                 SELECT 1 FROM totp_factors f WHERE f.holder_kind = 'owner' AND f.holder_id = o.id\
             ) THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END \
             FROM owners o JOIN accounts a ON a.id = o.account_id WHERE o.id = $1",
        )
        .bind(owner_id.as_str())
        .fetch_optional(self.conn())
        .await?;
        Ok(must == Some(1))
    }
}

#[async_trait]
impl<S: Store> MfaStore for Guarded<S> {
    async fn insert_totp_factor(
        &self,
        factor: &TotpFactorRow,
        recovery_hashes: &[String],
    ) -> Result<bool> {
        self.run(self.inner().insert_totp_factor(factor, recovery_hashes))
            .await
    }

    async fn find_totp_factor(&self, holder: &FactorHolder) -> Result<Option<TotpFactorRow>> {
        self.run(self.inner().find_totp_factor(holder)).await
    }

    async fn advance_totp_step(&self, holder: &FactorHolder, step: i64) -> Result<bool> {
        self.run(self.inner().advance_totp_step(holder, step)).await
    }

    async fn use_recovery_code(
        &self,
        holder: &FactorHolder,
        code_hash: &str,
        at: Timestamp,
    ) -> Result<bool> {
        self.run(self.inner().use_recovery_code(holder, code_hash, at))
            .await
    }

    async fn replace_recovery_codes(
        &self,
        holder: &FactorHolder,
        recovery_hashes: &[String],
        at: Timestamp,
    ) -> Result<bool> {
        self.run(
            self.inner()
                .replace_recovery_codes(holder, recovery_hashes, at),
        )
        .await
    }

    async fn unused_recovery_codes(&self, holder: &FactorHolder) -> Result<u64> {
        self.run(self.inner().unused_recovery_codes(holder)).await
    }

    async fn delete_totp_factor(&self, holder: &FactorHolder) -> Result<bool> {
        self.run(self.inner().delete_totp_factor(holder)).await
    }

    async fn list_totp_secrets(&self) -> Result<Vec<(FactorHolder, String)>> {
        self.run(self.inner().list_totp_secrets()).await
    }

    async fn account_requires_mfa(&self, account_id: &AccountId) -> Result<bool> {
        self.run(self.inner().account_requires_mfa(account_id))
            .await
    }

    async fn set_account_requires_mfa(
        &self,
        account_id: &AccountId,
        required: bool,
    ) -> Result<bool> {
        self.run(self.inner().set_account_requires_mfa(account_id, required))
            .await
    }

    async fn owner_must_enrol(&self, owner_id: &OwnerId) -> Result<bool> {
        self.run(self.inner().owner_must_enrol(owner_id)).await
    }
}
