//! The audit log's vocabulary: what happened (actions), who did it (actor kinds), and how a
//! listing of events is asked for (`action`, `actor`, `since`, `until`, `limit`, `page`).

use crate::expiry::parse_instant;
use crate::query::{parse_limit, parse_page};
use crate::time::Timestamp;

/// The actions the audit log records. Stored and filtered as these exact strings.
pub mod action {
    pub const API_KEY_CREATED: &str = "api_key.created";
    pub const API_KEY_REVOKED: &str = "api_key.revoked";
    /// Every token an API key minted so far was revoked; the key stays live.
    pub const API_KEY_TOKENS_REVOKED: &str = "api_key.tokens_revoked";
    /// A key was replaced by a new one with the same name, permissions and limit; the old one
    /// works until the overlap ends (`new_key`, `old_expires` in the detail). Target: the old key.
    pub const API_KEY_ROLLED: &str = "api_key.rolled";
    /// A token minted with `POST /auth`, or one an application got for itself with the
    /// `client_credentials` grant (actor `app`, `grant_type` in the detail).
    pub const TOKEN_MINTED: &str = "token.minted";
    pub const TOKEN_REVOKED: &str = "token.revoked";
    pub const OWNER_LOGIN: &str = "owner.login";
    pub const OWNER_LOGIN_FAILED: &str = "owner.login_failed";
    pub const USER_LOGIN: &str = "user.login";
    pub const USER_LOGIN_FAILED: &str = "user.login_failed";
    /// An end user logged out of Keyfob at an application's request (the end-session endpoint,
    /// RP-initiated logout). Actor the user; `client_id` and the session ended, if any, in the
    /// detail.
    pub const USER_LOGOUT: &str = "user.logout";
    /// A client failed to authenticate as a known application at the token or revocation
    /// endpoint (wrong or missing secret). Actor `anonymous`; the application is the target.
    pub const APP_AUTH_FAILED: &str = "app.auth_failed";
    pub const GRANT_GIVEN: &str = "grant.given";
    pub const GRANT_REVOKED: &str = "grant.revoked";
    pub const REFRESH_REUSE: &str = "refresh.reuse_detected";
    /// User sessions ended by the app (token revocation), or by the user logging out everywhere
    /// or changing their password.
    pub const SESSION_ENDED: &str = "session.ended";
    pub const SENSITIVE_REVEALED: &str = "sensitive.revealed";
    pub const SENSITIVE_FIELDS_CHANGED: &str = "sensitive.fields_changed";
    pub const SIGNING_KEY_ROTATED: &str = "signing_key.rotated";
    /// A signing key retired at once (compromised): out of the JWKS, its tokens refused.
    pub const SIGNING_KEY_RETIRED: &str = "signing_key.retired";
    pub const MASTER_KEY_ROTATED: &str = "master_key.rotated";
    /// Someone followed a verification link: their address is verified. Actor the owner or user.
    pub const EMAIL_VERIFIED: &str = "email.verified";
    /// A verification link was mailed again at the owner's or user's request.
    pub const EMAIL_VERIFICATION_SENT: &str = "email.verification_sent";
    /// A reset link was mailed to an owner or user after "Forgot password?". Actor `anonymous`;
    /// the person is the target.
    pub const PASSWORD_RESET_REQUESTED: &str = "password.reset_requested";
    /// An owner or user chose a new password with a reset link; every login (and session) ended.
    pub const PASSWORD_RESET: &str = "password.reset";
    /// An owner changed their password on their account page (the current one given).
    pub const PASSWORD_CHANGED: &str = "password.changed";
    /// An owner asked to move to a new address; a link went to it and a note to the old one.
    pub const EMAIL_CHANGE_REQUESTED: &str = "email.change_requested";
    /// An owner followed the link at their new address: their email changed.
    pub const EMAIL_CHANGED: &str = "email.changed";
    /// An owner ended one or all other of their own dashboard logins.
    pub const OWNER_LOGINS_ENDED: &str = "owner.logins_ended";
    /// An owner changed the account's settings (`require_verified_users` in the detail).
    pub const ACCOUNT_SETTINGS_CHANGED: &str = "account.settings_changed";
    /// How many events from unauthenticated clients (failed logins) one account's log did not
    /// take from one client address in a window, past its limit.
    pub const AUDIT_SUPPRESSED: &str = "audit.suppressed";
    /// An owner or end user confirmed a second factor (TOTP). Actor the owner or user.
    pub const MFA_ENROLLED: &str = "mfa.enrolled";
    /// An owner or end user removed their second factor (with a code and their password).
    pub const MFA_REMOVED: &str = "mfa.removed";
    /// A wrong second-factor code: at login (actor `anonymous`, the owner or user the target),
    /// or when removing the factor or revealing a sensitive value (actor the owner or user).
    /// `at` in the detail says where; never the code.
    pub const MFA_FAILED: &str = "mfa.failed";
    /// A recovery code was used in place of a code (one fewer left: `remaining` in the detail).
    pub const MFA_RECOVERY_USED: &str = "mfa.recovery_used";
    /// A new set of recovery codes replaced the old one.
    pub const MFA_RECOVERY_REGENERATED: &str = "mfa.recovery_regenerated";
    /// An owner changed whether the account requires a second factor of its owners
    /// (`required` in the detail).
    pub const ACCOUNT_MFA_REQUIRED_CHANGED: &str = "account.mfa_required_changed";
    /// An owner or end user registered a passkey (its name in the detail). Actor the owner or user.
    pub const PASSKEY_REGISTERED: &str = "passkey.registered";
    /// An owner or end user removed one of their passkeys.
    pub const PASSKEY_REMOVED: &str = "passkey.removed";
    /// An owner or end user signed in with a passkey (both factors at once).
    pub const PASSKEY_LOGIN: &str = "passkey.login";
    /// A passkey sign-in was refused after its credential was found: a bad signature, or a
    /// signature counter that did not move forward (a cloned authenticator). Actor `anonymous`,
    /// the owner or user the target, `reason` in the detail.
    pub const PASSKEY_FAILED: &str = "passkey.failed";
    /// An application was registered (its name, kind, redirect URIs and maximum permissions in the
    /// detail; never a secret).
    pub const APP_CREATED: &str = "app.created";
    /// An application's settings were edited (the names of the fields changed in the detail).
    pub const APP_UPDATED: &str = "app.updated";
    /// An application was given a new client secret (`overlap_secs`, how long the old one still
    /// works, in the detail; never a secret).
    pub const APP_SECRET_ROTATED: &str = "app.secret_rotated";
    /// An application was disabled: refused everywhere, its sessions ended.
    pub const APP_DISABLED: &str = "app.disabled";
    /// A disabled application was enabled again.
    pub const APP_ENABLED: &str = "app.enabled";
    /// An application was deleted: its sessions ended, its grants revoked, its id never reused.
    pub const APP_DELETED: &str = "app.deleted";
    /// The operator disabled an end user: no login, every session ended.
    pub const USER_DISABLED: &str = "user.disabled";
    /// The operator enabled a disabled end user again.
    pub const USER_ENABLED: &str = "user.enabled";
    /// The operator deleted an end user and everything tied to them.
    pub const USER_DELETED: &str = "user.deleted";
    /// An owner removed an end user from the account: every grant of theirs to the account's
    /// applications revoked and the sessions under them ended (`grants` in the detail).
    pub const USER_REMOVED_FROM_ACCOUNT: &str = "user.removed_from_account";

