//! What every dashboard page shares: the layout's data, rendering, times for display, form bodies,
//! and the error page.

use askama::Template;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use keyfob_domain::time::Timestamp;
use keyfob_store::StoreError;
use serde::de::DeserializeOwned;
use time::macros::format_description;

use crate::http::extract::{Unreadable, form_bytes};
use crate::services::ServiceError;
use crate::web::OwnerLogin;

/// What the layout around every page needs: who is signed in (for the navigation and the logout
/// form) and which section is open.
pub struct Layout {
    /// The signed-in owner's email; `None` on the pages shown before login.
    pub email: Option<String>,
    /// The login's CSRF token, for the logout form.
    pub csrf: String,
    /// `keys`, `tokens`, or empty.
    pub section: &'static str,
}

impl Layout {
    /// The layout of a page shown to someone who is not signed in.
    pub fn anonymous() -> Layout {
        Layout {
            email: None,
            csrf: String::new(),
            section: "",
        }
    }
}

impl OwnerLogin {
    /// The layout of a page shown after login, in `section`.
    pub fn layout(&self, section: &'static str) -> Layout {
        Layout {
            email: Some(self.email.clone()),
            csrf: self.csrf().to_owned(),
            section,
        }
    }
}

/// An instant as a page shows it: readable text, and RFC 3339 for `<time datetime>`.
pub struct TimeView {
    pub iso: String,
    pub text: String,
}

impl From<Timestamp> for TimeView {
    fn from(at: Timestamp) -> TimeView {
        let text = at
            .to_date_time()
            .format(format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .unwrap_or_default();
        TimeView {
            iso: at.rfc3339(),
            text,
        }
    }
}

/// The query strings of the pages before and after `page` of a list of `total` items shown
/// `limit` at a time; `link` makes the query string of a page with the list's filters.
pub fn page_links(
    page: u32,
    limit: u32,
    total: u64,
    link: impl Fn(u32) -> Option<String>,
) -> (Option<String>, Option<String>) {
    let shown_so_far = u64::from(page) * u64::from(limit);
    let prev = if page > 1 { link(page - 1) } else { None };
    let next = if shown_so_far < total {
        link(page + 1)
    } else {
        None
    };
    (prev, next)
}

/// Renders a page with status 200.
pub fn render<T: Template>(page: &T) -> Result<Html<String>, PageError> {
    Ok(Html(page.render()?))
}

/// Renders a page with another status, e.g. a form shown again with its error.
pub fn render_with_status<T: Template>(
    status: StatusCode,
    page: &T,
) -> Result<Response, PageError> {
    Ok((status, render(page)?).into_response())
}

/// A URL-encoded form body. Fields a handler needs are `#[serde(default)]`, so that a missing CSRF
/// token is reported as such (403) rather than as a malformed body. A field holding text Keyfob
/// does not accept (a NUL character, bytes that are not UTF-8) is refused by name.
pub struct PageForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for PageForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PageError> {
        let bytes = form_bytes(req, state).await?;
        serde_urlencoded::from_bytes(&bytes)
            .map(PageForm)
            .map_err(|_| Unreadable::Malformed(String::new()).into())
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

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    title: &'a str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let this = self.outage_as_unavailable();
        if let PageError::Internal(err) = &this {
            tracing::error!(error = ?err, "internal error in the dashboard");
        }
        let (status, title) = this.status_and_title();
        let page = ErrorPage {
            layout: Layout::anonymous(),
            title,
            message: this.to_string(),
        };
        let body = page.render().unwrap_or_else(|_| title.to_owned());
        // The pages' policy on the page itself: an error may be answered outside the dashboard's
        // router (an unreadable address, a method it does not serve).
        let csp = HeaderValue::from_static(super::CONTENT_SECURITY_POLICY);
        let mut response =
            (status, [(header::CONTENT_SECURITY_POLICY, csp)], Html(body)).into_response();
        if let Some(secs) = this.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
