//! A user session from end to end in a real browser (headless Chromium, see `chrome`).
//!
//! A single-page app on its own origin (`http://localhost:<port>`, served here; Keyfob is on
//! `http://127.0.0.1:<port>`) sends a new user to `GET /auth` with PKCE; the user signs up on
//! Keyfob's pages and allows the app on the consent page; back on the app, its script exchanges
//! the code at `/auth/token` across origins (CORS), creates and lists records with the access
//! token, refreshes the session and lists again, and writes what it saw into the page.
//!
//! Skipped, with a note, when chromedriver or Chromium is missing, unless `KEYFOB_REQUIRE_BROWSER`
//! is set.

use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use fantoccini::{Client, Locator};
use keyfob::services::apps::NewApp;
use keyfob_domain::query::ListQuery;
use keyfob_store::{AccountId, RecordScope};
use reqwest::Method;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::chrome::{Chrome, Outcome, fill_in_and_submit};
use crate::helpers::*;

const APP_NAME: &str = "Dealer portal";

/// The app's page, at `/` and at its redirect URI. Without `code` in its query it starts a login;
/// with one it finishes it and exercises the session. What it saw goes into `<pre id="result">`.
const APP_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Dealer portal</title></head>
<body>
<h1>Dealer portal</h1>
<script>
"use strict";
const config = __CONFIG__;

function base64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(size) {
  return base64url(crypto.getRandomValues(new Uint8Array(size)));
}

function show(result) {
  const pre = document.createElement("pre");
  pre.id = "result";
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
}

async function start() {
  const verifier = randomString(32);
  const state = randomString(16);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  const challenge = base64url(new Uint8Array(digest));
  sessionStorage.setItem("pkce_verifier", verifier);
  sessionStorage.setItem("oauth_state", state);
  const query = new URLSearchParams({
    client_id: config.clientId,
    redirect_uri: config.redirectUri,
    permissions: "deals.read,deals.write",
    state: state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  });
  location.assign(config.keyfob + "/auth?" + query);
}

async function tokens(form) {
  const response = await fetch(config.keyfob + "/auth/token", {
    method: "POST",
    body: new URLSearchParams(form),
  });
  return { status: response.status, body: await response.json() };
}

