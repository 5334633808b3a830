//! User sessions after consent: issuing the access token and refresh token of a session, and
//! rotating refresh tokens safely.
//!
//! A session is a refresh *family*: the first refresh token and every one rotated from it. Each
//! use of a refresh token marks it used and issues the next pair. A retry of the same token within
//! the grace window (two tabs, a lost response) gets the very same pair back: it is kept sealed
//! with the master key on the used row until the window passes. A use after the window is reuse
//! — a sign the token was copied — and ends that family only.

use std::sync::Arc;
use std::time::Duration;

use keyfob_domain::claims::{Bearer, Claims};
use keyfob_domain::id_token::{IdTokenFor, UserFacts};
use keyfob_domain::identity::{IdentityScopes, scope_string};
use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_domain::session::{Ended, RefreshFacts, RefreshState, SessionLimits, refresh_state};
use keyfob_domain::time::{Timestamp, secs};
use keyfob_store::{
    AppRow, FamilyId, FamilyRow, GrantRow, NewFamily, Permissions, RefreshRow, RefreshSession,
    Rotation, Store, UserId, UserRow,
};
use serde::{Deserialize, Serialize};

use crate::batch::Batcher;
use crate::state::AppState;

/// How long a session's access token lives, in seconds (`expires_in`).
pub const ACCESS_TOKEN_SECS: i64 = 600;
/// How long a session's access token lives.
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(ACCESS_TOKEN_SECS as u64);
/// How long an ended session's access tokens are refused: their lifetime and a minute to spare.
pub const ENDED_SESSION_MEMORY: Duration = Duration::from_secs(ACCESS_TOKEN_SECS as u64 + 60);
/// How stale a family's last-use time may get before a refresh writes it again (when the app has
/// no idle limit).
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Every refresh token starts with this.
pub const REFRESH_PREFIX: &str = "kfr_";

/// What a session hands the application: the OAuth token response's content.
#[derive(Clone, Serialize, Deserialize)]
pub struct IssuedPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Space-separated identity scopes and permissions.
    pub scope: String,
    /// The family (session) id, the tokens' `sid`.
    pub session_id: String,
    /// With the `openid` scope: who the user is, for the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// How the user signed in to a session: what an id_token says beyond who they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignIn<'a> {
    /// The identity scopes granted for the session.
    pub identity: IdentityScopes,
    /// When the user logged in (an id_token's `auth_time`).
    pub auth_time: Option<Timestamp>,
    /// The authorization request's `nonce`.
    pub nonce: Option<&'a str>,
    /// Whether the answer carries an id_token (with `openid`; never in the URL fragment).
    pub id_token: bool,
}

/// Why a refresh was refused. Each is `invalid_grant` to the client; the detail is for logs.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the refresh token is unknown")]
    Unknown,
    #[error("the refresh token belongs to another client")]
    WrongClient,
    #[error("the code was already used")]
    CodeUsed,
    #[error("{}", .0.describe())]
    Ended(Ended),
    #[error("the refresh token was already used; the session has been ended")]
    Reused,
    #[error(transparent)]
    Store(#[from] keyfob_store::StoreError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The most session starts, or refresh-token uses, written in one transaction.
const MAX_BATCH: usize = 256;

/// The writer tasks of the token endpoint: concurrent session starts share one transaction, and
/// so do concurrent refreshes.
#[derive(Clone)]
pub struct SessionWrites {
    starts: Batcher<NewFamily, bool>,
    rotations: Batcher<Rotation, bool>,
}

impl SessionWrites {
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let for_starts = store.clone();
        SessionWrites {
            starts: Batcher::spawn("session starts", MAX_BATCH, move |items: Vec<NewFamily>| {
                let store = for_starts.clone();
                async move { store.start_families(&items).await }
            }),
            rotations: Batcher::spawn(
                "refresh rotations",
                MAX_BATCH,
                move |items: Vec<Rotation>| {
                    let store = store.clone();
                    async move { store.rotate_refreshes(&items).await }
                },
            ),
        }
    }
}

fn new_refresh_token() -> String {
    format!("{REFRESH_PREFIX}{}", random_token())
}

