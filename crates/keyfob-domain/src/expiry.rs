//! When a minted token expires: an ISO-8601 date-time or date, in the future and no further than the
//! configured maximum; one year from now by default.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime};

/// The default lifetime and the longest allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    pub default: Duration,
    pub max: Duration,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        ExpiryPolicy {
            default: Duration::days(365),
            max: Duration::days(2 * 366),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error(
        "`{field}` is not an ISO-8601 date-time or date (e.g. 2027-01-01T00:00:00Z or 2027-01-01): `{input}`"
    )]
    Unparseable { field: &'static str, input: String },
    #[error("`{field}` is in the past")]
    InPast { field: &'static str },
    #[error("`{field}` is more than {max_days} days from now, the longest allowed")]
    TooFar { field: &'static str, max_days: i64 },
}

impl ExpiryPolicy {
    /// The expiry for `requested` (the value of `field`), or the default when absent.
    pub fn resolve(
        &self,
        field: &'static str,
        requested: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, ExpiryError> {
        let Some(input) = requested else {
            return Ok(now + self.default);
        };
        let at = parse_instant(input.trim()).ok_or_else(|| ExpiryError::Unparseable {
            field,
            input: input.chars().take(64).collect(),
        })?;
        if at <= now {
            return Err(ExpiryError::InPast { field });
        }
        if at > now + self.max {
            return Err(ExpiryError::TooFar {
                field,
                max_days: self.max.whole_days(),
            });
        }
        Ok(at)
    }
}

/// RFC 3339 (`2027-01-01T00:00:00Z`, `…+02:00`), a date-time without offset (taken as UTC), or a
/// date (midnight UTC).
pub(crate) fn parse_instant(input: &str) -> Option<OffsetDateTime> {
    if let Ok(at) = OffsetDateTime::parse(input, &Rfc3339) {
        return Some(at);
    }
    let naive = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    if let Ok(at) = PrimitiveDateTime::parse(input, naive) {
        return Some(at.assume_utc());
    }
    let date = format_description!("[year]-[month]-[day]");
    Date::parse(input, date)
        .ok()
        .map(|d| d.midnight().assume_utc())
}

/// Formats an instant as RFC 3339 in UTC, as every API answer does.
pub fn format_instant(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-27 12:00:00 UTC);

    #[test]
    fn default_is_one_year() {
        let policy = ExpiryPolicy::default();
        assert_eq!(
            policy.resolve("expires", None, NOW).unwrap(),
            datetime!(2027-11-27 12:00:00 UTC)
        );
    }

    #[test]
    fn accepts_date_times_and_dates() {
        let policy = ExpiryPolicy::default();
        for (input, expected) in [
            ("2027-01-01T00:00:00Z", datetime!(2027-01-01 0:00 UTC)),
            ("2027-01-01T02:00:00+02:00", datetime!(2027-01-01 0:00 UTC)),
            ("2027-01-01T00:00:00", datetime!(2027-01-01 0:00 UTC)),
            ("2027-01-01", datetime!(2027-01-01 0:00 UTC)),
        ] {
            assert_eq!(
                policy.resolve("expires", Some(input), NOW).unwrap(),
                expected
            );
        }
    }

    #[test]
    fn refuses_bad_dates_by_name() {
        let policy = ExpiryPolicy::default();
        assert_eq!(
            policy.resolve("expiration", Some("tomorrow"), NOW),
            Err(ExpiryError::Unparseable {
                field: "expiration",
                input: "tomorrow".into()
            })
        );
        assert_eq!(
            policy.resolve("expires", Some("2020-01-01"), NOW),
            Err(ExpiryError::InPast { field: "expires" })
        );
        assert!(matches!(
            policy.resolve("expires", Some("2099-01-01"), NOW),
            Err(ExpiryError::TooFar { .. })
        ));
        assert!(policy.resolve("expires", Some("2027-02-30"), NOW).is_err());
    }

    #[test]
    fn formats_in_utc() {
        assert_eq!(
            format_instant(datetime!(2027-01-01 2:00 +2)),
            "2027-01-01T00:00:00Z"
        );
    }
}
