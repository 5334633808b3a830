//! The audit log: who did what, when and from where. Events are appended by one writer task that
//! commits whatever has queued up in one statement, so that busy paths (minting) pay a channel
//! send, not a database round trip. Events a caller must not lose before answering (a reveal of a
//! sensitive value) are written with [`AuditLog::record_durably`], which returns once the event is
//! committed.
//!
//! Events caused by unauthenticated clients (failed logins, which anyone may attempt against any
//! account's application) are marked as such (actor `anonymous`), keep little of the text the
//! client chose, and are throttled per account and client address: at most
//! [`AnonymousLimit::events`] per window, the rest counted in one `audit.suppressed` event when the
//! window closes, so that strangers cannot flood an account's log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyfob_domain::audit::{ActorKind, action};
use keyfob_domain::time::Timestamp;
use keyfob_domain::{Principal, PrincipalKind};
use keyfob_store::{AccountId, AuditEventRow, EventId, JsonText, Store, StoreError};
use serde_json::Value;

use crate::batch::Batcher;
use crate::http::rate_limit::{Key, key_of};

const MAX_BATCH: usize = 512;
/// The longest text chosen by an unauthenticated client (its `User-Agent`) that an event keeps.
pub const ANONYMOUS_TEXT_LEN: usize = 64;
/// How many (account, address) windows are tracked at once; when full, the oldest close early.
const ANONYMOUS_WINDOWS: usize = 10_000;

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

impl Actor {
    pub fn api_key(id: &str) -> Actor {
        Actor {
            kind: ActorKind::ApiKey,
            id: id.to_owned(),
        }
    }

    pub fn owner(id: &str) -> Actor {
        Actor {
            kind: ActorKind::Owner,
            id: id.to_owned(),
        }
    }

    pub fn user(id: &str) -> Actor {
        Actor {
            kind: ActorKind::User,
            id: id.to_owned(),
        }
    }

    pub fn app(client_id: &str) -> Actor {
        Actor {
            kind: ActorKind::App,
            id: client_id.to_owned(),
        }
    }

    /// The operator at the server's command line.
    pub fn operator() -> Actor {
        Actor {
            kind: ActorKind::Operator,
            id: "cli".to_owned(),
        }
    }

    /// A client that has not authenticated (e.g. a failed login): whatever it claimed to be is
    /// the event's target, never its actor.
    pub fn anonymous() -> Actor {
        Actor {
            kind: ActorKind::Anonymous,
            id: "anonymous".to_owned(),
        }
    }

    /// Keyfob itself.
    pub fn system() -> Actor {
        Actor {
            kind: ActorKind::System,
            id: "keyfob".to_owned(),
        }
    }

    /// The caller of an API request: its API key, or its token (by `jti`).
    pub fn of(principal: &Principal) -> Actor {
        match &principal.kind {
            PrincipalKind::ApiKey { key_id } => Actor::api_key(key_id),
            PrincipalKind::Jwt { jti, .. } => Actor {
                kind: ActorKind::Token,
                id: jti.to_string(),
            },
        }
    }
}

/// One event, built by the code that saw it happen.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub account_id: Option<AccountId>,
    pub actor: Actor,
    pub action: &'static str,
    pub target: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<Value>,
}

impl AuditEvent {
    pub fn new(account_id: Option<&AccountId>, actor: Actor, action: &'static str) -> AuditEvent {
        AuditEvent {
            account_id: account_id.cloned(),
            actor,
            action,
            target: None,
            ip: None,
            user_agent: None,
            detail: None,
        }
    }

