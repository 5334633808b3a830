//! The SQL both backends share. Both accept `$n` placeholders and `RETURNING`, and times are plain
//! integers, so one body serves both: [`SqlStore`] implements [`Store`] once, for any database that
//! is a [`Dialect`]. What differs (connecting, the write transaction's `BEGIN`, JSON paths in
//! listings) lives in `sqlite.rs` and `pg.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use keyfob_domain::mail::{LinkPurpose, PersonKind};
use keyfob_domain::query::{Field, ListQuery};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{
    Arguments, ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool,
    QueryBuilder, Transaction, Type,
};

use crate::model::*;
use crate::types::{ChangeKind, Permissions, Strings};
use crate::{Result, Store, StoreError, Timestamp};
use keyfob_domain::ids::{
    AccountId, ClientId, FamilyId, GrantId, Jti, KeyId, Kid, OwnerId, RecordId, UserId,
};

#[derive(FromRow)]
pub(crate) struct RecordDbRow {
    pub id: RecordId,
    pub account_id: AccountId,
    pub resource: String,
    pub owner_user_id: Option<UserId>,
    pub doc: Json<Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<RecordDbRow> for RecordRow {
    fn from(row: RecordDbRow) -> Self {
        RecordRow {
            id: row.id,
            account_id: row.account_id,
            resource: row.resource,
            owner_user_id: row.owner_user_id,
            doc: row.doc.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The joined row behind [`RefreshSession`].
#[derive(sqlx::FromRow)]
pub(crate) struct RefreshSessionRow {
    token_hash: String,
    family_id: FamilyId,
    permissions: Permissions,
    created_at: Timestamp,
    used_at: Option<Timestamp>,
    next_sealed: Option<String>,
    user_id: UserId,
    client_id: ClientId,
    grant_id: GrantId,
    identity: IdentityScopes,
    auth_time: Option<Timestamp>,
    family_created_at: Timestamp,
    last_used_at: Timestamp,
    revoked_at: Option<Timestamp>,
    grant_permissions: Option<Permissions>,
}

impl From<RefreshSessionRow> for RefreshSession {
    fn from(row: RefreshSessionRow) -> Self {
        RefreshSession {
            family: FamilyRow {
                id: row.family_id.clone(),
                user_id: row.user_id,
                client_id: row.client_id,
                grant_id: row.grant_id,
                identity: row.identity,
                auth_time: row.auth_time,
                created_at: row.family_created_at,
                last_used_at: row.last_used_at,
                revoked_at: row.revoked_at,
            },
            token: RefreshRow {
                token_hash: row.token_hash,
                family_id: row.family_id,
                permissions: row.permissions,
                created_at: row.created_at,
                used_at: row.used_at,
                next_sealed: row.next_sealed,
            },
            grant_permissions: row.grant_permissions,
        }
    }
}

pub(crate) const APP_COLUMNS: &str = "client_id, account_id, name, public, client_secret_hash, \
     redirect_uris, post_logout_redirect_uris, origins, max_permissions, refresh_idle_secs, \
     refresh_absolute_secs, allow_fragment, created_at, revoked_at, previous_secret_hash, \
     previous_secret_expires_at, deleted_at, logo_uri, homepage_uri, policy_uri";

pub(crate) const GRANT_COLUMNS: &str =
    "id, user_id, client_id, account_id, permissions, identity, created_at, updated_at, revoked_at";

pub(crate) const CODE_COLUMNS: &str = "code_hash, client_id, user_id, grant_id, redirect_uri, \
     permissions, identity, nonce, auth_time, code_challenge, family_id, created_at, expires_at, used_at";

/// A token's columns and the tables they are read from: its own row and the key that minted it,
/// so that `revoked_at` also says when the key, or all of its tokens, were revoked.
pub(crate) const TOKEN_FROM: &str = "t.jti, t.account_id, t.api_key_id, t.subject, t.permissions, \
     t.issued_at, t.expires_at, t.name, t.metadata, t.last_used_at, CASE WHEN t.revoked_at IS NOT NULL THEN t.revoked_at \
     WHEN k.tokens_revoked_before IS NOT NULL AND t.issued_at <= k.tokens_revoked_before \
     THEN k.tokens_revoked_before ELSE k.revoked_at END AS revoked_at \
     FROM tokens t LEFT JOIN api_keys k ON k.id = t.api_key_id";

pub(crate) const API_KEY_COLUMNS: &str = "id, account_id, name, prefix, key_hash, created_at, \
     last_used_at, revoked_at, tokens_revoked_before, permissions, expires_at, rate_limit_requests, \
     rate_limit_window_secs, rolled_from, last_used_ip";

pub(crate) const OWNER_COLUMNS: &str =
    "id, account_id, email, password_hash, created_at, email_verified_at";

pub(crate) const USER_COLUMNS: &str =
    "id, email, password_hash, created_at, password_changed_at, email_verified_at, disabled_at";

pub(crate) const OWNER_LOGIN_COLUMNS: &str =
    "id_hash, owner_id, account_id, csrf_token, created_at, expires_at, ip, user_agent";

pub(crate) const EMAIL_LINK_COLUMNS: &str = "token_hash, purpose, subject_kind, subject_id, email, \
     next, created_at, expires_at, used_at";

pub(crate) const RECORD_COLUMNS: &str =
    "id, account_id, resource, owner_user_id, doc, created_at, updated_at";

/// What one database does its own way. Both implement it: `sqlx::Sqlite` in `sqlite.rs`,
/// `sqlx::Postgres` in `pg.rs`.
pub trait Dialect: Database<QueryResult: RowsAffected> {
    /// Its name, for logs and `/readyz`.
    const BACKEND: &'static str;
    /// The statement that starts a write transaction. SQLite's must be `BEGIN IMMEDIATE`, so that a
    /// transaction that reads before it writes waits for the write lock instead of failing with
    /// SQLITE_BUSY.
    const BEGIN: &'static str;
    /// An expression giving the document's value at the path bound to `placeholder`, as text, for
    /// equality filters.
    fn text_at(placeholder: &str) -> String;
    /// An expression giving the document's value at the path bound to `placeholder`, for ordering.
    fn value_at(placeholder: &str) -> String;
    /// The bound form of a JSON path.
    type Path: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;
    fn path(segments: &[String]) -> Self::Path;

    /// Runs the statement `builder` built, on `executor`.
    ///
    /// Code generic over the database cannot call `builder.build().execute(…)` itself: sqlx's
    /// bounds would keep the builder borrowed for as long as the values bound to it, so it could not
    /// be dropped. Each backend's arguments can be narrowed to the borrow, so each backend runs it.
    fn execute_built<'a, 'c: 'a, E>(
        builder: &'a mut QueryBuilder<'_, Self>,
        executor: E,
    ) -> impl Future<Output = Result<Self::QueryResult, sqlx::Error>> + Send + 'a
    where
        E: 'a + Executor<'c, Database = Self>;

    /// Runs the statement `builder` built, on `executor`, and reads each row's one text column (as
    /// [`Dialect::execute_built`] runs a statement).
    fn fetch_texts_built<'a, 'c: 'a, E>(
        builder: &'a mut QueryBuilder<'_, Self>,
        executor: E,
    ) -> impl Future<Output = Result<Vec<String>, sqlx::Error>> + Send + 'a
    where
        E: 'a + Executor<'c, Database = Self>;

    /// Runs the statement `builder` built, on `executor`, and reads each row as a `T`.
    fn fetch_rows_built<'a, 'c: 'a, E, T>(
        builder: &'a mut QueryBuilder<'_, Self>,
        executor: E,
    ) -> impl Future<Output = Result<Vec<T>, sqlx::Error>> + Send + 'a
    where
        E: 'a + Executor<'c, Database = Self>,
        T: for<'r> FromRow<'r, Self::Row> + Send + Unpin + 'a;
}

/// How many rows a statement changed: each driver's result type has its own `rows_affected`.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

/// A bound value of a listing query.
pub(crate) enum Bind {
    Text(String),
    Path(Vec<String>),
}

/// A listing's SQL pieces: the WHERE clause with its binds, then the ORDER BY whose binds are
/// numbered after them (the count query takes only the first part).
pub(crate) struct ListSql {
    pub clause: String,
    pub order: String,
    pub binds: Vec<Bind>,
    /// How many of `binds` belong to the WHERE clause.
    pub where_binds: usize,
}

/// Builds the WHERE clause, ORDER BY and binds of a listing, shared by both backends.
pub(crate) fn list_sql<D: Dialect>(scope: &RecordScope<'_>, query: &ListQuery) -> ListSql {
    let mut binds = vec![
        Bind::Text(scope.account_id.as_str().to_owned()),
        Bind::Text(scope.resource.to_owned()),
    ];
    let mut clause = String::from("account_id = $1 AND resource = $2");
    if let Some(owner) = scope.owner_user_id {
        binds.push(Bind::Text(owner.as_str().to_owned()));
        clause.push_str(&format!(" AND owner_user_id = ${}", binds.len()));
    }
    for (field, value) in &query.filters {
        let expr = match field {
            Field::Id => "id".to_owned(),
            Field::CreatedAt => "CAST(created_at AS TEXT)".to_owned(),
            Field::UpdatedAt => "CAST(updated_at AS TEXT)".to_owned(),
            Field::Doc(path) => {
                binds.push(Bind::Path(path.clone()));
                D::text_at(&format!("${}", binds.len()))
            }
        };
        binds.push(Bind::Text(value.clone()));
        clause.push_str(&format!(" AND {expr} = ${}", binds.len()));
    }
    let where_binds = binds.len();
    let order = match &query.sort {
        None => "created_at DESC, id DESC".to_owned(),
        Some(sort) => {
            let dir = if sort.descending { "DESC" } else { "ASC" };
            let expr = match &sort.field {
                Field::Id => "id".to_owned(),
                Field::CreatedAt => "created_at".to_owned(),
                Field::UpdatedAt => "updated_at".to_owned(),
                Field::Doc(path) => {
                    binds.push(Bind::Path(path.clone()));
                    D::value_at(&format!("${}", binds.len()))
                }
            };
            format!("{expr} {dir}, id {dir}")
        }
    };
    ListSql {
        clause,
        order,
        binds,
        where_binds,
    }
}

/// The store both backends share, over a pool of database `DB`: [`crate::SqliteStore`] and
/// [`crate::PgStore`] are this over `sqlx::Sqlite` and `sqlx::Postgres`.
pub struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
    /// Calls that found no idle connection with the pool at its largest: they waited.
    waits: Arc<AtomicU64>,
}

