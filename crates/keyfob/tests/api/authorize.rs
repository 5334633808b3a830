//! User sessions from the browser's side: `GET /auth`, Keyfob's login, sign-up and consent pages,
//! the answer sent back to the application, the user's grants page, and the dashboard's
//! applications and grants. Driven as a browser without JavaScript would: forms posted with the
//! tokens read from the page, cookies kept, redirects not followed.

use std::net::IpAddr;
use std::time::Duration;

use keyfob::services::{self, apps::NewApp};
use keyfob::user_pages::USER_COOKIE;
use keyfob_domain::oauth;
use keyfob_domain::secret::hash_secret;
use keyfob_store::{AccountId, AppRow, GrantRow, Timestamp};
use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::{Client, Response, StatusCode, Url, redirect};
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

mod logout;
mod openid;
mod prompt;
mod recipes;
mod recovery;
mod relying_party;

const CALLBACK: &str = "https://client.example.com/cb";
const LOGIN_FAILED: &str = "The email or password is incorrect.";

/// One browser: its own cookies, no redirects followed.
struct Browser {
    http: Client,
    base: String,
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser::from_address(app, None)
    }

    fn from_address(app: &TestApp, ip: Option<IpAddr>) -> Browser {
        let http = Client::builder()
            .cookie_store(true)
            .redirect(redirect::Policy::none())
            .local_address(ip)
            .build()
            .unwrap();
        Browser {
            http,
            base: app.base.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    async fn page(&self, path: &str) -> (StatusCode, String) {
        let response = self.get(path).await;
        (response.status(), response.text().await.unwrap())
    }

    async fn csrf(&self, path: &str) -> String {
        let (status, html) = self.page(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}");
        csrf_in(&html)
    }

    /// Follows a form's redirect (post-redirect-get) and answers the page it leads to.
    async fn follow(&self, response: Response) -> String {
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "a redirect");
        let to = response.headers()["location"].to_str().unwrap().to_owned();
        let (status, html) = self.page(&to).await;
        assert_eq!(status, StatusCode::OK, "GET {to}");
        html
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Logs in on the login page of an authorization request (`query`, possibly empty).
    async fn login(&self, email: &str, password: &str, query: &str) -> Response {
        let html = self.expect_page(&format!("/auth/login?{query}")).await;
        let csrf = csrf_in(&html);
        let request = hidden(&html, "request").unwrap_or_default();
        self.post(
            "/auth/login",
            &[
                ("csrf", &csrf),
                ("email", email),
                ("password", password),
                ("request", &request),
            ],
        )
        .await
    }

    async fn signup(&self, email: &str, password: &str, query: &str) -> Response {
        let html = self.expect_page(&format!("/auth/signup?{query}")).await;
        let csrf = csrf_in(&html);
        let request = hidden(&html, "request").unwrap_or_default();
        self.post(
            "/auth/signup",
            &[
                ("csrf", &csrf),
                ("email", email),
                ("password", password),
                ("confirm", password),
                ("request", &request),
            ],
        )
        .await
    }

    async fn expect_page(&self, path: &str) -> String {
        let (status, html) = self.page(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {html}");
        html
    }

    /// A logged-in browser of a new user.
    async fn user(app: &TestApp) -> (Browser, String) {
        let browser = Browser::new(app);
        let email = new_user(app).await;
        let response = browser.login(&email, PASSWORD, "").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/auth/grants");
        (browser, email)
    }

    /// `GET /auth?query` for a logged-in user: the consent page's HTML.
    async fn consent_page(&self, query: &str) -> String {
        let response = self.get(&format!("/auth?{query}")).await;
        assert_eq!(response.status(), StatusCode::OK, "consent page expected");
        response.text().await.unwrap()
    }

    /// Answers a consent page, ticking `keep` only.
    async fn answer(&self, consent: &str, keep: &[&str], decision: &str) -> Response {
        let mut form: Vec<(String, String)> = hidden_fields(consent);
        for p in keep {
            form.push(("permission".into(), (*p).into()));
        }
        form.push(("decision".into(), decision.into()));
        self.http
            .post(self.url("/auth/consent"))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Runs a whole authorization for a logged-in user, allowing everything asked; the redirect.
    async fn authorize_all(&self, query: &str) -> Url {
        let consent = self.consent_page(query).await;
        let asked = checkboxes(&consent);
        let keep: Vec<&str> = asked.iter().map(String::as_str).collect();
        let response = self.answer(&consent, &keep, "allow").await;
        redirect_to_client(&response)
    }

    async fn signed_in(&self) -> bool {
        let response = self.get("/auth/grants").await;
        match response.status() {
            StatusCode::OK => true,
            StatusCode::SEE_OTHER => {
                assert_eq!(location(&response), "/auth/login");
                false
            }
            other => panic!("unexpected status {other}"),
        }
    }
}

/// Makes an end user with the test password; returns the email.
async fn new_user(app: &TestApp) -> String {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    services::users::create_user(
        app.state.store.as_ref(),
        &app.state.passwords,
        &email,
        PASSWORD.into(),
    )
    .await
    .expect("user created");
    email
}

/// An account with one application whose only redirect URI is [`CALLBACK`].
async fn register_app(app: &TestApp, public: bool, max: &str) -> AppRow {
    let account = app
        .create_account(&format!("{}@example.com", uuid::Uuid::new_v4().simple()))
        .await;
    register_app_in(app, &account, "Deal Tracker", &[CALLBACK], public, max).await
}

async fn register_app_in(
    app: &TestApp,
    account: &str,
    name: &str,
    uris: &[&str],
    public: bool,
    max: &str,
) -> AppRow {
    services::apps::create_app(
        app.state.store.as_ref(),
        &account.into(),
        NewApp {
            name: name.into(),
            redirect_uris: uris.iter().map(|u| (*u).to_owned()).collect(),
            post_logout_redirect_uris: vec![],
            origins: vec![],
            public,
            max_permissions: max.into(),
            refresh_idle_secs: None,
            refresh_max_age_secs: None,
            allow_fragment: true,
        },
    )
    .await
    .expect("app registered")
    .app
}

fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

/// An authorization request for `client` asking for `permissions`, with state `st8`.
fn request(client: &AppRow, permissions: &str) -> String {
    query(&[
        ("client_id", &client.client_id),
        ("redirect_uri", CALLBACK),
        ("permissions", permissions),
        ("state", "st8"),
    ])
}

fn location(response: &Response) -> &str {
    response
        .headers()
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
}

/// The application's redirect: a 302 to [`CALLBACK`].
fn redirect_to_client(response: &Response) -> Url {
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "a redirect to the app"
    );
    let to = location(response);
    assert!(to.starts_with(CALLBACK), "{to}");
    Url::parse(to).unwrap()
}

fn query_of(url: &Url) -> Vec<(String, String)> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn fragment_of(url: &Url) -> Vec<(String, String)> {
    serde_urlencoded::from_str(url.fragment().expect("a fragment")).unwrap()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Undoes the HTML escaping of an attribute value: named and numeric character references.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.find(';').expect("a terminated reference");
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => '&',
            "quot" => '"',
            "lt" => '<',
            "gt" => '>',
            "apos" => '\'',
            _ => {
                let code = match entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                {
                    Some(hex) => u32::from_str_radix(hex, 16).unwrap(),
                    None => entity.strip_prefix('#').unwrap().parse().unwrap(),
                };
                char::from_u32(code).unwrap()
            }
        };
        out.push(ch);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Every `<input type="hidden">` of a page, in order.
pub(crate) fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let marker = "<input type=\"hidden\" name=\"";
    let mut rest = html;
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        let name_end = rest.find('"').unwrap();
        let name = rest[..name_end].to_owned();
        let value_marker = "value=\"";
        let v = rest.find(value_marker).unwrap() + value_marker.len();
        let value_end = v + rest[v..].find('"').unwrap();
        out.push((name, unescape(&rest[v..value_end])));
        rest = &rest[value_end..];
    }
    // The page's first form is the logout form in the header: keep one csrf only.
    let mut seen_csrf = false;
    out.retain(|(k, _)| {
        if k == "csrf" {
            let keep = !seen_csrf;
            seen_csrf = true;
            keep
        } else {
            true
        }
    });
    out
}

