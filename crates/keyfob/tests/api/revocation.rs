//! Two `keyfob serve` nodes on one database: a key or token revoked through one is refused by the
//! other within 2 seconds, with no database read per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyfob_domain::ids::AccountId;
use keyfob_domain::time::Timestamp;

use crate::helpers::*;

/// Two nodes sharing a database and a master key.
pub(crate) async fn two_nodes(backend: Backend) -> Option<(TestApp, TestApp)> {
    two_nodes_with(backend, |_| {}).await
}

/// Two nodes sharing a database and a master key, their configuration adjusted by `adjust`.
pub(crate) async fn two_nodes_with(
    backend: Backend,
    adjust: impl Fn(&mut keyfob::Config),
) -> Option<(TestApp, TestApp)> {
    let db = Arc::new(fresh_db(backend).await?);
    let master = hex_key();
    let mut first = test_config(&db);
    first.master_key_hex = Some(master.clone().into());
    first.sync_interval_ms = 500;
    // Nodes of one service share their public URL: it is the tokens' issuer.
    first.public_url = Some("http://keyfob.test".into());
    adjust(&mut first);
    let mut second = first.clone();
    second.data_dir = db.dir.path().join("node-b");
    let a = spawn_with(first, db.clone()).await;
    let b = spawn_with(second, db).await;
    Some((a, b))
}

fn hex_key() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Polls `node` until `credential` is refused; returns how long it took.
pub(crate) async fn time_until_refused(node: &TestApp, credential: &str) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if node.whoami_status(credential).await == 401 {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never refused");
}

async fn revocation_reaches_the_other_node(backend: Backend) {
    let Some((a, b)) = two_nodes(backend).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let (account, key) = a.account_with_key().await;
    // Node B learns of the key created through node A's store.
    b.wait_until_status(&key, 200).await;
    // A token minted on A verifies on B: the nodes share signing keys.
    let token = a.mint_token(&key, &["deals.read"]).await;
    let spare = a.mint_token(&key, &["deals.read"]).await;
    assert_eq!(b.whoami_status(&token).await, 200);
    assert_eq!(b.whoami_status(&spare).await, 200);

    let jti = a
        .state
        .store
        .list_tokens(&AccountId::from(account.as_str()), 10)
        .await
        .unwrap()
        .into_iter()
        .find(|t| decode_jti(&token) == t.jti)
        .unwrap()
        .jti;
    assert!(
        a.state
            .store
            .revoke_token(&AccountId::from(account.as_str()), &jti, now())
            .await
            .unwrap()
    );
    let took = time_until_refused(&b, &token).await;
    assert!(
        took < Duration::from_secs(2),
        "token refused after {took:?}"
    );
    assert_eq!(
        b.whoami_status(&spare).await,
        200,
        "only the revoked token is refused"
    );

    let key_id = a
        .state
        .store
        .list_api_keys(&AccountId::from(account.as_str()))
        .await
        .unwrap()[0]
        .id
        .clone();
    assert!(
        a.state
            .store
            .revoke_api_key(None, &key_id, now())
            .await
            .unwrap()
    );
    let took = time_until_refused(&b, &key).await;
    assert!(took < Duration::from_secs(2), "key refused after {took:?}");
    assert_eq!(a.whoami_status(&key).await, 401);
}

fn now() -> Timestamp {
    Timestamp::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres() {
    revocation_reaches_the_other_node(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_sqlite_file() {
    revocation_reaches_the_other_node(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_master_key_refuses_to_start() {
    let db = Arc::new(fresh_db(Backend::Sqlite).await.unwrap());
    let mut first = test_config(&db);
    first.master_key_hex = Some(hex_key().into());
    let _a = spawn_with(first.clone(), db.clone()).await;
    let mut second = first;
    second.master_key_hex = Some(hex_key().into());
    let err = keyfob::Application::build(second)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("master key does not match"),
        "{err}"
    );
}
