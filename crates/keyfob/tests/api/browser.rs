//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver). An
//! owner signs up, creates a key, reads it off the page and uses it; then revokes it and logs out.
//!
//! Skipped, with a note, when chromedriver or Chromium is missing, unless `KEYFOB_REQUIRE_BROWSER`
//! is set (set it in CI, so that the test cannot silently stop running there).
//! `KEYFOB_CHROMEDRIVER` and `KEYFOB_CHROMIUM` point at other binaries.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

type Outcome = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A chromedriver process on a free port, killed when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of a browser binary from `var` or its default, or `None` (with a note) when it is
/// missing and the browser test may be skipped.
fn binary(var: &str, default: &str) -> Option<String> {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    if Path::new(&path).exists() {
        return Some(path);
    }
    if std::env::var_os("KEYFOB_REQUIRE_BROWSER").is_some() {
        panic!("{path} is missing and KEYFOB_REQUIRE_BROWSER is set");
    }
    eprintln!("skipped: {path} is missing (set KEYFOB_REQUIRE_BROWSER to make this a failure)");
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl ChromeDriver {
    async fn start(binary: &str) -> ChromeDriver {
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_signs_up_and_uses_a_key_in_a_real_browser() {
    let Some(chromedriver) = binary("KEYFOB_CHROMEDRIVER", CHROMEDRIVER) else {
        return;
    };
    let Some(chromium) = binary("KEYFOB_CHROMIUM", CHROMIUM) else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let driver = ChromeDriver::start(&chromedriver).await;
    let profile = tempfile::tempdir().unwrap();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let browser = ClientBuilder::rustls()
        .unwrap()
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");

    // The flow runs in its own task so that the browser is closed even when an assertion fails.
    let outcome = tokio::spawn(sign_up_and_use_a_key(browser.clone(), app.base.clone())).await;
    let _ = browser.close().await;
    drop(driver);
    match outcome {
        Ok(result) => result.unwrap(),
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

async fn sign_up_and_use_a_key(browser: Client, base: String) -> Outcome {
    let http = reqwest::Client::new();
    let whoami = |key: String| {
        http.get(format!("{base}/auth/whoami"))
            .bearer_auth(key)
            .send()
    };
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());

    browser.goto(&format!("{base}/dashboard/signup")).await?;
    assert_eq!(browser.title().await?, "Sign up · Keyfob");
    browser
        .find(Locator::Id("email"))
        .await?
        .send_keys(&email)
        .await?;
    browser
        .find(Locator::Id("password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    browser
        .find(Locator::Id("confirm"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    browser
        .find(Locator::Css(
            "form[action='/dashboard/signup'] button[type=submit]",
        ))
        .await?
        .click()
        .await?;

    // Signed in, on the keys page.
    let name = browser.wait().for_element(Locator::Id("name")).await?;
    assert_eq!(browser.current_url().await?.path(), "/dashboard/keys");
    assert!(browser.source().await?.contains(&email));
    name.send_keys("from the browser").await?;
    browser
        .find(Locator::Css(
            "form[action='/dashboard/keys'] button[type=submit]",
        ))
        .await?
        .click()
        .await?;

    let shown = browser.wait().for_element(Locator::Id("new-key")).await?;
    let key = shown.text().await?.trim().to_owned();
    assert!(key.starts_with("kf_"), "{key}");
    // The stylesheet loaded under the page's Content-Security-Policy.
    assert!(shown.css_value("font-family").await?.contains("monospace"));

    let response = whoami(key.clone()).await?;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await?;
    assert_eq!(body["kind"], "api_key");

    // Back on the list the key is not shown again; revoking it there refuses it.
    browser
        .find(Locator::LinkText("Back to the API keys"))
        .await?
        .click()
        .await?;
    browser.wait().for_element(Locator::Id("name")).await?;
    let source = browser.source().await?;
    assert!(source.contains("from the browser"));
    assert!(!source.contains(&key));
    browser
        .find(Locator::Css("button.danger"))
        .await?
        .click()
        .await?;
    let notice = browser.wait().for_element(Locator::Css(".notice")).await?;
    assert!(notice.text().await?.contains("revoked"));
    assert_eq!(whoami(key).await?.status(), 401);

    // Logging out ends the session: the keys page sends the browser to the login page.
    browser
        .find(Locator::Css("form[action='/dashboard/logout'] button"))
        .await?
        .click()
        .await?;
    browser
        .wait()
        .for_element(Locator::Css("form[action='/dashboard/login']"))
        .await?;
    browser.goto(&format!("{base}/dashboard/keys")).await?;
    browser
        .wait()
        .for_element(Locator::Css("form[action='/dashboard/login']"))
        .await?;
    assert_eq!(browser.current_url().await?.path(), "/dashboard/login");
    Ok(())
}
