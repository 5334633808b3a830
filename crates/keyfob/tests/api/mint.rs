//! `POST /auth`: minting, its defaults, and every bad input as a 400 that names it.

use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use keyfob_domain::ids::AccountId;

use crate::both_backends;
use crate::helpers::*;

fn parse(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap()
}

both_backends! {
    async fn mints_with_default_expiry_of_one_year(app) {
        let (account, key) = app.account_with_key().await;
        let response = app.mint(&key, json!({"permissions": ["deals.read", "services.read"]})).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        let expires = parse(body["expires"].as_str().unwrap());
        let expected = OffsetDateTime::now_utc() + time::Duration::days(365);
        assert!((expires - expected).abs() < time::Duration::minutes(1), "{expires}");
        let token = body["token"].as_str().unwrap();
        let who: Value = app.get("/auth/whoami", token).send().await.unwrap().json().await.unwrap();
        assert_eq!(who["kind"], "jwt");
        assert_eq!(who["account_id"], account.as_str());
        assert_eq!(who["permissions"], json!(["deals.read", "services.read"]));
        assert_eq!(who["expires"], body["expires"]);
        // The token is recorded, with its permissions and minting key.
        let tokens = app.state.store.list_tokens(&AccountId::from(account.as_str()), 10).await.unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].jti, who["jti"].as_str().unwrap());
        assert_eq!(tokens[0].permissions.to_json(), r#"["deals.read","services.read"]"#);
        assert!(tokens[0].api_key_id.is_some());
    }

    async fn accepts_expires_expiration_and_dates(app) {
        let (_, key) = app.account_with_key().await;
        let year = OffsetDateTime::now_utc().year() + 1;
        for body in [
            json!({"permissions": ["deals.read"], "expires": format!("{year}-01-01T00:00:00Z")}),
            json!({"permissions": ["deals.read"], "expiration": format!("{year}-01-01T00:00:00Z")}),
            json!({"permissions": ["deals.read"], "expires": format!("{year}-01-01")}),
            json!({"permissions": ["deals.read"], "expires": format!("{year}-01-01T02:00:00+02:00")}),
        ] {
            let response = app.mint(&key, body.clone()).await;
            assert_eq!(response.status(), 201, "{body}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["expires"], format!("{year}-01-01T00:00:00Z"), "{body}");
        }
        // Wildcards mint too.
        let token = app.mint_token(&key, &["*.read", "*.write"]).await;
        assert_eq!(app.whoami_status(&token).await, 200);
    }

    async fn bad_inputs_are_400_naming_the_problem(app) {
        let (account, key) = app.account_with_key().await;
        let cases = [
            (json!({}), "invalid_permissions", "`permissions` is required"),
            (json!({"permissions": []}), "invalid_permissions", "must not be empty"),
            (json!({"permissions": "deals.read"}), "invalid_permissions", "list of strings"),
            (json!({"permissions": [1]}), "invalid_permissions", "non-string"),
            (json!({"permissions": ["deals"]}), "invalid_permission", "`deals`"),
            (json!({"permissions": ["deals.delete"]}), "invalid_permission", "`deals.delete`"),
            (json!({"permissions": ["de als.read"]}), "invalid_permission", "`de als.read`"),
            (json!({"permissions": ["deals.read", "1x.write"]}), "invalid_permission", "`1x.write`"),
            (json!({"permissions": ["deals.read"], "expires": "2001-01-01"}), "invalid_expires", "`expires` is in the past"),
            (json!({"permissions": ["deals.read"], "expiration": "2001-01-01"}), "invalid_expires", "`expiration` is in the past"),
            (json!({"permissions": ["deals.read"], "expires": "2999-01-01"}), "invalid_expires", "days from now"),
            (json!({"permissions": ["deals.read"], "expires": "next tuesday"}), "invalid_expires", "`expires` is not an ISO-8601"),
            (json!({"permissions": ["deals.read"], "expires": "2027-13-01"}), "invalid_expires", "not an ISO-8601"),
            (json!({"permissions": ["deals.read"], "expires": "2027-01-01", "expiration": "2027-01-01"}), "invalid_expires", "not both"),
            (json!({"permissions": ["deals.read"], "scope": "x"}), "invalid_body", "unknown field `scope`"),
            (json!({"permissions": ["deals.read"], "expires": 5}), "invalid_body", "expires"),
        ];
        for (body, code, needle) in cases {
            let message = expect_error(app.mint(&key, body.clone()).await, 400, code).await;
            assert!(message.contains(needle), "{body}: {message}");
        }
        let many: Vec<String> = (0..101).map(|i| format!("r{i}.read")).collect();
        expect_error(app.mint(&key, json!({"permissions": many})).await, 400, "invalid_permissions").await;

        // Wrong content type, malformed JSON, oversized body.
        let response = app
            .request(Method::POST, "/auth", Some(&key))
            .header("content-type", "text/plain")
            .body(r#"{"permissions":["deals.read"]}"#)
            .send()
            .await
            .unwrap();
        let message = expect_error(response, 415, "invalid_content_type").await;
        assert!(message.contains("Content-Type"), "{message}");
        let response = app
            .request(Method::POST, "/auth", Some(&key))
            .body(r#"{"permissions":["deals.read"]}"#)
            .send()
            .await
            .unwrap();
        expect_error(response, 415, "invalid_content_type").await;
        let response = app
            .request(Method::POST, "/auth", Some(&key))
            .header("content-type", "application/json")
            .body(r#"{"permissions":["deals.read"#)
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_body").await;
        let huge = json!({"permissions": ["deals.read"], "pad": "x".repeat(100 * 1024)});
        let message = expect_error(app.mint(&key, huge).await, 413, "body_too_large").await;
        assert!(message.contains("larger"), "{message}");

        // Nothing was minted by any of these.
        assert!(app.state.store.list_tokens(&AccountId::from(account.as_str()), 100).await.unwrap().is_empty());
    }

    async fn a_jwt_cannot_mint(app) {
        let (account, key) = app.account_with_key().await;
        let token = app.mint_token(&key, &["*.read", "*.write"]).await;
        let message = expect_error(app.mint(&token, json!({"permissions": ["deals.read"]})).await, 403, "forbidden").await;
        assert!(message.contains("API key"), "{message}");
        assert_eq!(app.state.store.list_tokens(&AccountId::from(account.as_str()), 100).await.unwrap().len(), 1);
        let response = app.request(Method::POST, "/auth", None).json(&json!({"permissions": ["deals.read"]})).send().await.unwrap();
        expect_error(response, 401, "unauthorized").await;
    }
}

both_backends! {
    async fn concurrent_mints_are_all_recorded(app) {
        let (account, key) = app.account_with_key().await;
        let body = json!({"permissions": ["deals.read"]});
        let mints: Vec<_> = (0..40)
            .map(|_| tokio::spawn(app.request(Method::POST, "/auth", Some(&key)).json(&body).send()))
            .collect();
        let mut jtis = std::collections::HashSet::new();
        for mint in mints {
            let response = mint.await.unwrap().unwrap();
            assert_eq!(response.status(), 201);
            let token: Value = response.json().await.unwrap();
            let who: Value = app.get("/auth/whoami", token["token"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
            jtis.insert(who["jti"].as_str().unwrap().to_owned());
        }
        let recorded: std::collections::HashSet<String> = app.state.store.list_tokens(&AccountId::from(account.as_str()), 100).await.unwrap().into_iter().map(|t| t.jti.into()).collect();
        assert_eq!(jtis.len(), 40);
        assert_eq!(recorded, jtis);
    }
}
