//! The HTTP/1.1 accept loop: per-connection limits on the request head, the client address
//! handed to the router, and a graceful stop that lets in-flight requests finish.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::app::PeerAddr;
use crate::config::Limits;

/// Most header lines a request may carry.
const MAX_HEADERS: usize = 100;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A running server; [`Server::stop`] ends accepting and waits for open connections.
pub struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Starts serving `app` on `listener`.
    pub fn start(listener: TcpListener, app: Router, limits: &Limits) -> Self {
        let mut http = http1::Builder::new();
        http.max_buf_size(limits.max_header_bytes)
            .max_headers(MAX_HEADERS)
            .timer(TokioTimer::new())
            // A client that never finishes its request head would otherwise hold a slot.
            .header_read_timeout(limits.request_timeout);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, app, http, stopped));
        Self { stop, task }
    }

    /// Stops accepting; the returned future ends when every connection has closed.
    pub fn stop(self) -> impl Future<Output = ()> {
        // The loop may already have ended; then there is nothing to tell it.
        let _ = self.stop.send(());
        async move {
            if let Err(err) = self.task.await {
                warn!("the accept loop ended abnormally: {err}");
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    http: http1::Builder,
    mut stopped: oneshot::Receiver<()>,
) {
    let connections = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!("accepting a connection failed: {err}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };

        let app = app.clone();
        let service =
            tower::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(PeerAddr(peer));
                app.clone().oneshot(request)
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%peer, "connection ended with an error: {err}");
            }
        });
    }

    drop(listener);
    connections.shutdown().await;
}
