//! The OpenAPI document covers every JSON endpoint, and its shape is reviewed as a snapshot.

use serde_json::Value;

use crate::helpers::*;

/// Every JSON endpoint the router serves, by path and method.
const JSON_ENDPOINTS: &[(&str, &str)] = &[
    ("/auth", "post"),
    ("/auth/whoami", "get"),
    ("/api/{resource}", "get"),
    ("/api/{resource}", "post"),
    ("/api/{resource}/{id}", "get"),
    ("/api/{resource}/{id}", "patch"),
    ("/api/{resource}/{id}", "put"),
    ("/api/{resource}/{id}", "delete"),
    ("/.well-known/jwks.json", "get"),
    ("/.well-known/oauth-authorization-server", "get"),
    ("/auth/token", "post"),
    ("/auth/revoke", "post"),
    ("/auth/introspect", "post"),
    ("/api/audit", "get"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/openapi.json", "get"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_every_json_endpoint() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((path.clone(), method.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = JSON_ENDPOINTS
        .iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Each documented operation answers (not a 404 from the fallback or 405).
    for (path, method) in JSON_ENDPOINTS {
        let path = path
            .replace("{resource}", "deals")
            .replace("{id}", &uuid::Uuid::now_v7().to_string());
        let method: reqwest::Method = method.to_uppercase().parse().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_endpoints_answer() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let health: Value = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
