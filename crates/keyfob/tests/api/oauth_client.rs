//! A stock OAuth 2 client library (the `oauth2` crate), with no Keyfob-specific code, exchanges a
//! code with PKCE and refreshes against Keyfob, using only the metadata document's URLs.

use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_domain::time::Timestamp;
use keyfob_store::{AccountId, AuthCodeRow, GrantId, GrantRow};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl,
    RefreshToken, Scope, TokenResponse, TokenUrl,
};
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

const REDIRECT: &str = "http://localhost:3000/callback";

both_backends! {
    async fn a_stock_client_completes_the_flow(app) {
        let (account, _key) = app.account_with_key().await;
        let created = keyfob::services::apps::create_app(
            app.state.store.as_ref(),
            &AccountId::from(account.as_str()),
            keyfob::services::apps::NewApp {
                name: "Stock client".into(),
                redirect_uris: vec![REDIRECT.into()],
                post_logout_redirect_uris: vec![],
                origins: vec![],
                public: false,
                max_permissions: "deals.read,deals.write".into(),
                refresh_idle_secs: None,
                refresh_max_age_secs: None,
                allow_fragment: false,
            },
        )
        .await
        .unwrap();
        let meta: Value = app.client.get(app.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
        let client = BasicClient::new(ClientId::new(created.app.client_id.to_string()))
            .set_client_secret(ClientSecret::new(created.client_secret.clone().unwrap()))
            .set_auth_uri(AuthUrl::new(meta["authorization_endpoint"].as_str().unwrap().into()).unwrap())
            .set_token_uri(TokenUrl::new(meta["token_endpoint"].as_str().unwrap().into()).unwrap())
                .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (authorize_url, _state) = client
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new("deals.read".into()))
            .set_pkce_challenge(challenge.clone())
            .url();
        assert!(authorize_url.as_str().starts_with(&format!("{}?", app.url("/auth"))));
        let query: Vec<(String, String)> = authorize_url.query_pairs().into_owned().collect();
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(param("code_challenge_method"), "S256");

        // The user consents (as the consent page does): a grant and a code bound to the challenge.
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let user = keyfob::services::users::create_user(app.state.store.as_ref(), &app.state.passwords, &email, PASSWORD.into()).await.unwrap();
        let now = Timestamp::now();
        let grant = app.state.store.upsert_grant(&GrantRow {
            id: GrantId::from(uuid::Uuid::now_v7().to_string()), user_id: user.id.clone(), client_id: created.app.client_id.clone(),
            account_id: AccountId::from(account.clone()), permissions: keyfob_store::JsonList::from_json(r#"["deals.read"]"#).unwrap(), identity: Default::default(), created_at: now, updated_at: now, revoked_at: None,
        }).await.unwrap();
        let code = random_token();
        app.state.store.insert_auth_code(&AuthCodeRow {
            code_hash: hash_secret(&code), client_id: created.app.client_id.clone(), user_id: user.id.clone(),
            grant_id: grant.id, redirect_uri: REDIRECT.into(), permissions: keyfob_store::JsonList::from_json(r#"["deals.read"]"#).unwrap(),
            identity: Default::default(), nonce: None, auth_time: None,
            code_challenge: Some(param("code_challenge")), family_id: None, created_at: now, expires_at: now + std::time::Duration::from_secs(60), used_at: None,
        }).await.unwrap();

        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await
            .expect("code exchange");
        let access = tokens.access_token().secret().clone();
        assert_eq!(tokens.expires_in().unwrap().as_secs(), 600);
        assert_eq!(tokens.scopes().unwrap()[0].as_str(), "deals.read");
        let who: Value = app.get("/auth/whoami", &access).send().await.unwrap().json().await.unwrap();
        assert_eq!(who["subject"], user.id.as_str());

        let refreshed = client
            .exchange_refresh_token(&RefreshToken::new(tokens.refresh_token().unwrap().secret().clone()))
            .request_async(&http)
            .await
            .expect("refresh");
        let new_refresh = refreshed.refresh_token().unwrap().clone();
        assert_ne!(new_refresh.secret(), tokens.refresh_token().unwrap().secret());

        // The library only revokes over https (it refuses this loopback URL), so send the same
        // RFC 7009 request it would: a form with HTTP Basic client authentication.
        let revoked = http
            .post(meta["revocation_endpoint"].as_str().unwrap())
            .basic_auth(&created.app.client_id, created.client_secret.as_deref())
            .form(&[("token", new_refresh.secret().as_str()), ("token_type_hint", "refresh_token")])
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200);
        let err = client.exchange_refresh_token(&new_refresh).request_async(&http).await.unwrap_err();
        assert!(format!("{err:?}").contains("invalid_grant"), "{err:?}");
    }
}
