//! `Authorization` → [`Principal`], with no database access: API keys are looked up by hash in
//! memory, JWTs verified (or found in the verified cache) and checked against the revoked set.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use keyfob_domain::secret::constant_time_eq;
use keyfob_domain::{Action, Credential, PermissionSet, Principal, PrincipalKind};

use crate::clock::now_ms;
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
        authenticate(state, header).map(Auth)
    }
}

/// Verifies an `Authorization` header value.
pub fn authenticate(state: &AppState, header: &str) -> Result<Principal, ApiError> {
    let credential =
        Credential::from_header(header).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let now = now_ms();
    match credential {
        Credential::ApiKey(key) => {
            let hash = key.hash();
            let entry = state
                .index
                .key_by_hash(&hash)
                .filter(|entry| constant_time_eq(&entry.key_hash, &hash))
                .ok_or_else(|| {
                    ApiError::Unauthorized("the API key is unknown or revoked".into())
                })?;
            state.index.note_use(&entry.id, now);
            Ok(Principal {
                subject: entry.id.clone(),
                kind: PrincipalKind::ApiKey { key_id: entry.id },
                account_id: entry.account_id,
                permissions: PermissionSet::All,
                expires_at: None,
            })
        }
        Credential::Jwt(token) => {
            let claims = state
                .tokens
                .verify(&token, now / 1000)
                .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
            if state.index.is_revoked(&claims.jti)
                || claims
                    .sid
                    .as_deref()
                    .is_some_and(|sid| state.index.is_session_revoked(sid))
            {
                return Err(ApiError::Unauthorized("the token has been revoked".into()));
            }
            Ok(Principal {
                kind: PrincipalKind::Jwt {
                    jti: claims.jti.clone(),
                    user_id: claims.sid.as_ref().map(|_| claims.sub.clone()),
                    client_id: claims.client_id.clone(),
                },
                account_id: claims.account_id.clone(),
                subject: claims.sub.clone(),
                permissions: claims.permission_set.clone(),
                expires_at: Some(claims.exp),
            })
        }
    }
}
