//! Logs and request tracing, set up in one place for the binary and the tests.
//!
//! Every request gets an id: the client's `X-Request-Id` when it is fit to log (1 to 64 visible
//! ASCII characters), else a fresh UUID v4. The answer carries it back, whatever produced the
//! answer (a handler, a 404 or 405 of the router, a 413, a caught panic; the serving loop copies
//! it onto its own 408). Each request runs in a `request` span (target `keyfob::request`) that
//! holds the id, the method and the matched route template (never the path as sent, its query
//! or any header), so every line logged while the request is handled, a 500's included, names
//! the request it belongs to.
//!
//! With the access log on (`access_log`), every answer also gets one line at info, target
//! `keyfob::access`: method, route template, status, latency, request id, and who called (the
//! account and the kind of credential, filled in by the extractors through a [`Caller`] slot;
//! never the credential itself).

use std::future::Future;
use std::io::IsTerminal;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
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
/// terminal, and never when `NO_COLOR` is set).
pub fn init(json: bool) {
    let ansi = colour_wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    install(filter(DEFAULT_FILTER), json, ansi, std::io::stderr);
}

/// Whether text logs get ANSI colours: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
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

/// Gives every request an id, a span, its metrics and a 500 if its handler panics, and every
/// answer the id; `panic_answer` makes that 500 (it runs in the request's span, so what it logs
/// names the request). Applied with `Router::layer`, so it sees the matched route, and last, so
/// that it wraps every other per-route layer.
pub fn trace_requests<S>(
    router: Router<S>,
    panic_answer: fn() -> Response,
    access_log: bool,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(TraceRequestsLayer {
        panic_answer,
        access_log,
    })
}

/// Who made a request, for the access log: the extractors that verify a credential record it
/// here ([`record_caller`]); the slot is in a request's extensions only while the access log is
/// on.
#[derive(Debug, Clone, Default)]
pub struct Caller(Arc<OnceLock<CallerInfo>>);

/// What the access log says of a caller.
#[derive(Debug)]
struct CallerInfo {
    account: Option<String>,
    credential: &'static str,
}

/// Records who made the request whose extensions these are (the first record stands): the
/// account, when the credential belongs to one, and the kind of credential (`api_key`, `token`,
/// `owner_login`, `user_login`, `client`).
pub fn record_caller(
    extensions: &axum::http::Extensions,
    account: Option<&str>,
    credential: &'static str,
) {
    if let Some(caller) = extensions.get::<Caller>() {
        caller.record(account, credential);
    }
}

impl Caller {
    /// See [`record_caller`].
    pub fn record(&self, account: Option<&str>, credential: &'static str) {
        let _ = self.0.set(CallerInfo {
            account: account.map(str::to_owned),
            credential,
        });
    }
}

/// The layer behind [`trace_requests`]: one service that does what tower-http's request-id,
/// trace and catch-panic layers and a metrics middleware would do together, without wrapping the
/// response body (nothing here needs to see the body end). `Router::layer` boxes each layer
/// around every route, and the router clones that chain for every request, so the request's
/// bookkeeping is one layer rather than four.
#[derive(Debug, Clone, Copy)]
pub struct TraceRequestsLayer {
    panic_answer: fn() -> Response,
    access_log: bool,
}

impl<S> Layer<S> for TraceRequestsLayer {
    type Service = TraceRequests<S>;

    fn layer(&self, inner: S) -> TraceRequests<S> {
        TraceRequests {
            inner,
            panic_answer: self.panic_answer,
            access_log: self.access_log,
        }
    }
}

/// See [`TraceRequestsLayer`].
#[derive(Debug, Clone)]
pub struct TraceRequests<S> {
    inner: S,
    panic_answer: fn() -> Response,
    access_log: bool,
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
        let caller = self.access_log.then(|| {
            let caller = Caller::default();
            request.extensions_mut().insert(caller.clone());
            caller
        });
        let bookkeeping = Bookkeeping {
            caller,
            id: Some(id),
            started: Instant::now(),
            method: method_label(request.method()),
            route: request.extensions().get::<MatchedPath>().cloned(),
            panic_answer: self.panic_answer,
        };
        let called = {
            let _entered = span.enter();
            panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request)))
        };
        match called {
            Ok(answer) => TracedAnswer {
                answer: Some(answer.instrument(span)),
                panicked: None,
                bookkeeping,
            },
            // The handler panicked before it had a future: the answer is ready now.
            Err(_) => {
                let mut bookkeeping = bookkeeping;
                let _entered = span.enter();
                let mut response = (bookkeeping.panic_answer)();
                bookkeeping.finish(&mut response);
                TracedAnswer {
                    answer: None,
                    panicked: Some(response),
                    bookkeeping,
                }
            }
        }
    }
}

pin_project! {
    /// The answer of a traced request: it runs in the request's span, is counted, and leaves
    /// with its id.
    pub struct TracedAnswer<F> {
        #[pin]
        answer: Option<Instrumented<F>>,
        panicked: Option<Response>,
        bookkeeping: Bookkeeping,
    }
}

