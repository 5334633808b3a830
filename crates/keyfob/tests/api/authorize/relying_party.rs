//! A stock OpenID Connect relying party, the `openidconnect` crate, signs a user in with Keyfob
//! using nothing but the issuer's address: discovery, the authorization code flow with PKCE and a
//! nonce, the id_token validated by the crate (signature against the JWKS, `iss`, `aud`, `exp`,
//! nonce, `at_hash`), userinfo, a refresh whose new id_token validates too, and RP-initiated
//! logout with the id_token as the hint. The browser part
//! (login and consent) is driven as in the parent module. Once with the default EdDSA keys (the
//! relying party told to accept them, as it must be for anything but RS256) and once with RS256,
//! which the crate accepts with its defaults.

use std::sync::Arc;

use keyfob::config::SigningAlg;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenVerifier, CoreJwsSigningAlgorithm,
    CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, Scope, TokenResponse,
};

use super::*;

/// Where the relying party asks to be sent after logging out.
const LOGGED_OUT: &str = "https://client.example.com/logged-out";

async fn a_stock_relying_party_signs_a_user_in(app: TestApp, alg: SigningAlg) {
    let account = app
        .create_account(&format!("{}@example.com", uuid::Uuid::new_v4().simple()))
        .await;
    let created = services::apps::create_app(
        app.state.store.as_ref(),
        &account,
        NewApp {
            name: "Stock RP".into(),
            redirect_uris: vec![CALLBACK.to_owned()],
            origins: vec![],
            public: false,
            max_permissions: "deals.read".into(),
            refresh_idle_secs: None,
            refresh_max_age_secs: None,
            allow_fragment: false,
            post_logout_redirect_uris: vec![LOGGED_OUT.to_owned()],
        },
    )
    .await
    .expect("app registered");
    let (browser, email) = Browser::user(&app).await;
    let user_id = app
        .state
        .store
        .find_user_by_email(&email)
        .await
        .unwrap()
        .unwrap()
        .id;

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let issuer = IssuerUrl::new(app.state.tokens.issuer().to_owned()).unwrap();
    let metadata = ProviderMetadataWithLogout::discover_async(issuer, &http)
        .await
        .expect("discovery");
    let end_session = metadata
        .additional_metadata()
        .end_session_endpoint
        .clone()
        .expect("an end_session_endpoint");
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(created.app.client_id.to_string()),
        Some(ClientSecret::new(created.client_secret.clone().unwrap())),
    )
    .set_redirect_uri(RedirectUrl::new(CALLBACK.to_owned()).unwrap());
    let verifier = || -> CoreIdTokenVerifier<'_> {
        match alg {
            // The crate's default: RS256 only.
            SigningAlg::Rs256 => client.id_token_verifier(),
            SigningAlg::EdDsa => client
                .id_token_verifier()
                .set_allowed_algs([CoreJwsSigningAlgorithm::EdDsa]),
            SigningAlg::Es256 => client
                .id_token_verifier()
                .set_allowed_algs([CoreJwsSigningAlgorithm::EcdsaP256Sha256]),
        }
    };

    // The authorization request, as the crate builds it.
    let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("deals.read".into()))
        .set_pkce_challenge(challenge)
        .url();
    assert!(
        url.as_str()
            .starts_with(&format!("{}/auth?", app.state.tokens.issuer()))
    );
    let consent = browser.consent_page(url.query().unwrap()).await;
    assert!(consent.contains("Know who you are"));
    let response = browser.answer(&consent, &["deals.read"], "allow").await;
    let back = redirect_to_client(&response);
    let pairs = query_of(&back);
    assert_eq!(param(&pairs, "state"), Some(csrf.secret().as_str()));
    let code = param(&pairs, "code").expect("a code").to_owned();

    // The exchange, with client_secret_basic (the crate's default) and the PKCE verifier.
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(pkce_verifier)
        .request_async(&http)
        .await
        .expect("the code exchange");
    let scopes: Vec<String> = tokens
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(scopes, ["openid", "email", "deals.read"]);
    let id_token = tokens.id_token().expect("an id_token");
    let claims = id_token
        .claims(&verifier(), &nonce)
        .expect("the id_token validates");
    assert_eq!(claims.subject().as_str(), user_id.as_str());
    assert_eq!(claims.email().map(|e| e.as_str()), Some(email.as_str()));
    assert_eq!(claims.email_verified(), Some(false));
    assert!(claims.auth_time().is_some());
    let at_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier()).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&at_hash));
    // Another nonce is refused: the id_token belongs to this request.
    assert!(
        id_token
            .claims(&verifier(), &Nonce::new("another".into()))
            .is_err()
    );

    // UserInfo, as the crate asks for it.
    let info: CoreUserInfoClaims = client
        .user_info(tokens.access_token().to_owned(), None)
        .unwrap()
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(info.subject().as_str(), user_id.as_str());
    assert_eq!(info.email().map(|e| e.as_str()), Some(email.as_str()));

    // A refresh: a new pair and a new id_token for the same user.
    let refreshed = client
        .exchange_refresh_token(tokens.refresh_token().unwrap())
        .unwrap()
        .request_async(&http)
        .await
        .expect("the refresh");
    let renewed = refreshed.id_token().expect("a refresh's id_token");
    let renewed_claims = renewed
        .claims(&verifier(), |nonce: Option<&Nonce>| match nonce {
            None => Ok(()),
            Some(_) => Err("a refresh's id_token carries no nonce".to_owned()),
        })
        .expect("the refreshed id_token validates");
    assert_eq!(renewed_claims.subject(), claims.subject());
    assert_eq!(renewed_claims.auth_time(), claims.auth_time());
    assert_ne!(
        refreshed.refresh_token().unwrap().secret(),
        tokens.refresh_token().unwrap().secret()
    );

    // RP-initiated logout, as the crate builds the request: the hint names the user logged in,
    // so Keyfob logs them out at once and sends the browser back with the state.
    let logout = LogoutRequest::from(end_session)
        .set_id_token_hint(id_token)
        .set_client_id(ClientId::new(created.app.client_id.to_string()))
        .set_post_logout_redirect_uri(PostLogoutRedirectUrl::new(LOGGED_OUT.to_owned()).unwrap())
        .set_state(CsrfToken::new("bye".to_owned()))
        .http_get_url();
    assert!(browser.signed_in().await);
    let response = browser
        .get(&format!("{}?{}", logout.path(), logout.query().unwrap()))
        .await;
    assert!(response.status().is_redirection(), "{}", response.status());
    let to = Url::parse(location(&response)).unwrap();
    assert!(to.as_str().starts_with(LOGGED_OUT), "{to}");
    assert_eq!(param(&query_of(&to), "state"), Some("bye"));
    assert!(!browser.signed_in().await, "the Keyfob login has ended");
}

both_backends! {
    async fn a_stock_relying_party_signs_a_user_in_with_eddsa(app) {
        a_stock_relying_party_signs_a_user_in(app, SigningAlg::EdDsa).await;
    }
}

async fn with_rs256(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let mut config = test_config(&db);
    config.signing_alg = SigningAlg::Rs256;
    let app = spawn_with(config, Arc::new(db)).await;
    a_stock_relying_party_signs_a_user_in(app, SigningAlg::Rs256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_relying_party_signs_a_user_in_with_rs256_on_sqlite() {
    with_rs256(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_relying_party_signs_a_user_in_with_rs256_on_postgres() {
    with_rs256(Backend::Postgres).await;
}
