//! Rows as the store reads and writes them.

use keyfob_domain::audit::ActorKind;
use keyfob_domain::ids::{
    AccountId, ClientId, EventId, FamilyId, GrantId, Jti, KeyId, Kid, OwnerId, RecordId, UserId,
};
use keyfob_domain::mail::{LinkPurpose, PersonKind};
use keyfob_domain::secret::constant_time_eq;
use keyfob_domain::signing::SigningAlg;
use keyfob_domain::time::Timestamp;
use sqlx::FromRow;

use crate::types::{ChangeKind, JsonText, Permissions, Strings};

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub created_at: Timestamp,
    /// Whether end users whose email is not verified are kept from the account's applications.
    pub require_verified_users: bool,
}

#[derive(Clone, PartialEq, Eq, FromRow)]
pub struct Owner {
    pub id: OwnerId,
    pub account_id: AccountId,
    pub email: String,
    /// An argon2id PHC string.
    pub password_hash: String,
    pub created_at: Timestamp,
    /// When the owner followed a verification link mailed to `email` (or a reset link).
    pub email_verified_at: Option<Timestamp>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ApiKeyRow {
    pub id: KeyId,
    pub account_id: AccountId,
    pub name: String,
    /// `kf_` and the first characters, to recognise the key in a list.
    pub prefix: String,
    /// SHA-256 of the key, hex.
    pub key_hash: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// Tokens the key minted at or before this instant are refused ("revoke all tokens of this
    /// key"); the key itself stays live.
    pub tokens_revoked_before: Option<Timestamp>,
    /// What the key may do; `None` for the guide's full-access key.
    pub permissions: Option<Permissions>,
    /// From this instant the key, and every token it minted, is refused (its lifetime ended, or
    /// the overlap after it was rolled).
    pub expires_at: Option<Timestamp>,
    /// At most this many requests per [`ApiKeyRow::rate_limit_window_secs`], made with the key
    /// or with tokens it minted.
    pub rate_limit_requests: Option<i64>,
    pub rate_limit_window_secs: Option<i64>,
    /// The key this one replaced when that one was rolled.
    pub rolled_from: Option<KeyId>,
    /// The client address of the last use written so far.
    pub last_used_ip: Option<String>,
}

impl ApiKeyRow {
    /// The permission set the key holds.
    pub fn permission_set(&self) -> keyfob_domain::PermissionSet {
        match &self.permissions {
            None => keyfob_domain::PermissionSet::All,
            Some(list) => keyfob_domain::PermissionSet::only(list.0.clone()),
        }
    }

    /// The key's rate limit, when it has one (both columns set and in range).
    pub fn rate_limit(&self) -> Option<keyfob_domain::key_policy::RateLimit> {
        let requests = u32::try_from(self.rate_limit_requests?).ok()?;
        let secs = u64::try_from(self.rate_limit_window_secs?).ok()?;
        (requests > 0 && secs > 0).then(|| keyfob_domain::key_policy::RateLimit {
            requests,
            window: std::time::Duration::from_secs(secs),
        })
    }

    /// Whether it no longer works at `now`: revoked, or past its expiry.
    pub fn is_dead(&self, now: Timestamp) -> bool {
        self.revoked_at.is_some() || self.expires_at.is_some_and(|at| at <= now)
    }
}

/// One key's requests on one UTC day, as [`crate::Store::add_key_usage`] adds them up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromRow)]
pub struct UsageCounts {
    pub ok: i64,
    pub client_errors: i64,
    pub limited: i64,
    pub server_errors: i64,
}

impl UsageCounts {
    pub fn total(&self) -> i64 {
        self.ok + self.client_errors + self.limited + self.server_errors
    }

    pub fn add(&mut self, other: &UsageCounts) {
        self.ok += other.ok;
        self.client_errors += other.client_errors;
        self.limited += other.limited;
        self.server_errors += other.server_errors;
    }
}

/// Requests made with an API key itself or with the tokens it minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UsageVia {
    Key,
    Token,
}

