//! The `client_credentials` grant: a confidential application gets a token for itself (machine to
//! machine), within its maximum permissions, with no refresh token; the token works on the API
//! within those permissions, is introspected and revoked like the others, and every grant and
//! every failed client authentication is audited. Refusals store nothing.

use std::time::{Duration, Instant};

use base64::Engine;
use keyfob::services::apps::{CreatedApp, NewApp};
use keyfob_store::AccountId;
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

struct Setup {
    account: AccountId,
    key: String,
    app: CreatedApp,
}

impl Setup {
    fn client_id(&self) -> &str {
        &self.app.app.client_id
    }

    fn secret(&self) -> &str {
        self.app.client_secret.as_deref().unwrap()
    }
}

async fn register(app: &TestApp, account: &AccountId, public: bool) -> CreatedApp {
    keyfob::services::apps::create_app(
        app.state.store.as_ref(),
        account,
        NewApp {
            name: "Billing worker".into(),
            redirect_uris: vec!["https://worker.example.com/cb".into()],
            post_logout_redirect_uris: vec![],
            origins: vec![],
            public,
            max_permissions: "deals.read,deals.write,cars.read".into(),
            refresh_idle_secs: None,
            refresh_max_age_secs: None,
            allow_fragment: false,
        },
    )
    .await
    .unwrap()
}

async fn setup(app: &TestApp) -> Setup {
    let (account, key) = app.account_with_key().await;
    let account = AccountId::from(account.as_str());
    let created = register(app, &account, false).await;
    Setup {
        account,
        key,
        app: created,
    }
}

