//! The OpenAPI document covers every JSON endpoint, and its shape is reviewed as a snapshot.

use std::collections::BTreeSet;

use keyfob::http::guard::Surface;
use serde_json::Value;

use crate::helpers::*;
use crate::routes::{Fixture, served_routes};

/// The document and the router come from the same declarations; this checks the outcome against
/// the router itself: the document describes exactly the routes it serves on the JSON API and
/// the OAuth endpoints, and each answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_every_json_endpoint() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let f = Fixture::new(&app).await;
    let spec: Value = app.public_json("/openapi.json").await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = served_routes(&app, &f)
        .await
        .into_iter()
        .filter(|(method, path)| {
            method != "*"
                && matches!(
                    Surface::of(&method.parse().unwrap(), path),
                    Surface::Api | Surface::OAuth
                )
        })
        .collect();
    assert_eq!(documented, served);
    // Each documented operation answers (not a 404 from the fallback or 405).
    for (method, path) in &documented {
        let path = path
            .replace("{resource}", "deals")
            .replace("{id}", &uuid::Uuid::now_v7().to_string());
        let method: reqwest::Method = method.parse().unwrap();
        let response = app
            .request(method.clone(), &path, None)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(
            status != 405
                && !(status == 404 && response.text().await.unwrap().contains("no such endpoint")),
            "{method} {path} is documented but not served ({status})"
        );
    }
    // Every operation documents its errors with a schema.
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
}

/// The whole document as served, so that any change to the API's contract (a path, a parameter, a
/// schema, a documented answer) shows in review as a change to `snapshots/`. The version is
/// redacted: it moves with each release, not with the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_matches_its_snapshot() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let spec: Value = app.public_json("/openapi.json").await;
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
    insta::assert_json_snapshot!("openapi.json", spec, {
        ".info.version" => "[version]",
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_endpoints_answer() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let health: Value = app.public_json("/healthz").await;
    assert_eq!(health["status"], "ok");
    let ready: Value = app.public_json("/readyz").await;
    assert_eq!(ready["database"], "sqlite");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(text.contains("keyfob_http_requests_total"), "{text}");
    let missing = app.client.get(app.url("/nope")).send().await.unwrap();
    expect_error(missing, 404, "not_found").await;
}

/// The response an operation documents for `status`, with a `$ref` to a shared response resolved.
fn documented<'a>(spec: &'a Value, operation: &'a Value, status: u16) -> Option<&'a Value> {
    let response = operation["responses"].get(status.to_string())?;
    match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            Some(&spec["components"]["responses"][name])
        }
        None => Some(response),
    }
}

/// The schema a documented response's JSON body refers to, e.g. `ErrorBody`.
fn body_schema(response: &Value) -> Option<&str> {
    response["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .and_then(|r| r.rsplit('/').next())
}

/// Checks that an answer's status is documented for the operation, and that its body has the
/// documented schema's shape.
async fn answer_is_documented(
    spec: &Value,
    operation: &Value,
    response: reqwest::Response,
    what: &str,
) -> u16 {
    let status = response.status().as_u16();
    let doc = documented(spec, operation, status)
        .unwrap_or_else(|| panic!("{what}: answers {status}, which it does not document"));
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match body_schema(doc) {
        Some("ErrorBody") => assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{what}: {status} is documented as ErrorBody but is {body}"
        ),
        Some("OAuthErrorBody") => assert!(
            body["error"].is_string() && body["error_description"].is_string(),
            "{what}: {status} is documented as OAuthErrorBody but is {body}"
        ),
        other => panic!("{what}: {status} documented with body {other:?}"),
    }
    status
}

