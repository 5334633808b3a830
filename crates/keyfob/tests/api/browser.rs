//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver). An
//! owner signs up, creates a key, reads it off the page and uses it; then revokes it and logs out.
//!
//! Skipped, with a note, when chromedriver or Chromium is missing, unless `KEYFOB_REQUIRE_BROWSER`
//! is set (see `chrome`).

use fantoccini::{Client, Locator};
use serde_json::Value;

use crate::chrome::{Chrome, Outcome, fill_in_and_submit};
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_signs_up_and_uses_a_key_in_a_real_browser() {
    let Some(chrome) = Chrome::launch().await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let base = app.base.clone();
    chrome
        .run(move |browser| sign_up_and_use_a_key(browser, base))
        .await;
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
    fill_in_and_submit(
        &browser,
        &[
            ("email", &email),
            ("password", PASSWORD),
            ("confirm", PASSWORD),
        ],
        "form[action='/dashboard/signup'] button[type=submit]",
    )
    .await?;

    // Sign-up mails a confirmation link and logs no one in: log in with the new password.
    browser
        .wait()
        .for_element(Locator::LinkText("Back to log in"))
        .await?
        .click()
        .await?;
    browser
        .wait()
        .for_element(Locator::Css("form[action='/dashboard/login']"))
        .await?;
    fill_in_and_submit(
        &browser,
        &[("email", &email), ("password", PASSWORD)],
        "form[action='/dashboard/login'] button[type=submit]",
    )
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

    // Reloaded, the page does not show the key again.
    browser.refresh().await?;
    browser
        .wait()
        .for_element(Locator::Id("shown-already"))
        .await?;
    assert!(!browser.source().await?.contains(&key));

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
    // Revoking asks first, on a page of its own.
    browser
        .find(Locator::Css("a.button.danger"))
        .await?
        .click()
        .await?;
    let name = browser
        .wait()
        .for_element(Locator::Id("confirm-name"))
        .await?;
    assert_eq!(name.text().await?, "from the browser");
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
