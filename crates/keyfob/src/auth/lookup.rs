//! Reading an API key through to the database when the in-memory index does not know it, so a key
//! made by the command line or on another node works on its very first request, before the change
//! feed brings it. It is a read, never a write, and it is bounded three ways, because anyone can
//! send random keys:
//!
//! - **single flight**: concurrent requests with one unknown key share one database read (the
//!   negative cache's placeholder makes the others wait for it);
//! - **negative cache**: a hash found missing (or revoked) is answered "unknown" from memory for a
//!   minute; at most [`NEGATIVE_CAPACITY`] entries, the least useful evicted first;
//! - **rate limit**: at most `key_lookups_per_second` reads per node; over it a key the index does
//!   not know is answered as unknown (401) without a read.
//!
//! When the read fails (the database is down) or does not answer within [`LOOKUP_TIMEOUT`], the
//! answer is 503: the key may be good, and the client should retry rather than be told it is
//! wrong. Only requests the rate limit admits can wait that long; the others are answered at once.
//! Keys the index knows keep working from memory throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keyfob_domain::secret::constant_time_eq;
use keyfob_domain::time::Timestamp;
use quick_cache::sync::Cache;

use super::index::KeyEntry;
use crate::http::RateLimiter;
use crate::http::error::ApiError;
use crate::state::AppState;

/// Most unknown key hashes remembered at once (about 150 bytes each).
pub const NEGATIVE_CAPACITY: usize = 10_000;
/// How long "this key is unknown" is believed. A key created since is added to the index by the
/// change feed, which also drops its negative entry, so this only bounds staleness.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// The longest a request waits for a read-through (its own or the one it joined).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The read-through's bounded state; lives in the [`super::AuthIndex`].
pub struct KeyLookups {
    /// Key hash → until when it is known to be unknown.
    misses: Cache<String, Timestamp>,
    limiter: RateLimiter,
    /// Database reads made so far.
    reads: AtomicU64,
}

impl KeyLookups {
    pub fn new(per_second: u32) -> KeyLookups {
        KeyLookups {
            misses: Cache::new(NEGATIVE_CAPACITY),
            limiter: RateLimiter::new(per_second, Duration::from_secs(1)),
            reads: AtomicU64::new(0),
        }
    }

    /// Drops a negative answer for `hash` (the key now exists).
    pub fn forget(&self, hash: &str) {
        self.misses.remove(hash);
    }

    /// Database reads made so far by the read-through.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Unknown hashes remembered now.
    pub fn negative_len(&self) -> usize {
        self.misses.len()
    }
}

/// The live key whose SHA-256 is `hash`, read through to the database; `None` when it is unknown,
/// revoked, or the lookup budget is spent.
pub async fn look_up_key(state: &AppState, hash: &str) -> Result<Option<Arc<KeyEntry>>, ApiError> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, look_up(state, hash)).await {
        Ok(result) => result,
        Err(_) => {
            metrics::counter!("keyfob_api_key_lookups_total", "result" => "timeout").increment(1);
            tracing::warn!("reading an API key through to the database timed out");
            Err(ApiError::Unavailable)
        }
    }
}

async fn look_up(state: &AppState, hash: &str) -> Result<Option<Arc<KeyEntry>>, ApiError> {
    let lookups = &state.index.lookups;
    loop {
        let guard = match lookups.misses.get_value_or_guard_async(hash).await {
            Ok(until) if until > Timestamp::now() => return Ok(None),
            Ok(_) => {
                lookups.misses.remove(hash);
                continue;
            }
            Err(guard) => guard,
        };
        // Whoever held the placeholder before may have added the key meanwhile.
        if let Some(entry) = known(state, hash) {
            return Ok(Some(entry));
        }
        if lookups.limiter.check("").is_err() {
            metrics::counter!("keyfob_api_key_lookups_total", "result" => "limited").increment(1);
            return Ok(None);
        }
        let removals = state.index.key_removals();
        lookups.reads.fetch_add(1, Ordering::Relaxed);
        let row = match state.store.find_api_key_by_hash(hash).await {
            Ok(row) => row,
            Err(err) => {
                metrics::counter!("keyfob_api_key_lookups_total", "result" => "error").increment(1);
                tracing::warn!(error = %err, "reading an API key through to the database failed");
                // Dropping the placeholder lets the next waiter try.
                return Err(ApiError::Unavailable);
            }
        };
        return match row.filter(|r| r.revoked_at.is_none() && constant_time_eq(&r.key_hash, hash)) {
            Some(row) => {
                metrics::counter!("keyfob_api_key_lookups_total", "result" => "found").increment(1);
                // Waiters find it in the index once the placeholder is dropped.
                Ok(Some(
                    state
                        .index
                        .add_key_read_through(&row, removals)
                        .unwrap_or_else(|| Arc::new(KeyEntry::from(&row))),
                ))
            }
            None => {
                metrics::counter!("keyfob_api_key_lookups_total", "result" => "unknown")
                    .increment(1);
                let _ = guard.insert(Timestamp::now() + NEGATIVE_TTL);
                Ok(None)
            }
        };
    }
}

fn known(state: &AppState, hash: &str) -> Option<Arc<KeyEntry>> {
    state
        .index
        .key_by_hash(hash)
        .filter(|entry| constant_time_eq(&entry.key_hash, hash))
}
