//! Wall-clock time as the store keeps it.

use time::OffsetDateTime;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// An instant from Unix milliseconds.
pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 for Unix milliseconds.
pub fn format_ms(ms: i64) -> String {
    keyfob_domain::expiry::format_instant(from_ms(ms))
}
