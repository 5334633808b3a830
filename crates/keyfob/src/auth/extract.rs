//! `Authorization` → [`Principal`], with no database write: API keys are looked up by hash in
//! memory (and, for a key the index does not know yet, read through to the database: see
//! [`super::lookup`]); JWTs are verified (or found in the verified cache) and checked against the
//! revoked tokens, ended sessions and the cutoffs of the API keys that minted them, all in memory.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use keyfob_domain::ids::{KeyId, UserId};
use keyfob_domain::secret::constant_time_eq;
use keyfob_domain::time::Timestamp;
use keyfob_domain::{Action, Credential, Principal, PrincipalKind};

use super::KeyCutoffReason;
use super::meter::MeterSlot;
use crate::http::error::ApiError;
use crate::state::AppState;

/// The verified caller of a handler. Handlers state what they need with [`Auth::require`].
pub struct Auth(pub Principal);

impl Auth {
    /// Fails with a 403 naming `<resource>.<action>` unless the caller holds it.
    pub fn require(&self, resource: &str, action: Action) -> Result<(), ApiError> {
        if self.0.allows(resource, action) {
            Ok(())
        } else {
            Err(ApiError::missing_permission(resource, action))
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header is missing".into()))?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
        let principal = authenticate_reading_through(state, header).await?;
        crate::telemetry::record_caller(
            &parts.extensions,
            Some(principal.account_id.as_str()),
            credential_kind(&principal),
        );
        super::meter::admit(state, parts.extensions.get::<MeterSlot>(), &principal)?;
        Ok(Auth(principal))
    }
}

/// The kind of credential a principal came from, as the access log names it.
fn credential_kind(principal: &Principal) -> &'static str {
    match &principal.kind {
        PrincipalKind::ApiKey { .. } => "api_key",
        PrincipalKind::Jwt {
            user_id: Some(_), ..
        } => "user_token",
        PrincipalKind::Jwt {
            client_id: Some(_), ..
        } => "app_token",
        PrincipalKind::Jwt { .. } => "token",
    }
}

const UNKNOWN_KEY: &str = "the API key is unknown or revoked";
const EXPIRED_KEY: &str = "the API key has expired";

/// Why memory alone did not verify a credential.
enum Miss {
    /// An API key the index does not know: unknown, revoked, or made a moment ago elsewhere.
    UnknownKey(String),
    Refused(ApiError),
}

impl From<ApiError> for Miss {
    fn from(err: ApiError) -> Self {
        Miss::Refused(err)
    }
}

/// Verifies an `Authorization` header value; an API key the in-memory index does not know (made on
/// another node or by the command line a moment ago) is read through to the database.
pub async fn authenticate_reading_through(
    state: &AppState,
    header: &str,
) -> Result<Principal, ApiError> {
    match from_memory(state, header) {
        Ok(principal) => Ok(principal),
        Err(Miss::Refused(err)) => Err(err),
        Err(Miss::UnknownKey(hash)) => {
            let entry = super::lookup::look_up_key(state, &hash)
                .await?
                .ok_or_else(|| ApiError::Unauthorized(UNKNOWN_KEY.into()))?;
            key_principal(&entry, Timestamp::now())
        }
    }
}

/// Verifies an `Authorization` header value from memory alone.
pub fn authenticate(state: &AppState, header: &str) -> Result<Principal, ApiError> {
    from_memory(state, header).map_err(|miss| match miss {
        Miss::Refused(err) => err,
        Miss::UnknownKey(_) => ApiError::Unauthorized(UNKNOWN_KEY.into()),
    })
}

fn key_principal(entry: &super::KeyEntry, now: Timestamp) -> Result<Principal, ApiError> {
    if entry.is_expired(now) {
        return Err(ApiError::Unauthorized(EXPIRED_KEY.into()));
    }
    Ok(Principal {
        subject: entry.id.to_string(),
        kind: PrincipalKind::ApiKey {
            key_id: entry.id.clone(),
        },
        account_id: entry.account_id.clone(),
        permissions: entry.permissions.clone(),
        expires_at: entry.expires_at,
    })
}

fn from_memory(state: &AppState, header: &str) -> Result<Principal, Miss> {
    let credential =
        Credential::from_header(header).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let now = Timestamp::now();
    match credential {
        Credential::ApiKey(key) => {
            let hash = key.hash();
            match state
                .index
                .key_by_hash(&hash)
                .filter(|entry| constant_time_eq(&entry.key_hash, &hash))
            {
                Some(entry) => Ok(key_principal(&entry, now)?),
                None => Err(Miss::UnknownKey(hash)),
            }
        }
        Credential::Jwt(token) => {
            let claims = state
                .tokens
                .verify(&token, now)
                .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
            if state.index.is_revoked(&claims.jti)
                || claims
                    .sid
                    .as_deref()
                    .is_some_and(|sid| state.index.is_session_revoked(sid))
            {
                return Err(ApiError::Unauthorized("the token has been revoked".into()).into());
            }
            // A token minted by an API key dies with the key (revoked or expired), or with
            // "revoke all its tokens".
            let minted_by = claims.minting_key();
            if let Some(key_id) = minted_by
                && state
                    .index
                    .key_by_id(key_id)
                    .is_some_and(|key| key.is_expired(now))
            {
                return Err(Miss::Refused(ApiError::Unauthorized(
                    "the token was minted by an API key that has expired".into(),
                )));
            }
            if let Some(key_id) = minted_by
                && let Some(reason) = state.index.key_cutoff(key_id, || claims.issued_at())
            {
                return Err(Miss::Refused(ApiError::Unauthorized(
                    match reason {
                        KeyCutoffReason::KeyRevoked => {
                            "the token was minted by an API key that has been revoked"
                        }
                        KeyCutoffReason::TokensRevoked => {
                            "the token has been revoked with every token of its API key"
                        }
                    }
                    .into(),
                )));
            }
            Ok(Principal {
                kind: PrincipalKind::Jwt {
                    jti: claims.jti.as_str().into(),
                    user_id: claims
                        .sid
                        .as_ref()
                        .map(|_| UserId::from(claims.sub.as_str())),
                    client_id: claims.application(),
                    minted_by: minted_by.map(KeyId::from),
                },
                account_id: claims.account_id.clone(),
                subject: claims.sub.clone(),
                permissions: claims.permission_set.clone(),
                expires_at: Some(claims.expires_at()),
            })
        }
    }
}
