//! Passkeys. In headless Chromium with a virtual authenticator (WebDriver's WebAuthn
//! extension), on each backend: an owner registers a passkey and names it, logs out, signs in
//! with it (no password, no second factor) and removes it. Without a browser: bad input to the
//! registration, removal and sign-in forms (missing CSRF token, garbage or forged responses, an
//! unknown credential, a challenge answered twice) is a clear 4xx and changes nothing.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fantoccini::{Client, Locator};
use keyfob::services::apps::NewApp;
use keyfob_store::FactorHolder;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::chrome::{Chrome, Outcome, fill_in_and_submit, free_port};
use crate::dashboard::{Browser, csrf_in, location};
use crate::helpers::*;

const OWNER_PAGE: &str = "/dashboard/security/passkeys";
const OWNER_SIGN_IN: &str = "/dashboard/login/passkey";
const USER_PAGE: &str = "/auth/security/passkeys";
const USER_SIGN_IN: &str = "/auth/login/passkey";
const CALLBACK: &str = "https://client.example.com/cb";

/// A server whose public URL is `http://localhost:PORT`: browsers accept `localhost`, and not an
/// IP address, as a relying party id.
async fn spawn_on_localhost(backend: Backend) -> Option<TestApp> {
    let db = fresh_db(backend).await?;
    let mut config = test_config(&db);
    let port = free_port();
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.public_url = Some(format!("http://localhost:{port}"));
    let mut app = spawn_with(config, Arc::new(db)).await;
    app.base = format!("http://localhost:{port}");
    Some(app)
}

/// Adds a virtual authenticator (CTAP2, platform, resident keys, user verification that
/// succeeds) to the browser's session.
async fn add_authenticator(driver: &str, browser: &Client) -> Outcome {
    let session = browser.session_id().await?.expect("a session");
    let response = reqwest::Client::new()
        .post(format!("{driver}/session/{session}/webauthn/authenticator"))
        .json(&json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
        }))
        .send()
        .await?;
    assert!(response.status().is_success(), "{}", response.text().await?);
    Ok(())
}

/// Waits for the element `css`; on a timeout the error says where the browser was and what it
/// showed.
async fn wait_for(browser: &Client, css: &str) -> Outcome<fantoccini::elements::Element> {
    match browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => Ok(element),
        Err(err) => {
            let url = browser.current_url().await?;
            let body = browser.find(Locator::Css("body")).await?.text().await?;
            Err(format!("waiting for {css} at {url}: {err}; the page says: {body}").into())
        }
    }
}

