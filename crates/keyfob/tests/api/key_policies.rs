//! API keys beyond full access: restricted keys call and mint only within their permissions;
//! expiring keys and their tokens stop at the expiry; a rolled key works for its overlap, then is
//! refused with its tokens on every node; a rate limit answers 429 with `Retry-After` and the
//! `RateLimit` headers, on each node within its share; usage is counted per key, day and outcome
//! without a write per request; minted tokens carry a name and metadata that introspection returns
//! and the tokens page finds. Also the dashboard's forms and pages for all of it, and the CLI.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use keyfob::services::keys::KeySpec;
use keyfob_domain::ids::AccountId;
use keyfob_store::UsageVia;

use crate::both_backends;
use crate::cli::{fails_with, keyfob, stdout};
use crate::dashboard::{Browser, account_of, new_key_in};
use crate::helpers::*;
use crate::revocation::two_nodes_with;

fn spec(permissions: Option<&str>, expires_in: Option<&str>, rate: Option<&str>) -> KeySpec {
    KeySpec::parse("policy", permissions, expires_in, rate).unwrap()
}

/// An RFC 3339 instant `days` from now.
fn in_days(days: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn new_account(app: &TestApp) -> AccountId {
    app.create_account(&format!("{}@example.com", uuid::Uuid::new_v4().simple()))
        .await
}

async fn whoami(app: &TestApp, credential: &str) -> Value {
    let response = app.get("/auth/whoami", credential).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn status_of(app: &TestApp, method: Method, path: &str, credential: &str) -> u16 {
    let mut request = app.request(method.clone(), path, Some(credential));
    if method == Method::POST {
        request = request.json(&json!({"name": "x"}));
    }
    request.send().await.unwrap().status().as_u16()
}

async fn introspect(app: &TestApp, key: &str, token: &str) -> Value {
    app.request(Method::POST, "/auth/introspect", Some(key))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls until `node` answers `credential` with 401, for up to 3 seconds.
async fn refused_soon(node: &TestApp, credential: &str) -> String {
    for _ in 0..120 {
        let response = node.get("/auth/whoami", credential).send().await.unwrap();
        if response.status() == 401 {
            let body: Value = response.json().await.unwrap();
            return body["message"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never refused");
}

both_backends! {
    async fn a_restricted_key_calls_and_mints_only_within_its_permissions(app) {
        let account = new_account(&app).await;
        let (key_id, key) = app
            .create_key_with(&account, &spec(Some("deals.read,services.write"), None, None))
            .await;
        let me = whoami(&app, &key).await;
        assert_eq!(me["permissions"], json!(["deals.read", "services.write"]));
        assert_eq!(me["key_id"], key_id.as_str());

        assert_eq!(status_of(&app, Method::GET, "/api/deals", &key).await, 200);
        assert_eq!(status_of(&app, Method::POST, "/api/services", &key).await, 201);
        let response = app.get("/api/services", &key).send().await.unwrap();
        let message = expect_error(response, 403, "forbidden").await;
        assert!(message.contains("services.read"), "{message}");
        assert_eq!(status_of(&app, Method::POST, "/api/deals", &key).await, 403);
        assert_eq!(status_of(&app, Method::GET, "/api/audit", &key).await, 403);

        // It mints within what it holds, and a 403 names what it lacks.
        let token = app.mint_token(&key, &["deals.read"]).await;
        assert_eq!(status_of(&app, Method::GET, "/api/deals", &token).await, 200);
        for (asked, missing) in [
            (json!(["deals.read", "deals.write"]), "deals.write"),
            (json!(["*.read"]), "*.read"),
            (json!(["sensitive.read"]), "sensitive.read"),
        ] {
            let response = app.mint(&key, json!({ "permissions": asked })).await;
            let message = expect_error(response, 403, "forbidden").await;
            assert!(message.contains(missing), "{message}");
        }

        // A wildcard in a key never grants the reserved capabilities; naming them does.
        let (_, wide) = app.create_key_with(&account, &spec(Some("*.read,*.write"), None, None)).await;
        assert_eq!(status_of(&app, Method::GET, "/api/anything", &wide).await, 200);
        assert_eq!(status_of(&app, Method::GET, "/api/audit", &wide).await, 403);
        let response = app.mint(&wide, json!({"permissions": ["audit.read"]})).await;
        expect_error(response, 403, "forbidden").await;
        assert_eq!(app.mint(&wide, json!({"permissions": ["orders.read", "*.write"]})).await.status(), 201);
        let (_, auditor) = app.create_key_with(&account, &spec(Some("audit.read"), None, None)).await;
        assert_eq!(status_of(&app, Method::GET, "/api/audit", &auditor).await, 200);
        let audit_token = app.mint_token(&auditor, &["audit.read"]).await;
        assert_eq!(status_of(&app, Method::GET, "/api/audit", &audit_token).await, 200);

        // The guide's key keeps full access.
        let full = app.create_key(&account).await;
        assert_eq!(whoami(&app, &full).await["permissions"], json!(["*"]));
        assert_eq!(status_of(&app, Method::GET, "/api/audit", &full).await, 200);
        assert_eq!(app.mint(&full, json!({"permissions": ["sensitive.read"]})).await.status(), 201);

    }

    async fn an_expiring_key_and_its_tokens_stop_at_its_expiry(app) {
        let account = new_account(&app).await;
        let (_, key) = app.create_key_with(&account, &spec(None, Some("3s"), None)).await;
        let me = whoami(&app, &key).await;
        assert!(me["expires"].is_string(), "{me}");
        // A token cannot outlive its key: the default stops at the key's expiry, a later one is
        // refused by name.
        let response = app.mint(&key, json!({"permissions": ["deals.read"]})).await;
        assert_eq!(response.status(), 201);
        let minted: Value = response.json().await.unwrap();
        assert_eq!(minted["expires"], me["expires"]);
        let token = minted["token"].as_str().unwrap().to_owned();
        let response = app
            .mint(&key, json!({"permissions": ["deals.read"], "expires": in_days(30)}))
            .await;
        let message = expect_error(response, 400, "invalid_expires").await;
        assert!(message.contains("outlive"), "{message}");

        assert!(refused_soon(&app, &key).await.contains("expired"));
        let message = refused_soon(&app, &token).await;
        assert!(message.contains("API key that has expired"), "{message}");
        // And introspection calls the token inactive.
        let full = app.create_key(&account).await;
        assert_eq!(introspect(&app, &full, &token).await["active"], false);
    }

    async fn a_rate_limited_key_gets_429_with_the_ratelimit_headers(app) {
        let account = new_account(&app).await;
        let (key_id, key) = app.create_key_with(&account, &spec(None, None, Some("4/min"))).await;
        // `create_key_with` spent one request making sure the server knows the key.
        let response = app.get("/auth/whoami", &key).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["ratelimit-limit"], "4");
        assert_eq!(headers["ratelimit-remaining"], "2");
        assert_eq!(headers["ratelimit-policy"], "\"key\";q=4;w=60");
        assert_eq!(headers["ratelimit"], "\"key\";r=2;t=30");
        // A token the key mints counts against the key's limit too.
        let token = app.mint_token(&key, &["deals.read"]).await;
        let response = app.get("/api/deals", &token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-remaining"], "0");
        for credential in [&key, &token] {
            let response = app.get("/auth/whoami", credential).send().await.unwrap();
            assert_eq!(response.status(), 429);
            let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=15).contains(&retry), "{retry}");
            assert_eq!(response.headers()["ratelimit-remaining"], "0");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "rate_limited");
        }
        // Other keys of the account are not limited by it; a key without a limit has no headers.
        let other = app.create_key(&account).await;
        let response = app.get("/auth/whoami", &other).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("ratelimit").is_none());

        // Usage: counted by outcome and way in, written in batches, with the last address.
        let mut rows = Vec::new();
        for _ in 0..40 {
            rows = app.state.store.key_usage(&account, Some(&key_id), 0).await.unwrap();
            if rows.iter().map(|r| r.counts.limited).sum::<i64>() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let by = |via| rows.iter().find(|r| r.via == via).map(|r| r.counts).unwrap_or_default();
        assert_eq!(by(UsageVia::Key).ok, 3, "{rows:?}");
        assert_eq!(by(UsageVia::Key).limited, 1, "{rows:?}");
        assert_eq!(by(UsageVia::Token).ok, 1, "{rows:?}");
        assert_eq!(by(UsageVia::Token).limited, 1, "{rows:?}");
        let row = app.state.store.find_api_key(&key_id).await.unwrap().unwrap();
        assert_eq!(row.last_used_ip.as_deref(), Some("127.0.0.1"));
        assert!(row.last_used_at.is_some());
    }

    async fn usage_is_counted_by_outcome_and_returned(app) {
        let account = new_account(&app).await;
        let (key_id, key) = app.create_key_with(&account, &spec(Some("deals.read"), None, None)).await;
        assert_eq!(status_of(&app, Method::GET, "/api/deals", &key).await, 200);
        assert_eq!(status_of(&app, Method::POST, "/api/deals", &key).await, 403);
        assert_eq!(status_of(&app, Method::GET, "/api/deals/00000000-0000-7000-8000-000000000000", &key).await, 404);
        let mut total = 0;
        for _ in 0..40 {
            let rows = app.state.store.key_usage(&account, Some(&key_id), 0).await.unwrap();
            total = rows.iter().map(|r| r.counts.total()).sum();
            if total >= 4 {
                let counts = rows[0].counts;
                assert_eq!((counts.ok, counts.client_errors), (2, 2), "{rows:?}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(total, 4);
        // No key of another account sees it.
        let other = new_account(&app).await;
        assert!(app.state.store.key_usage(&other, Some(&key_id), 0).await.unwrap().is_empty());
    }

    async fn a_minted_token_carries_a_name_and_metadata(app) {
        let (_, key) = app.account_with_key().await;
        let response = app
            .mint(&key, json!({
                "permissions": ["deals.read"],
                "name": "  Nightly export ",
                "metadata": {"customer": "acme", "ticket": 42},
            }))
            .await;
        assert_eq!(response.status(), 201);
        let token = response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
        let seen = introspect(&app, &key, &token).await;
        assert_eq!(seen["active"], true);
        assert_eq!(seen["name"], "Nightly export");
        assert_eq!(seen["metadata"], json!({"customer": "acme", "ticket": 42}));
        // A token without them says nothing of either.
        let plain = app.mint_token(&key, &["deals.read"]).await;
        let seen = introspect(&app, &key, &plain).await;
        assert!(seen.get("name").is_none() && seen.get("metadata").is_none(), "{seen}");

        let big: serde_json::Map<String, Value> =
            (0..21).map(|i| (format!("k{i}"), json!(i))).collect();
        for (body, code, needle) in [
            (json!({"permissions": ["deals.read"], "name": 7}), "invalid_name", "string"),
            (json!({"permissions": ["deals.read"], "name": ""}), "invalid_name", "1 to 100"),
            (json!({"permissions": ["deals.read"], "name": "x".repeat(101)}), "invalid_name", "1 to 100"),
            (json!({"permissions": ["deals.read"], "name": "a\u{7}b"}), "invalid_name", "control"),
            (json!({"permissions": ["deals.read"], "metadata": [1]}), "invalid_metadata", "object"),
            (json!({"permissions": ["deals.read"], "metadata": "x"}), "invalid_metadata", "object"),
            (json!({"permissions": ["deals.read"], "metadata": big}), "invalid_metadata", "20 members"),
            (json!({"permissions": ["deals.read"], "metadata": {"x": "y".repeat(1100)}}), "invalid_metadata", "1024"),
        ] {
            let before = app.state.store.list_tokens(&keyfob_store::AccountId::from(whoami(&app, &key).await["account_id"].as_str().unwrap()), 100).await.unwrap().len();
            let response = app.mint(&key, body.clone()).await;
            let message = expect_error(response, 400, code).await;
            assert!(message.contains(needle), "{body}: {message}");
            let after = app.state.store.list_tokens(&keyfob_store::AccountId::from(whoami(&app, &key).await["account_id"].as_str().unwrap()), 100).await.unwrap().len();
            assert_eq!(before, after, "nothing minted for {body}");
        }
    }

    async fn the_dashboard_makes_restricted_expiring_limited_keys_and_rolls_them(app) {
        let browser = Browser::signed_up(&app).await;
        let csrf = browser.csrf("/dashboard/keys").await;
        // Bad input: a 400 page naming the field, and no key made.
        for (field, value, needle) in [
            ("rate_limit", "600/week", "rate limit"),
            ("expires_in", "ninety days", "expiry"),
            ("permissions", "deals.delete", "deals.delete"),
        ] {
            let response = browser
                .post("/dashboard/keys", &[("csrf", &csrf), ("name", "bad"), ("access", "restricted"), ("perm_all_read", "on"), (field, value)])
                .await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{field}");
            let html = response.text().await.unwrap();
            assert!(html.contains(needle), "{field}: {html}");
            // What was typed comes back, to be corrected.
            assert!(html.contains(&format!("value=\"{value}\"")), "{field}: {html}");
        }
        let response = browser
            .post("/dashboard/keys", &[("csrf", &csrf), ("name", "none"), ("access", "restricted")])
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let account = AccountId::from(account_of(&app, &browser.email).await);
        assert!(app.state.store.list_api_keys(&account).await.unwrap().is_empty());

        let response = browser
            .post(
                "/dashboard/keys",
                &[
                    ("csrf", &csrf),
                    ("name", "reporting"),
                    ("access", "restricted"),
                    ("perm_all_read", "on"),
                    ("perm_sensitive_read", "on"),
                    ("permissions", "deals.write"),
                    ("expires_in", "90d"),
                    ("rate_limit", "600/min"),
                ],
            )
            .await;
        let key = new_key_in(&browser.follow(response).await);
        app.wait_until_status(&key, 200).await;
        assert_eq!(
            whoami(&app, &key).await["permissions"],
            json!(["*.read", "deals.write", "sensitive.read"])
        );
        let row = app.state.store.list_api_keys(&account).await.unwrap().remove(0);
        assert_eq!(row.rate_limit().unwrap().to_string(), "600/min");
        let lifetime = row.expires_at.unwrap().since(row.created_at);
        assert_eq!(lifetime, Duration::from_secs(90 * 86_400));
        // Its creation is audited with what it may do, never the key.
        let full = app.create_key(&account).await;
        let events = audit_until(&app, &full, "action=api_key.created", |d| {
            d.iter().any(|e| e["target"] == row.id.as_str())
        })
        .await;
        let created = events.iter().find(|e| e["target"] == row.id.as_str()).unwrap();
        assert_eq!(created["actor"]["kind"], "owner");
        assert_eq!(created["detail"]["permissions"], json!(["*.read", "deals.write", "sensitive.read"]));
        assert_eq!(created["detail"]["rate_limit"], "600/min");
        assert!(!created.to_string().contains(&key));

        // The list shows what the key may do, its limit, expiry, use and a sparkline (once the
        // batch has written the use).
        for _ in 0..40 {
            let row = app.state.store.find_api_key(&row.id).await.unwrap().unwrap();
            if row.last_used_ip.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, html) = browser.page("/dashboard/keys").await;
        for needle in ["<code>*.read</code>", "<code>sensitive.read</code>", "limit 600/min", "<svg class=\"sparkline\"", "from 127.0.0.1"] {
            assert!(html.contains(needle), "{needle} in {html}");
        }
        // The key's own page: its usage chart and counts.
        let (status, html) = browser.page(&format!("/dashboard/keys/{}", row.id)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("<svg class=\"usage-chart\""), "{html}");
        assert!(html.contains("Roll key"));

        // Roll it with an overlap: a new key, same settings; both work until the overlap ends.
        let csrf = browser.csrf(&format!("/dashboard/keys/{}", row.id)).await;
        let response = browser
            .post(&format!("/dashboard/keys/{}/roll", row.id), &[("csrf", &csrf), ("overlap", "1h")])
            .await;
        let html = browser.follow(response).await;
        assert!(html.contains("keep working until"), "{html}");
        let new_key = new_key_in(&html);
        app.wait_until_status(&new_key, 200).await;
        assert_eq!(whoami(&app, &new_key).await["permissions"], whoami(&app, &key).await["permissions"]);
        assert_eq!(app.whoami_status(&key).await, 200);
        // A bad overlap changes nothing.
        let response = browser
            .post(&format!("/dashboard/keys/{}/roll", row.id), &[("csrf", &csrf), ("overlap", "soon")])
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(app.state.store.list_api_keys(&account).await.unwrap().len(), 3);

        // Revoked and expired keys are marked and can be hidden.
        let new_row = app.state.store.list_api_keys(&account).await.unwrap().remove(0);
        assert_eq!(browser.revoke("keys", new_row.id.as_str()).await.status(), StatusCode::SEE_OTHER);
        let (_, html) = browser.page("/dashboard/keys").await;
        assert!(html.contains("status-revoked"));
        let (_, html) = browser.page("/dashboard/keys?hide=dead").await;
        assert!(!html.contains(new_row.id.as_str()), "{html}");
        assert!(html.contains(row.id.as_str()));
        assert!(html.contains("1 hidden"));

        // Another account's owner sees none of it.
        let stranger = Browser::signed_up(&app).await;
        let (status, _) = stranger.page(&format!("/dashboard/keys/{}", row.id)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let csrf = stranger.csrf("/dashboard/keys").await;
        let response = stranger
            .post(&format!("/dashboard/keys/{}/roll", row.id), &[("csrf", &csrf), ("overlap", "0s")])
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(app.whoami_status(&key).await, 200);
    }

    async fn the_tokens_page_shows_and_finds_names_and_metadata(app) {
        let browser = Browser::signed_up(&app).await;
        let key = browser.create_key("k").await;
        app.wait_until_status(&key, 200).await;
        for (name, customer) in [("nightly export", "acme"), ("adhoc", "globex")] {
            let response = app
                .mint(&key, json!({"permissions": ["deals.read"], "name": name, "metadata": {"customer": customer}}))
                .await;
            assert_eq!(response.status(), 201);
        }
        // A token used twice: its row shows the last use and the count, once written.
        let used = app
            .mint(&key, json!({"permissions": ["deals.read"], "name": "used twice"}))
            .await
            .json::<Value>()
            .await
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        for _ in 0..2 {
            assert_eq!(app.get("/api/deals", &used).send().await.unwrap().status(), 200);
        }
        let used_jti = keyfob_store::Jti::from(decode_jti(&used));
        // The last use and the counts are written by the usage flush, perhaps in two rounds:
        // wait for both uses to be counted.
        let row = app.state.store.find_token(&used_jti).await.unwrap().unwrap();
        for _ in 0..100 {
            let last_used = app.state.store.find_token(&used_jti).await.unwrap().unwrap().last_used_at;
            let counted: i64 = app
                .state
                .store
                .token_usage(&row.account_id, std::slice::from_ref(&used_jti), 0)
                .await
                .unwrap()
                .iter()
                .map(|u| u.counts.ok)
                .sum();
            if last_used.is_some() && counted == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, html) = browser.page("/dashboard/tokens?q=used+twice").await;
        let row_start = html.find(&format!("id=\"token-{used_jti}\"")).expect("the row");
        let row_html = &html[row_start..row_start + html[row_start..].find("</tr>").unwrap()];
        assert!(row_html.contains("<svg class=\"sparkline\""), "{row_html}");
        assert!(row_html.contains("<span class=\"hint\">2</span>"), "{row_html}");
        assert!(!row_html.contains("never"), "{row_html}");

        let (_, html) = browser.page("/dashboard/tokens").await;
        assert!(html.contains("<strong>nightly export</strong>"), "{html}");
        let (_, html) = browser.page("/dashboard/tokens?q=GLOBEX").await;
        assert!(html.contains("adhoc") && !html.contains("nightly export"), "{html}");
        let (status, html) = browser.page(&format!("/dashboard/tokens?q={}", "x".repeat(101))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(html.contains("<code>q</code>"), "{html}");
    }
}

/// A roll on one node: the new key works on the other at once (read through), the old one on
/// both until the overlap ends, then neither accepts it nor the tokens it minted.
async fn a_rolled_key_ends_on_every_node(backend: Backend) {
    let Some((a, b)) = two_nodes_with(backend, |_| {}).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let account = new_account(&a).await;
    let (key_id, key) = a
        .create_key_with(
            &account,
            &spec(Some("deals.read"), Some("30d"), Some("100/min")),
        )
        .await;
    b.wait_until_status(&key, 200).await;
    let token = a.mint_token(&key, &["deals.read"]).await;
    let by = keyfob::services::Caller::new(keyfob::audit::Actor::operator(), "127.0.0.1");
    let (new_row, new_key) =
        keyfob::services::keys::roll(&a.state, &account, &by, &key_id, Duration::from_secs(2))
            .await
            .unwrap();
    let new_key = new_key.expose().to_owned();
    assert_eq!(new_row.rolled_from.as_ref(), Some(&key_id));
    assert_eq!(new_row.rate_limit().unwrap().to_string(), "100/min");
    assert_eq!(
        new_row.expires_at.unwrap().since(new_row.created_at),
        Duration::from_secs(30 * 86_400)
    );
    for node in [&a, &b] {
        assert_eq!(node.whoami_status(&new_key).await, 200);
        assert_eq!(node.whoami_status(&key).await, 200);
        assert_eq!(node.whoami_status(&token).await, 200);
        assert_eq!(
            whoami(node, &new_key).await["permissions"],
            json!(["deals.read"])
        );
    }
    for node in [&a, &b] {
        assert!(refused_soon(node, &key).await.contains("expired"));
        assert!(refused_soon(node, &token).await.contains("expired"));
        assert_eq!(node.whoami_status(&new_key).await, 200);
    }
    // A key that has ended cannot be rolled again.
    assert!(
        keyfob::services::keys::roll(&a.state, &account, &by, &key_id, Duration::ZERO)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_key_ends_on_every_node_on_sqlite() {
    a_rolled_key_ends_on_every_node(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_key_ends_on_every_node_on_postgres() {
    a_rolled_key_ends_on_every_node(Backend::Postgres).await;
}

/// Two nodes that each enforce half of a key's limit: spread evenly, the pair allows the whole
/// limit; all on one node, that node allows its half.
async fn each_node_enforces_its_share(backend: Backend) {
    let Some((a, b)) = two_nodes_with(backend, |c| c.rate_limit_nodes = 2).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let account = new_account(&a).await;
    let (_, spread) = a
        .create_key_with(&account, &spec(None, None, Some("10/min")))
        .await;
    b.wait_until_status(&spread, 200).await;
    // One request spent on each node already.
    let mut allowed = 2;
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        let response = node.get("/auth/whoami", &spread).send().await.unwrap();
        if response.status() == 200 {
            assert_eq!(response.headers()["ratelimit-limit"], "5");
            allowed += 1;
        } else {
            assert_eq!(response.status(), 429);
        }
    }
    assert_eq!(allowed, 10);

    let (_, sticky) = a
        .create_key_with(&account, &spec(None, None, Some("10/min")))
        .await;
    let mut allowed = 1;
    for _ in 0..8 {
        if a.whoami_status(&sticky).await == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
    // The other node still has its share.
    assert_eq!(b.whoami_status(&sticky).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_enforces_its_share_of_a_rate_limit_on_sqlite() {
    each_node_enforces_its_share(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_enforces_its_share_of_a_rate_limit_on_postgres() {
    each_node_enforces_its_share(Backend::Postgres).await;
}

/// `keys create` with permissions, expiry and a limit; `keys list` shows them; `keys roll` prints
/// the new key and the old one stops after the overlap; bad input fails by name and makes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_lists_and_rolls_keys() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let owner = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    stdout(&keyfob(
        &db,
        &["accounts", "create", "--email", &owner],
        Some(PASSWORD),
    ));
    let key = stdout(&keyfob(
        &db,
        &[
            "keys",
            "create",
            "--account",
            &owner,
            "--name",
            "etl",
            "--permissions",
            "deals.read,services.write",
            "--expires-in",
            "90d",
            "--rate-limit",
            "600/min",
        ],
        None,
    ));
    assert!(key.trim().starts_with("kf_"));
    let listing = stdout(&keyfob(&db, &["keys", "list", "--account", &owner], None));
    let line = listing.lines().next().unwrap();
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields[5], "active");
    assert_eq!(fields[6], "deals.read,services.write");
    assert!(fields[7].starts_with("expires "), "{line}");
    assert_eq!(fields[8], "600/min");
    let key_id = fields[0].to_owned();

    for (args, needle) in [
        (vec!["--rate-limit", "600/week"], "rate limit"),
        (vec!["--expires-in", "forever"], "expiry"),
        (vec!["--permissions", "deals"], "deals"),
        (vec!["--permissions", ","], "at least one permission"),
    ] {
        let mut all = vec![
            "keys",
            "create",
            "--account",
            owner.as_str(),
            "--name",
            "bad",
        ];
        all.extend(args);
        fails_with(&keyfob(&db, &all, None), needle);
    }
    let listing = stdout(&keyfob(&db, &["keys", "list", "--account", &owner], None));
    assert_eq!(listing.lines().count(), 1);

    fails_with(
        &keyfob(
            &db,
            &["keys", "roll", &key_id, "--overlap", "a while"],
            None,
        ),
        "--overlap",
    );
    fails_with(
        &keyfob(&db, &["keys", "roll", "no-such-key"], None),
        "no live API key",
    );
    let rolled = keyfob(&db, &["keys", "roll", &key_id, "--overlap", "24h"], None);
    let new_key = stdout(&rolled);
    assert!(new_key.trim().starts_with("kf_") && new_key.trim() != key.trim());
    assert!(String::from_utf8_lossy(&rolled.stderr).contains("the old key works until"));
    let listing = stdout(&keyfob(&db, &["keys", "list", "--account", &owner], None));
    assert_eq!(listing.lines().count(), 2);
    for line in listing.lines() {
        assert!(
            line.contains("deals.read,services.write") && line.contains("600/min"),
            "{line}"
        );
    }

    // A server on that database takes both keys, and the audit log has the roll.
    let app = spawn_with(test_config(&db), std::sync::Arc::new(db)).await;
    assert_eq!(app.whoami_status(key.trim()).await, 200);
    assert_eq!(app.whoami_status(new_key.trim()).await, 200);
    let full = app
        .create_key(&AccountId::from(account_of(&app, &owner).await))
        .await;
    let events = audit_until(&app, &full, "action=api_key.rolled", |d| !d.is_empty()).await;
    assert_eq!(events[0]["target"], key_id);
    assert_eq!(events[0]["actor"]["kind"], "operator");
}
