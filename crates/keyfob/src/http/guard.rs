//! The edge every request passes, whatever route it reaches, so that no handler can forget it:
//!
//! - [`refuse_unreadable_input`] refuses a path segment or query parameter holding a NUL character
//!   or bytes that are not UTF-8 (see [`keyfob_domain::input`]), naming it, before any handler
//!   or extractor runs;
//! - [`method_not_allowed`] answers a method the path does not serve (the router adds `Allow`);
//! - [`error_bodies`] gives any error the framework answered without Keyfob's error body (an empty
//!   405, a plain-text rejection) the body of its surface, keeping its status and headers.
//!
//! Each answer is in the format of the [`Surface`] the request reached.

use axum::extract::{MatchedPath, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyfob_domain::input;

use super::error::ApiError;
use super::extract::is_json;
use super::oauth::OAuthError;
use crate::dashboard::page::PageError;
use crate::user_pages::UserPageError;

/// Which of Keyfob's faces a request reached, and so the format its errors take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The JSON API: `{"error", "message"}`.
    Api,
    /// `/auth/token`, `/auth/revoke`, `/auth/introspect`: RFC 6749 `{"error",
    /// "error_description"}`.
    OAuth,
    /// The owners' dashboard: an HTML error page.
    Dashboard,
    /// The end users' pages (`GET /auth`, login, sign-up, consent, grants): an HTML error page.
    UserPages,
}

impl Surface {
    /// The surface of a request, by its method and path.
    pub fn of(method: &Method, path: &str) -> Surface {
        match path {
            "/auth/token" | "/auth/revoke" | "/auth/introspect" | "/auth/userinfo" => {
                Surface::OAuth
            }
            "/auth/whoami" => Surface::Api,
            // `GET /auth` starts a user session; anything else sent there is for the API's mint.
            "/auth" if method != Method::GET && method != Method::HEAD => Surface::Api,
            p if p == "/auth" || p.starts_with("/auth/") => Surface::UserPages,
            p if p == "/dashboard" || p.starts_with("/dashboard/") => Surface::Dashboard,
            _ => Surface::Api,
        }
    }

    /// An error answer in this surface's format. `code` is the API's machine-readable code; the
    /// OAuth endpoints use RFC 6749's codes instead.
    pub fn error(self, status: StatusCode, code: &'static str, message: String) -> Response {
        match self {
            Surface::Api => ApiError::Rejected {
                status,
                code,
                message,
            }
            .into_response(),
            Surface::OAuth => OAuthError::for_status(status, message).into_response(),
            Surface::Dashboard => PageError::Rejected { status, message }.into_response(),
            Surface::UserPages => {
                UserPageError(PageError::Rejected { status, message }).into_response()
            }
        }
    }

    /// The answer to unreadable text in the request's address.
    fn bad_address(self, code: &'static str, what: String) -> Response {
        let message = match self {
            Surface::Api | Surface::OAuth => what,
            Surface::Dashboard | Surface::UserPages => {
                format!("This address is not valid: {what}. Nothing was changed.")
            }
        };
        self.error(StatusCode::BAD_REQUEST, code, message)
    }
}

/// Refuses a request whose path segments or query parameters hold text Keyfob does not accept.
pub async fn refuse_unreadable_input(request: Request, next: Next) -> Response {
    let surface = Surface::of(request.method(), request.uri().path());
    let template = request.extensions().get::<MatchedPath>();
    if let Some(what) = bad_path_segment(request.uri(), template.map(MatchedPath::as_str)) {
        return surface.bad_address("invalid_path", what);
    }
    if let Err(err) = input::check_urlencoded(request.uri().query().unwrap_or_default().as_bytes())
    {
        return surface.bad_address("invalid_query", format!("the query parameter {err}"));
    }
    next.run(request).await
}

/// What is wrong with the path, naming the segment by the route's template (`{id}`) when there is
/// one.
fn bad_path_segment(uri: &Uri, template: Option<&str>) -> Option<String> {
    for (i, segment) in uri.path().split('/').enumerate() {
        let Err(problem) = input::check_path_segment(segment) else {
            continue;
        };
        let template: Vec<&str> = template.map(|t| t.split('/').collect()).unwrap_or_default();
        let param = template
            .get(i)
            .or_else(|| template.last().filter(|t| t.starts_with("{*")))
            .filter(|t| t.starts_with('{'));
        return Some(match param {
            Some(name) => format!("the path segment `{name}` {problem}"),
            None => format!("the path {problem}"),
        });
    }
    None
}

/// The answer to a path no route serves.
pub async fn not_found(method: Method, uri: Uri) -> Response {
    let surface = Surface::of(&method, uri.path());
    let message = match surface {
        Surface::Dashboard | Surface::UserPages => "There is no such page.",
        Surface::Api | Surface::OAuth => "no such endpoint",
    };
    surface.error(StatusCode::NOT_FOUND, "not_found", message.to_owned())
}

