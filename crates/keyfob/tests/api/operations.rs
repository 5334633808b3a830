//! What an operator sees of `keyfob serve` run as a process: the start-up message, logs without
//! terminal colours, JSON logs on every line with the access log, and backups of the SQLite
//! database made while it serves and put back while it does not.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{fails_with, keyfob, stdout};
use crate::helpers::*;

/// A `keyfob serve` process, killed when dropped, with its output read line by line.
struct Served {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    /// The lines of stdout read so far.
    out_lines: Vec<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

impl Served {
    fn start(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyfob"))
            .arg("--data-dir")
            .arg(db.dir.path())
            .arg("--database-url")
            .arg(&db.url)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("KEYFOB_LOG")
            .env_remove("KEYFOB_LOG_JSON")
            .env_remove("KEYFOB_ACCESS_LOG")
            .env_remove("KEYFOB_MASTER_KEY")
            .env_remove("KEYFOB_MASTER_KEY_FILE")
            .env_remove("KEYFOB_CONFIG")
            .env_remove("NO_COLOR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keyfob serve runs");
        let out = lines_of(child.stdout.take().unwrap());
        let err = lines_of(child.stderr.take().unwrap());
        Served {
            child,
            out,
            err,
            out_lines: Vec::new(),
        }
    }

    /// The first line of stdout.
    fn first_line(&mut self) -> String {
        let line = self
            .out
            .recv_timeout(Duration::from_secs(30))
            .expect("keyfob serve says where it listens");
        self.out_lines.push(line.clone());
        line
    }

