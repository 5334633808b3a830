//! The HTTP layer's one error type. It picks the status, writes `{"error", "message"}`, adds
//! `WWW-Authenticate` to a 401 and `Retry-After` to a 429 and a 503, and hides (but logs) the
//! detail of a 500. A failure whose cause is an unreachable database is a 503, however it was
//! wrapped on its way up.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyfob_domain::Action;
use keyfob_store::{StoreError, Unreachable};
use serde::Serialize;

/// What a 503 asks clients to wait, in seconds: while the database is down, it is tried again
/// more often than that (`database_probe_interval_ms`).
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// Why the database was unreachable, when that caused `err` (somewhere in its chain of sources).
pub fn database_outage(err: &anyhow::Error) -> Option<&Unreachable> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Unreachable>())
}

/// Logs a failure caused by an unreachable database, unless it is known to be down (the store
/// said so once, when it went down).
pub(crate) fn log_outage(err: &dyn std::fmt::Display, cause: &Unreachable) {
    if !matches!(cause, Unreachable::Down) {
        tracing::error!(error = %err, "storage unavailable");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input; `code` is machine-readable, the message names the field.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Missing, malformed, expired or revoked credential.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid credential without the permission needed.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0} is already taken")]
    Conflict(&'static str),
    #[error("too many requests; retry in {retry_after} seconds")]
    TooManyRequests { retry_after: u64 },
    #[error("storage is unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
    /// The request itself refused by the HTTP layer: a method the path does not serve, a body too
    /// large or of the wrong type, and the like. `code` is machine-readable.
    #[error("{message}")]
    Rejected {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A machine-readable code, e.g. `invalid_permission`.
    pub error: String,
    /// One human sentence naming the problem.
    pub message: String,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The 403 for a credential that lacks `<resource>.<action>`.
    pub fn missing_permission(resource: &str, action: Action) -> Self {
        ApiError::Forbidden(format!(
            "this request needs the permission `{resource}.{}`",
            action.as_str()
        ))
    }

    /// A 500 caused by an unreachable database becomes the 503 it is: the client may retry.
    pub(crate) fn outage_as_unavailable(self) -> Self {
        match self {
            ApiError::Internal(err) => match database_outage(&err) {
                Some(cause) => {
                    log_outage(&err, cause);
                    ApiError::Unavailable
                }
                None => ApiError::Internal(err),
            },
            other => other,
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Rejected { status, code, .. } => (*status, code),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(field) => ApiError::Conflict(field),
            StoreError::Unavailable(ref cause) => {
                log_outage(&err, cause);
                ApiError::Unavailable
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<std::sync::Arc<StoreError>> for ApiError {
    fn from(err: std::sync::Arc<StoreError>) -> Self {
        match &*err {
            StoreError::Conflict(field) => ApiError::Conflict(field),
            StoreError::Unavailable(_) => ApiError::Unavailable,
            other => ApiError::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = self.outage_as_unavailable();
        let (status, code) = this.status_and_code();
        let message = match &this {
            ApiError::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                "something went wrong on our side".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: code.to_owned(),
                message: message.clone(),
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match &this {
            ApiError::Unauthorized(_) => {
                let value = format!(
                    "Bearer realm=\"keyfob\", error=\"invalid_token\", error_description=\"{}\"",
                    message.replace('"', "'")
                );
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::TooManyRequests { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::Unavailable => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_to_retry_however_it_was_wrapped() {
        let wrapped = Err::<(), _>(StoreError::Unavailable(Unreachable::Down))
            .context("reloading the signing keys")
            .unwrap_err();
        let response = ApiError::Internal(wrapped).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");

        let response = ApiError::from(StoreError::Unavailable(Unreachable::TimedOut(
            std::time::Duration::from_secs(5),
        )))
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");

        let other = ApiError::Internal(anyhow::anyhow!("disk on fire")).into_response();
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(other.headers().get(header::RETRY_AFTER).is_none());
    }
}
