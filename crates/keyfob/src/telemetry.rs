//! Logs and request tracing, set up in one place for the binary and the tests.
//!
//! Every request gets an id: the client's `X-Request-Id` when it is fit to log (1 to 64 visible
//! ASCII characters), else a fresh UUID v4. The answer carries it back, whatever produced the
//! answer (a handler, a 404 or 405 of the router, a 413, a caught panic; the serving loop copies
//! it onto its own 408). Each request runs in a `request` span (target `keyfob::request`) that
//! holds the id, the method and the matched route template (never the path as sent, its query
//! or any header), so every line logged while the request is handled, a 500's included, names
//! the request it belongs to.

use std::io::IsTerminal;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use tracing::Span;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The header a request's id travels in, both ways.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a client; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// What the server logs when `KEYFOB_LOG` is not set. The request spans (`keyfob::request`, at
/// info) are on, so warnings and errors name their request; each answer's own line (at debug) is
/// not.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,tower_http=warn";

/// The filter from `KEYFOB_LOG`, or `default` when it is unset or cannot be parsed.
pub fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("KEYFOB_LOG").unwrap_or_else(|_| EnvFilter::new(default))
}

/// The server's logs: `KEYFOB_LOG` (or [`DEFAULT_FILTER`]) to stderr, which leaves stdout to the
/// command's own output; one JSON object per line with `json`, else text (coloured only on a
/// terminal).
pub fn init(json: bool) {
    let ansi = std::io::stderr().is_terminal();
    install(filter(DEFAULT_FILTER), json, ansi, std::io::stderr);
}

/// Installs the process's subscriber, writing to `writer`. Returns false if one was installed
/// already (tests start many servers in one process; the first call wins).
pub fn install<W>(filter: EnvFilter, json: bool, ansi: bool, writer: W) -> bool
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    if json {
        builder.json().try_init().is_ok()
    } else {
        builder.try_init().is_ok()
    }
}

/// Gives every request an id and a span, and every answer the id. Applied with `Router::layer`,
/// so it sees the matched route, and outermost, so that every answer passes through it.
pub fn trace_requests<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(
        ServiceBuilder::new()
            .map_request(drop_unfit_request_id)
            .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, NewRequestId))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_request(())
                    .on_response(log_answer)
                    .on_body_chunk(())
                    .on_eos(())
                    // A 5xx is logged where it happens, with its cause (`ApiError`); a second
                    // line per 503 would flood the log during a database outage.
                    .on_failure(()),
            ),
    )
}

/// Whether a client's request id may be kept: 1 to [`MAX_REQUEST_ID_LEN`] visible ASCII
/// characters, so that it cannot break a log line or make it large.
pub fn is_fit_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len()) && value.iter().all(u8::is_ascii_graphic)
}

/// Removes the request's `X-Request-Id` unless it is one fit value, so that a fresh one is made.
fn drop_unfit_request_id(mut request: Request) -> Request {
    let fit = {
        let mut values = request.headers().get_all(&REQUEST_ID_HEADER).iter();
        match (values.next(), values.next()) {
            (None, _) => true,
            (Some(value), None) => is_fit_request_id(value.as_bytes()),
            (Some(_), Some(_)) => false,
        }
    };
    if !fit {
        request.headers_mut().remove(&REQUEST_ID_HEADER);
    }
    request
}

/// Makes a request id: a UUID v4 from the thread's random generator (no system call per request).
#[derive(Debug, Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut buffer = uuid::Uuid::encode_buffer();
        let text = uuid.hyphenated().encode_lower(&mut buffer);
        HeaderValue::from_str(text).ok().map(RequestId::new)
    }
}

/// The request's span. Its fields are formatted only when the span is enabled.
fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        target: "keyfob::request",
        "request",
        request_id,
        method = %request.method(),
        route,
    )
}

/// One line per answer, at debug: its status and how long it took. These go on the event rather
/// than into the span: recording into an enabled span formats its fields again (for JSON logs,
/// parses and re-serialises them) on every request, and `/metrics` counts both already.
fn log_answer<B>(response: &axum::http::Response<B>, latency: Duration, _span: &Span) {
    tracing::debug!(
        target: "keyfob::request",
        status = response.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        "answered"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_fit_to_log_are_kept_and_others_are_not() {
        assert!(is_fit_request_id(b"5b7c0e9e-2f3a-4c1d-9e8b-0a1b2c3d4e5f"));
        assert!(is_fit_request_id(b"a"));
        assert!(is_fit_request_id("x".repeat(MAX_REQUEST_ID_LEN).as_bytes()));
        assert!(!is_fit_request_id(b""));
        assert!(!is_fit_request_id(
            "x".repeat(MAX_REQUEST_ID_LEN + 1).as_bytes()
        ));
        assert!(!is_fit_request_id(b"abc def"));
        assert!(!is_fit_request_id(b"abc\tdef"));
        assert!(!is_fit_request_id(b"abc\x7f"));
        assert!(!is_fit_request_id("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn made_request_ids_are_uuid_v4_and_differ() {
        let request = axum::http::Request::new(());
        let one = NewRequestId.make_request_id(&request).unwrap();
        let two = NewRequestId.make_request_id(&request).unwrap();
        let parsed = uuid::Uuid::parse_str(one.header_value().to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(one.header_value(), two.header_value());
        assert!(is_fit_request_id(one.header_value().as_bytes()));
    }
}