    /// Every action, for validating filters and listing choices in the dashboard.
    pub const ALL: &[&str] = &[
        API_KEY_CREATED,
        API_KEY_REVOKED,
        API_KEY_TOKENS_REVOKED,
        API_KEY_ROLLED,
        TOKEN_MINTED,
        TOKEN_REVOKED,
        OWNER_LOGIN,
        OWNER_LOGIN_FAILED,
        USER_LOGIN,
        USER_LOGIN_FAILED,
        USER_LOGOUT,
        APP_AUTH_FAILED,
        GRANT_GIVEN,
        GRANT_REVOKED,
        REFRESH_REUSE,
        SESSION_ENDED,
        SENSITIVE_REVEALED,
        SENSITIVE_FIELDS_CHANGED,
        SIGNING_KEY_ROTATED,
        SIGNING_KEY_RETIRED,
        MASTER_KEY_ROTATED,
        EMAIL_VERIFIED,
        EMAIL_VERIFICATION_SENT,
        PASSWORD_RESET_REQUESTED,
        PASSWORD_RESET,
        PASSWORD_CHANGED,
        EMAIL_CHANGE_REQUESTED,
        EMAIL_CHANGED,
        OWNER_LOGINS_ENDED,
        ACCOUNT_SETTINGS_CHANGED,
        AUDIT_SUPPRESSED,
        PASSKEY_REGISTERED,
        PASSKEY_REMOVED,
        PASSKEY_LOGIN,
        PASSKEY_FAILED,
        MFA_ENROLLED,
        MFA_REMOVED,
        MFA_FAILED,
        MFA_RECOVERY_USED,
        MFA_RECOVERY_REGENERATED,
        ACCOUNT_MFA_REQUIRED_CHANGED,
        APP_CREATED,
        APP_UPDATED,
        APP_SECRET_ROTATED,
        APP_DISABLED,
        APP_ENABLED,
        APP_DELETED,
        USER_DISABLED,
        USER_ENABLED,
        USER_DELETED,
        USER_REMOVED_FROM_ACCOUNT,
    ];
}

