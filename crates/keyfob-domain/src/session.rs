//! The rule that says what a refresh token is worth right now. The token endpoint acts on it
//! (rotate, answer a retry, end the session on reuse) and introspection reports it (`active` only
//! when a refresh would rotate), so the two can never disagree.

use std::time::Duration;

use crate::time::Timestamp;

/// The limits an application puts on its sessions (user logins through refresh tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session ends when its refresh token goes unused this long.
    pub idle: Option<Duration>,
    /// A session ends this long after it started, however much it is used.
    pub max_age: Option<Duration>,
}

/// What is known of a refresh token and its session at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshFacts {
    /// When this token was used (rotated), if it was.
    pub used_at: Option<Timestamp>,
    /// Whether the pair its use produced is still kept for a retry.
    pub retry_answer_kept: bool,
    /// When the session (refresh family) started.
    pub session_started_at: Timestamp,
    /// When a refresh token of the session was last used (or the session started).
    pub session_last_used_at: Timestamp,
    /// Whether the session was ended (revoked, logged out, reused, password changed).
    pub session_ended: bool,
    /// Whether the user's grant to the application is still live.
    pub grant_live: bool,
}

/// Why a session can no longer be refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Revoked, logged out, ended by reuse or by a password change.
    Revoked,
    /// The user's grant to the application was revoked.
    GrantRevoked,
    /// Unused longer than the application's idle limit.
    Idle,
    /// Older than the application's absolute limit.
    TooOld,
}

impl Ended {
    /// A sentence for logs and error descriptions.
    pub fn describe(self) -> &'static str {
        match self {
            Ended::Revoked => "the session has ended",
            Ended::GrantRevoked => "the user's grant to the application was revoked",
            Ended::Idle => "the session has been idle too long",
            Ended::TooOld => "the session has reached its maximum age",
        }
    }
}

/// What a refresh token is worth now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshState {
    /// Unused, its session live and within every limit: a refresh rotates it. The only state
    /// introspection reports as active.
    Live,
    /// Used a moment ago (within the grace window, its answer kept): presenting it again gets the
    /// same new pair, for flaky networks and several tabs.
    Retry,
    /// Used before the grace window: presenting it again is reuse, a sign it was copied, and ends
    /// its session.
    Reused,
    /// The session cannot be refreshed any more.
    Ended(Ended),
}

impl RefreshState {
    /// Whether introspection reports the token as active.
    pub fn is_active(self) -> bool {
        self == RefreshState::Live
    }
}

