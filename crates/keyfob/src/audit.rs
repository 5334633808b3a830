//! The audit log: who did what, when and from where. Events are appended by one writer task that
//! commits whatever has queued up in one statement, so that busy paths (minting) pay a channel
//! send, not a database round trip. Events a caller must not lose before answering (a reveal of a
//! sensitive value) are written with [`AuditLog::record_durably`], which returns once the event is
//! committed.

use std::sync::Arc;

use keyfob_domain::audit::ActorKind;
use keyfob_domain::{Principal, PrincipalKind};
use keyfob_store::{AuditEventRow, Store, StoreError};
use serde_json::Value;

use crate::batch::Batcher;
use crate::clock::now_ms;

const MAX_BATCH: usize = 512;

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
                id: jti.clone(),
            },
        }
    }
}

/// One event, built by the code that saw it happen.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub account_id: Option<String>,
    pub actor: Actor,
    pub action: &'static str,
    pub target: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<Value>,
}

impl AuditEvent {
    pub fn new(account_id: Option<&str>, actor: Actor, action: &'static str) -> AuditEvent {
        AuditEvent {
            account_id: account_id.map(str::to_owned),
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
            id: uuid::Uuid::now_v7().to_string(),
            account_id: self.account_id,
            at: now_ms(),
            actor_kind: self.actor.kind.as_str().to_owned(),
            actor_id: self.actor.id,
            action: self.action.to_owned(),
            target: self.target,
            ip: self.ip,
            detail: detail.map(|d| d.to_string()),
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

/// The handle every part of the server appends events through: a [`Batcher`] whose writer
/// appends whatever has queued up in one statement.
#[derive(Clone)]
pub struct AuditLog(Batcher<AuditEventRow, ()>);

impl AuditLog {
    /// Starts the writer task.
    pub fn spawn(store: Arc<dyn Store>) -> AuditLog {
        AuditLog(Batcher::spawn(
            "audit log",
            MAX_BATCH,
            move |rows: Vec<AuditEventRow>| {
                let store = store.clone();
                async move {
                    store.insert_audit_events(&rows).await?;
                    Ok(vec![(); rows.len()])
                }
            },
        ))
    }

    /// Queues an event; it is committed within milliseconds, with whatever else queued up.
    pub fn record(&self, event: AuditEvent) {
        self.0.enqueue(event.into_row());
    }

    /// Appends an event and returns once it is committed.
    pub async fn record_durably(&self, event: AuditEvent) -> Result<(), Arc<StoreError>> {
        self.0.submit(event.into_row()).await
    }
}

/// Appends an event directly, for the command line (which has no writer task).
pub async fn record_now(store: &dyn Store, event: AuditEvent) -> keyfob_store::Result<()> {
    store.insert_audit_events(&[event.into_row()]).await
}
