//! Keyfob behind nginx, as `deploy/nginx/keyfob.conf` sets it up: Debian's nginx ends TLS and
//! balances two `keyfob serve` processes on one PostgreSQL database with one master key.
//!
//! The shipped file itself is served, with the values its header says to edit replaced by this
//! test's (ports, node addresses, a self-signed certificate made with `openssl`, the log
//! directory). nginx runs unprivileged on free ports as a child of the test (`daemon off`,
//! `master_process off`, its own prefix). Through it, from 127.0.0.3, an end user logs in and
//! consents, the application exchanges the code, refreshes and revokes; then the test checks that
//! both nodes answered, that the audit log holds the client's address and not the proxy's nor
//! one forged in `X-Forwarded-For`, and that every link Keyfob gave is HTTPS at nginx's address.
//!
//! PostgreSQL only: skipped with a note without `KEYFOB_TEST_POSTGRES_URL` (unless
//! `KEYFOB_REQUIRE_POSTGRES` is set). Without nginx or openssl it is skipped with a note, unless
//! `KEYFOB_REQUIRE_PROXY` is set (as CI does), when it fails naming the packages.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, HeaderMap, LOCATION, SET_COOKIE};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use keyfob::services::{self, apps::NewApp};
use keyfob_domain::oauth::s256;
use reqwest::Url;
use serde_json::Value;

use crate::authorize::{csrf_in, hidden, hidden_fields};
use crate::helpers::*;

const PACKAGES: &str = "nginx openssl";
const CALLBACK: &str = "https://client.example.com/cb";
/// Where the test's client connects from: not the proxy's address (127.0.0.1, which the nodes
/// trust), so that the address Keyfob records tells the two apart.
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// An address the client claims in its own `X-Forwarded-For`; it must never be believed.
const FORGED: &str = "203.0.113.66";

/// A program on `PATH` (or in /usr/sbin, where Debian puts nginx).
fn program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The `nginx` program, or `None` (with a note) when the test is to be skipped.
fn nginx_program() -> Option<PathBuf> {
    let nginx = program("nginx");
    let missing = match (&nginx, program("openssl")) {
        (None, _) => "the nginx program",
        (_, None) => "the openssl program",
        _ => return nginx,
    };
    let required = std::env::var("KEYFOB_REQUIRE_PROXY").is_ok_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!(
            "{missing} is not installed and KEYFOB_REQUIRE_PROXY is set: apt-get install {PACKAGES}"
        );
    }
    eprintln!("skipped: {missing} is not installed (apt-get install {PACKAGES})");
    None
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections at `addr`, for up to 30 seconds; `alive` says
/// whether the process meant to is still running (its log when not).
async fn wait_for(addr: SocketAddr, mut alive: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Err(log) = alive() {
            panic!("the process meant to listen on {addr} ended:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing answered on {addr} within 30 s");
}

/// A `keyfob serve` process, configured by environment variables as deploy/compose.yaml and
/// deploy/keyfob.env configure one; killed when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Node {
    async fn start(database_url: &str, master_key: &str, public_url: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("keyfob.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keyfob"))
            .arg("serve")
            .env_remove("KEYFOB_CONFIG")
            .env_remove("KEYFOB_MASTER_KEY_FILE")
            .env("KEYFOB_DATA_DIR", dir.path().join("data"))
            .env("KEYFOB_DATABASE_URL", database_url)
            .env("KEYFOB_MASTER_KEY", master_key)
            .env("KEYFOB_LISTEN", addr.to_string())
            .env("KEYFOB_PUBLIC_URL", public_url)
            .env("KEYFOB_TRUSTED_PROXIES", "127.0.0.1")
            .env("KEYFOB_RATE_LIMIT_NODES", "2")
            .env("KEYFOB_SYNC_INTERVAL_MS", "100")
            .env("KEYFOB_LOG", "keyfob=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("keyfob runs");
        let mut node = Node { child, addr, dir };
        let log = node.dir.path().join("keyfob.log");
        let child = &mut node.child;
        wait_for(addr, || match child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(std::fs::read_to_string(&log).unwrap_or_default()),
        })
        .await;
        node
    }

    /// Requests this node has answered so far (`keyfob_http_requests_total`), its own scrapes of
    /// `/metrics` left out.
    async fn requests_served(&self) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("keyfob_http_requests_total{"))
            .filter(|l| !l.contains("route=\"/metrics\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped configuration with this test's values, as its header lists them. Comments are
/// left out, so that what remains can be checked for values that were not replaced.
fn render_site(replacements: &[(&str, String)]) -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/keyfob.conf"),
    )
    .expect("deploy/nginx/keyfob.conf");
    let mut site: String = shipped
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        // The IPv6 twins of the listen lines: this machine may have no IPv6.
        .filter(|line| !line.trim_start().starts_with("listen [::]"))
        .map(|line| format!("{line}\n"))
        .collect();
    for (from, to) in replacements {
        assert!(
            site.contains(from),
            "deploy/nginx/keyfob.conf no longer contains `{from}`, a value its header says to edit"
        );
        site = site.replace(from, to);
    }
    for left in [
        "example.com",
        "10.0.0.",
        "/etc/ssl/",
        "/var/log/",
        "listen 80",
        "listen 443",
    ] {
        assert!(!site.contains(left), "`{left}` left in:\n{site}");
    }
    site
}

