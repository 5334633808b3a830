//! Slow, idle and numerous connections: header, body and idle timeouts, the connection caps, and
//! accepting again after running out of file descriptors. Clients here speak raw HTTP/1.1 over
//! TCP, as an attacker would.
//!
//! Timings are asserted loosely (a bound several times the configured timeout) so that a loaded
//! machine does not make them fail; what must never happen is a connection that stays open.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyfob::config::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;

/// How long a test waits for something that should happen within about a second.
const PATIENCE: Duration = Duration::from_secs(10);

async fn spawn_configured(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let mut config = test_config(&db);
    adjust(&mut config);
    spawn_with(config, Arc::new(db)).await
}

fn server_addr(app: &TestApp) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// A connection from a chosen loopback address (Linux accepts any 127/8 source).
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Reads until the server closes the connection (or resets it); `None` if it is still open
/// after `limit`. Returns how long that took and what was received.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some((start.elapsed(), received))
}

/// Reads one response with a `Content-Length` body; returns its head and body.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&data, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("a Content-Length");
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed in the middle of a response");
                data.extend_from_slice(&buf[..n]);
            }
            let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned();
            return (head, body);
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a response");
        data.extend_from_slice(&buf[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: keyfob\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_headers_never_end_is_cut_off() {
    let app = spawn_configured(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let server = server_addr(&app);

    // Half a header line, then nothing.
    let mut half = TcpStream::connect(server).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: keyf")
        .await
        .unwrap();
    // Connected, and never a byte.
    let mut silent = TcpStream::connect(server).await.unwrap();
    // A header trickled a byte at a time: each byte arrives well within the timeout, the whole
    // never does.
    let mut trickle = TcpStream::connect(server).await.unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let (mut trickle_read, mut trickle_write) = trickle.split();
    let trickling = async {
        for _ in 0..100 {
            if trickle_write.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let trickle_closed = async {
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(PATIENCE, trickle_read.read(&mut buf)).await;
        (start.elapsed(), read)
    };
    let ((trickle_after, trickle_read_result), half_closed, silent_closed) = tokio::join!(
        async {
            tokio::select! {
                closed = trickle_closed => closed,
                () = trickling => panic!("the trickled header was never cut off"),
            }
        },
        closed_within(&mut half, PATIENCE),
        closed_within(&mut silent, PATIENCE),
    );

    let (after, received) = half_closed.expect("half a header line is cut off");
    assert!(received.is_empty(), "nothing is answered");
    assert!(
        after >= Duration::from_millis(500),
        "not before the timeout: {after:?}"
    );
    silent_closed.expect("a silent connection is cut off");
    assert!(
        matches!(trickle_read_result, Ok(Ok(0)) | Ok(Err(_))),
        "a trickled header is cut off: {trickle_read_result:?}"
    );
    assert!(trickle_after < PATIENCE);

    // The server itself is fine.
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_refused() {
    let app = spawn_configured(|_| {}).await;
    let mut stream = TcpStream::connect(server_addr(&app)).await.unwrap();
    // 100 KB of headers: each connection could otherwise make the server buffer that much.
    let filler = "a".repeat(10_000);
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: keyfob\r\n");
    for i in 0..10 {
        head.push_str(&format!("X-Filler-{i}: {filler}\r\n"));
    }
    head.push_str("\r\n");
    // The server may stop reading (and close) before the whole head is written.
    let _ = stream.write_all(head.as_bytes()).await;
    let (_, received) = closed_within(&mut stream, PATIENCE)
        .await
        .expect("the connection is closed");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_ends_is_answered_408_and_the_connection_closed() {
    let app = spawn_configured(|c| {
        c.header_timeout = Duration::from_secs(5);
        c.body_timeout = Duration::from_secs(1);
    })
    .await;
    let (_, key) = app.account_with_key().await;
    let server = server_addr(&app);

    // A JSON endpoint: `Content-Length: 1000`, 10 bytes, then a byte now and then (each well
    // within the timeout, so only a deadline on the whole body ends it).
    let mut json = TcpStream::connect(server).await.unwrap();
    json.write_all(
        format!(
            "POST /auth HTTP/1.1\r\nHost: keyfob\r\nAuthorization: Bearer {key}\r\n\
             X-Request-Id: trickled-body\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"permissi"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (mut json_read, mut json_write) = json.split();
    let trickling = async {
        for _ in 0..100 {
            if json_write.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let json_answer = async {
        let mut received = Vec::new();
        tokio::time::timeout(PATIENCE, json_read.read_to_end(&mut received))
            .await
            .expect("the connection is ended")
            .ok();
        received
    };
    // An OAuth endpoint: `Content-Length: 1000`, 10 bytes, then nothing.
    let mut oauth = TcpStream::connect(server).await.unwrap();
    oauth
        .write_all(
            b"POST /auth/token HTTP/1.1\r\nHost: keyfob\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n\
              grant_type",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let (json_received, oauth_closed) = tokio::join!(
        async {
            tokio::select! {
                received = json_answer => received,
                () = trickling => panic!("the trickled body was never cut off"),
            }
        },
        closed_within(&mut oauth, PATIENCE),
    );
    assert!(started.elapsed() < PATIENCE);

    for (received, shape) in [
        (json_received, "api"),
        (oauth_closed.expect("the connection is ended").1, "oauth"),
    ] {
        let text = String::from_utf8_lossy(&received).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("an answer: {text}");
        assert!(head.starts_with("HTTP/1.1 408"), "{shape}: {head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let body: Value = serde_json::from_str(body).expect("a JSON body");
        // Like every answer, it carries the request's id: the client's, or one made for it.
        let id = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("x-request-id: ")
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("{shape}: no request id: {head}"));
        match shape {
            "api" => {
                assert_eq!(id, "trickled-body");
                assert_eq!(body["error"], "request_timeout");
                assert!(body["message"].as_str().unwrap().contains("body"));
            }
            _ => {
                assert!(uuid::Uuid::parse_str(&id).is_ok(), "a made id: {id}");
                assert_eq!(body["error"], "invalid_request");
                assert!(body["error_description"].as_str().unwrap().contains("body"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed() {
    let app = spawn_configured(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(4);
    })
    .await;
    let mut stream = TcpStream::connect(server_addr(&app)).await.unwrap();
    stream.write_all(HEALTHZ).await.unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Idle for longer than the header timeout but within the idle timeout: the connection is
    // still there for the next request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(HEALTHZ).await.unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let (after, received) = closed_within(&mut stream, PATIENCE)
        .await
        .expect("an idle connection is closed");
    assert!(received.is_empty());
    assert!(
        after >= Duration::from_secs(1),
        "not before the timeout: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_many_sockets_does_not_starve_others() {
    const PER_IP: usize = 8;
    const ATTACKER_SOCKETS: usize = 40;
    let app = spawn_configured(|c| {
        c.max_connections = Some(16);
        c.max_connections_per_ip = PER_IP;
        c.header_timeout = Duration::from_secs(60);
    })
    .await;
    let server = server_addr(&app);

    let mut attacker = Vec::new();
    for _ in 0..ATTACKER_SOCKETS {
        attacker.push(connect_from("127.0.0.2", server).await);
    }
    // The server closes each socket past the address's share at once and keeps the others.
    let (closed, attacker) = split_closed(attacker, Duration::from_secs(5)).await;
    assert_eq!(
        closed,
        ATTACKER_SOCKETS - PER_IP,
        "sockets closed by the server"
    );

    // Another address is served at once.
    let started = Instant::now();
    let response = app
        .client
        .get(app.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/healthz answers while an address holds its share of sockets");
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));

    // The same holds for an address that is not loopback's default.
    let mut other = connect_from("127.0.0.3", server).await;
    other.write_all(HEALTHZ).await.unwrap();
    let (head, _) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut other))
        .await
        .expect("answered");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(attacker);
}

/// Waits on all `streams` together: how many the server closed within `limit`, and the others.
async fn split_closed(streams: Vec<TcpStream>, limit: Duration) -> (usize, Vec<TcpStream>) {
    let mut set = tokio::task::JoinSet::new();
    for mut stream in streams {
        set.spawn(async move {
            let closed = closed_within(&mut stream, limit).await.is_some();
            (closed, stream)
        });
    }
    let mut closed = 0;
    let mut open = Vec::new();
    while let Some(done) = set.join_next().await {
        match done.unwrap() {
            (true, _) => closed += 1,
            (false, stream) => open.push(stream),
        }
    }
    (closed, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds() {
    const CAP: usize = 4;
    let app = spawn_configured(|c| {
        c.max_connections = Some(CAP);
        c.header_timeout = Duration::from_secs(60);
        c.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let server = server_addr(&app);

    // CAP kept-alive connections, each served once.
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(server).await.unwrap();
        stream.write_all(HEALTHZ).await.unwrap();
        read_response(&mut stream).await;
        held.push(stream);
    }
    // One more connects (the kernel queues it) but is not served while all slots are taken.
    let mut waiting = TcpStream::connect(server).await.unwrap();
    waiting.write_all(HEALTHZ).await.unwrap();
    let early = tokio::time::timeout(Duration::from_secs(1), read_response(&mut waiting)).await;
    assert!(early.is_err(), "served beyond the cap");
    // A slot frees: it is served.
    drop(held.pop());
    let (head, _) = tokio::time::timeout(PATIENCE, read_response(&mut waiting))
        .await
        .expect("served once a slot is free");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_finishes_requests_in_hand_and_closes_the_rest() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let mut config = test_config(&db);
    config.header_timeout = Duration::from_secs(60);
    config.idle_timeout = Duration::from_secs(60);
    config.body_timeout = Duration::from_secs(60);
    let app = keyfob::Application::build(config).await.unwrap();
    let server = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    // Kept alive after one answer.
    let mut idle = TcpStream::connect(server).await.unwrap();
    idle.write_all(HEALTHZ).await.unwrap();
    read_response(&mut idle).await;
    // Halfway through its headers.
    let mut half = TcpStream::connect(server).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    // In the hands of a handler, which waits for the rest of the body.
    let body = b"grant_type=refresh_token&refresh_token=kfr_nothing";
    let mut busy = TcpStream::connect(server).await.unwrap();
    busy.write_all(
        format!(
            "POST /auth/token HTTP/1.1\r\nHost: keyfob\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    busy.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.send(()).unwrap();
    closed_within(&mut idle, PATIENCE)
        .await
        .expect("an idle connection is closed at once");
    closed_within(&mut half, PATIENCE)
        .await
        .expect("an unfinished head is not waited for");
    // The request in hand still gets its answer, and then its connection is closed.
    busy.write_all(&body[10..]).await.unwrap();
    let (head, body) = read_response(&mut busy).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // The handler read the whole body: it names the first missing field.
    assert!(body.contains("client_id"), "{body}");
    closed_within(&mut busy, PATIENCE)
        .await
        .expect("closed after its answer");
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

/// The built binary, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_resumes_after_running_out_of_descriptors() {
    use std::io::BufRead;

    let db = fresh_db(Backend::Sqlite).await.unwrap();
    // Caps above the descriptor limit, so that the process does run out of descriptors.
    let config = db.dir.path().join("keyfob.toml");
    std::fs::write(
        &config,
        "header_timeout_secs = 1\nmax_connections = 1000\nmax_connections_per_ip = 1000\n",
    )
    .unwrap();
    let child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_keyfob"))
        .arg("--data-dir")
        .arg(db.dir.path())
        .arg("--database-url")
        .arg(&db.url)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("KEYFOB_MASTER_KEY")
        .env_remove("KEYFOB_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keyfob runs");
    let mut server = Server(child);
    let mut stdout = std::io::BufReader::new(server.0.stdout.take().unwrap());
    // The line that says where it listens (log lines may come first).
    let mut first_line = String::new();
    while !first_line.contains("listening on") {
        first_line.clear();
        assert!(
            stdout.read_line(&mut first_line).unwrap() > 0,
            "the server said where it listens"
        );
    }
    // Keep reading, so that the server's later lines do not meet a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr: SocketAddr = first_line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("an address in {first_line:?}"));

    // More silent connections than the process has descriptors.
    let mut silent = Vec::new();
    for _ in 0..150 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // The header timeout closes the silent connections, descriptors free up, and the server
    // answers again.
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("/healthz answers once descriptors free up");
    assert_eq!(response.status(), 200);

    // Each failed accept is counted: a handful per second of trouble, not one per spin.
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keyfob_http_accept_errors_total "))
        .expect("accept errors were counted")
        .trim()
        .parse()
        .unwrap();
    assert!(
        (1.0..200.0).contains(&errors),
        "{errors} failed accepts: the loop retried without pausing"
    );
    drop(silent);
    drop(server);
}
