//! Client input that storage cannot hold never makes a 5xx: a NUL character (`%00`, `\u0000`) in
//! any path segment, query parameter, form field or JSON document (keys too), and bytes that are
//! not UTF-8, are refused at the edge with a 400 naming the field, in the format of the surface
//! that answers, and change nothing. Every route is walked, authenticated as it needs.

use std::collections::BTreeSet;

use base64::Engine;
use reqwest::RequestBuilder;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::routes::*;

/// The JSON documents that carry a NUL to a JSON route, each with the field it must be named by.
fn json_cases(route: &Route) -> Vec<(Value, &'static str)> {
    match route.path {
        "/auth" => vec![
            (
                json!({"permissions": ["deals.read\u{0}"]}),
                "permissions[0]",
            ),
            (
                json!({"permissions": ["deals.read"], "expires": "2030-01-01\u{0}"}),
                "expires",
            ),
            (
                json!({"permissions": ["deals.read"], "\u{0}": 1}),
                "[\"\\u0000\"]",
            ),
        ],
        _ => vec![
            (json!({"name": "a\u{0}b"}), "name"),
            (json!({"customer": {"name": "Ada\u{0}"}}), "customer.name"),
            (
                json!({"customer": {"na\u{0}me": "Ada"}}),
                "customer[\"na\\u0000me\"]",
            ),
            (json!({"items": ["ok", ["\u{0}"]]}), "items[1][0]"),
        ],
    }
}

/// A 400 in the format of `face` that names `field` and says what is wrong with it.
async fn expect_refused(response: reqwest::Response, face: Face, field: &str, what: &str) {
    let message = expect_named(response, face, 400, field, what).await;
    assert!(
        message.contains("NUL") || message.contains("UTF-8"),
        "{what}: the answer does not say what is wrong: {message}"
    );
}

/// The request with a body the route would accept, so that only the address is wrong.
fn with_valid_body(f: &Fixture, route: &Route, request: RequestBuilder) -> RequestBuilder {
    match route.body {
        Body::None => request,
        Body::Json if route.path == "/auth" => {
            request.json(&json!({"permissions": ["deals.read"]}))
        }
        Body::Json => request.json(&json!({"name": "probe"})),
        Body::Form(fields) | Body::OAuth(fields) => request.form(&f.form(route, fields)),
    }
}