/// What a request's answer is finished with.
struct Bookkeeping {
    /// Who called, when the access log is on.
    caller: Option<Caller>,
    id: Option<HeaderValue>,
    started: Instant,
    method: &'static str,
    route: Option<MatchedPath>,
    panic_answer: fn() -> Response,
}

impl Bookkeeping {
    /// Gives the answer its id, counts it, and logs it (at debug, or in the access log). Runs in
    /// the request's span.
    fn finish(&mut self, response: &mut Response) {
        let latency = self.started.elapsed();
        count_answer(self.method, self.route.as_ref(), response, latency);
        if let Some(caller) = self.caller.take() {
            log_access(self, &caller, response, latency);
        } else if tracing::enabled!(target: "keyfob::request", Level::DEBUG) {
            log_answer(response, latency);
        }
        if let Some(id) = self.id.take() {
            response.headers_mut().insert(REQUEST_ID_HEADER, id);
        }
    }
}

impl<F, E> Future for TracedAnswer<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(mut answer) = this.answer.as_pin_mut() else {
            let response = this
                .panicked
                .take()
                .expect("a traced answer polled after it ended");
            return Poll::Ready(Ok(response));
        };
        let polled = panic::catch_unwind(AssertUnwindSafe(|| answer.as_mut().poll(cx)));
        let _entered = answer.span().enter();
        let mut response = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(response))) => response,
            Ok(Poll::Ready(Err(err))) => return Poll::Ready(Err(err)),
            Err(_) => (this.bookkeeping.panic_answer)(),
        };
        this.bookkeeping.finish(&mut response);
        Poll::Ready(Ok(response))
    }
}

/// Counts an answer and its latency per route and status, for `/metrics`. Every label comes from
/// a closed set (a route template or `unmatched`, a known method or `other`, a status), so no
/// request can add a series of its own.
fn count_answer(
    method: &'static str,
    route: Option<&MatchedPath>,
    response: &Response,
    latency: Duration,
) {
    let route = route.map_or("unmatched", MatchedPath::as_str).to_owned();
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("keyfob_http_requests_total", &labels).increment(1);
    metrics::histogram!("keyfob_http_request_duration_seconds", &labels)
        .record(latency.as_secs_f64());
}

/// The method as a metric label: the standard ones by name, any other (a client may send any
/// token as a method) as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
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
    // Displayed, not debugged: neither needs quoting (an id is visible ASCII, a route a template),
    // and escaping them would be the dearest part of the span.
    tracing::info_span!(
        target: "keyfob::request",
        "request",
        request_id = %request_id,
        method = %request.method(),
        route = %route,
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

/// The access log's line for an answer: never a path as sent, a query, a header or a body, so
/// never a secret.
fn log_access(bookkeeping: &Bookkeeping, caller: &Caller, response: &Response, latency: Duration) {
    let who = caller.0.get();
    tracing::info!(
        target: "keyfob::access",
        method = bookkeeping.method,
        route = bookkeeping.route.as_ref().map_or("unmatched", MatchedPath::as_str),
        status = response.status().as_u16(),
        latency_ms = (latency.as_secs_f64() * 1_000_000.0).round() / 1000.0,
        request_id = bookkeeping.id.as_ref().and_then(|id| id.to_str().ok()).unwrap_or_default(),
        account = who.and_then(|w| w.account.as_deref()).unwrap_or("-"),
        credential = who.map_or("none", |w| w.credential),
        "access"
    );
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::response::IntoResponse;
    use tower::ServiceExt;

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

    fn panic_answer() -> Response {
        axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }

    fn get(id: &'static str) -> Request {
        Request::builder()
            .uri("/somewhere")
            .header(REQUEST_ID_HEADER, id)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_handler_that_panics_is_answered_500_with_the_request_id() {
        // Panics while it answers (in its future).
        let in_future = TraceRequestsLayer {
            panic_answer,
            access_log: false,
        }
        .layer(tower::service_fn(|_: Request| async move {
            if true {
                panic!("a handler's bug");
            }
            Ok::<Response, Infallible>(Response::new(axum::body::Body::empty()))
        }));
        let response = in_future.oneshot(get("panics-later")).await.unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "panics-later");

        // Panics before it has a future.
        let in_call = TraceRequestsLayer {
            panic_answer,
            access_log: false,
        }
        .layer(tower::service_fn(
            |_: Request| -> std::future::Ready<Result<Response, Infallible>> {
                panic!("a handler's bug")
            },
        ));
        let response = in_call.oneshot(get("panics-at-once")).await.unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "panics-at-once");
    }

    #[tokio::test]
    async fn an_answer_leaves_with_the_request_id() {
        let service = TraceRequestsLayer {
            panic_answer,
            access_log: false,
        }
        .layer(tower::service_fn(|request: Request| async move {
            // The handler sees the id too.
            assert_eq!(request.headers()[REQUEST_ID_HEADER], "fine-1");
            Ok::<Response, Infallible>(Response::new(axum::body::Body::empty()))
        }));
        let response = service.oneshot(get("fine-1")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "fine-1");
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
        assert!(!colour_wanted(false, Some(OsStr::new(""))));
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
