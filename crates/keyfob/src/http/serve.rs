//! The serving loop: HTTP/1.1 connections with the limits a server facing the internet needs.
//!
//! `axum::serve` has no timeouts and no connection limits, so a client could hold a socket forever
//! by never finishing its headers or its body, or by keeping a connection open and idle, until
//! the process ran out of file descriptors. Here every connection is always in one of three
//! phases, each bounded but the one where a handler works:
//!
//! - **head**: from accepting the connection, or from the first byte of a later request, until
//!   the request line and headers are read: the header timeout;
//! - **busy**: a handler has the request. Its body has its own deadline (the body timeout; a body
//!   that misses it is answered 408 and the connection closed);
//! - **idle**: from the handler's answer until the next request's first byte: the idle timeout.
//!   This also bounds a client that never reads its answer.
//!
//! A request head is capped at 64 KiB, which also bounds what a connection buffers while it
//! waits for one. On top of that, a cap on connections served at once (beyond it new connections wait in the
//! kernel's queue), and a cap per client address, so that one address cannot take every slot.
//! Accept errors such as `EMFILE` are met with a short, growing pause rather than a busy loop.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::config::Config;
use crate::http::App;
use crate::telemetry::REQUEST_ID_HEADER;

/// File descriptors kept back from connections for the database, files and the runtime.
const RESERVED_FDS: u64 = 256;
/// The derived connection cap never exceeds this: beyond it, a node is better scaled out, and an
/// operator who wants more sets `max_connections`.
const MAX_DERIVED_CONNECTIONS: u64 = 10_000;
/// The first and the longest pause after an accept error (`EMFILE`, `ENFILE`, `ENOBUFS`, …).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The largest request head (line and headers) accepted, and about the most a connection buffers
/// while reading one: a larger head is refused with `431`. hyper's default (about 400 KB) would
/// let every slow connection pin that much memory; real heads (a JWT, a few cookies) are a few KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The OAuth endpoints answer errors in RFC 6749's shape (see `http::oauth`).
const OAUTH_PATHS: [&str; 3] = ["/auth/token", "/auth/revoke", "/auth/introspect"];

/// What the serving loop enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Peers without a per-address cap: the trusted proxies, through which every client arrives.
    pub exempt: Vec<IpNet>,
}

impl Limits {
    /// The configured limits; an unset connection cap is derived from the open-file limit.
    pub fn from_config(config: &Config, open_files: u64) -> Limits {
        let max_connections = config
            .max_connections
            .unwrap_or_else(|| default_max_connections(open_files));
        Limits {
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            idle_timeout: config.idle_timeout,
            max_connections,
            max_connections_per_ip: config.max_connections_per_ip.min(max_connections),
            exempt: config.trusted_proxies.clone(),
        }
    }
}

/// Raises the process's soft open-file limit to its hard limit and returns the new soft limit
/// (or the current one, if it cannot be raised). Every connection costs a descriptor, and the
/// usual soft limit (1024) is far below what the hard limit allows.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(error = %err, "cannot raise the open-file limit");
            rlimit::Resource::NOFILE
                .get()
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// Connections to serve at once when `max_connections` is not set: the open-file limit less a
/// reserve for everything else (but at least half of it), and at most 10,000. Staying under the
/// limit means a flood of connections waits in the kernel's queue instead of making `accept`
/// (and the database, and log files) fail with `EMFILE`.
pub fn default_max_connections(open_files: u64) -> usize {
    let usable = open_files
        .saturating_sub(RESERVED_FDS)
        .max(open_files / 2)
        .clamp(1, MAX_DERIVED_CONNECTIONS);
    usize::try_from(usable).unwrap_or(1)
}

/// Serves `app` on `listener` within `limits` until `stop` completes; then stops accepting,
/// lets every connection finish its current request and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    tracing::info!(
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        "accepting connections"
    );
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::new(
        limits.max_connections_per_ip,
        limits.exempt.clone(),
    ));
    // Connections watch `shutdown` to start closing; each holds a `closed` receiver, and the
    // loop waits until none is left.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (closed_tx, closed_rx) = watch::channel(());
    let mut http = hyper::server::conn::http1::Builder::new();
    // The phases below replace hyper's own header timeout, which would also cut idle
    // connections at the header timeout.
    http.header_read_timeout(None);
    http.max_buf_size(MAX_HEAD_BYTES);
    http.max_header_size(MAX_HEAD_BYTES);
    let mut stop = pin!(stop);
    let mut backoff = Duration::ZERO;

    loop {
        // At the cap, stop accepting: new connections wait in the kernel's queue until a slot
        // frees, rather than taking a descriptor each.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            // The client gave up before we accepted: nothing to do with this process.
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                // Out of descriptors or buffers: retrying at once would spin on the same error,
                // so pause, longer each time, until connections close and free some.
                if backoff.is_zero() {
                    tracing::error!(error = %err, "cannot accept connections; pausing (is the open-file limit reached?)");
                }
                metrics::counter!("keyfob_http_accept_errors_total").increment(1);
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => continue,
                    () = &mut stop => break,
                }
            }
        };
        let Some(ip_slot) = per_ip.try_acquire(peer.ip()) else {
            // Closing at once frees the descriptor; the client sees the connection end.
            metrics::counter!("keyfob_http_connections_refused_total", "reason" => "per_ip")
                .increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            stream,
            peer,
            app: app.clone(),
            limits: limits.clone(),
            http: http.clone(),
            shutdown: shutdown_rx.clone(),
        };
        let closed = closed_rx.clone();
        tokio::spawn(async move {
            metrics::gauge!("keyfob_http_connections").increment(1.0);
            connection.run().await;
            metrics::gauge!("keyfob_http_connections").decrement(1.0);
            drop((slot, ip_slot, closed));
        });
    }

    drop(listener);
    let _ = shutdown_tx.send(true);
    drop(closed_rx);
    closed_tx.closed().await;
}