/// The answer to a method the path does not serve. The router adds the `Allow` header.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let shown: String = method.as_str().chars().take(24).collect();
    Surface::of(&method, uri.path()).error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("`{shown}` is not allowed here; the `Allow` header lists the methods that are"),
    )
}

/// Gives an error answered without Keyfob's error body (empty, or the framework's plain text) the
/// body of its surface.
pub async fn error_bodies(request: Request, next: Next) -> Response {
    let surface = Surface::of(request.method(), request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || has_error_body(response.headers())
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The framework's rejections say in a sentence what was wrong; keep it for a client error.
    let said = axum::body::to_bytes(body, 1024)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty() && status.is_client_error());
    let (code, message) = describe(status, said);
    let mut fixed = surface.error(status, code, message);
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}

/// Keyfob's own errors are JSON (the API, OAuth) or HTML (the pages).
fn has_error_body(headers: &HeaderMap) -> bool {
    is_json(headers) || super::extract::media_type(headers).is_some_and(|mime| mime == "text/html")
}

/// The API's code for a status, and a sentence: what the framework said, or a default.
fn describe(status: StatusCode, said: Option<String>) -> (&'static str, String) {
    let (code, default) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request could not be read"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "this request needs a credential"),
        StatusCode::FORBIDDEN => ("forbidden", "this request is not allowed"),
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this method is not allowed here; the `Allow` header lists the methods that are",
        ),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long to arrive"),
        StatusCode::LENGTH_REQUIRED => ("length_required", "the body needs a `Content-Length`"),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "body_too_large",
            "the body is larger than the server accepts",
        ),
        StatusCode::URI_TOO_LONG => (
            "uri_too_long",
            "the address is longer than the server accepts",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "invalid_content_type",
            "the body's `Content-Type` is not one this endpoint reads",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => {
            ("invalid_body", "the body is not of the expected shape")
        }
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests; retry later"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "headers_too_large",
            "the headers are larger than the server accepts",
        ),
        StatusCode::SERVICE_UNAVAILABLE => {
            ("unavailable", "the service is unavailable; retry later")
        }
        s if s.is_client_error() => ("bad_request", "the request was refused"),
        _ => ("internal", "something went wrong on our side"),
    };
    (code, said.unwrap_or_else(|| default.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surfaces_follow_the_routers() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(Surface::of(&post, "/auth/token"), Surface::OAuth);
        assert_eq!(Surface::of(&get, "/auth/revoke"), Surface::OAuth);
        assert_eq!(Surface::of(&post, "/auth/introspect"), Surface::OAuth);
        assert_eq!(Surface::of(&post, "/auth"), Surface::Api);
        assert_eq!(Surface::of(&Method::DELETE, "/auth"), Surface::Api);
        assert_eq!(Surface::of(&get, "/auth"), Surface::UserPages);
        assert_eq!(Surface::of(&get, "/auth/whoami"), Surface::Api);
        assert_eq!(Surface::of(&post, "/auth/login"), Surface::UserPages);
        assert_eq!(
            Surface::of(&post, "/auth/grants/x/revoke"),
            Surface::UserPages
        );
        assert_eq!(Surface::of(&get, "/dashboard"), Surface::Dashboard);
        assert_eq!(
            Surface::of(&post, "/dashboard/keys/x/revoke"),
            Surface::Dashboard
        );
        assert_eq!(Surface::of(&get, "/dashboardx"), Surface::Api);
        assert_eq!(Surface::of(&get, "/authx"), Surface::Api);
        assert_eq!(Surface::of(&get, "/api/deals"), Surface::Api);
        assert_eq!(Surface::of(&get, "/.well-known/jwks.json"), Surface::Api);
    }

    #[test]
    fn path_segments_are_named_by_the_template() {
        let uri: Uri = "/api/deals/a%00b".parse().unwrap();
        let what = bad_path_segment(&uri, Some("/api/{resource}/{id}")).unwrap();
        assert!(
            what.starts_with("the path segment `{id}` contains a NUL"),
            "{what}"
        );
        let uri: Uri = "/dashboard/x/%FF".parse().unwrap();
        let what = bad_path_segment(&uri, Some("/dashboard/{*rest}")).unwrap();
        assert!(
            what.starts_with("the path segment `{*rest}` is not valid UTF-8"),
            "{what}"
        );
        let uri: Uri = "/nowhere%00".parse().unwrap();
        assert!(
            bad_path_segment(&uri, None)
                .unwrap()
                .starts_with("the path contains")
        );
        let uri: Uri = "/api/caf%C3%A9/x".parse().unwrap();
        assert_eq!(bad_path_segment(&uri, Some("/api/{resource}/{id}")), None);
    }

    #[test]
    fn every_error_status_has_a_sentence() {
        for code in 400..600 {
            let status = StatusCode::from_u16(code).unwrap();
            let (api_code, message) = describe(status, None);
            assert!(!api_code.is_empty() && !message.is_empty(), "{status}");
        }
        let said = describe(StatusCode::BAD_REQUEST, Some("Invalid URL".into()));
        assert_eq!(said.1, "Invalid URL");
    }
}
