//! Why a page could not be shown, for both sets of pages (the dashboard's and the end users'):
//! one error type, its status, its `Retry-After`, the rule that an unreachable database is a 503,
//! and the log line of a 500. Each set of pages renders it with its own layout and policy through
//! [`ErrorFace`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use keyfob_store::StoreError;

use crate::http::extract::Unreadable;
use crate::services::ServiceError;

/// Why a page could not be shown; answered with an HTML error page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Too many attempts. Wait {retry_after} seconds, then try again.")]
    TooManyRequests { retry_after: u64 },
    #[error("The database is unavailable. Try again in a moment.")]
    Unavailable,
    #[error("Something went wrong on our side.")]
    Internal(#[from] anyhow::Error),
    /// The request itself refused: a method the page does not serve, a form too large or
    /// unreadable, an address holding text Keyfob does not accept.
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
}

impl PageError {
    /// The answer to a form without the right CSRF token: nothing was changed.
    pub fn csrf() -> PageError {
        PageError::Forbidden(
            "This form has expired or did not come from this page. Nothing was changed. \
             Go back, reload the page and try again."
                .into(),
        )
    }

    /// A 500 caused by an unreachable database becomes the 503 it is.
    pub(crate) fn outage_as_unavailable(self) -> Self {
        match self {
            PageError::Internal(err) => match crate::http::error::database_outage(&err) {
                Some(cause) => {
                    crate::http::error::log_outage(&err, cause);
                    PageError::Unavailable
                }
                None => PageError::Internal(err),
            },
            other => other,
        }
    }

    /// `Retry-After` of the answer, in seconds: how long to wait before trying again.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            PageError::TooManyRequests { retry_after } => Some(*retry_after),
            PageError::Unavailable => Some(crate::http::error::UNAVAILABLE_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    pub(crate) fn status_and_title(&self) -> (StatusCode, &'static str) {
        match self {
            PageError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            PageError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            PageError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            PageError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "Too many attempts")
            }
            PageError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            PageError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Error"),
            PageError::Rejected { status, .. } => {
                (*status, status.canonical_reason().unwrap_or("Error"))
            }
        }
    }
}

impl PageError {
    /// A service's refusal as a page; `not_found` is what the page says when there was nothing
    /// live to change.
    pub fn from_service(err: ServiceError, not_found: &str) -> PageError {
        match err {
            ServiceError::Invalid(message) => PageError::BadRequest(message),
            ServiceError::NotFound(_) => PageError::NotFound(not_found.to_owned()),
            ServiceError::Store(err) => err.into(),
            ServiceError::Internal(err) => PageError::Internal(err),
        }
    }
}

impl From<StoreError> for PageError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(ref cause) => {
                crate::http::error::log_outage(&err, cause);
                PageError::Unavailable
            }
            other => PageError::Internal(other.into()),
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(err: askama::Error) -> Self {
        PageError::Internal(anyhow::anyhow!("rendering a page failed: {err}"))
    }
}

impl From<Unreadable> for PageError {
    fn from(err: Unreadable) -> Self {
        let message = match &err {
            Unreadable::TooLarge => "The form is larger than this server accepts. Nothing was \
                 changed."
                .to_owned(),
            Unreadable::WrongType { expected } => {
                format!("The form must be sent as {expected}. Nothing was changed.")
            }
            Unreadable::Malformed(_) | Unreadable::Broken => {
                "The form could not be read. Go back and try again.".to_owned()
            }
            Unreadable::Text(input) => {
                format!("The form field {input}. Nothing was changed.")
            }
        };
        PageError::Rejected {
            status: err.status(),
            message,
        }
    }
}

/// How one set of pages shows a [`PageError`].
pub trait ErrorFace {
    /// The answer's Content-Security-Policy: an error may be answered outside the pages' router.
    const CSP: &'static str;
    /// Where the error happened, for the log line of a 500.
    const WHERE: &'static str;

    /// The error page's HTML.
    fn render(title: &str, message: String) -> askama::Result<String>;
}

/// The answer to `err` on the pages of `F`: its status, its page and, for a wait, `Retry-After`.
/// An internal error is logged (in the request's span), never shown.
pub fn respond<F: ErrorFace>(err: PageError) -> Response {
    let err = err.outage_as_unavailable();
    if let PageError::Internal(inner) = &err {
        tracing::error!(error = ?inner, pages = F::WHERE, "internal error on a page");
    }
    let (status, title) = err.status_and_title();
    let body = F::render(title, err.to_string()).unwrap_or_else(|_| title.to_owned());
    let csp = HeaderValue::from_static(F::CSP);
    let mut response =
        (status, [(header::CONTENT_SECURITY_POLICY, csp)], Html(body)).into_response();
    if let Some(secs) = err.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
