//! The accept loop: hyper 1 HTTP/1.1 connections on tokio, `TCP_NODELAY` on each, and a
//! shutdown that stops accepting, then lets the shards finish what they were given.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::ingest::api::App;

/// Serves `app` on `listener` until `shutdown` resolves. With `metrics_only`, every path
/// but /metrics is 404 (the optional second listener of `metrics_listen`).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    metrics_only: bool,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
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
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move {
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
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Binds a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
