//! What `/metrics` serves. Every series is described here once, so each has its `# HELP` and
//! `# TYPE`; the counters of what Keyfob does (mints, refreshes, reveals, logins) are counted by
//! the functions below, called where those things happen; the gauges (the database pool, the
//! process) are read when `/metrics` is scraped ([`refresh_gauges`]).
//!
//! Every label value comes from a closed set written here or in the route table, so no client can
//! add a series.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::state::AppState;

/// Describes every series. Runs once, when the process's recorder is installed.
pub fn describe() {
    // HTTP.
    describe_counter!(
        "keyfob_http_requests_total",
        "Answers given, by method, route template and status"
    );
    describe_histogram!(
        "keyfob_http_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's arrival to its answer, by method, route template and status"
    );
    describe_gauge!("keyfob_http_connections", "Connections open now");
    describe_counter!(
        "keyfob_http_connections_refused_total",
        "Connections closed at once, by reason (per_ip: the address holds its maximum)"
    );
    describe_counter!(
        "keyfob_http_connections_timed_out_total",
        "Connections closed because the client was too slow to send its request"
    );
    describe_counter!(
        "keyfob_http_accept_errors_total",
        "Errors accepting a connection (such as running out of file descriptors)"
    );

    // What Keyfob does.
    describe_counter!(
        "keyfob_tokens_minted_total",
        "Tokens minted with an API key (POST /auth) or on the dashboard, by where"
    );
    describe_counter!(
        "keyfob_session_tokens_issued_total",
        "Tokens issued to applications at /auth/token, by grant type"
    );
    describe_counter!(
        "keyfob_refreshes_total",
        "Refresh-token uses, by result (ok, refused, reused)"
    );
    describe_counter!(
        "keyfob_refresh_reuse_total",
        "Refresh tokens presented again after their grace window: each ended its session"
    );
    describe_counter!(
        "keyfob_vault_reveals_total",
        "Sensitive values shown in the clear, by where (api, dashboard)"
    );
    describe_counter!(
        "keyfob_logins_total",
        "Password checks of the login forms, by who (owner, user) and result (ok, failed, throttled)"
    );
    describe_counter!(
        "keyfob_key_rate_limited_total",
        "Requests refused with 429 because their API key's rate limit was spent"
    );
    describe_counter!(
        "keyfob_api_key_lookups_total",
        "Reads of API keys the node did not know yet, by result"
    );
    describe_counter!(
        "keyfob_token_usage_dropped_total",
        "Token uses not counted because the usage tally was full"
    );
    describe_counter!(
        "keyfob_batch_items_dropped_total",
        "Writes a background writer dropped because its queue was full, by writer"
    );
    describe_counter!(
        "keyfob_mail_total",
        "Messages handled by the mailer, by result (sent, refused, failed, dropped, invalid)"
    );
    describe_counter!(
        "keyfob_mail_retries_total",
        "Messages tried again after the mail server failed"
    );

    // The database pool.
    describe_gauge!(
        "keyfob_db_pool_connections",
        "Database connections, by state (in_use, idle)"
    );
    describe_gauge!(
        "keyfob_db_pool_max_connections",
        "The most connections the pool opens"
    );
    describe_counter!(
        "keyfob_db_pool_waits_total",
        "Database calls that found every connection busy and had to wait for one"
    );

    start_at_zero();

    // The process (process_* from the metrics-process collector).
    process_collector().describe();
    describe_gauge!(
        "keyfob_build_info",
        "Always 1; the version label says which Keyfob runs"
    );
}

/// Every counter of a closed label set, at zero: each series is scraped from the start, so a
/// dashboard and `rate()` see the first event rather than nothing.
fn start_at_zero() {
    for at in ["api", "dashboard"] {
        metrics::counter!("keyfob_tokens_minted_total", "at" => at).absolute(0);
        metrics::counter!("keyfob_vault_reveals_total", "at" => at).absolute(0);
    }
    for grant_type in ["authorization_code", "refresh_token", "client_credentials"] {
        metrics::counter!("keyfob_session_tokens_issued_total", "grant_type" => grant_type)
            .absolute(0);
    }
    for result in ["ok", "refused", "reused"] {
        metrics::counter!("keyfob_refreshes_total", "result" => result).absolute(0);
    }
    for who in ["owner", "user"] {
        for result in ["ok", "failed", "throttled"] {
            metrics::counter!("keyfob_logins_total", "who" => who, "result" => result).absolute(0);
        }
    }
    for result in ["sent", "refused", "failed", "dropped", "invalid"] {
        metrics::counter!("keyfob_mail_total", "result" => result).absolute(0);
    }
    for result in ["found", "unknown", "limited", "error", "timeout"] {
        metrics::counter!("keyfob_api_key_lookups_total", "result" => result).absolute(0);
    }
    metrics::counter!("keyfob_http_connections_refused_total", "reason" => "per_ip").absolute(0);
    for name in [
        "keyfob_refresh_reuse_total",
        "keyfob_key_rate_limited_total",
        "keyfob_mail_retries_total",
        "keyfob_http_connections_timed_out_total",
        "keyfob_http_accept_errors_total",
        "keyfob_token_usage_dropped_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    metrics::gauge!("keyfob_http_connections").increment(0.0);
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Reads the gauges that describe a moment: the process (resident memory, open files, CPU time)
/// and the database pool. Runs on every scrape.
pub fn refresh_gauges(state: &AppState) {
    process_collector().collect();
    let pool = state.store.pool_stats();
    metrics::gauge!("keyfob_db_pool_connections", "state" => "in_use")
        .set(f64::from(pool.size) - pool.idle as f64);
    metrics::gauge!("keyfob_db_pool_connections", "state" => "idle").set(pool.idle as f64);
    metrics::gauge!("keyfob_db_pool_max_connections").set(f64::from(pool.max));
    metrics::counter!("keyfob_db_pool_waits_total").absolute(pool.waits);
    metrics::gauge!("keyfob_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Where a token was minted.
#[derive(Debug, Clone, Copy)]
pub enum MintedAt {
    /// `POST /auth`, with an API key.
    Api,
    /// The dashboard's mint form.
    Dashboard,
}

pub fn token_minted(at: MintedAt) {
    let at = match at {
        MintedAt::Api => "api",
        MintedAt::Dashboard => "dashboard",
    };
    metrics::counter!("keyfob_tokens_minted_total", "at" => at).increment(1);
}

/// A token issued at `/auth/token`, by its grant type (one of the three the endpoint takes).
pub fn session_token_issued(grant_type: &'static str) {
    metrics::counter!("keyfob_session_tokens_issued_total", "grant_type" => grant_type)
        .increment(1);
}

/// How a refresh token's use ended.
#[derive(Debug, Clone, Copy)]
pub enum Refreshed {
    Ok,
    Refused,
    Reused,
}

pub fn refreshed(result: Refreshed) {
    let result = match result {
        Refreshed::Ok => "ok",
        Refreshed::Refused => "refused",
        Refreshed::Reused => "reused",
    };
    metrics::counter!("keyfob_refreshes_total", "result" => result).increment(1);
}

/// `count` sensitive values shown in the clear, through the API or on the dashboard.
pub fn revealed(at: &'static str, count: usize) {
    if count > 0 {
        metrics::counter!("keyfob_vault_reveals_total", "at" => at).increment(count as u64);
    }
}

/// A login form's password check: `who` is `owner` or `user`, `result` `ok`, `failed` or
/// `throttled`.
pub fn login_checked(who: &'static str, result: &'static str) {
    metrics::counter!("keyfob_logins_total", "who" => who, "result" => result).increment(1);
}
