//! A key made elsewhere (on another node, by the command line) works on its very first request:
//! a key the in-memory index does not know is read through to the database — once per key however
//! many requests ask at once, at most `key_lookups_per_second` times a second whatever random keys
//! arrive, with a bounded negative cache, and without hanging when the database fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyfob_domain::ApiKey;
use keyfob_domain::time::Timestamp;

use keyfob::services::keys::KeySpec;

use crate::helpers::*;
use crate::revocation::two_nodes_with;

/// So long that the change feed cannot be what makes a new key known during a test.
const NO_FEED_MS: u64 = 600_000;

async fn first_request_works_on_every_node(backend: Backend) {
    let Some((a, b)) = two_nodes_with(backend, |c| c.sync_interval_ms = NO_FEED_MS).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let account = b.create_account("first@example.com").await;
    // Made through node B's store, as the command line and other nodes do: no index is told.
    let (row, key) = keyfob::services::keys::create_api_key(
        b.state.store.as_ref(),
        &account,
        &KeySpec::full_access("fresh"),
    )
    .await
    .unwrap();
    let key = key.expose().to_owned();
    assert!(a.state.index.key_by_hash(&row.key_hash).is_none());
    let reads_before = a.state.index.lookups_made();
    // The very first request on node A works, and on node B too.
    assert_eq!(a.whoami_status(&key).await, 200);
    assert_eq!(b.whoami_status(&key).await, 200);
    // Once read, it is in memory: more requests read nothing more.
    for _ in 0..5 {
        assert_eq!(a.whoami_status(&key).await, 200);
    }
    assert_eq!(a.state.index.lookups_made() - reads_before, 1);
    let token = a.mint_token(&key, &["deals.read"]).await;
    assert_eq!(b.whoami_status(&token).await, 200);

    // A revoked key is never read back in: the database says it is revoked.
    assert!(
        b.state
            .store
            .revoke_api_key(None, &row.id, Timestamp::now())
            .await
            .unwrap()
    );
    let (revoked_row, revoked) = keyfob::services::keys::create_api_key(
        b.state.store.as_ref(),
        &account,
        &KeySpec::full_access("gone"),
    )
    .await
    .unwrap();
    b.state
        .store
        .revoke_api_key(None, &revoked_row.id, Timestamp::now())
        .await
        .unwrap();
    let response = a
        .get("/auth/whoami", revoked.expose())
        .send()
        .await
        .unwrap();
    let message = expect_error(response, 401, "unauthorized").await;
    assert!(message.contains("unknown or revoked"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_works_on_its_first_request_on_every_node_on_sqlite() {
    first_request_works_on_every_node(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_works_on_its_first_request_on_every_node_on_postgres() {
    first_request_works_on_every_node(Backend::Postgres).await;
}

async fn spawn_limited(backend: Backend, per_second: u32) -> Option<TestApp> {
    let db = fresh_db(backend).await?;
    let mut config = test_config(&db);
    config.sync_interval_ms = NO_FEED_MS;
    config.key_lookups_per_second = per_second;
    Some(spawn_with(config, Arc::new(db)).await)
}

async fn random_keys_are_bounded(backend: Backend) {
    const PER_SECOND: u32 = 5;
    const KEYS: usize = 3000;
    let Some(app) = spawn_limited(backend, PER_SECOND).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let (_, good) = app.account_with_key().await;
    let before = app.state.index.lookups_made();
    let start = Instant::now();
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in (worker..KEYS).step_by(8) {
                let random = ApiKey::generate();
                statuses.push(app.whoami_status(random.expose()).await);
            }
            statuses
        }));
    }
    for task in tasks {
        for status in task.await.unwrap() {
            assert_eq!(status, 401, "a random key is unknown");
        }
    }
    let elapsed = start.elapsed();
    let reads = app.state.index.lookups_made() - before;
    // A fixed one-second window: at most PER_SECOND reads in each second begun.
    let allowed = u64::from(PER_SECOND) * (elapsed.as_secs() + 2);
    eprintln!(
        "{KEYS} random keys in {elapsed:?}: {reads} database reads, {} hashes in the negative cache",
        app.state.index.negative_cached()
    );
    assert!(
        reads <= allowed,
        "{reads} database reads for {KEYS} random keys in {elapsed:?} (allowed {allowed})"
    );
    assert!(reads >= 1, "the read-through is in use");
    assert!(app.state.index.negative_cached() <= keyfob::auth::NEGATIVE_CAPACITY);
    // A real key still works, and a new one made meanwhile too, once the budget refills.
    assert_eq!(app.whoami_status(&good).await, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let account = app.create_account("later@example.com").await;
    let (_, fresh) = keyfob::services::keys::create_api_key(
        app.state.store.as_ref(),
        &account,
        &KeySpec::full_access("later"),
    )
    .await
    .unwrap();
    assert_eq!(app.whoami_status(fresh.expose()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_keys_cost_at_most_the_rate_limit_on_sqlite() {
    random_keys_are_bounded(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_keys_cost_at_most_the_rate_limit_on_postgres() {
    random_keys_are_bounded(Backend::Postgres).await;
}

async fn one_read_per_unknown_key(backend: Backend) {
    let Some(app) = spawn_limited(backend, 1000).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let app = Arc::new(app);
    let random = ApiKey::generate().expose().to_owned();
    let before = app.state.index.lookups_made();
    // Fifty requests with one unknown key at once, then fifty more: one database read.
    for _ in 0..2 {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (app, random) = (app.clone(), random.clone());
            tasks.push(tokio::spawn(
                async move { app.whoami_status(&random).await },
            ));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 401);
        }
    }
    assert_eq!(app.state.index.lookups_made() - before, 1);

    // Fifty requests at once with one new key: one read, and all of them get in.
    let account = app.create_account("burst@example.com").await;
    let (_, fresh) = keyfob::services::keys::create_api_key(
        app.state.store.as_ref(),
        &account,
        &KeySpec::full_access("burst"),
    )
    .await
    .unwrap();
    let fresh = fresh.expose().to_owned();
    let before = app.state.index.lookups_made();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (app, fresh) = (app.clone(), fresh.clone());
        tasks.push(tokio::spawn(async move { app.whoami_status(&fresh).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(app.state.index.lookups_made() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_share_one_read_on_sqlite() {
    one_read_per_unknown_key(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_share_one_read_on_postgres() {
    one_read_per_unknown_key(Backend::Postgres).await;
}

async fn a_failing_database_does_not_hang_unknown_keys(backend: Backend) {
    let Some(app) = spawn_limited(backend, 1000).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let (_, known) = app.account_with_key().await;
    // The keys table is gone: every read-through fails.
    raw_execute(&app.db.url, "ALTER TABLE api_keys RENAME TO api_keys_away")
        .await
        .unwrap();
    // A key that is made while the database fails (as another node would, on its own
    // connection, once it is back) must not be remembered as unknown meanwhile.
    let account = app.create_account("back@example.com").await;
    let late = ApiKey::generate();
    for attempt in 0..5 {
        let start = Instant::now();
        let key = if attempt == 0 {
            late.expose().to_owned()
        } else {
            ApiKey::generate().expose().to_owned()
        };
        let response = app.get("/auth/whoami", &key).send().await.unwrap();
        expect_error(response, 503, "unavailable").await;
        assert!(
            start.elapsed() < keyfob::auth::LOOKUP_TIMEOUT,
            "answered in {:?}",
            start.elapsed()
        );
    }
    // Keys in memory keep working.
    assert_eq!(app.whoami_status(&known).await, 200);
    raw_execute(&app.db.url, "ALTER TABLE api_keys_away RENAME TO api_keys")
        .await
        .unwrap();
    app.state
        .store
        .insert_api_key(&keyfob_store::ApiKeyRow {
            id: uuid::Uuid::now_v7().to_string().into(),
            account_id: account,
            name: "late".into(),
            prefix: late.display_prefix().to_owned(),
            key_hash: late.hash(),
            created_at: Timestamp::now(),
            last_used_at: None,
            revoked_at: None,
            tokens_revoked_before: None,
            permissions: None,
            expires_at: None,
            rate_limit_requests: None,
            rate_limit_window_secs: None,
            rolled_from: None,
            last_used_ip: None,
        })
        .await
        .unwrap();
    assert_eq!(app.whoami_status(late.expose()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_database_answers_503_at_once_on_sqlite() {
    a_failing_database_does_not_hang_unknown_keys(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_database_answers_503_at_once_on_postgres() {
    a_failing_database_does_not_hang_unknown_keys(Backend::Postgres).await;
}
