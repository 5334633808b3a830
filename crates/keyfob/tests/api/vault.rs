//! The vault through the API: sensitive fields checked, encrypted at rest (nothing in clear in the
//! database files or tables), masked on every read, revealed only with `sensitive.read` and always
//! audited; ciphertexts bound to their place; card security codes refused; tenant isolation.

use keyfob::services::apps::NewApp;
use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_domain::time::Timestamp;
use keyfob_store::{AccountId, AuthCodeRow, GrantId, GrantRow};
use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

const SSN: &str = "123-45-6789";
const SSN_DIGITS: &str = "123456789";
const CO_SSN: &str = "219-09-9999";
const CARD: &str = "4242424242424242";
const CARD_SPACED: &str = "4242 4242 4242 4242";
const TAX_ID: &str = "98-7654321X";

async fn post(app: &TestApp, credential: &str, path: &str, doc: &Value) -> reqwest::Response {
    app.request(Method::POST, path, Some(credential))
        .json(doc)
        .send()
        .await
        .unwrap()
}

async fn get_json(app: &TestApp, credential: &str, path: &str) -> Value {
    let response = app.get(path, credential).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

fn application() -> Value {
    json!({
        "amount": 25000,
        "ssn": SSN_DIGITS,
        "primaryApplicant": {"name": "Ann", "ssn": SSN},
        "coApplicantSSN": CO_SSN,
        "applicants": [{"ssn": CO_SSN}, {"name": "Bo"}],
        "payment": {"cardNumber": CARD_SPACED},
        "taxId": TAX_ID
    })
}

fn assert_masked(doc: &Value) {
    assert_eq!(doc["ssn"], "***-**-6789");
    assert_eq!(doc["primaryApplicant"]["ssn"], "***-**-6789");
    assert_eq!(doc["primaryApplicant"]["name"], "Ann");
    assert_eq!(doc["coApplicantSSN"], "***-**-9999");
    assert_eq!(doc["applicants"][0]["ssn"], "***-**-9999");
    assert_eq!(doc["payment"]["cardNumber"], "************4242");
    assert_eq!(doc["taxId"], "*******321X");
    assert_eq!(doc["amount"], 25000);
    let text = doc.to_string();
    for clear in [SSN, SSN_DIGITS, CO_SSN, CARD, CARD_SPACED, TAX_ID] {
        assert!(!text.contains(clear), "{clear} in {text}");
    }
}

async fn assert_no_plaintext(app: &TestApp) {
    let raw = raw_database_text(app).await;
    assert!(contains_bytes(&raw, "Ann"), "the scan reads the records");
    for clear in [
        SSN,
        SSN_DIGITS,
        "219-09-9999",
        "219099999",
        CARD,
        CARD_SPACED,
        TAX_ID,
        "45-6789",
    ] {
        assert!(
            !contains_bytes(&raw, clear),
            "{clear} found in the database"
        );
    }
}

both_backends! {
    async fn sensitive_fields_are_encrypted_at_rest_and_masked_everywhere(app) {
        let (_, key) = app.account_with_key().await;
        let response = post(&app, &key, "/api/creditApplications", &application()).await;
        assert_eq!(response.status(), 201);
        let made: Value = response.json().await.unwrap();
        assert_masked(&made);
        let id = made["id"].as_str().unwrap().to_owned();
        assert_masked(&get_json(&app, &key, &format!("/api/creditApplications/{id}")).await);
        let list = get_json(&app, &key, "/api/creditApplications").await;
        assert_masked(&list["docs"][0]);
        // A token with the resource's permission reads it masked too.
        let token = app.mint_token(&key, &["creditApplications.read", "creditApplications.write"]).await;
        assert_masked(&get_json(&app, &token, &format!("/api/creditApplications/{id}")).await);
        // PATCH and PUT keep them sealed and masked.
        let patched: Value = app
            .request(Method::PATCH, &format!("/api/creditApplications/{id}"), Some(&key))
            .json(&json!({"amount": 30000, "primaryApplicant": {"ssn": "078-05-1120"}}))
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(patched["primaryApplicant"]["ssn"], "***-**-1120");
        assert_eq!(patched["ssn"], "***-**-6789");
        assert_eq!(patched["amount"], 30000);
        let put = app
            .request(Method::PUT, &format!("/api/creditApplications/{id}"), Some(&token))
            .json(&application())
            .send().await.unwrap();
        assert_eq!(put.status(), 200);
        assert_masked(&put.json().await.unwrap());
        let revealed = get_json(&app, &key, &format!("/api/creditApplications/{id}?reveal=ssn")).await;
        assert_eq!(revealed["primaryApplicant"]["ssn"], SSN);
        assert_no_plaintext(&app).await;
        assert!(!contains_bytes(&raw_database_text(&app).await, "078-05-1120"));
    }

    async fn reveal_needs_sensitive_read_and_is_audited(app) {
        let (_, key) = app.account_with_key().await;
        let made: Value = post(&app, &key, "/api/creditApplications", &application()).await.json().await.unwrap();
        let id = made["id"].as_str().unwrap().to_owned();
        let path = format!("/api/creditApplications/{id}");

        // An API key may reveal; field names match at any depth, paths match one place.
        let all = get_json(&app, &key, &format!("{path}?reveal=ssn,cardNumber")).await;
        assert_eq!(all["ssn"], SSN);
        assert_eq!(all["primaryApplicant"]["ssn"], SSN);
        assert_eq!(all["applicants"][0]["ssn"], CO_SSN);
        assert_eq!(all["payment"]["cardNumber"], CARD);
        assert_eq!(all["taxId"], "*******321X");
        let one = get_json(&app, &key, &format!("{path}?reveal=primaryApplicant.ssn&reveal=taxId")).await;
        assert_eq!(one["primaryApplicant"]["ssn"], SSN);
        assert_eq!(one["ssn"], "***-**-6789");
        assert_eq!(one["taxId"], TAX_ID);

        // Each revealed field is on the audit log: who, which record, which field, from where.
        let events = audit_until(&app, &key, "action=sensitive.revealed&limit=100", |d| d.len() >= 6).await;
        assert_eq!(events.len(), 6, "{events:?}");
        let event = events.iter().find(|e| e["target"] == format!("creditApplications/{id}#primaryApplicant.ssn")).unwrap();
        assert_eq!(event["actor"]["kind"], "api_key");
        assert_eq!(event["ip"], "127.0.0.1");
        assert_eq!(event["detail"]["field"], "primaryApplicant.ssn");
        let log = get_json(&app, &key, "/api/audit?limit=100").await.to_string();
        assert!(!log.contains(SSN) && !log.contains(CARD));

        // A token needs `sensitive.read` by name; a wildcard does not grant it.
        for permissions in [&["creditApplications.read"][..], &["*.read"], &["*.read", "*.write"]] {
            let token = app.mint_token(&key, permissions).await;
            let response = app.get(&format!("{path}?reveal=ssn"), &token).send().await.unwrap();
            let message = expect_error(response, 403, "forbidden").await;
            assert!(message.contains("sensitive.read"), "{message}");
        }
        let token = app.mint_token(&key, &["creditApplications.read", "sensitive.read"]).await;
        let revealed = get_json(&app, &token, &format!("{path}?reveal=ssn")).await;
        assert_eq!(revealed["ssn"], SSN);
        let whoami: Value = app.get("/auth/whoami", &token).send().await.unwrap().json().await.unwrap();
        let by_token = audit_until(&app, &key, &format!("actor={}", whoami["jti"].as_str().unwrap()), |d| d.len() >= 3).await;
        assert!(by_token.iter().all(|e| e["actor"]["kind"] == "token"));
        // Without `reveal`, nothing is audited and nothing is in clear.
        let masked = get_json(&app, &token, &path).await;
        assert_eq!(masked["ssn"], "***-**-6789");
        // The client's user agent is kept with the event.
        let response = app
            .get(&format!("{path}?reveal=taxId"), &key)
            .header("User-Agent", "lender-backoffice/1.0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let events = audit_until(&app, &key, "action=sensitive.revealed&limit=100", |d| {
            d.iter().any(|e| e["detail"]["user_agent"] == "lender-backoffice/1.0")
        })
        .await;
        assert!(events.iter().any(|e| e["detail"]["field"] == "taxId"));
    }

    async fn session_tokens_never_reveal_even_if_granted(app) {
        let (account, key) = app.account_with_key().await;
        // An application cannot even list the capability as one it may ask for.
        let refused = keyfob::services::apps::create_app(app.state.store.as_ref(), &AccountId::from(account.as_str()), NewApp {
            name: "Greedy".into(),
            redirect_uris: vec!["https://app.example.com/cb".into()],
            post_logout_redirect_uris: vec![],
            origins: vec![],
            public: false,
            max_permissions: "creditApplications.read,sensitive.read".into(),
            refresh_idle_secs: None,
            refresh_max_age_secs: None,
            allow_fragment: false,
        }).await;
        assert!(refused.unwrap_err().to_string().contains("sensitive.read"));
        let created = keyfob::services::apps::create_app(app.state.store.as_ref(), &AccountId::from(account.as_str()), NewApp {
            name: "Portal".into(),
            redirect_uris: vec!["https://app.example.com/cb".into()],
            post_logout_redirect_uris: vec![],
            origins: vec![],
            public: false,
            max_permissions: "creditApplications.read,creditApplications.write".into(),
            refresh_idle_secs: None,
            refresh_max_age_secs: None,
            allow_fragment: false,
        }).await.unwrap();
        let user = keyfob::services::users::create_user(app.state.store.as_ref(), &app.state.passwords, "u@example.com", PASSWORD.into()).await.unwrap();
        // A grant and code carrying the capability, as if written behind Keyfob's back.
        let permissions = r#"["creditApplications.read","creditApplications.write","sensitive.read","audit.read"]"#;
        let now = Timestamp::now();
        let grant = app.state.store.upsert_grant(&GrantRow {
            id: GrantId::from(uuid::Uuid::now_v7().to_string()), user_id: user.id.clone(),
            client_id: created.app.client_id.clone(), account_id: AccountId::from(account.clone()),
            permissions: keyfob_store::JsonList::from_json(permissions).unwrap(), created_at: now, updated_at: now, revoked_at: None,
            identity: Default::default(),
        }).await.unwrap();
        let code = random_token();
        app.state.store.insert_auth_code(&AuthCodeRow {
            code_hash: hash_secret(&code), client_id: created.app.client_id.clone(), user_id: user.id.clone(),
            grant_id: grant.id.clone(), redirect_uri: "https://app.example.com/cb".into(),
            permissions: keyfob_store::JsonList::from_json(permissions).unwrap(), code_challenge: None, family_id: None,
            identity: Default::default(),
            nonce: None,
            auth_time: None,
            created_at: now, expires_at: now + std::time::Duration::from_secs(60), used_at: None,
        }).await.unwrap();
        let response = app.client.post(app.url("/auth/token")).form(&[
            ("grant_type", "authorization_code"), ("code", code.as_str()),
            ("redirect_uri", "https://app.example.com/cb"),
            ("client_id", created.app.client_id.as_str()),
            ("client_secret", created.client_secret.as_deref().unwrap()),
        ]).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let tokens: Value = response.json().await.unwrap();
        let session = tokens["access_token"].as_str().unwrap().to_owned();
        let made = post(&app, &session, "/api/creditApplications", &application()).await;
        assert_eq!(made.status(), 201);
        let made: Value = made.json().await.unwrap();
        assert_masked(&made);
        let id = made["id"].as_str().unwrap();
        let response = app.get(&format!("/api/creditApplications/{id}?reveal=ssn"), &session).send().await.unwrap();
        let message = expect_error(response, 403, "forbidden").await;
        assert!(message.contains("sensitive.read"), "{message}");
        let response = app.get("/api/audit", &session).send().await.unwrap();
        expect_error(response, 403, "forbidden").await;
        // The account's key still sees the user's record, and may reveal it.
        let revealed = get_json(&app, &key, &format!("/api/creditApplications/{id}?reveal=ssn")).await;
        assert_eq!(revealed["ssn"], SSN);
    }

    async fn bad_sensitive_input_is_refused_by_path_and_nothing_is_stored(app) {
        let (_, key) = app.account_with_key().await;
        let cases = [
            (json!({"ssn": "666-12-3456"}), "invalid_sensitive_value", "`ssn`", "666-12-3456"),
            (json!({"primaryApplicant": {"ssn": "123-00-6789"}}), "invalid_sensitive_value", "primaryApplicant.ssn", "123-00-6789"),
            (json!({"applicants": [{"ssn": "98765432"}]}), "invalid_sensitive_value", "applicants[0].ssn", "98765432"),
            (json!({"ssn": 123456789}), "invalid_sensitive_value", "`ssn`", "123456789"),
            (json!({"payment": {"cardNumber": "4242424242424241"}}), "invalid_sensitive_value", "payment.cardNumber", "4242424242424241"),
            (json!({"cardNumber": "4242"}), "invalid_sensitive_value", "cardNumber", "4242"),
            (json!({"cardNumber": CARD, "cvv": "123"}), "card_security_code", "`cvv`", "123"),
            (json!({"payment": {"cardNumber": CARD, "securityCode": "1234"}}), "card_security_code", "payment.securityCode", "1234"),
            (json!({"cards": [{"CVC2": "999"}]}), "card_security_code", "cards[0].CVC2", "999"),
            (json!({"ssn": {"$kfenc": "forged"}}), "invalid_sensitive_value", "`ssn`", "forged"),
            (json!({"notes": [{"$kfenc": "forged"}]}), "invalid_body", "notes[0].$kfenc", "forged"),
            (json!({"taxId": "x".repeat(300)}), "invalid_sensitive_value", "taxId", "xxxxxxxx"),
        ];
        for (doc, code, named, value) in cases {
            let response = post(&app, &key, "/api/creditApplications", &doc).await;
            let message = expect_error(response, 400, code).await;
            assert!(message.contains(named), "{doc}: {message}");
            assert!(!message.contains(value), "{doc}: the value is echoed: {message}");
        }
        let list = get_json(&app, &key, "/api/creditApplications").await;
        assert_eq!(list["totalDocs"], 0);

        // PATCH and PUT with bad values change nothing.
        let made: Value = post(&app, &key, "/api/creditApplications", &json!({"ssn": SSN, "n": 1})).await.json().await.unwrap();
        let id = made["id"].as_str().unwrap();
        for method in [Method::PATCH, Method::PUT] {
            let response = app.request(method, &format!("/api/creditApplications/{id}"), Some(&key))
                .json(&json!({"ssn": "000-12-3456", "n": 2})).send().await.unwrap();
            expect_error(response, 400, "invalid_sensitive_value").await;
            let response = app.request(Method::PATCH, &format!("/api/creditApplications/{id}"), Some(&key))
                .json(&json!({"cvv": "123"})).send().await.unwrap();
            expect_error(response, 400, "card_security_code").await;
        }
        let now = get_json(&app, &key, &format!("/api/creditApplications/{id}?reveal=ssn")).await;
        assert_eq!((now["ssn"].as_str(), now["n"].as_i64()), (Some(SSN), Some(1)));

        // Listing by a sensitive field is refused: it would leak through order or matches.
        for query in ["sort=ssn", "sort=-primaryApplicant.ssn", "where[ssn][equals]=123-45-6789", "where[payment.cardNumber][equals]=1", "sort=SSN"] {
            let response = app.get(&format!("/api/creditApplications?{query}"), &key).send().await.unwrap();
            let message = expect_error(response, 400, "sensitive_field").await;
            assert!(!message.contains("123-45-6789"));
        }
        // Bad reveals.
        for (query, code) in [
            ("reveal=amount", "invalid_reveal"),
            ("reveal=ssn;drop", "invalid_reveal"),
            ("reveal=n", "invalid_reveal"),
        ] {
            let response = app.get(&format!("/api/creditApplications/{id}?{query}"), &key).send().await.unwrap();
            expect_error(response, 400, code).await;
        }
        let response = app.get("/api/creditApplications?reveal=ssn", &key).send().await.unwrap();
        let message = expect_error(response, 400, "invalid_query").await;
        assert!(message.contains("reveal"));
        let none = audit_until(&app, &key, "action=sensitive.revealed", |_| true).await;
        assert_eq!(none.len(), 1, "only the one good reveal above is audited");
    }

    async fn ciphertexts_cannot_be_moved_between_records_or_fields(app) {
        let (_, key) = app.account_with_key().await;
        let a: Value = post(&app, &key, "/api/creditApplications", &json!({"ssn": SSN, "taxId": TAX_ID})).await.json().await.unwrap();
        let b: Value = post(&app, &key, "/api/creditApplications", &json!({"ssn": CO_SSN})).await.json().await.unwrap();
        let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
        // An intruder with write access to the database copies A's sealed SSN into B, and A's
        // sealed taxId over A's SSN.
        let row_a = app.state.store.get_record(&keyfob_store::RecordScope { account_id: &app.state.store.find_api_key(&key_id(&app, &key).await.into()).await.unwrap().unwrap().account_id, resource: "creditApplications", owner_user_id: None }, &a.into()).await.unwrap().unwrap();
        let sealed_ssn = row_a.doc["ssn"].clone();
        let sealed_tax = row_a.doc["taxId"].clone();
        assert!(sealed_ssn["$kfenc"].is_string());
        let doc_b = json!({"ssn": sealed_ssn});
        let doc_a = json!({"ssn": sealed_tax, "taxId": row_a.doc["taxId"]});
        let scope = keyfob_store::RecordScope { account_id: &row_a.account_id, resource: "creditApplications", owner_user_id: None };
        assert!(app.state.store.update_record(&scope, &b.into(), &doc_b, Timestamp::from_unix_ms(1)).await.unwrap());
        assert!(app.state.store.update_record(&scope, &a.into(), &doc_a, Timestamp::from_unix_ms(1)).await.unwrap());
        let read_b = get_json(&app, &key, &format!("/api/creditApplications/{b}?reveal=ssn")).await;
        assert_eq!(read_b["ssn"], "[unreadable]");
        let read_a = get_json(&app, &key, &format!("/api/creditApplications/{a}?reveal=ssn,taxId")).await;
        assert_eq!(read_a["ssn"], "[unreadable]");
        assert_eq!(read_a["taxId"], TAX_ID);
    }

    async fn accounts_never_see_or_reveal_each_others_records(app) {
        let (_, key_a) = app.account_with_key().await;
        let (_, key_b) = app.account_with_key().await;
        let made: Value = post(&app, &key_a, "/api/creditApplications", &application()).await.json().await.unwrap();
        let id = made["id"].as_str().unwrap();
        let response = app.get(&format!("/api/creditApplications/{id}?reveal=ssn"), &key_b).send().await.unwrap();
        expect_error(response, 404, "not_found").await;
        let list = get_json(&app, &key_b, "/api/creditApplications").await;
        assert_eq!(list["totalDocs"], 0);
        let theirs = audit_until(&app, &key_b, "action=sensitive.revealed", |_| true).await;
        assert!(theirs.is_empty());
        let ours = audit_until(&app, &key_a, "action=sensitive.revealed", |_| true).await;
        assert!(ours.is_empty(), "a refused reveal is not a reveal");
    }
}