pub(crate) fn hidden(html: &str, name: &str) -> Option<String> {
    hidden_fields(html)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

pub(crate) fn csrf_in(html: &str) -> String {
    let token = hidden(html, "csrf").expect("a CSRF field");
    // A session's token (256 random bits), or a signed pre-login form token.
    assert!(matches!(token.len(), 43 | 75), "CSRF token {token:?}");
    token
}

/// The values of the consent page's checkboxes, and that each is ticked.
fn checkboxes(html: &str) -> Vec<String> {
    let marker = "<input type=\"checkbox\"";
    html.match_indices(marker)
        .map(|(at, _)| {
            let tag = &html[at..at + html[at..].find('>').unwrap()];
            assert!(tag.contains(" checked"), "ticked by default: {tag}");
            assert!(tag.contains("name=\"permission\""));
            let v = tag.find("value=\"").unwrap() + 7;
            unescape(&tag[v..v + tag[v..].find('"').unwrap()])
        })
        .collect()
}

async fn grant_of(app: &TestApp, email: &str, client: &AppRow) -> Option<GrantRow> {
    let user = app
        .state
        .store
        .find_user_by_email(email)
        .await
        .unwrap()
        .unwrap();
    app.state
        .store
        .find_grant(&user.id, &client.client_id)
        .await
        .unwrap()
}

fn permissions_of(list: &keyfob_store::Permissions) -> Vec<String> {
    let mut list = list.names();
    list.sort();
    list
}

/// Polls `/auth/whoami` until `token` is refused, for up to `secs` seconds.
/// Runs `response_type=token` for a logged-in browser; returns the fragment's pairs.
async fn token_session(
    browser: &Browser,
    client: &AppRow,
    permissions: &str,
) -> Vec<(String, String)> {
    let q = format!("{}&response_type=token", request(client, permissions));
    let url = browser.authorize_all(&q).await;
    assert_eq!(url.query(), None, "nothing in the query");
    fragment_of(&url)
}

both_backends! {
    async fn a_bad_client_or_redirect_uri_gets_an_error_page_never_a_redirect(app) {
        let client = register_app(&app, false, "deals.read").await;
        let browser = Browser::user(&app).await.0;
        let near_misses = [
            "https://client.example.com/cb/",
            "https://client.example.com/cb?x=1",
            "https://CLIENT.example.com/cb",
            "https://client.example.com/CB",
            "https://client.example.com.evil.test/cb",
            "http://client.example.com/cb",
            "https://evil.test/cb",
            "https://client.example.com/cb#frag",
        ];
        let mut queries: Vec<String> = near_misses
            .iter()
            .map(|uri| {
                query(&[
                    ("client_id", &client.client_id),
                    ("redirect_uri", uri),
                    ("permissions", "deals.read"),
                    ("state", "st8"),
                ])
            })
            .collect();
        queries.push(query(&[
            ("client_id", "app_doesnotexist"),
            ("redirect_uri", CALLBACK),
            ("permissions", "deals.read"),
        ]));
        queries.push(query(&[("redirect_uri", CALLBACK), ("permissions", "deals.read")]));
        // Bad in other ways too: the client check comes first.
        queries.push(query(&[
            ("client_id", &client.client_id),
            ("redirect_uri", "https://evil.test/cb"),
            ("permissions", "cars.write"),
            ("response_type", "bogus"),
        ]));
        // A parameter given twice cannot be read safely.
        queries.push(format!("{}&redirect_uri=https%3A%2F%2Fevil.test%2F", request(&client, "deals.read")));
        for q in &queries {
            for who in [&browser, &Browser::new(&app)] {
                let response = who.get(&format!("/auth?{q}")).await;
                assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{q}");
                assert!(response.headers().get(LOCATION).is_none(), "no redirect for {q}");
                let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
                assert!(csp.contains("frame-ancestors 'none'"));
                let html = response.text().await.unwrap();
                assert!(html.contains("<h1>Bad request</h1>"), "{html}");
                // The address received may be shown to the developer, as text, never as a link.
                assert!(!html.contains("href=\"https://evil.test"), "the bad address is not linked");
                let outside_code: String = html
                    .split("<code>")
                    .map(|part| part.split_once("</code>").map_or(part, |(_, after)| after))
                    .collect();
                assert!(!outside_code.contains("evil.test"), "only as code: {html}");
            }
        }

        // Two registered URIs and none given: the server cannot choose.
        let account = app.create_account(&format!("{}@example.com", uuid::Uuid::new_v4().simple())).await;
        let two = register_app_in(&app, &account, "Two", &[CALLBACK, "https://client.example.com/other"], false, "deals.read").await;
        let response = browser
            .get(&format!("/auth?{}", query(&[("client_id", &two.client_id), ("permissions", "deals.read")])))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(LOCATION).is_none());

        // One registered URI and none given: that one is used.
        let url = browser
            .authorize_all(&query(&[("client_id", &client.client_id), ("permissions", "deals.read"), ("state", "s")]))
            .await;
        assert!(param(&query_of(&url), "code").is_some());
    }

    async fn login_is_required_and_leads_back_to_the_request(app) {
        let client = register_app(&app, false, "deals.read,deals.write").await;
        let email = new_user(&app).await;
        let browser = Browser::new(&app);
        let q = request(&client, "deals.read,deals.write");

        let response = browser.get(&format!("/auth?{q}")).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let login = location(&response).to_owned();
        assert!(login.starts_with("/auth/login?"), "{login}");
        let html = browser.expect_page(&login).await;
        assert!(html.contains("Deal Tracker"), "the login page names the app");
        assert!(html.contains("href=\"/auth/signup?"), "and offers sign-up");

        let response = browser.login(&email, PASSWORD, &login["/auth/login?".len()..]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookie = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with(&format!("{USER_COOKIE}=")))
            .expect("the login cookie");
        let attributes = cookie.to_ascii_lowercase();
        for attribute in ["httponly", "samesite=lax", "path=/auth"] {
            assert!(attributes.contains(attribute), "{cookie}");
        }
        let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
        assert_eq!(value.len(), 43, "256 random bits");
        let now = Timestamp::now();
        assert!(app.state.store.find_user_login(&hash_secret(&value), now).await.unwrap().is_some());
        assert!(app.state.store.find_user_login(&value, now).await.unwrap().is_none(), "only the hash is kept");

        let back = location(&response).to_owned();
        assert!(back.starts_with("/auth?"), "{back}");
        let response = browser.get(&back).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("form-action 'self' https://client.example.com"), "{csp}");
        assert_eq!(headers["x-frame-options"], "DENY");
        let consent = response.text().await.unwrap();
        assert!(consent.contains("Deal Tracker"));
        assert!(consent.contains("See your deals"), "permissions in words");
        assert!(consent.contains("Create, change and delete your deals"));
        assert_eq!(checkboxes(&consent), ["deals.read", "deals.write"]);
        assert!(consent.contains("value=\"allow\"") && consent.contains("value=\"deny\""));

        let url = redirect_to_client(&browser.answer(&consent, &["deals.read", "deals.write"], "allow").await);
        let pairs = query_of(&url);
        assert_eq!(param(&pairs, "state"), Some("st8"));
        assert_eq!(param(&pairs, "iss"), Some(app.base.as_str()), "RFC 9207");
        let code = param(&pairs, "code").expect("a code");
        let row = app.state.store.find_auth_code(&hash_secret(code)).await.unwrap().expect("stored by hash");
        assert_eq!(row.client_id, client.client_id);
        assert_eq!(row.redirect_uri, CALLBACK);
        assert_eq!(permissions_of(&row.permissions), ["deals.read", "deals.write"]);
        assert!(row.code_challenge.is_none());
        assert!((Duration::from_secs(55)..=Duration::from_secs(61)).contains(&row.expires_at.since(Timestamp::now())));
        assert!(app.state.store.find_auth_code(code).await.unwrap().is_none());
        let grant = grant_of(&app, &email, &client).await.expect("a grant");
        assert_eq!(grant.id, row.grant_id);
        assert_eq!(grant.account_id, client.account_id);
    }

    async fn a_new_user_signs_up_on_the_way(app) {
        let client = register_app(&app, false, "deals.read").await;
        let browser = Browser::new(&app);
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let q = request(&client, "deals.read");

        // Common passwords are refused, whatever their case; nothing is created.
        for common in ["password123", "QWERTYUIOP", "1234567890"] {
            let response = browser.signup(&email, common, &q).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{common}");
            let html = response.text().await.unwrap();
            assert!(html.contains("commonly used"), "{html}");
        }
        let response = browser.signup(&email, "short", &q).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.text().await.unwrap().contains("at least 10 characters"));
        assert!(app.state.store.find_user_by_email(&email).await.unwrap().is_none());

        // Sign-up logs no one in: it mails a link that confirms the address and leads back into
        // the request; the user then logs in with the password they chose.
        let response = browser.signup(&email, PASSWORD, &q).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page = response.text().await.unwrap();
        assert!(page.contains("Check your inbox"), "{page}");
        assert!(page.contains("href=\"/auth/login?client_id="), "the page leads to the login, with the request: {page}");
        let user = app.state.store.find_user_by_email(&email).await.unwrap().expect("the user");
        assert_eq!(user.email_verified_at, None);
        let mail = crate::mailbox::outbox_mail(&app, &email, "Confirm your email address").await;
        let link = mail.link("/auth/verify?token=");
        let response = browser.get(&link).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let back = location(&response).to_owned();
        assert_eq!(back, format!("/auth?{}", query(&[
            ("client_id", &client.client_id),
            ("redirect_uri", CALLBACK),
            ("permissions", "deals.read"),
            ("state", "st8"),
        ])));
        let user = app.state.store.find_user_by_email(&email).await.unwrap().unwrap();
        assert!(user.email_verified_at.is_some());
        // The link works once.
        assert_eq!(browser.get(&link).await.status(), StatusCode::NOT_FOUND);
        // Not logged in yet: the request asks for a login, which then goes on to consent.
        assert!(location(&browser.get(&back).await).starts_with("/auth/login?"));
        assert_eq!(browser.login(&email, PASSWORD, &q).await.status(), StatusCode::SEE_OTHER);
        let url = browser.authorize_all(&q).await;
        assert!(param(&query_of(&url), "code").is_some());

        // The same email again answers as a new sign-up; the holder is mailed, the first account
        // is untouched, and the second password opens nothing.
        let other = Browser::new(&app);
        let response = other.signup(&email, "another long password", "").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.text().await.unwrap().contains("Check your inbox"));
        crate::mailbox::outbox_mail(&app, &email, "You already have an account").await;
        assert_eq!(other.login(&email, "another long password", "").await.status(), StatusCode::BAD_REQUEST);
        assert_eq!(other.login(&email, PASSWORD, "").await.status(), StatusCode::SEE_OTHER);
    }

    async fn a_failed_login_does_not_say_which_part_was_wrong(app) {
        let email = new_user(&app).await;
        let known = Browser::new(&app);
        let wrong_password = known.login(&email, "not the password at all", "").await;
        assert_eq!(wrong_password.status(), StatusCode::BAD_REQUEST);
        assert!(wrong_password.headers().get_all(SET_COOKIE).iter().all(|c| !c.to_str().unwrap().starts_with(USER_COOKIE)));
        let wrong_password = wrong_password.text().await.unwrap();

        let unknown = Browser::new(&app);
        let nobody = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let unknown_email = unknown.login(&nobody, PASSWORD, "").await;
        assert_eq!(unknown_email.status(), StatusCode::BAD_REQUEST);
        let unknown_email = unknown_email.text().await.unwrap();
        for html in [&wrong_password, &unknown_email] {
            assert!(html.contains(LOGIN_FAILED), "{html}");
        }
        assert_eq!(
            wrong_password.replace(&email, "EMAIL"),
            unknown_email.replace(&nobody, "EMAIL").replace(&csrf_in(&unknown_email), &csrf_in(&wrong_password)),
            "the same page apart from the email typed"
        );
        assert!(!known.signed_in().await);
    }

    async fn login_attempts_are_limited_per_email_and_address_and_per_ip(app) {
        let limit = app.state.config.login_attempts_per_minute;
        let ip = |last: u8| Some(IpAddr::from([127, 0, 0, last]));

        let target = new_user(&app).await;
        let attacker = Browser::from_address(&app, ip(11));
        for _ in 0..app.state.config.login_attempts_per_email_and_address {
            let response = attacker.login(&target, "wrong password!", "").await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        }
        let refused = attacker.login(&target, "wrong password!", "").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.headers().contains_key("retry-after"));
        // The attacker's address is refused even the right password; the user elsewhere is not.
        assert_eq!(attacker.login(&target, PASSWORD, "").await.status(), StatusCode::TOO_MANY_REQUESTS);
        let elsewhere = Browser::from_address(&app, ip(12));
        assert_eq!(elsewhere.login(&target, PASSWORD, "").await.status(), StatusCode::SEE_OTHER);

        // Per IP: one client spraying many emails.
        let sprayer = Browser::from_address(&app, ip(13));
        for n in 0..limit {
            let response = sprayer.login(&format!("nobody{n}@example.com"), PASSWORD, "").await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        }
        let victim = new_user(&app).await;
        assert_eq!(sprayer.login(&victim, PASSWORD, "").await.status(), StatusCode::TOO_MANY_REQUESTS);
        // Others are not affected.
        let fine = Browser::from_address(&app, ip(14));
        assert_eq!(fine.login(&victim, PASSWORD, "").await.status(), StatusCode::SEE_OTHER);
        assert!(fine.signed_in().await);
    }

    async fn unticking_narrows_the_grant_and_a_grant_is_remembered(app) {
        let client = register_app(&app, false, "deals.read,deals.write,cars.read").await;
        let (browser, email) = Browser::user(&app).await;

        let consent = browser.consent_page(&request(&client, "deals.read deals.write")).await;
        let url = redirect_to_client(&browser.answer(&consent, &["deals.read"], "allow").await);
        let code = param(&query_of(&url), "code").unwrap().to_owned();
        let row = app.state.store.find_auth_code(&hash_secret(&code)).await.unwrap().unwrap();
        assert_eq!(permissions_of(&row.permissions), ["deals.read"]);
        let grant = grant_of(&app, &email, &client).await.unwrap();
        assert_eq!(permissions_of(&grant.permissions), ["deals.read"]);

        // Asking for what was granted: no consent page, straight back with a code.
        let response = browser.get(&format!("/auth?{}", request(&client, "deals.read"))).await;
        let url = redirect_to_client(&response);
        let pairs = query_of(&url);
        assert_eq!(param(&pairs, "state"), Some("st8"));
        let row = app.state.store.find_auth_code(&hash_secret(param(&pairs, "code").unwrap())).await.unwrap().unwrap();
        assert_eq!(permissions_of(&row.permissions), ["deals.read"]);

        // Asking for more: the consent page again, saying what was allowed before.
        let consent = browser.consent_page(&request(&client, "deals.read,cars.read")).await;
        assert_eq!(checkboxes(&consent), ["deals.read", "cars.read"]);
        assert!(consent.contains("allowed before"));
        let url = redirect_to_client(&browser.answer(&consent, &["deals.read", "cars.read"], "allow").await);
        let row = app.state.store.find_auth_code(&hash_secret(param(&query_of(&url), "code").unwrap())).await.unwrap().unwrap();
        assert_eq!(permissions_of(&row.permissions), ["cars.read", "deals.read"]);
        let regrant = grant_of(&app, &email, &client).await.unwrap();
        assert_eq!(regrant.id, grant.id, "the same grant, updated");
        assert_eq!(permissions_of(&regrant.permissions), ["cars.read", "deals.read"]);

        // Asked again and unticked: taken out; what was not asked about is kept.
        let consent = browser.consent_page(&request(&client, "deals.read,deals.write")).await;
        redirect_to_client(&browser.answer(&consent, &["deals.write"], "allow").await);
        let grant = grant_of(&app, &email, &client).await.unwrap();
        assert_eq!(permissions_of(&grant.permissions), ["cars.read", "deals.write"]);
    }

    async fn the_consent_form_is_checked_again_in_full(app) {
        let client = register_app(&app, false, "deals.read,deals.write").await;
        let (browser, email) = Browser::user(&app).await;
        let consent = browser.consent_page(&request(&client, "deals.read")).await;
        let post = |changes: Vec<(&'static str, &'static str)>, ticked: Vec<&'static str>| {
            let mut form: Vec<(String, String)> = hidden_fields(&consent)
                .into_iter()
                .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
                .collect();
            form.extend(changes.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            form.extend(ticked.iter().map(|p| ("permission".to_owned(), (*p).to_owned())));
            form.push(("decision".into(), "allow".into()));
            let http = browser.http.clone();
            let url = browser.url("/auth/consent");
            async move { http.post(url).form(&form).send().await.unwrap() }
        };

        // Another redirect URI in the hidden field: an error page, not a redirect.
        let response = post(vec![("redirect_uri", "https://evil.test/cb")], vec!["deals.read"]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(LOCATION).is_none());
        // More than the application may have: refused as at the start.
        let response = post(vec![("scope", "deals.read *.write")], vec!["deals.read", "*.write"]).await;
        let url = redirect_to_client(&response);
        assert_eq!(param(&query_of(&url), "error"), Some("invalid_scope"));
        assert!(grant_of(&app, &email, &client).await.is_none());

        // A ticked permission that was not asked for is ignored.
        let url = redirect_to_client(&post(vec![], vec!["deals.read", "deals.write"]).await);
        let code = param(&query_of(&url), "code").unwrap().to_owned();
        let row = app.state.store.find_auth_code(&hash_secret(&code)).await.unwrap().unwrap();
        assert_eq!(permissions_of(&row.permissions), ["deals.read"]);
        let grant = grant_of(&app, &email, &client).await.unwrap();
        assert_eq!(permissions_of(&grant.permissions), ["deals.read"]);

        // A logged-out browser posting the form is sent to log in, and nothing is issued.
        let stranger = Browser::new(&app);
        let form = hidden_fields(&consent);
        let response = stranger.http.post(stranger.url("/auth/consent")).form(&form).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(location(&response).starts_with("/auth/login?"));

        // Every page of the flow refuses to be framed.
        for path in ["/auth/login", "/auth/signup"] {
            let response = stranger.get(path).await;
            assert_eq!(response.status(), StatusCode::OK);
            let csp = response.headers()["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
            assert_eq!(response.headers()["x-frame-options"], "DENY");
        }
    }

    async fn denying_answers_access_denied_with_the_state(app) {
        let client = register_app(&app, false, "deals.read,deals.write").await;
        let (browser, email) = Browser::user(&app).await;
        let consent = browser.consent_page(&request(&client, "deals.read,deals.write")).await;
        let url = redirect_to_client(&browser.answer(&consent, &["deals.read"], "deny").await);
        let pairs = query_of(&url);
        assert_eq!(param(&pairs, "error"), Some("access_denied"));
        assert_eq!(param(&pairs, "state"), Some("st8"));
        assert_eq!(param(&pairs, "iss"), Some(app.base.as_str()));
        assert!(param(&pairs, "code").is_none());

        // Allowing nothing is denying.
        let url = redirect_to_client(&browser.answer(&consent, &[], "allow").await);
        assert_eq!(param(&query_of(&url), "error"), Some("access_denied"));
        assert!(grant_of(&app, &email, &client).await.is_none(), "no grant stored");

        // In the fragment for response_type=token.
        let consent = browser.consent_page(&format!("{}&response_type=token", request(&client, "deals.read"))).await;
        let url = redirect_to_client(&browser.answer(&consent, &[], "deny").await);
        let pairs = fragment_of(&url);
        assert_eq!(param(&pairs, "error"), Some("access_denied"));
        assert_eq!(param(&pairs, "state"), Some("st8"));
    }

    async fn bad_requests_are_reported_to_the_application(app) {
        let client = register_app(&app, false, "deals.read").await;
        let public = register_app(&app, true, "deals.read").await;
        let (browser, _) = Browser::user(&app).await;
        let challenge = oauth::s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let cases: Vec<(String, &str)> = vec![
            (request(&client, "deals.write"), "invalid_scope"),
            (request(&client, "*.read"), "invalid_scope"),
            (request(&client, ""), "invalid_scope"),
            (request(&client, "not-a-permission"), "invalid_scope"),
            (format!("{}&response_type=id_token", request(&client, "deals.read")), "unsupported_response_type"),
            (format!("{}&code_challenge={challenge}&code_challenge_method=plain", request(&client, "deals.read")), "invalid_request"),
            (request(&public, "deals.read"), "invalid_request"),
        ];
        for (q, error) in &cases {
            // Reported whether or not the user is logged in.
            for who in [&browser, &Browser::new(&app)] {
                let url = redirect_to_client(&who.get(&format!("/auth?{q}")).await);
                let pairs = query_of(&url);
                assert_eq!(param(&pairs, "error"), Some(*error), "{q}");
                assert!(!param(&pairs, "error_description").unwrap_or_default().is_empty());
                assert_eq!(param(&pairs, "state"), Some("st8"), "{q}");
            }
        }
        let url = redirect_to_client(&browser.get(&format!("/auth?{}&response_type=token", request(&client, "deals.write"))).await);
        assert_eq!(param(&fragment_of(&url), "error"), Some("invalid_scope"));
        assert_eq!(url.query(), None);

        // A public app with PKCE gets a code bound to the challenge.
        let q = format!("{}&code_challenge={challenge}&code_challenge_method=S256", request(&public, "deals.read"));
        let url = browser.authorize_all(&q).await;
        let code = param(&query_of(&url), "code").unwrap().to_owned();
        let row = app.state.store.find_auth_code(&hash_secret(&code)).await.unwrap().unwrap();
        assert_eq!(row.code_challenge.as_deref(), Some(challenge.as_str()));
    }

    async fn response_type_token_puts_a_working_session_in_the_fragment(app) {
        let public = register_app(&app, true, "deals.read,deals.write").await;
        let (browser, _) = Browser::user(&app).await;
        let pairs = token_session(&browser, &public, "deals.read").await;
        let token = param(&pairs, "token").expect("token").to_owned();
        assert_eq!(param(&pairs, "access_token"), Some(token.as_str()));
        assert_eq!(token.split('.').count(), 3, "a JWT");
        assert!(param(&pairs, "refresh_token").unwrap().starts_with("kfr_"));
        assert_eq!(param(&pairs, "token_type"), Some("Bearer"));
        assert_eq!(param(&pairs, "expires_in"), Some("600"));
        assert_eq!(param(&pairs, "scope"), Some("deals.read"));
        assert_eq!(param(&pairs, "state"), Some("st8"));
        let expires = time::OffsetDateTime::parse(param(&pairs, "expires").unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
        let left = expires - time::OffsetDateTime::now_utc();
        assert!(left > time::Duration::seconds(590) && left <= time::Duration::seconds(601), "{left}");

        let response = app.get("/auth/whoami", &token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["kind"], "jwt");
        assert_eq!(body["client_id"], public.client_id.as_str());
        assert_eq!(body["account_id"], public.account_id.as_str());
        assert_eq!(body["permissions"], serde_json::json!(["deals.read"]));
    }

    async fn tokens_travel_in_the_fragment_only_for_apps_that_allow_it_and_never_silently(app) {
        let account = app.create_account(&format!("{}@example.com", uuid::Uuid::new_v4().simple())).await;
        let new_app = |allow_fragment: bool| NewApp {
            name: "Portal".into(),
            redirect_uris: vec![CALLBACK.into()],
            post_logout_redirect_uris: vec![],
            origins: vec![],
            public: true,
            max_permissions: "deals.read".into(),
            refresh_idle_secs: None,
            refresh_max_age_secs: None,
            allow_fragment,
        };
        let closed = services::apps::create_app(app.state.store.as_ref(), &account, new_app(false)).await.unwrap().app;
        let open = services::apps::create_app(app.state.store.as_ref(), &account, new_app(true)).await.unwrap().app;
        assert!(!closed.allow_fragment && open.allow_fragment);
        let (browser, _) = Browser::user(&app).await;
        let challenge = oauth::s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let pkce = format!("code_challenge={challenge}&code_challenge_method=S256");

        // The user has granted both apps what they ask (through the code flow).
        for client in [&closed, &open] {
            let url = browser.authorize_all(&format!("{}&{pkce}", request(client, "deals.read"))).await;
            assert!(param(&query_of(&url), "code").is_some());
        }

        // An app without fragment mode gets unauthorized_client, logged in or not, and no token.
        for who in [&browser, &Browser::new(&app)] {
            let response = who.get(&format!("/auth?{}&response_type=token", request(&closed, "deals.read"))).await;
            let url = redirect_to_client(&response);
            let pairs = fragment_of(&url);
            assert_eq!(param(&pairs, "error"), Some("unauthorized_client"));
            assert!(param(&pairs, "error_description").unwrap().contains("fragment"));
            assert_eq!(param(&pairs, "state"), Some("st8"));
            assert!(param(&pairs, "token").is_none() && param(&pairs, "access_token").is_none());
            assert_eq!(url.query(), None);
        }
        // Nor can a forged consent form get one.
        let consent = browser.consent_page(&format!("{}&response_type=token", request(&open, "deals.read"))).await;
        let forged: Vec<(String, String)> = hidden_fields(&consent)
            .into_iter()
            .map(|(k, v)| if k == "client_id" { (k, closed.client_id.to_string()) } else { (k, v) })
            .chain([("permission".into(), "deals.read".into()), ("decision".into(), "allow".into())])
            .collect();
        let response = browser.http.post(browser.url("/auth/consent")).form(&forged).send().await.unwrap();
        let url = redirect_to_client(&response);
        assert_eq!(param(&fragment_of(&url), "error"), Some("unauthorized_client"));

        // An app with it: the grant covers the request, yet the user is asked, and told why.
        assert!(consent.contains("fragment-notice"), "the consent page says tokens travel in the address");
        let url = redirect_to_client(&browser.answer(&consent, &["deals.read"], "allow").await);
        assert!(param(&fragment_of(&url), "token").is_some());
        let again = browser.get(&format!("/auth?{}&response_type=token", request(&open, "deals.read"))).await;
        assert_eq!(again.status(), StatusCode::OK, "asked again, never silent");
        // The code flow with the same grant stays silent and says nothing of fragments.
        let silent = browser.get(&format!("/auth?{}&{pkce}", request(&open, "deals.read"))).await;
        let url = redirect_to_client(&silent);
        assert!(param(&query_of(&url), "code").is_some());
    }

    async fn forms_without_the_right_csrf_token_change_nothing(app) {
        let client = register_app(&app, false, "deals.read").await;
        let (browser, email) = Browser::user(&app).await;
        let (intruder, _) = Browser::user(&app).await;
        let foreign = csrf_in(&intruder.expect_page("/auth/grants").await);
        let consent = browser.consent_page(&request(&client, "deals.read")).await;
        let fields = hidden_fields(&consent);
        for csrf in [None, Some(String::new()), Some("A".repeat(43)), Some(foreign.clone())] {
            let mut form: Vec<(String, String)> = fields.iter().filter(|(k, _)| k != "csrf").cloned().collect();
            if let Some(csrf) = &csrf {
                form.push(("csrf".into(), csrf.clone()));
            }
            form.push(("permission".into(), "deals.read".into()));
            form.push(("decision".into(), "allow".into()));
            let response = browser.http.post(browser.url("/auth/consent")).form(&form).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{csrf:?}");
            assert!(response.headers().get(LOCATION).is_none());
            assert!(response.text().await.unwrap().contains("Nothing was changed"));
        }
        assert!(grant_of(&app, &email, &client).await.is_none());

        // Login and sign-up without the form cookie's token.
        let stranger = Browser::new(&app);
        let response = stranger.post("/auth/login", &[("email", &email), ("password", PASSWORD)]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(!stranger.signed_in().await);
        let fresh = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let response = stranger
            .post("/auth/signup", &[("csrf", &"A".repeat(43)), ("email", &fresh), ("password", PASSWORD), ("confirm", PASSWORD)])
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(app.state.store.find_user_by_email(&fresh).await.unwrap().is_none());

        // The grants page's forms.
        let pairs = token_session(&browser, &client, "deals.read").await;
        let token = param(&pairs, "token").unwrap().to_owned();
        let grant = grant_of(&app, &email, &client).await.unwrap();
        for (path, extra) in [
            (format!("/auth/grants/{}/revoke", grant.id), vec![]),
            ("/auth/logout-everywhere".to_owned(), vec![]),
            ("/auth/password".to_owned(), vec![("current", PASSWORD), ("new", "a brand new passphrase"), ("confirm", "a brand new passphrase")]),
            ("/auth/logout".to_owned(), vec![]),
        ] {
            let mut form = extra.clone();
            form.push(("csrf", foreign.as_str()));
            assert_eq!(browser.post(&path, &form).await.status(), StatusCode::FORBIDDEN, "{path}");
            assert_eq!(browser.post(&path, &extra).await.status(), StatusCode::FORBIDDEN, "{path}");
        }
        assert!(browser.signed_in().await);
        assert!(grant_of(&app, &email, &client).await.unwrap().revoked_at.is_none());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(app.whoami_status(&token).await, 200, "no session ended");
        assert_eq!(Browser::new(&app).login(&email, PASSWORD, "").await.status(), StatusCode::SEE_OTHER, "password unchanged");
    }

    async fn the_grants_page_lists_and_revokes(app) {
        let client = register_app(&app, false, "deals.read,deals.write").await;
        let (browser, email) = Browser::user(&app).await;
        let html = browser.expect_page("/auth/grants").await;
        assert!(html.contains("not allowed any application yet"));

        let pairs = token_session(&browser, &client, "deals.read,deals.write").await;
        let token = param(&pairs, "token").unwrap().to_owned();
        assert_eq!(app.whoami_status(&token).await, 200);
        let response = browser.get("/auth/grants").await;
        assert!(response.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
        let html = response.text().await.unwrap();
        assert!(html.contains("Deal Tracker"));
        assert!(html.contains("See your deals"));
        assert!(html.contains("Create, change and delete your deals"));
        let grant = grant_of(&app, &email, &client).await.unwrap();
        assert!(html.contains(&format!("/auth/grants/{}/revoke", grant.id)));

        // Another user cannot revoke it.
        let (other, _) = Browser::user(&app).await;
        let csrf = csrf_in(&other.expect_page("/auth/grants").await);
        let response = other.post(&format!("/auth/grants/{}/revoke", grant.id), &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(grant_of(&app, &email, &client).await.unwrap().revoked_at.is_none());

        let csrf = csrf_in(&html);
        let response = browser.post(&format!("/auth/grants/{}/revoke", grant.id), &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/auth/grants?done=grant-revoked");
        // This node refuses the grant's token at once; others within their sync interval.
        assert_eq!(app.whoami_status(&token).await, 401, "refused at once");
        assert!(grant_of(&app, &email, &client).await.unwrap().revoked_at.is_some());
        let html = browser.expect_page("/auth/grants?done=grant-revoked").await;
        assert!(html.contains("Access was revoked"));
        assert!(!html.contains("Deal Tracker"));
        // The app must ask again.
        let response = browser.get(&format!("/auth?{}", request(&client, "deals.read"))).await;
        assert_eq!(response.status(), StatusCode::OK, "consent asked again");
    }

    async fn logging_out_everywhere_ends_every_session(app) {
        let client = register_app(&app, false, "deals.read").await;
        let (browser, email) = Browser::user(&app).await;
        let second = Browser::new(&app);
        assert_eq!(second.login(&email, PASSWORD, "").await.status(), StatusCode::SEE_OTHER);
        let pairs = token_session(&browser, &client, "deals.read").await;
        let token = param(&pairs, "token").unwrap().to_owned();
        let refresh = param(&pairs, "refresh_token").unwrap().to_owned();

        let csrf = csrf_in(&browser.expect_page("/auth/grants").await);
        let response = browser.post("/auth/logout-everywhere", &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(app.whoami_status(&token).await, 401, "refused at once");
        let family = app.state.store.find_refresh(&hash_secret(&refresh)).await.unwrap().unwrap().family_id;
        assert!(app.state.store.find_family(&family).await.unwrap().unwrap().revoked_at.is_some());
        assert!(!second.signed_in().await, "the other browser is logged out");
        assert!(browser.signed_in().await, "this one stays");
        assert!(grant_of(&app, &email, &client).await.unwrap().revoked_at.is_none(), "the grant stays");
        let key = app.create_key(&client.account_id).await;
        let ended = audit_until(&app, &key, "action=session.ended", |d| !d.is_empty()).await;
        assert_eq!(ended[0]["actor"]["kind"], "user");
        assert_eq!(ended[0]["detail"]["reason"], "logout_everywhere");
        assert_eq!(ended[0]["detail"]["client_ids"][0], client.client_id.as_str());

        // Logging out here ends this login too.
        let csrf = csrf_in(&browser.expect_page("/auth/grants").await);
        let response = browser.post("/auth/logout", &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/auth/login?done=logged-out");
        assert!(!browser.signed_in().await);
    }

    async fn changing_the_password_ends_every_session(app) {
        let client = register_app(&app, false, "deals.read").await;
        let (browser, email) = Browser::user(&app).await;
        let pairs = token_session(&browser, &client, "deals.read").await;
        let token = param(&pairs, "token").unwrap().to_owned();
        let new = "a brand new passphrase";

        let change = |current: &'static str, next: &'static str| {
            let browser = &browser;
            async move {
                let csrf = csrf_in(&browser.expect_page("/auth/grants").await);
                browser
                    .post("/auth/password", &[("csrf", &csrf), ("current", current), ("new", next), ("confirm", next)])
                    .await
            }
        };
        let response = change("not my password", new).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.text().await.unwrap().contains("current password is incorrect"));
        let response = change(PASSWORD, "password1234").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.text().await.unwrap().contains("commonly used"));
        assert_eq!(app.whoami_status(&token).await, 200, "nothing changed yet");

        let response = change(PASSWORD, new).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/auth/login?done=password-changed");
        assert_eq!(app.whoami_status(&token).await, 401, "refused at once");
        let key = app.create_key(&client.account_id).await;
        let ended = audit_until(&app, &key, "action=session.ended", |d| !d.is_empty()).await;
        assert_eq!(ended.len(), 1, "only the change that succeeded: {ended:?}");
        assert_eq!(ended[0]["detail"]["reason"], "password_changed");
        assert!(!browser.signed_in().await, "logged out here too");
        assert_eq!(browser.login(&email, PASSWORD, "").await.status(), StatusCode::BAD_REQUEST);
        assert_eq!(browser.login(&email, new, "").await.status(), StatusCode::SEE_OTHER);
    }
}

/// An owner's dashboard browser, signed up.
async fn owner(app: &TestApp) -> (Browser, String) {
    let browser = Browser::new(app);
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let csrf = browser.csrf("/dashboard/signup").await;
    let response = browser
        .post(
            "/dashboard/signup",
            &[
                ("csrf", &csrf),
                ("email", &email),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let csrf = browser.csrf("/dashboard/login").await;
    let response = browser
        .post(
            "/dashboard/login",
            &[("csrf", &csrf), ("email", &email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let account = app
        .state
        .store
        .find_owner_by_email(&email)
        .await
        .unwrap()
        .unwrap()
        .account_id
        .into_string();
    (browser, account)
}

/// Registers an app through the dashboard form; the created page's HTML.
async fn register_in_dashboard(browser: &Browser, name: &str, kind: &str) -> Response {
    let csrf = browser.csrf("/dashboard/apps").await;
    browser
        .post(
            "/dashboard/apps",
            &[
                ("csrf", &csrf),
                ("name", name),
                (
                    "redirect_uris",
                    &format!("{CALLBACK}\r\n\r\nhttp://localhost:3000/cb\n"),
                ),
                ("origins", "https://client.example.com"),
                (
                    "post_logout_redirect_uris",
                    "https://client.example.com/logged-out\n",
                ),
                ("kind", kind),
                ("max_permissions", "deals.read, deals.write"),
            ],
        )
        .await
}

fn output(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let start = at + html[at..].find('>').unwrap() + 1;
    let end = start + html[start..].find('<').unwrap();
    Some(html[start..end].trim().to_owned())
}

both_backends! {
    async fn owners_register_applications_in_the_dashboard(app) {
        let (browser, account) = owner(&app).await;
        let html = browser.expect_page("/dashboard/apps").await;
        assert!(html.contains("no applications yet"));

        let response = register_in_dashboard(&browser, "Back office", "confidential").await;
        let html = browser.follow(response).await;
        let client_id = output(&html, "client-id").expect("the client id");
        let secret = output(&html, "client-secret").expect("the secret, once");
        // A reload shows it no more, and registers nothing.
        let again = browser.expect_page(&format!("/dashboard/apps/{client_id}/secret")).await;
        assert!(!again.contains(&secret) && again.contains("shown-already"), "{again}");
        assert!(secret.starts_with("kfs_"), "{secret}");
        let apps = app.state.store.list_apps(&AccountId::from(account.as_str())).await.unwrap();
        assert_eq!(apps.len(), 1);
        let row = &apps[0];
        assert_eq!(row.client_id, client_id);
        assert!(!row.public);
        assert_eq!(row.client_secret_hash.as_deref(), Some(hash_secret(&secret).as_str()));
        assert_eq!(row.redirect_uris.to_vec(), [CALLBACK, "http://localhost:3000/cb"]);
        assert_eq!(row.max_permissions.names(), ["deals.read", "deals.write"]);
        assert_eq!(row.post_logout_redirect_uris.to_vec(), ["https://client.example.com/logged-out"]);

        let html = browser.expect_page("/dashboard/apps").await;
        assert!(html.contains("Back office") && html.contains(&client_id) && html.contains(CALLBACK));
        assert!(html.contains("After logout") && html.contains("https://client.example.com/logged-out"));
        assert!(!html.contains(&secret), "the secret is shown once");

        let response = register_in_dashboard(&browser, "Single page", "public").await;
        let html = browser.follow(response).await;
        assert!(output(&html, "client-secret").is_none(), "no secret for a public app");
        assert!(html.contains("PKCE"));

        // Bad input is named and nothing is registered.
        let csrf = browser.csrf("/dashboard/apps").await;
        let response = browser
            .post("/dashboard/apps", &[("csrf", &csrf), ("name", "Bad"), ("redirect_uris", "http://evil.test/cb"), ("kind", "public"), ("max_permissions", "deals.read")])
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.text().await.unwrap().contains("http://evil.test/cb"));
        let csrf = browser.csrf("/dashboard/apps").await;
        let response = browser
            .post("/dashboard/apps", &[("csrf", &csrf), ("name", "Bad"), ("redirect_uris", CALLBACK), ("post_logout_redirect_uris", "https://client.example.com/bye#x"), ("kind", "public"), ("max_permissions", "deals.read")])
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let html = response.text().await.unwrap();
        assert!(html.contains("post-logout redirect URI") && html.contains("https://client.example.com/bye#x"), "{html}");
        for (field, value, needle) in [
            ("refresh_idle_secs", "soon", "idle limit"),
            ("refresh_max_age_secs", "-5", "maximum session age"),
        ] {
            let csrf = browser.csrf("/dashboard/apps").await;
            let response = browser
                .post("/dashboard/apps", &[("csrf", &csrf), ("name", "Limits"), ("redirect_uris", CALLBACK), ("kind", "public"), ("max_permissions", "deals.read"), (field, value)])
                .await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            let html = response.text().await.unwrap();
            assert!(html.contains(needle), "{html}");
            assert!(html.contains(value), "what was typed is kept");
        }
        // Session limits set in the form are stored and shown.
        let csrf = browser.csrf("/dashboard/apps").await;
        let response = browser
            .post("/dashboard/apps", &[("csrf", &csrf), ("name", "Limited"), ("redirect_uris", CALLBACK), ("kind", "public"), ("max_permissions", "deals.read"), ("refresh_idle_secs", "86400"), ("refresh_max_age_secs", " ")])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let limited = app.state.store.list_apps(&AccountId::from(account.as_str())).await.unwrap().into_iter().find(|a| a.name == "Limited").unwrap();
        assert_eq!((limited.refresh_idle_secs, limited.refresh_absolute_secs), (Some(86_400), None));
        assert!(!limited.allow_fragment, "fragment mode is off unless ticked");
        assert!(browser.expect_page("/dashboard/apps").await.contains("idle 1 day"));
        // Fragment mode, ticked in the form, is stored and shown.
        let csrf = browser.csrf("/dashboard/apps").await;
        let response = browser
            .post("/dashboard/apps", &[("csrf", &csrf), ("name", "Fragment"), ("redirect_uris", CALLBACK), ("kind", "public"), ("max_permissions", "deals.read"), ("allow_fragment", "on")])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let fragment = app.state.store.list_apps(&AccountId::from(account.as_str())).await.unwrap().into_iter().find(|a| a.name == "Fragment").unwrap();
        assert!(fragment.allow_fragment);
        assert!(browser.expect_page("/dashboard/apps").await.contains("tokens in the fragment"));
        let response = browser
            .post("/dashboard/apps", &[("name", "Forged"), ("redirect_uris", CALLBACK), ("max_permissions", "deals.read")])
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.state.store.list_apps(&AccountId::from(account.as_str())).await.unwrap().len(), 4);

        // The registered app works for users.
        let (user, _) = Browser::user(&app).await;
        let url = user.authorize_all(&query(&[("client_id", &client_id), ("redirect_uri", CALLBACK), ("permissions", "deals.read"), ("state", "s")])).await;
        assert!(param(&query_of(&url), "code").is_some());
    }

    async fn owners_see_and_revoke_only_their_own_apps_grants(app) {
        let (alice, alice_account) = owner(&app).await;
        let (bob, bob_account) = owner(&app).await;
        let alice_app = register_app_in(&app, &alice_account, "Alice CRM", &[CALLBACK], false, "deals.read").await;
        let bob_app = register_app_in(&app, &bob_account, "Bob Secret Tool", &[CALLBACK], false, "deals.read").await;
        let (user, email) = Browser::user(&app).await;
        let alice_pairs = token_session(&user, &alice_app, "deals.read").await;
        let alice_token = param(&alice_pairs, "token").unwrap().to_owned();
        let bob_pairs = token_session(&user, &bob_app, "deals.read").await;
        let bob_token = param(&bob_pairs, "token").unwrap().to_owned();
        let alice_grant = grant_of(&app, &email, &alice_app).await.unwrap();
        let bob_grant = grant_of(&app, &email, &bob_app).await.unwrap();

        let html = alice.expect_page("/dashboard/grants").await;
        assert!(html.contains(&email) && html.contains("Alice CRM") && html.contains("See your deals"));
        assert!(html.contains("not confirmed"), "the user's address is not confirmed yet");
        assert!(html.contains(alice_grant.id.as_str()));
        assert!(!html.contains("Bob Secret Tool") && !html.contains(bob_grant.id.as_str()));
        let apps = alice.expect_page("/dashboard/apps").await;
        assert!(apps.contains("Alice CRM") && !apps.contains("Bob Secret Tool") && !apps.contains(bob_app.client_id.as_str()));

        // Alice cannot revoke Bob's grant.
        let csrf = alice.csrf("/dashboard/grants").await;
        let response = alice.post(&format!("/dashboard/grants/{}/revoke", bob_grant.id), &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(grant_of(&app, &email, &bob_app).await.unwrap().revoked_at.is_none());

        // Bob revokes his own; Alice's is untouched.
        let csrf = bob.csrf("/dashboard/grants").await;
        let response = bob.post(&format!("/dashboard/grants/{}/revoke", bob_grant.id), &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/grants?done=grant-revoked");
        assert_eq!(app.whoami_status(&bob_token).await, 401, "refused at once");
        assert_eq!(app.whoami_status(&alice_token).await, 200);
        let html = bob.expect_page("/dashboard/grants").await;
        assert!(html.contains("revoked</span>"));
        assert!(!html.contains(&format!("/dashboard/grants/{}/revoke", bob_grant.id)));
        assert!(!html.contains("Alice CRM"));
    }
}
