//! Reading request bodies and queries. Every reader refuses, naming the problem, what Keyfob cannot
//! take: a body over the size limit (413), of the wrong type (415), malformed (400), or holding
//! text storage cannot keep (a NUL character, or bytes that are not UTF-8; see
//! [`keyfob_domain::input`]). [`Unreadable`] says why, and each surface answers it in its own
//! format: the API's JSON error here, RFC 6749's on the OAuth endpoints, an error page on the
//! dashboard and the end users' pages.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use keyfob_domain::input::{self, InputError};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Why a request's body could not be read.
#[derive(Debug)]
pub enum Unreadable {
    /// Over the size limit.
    TooLarge,
    /// Not sent with a `Content-Type` the endpoint reads; `expected` names the ones it does.
    WrongType { expected: &'static str },
    /// Not a well-formed body of its type, or not of the expected shape.
    Malformed(String),
    /// A field (form field or JSON path) holds text Keyfob does not accept.
    Text(InputError),
    /// The body could not be received.
    Broken,
}

impl Unreadable {
    pub fn status(&self) -> StatusCode {
        match self {
            Unreadable::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Unreadable::WrongType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Unreadable::Malformed(_) | Unreadable::Text(_) | Unreadable::Broken => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// One sentence for an API client, naming the field where there is one.
    pub fn message(&self) -> String {
        match self {
            Unreadable::TooLarge => "the body is larger than the server accepts".into(),
            Unreadable::WrongType { expected } => {
                format!("the body must be sent with `Content-Type: {expected}`")
            }
            Unreadable::Malformed(message) => message.clone(),
            Unreadable::Text(err) => format!("the body is not valid: {err}"),
            Unreadable::Broken => "the body could not be read".into(),
        }
    }

    fn from_bytes_rejection(rejection: &axum::extract::rejection::BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Unreadable::TooLarge
        } else {
            Unreadable::Broken
        }
    }
}

impl From<Unreadable> for ApiError {
    fn from(err: Unreadable) -> Self {
        let code = match err {
            Unreadable::TooLarge => "body_too_large",
            Unreadable::WrongType { .. } => "invalid_content_type",
            Unreadable::Malformed(_) | Unreadable::Text(_) | Unreadable::Broken => "invalid_body",
        };
        ApiError::Rejected {
            status: err.status(),
            code,
            message: err.message(),
        }
    }
}

/// The media type of the request's `Content-Type`, lower-cased, without parameters.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
}

/// `application/json`, or any `application/…+json`.
pub fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|mime| {
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    })
}

/// `application/x-www-form-urlencoded`.
pub fn is_form(headers: &HeaderMap) -> bool {
    media_type(headers).as_deref() == Some("application/x-www-form-urlencoded")
}

/// The body's bytes, within the size limit (`DefaultBodyLimit`).
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Unreadable> {
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection| Unreadable::from_bytes_rejection(&rejection))
}

/// A URL-encoded form body's bytes: the right type, within the limit, every name and value text
/// that storage can keep.
pub async fn form_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Unreadable> {
    if !is_form(req.headers()) {
        return Err(Unreadable::WrongType {
            expected: "application/x-www-form-urlencoded",
        });
    }
    let bytes = body_bytes(req, state).await?;
    input::check_urlencoded(&bytes).map_err(Unreadable::Text)?;
    Ok(bytes)
}

/// Parses JSON into `T`, refusing NUL characters in any string or key, and naming the path of
/// whatever does not fit `T`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Unreadable> {
    let invalid = |path: String, inner: &dyn std::fmt::Display| {
        Unreadable::Malformed(if path == "." || path.is_empty() {
            format!("the body is not valid: {inner}")
        } else {
            format!("the body is not valid: `{path}`: {inner}")
        })
    };
    if input::json_may_hold_nul(bytes) {
        // Rare: parse to a document first so every string and key can be checked by path.
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(String::new(), &e))?;
        input::check_json(&value).map_err(Unreadable::Text)?;
        return serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            invalid(path, &e.into_inner())
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        invalid(path, &e.into_inner())
    })?;
    deserializer.end().map_err(|e| invalid(String::new(), &e))?;
    Ok(value)
}

/// A JSON body: `Content-Type: application/json`, within the size limit, of the expected shape.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(Unreadable::WrongType {
                expected: "application/json",
            }
            .into());
        }
        let bytes = body_bytes(req, state).await?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

/// The query string's pairs, in order, repeated keys kept.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        input::check_urlencoded(query.as_bytes()).map_err(|err| {
            ApiError::bad_request("invalid_query", format!("the query parameter {err}"))
        })?;
        serde_urlencoded::from_str(query)
            .map(QueryPairs)
            .map_err(|_| ApiError::bad_request("invalid_query", "the query string is malformed"))
    }
}