impl UsageVia {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageVia::Key => "key",
            UsageVia::Token => "token",
        }
    }

    pub fn from_name(name: &str) -> Option<UsageVia> {
        match name {
            "key" => Some(UsageVia::Key),
            "token" => Some(UsageVia::Token),
            _ => None,
        }
    }
}

/// One row of `api_key_usage`: a key's counts on a day (days since 1970-01-01, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub key_id: KeyId,
    pub day: i64,
    pub via: UsageVia,
    pub counts: UsageCounts,
}

/// One minted token's counts on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUsageRow {
    pub jti: Jti,
    pub day: i64,
    pub counts: UsageCounts,
}

/// The last use of a key, as the batch writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub key_id: KeyId,
    pub at: Timestamp,
    pub ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TokenRow {
    pub jti: Jti,
    pub account_id: AccountId,
    pub api_key_id: Option<KeyId>,
    pub subject: String,
    pub permissions: Permissions,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// When it was revoked: by itself, by its API key's revocation, or by revoking all of its
    /// key's tokens, whichever came first. Read from the token and its key together.
    pub revoked_at: Option<Timestamp>,
    /// The name given at minting, if any.
    pub name: Option<String>,
    /// The metadata object given at minting, if any.
    pub metadata: Option<JsonText<serde_json::Map<String, serde_json::Value>>>,
    /// When it was last used, as the batch writes it (minted tokens only).
    pub last_used_at: Option<Timestamp>,
}

/// Which tokens of an account to list, newest first.
#[derive(Debug, Clone, Copy)]
pub struct TokenFilter<'a> {
    pub account_id: &'a AccountId,
    /// Only tokens minted by this API key.
    pub api_key_id: Option<&'a KeyId>,
    /// Only tokens whose permissions include this exact permission string.
    pub permission: Option<&'a str>,
    /// Only tokens in this state at `now`.
    pub status: Option<TokenStatus>,
    /// Only tokens whose name or metadata contains this text (case-insensitive for ASCII).
    pub text: Option<&'a str>,
    /// To tell live from expired.
    pub now: Timestamp,
    pub limit: u32,
    pub offset: u64,
}

pub use keyfob_domain::identity::IdentityScopes;
pub use keyfob_domain::token_list::TokenStatus;

/// What the verify path must refuse of one API key's tokens, and how long that matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCutoff {
    /// Tokens minted at or before this instant are refused; `Timestamp::MAX` when the key is
    /// revoked (every token it minted).
    pub before: Timestamp,
    /// When the last token this refuses expires: no need to remember it after that.
    pub until: Timestamp,
}

#[derive(Clone, PartialEq, Eq, FromRow)]
pub struct SigningKeyRow {
    pub kid: Kid,
    pub alg: SigningAlg,
    /// The PKCS#8 private key, sealed with the master key (base64 of nonce and ciphertext).
    pub private_key: String,
    /// The public key as a JWK (JSON).
    pub public_jwk: String,
    pub created_at: Timestamp,
    /// From when it signs.
    pub activates_at: Timestamp,
    /// From when it no longer signs.
    pub retires_at: Option<Timestamp>,
    /// From when its public key leaves the JWKS (no token it signed is alive).
    pub expires_at: Option<Timestamp>,
    /// When the operator retired it (compromised): it left the JWKS then and every token it
    /// signed is refused.
    pub revoked_at: Option<Timestamp>,
}

