//! What each API key was used for, counted in memory per request and written in batches by
//! [`super::sync`]: requests per key, UTC day and way in (the key itself or a token it minted),
//! by outcome, and the time and client address of the key's last use; and the same per minted
//! token (its daily counts and last use). The maps hold one entry per key, or token, used since
//! the last write (a day boundary adds one more). Keys are as few as the owners made; tokens are
//! many, so at most [`MAX_TOKENS_PER_FLUSH`] tokens are followed between two writes, and the
//! requests of any more count for their key only.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::StatusCode;
use keyfob_domain::time::Timestamp;
use keyfob_store::{Jti, KeyId, KeyUse, TokenUsageRow, UsageCounts, UsageRow, UsageVia};

const MS_PER_DAY: i64 = 86_400_000;
/// Most distinct minted tokens followed between two writes (about 100 bytes each).
pub const MAX_TOKENS_PER_FLUSH: usize = 50_000;

/// The UTC day an instant falls in, as days since 1970-01-01.
pub fn day_of(at: Timestamp) -> i64 {
    at.unix_ms().div_euclid(MS_PER_DAY)
}

/// One key's counts by (day, way in).
type KeyDays = HashMap<(i64, UsageVia), UsageCounts>;

#[derive(Default)]
pub struct UsageTally {
    /// Key → (day, way in) → counts: nested so that counting a known key allocates nothing.
    counts: Mutex<HashMap<KeyId, KeyDays>>,
    /// Key → its latest direct use and the address it came from.
    last: Mutex<HashMap<KeyId, (Timestamp, Option<String>)>>,
    /// Minted token → its counts today (and yesterday, across midnight) and its last use.
    tokens: Mutex<HashMap<Jti, TokenTally>>,
}

#[derive(Default)]
struct TokenTally {
    days: Vec<(i64, UsageCounts)>,
    last: Timestamp,
}

fn count(counts: &mut UsageCounts, status: StatusCode) {
    match status.as_u16() {
        429 => counts.limited += 1,
        400..=499 => counts.client_errors += 1,
        500.. => counts.server_errors += 1,
        _ => counts.ok += 1,
    }
}

impl UsageTally {
    /// Counts one answered request.
    pub fn record(&self, key_id: &KeyId, via: UsageVia, status: StatusCode, at: Timestamp) {
        let mut counts = self.counts.lock().expect("usage lock poisoned");
        let slot = (day_of(at), via);
        match counts.get_mut(key_id) {
            Some(days) => count(days.entry(slot).or_default(), status),
            None => count(
                counts
                    .entry(key_id.clone())
                    .or_default()
                    .entry(slot)
                    .or_default(),
                status,
            ),
        }
    }

    /// Counts one answered request made with the minted token `jti`; `false` when too many
    /// tokens are followed already (the request still counts for its key).
    pub fn record_token(&self, jti: &Jti, status: StatusCode, at: Timestamp) -> bool {
        let mut tokens = self.tokens.lock().expect("usage lock poisoned");
        if !tokens.contains_key(jti) && tokens.len() >= MAX_TOKENS_PER_FLUSH {
            return false;
        }
        let tally = tokens.entry(jti.clone()).or_default();
        let day = day_of(at);
        match tally.days.iter_mut().find(|(d, _)| *d == day) {
            Some((_, counts)) => count(counts, status),
            None => {
                let mut counts = UsageCounts::default();
                count(&mut counts, status);
                tally.days.push((day, counts));
            }
        }
        tally.last = tally.last.max(at);
        true
    }

    /// The tokens' counts and last uses since the last call.
    pub fn take_tokens(&self) -> (Vec<TokenUsageRow>, Vec<(Jti, Timestamp)>) {
        let tokens = std::mem::take(&mut *self.tokens.lock().expect("usage lock poisoned"));
        let mut rows = Vec::new();
        let mut uses = Vec::with_capacity(tokens.len());
        for (jti, tally) in tokens {
            for (day, counts) in tally.days {
                rows.push(TokenUsageRow {
                    jti: jti.clone(),
                    day,
                    counts,
                });
            }
            uses.push((jti, tally.last));
        }
        (rows, uses)
    }

    /// Puts tokens' counts and last uses back after a failed write.
    pub fn put_back_tokens(&self, rows: Vec<TokenUsageRow>, uses: Vec<(Jti, Timestamp)>) {
        let mut tokens = self.tokens.lock().expect("usage lock poisoned");
        for row in rows {
            let tally = tokens.entry(row.jti).or_default();
            match tally.days.iter_mut().find(|(d, _)| *d == row.day) {
                Some((_, counts)) => counts.add(&row.counts),
                None => tally.days.push((row.day, row.counts)),
            }
        }
        for (jti, at) in uses {
            let tally = tokens.entry(jti).or_default();
            tally.last = tally.last.max(at);
        }
    }

    /// Notes a request made with the key itself, from `ip`.
    pub fn note_use(&self, key_id: &KeyId, at: Timestamp, ip: Option<String>) {
        let mut last = self.last.lock().expect("usage lock poisoned");
        match last.get_mut(key_id) {
            Some(seen) if seen.0 > at => {}
            Some(seen) => *seen = (at, ip.or(seen.1.take())),
            None => {
                last.insert(key_id.clone(), (at, ip));
            }
        }
    }