fn sign_access(
    state: &AppState,
    app: &AppRow,
    user_id: &UserId,
    family_id: &FamilyId,
    identity: IdentityScopes,
    permissions: &[String],
    now: Timestamp,
) -> anyhow::Result<(String, i64)> {
    let bearer = Bearer::Session {
        account_id: &app.account_id,
        client_id: &app.client_id,
        user_id,
        family_id,
    };
    let claims = Claims::new(
        state.tokens.issuer(),
        state.tokens.audience(),
        bearer,
        permissions.to_vec(),
        now,
        now + ACCESS_TOKEN_LIFETIME,
    )
    .with_identity(identity);
    let token = state.tokens.sign(&claims, now)?;
    Ok((token, claims.exp))
}

/// What an id_token or userinfo may tell of `user`: `email_verified` once they followed a link
/// mailed to the address; the profile's `updated_at` is the last change Keyfob keeps (the
/// password's).
pub fn user_facts(user: &UserRow) -> UserFacts<'_> {
    UserFacts {
        user_id: &user.id,
        email: &user.email,
        email_verified: user.email_verified_at.is_some(),
        updated_at: user.password_changed_at.max(user.created_at),
    }
}

/// Signs the id_token of a session's answer: the user is read for the claims the scopes release.
async fn sign_id_token(
    state: &AppState,
    app: &AppRow,
    user_id: &UserId,
    family_id: &FamilyId,
    sign_in: &SignIn<'_>,
    access_token: &str,
    now: Timestamp,
) -> Result<String, SessionError> {
    let user = state
        .store
        .find_user(user_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the session's user {user_id} is gone"))?;
    let to = IdTokenFor {
        issuer: state.tokens.issuer(),
        client_id: &app.client_id,
        user: user_facts(&user),
        scopes: sign_in.identity,
        auth_time: sign_in.auth_time.unwrap_or(now),
        nonce: sign_in.nonce,
        session: Some(family_id),
        access_token: Some(access_token),
    };
    Ok(state
        .tokens
        .sign_id_token(&to, now, ACCESS_TOKEN_LIFETIME)
        .map_err(anyhow::Error::from)?)
}

/// Starts a session for a user who granted `permissions` to `app`: a new family, its first
/// refresh token and an access token, and with `openid` an id_token. `code_hash` is the
/// authorization code being exchanged: it is used up in the same transaction, and a code someone
/// else used first ends in [`SessionError::CodeUsed`].
pub async fn start(
    state: &AppState,
    app: &AppRow,
    user_id: &UserId,
    grant: &GrantRow,
    permissions: &[String],
    sign_in: SignIn<'_>,
    code_hash: Option<&str>,
) -> Result<IssuedPair, SessionError> {
    let now = Timestamp::now();
    let family = FamilyRow {
        id: uuid::Uuid::now_v7().to_string().into(),
        user_id: user_id.to_owned(),
        client_id: app.client_id.clone(),
        grant_id: grant.id.clone(),
        identity: sign_in.identity,
        auth_time: sign_in.auth_time,
        created_at: now,
        last_used_at: now,
        revoked_at: None,
    };
    let refresh_token = new_refresh_token();
    let first = RefreshRow {
        token_hash: hash_secret(&refresh_token),
        family_id: family.id.clone(),
        permissions: Permissions::parse(permissions).map_err(anyhow::Error::from)?,
        created_at: now,
        used_at: None,
        next_sealed: None,
    };
    let session_id = family.id.clone();
    let start = NewFamily {
        family,
        first,
        code: code_hash.map(|hash| (hash.to_owned(), now)),
    };
    if !state
        .writes
        .starts
        .submit(start)
        .await
        // The store's error stays the source, so that an outage is still told apart.
        .map_err(|err| anyhow::Error::new(err).context("starting a session"))?
    {
        return Err(SessionError::CodeUsed);
    }
    let (access_token, expires_at) = sign_access(
        state,
        app,
        user_id,
        &session_id,
        sign_in.identity,
        permissions,
        now,
    )?;
    let id_token = if sign_in.id_token && sign_in.identity.openid {
        Some(
            sign_id_token(
                state,
                app,
                user_id,
                &session_id,
                &sign_in,
                &access_token,
                now,
            )
            .await?,
        )
    } else {
        None
    };
    Ok(IssuedPair {
        access_token,
        refresh_token,
        expires_at,
        scope: scope_string(sign_in.identity, permissions),
        session_id: session_id.into(),
        id_token,
    })
}

pub(crate) fn retry_aad(old_hash: &str) -> Vec<u8> {
    format!("refresh-retry:{old_hash}").into_bytes()
}

/// The limits `app` puts on its sessions.
pub fn limits(app: &AppRow) -> SessionLimits {
    SessionLimits {
        idle: app.refresh_idle_secs.map(secs),
        max_age: app.refresh_absolute_secs.map(secs),
    }
}

/// What the domain rule needs to know of a refresh token and its session.
fn facts(token: &RefreshRow, family: &FamilyRow, grant_live: bool) -> RefreshFacts {
    RefreshFacts {
        used_at: token.used_at,
        retry_answer_kept: token.next_sealed.is_some(),
        session_started_at: family.created_at,
        session_last_used_at: family.last_used_at,
        session_ended: family.revoked_at.is_some(),
        grant_live,
    }
}

/// What a refresh token of a session is worth at `now`: the one rule the token endpoint and
/// introspection share.
pub fn state_of(
    state: &AppState,
    app: &AppRow,
    session: &RefreshSession,
    now: Timestamp,
) -> RefreshState {
    refresh_state(
        &facts(
            &session.token,
            &session.family,
            session.grant_permissions.is_some(),
        ),
        limits(app),
        state.config.refresh_grace(),
        now,
    )
}

/// Uses a refresh token of `app`: rotates it, or answers a retry within the grace window with
/// the same pair, or — on reuse after the window — ends the family.
pub async fn refresh(
    state: &AppState,
    app: &AppRow,
    refresh_token: &str,
) -> Result<IssuedPair, SessionError> {
    let result = use_refresh_token(state, app, refresh_token).await;
    crate::measures::refreshed(match &result {
        Ok(_) => crate::measures::Refreshed::Ok,
        Err(SessionError::Reused) => crate::measures::Refreshed::Reused,
        Err(_) => crate::measures::Refreshed::Refused,
    });
    result
}

/// [`refresh`], uncounted.
async fn use_refresh_token(
    state: &AppState,
    app: &AppRow,
    refresh_token: &str,
) -> Result<IssuedPair, SessionError> {
    let now = Timestamp::now();
    let old_hash = hash_secret(refresh_token);
    let session = state
        .store
        .find_refresh_session(&old_hash)
        .await?
        .ok_or(SessionError::Unknown)?;
    if session.family.client_id != app.client_id {
        return Err(SessionError::WrongClient);
    }
    let mut token = match state_of(state, app, &session, now) {
        RefreshState::Ended(why) => return Err(SessionError::Ended(why)),
        RefreshState::Live => {
            if let Some(pair) = rotate(state, app, &session, &old_hash, now).await? {
                return Ok(pair);
            }
            // Another request used it first, a moment ago: read what that one left.
            state
                .store
                .find_refresh(&old_hash)
                .await?
                .ok_or(SessionError::Unknown)?
        }
        RefreshState::Retry | RefreshState::Reused => session.token,
    };
    let family = session.family;
    let grant_live = session.grant_permissions.is_some();
    match refresh_state(
        &facts(&token, &family, grant_live),
        limits(app),
        state.config.refresh_grace(),
        now,
    ) {
        RefreshState::Retry => {
            let sealed = token.next_sealed.take().ok_or(SessionError::Unknown)?;
            let plain = state.master.open(&sealed, &retry_aad(&old_hash))?;
            let pair: IssuedPair = serde_json::from_slice(&plain).map_err(anyhow::Error::from)?;
            return Ok(pair);
        }
        RefreshState::Ended(why) => return Err(SessionError::Ended(why)),
        RefreshState::Live | RefreshState::Reused => {}
    }
    end_family(state, &family.id).await?;
    tracing::warn!(
        session = %family.id,
        client_id = %app.client_id,
        user = %family.user_id,
        "refresh token reuse detected; session ended"
    );
    metrics::counter!("keyfob_refresh_reuse_total").increment(1);
    state.audit.record(
        crate::audit::AuditEvent::new(
            Some(&app.account_id),
            crate::audit::Actor::system(),
            keyfob_domain::audit::action::REFRESH_REUSE,
        )
        .target(&family.id)
        .detail(serde_json::json!({ "client_id": app.client_id, "user_id": family.user_id })),
    );
    Err(SessionError::Reused)
}

/// Rotates a live refresh token: signs the next access token, seals the pair for retries and
/// hands the rotation to the batch writer. `None` when another request used the token first.
async fn rotate(
    state: &AppState,
    app: &AppRow,
    session: &RefreshSession,
    old_hash: &str,
    now: Timestamp,
) -> Result<Option<IssuedPair>, SessionError> {
    let family = &session.family;
    let grant_permissions = session
        .grant_permissions
        .as_ref()
        .ok_or(SessionError::Ended(Ended::GrantRevoked))?;
    let permissions = narrowed(&session.token.permissions, grant_permissions);
    let next_token = new_refresh_token();
    let (access_token, expires_at) = sign_access(
        state,
        app,
        &family.user_id,
        &family.id,
        family.identity,
        &permissions,
        now,
    )?;
    // A refresh answers with a new id_token too (OpenID Connect Core 1.0 §12.2): the same user
    // and login time, no nonce.
    let id_token = if family.identity.openid {
        let sign_in = SignIn {
            identity: family.identity,
            auth_time: family.auth_time.or(Some(family.created_at)),
            nonce: None,
            id_token: true,
        };
        Some(
            sign_id_token(
                state,
                app,
                &family.user_id,
                &family.id,
                &sign_in,
                &access_token,
                now,
            )
            .await?,
        )
    } else {
        None
    };
    let pair = IssuedPair {
        access_token,
        refresh_token: next_token.clone(),
        expires_at,
        scope: scope_string(family.identity, &permissions),
        session_id: family.id.to_string(),
        id_token,
    };
    let sealed = state.master.seal(
        &serde_json::to_vec(&pair).map_err(anyhow::Error::from)?,
        &retry_aad(old_hash),
    );
    let next = RefreshRow {
        token_hash: hash_secret(&next_token),
        family_id: family.id.clone(),
        permissions: Permissions::parse(&permissions).map_err(anyhow::Error::from)?,
        created_at: now,
        used_at: None,
        next_sealed: None,
    };
    // The family's last use only matters to an idle limit (to the second) and to the pages
    // that show it (to the minute): skip the write when neither would notice.
    let touch_family =
        app.refresh_idle_secs.is_some() || now.since(family.last_used_at) >= TOUCH_EVERY;
    let rotation = Rotation {
        old_hash: old_hash.to_owned(),
        next,
        next_sealed: sealed,
        now,
        touch_family,
    };
    let won = state
        .writes
        .rotations
        .submit(rotation)
        .await
        // The store's error stays the source, so that an outage is still told apart.
        .map_err(|err| anyhow::Error::new(err).context("rotating a refresh token"))?;
    Ok(won.then_some(pair))
}

/// Ends one session on every node: its refresh tokens stop working at once, its access tokens
/// within the sync interval.
pub async fn end_family(state: &AppState, family_id: &FamilyId) -> Result<bool, SessionError> {
    let now = Timestamp::now();
    let ended = state.store.revoke_family(family_id, now).await?;
    state
        .index
        .revoke_session(family_id, now + ENDED_SESSION_MEMORY, now);
    Ok(ended)
}

/// The permissions of `row` still covered by the grant (a grant may have been narrowed since).
fn narrowed(row: &Permissions, grant: &Permissions) -> Vec<String> {
    row.iter()
        .filter(|p| grant.contains(p))
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_keeps_only_granted_permissions() {
        assert_eq!(
            narrowed(
                &list(&["deals.read", "deals.write"]),
                &list(&["deals.read"])
            ),
            vec!["deals.read"]
        );
        assert!(narrowed(&list(&["deals.read"]), &Permissions::default()).is_empty());
    }

    fn list(names: &[&str]) -> Permissions {
        Permissions::parse(names).unwrap()
    }
}