/// The key that signs after a signing key is retired, and how it changes: see
/// [`crate::Store::retire_signing_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningHeir {
    pub kid: Kid,
    /// It signs from this instant (brought forward to the retirement when it was later).
    pub activates_at: Timestamp,
    /// It no longer hands over to the retired key: it signs (and stays published) until the next
    /// rotation.
    pub keep_signing: bool,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("activates_at", &self.activates_at)
            .field("retires_at", &self.retires_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordRow {
    pub id: RecordId,
    pub account_id: AccountId,
    pub resource: String,
    /// The end user who created it through a session, if any.
    pub owner_user_id: Option<UserId>,
    pub doc: serde_json::Value,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Which records a caller may touch: an account's resource, and for a user-session token only the
/// records its user created.
#[derive(Debug, Clone, Copy)]
pub struct RecordScope<'a> {
    pub account_id: &'a AccountId,
    pub resource: &'a str,
    pub owner_user_id: Option<&'a UserId>,
}

/// An account owner's login to the dashboard (a browser cookie); the table is `dashboard_sessions`.
#[derive(Clone, PartialEq, Eq, FromRow)]
pub struct OwnerLoginRow {
    /// SHA-256 of the session cookie's value.
    pub id_hash: String,
    pub owner_id: OwnerId,
    pub account_id: AccountId,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The client address and browser that logged in, shown on the owner's own security page.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl std::fmt::Debug for OwnerLoginRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerLoginRow")
            .field("owner_id", &self.owner_id)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// One entry of the change feed: what other nodes must reload.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Change {
    pub id: i64,
    pub kind: ChangeKind,
    pub subject: String,
    pub created_at: Timestamp,
}

/// An application registered for user sessions.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AppRow {
    pub client_id: ClientId,
    pub account_id: AccountId,
    pub name: String,
    /// A public app (SPA, PKCE required) has no secret; a confidential one has.
    pub public: bool,
    /// SHA-256 of the client secret, for a confidential app.
    pub client_secret_hash: Option<String>,
    /// Exact redirect URIs.
    pub redirect_uris: Strings,
    /// Exact addresses the browser may be sent to after logging out (RP-initiated logout).
    pub post_logout_redirect_uris: Strings,
    /// Browser origins allowed by CORS.
    pub origins: Strings,
    /// The most permissions the app may ask a user for.
    pub max_permissions: Permissions,
    pub refresh_idle_secs: Option<i64>,
    pub refresh_absolute_secs: Option<i64>,
    /// Whether the app may receive tokens in the URL fragment (`response_type=token`).
    pub allow_fragment: bool,
    pub created_at: Timestamp,
    /// When the app was disabled (or deleted): it is refused everywhere until enabled again.
    pub revoked_at: Option<Timestamp>,
    /// SHA-256 of the secret a rotation replaced, accepted until `previous_secret_expires_at`.
    pub previous_secret_hash: Option<String>,
    pub previous_secret_expires_at: Option<Timestamp>,
    /// When the app was deleted: never shown, accepted or enabled again; its `client_id` stays
    /// taken.
    pub deleted_at: Option<Timestamp>,
    /// What the consent page shows besides the name (see [`AppLinks`]).
    #[sqlx(flatten)]
    pub links: AppLinks,
}

/// An application's addresses for its users: its logo, home page and privacy policy, shown on the
/// consent page. Each is checked (HTTPS, or HTTP on localhost) before it is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct AppLinks {
    pub logo_uri: Option<String>,
    pub homepage_uri: Option<String>,
    pub policy_uri: Option<String>,
}

impl AppRow {
    /// Whether `hash` is the SHA-256 of a secret the app accepts at `now`: its secret, or the one
    /// a rotation replaced while the overlap lasts. Compared in constant time.
    pub fn accepts_secret_hash(&self, hash: &str, now: Timestamp) -> bool {
        let current = self
            .client_secret_hash
            .as_deref()
            .is_some_and(|stored| constant_time_eq(stored, hash));
        let previous = self.previous_secret_hash.as_deref().is_some_and(|stored| {
            self.previous_secret_expires_at
                .is_some_and(|until| now < until)
                && constant_time_eq(stored, hash)
        });
        current | previous
    }
}

/// What an operator or an owner may change of a registered application; the rest (its id, its
/// account, whether it is public, its secret) stays as it was registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEdit {
    pub name: String,
    pub redirect_uris: Strings,
    pub post_logout_redirect_uris: Strings,
    pub origins: Strings,
    pub max_permissions: Permissions,
    pub refresh_idle_secs: Option<i64>,
    pub refresh_absolute_secs: Option<i64>,
    pub allow_fragment: bool,
}