    /// Everything counted since the last call.
    pub fn take(&self) -> (Vec<UsageRow>, Vec<KeyUse>) {
        let counts = std::mem::take(&mut *self.counts.lock().expect("usage lock poisoned"));
        let last = std::mem::take(&mut *self.last.lock().expect("usage lock poisoned"));
        (
            counts
                .into_iter()
                .flat_map(|(key_id, days)| {
                    days.into_iter().map(move |((day, via), counts)| UsageRow {
                        key_id: key_id.clone(),
                        day,
                        via,
                        counts,
                    })
                })
                .collect(),
            last.into_iter()
                .map(|(key_id, (at, ip))| KeyUse { key_id, at, ip })
                .collect(),
        )
    }

    /// Puts counts back after a failed write, adding them to what came meanwhile.
    pub fn put_back_counts(&self, rows: Vec<UsageRow>) {
        let mut counts = self.counts.lock().expect("usage lock poisoned");
        for row in rows {
            counts
                .entry(row.key_id)
                .or_default()
                .entry((row.day, row.via))
                .or_default()
                .add(&row.counts);
        }
    }

    /// Puts last uses back after a failed write.
    pub fn put_back_uses(&self, uses: Vec<KeyUse>) {
        for KeyUse { key_id, at, ip } in uses {
            self.note_use(&key_id, at, ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_outcome_day_and_way_in() {
        let tally = UsageTally::default();
        let key = KeyId::from("k");
        let day = Timestamp::from_unix_ms(3 * MS_PER_DAY + 5);
        for status in [200, 201, 304, 400, 404, 429, 429, 500] {
            tally.record(
                &key,
                UsageVia::Key,
                StatusCode::from_u16(status).unwrap(),
                day,
            );
        }
        tally.record(&key, UsageVia::Token, StatusCode::OK, day);
        tally.record(
            &key,
            UsageVia::Key,
            StatusCode::OK,
            Timestamp::from_unix_ms(4 * MS_PER_DAY),
        );
        tally.note_use(&key, day, Some("10.0.0.1".into()));
        tally.note_use(&key, Timestamp::UNIX_EPOCH, Some("10.0.0.9".into()));
        let (mut rows, uses) = tally.take();
        rows.sort_by_key(|r| (r.day, r.via));
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].day, rows[0].via), (3, UsageVia::Key));
        assert_eq!(
            rows[0].counts,
            UsageCounts {
                ok: 3,
                client_errors: 2,
                limited: 2,
                server_errors: 1
            }
        );
        assert_eq!((rows[1].via, rows[1].counts.ok), (UsageVia::Token, 1));
        assert_eq!((rows[2].day, rows[2].counts.ok), (4, 1));
        assert_eq!(uses.len(), 1);
        assert_eq!(uses[0].ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(uses[0].at, day);
        // A failed write puts them back, added to what came meanwhile.
        tally.record(&key, UsageVia::Key, StatusCode::OK, day);
        tally.put_back_counts(rows);
        let (rows, _) = tally.take();
        let first = rows
            .iter()
            .find(|r| r.day == 3 && r.via == UsageVia::Key)
            .unwrap();
        assert_eq!(first.counts.ok, 4);
        assert!(tally.take().0.is_empty());
        assert_eq!(day_of(Timestamp::from_unix_ms(-1)), -1);
    }

    #[test]
    fn tokens_are_counted_by_day_up_to_a_bound() {
        let tally = UsageTally::default();
        let jti = Jti::from("t");
        let day = Timestamp::from_unix_ms(3 * MS_PER_DAY + 5);
        let next = Timestamp::from_unix_ms(4 * MS_PER_DAY + 5);
        assert!(tally.record_token(&jti, StatusCode::OK, day));
        assert!(tally.record_token(&jti, StatusCode::NOT_FOUND, day));
        assert!(tally.record_token(&jti, StatusCode::OK, next));
        let (mut rows, uses) = tally.take_tokens();
        rows.sort_by_key(|r| r.day);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].counts.ok, rows[0].counts.client_errors), (1, 1));
        assert_eq!(rows[1].counts.ok, 1);
        assert_eq!(uses, [(jti.clone(), next)]);
        tally.put_back_tokens(rows, uses);
        assert!(tally.record_token(&jti, StatusCode::OK, day));
        let (rows, _) = tally.take_tokens();
        assert_eq!(rows.iter().find(|r| r.day == 3).unwrap().counts.ok, 2);
        // Past the bound, a new token is not followed, one already followed still is.
        for i in 0..MAX_TOKENS_PER_FLUSH {
            assert!(tally.record_token(&Jti::from(format!("j{i}")), StatusCode::OK, day));
        }
        assert!(!tally.record_token(&Jti::from("one too many"), StatusCode::OK, day));
        assert!(tally.record_token(&Jti::from("j0"), StatusCode::OK, day));
    }
}