    /// The client's `User-Agent`, kept in the event's detail (at most 256 characters).
    pub fn user_agent(mut self, user_agent: &UserAgent) -> AuditEvent {
        self.user_agent = user_agent.0.clone();
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> AuditEvent {
        self.target = Some(target.into());
        self
    }

    /// The client's address; `unknown` (no connection info) is left out.
    pub fn ip(mut self, ip: &str) -> AuditEvent {
        if ip != "unknown" && !ip.is_empty() {
            self.ip = Some(ip.to_owned());
        }
        self
    }

    /// More detail. Never put a secret or a sensitive value here.
    pub fn detail(mut self, detail: Value) -> AuditEvent {
        self.detail = Some(detail);
        self
    }

    fn into_row(self) -> AuditEventRow {
        let detail = match (self.detail, self.user_agent) {
            (detail, None) => detail,
            (Some(Value::Object(mut map)), Some(ua)) => {
                map.insert("user_agent".into(), Value::String(ua));
                Some(Value::Object(map))
            }
            (None, Some(ua)) => Some(serde_json::json!({ "user_agent": ua })),
            (Some(other), Some(ua)) => {
                Some(serde_json::json!({ "detail": other, "user_agent": ua }))
            }
        };
        AuditEventRow {
            id: EventId::from(uuid::Uuid::now_v7().to_string()),
            account_id: self.account_id,
            at: Timestamp::now(),
            actor_kind: self.actor.kind,
            actor_id: self.actor.id,
            action: self.action.to_owned(),
            target: self.target,
            ip: self.ip,
            detail: detail.map(JsonText),
        }
    }
}

/// The request's `User-Agent` header, cut to 256 characters; `None` when absent or not text.
pub struct UserAgent(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for UserAgent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect());
        Ok(UserAgent(value))
    }
}

/// How many events from unauthenticated clients an account's log takes from one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnonymousLimit {
    /// Events written per window; the rest are only counted.
    pub events: u32,
    pub window: Duration,
}

/// The handle every part of the server appends events through: a [`Batcher`] whose writer
/// appends whatever has queued up in one statement, and the throttle of events from
/// unauthenticated clients.
#[derive(Clone)]
pub struct AuditLog(Arc<Inner>);

struct Inner {
    writer: Batcher<AuditEventRow, ()>,
    anonymous: Throttle,
}

impl AuditLog {
    /// Starts the writer task, and the task that closes the throttle's windows as they end.
    pub fn spawn(store: Arc<dyn Store>, limit: AnonymousLimit) -> AuditLog {
        let writer = Batcher::spawn("audit log", MAX_BATCH, move |rows: Vec<AuditEventRow>| {
            let store = store.clone();
            async move {
                store.insert_audit_events(&rows).await?;
                Ok(vec![(); rows.len()])
            }
        });
        let log = AuditLog(Arc::new(Inner {
            writer,
            anonymous: Throttle::new(limit),
        }));
        let inner = Arc::downgrade(&log.0);
        let every = (limit.window / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                // Once the log is gone, so is this task.
                let Some(inner) = inner.upgrade() else { break };
                for summary in inner.anonymous.close(Timestamp::now(), false) {
                    inner.writer.enqueue(summary.into_row());
                }
            }
        });
        log
    }

    /// Queues an event; it is committed within milliseconds, with whatever else queued up.
    pub fn record(&self, event: AuditEvent) {
        self.0.writer.enqueue(event.into_row());
    }

    /// Queues an event caused by a client that has not authenticated: marked as such (actor
    /// `anonymous`), its `User-Agent` cut to [`ANONYMOUS_TEXT_LEN`] characters, and written only
    /// while its account and client address are within their [`AnonymousLimit`]; past it, the
    /// event is counted in the window's `audit.suppressed` summary instead.
    pub fn record_unauthenticated(&self, mut event: AuditEvent) {
        event.actor = Actor::anonymous();
        event.user_agent = event
            .user_agent
            .map(|ua| ua.chars().take(ANONYMOUS_TEXT_LEN).collect());
        for event in self.0.anonymous.admit(event, Timestamp::now()) {
            self.0.writer.enqueue(event.into_row());
        }
    }

    /// Closes every throttle window now and waits until their summaries are committed (when the
    /// server stops, so that no count is lost).
    pub async fn close_anonymous_windows(&self) -> Result<(), Arc<StoreError>> {
        let mut summaries = self.0.anonymous.close(Timestamp::now(), true);
        let Some(last) = summaries.pop() else {
            return Ok(());
        };
        for summary in summaries {
            self.0.writer.enqueue(summary.into_row());
        }
        // The writer keeps order, so once the last is committed so are the others.
        self.0.writer.submit(last.into_row()).await
    }

    /// Appends an event and returns once it is committed.
    pub async fn record_durably(&self, event: AuditEvent) -> Result<(), Arc<StoreError>> {
        self.0.writer.submit(event.into_row()).await
    }
}

