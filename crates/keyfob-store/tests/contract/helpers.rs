//! A fresh store per test on each backend, the rows the tests build on, and a side door to the
//! database for what the `Store` trait deliberately cannot do (change an audit event, count rows).

use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

use keyfob_store::{
    Account, AccountId, ApiKeyRow, AppRow, FamilyId, FamilyRow, GrantRow, JsonList, NewFamily,
    Owner, RefreshRow, Store, Timeouts, TokenRow, UserRow,
};
use sqlx::Connection;
use tempfile::TempDir;

pub use keyfob_store::Timestamp;

/// An instant the tests count from (Unix ms); every time in a test is `ts(T0 + something)`.
pub const T0: i64 = 1_700_000_000_000;
pub const MINUTE: i64 = 60_000;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

/// The instant `ms` Unix milliseconds.
pub fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

/// `ms` milliseconds, as a length of time.
pub fn millis(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(ms.unsigned_abs())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body once on SQLite and once on PostgreSQL. Without `KEYFOB_TEST_POSTGRES_URL` the
/// PostgreSQL run prints "skipped" and passes, unless `KEYFOB_REQUIRE_POSTGRES=1` makes it fail.
#[macro_export]
macro_rules! contract {
    ($(async fn $name:ident($db:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($db: $crate::helpers::TestStore) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run($crate::helpers::fresh($crate::helpers::Backend::Sqlite).await.unwrap()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    match $crate::helpers::fresh($crate::helpers::Backend::Postgres).await {
                        Some(db) => run(db).await,
                        None => eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set"),
                    }
                }
            }
        )*
    };
}

/// A store on a database of its own: a temp SQLite file, or a new schema in the test PostgreSQL
/// database. Dereferences to the [`Store`] it was opened as (the PostgreSQL one guarded, as the
/// server runs it).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub backend: Backend,
    url: String,
    _dir: TempDir,
}

impl Deref for TestStore {
    type Target = dyn Store;

    fn deref(&self) -> &dyn Store {
        self.store.as_ref()
    }
}

/// A fresh, migrated store; `None` for PostgreSQL when no test database is configured.
pub async fn fresh(backend: Backend) -> Option<TestStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("keyfob.db").display()),
        Backend::Postgres => {
            let Ok(base) = std::env::var("KEYFOB_TEST_POSTGRES_URL") else {
                assert!(
                    std::env::var("KEYFOB_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                    "KEYFOB_REQUIRE_POSTGRES=1 but KEYFOB_TEST_POSTGRES_URL is not set"
                );
                return None;
            };
            let schema = format!("kf_store_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&base)
                .await
                .expect("connect to the test PostgreSQL");
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .expect("create schema");
            conn.close().await.expect("close");
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-c%20search_path%3D{schema}")
        }
    };
    let store = keyfob_store::open(&url, Timeouts::default())
        .await
        .expect("store opens and migrates");
    Some(TestStore {
        store,
        backend,
        url,
        _dir: dir,
    })
}

/// A new id, unique across tests, starting with `prefix` for legible failures.
pub fn id<T: From<String>>(prefix: &str) -> T {
    T::from(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()))
}

impl TestStore {
    /// Runs one statement outside the store, on a connection of its own; how many rows it changed.
    pub async fn raw(&self, sql: &str) -> Result<u64, sqlx::Error> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&self.url)?;
                let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
                sqlx::query(sql).execute(&mut conn).await?.rows_affected()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await?;
                sqlx::query(sql).execute(&mut conn).await?.rows_affected()
            }
        })
    }

    /// The single integer a query outside the store answers (`SELECT COUNT(*) …`).
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&self.url).unwrap();
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
        }
    }

    /// How many rows `table` holds.
    pub async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT COUNT(*) FROM {table}")).await
    }

    /// The change feed from the start, as `(kind, subject)`.
    pub async fn feed(&self) -> Vec<(String, String)> {
        self.changes_since(Timestamp::UNIX_EPOCH)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.kind.to_string(), c.subject))
            .collect()
    }

    /// A new account with its owner; returns the account's id.
    pub async fn account(&self) -> AccountId {
        self.account_and_owner().await.0.id
    }

    /// A new account and its owner.
    pub async fn account_and_owner(&self) -> (Account, Owner) {
        let account = Account {
            id: id("acct"),
            name: "Acme".into(),
            created_at: ts(T0),
            require_verified_users: false,
        };
        let owner = Owner {
            id: id("owner"),
            account_id: account.id.clone(),
            email: format!("{}@example.com", id::<String>("owner")),
            password_hash: "$argon2id$stub".into(),
            created_at: ts(T0),
            email_verified_at: None,
        };
        self.create_account(&account, &owner).await.unwrap();
        (account, owner)
    }

    /// A new live API key of `account_id`, made at `created_at`.
    pub async fn key(&self, account_id: &str, created_at: Timestamp) -> ApiKeyRow {
        let key = key_row(account_id, created_at);
        self.insert_api_key(&key).await.unwrap();
        key
    }

    /// A new application of `account_id`.
    pub async fn app(&self, account_id: &str) -> AppRow {
        let app = app_row(account_id);
        self.insert_app(&app).await.unwrap();
        app
    }

    /// A new end user.
    pub async fn user(&self) -> UserRow {
        let user = UserRow {
            id: id("user"),
            email: format!("{}@example.com", id::<String>("user")),
            password_hash: "$argon2id$old".into(),
            created_at: ts(T0),
            password_changed_at: ts(T0),
            email_verified_at: None,
            disabled_at: None,
        };
        self.insert_user(&user).await.unwrap();
        user
    }

    /// A user's grant to an app of a new account, with `permissions` (a JSON array).
    pub async fn grant(&self, permissions: &str) -> GrantRow {
        let account = self.account().await;
        let app = self.app(&account).await;
        let user = self.user().await;
        self.upsert_grant(&GrantRow {
            id: id("grant"),
            user_id: user.id,
            client_id: app.client_id,
            account_id: account,
            permissions: json(permissions),
            identity: Default::default(),
            created_at: ts(T0),
            updated_at: ts(T0),
            revoked_at: None,
        })
        .await
        .unwrap()
    }

    /// Starts a session under `grant` without a code; returns its family id and refresh hash.
    pub async fn session(&self, grant: &GrantRow) -> (FamilyId, String) {
        let item = new_session(grant, None);
        let ids = (item.family.id.clone(), item.first.token_hash.clone());
        assert_eq!(self.start_families(&[item]).await.unwrap(), [true]);
        ids
    }
}