/// Who did what an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// An API key, by its id.
    ApiKey,
    /// A JWT, by its `jti`.
    Token,
    /// An account owner in the dashboard, by owner id.
    Owner,
    /// An end user on Keyfob's pages or through a session token, by user id.
    User,
    /// An application, by `client_id` (e.g. revoking a session's token).
    App,
    /// The operator on the server host (the command line).
    Operator,
    /// Keyfob itself (e.g. refresh reuse detected).
    System,
    /// A client that has not authenticated (a failed login): anyone on the internet. Its events
    /// are throttled per account and client address.
    Anonymous,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::ApiKey => "api_key",
            ActorKind::Token => "token",
            ActorKind::Owner => "owner",
            ActorKind::User => "user",
            ActorKind::App => "app",
            ActorKind::Operator => "operator",
            ActorKind::System => "system",
            ActorKind::Anonymous => "anonymous",
        }
    }

    pub const ALL: [ActorKind; 8] = [
        ActorKind::ApiKey,
        ActorKind::Token,
        ActorKind::Owner,
        ActorKind::User,
        ActorKind::App,
        ActorKind::Operator,
        ActorKind::System,
        ActorKind::Anonymous,
    ];
}

/// An actor kind Keyfob does not record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown actor kind `{0}`")]
pub struct UnknownActorKind(pub String);

impl std::str::FromStr for ActorKind {
    type Err = UnknownActorKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActorKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownActorKind(s.to_owned()))
    }
}

impl std::fmt::Display for ActorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ActorKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 100;
pub const MAX_PAGE: u32 = crate::query::MAX_PAGE;
const MAX_ACTOR_LEN: usize = 128;

/// A parsed audit listing request; `until` is exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub limit: u32,
    pub page: u32,
    pub action: Option<&'static str>,
    pub actor: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl Default for AuditQuery {
    fn default() -> Self {
        AuditQuery {
            limit: DEFAULT_LIMIT,
            page: 1,
            action: None,
            actor: None,
            since: None,
            until: None,
        }
    }
}

