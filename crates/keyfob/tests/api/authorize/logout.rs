//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) at `/auth/end-session`: the
//! application's registered post-logout addresses, matched exactly; logging out at once with an
//! ID token naming the logged-in user, or after the user confirms on a CSRF-protected page; the
//! error pages for a request that cannot be followed; and ending the application's session when
//! asked. Driven as in the parent module: a browser without JavaScript, redirects not followed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::*;

const AFTER: &str = "https://client.example.com/logged-out";
const AFTER_LOCAL: &str = "http://localhost:3000/bye?from=kf";
const END: &str = "/auth/end-session";

/// A confidential application with two post-logout addresses, and its secret.
struct Rp {
    row: AppRow,
    secret: String,
    /// An API key of its account, to read the audit log.
    key: String,
}

async fn rp(app: &TestApp, name: &str) -> Rp {
    let account = app
        .create_account(&format!("{}@example.com", uuid::Uuid::new_v4().simple()))
        .await;
    let created = services::apps::create_app(
        app.state.store.as_ref(),
        &account,
        NewApp {
            name: name.into(),
            redirect_uris: vec![CALLBACK.into()],
            post_logout_redirect_uris: vec![AFTER.into(), AFTER_LOCAL.into()],
            origins: vec![],
            public: false,
            max_permissions: "deals.read".into(),
            refresh_idle_secs: None,
            refresh_max_age_secs: None,
            allow_fragment: false,
        },
    )
    .await
    .expect("app registered");
    let key = app.create_key(&account).await;
    Rp {
        row: created.app,
        secret: created.client_secret.unwrap(),
        key,
    }
}

/// What the application holds after a code flow.
struct Session {
    user_id: String,
    access_token: String,
    refresh_token: String,
    /// The session (refresh family): the tokens' `sid`.
    sid: String,
    id_token: String,
}

