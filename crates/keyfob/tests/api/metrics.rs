//! `/metrics` cannot be grown by clients: every label comes from a closed set.

use reqwest::Method;
use tokio::task::JoinSet;

use crate::helpers::*;

async fn metrics_text(app: &TestApp) -> String {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Lines that are samples (not `# HELP` / `# TYPE`).
fn sample_count(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    // One request of each kind first, so that the series the loop below may legitimately
    // create (an `other` method on a known route and on no route) exist in `before`.
    let warm_up = [
        (Method::from_bytes(b"WARMUP").unwrap(), "/healthz"),
        (Method::from_bytes(b"WARMUP").unwrap(), "/no-such-place"),
        (Method::GET, "/no-such-place"),
    ];
    for (method, path) in warm_up {
        app.client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
    }
    let before = metrics_text(&app).await;

    const REQUESTS: usize = 3000;
    const WORKERS: usize = 6;
    let mut workers = JoinSet::new();
    for worker in 0..WORKERS {
        let client = app.client.clone();
        let base = app.base.clone();
        workers.spawn(async move {
            for i in (worker..REQUESTS).step_by(WORKERS) {
                let method = Method::from_bytes(format!("KF{i}X").as_bytes()).unwrap();
                let path = match i % 3 {
                    0 => "/healthz".to_owned(),
                    1 => format!("/nowhere-{i}/%7E{i}/..%2f?q={i}"),
                    _ => format!("/api/odd-{i}"),
                };
                let status = client
                    .request(method, format!("{base}{path}"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert!(status.is_client_error(), "{path}: {status}");
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }

    let after = metrics_text(&app).await;
    for i in [0, 1, 2, 1000, REQUESTS - 1] {
        assert!(
            !after.contains(&format!("KF{i}X")),
            "a made-up method became a label"
        );
        assert!(
            !after.contains(&format!("nowhere-{i}")) && !after.contains(&format!("odd-{i}")),
            "a client's path became a label"
        );
    }
    // The loop may add a handful of series (a new status on a route); never one per request.
    let added = sample_count(&after).saturating_sub(sample_count(&before));
    assert!(
        added < 200,
        "{added} new samples after {REQUESTS} odd requests"
    );
    assert!(
        after.len() < before.len() + 40_000,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(after.contains("method=\"other\""));
}
