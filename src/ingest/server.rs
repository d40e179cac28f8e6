//! The accept loop: hyper 1 HTTP/1.1 connections on tokio, `TCP_NODELAY` on each, and a
//! shutdown that stops accepting, then lets the shards finish what they were given.
//!
//! Nothing from outside holds resources for long: at most `connections_max()`
//! connections at once (the rest closed at once, counted in
//! `lockstep_connections_refused_total`), a request's headers within
//! `HEADER_READ_TIMEOUT`, a connection with no bytes either way and no request in
//! progress closed after `IDLE_TIMEOUT`, and a body within `api::BODY_READ_TIMEOUT`.
//! The storage's file descriptors are kept aside first (`store::keys::FDS_PER_SHARD`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use crate::ingest::api::App;
use crate::store::keys::FDS_PER_SHARD;

/// A request's headers must arrive within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection idle this long (no bytes, no request in progress) is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Descriptors kept for everything else (logs, outbound calls, the data directory).
const FDS_RESERVED: usize = 256;

/// Raises the open-file soft limit to the hard one (the soft default, often 1,024,
/// would let a few hundred idle sockets starve the storage) and returns it.
pub fn raise_fd_limit() -> usize {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1_024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    }
}

/// How many connections one listener takes at once: what the descriptors leave after
/// the shards' storage and a reserve, within 16 to 16,384.
pub fn connections_max(fd_limit: usize, shards: usize) -> usize {
    fd_limit
        .saturating_sub(shards.saturating_mul(FDS_PER_SHARD))
        .saturating_sub(FDS_RESERVED)
        .clamp(16, 16_384)
}

/// A connection's I/O, noting when a byte last went either way.
struct Watched<T> {
    io: T,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<T> Watched<T> {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves. With `metrics_only`, every path
/// but /metrics is 404 (the optional second listener of `metrics_listen`).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    metrics_only: bool,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(app.connections_max));
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: closed at once (a channel retries) rather than queued unbounded.
            metrics::counter!("lockstep_connections_refused_total").increment(1);
            tracing::debug!(%peer, "connection refused: at the connection limit");
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let epoch = Instant::now();
            let last = Arc::new(AtomicU64::new(0));
            let busy = Arc::new(AtomicUsize::new(0));
            let io = Watched {
                io: stream,
                last: last.clone(),
                epoch,
            };
            let in_flight = busy.clone();
            let service = service_fn(move |req| {
                let app = app.clone();
                let in_flight = in_flight.clone();
                async move {
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    let _done = scopeguard(in_flight);
                    if metrics_only && req.uri().path() != "/metrics" {
                        let e = crate::ingest::error::ApiError::new(
                            hyper::StatusCode::NOT_FOUND,
                            "not_found",
                            "this listener serves /metrics only",
                        );
                        return Ok::<_, Infallible>(crate::ingest::api::error_response(&e));
                    }
                    // The metrics listener is the operator's explicit choice of where
                    // metrics are public: no token asked there.
                    if metrics_only {
                        return Ok::<_, Infallible>(app.render_metrics());
                    }
                    Ok::<_, Infallible>(app.handle(req).await)
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            loop {
                tokio::select! {
                    ended = &mut connection => {
                        if let Err(e) = ended {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = tokio::time::sleep(IDLE_TIMEOUT / 4) => {
                        let quiet = epoch.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                        if busy.load(Ordering::Relaxed) == 0 && quiet >= IDLE_TIMEOUT {
                            tracing::debug!(%peer, "idle connection closed");
                            break;
                        }
                    }
                }
            }
        });
    }
}

/// Counts a request as done when dropped, however its handler ends.
fn scopeguard(in_flight: Arc<AtomicUsize>) -> impl Drop {
    struct Done(Arc<AtomicUsize>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    Done(in_flight)
}

/// Binds a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