/// Which end users to list, by email, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct UserFilter<'a> {
    /// Only users whose email contains this text (case-insensitive).
    pub email_contains: Option<&'a str>,
    pub limit: u32,
}

/// An end user of the deployment's one user pool.
#[derive(Clone, PartialEq, Eq, FromRow)]
pub struct UserRow {
    pub id: UserId,
    pub email: String,
    pub password_hash: String,
    pub created_at: Timestamp,
    pub password_changed_at: Timestamp,
    /// When the user followed a verification link mailed to `email` (or a reset link).
    pub email_verified_at: Option<Timestamp>,
    /// When an operator disabled the user: no login, no session, until enabled again.
    pub disabled_at: Option<Timestamp>,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// A user's consent to an application: what it may do on their behalf.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct GrantRow {
    pub id: GrantId,
    pub user_id: UserId,
    pub client_id: ClientId,
    pub account_id: AccountId,
    /// The granted permissions.
    pub permissions: Permissions,
    /// The granted identity scopes (`openid`, `profile`, `email`).
    pub identity: IdentityScopes,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A one-time authorization code, stored by hash.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AuthCodeRow {
    pub code_hash: String,
    pub client_id: ClientId,
    pub user_id: UserId,
    pub grant_id: GrantId,
    pub redirect_uri: String,
    pub permissions: Permissions,
    /// The identity scopes the code answers for: with `openid`, its exchange returns an id_token.
    pub identity: IdentityScopes,
    /// The authorization request's `nonce`, for the id_token.
    pub nonce: Option<String>,
    /// When the user logged in (the id_token's `auth_time`); none in codes from before it was kept.
    pub auth_time: Option<Timestamp>,
    /// The PKCE S256 challenge, if the client sent one.
    pub code_challenge: Option<String>,
    pub family_id: Option<FamilyId>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

/// One login session of a user in an application: the refresh tokens rotated from one another.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct FamilyRow {
    pub id: FamilyId,
    pub user_id: UserId,
    pub client_id: ClientId,
    pub grant_id: GrantId,
    /// The identity scopes of the session: with `openid`, each refresh returns an id_token.
    pub identity: IdentityScopes,
    /// When the user logged in for it; none in sessions from before it was kept.
    pub auth_time: Option<Timestamp>,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A refresh token, stored by hash.
#[derive(Clone, PartialEq, Eq, FromRow)]
pub struct RefreshRow {
    pub token_hash: String,
    pub family_id: FamilyId,
    pub permissions: Permissions,
    pub created_at: Timestamp,
    pub used_at: Option<Timestamp>,
    /// The pair issued when it was used, sealed; kept through the grace window.
    pub next_sealed: Option<String>,
}

impl std::fmt::Debug for RefreshRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRow")
            .field("family_id", &self.family_id)
            .field("used_at", &self.used_at)
            .finish_non_exhaustive()
    }
}

/// A session to start: see [`crate::Store::start_families`].
#[derive(Debug, Clone)]
pub struct NewFamily {
    pub family: FamilyRow,
    pub first: RefreshRow,
    /// The authorization code exchanged for it (hash) and the time it is used, if any.
    pub code: Option<(String, Timestamp)>,
}

/// One use of a refresh token to write: see [`crate::Store::rotate_refreshes`].
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The token being used.
    pub old_hash: String,
    /// The token that replaces it.
    pub next: RefreshRow,
    /// The pair issued, sealed, kept on the used row for retries within the grace window.
    pub next_sealed: String,
    pub now: Timestamp,
    /// Also set the family's last use to `now`.
    pub touch_family: bool,
}

/// A refresh token with its family and the permissions of the grant it lives under, read in one
/// query on the refresh path.
#[derive(Debug, Clone)]
pub struct RefreshSession {
    pub token: RefreshRow,
    pub family: FamilyRow,
    /// The grant's permissions, or `None` when the grant is revoked or gone.
    pub grant_permissions: Option<Permissions>,
}

