//! PostgreSQL goes away while the app runs, behind a proxy the test controls (`db_proxy`): the
//! server stops (connections refused) or turns into a black hole (connections accepted, nothing
//! answered). Requests caught in flight answer 503 at their deadline without leaving the pool
//! wedged. Once the outage is detected, requests that need the database answer 503 with
//! `Retry-After` at once instead of each waiting out a timeout; keys and tokens keep verifying
//! from memory (revocations included); `/readyz` says not ready; and when the database is back,
//! the same requests succeed again within seconds, without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, Response};
use serde_json::{Value, json};
use sqlx::Connection;

use keyfob_domain::ids::AccountId;
use keyfob_domain::time::Timestamp;

use crate::db_proxy::{DbProxy, Mode, upstream_of};
use crate::helpers::*;

/// The most a request may take while the database is known to be down. Generous, since the
/// machine running the tests may be busy, but below the connection timeout the app is given: a
/// request that waits for the database at all cannot pass. (Before the fix each waited the pool's
/// 5-second timeout.)
const FAST: Duration = Duration::from_millis(1000);

fn now() -> Timestamp {
    Timestamp::now()
}

/// An app on a fresh PostgreSQL schema reached through a proxy, with short database timeouts so
/// the test runs in seconds.
async fn app_behind_proxy() -> Option<(TestApp, DbProxy)> {
    let db = fresh_db(Backend::Postgres).await?;
    let proxy = DbProxy::start(upstream_of(&db.url).await).await;
    let mut config = test_config(&db);
    config.database_url = proxy.url_through(&db.url);
    config.database_timeouts = keyfob_store::Timeouts {
        operation: Duration::from_millis(2000),
        connect: Duration::from_millis(1200),
        probe_interval: Duration::from_millis(100),
    };
    // Full reloads fail during the outage too, and must leave what is in memory alone.
    config.full_reload_ms = 300;
    Some((spawn_with(config, Arc::new(db)).await, proxy))
}

/// The app's PostgreSQL pool size.
const POOL_SIZE: usize = 16;

/// Waits until `count` queries of the app wait for the lock `lock` holds on `records`.
async fn until_waiting_on(lock: &mut sqlx::PgConnection, count: usize) {
    let start = Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_locks WHERE relation = 'records'::regclass AND NOT granted",
        )
        .fetch_one(&mut *lock)
        .await
        .unwrap();
        if waiting >= count as i64 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "only {waiting} queries wait"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send(app: &TestApp, method: Method, path: &str, credential: Option<&str>) -> Response {
    app.request(method, path, credential).send().await.unwrap()
}

/// Polls `/readyz` until it answers 503 at once (the outage is known); returns how long that took.
async fn until_known_down(app: &TestApp) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let asked = Instant::now();
        let status = send(app, Method::GET, "/readyz", None).await.status();
        if status == 503 && asked.elapsed() < Duration::from_millis(100) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the outage was never detected");
}

/// What a request should get while the database is down.
#[derive(Clone, Copy)]
enum Shape {
    /// `{"error": "unavailable", "message"}`.
    Json,
    /// RFC 6749's `{"error": "temporarily_unavailable"}`.
    OAuth,
    /// An HTML error page.
    Html,
}

/// A request of a client that needs the database.
struct Case {
    method: Method,
    path: String,
    credential: Option<String>,
    build: fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    shape: Shape,
}

impl Case {
    fn new(
        method: Method,
        path: impl Into<String>,
        credential: Option<&str>,
        shape: Shape,
    ) -> Case {
        Case {
            method,
            path: path.into(),
            credential: credential.map(str::to_owned),
            build: |r| r,
            shape,
        }
    }

    fn with(mut self, build: fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> Case {
        self.build = build;
        self
    }

    async fn send(&self, app: &TestApp) -> Response {
        let request = app.request(self.method.clone(), &self.path, self.credential.as_deref());
        (self.build)(request).send().await.unwrap()
    }
}

fn needs_database(key: &str, token: &str, record: &str) -> Vec<Case> {
    vec![
        Case::new(Method::POST, "/auth", Some(key), Shape::Json)
            .with(|r| r.json(&json!({"permissions": ["deals.read"]}))),
        Case::new(Method::GET, "/api/deals", Some(key), Shape::Json),
        Case::new(
            Method::GET,
            format!("/api/deals/{record}"),
            Some(token),
            Shape::Json,
        ),
        Case::new(Method::POST, "/api/deals", Some(token), Shape::Json)
            .with(|r| r.json(&json!({"name": "during"}))),
        Case::new(Method::GET, "/api/audit", Some(key), Shape::Json),
        Case::new(Method::POST, "/auth/token", None, Shape::OAuth).with(|r| {
            r.form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "kfr_unknown"),
                ("client_id", "app_unknown"),
            ])
        }),
        Case::new(Method::GET, "/dashboard/keys", None, Shape::Html)
            .with(|r| r.header("Cookie", "kf_session=not-a-live-session")),
        Case::new(
            Method::GET,
            "/auth?response_type=code&client_id=app_unknown&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&state=s",
            None,
            Shape::Html,
        ),
    ]
}

