//! Every refusal carries Keyfob's error body in the format of the surface that answers, whether a
//! handler refused or the framework did: a method a path does not serve (405, `Allow` kept), a
//! body too large (413), of the wrong type (415, or RFC 6749's 400 on the OAuth endpoints),
//! malformed, or an unreadable query. Every route is walked. A representative set of refusals is
//! kept as a snapshot (`snapshots/`), so that a change to an error body shows in review.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::routes::*;

/// Methods a route may be tried with; `PROBE` stands for any method nobody serves.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "PROBE"];

/// Reads an error answer of `face` with `status`; returns its message (or the page's text).
async fn error_of(response: reqwest::Response, face: Face, status: u16, what: &str) -> String {
    assert_eq!(response.status().as_u16(), status, "{what}: status");
    let headers = response.headers().clone();
    assert!(
        headers.get("x-request-id").is_some_and(|id| !id.is_empty()),
        "{what}: no request id"
    );
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    match face {
        Face::Api | Face::OAuth => {
            assert!(
                content_type.starts_with("application/json"),
                "{what}: {content_type}: {text}"
            );
            let body: Value = serde_json::from_str(&text).unwrap();
            let message = if face == Face::Api {
                "message"
            } else {
                "error_description"
            };
            let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 2, "{what}: {body}");
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{what}: {body}"
            );
            body[message]
                .as_str()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| panic!("{what}: no {message}: {body}"))
                .to_owned()
        }
        Face::Dashboard | Face::UserPage => {
            assert!(
                content_type.starts_with("text/html"),
                "{what}: {content_type}: {text}"
            );
            assert!(
                headers
                    .get("content-security-policy")
                    .is_some_and(|csp| csp.to_str().unwrap().contains("frame-ancestors 'none'")),
                "{what}: an error page without the pages' policy"
            );
            assert!(text.contains("<h1"), "{what}: not an error page: {text}");
            html_text(&text)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_a_path_does_not_serve_gets_405_with_allow_and_an_error_body() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let f = Fixture::new(&app).await;
    let served = served_routes(&app, &f).await;
    let mut tried = 0;
    for route in ROUTES.iter().filter(|r| r.method != "*") {
        let allowed: Vec<&str> = served
            .iter()
            .filter(|(_, p)| p == route.path)
            .map(|(m, _)| m.as_str())
            .collect();
        for method in METHODS.iter().filter(|m| !allowed.contains(m)) {
            let what = format!("{method} {}", route.path);
            let response = f
                .request(route.who, method, &f.concrete(route.path))
                .send()
                .await
                .unwrap();
            let allow = response
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{what}: no Allow header"))
                .to_str()
                .unwrap()
                .to_owned();
            for m in &allowed {
                assert!(allow.split(',').any(|a| a == *m), "{what}: Allow {allow}");
            }
            // `/auth` serves the end users' page (GET) and the API's mint (POST); any other
            // method is the API's.
            let face = if route.path == "/auth" {
                Face::Api
            } else {
                route.face
            };
            let message = error_of(response, face, 405, &what).await;
            assert!(
                message.contains(&format!("`{method}`")),
                "{what}: {message}"
            );
            tried += 1;
        }
    }
    assert!(tried > 150, "only {tried} wrong methods tried");
}

/// A body of about 100 KiB (the limit is 64 KiB) of the type the route reads.
fn oversized(route: &Route, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let pad = "x".repeat(100 * 1024);
    match route.body {
        Body::Json => request.json(&json!({ "pad": pad })),
        _ => request.form(&[("csrf", "x"), ("pad", &pad)]),
    }
}

