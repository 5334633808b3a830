//! User sessions at the token endpoint: code exchange with PKCE, refresh rotation with its grace
//! window and reuse detection, revocation, introspection, metadata, CORS, and resources seen
//! through a session. Codes are made here directly in the store, as the consent page makes them.

use std::time::{Duration, Instant};

use keyfob::services::apps::{CreatedApp, NewApp};
use keyfob_domain::oauth::s256;
use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_store::{AccountId, AuthCodeRow, GrantId, GrantRow, Timestamp, UserId};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

const REDIRECT: &str = "https://app.example.com/callback";
const ORIGIN: &str = "https://app.example.com";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

struct Setup {
    key: String,
    app: CreatedApp,
    user_id: String,
    grant: GrantRow,
}

impl Setup {
    fn client_id(&self) -> &str {
        &self.app.app.client_id
    }

    fn secret(&self) -> &str {
        self.app.client_secret.as_deref().unwrap()
    }
}

async fn setup(app: &TestApp, public: bool) -> Setup {
    setup_with_limits(app, public, None, None).await
}

/// An app whose sessions end after `idle` seconds unused or `max_age` seconds in all.
async fn setup_with_limits(
    app: &TestApp,
    public: bool,
    idle: Option<i64>,
    max_age: Option<i64>,
) -> Setup {
    let (account, key) = app.account_with_key().await;
    let created = keyfob::services::apps::create_app(
        app.state.store.as_ref(),
        &AccountId::from(account.as_str()),
        NewApp {
            name: "Dealer portal".into(),
            redirect_uris: vec![REDIRECT.into()],
            post_logout_redirect_uris: vec![],
            origins: vec![ORIGIN.into()],
            public,
            max_permissions: "deals.read,deals.write".into(),
            refresh_idle_secs: idle,
            refresh_max_age_secs: max_age,
            allow_fragment: false,
        },
    )
    .await
    .unwrap();
    let user = add_user(app).await;
    let grant = grant(app, &user, &created.app.client_id, &account).await;
    Setup {
        key,
        app: created,
        user_id: user,
        grant,
    }
}

async fn add_user(app: &TestApp) -> String {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    keyfob::services::users::create_user(
        app.state.store.as_ref(),
        &app.state.passwords,
        &email,
        PASSWORD.into(),
    )
    .await
    .unwrap()
    .id
    .into_string()
}

