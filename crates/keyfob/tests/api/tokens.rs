//! Tokens: verifiable by an independent JOSE library from the JWKS alone, and refused for every
//! way a token can be wrong. Signing-key rotation publishes before it signs.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jwt_simple::prelude::*;
use keyfob::config::SigningAlg;
use keyfob_domain::Claims;
use keyfob_domain::ids::{AccountId, Jti};
use keyfob_domain::time::Timestamp;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

async fn jwks(app: &TestApp) -> Value {
    app.public_json("/.well-known/jwks.json").await
}

fn header_of(token: &str) -> Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

/// Verifies `token` with jwt-simple, given only the JWKS.
fn verify_independently(jwks: &Value, token: &str, issuer: &str) -> JWTClaims<Value> {
    let kid = header_of(token)["kid"].as_str().unwrap().to_owned();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the token's kid is in the JWKS");
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from_strings(&[issuer])),
        allowed_audiences: Some(HashSet::from_strings(&["keyfob"])),
        ..Default::default()
    };
    let x = B64.decode(jwk["x"].as_str().unwrap()).unwrap();
    match jwk["kty"].as_str().unwrap() {
        "OKP" => Ed25519PublicKey::from_bytes(&x)
            .unwrap()
            .verify_token::<Value>(token, Some(options))
            .expect("Ed25519 token verifies"),
        "EC" => {
            let y = B64.decode(jwk["y"].as_str().unwrap()).unwrap();
            let mut point = vec![4u8];
            point.extend(x);
            point.extend(y);
            ES256PublicKey::from_bytes(&point)
                .unwrap()
                .verify_token::<Value>(token, Some(options))
                .expect("ES256 token verifies")
        }
        other => panic!("unexpected key type {other}"),
    }
}

fn claims(app: &TestApp, account: &str) -> Claims {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    Claims {
        iss: app.state.tokens.issuer().to_owned(),
        sub: "test".into(),
        aud: "keyfob".into(),
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: Jti::from(uuid::Uuid::now_v7().to_string()),
        permissions: vec!["deals.read".into()],
        scope: None,
        account_id: AccountId::from(account.to_owned()),
        client_id: None,
        sid: None,
        gty: None,
    }
}

use time::OffsetDateTime;

async fn refused_with(app: &TestApp, token: &str, needle: &str) {
    let response = app.get("/auth/whoami", token).send().await.unwrap();
    let message = expect_error(response, 401, "unauthorized").await;
    assert!(
        message.contains(needle),
        "expected `{needle}` in `{message}`"
    );
}

