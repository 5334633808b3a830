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

/// The value of the sample `name{labels}` (labels as the exposition writes them, in order), or
/// `None` when there is no such sample.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}

/// Every sample's family has its `# HELP` and `# TYPE`.
fn assert_described(text: &str) {
    let described = |kind: &str, name: &str| {
        text.lines()
            .any(|l| l.starts_with(&format!("# {kind} {name} ")))
    };
    let mut families = std::collections::BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                described("TYPE", base).then_some(base)
            })
            .unwrap_or(name);
        families.insert(family.to_owned());
    }
    assert!(families.len() > 10, "{families:?}");
    for family in families {
        assert!(described("HELP", &family), "no # HELP for {family}");
        assert!(described("TYPE", &family), "no # TYPE for {family}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_is_described_and_what_keyfob_does_is_counted() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = spawn_app(backend).await else {
            continue;
        };
        // The recorder is the process's: both backends' apps count into it, so each checks what
        // it added.
        let before = metrics_text(&app).await;
        let added = |after: &str, series: &str| {
            sample(after, series).unwrap_or(0.0) - sample(&before, series).unwrap_or(0.0)
        };
        let (account, key) = app.account_with_key().await;

        // A mint, and a reveal of one sensitive value.
        app.mint_token(&key, &["deals.read"]).await;
        let made: serde_json::Value = app
            .request(Method::POST, "/api/creditApplications", Some(&key))
            .json(&serde_json::json!({"ssn": "219-09-9999"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = made["id"].as_str().unwrap();
        let response = app
            .get(&format!("/api/creditApplications/{id}?reveal=ssn"), &key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);

        // A key limited to one request a minute, refused on its second.
        let spec = keyfob::services::keys::KeySpec {
            rate_limit: Some("1/min".parse().unwrap()),
            ..keyfob::services::keys::KeySpec::full_access("limited")
        };
        let account_id = keyfob_store::AccountId::from(account.as_str());
        let (_, limited) = app.create_key_with(&account_id, &spec).await;
        // (Making the key waited for the server to know it, which may have spent the budget.)
        let mut refusals = 0.0;
        for _ in 0..3 {
            if app.whoami_status(&limited).await == 429 {
                refusals += 1.0;
            }
        }
        assert!(refusals >= 2.0);

        // A dashboard login that works and one that does not.
        crate::dashboard::Browser::signed_up(&app).await;
        let refused = crate::dashboard::Browser::new(&app)
            .login("not the password at all")
            .await;
        assert_eq!(refused.status(), 400);

        // A refresh token nobody issued.
        let created = keyfob::services::apps::create_app(
            app.state.store.as_ref(),
            &account_id,
            keyfob::services::apps::NewApp {
                name: "Metrics".into(),
                redirect_uris: vec!["https://app.example.com/cb".into()],
                post_logout_redirect_uris: vec![],
                origins: vec![],
                public: true,
                max_permissions: "deals.read".into(),
                refresh_idle_secs: None,
                refresh_max_age_secs: None,
                allow_fragment: false,
            },
        )
        .await
        .unwrap();
        let response = app
            .client
            .post(app.url("/auth/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "made-up"),
                ("client_id", created.app.client_id.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);

        let text = metrics_text(&app).await;
        assert_described(&text);
        assert_eq!(added(&text, r#"keyfob_tokens_minted_total{at="api"}"#), 1.0);
        assert_eq!(added(&text, r#"keyfob_vault_reveals_total{at="api"}"#), 1.0);
        assert!(added(&text, "keyfob_key_rate_limited_total") >= refusals);
        assert_eq!(
            added(&text, r#"keyfob_logins_total{who="owner",result="ok"}"#),
            1.0,
            "{text}"
        );
        assert_eq!(
            added(&text, r#"keyfob_logins_total{who="owner",result="failed"}"#),
            1.0
        );
        assert_eq!(
            added(&text, r#"keyfob_refreshes_total{result="refused"}"#),
            1.0
        );
        // Per-route latency, by the route's template.
        assert!(
            text.contains(r#"keyfob_http_request_duration_seconds_bucket{method="GET",route="/auth/whoami",status="429",le="#),
            "{text}"
        );
        // The process and the database pool.
        assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
        assert!(sample(&text, "process_open_fds").unwrap() > 3.0);
        assert!(sample(&text, "process_cpu_seconds_total").is_some());
        assert!(sample(&text, "keyfob_db_pool_max_connections").unwrap() >= 1.0);
        assert!(sample(&text, r#"keyfob_db_pool_connections{state="idle"}"#).is_some());
        assert!(sample(&text, r#"keyfob_db_pool_connections{state="in_use"}"#).is_some());
        assert!(sample(&text, "keyfob_db_pool_waits_total").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_may_have_their_own_address_and_ask_for_a_token() {
    let db = std::sync::Arc::new(fresh_db(Backend::Sqlite).await.unwrap());
    let token_file = db.dir.path().join("metrics.token");
    let token = "s3cret-scrape-token-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut config = test_config(&db);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.metrics_token_file = Some(token_file.clone());
    let app = spawn_with(config, db.clone()).await;
    let metrics_addr = app.state.config.metrics_listen.unwrap();
    assert_ne!(metrics_addr.port(), 0);

    // Not on the public listener at all.
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 404);

    let url = format!("http://{metrics_addr}/metrics");
    for bad in [None, Some("wrong-token-0123456789"), Some("")] {
        let mut request = app.client.get(&url);
        if let Some(bad) = bad {
            request = request.bearer_auth(bad);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{bad:?}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert!(!response.text().await.unwrap().contains("# HELP"));
    }
    let response = app
        .client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_described(&response.text().await.unwrap());

    // A token alone: the public listener asks for it.
    let db = std::sync::Arc::new(fresh_db(Backend::Sqlite).await.unwrap());
    let mut config = test_config(&db);
    config.metrics_token_file = Some(token_file);
    let app = spawn_with(config, db).await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A token file that is too short stops the start.
    let db = std::sync::Arc::new(fresh_db(Backend::Sqlite).await.unwrap());
    let short = db.dir.path().join("short.token");
    std::fs::write(&short, "short\n").unwrap();
    let mut config = test_config(&db);
    config.metrics_token_file = Some(short);
    let err = keyfob::startup::Application::build(config)
        .await
        .err()
        .expect("a short token is refused");
    assert!(err.to_string().contains("shorter than 16"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_reads_series_keyfob_serves() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/keyfob.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("keyfob_") || word.starts_with("process_") {
                    names.insert(word.strip_suffix("_bucket").unwrap_or(word).to_owned());
                }
            }
        }
    }
    assert!(names.len() >= 15, "{names:?}");

    // A server just started, after one answer, serves every one of them.
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    app.client.get(app.url("/healthz")).send().await.unwrap();
    let text = metrics_text(&app).await;
    for name in names {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "the dashboard reads {name}, which /metrics does not serve"
        );
    }
}
