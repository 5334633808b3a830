//! What every end-user page shares: the layout, the error page, form bodies, redirects and the
//! Content-Security-Policy.

use askama::Template;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::http::extract::{Unreadable, form_bytes};
use crate::web::PageError;
use crate::web::error::{ErrorFace, respond};
use crate::web::filters;

/// Pages load only Keyfob's stylesheet, run no script, and cannot be framed.
const CSP_BASE: &str = "default-src 'self'; script-src 'none'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The Content-Security-Policy of a page whose forms lead, through Keyfob's redirects, back to
/// `redirect_uri`. Browsers apply `form-action` to every redirect that follows a form submission,
/// so the application's origin must be listed along with Keyfob's own.
pub fn content_security_policy(redirect_uri: Option<&str>) -> HeaderValue {
    let extra = redirect_uri.and_then(origin_source).unwrap_or_default();
    let policy = format!("{CSP_BASE}; form-action 'self'{extra}");
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_CSP))
}

/// `csp` with images allowed from the origin of `uri` as well as Keyfob's own (an application's
/// registered logo, on the consent page).
pub fn allowing_image_from(csp: &HeaderValue, uri: &str) -> HeaderValue {
    let Some(source) = origin_source(uri) else {
        return csp.clone();
    };
    csp.to_str()
        .ok()
        .map(|policy| format!("{policy}; img-src 'self'{source}"))
        .and_then(|policy| HeaderValue::from_str(&policy).ok())
        .unwrap_or_else(|| csp.clone())
}

/// `csp` with Keyfob's own scripts allowed, for the pages that run the passkey script.
pub fn allowing_own_script(csp: &HeaderValue) -> HeaderValue {
    csp.to_str()
        .ok()
        .map(|policy| policy.replace("script-src 'none'", "script-src 'self'"))
        .and_then(|policy| HeaderValue::from_str(&policy).ok())
        .unwrap_or_else(|| HeaderValue::from_static(crate::passkeys::SCRIPT_CSP))
}

/// The policy of pages that lead nowhere but Keyfob.
pub const DEFAULT_CSP: &str = "default-src 'self'; script-src 'none'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// ` scheme://host[:port]` of a registered (already checked) redirect URI, when it can be written
/// as a CSP source safely.
fn origin_source(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let safe = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    (safe && (scheme == "https" || scheme == "http")).then(|| format!(" {scheme}://{authority}"))
}

/// The header and navigation of every end-user page.
pub struct UserLayout {
    /// The logged-in user's email; `None` before login.
    pub email: Option<String>,
    /// The login's CSRF token, for the logout form.
    pub csrf: String,
}

impl UserLayout {
    pub fn anonymous() -> UserLayout {
        UserLayout {
            email: None,
            csrf: String::new(),
        }
    }

    pub fn of(user: &crate::web::UserLogin) -> UserLayout {
        UserLayout {
            email: Some(user.email.clone()),
            csrf: user.csrf().to_owned(),
        }
    }
}

/// Renders a page with `status` and the given policy.
pub fn page<T: Template>(
    status: StatusCode,
    template: &T,
    csp: HeaderValue,
) -> Result<Response, UserPageError> {
    let html = template.render().map_err(PageError::from)?;
    Ok((status, [(header::CONTENT_SECURITY_POLICY, csp)], Html(html)).into_response())
}

/// A redirect with status 302 Found, the status OAuth clients expect. A location that cannot be a
/// header value (it came from a registered URI, so this is not expected) is an error page.
pub fn found(location: &str) -> Result<Response, UserPageError> {
    let value = HeaderValue::from_str(location).map_err(|_| {
        PageError::BadRequest("The application's redirect address cannot be used.".into())
    })?;
    Ok((StatusCode::FOUND, [(header::LOCATION, value)]).into_response())
}

/// A redirect to one of Keyfob's own pages after a form (303 See Other).
pub fn see_other(location: &str) -> Result<Response, UserPageError> {
    let value = HeaderValue::from_str(location)
        .map_err(|_| PageError::BadRequest("The address cannot be used.".into()))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response())
}

/// A URL-encoded form body; a field may repeat (the consent page's checkboxes). Read and refused
/// as the dashboard's [`crate::dashboard::page::PageForm`] is.
pub struct UserForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for UserForm<T> {
    type Rejection = UserPageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, UserPageError> {
        let bytes = form_bytes(req, state).await.map_err(PageError::from)?;
        serde_html_form::from_bytes(&bytes)
            .map(UserForm)
            .map_err(|_| PageError::from(Unreadable::Malformed(String::new())).into())
    }
}

/// Why an end-user page could not be shown: the dashboard's reasons, on a page of its own.
#[derive(Debug)]
pub struct UserPageError(pub PageError);

impl<E: Into<PageError>> From<E> for UserPageError {
    fn from(err: E) -> Self {
        UserPageError(err.into())
    }
}

#[derive(Template)]
#[template(path = "auth/error.html")]
struct ErrorPage<'a> {
    layout: UserLayout,
    title: &'a str,
    message: String,
}

/// The end users' pages' face for [`PageError`]: their error page, under their own policy.
pub struct UserPageErrors;

impl ErrorFace for UserPageErrors {
    // The pages' policy on the page itself: an error may be answered outside the end users'
    // router (an unknown page, an unreadable address).
    const CSP: &'static str = DEFAULT_CSP;
    const WHERE: &'static str = "the end users' pages";

    fn render(title: &str, message: String) -> askama::Result<String> {
        ErrorPage {
            layout: UserLayout::anonymous(),
            title,
            message,
        }
        .render()
    }
}

impl IntoResponse for UserPageError {
    fn into_response(self) -> Response {
        respond::<UserPageErrors>(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_applications_origin() {
        let csp = content_security_policy(Some("https://app.example.com:8443/cb?x=1"));
        let csp = csp.to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.ends_with("form-action 'self' https://app.example.com:8443"));
        let plain = content_security_policy(None);
        assert_eq!(plain.to_str().unwrap(), DEFAULT_CSP);
        assert_eq!(origin_source("https://a;b.com/"), None);
    }
}