/// The passkey form's status line once the browser has answered.
async fn status_when_done(browser: &Client) -> Outcome<String> {
    for _ in 0..100 {
        let text = browser
            .find(Locator::Css("[data-passkey-status]"))
            .await?
            .text()
            .await?;
        if !text.is_empty() && !text.starts_with("Waiting") {
            return Ok(text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the passkey form never said how it went".into())
}

/// The counter [`clone_ahead`] stores.
const CLONED_COUNT: i64 = 1_000_000;

/// Sets the stored signature counter of the holder's one passkey far ahead, as if a copy of the
/// authenticator had been used many times.
async fn clone_ahead(db_url: &str, store: &Arc<dyn keyfob_store::Store>, holder: &FactorHolder) {
    let row = store.list_passkeys(holder).await.unwrap().remove(0);
    let mut state = base64::engine::general_purpose::STANDARD
        .decode(&row.dynamic_state)
        .unwrap();
    state[2..6].copy_from_slice(&u32::try_from(CLONED_COUNT).unwrap().to_le_bytes());
    let state = base64::engine::general_purpose::STANDARD.encode(state);
    let sql = format!(
        "UPDATE passkeys SET dynamic_state = '{state}', sign_count = {CLONED_COUNT} \
         WHERE credential_id = '{}'",
        row.credential_id
    );
    assert_eq!(raw_execute(db_url, &sql).await.unwrap(), 1);
}

async fn owner_holder(app: &TestApp, email: &str) -> FactorHolder {
    let owner = app
        .state
        .store
        .find_owner_by_email(email)
        .await
        .unwrap()
        .unwrap();
    FactorHolder::Owner(owner.id)
}

async fn owner_in_browser(backend: Backend) {
    let Some(chrome) = Chrome::launch().await else {
        return;
    };
    let Some(app) = spawn_on_localhost(backend).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let account = app.create_account(&email).await;
    let key = app.create_key(&account).await;
    let holder = owner_holder(&app, &email).await;
    let driver = chrome.driver_url().to_owned();
    let base = app.base.clone();
    let store = app.state.store.clone();
    let flow_email = email.clone();
    let db_url = app.db.url.clone();
    chrome
        .run(move |browser| async move {
            add_authenticator(&driver, &browser).await?;
            browser.goto(&format!("{base}/dashboard/login")).await?;
            fill_in_and_submit(
                &browser,
                &[("email", &flow_email), ("password", PASSWORD)],
                "form[action='/dashboard/login'] button[type=submit]",
            )
            .await?;
            wait_for(&browser, "#keys, form[action='/dashboard/keys']").await?;

            // Register a passkey and name it.
            browser.goto(&format!("{base}{OWNER_PAGE}")).await?;
            wait_for(&browser, "#add-passkey:enabled").await?;
            fill_in_and_submit(&browser, &[("name", "Work laptop")], "#add-passkey").await?;
            let notice = wait_for(&browser, "#notice").await?;
            assert_eq!(notice.text().await?, "The passkey was added.");
            let table = browser.find(Locator::Id("passkeys")).await?.text().await?;
            assert!(table.contains("Work laptop"), "{table}");
            assert!(table.contains("Never"), "{table}");
            let stored = store.list_passkeys(&holder).await.unwrap();
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0].name, "Work laptop");

            // The same authenticator again: it holds one of the owner's passkeys, so it declines.
            wait_for(&browser, "#add-passkey:enabled").await?;
            fill_in_and_submit(&browser, &[("name", "Again")], "#add-passkey").await?;
            let status = status_when_done(&browser).await?;
            assert!(status.contains("InvalidStateError"), "{status}");
            assert_eq!(store.list_passkeys(&holder).await.unwrap().len(), 1);

            // Log out, then sign in with the passkey alone.
            browser
                .find(Locator::Css("form.logout button[type=submit]"))
                .await?
                .click()
                .await?;
            wait_for(&browser, "#passkey-sign-in")
                .await?
                .click()
                .await?;
            wait_for(&browser, "#use-passkey:enabled")
                .await?
                .click()
                .await?;
            wait_for(&browser, "#keys, form[action='/dashboard/keys']").await?;
            let used = store.list_passkeys(&holder).await.unwrap();
            assert!(used[0].last_used_at.is_some());

            // A copy of the authenticator elsewhere has signed since: the stored counter is
            // ahead of this one's. Its next assertion is refused and changes nothing.
            clone_ahead(&db_url, &store, &holder).await;
            browser
                .find(Locator::Css("form.logout button[type=submit]"))
                .await?
                .click()
                .await?;
            wait_for(&browser, "#passkey-sign-in")
                .await?
                .click()
                .await?;
            wait_for(&browser, "#use-passkey:enabled")
                .await?
                .click()
                .await?;
            let error = wait_for(&browser, "#form-error").await?.text().await?;
            assert!(error.contains("counter went backwards"), "{error}");
            assert_eq!(
                store.list_passkeys(&holder).await.unwrap()[0].sign_count,
                CLONED_COUNT
            );

            // Back in with the password: the list shows when it was used; remove it.
            browser.goto(&format!("{base}/dashboard/login")).await?;
            fill_in_and_submit(
                &browser,
                &[("email", &flow_email), ("password", PASSWORD)],
                "form[action='/dashboard/login'] button[type=submit]",
            )
            .await?;
            wait_for(&browser, "#keys, form[action='/dashboard/keys']").await?;
            browser.goto(&format!("{base}{OWNER_PAGE}")).await?;
            let table = browser.find(Locator::Id("passkeys")).await?.text().await?;
            assert!(!table.contains("Never"), "{table}");
            browser
                .find(Locator::Css("#passkeys form button[type=submit]"))
                .await?
                .click()
                .await?;
            let notice = wait_for(&browser, "#notice").await?;
            assert_eq!(notice.text().await?, "The passkey was removed.");
            browser.find(Locator::Id("no-passkeys")).await?;
            assert!(store.list_passkeys(&holder).await.unwrap().is_empty());
            Ok(())
        })
        .await;
    for action in [
        "passkey.registered",
        "passkey.login",
        "passkey.failed",
        "passkey.removed",
    ] {
        audit_until(&app, &key, &format!("action={action}"), |docs| {
            !docs.is_empty()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_registers_signs_in_with_and_removes_a_passkey_sqlite() {
    owner_in_browser(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_registers_signs_in_with_and_removes_a_passkey_postgres() {
    owner_in_browser(Backend::Postgres).await;
}

async fn user_in_browser(backend: Backend) {
    let Some(chrome) = Chrome::launch().await else {
        return;
    };
    let Some(app) = spawn_on_localhost(backend).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let account = app
        .create_account(&format!("{}@example.com", uuid::Uuid::new_v4().simple()))
        .await;
    let key = app.create_key(&account).await;
    let client = keyfob::services::apps::create_app(
        app.state.store.as_ref(),
        &account,
        NewApp {
            name: "Deal Tracker".into(),
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
    .unwrap()
    .app;
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let user = keyfob::services::users::create_user(
        app.state.store.as_ref(),
        &app.state.passwords,
        &email,
        PASSWORD.into(),
    )
    .await
    .unwrap();
    let holder = FactorHolder::User(user.id.clone());
    let user_id = user.id.clone();
    let request = serde_urlencoded::to_string([
        ("client_id", client.client_id.as_str()),
        ("redirect_uri", CALLBACK),
        ("permissions", "deals.read"),
        ("state", "st8"),
    ])
    .unwrap();
    let driver = chrome.driver_url().to_owned();
    let base = app.base.clone();
    let store = app.state.store.clone();
    chrome
        .run(move |browser| async move {
            add_authenticator(&driver, &browser).await?;
            browser.goto(&format!("{base}/auth/login")).await?;
            fill_in_and_submit(
                &browser,
                &[("email", &email), ("password", PASSWORD)],
                "form[action='/auth/login'] button[type=submit]",
            )
            .await?;
            wait_for(&browser, "#passkeys-link").await?.click().await?;
            wait_for(&browser, "#add-passkey:enabled").await?;
            fill_in_and_submit(&browser, &[("name", "Phone")], "#add-passkey").await?;
            let notice = wait_for(&browser, "#notice").await?;
            assert_eq!(notice.text().await?, "The passkey was added.");
            assert_eq!(store.list_passkeys(&holder).await.unwrap().len(), 1);
            browser
                .find(Locator::Css("form.logout button[type=submit]"))
                .await?
                .click()
                .await?;
            wait_for(&browser, "form[action='/auth/login']").await?;

            // The application sends the user to log in; the passkey alone leads to consent.
            browser.goto(&format!("{base}/auth?{request}")).await?;
            wait_for(&browser, "#passkey-sign-in")
                .await?
                .click()
                .await?;
            wait_for(&browser, "#use-passkey:enabled")
                .await?
                .click()
                .await?;
            wait_for(&browser, "form[action='/auth/consent']").await?;
            let page = browser.find(Locator::Css("main")).await?.text().await?;
            assert!(page.contains("Deal Tracker"), "{page}");
            assert!(
                store.list_passkeys(&holder).await.unwrap()[0]
                    .last_used_at
                    .is_some()
            );

            // Once the operator disables the user, the passkey is refused, saying why.
            let now = keyfob_store::Timestamp::now;
            assert!(
                store
                    .set_user_disabled(&user_id, true, now())
                    .await
                    .unwrap()
            );
            browser
                .goto(&format!("{base}{USER_SIGN_IN}?{request}"))
                .await?;
            wait_for(&browser, "#use-passkey:enabled")
                .await?
                .click()
                .await?;
            let error = wait_for(&browser, "#form-error").await?.text().await?;
            assert!(error.contains("This account is disabled"), "{error}");
            assert!(
                store
                    .set_user_disabled(&user_id, false, now())
                    .await
                    .unwrap()
            );
            browser.goto(&format!("{base}/auth/login")).await?;
            fill_in_and_submit(
                &browser,
                &[("email", &email), ("password", PASSWORD)],
                "form[action='/auth/login'] button[type=submit]",
            )
            .await?;
            wait_for(&browser, "#passkeys-link").await?;

            browser.goto(&format!("{base}{USER_PAGE}")).await?;
            browser
                .find(Locator::Css("#passkeys form button[type=submit]"))
                .await?
                .click()
                .await?;
            let notice = wait_for(&browser, "#notice").await?;
            assert_eq!(notice.text().await?, "The passkey was removed.");
            assert!(store.list_passkeys(&holder).await.unwrap().is_empty());
            Ok(())
        })
        .await;
    audit_until(&app, &key, "action=passkey.login", |docs| !docs.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_user_signs_in_with_a_passkey_during_an_authorization_request_sqlite() {
    user_in_browser(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_user_signs_in_with_a_passkey_during_an_authorization_request_postgres() {
    user_in_browser(Backend::Postgres).await;
}

/// The `data-options` JSON of the passkey form on `html`.
fn options_in(html: &str) -> Value {
    let marker = "data-options=\"";
    let start = html.find(marker).expect("passkey options") + marker.len();
    let end = start + html[start..].find('"').unwrap();
    let text = html[start..end]
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#x22;", "\"")
        .replace("&amp;", "&");
    let value: Value = serde_json::from_str(&text).unwrap();
    value.get("publicKey").cloned().unwrap_or(value)
}

/// An assertion for `challenge` from the server's origin, by a credential no one registered,
/// with no valid signature.
fn forged_assertion(app: &TestApp, challenge: &str) -> String {
    // In the order browsers write it.
    let client_data = format!(
        r#"{{"type":"webauthn.get","challenge":"{challenge}","origin":"{}","crossOrigin":false}}"#,
        app.base
    );
    let mut authenticator_data = vec![0u8; 37];
    authenticator_data[32] = 0b101;
    json!({
        "id": "AAAAAAAAAAAAAAAAAAAAAA",
        "rawId": "AAAAAAAAAAAAAAAAAAAAAA",
        "response": {
            "clientDataJSON": URL_SAFE_NO_PAD.encode(client_data),
            "authenticatorData": URL_SAFE_NO_PAD.encode(authenticator_data),
            "signature": URL_SAFE_NO_PAD.encode([0u8; 64]),
            "userHandle": URL_SAFE_NO_PAD.encode([0u8; 16]),
        },
        "clientExtensionResults": {},
        "type": "public-key",
    })
    .to_string()
}

both_backends! {
    async fn bad_registrations_and_removals_change_nothing(app) {
        let owner = Browser::signed_up(&app).await;
        let holder = owner_holder(&app, &owner.email).await;
        let (status, html) = owner.page(OWNER_PAGE).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("<script src=\"/dashboard/static/passkeys.js\"></script>"));
        let csrf = csrf_in(&html);
        let challenge = options_in(&html)["challenge"].as_str().unwrap().to_owned();
        assert_eq!(URL_SAFE_NO_PAD.decode(&challenge).unwrap().len(), 16);

        let garbage = "{\"id\": 1}";
        for (csrf, name, credential, status) in [
            ("", "Laptop", garbage, StatusCode::FORBIDDEN),
            ("forged", "Laptop", garbage, StatusCode::FORBIDDEN),
            (csrf.as_str(), "Laptop", garbage, StatusCode::BAD_REQUEST),
            (csrf.as_str(), "Laptop", "not json", StatusCode::BAD_REQUEST),
            (csrf.as_str(), "", garbage, StatusCode::BAD_REQUEST),
            (csrf.as_str(), &"x".repeat(65), garbage, StatusCode::BAD_REQUEST),
        ] {
            let response = owner.post(OWNER_PAGE, &[("csrf", csrf), ("name", name), ("credential", credential)]).await;
            assert_eq!(response.status(), status, "{csrf:?} {name:?} {credential:?}");
        }
        for (csrf, status) in [("", StatusCode::FORBIDDEN), (csrf.as_str(), StatusCode::NOT_FOUND)] {
            let response = owner.post(&format!("{OWNER_PAGE}/remove"), &[("csrf", csrf), ("id", "AAAA")]).await;
            assert_eq!(response.status(), status);
        }
        assert!(app.state.store.list_passkeys(&holder).await.unwrap().is_empty());
    }

    async fn bad_sign_ins_are_refused_and_log_no_one_in(app) {
        let stranger = Browser::new(&app);
        let (status, html) = stranger.page(OWNER_SIGN_IN).await;
        assert_eq!(status, StatusCode::OK);
        let csrf = csrf_in(&html);
        let challenge = options_in(&html)["challenge"].as_str().unwrap().to_owned();
        let forged = forged_assertion(&app, &challenge);

        // Without the form's token nothing is looked at, and the challenge stays.
        let response = stranger.post(OWNER_SIGN_IN, &[("csrf", ""), ("credential", &forged)]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        for garbage in ["", "not json", "{}", "{\"type\": \"public-key\"}"] {
            let response = stranger.post(OWNER_SIGN_IN, &[("csrf", &csrf), ("credential", garbage)]).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{garbage:?}");
        }
        // A challenge never given.
        let unknown = forged_assertion(&app, &URL_SAFE_NO_PAD.encode([7u8; 16]));
        let response = stranger.post(OWNER_SIGN_IN, &[("csrf", &csrf), ("credential", &unknown)]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let text = response.text().await.unwrap();
        assert!(text.contains("expired or was already used"), "{}", &text[text.find("form-error").unwrap_or(0)..][..200]);
        // The page's challenge, with a credential no one registered: refused, and the
        // challenge is used up, so the same response again is refused as a replay.
        let response = stranger.post(OWNER_SIGN_IN, &[("csrf", &csrf), ("credential", &forged)]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let text = response.text().await.unwrap();
        assert!(text.contains("not registered here"), "{text}");
        let response = stranger.post(OWNER_SIGN_IN, &[("csrf", &csrf), ("credential", &forged)]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let text = response.text().await.unwrap();
        assert!(text.contains("expired or was already used"), "{text}");

        // Still logged out.
        let response = stranger.get("/dashboard/keys").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/login");
    }

    async fn bad_input_to_the_end_users_passkey_forms_changes_nothing(app) {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let row = keyfob::services::users::create_user(app.state.store.as_ref(), &app.state.passwords, &email, PASSWORD.into()).await.unwrap();
        let holder = FactorHolder::User(row.id.clone());
        let user = Browser::new(&app);
        let (status, html) = user.page(USER_SIGN_IN).await;
        assert_eq!(status, StatusCode::OK);
        let csp = user.get(USER_SIGN_IN).await.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let csrf = csrf_in(&html);
        let challenge = options_in(&html)["challenge"].as_str().unwrap().to_owned();
        let forged = forged_assertion(&app, &challenge);
        let response = user.post(USER_SIGN_IN, &[("csrf", ""), ("credential", &forged), ("request", "")]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = user.post(USER_SIGN_IN, &[("csrf", &csrf), ("credential", "garbage"), ("request", "")]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = user.post(USER_SIGN_IN, &[("csrf", &csrf), ("credential", &forged), ("request", "")]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = user.post(USER_SIGN_IN, &[("csrf", &csrf), ("credential", &forged), ("request", "")]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "a replayed challenge");
        assert_eq!(user.get("/auth/grants").await.status(), StatusCode::SEE_OTHER, "no login");

        // Logged in: registration and removal want the login's token and a real response.
        let html = user.page("/auth/login").await.1;
        let login_csrf = csrf_in(&html);
        let response = user.post("/auth/login", &[("csrf", &login_csrf), ("email", &email), ("password", PASSWORD), ("request", "")]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let grants = user.page("/auth/grants").await.1;
        assert!(grants.contains("href=\"/auth/security/passkeys\""), "linked from the grants page");
        let csrf = user.csrf(USER_PAGE).await;
        for (csrf, status) in [("", StatusCode::FORBIDDEN), (csrf.as_str(), StatusCode::BAD_REQUEST)] {
            let response = user.post(USER_PAGE, &[("csrf", csrf), ("name", "Phone"), ("credential", "{}")]).await;
            assert_eq!(response.status(), status);
        }
        let response = user.post(&format!("{USER_PAGE}/remove"), &[("csrf", &csrf), ("id", "AAAA")]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(app.state.store.list_passkeys(&holder).await.unwrap().is_empty());
    }

    async fn the_passkey_pages_alone_may_run_keyfobs_own_script(app) {
        let stranger = Browser::new(&app);
        let csp = |response: &reqwest::Response| {
            response.headers()["content-security-policy"].to_str().unwrap().to_owned()
        };
        let response = stranger.get(OWNER_SIGN_IN).await;
        assert!(csp(&response).contains("script-src 'self'"));
        let response = stranger.get("/dashboard/login").await;
        assert!(csp(&response).contains("script-src 'none'"));
        let script = stranger.get("/dashboard/static/passkeys.js").await;
        assert_eq!(script.status(), StatusCode::OK);
        assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
        assert!(script.text().await.unwrap().contains("navigator.credentials.get"));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
