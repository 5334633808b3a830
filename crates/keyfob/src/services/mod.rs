//! The operations of Keyfob that change something, for the dashboard, the end users' pages and
//! the CLI alike, so that each rule is written once. Those a person makes on the pages are done in
//! one place each: the store write, this node's in-memory index (so this node refuses a revoked
//! credential at once; the others learn of it from the change feed), and the audit event.
//! Handlers extract, authorise, call one of these and render; they never update the index or
//! write audit events for these writes themselves.

pub mod accounts;
pub mod apps;
pub mod grants;
pub mod keys;
pub mod master_key;
pub mod sessions;
pub mod signing_keys;
pub mod tokens;
pub mod users;

use crate::audit::Actor;

/// Longest name of an API key or an application, in characters.
pub const MAX_NAME_LEN: usize = 100;

/// Who asks for an operation and from where, for its audit event.
pub struct Caller<'a> {
    pub actor: Actor,
    pub ip: &'a str,
}

impl<'a> Caller<'a> {
    pub fn new(actor: Actor, ip: &'a str) -> Caller<'a> {
        Caller { actor, ip }
    }
}

/// Where an operation runs, which decides how its effects reach the rest: on a server node, whose
/// in-memory state catches up with the change feed at once (so this node refuses what was
/// revoked by its very next request) and whose audit writer takes the event; or at the command
/// line, with the store alone, the running servers learning of the change from the change feed
/// within their sync interval.
#[derive(Clone, Copy)]
pub enum Site<'a> {
    Node(&'a crate::state::AppState),
    Cli(&'a dyn keyfob_store::Store),
}

impl Site<'_> {
    pub fn store(&self) -> &dyn keyfob_store::Store {
        match self {
            Site::Node(state) => state.store.as_ref(),
            Site::Cli(store) => *store,
        }
    }

    /// After a write: brings this node up to date and records `event`.
    pub async fn done(&self, event: crate::audit::AuditEvent) -> Result<(), ServiceError> {
        match self {
            Site::Node(state) => {
                crate::auth::catch_up(state).await?;
                state.audit.record(event);
            }
            Site::Cli(store) => crate::audit::record_now(*store, event).await?,
        }
        Ok(())
    }
}

/// Why an operation did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input breaks a rule; the message says which, for the person who typed it.
    #[error("{0}")]
    Invalid(String),
    /// Nothing live by that name in the caller's account (or not the caller's to change); the
    /// message says what was looked for.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] keyfob_store::StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}