async fn grant(app: &TestApp, user: &str, client_id: &str, account: &str) -> GrantRow {
    let now = Timestamp::now();
    app.state
        .store
        .upsert_grant(&GrantRow {
            id: GrantId::from(uuid::Uuid::now_v7().to_string()),
            user_id: user.into(),
            client_id: client_id.into(),
            account_id: account.into(),
            permissions: keyfob_store::JsonList::from_json(r#"["deals.read","deals.write"]"#)
                .unwrap(),
            identity: Default::default(),
            created_at: now,
            updated_at: now,
            revoked_at: None,
        })
        .await
        .unwrap()
}

/// A code as the consent page issues it.
async fn code_for(
    app: &TestApp,
    s: &Setup,
    user: &str,
    grant: &GrantRow,
    challenge: Option<String>,
    ttl_ms: i64,
) -> String {
    let code = random_token();
    let now = Timestamp::now();
    app.state
        .store
        .insert_auth_code(&AuthCodeRow {
            code_hash: hash_secret(&code),
            client_id: s.client_id().into(),
            user_id: user.into(),
            grant_id: grant.id.clone(),
            redirect_uri: REDIRECT.into(),
            permissions: keyfob_store::JsonList::from_json(r#"["deals.read","deals.write"]"#)
                .unwrap(),
            identity: Default::default(),
            nonce: None,
            auth_time: None,
            code_challenge: challenge,
            family_id: None,
            created_at: now,
            expires_at: Timestamp::from_unix_ms(now.unix_ms() + ttl_ms),
            used_at: None,
        })
        .await
        .unwrap();
    code
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

async fn oauth_error(response: Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    body["error_description"].as_str().unwrap().to_owned()
}

async fn exchange(app: &TestApp, s: &Setup, code: &str, verifier: Option<&str>) -> Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", s.client_id()),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    if s.app.client_secret.is_some() {
        form.push(("client_secret", s.secret()));
    }
    post_form(app, "/auth/token", &form, None).await
}

async fn tokens(response: Response) -> Value {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

async fn refresh(app: &TestApp, s: &Setup, refresh_token: &str) -> Response {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", s.client_id()),
    ];
    if s.app.client_secret.is_some() {
        form.push(("client_secret", s.secret()));
    }
    post_form(app, "/auth/token", &form, None).await
}

async fn refused_within_2s(app: &TestApp, token: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if app.whoami_status(token).await == 401 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("token still accepted after 2 s");
}

/// A session started through a code exchange.
async fn session(app: &TestApp, s: &Setup) -> Value {
    let code = code_for(app, s, &s.user_id, &s.grant, None, 60_000).await;
    tokens(exchange(app, s, &code, None).await).await
}

both_backends! {
    async fn idle_and_absolute_session_limits_end_sessions(app) {
        // Introspection applies the token endpoint's rule: active exactly while a refresh works.
        let active = |key: String, token: String| {
            let request = app.request(Method::POST, "/auth/introspect", Some(&key)).form(&[("token", token)]);
            async move {
                let body: Value = request.send().await.unwrap().json().await.unwrap();
                body["active"].as_bool().unwrap()
            }
        };
        // Idle limit: each use restarts the clock; a longer pause ends the session.
        let s = setup_with_limits(&app, false, Some(1), None).await;
        let mut current = session(&app, &s).await;
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert!(active(s.key.clone(), current["refresh_token"].as_str().unwrap().into()).await);
            current = tokens(refresh(&app, &s, current["refresh_token"].as_str().unwrap()).await).await;
        }
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let idle = current["refresh_token"].as_str().unwrap().to_owned();
        assert!(!active(s.key.clone(), idle.clone()).await, "past the idle limit: inactive");
        let message = oauth_error(refresh(&app, &s, &idle).await, 400, "invalid_grant").await;
        assert!(message.contains("idle"), "{message}");
        assert!(!active(s.key.clone(), idle).await);

        // Absolute limit: however much it is used, the session ends on time.
        let s = setup_with_limits(&app, false, None, Some(2)).await;
        let mut current = session(&app, &s).await;
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            current = tokens(refresh(&app, &s, current["refresh_token"].as_str().unwrap()).await).await;
        }
        assert!(active(s.key.clone(), current["refresh_token"].as_str().unwrap().into()).await);
        tokio::time::sleep(Duration::from_millis(800)).await;
        let old = current["refresh_token"].as_str().unwrap().to_owned();
        assert!(!active(s.key.clone(), old.clone()).await, "past the maximum age: inactive");
        let message = oauth_error(refresh(&app, &s, &old).await, 400, "invalid_grant").await;
        assert!(message.contains("maximum age"), "{message}");

        // A revoked grant: the refresh is refused, and introspection says so too.
        let s = setup(&app, false).await;
        let current = session(&app, &s).await;
        let token = current["refresh_token"].as_str().unwrap().to_owned();
        assert!(active(s.key.clone(), token.clone()).await);
        assert!(app.state.store.revoke_grant(&s.grant.id, Timestamp::now()).await.unwrap());
        assert!(!active(s.key.clone(), token.clone()).await, "grant revoked: inactive");
        oauth_error(refresh(&app, &s, &token).await, 400, "invalid_grant").await;
    }

    async fn a_batch_of_rotations_lets_each_token_be_used_once(app) {
        let s = setup(&app, false).await;
        let store = app.state.store.as_ref();
        let (one, two) = (session(&app, &s).await, session(&app, &s).await);
        let (one, two) = (one["refresh_token"].as_str().unwrap(), two["refresh_token"].as_str().unwrap());
        let family_one = store.find_refresh(&hash_secret(one)).await.unwrap().unwrap().family_id;
        let family_two = store.find_refresh(&hash_secret(two)).await.unwrap().unwrap().family_id;
        let rotation = |old: &str, family_id: &str, seal: &str| {
            let now = Timestamp::now();
            keyfob_store::Rotation {
                old_hash: hash_secret(old),
                next: keyfob_store::RefreshRow {
                    token_hash: hash_secret(&random_token()),
                    family_id: family_id.into(),
                    permissions: keyfob_store::JsonList::from_json(r#"["deals.read"]"#).unwrap(),
                    created_at: now,
                    used_at: None,
                    next_sealed: None,
                },
                next_sealed: seal.into(),
                now,
                touch_family: true,
            }
        };
        let (first, second, other) = (rotation(one, &family_one, "a"), rotation(one, &family_one, "b"), rotation(two, &family_two, "c"));
        let first_next = first.next.token_hash.clone();
        let second_next = second.next.token_hash.clone();
        let won = store.rotate_refreshes(&[first, second, other.clone()]).await.unwrap();
        assert_eq!(won, [true, false, true], "a token's first use in the batch wins, a repeat loses");
        let used = store.find_refresh(&hash_secret(one)).await.unwrap().unwrap();
        assert_eq!(used.next_sealed.as_deref(), Some("a"));
        assert!(used.used_at.is_some());
        assert!(store.find_refresh(&first_next).await.unwrap().is_some());
        assert!(store.find_refresh(&second_next).await.unwrap().is_none(), "the loser wrote nothing");
        // Used before: loses in a later batch too, and nothing changes.
        let again = store.rotate_refreshes(&[other]).await.unwrap();
        assert_eq!(again, [false]);
        assert_eq!(store.rotate_refreshes(&[]).await.unwrap(), Vec::<bool>::new());
    }

    async fn a_batch_of_session_starts_uses_each_code_once(app) {
        let s = setup(&app, false).await;
        let store = app.state.store.as_ref();
        let code = code_for(&app, &s, &s.user_id, &s.grant, None, 60_000).await;
        let start = |code: Option<&str>| {
            let now = Timestamp::now();
            let id = uuid::Uuid::now_v7().to_string();
            keyfob_store::NewFamily {
                family: keyfob_store::FamilyRow {
                    id: id.clone().into(),
                    user_id: UserId::from(s.user_id.clone()),
                    client_id: s.client_id().into(),
                    grant_id: s.grant.id.clone(),
                    identity: Default::default(),
                    auth_time: None,
                    created_at: now,
                    last_used_at: now,
                    revoked_at: None,
                },
                first: keyfob_store::RefreshRow {
                    token_hash: hash_secret(&random_token()),
                    family_id: id.into(),
                    permissions: keyfob_store::JsonList::from_json(r#"["deals.read"]"#).unwrap(),
                    created_at: now,
                    used_at: None,
                    next_sealed: None,
                },
                code: code.map(|c| (hash_secret(c), now)),
            }
        };
        let items = [start(Some(&code)), start(Some(&code)), start(None)];
        let started = store.start_families(&items).await.unwrap();
        assert_eq!(started, [true, false, true]);
        for (item, started) in items.iter().zip(started) {
            assert_eq!(store.find_family(&item.family.id).await.unwrap().is_some(), started);
            assert_eq!(store.find_refresh(&item.first.token_hash).await.unwrap().is_some(), started);
        }
        let used = store.find_auth_code(&hash_secret(&code)).await.unwrap().unwrap();
        assert_eq!(used.family_id.as_deref(), Some(items[0].family.id.as_str()));
        assert!(used.used_at.is_some());
        // A used code loses in a later batch too.
        assert_eq!(store.start_families(&[start(Some(&code))]).await.unwrap(), [false]);
        assert_eq!(store.start_families(&[]).await.unwrap(), Vec::<bool>::new());
    }

    async fn a_code_exchanged_twice_at_once_starts_one_session(app) {
        let s = setup(&app, false).await;
        let code = code_for(&app, &s, &s.user_id, &s.grant, None, 60_000).await;
        let (a, b) = tokio::join!(exchange(&app, &s, &code, None), exchange(&app, &s, &code, None));
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400]);
    }

    async fn code_exchange_issues_a_session(app) {
        let s = setup(&app, false).await;
        let code = code_for(&app, &s, &s.user_id, &s.grant, None, 60_000).await;
        // HTTP Basic client authentication.
        let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT)];
        let body = tokens(post_form(&app, "/auth/token", &form, Some((s.client_id(), s.secret()))).await).await;
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 600);
        assert_eq!(body["scope"], "deals.read deals.write");
        assert_eq!(body["token"], body["access_token"]);
        assert!(body["expires"].is_string());
        assert!(body["refresh_token"].as_str().unwrap().starts_with("kfr_"));
        let access = body["access_token"].as_str().unwrap();
        let who: Value = app.get("/auth/whoami", access).send().await.unwrap().json().await.unwrap();
        assert_eq!(who["kind"], "jwt");
        assert_eq!(who["client_id"], s.client_id());
        assert_eq!(who["subject"], s.user_id.as_str());
        assert_eq!(who["permissions"], json!(["deals.read", "deals.write"]));
        // The refresh token is stored only as a hash.
        let refresh_token = body["refresh_token"].as_str().unwrap();
        assert!(app.state.store.find_refresh(&hash_secret(refresh_token)).await.unwrap().is_some());
        // JSON bodies work too.
        let code = code_for(&app, &s, &s.user_id, &s.grant, None, 60_000).await;
        let response = app.client.post(app.url("/auth/token")).json(&json!({
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": s.client_id(), "client_secret": s.secret(),
        })).send().await.unwrap();
        tokens(response).await;
    }

    async fn pkce_is_enforced(app) {
        let s = setup(&app, true).await;
        let challenge = Some(s256(VERIFIER));
        let code = code_for(&app, &s, &s.user_id, &s.grant, challenge.clone(), 60_000).await;
        let message = oauth_error(exchange(&app, &s, &code, Some("x".repeat(43).as_str())).await, 400, "invalid_grant").await;
        assert!(message.contains("code_verifier"), "{message}");
        // A failed attempt does not burn the code.
        tokens(exchange(&app, &s, &code, Some(VERIFIER)).await).await;

        let code = code_for(&app, &s, &s.user_id, &s.grant, challenge.clone(), 60_000).await;
        let message = oauth_error(exchange(&app, &s, &code, None).await, 400, "invalid_grant").await;
        assert!(message.contains("code_verifier"), "{message}");
        let code = code_for(&app, &s, &s.user_id, &s.grant, None, 60_000).await;
        let message = oauth_error(exchange(&app, &s, &code, None).await, 400, "invalid_grant").await;
        assert!(message.contains("PKCE"), "{message}");
        let code = code_for(&app, &s, &s.user_id, &s.grant, None, 60_000).await;
        oauth_error(exchange(&app, &s, &code, Some(VERIFIER)).await, 400, "invalid_grant").await;
    }

    async fn codes_are_single_use_short_lived_and_bound(app) {
        let s = setup(&app, false).await;
        // Replayed: refused, and the session the first exchange started is ended.
        let code = code_for(&app, &s, &s.user_id, &s.grant, None, 60_000).await;
        let first = tokens(exchange(&app, &s, &code, None).await).await;
        let message = oauth_error(exchange(&app, &s, &code, None).await, 400, "invalid_grant").await;
        assert!(message.contains("already used"), "{message}");
        refused_within_2s(&app, first["access_token"].as_str().unwrap()).await;
        oauth_error(refresh(&app, &s, first["refresh_token"].as_str().unwrap()).await, 400, "invalid_grant").await;

        // Expired.
        let code = code_for(&app, &s, &s.user_id, &s.grant, None, -1).await;
        let message = oauth_error(exchange(&app, &s, &code, None).await, 400, "invalid_grant").await;
        assert!(message.contains("expired"), "{message}");

        // Wrong or missing redirect URI.
        let code = code_for(&app, &s, &s.user_id, &s.grant, None, 60_000).await;
        let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", "https://app.example.com/callback/"), ("client_id", s.client_id()), ("client_secret", s.secret())];
        let message = oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "invalid_grant").await;
        assert!(message.contains("redirect_uri"), "{message}");
        let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("client_id", s.client_id()), ("client_secret", s.secret())];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "invalid_request").await;

        // Another client's code.
        let other = setup(&app, false).await;
        let code = code_for(&app, &s, &s.user_id, &s.grant, None, 60_000).await;
        let message = oauth_error(exchange(&app, &other, &code, None).await, 400, "invalid_grant").await;
        assert!(message.contains("another client"), "{message}");
        // ...which the right client can still use.
        tokens(exchange(&app, &s, &code, None).await).await;

        // Unknown code.
        oauth_error(exchange(&app, &s, "nope", None).await, 400, "invalid_grant").await;
    }

    async fn client_authentication_and_bad_requests(app) {
        let s = setup(&app, false).await;
        let code = code_for(&app, &s, &s.user_id, &s.grant, None, 60_000).await;
        let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT)];
        let response = post_form(&app, "/auth/token", &form, Some((s.client_id(), "kfs_wrong"))).await;
        assert_eq!(response.headers()["www-authenticate"], "Basic realm=\"keyfob\"");
        oauth_error(response, 401, "invalid_client").await;
        let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT), ("client_id", s.client_id())];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 401, "invalid_client").await;
        let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT), ("client_id", "app_unknown"), ("client_secret", "x")];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 401, "invalid_client").await;
        let form = [("grant_type", "password"), ("client_id", s.client_id()), ("client_secret", s.secret())];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "unsupported_grant_type").await;
        let form = [("client_id", s.client_id()), ("client_secret", s.secret())];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "invalid_request").await;
        let form = [("grant_type", "refresh_token"), ("client_id", s.client_id()), ("client_secret", s.secret())];
        let message = oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "invalid_request").await;
        assert!(message.contains("refresh_token"), "{message}");
        let response = app.client.post(app.url("/auth/token")).header("content-type", "text/plain").body("grant_type=x").send().await.unwrap();
        oauth_error(response, 400, "invalid_request").await;
        let form = [("grant_type", "authorization_code"), ("bogus", "1"), ("client_id", s.client_id())];
        oauth_error(post_form(&app, "/auth/token", &form, None).await, 400, "invalid_request").await;
        // The code survived all of that.
        tokens(exchange(&app, &s, &code, None).await).await;
    }

    async fn refresh_rotates_with_a_grace_window(app) {
        let s = setup(&app, true).await;
        let challenge = Some(s256(VERIFIER));
        let code = code_for(&app, &s, &s.user_id, &s.grant, challenge, 60_000).await;
        let first = tokens(exchange(&app, &s, &code, Some(VERIFIER)).await).await;
        let r1 = first["refresh_token"].as_str().unwrap().to_owned();
        let second = tokens(refresh(&app, &s, &r1).await).await;
        let r2 = second["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(r1, r2);
        assert_ne!(first["access_token"], second["access_token"]);
        assert_eq!(app.whoami_status(second["access_token"].as_str().unwrap()).await, 200);
        // A retry of r1 within the grace window gets the very same pair.
        let retry = tokens(refresh(&app, &s, &r1).await).await;
        assert_eq!(retry["refresh_token"], second["refresh_token"]);
        assert_eq!(retry["access_token"], second["access_token"]);
        // Many concurrent uses of one token (several tabs) all get one and the same pair.
        let form = [("grant_type", "refresh_token"), ("refresh_token", r2.as_str()), ("client_id", s.client_id())];
        let racers: Vec<_> = (0..8)
            .map(|_| tokio::spawn(app.client.post(app.url("/auth/token")).form(&form).send()))
            .collect();
        let mut pairs = Vec::new();
        for racer in racers {
            pairs.push(tokens(racer.await.unwrap().unwrap()).await);
        }
        assert!(pairs.iter().all(|p| p["refresh_token"] == pairs[0]["refresh_token"]));
        assert!(pairs.iter().all(|p| p["access_token"] == pairs[0]["access_token"]));
        let r3 = pairs[0]["refresh_token"].as_str().unwrap().to_owned();
        tokens(refresh(&app, &s, &r3).await).await;
    }

    async fn unknown_and_foreign_refresh_tokens_are_refused(app) {
        let s = setup(&app, false).await;
        let other = setup(&app, false).await;
        let first = session(&app, &s).await;
        let r1 = first["refresh_token"].as_str().unwrap();
        oauth_error(refresh(&app, &s, "kfr_unknown").await, 400, "invalid_grant").await;
        let message = oauth_error(refresh(&app, &other, r1).await, 400, "invalid_grant").await;
        assert!(message.contains("another client"), "{message}");
        // Still usable by its own client.
        tokens(refresh(&app, &s, r1).await).await;
    }

    async fn revocation_ends_the_session(app) {
        let s = setup(&app, false).await;
        let a = session(&app, &s).await;
        let b = session(&app, &s).await;
        // Another client cannot revoke it; unknown tokens answer 200.
        let other = setup(&app, false).await;
        let form = [("token", a["refresh_token"].as_str().unwrap()), ("client_id", other.client_id()), ("client_secret", other.secret())];
        assert_eq!(post_form(&app, "/auth/revoke", &form, None).await.status(), 200);
        assert_eq!(app.whoami_status(a["access_token"].as_str().unwrap()).await, 200);
        let form = [("token", "kfr_nothing"), ("client_id", s.client_id()), ("client_secret", s.secret())];
        assert_eq!(post_form(&app, "/auth/revoke", &form, None).await.status(), 200);
        let form = [("token", "x"), ("client_id", s.client_id()), ("client_secret", "wrong")];
        oauth_error(post_form(&app, "/auth/revoke", &form, None).await, 401, "invalid_client").await;
        let form = [("client_id", s.client_id()), ("client_secret", s.secret())];
        oauth_error(post_form(&app, "/auth/revoke", &form, None).await, 400, "invalid_request").await;

        let form = [("token", a["refresh_token"].as_str().unwrap()), ("token_type_hint", "refresh_token"), ("client_id", s.client_id()), ("client_secret", s.secret())];
        assert_eq!(post_form(&app, "/auth/revoke", &form, None).await.status(), 200);
        refused_within_2s(&app, a["access_token"].as_str().unwrap()).await;
        oauth_error(refresh(&app, &s, a["refresh_token"].as_str().unwrap()).await, 400, "invalid_grant").await;
        // Revoking by access token ends that session too; the other session lives on.
        let form = [("token", b["access_token"].as_str().unwrap()), ("client_id", s.client_id()), ("client_secret", s.secret())];
        let c = session(&app, &s).await;
        assert_eq!(post_form(&app, "/auth/revoke", &form, None).await.status(), 200);
        refused_within_2s(&app, b["access_token"].as_str().unwrap()).await;
        assert_eq!(app.whoami_status(c["access_token"].as_str().unwrap()).await, 200);
        // Each session the app ended is on the account's audit log, once, with the app as actor.
        let ended = audit_until(&app, &s.key, "action=session.ended", |d| d.len() >= 2).await;
        assert_eq!(ended.len(), 2, "{ended:?}");
        assert!(ended.iter().all(|e| e["actor"]["kind"] == "app" && e["actor"]["id"] == s.client_id()));
        assert!(ended.iter().all(|e| e["detail"]["user"] == s.user_id.as_str()));
    }

    async fn introspection(app) {
        let s = setup(&app, false).await;
        let live = session(&app, &s).await;
        let introspect = |credential: String, token: String| {
            let request = app.request(Method::POST, "/auth/introspect", Some(&credential)).form(&[("token", token)]);
            async move { request.send().await.unwrap() }
        };
        let access = live["access_token"].as_str().unwrap().to_owned();
        let body: Value = introspect(s.key.clone(), access.clone()).await.json().await.unwrap();
        assert_eq!(body["active"], true);
        assert_eq!(body["client_id"], s.client_id());
        assert_eq!(body["sub"], s.user_id.as_str());
        assert_eq!(body["scope"], "deals.read deals.write");
        assert_eq!(body["token_type"], "access_token");
        assert!(body["exp"].as_i64().unwrap() > 0);
        let body: Value = introspect(s.key.clone(), live["refresh_token"].as_str().unwrap().to_owned()).await.json().await.unwrap();
        assert_eq!(body["active"], true);
        assert_eq!(body["token_type"], "refresh_token");
        // Minted tokens of the account too.
        let minted = app.mint_token(&s.key, &["deals.read"]).await;
        let body: Value = introspect(s.key.clone(), minted).await.json().await.unwrap();
        assert_eq!(body["active"], true);
        // Expired, garbage, other account's, revoked: inactive, and nothing else said.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let account = app.state.store.find_app(&s.client_id().into()).await.unwrap().unwrap().account_id;
        let expired = app.state.tokens.sign(&keyfob_domain::Claims {
            iss: app.state.tokens.issuer().into(), sub: "x".into(), aud: "keyfob".into(),
            iat: now - 7200, nbf: now - 7200, exp: now - 3600, jti: "old".into(),
            permissions: vec!["deals.read".into()], scope: None, account_id: account, client_id: None, sid: None, gty: None,
        }, Timestamp::now()).unwrap();
        for token in [expired, "garbage".to_owned(), "kfr_unknown".to_owned()] {
            let body: Value = introspect(s.key.clone(), token).await.json().await.unwrap();
            assert_eq!(body, json!({"active": false}));
        }
        let stranger = setup(&app, false).await;
        let body: Value = introspect(stranger.key.clone(), access.clone()).await.json().await.unwrap();
        assert_eq!(body, json!({"active": false}));
        let form = [("token", access.as_str()), ("client_id", s.client_id()), ("client_secret", s.secret())];
        assert_eq!(post_form(&app, "/auth/revoke", &form, None).await.status(), 200);
        refused_within_2s(&app, &access).await;
        let body: Value = introspect(s.key.clone(), access.clone()).await.json().await.unwrap();
        assert_eq!(body, json!({"active": false}));
        let body: Value = introspect(s.key.clone(), live["refresh_token"].as_str().unwrap().to_owned()).await.json().await.unwrap();
        assert_eq!(body, json!({"active": false}));
        // Only API keys may introspect.
        let other = session(&app, &s).await;
        let response = introspect(other["access_token"].as_str().unwrap().to_owned(), access.clone()).await;
        expect_error(response, 403, "forbidden").await;
        let response = app.request(Method::POST, "/auth/introspect", None).form(&[("token", access)]).send().await.unwrap();
        expect_error(response, 401, "unauthorized").await;
        let response = app.request(Method::POST, "/auth/introspect", Some(&s.key)).form(&[("nothing", "1")]).send().await.unwrap();
        oauth_error(response, 400, "invalid_request").await;
    }

    async fn session_tokens_see_only_their_users_records(app) {
        let s = setup(&app, false).await;
        let alice = session(&app, &s).await;
        let alice_token = alice["access_token"].as_str().unwrap();
        // Bob: another user of the same app.
        let bob_id = add_user(&app).await;
        let account = app.state.store.find_app(&s.client_id().into()).await.unwrap().unwrap().account_id;
        let bob_grant = grant(&app, &bob_id, s.client_id(), &account).await;
        let code = code_for(&app, &s, &bob_id, &bob_grant, None, 60_000).await;
        let bob = tokens(exchange(&app, &s, &code, None).await).await;
        let bob_token = bob["access_token"].as_str().unwrap();
        // Carol: another user, through another app of the same account.
        let created = keyfob::services::apps::create_app(
            app.state.store.as_ref(),
            &account,
            NewApp {
                name: "Other".into(),
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
        let carol_id = add_user(&app).await;
        let other_app = Setup {
            key: s.key.clone(),
            grant: grant(&app, &carol_id, &created.app.client_id, &account).await,
            user_id: carol_id.clone(),
            app: created,
        };
        let code = code_for(&app, &other_app, &carol_id, &other_app.grant, None, 60_000).await;
        let carol = tokens(exchange(&app, &other_app, &code, None).await).await;
        let carol_token = carol["access_token"].as_str().unwrap();
        // Alice through that other app: still Alice, so she sees her records there too.
        let alice_grant = grant(&app, &s.user_id, other_app.client_id(), &account).await;
        let code = code_for(&app, &other_app, &s.user_id, &alice_grant, None, 60_000).await;
        let alice_elsewhere = tokens(exchange(&app, &other_app, &code, None).await).await;
        let alice_elsewhere = alice_elsewhere["access_token"].as_str().unwrap();

        let made: Value = app.request(Method::POST, "/api/deals", Some(alice_token)).json(&json!({"ssnLast4": "6789"})).send().await.unwrap().json().await.unwrap();
        let item = format!("/api/deals/{}", made["id"].as_str().unwrap());
        assert_eq!(app.get(&item, alice_token).send().await.unwrap().status(), 200);
        for stranger in [bob_token, carol_token] {
            let list: Value = app.get("/api/deals", stranger).send().await.unwrap().json().await.unwrap();
            assert_eq!(list["totalDocs"], 0);
            expect_error(app.get(&item, stranger).send().await.unwrap(), 404, "not_found").await;
            let response = app.request(Method::PATCH, &item, Some(stranger)).json(&json!({"x": 1})).send().await.unwrap();
            expect_error(response, 404, "not_found").await;
            let response = app.request(Method::DELETE, &item, Some(stranger)).send().await.unwrap();
            expect_error(response, 404, "not_found").await;
        }
        // The account's API key sees every user's records.
        let list: Value = app.get("/api/deals", &s.key).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["totalDocs"], 1);
        for alice in [alice_token, alice_elsewhere] {
            let list: Value = app.get("/api/deals", alice).send().await.unwrap().json().await.unwrap();
            assert_eq!(list["totalDocs"], 1);
        }
    }

    async fn session_access_tokens_are_rfc_9068_access_tokens(app) {
        let s = setup(&app, false).await;
        let pair = session(&app, &s).await;
        let refreshed = tokens(refresh(&app, &s, pair["refresh_token"].as_str().unwrap()).await).await;
        for answer in [&pair, &refreshed] {
            let access = answer["access_token"].as_str().unwrap();
            let claims = crate::oidc::validate_as_resource_server(&app, access).await;
            assert_eq!(claims["_header"]["typ"], "at+jwt");
            assert_eq!(claims["client_id"], s.client_id());
            assert_eq!(claims["sub"], s.user_id.as_str());
            assert_eq!(claims["scope"], "deals.read deals.write");
            assert_eq!(claims["scope"], answer["scope"]);
            assert!(claims["sid"].is_string());
            // Keyfob takes it, and names the application.
            let who: Value = app.get("/auth/whoami", access).send().await.unwrap().json().await.unwrap();
            assert_eq!(who["client_id"], s.client_id());
        }
    }

    async fn metadata_and_cors(app) {
        let _s = setup(&app, true).await;
        let meta: Value = app.client.get(app.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
        let issuer = app.state.tokens.issuer();
        assert_eq!(meta["issuer"], issuer);
        assert_eq!(meta["token_endpoint"], format!("{issuer}/auth/token"));
        assert_eq!(meta["authorization_endpoint"], format!("{issuer}/auth"));
        assert_eq!(meta["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
        assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
        // The app's origin is known to this node within the sync interval.
        let mut allowed = None;
        for _ in 0..40 {
            let response = app.client.request(Method::OPTIONS, app.url("/auth/token"))
                .header("Origin", ORIGIN)
                .header("Access-Control-Request-Method", "POST")
                .header("Access-Control-Request-Headers", "content-type")
                .send().await.unwrap();
            allowed = response.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned());
            if allowed.is_some() { break; }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(allowed.as_deref(), Some(ORIGIN));
        for path in ["/api/deals", "/auth/revoke"] {
            let response = app.client.request(Method::OPTIONS, app.url(path))
                .header("Origin", ORIGIN)
                .header("Access-Control-Request-Method", "POST")
                .header("Access-Control-Request-Headers", "authorization,content-type")
                .send().await.unwrap();
            assert_eq!(response.headers()["access-control-allow-origin"], ORIGIN, "{path}");
        }
        for origin in ["https://evil.example.com", "https://app.example.com.evil.com", "http://app.example.com"] {
            let response = app.client.request(Method::OPTIONS, app.url("/api/deals"))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST")
                .send().await.unwrap();
            assert!(response.headers().get("access-control-allow-origin").is_none(), "{origin}");
        }
        // Not on endpoints meant for back ends.
        let response = app.client.get(app.url("/auth/whoami")).header("Origin", ORIGIN).send().await.unwrap();
        assert!(response.headers().get("access-control-allow-origin").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_after_the_grace_window_ends_only_that_family() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let mut config = test_config(&db);
    config.refresh_grace_secs = 1;
    let app = spawn_with(config, std::sync::Arc::new(db)).await;
    let s = setup(&app, false).await;
    let victim = session(&app, &s).await;
    let bystander = session(&app, &s).await;
    let r1 = victim["refresh_token"].as_str().unwrap().to_owned();
    let second = tokens(refresh(&app, &s, &r1).await).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let message = oauth_error(refresh(&app, &s, &r1).await, 400, "invalid_grant").await;
    assert!(message.contains("already used"), "{message}");
    // The whole family is ended: its newest refresh and access tokens too.
    oauth_error(
        refresh(&app, &s, second["refresh_token"].as_str().unwrap()).await,
        400,
        "invalid_grant",
    )
    .await;
    refused_within_2s(&app, second["access_token"].as_str().unwrap()).await;
    // The user's other session is untouched.
    assert_eq!(
        app.whoami_status(bystander["access_token"].as_str().unwrap())
            .await,
        200
    );
    tokens(refresh(&app, &s, bystander["refresh_token"].as_str().unwrap()).await).await;
    // The reuse is on the account's audit log.
    let events = audit_until(&app, &s.key, "action=refresh.reuse_detected", |d| {
        !d.is_empty()
    })
    .await;
    assert_eq!(events[0]["actor"]["kind"], "system");
}

both_backends! {
    async fn expired_codes_are_pruned(app) {
        let s = setup(&app, false).await;
        let stale = code_for(&app, &s, &s.user_id, &s.grant, None, -10_000).await;
        let fresh = code_for(&app, &s, &s.user_id, &s.grant, None, 60_000).await;
        app.state.store.prune_expired(Timestamp::now() - Duration::from_secs(5)).await.unwrap();
        assert!(app.state.store.find_auth_code(&hash_secret(&stale)).await.unwrap().is_none());
        assert!(app.state.store.find_auth_code(&hash_secret(&fresh)).await.unwrap().is_some());
    }
}