/// The id of an API key, from `whoami`.
async fn key_id(app: &TestApp, key: &str) -> String {
    let whoami = get_json(app, key, "/auth/whoami").await;
    whoami["key_id"].as_str().unwrap().to_owned()
}

both_backends! {
    async fn master_key_rotation_reseals_keys_without_reencrypting_values(app) {
        let (_, key) = app.account_with_key().await;
        let made: Value = post(&app, &key, "/api/creditApplications", &application()).await.json().await.unwrap();
        let id = made["id"].as_str().unwrap().to_owned();
        let token = app.mint_token(&key, &["creditApplications.read"]).await;
        let stored_before = raw_record_doc(&app, &id).await;

        let new = keyfob::crypto::MasterKey::generate();
        let done = keyfob::services::master_key::rotate_master_key(app.state.store.as_ref(), &app.state.master, &new).await.unwrap();
        assert_eq!((done.signing_keys, done.data_keys), (1, 1));
        // The values were not touched: the same ciphertexts, still readable by this node, which
        // holds the data key already.
        assert_eq!(raw_record_doc(&app, &id).await, stored_before);
        assert_eq!(get_json(&app, &key, &format!("/api/creditApplications/{id}?reveal=ssn")).await["ssn"], SSN);
        // This node, still on the old key, refuses to make a data key the new one cannot open.
        let (_, other) = app.account_with_key().await;
        let refused = post(&app, &other, "/api/creditApplications", &json!({"ssn": SSN})).await;
        expect_error(refused, 503, "unavailable").await;

        // A node started with the old key refuses to start; one with the new key reads everything.
        let mut config = test_config(&app.db);
        config.master_key_hex = Some(app_master_hex(&app).into());
        assert!(keyfob::Application::build(config).await.is_err());
        let mut config = test_config(&app.db);
        config.master_key_hex = Some(new.to_hex().into());
        // The same issuer, as nodes of one service have.
        config.public_url = Some(app.base.clone());
        let next = spawn_with(config, app.db.clone()).await;
        next.wait_until_status(&key, 200).await;
        assert_eq!(next.whoami_status(&token).await, 200);
        let revealed = get_json(&next, &key, &format!("/api/creditApplications/{id}?reveal=ssn,cardNumber")).await;
        assert_eq!(revealed["primaryApplicant"]["ssn"], SSN);
        assert_eq!(revealed["payment"]["cardNumber"], CARD);
        let minted = next.mint_token(&key, &["creditApplications.read"]).await;
        assert_eq!(app.whoami_status(&minted).await, 200, "the signing key is the same");
        assert_no_plaintext(&next).await;
    }
}

async fn raw_record_doc(app: &TestApp, id: &str) -> Value {
    let rows = raw_database_text(app).await;
    let text = String::from_utf8_lossy(&rows);
    // The record's sealed SSN envelope payloads, in order: enough to compare before and after.
    let mut payloads: Vec<String> = text
        .match_indices("$kfenc")
        .map(|(i, _)| text[i..].chars().take(60).collect())
        .collect();
    payloads.sort();
    payloads.dedup();
    assert!(!payloads.is_empty(), "record {id} has sealed values");
    json!(payloads)
}

fn app_master_hex(app: &TestApp) -> String {
    app.state.master.to_hex()
}
