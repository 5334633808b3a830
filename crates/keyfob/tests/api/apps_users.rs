//! Applications and end users after creation: an owner edits, rotates, disables and deletes an
//! application on the dashboard (never another account's); the operator disables and deletes end
//! users; an owner removes a user from their own account only. Changes made where a node does not
//! run (the command line) reach every node through the change feed, and a second node on the same
//! database sees each within its sync interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyfob::audit::Actor;
use keyfob::services::apps::{CreatedApp, NewApp};
use keyfob::services::{Caller, Site};
use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_store::{AccountId, AuthCodeRow, GrantId, GrantRow, Timestamp, UserId};
use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::both_backends;
use crate::dashboard::{Browser, csrf_in, location};
use crate::helpers::*;

const REDIRECT: &str = "https://app.example.com/callback";
const MOVED: &str = "https://app.example.com/moved";

/// An owner signed in on the dashboard, with an API key (to read the audit log) and a
/// confidential application that one user gave a grant.
struct World {
    owner: Browser,
    account: AccountId,
    key: String,
    app: CreatedApp,
    user_id: UserId,
    user_email: String,
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
    let owner = Browser::signed_up(app).await;
    let account = app
        .state
        .store
        .find_owner_by_email(&owner.email)
        .await
        .unwrap()
        .unwrap()
        .account_id;
    let key = owner.create_key("audit").await;
    let created = register(app, &account).await;
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
    let grant = grant(app, &user_id, &created.app.client_id, &account).await;
    World {
        owner,
        account,
        key,
        app: created,
        user_id,
        user_email,
        grant,
    }
}

async fn register(app: &TestApp, account: &AccountId) -> CreatedApp {
    keyfob::services::apps::create_app(
        app.state.store.as_ref(),
        account,
        NewApp {
            name: "Dealer portal".into(),
            redirect_uris: vec![REDIRECT.into()],
            post_logout_redirect_uris: vec![],
            origins: vec!["https://app.example.com".into()],
            public: false,
            max_permissions: "deals.read,deals.write".into(),
            refresh_idle_secs: None,
            refresh_max_age_secs: None,
            allow_fragment: false,
        },
    )
    .await
    .unwrap()
}