async function api(method, path, accessToken, body) {
  const init = { method: method, headers: { Authorization: "Bearer " + accessToken } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(config.keyfob + path, init);
  return { status: response.status, body: await response.json() };
}

async function finish(params) {
  const result = {};
  // The code leaves the address bar (and the history) at once.
  history.replaceState(null, "", location.pathname);
  if (params.has("error")) {
    result.error = params.get("error");
    return result;
  }
  result.stateMatches = params.get("state") === sessionStorage.getItem("oauth_state");
  if (!result.stateMatches) return result;
  const verifier = sessionStorage.getItem("pkce_verifier");
  sessionStorage.removeItem("pkce_verifier");
  sessionStorage.removeItem("oauth_state");

  const exchange = await tokens({
    grant_type: "authorization_code",
    code: params.get("code"),
    client_id: config.clientId,
    code_verifier: verifier,
    redirect_uri: config.redirectUri,
  });
  result.exchange = exchange.status;
  if (exchange.status !== 200) {
    result.exchangeError = exchange.body;
    return result;
  }
  result.tokenType = exchange.body.token_type;
  result.scope = exchange.body.scope;
  result.expiresIn = exchange.body.expires_in;
  const first = exchange.body;

  const created = await api("POST", "/api/deals", first.access_token,
    { title: "Fleet renewal", amount: 1200 });
  result.created = created.status;
  result.createdTitle = created.body.title;
  const list = await api("GET", "/api/deals", first.access_token);
  result.list = list.status;
  result.listed = list.body.totalDocs;

  const refreshed = await tokens({
    grant_type: "refresh_token",
    refresh_token: first.refresh_token,
    client_id: config.clientId,
  });
  result.refresh = refreshed.status;
  if (refreshed.status !== 200) {
    result.refreshError = refreshed.body;
    return result;
  }
  result.refreshTokenChanged = refreshed.body.refresh_token !== first.refresh_token;
  result.accessTokenChanged = refreshed.body.access_token !== first.access_token;
  const again = await api("GET", "/api/deals", refreshed.body.access_token);
  result.list2 = again.status;
  result.listed2 = again.body.totalDocs;
  return result;
}

const params = new URLSearchParams(location.search);
if (params.has("code") || params.has("error")) {
  finish(params).then(show, (err) => show({ failed: String(err) }));
} else {
  start().catch((err) => show({ failed: String(err) }));
}
</script>
</body>
</html>
"#;

/// Serves `page` at `/` and `/callback` on `listener` until the sender is dropped or used.
pub(crate) fn serve_app_site(
    listener: tokio::net::TcpListener,
    page: String,
) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let handler = move || {
        let page = page.clone();
        async move { Html(page) }
    };
    let site = axum::Router::new()
        .route("/", get(handler.clone()))
        .route("/callback", get(handler));
    tokio::spawn(async move {
        let _ = axum::serve(listener, site)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    stop
}

/// Waits until Keyfob answers CORS preflights from `origin` (origins are loaded within the sync
/// interval).
/// An application's site on another origin than Keyfob's (`localhost` against `127.0.0.1`),
/// serving `page` with its settings in place of `__CONFIG__`, registered as a public app of
/// `account`; stops when dropped.
pub(crate) struct AppSite {
    pub origin: String,
    pub client_id: String,
    _stop: oneshot::Sender<()>,
}

impl AppSite {
    pub(crate) async fn start(
        app: &TestApp,
        account: &str,
        name: &str,
        max_permissions: &str,
        page: &str,
    ) -> AppSite {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://localhost:{}", listener.local_addr().unwrap().port());
        let redirect_uri = format!("{origin}/callback");
        let client_id = keyfob::services::apps::create_app(
            app.state.store.as_ref(),
            &account.into(),
            NewApp {
                name: name.into(),
                redirect_uris: vec![redirect_uri.clone()],
                post_logout_redirect_uris: vec![],
                origins: vec![origin.clone()],
                public: true,
                max_permissions: max_permissions.into(),
                refresh_idle_secs: None,
                refresh_max_age_secs: None,
                allow_fragment: false,
            },
        )
        .await
        .unwrap()
        .app
        .client_id;
        wait_for_origin(app, &origin).await;
        let config = serde_json::json!({
            "keyfob": app.base,
            "clientId": client_id,
            "redirectUri": redirect_uri,
        });
        let stop = serve_app_site(listener, page.replace("__CONFIG__", &config.to_string()));
        AppSite {
            origin,
            client_id: client_id.into(),
            _stop: stop,
        }
    }
}

pub(crate) async fn wait_for_origin(app: &TestApp, origin: &str) {
    for _ in 0..60 {
        let response = app
            .client
            .request(Method::OPTIONS, app.url("/auth/token"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await
            .unwrap();
        if response
            .headers()
            .get("access-control-allow-origin")
            .is_some_and(|v| v == origin)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Keyfob never allowed the origin {origin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_signs_up_through_a_single_page_app_in_a_real_browser() {
    let Some(chrome) = Chrome::launch().await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.unwrap();

    // The app's site: `localhost`, another origin than Keyfob's `127.0.0.1`.
    let (account, key) = app.account_with_key().await;
    let site = AppSite::start(&app, &account, APP_NAME, "deals.read,deals.write", APP_PAGE).await;
    let (origin, client_id) = (site.origin.clone(), site.client_id.clone());

    let user = NewUser {
        email: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
        password: format!(
            "amber lantern {} over the quiet harbour",
            uuid::Uuid::new_v4().simple()
        ),
    };
    let flow = {
        let (base, origin, user) = (app.base.clone(), origin.clone(), user.clone());
        move |browser| sign_up_and_allow(browser, base, origin, user)
    };
    let result = chrome.run(flow).await;

    // What the app's script saw.
    assert!(
        result.get("failed").is_none(),
        "the app's script failed: {result}"
    );
    assert_eq!(result["stateMatches"], true, "{result}");
    assert_eq!(result["exchange"], 200, "{result}");
    assert_eq!(result["tokenType"], "Bearer", "{result}");
    assert_eq!(result["scope"], "deals.read deals.write", "{result}");
    assert_eq!(result["expiresIn"], 600, "{result}");
    assert_eq!(result["created"], 201, "{result}");
    assert_eq!(result["createdTitle"], "Fleet renewal", "{result}");
    assert_eq!(result["list"], 200, "{result}");
    assert_eq!(result["listed"], 1, "{result}");
    assert_eq!(result["refresh"], 200, "{result}");
    assert_eq!(result["refreshTokenChanged"], true, "{result}");
    assert_eq!(result["accessTokenChanged"], true, "{result}");
    assert_eq!(result["list2"], 200, "{result}");
    assert_eq!(result["listed2"], 1, "{result}");

    // What Keyfob stored: the user, their grant to the app, and the record as theirs.
    let store = app.state.store.as_ref();
    let stored_user = store
        .find_user_by_email(&user.email)
        .await
        .unwrap()
        .expect("the user signed up");
    let grant = store
        .find_grant(&stored_user.id, &client_id.as_str().into())
        .await
        .unwrap()
        .expect("the user's grant");
    assert!(grant.revoked_at.is_none());
    assert_eq!(grant.account_id, account);
    let granted = grant.permissions.names();
    assert_eq!(granted, ["deals.read", "deals.write"]);
    let query = ListQuery {
        limit: 10,
        page: 1,
        sort: None,
        filters: vec![],
    };
    let scope = RecordScope {
        account_id: &AccountId::from(account.as_str()),
        resource: "deals",
        owner_user_id: Some(&stored_user.id),
    };
    let (records, total) = store.list_records(&scope, &query).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(
        records[0].owner_user_id.as_deref(),
        Some(stored_user.id.as_str())
    );
    assert_eq!(records[0].doc["title"], "Fleet renewal");
    assert_eq!(records[0].doc["amount"], 1200);
    // The account's API key sees it too, as the account's only record.
    let listed: Value = app
        .get("/api/deals", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["totalDocs"], 1, "{listed}");
    assert_eq!(listed["docs"][0]["title"], "Fleet renewal");
}

#[derive(Clone)]
struct NewUser {
    email: String,
    password: String,
}

/// Opens the app, signs up on Keyfob's pages, allows the app, and answers what the app's page
/// reports.
async fn sign_up_and_allow(
    browser: Client,
    keyfob: String,
    origin: String,
    user: NewUser,
) -> Outcome<Value> {
    // The app sends the browser to `GET /auth`, which asks a stranger to log in.
    browser.goto(&format!("{origin}/")).await?;
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("form[action='/auth/login']"))
        .await?;
    let url = browser.current_url().await?;
    assert_eq!(url.origin().ascii_serialization(), keyfob);
    assert_eq!(url.path(), "/auth/login");
    assert_eq!(browser.title().await?, "Log in · Keyfob");
    assert!(browser.source().await?.contains(APP_NAME));

    // A new user follows the sign-up link, which keeps the request.
    browser
        .find(Locator::LinkText("Create an account"))
        .await?
        .click()
        .await?;
    browser
        .wait()
        .for_element(Locator::Css("form[action='/auth/signup']"))
        .await?;
    assert_eq!(browser.title().await?, "Create an account · Keyfob");
    fill_in_and_submit(
        &browser,
        &[
            ("email", &user.email),
            ("password", &user.password),
            ("confirm", &user.password),
        ],
        "form[action='/auth/signup'] button[type=submit]",
    )
    .await?;
    // Sign-up mails a confirmation link and logs no one in: the page leads to the login, which
    // keeps the request.
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::LinkText("Log in"))
        .await?
        .click()
        .await?;
    browser
        .wait()
        .for_element(Locator::Css("form[action='/auth/login']"))
        .await?;
    fill_in_and_submit(
        &browser,
        &[("email", &user.email), ("password", &user.password)],
        "form[action='/auth/login'] button[type=submit]",
    )
    .await?;

    // Signed up and logged in: the consent page lists the permissions in words, all ticked.
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("form[action='/auth/consent']"))
        .await?;
    assert_eq!(browser.title().await?, format!("Allow {APP_NAME} · Keyfob"));
    let mut labels = Vec::new();
    for label in browser
        .find_all(Locator::Css("fieldset.permissions label"))
        .await?
    {
        labels.push(label.text().await?);
    }
    assert_eq!(
        labels,
        [
            "See your deals deals.read",
            "Create, change and delete your deals deals.write"
        ]
    );
    for checkbox in browser
        .find_all(Locator::Css("input[name=permission]"))
        .await?
    {
        assert!(checkbox.is_selected().await?);
    }
    let destination = origin.trim_start_matches("http://");
    assert!(browser.source().await?.contains(destination));
    browser
        .find(Locator::Css("button[name=decision][value=allow]"))
        .await?
        .click()
        .await?;

    // Back on the app, which finishes the login and reports.
    let result = browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("result"))
        .await?;
    let url = browser.current_url().await?;
    assert_eq!(url.origin().ascii_serialization(), origin);
    assert_eq!(url.path(), "/callback");
    assert_eq!(
        url.query(),
        None,
        "the app took the code out of the address"
    );
    Ok(serde_json::from_str(&result.text().await?)?)
}
