//! API keys: both header forms, refusals, revocation, batched last-used times, and that no HTTP
//! endpoint can create a key.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use keyfob_domain::ids::AccountId;
use keyfob_domain::time::Timestamp;

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn accepted_with_and_without_bearer(app) {
        let (account, key) = app.account_with_key().await;
        for header in [format!("Bearer {key}"), key.clone(), format!("bearer {key}")] {
            let response = app
                .client
                .get(app.url("/auth/whoami"))
                .header("Authorization", header)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["kind"], "api_key");
            assert_eq!(body["account_id"], account.as_str());
            assert_eq!(body["permissions"], json!(["*"]));
            assert_eq!(body["expires"], Value::Null);
        }
    }

    async fn bad_credentials_get_401_with_www_authenticate(app) {
        let (_, key) = app.account_with_key().await;
        let unknown = format!("kf_{}", "0".repeat(64));
        let cases = [
            (None, "missing"),
            (Some("Basic dXNlcjpwYXNz".to_owned()), "neither"),
            (Some("Bearer kf_short".to_owned()), "malformed"),
            (Some(format!("Bearer {unknown}")), "unknown or revoked"),
            (Some(format!("Bearer {}x", key)), "malformed"),
            (Some("Bearer a.b.c".to_owned()), "well-formed"),
        ];
        for (header, expected) in cases {
            let mut request = app.client.get(app.url("/auth/whoami"));
            if let Some(h) = &header {
                request = request.header("Authorization", h);
            }
            let response = request.send().await.unwrap();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .expect("WWW-Authenticate on a 401")
                .to_str()
                .unwrap()
                .to_owned();
            assert!(challenge.starts_with("Bearer "), "{challenge}");
            let message = expect_error(response, 401, "unauthorized").await;
            assert!(message.contains(expected), "{header:?}: {message}");
        }
    }

    async fn revoked_keys_are_refused(app) {
        let (account, key) = app.account_with_key().await;
        let keys = app.state.store.list_api_keys(&AccountId::from(account.as_str())).await.unwrap();
        assert!(app.state.store.revoke_api_key(Some(&AccountId::from(account.as_str())), &keys[0].id, Timestamp::now()).await.unwrap());
        app.wait_until_status(&key, 401).await;
        // Revoking again, or another account's key, does nothing.
        assert!(!app.state.store.revoke_api_key(Some(&AccountId::from(account.as_str())), &keys[0].id, Timestamp::now()).await.unwrap());
        let (other_account, other_key) = app.account_with_key().await;
        let other = app.state.store.list_api_keys(&AccountId::from(other_account.as_str())).await.unwrap();
        assert!(!app.state.store.revoke_api_key(Some(&AccountId::from(account.as_str())), &other[0].id, Timestamp::now()).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(app.whoami_status(&other_key).await, 200);
    }

    async fn listed_without_the_secret(app) {
        let (account, key) = app.account_with_key().await;
        let keys = app.state.store.list_api_keys(&AccountId::from(account.as_str())).await.unwrap();
        assert_eq!(keys.len(), 1);
        let row = &keys[0];
        assert!(key.starts_with(&row.prefix));
        assert_eq!(row.prefix.len(), 11);
        assert_ne!(row.key_hash, key);
        assert!(!row.key_hash.contains(&key[3..]));
        assert!(row.revoked_at.is_none());
    }
}

both_backends! {
    async fn no_http_endpoint_creates_a_key(app) {
        let (account, key) = app.account_with_key().await;
        let token = app.mint_token(&key, &["*.read", "*.write"]).await;
        let spec: Value = app.public_json("/openapi.json").await;
        let mut paths: Vec<String> = spec["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|p| {
                p.replace("{resource}", "keys")
                    .replace("{id}", &uuid::Uuid::now_v7().to_string())
            })
            .collect();
        // Places a key-creating endpoint might be expected.
        for extra in ["/keys", "/api/keys", "/api/api_keys", "/api-keys", "/auth/keys", "/dashboard/keys", "/v1/keys"] {
            paths.push(extra.to_owned());
        }
        let bodies = [json!({"name": "sneaky"}), json!({"name": "sneaky", "permissions": ["*.write"]})];
        for path in &paths {
            for method in [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
                for credential in [&key, &token] {
                    for body in &bodies {
                        let response = app
                            .request(method.clone(), path, Some(credential))
                            .json(body)
                            .send()
                            .await
                            .unwrap();
                        let text = response.text().await.unwrap();
                        assert!(
                            !contains_api_key(&text),
                            "{method} {path} answered with something shaped like an API key"
                        );
                    }
                }
            }
        }
        let keys = app.state.store.list_api_keys(&AccountId::from(account.as_str())).await.unwrap();
        assert_eq!(keys.len(), 1, "an HTTP request created a key");
    }

    async fn last_used_is_written_in_batches(app) {
        let (account, key) = app.account_with_key().await;
        // Right after use nothing is written: the verify path does not touch the database.
        let before = app.state.store.list_api_keys(&AccountId::from(account.as_str())).await.unwrap()[0].last_used_at;
        for _ in 0..5 {
            assert_eq!(app.whoami_status(&key).await, 200);
        }
        // The batch is written on the flush interval (200 ms in tests).
        let mut last_used = None;
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            last_used = app.state.store.list_api_keys(&AccountId::from(account.as_str())).await.unwrap()[0].last_used_at;
            if last_used > before {
                break;
            }
        }
        assert!(last_used.is_some() && last_used > before, "last used never recorded");
    }
}

/// Whether `text` holds something shaped like a Keyfob API key.
fn contains_api_key(text: &str) -> bool {
    text.match_indices("kf_").any(|(i, _)| {
        let rest = &text[i + 3..];
        rest.len() >= 64 && rest[..64].bytes().all(|b| b.is_ascii_hexdigit())
    })
}
