//! End users' mailed links: "Forgot password?" on the login page (the same answer whoever has the
//! address), the reset that ends every login and session, the verification link and the
//! account's rule that only verified users may sign in to its applications. Mail is read back
//! from the outbox the server writes without SMTP.

use super::*;
use crate::mailbox::{count_to, outbox};
use crate::smtp_both_backends;

/// Asks for a reset link on `/auth/forgot` for `email`, during the request `q`; the answer.
async fn forgot(browser: &Browser, email: &str, q: &str) -> Response {
    let html = browser.expect_page(&format!("/auth/forgot?{q}")).await;
    let csrf = csrf_in(&html);
    let request = hidden(&html, "request").unwrap_or_default();
    browser
        .post(
            "/auth/forgot",
            &[("csrf", &csrf), ("email", email), ("request", &request)],
        )
        .await
}

/// The reset form at `link`, sent with `password` twice; the answer.
async fn reset(browser: &Browser, link: &str, password: &str, confirm: &str) -> Response {
    let html = browser.expect_page(link).await;
    let csrf = csrf_in(&html);
    let token = hidden(&html, "token").expect("the link's token");
    browser
        .post(
            "/auth/reset",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("password", password),
                ("confirm", confirm),
            ],
        )
        .await
}

smtp_both_backends! {
    async fn forgot_password_answers_alike_and_a_reset_ends_every_login_and_session(app, sink) {
        let client = register_app(&app, false, "deals.read").await;
        let (old, email) = Browser::user(&app).await;
        let fragment = token_session(&old, &client, "deals.read").await;
        let access = param(&fragment, "access_token").unwrap().to_owned();
        assert_eq!(app.whoami_status(&access).await, 200);

        // The login page offers it, with the request.
        let q = request(&client, "deals.read");
        let stranger = Browser::new(&app);
        let login = stranger.expect_page(&format!("/auth/login?{q}")).await;
        assert!(login.contains("href=\"/auth/forgot?client_id="), "{login}");

        // A known and an unknown address get the same page; only the known one gets mail.
        let nobody = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let known = forgot(&stranger, &email, &q).await;
        assert_eq!(known.status(), StatusCode::OK);
        let known = known.text().await.unwrap();
        let unknown = forgot(&stranger, &nobody, &q).await;
        assert_eq!(unknown.status(), StatusCode::OK);
        let unknown = unknown.text().await.unwrap();
        assert_eq!(known.replace(&email, "X"), unknown.replace(&nobody, "X"));
        let mail = sink.mail(&email, "Reset your password").await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(count_to(&sink.messages(), &nobody), 0, "no mail to an unknown address");
        assert!(mail.text.contains("30 minutes"), "{}", mail.text);
        let link = mail.link("/auth/reset?token=");

        // Mismatched or weak passwords are refused and the link still works.
        let response = reset(&stranger, &link, "a brand new passphrase 42", "something else").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.text().await.unwrap().contains("do not match"));
        let response = reset(&stranger, &link, "password123", "password123").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(old.signed_in().await, "nothing changed yet");

        let new = "a brand new passphrase 42";
        let response = reset(&stranger, &link, new, new).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let back = location(&response).to_owned();
        assert!(back.starts_with("/auth/login?client_id="), "the request goes on: {back}");
        assert!(back.ends_with("done=password-reset"), "{back}");
        assert!(stranger.expect_page(&back).await.contains("new password is saved"));

        // Every login and session of the user ended; the old password is gone.
        assert!(!old.signed_in().await);
        app.wait_until_status(&access, 401).await;
        assert_eq!(stranger.login(&email, PASSWORD, "").await.status(), StatusCode::BAD_REQUEST);
        assert_eq!(stranger.login(&email, new, "").await.status(), StatusCode::SEE_OTHER);
        // A reset link proves the address.
        let user = app.state.store.find_user_by_email(&email).await.unwrap().unwrap();
        assert!(user.email_verified_at.is_some());
        sink.mail(&email, "Your password was changed").await;

        // The link works once.
        assert_eq!(stranger.get(&link).await.status(), StatusCode::NOT_FOUND);
        let key = app.create_key(&client.account_id).await;
        let events = audit_until(&app, &key, "limit=100", |e| {
            e.iter().any(|e| e["action"] == "password.reset")
        })
        .await;
        assert!(has_event(&events, "password.reset_requested", Some(user.id.as_str())));
    }

    async fn an_account_can_keep_unverified_users_out_of_its_apps(app, sink) {
        let client = register_app(&app, false, "deals.read").await;
        let (browser, email) = Browser::user(&app).await;
        let q = request(&client, "deals.read");
        // Off by default: an unverified user gets the consent page.
        let consent = browser.consent_page(&q).await;

        app.state.store.set_require_verified_users(&client.account_id, true).await.unwrap();
        let response = browser.get(&format!("/auth?{q}")).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let gate = response.text().await.unwrap();
        assert!(gate.contains("Confirm your email first"), "{gate}");
        // With prompt=none no page may be shown: the application is told instead.
        let response = browser.get(&format!("/auth?{q}&prompt=none")).await;
        let url = redirect_to_client(&response);
        assert_eq!(param(&query_of(&url), "error"), Some("interaction_required"));
        // Posting the consent form directly is refused the same way, and grants nothing.
        let response = browser.answer(&consent, &["deals.read"], "allow").await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(grant_of(&app, &email, &client).await.is_none());

        // The gate mails a new link that leads back into the request.
        let csrf = csrf_in(&gate);
        let request_field = hidden(&gate, "request").unwrap();
        let response = browser
            .post("/auth/verify/resend", &[("csrf", &csrf), ("request", &request_field)])
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mail = sink.mail(&email, "Confirm your email address").await;
        let response = browser.get(&mail.link("/auth/verify?token=")).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(location(&response).starts_with("/auth?"));
        let url = browser.authorize_all(&q).await;
        assert!(param(&query_of(&url), "code").is_some());
        let key = app.create_key(&client.account_id).await;
        let events = audit_until(&app, &key, "limit=100", |e| {
            e.iter().any(|e| e["action"] == "email.verified")
        })
        .await;
        assert!(has_event(&events, "email.verification_sent", None));
    }
}

both_backends! {
    async fn a_reset_link_that_is_forged_or_spent_changes_nothing(app) {
        let (browser, email) = Browser::user(&app).await;
        let user = app.state.store.find_user_by_email(&email).await.unwrap().unwrap();
        for token in ["", "short", &"A".repeat(43), &"%00".repeat(3)] {
            let response = browser.get(&format!("/auth/reset?token={token}")).await;
            assert!(
                matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST),
                "{token}: {}",
                response.status()
            );
        }
        let csrf = browser.csrf("/auth/forgot").await;
        let response = browser
            .post(
                "/auth/reset",
                &[("csrf", &csrf), ("token", &"B".repeat(43)), ("password", "x long enough pass 1"), ("confirm", "x long enough pass 1")],
            )
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        // Without the form's token nothing is even looked at.
        let response = Browser::new(&app)
            .post("/auth/forgot", &[("email", email.as_str())])
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let after = app.state.store.find_user(&user.id).await.unwrap().unwrap();
        assert_eq!(after.password_hash, user.password_hash);
        assert!(browser.signed_in().await);
        assert_eq!(count_to(&outbox(&app), &email), 0);
    }
}
