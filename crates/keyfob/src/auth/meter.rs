//! Each request made with an API key, or with a token an API key minted, is metered: counted
//! against the key's rate limit before its handler runs ([`admit`], from the [`super::Auth`]
//! extractor), then, once answered, counted in the key's usage by outcome and given the
//! `RateLimit` headers ([`meter`], a middleware around the whole application).
//!
//! The two meet through a [`MeterSlot`] the middleware puts in the request's extensions and reads
//! back after the answer: the extractor cannot touch the response, and the middleware does not
//! know who called until the extractor has verified it.
//!
//! The headers follow the IETF draft "RateLimit header fields for HTTP": `RateLimit-Policy:
//! "key";q=600;w=60` and `RateLimit: "key";r=599;t=30`, and, for clients written against its
//! earlier versions, `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`. They describe
//! the share this node enforces (see [`super::limits`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use keyfob_domain::key_policy::Quota;
use keyfob_domain::time::Timestamp;
use keyfob_domain::{Principal, PrincipalKind};
use keyfob_store::{Jti, KeyId, UsageVia};

use crate::http::error::ApiError;
use crate::state::AppState;

/// Who a request was metered for, filled by [`admit`].
#[derive(Debug)]
struct Metered {
    key_id: KeyId,
    via: UsageVia,
    /// The minted token, when the request was made with one.
    jti: Option<Jti>,
    quota: Option<Quota>,
}

/// Where [`admit`] leaves what [`meter`] reads after the answer.
#[derive(Clone, Default)]
pub struct MeterSlot(Arc<Mutex<Option<Metered>>>);

impl MeterSlot {
    fn put(&self, metered: Metered) {
        *self.0.lock().expect("meter lock poisoned") = Some(metered);
    }

    fn take(&self) -> Option<Metered> {
        self.0.lock().expect("meter lock poisoned").take()
    }
}

/// Counts a verified request against the rate limit of the key behind it; a 429 when that is
/// spent. Requests with no key behind them (user sessions, applications' own tokens) pass.
pub fn admit(
    state: &AppState,
    slot: Option<&MeterSlot>,
    principal: &Principal,
) -> Result<(), ApiError> {
    let Some(key_id) = principal.key_behind() else {
        return Ok(());
    };
    let (via, jti) = match &principal.kind {
        PrincipalKind::ApiKey { .. } => (UsageVia::Key, None),
        PrincipalKind::Jwt { jti, .. } => (UsageVia::Token, Some(jti.clone())),
    };
    // A key made elsewhere a moment ago, whose token this node verified before the change feed
    // brought the key, is not limited until it does (within the sync interval).
    let limit = state
        .index
        .key_by_id(key_id)
        .and_then(|key| key.rate_limit)
        .map(|limit| limit.share(state.config.rate_limit_nodes));
    let (quota, refused) = match limit {
        None => (None, None),
        Some(limit) => match state.index.budgets.take(key_id, limit) {
            Ok(quota) => (Some(quota), None),
            Err(refusal) => (Some(refusal.quota), Some(refusal.retry_after_secs)),
        },
    };
    if let Some(slot) = slot {
        slot.put(Metered {
            key_id: key_id.clone(),
            via,
            jti,
            quota,
        });
    }
    match refused {
        Some(retry_after) => {
            metrics::counter!("keyfob_key_rate_limited_total").increment(1);
            Err(ApiError::TooManyRequests { retry_after })
        }
        None => Ok(()),
    }
}

/// The middleware: gives each request a [`MeterSlot`], and after the answer counts it in its
/// key's usage and adds the `RateLimit` headers.
pub async fn meter(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let slot = MeterSlot::default();
    request.extensions_mut().insert(slot.clone());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    // Only read when a proxy is trusted to say who the client is.
    let forwarded: Vec<HeaderValue> = if state.config.trusted_proxies.is_empty() {
        Vec::new()
    } else {
        request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .cloned()
            .collect()
    };
    let mut response = next.run(request).await;
    let Some(metered) = slot.take() else {
        return response;
    };
    let now = Timestamp::now();
    let usage = &state.index.usage;
    usage.record(&metered.key_id, metered.via, response.status(), now);
    if let Some(jti) = &metered.jti
        && !usage.record_token(jti, response.status(), now)
    {
        metrics::counter!("keyfob_token_usage_dropped_total").increment(1);
    }
    if metered.via == UsageVia::Key {
        let ip = peer.map(|peer| {
            let forwarded: Vec<&str> = forwarded.iter().filter_map(|v| v.to_str().ok()).collect();
            keyfob_domain::net::client_ip(peer, &forwarded, &state.config.trusted_proxies)
                .to_string()
        });
        usage.note_use(&metered.key_id, now, ip);
    }
    if let Some(quota) = metered.quota {
        rate_limit_headers(response.headers_mut(), &quota);
    }
    response
}

/// The headers that tell a client where it stands against its key's limit.
fn rate_limit_headers(headers: &mut HeaderMap, quota: &Quota) {
    let text = |value: String| HeaderValue::from_str(&value).ok();
    let pairs = [
        (
            "ratelimit-policy",
            text(format!("\"key\";q={};w={}", quota.limit, quota.window_secs)),
        ),
        (
            "ratelimit",
            text(format!(
                "\"key\";r={};t={}",
                quota.remaining, quota.reset_secs
            )),
        ),
        ("ratelimit-limit", Some(HeaderValue::from(quota.limit))),
        (
            "ratelimit-remaining",
            Some(HeaderValue::from(quota.remaining)),
        ),
        ("ratelimit-reset", Some(HeaderValue::from(quota.reset_secs))),
    ];
    for (name, value) in pairs {
        if let Some(value) = value {
            headers.insert(name, value);
        }
    }
}
