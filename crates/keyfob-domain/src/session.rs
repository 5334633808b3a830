//! The rule that says what a refresh token is worth right now. The token endpoint acts on it
//! (rotate, answer a retry, end the session on reuse) and introspection reports it (`active` only
//! when a refresh would rotate), so the two can never disagree.
//!
//! Times are Unix milliseconds.

/// The limits an application puts on its sessions (user logins through refresh tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session ends when its refresh token goes unused this long (seconds).
    pub idle_secs: Option<i64>,
    /// A session ends this long after it started, however much it is used (seconds).
    pub max_age_secs: Option<i64>,
}

/// What is known of a refresh token and its session at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshFacts {
    /// When this token was used (rotated), if it was.
    pub used_at: Option<i64>,
    /// Whether the pair its use produced is still kept for a retry.
    pub retry_answer_kept: bool,
    /// When the session (refresh family) started.
    pub session_started_at: i64,
    /// When a refresh token of the session was last used (or the session started).
    pub session_last_used_at: i64,
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
/// `grace_ms` during which a used token still gets its answer again.
///
/// An ended session wins over everything (even a retry: its tokens must stop at once). A used
/// token is a retry or a reuse whatever the limits say, so that two tabs refreshing together
/// never see different answers. An unused token is live only within the idle and absolute limits
/// and while the grant stands.
pub fn refresh_state(
    facts: &RefreshFacts,
    limits: SessionLimits,
    grace_ms: i64,
    now: i64,
) -> RefreshState {
    if facts.session_ended {
        return RefreshState::Ended(Ended::Revoked);
    }
    if let Some(used_at) = facts.used_at {
        return if facts.retry_answer_kept && now - used_at <= grace_ms {
            RefreshState::Retry
        } else {
            RefreshState::Reused
        };
    }
    if limits
        .idle_secs
        .is_some_and(|idle| now - facts.session_last_used_at > idle.saturating_mul(1000))
    {
        return RefreshState::Ended(Ended::Idle);
    }
    if limits
        .max_age_secs
        .is_some_and(|max| now - facts.session_started_at > max.saturating_mul(1000))
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
    const GRACE: i64 = 30_000;

    fn fresh() -> RefreshFacts {
        RefreshFacts {
            used_at: None,
            retry_answer_kept: false,
            session_started_at: 0,
            session_last_used_at: 0,
            session_ended: false,
            grant_live: true,
        }
    }

    fn limits(idle: Option<i64>, max_age: Option<i64>) -> SessionLimits {
        SessionLimits {
            idle_secs: idle,
            max_age_secs: max_age,
        }
    }

    #[test]
    fn an_unused_token_is_live_without_limits() {
        let state = refresh_state(
            &fresh(),
            SessionLimits::default(),
            GRACE,
            365 * 24 * 60 * MIN,
        );
        assert_eq!(state, RefreshState::Live);
        assert!(state.is_active());
    }

    #[test]
    fn the_idle_limit_counts_from_the_last_use() {
        let mut facts = fresh();
        facts.session_last_used_at = 10 * MIN;
        let idle = limits(Some(300), None);
        assert_eq!(
            refresh_state(&facts, idle, GRACE, 15 * MIN),
            RefreshState::Live
        );
        let late = refresh_state(&facts, idle, GRACE, 15 * MIN + 1);
        assert_eq!(late, RefreshState::Ended(Ended::Idle));
        assert!(!late.is_active());
    }

    #[test]
    fn the_absolute_limit_counts_from_the_start() {
        let mut facts = fresh();
        facts.session_last_used_at = 59 * MIN;
        let max = limits(None, Some(3600));
        assert_eq!(
            refresh_state(&facts, max, GRACE, 60 * MIN),
            RefreshState::Live
        );
        assert_eq!(
            refresh_state(&facts, max, GRACE, 60 * MIN + 1),
            RefreshState::Ended(Ended::TooOld)
        );
    }

    #[test]
    fn a_revoked_grant_or_an_ended_session_ends_it() {
        let mut facts = fresh();
        facts.grant_live = false;
        assert_eq!(
            refresh_state(&facts, SessionLimits::default(), GRACE, MIN),
            RefreshState::Ended(Ended::GrantRevoked)
        );
        let mut facts = fresh();
        facts.session_ended = true;
        facts.used_at = Some(MIN);
        facts.retry_answer_kept = true;
        assert_eq!(
            refresh_state(&facts, SessionLimits::default(), GRACE, MIN),
            RefreshState::Ended(Ended::Revoked)
        );
    }

    #[test]
    fn a_used_token_is_a_retry_within_the_grace_window_then_reuse() {
        let mut facts = fresh();
        facts.used_at = Some(MIN);
        facts.retry_answer_kept = true;
        let none = SessionLimits::default();
        assert_eq!(
            refresh_state(&facts, none, GRACE, MIN + GRACE),
            RefreshState::Retry
        );
        assert_eq!(
            refresh_state(&facts, none, GRACE, MIN + GRACE + 1),
            RefreshState::Reused
        );
        facts.retry_answer_kept = false;
        assert_eq!(
            refresh_state(&facts, none, GRACE, MIN + 1),
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
        facts.used_at = Some(10 * MIN);
        facts.retry_answer_kept = true;
        let idle = limits(Some(1), None);
        assert_eq!(
            refresh_state(&facts, idle, GRACE, 10 * MIN + 1_000),
            RefreshState::Retry
        );
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let facts = fresh();
        let huge = limits(Some(i64::MAX), Some(i64::MAX));
        assert_eq!(
            refresh_state(&facts, huge, GRACE, i64::MAX / 2),
            RefreshState::Live
        );
    }
}
