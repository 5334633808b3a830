//! The second factor (TOTP), driven as a browser without JavaScript would: an owner and an end
//! user enrol (codes computed from the secret the page shows), log in with a code, are refused a
//! wrong or replayed code, use a recovery code once, make new ones, step up a reveal, remove the
//! factor; an account requires one of its owners; an end user logs in with a code in the middle of
//! an authorization request and goes on to consent; and bad input to the code step (missing or
//! garbage code, missing CSRF token, forged or missing pending cookie) changes nothing.

use std::sync::Arc;

use keyfob::services::apps::NewApp;
use keyfob_store::FactorHolder;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};

use crate::both_backends;
use crate::dashboard::{Browser, csrf_in, location};
use crate::helpers::*;
use crate::routes::html_text;

const OWNER_PAGE: &str = "/dashboard/security/totp";
const USER_PAGE: &str = "/auth/security/totp";
const OWNER_CODE: &str = "/dashboard/login/totp";
const USER_CODE: &str = "/auth/login/totp";
const CALLBACK: &str = "https://client.example.com/cb";

/// A confirmed factor, as the test's authenticator app holds it.
struct Enrolled {
    totp: TOTP,
    /// The step of the code that confirmed it: no code of this step or earlier works again.
    step: u64,
    recovery: Vec<String>,
}

impl Enrolled {
    /// The code of `step`.
    fn code(&self, step: u64) -> String {
        self.totp.generate(step * 30)
    }

    /// A code accepted now: the step after the last one used (within a step of now).
    fn next(&mut self) -> String {
        self.step += 1;
        self.code(self.step)
    }

    /// Six digits that are no code of the steps around now.
    fn wrong(&self) -> String {
        let near: Vec<String> = (self.step.saturating_sub(2)..self.step + 4)
            .map(|s| self.code(s))
            .collect();
        (0..10)
            .map(|d| format!("{d}{d}{d}{d}{d}{d}"))
            .find(|c| !near.contains(c))
            .unwrap()
    }
}

fn now_step() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

/// The HTML-escaped value of the first field named `name`.
fn value_of(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name}"))
        + marker.len();
    let end = start + html[start..].find('"').unwrap();
    unescape(&html[start..end])
}

/// Text of an HTML attribute or element with its character references undone.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = html_text(text);
    while let Some(at) = rest.find("&#") {
        out.push_str(&rest[..at]);
        let end = at + rest[at..].find(';').unwrap();
        let number = &rest[at + 2..end];
        let code = match number.strip_prefix('x') {
            Some(hex) => u32::from_str_radix(hex, 16).unwrap(),
            None => number.parse().unwrap(),
        };
        out.push(char::from_u32(code).unwrap());
        rest = rest[end + 1..].to_owned();
    }
    out.push_str(&rest);
    out
}

/// The text of the element with `id`.
fn text_of(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no element {id}: {html}"));
    let start = start + html[start..].find('>').unwrap() + 1;
    let end = start + html[start..].find('<').unwrap();
    unescape(html[start..end].trim())
}

/// The recovery codes on the page that shows them.
fn recovery_codes_in(html: &str) -> Vec<String> {
    let start = html
        .find("id=\"recovery-codes\"")
        .expect("the recovery codes");
    let end = start + html[start..].find("</ul>").unwrap();
    html[start..end]
        .split("<code>")
        .skip(1)
        .map(|part| part[..part.find("</code>").unwrap()].to_owned())
        .collect()
}

