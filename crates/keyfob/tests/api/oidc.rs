//! What OpenID Connect's and OAuth's stock tools expect of Keyfob so far: the discovery documents
//! (one description, true of the server, readable from any origin), access tokens that a resource
//! server validating RFC 9068 accepts, and RS256 beside EdDSA and ES256. Tokens signed the way
//! Keyfob signed them before keep verifying.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jwt_simple::prelude::*;
use keyfob::config::SigningAlg;
use keyfob_domain::Claims;
use keyfob_domain::ids::{AccountId, Jti};
use keyfob_domain::time::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::cli::fails_with;
use crate::helpers::*;

pub(crate) fn header_of(token: &str) -> Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

pub(crate) fn payload_of(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

/// The JWK `kid` names in `jwks`.
pub(crate) fn jwk<'a>(jwks: &'a Value, kid: &str) -> &'a Value {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("the token's kid is in the JWKS")
}

/// What a resource server does with an access token under RFC 9068 §4, with a stock JOSE library
/// (jwt-simple) and nothing but the discovery document: find the JWKS from the metadata, check
/// the `typ` is `at+jwt`, the signature with the key the `kid` names (of the algorithm the JWK
/// states, never `none`), `iss` against the metadata's issuer, `aud` against its own identifier,
/// `exp`, and that every claim §2.2 requires is there. Returns the claims.
pub(crate) async fn validate_as_resource_server(app: &TestApp, token: &str) -> Value {
    let meta = app.public_json("/.well-known/openid-configuration").await;
    let issuer = meta["issuer"].as_str().unwrap();
    let jwks: Value = app
        .client
        .get(meta["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = header_of(token);
    let typ = header["typ"].as_str().expect("a typ header");
    assert!(
        typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt"),
        "typ {typ}"
    );
    let key = jwk(&jwks, header["kid"].as_str().unwrap());
    assert_eq!(key["alg"], header["alg"], "the JWK's algorithm");
    let options = VerificationOptions {
        required_signature_type: Some("at+jwt".into()),
        allowed_issuers: Some(HashSet::from_strings(&[issuer])),
        allowed_audiences: Some(HashSet::from_strings(&["keyfob"])),
        ..Default::default()
    };
    let claims: JWTClaims<Value> = verify_with_jwk(key, token, options).expect("RFC 9068 token");
    assert!(claims.expires_at.is_some(), "exp");
    assert!(claims.issued_at.is_some(), "iat");
    assert!(claims.subject.is_some(), "sub");
    assert!(claims.jwt_id.is_some(), "jti");
    assert!(claims.custom["client_id"].is_string(), "client_id");
    let scope = claims.custom["scope"].as_str().expect("scope");
    let permissions: Vec<&str> = claims.custom["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(scope, permissions.join(" "), "scope is the permissions");
    let mut payload = payload_of(token);
    payload["_header"] = header;
    payload
}

/// Verifies `token` with jwt-simple and the one JWK given.
pub(crate) fn verify_with_jwk(
    jwk: &Value,
    token: &str,
    options: VerificationOptions,
) -> Result<JWTClaims<Value>, jwt_simple::Error> {
    let bytes = |name: &str| B64.decode(jwk[name].as_str().unwrap()).unwrap();
    match (jwk["kty"].as_str().unwrap(), jwk["alg"].as_str().unwrap()) {
        ("OKP", "EdDSA") => {
            Ed25519PublicKey::from_bytes(&bytes("x"))?.verify_token::<Value>(token, Some(options))
        }
        ("EC", "ES256") => {
            let point = [vec![4u8], bytes("x"), bytes("y")].concat();
            ES256PublicKey::from_bytes(&point)?.verify_token::<Value>(token, Some(options))
        }
        ("RSA", "RS256") => RS256PublicKey::from_components(&bytes("n"), &bytes("e"))?
            .verify_token::<Value>(token, Some(options)),
        other => panic!("unexpected key {other:?}"),
    }
}

/// A token as Keyfob signed them before RFC 9068: `typ: JWT` (or none), no `scope`, and no
/// `client_id` for a minted one.
fn old_style_token(app: &TestApp, account: &str, key_id: &str, typ: Option<&str>) -> String {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = Claims {
        iss: app.state.tokens.issuer().to_owned(),
        sub: key_id.to_owned(),
        aud: "keyfob".into(),
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: Jti::from(uuid::Uuid::now_v7().to_string()),
        permissions: vec!["deals.read".into()],
        scope: None,
        account_id: AccountId::from(account),
        client_id: None,
        sid: None,
        gty: None,
    };
    let keys = app.state.tokens.keys();
    let signer = keys.signer(Timestamp::now()).unwrap();
    let mut header = jsonwebtoken::Header::new(signer.alg);
    header.kid = Some(signer.kid.to_string());
    header.typ = typ.map(str::to_owned);
    let token = jsonwebtoken::encode(&header, &claims, &signer.key).unwrap();
    let payload = payload_of(&token);
    assert!(payload.get("scope").is_none() && payload.get("client_id").is_none());
    token
}

use time::OffsetDateTime;

/// The id of the API key `key` (the minted token's `sub`).
async fn key_id_of(app: &TestApp, key: &str) -> String {
    let who: Value = app
        .get("/auth/whoami", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    who["key_id"].as_str().unwrap().to_owned()
}

both_backends! {
    async fn discovery_documents_are_one_and_true(app) {
        let (_, key) = app.account_with_key().await;
        let oidc = app.public_json("/.well-known/openid-configuration").await;
        let oauth = app.public_json("/.well-known/oauth-authorization-server").await;
        assert_eq!(oidc, oauth, "one description for both documents");
        // The issuer is exactly the tokens' `iss`.
        let token = app.mint_token(&key, &["deals.read"]).await;
        assert_eq!(oidc["issuer"], payload_of(&token)["iss"]);
        let issuer = oidc["issuer"].as_str().unwrap();
        assert_eq!(oidc["authorization_endpoint"], format!("{issuer}/auth"));
        assert_eq!(oidc["token_endpoint"], format!("{issuer}/auth/token"));
        assert_eq!(oidc["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
        assert_eq!(oidc["revocation_endpoint"], format!("{issuer}/auth/revoke"));
        assert_eq!(oidc["introspection_endpoint"], format!("{issuer}/auth/introspect"));
        assert_eq!(oidc["end_session_endpoint"], format!("{issuer}/auth/end-session"));
        assert_eq!(oidc["userinfo_endpoint"], format!("{issuer}/auth/userinfo"));
        // What OpenID Connect Discovery requires, as served now.
        assert_eq!(oidc["response_types_supported"], json!(["code", "token"]));
        assert_eq!(oidc["subject_types_supported"], json!(["public"]));
        assert_eq!(oidc["id_token_signing_alg_values_supported"], json!(["EdDSA"]));
        assert_eq!(oidc["grant_types_supported"], json!(["authorization_code", "refresh_token", "client_credentials"]));
        assert_eq!(oidc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(oidc["scopes_supported"], json!(["openid", "profile", "email", "*.read", "*.write"]));
        assert_eq!(oidc["prompt_values_supported"], json!(["none", "login", "consent", "select_account"]));
        // What is not served is said so, or not announced.
        for unserved in ["claims_parameter_supported", "request_parameter_supported", "request_uri_parameter_supported"] {
            assert_eq!(oidc[unserved], false, "{unserved}");
        }
        for absent in ["registration_endpoint", "check_session_iframe"] {
            assert!(oidc.get(absent).is_none(), "{absent}");
        }
        // Every claim listed is in the tokens Keyfob signs: a minted token's, or a session's
        // id_token's and access token's (`authorize::openid` checks those).
        let claims = payload_of(&token);
        let of_sessions = ["sid", "auth_time", "nonce", "azp", "at_hash", "email", "email_verified", "updated_at"];
        for claim in oidc["claims_supported"].as_array().unwrap() {
            let claim = claim.as_str().unwrap();
            assert!(of_sessions.contains(&claim) || claims.get(claim).is_some(), "{claim}");
        }
        // Every endpoint it names answers (a GET where that is what a client does, else a POST
        // that is refused for what it lacks, not for its address).
        for (field, method) in [
            ("jwks_uri", Method::GET),
            ("authorization_endpoint", Method::GET),
            ("end_session_endpoint", Method::GET),
            ("token_endpoint", Method::POST),
            ("revocation_endpoint", Method::POST),
            ("introspection_endpoint", Method::POST),
            ("userinfo_endpoint", Method::GET),
        ] {
            let url = oidc[field].as_str().unwrap();
            let response = app.client.request(method, url).send().await.unwrap();
            assert_ne!(response.status(), 404, "{field}");
            assert_ne!(response.status(), 405, "{field}");
        }
    }

    async fn discovery_and_jwks_answer_any_origin_and_nothing_else_does(app) {
        let origin = "https://anything.example";
        for path in [
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
            "/.well-known/jwks.json",
        ] {
            let response = app.client.get(app.url(path)).header("Origin", origin).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(response.headers()["access-control-allow-origin"], "*", "{path}");
            assert!(response.headers().get("access-control-allow-credentials").is_none());
            let preflight = app.client.request(Method::OPTIONS, app.url(path))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "GET")
                .send().await.unwrap();
            assert!(preflight.status().is_success(), "{path}: {}", preflight.status());
            assert_eq!(preflight.headers()["access-control-allow-origin"], "*", "{path}");
            let methods = preflight.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
            assert!(methods.contains("GET") && !methods.contains("POST"), "{methods}");
            // Still read-only.
            let response = app.client.post(app.url(path)).header("Origin", origin).send().await.unwrap();
            assert_eq!(response.status(), 405, "{path}");
        }
        // The rest of the API stays closed to an unknown origin.
        for (method, path) in [
            (Method::GET, "/auth/whoami"),
            (Method::POST, "/auth"),
            (Method::POST, "/auth/token"),
            (Method::GET, "/api/deals"),
            (Method::GET, "/openapi.json"),
        ] {
            let preflight = app.client.request(Method::OPTIONS, app.url(path))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", method.as_str())
                .send().await.unwrap();
            assert!(preflight.headers().get("access-control-allow-origin").is_none(), "{path}");
            let response = app.client.request(method, app.url(path)).header("Origin", origin).send().await.unwrap();
            assert!(response.headers().get("access-control-allow-origin").is_none(), "{path}");
        }
    }

    async fn minted_tokens_are_rfc_9068_access_tokens(app) {
        let (_, key) = app.account_with_key().await;
        let key_id = key_id_of(&app, &key).await;
        let token = app.mint_token(&key, &["deals.read", "services.write"]).await;
        let claims = validate_as_resource_server(&app, &token).await;
        assert_eq!(claims["_header"]["typ"], "at+jwt");
        assert_eq!(claims["scope"], "deals.read services.write");
        assert_eq!(claims["permissions"], json!(["deals.read", "services.write"]));
        // The API key is the client that asked, and the subject.
        assert_eq!(claims["client_id"], key_id.as_str());
        assert_eq!(claims["sub"], key_id.as_str());
        // Keyfob itself still takes it, and introspection says the same.
        let who: Value = app.get("/auth/whoami", &token).send().await.unwrap().json().await.unwrap();
        assert_eq!(who["kind"], "jwt");
        assert!(who.get("client_id").is_none(), "no application: {who}");
        let body: Value = app.request(Method::POST, "/auth/introspect", Some(&key))
            .form(&[("token", token.as_str())]).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["active"], true);
        assert_eq!(body["client_id"], key_id.as_str());
        assert_eq!(body["scope"], "deals.read services.write");
        // A token without the at+jwt type is not an RFC 9068 access token.
        let old = old_style_token(&app, "acc", &key_id, Some("JWT"));
        let jwks = app.public_json("/.well-known/jwks.json").await;
        let options = VerificationOptions {
            required_signature_type: Some("at+jwt".into()),
            ..Default::default()
        };
        assert!(verify_with_jwk(jwk(&jwks, header_of(&old)["kid"].as_str().unwrap()), &old, options).is_err());
    }

    async fn tokens_signed_before_rfc_9068_keep_working(app) {
        let (account, key) = app.account_with_key().await;
        let key_id = key_id_of(&app, &key).await;
        let typed = old_style_token(&app, &account, &key_id, Some("JWT"));
        let untyped = old_style_token(&app, &account, &key_id, None);
        assert!(header_of(&untyped).get("typ").is_none());
        for token in [&typed, &untyped] {
            let response = app.get("/auth/whoami", token).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let who: Value = response.json().await.unwrap();
            assert_eq!(who["permissions"], json!(["deals.read"]));
            assert_eq!(who["subject"], key_id.as_str());
            let response = app.get("/api/deals", token).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
        // They are still the key's: revoking it refuses them.
        let response = app.request(Method::POST, "/auth/introspect", Some(&key))
            .form(&[("token", typed.as_str())]).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["active"], true);
        assert!(body.get("client_id").is_none());
        let revoked = app.state.store.revoke_api_key(
            Some(&AccountId::from(account.as_str())),
            &keyfob_domain::ids::KeyId::from(key_id.as_str()),
            Timestamp::now(),
        )
        .await
        .unwrap();
        assert!(revoked);
        app.wait_until_status(&typed, 401).await;
        app.wait_until_status(&untyped, 401).await;
    }

    async fn rotation_from_eddsa_to_rs256_keeps_old_tokens_valid(app) {
        let (_, key) = app.account_with_key().await;
        let old = app.mint_token(&key, &["deals.read"]).await;
        assert_eq!(header_of(&old)["alg"], "EdDSA");
        let next = keyfob::services::signing_keys::rotate_signing_key(
            app.state.store.as_ref(),
            &app.state.master,
            SigningAlg::Rs256,
            1,
            3600,
        )
        .await
        .unwrap();
        // Published first: both keys in the JWKS and the discovery document names both.
        let mut published = false;
        for _ in 0..40 {
            let meta = app.public_json("/.well-known/openid-configuration").await;
            if meta["id_token_signing_alg_values_supported"] == json!(["EdDSA", "RS256"]) {
                published = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(published, "next key not published");
        let jwks = app.public_json("/.well-known/jwks.json").await;
        let rsa = jwk(&jwks, &next.kid);
        assert_eq!((&rsa["kty"], &rsa["alg"], &rsa["use"], &rsa["e"]), (&json!("RSA"), &json!("RS256"), &json!("sig"), &json!("AQAB")));
        assert_eq!(B64.decode(rsa["n"].as_str().unwrap()).unwrap().len(), 256);
        // Once active, the new key signs RS256.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let new = app.mint_token(&key, &["deals.read"]).await;
        let header = header_of(&new);
        assert_eq!((&header["alg"], &header["kid"]), (&json!("RS256"), &json!(next.kid.as_str())));
        // Both verify, by Keyfob and by a resource server with a stock library.
        for token in [&old, &new] {
            assert_eq!(app.whoami_status(token).await, 200);
            validate_as_resource_server(&app, token).await;
        }
    }
}

/// A server configured for RS256 from its first start.
async fn rs256_from_the_first_start(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let mut config = test_config(&db);
    config.signing_alg = SigningAlg::Rs256;
    let app = spawn_with(config, Arc::new(db)).await;
    let (_, key) = app.account_with_key().await;
    let token = app.mint_token(&key, &["deals.read"]).await;
    let header = header_of(&token);
    assert_eq!(header["alg"], "RS256");
    let jwks = app.public_json("/.well-known/jwks.json").await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["kid"], header["kid"]);
    for field in ["n", "e", "alg", "use"] {
        assert!(jwk[field].is_string(), "{field}");
    }
    assert!(jwk.get("d").is_none(), "no private part");
    let claims = validate_as_resource_server(&app, &token).await;
    assert_eq!(claims["permissions"], json!(["deals.read"]));
    assert_eq!(app.whoami_status(&token).await, 200);
    // A tampered RS256 token is refused.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload = payload_of(&token);
    payload["permissions"] = json!(["*.write"]);
    parts[1] = B64.encode(payload.to_string());
    assert_eq!(app.whoami_status(&parts.join(".")).await, 401);
    let meta = app.public_json("/.well-known/openid-configuration").await;
    assert_eq!(
        meta["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_from_the_first_start_on_sqlite() {
    rs256_from_the_first_start(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_from_the_first_start_on_postgres() {
    rs256_from_the_first_start(Backend::Postgres).await;
}

/// `keyfob` with only these variables and arguments.
fn keyfob(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_keyfob"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("keyfob runs")
}

#[test]
fn an_unknown_signing_algorithm_is_refused_naming_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let why = "unknown signing algorithm `RS512`: use EdDSA, ES256 or RS256";
    // A flag's value is refused by the command-line parser, which names the flag.
    let out = keyfob(
        &[("KEYFOB_DATA_DIR", &data)],
        &["serve", "--signing-alg", "RS512"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'RS512' for '--signing-alg") && err.contains(why),
        "{err}"
    );
    // The variable's, by its name.
    let out = keyfob(
        &[("KEYFOB_DATA_DIR", &data), ("KEYFOB_SIGNING_ALG", "RS512")],
        &["serve"],
    );
    fails_with(
        &out,
        &format!("keyfob: KEYFOB_SIGNING_ALG: invalid value 'RS512': {why}"),
    );
    // The file's, by the file and the line.
    let path = dir.path().join("keyfob.toml");
    std::fs::write(&path, "signing_alg = \"RS512\"\n").unwrap();
    let path = path.display().to_string();
    let out = keyfob(&[("KEYFOB_DATA_DIR", &data)], &["--config", &path, "serve"]);
    fails_with(&out, &format!("keyfob: invalid config file {path}"));
    fails_with(&out, "line 1");
    fails_with(&out, why);
    // Nothing was made: no database, no key.
    assert!(!dir.path().join("keyfob.db").exists());
    // RS256 is taken from each.
    for (env, args) in [
        (vec![("KEYFOB_SIGNING_ALG", "RS256")], vec!["settings"]),
        (vec![], vec!["settings", "--signing-alg", "RS256"]),
    ] {
        let out = keyfob(&env, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shown = String::from_utf8(out.stdout).unwrap();
        assert!(shown.contains("signing_alg = \"RS256\""), "{shown}");
    }
}
