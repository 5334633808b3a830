//! Per-key rate limits, enforced in memory on each node. A key limited to `N` per window lets
//! each of the cluster's `rate_limit_nodes` nodes serve its share, `ceil(N / nodes)`, with the
//! budget refilling steadily ([`RateLimit::take`], GCRA): no node asks another, and nothing is
//! written per request. With a balancer that spreads a key's requests evenly the cluster allows
//! about `N`, never more than `nodes × ceil(N / nodes)`; when one node gets all of them, it
//! allows its share alone. docs/SECURITY.md states this tolerance.
//!
//! A budget is one number per limited key (when it is full again), kept across the index's
//! reloads and forgotten with the key; changing a key's limit starts it afresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use keyfob_domain::key_policy::{Quota, RateLimit, Refusal};
use keyfob_store::KeyId;

pub struct KeyBudgets {
    epoch: Instant,
    /// Key → the limit its budget counts against, and when that budget is full again
    /// (microseconds since `epoch`).
    full_at: Mutex<HashMap<KeyId, (RateLimit, u64)>>,
}

impl Default for KeyBudgets {
    fn default() -> Self {
        KeyBudgets {
            epoch: Instant::now(),
            full_at: Mutex::default(),
        }
    }
}

impl KeyBudgets {
    /// Counts one request of `key_id` against `limit` (this node's share), or refuses it.
    pub fn take(&self, key_id: &KeyId, limit: RateLimit) -> Result<Quota, Refusal> {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX / 4);
        let mut map = self.full_at.lock().expect("budget lock poisoned");
        // The key's id is cloned only the first time: this runs on every metered request.
        if let Some((counted, full_at)) = map.get_mut(key_id) {
            let start = if *counted == limit { *full_at } else { 0 };
            let (next, quota) = limit.take(start, now)?;
            *counted = limit;
            *full_at = next;
            return Ok(quota);
        }
        let (next, quota) = limit.take(0, now)?;
        map.insert(key_id.clone(), (limit, next));
        Ok(quota)
    }

    /// Drops a key's budget (the key was revoked).
    pub fn forget(&self, key_id: &str) {
        self.full_at
            .lock()
            .expect("budget lock poisoned")
            .remove(key_id);
    }

    /// Keeps the budgets of keys `keep` says to keep.
    pub fn retain(&self, keep: impl Fn(&KeyId) -> bool) {
        self.full_at
            .lock()
            .expect("budget lock poisoned")
            .retain(|id, _| keep(id));
    }
}
