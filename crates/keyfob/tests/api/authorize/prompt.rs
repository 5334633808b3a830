//! OpenID Connect's `prompt`, `max_age` and `login_hint` on `GET /auth`: which pages the user is
//! shown, the errors an application gets when it allows none (`prompt=none`), and that a refusal
//! stores nothing. Driven as in the parent module: a browser without JavaScript, redirects not
//! followed.

use super::*;

/// What a refusal must leave as it was: grants, codes and sessions.
async fn counts(app: &TestApp) -> [i64; 3] {
    let url = &app.db.url;
    [
        raw_count(url, "grants").await,
        raw_count(url, "auth_codes").await,
        raw_count(url, "refresh_families").await,
    ]
}

/// The login cookie a response sets.
fn login_cookie(response: &Response) -> String {
    let cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{USER_COOKIE}=")))
        .expect("the login cookie");
    cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

/// The value the login or sign-up form's email field starts with.
fn email_field(html: &str) -> String {
    let at = html.find("id=\"email\"").expect("an email field");
    let tag = &html[at..at + html[at..].find('>').unwrap()];
    let v = tag.find("value=\"").unwrap() + 7;
    unescape(&tag[v..v + tag[v..].find('"').unwrap()])
}

/// A browser logged in as a new user; the email and the login cookie's value.
async fn logged_in(app: &TestApp) -> (Browser, String, String) {
    let browser = Browser::new(app);
    let email = new_user(app).await;
    let response = browser.login(&email, PASSWORD, "").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = login_cookie(&response);
    (browser, email, cookie)
}

/// The login row behind a cookie, if it is live.
async fn login_row(app: &TestApp, cookie: &str) -> Option<keyfob_store::UserLoginRow> {
    app.state
        .store
        .find_user_login(&hash_secret(cookie), Timestamp::now())
        .await
        .unwrap()
}

/// Makes every login of the app look `secs` seconds older than it is.
async fn age_logins(app: &TestApp, secs: i64) {
    let sql = format!(
        "UPDATE user_sessions SET created_at = created_at - {}",
        secs * 1000
    );
    assert!(raw_execute(&app.db.url, &sql).await.unwrap() > 0);
}

/// The error an application receives: in the query for the code flow, else in the fragment.
fn error_of(response: &Response, fragment: bool) -> (String, Vec<(String, String)>) {
    let url = redirect_to_client(response);
    let pairs = if fragment {
        assert_eq!(url.query(), None, "nothing in the query");
        fragment_of(&url)
    } else {
        query_of(&url)
    };
    for absent in ["code", "token", "access_token", "refresh_token"] {
        assert!(param(&pairs, absent).is_none(), "no {absent} with an error");
    }
    assert_eq!(param(&pairs, "state"), Some("st8"));
    assert!(
        !param(&pairs, "error_description")
            .unwrap_or_default()
            .is_empty()
    );
    (param(&pairs, "error").expect("an error").to_owned(), pairs)
}

/// The code an answer carries, and its stored row.
async fn code_of(app: &TestApp, response: &Response) -> keyfob_store::AuthCodeRow {
    let url = redirect_to_client(response);
    let pairs = query_of(&url);
    assert_eq!(param(&pairs, "state"), Some("st8"));
    let code = param(&pairs, "code").expect("a code");
    app.state
        .store
        .find_auth_code(&hash_secret(code))
        .await
        .unwrap()
        .expect("the code is stored")
}

async fn user_id_of(app: &TestApp, email: &str) -> keyfob_store::UserId {
    app.state
        .store
        .find_user_by_email(email)
        .await
        .unwrap()
        .unwrap()
        .id
}

both_backends! {
    async fn prompt_none_answers_at_once_or_with_an_error_and_stores_nothing(app) {
        let client = register_app(&app, false, "deals.read,deals.write").await;
        let read = format!("{}&prompt=none", request(&client, "deals.read"));
        let token = format!("{read}&response_type=token");

        // Not logged in: login_required, where the app looks, with the state and the issuer.
        let stranger = Browser::new(&app);
        let before = counts(&app).await;
        let (error, pairs) = error_of(&stranger.get(&format!("/auth?{read}")).await, false);
        assert_eq!(error, "login_required");
        assert_eq!(param(&pairs, "iss"), Some(app.base.as_str()));
        let (error, _) = error_of(&stranger.get(&format!("/auth?{token}")).await, true);
        assert_eq!(error, "login_required");

        // Logged in, nothing granted yet: consent_required, in the query or the fragment.
        let (browser, email, _) = logged_in(&app).await;
        let (error, _) = error_of(&browser.get(&format!("/auth?{read}")).await, false);
        assert_eq!(error, "consent_required");
        let (error, _) = error_of(&browser.get(&format!("/auth?{token}")).await, true);
        assert_eq!(error, "consent_required");
        assert!(grant_of(&app, &email, &client).await.is_none(), "no grant made");
        assert_eq!(counts(&app).await, before, "nothing stored");

        // Granted: a code at once, no page.
        browser.authorize_all(&request(&client, "deals.read")).await;
        let before = counts(&app).await;
        let row = code_of(&app, &browser.get(&format!("/auth?{read}")).await).await;
        assert_eq!(permissions_of(&row.permissions), ["deals.read"]);
        assert_eq!(row.user_id, user_id_of(&app, &email).await);
        assert_eq!(counts(&app).await[1], before[1] + 1, "one code");

        // Asking for more than the grant holds: consent_required, and the grant stays as it was.
        let before = counts(&app).await;
        let more = format!("{}&prompt=none", request(&client, "deals.read,deals.write"));
        let (error, _) = error_of(&browser.get(&format!("/auth?{more}")).await, false);
        assert_eq!(error, "consent_required");
        let grant = grant_of(&app, &email, &client).await.unwrap();
        assert_eq!(permissions_of(&grant.permissions), ["deals.read"]);

        // Tokens in the fragment are never handed out without the user: interaction_required.
        let (error, pairs) = error_of(&browser.get(&format!("/auth?{token}")).await, true);
        assert_eq!(error, "interaction_required");
        assert!(param(&pairs, "error_description").unwrap().contains("fragment"));
        assert_eq!(counts(&app).await, before, "nothing stored");

        // A bad client or redirect URI is still an error page, never a redirect.
        for q in [
            query(&[("client_id", "app_nope"), ("redirect_uri", CALLBACK), ("permissions", "deals.read"), ("prompt", "none")]),
            query(&[("client_id", &client.client_id), ("redirect_uri", "https://evil.test/cb"), ("permissions", "deals.read"), ("prompt", "none")]),
        ] {
            for who in [&browser, &stranger] {
                let response = who.get(&format!("/auth?{q}")).await;
                assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{q}");
                assert!(response.headers().get(LOCATION).is_none(), "{q}");
            }
        }
    }

    async fn prompt_values_and_max_age_are_checked_and_reported_to_the_app(app) {
        let client = register_app(&app, false, "deals.read").await;
        let (browser, email, _) = logged_in(&app).await;
        browser.authorize_all(&request(&client, "deals.read")).await;
        let before = counts(&app).await;
        let r = request(&client, "deals.read");
        let cases = [
            (format!("{r}&prompt=none+login"), "prompt=none"),
            (format!("{r}&prompt=consent%20none"), "prompt=none"),
            (format!("{r}&prompt=create"), "prompt `create`"),
            (format!("{r}&prompt=LOGIN"), "prompt `LOGIN`"),
            (format!("{r}&max_age=abc"), "max_age"),
            (format!("{r}&max_age=-1"), "max_age"),
            (format!("{r}&max_age=1.5"), "max_age"),
            (format!("{r}&max_age=2147483648"), "max_age"),
            (format!("{r}&max_age=99999999999999999999999"), "max_age"),
            (format!("{r}&prompt=none&max_age=abc"), "max_age"),
        ];
        for (q, named) in &cases {
            for who in [&browser, &Browser::new(&app)] {
                let (error, pairs) = error_of(&who.get(&format!("/auth?{q}")).await, false);
                assert_eq!(error, "invalid_request", "{q}");
                let description = param(&pairs, "error_description").unwrap();
                assert!(description.contains(named), "{q}: {description}");
            }
            let token = format!("{q}&response_type=token");
            let (error, _) = error_of(&browser.get(&format!("/auth?{token}")).await, true);
            assert_eq!(error, "invalid_request", "{token}");
        }
        assert_eq!(counts(&app).await, before, "nothing stored");

        // Empty values are no values; a hint that is no email is ignored; the largest max_age is
        // taken.
        for extra in ["prompt=", "max_age=", "login_hint=", "login_hint=not-an-email", "max_age=2147483647", "prompt=none&max_age=60"] {
            let response = browser.get(&format!("/auth?{r}&{extra}")).await;
            code_of(&app, &response).await;
        }
        assert!(grant_of(&app, &email, &client).await.is_some());
    }

    async fn prompt_login_asks_for_the_password_again_and_starts_a_new_login(app) {
        let client = register_app(&app, false, "deals.read").await;
        let (browser, email, first) = logged_in(&app).await;
        browser.authorize_all(&request(&client, "deals.read")).await;
        let first_row = login_row(&app, &first).await.expect("the first login");
        let q = format!("{}&prompt=login", request(&client, "deals.read"));

        // Logged in, yet sent to the login page, which shows its form rather than going on.
        let before = counts(&app).await;
        let response = browser.get(&format!("/auth?{q}")).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let to = location(&response).to_owned();
        assert!(to.starts_with("/auth/login?") && to.contains("prompt=login"), "{to}");
        let html = browser.expect_page(&to).await;
        assert!(html.contains("Log in again to continue."));
        assert!(html.contains("Deal Tracker"));
        assert_eq!(email_field(&html), email, "their own email, filled in");
        // The sign-up page too shows its form.
        let signup = to.replacen("/auth/login?", "/auth/signup?", 1);
        assert_eq!(browser.get(&signup).await.status(), StatusCode::OK);
        assert_eq!(counts(&app).await, before, "no code before the password");

        // A wrong password changes nothing: the first login lives on.
        let response = browser.login(&email, "not the password at all", &to["/auth/login?".len()..]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(login_row(&app, &first).await.is_some());

        // The right one: a new login replaces the first, and the request goes on without asking
        // for a login again.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let response = browser.login(&email, PASSWORD, &to["/auth/login?".len()..]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let second = login_cookie(&response);
        assert_ne!(second, first);
        assert!(login_row(&app, &first).await.is_none(), "the old login ended");
        let second_row = login_row(&app, &second).await.expect("the new login");
        assert!(second_row.created_at > first_row.created_at, "a fresh authentication time");
        let back = location(&response).to_owned();
        assert!(back.starts_with("/auth?") && !back.contains("prompt"), "{back}");
        let row = code_of(&app, &browser.get(&back).await).await;
        assert_eq!(row.user_id, user_id_of(&app, &email).await);

        // With prompt=consent beside it: after the login, the consent page.
        let q = format!("{}&prompt=login+consent", request(&client, "deals.read"));
        let to = location(&browser.get(&format!("/auth?{q}")).await).to_owned();
        let response = browser.login(&email, PASSWORD, &to["/auth/login?".len()..]).await;
        let back = location(&response).to_owned();
        assert!(back.contains("prompt=consent") && !back.contains("login"), "{back}");
        let consent = browser.consent_page(&back["/auth?".len()..]).await;
        assert!(consent.contains("allowed before"));

        // select_account is chosen by logging in, as prompt=login.
        let q = format!("{}&prompt=select_account", request(&client, "deals.read"));
        let response = browser.get(&format!("/auth?{q}")).await;
        assert!(location(&response).starts_with("/auth/login?"));

        // A sign-up made for the request, then the login it asks for, answers it as well.
        let fresh = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let q = format!("{}&prompt=login&max_age=0&login_hint={fresh}", request(&client, "deals.read"));
        let response = browser.signup(&fresh, PASSWORD, &q).await;
        assert_eq!(response.status(), StatusCode::OK);
        let response = browser.login(&fresh, PASSWORD, &q).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let back = location(&response).to_owned();
        assert!(!back.contains("prompt") && !back.contains("max_age") && !back.contains("login_hint"), "{back}");
        assert_eq!(browser.get(&back).await.status(), StatusCode::OK, "the new user's consent page");
    }

    async fn prompt_consent_shows_the_page_even_with_a_grant(app) {
        let client = register_app(&app, false, "deals.read").await;
        let (browser, email, _) = logged_in(&app).await;
        browser.authorize_all(&request(&client, "deals.read")).await;
        let grant = grant_of(&app, &email, &client).await.unwrap();

        let q = format!("{}&prompt=consent", request(&client, "deals.read"));
        let consent = browser.consent_page(&q).await;
        assert_eq!(checkboxes(&consent), ["deals.read"]);
        assert!(consent.contains("allowed before"));
        let url = redirect_to_client(&browser.answer(&consent, &["deals.read"], "allow").await);
        assert!(param(&query_of(&url), "code").is_some());
        assert_eq!(grant_of(&app, &email, &client).await.unwrap().id, grant.id);

        // Denied there: access_denied, and the grant is kept as it was.
        let consent = browser.consent_page(&q).await;
        let url = redirect_to_client(&browser.answer(&consent, &[], "deny").await);
        assert_eq!(param(&query_of(&url), "error"), Some("access_denied"));
        let kept = grant_of(&app, &email, &client).await.unwrap();
        assert!(kept.revoked_at.is_none());
        assert_eq!(permissions_of(&kept.permissions), ["deals.read"]);

        // Without it, the grant answers at once, as always.
        code_of(&app, &browser.get(&format!("/auth?{}", request(&client, "deals.read"))).await).await;
    }

    async fn max_age_asks_again_for_a_login_older_than_it(app) {
        let client = register_app(&app, false, "deals.read").await;
        let (browser, email, first) = logged_in(&app).await;
        browser.authorize_all(&request(&client, "deals.read")).await;
        let q = format!("{}&max_age=3600", request(&client, "deals.read"));

        // A login younger than max_age: answered at once.
        code_of(&app, &browser.get(&format!("/auth?{q}")).await).await;

        // Two hours old: with prompt=none, login_required; without, the login page.
        age_logins(&app, 7200).await;
        let before = counts(&app).await;
        let (error, pairs) = error_of(&browser.get(&format!("/auth?{q}&prompt=none")).await, false);
        assert_eq!(error, "login_required");
        assert!(param(&pairs, "error_description").unwrap().contains("max_age"));
        assert_eq!(counts(&app).await, before, "nothing stored");
        // A larger max_age still takes it, and so does a request without one.
        code_of(&app, &browser.get(&format!("/auth?{}&max_age=7300", request(&client, "deals.read"))).await).await;
        code_of(&app, &browser.get(&format!("/auth?{}", request(&client, "deals.read"))).await).await;

        let response = browser.get(&format!("/auth?{q}")).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let to = location(&response).to_owned();
        assert!(to.starts_with("/auth/login?") && to.contains("max_age=3600"), "{to}");
        let html = browser.expect_page(&to).await;
        assert!(html.contains("Log in again to continue."));
        let response = browser.login(&email, PASSWORD, &to["/auth/login?".len()..]).await;
        let second = login_cookie(&response);
        assert!(login_row(&app, &first).await.is_none());
        let row = login_row(&app, &second).await.unwrap();
        assert!(Timestamp::now().since(row.created_at) < Duration::from_secs(60), "authenticated just now");
        let back = location(&response).to_owned();
        assert!(!back.contains("max_age"), "{back}");
        code_of(&app, &browser.get(&back).await).await;
        // The fresh login satisfies max_age from now on, without prompt=none refusing it.
        code_of(&app, &browser.get(&format!("/auth?{q}&prompt=none")).await).await;
    }

    async fn login_hint_fills_in_the_form_and_names_the_user_expected(app) {
        let client = register_app(&app, false, "deals.read").await;
        let stranger = Browser::new(&app);
        let r = request(&client, "deals.read");

        // Not logged in: the hint fills in the email field, normalised and escaped.
        let response = stranger.get(&format!("/auth?{r}&login_hint=Ada%40Example.COM")).await;
        let to = location(&response).to_owned();
        assert!(to.contains("login_hint=ada%40example.com"), "{to}");
        assert_eq!(email_field(&stranger.expect_page(&to).await), "ada@example.com");
        let hostile = "\"><script>alert(1)</script>@evil.test";
        let q = format!("{r}&{}", query(&[("login_hint", hostile)]));
        let to = location(&stranger.get(&format!("/auth?{q}")).await).to_owned();
        let html = stranger.expect_page(&to).await;
        assert!(!html.contains("<script>"), "escaped");
        assert_eq!(email_field(&html), hostile);
        let html = stranger.expect_page(&to.replacen("/auth/login?", "/auth/signup?", 1)).await;
        assert_eq!(email_field(&html), hostile, "the sign-up form too");
        // A hint that is no email fills in nothing.
        let to = location(&stranger.get(&format!("/auth?{r}&login_hint=ada")).await).to_owned();
        assert_eq!(email_field(&stranger.expect_page(&to).await), "");
        // Nor does a request without one.
        let to = location(&stranger.get(&format!("/auth?{r}")).await).to_owned();
        assert_eq!(email_field(&stranger.expect_page(&to).await), "");

        // Logged in as the user hinted at: answered as usual.
        let (browser, ada, first) = logged_in(&app).await;
        browser.authorize_all(&r).await;
        let hint = |email: &str| format!("{r}&{}", query(&[("login_hint", &email.to_uppercase())]));
        code_of(&app, &browser.get(&format!("/auth?{}", hint(&ada))).await).await;

        // Hinting at someone else: never answered for the user logged in.
        let bob = new_user(&app).await;
        let before = counts(&app).await;
        let (error, _) = error_of(&browser.get(&format!("/auth?{}&prompt=none", hint(&bob))).await, false);
        assert_eq!(error, "login_required");
        assert_eq!(counts(&app).await, before, "nothing stored");
        let response = browser.get(&format!("/auth?{}", hint(&bob))).await;
        let to = location(&response).to_owned();
        assert!(to.starts_with("/auth/login?"), "{to}");
        let html = browser.expect_page(&to).await;
        assert_eq!(email_field(&html), bob);
        // Bob logs in in this browser: Ada's login ends, and the request is Bob's.
        let response = browser.login(&bob, PASSWORD, &to["/auth/login?".len()..]).await;
        assert!(login_row(&app, &first).await.is_none());
        let back = location(&response).to_owned();
        assert!(!back.contains("login_hint"), "{back}");
        assert_eq!(browser.get(&back).await.status(), StatusCode::OK, "Bob's consent page");
        assert!(grant_of(&app, &bob, &client).await.is_none());

        // Whoever logs in on that page is the user, even another than the hint.
        let response = browser.get(&format!("/auth?{}", hint(&ada))).await;
        let to = location(&response).to_owned();
        let response = browser.login(&bob, PASSWORD, &to["/auth/login?".len()..]).await;
        let back = location(&response).to_owned();
        assert_eq!(browser.get(&back).await.status(), StatusCode::OK, "Bob's consent page, not a loop");
    }
}
