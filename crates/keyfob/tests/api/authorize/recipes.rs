//! The recipes of docs/INTEGRATING.md, run against the real programs they name.
//!
//! Apache httpd with mod_auth_openidc (Debian's `apache2` and `libapache2-mod-auth-openidc`) in
//! front of a service: the configuration block of the recipe, taken from the document itself and
//! filled in with this test's addresses, is served by a real `apache2` in front of a small service
//! that echoes what it receives. A browser without JavaScript (cookies kept, redirects followed by
//! hand) goes to the service, is sent to Keyfob, logs in and consents, and comes back through
//! Apache, which exchanges the code and passes the user's claims on.
//!
//! Without the programs installed the test is skipped with a note, unless
//! `KEYFOB_REQUIRE_RECIPES` is set (as CI does), when it fails naming the packages.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use keyfob::config::SigningAlg;

use super::*;

const APACHE_PACKAGES: &str = "apache2 libapache2-mod-auth-openidc";
const MODULES: &str = "/usr/lib/apache2/modules";

/// The `apache2` program and the module, or `None` (with a note) when the test is to be skipped.
fn apache() -> Option<PathBuf> {
    let binary = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("apache2"))
        .find(|candidate| candidate.is_file());
    let module = Path::new(MODULES).join("mod_auth_openidc.so");
    let missing = match &binary {
        None => Some("the apache2 program".to_owned()),
        Some(_) if !module.is_file() => Some(module.display().to_string()),
        Some(_) => None,
    };
    let Some(missing) = missing else {
        return binary;
    };
    let required = std::env::var("KEYFOB_REQUIRE_RECIPES").is_ok_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!(
            "{missing} is not installed and KEYFOB_REQUIRE_RECIPES is set: \
             apt-get install {APACHE_PACKAGES}"
        );
    }
    eprintln!("skipped: {missing} is not installed (apt-get install {APACHE_PACKAGES})");
    None
}

/// The configuration block of the Apache recipe in docs/INTEGRATING.md.
fn recipe_block() -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/INTEGRATING.md"),
    )
    .expect("docs/INTEGRATING.md");
    let section = doc
        .split("\n## Apache httpd with mod_auth_openidc in front of a service\n")
        .nth(1)
        .expect("the Apache section of INTEGRATING.md");
    let start = section.find("```apache\n").expect("an apache block") + "```apache\n".len();
    let end = start + section[start..].find("```").expect("the block's end");
    section[start..end].to_owned()
}