/// One account's window for one client address.
struct Window {
    account_id: Option<AccountId>,
    ip: Option<String>,
    started: Timestamp,
    written: u32,
    suppressed: u64,
    /// The actions of the suppressed events, each once.
    actions: Vec<&'static str>,
    first_suppressed: Timestamp,
    last_suppressed: Timestamp,
}

impl Window {
    /// The event that counts what this window suppressed, if anything.
    fn summary(&self, limit: AnonymousLimit) -> Option<AuditEvent> {
        if self.suppressed == 0 {
            return None;
        }
        let mut event = AuditEvent::new(
            self.account_id.as_ref(),
            Actor::anonymous(),
            action::AUDIT_SUPPRESSED,
        )
        .detail(serde_json::json!({
            "suppressed": self.suppressed,
            "actions": self.actions,
            "first": self.first_suppressed.rfc3339(),
            "last": self.last_suppressed.rfc3339(),
            "limit": limit.events,
            "window_secs": limit.window.as_secs(),
        }));
        event.ip = self.ip.clone();
        Some(event)
    }
}

/// Counts events from unauthenticated clients per (account, client address) in fixed windows.
/// Bounded: at most [`ANONYMOUS_WINDOWS`] windows are open; when more are needed, the oldest close
/// early (their summaries are written then), so no count is ever lost.
struct Throttle {
    limit: AnonymousLimit,
    windows: Mutex<HashMap<Key, Window>>,
    capacity: usize,
}

impl Throttle {
    fn new(limit: AnonymousLimit) -> Throttle {
        Throttle {
            limit,
            windows: Mutex::new(HashMap::new()),
            capacity: ANONYMOUS_WINDOWS,
        }
    }

    /// What to write for `event` at `now`: the event itself while its window has room, and the
    /// summaries of windows that closed to make way.
    fn admit(&self, event: AuditEvent, now: Timestamp) -> Vec<AuditEvent> {
        let key = key_of(&[
            event.account_id.as_deref().unwrap_or_default().as_bytes(),
            event.ip.as_deref().unwrap_or_default().as_bytes(),
        ]);
        let window = self.limit.window;
        let mut out = Vec::new();
        let mut windows = self.windows.lock().expect("audit throttle lock poisoned");
        if windows
            .get(&key)
            .is_some_and(|w| now.since(w.started) >= window)
        {
            let ended = windows.remove(&key).expect("just seen");
            out.extend(ended.summary(self.limit));
        }
        if !windows.contains_key(&key) && windows.len() >= self.capacity {
            self.make_room(&mut windows, now, &mut out);
        }
        let window = windows.entry(key).or_insert_with(|| Window {
            account_id: event.account_id.clone(),
            ip: event.ip.clone(),
            started: now,
            written: 0,
            suppressed: 0,
            actions: Vec::new(),
            first_suppressed: now,
            last_suppressed: now,
        });
        if window.written < self.limit.events {
            window.written += 1;
            out.push(event);
        } else {
            if window.suppressed == 0 {
                window.first_suppressed = now;
            }
            window.suppressed += 1;
            window.last_suppressed = now;
            if !window.actions.contains(&event.action) {
                window.actions.push(event.action);
            }
        }
        out
    }

    /// Closes the windows that have ended by `now` (every window, with `all`) and returns their
    /// summaries.
    fn close(&self, now: Timestamp, all: bool) -> Vec<AuditEvent> {
        let window = self.limit.window;
        let mut out = Vec::new();
        let mut windows = self.windows.lock().expect("audit throttle lock poisoned");
        windows.retain(|_, w| {
            if all || now.since(w.started) >= window {
                out.extend(w.summary(self.limit));
                false
            } else {
                true
            }
        });
        out
    }

