//! One type for an instant. Keyfob keeps every time as Unix milliseconds (the store's integer
//! columns, the numbers a JSON answer shows); a JWT's `iat`, `nbf` and `exp` are whole Unix
//! seconds. [`Timestamp`] is the only place that converts between the two, and between either and
//! a calendar date-time.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

const MS_PER_SEC: i64 = 1000;
const NS_PER_MS: i128 = 1_000_000;

/// An instant: Unix milliseconds inside. Serialized as that number, and stored in the same
/// integer column (with the `sqlx` feature, see `column`).
///
/// Adding or subtracting a [`Duration`] saturates instead of overflowing, so "for ever" stays
/// [`Timestamp::MAX`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);
    /// Later than any instant that happens: "until further notice".
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// The wall clock now.
    pub fn now() -> Timestamp {
        Timestamp::from(OffsetDateTime::now_utc())
    }

    pub const fn from_unix_ms(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// The start of Unix second `secs` (a JWT's `iat` or `exp`).
    pub const fn from_unix_secs(secs: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(MS_PER_SEC))
    }

    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    /// The Unix second this instant falls in (as a JWT's `iat` or `exp` says it).
    pub const fn unix_secs(self) -> i64 {
        self.0.div_euclid(MS_PER_SEC)
    }

    /// The start of the second this instant falls in.
    pub const fn whole_secs(self) -> Timestamp {
        Timestamp::from_unix_secs(self.unix_secs())
    }

    /// How long after `earlier` this is; zero when it is not later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// The calendar date-time, in UTC; `None` beyond what a date-time can hold (past the year
    /// 9999, as [`Timestamp::MAX`]).
    pub fn date_time(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * NS_PER_MS).ok()
    }

    /// The calendar date-time, in UTC; the epoch beyond what a date-time can hold.
    pub fn to_date_time(self) -> OffsetDateTime {
        self.date_time().unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// RFC 3339 in UTC, to the second (`2027-01-01T00:00:00Z`), as every API answer shows a time.
    pub fn rfc3339(self) -> String {
        crate::expiry::format_instant(self.to_date_time())
    }
}

/// A count of seconds as a setting or a column keeps it (`refresh_idle_secs`), as a [`Duration`];
/// a negative count is none.
pub fn secs(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

impl From<OffsetDateTime> for Timestamp {
    /// The millisecond `at` falls in.
    fn from(at: OffsetDateTime) -> Timestamp {
        let ms = at.unix_timestamp_nanos().div_euclid(NS_PER_MS);
        Timestamp(i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX }))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339, as [`Timestamp::rfc3339`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(millis(d)))
    }
}

impl AddAssign<Duration> for Timestamp {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(millis(d)))
    }
}

impl Add<time::Duration> for Timestamp {
    type Output = Timestamp;

    /// A signed calendar duration (such as a configured lifetime), saturating.
    fn add(self, d: time::Duration) -> Timestamp {
        let ms = d.whole_milliseconds();
        let ms = i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX });
        Timestamp(self.0.saturating_add(ms))
    }
}

/// A span typed by a person: a whole number with a unit, `90s`, `15m`, `24h` or `7d`, or plain
/// seconds (`0` is no span at all).
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let size = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => {
            return Err(format!(
                "`{text}` is not a span such as 90s, 15m, 24h or 7d"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(size))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is not a span such as 90s, 15m, 24h or 7d"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans_are_read_with_their_unit() {
        use super::parse_span;
        assert_eq!(parse_span("24h"), Ok(super::secs(86_400)));
        assert_eq!(parse_span("2s"), Ok(super::secs(2)));
        assert_eq!(parse_span("15m"), Ok(super::secs(900)));
        assert_eq!(parse_span("7d"), Ok(super::secs(7 * 86_400)));
        assert_eq!(parse_span("30"), Ok(super::secs(30)));
        assert_eq!(parse_span("0"), Ok(super::secs(0)));
        for bad in [
            "",
            "h",
            "1w",
            "-1h",
            "1.5h",
            "24 h",
            "99999999999999999999d",
        ] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn seconds_and_milliseconds_convert_here() {
        let t = Timestamp::from_unix_ms(1_700_000_000_999);
        assert_eq!(t.unix_ms(), 1_700_000_000_999);
        assert_eq!(t.unix_secs(), 1_700_000_000);
        assert_eq!(t.whole_secs(), Timestamp::from_unix_secs(1_700_000_000));
        assert_eq!(Timestamp::from_unix_ms(-1).unix_secs(), -1);
        assert_eq!(Timestamp::from_unix_secs(i64::MAX), Timestamp::MAX);
    }

    #[test]
    fn durations_add_and_subtract_saturating() {
        let t = Timestamp::from_unix_ms(10_000);
        assert_eq!(t + Duration::from_secs(2), Timestamp::from_unix_ms(12_000));
        assert_eq!(
            t - Duration::from_millis(500),
            Timestamp::from_unix_ms(9_500)
        );
        assert_eq!(Timestamp::MAX + Duration::from_secs(1), Timestamp::MAX);
        assert_eq!(t + Duration::MAX, Timestamp::MAX);
        assert_eq!(
            t + time::Duration::seconds(-3),
            Timestamp::from_unix_ms(7_000)
        );
        assert_eq!(t.since(Timestamp::UNIX_EPOCH), Duration::from_secs(10));
        assert_eq!(Timestamp::UNIX_EPOCH.since(t), Duration::ZERO);
        assert!(t < t + Duration::from_millis(1));
    }

    #[test]
    fn reads_as_rfc3339_and_serializes_as_the_number() {
        let t = Timestamp::from_unix_ms(1_798_761_600_250);
        assert_eq!(t.to_string(), "2027-01-01T00:00:00Z");
        assert_eq!(Timestamp::from(t.to_date_time()), t);
        assert_eq!(serde_json::to_string(&t).unwrap(), "1798761600250");
        let back: Timestamp = serde_json::from_str("1798761600250").unwrap();
        assert_eq!(back, t);
        assert_eq!(Timestamp::MAX.date_time(), None);
        assert_eq!(Timestamp::MAX.to_date_time(), OffsetDateTime::UNIX_EPOCH);
    }
}