/// Errors of one connection that the kernel reports on `accept`; the next accept is fine.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection and what it needs to serve itself.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    app: App,
    limits: Arc<Limits>,
    http: hyper::server::conn::http1::Builder,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self) {
        let phase = Arc::new(PhaseClock::new(
            self.limits.header_timeout,
            self.limits.idle_timeout,
        ));
        let io = TokioIo::new(WatchedIo {
            inner: self.stream,
            phase: phase.clone(),
        });
        let service = ConnService {
            app: self.app,
            peer: self.peer,
            phase: phase.clone(),
            body_timeout: self.limits.body_timeout,
        };
        let mut conn = pin!(self.http.serve_connection(io, service));
        let mut closing = false;
        loop {
            // `biased`: the connection is polled first, so the phase the deadline reads already
            // includes whatever this wake-up changed (a request started or answered, bytes read).
            tokio::select! {
                biased;
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    return;
                }
                changed = self.shutdown.changed(), if !closing => {
                    // A dropped sender means the loop is gone: close as well.
                    let _ = changed;
                    if !phase.is_busy() {
                        // Idle, or waiting for a head that may never come: nothing to finish.
                        return;
                    }
                    // Finish the request in hand, then close.
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = phase.expired() => {
                    // No request is being handled: dropping the connection closes the socket,
                    // and nothing is lost.
                    metrics::counter!("keyfob_http_connections_timed_out_total").increment(1);
                    return;
                }
            }
        }
    }
}

/// Where a connection is in its request cycle; the deadline follows from it.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request's head since this instant.
    Head(Instant),
    /// A handler has the request.
    Busy,
    /// The last answer was handed over at this instant; no byte of the next request yet.
    Idle(Instant),
}

/// A connection's phase, shared by its socket (bytes read), its service (requests started and
/// answered) and the task that closes it when the deadline passes.
struct PhaseClock {
    phase: Mutex<Phase>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl PhaseClock {
    fn new(header_timeout: Duration, idle_timeout: Duration) -> PhaseClock {
        PhaseClock {
            phase: Mutex::new(Phase::Head(Instant::now())),
            header_timeout,
            idle_timeout,
        }
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().expect("phase lock poisoned") = phase;
    }

    /// Bytes arrived: on an idle connection, a new request has begun and must finish its head in
    /// time.
    fn bytes_read(&self) {
        let mut phase = self.phase.lock().expect("phase lock poisoned");
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
        }
    }

    fn is_busy(&self) -> bool {
        matches!(
            *self.phase.lock().expect("phase lock poisoned"),
            Phase::Busy
        )
    }

    fn deadline(&self) -> Option<Instant> {
        match *self.phase.lock().expect("phase lock poisoned") {
            Phase::Head(since) => Some(since + self.header_timeout),
            Phase::Busy => None,
            Phase::Idle(since) => Some(since + self.idle_timeout),
        }
    }

