//! `spawn_app()` and typed helpers for the tests.

use keyfob_domain::ids::AccountId;
use std::sync::Arc;
use std::time::Duration;

use keyfob::Application;
use keyfob::config::Config;
use keyfob::state::AppState;
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body once on SQLite and once on PostgreSQL (skipped, with a note, when
/// `KEYFOB_TEST_POSTGRES_URL` is unset, unless `KEYFOB_REQUIRE_POSTGRES` is set: see
/// [`postgres_url`]).
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($app: $crate::helpers::TestApp) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run($crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await.unwrap()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    match $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await {
                        Some(app) => run(app).await,
                        None => eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set"),
                    }
                }
            }
        )*
    };
}

/// A fresh database: a temp SQLite file, or a new schema in the test PostgreSQL database.
pub struct TestDb {
    pub url: String,
    pub dir: TempDir,
}

/// A fresh database on `backend`, or `None` when the PostgreSQL half of a test is to be skipped
/// (see [`postgres_url`]). A PostgreSQL database that is configured but cannot be reached fails
/// the test.
pub async fn fresh_db(backend: Backend) -> Option<TestDb> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("keyfob.db").display()),
        Backend::Postgres => fresh_schema(&postgres_url()?).await,
    };
    Some(TestDb { url, dir })
}

/// The test PostgreSQL database (`KEYFOB_TEST_POSTGRES_URL`), or `None` when it is not set and a
/// PostgreSQL test may be skipped. With `KEYFOB_REQUIRE_POSTGRES` set (as CI does), a missing URL
/// fails the test instead, so that the PostgreSQL tests cannot silently stop running.
pub fn postgres_url() -> Option<String> {
    choose_postgres(
        std::env::var("KEYFOB_TEST_POSTGRES_URL").ok(),
        std::env::var("KEYFOB_REQUIRE_POSTGRES").ok(),
    )
}

fn choose_postgres(url: Option<String>, required: Option<String>) -> Option<String> {
    let required = required.is_some_and(|v| !v.is_empty() && v != "0");
    match url.filter(|u| !u.is_empty()) {
        Some(url) => Some(url),
        None if required => {
            panic!("KEYFOB_TEST_POSTGRES_URL is not set and KEYFOB_REQUIRE_POSTGRES is")
        }
        None => None,
    }
}

/// A new schema in the database at `base`, and the URL that makes it the search path.
async fn fresh_schema(base: &str) -> String {
    let schema = format!("kf_test_{}", uuid::Uuid::new_v4().simple());
    let connect = <sqlx::PgConnection as sqlx::Connection>::connect(base);
    let mut conn = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("cannot reach the test PostgreSQL database at {base}: {e}"),
        Err(_) => panic!("cannot reach the test PostgreSQL database at {base}: no answer in 10 s"),
    };
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let _ = sqlx::Connection::close(conn).await;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// The rules above, without touching this process's environment.
mod harness {
    use super::*;

    #[test]
    fn without_a_url_a_postgres_test_is_skipped_unless_required() {
        assert_eq!(choose_postgres(None, None), None);
        assert_eq!(choose_postgres(None, Some("0".into())), None);
        assert_eq!(
            choose_postgres(Some(String::new()), Some(String::new())),
            None
        );
        let url = "postgres://postgres@127.0.0.1:5432/test".to_owned();
        assert_eq!(
            choose_postgres(Some(url.clone()), Some("1".into())),
            Some(url)
        );
    }

    #[test]
    #[should_panic(expected = "KEYFOB_TEST_POSTGRES_URL is not set and KEYFOB_REQUIRE_POSTGRES is")]
    fn without_a_url_a_required_postgres_test_fails() {
        choose_postgres(None, Some("1".into()));
    }

    #[tokio::test]
    #[should_panic(expected = "cannot reach the test PostgreSQL database")]
    async fn an_unreachable_postgres_fails_rather_than_skips() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        fresh_schema("postgres://postgres@127.0.0.1:1/test").await;
    }
}

/// A test configuration on a fresh database.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::for_data_dir(db.dir.path());
    config.database_url = db.url.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.sync_interval_ms = 100;
    config.last_used_flush_ms = 200;
    config
}

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub state: AppState,
    /// Keeps the database (and its temp dir) alive as long as the app.
    #[allow(dead_code)]
    pub db: Arc<TestDb>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    let db = fresh_db(backend).await?;
    let config = test_config(&db);
    Some(spawn_with(config, Arc::new(db)).await)
}

