//! Every page, in a real browser (headless Chromium through chromedriver), with an account full of
//! data: its API keys, tokens, applications (one with a long name and long redirect URIs), users,
//! grants, records and audit events. Each page is shown 390 and 1280 pixels wide, and at each width:
//!
//! - the page must not scroll sideways (`scrollWidth <= innerWidth`, and the layout viewport no
//!   wider than the screen: on a phone a page that does not fit widens it and is zoomed out); a
//!   failure names the elements that stick out, and their widths;
//! - a PNG screenshot is written to `$KEYFOB_SCREENSHOT_DIR` (by default `screenshots/` under the
//!   build's target directory), for a person to look at;
//! - axe-core, injected into the page, must find no accessibility violation; a failure lists each
//!   rule, the elements it found and its help text.
//!
//! The pages visited are checked against the table of routes (`routes::PAGE_ROUTES`): a `GET` page
//! added there and not visited here fails the test.
//!
//! axe-core comes from npm (`crates/keyfob/tests/browser-tools`, installed by `make test`); without
//! it the accessibility check is skipped with a note, unless `KEYFOB_REQUIRE_BROWSER` is set. The
//! whole test is skipped, with a note, when Chromium or chromedriver is missing (see `chrome`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use base64::Engine;
use fantoccini::{Client, Locator};
use keyfob::services::apps::NewApp;
use serde_json::{Value, json};

use crate::chrome::{Chrome, Outcome, fill_in_and_submit};
use crate::helpers::*;
use crate::routes::{CALLBACK, Fixture, PAGE_ROUTES, Who};

/// The widths every page is checked at: a phone's and a laptop's.
const WIDTHS: [u32; 2] = [390, 1280];
const HEIGHT: u32 = 900;

/// One page to visit: the route it stands for, and the address that shows it.
#[derive(Clone)]
struct Visit {
    route: &'static str,
    path: String,
    who: Who,
}

fn visit(route: &'static str, path: impl Into<String>, who: Who) -> Visit {
    Visit {
        route,
        path: path.into(),
        who,
    }
}

/// The text of axe-core's script, or `None` (with a note) when it is not installed and may be
/// skipped.
fn axe_source() -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser-tools/node_modules/axe-core/axe.min.js");
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(_) if std::env::var_os("KEYFOB_REQUIRE_BROWSER").is_some() => panic!(
            "{} is missing and KEYFOB_REQUIRE_BROWSER is set: run \
             `npm ci` in crates/keyfob/tests/browser-tools (make browser-tools)",
            path.display()
        ),
        Err(_) => {
            eprintln!(
                "accessibility checks skipped: {} is missing (make browser-tools)",
                path.display()
            );
            None
        }
    }
}