/// A use of `key_id` at `at` (ms) from `ip`, as the batch writes it.
pub fn use_of(key_id: &keyfob_store::KeyId, at: i64, ip: Option<&str>) -> keyfob_store::KeyUse {
    keyfob_store::KeyUse {
        key_id: key_id.clone(),
        at: ts(at),
        ip: ip.map(Into::into),
    }
}

/// Test-only: the same row with another count of client errors.
pub trait WithClientErrors {
    fn with_client_errors(self, n: i64) -> Self;
}

impl WithClientErrors for keyfob_store::UsageRow {
    fn with_client_errors(mut self, n: i64) -> Self {
        self.counts.client_errors = n;
        self
    }
}

pub fn key_row(account_id: &str, created_at: Timestamp) -> ApiKeyRow {
    let key_id: String = id("key");
    ApiKeyRow {
        key_hash: id("hash"),
        prefix: "kf_abcd".into(),
        name: "ci".into(),
        account_id: account_id.into(),
        id: key_id.into(),
        created_at,
        last_used_at: None,
        revoked_at: None,
        tokens_revoked_before: None,
        permissions: None,
        expires_at: None,
        rate_limit_requests: None,
        rate_limit_window_secs: None,
        rolled_from: None,
        last_used_ip: None,
    }
}

pub fn app_row(account_id: &str) -> AppRow {
    AppRow {
        client_id: id("app"),
        account_id: account_id.into(),
        name: "Web".into(),
        public: true,
        client_secret_hash: None,
        redirect_uris: json(r#"["https://app.example/cb"]"#),
        post_logout_redirect_uris: json("[]"),
        origins: json(r#"["https://app.example"]"#),
        max_permissions: json(r#"["deals.read","deals.write"]"#),
        refresh_idle_secs: Some(3600),
        refresh_absolute_secs: None,
        allow_fragment: false,
        created_at: ts(T0),
        revoked_at: None,
        previous_secret_hash: None,
        previous_secret_expires_at: None,
        deleted_at: None,
        links: Default::default(),
    }
}

/// A token of `account_id` minted by `key_id` at `issued_at`, living ten minutes.
pub fn token_row(account_id: &str, key_id: Option<&str>, issued_at: Timestamp) -> TokenRow {
    TokenRow {
        jti: id("jti"),
        account_id: account_id.into(),
        api_key_id: key_id.map(Into::into),
        subject: "svc".into(),
        permissions: json(r#"["deals.read"]"#),
        issued_at,
        expires_at: ts(issued_at.unix_ms() + 10 * MINUTE),
        revoked_at: None,
        name: None,
        metadata: None,
        last_used_at: None,
    }
}

/// A session to start under `grant`: a new family and its first refresh token, exchanging the
/// code `code` (its hash) if given.
pub fn new_session(grant: &GrantRow, code: Option<&str>) -> NewFamily {
    let family = FamilyRow {
        id: id("fam"),
        user_id: grant.user_id.clone(),
        client_id: grant.client_id.clone(),
        grant_id: grant.id.clone(),
        identity: Default::default(),
        auth_time: None,
        created_at: ts(T0),
        last_used_at: ts(T0),
        revoked_at: None,
    };
    let first = RefreshRow {
        token_hash: id("rt"),
        family_id: family.id.clone(),
        permissions: grant.permissions.clone(),
        created_at: ts(T0),
        used_at: None,
        next_sealed: None,
    };
    NewFamily {
        family,
        first,
        code: code.map(|hash| (hash.to_owned(), ts(T0 + 1_000))),
    }
}

/// A list column's value from its stored JSON form.
pub fn json<T: serde::de::DeserializeOwned>(text: &str) -> JsonList<T> {
    JsonList::from_json(text).unwrap()
}

/// The change feed's kinds by their stored names: what nodes of every version read, so the
/// names must never change.
pub mod change_kind {
    pub const API_KEY_CREATED: &str = "api_key.created";
    pub const API_KEY_REVOKED: &str = "api_key.revoked";
    pub const TOKEN_REVOKED: &str = "token.revoked";
    pub const SIGNING_KEYS_CHANGED: &str = "signing_keys.changed";
    pub const APP_CHANGED: &str = "app.changed";
    pub const SESSION_REVOKED: &str = "session.revoked";
    pub const API_KEY_TOKENS_REVOKED: &str = "api_key.tokens_revoked";
}