async fn post_form(
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Response {
    let mut request = app.client.post(app.url(path)).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    request.send().await.unwrap()
}

/// `grant_type=client_credentials` with the secret in the body, and `scope` when given.
async fn grant(app: &TestApp, s: &Setup, scope: Option<&str>) -> Response {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", s.client_id()),
        ("client_secret", s.secret()),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    post_form(app, "/auth/token", &form, None).await
}

async fn granted(response: Response) -> Value {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

async fn oauth_error(response: Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    body["error_description"].as_str().unwrap().to_owned()
}

fn part(token: &str, n: usize) -> Value {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(n).unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn tokens_of(app: &TestApp, account: &AccountId) -> usize {
    app.state
        .store
        .list_tokens(account, 1000)
        .await
        .unwrap()
        .len()
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

both_backends! {
    async fn a_confidential_app_gets_a_token_for_itself(app) {
        let s = setup(&app).await;
        // No scope: the app's maximum permissions; the secret in the body.
        let body = granted(grant(&app, &s, None).await).await;
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 600);
        assert_eq!(body["scope"], "deals.read deals.write cars.read");
        assert!(body.get("refresh_token").is_none(), "{body}");
        assert_eq!(body["token"], body["access_token"]);
        assert!(body["expires"].as_str().unwrap().ends_with('Z'));
        let token = body["access_token"].as_str().unwrap();
        // An RFC 9068 access token whose subject is the application.
        assert_eq!(part(token, 0)["typ"], "at+jwt");
        let claims = part(token, 1);
        assert_eq!(claims["sub"], s.client_id());
        assert_eq!(claims["client_id"], s.client_id());
        assert_eq!(claims["gty"], "client_credentials");
        assert_eq!(claims["scope"], "deals.read deals.write cars.read");
        assert_eq!(claims["permissions"], json!(["deals.read", "deals.write", "cars.read"]));
        assert_eq!(claims["account_id"], s.account.as_str());
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
        assert!(claims.get("sid").is_none());
        // Who is it: the app, not an API key.
        let who: Value = app.get("/auth/whoami", token).send().await.unwrap().json().await.unwrap();
        assert_eq!(who["kind"], "jwt");
        assert_eq!(who["subject"], s.client_id());
        assert_eq!(who["client_id"], s.client_id());
        assert!(who.get("key_id").is_none());
        assert_eq!(who["jti"], claims["jti"]);

        // HTTP Basic, a scope within the maximum: exactly that.
        let response = post_form(&app, "/auth/token", &[("grant_type", "client_credentials"), ("scope", "deals.read")], Some((s.client_id(), s.secret()))).await;
        let body = granted(response).await;
        assert_eq!(body["scope"], "deals.read");
        assert_eq!(part(body["access_token"].as_str().unwrap(), 1)["permissions"], json!(["deals.read"]));
        // Comma-separated, as `permissions` are elsewhere, and an empty scope means the maximum.
        assert_eq!(granted(grant(&app, &s, Some("cars.read,deals.read")).await).await["scope"], "cars.read deals.read");
        assert_eq!(granted(grant(&app, &s, Some("")).await).await["scope"], "deals.read deals.write cars.read");
        // Each grant is recorded, as a minted token is.
        assert_eq!(tokens_of(&app, &s.account).await, 4);
    }

    async fn the_token_works_on_the_api_within_its_permissions_only(app) {
        let s = setup(&app).await;
        let reader = granted(grant(&app, &s, Some("deals.read")).await).await["access_token"].as_str().unwrap().to_owned();
        let writer = granted(grant(&app, &s, Some("deals.write deals.read")).await).await["access_token"].as_str().unwrap().to_owned();
        // The account's records: an app acts for itself, not for a user, so it sees them all.
        let made = app.request(Method::POST, "/api/deals", Some(&s.key)).json(&json!({"name": "by the key"})).send().await.unwrap();
        assert_eq!(made.status(), 201);
        let made = app.request(Method::POST, "/api/deals", Some(&writer)).json(&json!({"name": "by the app"})).send().await.unwrap();
        assert_eq!(made.status(), 201);
        let list: Value = app.get("/api/deals", &reader).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["totalDocs"], 2, "{list}");
        // Outside its permissions: 403 naming the permission.
        let refused = app.request(Method::POST, "/api/deals", Some(&reader)).json(&json!({"name": "x"})).send().await.unwrap();
        let message = expect_error(refused, 403, "forbidden").await;
        assert!(message.contains("deals.write"), "{message}");
        expect_error(app.get("/api/cars", &writer).send().await.unwrap(), 403, "forbidden").await;
        // Never the account's own capabilities, nor minting.
        expect_error(app.get("/api/audit", &writer).send().await.unwrap(), 403, "forbidden").await;
        let mint = app.mint(&writer, json!({"permissions": ["deals.read"]})).await;
        assert_eq!(mint.status(), 403);
        // Another account's data stays out of reach.
        let (_, other_key) = app.account_with_key().await;
        let theirs = app.request(Method::POST, "/api/deals", Some(&other_key)).json(&json!({"name": "theirs"})).send().await.unwrap();
        assert_eq!(theirs.status(), 201);
        let list: Value = app.get("/api/deals", &reader).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["totalDocs"], 2, "{list}");
    }

    async fn scopes_beyond_the_maximum_are_refused_by_name(app) {
        let s = setup(&app).await;
        let message = oauth_error(grant(&app, &s, Some("deals.read deals.delete")).await, 400, "invalid_scope").await;
        assert!(message.contains("deals.delete"), "{message}");
        let message = oauth_error(grant(&app, &s, Some("deals.read cars.write *.read")).await, 400, "invalid_scope").await;
        assert!(message.contains("cars.write") && message.contains("*.read"), "{message}");
        assert!(!message.contains("deals.read"), "{message}");
        // Reserved capabilities are never within an app's maximum.
        let message = oauth_error(grant(&app, &s, Some("sensitive.read")).await, 400, "invalid_scope").await;
        assert!(message.contains("sensitive.read"), "{message}");
        // Not permissions at all (OpenID scopes are not served by this grant).
        oauth_error(grant(&app, &s, Some("openid")).await, 400, "invalid_scope").await;
        assert_eq!(tokens_of(&app, &s.account).await, 0);
    }

    async fn clients_that_cannot_prove_who_they_are_get_nothing(app) {
        let s = setup(&app).await;
        let public = register(&app, &s.account, true).await;
        let cc = ("grant_type", "client_credentials");
        // Wrong secret, in the body and with Basic (which answers a Basic challenge).
        let form = [cc, ("client_id", s.client_id()), ("client_secret", "kfs_wrong")];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 401, "invalid_client").await;
        let response = post_form(&app, "/auth/token", &[cc], Some((s.client_id(), "kfs_wrong"))).await;
        assert_eq!(response.headers()["www-authenticate"], "Basic realm=\"keyfob\"");
        oauth_error(response, 401, "invalid_client").await;
        // A confidential app without its secret.
        let form = [cc, ("client_id", s.client_id())];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 401, "invalid_client").await;
        // A public app has no secret: it cannot use this grant.
        let form = [cc, ("client_id", public.app.client_id.as_str())];
        let message = oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "unauthorized_client").await;
        assert!(message.contains("public"), "{message}");
        // A public app that makes up a secret fails to authenticate.
        let form = [cc, ("client_id", public.app.client_id.as_str()), ("client_secret", "kfs_made_up")];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 401, "invalid_client").await;
        // Unknown client.
        let form = [cc, ("client_id", "app_unknown"), ("client_secret", "kfs_x")];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 401, "invalid_client").await;
        // Missing and duplicate parameters, both methods at once, parameters of other grants.
        oauth_error(post_form(&app, "/auth/token", &[cc], None).await, 400, "invalid_request").await;
        let form = [("client_id", s.client_id()), ("client_secret", s.secret())];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "invalid_request").await;
        let form = [cc, ("client_id", s.client_id()), ("client_secret", s.secret()), ("scope", "deals.read"), ("scope", "cars.read")];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "invalid_request").await;
        let form = [cc, cc, ("client_id", s.client_id()), ("client_secret", s.secret())];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "invalid_request").await;
        let form = [cc, ("client_secret", s.secret())];
        oauth_error(post_form(&app, "/auth/token", &form, Some((s.client_id(), s.secret()))).await, 400, "invalid_request").await;
        let form = [cc, ("client_id", s.client_id()), ("client_secret", s.secret()), ("refresh_token", "kfr_x")];
        let message = oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "invalid_request").await;
        assert!(message.contains("refresh_token"), "{message}");
        let form = [cc, ("client_id", s.client_id()), ("client_secret", s.secret()), ("bogus", "1")];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "invalid_request").await;

        // Nothing was stored, and no token was issued; the failed authentications as the app
        // were audited (as an unauthenticated client's, the app their target).
        assert_eq!(tokens_of(&app, &s.account).await, 0);
        let failed = audit_until(&app, &s.key, "action=app.auth_failed", |d| d.len() >= 4).await;
        assert!(failed.iter().all(|e| e["actor"]["kind"] == "anonymous"), "{failed:?}");
        assert!(has_event(&failed, "app.auth_failed", Some(s.client_id())));
        assert!(has_event(&failed, "app.auth_failed", Some(public.app.client_id.as_str())));
        let minted = audit_until(&app, &s.key, "action=token.minted", |_| true).await;
        assert!(minted.is_empty(), "{minted:?}");
        // And the app still works.
        granted(grant(&app, &s, None).await).await;
    }

    async fn each_grant_is_audited_with_the_app_as_actor(app) {
        let s = setup(&app).await;
        let body = granted(grant(&app, &s, Some("deals.read")).await).await;
        let jti = decode_jti(body["access_token"].as_str().unwrap());
        let events = audit_until(&app, &s.key, "action=token.minted", |d| !d.is_empty()).await;
        let event = events.iter().find(|e| e["target"] == jti.as_str()).expect("the grant's event");
        assert_eq!(event["actor"]["kind"], "app");
        assert_eq!(event["actor"]["id"], s.client_id());
        assert_eq!(event["detail"]["grant_type"], "client_credentials");
        assert_eq!(event["detail"]["permissions"], json!(["deals.read"]));
        // Listed with the account's tokens, named by the app.
        let row = app.state.store.list_tokens(&s.account, 10).await.unwrap().pop().unwrap();
        assert_eq!(row.jti.as_str(), jti);
        assert_eq!(row.subject, s.client_id());
        assert_eq!(row.api_key_id, None);
    }

    async fn the_token_is_introspected_and_revoked_by_its_app(app) {
        let s = setup(&app).await;
        let token = granted(grant(&app, &s, Some("deals.read")).await).await["access_token"].as_str().unwrap().to_owned();
        let seen = introspect(&app, &s.key, &token).await;
        assert_eq!(seen["active"], true);
        assert_eq!(seen["client_id"], s.client_id());
        assert_eq!(seen["sub"], s.client_id());
        assert_eq!(seen["scope"], "deals.read");
        assert_eq!(seen["token_type"], "access_token");
        assert!(seen.get("sid").is_none());
        // Another account's key sees nothing.
        let (_, stranger) = app.account_with_key().await;
        assert_eq!(introspect(&app, &stranger, &token).await, json!({"active": false}));

        // Another app of the same account cannot revoke it (RFC 7009 answers 200 all the same).
        let other = register(&app, &s.account, false).await;
        let form = [("token", token.as_str()), ("client_id", other.app.client_id.as_str()), ("client_secret", other.client_secret.as_deref().unwrap())];
        assert_eq!(post_form(&app, "/auth/revoke", &form, None).await.status(), 200);
        assert_eq!(app.whoami_status(&token).await, 200);
        // Its own app can.
        let response = post_form(&app, "/auth/revoke", &[("token", token.as_str())], Some((s.client_id(), s.secret()))).await;
        assert_eq!(response.status(), 200);
        let start = Instant::now();
        while app.whoami_status(&token).await != 401 {
            assert!(start.elapsed() < Duration::from_secs(2), "the revoked token still works");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(introspect(&app, &s.key, &token).await["active"], false);
        let jti = decode_jti(&token);
        let events = audit_until(&app, &s.key, "action=token.revoked", |d| !d.is_empty()).await;
        let event = events.iter().find(|e| e["target"] == jti.as_str()).expect("the revocation's event");
        assert_eq!(event["actor"]["kind"], "app");
        // Revoking again is fine; the app's next token works.
        let response = post_form(&app, "/auth/revoke", &[("token", token.as_str())], Some((s.client_id(), s.secret()))).await;
        assert_eq!(response.status(), 200);
        let next = granted(grant(&app, &s, None).await).await["access_token"].as_str().unwrap().to_owned();
        assert_eq!(app.whoami_status(&next).await, 200);
    }

    async fn a_stock_client_gets_a_token_both_ways(app) {
        let s = setup(&app).await;
        let meta: Value = app.public_json("/.well-known/openid-configuration").await;
        assert!(meta["grant_types_supported"].as_array().unwrap().contains(&json!("client_credentials")));
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        for auth in [AuthType::BasicAuth, AuthType::RequestBody] {
            let client = BasicClient::new(ClientId::new(s.client_id().into()))
                .set_client_secret(ClientSecret::new(s.secret().into()))
                .set_auth_type(auth.clone())
                .set_token_uri(TokenUrl::new(meta["token_endpoint"].as_str().unwrap().into()).unwrap());
            let tokens = client
                .exchange_client_credentials()
                .add_scope(Scope::new("deals.read".into()))
                .request_async(&http)
                .await
                .unwrap_or_else(|e| panic!("{auth:?}: {e:?}"));
            assert!(tokens.refresh_token().is_none());
            assert_eq!(tokens.expires_in().unwrap().as_secs(), 600);
            assert_eq!(tokens.scopes().unwrap()[0].as_str(), "deals.read");
            let access = tokens.access_token().secret();
            assert_eq!(app.get("/api/deals", access).send().await.unwrap().status(), 200);
            // No scope asked: the app's maximum.
            let tokens = client.exchange_client_credentials().request_async(&http).await.unwrap();
            assert_eq!(tokens.scopes().unwrap().len(), 3);
        }
    }
}
