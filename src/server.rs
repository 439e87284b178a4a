//! The accept loop, each connection's life (protocol detection, hyper, timeouts) and the drain.

use std::convert::Infallible;
use std::future::{Future, ready};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::ServeArgs;
use crate::io::{ConnectionIo, ConnectionTimeouts, H2_PREFACE};
use crate::routes;

/// Largest request head (request line and headers) accepted; beyond it hyper answers 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields accepted in one request; beyond it hyper answers 431.
pub const MAX_HEADERS: usize = 100;
/// Bounds what one HTTP/1 connection buffers (pipelined requests, unread responses).
const MAX_BUF_BYTES: usize = 64 * 1024;
/// HTTP/2 streams one client may have open at once.
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams a client may open and reset before hyper has seen them (CVE-2023-44487, rapid reset).
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset for a client's protocol errors before it sends GOAWAY.
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Timeouts and limits; every one is configurable (see [`ServeArgs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub header_read_timeout: Duration,
    pub write_timeout: Duration,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
    pub max_connections: u32,
    pub h2c: bool,
}

impl From<&ServeArgs> for ServerConfig {
    fn from(args: &ServeArgs) -> Self {
        Self {
            header_read_timeout: args.header_read_timeout,
            write_timeout: args.write_timeout,
            shutdown_grace: args.shutdown_grace,
            shutdown_delay: args.shutdown_delay,
            max_connections: args.max_connections,
            h2c: args.h2c,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(8),
            shutdown_delay: Duration::ZERO,
            max_connections: 4096,
            h2c: true,
        }
    }
}

/// Where the server is in its life; connections follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepting and ready.
    Serving,
    /// A shutdown signal arrived: `/readyz` answers 503, the listener is still open for the
    /// shutdown delay.
    NotReady,
    /// The listener is closed; connections finish what they are doing and close.
    Draining,
    /// The grace period ran out; connections still open are dropped.
    Aborting,
}

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections that finished on their own during the grace period.
    pub drained: usize,
    /// Connections still open when the grace period ran out, and dropped.
    pub forced: usize,
}

/// Lets a caller (a test, an embedding program) follow the server without polling it.
#[derive(Debug, Clone)]
pub struct ServerWatch {
    pub phase: watch::Receiver<Phase>,
    /// Connections accepted and not yet closed.
    pub connections: watch::Receiver<usize>,
}

/// What every connection task shares.
struct Shared {
    config: ServerConfig,
    ready: AtomicBool,
    phase: watch::Sender<Phase>,
    connections: watch::Sender<usize>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

/// A bound listener and its configuration, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    pub fn new(listener: TcpListener, config: ServerConfig) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            // ConnectionIo enforces it, once per connection instead of once per request.
            .header_read_timeout(None)
            .max_header_size(MAX_HEADER_BYTES)
            .max_headers(MAX_HEADERS)
            .max_buf_size(MAX_BUF_BYTES)
            .keep_alive(true);

        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_send_buf_size(MAX_BUF_BYTES);

        Self {
            listener,
            shared: Arc::new(Shared {
                config,
                ready: AtomicBool::new(true),
                phase: watch::Sender::new(Phase::Serving),
                connections: watch::Sender::new(0),
                http1,
                http2,
            }),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn watch(&self) -> ServerWatch {
        ServerWatch {
            phase: self.shared.phase.subscribe(),
            connections: self.shared.connections.subscribe(),
        }
    }

    /// Serves until `shutdown` resolves, then drains: readiness off, listener closed after the
    /// shutdown delay, in-flight requests finished, idle connections closed, and whatever is
    /// still open after the grace period dropped.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> DrainReport {
        let Self { listener, shared } = self;
        let config = &shared.config;
        let slots = Arc::new(Semaphore::new(config.max_connections as usize));
        info!(
            version = env!("CARGO_PKG_VERSION"),
            address = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            max_connections = config.max_connections,
            header_read_timeout = ?config.header_read_timeout,
            write_timeout = ?config.write_timeout,
            shutdown_grace = ?config.shutdown_grace,
            h2c = config.h2c,
            "listening"
        );

        accept_until(&listener, &shared, &slots, pin!(shutdown)).await;

        shared.ready.store(false, Ordering::Relaxed);
        shared.phase.send_replace(Phase::NotReady);
        if !config.shutdown_delay.is_zero() {
            info!(delay = ?config.shutdown_delay, "shutdown begun; readiness off, still accepting");
            accept_until(
                &listener,
                &shared,
                &slots,
                pin!(tokio::time::sleep(config.shutdown_delay)),
            )
            .await;
        }
        drop(listener);

        let open = config.max_connections as usize - slots.available_permits();
        info!(connections = open, grace = ?config.shutdown_grace, "listener closed; draining");
        shared.phase.send_replace(Phase::Draining);
        let all_slots = slots.acquire_many(config.max_connections);
        let report = match tokio::time::timeout(config.shutdown_grace, all_slots).await {
            Ok(_) => DrainReport {
                drained: open,
                forced: 0,
            },
            Err(_) => {
                let forced = config.max_connections as usize - slots.available_permits();
                shared.phase.send_replace(Phase::Aborting);
                DrainReport {
                    drained: open.saturating_sub(forced),
                    forced,
                }
            }
        };
        info!(
            drained = report.drained,
            forced = report.forced,
            "shutdown complete"
        );
        report
    }
}

/// Accepts connections until `stop` resolves. A connection slot is taken before `accept`, so at
/// the limit new connections wait in the kernel's backlog instead of being accepted and dropped.
async fn accept_until(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    mut stop: Pin<&mut impl Future<Output = ()>>,
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut stop => return,
            slot = Arc::clone(slots).acquire_owned() => slot.expect("the slot semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            () = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                tokio::spawn(serve_connection(stream, peer, Arc::clone(shared), slot));
            }
            // The client gave up between SYN and accept: nothing to back off from.
            Err(err) if is_per_connection_error(&err) => debug!(error = %err, "accept aborted"),
            Err(err) => {
                // EMFILE, ENFILE, ENOBUFS: retrying at once would spin; the slot is released
                // so the wait is for descriptors, not for our own limit.
                warn!(error = %err, retry_in = ?backoff, "accept failed; backing off");
                drop(slot);
                tokio::select! {
                    biased;
                    () = &mut stop => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

fn is_per_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

enum Protocol {
    Http1,
    Http2,
}

/// Counts a connection for [`ServerWatch::connections`] for as long as it lives.
struct Counted<'a>(&'a watch::Sender<usize>);

impl<'a> Counted<'a> {
    fn new(connections: &'a watch::Sender<usize>) -> Self {
        connections.send_modify(|n| *n += 1);
        Self(connections)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
) {
    let _counted = Counted::new(&shared.connections);
    let config = &shared.config;
    // Responses are written whole; Nagle would only delay the next pipelined one.
    if let Err(err) = stream.set_nodelay(true) {
        debug!(%peer, error = %err, "set_nodelay failed");
    }

    let accepted = Instant::now();
    let timeouts = ConnectionTimeouts {
        request: config.header_read_timeout,
        write: config.write_timeout,
    };
    let mut prefix = [0; H2_PREFACE.len()];
    let (protocol, prefix_len) = if config.h2c {
        // Bounded by the header read timeout: hyper-util's auto builder waits here forever.
        match tokio::time::timeout(
            config.header_read_timeout,
            detect_protocol(&mut stream, &mut prefix),
        )
        .await
        {
            Ok(Ok(Some(detected))) => detected,
            Ok(Ok(None)) => return,
            Ok(Err(err)) => {
                return debug!(%peer, error = %err, "read failed before the first request");
            }
            Err(_) => return debug!(%peer, "no request within the header read timeout"),
        }
    } else {
        (Protocol::Http1, 0)
    };
    let io = TokioIo::new(ConnectionIo::new(
        stream,
        &prefix[..prefix_len],
        accepted,
        timeouts,
    ));

    let service = {
        let shared = Arc::clone(&shared);
        service_fn(move |request| {
            let ready_now = shared.ready.load(Ordering::Relaxed);
            ready(Ok::<_, Infallible>(routes::respond(request, ready_now)))
        })
    };
    let phase = shared.phase.subscribe();
    let result = match protocol {
        Protocol::Http1 => drive(shared.http1.serve_connection(io, service), phase).await,
        // Boxed: the HTTP/2 connection state is large, and inline it would make every HTTP/1
        // connection's task as large.
        Protocol::Http2 => Box::pin(drive(shared.http2.serve_connection(io, service), phase)).await,
    };
    if let Err(err) = result {
        // Client errors (timeouts, malformed requests, resets) are routine on the internet.
        debug!(%peer, error = %err, "connection closed with error");
    }
}

/// Reads until the bytes either diverge from the HTTP/2 preface or complete it.
/// Returns `None` if the client closed first.
async fn detect_protocol(
    stream: &mut TcpStream,
    prefix: &mut [u8; H2_PREFACE.len()],
) -> io::Result<Option<(Protocol, usize)>> {
    let mut len = 0;
    loop {
        let read = stream.read(&mut prefix[len..]).await?;
        if read == 0 {
            return Ok(None);
        }
        len += read;
        if prefix[..len] != H2_PREFACE[..len] {
            return Ok(Some((Protocol::Http1, len)));
        }
        if len == H2_PREFACE.len() {
            return Ok(Some((Protocol::Http2, len)));
        }
    }
}

/// The two hyper connection types, for [`drive`].
trait GracefulConnection: Future<Output = hyper::Result<()>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

// Bounded to what this module serves (our body type, tokio's executor): hyper's own bounds
// on `graceful_shutdown` are long and add nothing here.
impl<I, S> GracefulConnection for http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: HttpService<Incoming, ResBody = Full<Bytes>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::Connection::graceful_shutdown(self);
    }
}

impl<I, S> GracefulConnection for http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: HttpService<Incoming, ResBody = Full<Bytes>>,
    S::Future: Send + 'static,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// Runs a connection to its end, following the server's phase: graceful shutdown when the
/// drain starts (finish the in-flight request, then close), dropped when the grace runs out.
async fn drive(
    connection: impl GracefulConnection,
    mut phase: watch::Receiver<Phase>,
) -> hyper::Result<()> {
    let mut connection = pin!(connection);
    // The drain may have begun between accept and now; act on the current phase first.
    phase.mark_changed();
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            changed = phase.changed() => match changed.map(|()| *phase.borrow_and_update()) {
                Ok(Phase::Serving | Phase::NotReady) => {}
                Ok(Phase::Draining) => connection.as_mut().graceful_shutdown(),
                // Aborting, or the server is gone.
                Ok(Phase::Aborting) | Err(_) => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The defaults are written twice, as clap strings and here (for embedding and tests);
    /// this keeps them equal. Needs no HELLO_* variable in the test's environment.
    #[test]
    fn default_config_equals_the_command_line_defaults() {
        let cli = crate::config::Cli::try_parse_from(["hello-server"]).expect("no arguments parse");
        assert_eq!(ServerConfig::from(&cli.serve), ServerConfig::default());
    }
}