both_backends! {
    async fn bodies_too_large_or_of_the_wrong_type_get_an_error_body_and_change_nothing(app) {
        let f = Fixture::new(&app).await;
        let before = Snapshot::take(&app, &f).await;
        let with_body = ROUTES.iter().filter(|r| !matches!(r.body, Body::None));
        let mut tried = 0;
        for route in with_body {
            let path = f.concrete(route.path);
            let what = |kind: &str| format!("{} {} ({kind})", route.method, route.path);

            let response = oversized(route, f.request(route.who, route.method, &path)).send().await.unwrap();
            let message = error_of(response, route.face, 413, &what("too large")).await;
            assert!(message.contains("larger"), "{}: {message}", what("too large"));

            // A type the route does not read, and none at all.
            let (wrong, status) = match route.body {
                Body::Json => ("application/x-www-form-urlencoded", 415),
                // RFC 6749 §5.2: a malformed request is a 400.
                Body::OAuth(_) => ("text/plain", 400),
                _ => ("application/json", 415),
            };
            for content_type in [Some(wrong), None] {
                let mut request = f.request(route.who, route.method, &path).body("csrf=x");
                if let Some(content_type) = content_type {
                    request = request.header("content-type", content_type);
                }
                let response = request.send().await.unwrap();
                let message = error_of(response, route.face, status, &what("type")).await;
                assert!(message.contains("Content-Type") || message.contains("sent as"), "{}: {message}", what("type"));
            }

            // Malformed: JSON cut short; a form field given twice (its CSRF token, or for a form
            // that has none, its first field).
            let (content_type, body) = match route.body {
                Body::Json => ("application/json", "{\"name\": ".to_owned()),
                Body::OAuth(_) => ("application/x-www-form-urlencoded", "client_id=a&client_id=b".to_owned()),
                Body::Form(fields) => {
                    let field = if fields.contains(&"csrf") { "csrf" } else { fields[0] };
                    ("application/x-www-form-urlencoded", format!("{field}=a&{field}=b"))
                }
                Body::None => unreachable!(),
            };
            let response = f.request(route.who, route.method, &path).header("content-type", content_type).body(body).send().await.unwrap();
            error_of(response, route.face, 400, &what("malformed")).await;
            tried += 1;
        }
        assert!(tried >= 20, "only {tried} routes with a body");
        let after = Snapshot::take(&app, &f).await;
        assert_eq!(before, after, "a refused request changed something");
    }

    async fn an_empty_page_or_limit_is_refused_by_name(app) {
        let f = Fixture::new(&app).await;
        for path in ["/api/deals", "/api/audit"] {
            for query in ["page=", "limit=", "page=&limit=5", "page=%20", "limit=1&page="] {
                let response = app.get(&format!("{path}?{query}"), &f.key).send().await.unwrap();
                let name = if query.starts_with("page") || query.ends_with("page=") { "page" } else { "limit" };
                let message = expect_error(response, 400, "invalid_query").await;
                assert!(message.contains(&format!("`{name}`")), "{path}?{query}: {message}");
            }
        }
        // The dashboard's pages refuse it on an error page.
        for path in ["/dashboard/data/deals?page=", "/dashboard/audit?page=", "/dashboard/audit?limit=", "/dashboard/tokens?page=", "/dashboard/tokens?limit="] {
            let response = f.owner.get(path).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
            let text = html_text(&response.text().await.unwrap());
            let name = if path.ends_with("limit=") { "limit" } else { "page" };
            assert!(text.contains(&format!("`{name}`")), "{path}: {text}");
        }
        // A page number still works.
        let response = app.get("/api/deals?page=1&limit=5", &f.key).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_addresses_and_unknown_paths_get_an_error_body() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let f = Fixture::new(&app).await;
    let cases: &[(&str, Face, u16)] = &[
        ("/nowhere", Face::Api, 404),
        ("/nowhere%FF", Face::Api, 400),
        ("/api/deals/%C0%80", Face::Api, 400),
        ("/api/deals?limit=abc", Face::Api, 400),
        ("/dashboard/nowhere", Face::Dashboard, 404),
        ("/dashboard/data/deals/%FF", Face::Dashboard, 400),
        ("/auth/nowhere", Face::UserPage, 404),
    ];
    for (path, face, status) in cases {
        let request = app.request(Method::GET, path, Some(&f.key));
        let response = if *face == Face::Dashboard {
            f.owner.http.get(f.owner.url(path)).send().await.unwrap()
        } else {
            request.send().await.unwrap()
        };
        error_of(response, *face, *status, path).await;
    }
}

/// One answer as the snapshot shows it: what was asked, the status, the headers a client acts on
/// and the body.
async fn answer(what: &str, response: reqwest::Response) -> Value {
    let status = response.status().as_u16();
    let mut headers = serde_json::Map::new();
    for name in [
        "content-type",
        "allow",
        "www-authenticate",
        "retry-after",
        "x-request-id",
    ] {
        if let Some(value) = response.headers().get(name) {
            headers.insert(name.to_owned(), json!(value.to_str().unwrap()));
        }
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    json!({"request": what, "status": status, "headers": headers, "body": body})
}

/// The error bodies of a representative set of refusals, API and OAuth alike, as a snapshot: the
/// status, the headers that go with it and the exact body, so that a change to any of them shows
/// in review. Request ids vary and are redacted (each answer must carry one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_match_their_snapshot() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let f = Fixture::new(&app).await;
    let weak = app.mint_token(&f.key, &["other.read"]).await;
    // The fixture's key with its last character changed: well formed, and nobody's.
    let last = if f.key.ends_with('0') { "1" } else { "0" };
    let unknown_key = format!("{}{last}", &f.key[..f.key.len() - 1]);
    let no_such_record = "/api/deals/00000000-0000-7000-8000-000000000000";
    let pad = "x".repeat(100 * 1024);
    let api = |method: Method, path: &str, credential: Option<&str>| {
        app.request(method, path, credential)
    };
    let token = || app.client.post(app.url("/auth/token"));
    let client = [
        ("client_id", f.client_id.as_str()),
        ("client_secret", f.client_secret.as_str()),
    ];
    let key = Some(f.key.as_str());
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "POST /auth: permissions not a list",
            api(Method::POST, "/auth", key).json(&json!({"permissions": "deals.read"})),
        ),
        (
            "POST /auth: expires not a date",
            api(Method::POST, "/auth", key)
                .json(&json!({"permissions": ["deals.read"], "expires": "tomorrow"})),
        ),
        (
            "POST /auth: an unknown field",
            api(Method::POST, "/auth", key)
                .json(&json!({"permissions": ["deals.read"], "scope": "x"})),
        ),
        (
            "POST /api/deals: a NUL in a nested field",
            api(Method::POST, "/api/deals", key).json(&json!({"customer": {"name": "Ada\u{0}"}})),
        ),
        (
            "POST /api/deals: malformed JSON",
            api(Method::POST, "/api/deals", key)
                .header("content-type", "application/json")
                .body("{\"name\": "),
        ),
        (
            "GET /api/deals?limit=abc",
            api(Method::GET, "/api/deals?limit=abc", key),
        ),
        (
            "GET /api/deals/a%00b",
            api(Method::GET, "/api/deals/a%00b", key),
        ),
        (
            "GET /auth/whoami: no credential",
            api(Method::GET, "/auth/whoami", None),
        ),
        (
            "GET /auth/whoami: a malformed API key",
            api(Method::GET, "/auth/whoami", Some("kf_short")),
        ),
        (
            "GET /auth/whoami: an unknown API key",
            api(Method::GET, "/auth/whoami", Some(&unknown_key)),
        ),
        (
            "GET /api/deals: a token without deals.read",
            api(Method::GET, "/api/deals", Some(&weak)),
        ),
        (
            "GET /api/audit: a token without audit.read",
            api(Method::GET, "/api/audit", Some(&weak)),
        ),
        ("GET /nowhere", api(Method::GET, "/nowhere", key)),
        (
            "GET /api/deals/{id}: no such record",
            api(Method::GET, no_such_record, key),
        ),
        (
            "DELETE /auth/whoami",
            api(Method::DELETE, "/auth/whoami", key),
        ),
        ("PUT /api/deals", api(Method::PUT, "/api/deals", key)),
        (
            "POST /api/deals: a body too large",
            api(Method::POST, "/api/deals", key).json(&json!({ "pad": pad })),
        ),
        (
            "POST /api/deals: text/plain",
            api(Method::POST, "/api/deals", key)
                .header("content-type", "text/plain")
                .body("{}"),
        ),
        ("POST /auth/token: no grant_type", token().form(&client)),
        (
            "POST /auth/token: grant_type=password",
            token().form(&[client[0], client[1], ("grant_type", "password")]),
        ),
        (
            "POST /auth/token: an unknown client, in HTTP Basic",
            token()
                .basic_auth("app_unknown", Some("kfs_wrong"))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", "kfr_x")]),
        ),
        (
            "POST /auth/token: an unknown refresh token",
            token().form(&[
                client[0],
                client[1],
                ("grant_type", "refresh_token"),
                ("refresh_token", "kfr_unknown"),
            ]),
        ),
        (
            "POST /auth/token: text/plain",
            token()
                .header("content-type", "text/plain")
                .body("grant_type=refresh_token"),
        ),
        (
            "POST /auth/token: a body too large",
            token().form(&[("grant_type", "refresh_token"), ("pad", pad.as_str())]),
        ),
        ("GET /auth/token", app.client.get(app.url("/auth/token"))),
        (
            "POST /auth/revoke: no token",
            app.client.post(app.url("/auth/revoke")).form(&client),
        ),
        (
            "POST /auth/introspect: no credential",
            api(Method::POST, "/auth/introspect", None).form(&[("token", "kfr_x")]),
        ),
        (
            "POST /auth/introspect: a token, not an API key",
            api(Method::POST, "/auth/introspect", Some(&f.access_token))
                .form(&[("token", "kfr_x")]),
        ),
    ];
    let mut answers = Vec::new();
    for (what, request) in cases {
        answers.push(answer(what, request.send().await.unwrap()).await);
    }

    // Storage that does not answer: another connection holds SQLite's write lock past the
    // store's busy timeout, so the writes behind a create and a refresh give up.
    let mut lock = <sqlx::SqliteConnection as sqlx::Connection>::connect(&app.db.url)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    let refresh = [
        client[0],
        client[1],
        ("grant_type", "refresh_token"),
        ("refresh_token", f.refresh_token.as_str()),
    ];
    let (create, refreshed) = tokio::join!(
        api(Method::POST, "/api/deals", key)
            .json(&json!({"name": "held"}))
            .send(),
        token().form(&refresh).send(),
    );
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    answers.push(answer("POST /api/deals: storage busy", create.unwrap()).await);
    answers.push(answer("POST /auth/token: storage busy", refreshed.unwrap()).await);

    insta::assert_json_snapshot!("error_bodies", answers, {
        r#"[].headers["x-request-id"]"# => insta::dynamic_redaction(|value, _| {
            assert!(value.as_str().is_some_and(|id| !id.is_empty()), "a request id: {value:?}");
            "[request id]"
        }),
    });
}
