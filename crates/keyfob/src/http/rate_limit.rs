//! Rate limiters kept in memory, keyed by whatever the caller chooses (an email, a client address,
//! both), and bounded: an attacker choosing keys cannot grow them past a fixed size.
//!
//! Each key is a budget of `limit` attempts per `window` that refills steadily (GCRA, the
//! "generic cell rate algorithm": one timestamp per key, the instant at which the budget would be
//! full again). A key is stored as 16 bytes of the SHA-256 of its parts, so an entry has the same
//! small size whatever the client sent, and the limiter never holds an email or an address.
//!
//! When the map is full, the entries carrying the least debt go first. A full budget is no
//! different from no entry, so those cost nothing to drop; an entry with debt is evicted only when
//! every other entry owes at least as much. Flushing a victim's debt by flooding the map with new
//! keys therefore needs as many keys that each owe *more* than the victim's, and each unit of debt
//! costs the attacker one attempt that passed every other limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How many keys a limiter keeps by default (about 1.6 MB at most).
pub const DEFAULT_CAPACITY: usize = 50_000;

/// A key's fixed-size digest (see [`key_of`]).
pub type Key = [u8; 16];

/// The digest of a key made of `parts` (length-prefixed, so `("ab", "c")` and `("a", "bc")`
/// differ).
pub fn key_of(parts: &[&[u8]]) -> Key {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

pub struct RateLimiter {
    /// The time one attempt's debt takes to pay back (`window / limit`), in microseconds (fine
    /// enough for thousands of attempts a second).
    interval_us: u64,
    /// The whole budget: a key is refused while its debt would exceed this.
    window_us: u64,
    capacity: usize,
    epoch: Instant,
    /// Per key, when its budget is full again (microseconds since `epoch`).
    full_at: Mutex<HashMap<Key, u64>>,
}

impl RateLimiter {
    /// `limit` attempts per `window`, refilling steadily, for up to [`DEFAULT_CAPACITY`] keys.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_capacity(limit, window, DEFAULT_CAPACITY)
    }

    /// Like [`RateLimiter::new`], keeping at most `capacity` keys.
    pub fn with_capacity(limit: u32, window: Duration, capacity: usize) -> Self {
        let window_us = u64::try_from(window.as_micros())
            .unwrap_or(u64::MAX / 4)
            .max(1);
        let interval_us = (window_us / u64::from(limit.max(1))).max(1);
        RateLimiter {
            interval_us,
            window_us: window_us.max(interval_us),
            capacity: capacity.max(1),
            epoch: Instant::now(),
            full_at: Mutex::new(HashMap::new()),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX / 4)
    }

    /// Counts one attempt for the string `key`; `Err(seconds)` says when to retry once over the
    /// limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.take(key_of(&[key.as_bytes()]))
    }

    /// Counts one attempt for `key`, or refuses it with the seconds until one is allowed.
    pub fn take(&self, key: Key) -> Result<(), u64> {
        self.take_at(key, self.now_us())
    }

    /// Gives back one attempt taken for `key` (it succeeded, or another limit refused it).
    pub fn give_back(&self, key: Key) {
        self.give_back_at(key, self.now_us());
    }

    fn take_at(&self, key: Key, now: u64) -> Result<(), u64> {
        let mut map = self.full_at.lock().expect("limiter lock poisoned");
        let full_at = map.get(&key).copied().unwrap_or(now).max(now);
        let next = full_at + self.interval_us;
        if next - now > self.window_us {
            let wait_us = next - now - self.window_us;
            return Err(wait_us.div_ceil(1_000_000).max(1));
        }
        if !map.contains_key(&key) && map.len() >= self.capacity {
            self.evict(&mut map, now);
        }
        map.insert(key, next);
        Ok(())
    }

    fn give_back_at(&self, key: Key, now: u64) {
        let mut map = self.full_at.lock().expect("limiter lock poisoned");
        if let Some(full_at) = map.get_mut(&key) {
            *full_at = full_at.saturating_sub(self.interval_us);
            if *full_at <= now {
                map.remove(&key);
            }
        }
    }

    /// Makes room: drops every entry whose budget is full again, and if that leaves the map more
    /// than seven-eighths full, the entries with the least debt (the earliest `full_at`) down to
    /// seven-eighths, so that a full map costs one scan per eighth of its capacity.
    fn evict(&self, map: &mut HashMap<Key, u64>, now: u64) {
        map.retain(|_, full_at| *full_at > now);
        let keep = (self.capacity - self.capacity / 8).min(self.capacity - 1);
        if map.len() <= keep {
            return;
        }
        let excess = map.len() - keep;
        let mut times: Vec<u64> = map.values().copied().collect();
        let (_, &mut threshold, _) = times.select_nth_unstable(excess - 1);
        let below = times.iter().filter(|&&t| t < threshold).count();
        // Every entry below the threshold goes, and as many at it as make up the excess.
        let mut at_threshold = excess - below;
        map.retain(|_, full_at| {
            if *full_at < threshold {
                false
            } else if *full_at == threshold && at_threshold > 0 {
                at_threshold -= 1;
                false
            } else {
                true
            }
        });
        tracing::warn!(
            dropped = excess,
            kept = map.len(),
            "rate limiter full: dropped the entries with the least debt"
        );
    }

    /// How many keys the limiter holds.
    pub fn len(&self) -> usize {
        self.full_at.lock().expect("limiter lock poisoned").len()
    }

    /// Whether the limiter holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` seconds in the limiter's microseconds.
    fn secs(n: u64) -> u64 {
        n * 1_000_000
    }

    #[test]
    fn many_attempts_a_second_are_counted_exactly() {
        let limiter = RateLimiter::new(5_000, Duration::from_secs(1));
        let key = key_of(&[b"k"]);
        for _ in 0..5_000 {
            limiter.take_at(key, 0).unwrap();
        }
        assert!(limiter.take_at(key, 0).is_err());
        // 200 µs later, one more.
        assert!(limiter.take_at(key, 200).is_ok());
        assert!(limiter.take_at(key, 200).is_err());
    }

    #[test]
    fn limits_per_key() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let retry = limiter.check("a").unwrap_err();
        assert!((1..=60).contains(&retry));
        assert!(limiter.check("b").is_ok());
    }

    #[test]
    fn the_budget_refills_steadily_and_says_when() {
        let limiter = RateLimiter::new(4, Duration::from_secs(60));
        let key = key_of(&[b"k"]);
        for _ in 0..4 {
            limiter.take_at(key, 0).unwrap();
        }
        // One attempt comes back every 15 s.
        assert_eq!(limiter.take_at(key, 0), Err(15));
        assert_eq!(limiter.take_at(key, secs(10)), Err(5));
        assert!(limiter.take_at(key, secs(15)).is_ok());
        assert!(limiter.take_at(key, secs(15)).is_err());
        // After a whole window the budget is full again.
        for _ in 0..4 {
            limiter.take_at(key, secs(90)).unwrap();
        }
    }

    #[test]
    fn a_given_back_attempt_is_not_counted() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let key = key_of(&[b"k"]);
        for _ in 0..10 {
            limiter.take_at(key, 0).unwrap();
            limiter.give_back_at(key, 0);
        }
        assert!(limiter.is_empty(), "a full budget is not kept");
        limiter.take_at(key, 0).unwrap();
        limiter.take_at(key, 0).unwrap();
        assert!(limiter.take_at(key, 0).is_err());
    }

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(key_of(&[b"ab", b"c"]), key_of(&[b"a", b"bc"]));
        assert_eq!(key_of(&[b"ab", b"c"]), key_of(&[b"ab", b"c"]));
    }

    #[test]
    fn hundreds_of_thousands_of_keys_stay_within_the_bound() {
        let capacity = 10_000;
        let limiter = RateLimiter::with_capacity(5, Duration::from_secs(900), capacity);
        for n in 0u32..300_000 {
            limiter
                .take_at(key_of(&[b"flood", &n.to_be_bytes()]), u64::from(n / 1000))
                .unwrap();
            assert!(limiter.len() <= capacity);
        }
        assert!(limiter.len() > capacity / 2, "the map is used, not emptied");
    }

    #[test]
    fn the_default_bound_holds_for_three_hundred_thousand_client_keys() {
        let limiter = RateLimiter::new(10, Duration::from_secs(60));
        for n in 0u32..300_000 {
            limiter
                .check(&format!("user-login-ip:198.51.{}.{}", n / 256, n % 256))
                .unwrap();
        }
        assert!(limiter.len() <= DEFAULT_CAPACITY, "{}", limiter.len());
    }

    #[test]
    fn flooding_new_keys_does_not_flush_a_victims_debt() {
        let limiter = RateLimiter::with_capacity(5, Duration::from_secs(900), 1_000);
        let victim = key_of(&[b"victim@example.com"]);
        // An attacker spends the victim's whole budget…
        for _ in 0..5 {
            limiter.take_at(victim, 0).unwrap();
        }
        // …then floods the limiter with new keys, each owing one attempt, to push it out.
        for n in 0u32..200_000 {
            limiter
                .take_at(key_of(&[b"flood", &n.to_be_bytes()]), 1)
                .unwrap();
        }
        assert!(limiter.len() <= 1_000);
        assert!(
            limiter.take_at(victim, 2).is_err(),
            "the victim's debt survived the flood"
        );
    }
}
