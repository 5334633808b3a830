//! The audit log: what is recorded, `GET /api/audit` with `audit.read` and its filters, the
//! dashboard page, tenant isolation, and that events cannot be changed or deleted.

use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::dashboard::{Browser, account_of, csrf_in};
use crate::helpers::*;

both_backends! {
    async fn dashboard_and_api_actions_are_audited(app) {
        let owner = Browser::signed_up(&app).await;
        let account = account_of(&app, &owner.email).await;
        let key = owner.create_key("audited").await;
        app.wait_until_status(&key, 200).await;
        let token = app.mint_token(&key, &["deals.read"]).await;
        let whoami: Value = app.get("/auth/whoami", &token).send().await.unwrap().json().await.unwrap();
        let jti = whoami["jti"].as_str().unwrap().to_owned();
        assert_eq!(owner.revoke("tokens", &jti).await.status(), StatusCode::SEE_OTHER);
        // A failed login of this account's owner.
        let stranger = Browser::new(&app);
        let failed = stranger.login_as(&owner.email, "wrong password entirely").await;
        assert_eq!(failed.status(), StatusCode::BAD_REQUEST);

        let docs = audit_until(&app, &key, "limit=100", |docs| {
            has_event(docs, "token.minted", Some(&jti))
                && has_event(docs, "token.revoked", Some(&jti))
                && has_event(docs, "api_key.created", None)
                && has_event(docs, "owner.login_failed", None)
        })
        .await;
        let minted = docs.iter().find(|e| e["action"] == "token.minted").unwrap();
        assert_eq!(minted["actor"]["kind"], "api_key");
        assert_eq!(minted["detail"]["permissions"][0], "deals.read");
        let revoked = docs.iter().find(|e| e["action"] == "token.revoked").unwrap();
        assert_eq!(revoked["actor"]["kind"], "owner");
        assert_eq!(revoked["ip"], "127.0.0.1");
        assert!(revoked["at"].as_str().unwrap().ends_with('Z'));

        // Filters: by action, by actor, by time.
        let only = audit_until(&app, &key, "action=token.revoked", |d| !d.is_empty()).await;
        assert!(only.iter().all(|e| e["action"] == "token.revoked"));
        let actor = revoked["actor"]["id"].as_str().unwrap();
        let by_actor = audit_until(&app, &key, &format!("actor={actor}"), |d| !d.is_empty()).await;
        assert!(by_actor.iter().all(|e| e["actor"]["id"] == actor));
        let none = audit_until(&app, &key, "until=2000-01-01", |_| true).await;
        assert!(none.is_empty());
        let page: Value = app
            .get("/api/audit?limit=1&page=2", &key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["limit"], 1);
        assert_eq!(page["page"], 2);
        assert_eq!(page["docs"].as_array().unwrap().len(), 1);
        assert!(page["totalDocs"].as_u64().unwrap() >= 4);

        // Another account sees none of it.
        let (_, other_key) = app.account_with_key().await;
        let theirs = audit_until(&app, &other_key, "limit=100", |_| true).await;
        assert!(theirs.iter().all(|e| e["actor"]["kind"] == "operator"), "{theirs:?}");
        assert!(!account.is_empty());
    }

    async fn reading_the_audit_log_needs_audit_read(app) {
        let (_, key) = app.account_with_key().await;
        let none = app.request(reqwest::Method::GET, "/api/audit", None).send().await.unwrap();
        expect_error(none, 401, "unauthorized").await;
        for permissions in [&["deals.read"][..], &["*.read"], &["*.read", "*.write"]] {
            let token = app.mint_token(&key, permissions).await;
            let response = app.get("/api/audit", &token).send().await.unwrap();
            let message = expect_error(response, 403, "forbidden").await;
            assert!(message.contains("audit.read"), "{message}");
        }
        let token = app.mint_token(&key, &["audit.read"]).await;
        let response = app.get("/api/audit", &token).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn bad_audit_queries_are_named(app) {
        let (_, key) = app.account_with_key().await;
        for (query, named) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("page=zero", "page"),
            ("action=everything", "action"),
            ("actor=a%27%20OR%201%3D1", "actor"),
            ("since=yesterday", "since"),
            ("until=2026-13-45", "until"),
            ("since=2026-02-01&until=2026-01-01", "since"),
            ("bogus=1", "bogus"),
            ("action=token.minted&action=token.revoked", "action"),
        ] {
            let response = app.get(&format!("/api/audit?{query}"), &key).send().await.unwrap();
            let message = expect_error(response, 400, "invalid_query").await;
            assert!(message.contains(named), "{query}: {message}");
        }
    }

    async fn audit_events_cannot_be_changed_or_deleted(app) {
        let owner = Browser::signed_up(&app).await;
        let key = owner.create_key("k").await;
        audit_until(&app, &key, "", |d| has_event(d, "api_key.created", None)).await;
        let url = app.db.url.clone();
        assert!(raw_execute(&url, "UPDATE audit_events SET action = 'nothing'").await.is_err());
        assert!(raw_execute(&url, "DELETE FROM audit_events").await.is_err());
        let docs = audit_until(&app, &key, "", |d| !d.is_empty()).await;
        assert!(has_event(&docs, "api_key.created", None));
    }

    async fn the_dashboard_shows_the_audit_log_with_filters(app) {
        let owner = Browser::signed_up(&app).await;
        let key = owner.create_key("shown").await;
        audit_until(&app, &key, "", |d| has_event(d, "api_key.created", None)).await;
        let (status, html) = owner.page("/dashboard/audit").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("api_key.created"), "{html}");
        assert!(html.contains("owner.login") || html.contains("api_key.created"));
        let (status, html) = owner.page("/dashboard/audit?action=token.revoked").await;
        assert_eq!(status, StatusCode::OK);
        assert!(!html.contains("<code>api_key.created</code>"));
        let (status, html) = owner.page("/dashboard/audit?since=not-a-date").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(html.contains("since"));
        // The logout form still carries the session's token.
        assert_eq!(csrf_in(&html).len(), 43);
        // Signed out, the page is not shown.
        let anonymous = Browser::new(&app);
        assert_eq!(anonymous.get("/dashboard/audit").await.status(), StatusCode::SEE_OTHER);
    }
}