impl<DB: Database> SqlStore<DB> {
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        SqlStore {
            pool,
            waits: Arc::default(),
        }
    }

    /// The pool, for one call; a call that will have to wait for a connection is counted.
    pub(crate) fn conn(&self) -> &Pool<DB> {
        if self.pool.num_idle() == 0
            && self.pool.size() >= self.pool.options().get_max_connections()
        {
            self.waits.fetch_add(1, Ordering::Relaxed);
        }
        &self.pool
    }
}

/// The bound values of a listing, then `extra` integers (its LIMIT and OFFSET).
fn list_args<'q, DB: Dialect>(
    binds: &[Bind],
    extra: &[i64],
) -> Result<DB::Arguments<'q>, sqlx::Error>
where
    String: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
{
    let mut args = DB::Arguments::<'q>::default();
    for bind in binds {
        match bind {
            Bind::Text(s) => args.add(s.clone()),
            Bind::Path(p) => args.add(DB::path(p)),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    for i in extra {
        args.add(*i).map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

// Both `impl` blocks below name the same bounds: what sqlx must know of `DB` to run the queries
// (its connections execute them, its arguments bind) and to bind and read the column types used
// (text, integers, booleans, JSON). `sqlx::Sqlite` and `sqlx::Postgres` meet them all.

impl<DB: Dialect> SqlStore<DB>
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
    /// Logs a change in `tx` for the other nodes' change feeds.
    async fn log_change(
        tx: &mut Transaction<'_, DB>,
        kind: ChangeKind,
        subject: &str,
        at: Timestamp,
    ) -> Result<()> {
        sqlx::query("INSERT INTO changes (kind, subject, created_at) VALUES ($1, $2, $3)")
            .bind(kind)
            .bind(subject)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Inserts an API key's row in `tx`.
    async fn insert_api_key_in(tx: &mut Transaction<'_, DB>, key: &ApiKeyRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, name, prefix, key_hash, created_at, permissions, \
             expires_at, rate_limit_requests, rate_limit_window_secs, rolled_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&key.id)
        .bind(&key.account_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(key.created_at)
        .bind(key.permissions.as_ref().map(Permissions::to_json))
        .bind(key.expires_at)
        .bind(key.rate_limit_requests)
        .bind(key.rate_limit_window_secs)
        .bind(key.rolled_from.as_deref())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Ends the given live families in `tx` and logs each for the other nodes.
    async fn end_families(
        tx: &mut Transaction<'_, DB>,
        ids: &[FamilyId],
        at: Timestamp,
    ) -> Result<()> {
        for id in ids {
            sqlx::query(
                "UPDATE refresh_families SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(id)
            .execute(&mut **tx)
            .await?;
            Self::log_change(tx, ChangeKind::SessionRevoked, id, at).await?;
        }
        Ok(())
    }

    /// Ends every live session in an application, in `tx`, logging each, and forgets its unused
    /// authorization codes (so none starts a session should the app be enabled again).
    async fn end_app_families(
        tx: &mut Transaction<'_, DB>,
        client_id: &ClientId,
        at: Timestamp,
    ) -> Result<()> {
        sqlx::query("DELETE FROM auth_codes WHERE client_id = $1 AND used_at IS NULL")
            .bind(client_id)
            .execute(&mut **tx)
            .await?;
        let ids: Vec<FamilyId> = sqlx::query_scalar(
            "SELECT id FROM refresh_families WHERE client_id = $1 AND revoked_at IS NULL",
        )
        .bind(client_id)
        .fetch_all(&mut **tx)
        .await?;
        Self::end_families(tx, &ids, at).await
    }

    /// Ends every live session (logged) and Keyfob login of a user, in `tx`, and forgets their
    /// unused authorization codes (their grants stay, so a code would start a session).
    async fn end_user_sessions(
        tx: &mut Transaction<'_, DB>,
        user_id: &UserId,
        at: Timestamp,
    ) -> Result<()> {
        sqlx::query("DELETE FROM auth_codes WHERE user_id = $1 AND used_at IS NULL")
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM user_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        let ids: Vec<FamilyId> = sqlx::query_scalar(
            "SELECT id FROM refresh_families WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .fetch_all(&mut **tx)
        .await?;
        Self::end_families(tx, &ids, at).await
    }

    /// Uses up a mailed link for `purpose` that is unused and live at `now`, in `tx`.
    async fn use_link(
        tx: &mut Transaction<'_, DB>,
        token_hash: &str,
        purpose: LinkPurpose,
        now: Timestamp,
    ) -> Result<Option<EmailLinkRow>> {
        Ok(sqlx::query_as(&format!(
            "UPDATE email_tokens SET used_at = $1 WHERE token_hash = $2 AND purpose = $3 \
             AND used_at IS NULL AND expires_at > $1 RETURNING {EMAIL_LINK_COLUMNS}"
        ))
        .bind(now)
        .bind(token_hash)
        .bind(purpose)
        .fetch_optional(&mut **tx)
        .await?)
    }

    /// Forgets the unused reset and change-of-email links of a person whose password just
    /// changed: a link asked for before the change (perhaps by whoever knew the old password)
    /// must not outlive it.
    async fn void_password_links(
        tx: &mut Transaction<'_, DB>,
        person: PersonKind,
        subject_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "DELETE FROM email_tokens WHERE subject_kind = $1 AND subject_id = $2 \
             AND used_at IS NULL AND purpose IN ('reset', 'change_email')",
        )
        .bind(person)
        .bind(subject_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The table that keeps people of `kind`.
    fn people_table(kind: PersonKind) -> &'static str {
        match kind {
            PersonKind::Owner => "owners",
            PersonKind::User => "users",
        }
    }

    /// Marks unused one-time secrets used, in `tx`, in one statement: for each
    /// `(key, at, value)` of `claims` (keys distinct), the row of `table` whose `key_column`
    /// is `key` and whose `used_at` is still NULL gets `used_at = at` and
    /// `value_column = value`. Answers the keys that were claimed. Table and column names
    /// come from this file, never from input.
    async fn claim_unused(
        tx: &mut Transaction<'_, DB>,
        table: &str,
        key_column: &str,
        value_column: &str,
        claims: &[(&str, Timestamp, &str)],
    ) -> Result<HashSet<String>> {
        if claims.is_empty() {
            return Ok(HashSet::new());
        }
        let mut update =
            QueryBuilder::<DB>::new(format!("UPDATE {table} SET used_at = CASE {key_column}"));
        for (key, at, _) in claims {
            update.push(" WHEN ").push_bind(*key);
            update
                .push(" THEN CAST(")
                .push_bind(*at)
                .push(" AS BIGINT)");
        }
        update.push(format!(" END, {value_column} = CASE {key_column}"));
        for (key, _, value) in claims {
            update.push(" WHEN ").push_bind(*key);
            update
                .push(" THEN CAST(")
                .push_bind(*value)
                .push(" AS TEXT)");
        }
        update.push(format!(" END WHERE used_at IS NULL AND {key_column} IN ("));
        let mut keys = update.separated(", ");
        for (key, _, _) in claims {
            keys.push_bind(*key);
        }
        update.push(format!(") RETURNING {key_column}"));
        let claimed = DB::fetch_texts_built(&mut update, &mut **tx).await?;
        Ok(claimed.into_iter().collect())
    }
}

#[async_trait]
impl<DB: Dialect> Store for SqlStore<DB>
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
    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    fn pool_stats(&self) -> crate::PoolStats {
        crate::PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
            waits: self.waits.load(Ordering::Relaxed),
        }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.conn()).await?;
        Ok(())
    }

    async fn create_account(&self, account: &Account, owner: &Owner) -> Result<()> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        sqlx::query(
            "INSERT INTO accounts (id, name, created_at, require_verified_users) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&account.id)
        .bind(&account.name)
        .bind(account.created_at)
        .bind(account.require_verified_users)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO owners (id, account_id, email, password_hash, created_at, email_verified_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&owner.id)
        .bind(&owner.account_id)
        .bind(&owner.email)
        .bind(&owner.password_hash)
        .bind(owner.created_at)
        .bind(owner.email_verified_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_account(&self, id: &AccountId) -> Result<Option<Account>> {
        Ok(sqlx::query_as(
            "SELECT id, name, created_at, require_verified_users FROM accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn find_owner_by_email(&self, email: &str) -> Result<Option<Owner>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {OWNER_COLUMNS} FROM owners WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn find_owner(&self, id: &OwnerId) -> Result<Option<Owner>> {
        Ok(
            sqlx::query_as(&format!("SELECT {OWNER_COLUMNS} FROM owners WHERE id = $1"))
                .bind(id)
                .fetch_optional(self.conn())
                .await?,
        )
    }

    async fn insert_api_key(&self, key: &ApiKeyRow) -> Result<()> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        Self::insert_api_key_in(&mut tx, key).await?;
        Self::log_change(&mut tx, ChangeKind::ApiKeyCreated, &key.id, key.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn roll_api_key(
        &self,
        account_id: Option<&AccountId>,
        old: &KeyId,
        new: &ApiKeyRow,
        old_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let done = sqlx::query(
            "UPDATE api_keys SET expires_at = CASE \
                 WHEN expires_at IS NULL OR expires_at > $1 THEN $1 ELSE expires_at END \
             WHERE id = $2 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3) \
             AND ($4 IS NULL OR account_id = $4)",
        )
        .bind(old_expires_at)
        .bind(old)
        .bind(now)
        .bind(account_id.map(AccountId::as_str))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !done {
            return Ok(false);
        }
        Self::insert_api_key_in(&mut tx, new).await?;
        Self::log_change(&mut tx, ChangeKind::ApiKeyChanged, old, now).await?;
        Self::log_change(&mut tx, ChangeKind::ApiKeyCreated, &new.id, new.created_at).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn add_key_usage(&self, rows: &[UsageRow]) -> Result<()> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        for row in rows {
            sqlx::query(
                "INSERT INTO api_key_usage (key_id, day, via, ok, client_errors, limited, server_errors) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (key_id, day, via) DO UPDATE SET \
                 ok = api_key_usage.ok + excluded.ok, \
                 client_errors = api_key_usage.client_errors + excluded.client_errors, \
                 limited = api_key_usage.limited + excluded.limited, \
                 server_errors = api_key_usage.server_errors + excluded.server_errors",
            )
            .bind(&row.key_id)
            .bind(row.day)
            .bind(row.via.as_str())
            .bind(row.counts.ok)
            .bind(row.counts.client_errors)
            .bind(row.counts.limited)
            .bind(row.counts.server_errors)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn add_token_usage(
        &self,
        rows: &[TokenUsageRow],
        uses: &[(Jti, Timestamp)],
    ) -> Result<()> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        for row in rows {
            sqlx::query(
                "INSERT INTO token_usage (jti, day, ok, client_errors, limited, server_errors) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (jti, day) DO UPDATE SET \
                 ok = token_usage.ok + excluded.ok, \
                 client_errors = token_usage.client_errors + excluded.client_errors, \
                 limited = token_usage.limited + excluded.limited, \
                 server_errors = token_usage.server_errors + excluded.server_errors",
            )
            .bind(&row.jti)
            .bind(row.day)
            .bind(row.counts.ok)
            .bind(row.counts.client_errors)
            .bind(row.counts.limited)
            .bind(row.counts.server_errors)
            .execute(&mut *tx)
            .await?;
        }
        for (jti, at) in uses {
            sqlx::query(
                "UPDATE tokens SET last_used_at = $1 \
                 WHERE jti = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(jti)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn token_usage(
        &self,
        account_id: &AccountId,
        jtis: &[Jti],
        from_day: i64,
    ) -> Result<Vec<TokenUsageRow>> {
        if jtis.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<DB>::new(
            "SELECT u.jti, u.day, u.ok, u.client_errors, u.limited, u.server_errors \
             FROM token_usage u JOIN tokens t ON t.jti = u.jti WHERE t.account_id = ",
        );
        query.push_bind(account_id.as_str());
        query.push(" AND u.day >= ");
        query.push_bind(from_day);
        query.push(" AND u.jti IN (");
        let mut list = query.separated(", ");
        for jti in jtis {
            list.push_bind(jti.as_str());
        }
        query.push(") ORDER BY u.jti, u.day");
        let rows: Vec<(Jti, i64, i64, i64, i64, i64)> =
            DB::fetch_rows_built(&mut query, self.conn()).await?;
        Ok(rows
            .into_iter()
            .map(
                |(jti, day, ok, client_errors, limited, server_errors)| TokenUsageRow {
                    jti,
                    day,
                    counts: UsageCounts {
                        ok,
                        client_errors,
                        limited,
                        server_errors,
                    },
                },
            )
            .collect())
    }

    async fn key_usage(
        &self,
        account_id: &AccountId,
        key_id: Option<&KeyId>,
        from_day: i64,
    ) -> Result<Vec<UsageRow>> {
        let rows: Vec<(KeyId, i64, String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT u.key_id, u.day, u.via, u.ok, u.client_errors, u.limited, u.server_errors \
             FROM api_key_usage u JOIN api_keys k ON k.id = u.key_id \
             WHERE k.account_id = $1 AND ($2 IS NULL OR u.key_id = $2) AND u.day >= $3 \
             ORDER BY u.key_id, u.day, u.via",
        )
        .bind(account_id)
        .bind(key_id.map(KeyId::as_str))
        .bind(from_day)
        .fetch_all(self.conn())
        .await?;
        rows.into_iter()
            .map(
                |(key_id, day, via, ok, client_errors, limited, server_errors)| {
                    let via = UsageVia::from_name(&via).ok_or_else(|| {
                        StoreError::Corrupt(format!("api_key_usage.via holds `{via}`"))
                    })?;
                    Ok(UsageRow {
                        key_id,
                        day,
                        via,
                        counts: UsageCounts {
                            ok,
                            client_errors,
                            limited,
                            server_errors,
                        },
                    })
                },
            )
            .collect()
    }

    async fn find_api_key(&self, id: &KeyId) -> Result<Option<ApiKeyRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn list_api_keys(&self, account_id: &AccountId) -> Result<Vec<ApiKeyRow>> {
        Ok(sqlx::query_as(
            &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE account_id = $1 ORDER BY created_at DESC, id"),
        )
        .bind(account_id)
        .fetch_all(self.conn())
        .await?)
    }

    async fn active_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL"
        ))
        .fetch_all(self.conn())
        .await?)
    }

    async fn revoke_api_key(
        &self,
        account_id: Option<&AccountId>,
        id: &KeyId,
        at: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 \
             WHERE id = $2 AND revoked_at IS NULL AND ($3 IS NULL OR account_id = $3)",
        )
        .bind(at)
        .bind(id)
        .bind(account_id.map(AccountId::as_str))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if done {
            Self::log_change(&mut tx, ChangeKind::ApiKeyRevoked, id, at).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn touch_api_keys(&self, uses: &[KeyUse]) -> Result<()> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        for KeyUse { key_id, at, ip } in uses {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1, last_used_ip = COALESCE($3, last_used_ip) \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(key_id)
            .bind(ip.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_tokens(&self, tokens: &[TokenRow]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        // One multi-row statement: a round trip per batch, not per token.
        let mut insert = QueryBuilder::<DB>::new(
            "INSERT INTO tokens (jti, account_id, api_key_id, subject, permissions, issued_at, \
             expires_at, name, metadata) ",
        );
        insert.push_values(tokens, |mut row, t| {
            row.push_bind(&t.jti)
                .push_bind(&t.account_id)
                .push_bind(t.api_key_id.as_deref())
                .push_bind(&t.subject)
                .push_bind(&t.permissions)
                .push_bind(t.issued_at)
                .push_bind(t.expires_at)
                .push_bind(t.name.as_deref())
                .push_bind(
                    t.metadata
                        .as_ref()
                        .map(|m| serde_json::Value::Object(m.0.clone()).to_string()),
                );
        });
        DB::execute_built(&mut insert, self.conn()).await?;
        Ok(())
    }

    async fn list_tokens(&self, account_id: &AccountId, limit: u32) -> Result<Vec<TokenRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} WHERE t.account_id = $1 ORDER BY t.issued_at DESC, t.jti DESC LIMIT $2",
            TOKEN_FROM
        ))
        .bind(account_id)
        .bind(i64::from(limit))
        .fetch_all(self.conn())
        .await?)
    }

    async fn find_token(&self, jti: &Jti) -> Result<Option<TokenRow>> {
        Ok(
            sqlx::query_as(&format!("SELECT {} WHERE t.jti = $1", TOKEN_FROM))
                .bind(jti)
                .fetch_optional(self.conn())
                .await?,
        )
    }

    async fn revoke_token(&self, account_id: &AccountId, jti: &Jti, at: Timestamp) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let done = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 \
             WHERE jti = $2 AND account_id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(jti)
        .bind(account_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if done {
            Self::log_change(&mut tx, ChangeKind::TokenRevoked, jti, at).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn revoked_tokens(&self, now: Timestamp) -> Result<Vec<(Jti, Timestamp)>> {
        Ok(sqlx::query_as(
            "SELECT jti, expires_at FROM tokens WHERE revoked_at IS NOT NULL AND expires_at > $1",
        )
        .bind(now)
        .fetch_all(self.conn())
        .await?)
    }

    async fn list_tokens_page(&self, f: &TokenFilter<'_>) -> Result<(Vec<TokenRow>, u64)> {
        // The filters read the same columns as the answer, so the query wraps the joined
        // row. Permission strings are validated by the domain (no quotes), so `"perm"`
        // inside the stored JSON array matches that permission exactly; `_`, `%` and `\`
        // are escaped for LIKE.
        const WHERE: &str = "($2 IS NULL OR api_key_id = $2) \
             AND ($3 IS NULL OR permissions LIKE $3 ESCAPE '\\') \
             AND ($4 IS NULL \
                  OR ($4 = 'live' AND revoked_at IS NULL AND expires_at > $5) \
                  OR ($4 = 'revoked' AND revoked_at IS NOT NULL) \
                  OR ($4 = 'expired' AND revoked_at IS NULL AND expires_at <= $5)) \
             AND ($6 IS NULL OR LOWER(COALESCE(name, '') || ' ' || COALESCE(metadata, '')) \
                  LIKE $6 ESCAPE '\\')";
        let inner = format!("(SELECT {} WHERE t.account_id = $1) AS v", TOKEN_FROM);
        let pattern = f.permission.map(|p| {
            let escaped = p
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%\"{escaped}\"%")
        });
        let status = f.status.map(TokenStatus::as_str);
        // Searched in lower case; the stored metadata is JSON text, so a search for a value
        // finds it wherever it sits.
        let text = f.text.map(|t| {
            let escaped = t
                .to_ascii_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {inner} WHERE {WHERE}"))
            .bind(f.account_id)
            .bind(f.api_key_id.map(KeyId::as_str))
            .bind(pattern.as_deref())
            .bind(status)
            .bind(f.now)
            .bind(text.as_deref())
            .fetch_one(self.conn())
            .await?;
        let rows = sqlx::query_as(&format!(
            "SELECT jti, account_id, api_key_id, subject, permissions, issued_at, expires_at, name, \
             metadata, last_used_at, revoked_at \
             FROM {inner} WHERE {WHERE} ORDER BY issued_at DESC, jti DESC LIMIT $7 OFFSET $8"
        ))
        .bind(f.account_id)
        .bind(f.api_key_id.map(KeyId::as_str))
        .bind(pattern.as_deref())
        .bind(status)
        .bind(f.now)
        .bind(text.as_deref())
        .bind(i64::from(f.limit))
        .bind(i64::try_from(f.offset).unwrap_or(i64::MAX))
        .fetch_all(self.conn())
        .await?;
        Ok((rows, total.max(0) as u64))
    }

    async fn revoke_key_tokens(
        &self,
        account_id: Option<&AccountId>,
        key_id: &KeyId,
        at: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let done = sqlx::query(
            "UPDATE api_keys SET tokens_revoked_before = $1 \
             WHERE id = $2 AND revoked_at IS NULL AND ($3 IS NULL OR account_id = $3) \
             AND (tokens_revoked_before IS NULL OR tokens_revoked_before < $1)",
        )
        .bind(at)
        .bind(key_id)
        .bind(account_id.map(AccountId::as_str))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if done {
            Self::log_change(&mut tx, ChangeKind::ApiKeyTokensRevoked, key_id, at).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn token_cutoffs(
        &self,
        key_id: Option<&KeyId>,
        now: Timestamp,
    ) -> Result<Vec<(KeyId, TokenCutoff)>> {
        let rows: Vec<(KeyId, Option<Timestamp>, Option<Timestamp>, Timestamp)> = sqlx::query_as(
            "SELECT k.id, k.revoked_at, k.tokens_revoked_before, MAX(t.expires_at) \
             FROM api_keys k JOIN tokens t ON t.api_key_id = k.id \
             WHERE ($1 IS NULL OR k.id = $1) AND t.expires_at > $2 \
             AND (k.revoked_at IS NOT NULL \
                  OR (k.tokens_revoked_before IS NOT NULL AND t.issued_at <= k.tokens_revoked_before)) \
             GROUP BY k.id, k.revoked_at, k.tokens_revoked_before",
        )
        .bind(key_id.map(KeyId::as_str))
        .bind(now)
        .fetch_all(self.conn())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, revoked_at, before, until)| {
                let before = if revoked_at.is_some() {
                    Some(Timestamp::MAX)
                } else {
                    before
                };
                before.map(|before| (id, TokenCutoff { before, until }))
            })
            .collect())
    }

    async fn find_api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
        ))
        .bind(key_hash)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn retire_signing_key(
        &self,
        kid: &Kid,
        at: Timestamp,
        heir: Option<&SigningHeir>,
    ) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let done = sqlx::query(
            "UPDATE signing_keys SET revoked_at = $1, expires_at = $1, \
             retires_at = CASE WHEN retires_at IS NULL OR retires_at > $1 THEN $1 ELSE retires_at END \
             WHERE kid = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(kid)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !done {
            return Ok(false);
        }
        if let Some(heir) = heir {
            sqlx::query(
                "UPDATE signing_keys SET activates_at = $1 WHERE kid = $2 AND revoked_at IS NULL",
            )
            .bind(heir.activates_at)
            .bind(&heir.kid)
            .execute(&mut *tx)
            .await?;
            if heir.keep_signing {
                sqlx::query(
                    "UPDATE signing_keys SET retires_at = NULL, expires_at = NULL \
                     WHERE kid = $1 AND revoked_at IS NULL",
                )
                .bind(&heir.kid)
                .execute(&mut *tx)
                .await?;
            }
        }
        Self::log_change(&mut tx, ChangeKind::SigningKeysChanged, kid, at).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_signing_key(&self, key: &SigningKeyRow) -> Result<()> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, created_at, activates_at, retires_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.kid)
        .bind(key.alg)
        .bind(&key.private_key)
        .bind(&key.public_jwk)
        .bind(key.created_at)
        .bind(key.activates_at)
        .bind(key.retires_at)
        .bind(key.expires_at)
        .execute(&mut *tx)
        .await?;
        Self::log_change(
            &mut tx,
            ChangeKind::SigningKeysChanged,
            &key.kid,
            key.created_at,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRow>> {
        Ok(sqlx::query_as(
            "SELECT kid, alg, private_key, public_jwk, created_at, activates_at, retires_at, expires_at, revoked_at \
             FROM signing_keys ORDER BY activates_at, created_at",
        )
        .fetch_all(self.conn())
        .await?)
    }

    async fn rotate_signing_key(
        &self,
        next: &SigningKeyRow,
        keep_public_for: Duration,
    ) -> Result<()> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        sqlx::query(
            "UPDATE signing_keys SET retires_at = $1, expires_at = $2 \
             WHERE (retires_at IS NULL OR retires_at > $1) AND revoked_at IS NULL",
        )
        .bind(next.activates_at)
        .bind(next.activates_at + keep_public_for)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, created_at, activates_at, retires_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&next.kid)
        .bind(next.alg)
        .bind(&next.private_key)
        .bind(&next.public_jwk)
        .bind(next.created_at)
        .bind(next.activates_at)
        .bind(next.retires_at)
        .bind(next.expires_at)
        .execute(&mut *tx)
        .await?;
        Self::log_change(
            &mut tx,
            ChangeKind::SigningKeysChanged,
            &next.kid,
            next.created_at,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_record(&self, record: &RecordRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO records (id, account_id, resource, owner_user_id, doc, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&record.id)
        .bind(&record.account_id)
        .bind(&record.resource)
        .bind(record.owner_user_id.as_deref())
        .bind(Json(&record.doc))
        .bind(record.created_at)
        .bind(record.updated_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    async fn get_record(
        &self,
        scope: &RecordScope<'_>,
        id: &RecordId,
    ) -> Result<Option<RecordRow>> {
        let row: Option<RecordDbRow> = sqlx::query_as(&format!(
            "SELECT {} FROM records WHERE id = $1 AND account_id = $2 AND resource = $3 \
             AND ($4 IS NULL OR owner_user_id = $4)",
            RECORD_COLUMNS
        ))
        .bind(id)
        .bind(scope.account_id)
        .bind(scope.resource)
        .bind(scope.owner_user_id.map(UserId::as_str))
        .fetch_optional(self.conn())
        .await?;
        Ok(row.map(Into::into))
    }

    async fn list_records(
        &self,
        scope: &RecordScope<'_>,
        query: &ListQuery,
    ) -> Result<(Vec<RecordRow>, u64)> {
        let sql = list_sql::<DB>(scope, query);
        let (clause, order) = (&sql.clause, &sql.order);
        let total: i64 = sqlx::query_scalar_with(
            &format!("SELECT COUNT(*) FROM records WHERE {clause}"),
            list_args::<DB>(&sql.binds[..sql.where_binds], &[])?,
        )
        .fetch_one(self.conn())
        .await?;
        let n = sql.binds.len();
        let offset = i64::try_from(query.offset()).unwrap_or(i64::MAX);
        let rows: Vec<RecordDbRow> = sqlx::query_as_with(
            &format!(
                "SELECT {} FROM records WHERE {clause} ORDER BY {order} LIMIT ${} OFFSET ${}",
                RECORD_COLUMNS,
                n + 1,
                n + 2
            ),
            list_args::<DB>(&sql.binds, &[i64::from(query.limit), offset])?,
        )
        .fetch_all(self.conn())
        .await?;
        Ok((
            rows.into_iter().map(Into::into).collect(),
            total.max(0) as u64,
        ))
    }

    async fn update_record(
        &self,
        scope: &RecordScope<'_>,
        id: &RecordId,
        doc: &Value,
        at: Timestamp,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE records SET doc = $1, updated_at = $2 \
             WHERE id = $3 AND account_id = $4 AND resource = $5 \
             AND ($6 IS NULL OR owner_user_id = $6)",
        )
        .bind(Json(doc))
        .bind(at)
        .bind(id)
        .bind(scope.account_id)
        .bind(scope.resource)
        .bind(scope.owner_user_id.map(UserId::as_str))
        .execute(self.conn())
        .await?
        .rows_affected()
            > 0)
    }

    async fn delete_record(&self, scope: &RecordScope<'_>, id: &RecordId) -> Result<bool> {
        Ok(sqlx::query(
            "DELETE FROM records WHERE id = $1 AND account_id = $2 AND resource = $3 \
             AND ($4 IS NULL OR owner_user_id = $4)",
        )
        .bind(id)
        .bind(scope.account_id)
        .bind(scope.resource)
        .bind(scope.owner_user_id.map(UserId::as_str))
        .execute(self.conn())
        .await?
        .rows_affected()
            > 0)
    }

    async fn list_resources(&self, account_id: &AccountId) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT resource, COUNT(*) FROM records WHERE account_id = $1 \
             GROUP BY resource ORDER BY resource",
        )
        .bind(account_id)
        .fetch_all(self.conn())
        .await?)
    }

    async fn insert_app(&self, app: &AppRow) -> Result<()> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        sqlx::query(
            "INSERT INTO apps (client_id, account_id, name, public, client_secret_hash, redirect_uris, \
             post_logout_redirect_uris, origins, max_permissions, refresh_idle_secs, \
             refresh_absolute_secs, allow_fragment, created_at, logo_uri, homepage_uri, \
             policy_uri) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&app.client_id)
        .bind(&app.account_id)
        .bind(&app.name)
        .bind(app.public)
        .bind(&app.client_secret_hash)
        .bind(&app.redirect_uris)
        .bind(&app.post_logout_redirect_uris)
        .bind(&app.origins)
        .bind(&app.max_permissions)
        .bind(app.refresh_idle_secs)
        .bind(app.refresh_absolute_secs)
        .bind(app.allow_fragment)
        .bind(app.created_at)
        .bind(&app.links.logo_uri)
        .bind(&app.links.homepage_uri)
        .bind(&app.links.policy_uri)
        .execute(&mut *tx)
        .await?;
        Self::log_change(
            &mut tx,
            ChangeKind::AppChanged,
            &app.client_id,
            app.created_at,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn live_app_origins(&self) -> Result<Vec<Strings>> {
        Ok(
            sqlx::query_scalar("SELECT origins FROM apps WHERE revoked_at IS NULL")
                .fetch_all(self.conn())
                .await?,
        )
    }

    async fn find_app(&self, client_id: &ClientId) -> Result<Option<AppRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM apps WHERE client_id = $1",
            APP_COLUMNS
        ))
        .bind(client_id)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn list_apps(&self, account_id: &AccountId) -> Result<Vec<AppRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM apps WHERE account_id = $1 AND deleted_at IS NULL \
             ORDER BY created_at DESC, client_id",
            APP_COLUMNS
        ))
        .bind(account_id)
        .fetch_all(self.conn())
        .await?)
    }

    async fn insert_user(&self, user: &UserRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at, password_changed_at, \
             email_verified_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .bind(user.password_changed_at)
        .bind(user.email_verified_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn find_user(&self, id: &UserId) -> Result<Option<UserRow>> {
        Ok(
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                .bind(id)
                .fetch_optional(self.conn())
                .await?,
        )
    }

    async fn update_app(
        &self,
        account_id: Option<&AccountId>,
        client_id: &ClientId,
        edit: &AppEdit,
        at: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let done = sqlx::query(
            "UPDATE apps SET name = $1, redirect_uris = $2, post_logout_redirect_uris = $3, \
             origins = $4, max_permissions = $5, refresh_idle_secs = $6, \
             refresh_absolute_secs = $7, allow_fragment = $8 \
             WHERE client_id = $9 AND deleted_at IS NULL AND ($10 IS NULL OR account_id = $10)",
        )
        .bind(&edit.name)
        .bind(&edit.redirect_uris)
        .bind(&edit.post_logout_redirect_uris)
        .bind(&edit.origins)
        .bind(&edit.max_permissions)
        .bind(edit.refresh_idle_secs)
        .bind(edit.refresh_absolute_secs)
        .bind(edit.allow_fragment)
        .bind(client_id)
        .bind(account_id.map(AccountId::as_str))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if done {
            Self::log_change(&mut tx, ChangeKind::AppChanged, client_id, at).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn set_app_links(
        &self,
        account_id: Option<&AccountId>,
        client_id: &ClientId,
        links: &AppLinks,
        at: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let done = sqlx::query(
            "UPDATE apps SET logo_uri = $1, homepage_uri = $2, policy_uri = $3 \
             WHERE client_id = $4 AND deleted_at IS NULL AND ($5 IS NULL OR account_id = $5)",
        )
        .bind(&links.logo_uri)
        .bind(&links.homepage_uri)
        .bind(&links.policy_uri)
        .bind(client_id)
        .bind(account_id.map(AccountId::as_str))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if done {
            Self::log_change(&mut tx, ChangeKind::AppChanged, client_id, at).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn rotate_app_secret(
        &self,
        account_id: Option<&AccountId>,
        client_id: &ClientId,
        secret_hash: &str,
        previous_until: Option<Timestamp>,
        at: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        // Every right-hand side reads the row as it was, so the old secret moves to `previous`.
        let done = sqlx::query(
            "UPDATE apps SET \
             previous_secret_hash = CASE WHEN $1 IS NULL THEN NULL ELSE client_secret_hash END, \
             previous_secret_expires_at = $1, client_secret_hash = $2 \
             WHERE client_id = $3 AND client_secret_hash IS NOT NULL AND deleted_at IS NULL \
             AND ($4 IS NULL OR account_id = $4)",
        )
        .bind(previous_until)
        .bind(secret_hash)
        .bind(client_id)
        .bind(account_id.map(AccountId::as_str))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if done {
            Self::log_change(&mut tx, ChangeKind::AppChanged, client_id, at).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn set_app_disabled(
        &self,
        account_id: Option<&AccountId>,
        client_id: &ClientId,
        disabled: bool,
        at: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let sql = if disabled {
            "UPDATE apps SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL \
             AND deleted_at IS NULL AND ($3 IS NULL OR account_id = $3)"
        } else {
            "UPDATE apps SET revoked_at = NULL WHERE client_id = $2 AND revoked_at IS NOT NULL \
             AND deleted_at IS NULL AND ($3 IS NULL OR account_id = $3) AND $1 IS NOT NULL"
        };
        let done = sqlx::query(sql)
            .bind(at)
            .bind(client_id)
            .bind(account_id.map(AccountId::as_str))
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if done {
            if disabled {
                Self::end_app_families(&mut tx, client_id, at).await?;
            }
            Self::log_change(&mut tx, ChangeKind::AppChanged, client_id, at).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn delete_app(
        &self,
        account_id: Option<&AccountId>,
        client_id: &ClientId,
        at: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let done = sqlx::query(
            "UPDATE apps SET deleted_at = $1, revoked_at = COALESCE(revoked_at, $1), \
             client_secret_hash = NULL, previous_secret_hash = NULL, \
             previous_secret_expires_at = NULL \
             WHERE client_id = $2 AND deleted_at IS NULL AND ($3 IS NULL OR account_id = $3)",
        )
        .bind(at)
        .bind(client_id)
        .bind(account_id.map(AccountId::as_str))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if done {
            Self::end_app_families(&mut tx, client_id, at).await?;
            sqlx::query(
                "UPDATE grants SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
            Self::log_change(&mut tx, ChangeKind::AppChanged, client_id, at).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn list_users(&self, filter: &UserFilter<'_>) -> Result<Vec<UserRow>> {
        // `LIKE` with its wildcards escaped, so the text is matched as typed.
        let pattern = filter.email_contains.map(|text| {
            let escaped = text
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        Ok(sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users \
             WHERE ($1 IS NULL OR LOWER(email) LIKE $1 ESCAPE '\\') \
             ORDER BY created_at, id LIMIT $2"
        ))
        .bind(pattern)
        .bind(i64::from(filter.limit))
        .fetch_all(self.conn())
        .await?)
    }

    async fn set_user_disabled(
        &self,
        user_id: &UserId,
        disabled: bool,
        at: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let sql = if disabled {
            "UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL"
        } else {
            "UPDATE users SET disabled_at = NULL WHERE id = $2 AND disabled_at IS NOT NULL \
             AND $1 IS NOT NULL"
        };
        let done = sqlx::query(sql)
            .bind(at)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if done && disabled {
            Self::end_user_sessions(&mut tx, user_id, at).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn delete_user(&self, user_id: &UserId, at: Timestamp) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let exists: Option<UserId> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(false);
        }
        // Ended first, so the change feed tells every node to refuse their access tokens.
        Self::end_user_sessions(&mut tx, user_id, at).await?;
        let user = user_id.as_str();
        for (sql, value) in [
            (
                "DELETE FROM refresh_tokens WHERE family_id IN \
                 (SELECT id FROM refresh_families WHERE user_id = $1)",
                user,
            ),
            ("DELETE FROM auth_codes WHERE user_id = $1", user),
            ("DELETE FROM refresh_families WHERE user_id = $1", user),
            ("DELETE FROM grants WHERE user_id = $1", user),
            (
                "DELETE FROM email_tokens WHERE subject_kind = 'user' AND subject_id = $1",
                user,
            ),
            (
                "DELETE FROM totp_recovery_codes WHERE holder_kind = 'user' AND holder_id = $1",
                user,
            ),
            (
                "DELETE FROM totp_factors WHERE holder_kind = 'user' AND holder_id = $1",
                user,
            ),
            (
                "DELETE FROM passkeys WHERE holder_kind = 'user' AND holder_id = $1",
                user,
            ),
            ("DELETE FROM records WHERE owner_user_id = $1", user),
            ("DELETE FROM users WHERE id = $1", user),
        ] {
            sqlx::query(sql).bind(value).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn remove_user_from_account(
        &self,
        account_id: &AccountId,
        user_id: &UserId,
        at: Timestamp,
    ) -> Result<u64> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let grants: Vec<GrantId> = sqlx::query_scalar(
            "UPDATE grants SET revoked_at = $1 \
             WHERE user_id = $2 AND account_id = $3 AND revoked_at IS NULL RETURNING id",
        )
        .bind(at)
        .bind(user_id)
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<FamilyId> = sqlx::query_scalar(
            "SELECT f.id FROM refresh_families f JOIN apps a ON a.client_id = f.client_id \
             WHERE f.user_id = $1 AND a.account_id = $2 AND f.revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?;
        Self::end_families(&mut tx, &ids, at).await?;
        tx.commit().await?;
        Ok(grants.len() as u64)
    }

    async fn change_user_password(
        &self,
        user_id: &UserId,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
            .bind(password_hash)
            .bind(at)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        Self::void_password_links(&mut tx, PersonKind::User, user_id.as_str()).await?;
        sqlx::query("DELETE FROM user_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let ids: Vec<FamilyId> = sqlx::query_scalar(
            "SELECT id FROM refresh_families WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        Self::end_families(&mut tx, &ids, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_user_login(&self, s: &UserLoginRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO user_sessions (id_hash, user_id, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.id_hash)
        .bind(&s.user_id)
        .bind(&s.csrf_token)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    async fn find_user_login(&self, id_hash: &str, now: Timestamp) -> Result<Option<UserLoginRow>> {
        Ok(sqlx::query_as(
            "SELECT id_hash, user_id, csrf_token, created_at, expires_at FROM user_sessions \
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn delete_user_login(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM user_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    async fn delete_user_logins(&self, user_id: &UserId, except: Option<&str>) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM user_sessions WHERE user_id = $1 AND ($2 IS NULL OR id_hash <> $2)",
        )
        .bind(user_id)
        .bind(except)
        .execute(self.conn())
        .await?
        .rows_affected())
    }

    async fn upsert_grant(&self, g: &GrantRow) -> Result<GrantRow> {
        Ok(sqlx::query_as(&format!(
            "INSERT INTO grants (id, user_id, client_id, account_id, permissions, identity, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $7, $6, $6) \
             ON CONFLICT (user_id, client_id) DO UPDATE SET permissions = excluded.permissions, \
             identity = excluded.identity, updated_at = excluded.updated_at, revoked_at = NULL \
             RETURNING {}",
            GRANT_COLUMNS
        ))
        .bind(&g.id)
        .bind(&g.user_id)
        .bind(&g.client_id)
        .bind(&g.account_id)
        .bind(&g.permissions)
        .bind(g.updated_at)
        .bind(g.identity)
        .fetch_one(self.conn())
        .await?)
    }

    async fn find_grant(&self, user_id: &UserId, client_id: &ClientId) -> Result<Option<GrantRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM grants WHERE user_id = $1 AND client_id = $2",
            GRANT_COLUMNS
        ))
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn find_grant_by_id(&self, id: &GrantId) -> Result<Option<GrantRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM grants WHERE id = $1",
            GRANT_COLUMNS
        ))
        .bind(id)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn list_user_grants(&self, user_id: &UserId) -> Result<Vec<GrantRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM grants WHERE user_id = $1 AND revoked_at IS NULL ORDER BY updated_at DESC, id",
            GRANT_COLUMNS
        ))
        .bind(user_id)
        .fetch_all(self.conn())
        .await?)
    }

    async fn list_account_grants(&self, account_id: &AccountId) -> Result<Vec<GrantRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM grants WHERE account_id = $1 \
             AND client_id NOT IN (SELECT client_id FROM apps WHERE deleted_at IS NOT NULL) \
             ORDER BY updated_at DESC, id",
            GRANT_COLUMNS
        ))
        .bind(account_id)
        .fetch_all(self.conn())
        .await?)
    }

    async fn revoke_grant(&self, id: &GrantId, at: Timestamp) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let done =
            sqlx::query("UPDATE grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
        let ids: Vec<FamilyId> = sqlx::query_scalar(
            "SELECT id FROM refresh_families WHERE grant_id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        Self::end_families(&mut tx, &ids, at).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn insert_auth_code(&self, c: &AuthCodeRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO auth_codes (code_hash, client_id, user_id, grant_id, redirect_uri, permissions, \
             code_challenge, created_at, expires_at, identity, nonce, auth_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&c.code_hash)
        .bind(&c.client_id)
        .bind(&c.user_id)
        .bind(&c.grant_id)
        .bind(&c.redirect_uri)
        .bind(&c.permissions)
        .bind(&c.code_challenge)
        .bind(c.created_at)
        .bind(c.expires_at)
        .bind(c.identity)
        .bind(&c.nonce)
        .bind(c.auth_time)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    async fn find_auth_code(&self, code_hash: &str) -> Result<Option<AuthCodeRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM auth_codes WHERE code_hash = $1",
            CODE_COLUMNS
        ))
        .bind(code_hash)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn start_families(&self, items: &[NewFamily]) -> Result<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // Only a code's first use in the batch is a candidate.
        let mut seen = HashSet::new();
        let first_use: Vec<bool> = items
            .iter()
            .map(|item| {
                item.code
                    .as_ref()
                    .is_none_or(|(hash, _)| seen.insert(hash.as_str()))
            })
            .collect();
        let claims: Vec<(&str, Timestamp, &str)> = items
            .iter()
            .zip(&first_use)
            .filter_map(|(item, first)| {
                let (hash, at) = item.code.as_ref().filter(|_| *first)?;
                Some((hash.as_str(), *at, item.family.id.as_str()))
            })
            .collect();
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let won =
            Self::claim_unused(&mut tx, "auth_codes", "code_hash", "family_id", &claims).await?;
        let started: Vec<bool> = items
            .iter()
            .zip(&first_use)
            .map(|(item, first)| {
                *first
                    && item
                        .code
                        .as_ref()
                        .is_none_or(|(hash, _)| won.contains(hash))
            })
            .collect();
        let winners: Vec<&NewFamily> = items
            .iter()
            .zip(&started)
            .filter(|(_, started)| **started)
            .map(|(item, _)| item)
            .collect();

        if !winners.is_empty() {
            let mut families = QueryBuilder::<DB>::new(
                "INSERT INTO refresh_families (id, user_id, client_id, grant_id, identity, auth_time, \
                 created_at, last_used_at) ",
            );
            families.push_values(&winners, |mut row, item| {
                let f = &item.family;
                row.push_bind(&f.id)
                    .push_bind(&f.user_id)
                    .push_bind(&f.client_id)
                    .push_bind(&f.grant_id)
                    .push_bind(f.identity)
                    .push_bind(f.auth_time)
                    .push_bind(f.created_at)
                    .push_bind(f.last_used_at);
            });
            DB::execute_built(&mut families, &mut *tx).await?;
            let mut tokens = QueryBuilder::<DB>::new(
                "INSERT INTO refresh_tokens (token_hash, family_id, permissions, created_at) ",
            );
            tokens.push_values(&winners, |mut row, item| {
                let t = &item.first;
                row.push_bind(&t.token_hash)
                    .push_bind(&t.family_id)
                    .push_bind(&t.permissions)
                    .push_bind(t.created_at);
            });
            DB::execute_built(&mut tokens, &mut *tx).await?;
        }
        tx.commit().await?;
        Ok(started)
    }

    async fn find_family(&self, id: &FamilyId) -> Result<Option<FamilyRow>> {
        Ok(sqlx::query_as(
            "SELECT id, user_id, client_id, grant_id, identity, auth_time, created_at, last_used_at, \
             revoked_at FROM refresh_families WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn find_refresh(&self, token_hash: &str) -> Result<Option<RefreshRow>> {
        Ok(sqlx::query_as(
            "SELECT token_hash, family_id, permissions, created_at, used_at, next_sealed \
             FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn find_refresh_session(&self, token_hash: &str) -> Result<Option<RefreshSession>> {
        let row: Option<RefreshSessionRow> = sqlx::query_as(
            "SELECT r.token_hash, r.family_id, r.permissions, r.created_at, r.used_at, r.next_sealed, \
                    f.user_id, f.client_id, f.grant_id, f.identity, f.auth_time, \
                    f.created_at AS family_created_at, \
                    f.last_used_at, f.revoked_at, \
                    CASE WHEN g.revoked_at IS NULL THEN g.permissions END AS grant_permissions \
             FROM refresh_tokens r \
             JOIN refresh_families f ON f.id = r.family_id \
             LEFT JOIN grants g ON g.id = f.grant_id \
             WHERE r.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.conn())
        .await?;
        Ok(row.map(Into::into))
    }

    async fn rotate_refreshes(&self, items: &[Rotation]) -> Result<Vec<bool>> {
        // Only an old token's first use in the batch is a candidate.
        let mut seen = HashSet::new();
        let first_use: Vec<bool> = items
            .iter()
            .map(|item| seen.insert(item.old_hash.as_str()))
            .collect();
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;

        // Mark the unused ones used, each with its own time and sealed pair.
        let claims: Vec<(&str, Timestamp, &str)> = items
            .iter()
            .zip(&first_use)
            .filter(|(_, first)| **first)
            .map(|(item, _)| (item.old_hash.as_str(), item.now, item.next_sealed.as_str()))
            .collect();
        let won = Self::claim_unused(
            &mut tx,
            "refresh_tokens",
            "token_hash",
            "next_sealed",
            &claims,
        )
        .await?;
        let rotated: Vec<bool> = items
            .iter()
            .zip(&first_use)
            .map(|(item, first)| *first && won.contains(&item.old_hash))
            .collect();
        let winners: Vec<&Rotation> = items
            .iter()
            .zip(&rotated)
            .filter(|(_, rotated)| **rotated)
            .map(|(item, _)| item)
            .collect();

        if !winners.is_empty() {
            let mut insert = QueryBuilder::<DB>::new(
                "INSERT INTO refresh_tokens (token_hash, family_id, permissions, created_at) ",
            );
            insert.push_values(&winners, |mut row, item| {
                row.push_bind(&item.next.token_hash)
                    .push_bind(&item.next.family_id)
                    .push_bind(&item.next.permissions)
                    .push_bind(item.next.created_at);
            });
            DB::execute_built(&mut insert, &mut *tx).await?;
        }

        let touched: Vec<&&Rotation> = winners.iter().filter(|item| item.touch_family).collect();
        if !touched.is_empty() {
            let mut touch =
                QueryBuilder::<DB>::new("UPDATE refresh_families SET last_used_at = CASE id");
            for item in &touched {
                touch.push(" WHEN ").push_bind(&item.next.family_id);
                touch
                    .push(" THEN CAST(")
                    .push_bind(item.now)
                    .push(" AS BIGINT)");
            }
            touch.push(" ELSE last_used_at END WHERE id IN (");
            let mut ids = touch.separated(", ");
            for item in &touched {
                ids.push_bind(&item.next.family_id);
            }
            touch.push(")");
            DB::execute_built(&mut touch, &mut *tx).await?;
        }
        tx.commit().await?;
        Ok(rotated)
    }

    async fn revoke_family(&self, id: &FamilyId, at: Timestamp) -> Result<bool> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let live: Option<FamilyId> = sqlx::query_scalar(
            "SELECT id FROM refresh_families WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let ids: Vec<FamilyId> = live.into_iter().collect();
        Self::end_families(&mut tx, &ids, at).await?;
        tx.commit().await?;
        Ok(!ids.is_empty())
    }

    async fn revoke_user_families(
        &self,
        user_id: &UserId,
        client_id: Option<&ClientId>,
        at: Timestamp,
    ) -> Result<u64> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let ids: Vec<FamilyId> = sqlx::query_scalar(
            "SELECT id FROM refresh_families WHERE user_id = $1 AND revoked_at IS NULL \
             AND ($2 IS NULL OR client_id = $2)",
        )
        .bind(user_id)
        .bind(client_id.map(ClientId::as_str))
        .fetch_all(&mut *tx)
        .await?;
        Self::end_families(&mut tx, &ids, at).await?;
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    async fn revoked_families_since(&self, since: Timestamp) -> Result<Vec<(FamilyId, Timestamp)>> {
        Ok(sqlx::query_as(
            "SELECT id, revoked_at FROM refresh_families WHERE revoked_at IS NOT NULL AND revoked_at > $1 \
             UNION SELECT subject, created_at FROM changes WHERE kind = $2 AND created_at > $1",
        )
        .bind(since)
        .bind(ChangeKind::SessionRevoked)
        .fetch_all(self.conn())
        .await?)
    }

    async fn clear_sealed_refresh(&self, before: Timestamp) -> Result<()> {
        sqlx::query(
            "UPDATE refresh_tokens SET next_sealed = NULL WHERE next_sealed IS NOT NULL AND used_at < $1",
        )
        .bind(before)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    async fn insert_owner_login(&self, s: &OwnerLoginRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO dashboard_sessions (id_hash, owner_id, account_id, csrf_token, created_at, \
             expires_at, ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.id_hash)
        .bind(&s.owner_id)
        .bind(&s.account_id)
        .bind(&s.csrf_token)
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.ip.as_deref())
        .bind(s.user_agent.as_deref())
        .execute(self.conn())
        .await?;
        Ok(())
    }

    async fn find_owner_login(
        &self,
        id_hash: &str,
        now: Timestamp,
    ) -> Result<Option<OwnerLoginRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {OWNER_LOGIN_COLUMNS} FROM dashboard_sessions \
             WHERE id_hash = $1 AND expires_at > $2"
        ))
        .bind(id_hash)
        .bind(now)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn delete_owner_login(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    async fn list_owner_logins(
        &self,
        owner_id: &OwnerId,
        now: Timestamp,
    ) -> Result<Vec<OwnerLoginRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {OWNER_LOGIN_COLUMNS} FROM dashboard_sessions \
             WHERE owner_id = $1 AND expires_at > $2 ORDER BY created_at DESC, id_hash"
        ))
        .bind(owner_id)
        .bind(now)
        .fetch_all(self.conn())
        .await?)
    }

    async fn delete_owner_login_of(&self, owner_id: &OwnerId, id_hash: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM dashboard_sessions WHERE owner_id = $1 AND id_hash = $2")
                .bind(owner_id)
                .bind(id_hash)
                .execute(self.conn())
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_owner_logins(&self, owner_id: &OwnerId, except: Option<&str>) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM dashboard_sessions WHERE owner_id = $1 AND ($2 IS NULL OR id_hash <> $2)",
        )
        .bind(owner_id)
        .bind(except)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected())
    }

    async fn change_owner_password(
        &self,
        owner_id: &OwnerId,
        password_hash: &str,
        keep: Option<&str>,
    ) -> Result<Option<u64>> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let changed = sqlx::query("UPDATE owners SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(owner_id)
            .execute(&mut *tx)
            .await?;
        if changed.rows_affected() == 0 {
            return Ok(None);
        }
        let ended = sqlx::query(
            "DELETE FROM dashboard_sessions WHERE owner_id = $1 AND ($2 IS NULL OR id_hash <> $2)",
        )
        .bind(owner_id)
        .bind(keep)
        .execute(&mut *tx)
        .await?;
        Self::void_password_links(&mut tx, PersonKind::Owner, owner_id.as_str()).await?;
        tx.commit().await?;
        Ok(Some(ended.rows_affected()))
    }

    async fn set_require_verified_users(&self, account_id: &AccountId, on: bool) -> Result<bool> {
        let changed = sqlx::query("UPDATE accounts SET require_verified_users = $1 WHERE id = $2")
            .bind(on)
            .bind(account_id)
            .execute(self.conn())
            .await?;
        Ok(changed.rows_affected() > 0)
    }

    async fn insert_email_link(&self, link: &EmailLinkRow) -> Result<()> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        sqlx::query(
            "UPDATE email_tokens SET used_at = $1 \
             WHERE subject_id = $2 AND subject_kind = $3 AND purpose = $4 AND used_at IS NULL",
        )
        .bind(link.created_at)
        .bind(&link.subject_id)
        .bind(link.person)
        .bind(link.purpose)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO email_tokens ({EMAIL_LINK_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&link.token_hash)
        .bind(link.purpose)
        .bind(link.person)
        .bind(&link.subject_id)
        .bind(&link.email)
        .bind(link.next.as_deref())
        .bind(link.created_at)
        .bind(link.expires_at)
        .bind(link.used_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_email_link(
        &self,
        token_hash: &str,
        purpose: LinkPurpose,
        now: Timestamp,
    ) -> Result<Option<EmailLinkRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {EMAIL_LINK_COLUMNS} FROM email_tokens WHERE token_hash = $1 \
             AND purpose = $2 AND used_at IS NULL AND expires_at > $3"
        ))
        .bind(token_hash)
        .bind(purpose)
        .bind(now)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn use_verify_link(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<EmailLinkRow>> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let Some(link) = Self::use_link(&mut tx, token_hash, LinkPurpose::Verify, now).await?
        else {
            return Ok(None);
        };
        let table = Self::people_table(link.person);
        sqlx::query(&format!(
            "UPDATE {table} SET email_verified_at = $1 \
             WHERE id = $2 AND email = $3 AND email_verified_at IS NULL"
        ))
        .bind(now)
        .bind(&link.subject_id)
        .bind(&link.email)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(link))
    }

    async fn use_reset_link(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<Option<EmailLinkRow>> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let Some(link) = Self::use_link(&mut tx, token_hash, LinkPurpose::Reset, now).await? else {
            return Ok(None);
        };
        // The link proves the address, so it is verified too; a person whose address changed
        // since the link was sent is not reset.
        let changed = match link.person {
            PersonKind::Owner => sqlx::query(
                "UPDATE owners SET password_hash = $1, \
                 email_verified_at = COALESCE(email_verified_at, $2) WHERE id = $3 AND email = $4",
            ),
            PersonKind::User => sqlx::query(
                "UPDATE users SET password_hash = $1, password_changed_at = $2, \
                 email_verified_at = COALESCE(email_verified_at, $2) WHERE id = $3 AND email = $4",
            ),
        }
        .bind(password_hash)
        .bind(now)
        .bind(&link.subject_id)
        .bind(&link.email)
        .execute(&mut *tx)
        .await?;
        if changed.rows_affected() == 0 {
            tx.commit().await?; // the link is used up all the same
            return Ok(None);
        }
        Self::void_password_links(&mut tx, link.person, &link.subject_id).await?;
        match link.person {
            PersonKind::Owner => {
                sqlx::query("DELETE FROM dashboard_sessions WHERE owner_id = $1")
                    .bind(&link.subject_id)
                    .execute(&mut *tx)
                    .await?;
            }
            PersonKind::User => {
                sqlx::query("DELETE FROM user_sessions WHERE user_id = $1")
                    .bind(&link.subject_id)
                    .execute(&mut *tx)
                    .await?;
                let ids: Vec<FamilyId> = sqlx::query_scalar(
                    "SELECT id FROM refresh_families WHERE user_id = $1 AND revoked_at IS NULL",
                )
                .bind(&link.subject_id)
                .fetch_all(&mut *tx)
                .await?;
                Self::end_families(&mut tx, &ids, now).await?;
            }
        }
        tx.commit().await?;
        Ok(Some(link))
    }

    async fn use_change_email_link(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<EmailLinkRow>> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        let Some(link) = Self::use_link(&mut tx, token_hash, LinkPurpose::ChangeEmail, now).await?
        else {
            return Ok(None);
        };
        if link.person != PersonKind::Owner {
            return Ok(None);
        }
        let changed =
            sqlx::query("UPDATE owners SET email = $1, email_verified_at = $2 WHERE id = $3")
                .bind(&link.email)
                .bind(now)
                .bind(&link.subject_id)
                .execute(&mut *tx)
                .await?;
        if changed.rows_affected() == 0 {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(link))
    }

    async fn prune_expired(&self, now: Timestamp) -> Result<()> {
        for table in [
            "dashboard_sessions",
            "user_sessions",
            "auth_codes",
            "email_tokens",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE expires_at < $1"))
                .bind(now)
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    async fn changes_since(&self, since: Timestamp) -> Result<Vec<Change>> {
        Ok(sqlx::query_as(
            "SELECT id, kind, subject, created_at FROM changes WHERE created_at >= $1 ORDER BY id",
        )
        .bind(since)
        .fetch_all(self.conn())
        .await?)
    }

    async fn prune_changes(&self, before: Timestamp) -> Result<()> {
        sqlx::query("DELETE FROM changes WHERE created_at < $1")
            .bind(before)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    async fn find_account_vault(&self, account_id: &AccountId) -> Result<Option<AccountVaultRow>> {
        Ok(sqlx::query_as(
            "SELECT account_id, data_key, sensitive_fields, created_at, updated_at \
             FROM account_vaults WHERE account_id = $1",
        )
        .bind(account_id)
        .fetch_optional(self.conn())
        .await?)
    }

    async fn init_account_vault(&self, v: &AccountVaultRow) -> Result<AccountVaultRow> {
        sqlx::query(
            "INSERT INTO account_vaults (account_id, data_key, sensitive_fields, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id) DO NOTHING",
        )
        .bind(&v.account_id)
        .bind(&v.data_key)
        .bind(&v.sensitive_fields)
        .bind(v.created_at)
        .bind(v.updated_at)
        .execute(self.conn())
        .await?;
        self.find_account_vault(&v.account_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("vault of {} vanished", v.account_id)))
    }

    async fn set_sensitive_fields(
        &self,
        account_id: &AccountId,
        fields: &Strings,
        at: Timestamp,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE account_vaults SET sensitive_fields = $1, updated_at = $2 WHERE account_id = $3",
        )
        .bind(fields)
        .bind(at)
        .bind(account_id)
        .execute(self.conn())
        .await?
        .rows_affected()
            > 0)
    }

    async fn list_account_vaults(&self) -> Result<Vec<AccountVaultRow>> {
        Ok(sqlx::query_as(
            "SELECT account_id, data_key, sensitive_fields, created_at, updated_at FROM account_vaults",
        )
        .fetch_all(self.conn())
        .await?)
    }

    async fn sealed_refresh_answers(&self) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT token_hash, next_sealed FROM refresh_tokens WHERE next_sealed IS NOT NULL",
        )
        .fetch_all(self.conn())
        .await?)
    }

    async fn write_resealed(&self, r: &Resealed) -> Result<()> {
        let mut tx = self.conn().begin_with(DB::BEGIN).await?;
        for (kid, sealed) in &r.signing_keys {
            sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2")
                .bind(sealed)
                .bind(kid)
                .execute(&mut *tx)
                .await?;
        }
        for (account_id, sealed) in &r.data_keys {
            sqlx::query("UPDATE account_vaults SET data_key = $1 WHERE account_id = $2")
                .bind(sealed)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
        }
        for (hash, sealed) in &r.refresh_answers {
            sqlx::query("UPDATE refresh_tokens SET next_sealed = $1 WHERE token_hash = $2")
                .bind(sealed)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        crate::mfa::write_resealed_totp(&mut tx, &r.totp_secrets).await?;
        sqlx::query("UPDATE settings SET value = $1 WHERE name = $2")
            .bind(&r.check)
            .bind("master_key_check")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_audit_events(&self, events: &[AuditEventRow]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut insert = QueryBuilder::<DB>::new(
            "INSERT INTO audit_events (id, account_id, at, actor_kind, actor_id, action, target, ip, detail) ",
        );
        insert.push_values(events, |mut row, e| {
            row.push_bind(&e.id)
                .push_bind(e.account_id.as_deref())
                .push_bind(e.at)
                .push_bind(e.actor_kind)
                .push_bind(&e.actor_id)
                .push_bind(&e.action)
                .push_bind(&e.target)
                .push_bind(&e.ip)
                .push_bind(e.detail.as_ref().map(|d| d.0.to_string()));
        });
        DB::execute_built(&mut insert, self.conn()).await?;
        Ok(())
    }

    async fn list_audit_events(&self, f: &AuditFilter<'_>) -> Result<(Vec<AuditEventRow>, u64)> {
        // Operator events without an account (signing or master key rotations) concern
        // every account.
        const WHERE: &str = "(account_id = $1 OR (account_id IS NULL AND actor_kind = 'operator')) \
             AND ($2 IS NULL OR action = $2) \
             AND ($3 IS NULL OR actor_id = $3) AND ($4 IS NULL OR at >= $4) \
             AND ($5 IS NULL OR at < $5)";
        let total: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM audit_events WHERE {WHERE}"))
                .bind(f.account_id)
                .bind(f.action)
                .bind(f.actor_id)
                .bind(f.since)
                .bind(f.until)
                .fetch_one(self.conn())
                .await?;
        let rows = sqlx::query_as(&format!(
            "SELECT id, account_id, at, actor_kind, actor_id, action, target, ip, detail \
             FROM audit_events WHERE {WHERE} ORDER BY at DESC, id DESC LIMIT $6 OFFSET $7"
        ))
        .bind(f.account_id)
        .bind(f.action)
        .bind(f.actor_id)
        .bind(f.since)
        .bind(f.until)
        .bind(i64::from(f.limit))
        .bind(i64::try_from(f.offset).unwrap_or(i64::MAX))
        .fetch_all(self.conn())
        .await?;
        Ok((rows, total.max(0) as u64))
    }

    async fn get_setting(&self, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(self.conn())
                .await?,
        )
    }

    async fn init_setting(&self, name: &str, value: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(self.conn())
        .await?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(self.conn())
                .await?;
        stored.ok_or_else(|| StoreError::Corrupt(format!("setting {name} vanished")))
    }
}