    /// Completes when the current phase's deadline has passed. The deadline is read again on
    /// every poll; a busy connection has none (the connection's own progress wakes this task
    /// when the phase changes).
    async fn expired(&self) {
        let mut sleep: Option<Pin<Box<Sleep>>> = None;
        poll_fn(|cx| {
            let Some(deadline) = self.deadline() else {
                return Poll::Pending;
            };
            let sleep = match &mut sleep {
                Some(sleep) => {
                    if sleep.deadline() != deadline {
                        sleep.as_mut().reset(deadline);
                    }
                    sleep
                }
                None => sleep.insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            sleep.as_mut().poll(cx)
        })
        .await
    }
}

/// The socket, noting in the phase clock when bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    phase: Arc<PhaseClock>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.phase.bytes_read();
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The application as one connection's hyper service: it adds the client's address
/// (`ConnectInfo<SocketAddr>`, as handlers expect), puts a deadline on the request body and
/// moves the phase clock.
#[derive(Clone)]
struct ConnService {
    app: App,
    peer: SocketAddr,
    phase: Arc<PhaseClock>,
    body_timeout: Duration,
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, mut request: Request<Incoming>) -> ServiceFuture {
        self.phase.set(Phase::Busy);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let (request, timed_out) = if hyper::body::Body::is_end_stream(request.body()) {
            (request.map(Body::new), None)
        } else {
            let timed_out = Arc::new(AtomicBool::new(false));
            let timeout = self.body_timeout;
            let flag = timed_out.clone();
            let path = request.uri().path().to_owned();
            let request = request.map(|body| Body::new(DeadlineBody::new(body, timeout, flag)));
            (request, Some((timed_out, path)))
        };
        let app = self.app.clone();
        let phase = self.phase.clone();
        Box::pin(async move {
            let response = match app.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            phase.set(Phase::Idle(Instant::now()));
            // Whatever the handler made of the failed body read, the answer is a timeout, and
            // the connection cannot carry another request (the body's rest may still come).
            match timed_out {
                Some((flag, path)) if flag.load(Ordering::Relaxed) => {
                    let mut timeout = body_timeout_response(&path);
                    // The request's id, which the router gave the answer this one replaces.
                    if let Some(id) = response.headers().get(REQUEST_ID_HEADER) {
                        timeout.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
                    }
                    Ok(timeout)
                }
                _ => Ok(response),
            }
        })
    }
}

/// The 408 for a body that did not arrive in time, in the endpoint's error shape.
fn body_timeout_response(path: &str) -> Response {
    const MESSAGE: &str = "the request body did not arrive in time";
    let body = if OAUTH_PATHS.contains(&path) {
        serde_json::json!({"error": "invalid_request", "error_description": MESSAGE})
    } else {
        serde_json::json!({"error": "request_timeout", "message": MESSAGE})
    };
    let mut response = (StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // It bypasses the router's middleware, so it carries the headers every answer carries.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// A request body that must arrive whole within `timeout` of the first read. Unlike a timeout
/// per frame (tower-http's `TimeoutBody`), a client cannot stretch it by trickling bytes.
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration, timed_out: Arc<AtomicBool>) -> DeadlineBody {
        DeadlineBody {
            inner,
            timeout,
            deadline: None,
            sleep: None,
            timed_out,
        }
    }
}

/// The error a timed-out body read gives the handler.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let deadline = *this
            .deadline
            .get_or_insert_with(|| Instant::now() + this.timeout);
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        // The timer is armed only once the body has to be waited for: most bodies arrive in
        // the same packet as their headers.
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections per client address. An entry lives only while its address has a
/// connection, so the map is bounded by the connection cap.
struct PerIp {
    limit: usize,
    exempt: Vec<IpNet>,
    counts: Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count, given back on drop.
struct IpSlot {
    per_ip: Arc<PerIp>,
    key: Option<IpAddr>,
}

impl PerIp {
    fn new(limit: usize, exempt: Vec<IpNet>) -> PerIp {
        PerIp {
            limit,
            exempt,
            counts: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A slot for a connection from `ip`, or `None` when the address already holds its share.
    fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return Some(IpSlot {
                per_ip: self.clone(),
                key: None,
            });
        }
        let key = client_key(ip);
        let mut counts = self.counts.lock().expect("per-ip lock poisoned");
        let count = counts.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            key: Some(key),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut counts = self.per_ip.counts.lock().expect("per-ip lock poisoned");
        if let Some(count) = counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&key);
            }
        }
    }
}

/// The unit one client is counted by: its IPv4 address, or its IPv6 /64 (one host is usually
/// given a whole /64, so counting single IPv6 addresses would limit nothing).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_cap_leaves_room_and_stays_sane() {
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(64), 32);
        assert_eq!(default_max_connections(20_000), 10_000);
        assert_eq!(default_max_connections(u64::MAX), 10_000);
        assert_eq!(default_max_connections(0), 1);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_key(v4), v4);
    }

    #[test]
    fn per_ip_slots_are_capped_given_back_and_forgotten() {
        let per_ip = Arc::new(PerIp::new(2, vec!["10.0.0.0/8".parse().unwrap()]));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let first = per_ip.try_acquire(ip).expect("first");
        let second = per_ip.try_acquire(mapped).expect("second, the same client");
        assert!(per_ip.try_acquire(ip).is_none(), "third is over the cap");
        drop(first);
        let third = per_ip.try_acquire(ip).expect("a slot was given back");
        drop((second, third));
        assert!(
            per_ip.counts.lock().unwrap().is_empty(),
            "no entry outlives its connections"
        );
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| per_ip.try_acquire(proxy)).collect();
        assert!(
            held.iter().all(Option::is_some),
            "trusted proxies are exempt"
        );
    }
}
