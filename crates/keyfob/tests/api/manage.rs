//! The management API (`/api/keys`, `/api/tokens`, `/api/apps`, `/api/users`, `/api/grants`):
//! each area needs its permission by name (a full-access key holds them all, a wildcard none), sees
//! only the caller's account, refuses bad input with nothing changed, audits each change with the
//! calling key as actor, and a change made through it reaches every node.

use keyfob::services::apps::{CreatedApp, NewApp};
use keyfob::services::keys::KeySpec;
use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_store::{AccountId, AuthCodeRow, GrantId, GrantRow, KeyId, Timestamp, UserId};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

const REDIRECT: &str = "https://app.example.com/callback";

/// An account with a full-access key, a confidential application and a user who granted it
/// `deals.read`.
struct World {
    account: AccountId,
    key: String,
    key_id: KeyId,
    app: CreatedApp,
    user_id: UserId,
    grant: GrantRow,
}

impl World {
    fn client_id(&self) -> &str {
        &self.app.app.client_id
    }

    fn secret(&self) -> &str {
        self.app.client_secret.as_deref().unwrap()
    }
}

async fn world(app: &TestApp) -> World {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let account = app.create_account(&email).await;
    let (key_id, key) = app
        .create_key_with(&account, &KeySpec::full_access("manager"))
        .await;
    let created = keyfob::services::apps::create_app(
        app.state.store.as_ref(),
        &account,
        NewApp {
            name: "Dealer portal".into(),
            redirect_uris: vec![REDIRECT.into()],
            max_permissions: "deals.read,deals.write".into(),
            ..NewApp::default()
        },
    )
    .await
    .unwrap();
    let user_email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let user_id = keyfob::services::users::create_user(
        app.state.store.as_ref(),
        &app.state.passwords,
        &user_email,
        PASSWORD.into(),
    )
    .await
    .unwrap()
    .id;
    let now = Timestamp::now();
    let grant = app
        .state
        .store
        .upsert_grant(&GrantRow {
            id: GrantId::from(uuid::Uuid::now_v7().to_string()),
            user_id: user_id.clone(),
            client_id: created.app.client_id.clone(),
            account_id: account.clone(),
            permissions: keyfob_store::JsonList::from_json(r#"["deals.read"]"#).unwrap(),
            identity: Default::default(),
            created_at: now,
            updated_at: now,
            revoked_at: None,
        })
        .await
        .unwrap();
    World {
        account,
        key,
        key_id,
        app: created,
        user_id,
        grant,
    }
}

/// A key of `account` restricted to `permissions` (comma-separated).
async fn restricted(app: &TestApp, account: &AccountId, permissions: &str) -> String {
    let spec = KeySpec::parse("restricted", Some(permissions), None, None).unwrap();
    app.create_key_with(account, &spec).await.1
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    credential: &str,
    body: Option<Value>,
) -> Response {
    let request = app.request(method, path, Some(credential));
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

async fn get_json(app: &TestApp, path: &str, credential: &str) -> Value {
    let response = call(app, Method::GET, path, credential, None).await;
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

/// An access token of the world's user in the world's application.
async fn user_session(app: &TestApp, w: &World) -> Value {
    let code = random_token();
    let now = Timestamp::now();
    app.state
        .store
        .insert_auth_code(&AuthCodeRow {
            code_hash: hash_secret(&code),
            client_id: w.grant.client_id.clone(),
            user_id: w.user_id.clone(),
            grant_id: w.grant.id.clone(),
            redirect_uri: REDIRECT.into(),
            permissions: w.grant.permissions.clone(),
            identity: Default::default(),
            nonce: None,
            auth_time: None,
            code_challenge: None,
            family_id: None,
            created_at: now,
            expires_at: now + std::time::Duration::from_secs(60),
            used_at: None,
        })
        .await
        .unwrap();
    let response = token(
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
        w.client_id(),
        w.secret(),
    )
    .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn token(app: &TestApp, form: &[(&str, &str)], client_id: &str, secret: &str) -> Response {
    app.client
        .post(app.url("/auth/token"))
        .basic_auth(client_id, Some(secret))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn client_credentials_status(app: &TestApp, client_id: &str, secret: &str) -> u16 {
    token(
        app,
        &[("grant_type", "client_credentials")],
        client_id,
        secret,
    )
    .await
    .status()
    .as_u16()
}

/// Every route of the management API, the permission it needs, and a body it would accept.
fn routes(w: &World, jti: &str) -> Vec<(Method, String, &'static str, Option<Value>)> {
    let (key, app, user, grant) = (
        w.key_id.as_str(),
        w.client_id(),
        w.user_id.as_str(),
        w.grant.id.as_str(),
    );
    // In an order in which each write leaves the next something to act on.
    vec![
        (Method::GET, "/api/keys".into(), "keys.read", None),
        (
            Method::GET,
            format!("/api/keys/{key}/usage"),
            "keys.read",
            None,
        ),
        (Method::GET, "/api/tokens".into(), "tokens.read", None),
        (
            Method::DELETE,
            format!("/api/tokens/{jti}"),
            "tokens.write",
            None,
        ),
        (
            Method::POST,
            format!("/api/keys/{key}/revoke-tokens"),
            "tokens.write",
            None,
        ),
        (Method::GET, "/api/users".into(), "users.read", None),
        (
            Method::GET,
            format!("/api/users/{user}"),
            "users.read",
            None,
        ),
        (Method::GET, "/api/grants".into(), "grants.read", None),
        (
            Method::DELETE,
            format!("/api/grants/{grant}"),
            "grants.write",
            None,
        ),
        (
            Method::POST,
            format!("/api/users/{user}/remove"),
            "users.write",
            None,
        ),
        (Method::GET, "/api/apps".into(), "apps.read", None),
        (
            Method::POST,
            "/api/apps".into(),
            "apps.write",
            Some(
                json!({"name": "Probe", "redirect_uris": [REDIRECT], "max_permissions": ["deals.read"]}),
            ),
        ),
        (Method::GET, format!("/api/apps/{app}"), "apps.read", None),
        (
            Method::PATCH,
            format!("/api/apps/{app}"),
            "apps.write",
            Some(json!({"name": "Renamed"})),
        ),
        (
            Method::POST,
            format!("/api/apps/{app}/rotate-secret"),
            "apps.write",
            Some(json!({"overlap": "1h"})),
        ),
        (
            Method::POST,
            format!("/api/apps/{app}/disable"),
            "apps.write",
            None,
        ),
        (
            Method::POST,
            format!("/api/apps/{app}/enable"),
            "apps.write",
            None,
        ),
        (
            Method::DELETE,
            format!("/api/apps/{app}"),
            "apps.write",
            None,
        ),
    ]
}

both_backends! {
    async fn each_area_needs_its_permission_by_name(app) {
        let w = world(&app).await;
        let jti = decode_jti(&app.mint_token(&w.key, &["deals.read"]).await);
        // A wildcard grants none of it, whether the key calls or its token does.
        let wildcard = restricted(&app, &w.account, "*.read,*.write").await;
        let wildcard_token = app.mint_token(&wildcard, &["*.read", "*.write"]).await;
        for (method, path, permission, body) in routes(&w, &jti) {
            for credential in [&wildcard, &wildcard_token] {
                let response = call(&app, method.clone(), &path, credential, body.clone()).await;
                let message = expect_error(response, 403, "forbidden").await;
                assert!(message.contains(&format!("`{permission}`")), "{method} {path}: {message}");
            }
            // A key holding another management permission gets no further.
            let other = if permission.starts_with("apps") { "grants.read,grants.write" } else { "apps.read,apps.write" };
            let response = call(&app, method.clone(), &path, &restricted(&app, &w.account, other).await, body.clone()).await;
            assert_eq!(response.status(), 403, "{method} {path}");
        }
        // Nothing changed.
        assert_eq!(client_credentials_status(&app, w.client_id(), w.secret()).await, 200);
        assert!(app.state.store.find_grant_by_id(&w.grant.id).await.unwrap().unwrap().revoked_at.is_none());

        // A key that lists the permission passes; so does a token it mints with it by name.
        for (method, path, permission, body) in routes(&w, &jti) {
            if method != Method::GET {
                continue;
            }
            let named = restricted(&app, &w.account, permission).await;
            let token = app.mint_token(&named, &[permission]).await;
            for credential in [&named, &token, &w.key] {
                let response = call(&app, method.clone(), &path, credential, body.clone()).await;
                assert_eq!(response.status(), 200, "{method} {path} with {permission}");
            }
        }
        // A key cannot mint what it does not hold: the wildcard key cannot mint `tokens.read`.
        assert_ne!(app.mint(&wildcard, json!({"permissions": ["tokens.read"]})).await.status(), 201);

        // The write routes pass with the permission named, in an order that leaves each one
        // something to act on.
        for (method, path, permission, body) in routes(&w, &jti) {
            if method == Method::GET {
                continue;
            }
            if path.ends_with("/remove") {
                // The grant was revoked just before: given again, the user has one to remove.
                app.state.store.upsert_grant(&w.grant).await.unwrap();
            }
            let named = restricted(&app, &w.account, permission).await;
            let response = call(&app, method.clone(), &path, &named, body).await;
            // Registering an application answers 201 Created; every other change 200.
            let expected = if method == Method::POST && path == "/api/apps" { 201 } else { 200 };
            assert_eq!(response.status(), expected, "{method} {path} with {permission}");
        }

        // An application's or a user's token never holds them, whatever it was granted.
        let w2 = world(&app).await;
        let session = user_session(&app, &w2).await;
        let access = session["access_token"].as_str().unwrap();
        for (method, path, _, body) in routes(&w2, &jti) {
            let response = call(&app, method.clone(), &path, access, body).await;
            assert_eq!(response.status(), 403, "{method} {path} with a user's token");
        }

        // The names hold no records: refused as reserved, or not served at all.
        for resource in ["keys", "tokens", "apps", "users", "grants"] {
            let one = format!("/api/{resource}/x1");
            for (method, path) in [(Method::GET, &one), (Method::PUT, &one), (Method::PATCH, &one), (Method::POST, &format!("/api/{resource}"))] {
                let response = call(&app, method.clone(), path, &w.key, Some(json!({"name": "record"}))).await;
                let status = response.status().as_u16();
                if method == Method::POST && resource == "apps" {
                    // Registers an application, not a record: a body of a record's shape is not
                    // an application's.
                    expect_error(response, 400, "invalid_app").await;
                } else if status == 400 {
                    expect_error(response, 400, "reserved_resource").await;
                } else {
                    assert!(matches!(status, 404 | 405), "{method} {path}: {status}");
                }
            }
        }
        // An application cannot be given them to ask users for.
        let response = call(&app, Method::PATCH, &format!("/api/apps/{}", w2.client_id()), &w2.key, Some(json!({"max_permissions": ["deals.read", "grants.read"]}))).await;
        let message = expect_error(response, 400, "invalid_app").await;
        assert!(message.contains("grants.read"), "{message}");
    }

    async fn keys_are_listed_with_their_usage_and_never_shown(app) {
        let w = world(&app).await;
        let limited = KeySpec::parse("limited", Some("deals.read"), Some("30d"), Some("600/min")).unwrap();
        let (limited_id, limited_key) = app.create_key_with(&w.account, &limited).await;
        let body = get_json(&app, "/api/keys", &w.key).await;
        let text = body.to_string();
        assert!(!text.contains(&w.key) && !text.contains(&limited_key), "a key in {text}");
        assert!(!text.contains(&hash_secret(&limited_key)) && !text.contains("hash"), "{text}");
        let docs = body["docs"].as_array().unwrap();
        assert_eq!(docs.len(), 2);
        let full = docs.iter().find(|k| k["id"] == w.key_id.as_str()).unwrap();
        assert_eq!(full["permissions"], Value::Null);
        assert_eq!(full["state"], "active");
        assert!(w.key.starts_with(full["prefix"].as_str().unwrap()));
        let restricted = docs.iter().find(|k| k["id"] == limited_id.as_str()).unwrap();
        assert_eq!(restricted["permissions"], json!(["deals.read"]));
        assert_eq!(restricted["rate_limit"], "600/min");
        assert!(restricted["expires"].is_string());

        // Usage: requests with the key and with a token it minted, counted per day.
        let token = app.mint_token(&limited_key, &["deals.read"]).await;
        for credential in [&limited_key, &token] {
            assert_eq!(app.get("/api/deals", credential).send().await.unwrap().status(), 200);
        }
        let path = format!("/api/keys/{limited_id}/usage?days=3");
        let mut usage = Value::Null;
        for _ in 0..60 {
            usage = get_json(&app, &path, &w.key).await;
            let today = &usage["days"][2];
            if today["key"]["ok"].as_i64() >= Some(2) && today["token"]["ok"].as_i64() >= Some(1) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let days = usage["days"].as_array().unwrap();
        assert_eq!(days.len(), 3, "{usage}");
        let today = Timestamp::now().rfc3339()[..10].to_owned();
        assert_eq!(days[2]["day"], today.as_str());
        assert!(days[2]["key"]["ok"].as_i64().unwrap() >= 2, "{usage}");
        assert!(days[2]["token"]["ok"].as_i64().unwrap() >= 1, "{usage}");
        assert_eq!(days[0]["key"], json!({"ok": 0, "client_errors": 0, "limited": 0, "server_errors": 0}));
        let default = get_json(&app, &format!("/api/keys/{limited_id}/usage"), &w.key).await;
        assert_eq!(default["days"].as_array().unwrap().len(), 30);

        // Bad input names the parameter.
        for query in ["days=0", "days=91", "days=abc", "days=", "days=2&days=3", "week=1"] {
            let response = call(&app, Method::GET, &format!("/api/keys/{limited_id}/usage?{query}"), &w.key, None).await;
            let message = expect_error(response, 400, "invalid_query").await;
            assert!(message.contains("days") || message.contains("week"), "{query}: {message}");
        }
        // Another account's key is not found, nor listed.
        let other = world(&app).await;
        let response = call(&app, Method::GET, &format!("/api/keys/{limited_id}/usage"), &other.key, None).await;
        expect_error(response, 404, "not_found").await;
        let theirs = get_json(&app, "/api/keys", &other.key).await;
        assert_eq!(theirs["docs"].as_array().unwrap().len(), 1);
    }

    async fn tokens_are_listed_and_revoked_by_the_api(app) {
        let w = world(&app).await;
        let minted = app.mint(&w.key, json!({"permissions": ["deals.read"], "name": "Nightly export", "metadata": {"customer": "acme"}})).await;
        assert_eq!(minted.status(), 201);
        let named = minted.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
        let plain = app.mint_token(&w.key, &["deals.write"]).await;
        // A token minted with `tokens.read` reads the list.
        let reader = app.mint_token(&w.key, &["tokens.read"]).await;
        let page = get_json(&app, "/api/tokens?q=acme", &reader).await;
        assert_eq!(page["total"], 1, "{page}");
        let doc = &page["docs"][0];
        assert_eq!(doc["jti"], decode_jti(&named).as_str());
        assert_eq!(doc["name"], "Nightly export");
        assert_eq!(doc["metadata"], json!({"customer": "acme"}));
        assert_eq!(doc["key_id"], w.key_id.as_str());
        assert_eq!(doc["status"], "live");
        assert!(!page.to_string().contains(&named), "a token in the list");
        let page = get_json(&app, &format!("/api/tokens?key={}&permission=deals.write&limit=1", w.key_id), &w.key).await;
        assert_eq!(page["total"], 1);
        assert_eq!(page["limit"], 1);
        assert_eq!(page["docs"][0]["jti"], decode_jti(&plain).as_str());
        assert_eq!(get_json(&app, "/api/tokens", &w.key).await["total"], 3);

        // Bad filters name the parameter.
        let other = world(&app).await;
        let queries = ["status=bogus", "limit=0", "page=x", "permission=nope", "color=red", "key=not-a-uuid"].map(String::from);
        for query in queries.into_iter().chain([format!("key={}", other.key_id)]) {
            let response = call(&app, Method::GET, &format!("/api/tokens?{query}"), &w.key, None).await;
            let message = expect_error(response, 400, "invalid_query").await;
            let name = query.split('=').next().unwrap();
            assert!(message.contains(name), "{query}: {message}");
        }

        // Revoke one: refused at once; again, or from another account, not found.
        let writer = restricted(&app, &w.account, "tokens.write").await;
        let path = format!("/api/tokens/{}", decode_jti(&named));
        let response = call(&app, Method::DELETE, &path, &other.key, None).await;
        expect_error(response, 404, "not_found").await;
        assert_eq!(app.whoami_status(&named).await, 200);
        assert_eq!(call(&app, Method::DELETE, &path, &writer, None).await.status(), 200);
        assert_eq!(app.whoami_status(&named).await, 401);
        expect_error(call(&app, Method::DELETE, &path, &writer, None).await, 404, "not_found").await;
        expect_error(call(&app, Method::DELETE, "/api/tokens/no-such-token", &writer, None).await, 404, "not_found").await;
        let page = get_json(&app, "/api/tokens?status=revoked", &w.key).await;
        assert_eq!(page["docs"][0]["status"], "revoked");

        // Every token of a key: the key stays live, its later tokens work.
        let revoke_all = format!("/api/keys/{}/revoke-tokens", w.key_id);
        expect_error(call(&app, Method::POST, &revoke_all, &other.key, None).await, 404, "not_found").await;
        assert_eq!(app.whoami_status(&plain).await, 200);
        assert_eq!(call(&app, Method::POST, &revoke_all, &writer, None).await.status(), 200);
        assert_eq!(app.whoami_status(&plain).await, 401);
        assert_eq!(app.whoami_status(&w.key).await, 200);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(app.whoami_status(&app.mint_token(&w.key, &["deals.read"]).await).await, 200);

        // Audited, with the calling key as actor.
        let writer_id = app.state.store.list_api_keys(&w.account).await.unwrap().into_iter().find(|k| k.name == "restricted").unwrap().id;
        let events = audit_until(&app, &w.key, "action=token.revoked", |d| d.len() == 1).await;
        assert_eq!(events[0]["actor"], json!({"kind": "api_key", "id": writer_id.as_str()}));
        let events = audit_until(&app, &w.key, "action=api_key.tokens_revoked", |d| d.len() == 1).await;
        assert_eq!(events[0]["target"], w.key_id.as_str());
    }

    async fn apps_are_managed_by_the_api_and_every_node_sees_it(app) {
        let w = world(&app).await;
        let mut config = test_config(&app.db);
        config.public_url = Some(app.base.clone());
        let second = spawn_with(config, app.db.clone()).await;
        let path = format!("/api/apps/{}", w.client_id());
        let list = get_json(&app, "/api/apps", &w.key).await;
        assert_eq!(list["docs"].as_array().unwrap().len(), 1);
        let shown = get_json(&app, &path, &w.key).await;
        assert_eq!(shown["name"], "Dealer portal");
        assert_eq!(shown["max_permissions"], json!(["deals.read", "deals.write"]));
        let text = shown.to_string();
        assert!(!text.contains("hash") && !text.contains("kfs_") && !text.contains("secret\""), "{text}");

        // A bad edit names the field and changes nothing.
        let cases = [
            (json!({"redirect_uris": ["http://evil.example.com/cb"]}), "invalid_app", "http://evil.example.com/cb"),
            (json!({"redirect_uris": []}), "invalid_app", "redirect URI"),
            (json!({"name": ""}), "invalid_app", "name"),
            (json!({"max_permissions": ["sensitive.read"]}), "invalid_app", "sensitive.read"),
            (json!({"refresh_idle_secs": 0}), "invalid_app", "idle"),
            (json!({"name": "New", "public": true}), "invalid_body", "public"),
            (json!({"name": 5}), "invalid_body", "name"),
            (json!({"origins": "https://a.example.com"}), "invalid_body", "origins"),
        ];
        for (body, code, named) in cases {
            let response = call(&app, Method::PATCH, &path, &w.key, Some(body.clone())).await;
            let message = expect_error(response, 400, code).await;
            assert!(message.contains(named), "{body}: {message}");
        }
        assert_eq!(get_json(&app, &path, &w.key).await, shown);

        // A good edit: a JSON merge of the fields given.
        let edited = call(&app, Method::PATCH, &path, &w.key, Some(json!({"name": "Portal", "origins": ["https://portal.example.com"], "refresh_idle_secs": 3600}))).await;
        assert_eq!(edited.status(), 200);
        let edited: Value = edited.json().await.unwrap();
        assert_eq!(edited["name"], "Portal");
        assert_eq!(edited["redirect_uris"], json!([REDIRECT]));
        assert_eq!(edited["refresh_idle_secs"], 3600);
        let cleared: Value = call(&app, Method::PATCH, &path, &w.key, Some(json!({"refresh_idle_secs": null}))).await.json().await.unwrap();
        assert_eq!(cleared["refresh_idle_secs"], Value::Null);
        assert_eq!(cleared["origins"], json!(["https://portal.example.com"]));

        // Rotate: the new secret is shown once; the old works for the overlap.
        for overlap in [json!({"overlap": "bogus"}), json!({"overlap": "31d"}), json!({}), json!({"overlap": "1h", "extra": 1})] {
            let response = call(&app, Method::POST, &format!("{path}/rotate-secret"), &w.key, Some(overlap.clone())).await;
            assert_eq!(response.status(), 400, "{overlap}");
        }
        assert_eq!(client_credentials_status(&app, w.client_id(), w.secret()).await, 200);
        let rotated = call(&app, Method::POST, &format!("{path}/rotate-secret"), &w.key, Some(json!({"overlap": "24h"}))).await;
        assert_eq!(rotated.status(), 200);
        let rotated: Value = rotated.json().await.unwrap();
        let new_secret = rotated["client_secret"].as_str().unwrap();
        assert!(new_secret.starts_with("kfs_"));
        assert!(rotated["previous_secret_until"].is_string());
        for secret in [w.secret(), new_secret] {
            assert_eq!(client_credentials_status(&app, w.client_id(), secret).await, 200);
        }

        // Disable through the API on this node: the second node refuses the app too.
        assert_eq!(client_credentials_status(&second, w.client_id(), new_secret).await, 200);
        assert_eq!(call(&app, Method::POST, &format!("{path}/disable"), &w.key, None).await.status(), 200);
        assert_eq!(client_credentials_status(&app, w.client_id(), new_secret).await, 401);
        let mut refused = false;
        for _ in 0..80 {
            if client_credentials_status(&second, w.client_id(), new_secret).await == 401 {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(refused, "the second node still accepts the disabled app");
        expect_error(call(&app, Method::POST, &format!("{path}/disable"), &w.key, None).await, 400, "invalid_state").await;
        assert!(get_json(&second, &path, &w.key).await["disabled"].as_bool().unwrap());
        assert_eq!(call(&second, Method::POST, &format!("{path}/enable"), &w.key, None).await.status(), 200);
        assert_eq!(client_credentials_status(&second, w.client_id(), new_secret).await, 200);

        // Another account sees and changes none of it.
        let other = world(&app).await;
        for (method, suffix, body) in [
            (Method::GET, "", None),
            (Method::PATCH, "", Some(json!({"name": "Mine"}))),
            (Method::POST, "/rotate-secret", Some(json!({"overlap": "0s"}))),
            (Method::POST, "/disable", None),
            (Method::DELETE, "", None),
        ] {
            let response = call(&app, method.clone(), &format!("{path}{suffix}"), &other.key, body).await;
            expect_error(response, 404, "not_found").await;
        }
        assert_eq!(get_json(&app, "/api/apps", &other.key).await["docs"].as_array().unwrap().len(), 1);
        assert_eq!(get_json(&app, &path, &w.key).await["name"], "Portal");

        // Audited, with the key as actor; no secret in the log.
        for action in ["app.updated", "app.secret_rotated", "app.disabled", "app.enabled"] {
            let events = audit_until(&app, &w.key, &format!("action={action}"), |d| !d.is_empty()).await;
            assert_eq!(events[0]["actor"], json!({"kind": "api_key", "id": w.key_id.as_str()}), "{action}");
            assert!(!events[0].to_string().contains("kfs_"));
        }

        // Delete: gone for good, its grants revoked.
        assert_eq!(call(&app, Method::DELETE, &path, &w.key, None).await.status(), 200);
        expect_error(call(&app, Method::GET, &path, &w.key, None).await, 404, "not_found").await;
        expect_error(call(&app, Method::DELETE, &path, &w.key, None).await, 404, "not_found").await;
        assert!(app.state.store.find_grant_by_id(&w.grant.id).await.unwrap().unwrap().revoked_at.is_some());
    }

    async fn users_and_grants_of_the_account_only(app) {
        let w = world(&app).await;
        let other = world(&app).await;
        // The same user grants another account's application too.
        let now = Timestamp::now();
        app.state.store.upsert_grant(&GrantRow {
            id: GrantId::from(uuid::Uuid::now_v7().to_string()),
            user_id: w.user_id.clone(),
            client_id: other.app.app.client_id.clone(),
            account_id: other.account.clone(),
            permissions: keyfob_store::JsonList::from_json(r#"["deals.read"]"#).unwrap(),
            identity: Default::default(),
            created_at: now,
            updated_at: now,
            revoked_at: None,
        }).await.unwrap();

        let users = get_json(&app, "/api/users", &w.key).await;
        let docs = users["docs"].as_array().unwrap();
        assert_eq!(docs.len(), 1, "{users}");
        assert_eq!(docs[0]["id"], w.user_id.as_str());
        assert_eq!(docs[0]["grants"].as_array().unwrap().len(), 1, "only this account's grants");
        assert_eq!(docs[0]["grants"][0]["client_id"], w.client_id());
        assert!(!users.to_string().contains("argon") && !users.to_string().contains("password"));
        let user_path = format!("/api/users/{}", w.user_id);
        assert_eq!(get_json(&app, &user_path, &w.key).await["id"], w.user_id.as_str());
        // Another account's user is not found.
        let theirs = format!("/api/users/{}", other.user_id);
        expect_error(call(&app, Method::GET, &theirs, &w.key, None).await, 404, "not_found").await;
        expect_error(call(&app, Method::POST, &format!("{theirs}/remove"), &w.key, None).await, 404, "not_found").await;
        expect_error(call(&app, Method::GET, "/api/users/nobody", &w.key, None).await, 404, "not_found").await;

        let grants = get_json(&app, "/api/grants", &w.key).await;
        assert_eq!(grants["docs"].as_array().unwrap().len(), 1);
        assert_eq!(grants["docs"][0]["id"], w.grant.id.as_str());
        assert_eq!(grants["docs"][0]["permissions"], json!(["deals.read"]));
        // Another account's grant cannot be revoked from here.
        let their_grant = format!("/api/grants/{}", other.grant.id);
        expect_error(call(&app, Method::DELETE, &their_grant, &w.key, None).await, 404, "not_found").await;
        assert!(app.state.store.find_grant_by_id(&other.grant.id).await.unwrap().unwrap().revoked_at.is_none());

        // Revoke the grant: its session ends; again, not found.
        let session = user_session(&app, &w).await;
        let access = session["access_token"].as_str().unwrap();
        assert_eq!(app.whoami_status(access).await, 200);
        let grant_path = format!("/api/grants/{}", w.grant.id);
        assert_eq!(call(&app, Method::DELETE, &grant_path, &w.key, None).await.status(), 200);
        assert_eq!(app.whoami_status(access).await, 401);
        expect_error(call(&app, Method::DELETE, &grant_path, &w.key, None).await, 404, "not_found").await;
        let grants = get_json(&app, "/api/grants", &w.key).await;
        assert!(grants["docs"][0]["revoked"].is_string());

        // Remove the user: with no live grant left, not found; the other account's grant stays.
        expect_error(call(&app, Method::POST, &format!("{user_path}/remove"), &w.key, None).await, 404, "not_found").await;
        let removed = call(&app, Method::POST, &format!("/api/users/{}/remove", w.user_id), &other.key, None).await;
        assert_eq!(removed.status(), 200);
        assert_eq!(removed.json::<Value>().await.unwrap()["grants_revoked"], 1);
        let events = audit_until(&app, &other.key, "action=user.removed_from_account", |d| d.len() == 1).await;
        assert_eq!(events[0]["actor"], json!({"kind": "api_key", "id": other.key_id.as_str()}));
        let events = audit_until(&app, &w.key, "action=grant.revoked", |d| d.len() == 1).await;
        assert_eq!(events[0]["actor"]["kind"], "api_key");
    }

    async fn apps_are_registered_by_the_api_and_audited_without_their_secret(app) {
        let w = world(&app).await;
        let before = get_json(&app, "/api/apps", &w.key).await["docs"].as_array().unwrap().len();
        // Bad input names the field and registers nothing.
        for (body, code, named) in [
            (json!({"redirect_uris": [REDIRECT], "max_permissions": ["deals.read"]}), "invalid_app", "name"),
            (json!({"name": "A", "max_permissions": ["deals.read"]}), "invalid_app", "redirect URI"),
            (json!({"name": "A", "redirect_uris": ["http://evil.example.com/cb"], "max_permissions": ["deals.read"]}), "invalid_app", "http://evil.example.com/cb"),
            (json!({"name": "A", "redirect_uris": [REDIRECT], "max_permissions": ["apps.write"]}), "invalid_app", "apps.write"),
            (json!({"name": "A", "redirect_uris": [REDIRECT], "max_permissions": []}), "invalid_app", "permissions"),
            (json!({"name": "A", "redirect_uris": [REDIRECT], "max_permissions": ["deals.read"], "secret": "x"}), "invalid_body", "secret"),
        ] {
            let response = call(&app, Method::POST, "/api/apps", &w.key, Some(body.clone())).await;
            let message = expect_error(response, 400, code).await;
            assert!(message.contains(named), "{body}: {message}");
        }
        assert_eq!(get_json(&app, "/api/apps", &w.key).await["docs"].as_array().unwrap().len(), before);

        // A key with `*.write` may not; one with `apps.write` may.
        let wide = restricted(&app, &w.account, "*.read,*.write").await;
        let body = json!({"name": "Partner", "redirect_uris": [REDIRECT], "max_permissions": ["deals.read"]});
        let message = expect_error(call(&app, Method::POST, "/api/apps", &wide, Some(body.clone())).await, 403, "forbidden").await;
        assert!(message.contains("apps.write"), "{message}");
        let writer = restricted(&app, &w.account, "apps.write").await;
        let response = call(&app, Method::POST, "/api/apps", &writer, Some(body)).await;
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        let client_id = created["client_id"].as_str().unwrap().to_owned();
        let secret = created["client_secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("kfs_"));
        // The secret works at the token endpoint, and is never shown again.
        assert_eq!(client_credentials_status(&app, &client_id, &secret).await, 200);
        let shown = get_json(&app, &format!("/api/apps/{client_id}"), &w.key).await;
        assert!(!shown.to_string().contains(&secret));
        // A public app has no secret.
        let response = call(&app, Method::POST, "/api/apps", &w.key, Some(json!({
            "name": "SPA", "redirect_uris": [REDIRECT], "max_permissions": ["deals.read"], "public": true,
            "origins": ["https://app.example.com"]
        }))).await;
        assert_eq!(response.status(), 201);
        assert!(response.json::<Value>().await.unwrap()["client_secret"].is_null());

        // Audited with the key as actor, never the secret.
        let events = audit_until(&app, &w.key, "action=app.created", |d| d.len() == 2).await;
        let event = events.iter().find(|e| e["target"] == client_id.as_str()).unwrap();
        assert_eq!(event["detail"]["name"], "Partner");
        assert_eq!(event["actor"]["kind"], "api_key");
        assert!(!events.iter().any(|e| e.to_string().contains("kfs_")));
    }
}
