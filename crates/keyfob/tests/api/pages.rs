//! What the dashboard's and the end users' pages show and how their forms behave, read as a browser
//! without JavaScript reads them: secrets shown once after a redirect, confirmation pages before
//! what cannot be undone, names instead of ids in the audit log, form errors tied to their fields,
//! `code` in messages, the first-run commands, consent in words with a way to switch user, and the
//! error page of a bad authorization request.

use reqwest::StatusCode;

use crate::both_backends;
use crate::dashboard::{Browser, location, new_key_in};
use crate::helpers::*;
use crate::routes::{CALLBACK, Fixture};

both_backends! {
    async fn a_new_key_is_shown_once_after_a_redirect(app) {
        let owner = Browser::signed_up(&app).await;
        let csrf = owner.csrf("/dashboard/keys").await;
        let response = owner.post("/dashboard/keys", &[("csrf", &csrf), ("name", "billing")]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let to = location(&response).to_owned();
        assert!(to.starts_with("/dashboard/keys/") && to.ends_with("/created"), "{to}");
        let (status, html) = owner.page(&to).await;
        assert_eq!(status, StatusCode::OK);
        let key = new_key_in(&html);
        app.wait_until_status(&key, 200).await;

        // A reload shows it no more and makes nothing.
        let (status, again) = owner.page(&to).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!again.contains(&key) && again.contains("id=\"shown-already\""), "{again}");
        let account = app.state.store.find_owner_by_email(&owner.email).await.unwrap().unwrap().account_id;
        assert_eq!(app.state.store.list_api_keys(&account).await.unwrap().len(), 1);

        // Another login of the same owner, in another browser, is never shown it.
        let csrf = owner.csrf("/dashboard/keys").await;
        let response = owner.post("/dashboard/keys", &[("csrf", &csrf), ("name", "second")]).await;
        let to = location(&response).to_owned();
        let elsewhere = Browser::new(&app);
        let login = elsewhere.login_as(&owner.email, PASSWORD).await;
        assert_eq!(login.status(), StatusCode::SEE_OTHER);
        let (_, html) = elsewhere.page(&to).await;
        assert!(!html.contains("id=\"new-key\""), "{html}");
        // The copy button's script is allowed by the page's policy, and served.
        let shown = owner.get(&to).await;
        let policy = shown.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        let html = shown.text().await.unwrap();
        assert!(html.contains("data-copy=\"new-key\""), "{html}");
        let script = owner.get("/dashboard/static/copy.js").await;
        assert_eq!(script.status(), StatusCode::OK);
        assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    }

    async fn revoking_asks_first_on_a_page_that_works_without_script(app) {
        let f = Fixture::new(&app).await;
        let path = f.concrete("/dashboard/keys/{id}/revoke");
        let (status, html) = f.owner.page(&path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Revoke the key?") && html.contains(">probe</strong>"), "{html}");
        assert!(html.contains(&format!("action=\"{path}\"")) && html.contains(&f.owner_csrf));
        assert!(html.contains("Cancel"));
        assert_eq!(app.whoami_status(&f.key).await, 200, "asking revokes nothing");
        // The list links to the question, not to the form.
        let (_, list) = f.owner.page("/dashboard/keys").await;
        assert!(list.contains(&format!("href=\"{path}\"")), "{list}");
        for template in [
            "/dashboard/tokens/{jti}/revoke",
            "/dashboard/grants/{id}/revoke",
            "/dashboard/users/{user_id}/remove",
            "/dashboard/apps/{client_id}/delete",
        ] {
            let path = f.concrete(template);
            let (status, html) = f.owner.page(&path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(html.contains(&format!("action=\"{path}\"")), "{path}: {html}");
        }
        // An end user is asked too, before revoking an application's access.
        let path_user = f.concrete("/auth/grants/{id}/revoke");
        let (status, html) = f.user.page(&path_user).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Probe app") && html.contains(&f.user_csrf), "{html}");
        let (_, grants) = f.user.page("/auth/grants").await;
        assert!(grants.contains(&format!("href=\"{path_user}\"")), "{grants}");
                // Another account's key: no such page.
        let stranger = Browser::signed_up(&app).await;
        assert_eq!(stranger.page(&path_of_key(&f)).await.0, StatusCode::NOT_FOUND);
        let response = f.owner.post(&path, &[("csrf", &f.owner_csrf)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        app.wait_until_status(&f.key, 401).await;
        // A revoked key is not asked about again.
        assert_eq!(f.owner.page(&path).await.0, StatusCode::NOT_FOUND);
    }

    async fn the_audit_log_names_keys_and_owners_with_readable_times(app) {
        let f = Fixture::new(&app).await;
        let html = wait_for_page(&f.owner, "/dashboard/audit", "token.minted").await;
        // The key that minted, by name, with its id beside it.
        assert!(html.contains(&format!("<strong title=\"{}\">probe</strong>", f.key_id)), "{html}");
        // The owner who created it, by email.
        assert!(html.contains(&format!(">{}</strong>", f.owner.email)), "{html}");
        assert!(html.contains(" UTC</time>") && html.contains("just now"), "{html}");
        assert!(html.contains("<time datetime=\"20"), "{html}");
        // A bad filter is tied to its field, which takes the focus.
        let (status, html) = f.owner.page("/dashboard/audit?since=someday").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(html.contains("id=\"filter-error\""), "{html}");
        let field = tag_with_id(&html, "since");
        assert!(field.contains("aria-invalid=\"true\"") && field.contains("autofocus"), "{field}");
        assert!(field.contains("filter-error"), "{field}");
        assert!(!tag_with_id(&html, "until").contains("autofocus"));
    }
}

fn path_of_key(f: &Fixture) -> String {
    f.concrete("/dashboard/keys/{id}/revoke")
}

/// The page at `path` once it contains `needle` (the audit log is written in the background).
async fn wait_for_page(browser: &Browser, path: &str, needle: &str) -> String {
    for _ in 0..100 {
        let (status, html) = browser.page(path).await;
        assert_eq!(status, StatusCode::OK);
        if html.contains(needle) {
            return html;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path} never showed {needle}");
}

/// The start tag of the element with `id`.
fn tag_with_id<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let start = html[..at].rfind('<').unwrap();
    let end = at + html[at..].find('>').unwrap();
    &html[start..=end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_error_is_tied_to_its_field_and_code_is_shown_as_code() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let owner = Browser::signed_up(&app).await;
    let csrf = owner.csrf("/dashboard/keys").await;
    let response = owner
        .post(
            "/dashboard/keys",
            &[("csrf", &csrf), ("name", "x"), ("expires_in", "soon")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    let field = tag_with_id(&html, "expires_in");
    assert!(
        field.contains("aria-describedby=\"expires-hint form-error\"")
            && field.contains("aria-invalid=\"true\"")
            && field.contains("autofocus"),
        "{field}"
    );
    assert!(!tag_with_id(&html, "name").contains("aria-invalid"));

    // The application form too: the bad redirect URI's field.
    let csrf = owner.csrf("/dashboard/apps").await;
    let response = owner
        .post(
            "/dashboard/apps",
            &[
                ("csrf", &csrf),
                ("name", "Shop"),
                ("redirect_uris", "http://shop.example.com/cb"),
                ("kind", "public"),
                ("max_permissions", "deals.read"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    let field = tag_with_id(&html, "redirect_uris");
    assert!(
        field.contains("aria-invalid=\"true\"") && field.contains("autofocus"),
        "{field}"
    );
    assert!(!tag_with_id(&html, "max_permissions").contains("autofocus"));

    // Backticks in a message become code; what is between them is text, never markup.
    let anyone = Browser::new(&app);
    let (status, html) = anyone
        .page("/auth?client_id=%3Cscript%3Ealert(1)%3C/script%3E&redirect_uri=https%3A%2F%2Fevil.example%2Fcb")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("<code>client_id</code>"), "{html}");
    assert!(
        html.contains("<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empty_keys_page_gives_the_first_commands_with_the_public_url() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let owner = Browser::signed_up(&app).await;
    let (status, html) = owner.page("/dashboard/keys").await;
    assert_eq!(status, StatusCode::OK);
    let public = app.state.config.issuer();
    assert!(html.contains("First steps"), "{html}");
    assert!(
        html.contains(&format!(
            "curl -s -X POST {public}/auth -H &#34;Authorization: Bearer $KEY&#34;"
        )) || html.contains(&format!(
            "curl -s -X POST {public}/auth -H \"Authorization: Bearer $KEY\""
        )),
        "{html}"
    );
    assert!(html.contains(&format!("{public}/api/deals")), "{html}");
    owner.create_key("first").await;
    let (_, html) = owner.page("/dashboard/keys").await;
    assert!(!html.contains("First steps"));
}

both_backends! {
    async fn an_owner_mints_a_token_with_a_key_and_sees_it_once(app) {
        let f = Fixture::new(&app).await;
        let (status, html) = f.owner.page("/dashboard/tokens/new").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains(&format!("value=\"{}\"", f.key_id)), "{html}");
        let response = f
            .owner
            .post(
                "/dashboard/tokens/new",
                &[("csrf", &f.owner_csrf), ("key", &f.key_id), ("permissions", "deals.read"), ("name", "support, ticket 42"), ("expires", "")],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let to = location(&response).to_owned();
        let (_, html) = f.owner.page(&to).await;
        let start = html.find("id=\"new-token\"").expect("the token, once");
        let start = start + html[start..].find('>').unwrap() + 1;
        let token = html[start..start + html[start..].find('<').unwrap()].trim().to_owned();
        app.wait_until_status(&token, 200).await;
        let (_, again) = f.owner.page(&to).await;
        assert!(!again.contains(&token) && again.contains("shown-already"));
        let (_, list) = f.owner.page("/dashboard/tokens").await;
        assert!(list.contains("support, ticket 42"), "{list}");
        // Audited as the owner's, naming the key.
        let html = wait_for_page(&f.owner, "/dashboard/audit?action=token.minted", "support, ticket 42").await;
        assert!(html.contains(&f.owner.email), "{html}");

        // Nothing beyond what the key holds; the field in error takes the focus.
        let restricted = app.state.store.find_owner_by_email(&f.owner.email).await.unwrap().unwrap().account_id;
        let before = app.state.store.list_tokens(&restricted, 100).await.unwrap().len();
        let response = f
            .owner
            .post(
                "/dashboard/tokens/new",
                &[("csrf", &f.owner_csrf), ("key", "no-such-key"), ("permissions", "deals.read"), ("name", ""), ("expires", "")],
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = f
            .owner
            .post(
                "/dashboard/tokens/new",
                &[("csrf", &f.owner_csrf), ("key", &f.key_id), ("permissions", "not a permission!"), ("name", ""), ("expires", "")],
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let html = response.text().await.unwrap();
        assert!(tag_with_id(&html, "permissions").contains("autofocus"), "{html}");
        assert_eq!(app.state.store.list_tokens(&restricted, 100).await.unwrap().len(), before);
    }

    async fn the_authorization_error_page_shows_what_was_received_not_what_is_registered(app) {
        let f = Fixture::new(&app).await;
        let anyone = Browser::new(&app);
        let query = serde_urlencoded::to_string([
            ("client_id", f.client_id.as_str()),
            ("redirect_uri", "https://client.example.com/elsewhere"),
            ("response_type", "code"),
            ("scope", "deals.read"),
        ])
        .unwrap();
        let response = anyone.get(&format!("/auth?{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "no redirect");
        let html = response.text().await.unwrap();
        assert!(html.contains("<code>invalid_request</code>"), "{html}");
        assert!(html.contains("<code>https://client.example.com/elsewhere</code>"), "{html}");
        assert!(html.contains(&format!("<code>{}</code>", f.client_id)), "{html}");
        assert!(!html.contains(CALLBACK), "the registered address is not shown: {html}");

        let response = anyone.get("/auth?client_id=nobody&response_type=code").await;
        let html = response.text().await.unwrap();
        assert!(html.contains("<code>invalid_client</code>") && html.contains("<code>nobody</code>"), "{html}");
        let html = anyone.get("/auth?response_type=code").await.text().await.unwrap();
        assert!(html.contains("no <code>client_id</code> was received"), "{html}");
    }

    async fn consent_reads_in_words_and_offers_to_switch_user(app) {
        let f = Fixture::new(&app).await;
        let query = serde_urlencoded::to_string([
            ("client_id", f.client_id.as_str()),
            ("redirect_uri", CALLBACK),
            ("response_type", "code"),
            ("scope", "deals.read deals.write"),
            ("state", "st8"),
        ])
        .unwrap();
        // Without registered links the page shows none.
        let (status, html) = f.user.page(&format!("/auth?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(!html.contains("app-logo") && !html.contains("id=\"app-policy\""), "{html}");

        // The owner registers the logo, home page and privacy policy; a bad one is refused by name.
        let path = f.concrete("/dashboard/apps/{client_id}");
        let links = |logo: &'static str| {
            [
                ("csrf", f.owner_csrf.clone()),
                ("logo_uri", logo.to_owned()),
                ("homepage_uri", "https://client.example.com/".to_owned()),
                ("policy_uri", "https://client.example.com/privacy".to_owned()),
            ]
        };
        let response = f.owner.http.post(f.owner.url(&format!("{path}/links"))).form(&links("http://evil.test/logo.png")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let html = response.text().await.unwrap();
        assert!(html.contains("<code>logo_uri</code>"), "{html}");
        assert!(tag_with_id(&html, "logo_uri").contains("autofocus"), "{html}");
        let response = f.owner.http.post(f.owner.url(&format!("{path}/links"))).form(&links("https://cdn.example.net/logo.png")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let row = app.state.store.find_app(&f.client_id.as_str().into()).await.unwrap().unwrap();
        assert_eq!(row.links.policy_uri.as_deref(), Some("https://client.example.com/privacy"));
        wait_for_page(&f.owner, "/dashboard/audit?action=app.updated", "app.updated").await;

        let response = f.user.get(&format!("/auth?{query}")).await;
        let policy = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(policy.contains("img-src 'self' https://cdn.example.net"), "{policy}");
        let html = response.text().await.unwrap();
        assert!(html.contains("src=\"https://cdn.example.net/logo.png\""), "{html}");
        assert!(html.contains("href=\"https://client.example.com/privacy\""), "{html}");
        assert!(html.contains("href=\"https://client.example.com/\""), "{html}");
        assert!(html.contains("Create, change and delete your deals"), "{html}");
        assert!(html.contains(&f.user_email) && html.contains("id=\"not-you\""), "{html}");

        // “Not you?” logs out and goes back to the login with the request kept.
        let request = value_of(&html, "request");
        let response = f
            .user
            .post("/auth/logout", &[("csrf", &f.user_csrf), ("request", &request)])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let to = location(&response).to_owned();
        assert!(to.starts_with("/auth/login?"), "{to}");
        assert!(to.contains(&format!("client_id={}", f.client_id)) && to.contains("state=st8"), "{to}");
        assert_eq!(f.user.get("/auth/grants").await.status(), StatusCode::SEE_OTHER, "logged out");
        let (status, html) = f.user.page(&to).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Probe app"), "the login page names the app: {html}");
    }
}

/// The value of the hidden field `name`, with the character references the templates write
/// undone.
fn value_of(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name}"))
        + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end]
        .replace("&amp;", "&")
        .replace("&#38;", "&")
        .replace("&#61;", "=")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
}
