//! Who is calling: the verified result of a credential, and what it may do.

use crate::ids::{AccountId, ClientId, Jti, KeyId, UserId};
use crate::permission::{Action, PermissionSet, RESERVED_RESOURCES};
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An API key, by its id.
    ApiKey { key_id: KeyId },
    /// A JWT, by its `jti`; `user_id` is set for user-session tokens, `client_id` for tokens
    /// issued to an application (user sessions and the application's own tokens).
    Jwt {
        jti: Jti,
        user_id: Option<UserId>,
        client_id: Option<ClientId>,
        /// The API key that minted it (`POST /auth`): its rate limit and usage count the token's
        /// requests too.
        minted_by: Option<KeyId>,
    },
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub account_id: AccountId,
    pub subject: String,
    pub permissions: PermissionSet,
    /// When it expires (a JWT's `exp`); `None` for API keys, which last until revoked.
    pub expires_at: Option<Timestamp>,
}

impl Principal {
    pub fn is_api_key(&self) -> bool {
        matches!(self.kind, PrincipalKind::ApiKey { .. })
    }

    /// Whether the caller may do `action` on `resource`. A token issued to an application (a
    /// user-session token, or the application's own `client_credentials` token) never holds a
    /// reserved capability (`sensitive`, `audit`), whatever its claims say: those are for the
    /// account's own credentials, not for what an end user consented to or an application's
    /// ceiling allows.
    pub fn allows(&self, resource: &str, action: Action) -> bool {
        if self.application().is_some() && RESERVED_RESOURCES.contains(&resource) {
            return false;
        }
        self.permissions.allows(resource, action)
    }

    /// The application a token was issued to: a user session's, or the application itself for a
    /// `client_credentials` token. `None` for API keys and the tokens they mint.
    pub fn application(&self) -> Option<&ClientId> {
        match &self.kind {
            PrincipalKind::Jwt { client_id, .. } => client_id.as_ref(),
            PrincipalKind::ApiKey { .. } => None,
        }
    }

    /// The API key behind the caller: the key itself, or the key that minted its token.
    pub fn key_behind(&self) -> Option<&KeyId> {
        match &self.kind {
            PrincipalKind::ApiKey { key_id } => Some(key_id),
            PrincipalKind::Jwt { minted_by, .. } => minted_by.as_ref(),
        }
    }

    /// The end user a session token acts for: such a token sees only that user's records.
    pub fn session_user(&self) -> Option<&UserId> {
        match &self.kind {
            PrincipalKind::Jwt {
                user_id: Some(user),
                ..
            } => Some(user),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(user: Option<&str>, permissions: &[&str]) -> Principal {
        Principal {
            kind: PrincipalKind::Jwt {
                jti: "j".into(),
                user_id: user.map(UserId::from),
                client_id: user.map(|_| ClientId::from("app")),
                minted_by: None,
            },
            account_id: "a".into(),
            subject: "s".into(),
            permissions: PermissionSet::parse(permissions).unwrap(),
            expires_at: Some(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn session_tokens_never_hold_reserved_capabilities() {
        let minted = jwt(None, &["sensitive.read", "audit.read"]);
        assert!(minted.allows("sensitive", Action::Read));
        assert!(minted.allows("audit", Action::Read));
        let session = jwt(
            Some("user"),
            &["sensitive.read", "audit.read", "deals.read"],
        );
        assert!(!session.allows("sensitive", Action::Read));
        assert!(!session.allows("audit", Action::Read));
        assert!(session.allows("deals", Action::Read));
        // An application's own token neither.
        let mut app = jwt(None, &["sensitive.read", "deals.read"]);
        app.kind = PrincipalKind::Jwt {
            jti: "j".into(),
            user_id: None,
            client_id: Some(ClientId::from("app")),
            minted_by: None,
        };
        assert!(!app.allows("sensitive", Action::Read));
        assert!(app.allows("deals", Action::Read));
        assert_eq!(app.session_user(), None);
    }
}