/// Starts a server with `config` (which names `db`'s database).
pub async fn spawn_with(config: Config, db: Arc<TestDb>) -> TestApp {
    // Warnings and errors, each in its request's span (which the tests so exercise).
    keyfob::telemetry::install(
        keyfob::telemetry::filter("keyfob=warn,keyfob::request=info"),
        false,
        false,
        tracing_subscriber::fmt::TestWriter::new(),
    );
    let app = Application::build(config)
        .await
        .expect("application builds");
    let base = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        client: Client::builder().build().unwrap(),
        state,
        db,
        stop: Some(stop),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: Method, path: &str, credential: Option<&str>) -> RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match credential {
            Some(c) => builder.header("Authorization", format!("Bearer {c}")),
            None => builder,
        }
    }

    pub fn get(&self, path: &str, credential: &str) -> RequestBuilder {
        self.request(Method::GET, path, Some(credential))
    }

    /// GETs a public JSON document (`/openapi.json`, the JWKS, `/healthz`) without credentials.
    pub async fn public_json(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// Makes an account (through the same code as the CLI) and returns its id.
    pub async fn create_account(&self, email: &str) -> AccountId {
        let (account, _) = keyfob::services::accounts::create_account(
            self.state.store.as_ref(),
            &self.state.passwords,
            email,
            PASSWORD.into(),
        )
        .await
        .expect("account created");
        account.id
    }

    /// Makes an API key and waits until the server knows it.
    pub async fn create_key(&self, account_id: &AccountId) -> String {
        let spec = keyfob::services::keys::KeySpec::full_access("test");
        self.create_key_with(account_id, &spec).await.1
    }

    /// Makes an API key as `spec` says (through the same code as the CLI) and waits until the
    /// server knows it; its id and the key.
    pub async fn create_key_with(
        &self,
        account_id: &AccountId,
        spec: &keyfob::services::keys::KeySpec,
    ) -> (keyfob_store::KeyId, String) {
        let (row, key) =
            keyfob::services::keys::create_api_key(self.state.store.as_ref(), account_id, spec)
                .await
                .expect("key created");
        let key = key.expose().to_owned();
        self.wait_until_status(&key, 200).await;
        (row.id, key)
    }

    /// An account with one API key.
    pub async fn account_with_key(&self) -> (String, String) {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let account = self.create_account(&email).await;
        let key = self.create_key(&account).await;
        (account.into(), key)
    }

    /// Polls `/auth/whoami` until `credential` gets `status`, for up to 3 seconds.
    pub async fn wait_until_status(&self, credential: &str, status: u16) {
        for _ in 0..60 {
            let got = self.whoami_status(credential).await;
            if got == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("credential never reached status {status}");
    }

    pub async fn whoami_status(&self, credential: &str) -> u16 {
        self.get("/auth/whoami", credential)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn mint(&self, credential: &str, body: Value) -> Response {
        self.request(Method::POST, "/auth", Some(credential))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn mint_token(&self, key: &str, permissions: &[&str]) -> String {
        let response = self.mint(key, json!({ "permissions": permissions })).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }
}

/// Reads a JSON error and checks its code; returns the message.
pub async fn expect_error(response: Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status, "status");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "error code in {body}");
    let message = body["message"].as_str().unwrap().to_owned();
    assert!(!message.is_empty());
    message
}

/// Runs one statement on the app's database directly, as an intruder with database access would.
pub async fn raw_execute(url: &str, sql: &str) -> Result<u64, sqlx::Error> {
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await?;
        let result = sqlx::query(sql)
            .execute(&pool)
            .await
            .map(|r| r.rows_affected());
        pool.close().await;
        result
    } else {
        let pool = sqlx::SqlitePool::connect(url).await?;
        let result = sqlx::query(sql)
            .execute(&pool)
            .await
            .map(|r| r.rows_affected());
        pool.close().await;
        result
    }
}

/// Counts the rows of `table` on the app's database directly, to see that a refusal wrote
/// nothing.
pub async fn raw_count(url: &str, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let count: i64 = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        count
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let count: i64 = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        count
    }
}

/// Polls `GET /api/audit?{query}` with `credential` until `ready` holds for the answer, for up to
/// 3 seconds (events from busy paths are written a moment after the request that caused them).
pub async fn audit_until(
    app: &TestApp,
    credential: &str,
    query: &str,
    ready: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..60 {
        let response = app
            .get(&format!("/api/audit?{query}"), credential)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let docs = body["docs"].as_array().unwrap().clone();
        if ready(&docs) {
            return docs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the audit log never showed what was expected for `{query}`");
}

/// Whether the events include one with `action` (and `target`, when given).
pub fn has_event(docs: &[Value], action: &str, target: Option<&str>) -> bool {
    docs.iter()
        .any(|e| e["action"] == action && target.is_none_or(|t| e["target"] == t))
}

/// Every byte of the app's database as an intruder would see it: the SQLite file and its WAL, or
/// every PostgreSQL table of the test's schema dumped as text.
pub async fn raw_database_text(app: &TestApp) -> Vec<u8> {
    let url = &app.db.url;
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(tables.iter().any(|t| t == "records"), "{tables:?}");
        let mut out = Vec::new();
        for table in tables {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            for row in rows {
                out.extend_from_slice(row.as_bytes());
                out.push(b'\n');
            }
        }
        pool.close().await;
        out
    } else {
        let path = app.db.dir.path().join("keyfob.db");
        let mut out = std::fs::read(&path).unwrap();
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            if let Ok(bytes) = std::fs::read(&p) {
                out.extend_from_slice(&bytes);
            }
        }
        out
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The JWT's `jti` claim (the token is not verified).
pub fn decode_jti(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}