async fn grant(app: &TestApp, user: &UserId, client_id: &str, account: &AccountId) -> GrantRow {
    let now = Timestamp::now();
    app.state
        .store
        .upsert_grant(&GrantRow {
            id: GrantId::from(uuid::Uuid::now_v7().to_string()),
            user_id: user.clone(),
            client_id: client_id.into(),
            account_id: account.clone(),
            permissions: keyfob_store::JsonList::from_json(r#"["deals.read"]"#).unwrap(),
            identity: Default::default(),
            created_at: now,
            updated_at: now,
            revoked_at: None,
        })
        .await
        .unwrap()
}

/// A session of the world's user, started by a code exchange as the consent page allows it.
async fn session(app: &TestApp, w: &World, grant: &GrantRow, secret: &str) -> Value {
    let code = random_token();
    let now = Timestamp::now();
    app.state
        .store
        .insert_auth_code(&AuthCodeRow {
            code_hash: hash_secret(&code),
            client_id: grant.client_id.clone(),
            user_id: w.user_id.clone(),
            grant_id: grant.id.clone(),
            redirect_uri: REDIRECT.into(),
            permissions: grant.permissions.clone(),
            identity: Default::default(),
            nonce: None,
            auth_time: None,
            code_challenge: None,
            family_id: None,
            created_at: now,
            expires_at: now + Duration::from_secs(60),
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
        grant.client_id.as_str(),
        secret,
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

async fn refresh_status(app: &TestApp, w: &World, tokens: &Value) -> u16 {
    let refresh = tokens["refresh_token"].as_str().unwrap();
    token(
        app,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        w.client_id(),
        w.secret(),
    )
    .await
    .status()
    .as_u16()
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

/// Polls `check` until it gives `want`, for at most two seconds (the revocation bound with a
/// 100 ms sync interval, with room to spare).
async fn within_2s<F, Fut>(what: &str, want: u16, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let start = Instant::now();
    loop {
        let got = check().await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{what}: still {got} after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `GET /auth` for an anonymous browser with this redirect URI: 400 when it is refused.
async fn authorize_status(app: &TestApp, client_id: &str, redirect_uri: &str) -> StatusCode {
    let query = serde_urlencoded::to_string([
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("permissions", "deals.read"),
    ])
    .unwrap();
    Browser::new(app)
        .get(&format!("/auth?{query}"))
        .await
        .status()
}

/// A second node on the world's database, issuing and accepting tokens under the first's name.
async fn second_node(app: &TestApp) -> TestApp {
    let mut config = test_config(&app.db);
    config.public_url = Some(app.base.clone());
    spawn_with(config, app.db.clone()).await
}

fn operator() -> Caller<'static> {
    Caller::new(Actor::operator(), "")
}

/// The edit form as the app page fills it, with `changes` applied.
async fn edit(w: &World, changes: &[(&str, &str)]) -> Response {
    let path = format!("/dashboard/apps/{}", w.client_id());
    let (status, html) = w.owner.page(&path).await;
    assert_eq!(status, StatusCode::OK);
    let mut form = vec![
        ("csrf".to_owned(), csrf_in(&html)),
        ("name".to_owned(), "Dealer portal".to_owned()),
        ("redirect_uris".to_owned(), REDIRECT.to_owned()),
        ("post_logout_redirect_uris".to_owned(), String::new()),
        ("origins".to_owned(), "https://app.example.com".to_owned()),
        (
            "max_permissions".to_owned(),
            "deals.read, deals.write".to_owned(),
        ),
        ("refresh_idle_secs".to_owned(), String::new()),
        ("refresh_max_age_secs".to_owned(), String::new()),
    ];
    for (name, value) in changes {
        match form.iter_mut().find(|(k, _)| k == name) {
            Some(field) => field.1 = (*value).to_owned(),
            None => form.push(((*name).to_owned(), (*value).to_owned())),
        }
    }
    w.owner
        .http
        .post(w.owner.url(&path))
        .form(&form)
        .send()
        .await
        .unwrap()
}

both_backends! {
    async fn an_edit_takes_effect_and_a_bad_one_changes_nothing(app) {
        let w = world(&app).await;
        assert_ne!(authorize_status(&app, w.client_id(), REDIRECT).await, StatusCode::BAD_REQUEST);
        assert_eq!(authorize_status(&app, w.client_id(), MOVED).await, StatusCode::BAD_REQUEST);

        let response = edit(&w, &[("redirect_uris", MOVED), ("name", "Portal 2"), ("refresh_idle_secs", "3600")]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), format!("/dashboard/apps/{}?done=updated", w.client_id()));
        // The old URI is refused exactly; the new one works.
        assert_eq!(authorize_status(&app, w.client_id(), REDIRECT).await, StatusCode::BAD_REQUEST);
        assert_ne!(authorize_status(&app, w.client_id(), MOVED).await, StatusCode::BAD_REQUEST);
        let after = app.state.store.find_app(&w.client_id().into()).await.unwrap().unwrap();
        assert_eq!(after.name, "Portal 2");
        assert_eq!(after.refresh_idle_secs, Some(3600));
        assert_eq!(after.client_secret_hash, w.app.app.client_secret_hash, "the secret is not edited");
        let (_, html) = w.owner.page(&format!("/dashboard/apps/{}?done=updated", w.client_id())).await;
        assert!(html.contains("settings are saved") && html.contains("moved"), "{html}");

        // Each bad edit is refused, names what is wrong, and changes nothing.
        for (field, value, says) in [
            ("redirect_uris", "http://evil.test/cb", "plain http"),
            ("redirect_uris", "", "redirect URI"),
            ("name", "   ", "name"),
            ("max_permissions", "", "permission"),
            ("max_permissions", "audit.read", "audit.read"),
            ("origins", "https://app.example.com/path", "origin"),
            ("post_logout_redirect_uris", "javascript:alert(1)", "post-logout"),
            ("refresh_idle_secs", "soon", "idle limit"),
            ("refresh_max_age_secs", "0", "maximum session age"),
        ] {
            let response = edit(&w, &[(field, value)]).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{field}={value}");
            let html = response.text().await.unwrap();
            assert!(html.to_lowercase().contains(&says.to_lowercase()), "{field}={value}: {html}");
            let now = app.state.store.find_app(&w.client_id().into()).await.unwrap().unwrap();
            assert_eq!(now, after, "{field}={value} changed the app");
        }

        let events = audit_until(&app, &w.key, "action=app.updated", |d| !d.is_empty()).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["target"], w.client_id());
        assert_eq!(events[0]["actor"]["kind"], "owner");
    }

    async fn an_owner_never_sees_or_changes_another_accounts_app(app) {
        let a = world(&app).await;
        let b = world(&app).await;
        let before = app.state.store.find_app(&a.client_id().into()).await.unwrap();
        let (status, _) = b.owner.page(&format!("/dashboard/apps/{}", a.client_id())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let csrf = b.owner.csrf("/dashboard/apps").await;
        for action in ["", "/rotate-secret", "/disable", "/enable", "/delete"] {
            let path = format!("/dashboard/apps/{}{action}", a.client_id());
            let response = b.owner.post(&path, &[("csrf", &csrf), ("name", "Mine now"), ("redirect_uris", MOVED), ("max_permissions", "deals.read"), ("overlap_secs", "0")]).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
        // Nor without the owner's own CSRF token.
        let path = format!("/dashboard/apps/{}/delete", a.client_id());
        let response = a.owner.post(&path, &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = a.owner.post(&path, &[]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.state.store.find_app(&a.client_id().into()).await.unwrap(), before);
        assert_eq!(client_credentials_status(&app, a.client_id(), a.secret()).await, 200);
        // And a user id with no grant here cannot be removed from B's account.
        let csrf = b.owner.csrf("/dashboard/grants").await;
        let response = b.owner.post(&format!("/dashboard/users/{}/remove", a.user_id), &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(app.state.store.find_grant_by_id(&a.grant.id).await.unwrap().unwrap().revoked_at.is_none());
    }

    async fn a_rotated_secret_works_alongside_the_old_one_for_the_overlap_only(app) {
        let w = world(&app).await;
        let old = w.secret().to_owned();
        let second = second_node(&app).await;
        let new = keyfob::services::apps::rotate_secret(
            Site::Cli(app.state.store.as_ref()),
            None,
            &w.client_id().into(),
            Duration::from_secs(2),
            &operator(),
        )
        .await
        .unwrap();
        assert_ne!(new, old);
        let rotated = Instant::now();
        for node in [&app, &second] {
            within_2s("the new secret", 200, || client_credentials_status(node, w.client_id(), &new)).await;
            assert_eq!(client_credentials_status(node, w.client_id(), &old).await, 200, "during the overlap");
        }
        tokio::time::sleep(Duration::from_millis(2_100).saturating_sub(rotated.elapsed())).await;
        for node in [&app, &second] {
            assert_eq!(client_credentials_status(node, w.client_id(), &old).await, 401, "after it");
            assert_eq!(client_credentials_status(node, w.client_id(), &new).await, 200);
        }
        // Only hashes are stored: neither secret is in the database.
        let text = raw_database_text(&app).await;
        assert!(!contains_bytes(&text, &new) && !contains_bytes(&text, &old));

        // On the dashboard, without an overlap: shown once, the previous one refused at once.
        let path = format!("/dashboard/apps/{}", w.client_id());
        let csrf = w.owner.csrf(&path).await;
        let response = w.owner.post(&format!("{path}/rotate-secret"), &[("csrf", &csrf), ("overlap_secs", "0")]).await;
        let html = w.owner.follow(response).await;
        assert!(html.contains("The old secret no longer works"), "{html}");
        let start = html.find("id=\"client-secret\"").unwrap();
        let start = start + html[start..].find('>').unwrap() + 1;
        let newest = html[start..start + html[start..].find('<').unwrap()].trim().to_owned();
        assert!(newest.starts_with("kfs_"), "{newest}");
        assert_eq!(client_credentials_status(&app, w.client_id(), &new).await, 401);
        assert_eq!(client_credentials_status(&app, w.client_id(), &newest).await, 200);
        // An overlap the form does not offer is refused, and nothing changes.
        let response = w.owner.post(&format!("{path}/rotate-secret"), &[("csrf", &csrf), ("overlap_secs", "99999999")]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(client_credentials_status(&app, w.client_id(), &newest).await, 200);
        // A public app has no secret to rotate.
        let public = keyfob::services::apps::create_app(app.state.store.as_ref(), &w.account, NewApp {
            name: "SPA".into(),
            redirect_uris: vec![REDIRECT.into()],
            public: true,
            max_permissions: "deals.read".into(),
            ..NewApp::default()
        }).await.unwrap();
        let response = w.owner.post(&format!("/dashboard/apps/{}/rotate-secret", public.app.client_id), &[("csrf", &csrf), ("overlap_secs", "0")]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.text().await.unwrap().contains("public application"));
        let events = audit_until(&app, &w.key, "action=app.secret_rotated", |d| d.len() == 2).await;
        for event in &events {
            let text = event.to_string();
            assert!(!text.contains("kfs_"), "no secret in the audit log: {text}");
        }
    }

    async fn a_disabled_app_is_refused_and_its_sessions_end_on_every_node(app) {
        let w = world(&app).await;
        let second = second_node(&app).await;
        let tokens = session(&app, &w, &w.grant, w.secret()).await;
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        // Both nodes know the app (cached) and accept the session.
        assert_eq!(second.whoami_status(&access).await, 200);
        assert_eq!(client_credentials_status(&second, w.client_id(), w.secret()).await, 200);

        // Disabled where no node runs (the command line): the second node learns of it from the
        // change feed.
        keyfob::services::apps::set_disabled(Site::Cli(app.state.store.as_ref()), None, &w.client_id().into(), true, &operator())
            .await
            .unwrap();
        for node in [&app, &second] {
            within_2s("the access token", 401, || node.whoami_status(&access)).await;
            within_2s("the app's own token", 401, || client_credentials_status(node, w.client_id(), w.secret())).await;
            assert_ne!(refresh_status(node, &w, &tokens).await, 200);
            assert_eq!(authorize_status(node, w.client_id(), REDIRECT).await, StatusCode::BAD_REQUEST);
        }
        let again = keyfob::services::apps::set_disabled(Site::Cli(app.state.store.as_ref()), None, &w.client_id().into(), true, &operator()).await;
        assert!(matches!(again, Err(keyfob::services::ServiceError::Invalid(_))));

        // Enabled on the dashboard: accepted again, the ended session stays ended.
        let path = format!("/dashboard/apps/{}", w.client_id());
        let (_, html) = w.owner.page(&path).await;
        assert!(html.contains("is disabled"), "{html}");
        let response = w.owner.post(&format!("{path}/enable"), &[("csrf", &csrf_in(&html))]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        for node in [&app, &second] {
            within_2s("enabled again", 200, || client_credentials_status(node, w.client_id(), w.secret())).await;
            assert_ne!(refresh_status(node, &w, &tokens).await, 200);
            assert_eq!(node.whoami_status(&access).await, 401);
        }
        // Disabled on the dashboard: this node refuses at once.
        let fresh = session(&app, &w, &w.grant, w.secret()).await;
        // The app's page links to a confirmation page (no script needed), whose form disables.
        let (status, html) = w.owner.page(&path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains(&format!("href=\"{path}/disable\"")), "{html}");
        let (status, html) = w.owner.page(&format!("{path}/disable")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Disable the application?") && html.contains(&format!("action=\"{path}/disable\"")), "{html}");
        let csrf = w.owner.csrf(&format!("{path}/disable")).await;
        let response = w.owner.post(&format!("{path}/disable"), &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(app.whoami_status(fresh["access_token"].as_str().unwrap()).await, 401);
        assert_eq!(client_credentials_status(&app, w.client_id(), w.secret()).await, 401);
        let events = audit_until(&app, &w.key, "action=app.disabled", |d| d.len() == 2).await;
        assert!(events.iter().any(|e| e["actor"]["kind"] == "operator"));
        assert!(events.iter().any(|e| e["actor"]["kind"] == "owner"));
        audit_until(&app, &w.key, "action=app.enabled", |d| d.len() == 1).await;
    }

    async fn a_deleted_app_and_its_grants_are_gone_for_good(app) {
        let w = world(&app).await;
        let second = second_node(&app).await;
        let tokens = session(&app, &w, &w.grant, w.secret()).await;
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        assert_eq!(second.whoami_status(&access).await, 200);
        let path = format!("/dashboard/apps/{}", w.client_id());
        let csrf = w.owner.csrf(&path).await;
        let response = w.owner.post(&format!("{path}/delete"), &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/apps?done=deleted");
        let (_, html) = w.owner.page("/dashboard/apps?done=deleted").await;
        assert!(html.contains("is deleted") && !html.contains(w.client_id()), "{html}");
        let (status, _) = w.owner.page(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, grants) = w.owner.page("/dashboard/grants").await;
        assert!(!grants.contains(&w.user_email), "its grants are not listed");
        for node in [&app, &second] {
            within_2s("the access token", 401, || node.whoami_status(&access)).await;
            within_2s("the app", 401, || client_credentials_status(node, w.client_id(), w.secret())).await;
            assert_ne!(refresh_status(node, &w, &tokens).await, 200);
        }
        // Nothing brings it back.
        let response = w.owner.post(&format!("{path}/enable"), &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let revived = keyfob::services::apps::set_disabled(Site::Cli(app.state.store.as_ref()), None, &w.client_id().into(), false, &operator()).await;
        assert!(matches!(revived, Err(keyfob::services::ServiceError::NotFound(_))));
        let events = audit_until(&app, &w.key, "action=app.deleted", |d| !d.is_empty()).await;
        assert_eq!(events[0]["target"], w.client_id());
    }

    async fn a_disabled_user_cannot_log_in_and_loses_every_session(app) {
        let w = world(&app).await;
        let second = second_node(&app).await;
        let tokens = session(&app, &w, &w.grant, w.secret()).await;
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        let browser = Browser::new(&app);
        assert_eq!(user_login(&browser, &w.user_email).await.status(), StatusCode::SEE_OTHER);
        assert_eq!(browser.get("/auth/grants").await.status(), StatusCode::OK);
        assert_eq!(second.whoami_status(&access).await, 200);

        keyfob::services::users::set_disabled(Site::Cli(app.state.store.as_ref()), &w.user_id, true, &operator())
            .await
            .unwrap();
        for node in [&app, &second] {
            within_2s("the access token", 401, || node.whoami_status(&access)).await;
            assert_ne!(refresh_status(node, &w, &tokens).await, 200);
        }
        // Their login on Keyfob's pages has ended, and a new one is refused, saying why.
        assert_eq!(browser.get("/auth/grants").await.status(), StatusCode::SEE_OTHER);
        let response = user_login(&Browser::new(&second), &w.user_email).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.text().await.unwrap().contains("This account is disabled"));
        // A wrong password still gets the usual answer: nothing is said to whoever does not
        // hold the password.
        let fresh = Browser::new(&app);
        let csrf = fresh.csrf("/auth/login").await;
        let response = fresh.post("/auth/login", &[("csrf", &csrf), ("email", &w.user_email), ("password", "not the password at all")]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(!response.text().await.unwrap().contains("This account is disabled"));

        keyfob::services::users::set_disabled(Site::Cli(app.state.store.as_ref()), &w.user_id, false, &operator())
            .await
            .unwrap();
        assert_eq!(user_login(&Browser::new(&app), &w.user_email).await.status(), StatusCode::SEE_OTHER);
        assert_ne!(refresh_status(&app, &w, &tokens).await, 200, "ended sessions stay ended");
    }

    async fn an_owner_removes_a_user_from_their_account_only(app) {
        let w = world(&app).await;
        // The same user in another account's application.
        let other = world(&app).await;
        let theirs = grant(&app, &w.user_id, other.client_id(), &other.account).await;
        let here = session(&app, &w, &w.grant, w.secret()).await;
        let there = session(&app, &w, &theirs, other.secret()).await;

        let (_, html) = w.owner.page("/dashboard/grants").await;
        assert!(html.contains(&format!("/dashboard/users/{}/remove", w.user_id)), "{html}");
        let response = w.owner.post(&format!("/dashboard/users/{}/remove", w.user_id), &[("csrf", &csrf_in(&html))]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/dashboard/grants?done=user-removed");
        assert_eq!(app.whoami_status(here["access_token"].as_str().unwrap()).await, 401);
        assert_ne!(refresh_status(&app, &w, &here).await, 200);
        assert!(app.state.store.find_grant_by_id(&w.grant.id).await.unwrap().unwrap().revoked_at.is_some());
        // The other account's grant and session, and the user themself, are untouched.
        assert!(app.state.store.find_grant_by_id(&theirs.id).await.unwrap().unwrap().revoked_at.is_none());
        assert_eq!(app.whoami_status(there["access_token"].as_str().unwrap()).await, 200);
        assert_eq!(refresh_status(&app, &other, &there).await, 200);
        let user = app.state.store.find_user(&w.user_id).await.unwrap().unwrap();
        assert!(user.disabled_at.is_none());
        // Again: nothing left to remove.
        let csrf = w.owner.csrf("/dashboard/grants").await;
        let response = w.owner.post(&format!("/dashboard/users/{}/remove", w.user_id), &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let events = audit_until(&app, &w.key, "action=user.removed_from_account", |d| !d.is_empty()).await;
        assert_eq!(events[0]["target"], w.user_id.as_str());
        let theirs_log = audit_until(&app, &other.key, "action=user.removed_from_account", |_| true).await;
        assert!(theirs_log.is_empty(), "not in the other account's log");
    }
}

/// Logs the end user in on Keyfob's own pages.
async fn user_login(browser: &Browser, email: &str) -> Response {
    let csrf = browser.csrf("/auth/login").await;
    browser
        .post(
            "/auth/login",
            &[("csrf", &csrf), ("email", email), ("password", PASSWORD)],
        )
        .await
}

/// `keyfob apps …` and `keyfob users …` as the operator runs them, against a running server.
async fn cli_apps_and_users(backend: Backend) {
    use crate::cli::{fails_with, keyfob, stdout};
    let Some(db) = fresh_db(backend).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let db = Arc::new(db);
    let app = spawn_with(test_config(&db), db.clone()).await;
    let w = world(&app).await;
    let account = w.account.to_string();

    let listing = stdout(&keyfob(&db, &["apps", "list", "--account", &account], None));
    let line = listing.lines().next().unwrap();
    assert!(
        line.starts_with(w.client_id()) && line.contains("confidential") && line.contains("active"),
        "{line}"
    );
    let shown: Value = serde_json::from_str(&stdout(&keyfob(
        &db,
        &["apps", "show", w.client_id()],
        None,
    )))
    .unwrap();
    assert_eq!(shown["redirect_uris"], serde_json::json!([REDIRECT]));
    assert!(!shown.to_string().contains("hash"), "{shown}");

    // Update: a list flag replaces the list; a bad value is refused by name and changes nothing.
    let updated: Value = serde_json::from_str(&stdout(&keyfob(
        &db,
        &[
            "apps",
            "update",
            w.client_id(),
            "--redirect-uri",
            MOVED,
            "--redirect-uri",
            REDIRECT,
            "--origin",
            "",
            "--allow-fragment",
            "true",
            "--refresh-idle-secs",
            "600",
        ],
        None,
    )))
    .unwrap();
    assert_eq!(
        updated["redirect_uris"],
        serde_json::json!([MOVED, REDIRECT])
    );
    assert_eq!(updated["origins"], serde_json::json!([]));
    assert_eq!(
        (
            updated["allow_fragment"].clone(),
            updated["refresh_idle_secs"].clone()
        ),
        (Value::Bool(true), Value::from(600))
    );
    let before = app
        .state
        .store
        .find_app(&w.client_id().into())
        .await
        .unwrap();
    fails_with(
        &keyfob(
            &db,
            &[
                "apps",
                "update",
                w.client_id(),
                "--redirect-uri",
                "http://evil.test/cb",
            ],
            None,
        ),
        "plain http",
    );
    fails_with(
        &keyfob(
            &db,
            &["apps", "update", w.client_id(), "--refresh-idle-secs=-5"],
            None,
        ),
        "idle limit",
    );
    fails_with(
        &keyfob(&db, &["apps", "update", "app_nope", "--name", "x"], None),
        "no application",
    );
    // The consent page's links: the web's schemes only, checked before anything changes.
    for (flag, bad, why) in [
        ("--logo-uri", "javascript://x%0aalert(1)", "`logo_uri`"),
        ("--homepage-uri", "http://evil.test/", "`homepage_uri`"),
        ("--policy-uri", "com.example.app://privacy", "`policy_uri`"),
    ] {
        fails_with(
            &keyfob(
                &db,
                &[
                    "apps",
                    "update",
                    w.client_id(),
                    "--name",
                    "Renamed",
                    flag,
                    bad,
                ],
                None,
            ),
            why,
        );
    }
    assert_eq!(
        app.state
            .store
            .find_app(&w.client_id().into())
            .await
            .unwrap(),
        before
    );
    let linked: Value = serde_json::from_str(&stdout(&keyfob(
        &db,
        &[
            "apps",
            "update",
            w.client_id(),
            "--logo-uri",
            "https://cdn.example.com/logo.png",
            "--policy-uri",
            "https://example.com/privacy",
        ],
        None,
    )))
    .unwrap();
    assert_eq!(linked["logo_uri"], "https://cdn.example.com/logo.png");
    assert_eq!(linked["policy_uri"], "https://example.com/privacy");
    assert!(linked["homepage_uri"].is_null());
    // One link given keeps the others; an empty one clears it.
    let linked: Value = serde_json::from_str(&stdout(&keyfob(
        &db,
        &["apps", "update", w.client_id(), "--policy-uri", ""],
        None,
    )))
    .unwrap();
    assert_eq!(linked["logo_uri"], "https://cdn.example.com/logo.png");
    assert!(linked["policy_uri"].is_null());
    within_2s("the new URI", 1, || async {
        u16::from(authorize_status(&app, w.client_id(), MOVED).await != StatusCode::BAD_REQUEST)
    })
    .await;

    // Rotate: the new secret printed once; the old one refused at once without an overlap.
    let rotated: Value = serde_json::from_str(&stdout(&keyfob(
        &db,
        &["apps", "rotate-secret", w.client_id(), "--overlap", "0"],
        None,
    )))
    .unwrap();
    let new = rotated["client_secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("kfs_") && rotated["previous_secret_expires_at"].is_null());
    within_2s("the old secret", 401, || {
        client_credentials_status(&app, w.client_id(), w.secret())
    })
    .await;
    assert_eq!(
        client_credentials_status(&app, w.client_id(), &new).await,
        200
    );
    let bad = keyfob(
        &db,
        &["apps", "rotate-secret", w.client_id(), "--overlap", "soon"],
        None,
    );
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("span"));

    // Disable, enable, delete.
    assert_eq!(
        stdout(&keyfob(&db, &["apps", "disable", w.client_id()], None)).trim(),
        format!("disabled {}", w.client_id())
    );
    within_2s("disabled", 401, || {
        client_credentials_status(&app, w.client_id(), &new)
    })
    .await;
    fails_with(
        &keyfob(&db, &["apps", "disable", w.client_id()], None),
        "already disabled",
    );
    assert!(
        stdout(&keyfob(&db, &["apps", "list", "--account", &account], None)).contains("disabled")
    );
    stdout(&keyfob(&db, &["apps", "enable", w.client_id()], None));
    within_2s("enabled", 200, || {
        client_credentials_status(&app, w.client_id(), &new)
    })
    .await;

    // Users: listed, shown, disabled, enabled, deleted with everything tied to them.
    let tokens = session(&app, &w, &w.grant, &new).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let fragment = &w.user_email[..10];
    let users = stdout(&keyfob(
        &db,
        &["users", "list", "--email-contains", fragment],
        None,
    ));
    assert_eq!(users.lines().count(), 1, "{users}");
    assert!(
        users.starts_with(w.user_id.as_str())
            && users.contains("unverified")
            && users.trim_end().ends_with("active")
    );
    assert_eq!(
        stdout(&keyfob(&db, &["users", "list", "--limit", "1"], None))
            .lines()
            .count(),
        1
    );
    assert!(
        !keyfob(&db, &["users", "list", "--limit", "0"], None)
            .status
            .success()
    );
    let shown: Value = serde_json::from_str(&stdout(&keyfob(
        &db,
        &["users", "show", &w.user_email],
        None,
    )))
    .unwrap();
    assert_eq!(shown["id"], w.user_id.as_str());
    assert_eq!(shown["grants"][0]["client_id"], w.client_id());
    assert_eq!(
        (shown["totp"].clone(), shown["passkeys"].clone()),
        (Value::Bool(false), Value::from(0))
    );
    stdout(&keyfob(
        &db,
        &["users", "disable", w.user_id.as_str()],
        None,
    ));
    within_2s("the user's token", 401, || app.whoami_status(&access)).await;
    fails_with(
        &keyfob(&db, &["users", "disable", w.user_id.as_str()], None),
        "already disabled",
    );
    stdout(&keyfob(&db, &["users", "enable", w.user_id.as_str()], None));
    let tokens = session(&app, &w, &w.grant, &new).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    app.state
        .store
        .insert_record(&keyfob_store::RecordRow {
            id: uuid::Uuid::now_v7().to_string().into(),
            account_id: w.account.clone(),
            resource: "deals".into(),
            owner_user_id: Some(w.user_id.clone()),
            doc: serde_json::json!({ "name": "theirs" }),
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        })
        .await
        .unwrap();
    assert_eq!(
        stdout(&keyfob(&db, &["users", "delete", &w.user_email], None)).trim(),
        format!("deleted {}", w.user_id)
    );
    within_2s("the deleted user's token", 401, || {
        app.whoami_status(&access)
    })
    .await;
    assert_ne!(refresh_status(&app, &w, &tokens).await, 200);
    for (table, column) in [
        ("users", "id"),
        ("grants", "user_id"),
        ("refresh_families", "user_id"),
        ("auth_codes", "user_id"),
        ("user_sessions", "user_id"),
        ("records", "owner_user_id"),
    ] {
        let left = raw_count(
            &db.url,
            &format!("{table} WHERE {column} = '{}'", w.user_id),
        )
        .await;
        assert_eq!(left, 0, "{table}");
    }
    fails_with(
        &keyfob(&db, &["users", "show", w.user_id.as_str()], None),
        "no user",
    );

    stdout(&keyfob(&db, &["apps", "delete", w.client_id()], None));
    within_2s("deleted", 401, || {
        client_credentials_status(&app, w.client_id(), &new)
    })
    .await;
    assert!(stdout(&keyfob(&db, &["apps", "list", "--account", &account], None)).is_empty());
    fails_with(
        &keyfob(&db, &["apps", "show", w.client_id()], None),
        "no application",
    );

    // Every change is audited with the operator as actor; no secret in any event.
    for action in [
        "app.updated",
        "app.secret_rotated",
        "app.disabled",
        "app.enabled",
        "app.deleted",
    ] {
        let events =
            audit_until(&app, &w.key, &format!("action={action}"), |d| !d.is_empty()).await;
        assert_eq!(events[0]["actor"]["kind"], "operator", "{action}");
        assert!(!events[0].to_string().contains(&new));
    }
    let user_events = raw_count(
        &db.url,
        "audit_events WHERE action IN ('user.disabled', 'user.enabled', 'user.deleted')",
    )
    .await;
    assert_eq!(user_events, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_apps_and_users_on_sqlite() {
    cli_apps_and_users(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_apps_and_users_on_postgres() {
    cli_apps_and_users(Backend::Postgres).await;
}