    /// Closes ended windows, and if the map is still full, the oldest eighth early.
    fn make_room(
        &self,
        windows: &mut HashMap<Key, Window>,
        now: Timestamp,
        out: &mut Vec<AuditEvent>,
    ) {
        let window = self.limit.window;
        windows.retain(|_, w| {
            if now.since(w.started) >= window {
                out.extend(w.summary(self.limit));
                false
            } else {
                true
            }
        });
        if windows.len() < self.capacity {
            return;
        }
        let mut starts: Vec<Timestamp> = windows.values().map(|w| w.started).collect();
        let cut = (self.capacity / 8).max(1);
        let (_, &mut threshold, _) = starts.select_nth_unstable(cut - 1);
        windows.retain(|_, w| {
            if w.started <= threshold {
                out.extend(w.summary(self.limit));
                false
            } else {
                true
            }
        });
    }
}

/// Appends an event directly, for the command line (which has no writer task).
pub async fn record_now(store: &dyn Store, event: AuditEvent) -> keyfob_store::Result<()> {
    store.insert_audit_events(&[event.into_row()]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_login(account: &str, ip: &str) -> AuditEvent {
        AuditEvent::new(
            Some(&account.into()),
            Actor::anonymous(),
            action::USER_LOGIN_FAILED,
        )
        .ip(ip)
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(ms)
    }

    fn limit() -> AnonymousLimit {
        AnonymousLimit {
            events: 5,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn past_the_limit_events_are_counted_in_one_summary() {
        let throttle = Throttle::new(limit());
        let mut written = 0;
        for n in 0..1_000 {
            let out = throttle.admit(failed_login("acct", "203.0.113.1"), t(n));
            written += out.len();
        }
        assert_eq!(written, 5);
        // Another address, or another account, has its own window.
        assert_eq!(
            throttle
                .admit(failed_login("acct", "203.0.113.2"), t(1_000))
                .len(),
            1
        );
        assert_eq!(
            throttle
                .admit(failed_login("other", "203.0.113.1"), t(1_000))
                .len(),
            1
        );
        // Nothing closes before the window ends…
        assert!(throttle.close(t(59_999), false).is_empty());
        // …then the summary counts the rest.
        let summaries = throttle.close(t(60_000), false);
        assert_eq!(summaries.len(), 1);
        let summary = &summaries[0];
        assert_eq!(summary.action, action::AUDIT_SUPPRESSED);
        assert_eq!(summary.actor.kind, ActorKind::Anonymous);
        assert_eq!(summary.account_id.as_deref(), Some("acct"));
        assert_eq!(summary.ip.as_deref(), Some("203.0.113.1"));
        let detail = summary.detail.as_ref().unwrap();
        assert_eq!(detail["suppressed"], 995);
        assert_eq!(detail["actions"][0], action::USER_LOGIN_FAILED);
        // A new window takes events again.
        assert_eq!(
            throttle
                .admit(failed_login("acct", "203.0.113.1"), t(61_000))
                .len(),
            1
        );
    }

    #[test]
    fn an_event_after_the_window_closes_it_first() {
        let throttle = Throttle::new(limit());
        for n in 0..7 {
            throttle.admit(failed_login("acct", "203.0.113.1"), t(n));
        }
        let out = throttle.admit(failed_login("acct", "203.0.113.1"), t(60_000));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].action, action::AUDIT_SUPPRESSED);
        assert_eq!(out[0].detail.as_ref().unwrap()["suppressed"], 2);
        assert_eq!(out[1].action, action::USER_LOGIN_FAILED);
    }

    #[test]
    fn the_windows_stay_bounded_and_lose_no_count() {
        let mut throttle = Throttle::new(AnonymousLimit {
            events: 1,
            window: Duration::from_secs(3_600),
        });
        throttle.capacity = 1_000;
        let mut written = 0u64;
        let mut suppressed = 0u64;
        let mut count = |out: Vec<AuditEvent>| {
            for event in out {
                match event.action {
                    action::AUDIT_SUPPRESSED => {
                        suppressed += event.detail.unwrap()["suppressed"].as_u64().unwrap();
                    }
                    _ => written += 1,
                }
            }
        };
        for n in 0..200_000u32 {
            let ip = format!("198.51.{}.{}", (n / 2) / 256 % 256, (n / 2) % 256);
            count(throttle.admit(failed_login("acct", &ip), t(i64::from(n / 100))));
            assert!(throttle.windows.lock().unwrap().len() <= 1_000);
        }
        count(throttle.close(t(i64::MAX / 2), true));
        assert_eq!(written + suppressed, 200_000);
    }
}
