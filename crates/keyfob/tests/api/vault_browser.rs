//! Sensitive data straight from a user's browser, in a real browser (headless Chromium, see
//! `chrome`): a credit-application page on another origin (`http://localhost:<port>`; Keyfob is on
//! `http://127.0.0.1:<port>`) logs its user in through Keyfob, then posts the form — with an SSN
//! and a card number — to `/api/creditApplications` with the session's token, across origins
//! (CORS preflight included). The account owner then sees the application in the dashboard's data
//! browser with those fields masked, and the database holds no plaintext of them.
//!
//! Skipped, with a note, when chromedriver or Chromium is missing, unless `KEYFOB_REQUIRE_BROWSER`
//! is set.

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::Value;

use crate::chrome::{Chrome, Outcome, fill_in_and_submit};
use crate::helpers::*;
use crate::session_browser::AppSite;

const SSN: &str = "123-45-6789";
const CARD: &str = "4242 4242 4242 4242";

/// The lender's page: without `code` it starts a login; with one it finishes it and shows the
/// application form, whose answer (Keyfob's status and body) goes into `<pre id="result">`.
const APP_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Credit application</title></head>
<body>
<h1>Apply for credit</h1>
<script>
"use strict";
const config = __CONFIG__;

function base64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function show(result) {
  const pre = document.createElement("pre");
  pre.id = "result";
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
}

async function start() {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  sessionStorage.setItem("pkce_verifier", verifier);
  const query = new URLSearchParams({
    client_id: config.clientId,
    redirect_uri: config.redirectUri,
    permissions: "creditApplications.read,creditApplications.write",
    state: "s1",
    code_challenge: base64url(new Uint8Array(digest)),
    code_challenge_method: "S256",
  });
  location.assign(config.keyfob + "/auth?" + query);
}

function showForm(accessToken) {
  const form = document.createElement("form");
  form.id = "apply";
  form.innerHTML = '<label>Name <input id="name"></label>' +
    '<label>SSN <input id="ssn"></label>' +
    '<label>Card number <input id="card"></label>' +
    '<button type="submit">Apply</button>';
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const response = await fetch(config.keyfob + "/api/creditApplications", {
        method: "POST",
        headers: { "Authorization": "Bearer " + accessToken, "Content-Type": "application/json" },
        body: JSON.stringify({
          amount: 15000,
          primaryApplicant: { name: document.getElementById("name").value,
                              ssn: document.getElementById("ssn").value },
          payment: { cardNumber: document.getElementById("card").value },
        }),
      });
      show({ status: response.status, body: await response.json() });
    } catch (err) {
      show({ failed: String(err) });
    }
  });
  document.body.appendChild(form);
}

async function finish(params) {
  history.replaceState(null, "", location.pathname);
  const response = await fetch(config.keyfob + "/auth/token", {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: params.get("code"),
      client_id: config.clientId,
      code_verifier: sessionStorage.getItem("pkce_verifier"),
      redirect_uri: config.redirectUri,
    }),
  });
  const body = await response.json();
  if (response.status !== 200) {
    show({ exchange: response.status, body: body });
    return;
  }
  showForm(body.access_token);
}

const params = new URLSearchParams(location.search);
if (params.has("code")) {
  finish(params).catch((err) => show({ failed: String(err) }));
} else if (params.has("error")) {
  show({ error: params.get("error") });
} else {
  start().catch((err) => show({ failed: String(err) }));
}
</script>
</body>
</html>
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_application_goes_from_another_origin_to_the_vault_masked() {
    let Some(chrome) = Chrome::launch().await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let owner_email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let account = app.create_account(&owner_email).await;
    let site = AppSite::start(
        &app,
        &account,
        "Lender",
        "creditApplications.read,creditApplications.write",
        APP_PAGE,
    )
    .await;
    let origin = site.origin.clone();

    let flow = {
        let (base, origin) = (app.base.clone(), origin.clone());
        move |browser| apply_then_check_the_dashboard(browser, base, origin, owner_email)
    };
    let (result, dashboard) = chrome.run(flow).await;

    // The page got the record back, masked: the browser never sees the value again either.
    assert_eq!(result["status"], 201, "{result}");
    assert_eq!(
        result["body"]["primaryApplicant"]["ssn"], "***-**-6789",
        "{result}"
    );
    assert_eq!(result["body"]["payment"]["cardNumber"], "************4242");
    assert_eq!(result["body"]["primaryApplicant"]["name"], "Ada Lovelace");
    // The dashboard showed it masked.
    assert!(dashboard.contains("***-**-6789"), "{dashboard}");
    assert!(dashboard.contains("************4242"));
    assert!(!dashboard.contains(SSN) && !dashboard.contains("4242424242424242"));
    // And the database file holds no plaintext of either.
    let raw = raw_database_text(&app).await;
    assert!(
        contains_bytes(&raw, "Ada Lovelace"),
        "the scan reads the records"
    );
    for clear in [SSN, "123456789", CARD, "4242424242424242"] {
        assert!(!contains_bytes(&raw, clear), "{clear} is in the database");
    }
}

/// Logs in through the app, fills and sends the application, then logs into the dashboard as the
/// account's owner and opens the stored application. Answers the app's result and the record's
/// page text.
async fn apply_then_check_the_dashboard(
    browser: Client,
    keyfob: String,
    origin: String,
    owner_email: String,
) -> Outcome<(Value, String)> {
    browser.goto(&format!("{origin}/")).await?;
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::LinkText("Create an account"))
        .await?
        .click()
        .await?;
    browser
        .wait()
        .for_element(Locator::Css("form[action='/auth/signup']"))
        .await?;
    let password = format!("amber lantern {} harbour", uuid::Uuid::new_v4().simple());
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    fill_in_and_submit(
        &browser,
        &[
            ("email", &email),
            ("password", &password),
            ("confirm", &password),
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
        &[("email", &email), ("password", &password)],
        "form[action='/auth/login'] button[type=submit]",
    )
    .await?;
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("button[name=decision][value=allow]"))
        .await?
        .click()
        .await?;

    // Back on the lender's page: fill in the form and send it.
    browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("apply"))
        .await?;
    assert_eq!(
        browser.current_url().await?.origin().ascii_serialization(),
        origin
    );
    fill_in_and_submit(
        &browser,
        &[("name", "Ada Lovelace"), ("ssn", SSN), ("card", CARD)],
        "#apply button[type=submit]",
    )
    .await?;
    let result = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("result"))
        .await?;
    let result: Value = serde_json::from_str(&result.text().await?)?;
    let id = result["body"]["id"].as_str().unwrap_or_default().to_owned();

    // The owner, in the dashboard.
    browser.goto(&format!("{keyfob}/dashboard/login")).await?;
    fill_in_and_submit(
        &browser,
        &[("email", &owner_email), ("password", PASSWORD)],
        "form[action='/dashboard/login'] button[type=submit]",
    )
    .await?;
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("nav a[href='/dashboard/data']"))
        .await?
        .click()
        .await?;
    browser
        .wait()
        .for_element(Locator::Css("a[href='/dashboard/data/creditApplications']"))
        .await?
        .click()
        .await?;
    browser
        .wait()
        .for_element(Locator::Css(&format!(
            "a[href='/dashboard/data/creditApplications/{id}']"
        )))
        .await?
        .click()
        .await?;
    let record = browser
        .wait()
        .for_element(Locator::Id("record-json"))
        .await?
        .text()
        .await?;
    Ok((result, record))
}