async fn outage(mode: Mode) {
    let Some((app, proxy)) = app_behind_proxy().await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let (account, key) = app.account_with_key().await;
    let token = app.mint_token(&key, &["deals.read", "deals.write"]).await;
    let created = app
        .request(Method::POST, "/api/deals", Some(&token))
        .json(&json!({"name": "before"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let record = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Revoked just before the outage: a token and a key.
    let revoked_token = app.mint_token(&key, &["deals.read"]).await;
    let jti = app
        .state
        .store
        .list_tokens(&AccountId::from(account.as_str()), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.jti)
        .find(|jti| *jti == decode_jti(&revoked_token))
        .unwrap();
    assert!(
        app.state
            .store
            .revoke_token(&AccountId::from(account.as_str()), &jti, now())
            .await
            .unwrap()
    );
    let revoked_key = app.create_key(&AccountId::from(account.as_str())).await;
    let revoked_id = app
        .state
        .store
        .list_api_keys(&AccountId::from(account.as_str()))
        .await
        .unwrap()
        .into_iter()
        .find(|k| revoked_key.starts_with(&k.prefix))
        .unwrap()
        .id;
    assert!(
        app.state
            .store
            .revoke_api_key(Some(&AccountId::from(account.as_str())), &revoked_id, now())
            .await
            .unwrap()
    );
    app.wait_until_status(&revoked_token, 401).await;
    app.wait_until_status(&revoked_key, 401).await;
    assert_eq!(send(&app, Method::GET, "/readyz", None).await.status(), 200);

    // Requests in flight when the database goes, holding every connection of the pool: a lock
    // taken directly on the server keeps their queries waiting. Abandoned at their deadline, their
    // connections must be closed, not kept waiting for an answer that never comes, or the pool
    // stays full of them after the database is back.
    let mut lock = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let in_flight: Vec<_> = (0..POOL_SIZE + 4)
        .map(|_| {
            let request = app.request(Method::GET, "/api/deals", Some(&key));
            tokio::spawn(async move {
                let start = Instant::now();
                let status = request.send().await.unwrap().status().as_u16();
                (status, start.elapsed())
            })
        })
        .collect();
    until_waiting_on(&mut lock, POOL_SIZE).await;

    proxy.set(mode);
    lock.close().await.unwrap();
    for request in in_flight {
        let (status, took) = request.await.unwrap();
        assert_eq!(status, 503, "a request in flight when the database went");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    let detected = until_known_down(&app).await;
    eprintln!("{mode:?}: outage known after {detected:?}");

    let cases = needs_database(&key, &token, &record);
    for _round in 0..3 {
        for case in &cases {
            let start = Instant::now();
            let response = case.send(&app).await;
            let took = start.elapsed();
            let (method, path) = (&case.method, &case.path);
            assert_eq!(response.status(), 503, "{method} {path}");
            assert!(
                took < FAST,
                "{method} {path} took {took:?} while the database is down"
            );
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap()),
                Some("1"),
                "{method} {path}"
            );
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            match case.shape {
                Shape::Json => {
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(body["error"], "unavailable", "{method} {path}: {body}");
                    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
                }
                Shape::OAuth => {
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(body["error"], "temporarily_unavailable", "{path}: {body}");
                }
                Shape::Html => {
                    assert!(
                        content_type.starts_with("text/html"),
                        "{path}: {content_type}"
                    );
                    let page = response.text().await.unwrap();
                    assert!(page.contains("unavailable"), "{path}: {page}");
                }
            }
        }
        // Verifying needs no database, and neither do liveness and the JWKS.
        assert_eq!(app.whoami_status(&key).await, 200);
        assert_eq!(app.whoami_status(&token).await, 200);
        assert_eq!(app.whoami_status(&revoked_token).await, 401);
        assert_eq!(app.whoami_status(&revoked_key).await, 401);
        assert_eq!(
            send(&app, Method::GET, "/healthz", None).await.status(),
            200
        );
        assert_eq!(
            send(&app, Method::GET, "/.well-known/jwks.json", None)
                .await
                .status(),
            200
        );
        let start = Instant::now();
        assert_eq!(send(&app, Method::GET, "/readyz", None).await.status(), 503);
        assert!(start.elapsed() < FAST);
        // Let full reloads (every 300 ms) fail in between.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    // The database comes back: the same requests succeed again, without a restart.
    proxy.set(Mode::Forward);
    let back = Instant::now();
    loop {
        let response = app.mint(&key, json!({"permissions": ["deals.read"]})).await;
        if response.status() == 201 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "still {} after {:?}",
            response.status(),
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{mode:?}: minting again {:?} after the database came back",
        back.elapsed()
    );
    assert_eq!(send(&app, Method::GET, "/readyz", None).await.status(), 200);
    let list = send(&app, Method::GET, "/api/deals", Some(&key)).await;
    assert_eq!(list.status(), 200);
    let docs = list.json::<Value>().await.unwrap()["docs"].clone();
    let names: Vec<&str> = docs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    // What was refused during the outage was not half-written.
    assert_eq!(names, ["before"]);
    let created = app
        .request(Method::POST, "/api/deals", Some(&token))
        .json(&json!({"name": "after"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(app.whoami_status(&key).await, 200);
    assert_eq!(app.whoami_status(&revoked_token).await, 401);
    assert_eq!(app.whoami_status(&revoked_key).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_fails_fast_and_recovers() {
    outage(Mode::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_fails_fast_and_recovers() {
    outage(Mode::BlackHole).await;
}
