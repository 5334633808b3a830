//! Login throttling that an attacker cannot turn against the owner, signed pre-login CSRF tokens,
//! and failed logins that cannot flood an account's audit log. Owners (`/dashboard/login`) and end
//! users (`/auth/login`) alike. Clients pick their address through a trusted proxy's
//! `X-Forwarded-For`.

use std::sync::Arc;
use std::time::Duration;

use keyfob::config::Config;
use keyfob::services::{self, apps::NewApp};
use keyfob_domain::secret::random_token;
use keyfob_store::{AccountId, AuditFilter};
use reqwest::header::{RETRY_AFTER, SET_COOKIE};
use reqwest::{Response, StatusCode, redirect};
use serde_json::Value;

use crate::helpers::*;

/// Runs each named `async fn name(backend: Backend)` once per backend, as `name::sqlite` and
/// `name::postgres` (skipped, with a note, without `KEYFOB_TEST_POSTGRES_URL`, unless
/// `KEYFOB_REQUIRE_POSTGRES` is set).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if crate::helpers::postgres_url().is_none() {
                        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
                        return;
                    }
                    super::$name(crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}

on_both_backends!(
    failures_from_one_address_do_not_lock_the_owner_out_elsewhere,
    a_device_cookie_gets_the_owner_in_once_the_emails_budget_is_spent,
    the_reveal_forms_password_check_shares_the_login_budgets,
    pre_login_forms_refuse_tokens_the_server_did_not_sign,
    anonymous_failed_logins_cannot_flood_an_accounts_audit_log,
    a_window_that_ends_writes_its_summary,
);

/// A server behind a trusted proxy on loopback, so each test client picks its address.
async fn spawn(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let db = fresh_db(backend).await.expect("the backend is configured");
    let mut config = test_config(&db);
    config.set_trusted_proxies(&["127.0.0.0/8"]).unwrap();
    adjust(&mut config);
    spawn_with(config, Arc::new(db)).await
}

/// The owners' pages or the end users'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pages {
    Dashboard,
    Auth,
}

const BOTH: [Pages; 2] = [Pages::Dashboard, Pages::Auth];

impl Pages {
    fn root(self) -> &'static str {
        match self {
            Pages::Dashboard => "/dashboard",
            Pages::Auth => "/auth",
        }
    }

    fn form_cookie(self) -> &'static str {
        match self {
            Pages::Dashboard => keyfob::dashboard::FORM_COOKIE,
            Pages::Auth => keyfob::user_pages::USER_FORM_COOKIE,
        }
    }

    fn login_cookie(self) -> &'static str {
        match self {
            Pages::Dashboard => keyfob::dashboard::LOGIN_COOKIE,
            Pages::Auth => keyfob::user_pages::USER_COOKIE,
        }
    }

    fn device_cookie(self) -> &'static str {
        match self {
            Pages::Dashboard => "kf_device",
            Pages::Auth => "kf_user_device",
        }
    }

    /// Makes an owner or an end user with [`PASSWORD`] and returns the email.
    async fn person(self, app: &TestApp) -> String {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        match self {
            Pages::Dashboard => {
                app.create_account(&email).await;
            }
            Pages::Auth => {
                services::users::create_user(
                    app.state.store.as_ref(),
                    &app.state.passwords,
                    &email,
                    PASSWORD.into(),
                )
                .await
                .unwrap();
            }
        }
        email
    }
}

/// One browser at one client address: its own cookies, no redirects followed.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn at(app: &TestApp, address: &str) -> Client {
        Client::with_cookies(app, address, Pages::Dashboard, &[])
    }

    /// A browser at `address` that already holds the cookies `name=value` of `pages`.
    fn with_cookies(app: &TestApp, address: &str, pages: Pages, cookies: &[&str]) -> Client {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let url = app.url(pages.root()).parse().unwrap();
        for pair in cookies {
            jar.add_cookie_str(&format!("{pair}; Path={}", pages.root()), &url);
        }
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-forwarded-for", address.parse().unwrap());
        Client {
            http: reqwest::Client::builder()
                .cookie_provider(jar)
                .default_headers(headers)
                .redirect(redirect::Policy::none())
                .build()
                .unwrap(),
            base: app.base.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn page(&self, path: &str) -> String {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Fills in and sends the login form of `pages`.
    async fn login(&self, pages: Pages, email: &str, password: &str) -> Response {
        let path = format!("{}/login", pages.root());
        let csrf = csrf_in(&self.page(&path).await);
        self.post(
            &path,
            &[
                ("csrf", &csrf),
                ("email", email),
                ("password", password),
                ("request", ""),
            ],
        )
        .await
    }
}

/// The value of the first `csrf` field in a page.
fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].to_owned()
}

