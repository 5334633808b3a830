//! What every dashboard page shares: the layout's data, rendering, times for display, form bodies,
//! and the error page.

use askama::Template;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use keyfob_domain::time::Timestamp;
use serde::de::DeserializeOwned;
use time::macros::format_description;

use crate::http::extract::{Unreadable, form_bytes};
use crate::web::OwnerLogin;
pub use crate::web::error::PageError;
use crate::web::error::{ErrorFace, respond};
use crate::web::filters;

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

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    title: &'a str,
    message: String,
}

/// The dashboard's face for [`PageError`]: its error page, under its own policy.
pub struct DashboardErrors;

impl ErrorFace for DashboardErrors {
    // The pages' policy on the page itself: an error may be answered outside the dashboard's
    // router (an unreadable address, a method it does not serve).
    const CSP: &'static str = super::CONTENT_SECURITY_POLICY;
    const WHERE: &'static str = "the dashboard";

    fn render(title: &str, message: String) -> askama::Result<String> {
        ErrorPage {
            layout: Layout::anonymous(),
            title,
            message,
        }
        .render()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        respond::<DashboardErrors>(self)
    }
}
