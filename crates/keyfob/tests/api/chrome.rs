//! Headless Chromium driven through chromedriver (WebDriver), for the tests that run in a real
//! browser.
//!
//! [`Chrome::launch`] answers `None`, with a note, when chromedriver or Chromium is missing, unless
//! `KEYFOB_REQUIRE_BROWSER` is set (set it in CI, so that these tests cannot silently stop running
//! there). `KEYFOB_CHROMEDRIVER` and `KEYFOB_CHROMIUM` point at other binaries.

use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;
use tempfile::TempDir;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// What a flow in the browser ends with.
pub type Outcome<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

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

/// Types each value into the form field with that id, then clicks the button `submit` (a CSS
/// selector) — a person filling in a form.
pub async fn fill_in_and_submit(
    browser: &Client,
    fields: &[(&str, &str)],
    submit: &str,
) -> Result<(), fantoccini::error::CmdError> {
    for (id, value) in fields {
        browser
            .find(fantoccini::Locator::Id(id))
            .await?
            .send_keys(value)
            .await?;
    }
    browser
        .find(fantoccini::Locator::Css(submit))
        .await?
        .click()
        .await
}

pub fn free_port() -> u16 {
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

/// Chromium with a fresh profile, and the chromedriver that drives it.
pub struct Chrome {
    chromium: String,
    driver: ChromeDriver,
}

impl Chrome {
    /// Starts chromedriver, or answers `None` when the test is to be skipped.
    pub async fn launch() -> Option<Chrome> {
        let chromedriver = binary("KEYFOB_CHROMEDRIVER", CHROMEDRIVER)?;
        let chromium = binary("KEYFOB_CHROMIUM", CHROMIUM)?;
        let driver = ChromeDriver::start(&chromedriver).await;
        Some(Chrome { chromium, driver })
    }

    /// The address of chromedriver, for the WebDriver commands fantoccini has no call for (the
    /// virtual authenticators of WebAuthn).
    pub fn driver_url(&self) -> &str {
        &self.driver.url
    }

    /// Runs `flow` in a new headless Chromium session with a fresh profile, then closes the
    /// browser and chromedriver, whether the flow succeeded, failed or panicked; a failure or
    /// panic is passed on. Answers what the flow answered.
    pub async fn run<T, F, Fut>(self, flow: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Outcome<T>> + Send + 'static,
    {
        let profile: TempDir = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.chromium,
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
            .connect(&self.driver.url)
            .await
            .expect("a Chromium session");

        // The flow runs in its own task so that the browser is closed even when an assertion
        // fails.
        let outcome = tokio::spawn(flow(browser.clone())).await;
        let _ = browser.close().await;
        drop(self.driver);
        drop(profile);
        match outcome {
            Ok(result) => result.unwrap(),
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
}
