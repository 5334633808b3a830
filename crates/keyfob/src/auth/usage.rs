//! What each API key was used for, counted in memory per request and written in batches by
//! [`super::sync`]: requests per key, UTC day and way in (the key itself or a token it minted),
//! by outcome, and the time and client address of the key's last use. The maps hold one entry per
//! key that was used since the last write (a day boundary adds one more), so they stay as small as
//! the set of keys.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::StatusCode;
use keyfob_domain::time::Timestamp;
use keyfob_store::{KeyId, KeyUse, UsageCounts, UsageRow, UsageVia};

const MS_PER_DAY: i64 = 86_400_000;

/// The UTC day an instant falls in, as days since 1970-01-01.
pub fn day_of(at: Timestamp) -> i64 {
    at.unix_ms().div_euclid(MS_PER_DAY)
}

#[derive(Default)]
pub struct UsageTally {
    counts: Mutex<HashMap<(KeyId, i64, UsageVia), UsageCounts>>,
    /// Key → its latest direct use and the address it came from.
    last: Mutex<HashMap<KeyId, (Timestamp, Option<String>)>>,
}

impl UsageTally {
    /// Counts one answered request.
    pub fn record(&self, key_id: &KeyId, via: UsageVia, status: StatusCode, at: Timestamp) {
        let mut counts = self.counts.lock().expect("usage lock poisoned");
        let entry = counts.entry((key_id.clone(), day_of(at), via)).or_default();
        match status.as_u16() {
            429 => entry.limited += 1,
            400..=499 => entry.client_errors += 1,
            500.. => entry.server_errors += 1,
            _ => entry.ok += 1,
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
                .map(|((key_id, day, via), counts)| UsageRow {
                    key_id,
                    day,
                    via,
                    counts,
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
                .entry((row.key_id, row.day, row.via))
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
}
