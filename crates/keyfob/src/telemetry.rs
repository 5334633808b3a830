//! Logs and request tracing, set up in one place for the binary and the tests.
//!
//! Every request gets an id: the client's `X-Request-Id` when it is fit to log (1 to 64 visible
//! ASCII characters), else a fresh UUID v4. The answer carries it back, whatever produced the
//! answer (a handler, a 404 or 405 of the router, a 413, a caught panic; the serving loop copies
//! it onto its own 408). Each request runs in a `request` span (target `keyfob::request`) that
//! holds the id, the method and the matched route template (never the path as sent, its query
//! or any header), so every line logged while the request is handled, a 500's included, names
//! the request it belongs to.

use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::{Instrument, Level, Span};
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
    router.layer(TraceRequestsLayer)
}

/// The layer behind [`trace_requests`]: one service that does what tower-http's request-id and
/// trace layers would do together, without wrapping the response body (nothing here needs to
/// see the body end), so a request pays for one span and one header.
#[derive(Debug, Clone, Copy)]
pub struct TraceRequestsLayer;

impl<S> Layer<S> for TraceRequestsLayer {
    type Service = TraceRequests<S>;

    fn layer(&self, inner: S) -> TraceRequests<S> {
        TraceRequests { inner }
    }
}

/// See [`TraceRequestsLayer`].
#[derive(Debug, Clone)]
pub struct TraceRequests<S> {
    inner: S,
}

impl<S> Service<Request> for TraceRequests<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TracedAnswer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = match fit_request_id(request.headers()) {
            Some(id) => id,
            None => {
                let id = new_request_id();
                request.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
                id
            }
        };
        let span = request_span(&request, &id);
        let started = tracing::enabled!(target: "keyfob::request", Level::DEBUG).then(Instant::now);
        let answer = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        TracedAnswer {
            answer: answer.instrument(span),
            id: Some(id),
            started,
        }
    }
}

pin_project! {
    /// The answer of a traced request: it runs in the request's span and leaves with its id.
    pub struct TracedAnswer<F> {
        #[pin]
        answer: Instrumented<F>,
        id: Option<HeaderValue>,
        started: Option<Instant>,
    }
}

impl<F, E> Future for TracedAnswer<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut result = std::task::ready!(this.answer.as_mut().poll(cx));
        if let Ok(response) = &mut result {
            if let Some(id) = this.id.take() {
                response.headers_mut().insert(REQUEST_ID_HEADER, id);
            }
            if let Some(started) = this.started.take() {
                let _entered = this.answer.span().enter();
                log_answer(response, started.elapsed());
            }
        }
        Poll::Ready(result)
    }
}

/// Whether a client's request id may be kept: 1 to [`MAX_REQUEST_ID_LEN`] visible ASCII
/// characters, so that it cannot break a log line or make it large.
pub fn is_fit_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len()) && value.iter().all(u8::is_ascii_graphic)
}

/// The client's `X-Request-Id`, when it sent exactly one fit value.
fn fit_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(&REQUEST_ID_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if is_fit_request_id(value.as_bytes()) => Some(value.clone()),
        _ => None,
    }
}

/// Makes a request id: a UUID v4 from the thread's random generator (no system call per request).
fn new_request_id() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = uuid.hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

/// The request's span. Its fields are formatted only when the span is enabled.
fn request_span(request: &Request, id: &HeaderValue) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = id.to_str().unwrap_or_default();
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
fn log_answer(response: &Response, latency: Duration) {
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
        let one = new_request_id();
        let two = new_request_id();
        let parsed = uuid::Uuid::parse_str(one.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(one, two);
        assert!(is_fit_request_id(one.as_bytes()));
    }

    #[test]
    fn only_one_fit_client_id_is_kept() {
        let mut headers = HeaderMap::new();
        assert_eq!(fit_request_id(&headers), None);
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-1"));
        assert_eq!(
            fit_request_id(&headers),
            Some(HeaderValue::from_static("abc-1"))
        );
        headers.append(REQUEST_ID_HEADER, HeaderValue::from_static("abc-2"));
        assert_eq!(fit_request_id(&headers), None);
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("has space"));
        assert_eq!(fit_request_id(&headers), None);
    }
}