async fn walk_route(f: &Fixture, route: &Route) {
    let what = |kind: &str| format!("{} {} ({kind})", route.method, route.path);
    let method = if route.method == "*" {
        "GET"
    } else {
        route.method
    };
    let path = f.concrete(route.path);

    // A NUL, and bytes that are not UTF-8, in each query parameter's value and in a name.
    let values = route.query.iter().flat_map(|name| {
        [
            (format!("{name}=a%00b"), (*name).to_owned()),
            (format!("{name}=%FF%FE"), (*name).to_owned()),
        ]
    });
    for (query, field) in values.chain([("na%00me=1".to_owned(), "na\\u0000me".to_owned())]) {
        let response = with_valid_body(
            f,
            route,
            f.request(route.who, method, &format!("{path}?{query}")),
        )
        .send()
        .await
        .unwrap();
        expect_refused(response, route.face, &field, &what(&query)).await;
    }

    // In each path parameter.
    for param in route.path.split('/').filter(|s| s.starts_with('{')) {
        for bad in ["a%00b", "%00", "%C0%80"] {
            let bad_path = f.fill(route.path, Some((param, bad)));
            let response = with_valid_body(f, route, f.request(route.who, method, &bad_path))
                .send()
                .await
                .unwrap();
            expect_refused(response, route.face, param, &what(&bad_path)).await;
        }
    }

    match route.body {
        Body::None => {}
        Body::Json => {
            for (doc, field) in json_cases(route) {
                let response = f
                    .request(route.who, method, &path)
                    .json(&doc)
                    .send()
                    .await
                    .unwrap();
                expect_refused(response, route.face, field, &what(&doc.to_string())).await;
            }
        }
        Body::Form(fields) | Body::OAuth(fields) => {
            let form = f.form(route, fields);
            for field in fields {
                // The valid value with a NUL added, so that nothing else is wrong.
                let bad: Vec<(String, String)> = form
                    .iter()
                    .map(|(k, v)| {
                        let v = if k == field {
                            format!("{v}\u{0}")
                        } else {
                            v.clone()
                        };
                        (k.clone(), v)
                    })
                    .collect();
                let response = f
                    .request(route.who, method, &path)
                    .form(&bad)
                    .send()
                    .await
                    .unwrap();
                expect_refused(response, route.face, field, &what(field)).await;
                if let Body::OAuth(_) = route.body {
                    let doc: serde_json::Map<String, Value> = bad
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect();
                    let response = f
                        .request(route.who, method, &path)
                        .json(&doc)
                        .send()
                        .await
                        .unwrap();
                    expect_refused(response, route.face, field, &what("JSON")).await;
                }
            }
            // A NUL in a field's name, and a value that is not UTF-8.
            let mut encoded = serde_urlencoded::to_string(&form).unwrap();
            encoded.push_str("&na%00me=1");
            let response = f
                .request(route.who, method, &path)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encoded)
                .send()
                .await
                .unwrap();
            expect_refused(response, route.face, "na\\u0000me", &what("name")).await;
            let mut encoded = serde_urlencoded::to_string(&form).unwrap();
            encoded.push_str(&format!("&{}=%FF", fields[fields.len() - 1]));
            let response = f
                .request(route.who, method, &path)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encoded)
                .send()
                .await
                .unwrap();
            expect_refused(
                response,
                route.face,
                fields[fields.len() - 1],
                &what("not UTF-8"),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_lists_every_served_route() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let f = Fixture::new(&app).await;
    let served = served_routes(&app, &f).await;
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(
        served, listed,
        "the OpenAPI document's routes and routes::PAGE_ROUTES must be exactly the routes the router serves"
    );
}

both_backends! {
    async fn nul_in_any_input_of_any_route_is_refused_by_name_and_changes_nothing(app) {
        let f = Fixture::new(&app).await;
        let before = Snapshot::take(&app, &f).await;
        // Routes that end a login go last, so that were one to act, the others would still be
        // walked with a live login.
        let ends_login = |r: &&Route| {
            r.path.contains("logout") || r.path.contains("end-session") || r.path == "/auth/password"
        };
        for route in ROUTES.iter().filter(|r| !ends_login(r)).chain(ROUTES.iter().filter(ends_login)) {
            walk_route(&f, route).await;
        }

        // The login and sign-up forms carry the authorization request as a query string in a
        // field, decoded twice: a NUL hidden one level down is refused by name too.
        for (path, who) in [("/auth/login", Who::UserForm), ("/auth/signup", Who::UserForm)] {
            let route = ROUTES.iter().find(|r| r.path == path && r.method == "POST").unwrap();
            let Body::Form(fields) = route.body else { unreachable!() };
            let mut form = f.form(route, fields);
            for (k, v) in &mut form {
                if k == "request" {
                    *v = format!("client_id=%00&redirect_uri={}", urlencode(CALLBACK));
                }
            }
            let response = f.request(who, "POST", path).form(&form).send().await.unwrap();
            expect_refused(response, Face::UserPage, "request", path).await;
        }

        // Client credentials in HTTP Basic are decoded twice too (base64, then form encoding).
        for raw in [
            format!("{}\u{0}:{}", f.client_id, f.client_secret),
            format!("{}%00:{}", f.client_id, f.client_secret),
            format!("{}:{}%00", f.client_id, f.client_secret),
        ] {
            let basic = base64::engine::general_purpose::STANDARD.encode(&raw);
            let field = if raw.ends_with("%00") { "client_secret" } else { "client_id" };
            let refresh = f.refresh_token.as_str();
            for (path, form) in [
                ("/auth/token", [("grant_type", "refresh_token"), ("refresh_token", refresh)]),
                ("/auth/revoke", [("token", refresh), ("token_type_hint", "refresh_token")]),
            ] {
                let response = app
                    .client
                    .post(app.url(path))
                    .header("authorization", format!("Basic {basic}"))
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
                expect_refused(response, Face::OAuth, field, path).await;
            }
        }

        let after = Snapshot::take(&app, &f).await;
        assert_eq!(before, after, "a refused request changed something");
        // And the session still refreshes: the refresh token was never touched.
        let refreshed = app
            .client
            .post(app.url("/auth/token"))
            .basic_auth(&f.client_id, Some(&f.client_secret))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", f.refresh_token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(refreshed.status(), 200);
    }
}

fn urlencode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)]).unwrap()[2..].to_owned()
}

/// Asserts that no answer is a 5xx; returns the status.
async fn not_a_server_error(response: reqwest::Response, what: &str) -> u16 {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert!(status < 500, "{what}: {status} {text}");
    status
}

