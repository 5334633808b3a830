//! What an API key may be given beyond its permissions: a lifetime (`90d`), an overlap when it is
//! rolled (`24h`), and a rate limit (`600/min`), and the arithmetic of that limit: a budget of
//! `requests` per `window` that refills steadily (GCRA), from which the `RateLimit` headers'
//! remaining count and reset time follow.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest lifetime or overlap a key may be given: ten years.
pub const MAX_SPAN: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
/// The most requests a rate limit may allow per window.
pub const MAX_REQUESTS: u32 = 1_000_000;

/// Why a span or a rate limit was refused; the message names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "`{0}` is not a duration: use a whole number and a unit, s, m, h, d or w (such as 90d or 24h)"
    )]
    BadSpan(String),
    #[error("`{0}` is too long: at most ten years")]
    SpanTooLong(String),
    #[error(
        "`{0}` is not a rate limit: use requests/unit with a unit of s, min, h or day (such as 600/min)"
    )]
    BadRate(String),
    #[error("`{0}` allows no request or too many: use 1 to 1000000 requests per window")]
    RateOutOfRange(String),
}

/// Reads a span such as `90d`, `24h`, `30m`, `45s` or `2w`; `0s` is allowed (an overlap of
/// nothing).
pub fn parse_span(input: &str) -> Result<Duration, PolicyError> {
    let s = input.trim();
    let bad = || PolicyError::BadSpan(input.to_owned());
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    if number.is_empty() || number.len() > 12 {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let span = Duration::from_secs(n.saturating_mul(unit_secs));
    if span > MAX_SPAN {
        return Err(PolicyError::SpanTooLong(input.to_owned()));
    }
    Ok(span)
}

/// Writes a span back in the largest unit that divides it (`86400s` → `1d`).
pub fn format_span(span: Duration) -> String {
    let secs = span.as_secs();
    for (unit, size) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// `requests` per `window`, refilling steadily.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

impl RateLimit {
    /// What one node of `nodes` enforces so that together they allow at most this limit: each
    /// holds an equal share, rounded up (so a share is never zero).
    pub fn share(self, nodes: u32) -> RateLimit {
        RateLimit {
            requests: self.requests.div_ceil(nodes.max(1)),
            window: self.window,
        }
    }

    /// The window in whole seconds (at least one), as the headers give it.
    pub fn window_secs(self) -> u64 {
        self.window.as_secs().max(1)
    }

    fn interval_us(self) -> u64 {
        (self.window_us() / u64::from(self.requests.max(1))).max(1)
    }

    fn window_us(self) -> u64 {
        u64::try_from(self.window.as_micros())
            .unwrap_or(u64::MAX / 4)
            .max(1)
    }

    /// Counts one request at `now_us` against a budget that is full again at `full_at_us` (both
    /// microseconds on one clock). On success, the new `full_at_us` and what the headers say;
    /// over the limit, how long until a request is allowed.
    pub fn take(self, full_at_us: u64, now_us: u64) -> Result<(u64, Quota), Refusal> {
        let interval = self.interval_us();
        let window = self.window_us().max(interval);
        let full_at = full_at_us.max(now_us);
        let next = full_at + interval;
        let debt = next - now_us;
        if debt > window {
            let wait_us = debt - window;
            return Err(Refusal {
                retry_after_secs: wait_us.div_ceil(1_000_000).max(1),
                quota: Quota {
                    limit: self.requests,
                    remaining: 0,
                    reset_secs: (full_at - now_us).div_ceil(1_000_000),
                    window_secs: self.window_secs(),
                },
            });
        }
        let remaining = (window - debt) / interval;
        Ok((
            next,
            Quota {
                limit: self.requests,
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                reset_secs: debt.div_ceil(1_000_000),
                window_secs: self.window_secs(),
            },
        ))
    }
}

/// Where a caller stands against its limit, for the `RateLimit` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    /// Requests allowed right now before a refusal.
    pub remaining: u32,
    /// Seconds until the whole budget is back.
    pub reset_secs: u64,
    pub window_secs: u64,
}

/// A request over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub retry_after_secs: u64,
    pub quota: Quota,
}