fn payload_of(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A JWT signed with the server's own signing key, with header `typ`: what the tests use to make
/// tokens Keyfob would never issue (another issuer, an ID token's claims under an access token's
/// header) or not now (an ID token expired a day ago).
fn signed_by_keyfob(app: &TestApp, typ: &str, claims: &Value) -> String {
    let keys = app.state.tokens.keys();
    let signer = keys.signer(Timestamp::now()).unwrap();
    let mut header = jsonwebtoken::Header::new(signer.alg);
    header.typ = Some(typ.to_owned());
    header.kid = Some(signer.kid.to_string());
    jsonwebtoken::encode(&header, claims, &signer.key).unwrap()
}

/// ID token claims as Keyfob issues them, for `user_id` at `client_id` in session `sid`,
/// expiring at `exp` (Unix seconds).
fn id_token_claims(app: &TestApp, user_id: &str, client_id: &str, sid: &str, exp: i64) -> Value {
    json!({
        "iss": app.state.tokens.issuer(),
        "sub": user_id,
        "aud": client_id,
        "azp": client_id,
        "exp": exp,
        "iat": exp - 300,
        "auth_time": exp - 300,
        "sid": sid,
    })
}

/// Runs the code flow for the browser's user and exchanges the code: the session's tokens and
/// its ID token.
async fn session(app: &TestApp, browser: &Browser, rp: &Rp) -> Session {
    let q = query(&[
        ("client_id", &rp.row.client_id),
        ("redirect_uri", CALLBACK),
        ("scope", "openid deals.read"),
        ("response_type", "code"),
        ("state", "st8"),
    ]);
    // A user whose grant covers the request is sent straight back; else they consent.
    let response = browser.get(&format!("/auth?{q}")).await;
    let url = if response.status() == StatusCode::FOUND {
        redirect_to_client(&response)
    } else {
        browser.authorize_all(&q).await
    };
    let code = param(&query_of(&url), "code").expect("a code").to_owned();
    let response = app
        .client
        .post(app.url("/auth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("client_id", &rp.row.client_id),
            ("client_secret", &rp.secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let access_token = body["access_token"].as_str().unwrap().to_owned();
    let claims = payload_of(&access_token);
    let user_id = claims["sub"].as_str().unwrap().to_owned();
    let sid = claims["sid"].as_str().unwrap().to_owned();
    let id_token = body["id_token"].as_str().expect("an id_token").to_owned();
    // The ID token names the user and the session the access token does.
    let id_claims = payload_of(&id_token);
    assert_eq!(id_claims["sub"].as_str(), Some(user_id.as_str()));
    assert_eq!(id_claims["sid"].as_str(), Some(sid.as_str()));
    Session {
        user_id,
        sid,
        refresh_token: body["refresh_token"].as_str().unwrap().to_owned(),
        access_token,
        id_token,
    }
}

/// A logged-in browser of a new user with a session at `rp`.
async fn user_with_session(app: &TestApp, rp: &Rp) -> (Browser, Session) {
    let (browser, _) = Browser::user(app).await;
    let session = session(app, &browser, rp).await;
    (browser, session)
}

async fn refresh(app: &TestApp, rp: &Rp, refresh_token: &str) -> Response {
    app.client
        .post(app.url("/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &rp.row.client_id),
            ("client_secret", &rp.secret),
        ])
        .send()
        .await
        .unwrap()
}

/// `GET /auth/end-session?…`.
async fn end_session(browser: &Browser, pairs: &[(&str, &str)]) -> Response {
    browser.get(&format!("{END}?{}", query(pairs))).await
}

/// Whether the response clears the login cookie.
fn clears_login(response: &Response) -> bool {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| c.starts_with(&format!("{USER_COOKIE}=;")) && c.contains("Max-Age=0"))
}

/// An error page (400, no redirect, no cookie cleared) whose message contains `needle`; the
/// page never lists the registered addresses.
async fn error_page(response: Response, needle: &str) {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{needle}");
    assert!(
        response.headers().get(LOCATION).is_none(),
        "no redirect: {needle}"
    );
    assert!(!clears_login(&response), "the login is kept: {needle}");
    // The message's `code` is shown as code: read it back as the message's backticks.
    let html = crate::routes::html_text(&response.text().await.unwrap());
    assert!(html.contains("<h1>Bad request</h1>"), "{html}");
    assert!(html.contains(needle), "{needle}: {html}");
    assert!(html.contains("Nothing was changed."), "{html}");
    assert!(
        !html.contains("logged-out") && !html.contains("localhost:3000"),
        "{html}"
    );
}

both_backends! {
    async fn post_logout_addresses_are_registered_by_the_rules_of_redirect_uris(app) {
        let account = app.create_account("owner@example.com").await;
        for (uri, needle) in [
            ("http://client.example.com/bye", "plain http"),
            ("https://client.example.com/bye#x", "without a fragment"),
            ("/bye", "absolute"),
        ] {
            let err = services::apps::create_app(
                app.state.store.as_ref(),
                &account,
                NewApp {
                    name: "Bad".into(),
                    redirect_uris: vec![CALLBACK.into()],
                    post_logout_redirect_uris: vec![uri.into()],
                    max_permissions: "deals.read".into(),
                    ..NewApp::default()
                },
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(err.contains("post-logout redirect URI") && err.contains(needle), "{err}");
        }
        assert!(app.state.store.list_apps(&account).await.unwrap().is_empty());
        let rp = rp(&app, "Deal Tracker").await;
        let stored = app.state.store.find_app(&rp.row.client_id).await.unwrap().unwrap();
        assert_eq!(stored.post_logout_redirect_uris.to_vec(), [AFTER, AFTER_LOCAL]);
    }

    async fn a_hint_naming_the_logged_in_user_logs_out_at_once_and_returns_with_the_state(app) {
        let rp = rp(&app, "Deal Tracker").await;
        let (browser, session) = user_with_session(&app, &rp).await;
        let response = end_session(&browser, &[
            ("id_token_hint", &session.id_token),
            ("post_logout_redirect_uri", AFTER),
            ("state", "bye st8"),
            ("ui_locales", "fr"),
            ("logout_hint", "whoever"),
        ])
        .await;
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(location(&response), format!("{AFTER}?state=bye+st8"));
        assert!(clears_login(&response), "the login cookie is cleared");
        assert!(!browser.signed_in().await, "the login is over");
        // The application's session was not asked to end: it still refreshes.
        assert_eq!(refresh(&app, &rp, &session.refresh_token).await.status(), 200);
        // Audited in the application's account, by the user.
        let events = audit_until(&app, &rp.key, "action=user.logout", |docs| !docs.is_empty()).await;
        assert_eq!(events[0]["target"], session.user_id.as_str());
        assert_eq!(events[0]["detail"]["client_id"], rp.row.client_id.as_str());
        assert_eq!(events[0]["detail"]["session_ended"], Value::Null);

        // A registered address with a query of its own keeps it; no state, none added.
        let (browser, session) = user_with_session(&app, &rp).await;
        let response = end_session(&browser, &[
            ("id_token_hint", &session.id_token),
            ("client_id", &rp.row.client_id),
            ("post_logout_redirect_uri", AFTER_LOCAL),
        ])
        .await;
        assert_eq!(location(&response), AFTER_LOCAL);
        assert!(!browser.signed_in().await);

        // A form POST does the same; without an address, Keyfob says so itself.
        let (browser, session) = user_with_session(&app, &rp).await;
        let response = browser.post(END, &[("id_token_hint", &session.id_token)]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(clears_login(&response));
        let html = response.text().await.unwrap();
        assert!(html.contains("You are logged out") && html.contains("Deal Tracker"), "{html}");
        assert!(!browser.signed_in().await);
    }

    async fn an_expired_hint_still_names_the_user(app) {
        let rp = rp(&app, "Deal Tracker").await;
        let (browser, session) = user_with_session(&app, &rp).await;
        let long_ago = Timestamp::now().unix_secs() - 86_400;
        let expired = signed_by_keyfob(
            &app,
            "JWT",
            &id_token_claims(&app, &session.user_id, &rp.row.client_id, &session.sid, long_ago),
        );
        let response = end_session(&browser, &[
            ("id_token_hint", &expired),
            ("post_logout_redirect_uri", AFTER),
            ("state", "s"),
        ])
        .await;
        assert_eq!(location(&response), format!("{AFTER}?state=s"));
        assert!(!browser.signed_in().await);
    }

    async fn without_a_hint_the_user_confirms_on_a_form_that_needs_its_csrf_token(app) {
        let rp = rp(&app, "Deal Tracker").await;
        let (browser, _) = Browser::user(&app).await;
        let q = [
            ("client_id", rp.row.client_id.as_str()),
            ("post_logout_redirect_uri", AFTER),
            ("state", "st8"),
        ];
        let response = end_session(&browser, &q).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!clears_login(&response));
        let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("form-action 'self' https://client.example.com"), "{csp}");
        let html = response.text().await.unwrap();
        assert!(html.contains("Log out of Keyfob?") && html.contains("Deal Tracker"), "{html}");
        assert!(browser.signed_in().await, "asking logs nobody out");
        let form = hidden_fields(&html);
        assert_eq!(param(&form, "post_logout_redirect_uri"), Some(AFTER));
        assert_eq!(param(&form, "state"), Some("st8"));

        // Posted from elsewhere (no token, or another one), the form changes nothing.
        let forged: Vec<(&str, &str)> = form
            .iter()
            .filter(|(k, _)| k != "csrf")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut wrong = forged.clone();
        wrong.push(("csrf", "not-the-token"));
        for attempt in [forged.clone(), wrong] {
            let response = browser.post("/auth/end-session/confirm", &attempt).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert!(response.headers().get(LOCATION).is_none());
            assert!(browser.signed_in().await, "still logged in");
        }
        // Nor does a hint-less request posted to the endpoint itself: it only asks.
        let response = browser.post(END, &q).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(browser.signed_in().await);
        // The form as shown, checked again in full: a changed address is refused.
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let changed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|&(k, v)| if k == "post_logout_redirect_uri" { (k, "https://evil.test/") } else { (k, v) })
            .collect();
        error_page(browser.post("/auth/end-session/confirm", &changed).await, "not registered").await;
        assert!(browser.signed_in().await);

        let response = browser.post("/auth/end-session/confirm", &pairs).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(location(&response), format!("{AFTER}?state=st8"));
        assert!(clears_login(&response));
        assert!(!browser.signed_in().await);

        // With no application named and no address, the page is Keyfob's own.
        let (browser, _) = Browser::user(&app).await;
        let html = browser.expect_page(END).await;
        assert!(html.contains("Log out of Keyfob?") && html.contains("An application asks"), "{html}");
        let csrf = csrf_in(&html);
        let response = browser.post("/auth/end-session/confirm", &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.text().await.unwrap().contains("You are logged out"));
        assert!(!browser.signed_in().await);

        // Nobody logged in: nothing to protect, and the browser goes back at once.
        let anonymous = Browser::new(&app);
        let response = end_session(&anonymous, &q).await;
        assert_eq!(location(&response), format!("{AFTER}?state=st8"));
    }

    async fn a_hint_for_someone_else_is_confirmed_first(app) {
        let rp = rp(&app, "Deal Tracker").await;
        let (_, theirs) = user_with_session(&app, &rp).await;
        let (browser, _) = Browser::user(&app).await;
        let response = end_session(&browser, &[("id_token_hint", &theirs.id_token)]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let html = response.text().await.unwrap();
        assert!(html.contains("Log out of Keyfob?"), "{html}");
        assert!(browser.signed_in().await);
    }

    async fn an_unregistered_address_is_an_error_page_and_the_user_stays_logged_in(app) {
        let rp = rp(&app, "Deal Tracker").await;
        let (browser, session) = user_with_session(&app, &rp).await;
        for near in [
            "https://client.example.com/logged-out/",
            "https://CLIENT.example.com/logged-out",
            "https://client.example.com/Logged-out",
            "https://client.example.com/logged-out?x=1",
            "http://localhost:3000/bye",
            "https://evil.test/logged-out",
            CALLBACK,
        ] {
            for hint in [Some(session.id_token.as_str()), None] {
                let mut q = vec![("client_id", rp.row.client_id.as_str()), ("post_logout_redirect_uri", near), ("state", "s")];
                if let Some(hint) = hint {
                    q.push(("id_token_hint", hint));
                }
                error_page(end_session(&browser, &q).await, "has not registered").await;
                assert!(browser.signed_in().await, "{near}");
            }
        }
        // An address with no application to check it against.
        error_page(
            end_session(&browser, &[("post_logout_redirect_uri", AFTER)]).await,
            "names no application",
        )
        .await;
        // An application that does not exist.
        error_page(
            end_session(&browser, &[("client_id", "app_nope"), ("post_logout_redirect_uri", AFTER)]).await,
            "not known to this server",
        )
        .await;
        // A parameter given twice cannot be read safely.
        let twice = format!("{END}?{}&post_logout_redirect_uri=https%3A%2F%2Fevil.test%2F", query(&[("client_id", &rp.row.client_id), ("post_logout_redirect_uri", AFTER)]));
        error_page(browser.get(&twice).await, "cannot be read").await;
        // Keyfob's own parameter takes only true or false.
        error_page(
            end_session(&browser, &[("id_token_hint", &session.id_token), ("end_app_session", "yes")]).await,
            "end_app_session` must be",
        )
        .await;
        error_page(
            end_session(&browser, &[("client_id", &rp.row.client_id), ("end_app_session", "true")]).await,
            "needs an id_token_hint",
        )
        .await;
        assert!(browser.signed_in().await);
        assert_eq!(refresh(&app, &rp, &session.refresh_token).await.status(), 200);
    }

    async fn client_id_and_the_hint_must_name_the_same_application(app) {
        let rp = rp(&app, "Deal Tracker").await;
        let other = rp_other(&app).await;
        let (browser, session) = user_with_session(&app, &rp).await;
        for q in [
            vec![("id_token_hint", session.id_token.as_str()), ("client_id", other.as_str())],
            vec![
                ("id_token_hint", session.id_token.as_str()),
                ("client_id", other.as_str()),
                ("post_logout_redirect_uri", AFTER),
            ],
        ] {
            error_page(end_session(&browser, &q).await, "does not match the application").await;
            assert!(browser.signed_in().await);
        }
    }

    async fn access_tokens_forgeries_and_garbage_are_refused_as_hints(app) {
        let rp = rp(&app, "Deal Tracker").await;
        let (browser, session) = user_with_session(&app, &rp).await;
        let now = Timestamp::now().unix_secs();
        let claims = id_token_claims(&app, &session.user_id, &rp.row.client_id, &session.sid, now + 300);
        let mut elsewhere = claims.clone();
        elsewhere["iss"] = "https://evil.test".into();
        // An ID token whose signature was tampered with: one character in its middle changed.
        let (signed, signature) = session.id_token.rsplit_once('.').unwrap();
        let mut signature: Vec<char> = signature.chars().collect();
        signature[10] = if signature[10] == 'A' { 'B' } else { 'A' };
        let tampered = format!("{signed}.{}", signature.iter().collect::<String>());
        // An ID token's body under an access token's header, and the reverse.
        let as_access = signed_by_keyfob(&app, "at+jwt", &claims);
        // An access token signed before RFC 9068 said `typ: JWT` too.
        let old_access = signed_by_keyfob(&app, "JWT", &payload_of(&session.access_token));
        for (hint, needle) in [
            (session.access_token.clone(), "not an ID token"),
            (as_access, "not an ID token"),
            (old_access, "not an ID token"),
            (signed_by_keyfob(&app, "JWT", &elsewhere), "issued by someone else"),
            (tampered, "signature is invalid"),
            ("garbage".to_owned(), "not a well-formed JWT"),
            ("a.b.c".to_owned(), "not a well-formed JWT"),
            ("x".repeat(9000), "too long"),
        ] {
            error_page(
                end_session(&browser, &[("id_token_hint", &hint), ("post_logout_redirect_uri", AFTER)]).await,
                needle,
            )
            .await;
            let response = browser.post(END, &[("id_token_hint", &hint)]).await;
            error_page(response, needle).await;
            assert!(browser.signed_in().await, "{needle}");
        }
        // The ID token is no access token either.
        assert_eq!(app.whoami_status(&session.id_token).await, 401);
        assert_eq!(refresh(&app, &rp, &session.refresh_token).await.status(), 200);
    }

    async fn the_applications_session_ends_only_when_asked(app) {
        let rp = rp(&app, "Deal Tracker").await;
        // Not asked: the session lives on.
        let (browser, kept) = user_with_session(&app, &rp).await;
        let response = end_session(&browser, &[("id_token_hint", &kept.id_token), ("post_logout_redirect_uri", AFTER)]).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        let response = refresh(&app, &rp, &kept.refresh_token).await;
        assert_eq!(response.status(), 200);

        // Asked: its refresh token is refused at once, its access token soon after.
        let (browser, ended) = user_with_session(&app, &rp).await;
        // Another session of the same user and application is not touched.
        let other = session(&app, &browser, &rp).await;
        assert_ne!(other.sid, ended.sid);
        let response = end_session(&browser, &[
            ("id_token_hint", &ended.id_token),
            ("post_logout_redirect_uri", AFTER),
            ("end_app_session", "true"),
            ("state", "s"),
        ])
        .await;
        assert_eq!(location(&response), format!("{AFTER}?state=s"));
        assert!(!browser.signed_in().await);
        let response = refresh(&app, &rp, &ended.refresh_token).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant", "{body}");
        app.wait_until_status(&ended.access_token, 401).await;
        assert_eq!(refresh(&app, &rp, &other.refresh_token).await.status(), 200);
        let events = audit_until(&app, &rp.key, "action=session.ended", |docs| !docs.is_empty()).await;
        assert_eq!(events[0]["target"], ended.sid.as_str());
        assert_eq!(events[0]["detail"]["reason"], "logout");
        let events = audit_until(&app, &rp.key, "action=user.logout", |docs| docs.len() >= 2).await;
        assert_eq!(events[0]["detail"]["session_ended"], ended.sid.as_str());

        // Asked through the confirmation page (the hint names someone else than who is logged
        // in): only the hint's own session with its application ends, once confirmed.
        let (_, theirs) = user_with_session(&app, &rp).await;
        let (browser, _) = Browser::user(&app).await;
        let html = end_session(&browser, &[("id_token_hint", &theirs.id_token), ("end_app_session", "true")])
            .await
            .text()
            .await
            .unwrap();
        assert!(html.contains("and your session with Deal Tracker"), "{html}");
        assert_eq!(refresh(&app, &rp, &theirs.refresh_token).await.status(), 200, "not before confirming");
        let form = hidden_fields(&html);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let response = browser.post("/auth/end-session/confirm", &pairs).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(refresh(&app, &rp, &theirs.refresh_token).await.status(), 400);

        // A hint whose sid names another user's session (Keyfob never signs one) ends nothing.
        let (browser, mine) = user_with_session(&app, &rp).await;
        let (_, victim) = user_with_session(&app, &rp).await;
        let crossed = signed_by_keyfob(
            &app,
            "JWT",
            &id_token_claims(&app, &mine.user_id, &rp.row.client_id, &victim.sid, Timestamp::now().unix_secs() + 300),
        );
        let response = end_session(&browser, &[("id_token_hint", &crossed), ("end_app_session", "true")]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!browser.signed_in().await);
        assert_eq!(refresh(&app, &rp, &victim.refresh_token).await.status(), 200);
        assert_eq!(refresh(&app, &rp, &mine.refresh_token).await.status(), 200);
    }

    async fn discovery_names_the_end_session_endpoint(app) {
        let doc = app.public_json("/.well-known/openid-configuration").await;
        let url = doc["end_session_endpoint"].as_str().unwrap();
        assert_eq!(url, format!("{}/auth/end-session", app.state.tokens.issuer()));
        let anonymous = Browser::new(&app);
        let response = anonymous.get(END).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.text().await.unwrap().contains("You are logged out"));
    }
}

/// Another application, in another account: its client id.
async fn rp_other(app: &TestApp) -> String {
    rp(app, "Other").await.row.client_id.into_string()
}