both_backends! {
    async fn other_text_storage_cannot_take_is_refused_and_large_values_are_kept(app) {
        let f = Fixture::new(&app).await;
        let post = |body: String| {
            app.request(reqwest::Method::POST, "/api/deals", Some(&f.key))
                .header("content-type", "application/json")
                .body(body)
        };
        // Lone surrogates and numbers beyond a double are not JSON Keyfob can read.
        for body in [r#"{"name":"\ud800"}"#, r#"{"name":"\udc00x"}"#, r#"{"\ud800":1}"#, r#"{"n":1e400}"#] {
            let response = post(body.to_owned()).send().await.unwrap();
            expect_error(response, 400, "invalid_body").await;
            let response = app
                .client
                .post(app.url("/auth/token"))
                .header("content-type", "application/json")
                .body(body.replace("name", "client_id"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{body}");
        }
        // Large numbers, long strings and long keys within the body limit are stored and read back.
        let long = "é".repeat(12_000);
        let doc = json!({
            "big": 123456789012345678901234567890u128 as f64,
            "tiny": 1e-300,
            "max": f64::MAX,
            "text": long,
            long.clone(): "a key of 24,000 bytes",
        });
        let response = app.request(reqwest::Method::POST, "/api/deals", Some(&f.key)).json(&doc).send().await.unwrap();
        assert_eq!(response.status(), 201);
        let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let response = app.get(&format!("/api/deals/{id}"), &f.key).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let read: Value = response.json().await.unwrap();
        for field in ["big", "tiny", "max", "text"] {
            assert_eq!(read[field], doc[field], "{field}");
        }
        assert_eq!(read[&long], doc[&long]);
        // PostgreSQL keeps numbers as exact decimals and writes them back in full: the collection
        // must still list.
        let response = app.get("/api/deals?limit=100", &f.key).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let response = post(r#"{"n":100000000000000000000000000000000000000000}"#.to_owned()).send().await.unwrap();
        assert_eq!(response.status(), 201);

        // Overlong values elsewhere: refused by the rule that applies, or simply not found.
        let huge = "a".repeat(8_000);
        let checks: Vec<(&str, reqwest::RequestBuilder)> = vec![
            ("filter", app.get(&format!("/api/deals?where[name][equals]={huge}"), &f.key)),
            ("sort", app.get(&format!("/api/deals?sort={huge}"), &f.key)),
            ("resource", app.get(&format!("/api/{huge}"), &f.key)),
            ("record id", app.get(&format!("/api/deals/{huge}"), &f.key)),
            ("reveal", app.get(&format!("/api/deals/{id}?reveal={huge}"), &f.key)),
            ("audit actor", app.get(&format!("/api/audit?actor={huge}"), &f.key)),
            ("mint", app.request(reqwest::Method::POST, "/auth", Some(&f.key)).json(&json!({"permissions": [huge.clone()], "expires": huge.clone()}))),
            ("client id", app.client.post(app.url("/auth/token")).form(&[("grant_type", "refresh_token"), ("refresh_token", huge.as_str()), ("client_id", huge.as_str())])),
            ("revoke", app.client.post(app.url("/auth/revoke")).form(&[("token", huge.as_str()), ("client_id", f.client_id.as_str()), ("client_secret", f.client_secret.as_str())])),
            ("introspect", app.request(reqwest::Method::POST, "/auth/introspect", Some(&f.key)).form(&[("token", huge.as_str())])),
            ("authorize", f.user.http.get(f.user.url(&format!("/auth?client_id={huge}&redirect_uri={huge}")))),
            ("key name", f.owner.http.post(f.owner.url("/dashboard/keys")).form(&[("csrf", f.owner_csrf.as_str()), ("name", huge.as_str())])),
            ("key id", f.owner.http.post(f.owner.url(&format!("/dashboard/keys/{huge}/revoke"))).form(&[("csrf", f.owner_csrf.as_str())])),
            ("grant id", f.user.http.post(f.user.url(&format!("/auth/grants/{huge}/revoke"))).form(&[("csrf", f.user_csrf.as_str())])),
            ("signup email", f.user_form.http.post(f.user_form.url("/auth/signup")).form(&[("csrf", f.user_form_csrf.as_str()), ("email", &format!("{huge}@example.com")), ("password", PASSWORD), ("confirm", PASSWORD)])),
            ("fields", f.owner.http.post(f.owner.url("/dashboard/data/_fields")).form(&[("csrf", f.owner_csrf.as_str()), ("fields", huge.as_str())])),
            ("page", app.get("/api/deals?page=99999999999999999999999999", &f.key)),
            ("idle", f.owner.http.post(f.owner.url("/dashboard/apps")).form(&[("csrf", f.owner_csrf.as_str()), ("name", "x"), ("redirect_uris", "https://x.example.com/cb"), ("kind", "public"), ("max_permissions", "deals.read"), ("refresh_idle_secs", "99999999999999999999999")])),
        ];
        for (what, request) in checks {
            let status = not_a_server_error(request.send().await.unwrap(), what).await;
            assert!(status == 200 || (400..500).contains(&status), "{what}: {status}");
        }
        // The key and the session still work.
        assert_eq!(app.whoami_status(&f.key).await, 200);
        assert_eq!(app.whoami_status(&f.access_token).await, 200);
    }
}