    /// Stops the server and returns the rest of its stdout and all its stderr.
    fn stop(mut self) -> (Vec<String>, Vec<String>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = std::mem::take(&mut self.out_lines);
        out.extend(self.out.iter());
        let err = self.err.iter().collect();
        (out, err)
    }
}

fn account_and_key(db: &TestDb) -> (String, String) {
    let account = stdout(&keyfob(
        db,
        &["accounts", "create", "--email", "ops@example.com"],
        Some(PASSWORD),
    ))
    .trim()
    .to_owned();
    let key = stdout(&keyfob(
        db,
        &["keys", "create", "--account", &account, "--name", "ops"],
        None,
    ))
    .trim()
    .to_owned();
    (account, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_no_colour_codes_and_the_start_up_message_names_the_data() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let mut served = Served::start(&db, &["--access-log"], &[("KEYFOB_LOG", "info")]);
    let first = served.first_line();
    let addr = first
        .strip_prefix("Keyfob is listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let client = reqwest::Client::new();
    let response = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (out, err) = served.stop();

    let data_dir = db.dir.path().display().to_string();
    let out = out.join("\n");
    assert!(
        out.contains(&format!("Data directory: {data_dir}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Master key: {data_dir}/master.key (made now)")),
        "{out}"
    );
    assert!(out.contains("losing it loses every vault value"), "{out}");
    assert!(
        out.contains(&format!("Database: SQLite at {data_dir}/keyfob.db")),
        "{out}"
    );

    let err = err.join("\n");
    assert!(err.contains("serving"), "{err}");
    assert!(
        err.contains("route=/healthz") && err.contains("status=200"),
        "the access log: {err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in logs to a pipe: {err}"
    );
    assert!(!out.contains('\u{1b}'), "colour codes on stdout: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_json_on_every_line_and_the_access_log_names_the_caller() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let (account, key) = account_and_key(&db);
    let mut served = Served::start(&db, &["--log-json", "--access-log"], &[]);
    let first = served.first_line();
    let started: Value = serde_json::from_str(&first).unwrap_or_else(|_| panic!("{first}"));
    assert_eq!(started["master_key"]["from"], "file", "{first}");
    assert_eq!(started["database"], "sqlite", "{first}");
    let addr = started["listen"].as_str().unwrap().to_owned();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    let given = format!("ops-{}", uuid::Uuid::new_v4().simple());
    let response = client
        .get(format!("{base}/auth/whoami"))
        .bearer_auth(&key)
        .header("x-request-id", &given)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let minted: Value = client
        .post(format!("{base}/auth"))
        .bearer_auth(&key)
        .json(&json!({"permissions": ["deals.read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    let response = client
        .get(format!("{base}/api/deals"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let refused = client
        .get(format!("{base}/auth/whoami"))
        .bearer_auth("kf_not_a_real_key")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A second server on the same address cannot start: its reason is a JSON line too, as is
    // the warning about a master key given on the command line.
    let hex_key = std::fs::read_to_string(db.dir.path().join("master.key")).unwrap();
    let second = Command::new(env!("CARGO_BIN_EXE_keyfob"))
        .arg("--data-dir")
        .arg(db.dir.path())
        .arg("--database-url")
        .arg(&db.url)
        .args(["serve", "--log-json", "--listen", &addr])
        .args(["--master-key", hex_key.trim()])
        .env_remove("KEYFOB_LOG")
        .env_remove("KEYFOB_MASTER_KEY")
        .env_remove("KEYFOB_MASTER_KEY_FILE")
        .env_remove("KEYFOB_CONFIG")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let second_err = String::from_utf8(second.stderr).unwrap();
    let entries: Vec<Value> = second_err
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("{line}")))
        .collect();
    assert!(
        entries.iter().any(|e| e["level"] == "WARN"
            && e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("--master-key-file"))),
        "{second_err}"
    );
    let failure = entries
        .iter()
        .find(|entry| entry["level"] == "ERROR")
        .unwrap_or_else(|| panic!("{second_err}"));
    assert!(
        failure["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot listen on"),
        "{failure}"
    );
    assert!(second.stdout.is_empty());

    let (out, err) = served.stop();
    let mut access = Vec::new();
    for line in out.iter().chain(&err) {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("a line that is not JSON: {line}"));
        assert!(!line.contains(&key), "the API key was logged: {line}");
        assert!(!line.contains(&token), "a token was logged: {line}");
        if entry["target"] == "keyfob::access" {
            access.push(entry["fields"].clone());
        }
    }
    let find = |route: &str, status: u16| {
        access
            .iter()
            .find(|f| f["route"] == route && f["status"] == status)
            .unwrap_or_else(|| panic!("no access line for {route} {status}: {access:?}"))
            .clone()
    };
    let whoami = access
        .iter()
        .find(|f| f["request_id"] == given.as_str())
        .unwrap_or_else(|| panic!("no access line for {given}: {access:?}"));
    assert_eq!(whoami["method"], "GET");
    assert_eq!(whoami["route"], "/auth/whoami");
    assert_eq!(whoami["status"], 200);
    assert_eq!(whoami["account"], account.as_str());
    assert_eq!(whoami["credential"], "api_key");
    assert!(whoami["latency_ms"].as_f64().unwrap() >= 0.0);
    let mint = find("/auth", 201);
    assert_eq!(mint["method"], "POST");
    assert_eq!(mint["credential"], "api_key");
    let listed = find("/api/{resource}", 200);
    assert_eq!(listed["credential"], "token");
    assert_eq!(listed["account"], account.as_str());
    let refused = find("/auth/whoami", 401);
    assert_eq!(refused["credential"], "none");
    assert_eq!(refused["account"], "-");
}

/// Counts the records of `resource` the API lists.
async fn listed(client: &reqwest::Client, base: &str, key: &str, resource: &str) -> usize {
    let response = client
        .get(format!("{base}/api/{resource}?limit=1"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["totalDocs"]
        .as_u64()
        .unwrap_or_else(|| panic!("{body}")) as usize
}

fn base_of(served: &mut Served) -> String {
    let first = served.first_line();
    let addr = first
        .strip_prefix("Keyfob is listening on ")
        .unwrap_or_else(|| panic!("{first}"));
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_made_while_serving_restores_under_its_own_master_key_only() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let (_, key) = account_and_key(&db);
    let mut served = Served::start(&db, &[], &[]);
    let base = base_of(&mut served);
    let client = reqwest::Client::new();

    // A record with a sealed value, then writes that go on while the backup is made.
    let made: Value = client
        .post(format!("{base}/api/creditApplications"))
        .bearer_auth(&key)
        .json(&json!({"name": "Ann", "ssn": "219-09-9999"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let record = made["id"].as_str().unwrap().to_owned();
    let (stop_writing, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let writer = {
        let client = client.clone();
        let base = base.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut written = 0usize;
            loop {
                if stopped.try_recv().is_ok() {
                    return written;
                }
                let response = client
                    .post(format!("{base}/api/deals"))
                    .bearer_auth(&key)
                    .json(&json!({"n": written}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                written += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backup = db.dir.path().join("backup-1.db");
    let backup_arg = backup.display().to_string();
    let output = keyfob(&db, &["backup", "--to", &backup_arg], None);
    let said = stdout(&output);
    assert!(said.contains("master key is not in the backup"), "{said}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_writing.send(()).unwrap();
    let written = writer.await.unwrap();
    assert!(written > 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the backup is private");
    }
    // A consistent copy: every write it holds is whole, and it holds some but not all of them.
    let in_backup = raw_count(&format!("sqlite://{backup_arg}"), "records").await;
    let live = listed(&client, &base, &key, "deals").await + 1;
    assert!(
        in_backup >= 1 && (in_backup as usize) < live,
        "{in_backup} in the backup, {live} live"
    );

    // The backup's file is not overwritten by another.
    fails_with(
        &keyfob(&db, &["backup", "--to", &backup_arg], None),
        "exists already",
    );
    // No restore while a server runs on the database.
    fails_with(
        &keyfob(&db, &["restore", "--from", &backup_arg], None),
        "a Keyfob server is running",
    );
    drop(served);

    let database = db.dir.path().join("keyfob.db");
    let before = std::fs::read(&database).unwrap();
    // Another master key: refused, nothing changed.
    let other_key = db.dir.path().join("other.key");
    std::fs::write(&other_key, format!("{}\n", "ab".repeat(32))).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    fails_with(
        &keyfob(
            &db,
            &[
                "--master-key-file",
                &other_key.display().to_string(),
                "restore",
                "--from",
                &backup_arg,
            ],
            None,
        ),
        "was made under another master key",
    );
    // Not a database at all: refused, nothing changed.
    let garbage = db.dir.path().join("garbage.db");
    std::fs::write(&garbage, b"this is not a database, just some bytes").unwrap();
    fails_with(
        &keyfob(
            &db,
            &["restore", "--from", &garbage.display().to_string()],
            None,
        ),
        "cannot use",
    );
    fails_with(
        &keyfob(&db, &["restore", "--from", "/nonexistent/backup.db"], None),
        "cannot use",
    );
    assert!(
        std::fs::read(&database).unwrap() == before,
        "a refused restore changed the database"
    );

    // The right key: restored, the replaced database kept aside.
    let said = stdout(&keyfob(&db, &["restore", "--from", &backup_arg], None));
    assert!(said.contains("Restored"), "{said}");
    let kept = std::fs::read_dir(db.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("keyfob.db.before-restore-")
        });
    assert!(kept, "the replaced database is kept");

    let mut served = Served::start(&db, &[], &[]);
    let base = base_of(&mut served);
    assert_eq!(
        listed(&client, &base, &key, "deals").await + 1,
        in_backup as usize,
        "the restored database holds what the backup held"
    );
    // Its sealed values open under the master key.
    let revealed: Value = client
        .get(format!("{base}/api/creditApplications/{record}?reveal=ssn"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(revealed["ssn"], "219-09-9999", "{revealed}");
}

#[tokio::test]
async fn backup_and_restore_send_postgresql_to_its_own_tools() {
    let Some(db) = fresh_db(Backend::Postgres).await else {
        return;
    };
    let target = db.dir.path().join("pg.db").display().to_string();
    fails_with(&keyfob(&db, &["backup", "--to", &target], None), "pg_dump");
    fails_with(
        &keyfob(&db, &["restore", "--from", &target], None),
        "pg_restore",
    );
    assert!(!std::path::Path::new(&target).exists());
}
