//! OpenID Connect's identity scopes on the code flow: `openid`, `profile` and `email` asked beside
//! permissions, shown on the consent page in words, remembered with the grant; the id_token of a
//! code exchange and of a refresh (checked with a stock JOSE library against the JWKS); the
//! UserInfo endpoint and every way it refuses. Driven as in the parent module.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jwt_simple::prelude::VerificationOptions;
use serde_json::json;
use sha2::{Digest, Sha256, Sha512};

use super::*;
use crate::oidc::{header_of, jwk, payload_of, verify_with_jwk};

/// RFC 7636's example verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// An authorization request for a public `client` with PKCE, asking for `scope`.
fn oidc_request(client: &AppRow, scope: &str, nonce: Option<&str>) -> String {
    let mut pairs = vec![
        ("client_id", client.client_id.as_str()),
        ("redirect_uri", CALLBACK),
        ("scope", scope),
        ("response_type", "code"),
        ("state", "st8"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    if let Some(nonce) = nonce {
        pairs.push(("nonce", nonce));
    }
    query(&pairs)
}

/// Exchanges the code a redirect carries: the token response.
async fn exchange(app: &TestApp, client: &AppRow, url: &Url) -> Value {
    let pairs = query_of(url);
    assert_eq!(param(&pairs, "state"), Some("st8"));
    let code = param(&pairs, "code").expect("a code");
    let response = app
        .client
        .post(app.url("/auth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("client_id", client.client_id.as_str()),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn refresh(app: &TestApp, client: &AppRow, refresh_token: &str) -> Value {
    let response = app
        .client
        .post(app.url("/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// What a relying party checks of an id_token (OpenID Connect Core 1.0 §3.1.3.7), with a stock
/// JOSE library and the JWKS: the signature, `typ`, `iss`, `aud`, `azp`, `exp`, the `at_hash` of
/// the access token beside it. Returns the claims.
async fn check_id_token(
    app: &TestApp,
    client: &AppRow,
    id_token: &str,
    access_token: &str,
) -> Value {
    let meta = app.public_json("/.well-known/openid-configuration").await;
    let jwks = app.public_json("/.well-known/jwks.json").await;
    let header = header_of(id_token);
    assert_eq!(header["typ"], "JWT", "an id_token is not an access token");
    let key = jwk(&jwks, header["kid"].as_str().unwrap());
    assert_eq!(header["alg"], key["alg"]);
    let options = VerificationOptions {
        allowed_issuers: Some([meta["issuer"].as_str().unwrap().to_owned()].into()),
        allowed_audiences: Some([client.client_id.to_string()].into()),
        ..Default::default()
    };
    verify_with_jwk(key, id_token, options).expect("the id_token verifies");
    let claims = payload_of(id_token);
    assert_eq!(claims["azp"], client.client_id.as_str());
    let now = Timestamp::now().unix_secs();
    assert!(claims["exp"].as_i64().unwrap() > now);
    assert!(claims["iat"].as_i64().unwrap() <= now + 1);
    let auth_time = claims["auth_time"].as_i64().unwrap();
    assert!(auth_time <= claims["iat"].as_i64().unwrap() && auth_time > now - 300);
    let at_hash = match header["alg"].as_str().unwrap() {
        "EdDSA" => B64.encode(&Sha512::digest(access_token.as_bytes())[..32]),
        _ => B64.encode(&Sha256::digest(access_token.as_bytes())[..16]),
    };
    assert_eq!(claims["at_hash"], at_hash.as_str());
    claims
}

async fn userinfo(app: &TestApp, method: Method, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.request(method, app.url("/auth/userinfo"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// A refusal of userinfo: the status, `WWW-Authenticate: Bearer error="…"` and the same error in
/// the body.
async fn refused(response: reqwest::Response, status: StatusCode, error: &str) -> String {
    assert_eq!(response.status(), status);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with(&format!("Bearer error=\"{error}\"")),
        "{challenge}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error);
    body["error_description"].as_str().unwrap().to_owned()
}

async fn user_id_of(app: &TestApp, email: &str) -> String {
    app.state
        .store
        .find_user_by_email(email)
        .await
        .unwrap()
        .unwrap()
        .id
        .to_string()
}

use reqwest::Method;

both_backends! {
    async fn openid_gives_an_id_token_and_userinfo_that_say_who_signed_in(app) {
        let client = register_app(&app, true, "deals.read").await;
        let (browser, email) = Browser::user(&app).await;
        let user_id = user_id_of(&app, &email).await;

        // The consent page says, in words, what the application learns about the user; only
        // permissions are ticked one by one.
        let q = oidc_request(&client, "openid email deals.read", Some("n-0S6_WzA2Mj"));
        let consent = browser.consent_page(&q).await;
        assert!(consent.contains("Know who you are"), "{consent}");
        assert!(consent.contains("See your email address"));
        assert!(!consent.contains("basic profile"));
        assert_eq!(checkboxes(&consent), ["deals.read"]);
        let response = browser.answer(&consent, &["deals.read"], "allow").await;
        let tokens = exchange(&app, &client, &redirect_to_client(&response)).await;
        assert_eq!(tokens["scope"], "openid email deals.read");
        let access = tokens["access_token"].as_str().unwrap();
        let id_token = tokens["id_token"].as_str().expect("an id_token with openid");

        let claims = check_id_token(&app, &client, id_token, access).await;
        assert_eq!(claims["sub"], user_id.as_str());
        assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
        assert_eq!(claims["email"], email.as_str());
        assert_eq!(claims["email_verified"], false);
        assert!(claims.get("updated_at").is_none(), "no profile scope, no profile claim");
        assert!(claims.get("permissions").is_none());
        let access_claims = payload_of(access);
        assert_eq!(claims["sid"], access_claims["sid"]);
        assert_eq!(access_claims["scope"], "openid email deals.read");
        assert_eq!(access_claims["permissions"], json!(["deals.read"]));

        // The id_token is no access token: the API refuses it.
        assert_eq!(app.whoami_status(id_token).await, 401);
        assert_eq!(app.whoami_status(access).await, 200);

        // UserInfo, by GET and by POST.
        for method in [Method::GET, Method::POST] {
            let response = userinfo(&app, method, Some(access)).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["cache-control"], "no-store");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body, json!({ "sub": user_id, "email": email, "email_verified": false }));
        }

        // POST with the token in a form body (RFC 6750 §2.2); never in both places.
        let response = app
            .client
            .post(app.url("/auth/userinfo"))
            .form(&[("access_token", access)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["sub"], user_id.as_str());
        let response = app
            .client
            .post(app.url("/auth/userinfo"))
            .bearer_auth(access)
            .form(&[("access_token", access)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
        assert!(body["error_description"].as_str().unwrap().contains("not both"));

        // A refresh brings a new id_token: the same user and login time, no nonce.
        let again = refresh(&app, &client, tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!(again["scope"], "openid email deals.read");
        let renewed = check_id_token(
            &app,
            &client,
            again["id_token"].as_str().expect("a refresh's id_token"),
            again["access_token"].as_str().unwrap(),
        )
        .await;
        assert_eq!(renewed["sub"], claims["sub"]);
        assert_eq!(renewed["auth_time"], claims["auth_time"]);
        assert_eq!(renewed["sid"], claims["sid"]);
        assert!(renewed.get("nonce").is_none());

        // The grant remembers the identity scopes: asked again, no page; with `profile` added,
        // the page again, naming it.
        // Parameters Keyfob does not use are ignored (OpenID Connect's `display`, `ui_locales`,
        // `claims_locales`, `acr_values`, `claims`, `id_token_hint`, and anything unknown).
        let extra = query(&[
            ("display", "popup"),
            ("ui_locales", "fr-CA fr en"),
            ("claims_locales", "fr"),
            ("acr_values", "1 2"),
            ("claims", r#"{"id_token":{"name":{"essential":true}}}"#),
            ("id_token_hint", id_token),
            ("x_custom", "1"),
        ]);
        let url = browser
            .get(&format!("/auth?{}&{extra}", oidc_request(&client, "email openid deals.read", Some("n2"))))
            .await;
        let tokens = exchange(&app, &client, &redirect_to_client(&url)).await;
        let claims = payload_of(tokens["id_token"].as_str().unwrap());
        assert_eq!(claims["nonce"], "n2");
        let consent = browser
            .consent_page(&oidc_request(&client, "openid profile", None))
            .await;
        assert!(consent.contains("basic profile"), "{consent}");
        assert!(checkboxes(&consent).is_empty());
        let response = browser.answer(&consent, &[], "allow").await;
        let tokens = exchange(&app, &client, &redirect_to_client(&response)).await;
        assert_eq!(tokens["scope"], "openid profile");
        let access = tokens["access_token"].as_str().unwrap();
        let claims = check_id_token(&app, &client, tokens["id_token"].as_str().unwrap(), access).await;
        assert!(claims.get("nonce").is_none(), "none sent, none told");
        assert!(claims.get("email").is_none());
        assert!(claims["updated_at"].as_i64().is_some());
        assert_eq!(payload_of(access)["permissions"], json!([]));
        let body: Value = userinfo(&app, Method::GET, Some(access)).await.json().await.unwrap();
        assert_eq!(body["sub"], user_id.as_str());
        assert!(body.get("email").is_none());
        assert!(body["updated_at"].as_i64().is_some());
        // The user's apps page says what the application learns about them.
        let apps_page = browser.expect_page("/auth/grants").await;
        assert!(apps_page.contains("Know who you are"), "{apps_page}");
        assert!(apps_page.contains("See your email address"));
        let grant = grant_of(&app, &email, &client).await.unwrap();
        assert_eq!(grant.identity.as_str(), "openid profile email");
        assert_eq!(permissions_of(&grant.permissions), ["deals.read"]);
    }

    async fn without_openid_there_is_no_id_token_and_userinfo_refuses(app) {
        let client = register_app(&app, true, "deals.read").await;
        let (browser, _) = Browser::user(&app).await;
        let url = browser
            .authorize_all(&oidc_request(&client, "deals.read email", None))
            .await;
        let tokens = exchange(&app, &client, &url).await;
        assert!(tokens.get("id_token").is_none(), "{tokens}");
        let access = tokens["access_token"].as_str().unwrap();
        let why = refused(
            userinfo(&app, Method::GET, Some(access)).await,
            StatusCode::FORBIDDEN,
            "insufficient_scope",
        )
        .await;
        assert!(why.contains("openid"), "{why}");
        let again = refresh(&app, &client, tokens["refresh_token"].as_str().unwrap()).await;
        assert!(again.get("id_token").is_none());

        // No token, a malformed one, a forged one, an API key, a revoked session's token.
        let why = refused(userinfo(&app, Method::GET, None).await, StatusCode::UNAUTHORIZED, "invalid_token").await;
        assert!(why.contains("Authorization"), "{why}");
        refused(userinfo(&app, Method::POST, Some("not-a-token")).await, StatusCode::UNAUTHORIZED, "invalid_token").await;
        let mut forged = access.to_owned();
        forged.pop();
        forged.push(if access.ends_with('A') { 'B' } else { 'A' });
        refused(userinfo(&app, Method::GET, Some(&forged)).await, StatusCode::UNAUTHORIZED, "invalid_token").await;
        let (_, key) = app.account_with_key().await;
        let response = app.get("/auth/userinfo", &key).send().await.unwrap();
        refused(response, StatusCode::FORBIDDEN, "insufficient_scope").await;
        let minted = app.mint_token(&key, &["deals.read"]).await;
        refused(userinfo(&app, Method::GET, Some(&minted)).await, StatusCode::FORBIDDEN, "insufficient_scope").await;

        let url = browser
            .authorize_all(&oidc_request(&client, "openid", Some("n")))
            .await;
        let tokens = exchange(&app, &client, &url).await;
        let access = tokens["access_token"].as_str().unwrap();
        assert_eq!(userinfo(&app, Method::GET, Some(access)).await.status(), StatusCode::OK);
        let revoked = app
            .client
            .post(app.url("/auth/revoke"))
            .form(&[
                ("token", tokens["refresh_token"].as_str().unwrap()),
                ("client_id", client.client_id.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), StatusCode::OK);
        let why = refused(userinfo(&app, Method::GET, Some(access)).await, StatusCode::UNAUTHORIZED, "invalid_token").await;
        assert!(why.contains("revoked"), "{why}");

        // A nonce too long to keep is refused to the application, naming it.
        let long = "n".repeat(513);
        let response = browser.get(&format!("/auth?{}", oidc_request(&client, "openid", Some(&long)))).await;
        let pairs = query_of(&redirect_to_client(&response));
        assert_eq!(param(&pairs, "error"), Some("invalid_request"));
        assert!(param(&pairs, "error_description").unwrap().contains("nonce"));
        // OpenID Connect's requests name their response type; the guide's need not.
        let without = query(&[
            ("client_id", client.client_id.as_str()),
            ("redirect_uri", CALLBACK),
            ("scope", "openid"),
            ("state", "st8"),
        ]);
        let response = browser.get(&format!("/auth?{without}")).await;
        let pairs = query_of(&redirect_to_client(&response));
        assert_eq!(param(&pairs, "error"), Some("invalid_request"));
        assert!(param(&pairs, "error_description").unwrap().contains("response_type"));
        // Request objects are refused, never read nor ignored.
        for (name, code) in [("request", "request_not_supported"), ("request_uri", "request_uri_not_supported")] {
            let q = format!("{}&{name}=eyJhbGciOiJub25lIn0.e30.", oidc_request(&client, "openid", None));
            let response = browser.get(&format!("/auth?{q}")).await;
            let pairs = query_of(&redirect_to_client(&response));
            assert_eq!(param(&pairs, "error"), Some(code));
        }
        // OpenID Connect's scopes Keyfob does not serve are ignored, not granted.
        // (The grant covers `openid` already: no page.)
        let response = browser
            .get(&format!("/auth?{}", oidc_request(&client, "openid address phone offline_access", None)))
            .await;
        let tokens = exchange(&app, &client, &redirect_to_client(&response)).await;
        assert_eq!(tokens["scope"], "openid");
        // An identity scope spelled otherwise is no scope.
        let response = browser.get(&format!("/auth?{}", oidc_request(&client, "OpenID", None))).await;
        let pairs = query_of(&redirect_to_client(&response));
        assert_eq!(param(&pairs, "error"), Some("invalid_scope"));
    }

    async fn the_fragment_flow_keeps_its_answer_and_opens_userinfo(app) {
        let client = register_app(&app, true, "deals.read").await;
        let (browser, email) = Browser::user(&app).await;
        let pairs = token_session(&browser, &client, "openid,email,deals.read").await;
        assert!(param(&pairs, "id_token").is_none(), "no id_token in the fragment");
        assert_eq!(param(&pairs, "scope"), Some("openid email deals.read"));
        let access = param(&pairs, "access_token").unwrap();
        let body: Value = userinfo(&app, Method::GET, Some(access)).await.json().await.unwrap();
        assert_eq!(body["email"], email.as_str());
    }
}