/// The service behind Apache: answers every request with its path and headers (lower-case names,
/// values joined by `, `), and counts the requests it was reached by.
async fn echo_service() -> (SocketAddr, Arc<AtomicUsize>) {
    async fn echo(
        State(hits): State<Arc<AtomicUsize>>,
        uri: Uri,
        headers: HeaderMap,
    ) -> Json<Value> {
        hits.fetch_add(1, Ordering::SeqCst);
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in &headers {
            seen.entry(name.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let headers: serde_json::Map<String, Value> = seen
            .into_iter()
            .map(|(k, v)| (k, Value::String(v.join(", "))))
            .collect();
        Json(serde_json::json!({ "path": uri.path(), "headers": headers }))
    }
    let hits = Arc::new(AtomicUsize::new(0));
    let router = axum::Router::new().fallback(echo).with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, hits)
}

/// A port nothing listens on now, for Apache's `Listen`.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `apache2` with its own server root in a temp dir; stopped when dropped.
struct Apache {
    binary: PathBuf,
    conf: PathBuf,
    dir: tempfile::TempDir,
}

impl Apache {
    /// Writes the configuration (the process's own files and modules, then `site`) and starts
    /// the server, waiting until it answers on `port`.
    async fn start(binary: PathBuf, port: u16, site: &str) -> Apache {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let modules = [
            "mpm_event",
            "authn_core",
            "authz_core",
            "authz_user",
            "headers",
            "proxy",
            "proxy_http",
            "auth_openidc",
        ]
        .iter()
        .map(|name| format!("LoadModule {name}_module {MODULES}/mod_{name}.so\n"))
        .collect::<String>();
        // Started as root (as in CI), Apache serves as `User`; otherwise it stays who it is.
        let conf_text = format!(
            "ServerRoot {root}\n\
             ServerName 127.0.0.1\n\
             Listen 127.0.0.1:{port}\n\
             PidFile {root}/httpd.pid\n\
             DefaultRuntimeDir {root}\n\
             ErrorLog {root}/error.log\n\
             LogLevel warn\n\
             User nobody\n\
             Group nogroup\n\
             {modules}\n\
             {site}"
        );
        let conf = dir.path().join("httpd.conf");
        std::fs::write(&conf, conf_text).unwrap();
        let apache = Apache { binary, conf, dir };
        let out = Command::new(&apache.binary)
            .arg("-f")
            .arg(&apache.conf)
            .args(["-k", "start"])
            .output()
            .expect("apache2 runs");
        assert!(
            out.status.success(),
            "apache2 -k start: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            apache.error_log()
        );
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return apache;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "apache2 never answered on port {port}:\n{}",
            apache.error_log()
        );
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = Command::new(&self.binary)
            .arg("-f")
            .arg(&self.conf)
            .args(["-k", "stop"])
            .output();
        // Let it go before its files do.
        let pid = self.dir.path().join("httpd.pid");
        for _ in 0..50 {
            if !pid.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn apache_recipe(app: TestApp) {
    let Some(binary) = apache() else {
        return;
    };
    let port = free_port();
    let front = format!("http://127.0.0.1:{port}");
    let redirect_uri = format!("{front}/protected/redirect_uri");
    let (service, hits) = echo_service().await;

    // The application, as `keyfob apps create` registers it.
    let account = app
        .create_account(&format!("{}@example.com", uuid::Uuid::new_v4().simple()))
        .await;
    let created = services::apps::create_app(
        app.state.store.as_ref(),
        &account,
        NewApp {
            name: "Portal behind Apache".into(),
            redirect_uris: vec![redirect_uri.clone()],
            origins: vec![],
            public: false,
            max_permissions: "deals.read".into(),
            refresh_idle_secs: None,
            refresh_max_age_secs: None,
            allow_fragment: false,
            post_logout_redirect_uris: vec![],
        },
    )
    .await
    .expect("app registered");
    let client_id = created.app.client_id.to_string();

    // The recipe's block, with this test's values.
    let site = recipe_block()
        .replace("https://keyfob.example.com", app.state.tokens.issuer())
        .replace("https://portal.example.com", &front)
        .replace("http://127.0.0.1:8080", &format!("http://{service}"))
        .replace("<client_id>", client_id.as_str())
        .replace("<client_secret>", created.client_secret.as_deref().unwrap())
        .replace("<passphrase>", &uuid::Uuid::new_v4().simple().to_string());
    for placeholder in [
        "example.com",
        "<client_id>",
        "<client_secret>",
        "<passphrase>",
    ] {
        assert!(
            !site.contains(placeholder),
            "{placeholder} left in:\n{site}"
        );
    }
    let apache = Apache::start(binary, port, &site).await;

    // Without a session Apache sends the browser to Keyfob, and the service is not reached, even
    // with claims forged in headers.
    let stranger = Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    let response = stranger
        .get(format!("{front}/protected/"))
        .header("OIDC_CLAIM_sub", "usr_forged")
        .header("OIDC_CLAIM_email", "forged@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "{}",
        apache.error_log()
    );
    assert!(location(&response).starts_with(&format!("{}/auth?", app.base)));
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the service was reached");

    // A user, logged in at Keyfob.
    let (browser, email) = Browser::user(&app).await;
    let user_id = app
        .state
        .store
        .find_user_by_email(&email)
        .await
        .unwrap()
        .unwrap()
        .id;

    // To the service: Apache sends the browser to Keyfob's authorization endpoint.
    let response = browser
        .http
        .get(format!("{front}/protected/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "{}",
        apache.error_log()
    );
    let to_keyfob = Url::parse(location(&response)).unwrap();
    let pairs = query_of(&to_keyfob);
    assert_eq!(param(&pairs, "client_id"), Some(client_id.as_str()));
    assert_eq!(param(&pairs, "redirect_uri"), Some(redirect_uri.as_str()));
    assert_eq!(param(&pairs, "code_challenge_method"), Some("S256"));
    assert_eq!(param(&pairs, "scope"), Some("openid email deals.read"));

    // Keyfob's consent page, allowed.
    let consent = browser.consent_page(to_keyfob.query().unwrap()).await;
    assert!(consent.contains("Know who you are"));
    let response = browser.answer(&consent, &["deals.read"], "allow").await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let back = location(&response).to_owned();
    assert!(back.starts_with(&format!("{redirect_uri}?")), "{back}");

    // Back at Apache: it exchanges the code, checks the id_token and sends the browser on to the
    // page it first asked for.
    let response = browser.http.get(&back).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "{}",
        apache.error_log()
    );
    let again = location(&response).to_owned();
    assert_eq!(
        again,
        format!("{front}/protected/"),
        "{}",
        apache.error_log()
    );

    // The service, reached at last, with the user's claims; forged ones are replaced.
    let response = browser
        .http
        .get(&again)
        .header("OIDC_CLAIM_sub", "usr_forged")
        .header("OIDC_CLAIM_email", "forged@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", apache.error_log());
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["path"], "/");
    let headers = &echo["headers"];
    assert_eq!(headers["oidc_claim_sub"], user_id.as_str());
    assert_eq!(headers["oidc_claim_email"], email.as_str());
    assert_eq!(headers["oidc_claim_email_verified"], "0");
    assert_eq!(headers["oidc_claim_iss"], app.state.tokens.issuer());
    assert_eq!(headers["oidc_claim_aud"], client_id.as_str());
    // The session cookie stays with Apache.
    let cookies = headers["cookie"].as_str().unwrap_or_default();
    assert!(!cookies.contains("mod_auth_openidc_session"), "{cookies}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // The access token passed on is the user's, with what they granted.
    let token = headers["oidc_access_token"]
        .as_str()
        .expect("an access token");
    let response = app.get("/auth/whoami", token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let whoami: Value = response.json().await.unwrap();
    assert_eq!(whoami["kind"], "jwt");
    assert_eq!(whoami["subject"], user_id.as_str());
    assert_eq!(whoami["permissions"], serde_json::json!(["deals.read"]));
}

/// Keyfob as the recipe runs it: RS256, which the module checks.
async fn keyfob(backend: Backend) -> Option<TestApp> {
    let db = fresh_db(backend).await?;
    let mut config = test_config(&db);
    config.signing_alg = SigningAlg::Rs256;
    Some(spawn_with(config, Arc::new(db)).await)
}

mod apache_with_mod_auth_openidc_signs_a_user_in_for_the_service_behind_it {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        apache_recipe(keyfob(Backend::Sqlite).await.unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        match keyfob(Backend::Postgres).await {
            Some(app) => apache_recipe(app).await,
            None => eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set"),
        }
    }
}