/// An end user's login to Keyfob's own pages (a browser cookie), not to be confused with a
/// session: a session is always a refresh family, the login of a user in an application.
#[derive(Clone, PartialEq, Eq, FromRow)]
pub struct UserLoginRow {
    pub id_hash: String,
    pub user_id: UserId,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for UserLoginRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserLoginRow")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// One event of the audit log. Never updated or deleted.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AuditEventRow {
    pub id: EventId,
    /// The account the event belongs to; `None` for events no account owns (a failed login for an
    /// unknown email).
    pub account_id: Option<AccountId>,
    pub at: Timestamp,
    pub actor_kind: ActorKind,
    pub actor_id: String,
    pub action: String,
    /// What was acted on: a key id, a token id, `resource/record#field`, …
    pub target: Option<String>,
    pub ip: Option<String>,
    /// A JSON object with more detail; never a secret or a sensitive value.
    pub detail: Option<JsonText<serde_json::Value>>,
}

/// Which audit events of an account to list, newest first.
#[derive(Debug, Clone, Copy)]
pub struct AuditFilter<'a> {
    pub account_id: &'a AccountId,
    pub action: Option<&'a str>,
    pub actor_id: Option<&'a str>,
    /// Inclusive.
    pub since: Option<Timestamp>,
    /// Exclusive.
    pub until: Option<Timestamp>,
    pub limit: u32,
    pub offset: u64,
}

/// An account's vault: its data key, sealed with the master key, and its sensitive field names.
#[derive(Clone, PartialEq, Eq, FromRow)]
pub struct AccountVaultRow {
    pub account_id: AccountId,
    /// The data key sealed with the master key (base64 of nonce and ciphertext).
    pub data_key: String,
    /// The names of the fields whose values are kept sealed.
    pub sensitive_fields: Strings,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for AccountVaultRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountVaultRow")
            .field("account_id", &self.account_id)
            .field("sensitive_fields", &self.sensitive_fields)
            .finish_non_exhaustive()
    }
}

/// Everything sealed with the master key, sealed again under a new one: written in one
/// transaction by a master-key rotation.
#[derive(Default)]
pub struct Resealed {
    /// The new master key's check value.
    pub check: String,
    /// `(kid, private_key)`.
    pub signing_keys: Vec<(Kid, String)>,
    /// `(account_id, data_key)`.
    pub data_keys: Vec<(AccountId, String)>,
    /// `(token_hash, next_sealed)` of refresh tokens whose retry answer is still kept.
    pub refresh_answers: Vec<(String, String)>,
    /// `(holder, secret)` of second factors (TOTP secrets).
    pub totp_secrets: Vec<(crate::FactorHolder, String)>,
}

impl std::fmt::Debug for Resealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resealed")
            .field("signing_keys", &self.signing_keys.len())
            .field("data_keys", &self.data_keys.len())
            .field("refresh_answers", &self.refresh_answers.len())
            .field("totp_secrets", &self.totp_secrets.len())
            .finish_non_exhaustive()
    }
}

/// A link mailed to someone (verification, password reset, change of email), kept as the hash of
/// its token; the table is `email_tokens`.
#[derive(Clone, PartialEq, Eq, FromRow)]
pub struct EmailLinkRow {
    /// SHA-256 of the link's token.
    pub token_hash: String,
    pub purpose: LinkPurpose,
    #[sqlx(rename = "subject_kind")]
    pub person: PersonKind,
    /// The owner's or the user's id.
    pub subject_id: String,
    /// The address the link was mailed to: for a change of email, the new one.
    pub email: String,
    /// Where the person goes on afterwards: an end user's authorization request, as a query.
    pub next: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

impl std::fmt::Debug for EmailLinkRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailLinkRow")
            .field("purpose", &self.purpose)
            .field("person", &self.person)
            .field("subject_id", &self.subject_id)
            .field("expires_at", &self.expires_at)
            .field("used_at", &self.used_at)
            .finish_non_exhaustive()
    }
}