/// Operations that answer from memory alone and so cannot be refused for a storage outage (a
/// secured one may read an API key new to this node from storage).
const MEMORY_ONLY: &[(&str, &str)] = &[
    ("/.well-known/jwks.json", "get"),
    ("/.well-known/oauth-authorization-server", "get"),
    ("/.well-known/openid-configuration", "get"),
    ("/healthz", "get"),
    ("/metrics", "get"),
    ("/openapi.json", "get"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_the_errors_it_answers() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let spec: Value = app.public_json("/openapi.json").await;
    let (account, key) = app.account_with_key().await;
    let account = keyfob_domain::ids::AccountId::from(account);
    let spec_doc = &spec;
    // A token that may do nothing the operations below need.
    let weak = app.mint_token(&key, &["other.read"]).await;
    let record: Value = app
        .request(reqwest::Method::POST, "/api/deals", Some(&key))
        .json(&serde_json::json!({"name": "one"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = record["id"].as_str().unwrap().to_owned();
    let pad = "x".repeat(100 * 1024);
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let concrete = path.replace("{resource}", "deals").replace("{id}", &id);
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            let has_body = operation.get("requestBody").is_some();
            let json_body = operation["requestBody"]["content"]
                .get("application/json")
                .is_some();
            let mut provoked = std::collections::BTreeSet::new();
            let send = |credential: Option<&str>, path: &str| {
                let request = app.request(method.clone(), path, credential);
                if has_body {
                    request
                        .header("content-type", "application/json")
                        .body("{}")
                } else {
                    request
                }
            };

            // Without a credential: a 401 exactly where one is needed.
            let response = send(None, &concrete).send().await.unwrap();
            if secured {
                assert_eq!(response.status(), 401, "{what} without a credential");
                provoked.insert(answer_is_documented(&spec, operation, response, &what).await);
            } else {
                assert_ne!(
                    response.status(),
                    401,
                    "{what} is not documented as secured"
                );
            }

            // An OAuth client that does not authenticate.
            if !secured && documented(&spec, operation, 401).is_some() {
                let params = match path.as_str() {
                    "/auth/token" => {
                        serde_json::json!({"grant_type": "refresh_token", "refresh_token": "kfr_x"})
                    }
                    _ => serde_json::json!({"token": "kfr_x"}),
                };
                let response = app
                    .request(method.clone(), &concrete, None)
                    .basic_auth("app_unknown", Some("kfs_wrong"))
                    .json(&params)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 401, "{what} with an unknown client");
                provoked.insert(answer_is_documented(&spec, operation, response, &what).await);
            }

            // With a key whose rate limit is spent (a fresh one for each operation).
            if secured {
                let spec =
                    keyfob::services::keys::KeySpec::parse("limited", None, None, Some("1/day"))
                        .unwrap();
                let (_, limited) = app.create_key_with(&account, &spec).await;
                let response = send(Some(&limited), &concrete).send().await.unwrap();
                if response.status() == 429 {
                    provoked
                        .insert(answer_is_documented(spec_doc, operation, response, &what).await);
                }
            }

            // With a credential that holds too little.
            if secured {
                let response = send(Some(&weak), &concrete).send().await.unwrap();
                if response.status() == 403 {
                    provoked.insert(answer_is_documented(&spec, operation, response, &what).await);
                }
            }

            // Bad input: a NUL in the query.
            let response = send(Some(&key), &format!("{concrete}?x=%00"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{what} with a NUL in the query");
            provoked.insert(answer_is_documented(&spec, operation, response, &what).await);

            if has_body {
                let response = app
                    .request(method.clone(), &concrete, Some(&key))
                    .json(&serde_json::json!({ "pad": pad }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 413, "{what} with a body too large");
                provoked.insert(answer_is_documented(&spec, operation, response, &what).await);
                if json_body {
                    let response = app
                        .request(method.clone(), &concrete, Some(&key))
                        .header("content-type", "text/plain")
                        .body("{}")
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 415, "{what} with text/plain");
                    provoked.insert(answer_is_documented(&spec, operation, response, &what).await);
                }
            }

            // What is documented and can be provoked here was provoked: nothing documented that
            // does not happen.
            for status in [401, 403, 413, 415, 429] {
                if documented(&spec, operation, status).is_some() {
                    assert!(
                        provoked.contains(&status),
                        "{what} documents {status}, which it does not answer"
                    );
                }
            }
            // A storage outage is documented exactly where storage is used.
            let memory_only = MEMORY_ONLY
                .iter()
                .any(|(p, m)| p == path && m.eq_ignore_ascii_case(method.as_str()));
            assert_eq!(
                documented(&spec, operation, 503).is_some(),
                !memory_only,
                "{what}: 503 documented wrongly"
            );
        }
    }
}