/// Enrols the browser's owner or user on `page` (`OWNER_PAGE` or `USER_PAGE`).
async fn enrol(browser: &Browser, page: &str, email: &str) -> Enrolled {
    let (status, html) = browser.page(page).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("<svg") && html.contains("id=\"totp-qr\""),
        "a QR code"
    );
    let uri = text_of(&html, "totp-uri");
    let key = text_of(&html, "totp-secret");
    assert!(uri.starts_with("otpauth://totp/Keyfob:"), "{uri}");
    assert!(
        uri.contains(&format!("secret={key}")) && uri.contains("issuer=Keyfob"),
        "{uri}"
    );
    assert!(uri.contains(&email.replace('@', "%40")), "{uri}");
    let secret = Secret::Encoded(key.clone()).to_bytes().unwrap();
    let totp = TOTP::new(Algorithm::SHA1, 6, 1, 30, secret, None, String::new()).unwrap();
    let csrf = csrf_in(&html);
    let sealed = value_of(&html, "secret");
    let step = now_step();
    let code = totp.generate(step * 30);
    let response = browser
        .post(
            &format!("{page}/confirm"),
            &[("csrf", &csrf), ("secret", &sealed), ("code", &code)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    let recovery = recovery_codes_in(&html);
    assert_eq!(recovery.len(), 10, "{html}");
    Enrolled {
        totp,
        step,
        recovery,
    }
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

/// The password step of an owner's login: answered with the code page, no login yet.
async fn owner_password(browser: &Browser) {
    let response = browser.login(PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), OWNER_CODE);
    assert!(!browser.signed_in().await, "no login before the code");
}

/// The code step of an owner's login.
async fn owner_code(browser: &Browser, code: &str) -> Response {
    let csrf = browser.csrf(OWNER_CODE).await;
    browser
        .post(OWNER_CODE, &[("csrf", &csrf), ("code", code)])
        .await
}

/// An owner with an API key (to read the audit log), enrolled; logged in still.
async fn enrolled_owner(app: &TestApp) -> (Browser, String, Enrolled) {
    let owner = Browser::signed_up(app).await;
    let key = owner.create_key("audit").await;
    app.wait_until_status(&key, 200).await;
    let enrolled = enrol(&owner, OWNER_PAGE, &owner.email).await;
    (owner, key, enrolled)
}

both_backends! {
    async fn an_owner_enrols_and_logs_in_with_a_code_once(app) {
        let owner = Browser::signed_up(&app).await;
        let key = owner.create_key("audit").await;
        app.wait_until_status(&key, 200).await;
        let holder = owner_holder(&app, &owner.email).await;

        // A wrong confirmation code, or none, or a form without its token: no factor.
        let html = owner.page(OWNER_PAGE).await.1;
        let (csrf, sealed) = (csrf_in(&html), value_of(&html, "secret"));
        for (csrf, code, status) in [(csrf.as_str(), "000000", 400), (csrf.as_str(), "", 400), ("", "123456", 403)] {
            let response = owner.post(&format!("{OWNER_PAGE}/confirm"), &[("csrf", csrf), ("secret", &sealed), ("code", code)]).await;
            assert_eq!(response.status().as_u16(), status, "{code:?}");
        }
        // A secret sealed for someone else, or made up, does not open.
        let response = owner.post(&format!("{OWNER_PAGE}/confirm"), &[("csrf", &csrf), ("secret", "garbage"), ("code", "123456")]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(app.state.store.find_totp_factor(&holder).await.unwrap().is_none());

        let mut enrolled = enrol(&owner, OWNER_PAGE, &owner.email).await;
        let (_, html) = owner.page(OWNER_PAGE).await;
        assert_eq!(text_of(&html, "codes-left"), "10");
        // The secret is kept sealed: not in the database's bytes.
        let raw = raw_database_text(&app).await;
        assert!(!contains_bytes(&raw, &enrolled.totp.get_secret_base32()));
        let events = audit_until(&app, &key, "action=mfa.enrolled", |d| !d.is_empty()).await;
        assert_eq!(events[0]["actor"]["kind"], "owner");

        // The password alone gives no login; a wrong code and the confirmation's own code
        // (replayed) are refused; the next step's code gets in.
        owner.logout().await;
        owner_password(&owner).await;
        let wrong = owner_code(&owner, &enrolled.wrong()).await;
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
        assert!(wrong.text().await.unwrap().contains("incorrect or was already used"));
        let replayed = owner_code(&owner, &enrolled.code(enrolled.step)).await;
        assert_eq!(replayed.status(), StatusCode::BAD_REQUEST);
        assert!(!owner.signed_in().await);
        let code = enrolled.next();
        let response = owner_code(&owner, &code).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/keys");
        assert!(owner.signed_in().await);
        // The pending cookie is gone with it: the code page refuses.
        assert_eq!(owner.get(OWNER_CODE).await.status(), StatusCode::FORBIDDEN);

        // The same code again, in another login: refused.
        owner.logout().await;
        owner_password(&owner).await;
        assert_eq!(owner_code(&owner, &code).await.status(), StatusCode::BAD_REQUEST);
        assert!(!owner.signed_in().await);

        let failed = audit_until(&app, &key, "action=mfa.failed", |d| d.len() >= 3).await;
        assert!(failed.iter().all(|e| e["detail"]["at"] == "login" && e["actor"]["kind"] == "anonymous"));
        assert!(failed.iter().all(|e| !e.to_string().contains(&code)), "never the code");
        let logins = audit_until(&app, &key, "action=owner.login", |d| d.iter().any(|e| e["detail"]["mfa"] == "totp")).await;
        assert!(!logins.is_empty());
    }

    async fn a_recovery_code_works_once_and_a_new_set_replaces_the_old(app) {
        let (owner, key, mut enrolled) = enrolled_owner(&app).await;
        owner.logout().await;
        owner_password(&owner).await;
        // Typed in capitals with spaces: the same code.
        let typed = enrolled.recovery[0].to_uppercase().replace('-', " ");
        let response = owner_code(&owner, &typed).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(owner.signed_in().await);
        let used = audit_until(&app, &key, "action=mfa.recovery_used", |d| !d.is_empty()).await;
        assert_eq!(used[0]["detail"]["remaining"], 9);
        let (_, html) = owner.page(OWNER_PAGE).await;
        assert_eq!(text_of(&html, "codes-left"), "9");

        owner.logout().await;
        owner_password(&owner).await;
        assert_eq!(owner_code(&owner, &enrolled.recovery[0]).await.status(), StatusCode::BAD_REQUEST, "used once");
        assert_eq!(owner_code(&owner, &enrolled.recovery[1]).await.status(), StatusCode::SEE_OTHER);

        // A new set needs a current code; a wrong one changes nothing.
        let csrf = owner.csrf(OWNER_PAGE).await;
        let refused = owner.post(&format!("{OWNER_PAGE}/recovery-codes"), &[("csrf", &csrf), ("code", &enrolled.wrong())]).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let missing = owner.post(&format!("{OWNER_PAGE}/recovery-codes"), &[("csrf", &csrf), ("code", "")]).await;
        assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
        let forged = owner.post(&format!("{OWNER_PAGE}/recovery-codes"), &[("csrf", "x"), ("code", &enrolled.code(enrolled.step + 1))]).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        let response = owner.post(&format!("{OWNER_PAGE}/recovery-codes"), &[("csrf", &csrf), ("code", &enrolled.next())]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let fresh = recovery_codes_in(&response.text().await.unwrap());
        assert_eq!(fresh.len(), 10);
        assert!(fresh.iter().all(|c| !enrolled.recovery.contains(c)));
        audit_until(&app, &key, "action=mfa.recovery_regenerated", |d| !d.is_empty()).await;

        owner.logout().await;
        owner_password(&owner).await;
        assert_eq!(owner_code(&owner, &enrolled.recovery[2]).await.status(), StatusCode::BAD_REQUEST, "the old set");
        assert_eq!(owner_code(&owner, &fresh[0]).await.status(), StatusCode::SEE_OTHER);
    }

    async fn removing_the_factor_needs_a_code_and_the_password(app) {
        let (owner, key, mut enrolled) = enrolled_owner(&app).await;
        let holder = owner_holder(&app, &owner.email).await;
        let remove = format!("{OWNER_PAGE}/remove");
        let csrf = owner.csrf(OWNER_PAGE).await;
        let code = enrolled.code(enrolled.step + 1);
        for (csrf, code, password, status) in [
            (csrf.as_str(), code.as_str(), "not my password at all", 400),
            (csrf.as_str(), enrolled.wrong().as_str(), PASSWORD, 400),
            (csrf.as_str(), "", PASSWORD, 400),
            (csrf.as_str(), "garbage", PASSWORD, 400),
            ("", code.as_str(), PASSWORD, 403),
        ] {
            let response = owner.post(&remove, &[("csrf", csrf), ("code", code), ("password", password)]).await;
            assert_eq!(response.status().as_u16(), status, "{code:?} {password:?}");
            assert!(app.state.store.find_totp_factor(&holder).await.unwrap().is_some());
        }
        let failed = audit_until(&app, &key, "action=mfa.failed", |d| d.len() >= 2).await;
        assert!(failed.iter().all(|e| e["detail"]["at"] == "remove" && e["actor"]["kind"] == "owner"));

        let response = owner.post(&remove, &[("csrf", &csrf), ("code", &enrolled.next()), ("password", PASSWORD)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(app.state.store.find_totp_factor(&holder).await.unwrap().is_none());
        assert_eq!(app.state.store.unused_recovery_codes(&holder).await.unwrap(), 0);
        audit_until(&app, &key, "action=mfa.removed", |d| !d.is_empty()).await;

        // The password alone logs in again.
        owner.logout().await;
        let response = owner.login(PASSWORD).await;
        assert_eq!(location(&response), "/dashboard/keys");
    }

    async fn a_reveal_asks_an_owner_with_a_factor_for_a_code(app) {
        let (owner, key, mut enrolled) = enrolled_owner(&app).await;
        let response = app
            .request(Method::POST, "/api/creditApplications", Some(&key))
            .json(&json!({"primaryApplicant": {"ssn": "123-45-6789"}}))
            .send()
            .await
            .unwrap();
        let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let path = format!("/dashboard/data/creditApplications/{id}");
        let html = owner.page(&path).await.1;
        assert!(html.contains("name=\"code\""), "the reveal form asks for a code");
        let csrf = csrf_in(&html);
        let reveal = format!("{path}/reveal");
        for code in ["", "garbage", enrolled.wrong().as_str()] {
            let response = owner.post(&reveal, &[("csrf", &csrf), ("field", "primaryApplicant.ssn"), ("password", PASSWORD), ("code", code)]).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{code:?}");
            assert!(!response.text().await.unwrap().contains("123-45-6789"));
        }
        let failed = audit_until(&app, &key, "action=mfa.failed", |d| d.len() >= 2).await;
        assert!(failed.iter().all(|e| e["detail"]["at"] == "reveal"));
        let none = audit_until(&app, &key, "action=sensitive.revealed", |_| true).await;
        assert!(none.is_empty());

        let response = owner.post(&reveal, &[("csrf", &csrf), ("field", "primaryApplicant.ssn"), ("password", PASSWORD), ("code", &enrolled.next())]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.text().await.unwrap().contains("123-45-6789"));
    }

    async fn an_account_can_require_a_factor_of_every_owner(app) {
        let owner = Browser::signed_up(&app).await;
        let key = owner.create_key("audit").await;
        app.wait_until_status(&key, 200).await;
        let account = app.state.store.find_owner_by_email(&owner.email).await.unwrap().unwrap().account_id;
        let required = format!("{OWNER_PAGE}/required");
        let csrf = owner.csrf(OWNER_PAGE).await;
        // Without a factor of one's own, or with a value that is neither yes nor no: refused.
        for (value, status) in [("yes", 400), ("maybe", 400), ("", 400)] {
            let response = owner.post(&required, &[("csrf", &csrf), ("required", value)]).await;
            assert_eq!(response.status().as_u16(), status, "{value:?}");
        }
        let response = owner.post(&required, &[("csrf", "x"), ("required", "no")]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(!app.state.store.account_requires_mfa(&account).await.unwrap());

        enrol(&owner, OWNER_PAGE, &owner.email).await;
        let response = owner.post(&required, &[("csrf", &csrf), ("required", "yes")]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(app.state.store.account_requires_mfa(&account).await.unwrap());
        let events = audit_until(&app, &key, "action=account.mfa_required_changed", |d| !d.is_empty()).await;
        assert_eq!(events[0]["detail"]["required"], true);
        assert!(owner.signed_in().await, "an owner with a factor goes on");

        // Another owner of the account without a factor (the factor removed behind the
        // dashboard's back stands for one) is sent to enrol from every page but logout.
        let holder = owner_holder(&app, &owner.email).await;
        assert!(app.state.store.delete_totp_factor(&holder).await.unwrap());
        for path in ["/dashboard/keys", "/dashboard", "/dashboard/data", "/dashboard/audit", "/dashboard/nowhere"] {
            let response = owner.get(path).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
            assert_eq!(location(&response), OWNER_PAGE, "{path}");
        }
        let response = owner.post("/dashboard/keys", &[("csrf", &csrf), ("name", "sneaky")]).await;
        assert_eq!(location(&response), OWNER_PAGE);
        assert_eq!(app.state.store.list_api_keys(&account).await.unwrap().len(), 1, "no key made");
        let (status, html) = owner.page(OWNER_PAGE).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("id=\"must-enrol\""));
        enrol(&owner, OWNER_PAGE, &owner.email).await;
        assert!(owner.signed_in().await, "enrolled, the dashboard opens again");

        // Logging out still works for an owner who must enrol.
        assert!(app.state.store.delete_totp_factor(&holder).await.unwrap());
        let response = owner.post("/dashboard/logout", &[("csrf", &csrf)]).await;
        assert_eq!(location(&response), "/dashboard/login");
        // Logged in again with the password alone (no factor): straight to enrolment.
        let response = owner.login(PASSWORD).await;
        assert_eq!(location(&response), "/dashboard/keys");
        assert_eq!(location(&owner.get("/dashboard/keys").await), OWNER_PAGE);

        // Turned off, the owner may go on without one.
        let csrf = owner.csrf(OWNER_PAGE).await;
        let response = owner.post(&required, &[("csrf", &csrf), ("required", "no")]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(owner.signed_in().await);
        audit_until(&app, &key, "action=account.mfa_required_changed", |d| d.len() == 2).await;
    }

    async fn bad_input_to_the_code_step_changes_nothing(app) {
        let (owner, _, mut enrolled) = enrolled_owner(&app).await;
        let holder = owner_holder(&app, &owner.email).await;
        let before = app.state.store.find_totp_factor(&holder).await.unwrap();
        owner.logout().await;
        // No pending login at all.
        assert_eq!(owner.get(OWNER_CODE).await.status(), StatusCode::FORBIDDEN);
        let csrf = owner.csrf("/dashboard/login").await;
        let response = owner.post(OWNER_CODE, &[("csrf", &csrf), ("code", &enrolled.code(enrolled.step + 1))]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);

        owner_password(&owner).await;
        let csrf = owner.csrf(OWNER_CODE).await;
        for (csrf, code, status) in [
            ("", enrolled.code(enrolled.step + 1), 403),
            ("forged", enrolled.code(enrolled.step + 1), 403),
            (csrf.as_str(), String::new(), 400),
            (csrf.as_str(), "garbage".to_owned(), 400),
            (csrf.as_str(), "1234567890".repeat(50), 400),
        ] {
            let response = owner.post(OWNER_CODE, &[("csrf", csrf), ("code", &code)]).await;
            assert_eq!(response.status().as_u16(), status, "{csrf:?} {code:?}");
            assert!(!owner.signed_in().await);
        }
        assert_eq!(app.state.store.find_totp_factor(&holder).await.unwrap(), before);
        assert_eq!(app.state.store.unused_recovery_codes(&holder).await.unwrap(), 10);

        // A pending cookie made up, or made for someone else, or by another server: refused.
        let owner_id = holder.id().to_owned();
        let other_key = keyfob::logins::Logins::new(&app.state.config, &keyfob::crypto::MasterKey::generate());
        let forged_elsewhere = other_key.pending_cookie(keyfob::logins::LoginKind::Owner, &owner_id);
        let for_a_user = app.state.logins.pending_cookie(keyfob::logins::LoginKind::User, &owner_id);
        let genuine = app.state.logins.pending_cookie(keyfob::logins::LoginKind::Owner, &owner_id);
        let (_, signed) = genuine.split_once('.').unwrap();
        let someone_else = format!("owner-someone-else.{signed}");
        for planted in [forged_elsewhere, for_a_user, someone_else, owner_id.clone(), "x.y".to_owned()] {
            let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
            let form_token = app.state.logins.form_token("dashboard");
            let response = client
                .post(owner.url(OWNER_CODE))
                .header("cookie", format!("kf_mfa={planted}; kf_form={form_token}"))
                .form(&[("csrf", form_token.as_str()), ("code", enrolled.code(enrolled.step + 1).as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{planted}");
            assert!(response.headers().get("set-cookie").is_some_and(|c| c.to_str().unwrap().starts_with("kf_mfa=")), "the cookie is cleared");
        }
        assert_eq!(app.state.store.find_totp_factor(&holder).await.unwrap(), before);
        // The genuine one, from another client, with a right code: in.
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let form_token = app.state.logins.form_token("dashboard");
        let response = client
            .post(owner.url(OWNER_CODE))
            .header("cookie", format!("kf_mfa={genuine}; kf_form={form_token}"))
            .form(&[("csrf", form_token.as_str()), ("code", enrolled.next().as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/keys");
    }

    async fn an_end_user_logs_in_with_a_code_during_an_authorization_request(app) {
        let account = app.create_account(&format!("{}@example.com", uuid::Uuid::new_v4().simple())).await;
        let key = app.create_key(&account).await;
        app.wait_until_status(&key, 200).await;
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
        keyfob::services::users::create_user(app.state.store.as_ref(), &app.state.passwords, &email, PASSWORD.into()).await.unwrap();
        let user = Browser::new(&app);
        let login = |request: String| {
            let user = &user;
            let email = email.clone();
            async move {
                let html = user.page(&format!("/auth/login?{request}")).await.1;
                let csrf = csrf_in(&html);
                let request = value_of(&html, "request");
                user.post("/auth/login", &[("csrf", &csrf), ("email", &email), ("password", PASSWORD), ("request", &request)]).await
            }
        };
        let response = login(String::new()).await;
        assert_eq!(location(&response), "/auth/grants");
        let grants = user.page("/auth/grants").await.1;
        assert!(grants.contains("href=\"/auth/security/totp\""), "linked from the grants page");
        let mut enrolled = enrol(&user, USER_PAGE, &email).await;
        let csrf = user.csrf(USER_PAGE).await;
        user.post("/auth/logout", &[("csrf", &csrf)]).await;

        // The application sends the user to log in; the password leads to the code page with
        // the request, and the code back to the request, and on to consent.
        let request = serde_urlencoded::to_string([
            ("client_id", client.client_id.as_str()),
            ("redirect_uri", CALLBACK),
            ("permissions", "deals.read"),
            ("state", "st8"),
        ])
        .unwrap();
        let response = login(request.clone()).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let code_page = location(&response).to_owned();
        assert!(code_page.starts_with(&format!("{USER_CODE}?")), "{code_page}");
        assert_eq!(user.get("/auth/grants").await.status(), StatusCode::SEE_OTHER, "no login yet");
        let (status, html) = user.page(&code_page).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Deal Tracker"), "the application is named");
        let csrf = csrf_in(&html);
        let carried = value_of(&html, "request");

        let wrong = user.post(USER_CODE, &[("csrf", &csrf), ("code", &enrolled.wrong()), ("request", &carried)]).await;
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
        let replayed = user.post(USER_CODE, &[("csrf", &csrf), ("code", &enrolled.code(enrolled.step)), ("request", &carried)]).await;
        assert_eq!(replayed.status(), StatusCode::BAD_REQUEST);
        let missing_csrf = user.post(USER_CODE, &[("code", &enrolled.code(enrolled.step + 1)), ("request", &carried)]).await;
        assert_eq!(missing_csrf.status(), StatusCode::FORBIDDEN);
        let bad_request = user.post(USER_CODE, &[("csrf", &csrf), ("code", &enrolled.code(enrolled.step + 1)), ("request", "client_id=%00")]).await;
        assert_eq!(bad_request.status(), StatusCode::BAD_REQUEST);
        assert_eq!(user.get("/auth/grants").await.status(), StatusCode::SEE_OTHER, "still no login");

        let response = user.post(USER_CODE, &[("csrf", &csrf), ("code", &enrolled.next()), ("request", &carried)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let next = location(&response).to_owned();
        assert!(next.starts_with("/auth?") && next.contains(client.client_id.as_str()), "{next}");
        let (status, consent) = user.page(&next).await;
        assert_eq!(status, StatusCode::OK);
        assert!(consent.contains("action=\"/auth/consent\""), "the consent page: {consent}");
        assert_eq!(user.get("/auth/grants").await.status(), StatusCode::OK);

        let failed = audit_until(&app, &key, "action=mfa.failed", |d| d.len() >= 2).await;
        assert!(failed.iter().all(|e| e["detail"]["client_id"] == client.client_id.as_str()));
        let logins = audit_until(&app, &key, "action=user.login", |d| !d.is_empty()).await;
        assert_eq!(logins[0]["detail"]["mfa"], "totp");

        // A recovery code works once here too, and the factor is removed with code and password.
        let csrf = user.csrf("/auth/grants").await;
        user.post("/auth/logout", &[("csrf", &csrf)]).await;
        let response = login(String::new()).await;
        assert_eq!(location(&response), USER_CODE);
        let csrf = user.csrf(USER_CODE).await;
        let response = user.post(USER_CODE, &[("csrf", &csrf), ("code", &enrolled.recovery[0]), ("request", "")]).await;
        assert_eq!(location(&response), "/auth/grants");
        let csrf = user.csrf(USER_PAGE).await;
        let refused = user.post(&format!("{USER_PAGE}/remove"), &[("csrf", &csrf), ("code", &enrolled.recovery[0]), ("password", PASSWORD)]).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "a used recovery code");
        let response = user.post(&format!("{USER_PAGE}/remove"), &[("csrf", &csrf), ("code", &enrolled.recovery[1]), ("password", PASSWORD)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let user_row = app.state.store.find_user_by_email(&email).await.unwrap().unwrap();
        assert!(app.state.store.find_totp_factor(&FactorHolder::User(user_row.id)).await.unwrap().is_none());
    }

    async fn a_master_key_rotation_reseals_the_secrets(app) {
        let (owner, key, mut enrolled) = enrolled_owner(&app).await;
        let new = keyfob::crypto::MasterKey::generate();
        let done = keyfob::services::master_key::rotate_master_key(app.state.store.as_ref(), &app.state.master, &new)
            .await
            .unwrap();
        assert_eq!(done.totp_secrets, 1);
        // A node with the new key opens the secret: the next code logs in there.
        let mut config = test_config(&app.db);
        config.master_key_hex = Some(new.to_hex().into());
        config.public_url = Some(app.base.clone());
        let next = spawn_with(config, app.db.clone()).await;
        next.wait_until_status(&key, 200).await;
        let browser = Browser::new(&next);
        let response = browser.login_as(&owner.email, PASSWORD).await;
        assert_eq!(location(&response), OWNER_CODE);
        let response = owner_code(&browser, &enrolled.next()).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/keys");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_spend_the_login_budgets() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let mut config = test_config(&db);
    config.login_attempts_per_email_and_address = 3;
    let app = spawn_with(config, Arc::new(db)).await;
    let (owner, _, enrolled) = enrolled_owner(&app).await;
    // A browser without the owner's device cookie: a stranger who knows the password.
    let stranger = Browser::new(&app);
    let response = stranger.login_as(&owner.email, PASSWORD).await;
    assert_eq!(location(&response), OWNER_CODE);
    for _ in 0..3 {
        assert_eq!(
            owner_code(&stranger, &enrolled.wrong()).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
    let response = owner_code(&stranger, &enrolled.code(enrolled.step + 1)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().get("retry-after").is_some());
    assert!(!stranger.signed_in().await);
}
