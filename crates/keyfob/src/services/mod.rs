//! The writes a person makes through the dashboard or the end users' pages, each done in one
//! place: the store write, this node's in-memory index (so this node refuses a revoked
//! credential at once; the others learn of it from the change feed), and the audit event.
//! Handlers extract, authorise, call one of these and render; they never update the index or
//! write audit events for these writes themselves.

pub mod grants;
pub mod keys;
pub mod sessions;
pub mod tokens;

use crate::audit::Actor;

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

/// Why an operation did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input breaks a rule; the message says which, for the person who typed it.
    #[error("{0}")]
    Invalid(String),
    /// Nothing live by that id in the caller's account (or not the caller's to change).
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] keyfob_store::StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::ops::OpsError> for ServiceError {
    fn from(err: crate::ops::OpsError) -> Self {
        use crate::ops::OpsError;
        match err {
            OpsError::Invalid(message) => ServiceError::Invalid(message),
            OpsError::NotFound(_) => ServiceError::NotFound,
            OpsError::Store(err) => ServiceError::Store(err),
            OpsError::Other(err) => ServiceError::Internal(err),
        }
    }
}