/// Decides what a refresh token is worth at `now`, given the application's `limits` and the
/// `grace` during which a used token still gets its answer again.
///
/// An ended session wins over everything (even a retry: its tokens must stop at once). A used
/// token is a retry or a reuse whatever the limits say, so that two tabs refreshing together
/// never see different answers. An unused token is live only within the idle and absolute limits
/// and while the grant stands.
pub fn refresh_state(
    facts: &RefreshFacts,
    limits: SessionLimits,
    grace: Duration,
    now: Timestamp,
) -> RefreshState {
    if facts.session_ended {
        return RefreshState::Ended(Ended::Revoked);
    }
    if let Some(used_at) = facts.used_at {
        return if facts.retry_answer_kept && now.since(used_at) <= grace {
            RefreshState::Retry
        } else {
            RefreshState::Reused
        };
    }
    if limits
        .idle
        .is_some_and(|idle| now.since(facts.session_last_used_at) > idle)
    {
        return RefreshState::Ended(Ended::Idle);
    }
    if limits
        .max_age
        .is_some_and(|max| now.since(facts.session_started_at) > max)
    {
        return RefreshState::Ended(Ended::TooOld);
    }
    if !facts.grant_live {
        return RefreshState::Ended(Ended::GrantRevoked);
    }
    RefreshState::Live
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const GRACE_MS: i64 = 30_000;
    const GRACE: Duration = Duration::from_millis(GRACE_MS as u64);

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(ms)
    }

    fn fresh() -> RefreshFacts {
        RefreshFacts {
            used_at: None,
            retry_answer_kept: false,
            session_started_at: t(0),
            session_last_used_at: t(0),
            session_ended: false,
            grant_live: true,
        }
    }

    fn limits(idle_secs: Option<u64>, max_age_secs: Option<u64>) -> SessionLimits {
        SessionLimits {
            idle: idle_secs.map(Duration::from_secs),
            max_age: max_age_secs.map(Duration::from_secs),
        }
    }

    #[test]
    fn an_unused_token_is_live_without_limits() {
        let state = refresh_state(
            &fresh(),
            SessionLimits::default(),
            GRACE,
            t(365 * 24 * 60 * MIN),
        );
        assert_eq!(state, RefreshState::Live);
        assert!(state.is_active());
    }

    #[test]
    fn the_idle_limit_counts_from_the_last_use() {
        let mut facts = fresh();
        facts.session_last_used_at = t(10 * MIN);
        let idle = limits(Some(300), None);
        assert_eq!(
            refresh_state(&facts, idle, GRACE, t(15 * MIN)),
            RefreshState::Live
        );
        let late = refresh_state(&facts, idle, GRACE, t(15 * MIN + 1));
        assert_eq!(late, RefreshState::Ended(Ended::Idle));
        assert!(!late.is_active());
    }

    #[test]
    fn the_absolute_limit_counts_from_the_start() {
        let mut facts = fresh();
        facts.session_last_used_at = t(59 * MIN);
        let max = limits(None, Some(3600));
        assert_eq!(
            refresh_state(&facts, max, GRACE, t(60 * MIN)),
            RefreshState::Live
        );
        assert_eq!(
            refresh_state(&facts, max, GRACE, t(60 * MIN + 1)),
            RefreshState::Ended(Ended::TooOld)
        );
    }

    #[test]
    fn a_revoked_grant_or_an_ended_session_ends_it() {
        let mut facts = fresh();
        facts.grant_live = false;
        assert_eq!(
            refresh_state(&facts, SessionLimits::default(), GRACE, t(MIN)),
            RefreshState::Ended(Ended::GrantRevoked)
        );
        let mut facts = fresh();
        facts.session_ended = true;
        facts.used_at = Some(t(MIN));
        facts.retry_answer_kept = true;
        assert_eq!(
            refresh_state(&facts, SessionLimits::default(), GRACE, t(MIN)),
            RefreshState::Ended(Ended::Revoked)
        );
    }

    #[test]
    fn a_used_token_is_a_retry_within_the_grace_window_then_reuse() {
        let mut facts = fresh();
        facts.used_at = Some(t(MIN));
        facts.retry_answer_kept = true;
        let none = SessionLimits::default();
        assert_eq!(
            refresh_state(&facts, none, GRACE, t(MIN + GRACE_MS)),
            RefreshState::Retry
        );
        assert_eq!(
            refresh_state(&facts, none, GRACE, t(MIN + GRACE_MS + 1)),
            RefreshState::Reused
        );
        facts.retry_answer_kept = false;
        assert_eq!(
            refresh_state(&facts, none, GRACE, t(MIN + 1)),
            RefreshState::Reused
        );
        // Neither is ever active.
        assert!(!RefreshState::Retry.is_active());
        assert!(!RefreshState::Reused.is_active());
    }

    #[test]
    fn a_retry_is_answered_even_past_the_idle_limit() {
        // Two tabs: one rotated, the other retries a second later; the limit is not the retry's
        // business (the rotation checked it).
        let mut facts = fresh();
        facts.used_at = Some(t(10 * MIN));
        facts.retry_answer_kept = true;
        let idle = limits(Some(1), None);
        assert_eq!(
            refresh_state(&facts, idle, GRACE, t(10 * MIN + 1_000)),
            RefreshState::Retry
        );
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let facts = fresh();
        let huge = limits(Some(u64::MAX), Some(u64::MAX));
        assert_eq!(
            refresh_state(&facts, huge, GRACE, t(i64::MAX / 2)),
            RefreshState::Live
        );
    }
}
