//! Request ids and logs: every answer carries an `X-Request-Id` (the client's when fit to log,
//! else a fresh one), and a 500 is logged on the server's stderr inside its request's span.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::cli::{keyfob, stdout};
use crate::helpers::*;

fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on a {}", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

fn is_uuid_v4(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 4) && id.len() == 36
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_gets_a_fresh_request_id() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let response = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let id = request_id(&response);
        assert!(is_uuid_v4(&id), "{id}");
        assert!(!seen.contains(&id), "{id} given twice");
        seen.push(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_fit_to_log_is_echoed() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (_, key) = app.account_with_key().await;
    for given in [
        "a".to_owned(),
        "req-42_lb.east:7/8+9=".to_owned(),
        "x".repeat(64),
        uuid::Uuid::new_v4().to_string(),
    ] {
        let response = app
            .get("/auth/whoami", &key)
            .header("x-request-id", &given)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(request_id(&response), given);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_unfit_to_log_is_replaced() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let unfit: Vec<(&str, Vec<HeaderValue>)> = vec![
        (
            "too long",
            vec![HeaderValue::from_str(&"x".repeat(65)).unwrap()],
        ),
        ("empty", vec![HeaderValue::from_static("")]),
        ("a space", vec![HeaderValue::from_static("abc def")]),
        ("a tab", vec![HeaderValue::from_static("abc\tdef")]),
        (
            "bytes beyond ASCII",
            vec![HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()],
        ),
        (
            "two values",
            vec![
                HeaderValue::from_static("one"),
                HeaderValue::from_static("two"),
            ],
        ),
    ];
    for (what, values) in unfit {
        let mut request = app.client.get(app.url("/healthz"));
        for value in &values {
            request = request.header("x-request-id", value.clone());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{what}");
        let ids: Vec<_> = response.headers().get_all("x-request-id").iter().collect();
        assert_eq!(ids.len(), 1, "{what}: {ids:?}");
        let id = ids[0].to_str().unwrap();
        assert!(is_uuid_v4(id), "{what}: {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_the_framework_carry_the_request_id() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (_, key) = app.account_with_key().await;
    let too_large = json!({ "permissions": ["deals.read"], "pad": "x".repeat(70_000) });
    let cases: Vec<(u16, Method, &str, Option<Value>)> = vec![
        (404, Method::GET, "/no/such/path?secret=1", None),
        (405, Method::DELETE, "/healthz", None),
        (405, Method::DELETE, "/auth/token", None),
        (401, Method::GET, "/auth/whoami", None),
        (413, Method::POST, "/auth", Some(too_large)),
    ];
    for (status, method, path, body) in cases {
        let given = format!("refusal-{status}-{}", uuid::Uuid::new_v4().simple());
        let credential = (status != 401).then_some(key.as_str());
        let mut request = app
            .request(method.clone(), path, credential)
            .header("x-request-id", &given);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(request_id(&response), given, "{method} {path}");
        let fresh = app
            .request(method.clone(), path, credential)
            .send()
            .await
            .unwrap();
        assert!(is_uuid_v4(&request_id(&fresh)), "{method} {path}");
    }
}

/// The `keyfob serve` process, killed when the test ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines of a child's output, read on a thread of their own.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_logged_on_stderr_in_its_requests_span() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let account = stdout(&keyfob(
        &db,
        &["accounts", "create", "--email", "owner@example.com"],
        Some(PASSWORD),
    ));
    let key = stdout(&keyfob(
        &db,
        &[
            "keys",
            "create",
            "--account",
            account.trim(),
            "--name",
            "logs",
        ],
        None,
    ))
    .trim()
    .to_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyfob"))
        .arg("--data-dir")
        .arg(db.dir.path())
        .arg("--database-url")
        .arg(&db.url)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-json"])
        .env_remove("KEYFOB_LOG")
        .env_remove("KEYFOB_MASTER_KEY")
        .env_remove("KEYFOB_MASTER_KEY_FILE")
        .env_remove("KEYFOB_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyfob serve runs");
    let out = lines_of(child.stdout.take().unwrap());
    let err = lines_of(child.stderr.take().unwrap());
    let server = Server(child);

    let first = out
        .recv_timeout(Duration::from_secs(30))
        .expect("keyfob serve says where it listens");
    // With JSON logs, the start-up message is one JSON object too.
    let started: Value = serde_json::from_str(&first).unwrap_or_else(|_| panic!("{first}"));
    assert_eq!(started["message"], "Keyfob is listening", "{first}");
    let addr = started["listen"].as_str().unwrap().to_owned();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    let made: Value = client
        .post(format!("{base}/api/deals"))
        .bearer_auth(&key)
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["id"].as_str().unwrap();
    // A row storage cannot read back: reading it fails inside the handler.
    raw_execute(&db.url, "UPDATE records SET doc = 'not json'")
        .await
        .unwrap();

    let given = format!("telemetry-{}", uuid::Uuid::new_v4().simple());
    let response = client
        .get(format!("{base}/api/deals/{id}?secret=hunter2"))
        .bearer_auth(&key)
        .header("x-request-id", &given)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(request_id(&response), given);

    let mut logged = Vec::new();
    let line = loop {
        let line = err
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                panic!(
                    "no log line for {given}; stderr had:\n{}",
                    logged.join("\n")
                )
            });
        logged.push(line.clone());
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            panic!("a log line that is not JSON: {line}");
        };
        if entry["span"]["request_id"] == given.as_str() && entry["level"] == "ERROR" {
            break entry;
        }
    };
    assert_eq!(line["span"]["name"], "request", "{line}");
    assert_eq!(line["span"]["method"], "GET", "{line}");
    assert_eq!(line["span"]["route"], "/api/{resource}/{id}", "{line}");
    assert_eq!(line["fields"]["message"], "internal error", "{line}");
    drop(server);

    // The rest of stderr: neither the query nor the credential was logged.
    logged.extend(err.iter());
    for line in &logged {
        assert!(!line.contains("hunter2"), "the query was logged: {line}");
        assert!(!line.contains(&key), "the API key was logged: {line}");
    }
    // Stdout holds the command's own output, and no log line.
    let rest: Vec<String> = out.iter().collect();
    assert!(rest.is_empty(), "{first}\n{}", rest.join("\n"));
    assert_eq!(started["dashboard"], format!("{base}/dashboard"));
}
