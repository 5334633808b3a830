//! Who is calling: the verified result of a credential, and what it may do.

use crate::permission::{Action, PermissionSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An API key, by its id.
    ApiKey { key_id: String },
    /// A JWT, by its `jti`; `user_id` is set for user-session tokens.
    Jwt {
        jti: String,
        user_id: Option<String>,
        client_id: Option<String>,
    },
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub account_id: String,
    pub subject: String,
    pub permissions: PermissionSet,
    /// Unix seconds; `None` for API keys, which last until revoked.
    pub expires_at: Option<i64>,
}

impl Principal {
    pub fn is_api_key(&self) -> bool {
        matches!(self.kind, PrincipalKind::ApiKey { .. })
    }

    pub fn allows(&self, resource: &str, action: Action) -> bool {
        self.permissions.allows(resource, action)
    }

    /// The end user a session token acts for: such a token sees only that user's records.
    pub fn session_user(&self) -> Option<&str> {
        match &self.kind {
            PrincipalKind::Jwt {
                user_id: Some(user),
                ..
            } => Some(user),
            _ => None,
        }
    }
}