/// Where the screenshots go.
fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEYFOB_SCREENSHOT_DIR") {
        return dir.into();
    }
    let target = option_env!("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_the_screen_and_passes_axe() {
    let Some(chrome) = Chrome::launch().await else {
        return;
    };
    let axe = axe_source();
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let f = Fixture::new(&app).await;

    // More than the fixture holds: an application with a long name and long addresses, a second
    // key, sensitive fields, a second record.
    keyfob::services::apps::create_app(
        app.state.store.as_ref(),
        &f.account,
        NewApp {
            name: "Customer relationship management portal for the northern region".into(),
            redirect_uris: vec![
                "https://crm.northern-region.example.com/oauth2/callback/after-login?tenant=acme-international-holdings".into(),
                "http://localhost:8080/callback".into(),
            ],
            post_logout_redirect_uris: vec![
                "https://crm.northern-region.example.com/signed-out/thank-you-for-visiting".into(),
            ],
            origins: vec!["https://crm.northern-region.example.com".into()],
            public: true,
            max_permissions: "creditApplications.read,creditApplications.write,deals.read".into(),
            refresh_idle_secs: Some(2_592_000),
            refresh_max_age_secs: Some(7_776_000),
            allow_fragment: false,
        },
    )
    .await
    .unwrap();
    f.owner
        .create_key("a second key, for the nightly export job")
        .await;
    let fields = f
        .owner
        .post(
            "/dashboard/data/_fields",
            &[("csrf", &f.owner_csrf), ("fields", "ssn, tax_id")],
        )
        .await;
    assert!(
        fields.status().is_redirection(),
        "{}: {}",
        fields.status(),
        fields.text().await.unwrap()
    );
    let created = app
        .request(reqwest::Method::POST, "/api/deals", Some(&f.key))
        .json(&json!({
            "name": "A deal whose name is long enough to wrap on a phone's screen",
            "ssn": "123-45-6789",
            "tax_id": "DE123456789",
            "customer": {"name": "Grace"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // What the consent page shows besides the application's name.
    app.state
        .store
        .set_app_links(
            Some(&f.account),
            &f.client_id.as_str().into(),
            &keyfob_store::AppLinks {
                logo_uri: None,
                homepage_uri: Some("https://client.example.com/".into()),
                policy_uri: Some("https://client.example.com/legal/privacy-policy".into()),
            },
            keyfob_domain::time::Timestamp::now(),
        )
        .await
        .unwrap();
    // The record with sealed fields: its page shows the reveal form.
    let sealed: Value = created.json().await.unwrap();
    let sealed_record = format!("/dashboard/data/deals/{}", sealed["id"].as_str().unwrap());

    let authorize = serde_urlencoded::to_string([
        ("client_id", f.client_id.as_str()),
        ("redirect_uri", CALLBACK),
        ("scope", "deals.read deals.write"),
        ("response_type", "code"),
        ("state", "st8"),
    ])
    .unwrap();
    let bad_link = format!("token={}", "A".repeat(43));
    let visits = vec![
        // Before login.
        visit("/dashboard/signup", "/dashboard/signup", Who::Anyone),
        visit("/dashboard/login", "/dashboard/login", Who::Anyone),
        visit("/dashboard/forgot", "/dashboard/forgot", Who::Anyone),
        visit(
            "/dashboard/reset",
            format!("/dashboard/reset?{bad_link}"),
            Who::Anyone,
        ),
        visit(
            "/dashboard/verify",
            format!("/dashboard/verify?{bad_link}"),
            Who::Anyone,
        ),
        visit(
            "/dashboard/account/email/confirm",
            format!("/dashboard/account/email/confirm?{bad_link}"),
            Who::Anyone,
        ),
        visit(
            "/dashboard/login/totp",
            "/dashboard/login/totp",
            Who::Anyone,
        ),
        visit(
            "/dashboard/login/passkey",
            "/dashboard/login/passkey",
            Who::Anyone,
        ),
        visit(
            "/auth/login",
            format!("/auth/login?{authorize}"),
            Who::Anyone,
        ),
        visit(
            "/auth/signup",
            format!("/auth/signup?{authorize}"),
            Who::Anyone,
        ),
        visit("/auth/forgot", "/auth/forgot", Who::Anyone),
        visit(
            "/auth/reset",
            format!("/auth/reset?{bad_link}"),
            Who::Anyone,
        ),
        visit(
            "/auth/verify",
            format!("/auth/verify?{bad_link}"),
            Who::Anyone,
        ),
        visit(
            "/auth/login/totp",
            format!("/auth/login/totp?{authorize}"),
            Who::Anyone,
        ),
        visit(
            "/auth/login/passkey",
            format!("/auth/login/passkey?{authorize}"),
            Who::Anyone,
        ),
        // The error page of an authorization request from an unknown application.
        visit(
            "/auth",
            "/auth?client_id=no-such-app&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&response_type=code",
            Who::Anyone,
        ),
        // The owner's dashboard.
        visit("/dashboard", "/dashboard", Who::Owner),
        visit("/dashboard/", "/dashboard/", Who::Owner),
        visit("/dashboard/keys", "/dashboard/keys", Who::Owner),
        visit(
            "/dashboard/keys/{id}",
            f.concrete("/dashboard/keys/{id}"),
            Who::Owner,
        ),
        visit(
            "/dashboard/keys/{id}/created",
            f.concrete("/dashboard/keys/{id}/created"),
            Who::Owner,
        ),
        visit(
            "/dashboard/keys/{id}/revoke",
            f.concrete("/dashboard/keys/{id}/revoke"),
            Who::Owner,
        ),
        visit("/dashboard/tokens", "/dashboard/tokens", Who::Owner),
        visit("/dashboard/tokens/new", "/dashboard/tokens/new", Who::Owner),
        visit(
            "/dashboard/tokens/{jti}/minted",
            f.concrete("/dashboard/tokens/{jti}/minted"),
            Who::Owner,
        ),
        visit(
            "/dashboard/tokens/{jti}/revoke",
            f.concrete("/dashboard/tokens/{jti}/revoke"),
            Who::Owner,
        ),
        visit("/dashboard/apps", "/dashboard/apps", Who::Owner),
        visit(
            "/dashboard/apps/{client_id}",
            f.concrete("/dashboard/apps/{client_id}"),
            Who::Owner,
        ),
        visit(
            "/dashboard/apps/{client_id}/secret",
            f.concrete("/dashboard/apps/{client_id}/secret"),
            Who::Owner,
        ),
        visit(
            "/dashboard/apps/{client_id}/disable",
            f.concrete("/dashboard/apps/{client_id}/disable"),
            Who::Owner,
        ),
        visit(
            "/dashboard/apps/{client_id}/delete",
            f.concrete("/dashboard/apps/{client_id}/delete"),
            Who::Owner,
        ),
        visit("/dashboard/grants", "/dashboard/grants", Who::Owner),
        visit(
            "/dashboard/grants/{id}/revoke",
            f.concrete("/dashboard/grants/{id}/revoke"),
            Who::Owner,
        ),
        visit(
            "/dashboard/users/{user_id}/remove",
            f.concrete("/dashboard/users/{user_id}/remove"),
            Who::Owner,
        ),
        visit("/dashboard/audit", "/dashboard/audit", Who::Owner),
        visit("/dashboard/data", "/dashboard/data", Who::Owner),
        visit(
            "/dashboard/data/{resource}",
            "/dashboard/data/deals",
            Who::Owner,
        ),
        visit(
            "/dashboard/data/{resource}/{id}",
            sealed_record.clone(),
            Who::Owner,
        ),
        visit(
            "/dashboard/security/totp",
            "/dashboard/security/totp",
            Who::Owner,
        ),
        visit(
            "/dashboard/security/passkeys",
            "/dashboard/security/passkeys",
            Who::Owner,
        ),
        visit("/dashboard/account", "/dashboard/account", Who::Owner),
        visit("/dashboard/{*rest}", "/dashboard/nowhere", Who::Owner),
        // The end user's pages.
        visit("/auth", format!("/auth?{authorize}"), Who::User),
        visit("/auth/grants", "/auth/grants", Who::User),
        visit(
            "/auth/grants/{id}/revoke",
            f.concrete("/auth/grants/{id}/revoke"),
            Who::User,
        ),
        visit("/auth/security/totp", "/auth/security/totp", Who::User),
        visit(
            "/auth/security/passkeys",
            "/auth/security/passkeys",
            Who::User,
        ),
        visit(
            "/auth/end-session",
            format!("/auth/end-session?client_id={}", f.client_id),
            Who::User,
        ),
    ];

    // Every page of the table of routes is visited (its static files are not pages).
    let visited: BTreeSet<&str> = visits.iter().map(|v| v.route).collect();
    let missing: Vec<&str> = PAGE_ROUTES
        .iter()
        .filter(|r| matches!(r.method, "GET" | "*"))
        .filter(|r| !r.path.starts_with("/dashboard/static/"))
        .map(|r| r.path)
        .filter(|path| !visited.contains(path))
        .collect();
    assert!(
        missing.is_empty(),
        "pages in routes::PAGE_ROUTES this test does not visit: {missing:?}"
    );

    let who = People {
        base: app.base.clone(),
        owner_email: f.owner.email.clone(),
        user_email: f.user_email.clone(),
        driver: chrome.driver_url().to_owned(),
    };
    let problems = chrome
        .run(move |browser| check_every_page(browser, who, visits, axe))
        .await;
    assert!(
        problems.is_empty(),
        "{} problems:\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

/// What the flow needs to log in and to drive the browser.
struct People {
    base: String,
    owner_email: String,
    user_email: String,
    driver: String,
}

async fn check_every_page(
    browser: Client,
    people: People,
    visits: Vec<Visit>,
    axe: Option<String>,
) -> Outcome<Vec<String>> {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir)?;
    let session = browser.session_id().await?.ok_or("no WebDriver session")?;
    let mut problems = Vec::new();
    let mut logged_in: Vec<Who> = Vec::new();
    for (number, page) in visits.iter().enumerate() {
        if !logged_in.contains(&page.who) {
            logged_in.push(page.who);
            log_in(&browser, &people, page.who).await?;
        }
        for width in WIDTHS {
            emulate_width(&people.driver, &session, width).await?;
            browser
                .goto(&format!("{}{}", people.base, page.path))
                .await?;
            browser.wait().for_element(Locator::Css("body")).await?;
            let name = format!("{} at {width}px", page.path);

            // On a phone's screen a page wider than the screen widens the layout viewport (the
            // browser zooms out), so the content is measured against the width asked for.
            let measured = browser.execute(MEASURE, vec![json!(width)]).await?;
            let inner = measured["innerWidth"].as_u64().unwrap_or(0);
            let scroll = measured["scrollWidth"].as_u64().unwrap_or(0);
            if scroll > u64::from(width) || inner > u64::from(width) {
                problems.push(format!(
                    "{name} ({}) does not fit: {scroll}px of content (layout viewport {inner}px) \
                     on a {width}px screen; sticking out: {}",
                    page.route, measured["wide"]
                ));
            }

            let png = screenshot(&people.driver, &session).await?;
            std::fs::write(dir.join(file_name(number, &page.path, width)), png)?;

            if let Some(axe) = &axe {
                browser.execute(axe, vec![]).await?;
                let found = browser.execute_async(RUN_AXE, vec![]).await?;
                for violation in found.as_array().into_iter().flatten() {
                    problems.push(format!(
                        "{name} ({}): axe `{}` ({}): {} — {}",
                        page.route,
                        violation["id"].as_str().unwrap_or("?"),
                        violation["impact"].as_str().unwrap_or("?"),
                        violation["help"].as_str().unwrap_or("?"),
                        violation["targets"]
                    ));
                }
            }
        }
    }
    eprintln!("screenshots in {}", dir.display());
    Ok(problems)
}

/// Logs `who` in through the login form, as a person would.
async fn log_in(browser: &Client, people: &People, who: Who) -> Outcome {
    match who {
        Who::Owner => {
            browser
                .goto(&format!("{}/dashboard/login", people.base))
                .await?;
            fill_in_and_submit(
                browser,
                &[("email", &people.owner_email), ("password", PASSWORD)],
                "form[action='/dashboard/login'] button[type=submit]",
            )
            .await?;
            browser
                .wait()
                .for_element(Locator::Css("form[action='/dashboard/logout']"))
                .await?;
        }
        Who::User => {
            browser.goto(&format!("{}/auth/login", people.base)).await?;
            fill_in_and_submit(
                browser,
                &[("email", &people.user_email), ("password", PASSWORD)],
                "form[action='/auth/login'] button[type=submit]",
            )
            .await?;
            browser
                .wait()
                .for_element(Locator::Css("form[action='/auth/logout']"))
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Makes the page `width` CSS pixels wide (a phone's layout viewport below 600px), whatever the
/// size of the headless window.
async fn emulate_width(driver: &str, session: &str, width: u32) -> Outcome {
    cdp(
        driver,
        session,
        "Emulation.setDeviceMetricsOverride",
        json!({
            "width": width,
            "height": HEIGHT,
            "deviceScaleFactor": 1,
            "mobile": width < 600,
        }),
    )
    .await?;
    Ok(())
}

/// A screenshot of the whole page, not only what fits in the window.
async fn screenshot(driver: &str, session: &str) -> Outcome<Vec<u8>> {
    let shot = cdp(
        driver,
        session,
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true}),
    )
    .await?;
    let data = shot["data"].as_str().ok_or("no screenshot")?;
    Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
}

/// A Chrome DevTools Protocol command, through chromedriver.
async fn cdp(driver: &str, session: &str, cmd: &str, params: Value) -> Outcome<Value> {
    let response = reqwest::Client::new()
        .post(format!("{driver}/session/{session}/goog/cdp/execute"))
        .json(&json!({"cmd": cmd, "params": params}))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        return Err(format!("{cmd}: {status}: {body}").into());
    }
    Ok(body["value"].clone())
}

/// A file name for the screenshot of the `number`th page visited, `path`, at `width`.
fn file_name(number: usize, path: &str, width: u32) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let slug: String = path
        .trim_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let slug = if slug.len() > 60 { &slug[..60] } else { &slug };
    format!("{number:02}-{slug}-{width}.png")
}

/// The page's width, and the innermost elements that stick out past the right edge of a screen
/// `arguments[0]` pixels wide.
const MEASURE: &str = r#"
const screen = arguments[0];
const inner = window.innerWidth;
const root = document.documentElement;
const out = (el) => el.getBoundingClientRect().right > screen + 0.5;
const wide = [];
if (root.scrollWidth > screen || inner > screen) {
  for (const el of document.body.querySelectorAll('*')) {
    if (!out(el) || [...el.children].some(out)) continue;
    const r = el.getBoundingClientRect();
    let name = el.tagName.toLowerCase();
    if (el.id) name += '#' + el.id;
    if (typeof el.className === 'string' && el.className.trim()) {
      name += '.' + el.className.trim().split(/\s+/).join('.');
    }
    wide.push(`${name} (right ${Math.round(r.right)}px, width ${Math.round(r.width)}px)`);
    if (wide.length >= 12) break;
  }
}
return { innerWidth: inner, scrollWidth: root.scrollWidth, wide };
"#;

/// Runs axe-core on the page and answers its violations, briefly.
const RUN_AXE: &str = r#"
const done = arguments[arguments.length - 1];
window.axe.run(document, { resultTypes: ['violations'] })
  .then((result) => done(result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    targets: v.nodes.slice(0, 6).map((n) => n.target.join(' ')),
  }))))
  .catch((err) => done([{ id: 'axe-failed', impact: 'critical', help: String(err), targets: [] }]));
"#;