impl FromStr for RateLimit {
    type Err = PolicyError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = || PolicyError::BadRate(input.to_owned());
        let (count, unit) = input.trim().split_once('/').ok_or_else(bad)?;
        let count = count.trim();
        if count.is_empty() || count.len() > 10 || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let requests: u64 = count.parse().map_err(|_| bad())?;
        let window = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        if requests == 0 || requests > u64::from(MAX_REQUESTS) {
            return Err(PolicyError::RateOutOfRange(input.to_owned()));
        }
        Ok(RateLimit {
            requests: requests as u32,
            window,
        })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.window.as_secs() {
            1 => "s".to_owned(),
            60 => "min".to_owned(),
            3600 => "h".to_owned(),
            86_400 => "day".to_owned(),
            other => format!("{other}s"),
        };
        write!(f, "{}/{unit}", self.requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_and_write_back() {
        assert_eq!(parse_span("90d").unwrap(), Duration::from_secs(90 * 86_400));
        assert_eq!(parse_span("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_span(" 30m ").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_span("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_span("2w").unwrap(), Duration::from_secs(14 * 86_400));
        for bad in [
            "",
            "d",
            "90",
            "90 d",
            "-1d",
            "1.5h",
            "1y",
            "9999999999999d",
            "１d",
        ] {
            assert!(parse_span(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_span("4000d"),
            Err(PolicyError::SpanTooLong(_))
        ));
        assert_eq!(format_span(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_span(Duration::from_secs(90)), "90s");
        assert_eq!(format_span(Duration::from_secs(14 * 86_400)), "2w");
    }

    #[test]
    fn rate_limits_read_and_write_back() {
        let r: RateLimit = "600/min".parse().unwrap();
        assert_eq!(r.requests, 600);
        assert_eq!(r.window, Duration::from_secs(60));
        assert_eq!(r.to_string(), "600/min");
        assert_eq!("10/s".parse::<RateLimit>().unwrap().to_string(), "10/s");
        assert_eq!(
            "5000/hour".parse::<RateLimit>().unwrap().to_string(),
            "5000/h"
        );
        assert_eq!("1/day".parse::<RateLimit>().unwrap().to_string(), "1/day");
        for bad in [
            "", "600", "/min", "600/", "600/week", "-1/min", "1e3/min", "six/min",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad:?}");
        }
        for out in ["0/min", "1000001/s"] {
            assert!(matches!(
                out.parse::<RateLimit>(),
                Err(PolicyError::RateOutOfRange(_))
            ));
        }
    }

    #[test]
    fn a_share_rounds_up_and_never_reaches_zero() {
        let r: RateLimit = "10/min".parse().unwrap();
        assert_eq!(r.share(1).requests, 10);
        assert_eq!(r.share(2).requests, 5);
        assert_eq!(r.share(3).requests, 4);
        assert_eq!(r.share(20).requests, 1);
        assert_eq!(r.share(0).requests, 10);
    }

    #[test]
    fn the_budget_allows_its_requests_then_refuses_until_it_refills() {
        let r: RateLimit = "3/min".parse().unwrap();
        let now = 1_000_000_000;
        let (full, q) = r.take(0, now).unwrap();
        assert_eq!((q.limit, q.remaining, q.reset_secs), (3, 2, 20));
        let (full, q) = r.take(full, now).unwrap();
        assert_eq!((q.remaining, q.reset_secs), (1, 40));
        let (full, q) = r.take(full, now).unwrap();
        assert_eq!((q.remaining, q.reset_secs), (0, 60));
        let refused = r.take(full, now).unwrap_err();
        assert_eq!(refused.retry_after_secs, 20);
        assert_eq!(refused.quota.remaining, 0);
        // Twenty seconds later one request's worth has come back.
        let later = now + 20_000_000;
        let (_, q) = r.take(full, later).unwrap();
        assert_eq!(q.remaining, 0);
        // And a refusal costs nothing: the budget is as it was.
        assert!(r.take(full, now + 19_000_000).is_err());
    }
}