/// A running nginx with its own prefix directory; stopped when dropped.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Writes a main configuration that includes `site` in the http context, as Debian's
    /// nginx.conf includes conf.d/*.conf, and starts nginx, waiting until it answers on `ports`.
    async fn start(binary: &Path, dir: tempfile::TempDir, site: &str, ports: [u16; 2]) -> Nginx {
        let root = dir.path().display().to_string();
        std::fs::write(dir.path().join("keyfob.conf"), site).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let main = format!(
            "error_log {root}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             client_body_temp_path {root}/tmp/body;\n\
             proxy_temp_path {root}/tmp/proxy;\n\
             fastcgi_temp_path {root}/tmp/fastcgi;\n\
             uwsgi_temp_path {root}/tmp/uwsgi;\n\
             scgi_temp_path {root}/tmp/scgi;\n\
             include {root}/keyfob.conf;\n\
             }}\n"
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, main).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .arg("-g")
            .arg(format!(
                "daemon off; master_process off; pid {root}/nginx.pid;"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx runs");
        let mut nginx = Nginx { child, dir };
        for port in ports {
            let log = nginx.dir.path().join("error.log");
            let child = &mut nginx.child;
            wait_for(SocketAddr::from(([127, 0, 0, 1], port)), || {
                match child.try_wait() {
                    Ok(None) => Ok(()),
                    _ => Err(std::fs::read_to_string(&log).unwrap_or_default()),
                }
            })
            .await;
        }
        nginx
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for `localhost` (PEM files for nginx), and its DER for the client.
fn certificate(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let cert = dir.join("fullchain.pem");
    let key = dir.join("privkey.pem");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        // Its own trust anchor, and not a CA (which a client refuses as a server's certificate).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let der = dir.join("cert.der");
    let out = Command::new("openssl")
        .args(["x509", "-outform", "DER"])
        .arg("-in")
        .arg(&cert)
        .arg("-out")
        .arg(&der)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key, std::fs::read(der).unwrap())
}

/// An answer read whole.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .expect("a Location header")
            .to_str()
            .unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A browser (or an application's back end) talking HTTPS to nginx from [`CLIENT`], trusting the
/// test's certificate, keeping cookies. One connection per request; redirects are not followed.
struct Https {
    tls: tokio_rustls::TlsConnector,
    nginx: SocketAddr,
    authority: String,
    cookies: Mutex<BTreeMap<String, String>>,
}

impl Https {
    fn new(nginx: SocketAddr, certificate: Vec<u8>) -> Https {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(certificate))
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Https {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            nginx,
            authority: format!("localhost:{}", nginx.port()),
            cookies: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sends `method target` (origin form: a path and query) with `headers`, and `form` as an
    /// urlencoded body.
    async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        form: Option<&[(String, String)]>,
    ) -> Answer {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(IpAddr::V4(CLIENT), 0)).unwrap();
        let tcp = socket.connect(self.nginx).await.expect("nginx accepts");
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = self.tls.connect(name, tcp).await.expect("TLS with nginx");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header(HOST, &self.authority);
        let cookies = self
            .cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        if !cookies.is_empty() {
            request = request.header(COOKIE, cookies);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match form {
            Some(form) => {
                request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                serde_urlencoded::to_string(form).unwrap()
            }
            None => String::new(),
        };
        let response = sender
            .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for set in headers.get_all(SET_COOKIE) {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            let mut jar = self.cookies.lock().unwrap();
            if value.is_empty() || set.to_ascii_lowercase().contains("max-age=0") {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, target, headers, None).await
    }

    async fn post(&self, target: &str, headers: &[(&str, &str)], form: &[(&str, &str)]) -> Answer {
        let form: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.send(Method::POST, target, headers, Some(&form)).await
    }
}

/// The claims of a JWT (not verified).
fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// Every link a page or an answer gives: resolved against the URL it was fetched from, it is
/// HTTPS at nginx's address, and nothing names a node's own address.
struct Links<'a> {
    public: &'a str,
    nodes: [SocketAddr; 2],
}

impl Links<'_> {
    fn resolve(&self, link: &str) -> Url {
        let url = Url::parse(self.public).unwrap().join(link).unwrap();
        assert!(
            url.as_str().starts_with(&format!("{}/", self.public)),
            "a link outside {}: {link}",
            self.public
        );
        url
    }

    /// A redirect's target as a path and query to send nginx next.
    fn follow(&self, answer: &Answer) -> String {
        let url = self.resolve(answer.location());
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    fn check_page(&self, html: &str) {
        for node in self.nodes {
            assert!(!html.contains(&node.to_string()), "{node} in:\n{html}");
        }
        let mut forms = 0;
        for (at, _) in html.match_indices(" action=\"") {
            let start = at + " action=\"".len();
            let end = start + html[start..].find('"').unwrap();
            self.resolve(&html[start..end].replace("&amp;", "&"));
            forms += 1;
        }
        assert!(forms > 0, "a page with a form expected:\n{html}");
        for attribute in ["href=\"http://", "src=\"http://", "action=\"http://"] {
            assert!(!html.contains(attribute), "an http:// link in:\n{html}");
        }
    }
}

/// Polls the account's audit log through nginx until it holds an event with `action`.
async fn audit_events(https: &Https, key: &str, action: &str) -> Vec<Value> {
    let auth = format!("Bearer {key}");
    for _ in 0..100 {
        let answer = https
            .get(
                &format!("/api/audit?action={action}"),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let docs = answer.json()["docs"].as_array().unwrap().clone();
        if !docs.is_empty() {
            return docs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {action} event in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_in_front_of_two_nodes_on_one_database() {
    let Some(binary) = nginx_program() else {
        return;
    };
    let Some(db) = fresh_db(Backend::Postgres).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let (http_port, https_port) = (free_port(), free_port());
    let public = format!("https://localhost:{https_port}");
    // One master key for every node, as deploy/compose.yaml gives both theirs.
    let master_key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );

    // The database made and filled by an in-process server (never behind nginx): an account
    // with an API key, a confidential application and an end user.
    let mut config = test_config(&db);
    config.master_key_hex = Some(master_key.clone().into());
    config.public_url = Some(public.clone());
    let database_url = config.database_url.clone();
    let admin = spawn_with(config, Arc::new(db)).await;
    let account = admin
        .create_account(&format!("{}@example.com", uuid::Uuid::new_v4().simple()))
        .await;
    let (key_id, key) = admin
        .create_key_with(
            &account,
            &keyfob::services::keys::KeySpec::full_access("audit reader"),
        )
        .await;
    let app = services::apps::create_app(
        admin.state.store.as_ref(),
        &account,
        NewApp {
            name: "Portal".into(),
            redirect_uris: vec![CALLBACK.into()],
            post_logout_redirect_uris: vec![],
            origins: vec![],
            public: false,
            max_permissions: "deals.read".into(),
            refresh_idle_secs: None,
            refresh_max_age_secs: None,
            allow_fragment: false,
        },
    )
    .await
    .expect("app registered");
    let client_id = app.app.client_id.to_string();
    let secret = app.client_secret.clone().unwrap();
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    services::users::create_user(
        admin.state.store.as_ref(),
        &admin.state.passwords,
        &email,
        PASSWORD.into(),
    )
    .await
    .expect("user created");

    // Two nodes, and nginx in front of them with the shipped configuration.
    let a = Node::start(&database_url, &master_key, &public).await;
    let b = Node::start(&database_url, &master_key, &public).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_key, der) = certificate(dir.path());
    let site = render_site(&[
        ("https://keyfob.example.com", public.clone()),
        ("keyfob.example.com", "localhost".into()),
        ("10.0.0.11:8080", a.addr.to_string()),
        ("10.0.0.12:8080", b.addr.to_string()),
        ("/etc/ssl/keyfob/fullchain.pem", cert.display().to_string()),
        (
            "/etc/ssl/keyfob/privkey.pem",
            cert_key.display().to_string(),
        ),
        ("/var/log/nginx/", format!("{}/", dir.path().display())),
        ("listen 80;", format!("listen 127.0.0.1:{http_port};")),
        (
            "listen 443 ssl http2;",
            format!("listen 127.0.0.1:{https_port} ssl http2;"),
        ),
    ]);
    let nginx = Nginx::start(&binary, dir, &site, [http_port, https_port]).await;
    let https = Https::new(SocketAddr::from(([127, 0, 0, 1], https_port)), der);
    let links = Links {
        public: &public,
        nodes: [a.addr, b.addr],
    };
    let forged = [("x-forwarded-for", FORGED)];
    let served_before = [a.requests_served().await, b.requests_served().await];

    // Plain HTTP is sent to the same path at the public URL.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = plain
        .get(format!("http://127.0.0.1:{http_port}/auth/login?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 301, "{}", nginx.log("error.log"));
    assert_eq!(
        answer.headers()[LOCATION.as_str()],
        format!("{public}/auth/login?x=1").as_str()
    );

    // The discovery document names nginx's HTTPS address for everything; the nodes' metrics are
    // not served to the internet; HSTS is on; nginx's request id reaches the node and comes back.
    let discovery = https.get("/.well-known/openid-configuration", &[]).await;
    assert_eq!(discovery.status, 200, "{}", nginx.log("error.log"));
    assert!(discovery.headers.contains_key("strict-transport-security"));
    let request_id = discovery.headers["x-request-id"].to_str().unwrap();
    assert!(
        request_id.len() == 32 && request_id.bytes().all(|c| c.is_ascii_hexdigit()),
        "nginx's $request_id expected, got {request_id}"
    );
    let discovery = discovery.json();
    assert_eq!(discovery["issuer"], public.as_str());
    let mut endpoints = 0;
    for (name, value) in discovery.as_object().unwrap() {
        if let Some(url) = value.as_str()
            && (name.ends_with("_endpoint") || name.ends_with("_uri"))
        {
            links.resolve(url);
            assert!(url.starts_with("https://"), "{name}: {url}");
            endpoints += 1;
        }
    }
    assert!(endpoints >= 4, "{discovery}");
    let path_of = |name: &str| {
        Url::parse(discovery[name].as_str().unwrap())
            .unwrap()
            .path()
            .to_owned()
    };
    assert_eq!(https.get("/metrics", &[]).await.status, 404);

    // The user's browser: the authorization request, sent to the login page.
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let query = serde_urlencoded::to_string([
        ("client_id", client_id.as_str()),
        ("redirect_uri", CALLBACK),
        ("response_type", "code"),
        ("scope", "openid deals.read"),
        ("state", "st8"),
        ("code_challenge", &s256(&verifier)),
        ("code_challenge_method", "S256"),
    ])
    .unwrap();
    let authorize = format!("{}?{query}", path_of("authorization_endpoint"));
    let answer = https.get(&authorize, &forged).await;
    assert!(matches!(answer.status, 302 | 303), "{}", answer.body);
    let login_page = links.follow(&answer);
    let page = https.get(&login_page, &forged).await;
    assert_eq!(page.status, 200, "{}", page.body);
    links.check_page(&page.body);
    let csrf = csrf_in(&page.body);
    let request = hidden(&page.body, "request").unwrap_or_default();

    // A wrong password first, then the right one, each with a forged X-Forwarded-For.
    let fields = |password: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("email", email.clone()),
            ("password", password.to_owned()),
            ("request", request.clone()),
        ]
    };
    let form = fields("not the password");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let answer = https.post("/auth/login", &forged, &form).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let form = fields(PASSWORD);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let answer = https.post("/auth/login", &forged, &form).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let set_cookies: Vec<&str> = answer
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(!set_cookies.is_empty());
    for cookie in &set_cookies {
        assert!(cookie.contains("; Secure"), "not Secure: {cookie}");
    }

    // Consent, allowed: the code goes to the application with nginx's address as `iss`.
    let consent = https.get(&links.follow(&answer), &forged).await;
    assert_eq!(consent.status, 200, "{}", consent.body);
    links.check_page(&consent.body);
    let mut form = hidden_fields(&consent.body);
    form.push(("permission".into(), "deals.read".into()));
    form.push(("decision".into(), "allow".into()));
    let answer = https
        .send(Method::POST, "/auth/consent", &forged, Some(&form))
        .await;
    assert_eq!(answer.status, 302, "{}", answer.body);
    let back = Url::parse(answer.location()).unwrap();
    assert!(back.as_str().starts_with(CALLBACK), "{back}");
    let back: BTreeMap<String, String> = back.query_pairs().into_owned().collect();
    assert_eq!(back["state"], "st8");
    assert_eq!(back["iss"], public);

    // The application's back end exchanges the code at the token endpoint discovery named.
    let token_path = path_of("token_endpoint");
    let answer = https
        .post(
            &token_path,
            &[],
            &[
                ("grant_type", "authorization_code"),
                ("code", &back["code"]),
                ("redirect_uri", CALLBACK),
                ("code_verifier", &verifier),
                ("client_id", &client_id),
                ("client_secret", &secret),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let tokens = answer.json();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&access)["iss"], public.as_str());
    assert_eq!(
        claims(tokens["id_token"].as_str().unwrap())["iss"],
        public.as_str()
    );
    let whoami = |token: String| {
        let https = &https;
        async move {
            let auth = format!("Bearer {token}");
            https
                .get("/auth/whoami", &[("authorization", &auth)])
                .await
                .status
        }
    };
    for _ in 0..4 {
        assert_eq!(whoami(access.clone()).await, 200);
    }

    // A refresh: a new pair, the new access token accepted by both nodes.
    let answer = https
        .post(
            &token_path,
            &[],
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", &client_id),
                ("client_secret", &secret),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let tokens = answer.json();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        assert_eq!(whoami(access.clone()).await, 200);
    }

    // Revocation of the session: its access token is refused by both nodes within a second or
    // two (each reads the change feed), and the refresh token is dead.
    let answer = https
        .post(
            &path_of("revocation_endpoint"),
            &[],
            &[
                ("token", &refresh),
                ("client_id", &client_id),
                ("client_secret", &secret),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let start = Instant::now();
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the revoked session's access token is still accepted"
        );
        if whoami(access.clone()).await == 401 {
            refused_in_a_row += 1;
        } else {
            refused_in_a_row = 0;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let answer = https
        .post(
            &token_path,
            &[],
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", &client_id),
                ("client_secret", &secret),
            ],
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.json()["error"], "invalid_grant");

    // The audit log, read through nginx too, holds the client's own address for the login, the
    // failed attempt and the consent: never the proxy's, never the forged one.
    for action in ["user.login", "user.login_failed", "grant.given"] {
        for event in audit_events(&https, &key, action).await {
            assert_eq!(event["ip"], CLIENT.to_string(), "{action}: {event}");
        }
    }
    let auth = format!("Bearer {key}");
    let all = https
        .get("/api/audit?limit=100", &[("authorization", &auth)])
        .await;
    assert_eq!(all.status, 200, "{}", all.body);
    for event in all.json()["docs"].as_array().unwrap() {
        assert_ne!(event["ip"], FORGED, "{event}");
        assert_ne!(event["ip"], "127.0.0.1", "{event}");
    }

    // The API key was last used from the client's address too (the nodes write it every few
    // seconds).
    let start = Instant::now();
    loop {
        let row = admin
            .state
            .store
            .find_api_key(&key_id)
            .await
            .unwrap()
            .unwrap();
        if row.last_used_ip.as_deref() == Some("127.0.0.3") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the key was last used from {:?}",
            row.last_used_ip
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Both nodes answered part of it, as nginx's access log says too.
    let served_after = [a.requests_served().await, b.requests_served().await];
    for (node, (before, after)) in served_before.iter().zip(served_after).enumerate() {
        assert!(
            after >= before + 3.0,
            "node {node} answered {} requests",
            after - before
        );
    }
    let access_log = nginx.log("keyfob.access.log");
    for node in [a.addr, b.addr] {
        assert!(
            access_log.contains(&format!("upstream={node}")),
            "{node} not in:\n{access_log}"
        );
    }
    assert!(!access_log.contains(FORGED), "{access_log}");
    drop(admin);
}