/// Why an audit listing request was refused; each names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditQueryError {
    #[error("`limit` must be a whole number from 1 to {MAX_LIMIT}")]
    Limit,
    #[error("`page` must be a whole number from 1 to {MAX_PAGE}")]
    Page,
    #[error("`action` is not a known audit action: `{0}`")]
    Action(String),
    #[error("`actor` must be an id of at most {MAX_ACTOR_LEN} letters, digits, `-` or `_`")]
    Actor,
    #[error("`{0}` is not an ISO-8601 date-time or date (e.g. 2026-01-01T00:00:00Z or 2026-01-01)")]
    Time(&'static str),
    #[error("`since` must be before `until`")]
    EmptyRange,
    #[error("`{0}` is not a known query parameter")]
    Unknown(String),
    #[error("`{0}` is given more than once")]
    Repeated(&'static str),
}

impl AuditQuery {
    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.limit)
    }

    /// Reads the query string's pairs. An empty filter (an untouched form field) means "no filter";
    /// an empty `limit` or `page` is refused.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<AuditQuery, AuditQueryError> {
        let mut query = AuditQuery::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in pairs {
            let name: &'static str = match key.as_str() {
                "limit" => "limit",
                "page" => "page",
                "action" => "action",
                "actor" => "actor",
                "since" => "since",
                "until" => "until",
                other => return Err(AuditQueryError::Unknown(other.chars().take(80).collect())),
            };
            if seen.contains(&name) {
                return Err(AuditQueryError::Repeated(name));
            }
            seen.push(name);
            let value = value.trim();
            match name {
                // Paging is never a filter: an empty value is refused as list queries refuse it.
                "limit" => {
                    query.limit = parse_limit(value, MAX_LIMIT).ok_or(AuditQueryError::Limit)?;
                }
                "page" => {
                    query.page = parse_page(value).ok_or(AuditQueryError::Page)?;
                }
                _ if value.is_empty() => {}
                "action" => {
                    query.action = Some(
                        action::ALL
                            .iter()
                            .copied()
                            .find(|a| *a == value)
                            .ok_or_else(|| {
                                AuditQueryError::Action(value.chars().take(80).collect())
                            })?,
                    );
                }
                "actor" => {
                    let valid = value.len() <= MAX_ACTOR_LEN
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    if !valid {
                        return Err(AuditQueryError::Actor);
                    }
                    query.actor = Some(value.to_owned());
                }
                "since" | "until" => {
                    let at = parse_instant(value).ok_or(AuditQueryError::Time(name))?;
                    let at = Timestamp::from(at);
                    if name == "since" {
                        query.since = Some(at);
                    } else {
                        query.until = Some(at);
                    }
                }
                _ => unreachable!("every name is matched above"),
            }
        }
        if let (Some(since), Some(until)) = (query.since, query.until)
            && since >= until
        {
            return Err(AuditQueryError::EmptyRange);
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<AuditQuery, AuditQueryError> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AuditQuery::from_pairs(&owned)
    }

    #[test]
    fn defaults_and_full_query() {
        assert_eq!(q(&[]).unwrap(), AuditQuery::default());
        let query = q(&[
            ("action", "sensitive.revealed"),
            ("actor", "0190-abc_d"),
            ("since", "2026-01-01"),
            ("until", "2026-01-02T00:00:00Z"),
            ("limit", "5"),
            ("page", "2"),
        ])
        .unwrap();
        assert_eq!(query.action, Some(action::SENSITIVE_REVEALED));
        assert_eq!(query.actor.as_deref(), Some("0190-abc_d"));
        assert_eq!(
            query.since,
            Some(Timestamp::from_unix_ms(1_767_225_600_000))
        );
        assert_eq!(
            query.until,
            Some(Timestamp::from_unix_ms(1_767_312_000_000))
        );
        assert_eq!(query.offset(), 5);
    }

    #[test]
    fn empty_values_mean_no_filter() {
        let query = q(&[("action", ""), ("actor", " "), ("since", "")]).unwrap();
        assert_eq!(query, AuditQuery::default());
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(q(&[("limit", "0")]), Err(AuditQueryError::Limit));
        assert_eq!(q(&[("limit", "101")]), Err(AuditQueryError::Limit));
        assert_eq!(q(&[("page", "x")]), Err(AuditQueryError::Page));
        assert_eq!(q(&[("page", "")]), Err(AuditQueryError::Page));
        assert_eq!(q(&[("limit", "")]), Err(AuditQueryError::Limit));
        assert!(matches!(
            q(&[("action", "drop table")]),
            Err(AuditQueryError::Action(_))
        ));
        assert_eq!(q(&[("actor", "a'b")]), Err(AuditQueryError::Actor));
        assert_eq!(
            q(&[("since", "yesterday")]),
            Err(AuditQueryError::Time("since"))
        );
        assert_eq!(
            q(&[("since", "2026-01-02"), ("until", "2026-01-01")]),
            Err(AuditQueryError::EmptyRange)
        );
        assert!(matches!(
            q(&[("bogus", "1")]),
            Err(AuditQueryError::Unknown(_))
        ));
        assert_eq!(
            q(&[("action", "token.minted"), ("action", "token.revoked")]),
            Err(AuditQueryError::Repeated("action"))
        );
    }

    #[test]
    fn every_action_is_distinct() {
        let mut all = action::ALL.to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), action::ALL.len());
    }

    #[test]
    fn actor_kinds_read_back_from_their_names_only() {
        for kind in ActorKind::ALL {
            assert_eq!(kind.as_str().parse::<ActorKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        for bad in ["", "API_KEY", "robot", "owner "] {
            assert_eq!(
                bad.parse::<ActorKind>(),
                Err(UnknownActorKind(bad.to_owned()))
            );
        }
    }
}