both_backends! {
    async fn eddsa_tokens_verify_with_an_independent_library(app) {
        let (account, key) = app.account_with_key().await;
        let token = app.mint_token(&key, &["deals.read"]).await;
        let header = header_of(&token);
        assert_eq!(header["alg"], "EdDSA");
        assert!(header["kid"].is_string());
        let verified = verify_independently(&jwks(&app).await, &token, app.state.tokens.issuer());
        assert_eq!(verified.custom["permissions"], json!(["deals.read"]));
        assert_eq!(verified.custom["account_id"], account.as_str());
        assert!(verified.jwt_id.is_some() && verified.subject.is_some());
    }

    async fn forged_and_invalid_tokens_are_refused(app) {
        let (account, key) = app.account_with_key().await;
        let good = app.mint_token(&key, &["deals.read"]).await;
        let kid = header_of(&good)["kid"].as_str().unwrap().to_owned();
        let payload = good.split('.').nth(1).unwrap().to_owned();

        // alg: none, with and without a signature.
        let none_header = B64.encode(json!({"alg": "none", "kid": kid, "typ": "JWT"}).to_string());
        refused_with(&app, &format!("{none_header}.{payload}.AAAA"), "well-formed").await;

        // Algorithm confusion: HS256 keyed with the public key.
        let jwk = &jwks(&app).await["keys"][0];
        let public = B64.decode(jwk["x"].as_str().unwrap()).unwrap();
        let hs = HS256Key::from_bytes(&public).with_key_id(&kid);
        let custom = json!({"permissions": ["*.write"], "account_id": account});
        let forged = hs
            .authenticate(
                jwt_simple::claims::Claims::with_custom_claims(custom, jwt_simple::prelude::Duration::from_secs(600))
                    .with_issuer(app.state.tokens.issuer())
                    .with_audience("keyfob")
                    .with_subject("attacker"),
            )
            .unwrap();
        assert_eq!(header_of(&forged)["alg"], "HS256");
        refused_with(&app, &forged, "algorithm").await;

        // Unknown kid.
        let other_header = B64.encode(json!({"alg": "EdDSA", "kid": "nope", "typ": "JWT"}).to_string());
        let sig = good.split('.').nth(2).unwrap();
        refused_with(&app, &format!("{other_header}.{payload}.{sig}"), "kid").await;
        let no_kid = B64.encode(json!({"alg": "EdDSA", "typ": "JWT"}).to_string());
        refused_with(&app, &format!("{no_kid}.{payload}.{sig}"), "kid").await;

        // Bad signature: a changed payload under the original signature.
        let mut tampered: Value = serde_json::from_slice(&B64.decode(&payload).unwrap()).unwrap();
        tampered["permissions"] = json!(["*.write"]);
        let tampered = B64.encode(tampered.to_string());
        let head = good.split('.').next().unwrap();
        refused_with(&app, &format!("{head}.{tampered}.{sig}"), "signature").await;

        // Signed by Keyfob's own key, but expired, not yet valid, for another issuer or audience.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let sign = |c: &Claims| app.state.tokens.sign(c, Timestamp::now()).unwrap();
        let mut c = claims(&app, &account);
        c.exp = now - 3600;
        c.iat = now - 7200;
        c.nbf = now - 7200;
        refused_with(&app, &sign(&c), "expired").await;
        let mut c = claims(&app, &account);
        c.nbf = now + 3600;
        refused_with(&app, &sign(&c), "not valid yet").await;
        let mut c = claims(&app, &account);
        c.iss = "https://evil.example".into();
        refused_with(&app, &sign(&c), "issued by someone else").await;
        let mut c = claims(&app, &account);
        c.aud = "another-api".into();
        refused_with(&app, &sign(&c), "audience").await;

        // The untouched token still works.
        assert_eq!(app.whoami_status(&good).await, 200);
    }

    async fn revoked_tokens_are_refused(app) {
        let (account, key) = app.account_with_key().await;
        let token = app.mint_token(&key, &["deals.read"]).await;
        let other = app.mint_token(&key, &["deals.read"]).await;
        let jti = app.state.store.list_tokens(&AccountId::from(account.as_str()), 10).await.unwrap();
        let target = jti.iter().find(|t| {
            let payload = token.split('.').nth(1).unwrap();
            let claims: Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
            claims["jti"] == t.jti.as_str()
        }).unwrap();
        // Another account cannot revoke it.
        let (stranger, _) = app.account_with_key().await;
        assert!(!app.state.store.revoke_token(&AccountId::from(stranger.as_str()), &target.jti, Timestamp::now()).await.unwrap());
        assert!(app.state.store.revoke_token(&AccountId::from(account.as_str()), &target.jti, Timestamp::now()).await.unwrap());
        app.wait_until_status(&token, 401).await;
        refused_with(&app, &token, "revoked").await;
        assert_eq!(app.whoami_status(&other).await, 200);
    }

    async fn rotation_publishes_before_signing(app) {
        let (_, key) = app.account_with_key().await;
        let old = app.mint_token(&key, &["deals.read"]).await;
        let old_kid = header_of(&old)["kid"].as_str().unwrap().to_owned();
        let next = keyfob::services::signing_keys::rotate_signing_key(
            app.state.store.as_ref(),
            &app.state.master,
            SigningAlg::EdDsa,
            2,
            3600,
        )
        .await
        .unwrap();
        // Within the sync interval the next key is published, but the old one still signs.
        let mut published = false;
        for _ in 0..30 {
            let set = jwks(&app).await;
            if set["keys"].as_array().unwrap().iter().any(|k| k["kid"] == next.kid.as_str()) {
                published = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(published, "next key not published");
        let during = app.mint_token(&key, &["deals.read"]).await;
        assert_eq!(header_of(&during)["kid"], old_kid.as_str());
        // Once active, the next key signs; tokens of the old key still verify.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let after = app.mint_token(&key, &["deals.read"]).await;
        assert_eq!(header_of(&after)["kid"], next.kid.as_str());
        let set = jwks(&app).await;
        assert_eq!(set["keys"].as_array().unwrap().len(), 2);
        verify_independently(&set, &after, app.state.tokens.issuer());
        verify_independently(&set, &old, app.state.tokens.issuer());
        assert_eq!(app.whoami_status(&old).await, 200);
        assert_eq!(app.whoami_status(&after).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_is_selectable() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let mut config = test_config(&db);
    config.signing_alg = SigningAlg::Es256;
    let app = spawn_with(config, std::sync::Arc::new(db)).await;
    let (_, key) = app.account_with_key().await;
    let token = app.mint_token(&key, &["deals.read"]).await;
    assert_eq!(header_of(&token)["alg"], "ES256");
    let set = jwks(&app).await;
    assert_eq!(set["keys"][0]["kty"], "EC");
    verify_independently(&set, &token, app.state.tokens.issuer());
    assert_eq!(app.whoami_status(&token).await, 200);
}
