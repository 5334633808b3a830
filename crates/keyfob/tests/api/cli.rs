//! The `keyfob` command line, run as a process: outputs, exit codes, and that a running server
//! refuses a key revoked from the command line.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use keyfob_domain::ids::AccountId;

use crate::helpers::*;

pub(crate) fn keyfob(db: &TestDb, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyfob"))
        .arg("--data-dir")
        .arg(db.dir.path())
        .arg("--database-url")
        .arg(&db.url)
        .args(args)
        .env_remove("KEYFOB_MASTER_KEY")
        .env_remove("KEYFOB_MASTER_KEY_FILE")
        .env_remove("KEYFOB_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyfob runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

pub(crate) fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// A failure: non-zero exit, nothing on stdout, one line on stderr containing `needle`.
pub(crate) fn fails_with(output: &Output, needle: &str) {
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("keyfob: ") && err.contains(needle), "{err}");
}

async fn cli_round_trip(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let db = Arc::new(db);
    let account = stdout(&keyfob(
        &db,
        &["accounts", "create", "--email", "Ops@Example.com"],
        Some(&format!("{PASSWORD}\n")),
    ));
    let account = account.trim().to_owned();
    assert!(uuid::Uuid::parse_str(&account).is_ok(), "{account}");

    let key = stdout(&keyfob(
        &db,
        &[
            "keys",
            "create",
            "--account",
            "ops@example.com",
            "--name",
            "ci",
        ],
        None,
    ));
    assert_eq!(key.lines().count(), 1);
    let key = key.trim().to_owned();
    assert!(key.starts_with("kf_") && key.len() == 67, "{key}");
    let by_id = stdout(&keyfob(
        &db,
        &["keys", "create", "--account", &account, "--name", "second"],
        None,
    ));
    assert!(by_id.trim().starts_with("kf_"));

    let listing = stdout(&keyfob(&db, &["keys", "list", "--account", &account], None));
    assert_eq!(listing.lines().count(), 2);
    assert!(!listing.contains(&key), "the list never shows a key");
    let ci_line = listing.lines().find(|l| l.contains("\tci\t")).unwrap();
    let key_id = ci_line.split('\t').next().unwrap().to_owned();
    assert!(
        ci_line.contains(&key[..11])
            && ci_line.ends_with("\tactive\tfull access\tno expiry\tno limit"),
        "{ci_line}"
    );

    // A running server on the same database accepts the key, then refuses it once revoked.
    let mut config = test_config(&db);
    config.sync_interval_ms = 200;
    let app = spawn_with(config, db.clone()).await;
    app.wait_until_status(&key, 200).await;
    stdout(&keyfob(&db, &["keys", "revoke", &key_id], None));
    app.wait_until_status(&key, 401).await;
    let listing = stdout(&keyfob(&db, &["keys", "list", "--account", &account], None));
    assert!(
        listing
            .lines()
            .find(|l| l.starts_with(&key_id))
            .unwrap()
            .contains("revoked")
    );

    // Rotating publishes a second key.
    let rotated = stdout(&keyfob(
        &db,
        &["signing-keys", "rotate", "--activate-in", "60"],
        None,
    ));
    assert!(rotated.starts_with("published "), "{rotated}");
    let keys = stdout(&keyfob(&db, &["signing-keys", "list"], None));
    assert_eq!(keys.lines().count(), 2);

    // Rotating the master key replaces master.key and seals both signing keys again; the
    // commands that follow open the database with the new key.
    let before = std::fs::read_to_string(db.dir.path().join("master.key")).unwrap();
    let output = keyfob(&db, &["master-key", "rotate"], None);
    assert!(
        stdout(&output).is_empty(),
        "no secret printed when the key is a file"
    );
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("2 signing keys") && said.contains("restart"),
        "{said}"
    );
    let after = std::fs::read_to_string(db.dir.path().join("master.key")).unwrap();
    assert_ne!(before, after);
    assert!(!db.dir.path().join("master.key.new").exists());
    let keys = stdout(&keyfob(&db, &["signing-keys", "list"], None));
    assert_eq!(keys.lines().count(), 2);
    let rotated = stdout(&keyfob(&db, &["signing-keys", "rotate"], None));
    assert!(rotated.starts_with("published "), "{rotated}");

    // Bad input: one clear line, non-zero exit, nothing created.
    fails_with(
        &keyfob(
            &db,
            &["accounts", "create", "--email", "not-an-email"],
            Some(PASSWORD),
        ),
        "email",
    );
    fails_with(
        &keyfob(
            &db,
            &["accounts", "create", "--email", "x@example.com"],
            Some("short"),
        ),
        "at least",
    );
    fails_with(
        &keyfob(
            &db,
            &["accounts", "create", "--email", "x@example.com"],
            Some(""),
        ),
        "password",
    );
    fails_with(
        &keyfob(
            &db,
            &["accounts", "create", "--email", "ops@example.com"],
            Some(PASSWORD),
        ),
        "already taken",
    );
    fails_with(
        &keyfob(
            &db,
            &[
                "keys",
                "create",
                "--account",
                "nobody@example.com",
                "--name",
                "x",
            ],
            None,
        ),
        "no account",
    );
    fails_with(
        &keyfob(
            &db,
            &["keys", "create", "--account", &account, "--name", "  "],
            None,
        ),
        "name",
    );
    fails_with(
        &keyfob(&db, &["keys", "revoke", &key_id], None),
        "no live API key",
    );
    fails_with(
        &keyfob(&db, &["keys", "revoke", "nope"], None),
        "no live API key",
    );
    fails_with(
        &keyfob(
            &db,
            &["signing-keys", "rotate", "--activate-in", "-5"],
            None,
        ),
        "activate-in",
    );
    let listing = stdout(&keyfob(&db, &["keys", "list", "--account", &account], None));
    assert_eq!(listing.lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_on_sqlite() {
    cli_round_trip(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_on_postgres() {
    cli_round_trip(Backend::Postgres).await;
}

#[test]
fn unknown_commands_fail() {
    let output = Command::new(env!("CARGO_BIN_EXE_keyfob"))
        .args(["frobnicate"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[test]
fn a_bad_trusted_proxy_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_keyfob"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--trusted-proxy",
            "10.0.0.0/8,proxy.internal",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("proxy.internal"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

async fn apps_and_users(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let account = stdout(&keyfob(
        &db,
        &["accounts", "create", "--email", "owner@example.com"],
        Some(PASSWORD),
    ));
    let account = account.trim();

    // A confidential app gets a secret, shown once; only its hash is stored.
    let out = stdout(&keyfob(
        &db,
        &[
            "apps",
            "create",
            "--account",
            "owner@example.com",
            "--name",
            "Dealer portal",
            "--redirect-uri",
            "https://portal.example.com/callback",
            "--redirect-uri",
            "http://localhost:3000/callback",
            "--origin",
            "https://portal.example.com",
            "--post-logout-redirect-uri",
            "https://portal.example.com/logged-out",
            "--post-logout-redirect-uri",
            "http://localhost:3000/bye",
            "--max-permissions",
            "deals.read,deals.write",
        ],
        None,
    ));
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let client_id = created["client_id"].as_str().unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    assert!(
        client_id.starts_with("app_") && secret.starts_with("kfs_"),
        "{out}"
    );
    let store = keyfob_store::open(&db.url, Default::default())
        .await
        .unwrap();
    let app = store.find_app(&client_id.into()).await.unwrap().unwrap();
    assert_eq!(app.account_id, account);
    assert!(!app.public);
    assert_eq!(
        app.max_permissions.to_json(),
        r#"["deals.read","deals.write"]"#
    );
    assert_eq!(
        app.redirect_uris.to_json(),
        r#"["https://portal.example.com/callback","http://localhost:3000/callback"]"#
    );
    assert_eq!(
        app.post_logout_redirect_uris.to_json(),
        r#"["https://portal.example.com/logged-out","http://localhost:3000/bye"]"#
    );
    assert_ne!(app.client_secret_hash.as_deref(), Some(secret));
    assert_eq!(
        app.client_secret_hash.unwrap(),
        keyfob_domain::secret::hash_secret(secret)
    );

    // A public app has no secret.
    let out = stdout(&keyfob(
        &db,
        &[
            "apps",
            "create",
            "--account",
            account,
            "--name",
            "SPA",
            "--public",
            "--redirect-uri",
            "https://spa.example.com/cb",
            "--refresh-idle-secs",
            "2592000",
            "--refresh-max-age-secs",
            "7776000",
            "--allow-fragment",
        ],
        None,
    ));
    let public: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(public.get("client_secret").is_none(), "{out}");
    let spa = store
        .find_app(&public["client_id"].as_str().unwrap().into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (spa.refresh_idle_secs, spa.refresh_absolute_secs),
        (Some(2_592_000), Some(7_776_000))
    );
    assert_eq!(
        (app.refresh_idle_secs, app.refresh_absolute_secs),
        (None, None)
    );
    assert!(
        spa.allow_fragment,
        "--allow-fragment turns fragment mode on"
    );
    assert!(!app.allow_fragment, "off by default");
    assert_eq!(store.list_apps(&account.into()).await.unwrap().len(), 2);

    // Bad registrations: one line each, nothing stored.
    let base = ["apps", "create", "--account", account, "--name", "x"];
    for (extra, needle) in [
        (
            vec!["--redirect-uri", "http://evil.example.com/cb"],
            "plain http",
        ),
        (vec!["--redirect-uri", "/relative"], "absolute"),
        (
            vec!["--redirect-uri", "https://a.example.com/cb#frag"],
            "fragment",
        ),
        (
            vec![
                "--redirect-uri",
                "https://a.example.com/cb",
                "--origin",
                "https://a.example.com/path",
            ],
            "not an origin",
        ),
        (
            vec![
                "--redirect-uri",
                "https://a.example.com/cb",
                "--post-logout-redirect-uri",
                "http://a.example.com/bye",
            ],
            "post-logout redirect URI: `http://a.example.com/bye` uses plain http",
        ),
        (
            vec![
                "--redirect-uri",
                "https://a.example.com/cb",
                "--post-logout-redirect-uri",
                "https://a.example.com/bye#x",
            ],
            "post-logout redirect URI",
        ),
        (
            vec![
                "--redirect-uri",
                "https://a.example.com/cb",
                "--max-permissions",
                "deals.delete",
            ],
            "deals.delete",
        ),
        (
            vec![
                "--redirect-uri",
                "https://a.example.com/cb",
                "--max-permissions",
                ",",
            ],
            "most permissions",
        ),
        (
            vec![
                "--redirect-uri",
                "https://a.example.com/cb",
                "--refresh-idle-secs",
                "0",
            ],
            "idle limit",
        ),
        (
            vec![
                "--redirect-uri",
                "https://a.example.com/cb",
                "--refresh-max-age-secs",
                "999999999999",
            ],
            "maximum session age",
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra).collect();
        fails_with(&keyfob(&db, &args, None), needle);
    }
    assert_eq!(store.list_apps(&account.into()).await.unwrap().len(), 2);

    // End users.
    let user = stdout(&keyfob(
        &db,
        &["users", "create", "--email", "Rider@Example.com"],
        Some(PASSWORD),
    ));
    let found = store
        .find_user_by_email("rider@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, user.trim());
    assert!(found.password_hash.starts_with("$argon2id$"));
    fails_with(
        &keyfob(
            &db,
            &["users", "create", "--email", "rider@example.com"],
            Some(PASSWORD),
        ),
        "already taken",
    );
    fails_with(
        &keyfob(&db, &["users", "create", "--email", "bad"], Some(PASSWORD)),
        "email",
    );
    fails_with(
        &keyfob(
            &db,
            &["users", "create", "--email", "x@example.com"],
            Some("short"),
        ),
        "at least",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_and_users_on_sqlite() {
    apps_and_users(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_and_users_on_postgres() {
    apps_and_users(Backend::Postgres).await;
}

async fn retiring_a_signing_key(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let db = Arc::new(db);
    let first = stdout(&keyfob(&db, &["signing-keys", "list"], None));
    assert_eq!(first.lines().count(), 1);
    let old_kid = first.split('\t').next().unwrap().to_owned();
    assert!(first.trim_end().ends_with("\tsigning"), "{first}");
    // The only key: refused, saying what to do instead; nothing changes.
    fails_with(
        &keyfob(&db, &["signing-keys", "retire", &old_kid], None),
        "signing-keys rotate --activate-in 0",
    );
    fails_with(
        &keyfob(&db, &["signing-keys", "retire", "no-such-kid"], None),
        "no signing key no-such-kid",
    );
    assert_eq!(stdout(&keyfob(&db, &["signing-keys", "list"], None)), first);

    // A server (started after the first key exists, so it shares it) with a token signed by it,
    // and a key made by the command line that works on its first request, before the change feed
    // could have brought it.
    let mut config = test_config(&db);
    config.sync_interval_ms = 200;
    let app = spawn_with(config.clone(), db.clone()).await;
    // A second server whose change feed is too slow to matter in this test.
    config.sync_interval_ms = 600_000;
    let quiet = spawn_with(config, db.clone()).await;
    stdout(&keyfob(
        &db,
        &["accounts", "create", "--email", "ops@example.com"],
        Some(PASSWORD),
    ));
    let key = stdout(&keyfob(
        &db,
        &[
            "keys",
            "create",
            "--account",
            "ops@example.com",
            "--name",
            "ci",
        ],
        None,
    ));
    let key = key.trim();
    assert_eq!(quiet.whoami_status(key).await, 200, "on its first request");
    assert_eq!(app.whoami_status(key).await, 200);
    let token = app.mint_token(key, &["deals.read"]).await;
    assert_eq!(app.whoami_status(&token).await, 200);

    let rotated = stdout(&keyfob(
        &db,
        &["signing-keys", "rotate", "--activate-in", "300"],
        None,
    ));
    let next_kid = rotated.split_whitespace().nth(1).unwrap().to_owned();
    let listing = stdout(&keyfob(&db, &["signing-keys", "list"], None));
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(&next_kid) && l.ends_with("\tpublished")),
        "{listing}"
    );

    let said = stdout(&keyfob(&db, &["signing-keys", "retire", &old_kid], None));
    assert!(
        said.contains(&format!("retired {old_kid}"))
            && said.contains(&format!("{next_kid} signs from now on")),
        "{said}"
    );
    let listing = stdout(&keyfob(&db, &["signing-keys", "list"], None));
    let old_line = listing.lines().find(|l| l.starts_with(&old_kid)).unwrap();
    assert!(old_line.contains("\tretired "), "{old_line}");
    let next_line = listing.lines().find(|l| l.starts_with(&next_kid)).unwrap();
    assert!(next_line.ends_with("\tsigning"), "{next_line}");
    fails_with(
        &keyfob(&db, &["signing-keys", "retire", &old_kid], None),
        "retired already",
    );
    // The successor is now the only key that signs: it cannot be retired either.
    fails_with(
        &keyfob(&db, &["signing-keys", "retire", &next_kid], None),
        "rotate --activate-in 0",
    );

    // The running server refuses the token and drops the key from its JWKS within a second.
    app.wait_until_status(&token, 401).await;
    let response = app.get("/auth/whoami", &token).send().await.unwrap();
    let message = expect_error(response, 401, "unauthorized").await;
    assert!(message.contains("retired"), "{message}");
    let jwks: serde_json::Value = app.public_json("/.well-known/jwks.json").await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![next_kid.as_str()]);
    let fresh = app.mint_token(key, &["deals.read"]).await;
    assert_eq!(app.whoami_status(&fresh).await, 200);

    // Audited as the operator's.
    let store = keyfob_store::open(&db.url, Default::default())
        .await
        .unwrap();
    let account = stdout(&keyfob(
        &db,
        &["accounts", "create", "--email", "auditor@example.com"],
        Some(PASSWORD),
    ));
    let (events, _) = store
        .list_audit_events(&keyfob_store::AuditFilter {
            account_id: &AccountId::from(account.trim()),
            action: Some("signing_key.retired"),
            actor_id: None,
            since: None,
            until: None,
            limit: 10,
            offset: 0,
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor_kind.as_str(), "operator");
    assert_eq!(events[0].target.as_deref(), Some(old_kid.as_str()));
    assert!(
        events[0]
            .detail
            .as_ref()
            .unwrap()
            .0
            .to_string()
            .contains(&next_kid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_retire_on_sqlite() {
    retiring_a_signing_key(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_retire_on_postgres() {
    retiring_a_signing_key(Backend::Postgres).await;
}
