//! The dashboard, driven as a browser without JavaScript would: forms posted with the CSRF token
//! read from the page, cookies kept, redirects not followed. Sign-up and login, keys shown once and
//! revoked, tokens listed and revoked, CSRF, rate limits, tenant isolation, cookies and headers.

use std::net::IpAddr;
use std::sync::Arc;

use keyfob::dashboard::{FORM_COOKIE, LOGIN_COOKIE};
use keyfob_domain::ids::AccountId;
use keyfob_domain::secret::hash_secret;
use keyfob_domain::time::Timestamp;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, StatusCode, redirect};
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

const LOGIN_FAILED: &str = "The email or password is incorrect.";

/// One browser: its own cookies, no redirects followed.
pub(crate) struct Browser {
    pub(crate) http: Client,
    pub(crate) base: String,
    pub(crate) email: String,
}

impl Browser {
    pub(crate) fn new(app: &TestApp) -> Browser {
        Browser::from_address(app, None)
    }

    /// A browser whose requests come from `ip` (any 127.x.y.z address reaches the server).
    pub(crate) fn from_address(app: &TestApp, ip: Option<IpAddr>) -> Browser {
        Browser::with_client(app, Client::builder().local_address(ip))
    }

    /// A browser behind a proxy that reports it as `forwarded_for` in `X-Forwarded-For`.
    fn forwarded_for(app: &TestApp, forwarded_for: &str) -> Browser {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-forwarded-for", forwarded_for.parse().unwrap());
        Browser::with_client(app, Client::builder().default_headers(headers))
    }

    /// A browser with a cookie jar that does not follow redirects, built on `builder`.
    fn with_client(app: &TestApp, builder: reqwest::ClientBuilder) -> Browser {
        let http = builder
            .cookie_store(true)
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        Browser {
            http,
            base: app.base.clone(),
            email: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
        }
    }