/// The `name=value` pair a response's `Set-Cookie` sets for `name`, if any.
fn cookie_set(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// A refusal by the throttle: 429 with a `Retry-After` of at least a second.
fn assert_throttled(response: &Response, what: &str) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    let retry: u64 = response.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{what}: Retry-After {retry}");
}

async fn failures_from_one_address_do_not_lock_the_owner_out_elsewhere(backend: Backend) {
    let app = spawn(backend, |_| {}).await;
    for pages in BOTH {
        let email = pages.person(&app).await;
        let attacker = Client::at(&app, "203.0.113.66");
        let mut last = None;
        for n in 0..12 {
            let response = attacker
                .login(pages, &email, &format!("guess number {n}"))
                .await;
            assert!(
                matches!(response.status().as_u16(), 400 | 429),
                "{pages:?}: {}",
                response.status()
            );
            assert!(cookie_set(&response, pages.login_cookie()).is_none());
            last = Some(response);
        }
        // The attacker is slowed…
        assert_throttled(&last.unwrap(), "the attacker's twelfth guess");
        let again = attacker.login(pages, &email, PASSWORD).await;
        assert_throttled(
            &again,
            "even the right password from the attacker's address",
        );
        // …while the owner, on another address and without any cookie, gets in.
        let owner = Client::at(&app, "198.51.100.7");
        let response = owner.login(pages, &email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{pages:?}");
        assert!(cookie_set(&response, pages.login_cookie()).is_some());
    }
}

async fn a_device_cookie_gets_the_owner_in_once_the_emails_budget_is_spent(backend: Backend) {
    let app = spawn(backend, |config| {
        config.login_attempts_per_email_and_address = 2;
        config.login_attempts_per_email = 4;
    })
    .await;
    for pages in BOTH {
        let email = pages.person(&app).await;
        // The owner logged in from this browser before: it holds a device cookie.
        let response = Client::at(&app, "198.51.100.7")
            .login(pages, &email, PASSWORD)
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let device = cookie_set(&response, pages.device_cookie()).expect("a device cookie");

        // Attackers on two addresses spend the email's budget for untrusted clients.
        for n in 1..=2 {
            let attacker = Client::at(&app, &format!("203.0.113.{n}"));
            for _ in 0..2 {
                let response = attacker.login(pages, &email, "a wrong guess").await;
                assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            }
            let refused = attacker.login(pages, &email, "a wrong guess").await;
            assert_throttled(&refused, "an attacker past its address's budget");
        }
        let third = Client::at(&app, "203.0.113.3");
        assert_throttled(
            &third.login(pages, &email, "a wrong guess").await,
            "a new address once the email's budget is spent",
        );
        // A browser without the cookie waits too, even with the right password…
        let stranger = Client::at(&app, "192.0.2.50");
        assert_throttled(
            &stranger.login(pages, &email, PASSWORD).await,
            "an untrusted browser once the email's budget is spent",
        );
        // …but the owner's browser, from that same new address, gets in.
        let owner = Client::with_cookies(&app, "192.0.2.50", pages, &[&device]);
        let response = owner.login(pages, &email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{pages:?}");
        assert!(cookie_set(&response, pages.login_cookie()).is_some());
        // The cookie speaks for its own email only.
        let other = pages.person(&app).await;
        for n in 1..=2 {
            let attacker = Client::at(&app, &format!("203.0.113.{}", 10 + n));
            for _ in 0..2 {
                attacker.login(pages, &other, "a wrong guess").await;
            }
        }
        let borrowed = Client::with_cookies(&app, "192.0.2.51", pages, &[&device]);
        assert_throttled(
            &borrowed.login(pages, &other, PASSWORD).await,
            "a device cookie of another email",
        );
    }
}

async fn the_reveal_forms_password_check_shares_the_login_budgets(backend: Backend) {
    let app = spawn(backend, |config| {
        config.login_attempts_per_email_and_address = 2;
    })
    .await;
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let account = app.create_account(&email).await;
    let key = app.create_key(&account).await;
    let response = app
        .request(reqwest::Method::POST, "/api/applicants", Some(&key))
        .json(&serde_json::json!({ "ssn": "123-45-6789" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Someone with the owner's login cookie (but not the owner's browser) guesses the password.
    let owner = Client::at(&app, "198.51.100.7");
    let response = owner.login(Pages::Dashboard, &email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let login = cookie_set(&response, Pages::Dashboard.login_cookie()).unwrap();
    let device = cookie_set(&response, Pages::Dashboard.device_cookie()).unwrap();
    let thief = Client::with_cookies(&app, "203.0.113.9", Pages::Dashboard, &[&login]);
    let path = format!("/dashboard/data/applicants/{id}");
    let csrf = csrf_in(&thief.page(&path).await);
    let reveal = format!("{path}/reveal");
    let guess = [
        ("csrf", csrf.as_str()),
        ("field", "ssn"),
        ("password", "a wrong guess"),
    ];
    for _ in 0..2 {
        assert_eq!(
            thief.post(&reveal, &guess).await.status(),
            StatusCode::FORBIDDEN
        );
    }
    assert_throttled(&thief.post(&reveal, &guess).await, "the third guess");
    // The same budget guards the login form from that address.
    assert_throttled(
        &Client::at(&app, "203.0.113.9")
            .login(Pages::Dashboard, &email, PASSWORD)
            .await,
        "the login form from the guessing address",
    );
    // The owner's own browser reveals.
    let owner = Client::with_cookies(&app, "203.0.113.9", Pages::Dashboard, &[&login, &device]);
    let right = [
        ("csrf", csrf.as_str()),
        ("field", "ssn"),
        ("password", PASSWORD),
    ];
    let response = owner.post(&reveal, &right).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("123-45-6789"));
}

async fn pre_login_forms_refuse_tokens_the_server_did_not_sign(backend: Backend) {
    let app = spawn(backend, |_| {}).await;
    // Another deployment: its own database and master key.
    let elsewhere = spawn_app(Backend::Sqlite).await.unwrap();
    let http = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    for pages in BOTH {
        let email = pages.person(&app).await;
        let newcomer = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let login_path = format!("{}/login", pages.root());
        let signup_path = format!("{}/signup", pages.root());
        let foreign = {
            let response = http.get(elsewhere.url(&login_path)).send().await.unwrap();
            csrf_in(&response.text().await.unwrap())
        };
        let post = |path: String, token: String, form: Vec<(&'static str, String)>| {
            let http = http.clone();
            let url = app.url(&path);
            let cookie = format!("{}={token}", pages.form_cookie());
            async move {
                let mut form = form;
                form.push(("csrf", token));
                form.push(("request", String::new()));
                http.post(url)
                    .header("Cookie", cookie)
                    .form(&form)
                    .send()
                    .await
                    .unwrap()
            }
        };
        let login = vec![("email", email.clone()), ("password", PASSWORD.to_owned())];
        let signup = vec![
            ("email", newcomer.clone()),
            ("password", PASSWORD.to_owned()),
            ("confirm", PASSWORD.to_owned()),
        ];
        // A value the attacker made up, planted as both cookie and field; and a real token of
        // another deployment.
        for token in [random_token(), "A".repeat(75), foreign.clone()] {
            for (path, form) in [(&login_path, &login), (&signup_path, &signup)] {
                let response = post(path.clone(), token.clone(), form.clone()).await;
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path} {token}");
                assert!(cookie_set(&response, pages.login_cookie()).is_none());
                assert!(
                    response
                        .text()
                        .await
                        .unwrap()
                        .contains("Nothing was changed")
                );
            }
        }
        // Nothing happened: no account or user for the newcomer.
        let made = match pages {
            Pages::Dashboard => app
                .state
                .store
                .find_owner_by_email(&newcomer)
                .await
                .unwrap()
                .is_some(),
            Pages::Auth => app
                .state
                .store
                .find_user_by_email(&newcomer)
                .await
                .unwrap()
                .is_some(),
        };
        assert!(!made, "{pages:?}: a forged sign-up made nothing");
        // A token from this server's own page works.
        let page = http.get(app.url(&login_path)).send().await.unwrap();
        let cookie = cookie_set(&page, pages.form_cookie()).expect("the form cookie");
        let token = csrf_in(&page.text().await.unwrap());
        assert_eq!(cookie, format!("{}={token}", pages.form_cookie()));
        let response = post(login_path.clone(), token, login.clone()).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{pages:?}");
        assert!(cookie_set(&response, pages.login_cookie()).is_some());
    }
}

/// An account with an API key and one application: the owner's email, the account, the key and
/// the app's `client_id`.
async fn account_with_app(app: &TestApp) -> (String, String, String, String) {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let account = app.create_account(&email).await;
    let key = app.create_key(&account).await;
    let created = services::apps::create_app(
        app.state.store.as_ref(),
        &account,
        NewApp {
            name: "Deal Tracker".into(),
            redirect_uris: vec!["https://client.example.com/cb".into()],
            post_logout_redirect_uris: vec![],
            origins: vec![],
            public: true,
            max_permissions: "deals.read".into(),
            refresh_idle_secs: None,
            refresh_max_age_secs: None,
            allow_fragment: false,
        },
    )
    .await
    .unwrap();
    (email, account.into(), key, created.app.client_id.into())
}

/// `count` failed logins on `/auth/login` naming `client_id`, from one address, `workers` at a
/// time, with a long attacker-chosen `User-Agent`.
async fn flood_failed_logins(app: &TestApp, client_id: &str, count: usize, workers: usize) {
    let client = Client::at(app, "203.0.113.77");
    let csrf = csrf_in(&client.page("/auth/login").await);
    let request = format!("client_id={client_id}&response_type=code");
    let client = Arc::new(client);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (client, next, csrf, request) =
            (client.clone(), next.clone(), csrf.clone(), request.clone());
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let response = client
                    .http
                    .post(client.url("/auth/login"))
                    .header("User-Agent", format!("EVIL-{n}-{}", "x".repeat(500)))
                    .form(&[
                        ("csrf", csrf.as_str()),
                        ("email", &format!("victim{n}@example.com")),
                        ("password", "a wrong guess"),
                        ("request", request.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

async fn anonymous_failed_logins_cannot_flood_an_accounts_audit_log(backend: Backend) {
    let app = spawn(backend, |config| {
        // The login budgets are raised so that every attempt reaches the password check.
        config.login_attempts_per_minute = 100_000;
        config.login_attempts_per_email_and_address = 100_000;
        config.login_attempts_per_email = 100_000;
        config.password_workers = 2;
    })
    .await;
    let bound = app.state.config.audit_anonymous_events as usize;
    let (email, account, key, client_id) = account_with_app(&app).await;
    flood_failed_logins(&app, &client_id, 1_000, 8).await;

    // The account's log took the bound, every event marked and its text cut…
    let events = audit_until(&app, &key, "action=user.login_failed&limit=100", |docs| {
        docs.len() >= bound
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = {
        let again = audit_until(&app, &key, "action=user.login_failed&limit=100", |_| true).await;
        assert_eq!(again.len(), events.len(), "no more events arrive");
        again
    };
    assert_eq!(events.len(), bound, "{events:#?}");
    for event in &events {
        assert_eq!(event["actor"]["kind"], "anonymous", "{event}");
        assert_eq!(event["ip"], "203.0.113.77");
        assert_eq!(event["detail"]["client_id"], client_id.as_str());
        let agent = event["detail"]["user_agent"].as_str().unwrap();
        assert!(
            agent.starts_with("EVIL-") && agent.chars().count() <= 64,
            "{agent}"
        );
    }
    // …and shows them as unauthenticated on the dashboard's page.
    let owner = Client::at(&app, "198.51.100.7");
    assert_eq!(
        owner
            .login(Pages::Dashboard, &email, PASSWORD)
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let html = owner
        .page("/dashboard/audit?action=user.login_failed")
        .await;
    let marked =
        html.matches("<td data-label=\"Actor\"><strong>unauthenticated client</strong></td>");
    assert_eq!(marked.count(), bound, "{html}");

    // The rest are counted in the window's summary, written at the latest when the node stops.
    let url = app.db.url.clone();
    let db = app.db.clone();
    drop(app);
    let store = keyfob_store::open(&url, Default::default()).await.unwrap();
    let mut summary = None;
    for _ in 0..100 {
        let (rows, _) = store
            .list_audit_events(&AuditFilter {
                account_id: &AccountId::from(account.as_str()),
                action: Some("audit.suppressed"),
                actor_id: None,
                since: None,
                until: None,
                limit: 10,
                offset: 0,
            })
            .await
            .unwrap();
        if let Some(row) = rows.into_iter().next() {
            summary = Some(row);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary = summary.expect("a summary of the suppressed events");
    assert_eq!(summary.actor_kind.as_str(), "anonymous");
    assert_eq!(summary.ip.as_deref(), Some("203.0.113.77"));
    let detail: Value = summary.detail.clone().unwrap().0;
    assert_eq!(detail["suppressed"], 1_000 - bound as u64, "{detail}");
    assert_eq!(detail["actions"], serde_json::json!(["user.login_failed"]));
    drop(db);
}

async fn a_window_that_ends_writes_its_summary(backend: Backend) {
    let app = spawn(backend, |config| {
        config.audit_anonymous_events = 2;
        config.audit_anonymous_window_secs = 1;
    })
    .await;
    let (_, _, key, client_id) = account_with_app(&app).await;
    flood_failed_logins(&app, &client_id, 5, 5).await;
    // The window closes a second after its first event; the summary follows within a tick.
    let mut docs = Vec::new();
    for _ in 0..10 {
        docs = audit_until(&app, &key, "action=audit.suppressed", |_| true).await;
        if !docs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!docs.is_empty(), "a summary within five seconds");
    let written = audit_until(&app, &key, "action=user.login_failed", |_| true).await;
    let suppressed: u64 = docs
        .iter()
        .map(|d| d["detail"]["suppressed"].as_u64().unwrap())
        .sum();
    // However the five attempts fell into windows, each is either written or counted.
    assert_eq!(
        written.len() as u64 + suppressed,
        5,
        "{docs:#?} {written:#?}"
    );
    assert!(docs.iter().all(|d| d["actor"]["kind"] == "anonymous"));
}
