//! Mail, end to end: messages sent through a real SMTP server the test starts (aiosmtpd) and read
//! back from it, a server that is down getting the mail once it is up, the outbox a server
//! without SMTP writes, the mail budgets, and the owner's own account page (password, email,
//! logins, settings) whose changes are confirmed by mail.

use std::sync::Arc;
use std::time::Duration;

use keyfob_store::AccountId;
use reqwest::StatusCode;

use crate::both_backends;
use crate::dashboard::Browser;
use crate::helpers::*;
use crate::mailbox::{SmtpSink, count_to, outbox, outbox_mail, spawn_sending_to};

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

async fn owner_signs_up_confirms_forgets_and_resets(backend: Backend) {
    let Some(sink) = SmtpSink::start(None).await else {
        return;
    };
    let Some(app) = spawn_sending_to(backend, &sink.url(), |_| {}).await else {
        return;
    };
    let browser = Browser::new(&app);
    assert_eq!(
        browser.signup(PASSWORD, PASSWORD).await.status(),
        StatusCode::OK
    );
    let mail = sink
        .mail(&browser.email, "Confirm your email address")
        .await;
    assert_eq!(mail.from, "no-reply@acme.example");
    assert!(
        mail.html.contains("Confirm my email address"),
        "an HTML part too"
    );
    let link = mail.link("/dashboard/verify?token=");
    // Only the token's hash is kept.
    let token = link.split("token=").nth(1).unwrap();
    assert!(!contains_bytes(&raw_database_text(&app).await, token));
    let owner = app
        .state
        .store
        .find_owner_by_email(&browser.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.email_verified_at, None);
    let (status, html) = browser.page(&link).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("is confirmed"), "{html}");
    let owner = app
        .state
        .store
        .find_owner(&owner.id)
        .await
        .unwrap()
        .unwrap();
    assert!(owner.email_verified_at.is_some());
    assert_eq!(
        browser.get(&link).await.status(),
        StatusCode::NOT_FOUND,
        "once only"
    );

    // Logged in here; then "Forgot password?" from another browser.
    assert_eq!(
        browser.login(PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let other = Browser::new(&app);
    let csrf = other.csrf("/dashboard/forgot").await;
    let response = other
        .post(
            "/dashboard/forgot",
            &[("csrf", &csrf), ("email", &browser.email)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mail = sink.mail(&browser.email, "Reset your password").await;
    let link = mail.link("/dashboard/reset?token=");
    let (status, html) = other.page(&link).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = csrf_of(&html);
    let token = link.split("token=").nth(1).unwrap();
    let new = "a brand new passphrase 42";
    let response = other
        .post(
            "/dashboard/reset",
            &[
                ("csrf", &csrf),
                ("token", token),
                ("password", new),
                ("confirm", new),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/dashboard/login?done=password-reset");
    assert!(!browser.signed_in().await, "every login ended");
    assert_eq!(
        other.login_as(&browser.email, PASSWORD).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        other.login_as(&browser.email, new).await.status(),
        StatusCode::SEE_OTHER
    );
    sink.mail(&browser.email, "Your password was changed").await;
    let events = owner_events(
        &app,
        &owner.account_id,
        &[
            "email.verified",
            "password.reset_requested",
            "password.reset",
        ],
    )
    .await;
    for action in [
        "email.verified",
        "password.reset_requested",
        "password.reset",
    ] {
        assert!(events.iter().any(|e| e == action), "{action} in {events:?}");
    }
}

/// The actions in an account's audit log, once `expected` are all there (events are written in
/// batches, a moment after the request).
async fn owner_events(app: &TestApp, account_id: &AccountId, expected: &[&str]) -> Vec<String> {
    let mut actions = Vec::new();
    for _ in 0..100 {
        let filter = keyfob_store::AuditFilter {
            account_id,
            action: None,
            actor_id: None,
            since: None,
            until: None,
            limit: 200,
            offset: 0,
        };
        let (events, _) = app.state.store.list_audit_events(&filter).await.unwrap();
        actions = events.into_iter().map(|e| e.action).collect::<Vec<_>>();
        if expected.iter().all(|a| actions.iter().any(|x| x == a)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    actions
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_signs_up_confirms_forgets_and_resets_through_smtp_sqlite() {
    owner_signs_up_confirms_forgets_and_resets(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_signs_up_confirms_forgets_and_resets_through_smtp_postgres() {
    owner_signs_up_confirms_forgets_and_resets(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_login_is_used_when_the_url_carries_it() {
    let Some(sink) = SmtpSink::start(Some(("keyfob", "s3cret:pass"))).await else {
        return;
    };
    let url = sink.url().replace("s3cret:pass", "s3cret%3Apass");
    let app = spawn_sending_to(Backend::Sqlite, &url, |_| {})
        .await
        .unwrap();
    let browser = Browser::new(&app);
    assert_eq!(
        browser.signup(PASSWORD, PASSWORD).await.status(),
        StatusCode::OK
    );
    sink.mail(&browser.email, "Confirm your email address")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_over_starttls_checked_against_the_trusted_ca() {
    let Some((sink, ca)) = SmtpSink::start_tls().await else {
        return;
    };
    // The server takes nothing before STARTTLS, so a message that arrives went over TLS, with
    // the certificate checked against the CA given (and `tls=required` refuses plain text).
    for url in [sink.url(), format!("{}?tls=required", sink.url())] {
        let ca = ca.clone();
        let app = spawn_sending_to(Backend::Sqlite, &url, |c| c.smtp_ca_file = Some(ca))
            .await
            .unwrap();
        let browser = Browser::new(&app);
        assert_eq!(
            browser.signup(PASSWORD, PASSWORD).await.status(),
            StatusCode::OK
        );
        sink.mail(&browser.email, "Confirm your email address")
            .await;
    }
    // Without the CA the certificate is not trusted, and nothing is sent in the clear instead.
    let app = spawn_sending_to(Backend::Sqlite, &sink.url(), |_| {})
        .await
        .unwrap();
    let browser = Browser::new(&app);
    assert_eq!(
        browser.signup(PASSWORD, PASSWORD).await.status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count_to(&sink.messages(), &browser.email), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_waits_for_a_server_that_is_down_and_goes_out_when_it_is_up() {
    let Some(probe) = SmtpSink::start(None).await else {
        return;
    };
    let url = probe.url();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    drop(probe);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let app = spawn_sending_to(Backend::Sqlite, &url, |_| {})
        .await
        .unwrap();
    let browser = Browser::new(&app);
    // The request does not wait for the mail server.
    assert_eq!(
        browser.signup(PASSWORD, PASSWORD).await.status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sink = SmtpSink::start_on(port, None).await;
    // Tried again after 2 s, then 10 s.
    let mail = tokio::time::timeout(
        Duration::from_secs(30),
        sink.mail(&browser.email, "Confirm your email address"),
    )
    .await
    .expect("the message arrives once the server is up");
    assert!(mail.link("/dashboard/verify?token=").len() > 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_mail_goes_to_the_outbox_readable_by_keyfob_only() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let browser = Browser::new(&app);
    assert_eq!(
        browser.signup(PASSWORD, PASSWORD).await.status(),
        StatusCode::OK
    );
    let mail = outbox_mail(&app, &browser.email, "Confirm your email address").await;
    assert_eq!(mail.from, "keyfob@localhost");
    let dir = app.state.config.data_dir.join("outbox");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(file.extension().unwrap(), "eml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mail_forms_cannot_be_used_to_flood_an_inbox() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let mut config = test_config(&db);
    config.mail_per_email_per_hour = 2;
    config.mail_per_address_per_hour = 4;
    let app = spawn_with(config, Arc::new(db)).await;
    let victim = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    app.create_account(&victim).await;
    let browser = Browser::new(&app);
    let ask = |email: String| {
        let browser = &browser;
        async move {
            let csrf = browser.csrf("/dashboard/forgot").await;
            browser
                .post("/dashboard/forgot", &[("csrf", &csrf), ("email", &email)])
                .await
                .status()
        }
    };
    assert_eq!(ask(victim.clone()).await, StatusCode::OK);
    assert_eq!(ask(victim.clone()).await, StatusCode::OK);
    // Per email, whether or not it has an account.
    assert_eq!(ask(victim.clone()).await, StatusCode::TOO_MANY_REQUESTS);
    let nobody = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    assert_eq!(ask(nobody.clone()).await, StatusCode::OK);
    // Per client address, whatever the email.
    assert_eq!(ask(nobody.clone()).await, StatusCode::OK);
    let third = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    assert_eq!(ask(third).await, StatusCode::TOO_MANY_REQUESTS);
    outbox_mail(&app, &victim, "Reset your password").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count_to(&outbox(&app), &victim), 2);
}

both_backends! {
    async fn an_owner_changes_their_password_and_sees_and_ends_their_logins(app) {
        let here = Browser::signed_up(&app).await;
        let there = Browser::new(&app);
        let response = there
            .http
            .post(there.url("/dashboard/login"))
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
            .form(&[
                ("csrf", there.csrf("/dashboard/login").await.as_str()),
                ("email", here.email.as_str()),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let (status, page) = here.page("/dashboard/account").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("Firefox on Linux"), "{page}");
        assert!(page.contains("this browser"));
        assert!(page.contains("not confirmed"));

        // The wrong current password changes nothing.
        let csrf = csrf_of(&page);
        let new = "a brand new passphrase 42";
        let form = |current: &'static str, confirm: &'static str| {
            vec![("csrf", csrf.clone()), ("current", current.to_owned()), ("password", new.to_owned()), ("confirm", confirm.to_owned())]
        };
        let response = here.http.post(here.url("/dashboard/account/password")).form(&form("not my password at all", new)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = here.http.post(here.url("/dashboard/account/password")).form(&form(PASSWORD, "another one entirely")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(there.signed_in().await);

        let response = here.http.post(here.url("/dashboard/account/password")).form(&form(PASSWORD, new)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(here.signed_in().await, "this login stays");
        assert!(!there.signed_in().await, "the other one ended");
        outbox_mail(&app, &here.email, "Your password was changed").await;
        assert_eq!(there.login_as(&here.email, PASSWORD).await.status(), StatusCode::BAD_REQUEST);
        assert_eq!(there.login_as(&here.email, new).await.status(), StatusCode::SEE_OTHER);

        // Ending another login: one's own only.
        let stranger = Browser::signed_up(&app).await;
        let owner = app.state.store.find_owner_by_email(&stranger.email).await.unwrap().unwrap();
        let theirs = app.state.store.list_owner_logins(&owner.id, keyfob_store::Timestamp::now()).await.unwrap();
        let csrf = here.csrf("/dashboard/account").await;
        let response = here.post(&format!("/dashboard/account/logins/{}/end", theirs[0].id_hash), &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(stranger.signed_in().await);
        let response = here.post("/dashboard/account/logins/end-others", &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(!there.signed_in().await);
        assert!(here.signed_in().await);
        assert!(stranger.signed_in().await);
        let me = app.state.store.find_owner_by_email(&here.email).await.unwrap().unwrap();
        let events = owner_events(&app, &me.account_id, &["password.changed", "owner.logins_ended"]).await;
        for action in ["password.changed", "owner.logins_ended"] {
            assert!(events.iter().any(|e| e == action), "{action} in {events:?}");
        }
    }

    async fn an_owner_moves_to_a_new_address_confirmed_there(app) {
        let browser = Browser::signed_up(&app).await;
        let taken = Browser::signed_up(&app).await;
        let new = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let csrf = browser.csrf("/dashboard/account").await;
        let response = browser.post("/dashboard/account/email", &[("csrf", &csrf), ("email", &new), ("password", "not my password")]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = browser.post("/dashboard/account/email", &[("csrf", &csrf), ("email", "not an email"), ("password", PASSWORD)]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(count_to(&outbox(&app), &new), 0);

        let response = browser.post("/dashboard/account/email", &[("csrf", &csrf), ("email", &new), ("password", PASSWORD)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let note = outbox_mail(&app, &browser.email, "Your email address is about to change").await;
        assert!(note.text.contains(&new));
        let link = outbox_mail(&app, &new, "Confirm your new email address").await.link("/dashboard/account/email/confirm?token=");
        // Nothing changes before the link is followed.
        assert!(app.state.store.find_owner_by_email(&browser.email).await.unwrap().is_some());
        let (status, html) = Browser::new(&app).page(&link).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(app.state.store.find_owner_by_email(&browser.email).await.unwrap().is_none());
        let moved = app.state.store.find_owner_by_email(&new).await.unwrap().unwrap();
        assert!(moved.email_verified_at.is_some());
        assert_eq!(Browser::new(&app).login_as(&new, PASSWORD).await.status(), StatusCode::SEE_OTHER);
        assert_eq!(Browser::new(&app).login_as(&browser.email, PASSWORD).await.status(), StatusCode::BAD_REQUEST);

        // An address another account has: the link says so, to whoever follows it; nothing moves.
        let csrf = browser.csrf("/dashboard/account").await;
        let response = browser.post("/dashboard/account/email", &[("csrf", &csrf), ("email", &taken.email), ("password", PASSWORD)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let link = outbox_mail(&app, &taken.email, "Confirm your new email address").await.link("/dashboard/account/email/confirm?token=");
        assert_eq!(Browser::new(&app).get(&link).await.status(), StatusCode::CONFLICT);
        assert!(app.state.store.find_owner_by_email(&new).await.unwrap().is_some());
        let events = owner_events(&app, &moved.account_id, &["email.change_requested", "email.changed"]).await;
        for action in ["email.change_requested", "email.changed"] {
            assert!(events.iter().any(|e| e == action), "{action} in {events:?}");
        }
    }

    async fn an_owner_asks_for_a_new_confirmation_link_and_sets_the_accounts_rule(app) {
        let browser = Browser::signed_up(&app).await;
        let owner = app.state.store.find_owner_by_email(&browser.email).await.unwrap().unwrap();
        let csrf = browser.csrf("/dashboard/account").await;
        let response = browser.post("/dashboard/account/verify", &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        // The second link (the first, from sign-up, stopped working when it was made).
        let first = crate::mailbox::wait_for_nth(|| outbox(&app), &browser.email, "Confirm your email address", 1).await;
        let link = crate::mailbox::wait_for_nth(|| outbox(&app), &browser.email, "Confirm your email address", 2).await.link("/dashboard/verify?token=");
        assert_eq!(browser.get(&first.link("/dashboard/verify?token=")).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(browser.get(&link).await.status(), StatusCode::OK);
        assert!(browser.page("/dashboard/account").await.1.contains(">confirmed<"));

        for (value, on) in [(Some("on"), true), (None, false)] {
            let mut form = vec![("csrf", csrf.as_str())];
            if let Some(value) = value {
                form.push(("require_verified_users", value));
            }
            let response = browser.post("/dashboard/account/settings", &form).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            let account = app.state.store.find_account(&owner.account_id).await.unwrap().unwrap();
            assert_eq!(account.require_verified_users, on);
        }
        let response = browser.post("/dashboard/account/settings", &[("csrf", &csrf), ("require_verified_users", "maybe")]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = browser.post("/dashboard/account/settings", &[("require_verified_users", "on")]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let account = app.state.store.find_account(&owner.account_id).await.unwrap().unwrap();
        assert!(!account.require_verified_users, "nothing changed");
    }
}