    /// A browser that has signed up, then logged in with the password it chose (sign-up itself
    /// logs no one in: it mails a confirmation link).
    pub(crate) async fn signed_up(app: &TestApp) -> Browser {
        let browser = Browser::new(app);
        let response = browser.signup(PASSWORD, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.text().await.unwrap().contains("Check your inbox"));
        let response = browser.login(PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/keys");
        browser
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// A page's status and HTML.
    pub(crate) async fn page(&self, path: &str) -> (StatusCode, String) {
        let response = self.get(path).await;
        (response.status(), response.text().await.unwrap())
    }

    /// The CSRF token of the form on the page at `path`.
    pub(crate) async fn csrf(&self, path: &str) -> String {
        let (status, html) = self.page(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}");
        csrf_in(&html)
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn signup(&self, password: &str, confirm: &str) -> Response {
        let csrf = self.csrf("/dashboard/signup").await;
        self.post(
            "/dashboard/signup",
            &[
                ("csrf", &csrf),
                ("email", &self.email),
                ("password", password),
                ("confirm", confirm),
            ],
        )
        .await
    }

    pub(crate) async fn login_as(&self, email: &str, password: &str) -> Response {
        let csrf = self.csrf("/dashboard/login").await;
        self.post(
            "/dashboard/login",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
    }

    pub(crate) async fn login(&self, password: &str) -> Response {
        self.login_as(&self.email, password).await
    }

    pub(crate) async fn logout(&self) -> Response {
        let csrf = self.csrf("/dashboard/keys").await;
        self.post("/dashboard/logout", &[("csrf", &csrf)]).await
    }

    /// Creates a key through the form and returns it, read from the page the form redirects
    /// to, which shows it once.
    pub(crate) async fn create_key(&self, name: &str) -> String {
        let csrf = self.csrf("/dashboard/keys").await;
        let response = self
            .post("/dashboard/keys", &[("csrf", &csrf), ("name", name)])
            .await;
        new_key_in(&self.follow(response).await)
    }

    /// Follows a form's redirect (post-redirect-get) and answers the page it leads to.
    pub(crate) async fn follow(&self, response: Response) -> String {
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "a redirect");
        let to = location(&response).to_owned();
        let (status, html) = self.page(&to).await;
        assert_eq!(status, StatusCode::OK, "GET {to}");
        html
    }

    pub(crate) async fn revoke(&self, what: &str, id: &str) -> Response {
        let csrf = self.csrf(&format!("/dashboard/{what}")).await;
        self.post(
            &format!("/dashboard/{what}/{id}/revoke"),
            &[("csrf", &csrf)],
        )
        .await
    }

    /// Whether this browser's login is live.
    pub(crate) async fn signed_in(&self) -> bool {
        let response = self.get("/dashboard/keys").await;
        match response.status() {
            StatusCode::OK => true,
            StatusCode::SEE_OTHER => {
                assert_eq!(location(&response), "/dashboard/login");
                false
            }
            other => panic!("unexpected status {other}"),
        }
    }
}

/// The value of the first `csrf` field in a page.
pub(crate) fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    let end = start + html[start..].find('"').unwrap();
    let token = html[start..end].to_owned();
    // A login's token (256 random bits), or a signed pre-login form token.
    assert!(matches!(token.len(), 43 | 75), "CSRF token {token:?}");
    token
}

/// The key shown on the page that answers the create form.
pub(crate) fn new_key_in(html: &str) -> String {
    let start = html
        .find("id=\"new-key\"")
        .expect("the new key on the page");
    let start = start + html[start..].find('>').unwrap() + 1;
    let end = start + html[start..].find('<').unwrap();
    let key = html[start..end].trim().to_owned();
    assert!(key.starts_with("kf_"), "{key}");
    key
}

pub(crate) fn location(response: &Response) -> &str {
    response
        .headers()
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
}

/// The `Set-Cookie` line that sets `name`.
fn set_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

/// The value a `Set-Cookie` line sets.
fn cookie_value(line: &str) -> &str {
    let pair = line.split(';').next().unwrap();
    pair.split_once('=').unwrap().1
}

/// The attributes of a `Set-Cookie` line, lower-cased.
fn cookie_attributes(line: &str) -> Vec<String> {
    line.split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

pub(crate) async fn account_of(app: &TestApp, email: &str) -> String {
    app.state
        .store
        .find_owner_by_email(email)
        .await
        .unwrap()
        .expect("the owner exists")
        .account_id
        .into_string()
}

both_backends! {
    async fn sign_up_log_in_and_use_a_new_key(app) {
        let browser = Browser::signed_up(&app).await;
        let account = account_of(&app, &browser.email).await;
        assert!(browser.signed_in().await);
        assert_eq!(browser.logout().await.status(), StatusCode::SEE_OTHER);
        assert!(!browser.signed_in().await);

        let response = browser.login(PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/keys");
        let (status, html) = browser.page("/dashboard/keys").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains(&browser.email),
            "the page names who is signed in"
        );
        assert!(html.contains("no API keys yet"));

        let key = browser.create_key("billing service").await;
        let (_, html) = browser.page("/dashboard/keys").await;
        assert!(html.contains("<span class=\"empty\">never</span>"), "not used yet: {html}");
        // This node accepts the key at once, without waiting for the change feed.
        let response = app.get("/auth/whoami", &key).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["kind"], "api_key");
        assert_eq!(body["account_id"], account.as_str());

        // Listed by name and prefix; the key itself is never shown again.
        let rows = app.state.store.list_api_keys(&AccountId::from(account.as_str())).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "billing service");
        assert_eq!(rows[0].key_hash, hash_secret(&key));
        let (_, html) = browser.page("/dashboard/keys").await;
        assert!(html.contains("billing service"));
        assert!(html.contains(&rows[0].prefix));
        assert!(!html.contains(&key), "the key is shown only once");
        assert!(!html.contains(&key[rows[0].prefix.len()..]));
        let (_, tokens) = browser.page("/dashboard/tokens").await;
        assert!(!tokens.contains(&key));

        // The use above shows as "last used" once the batch of uses is written.
        let mut last_used = None;
        for _ in 0..60 {
            last_used = app.state.store.list_api_keys(&AccountId::from(account.as_str())).await.unwrap()[0].last_used_at;
            if last_used.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let last_used = last_used.expect("the use is recorded").rfc3339();
        let (_, html) = browser.page("/dashboard/keys").await;
        assert!(html.contains(&format!("<time datetime=\"{last_used}\">")), "{html}");

        // `/dashboard` leads an owner to the keys.
        let response = browser.get("/dashboard").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/keys");
    }

    async fn a_revoked_key_is_refused_at_once(app) {
        let browser = Browser::signed_up(&app).await;
        let account = account_of(&app, &browser.email).await;
        let key = browser.create_key("deploys").await;
        let other = browser.create_key("kept").await;
        assert_eq!(app.whoami_status(&key).await, 200);
        let id = app
            .state
            .store
            .list_api_keys(&AccountId::from(account.as_str()))
            .await
            .unwrap()
            .into_iter()
            .find(|row| row.name == "deploys")
            .unwrap()
            .id;

        let response = browser.revoke("keys", &id).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/keys?done=key-revoked");
        assert_eq!(
            app.whoami_status(&key).await,
            401,
            "refused without waiting"
        );
        assert_eq!(app.whoami_status(&other).await, 200, "only that key");

        let (_, html) = browser.page("/dashboard/keys?done=key-revoked").await;
        assert!(html.contains("The key was revoked"));
        assert!(html.contains("revoked</span>"));
        assert!(
            !html.contains(&format!("/dashboard/keys/{id}/revoke")),
            "no revoke button left"
        );
        // Revoking again finds no live key.
        let response = browser.revoke("keys", &id).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    async fn minted_tokens_are_listed_and_revocable(app) {
        let browser = Browser::signed_up(&app).await;
        let account = account_of(&app, &browser.email).await;
        let key = browser.create_key("minter").await;
        let token = app
            .mint_token(&key, &["deals.read", "services.write"])
            .await;
        let jti = app.state.store.list_tokens(&AccountId::from(account.as_str()), 10).await.unwrap()[0]
            .jti
            .clone();

        let (status, html) = browser.page("/dashboard/tokens").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains(jti.as_str()));
        assert!(html.contains("deals.read, services.write"), "{html}");
        assert!(html.contains("minter ("), "names the key that minted it");
        assert!(html.contains("status-active"));
        assert!(
            !html.contains(&token),
            "the token itself is not stored or shown"
        );

        let response = browser.revoke("tokens", &jti).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/tokens?done=token-revoked");
        assert_eq!(
            app.whoami_status(&token).await,
            401,
            "refused without waiting"
        );
        assert_eq!(
            app.whoami_status(&key).await,
            200,
            "the key that minted it still works"
        );
        let (_, html) = browser.page("/dashboard/tokens").await;
        assert!(html.contains("revoked</span>"));
        assert!(!html.contains(&format!("/dashboard/tokens/{jti}/revoke")));
        assert_eq!(
            browser.revoke("tokens", &jti).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    async fn forms_without_the_right_csrf_token_change_nothing(app) {
        // Before login: the double-submit token of sign-up and login.
        let stranger = Browser::new(&app);
        let response = stranger
            .post(
                "/dashboard/signup",
                &[
                    ("email", stranger.email.as_str()),
                    ("password", PASSWORD),
                    ("confirm", PASSWORD),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("Nothing was changed")
        );
        stranger.csrf("/dashboard/signup").await; // now the browser has the cookie
        let wrong = "A".repeat(43);
        let response = stranger
            .post(
                "/dashboard/signup",
                &[
                    ("csrf", wrong.as_str()),
                    ("email", &stranger.email),
                    ("password", PASSWORD),
                    ("confirm", PASSWORD),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(
            app.state
                .store
                .find_owner_by_email(&stranger.email)
                .await
                .unwrap()
                .is_none()
        );

        let owner = Browser::signed_up(&app).await;
        let account = account_of(&app, &owner.email).await;
        let other = Browser::new(&app);
        let response = other
            .post(
                "/dashboard/login",
                &[
                    ("csrf", wrong.as_str()),
                    ("email", &owner.email),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(set_cookie(response.headers(), LOGIN_COOKIE).is_none());
        assert!(!other.signed_in().await);

        // Signed in: the login's token. Missing, wrong, or another login's.
        let intruder = Browser::signed_up(&app).await;
        let foreign = intruder.csrf("/dashboard/keys").await;
        for csrf in [None, Some(wrong.as_str()), Some(""), Some(foreign.as_str())] {
            let mut form = vec![("name", "sneaky")];
            if let Some(csrf) = csrf {
                form.push(("csrf", csrf));
            }
            let response = owner.post("/dashboard/keys", &form).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{csrf:?}");
            let html = response.text().await.unwrap();
            assert!(!html.contains("kf_"), "no key on a refused form");
        }
        assert!(
            app.state
                .store
                .list_api_keys(&AccountId::from(account.as_str()))
                .await
                .unwrap()
                .is_empty()
        );

        let key = owner.create_key("real").await;
        let id = app.state.store.list_api_keys(&AccountId::from(account.as_str())).await.unwrap()[0]
            .id
            .clone();
        let response = owner
            .post(
                &format!("/dashboard/keys/{id}/revoke"),
                &[("csrf", foreign.as_str())],
            )
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = owner
            .post(&format!("/dashboard/keys/{id}/revoke"), &[])
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.whoami_status(&key).await, 200);
        assert!(
            app.state.store.list_api_keys(&AccountId::from(account.as_str())).await.unwrap()[0]
                .revoked_at
                .is_none()
        );

        let token = app.mint_token(&key, &["deals.read"]).await;
        let jti = app.state.store.list_tokens(&AccountId::from(account.as_str()), 10).await.unwrap()[0]
            .jti
            .clone();
        let response = owner
            .post(
                &format!("/dashboard/tokens/{jti}/revoke"),
                &[("csrf", wrong.as_str())],
            )
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.whoami_status(&token).await, 200);

        let response = owner
            .post("/dashboard/logout", &[("csrf", wrong.as_str())])
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(
            owner.signed_in().await,
            "a forged logout does not end the login"
        );
    }

    async fn a_failed_login_does_not_say_which_part_was_wrong(app) {
        let known = Browser::new(&app);
        app.create_account(&known.email).await;

        let wrong_password = known.login("not the password at all").await;
        assert_eq!(wrong_password.status(), StatusCode::BAD_REQUEST);
        assert!(set_cookie(wrong_password.headers(), LOGIN_COOKIE).is_none());
        let wrong_password = wrong_password.text().await.unwrap();

        let unknown = Browser::new(&app);
        let unknown_email = unknown.login(PASSWORD).await;
        assert_eq!(unknown_email.status(), StatusCode::BAD_REQUEST);
        let unknown_email = unknown_email.text().await.unwrap();

        for html in [&wrong_password, &unknown_email] {
            assert!(html.contains(LOGIN_FAILED), "{html}");
            let lower = html.to_lowercase();
            for telltale in [
                "unknown",
                "no such",
                "not found",
                "does not exist",
                "not registered",
            ] {
                assert!(!lower.contains(telltale), "{html}");
            }
        }
        // Apart from the email typed back into the form, the two answers are the same page.
        assert_eq!(
            wrong_password.replace(&known.email, "EMAIL"),
            unknown_email
                .replace(&unknown.email, "EMAIL")
                .replace(&csrf_in(&unknown_email), &csrf_in(&wrong_password)),
        );
        assert!(!known.signed_in().await);

        let response = known.login(PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(known.signed_in().await);
    }

    async fn login_attempts_are_limited_per_email_and_address_and_per_ip(app) {
        let limit = app.state.config.login_attempts_per_minute;
        let ip = |last: u8| Some(IpAddr::from([127, 0, 0, last]));

        // Per email and address: one address guessing one email is refused, even with the
        // password; the owner elsewhere is not (see `logins` for the other budgets).
        let target = Browser::from_address(&app, ip(1));
        app.create_account(&target.email).await;
        for _ in 0..app.state.config.login_attempts_per_email_and_address {
            assert_eq!(
                target.login("wrong password!").await.status(),
                StatusCode::BAD_REQUEST
            );
        }
        let refused = target.login("wrong password!").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=15 * 60).contains(&retry_after), "{retry_after}");
        assert!(refused.text().await.unwrap().contains("Too many attempts"));
        let response = target.login(PASSWORD).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(set_cookie(response.headers(), LOGIN_COOKIE).is_none());
        let elsewhere = Browser::from_address(&app, ip(2));
        let response = elsewhere.login_as(&target.email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);

        // Per IP: one client trying many addresses is refused, even for a right password.
        let sprayer = Browser::from_address(&app, ip(3));
        for n in 0..limit {
            let response = sprayer
                .login_as(&format!("nobody{n}@example.com"), PASSWORD)
                .await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        }
        let victim = Browser::from_address(&app, ip(4));
        app.create_account(&victim.email).await;
        let response = sprayer.login_as(&victim.email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().contains_key("retry-after"));

        // Other clients and other emails are not affected.
        let response = victim.login(PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(victim.signed_in().await);
    }

    async fn an_account_never_sees_or_revokes_another_accounts_credentials(app) {
        let alice = Browser::signed_up(&app).await;
        let bob = Browser::signed_up(&app).await;
        let bob_account = account_of(&app, &bob.email).await;
        let alice_key = alice.create_key("alice key").await;
        let bob_key = bob.create_key("bob secret project").await;
        let bob_token = app.mint_token(&bob_key, &["deals.read"]).await;
        let bob_key_row = app
            .state
            .store
            .list_api_keys(&AccountId::from(bob_account.as_str()))
            .await
            .unwrap()
            .remove(0);
        let bob_jti = app.state.store.list_tokens(&AccountId::from(bob_account.as_str()), 10).await.unwrap()[0]
            .jti
            .clone();
        app.mint_token(&alice_key, &["deals.write"]).await;

        let (_, keys) = alice.page("/dashboard/keys").await;
        assert!(keys.contains("alice key"));
        let (_, tokens) = alice.page("/dashboard/tokens").await;
        assert!(tokens.contains("deals.write"));
        for html in [&keys, &tokens] {
            assert!(!html.contains("bob secret project"));
            assert!(!html.contains(&bob_key_row.prefix));
            assert!(!html.contains(bob_key_row.id.as_str()));
            assert!(!html.contains(bob_jti.as_str()));
            assert!(!html.contains(&bob.email));
        }

        // Posting Bob's ids from Alice's login finds nothing and changes nothing.
        assert_eq!(
            alice.revoke("keys", &bob_key_row.id).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            alice.revoke("tokens", &bob_jti).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(app.whoami_status(&bob_key).await, 200);
        assert_eq!(app.whoami_status(&bob_token).await, 200);
        let row = app
            .state
            .store
            .list_api_keys(&AccountId::from(bob_account.as_str()))
            .await
            .unwrap()
            .remove(0);
        assert!(row.revoked_at.is_none());
        let token = app.state.store.find_token(&bob_jti).await.unwrap().unwrap();
        assert!(token.revoked_at.is_none());

        // Bob sees and revokes his own.
        let (_, tokens) = bob.page("/dashboard/tokens").await;
        assert!(tokens.contains(bob_jti.as_str()));
        assert!(!tokens.contains("deals.write"), "not Alice's token");
        assert_eq!(
            bob.revoke("tokens", &bob_jti).await.status(),
            StatusCode::SEE_OTHER
        );
        assert_eq!(app.whoami_status(&bob_token).await, 401);
        assert_eq!(app.whoami_status(&alice_key).await, 200);
    }

    async fn logout_ends_the_login_on_the_server(app) {
        let browser = Browser::signed_up(&app).await;
        browser.logout().await;
        let login = browser.login(PASSWORD).await;
        let token = cookie_value(set_cookie(login.headers(), LOGIN_COOKIE).unwrap()).to_owned();
        assert_eq!(token.len(), 43, "256 random bits, base64url");
        // Only the hash is stored.
        let now = Timestamp::now();
        assert!(
            app.state
                .store
                .find_owner_login(&hash_secret(&token), now)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            app.state
                .store
                .find_owner_login(&token, now)
                .await
                .unwrap()
                .is_none()
        );

        let response = browser.logout().await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/login");
        let cleared =
            set_cookie(response.headers(), LOGIN_COOKIE).expect("the cookie is cleared");
        assert_eq!(cookie_value(cleared), "");
        assert!(
            cookie_attributes(cleared).contains(&"max-age=0".to_owned()),
            "{cleared}"
        );
        assert!(!browser.signed_in().await);
        assert!(
            app.state
                .store
                .find_owner_login(&hash_secret(&token), now)
                .await
                .unwrap()
                .is_none()
        );

        // The old cookie, replayed, opens nothing.
        let replay = Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        let response = replay
            .get(app.url("/dashboard/keys"))
            .header("Cookie", format!("{LOGIN_COOKIE}={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/login");
    }

    async fn signing_in_again_starts_a_new_login(app) {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        app.create_account(&email).await;
        // By hand, so the test chooses which cookies go with each request.
        let http = Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        let page = http.get(app.url("/dashboard/login")).send().await.unwrap();
        let csrf = cookie_value(set_cookie(page.headers(), FORM_COOKIE).unwrap()).to_owned();
        let login = |token: Option<String>| {
            let mut cookies = format!("{FORM_COOKIE}={csrf}");
            if let Some(token) = token {
                cookies.push_str(&format!("; {LOGIN_COOKIE}={token}"));
            }
            http.post(app.url("/dashboard/login"))
                .header("Cookie", cookies)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("email", email.as_str()),
                    ("password", PASSWORD),
                ])
                .send()
        };
        let issued = |response: &Response| {
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            cookie_value(set_cookie(response.headers(), LOGIN_COOKIE).unwrap()).to_owned()
        };
        let live = |token: String| {
            let store = app.state.store.clone();
            async move {
                store
                    .find_owner_login(&hash_secret(&token), Timestamp::now())
                    .await
                    .unwrap()
                    .is_some()
            }
        };

        let first = issued(&login(None).await.unwrap());
        assert!(live(first.clone()).await);
        // Signing in again replaces the login the browser had.
        let second = issued(&login(Some(first.clone())).await.unwrap());
        assert_ne!(second, first);
        assert!(!live(first).await);
        assert!(live(second.clone()).await);
        // A login token chosen by someone else is never adopted.
        let planted = "P".repeat(43);
        let third = issued(&login(Some(planted.clone())).await.unwrap());
        assert_ne!(third, planted);
        assert!(!live(planted).await);
        assert!(live(third).await);
    }

    async fn cookies_are_http_only_same_site_and_scoped(app) {
        let browser = Browser::new(&app);
        let page = browser.get("/dashboard/signup").await;
        let form = set_cookie(page.headers(), FORM_COOKIE)
            .expect("the form cookie")
            .to_owned();
        let csrf = csrf_in(&page.text().await.unwrap());
        assert_eq!(cookie_value(&form), csrf);
        let attributes = cookie_attributes(&form);
        for expected in ["httponly", "samesite=strict", "path=/dashboard"] {
            assert!(attributes.contains(&expected.to_owned()), "{form}");
        }
        assert!(
            !attributes.contains(&"secure".to_owned()),
            "plain HTTP: {form}"
        );
        // The same browser keeps its token across pages (several tabs keep working).
        assert_eq!(browser.csrf("/dashboard/login").await, csrf);

        let response = browser
            .post(
                "/dashboard/signup",
                &[
                    ("csrf", csrf.as_str()),
                    ("email", &browser.email),
                    ("password", PASSWORD),
                    ("confirm", PASSWORD),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(set_cookie(response.headers(), LOGIN_COOKIE).is_none(), "sign-up logs no one in");
        let response = browser.login(PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let token = set_cookie(response.headers(), LOGIN_COOKIE).expect("the login cookie");
        let attributes = cookie_attributes(token);
        for expected in [
            "httponly",
            "samesite=lax",
            "path=/dashboard",
            "max-age=43200",
        ] {
            assert!(attributes.contains(&expected.to_owned()), "{token}");
        }
        assert!(
            !attributes.contains(&"secure".to_owned()),
            "plain HTTP: {token}"
        );
        // The stored login lasts as long as the cookie.
        let row = app
            .state
            .store
            .find_owner_login(&hash_secret(cookie_value(token)), Timestamp::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.expires_at.since(row.created_at), std::time::Duration::from_secs(12 * 3600));
        assert_eq!(row.account_id, account_of(&app, &browser.email).await);
    }

    async fn pages_carry_security_headers_and_label_their_inputs(app) {
        let browser = Browser::new(&app);
        let mut pages = vec![
            browser.get("/dashboard/login").await,
            browser.get("/dashboard/signup").await,
        ];
        let browser = Browser::signed_up(&app).await;
        pages.push(browser.get("/dashboard/keys").await);
        pages.push(browser.get("/dashboard/tokens").await);
        pages.push(browser.get("/dashboard/data").await);
        pages.push(browser.get("/dashboard/audit").await);
        pages.push(browser.get("/dashboard/no-such-page").await);
        for response in pages {
            let url = response.url().path().to_owned();
            let headers = response.headers().clone();
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let csp = header("content-security-policy");
            // The keys page runs Keyfob's own copy-button script, and nothing else; the others
            // run none.
            let scripts = if url == "/dashboard/keys" {
                "script-src 'self'"
            } else {
                "script-src 'none'"
            };
            for directive in [
                "default-src 'self'",
                "frame-ancestors 'none'",
                "form-action 'self'",
                scripts,
            ] {
                assert!(csp.contains(directive), "{url}: {csp}");
            }
            assert!(!csp.contains("unsafe-inline"), "{url}: {csp}");
            assert_eq!(header("x-frame-options"), "DENY", "{url}");
            assert_eq!(header("x-content-type-options"), "nosniff", "{url}");
            assert_eq!(header("referrer-policy"), "no-referrer", "{url}");
            assert_eq!(header("cache-control"), "no-store", "{url}");
            assert!(header("content-type").starts_with("text/html"), "{url}");
            let html = response.text().await.unwrap();
            assert!(html.starts_with("<!doctype html>"), "{url}");
            assert!(html.contains("<html lang=\"en\">"));
            // No inline script: at most Keyfob's own copy-button script, by address.
            let without_copy = html.replace(
                "<script src=\"/dashboard/static/copy.js\" defer></script>",
                "",
            );
            assert!(!without_copy.contains("<script"), "{url}: no other script");
            assert!(
                !html.contains("style=\""),
                "{url}: no inline style (the CSP forbids it)"
            );
            every_input_is_labelled(&url, &html);
        }
        let css = browser.get("/dashboard/static/app.css").await;
        assert_eq!(css.status(), StatusCode::OK);
        assert!(
            css.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/css")
        );
        assert!(css.text().await.unwrap().contains("font-family"));
        assert_eq!(
            browser.get("/dashboard/no-such-page").await.status(),
            StatusCode::NOT_FOUND
        );
    }

    async fn user_input_is_escaped(app) {
        let browser = Browser::signed_up(&app).await;
        let name = "<script>alert(1)</script> & \"quotes\"";
        let key = browser.create_key(name).await;
        let (_, html) = browser.page("/dashboard/keys").await;
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62; &#38; &#34;quotes&#34;"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
        assert_eq!(app.whoami_status(&key).await, 200);

        // A name the rules refuse is shown again with the reason, and nothing is created.
        let csrf = browser.csrf("/dashboard/keys").await;
        let long = "x".repeat(101);
        let response = browser
            .post(
                "/dashboard/keys",
                &[("csrf", csrf.as_str()), ("name", &long)],
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let html = response.text().await.unwrap();
        assert!(html.contains("1 to 100 characters"), "{html}");
        assert!(html.contains(&format!("value=\"{long}\"")));
        let account = account_of(&app, &browser.email).await;
        assert_eq!(
            app.state.store.list_api_keys(&AccountId::from(account.as_str())).await.unwrap().len(),
            1
        );
    }

    async fn sign_up_rules_are_enforced(app) {
        let browser = Browser::new(&app);
        let cases = [
            (
                browser.signup(PASSWORD, "something else entirely").await,
                StatusCode::BAD_REQUEST,
                "do not match",
            ),
            (
                browser.signup("short", "short").await,
                StatusCode::BAD_REQUEST,
                "at least 10 characters",
            ),
        ];
        for (response, status, message) in cases {
            assert_eq!(response.status(), status);
            let html = response.text().await.unwrap();
            assert!(html.contains(message), "{html}");
            assert!(
                html.contains(&format!("value=\"{}\"", browser.email)),
                "the email is kept"
            );
        }
        assert!(
            app.state
                .store
                .find_owner_by_email(&browser.email)
                .await
                .unwrap()
                .is_none()
        );

        let csrf = browser.csrf("/dashboard/signup").await;
        let response = browser
            .post(
                "/dashboard/signup",
                &[
                    ("csrf", csrf.as_str()),
                    ("email", "not-an-email"),
                    ("password", PASSWORD),
                    ("confirm", PASSWORD),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("not a valid email address")
        );

        // A taken email is not said to be taken: the answer is a new sign-up's, and the holder
        // of the address is told by mail instead.
        app.create_account(&browser.email).await;
        let response = browser.signup(PASSWORD, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        let html = response.text().await.unwrap();
        assert!(html.contains("Check your inbox") && !html.contains("already"), "{html}");
        assert!(!browser.signed_in().await);
        let mail = crate::mailbox::outbox_mail(&app, &browser.email, "You already have an account").await;
        assert!(mail.link("/dashboard/login").starts_with("/dashboard/login"));
    }

    async fn signed_out_visitors_are_sent_to_the_login_page(app) {
        let browser = Browser::new(&app);
        for path in ["/dashboard", "/dashboard/keys", "/dashboard/tokens"] {
            let response = browser.get(path).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
            assert_eq!(location(&response), "/dashboard/login", "{path}");
        }
        let response = browser
            .post(
                "/dashboard/keys",
                &[("name", "sneaky"), ("csrf", &"A".repeat(43))],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/login");
        let response = browser.post("/dashboard/keys/anything/revoke", &[]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        // A bogus login cookie is no login either.
        let response = Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap()
            .get(app.url("/dashboard/keys"))
            .header("Cookie", format!("{LOGIN_COOKIE}={}", "x".repeat(43)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let (status, html) = browser.page("/dashboard/login").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains("href=\"/dashboard/signup\""),
            "sign-up is open by default"
        );
        assert!(
            !html.contains("/dashboard/logout"),
            "no logout form before login"
        );
    }
}

/// Every visible input of `html` has a `<label for>` naming it.
fn every_input_is_labelled(url: &str, html: &str) {
    for (at, _) in html.match_indices("<input ") {
        let tag = &html[at..at + html[at..].find('>').unwrap()];
        if tag.contains("type=\"hidden\"") {
            continue;
        }
        let id_start = tag
            .find(" id=\"")
            .unwrap_or_else(|| panic!("{url}: {tag} has no id"))
            + 5;
        let id = &tag[id_start..id_start + tag[id_start..].find('"').unwrap()];
        assert!(
            html.contains(&format!("<label for=\"{id}\"")),
            "{url}: no label for {id}"
        );
    }
}

/// An application with `adjust` applied to the test configuration (SQLite).
async fn spawn_adjusted(adjust: impl FnOnce(&mut keyfob::Config)) -> TestApp {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let mut config = test_config(&db);
    adjust(&mut config);
    spawn_with(config, Arc::new(db)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_behind_https() {
    let app =
        spawn_adjusted(|config| config.public_url = Some("https://keyfob.example".into())).await;
    let browser = Browser::new(&app);
    let page = browser.get("/dashboard/login").await;
    let form = set_cookie(page.headers(), FORM_COOKIE).unwrap().to_owned();
    assert!(
        cookie_attributes(&form).contains(&"secure".to_owned()),
        "{form}"
    );
    app.create_account(&browser.email).await;
    // A `Secure` cookie is not sent back over plain HTTP, so the test sends it by hand.
    let csrf = cookie_value(&form).to_owned();
    let response = browser
        .http
        .post(browser.url("/dashboard/login"))
        .header("Cookie", format!("{FORM_COOKIE}={csrf}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", &browser.email),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let token = set_cookie(response.headers(), LOGIN_COOKIE).unwrap();
    let attributes = cookie_attributes(token);
    for expected in ["secure", "httponly", "samesite=lax", "path=/dashboard"] {
        assert!(attributes.contains(&expected.to_owned()), "{token}");
    }
}

/// Spends `who`'s per-IP login allowance on unknown emails; the next attempt is refused.
async fn exhaust_ip_limit(app: &TestApp, who: &Browser) {
    for n in 0..app.state.config.login_attempts_per_minute {
        let response = who
            .login_as(&format!("nobody{n}@example.com"), PASSWORD)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    let response = who.login_as("nobody@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_limits_apply_to_the_forwarded_address() {
    let app = spawn_adjusted(|config| config.set_trusted_proxies(&["127.0.0.0/8"]).unwrap()).await;
    let sprayer = Browser::forwarded_for(&app, "203.0.113.5");
    exhaust_ip_limit(&app, &sprayer).await;
    // Another client behind the same proxy is not affected.
    let neighbour = Browser::forwarded_for(&app, "198.51.100.7");
    let response = neighbour.login_as("someone@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // The sprayer cannot escape by writing another address in front of the proxy's entry.
    let disguised = Browser::forwarded_for(&app, "192.0.2.1, 203.0.113.5");
    let response = disguised.login_as("someone@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_a_forwarded_address_is_ignored() {
    let app = spawn_adjusted(|_| {}).await;
    exhaust_ip_limit(&app, &Browser::forwarded_for(&app, "203.0.113.5")).await;
    // The same connection address with another header is the same client.
    let response = Browser::forwarded_for(&app, "198.51.100.7")
        .login_as("someone@example.com", PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_can_be_closed() {
    let app = spawn_adjusted(|config| config.signup_open = false).await;
    let browser = Browser::new(&app);
    let (status, html) = browser.page("/dashboard/signup").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("Sign-up is closed"));
    // Even a well-formed post (with a valid token from the login page) makes no account.
    let csrf = browser.csrf("/dashboard/login").await;
    let response = browser
        .post(
            "/dashboard/signup",
            &[
                ("csrf", csrf.as_str()),
                ("email", &browser.email),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        app.state
            .store
            .find_owner_by_email(&browser.email)
            .await
            .unwrap()
            .is_none()
    );
    let (_, login) = browser.page("/dashboard/login").await;
    assert!(
        !login.contains("/dashboard/signup"),
        "no link to a closed sign-up"
    );
    // Owners made by the operator still log in.
    app.create_account(&browser.email).await;
    assert_eq!(
        browser.login(PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    assert!(browser.signed_in().await);
}
