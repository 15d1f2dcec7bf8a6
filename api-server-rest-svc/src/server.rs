//! The HTTP/1.1 accept loop: per-connection limits on the request head, the client address
//! handed to the router, and a graceful stop that lets in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tracing::{debug, warn};

use common::service::FIRST_REQUEST_GRACE;

use crate::app::PeerAddr;
use crate::config::Limits;

/// Most header lines a request may carry.
const MAX_HEADERS: usize = 100;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A running server; [`Server::stop`] ends accepting and waits for open connections.
pub struct Server {
    stop: watch::Sender<bool>,
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
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, app, http, stopping));
        Self { stop, task }
    }

    /// Stops accepting; the returned future ends when every connection has closed.
    pub fn stop(self) -> impl Future<Output = ()> {
        // The loop and its connections watch this; it reaches them even if they already ended.
        self.stop.send_replace(true);
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
    mut stopping: watch::Receiver<bool>,
) {
    // Every connection task holds a sender: when the last one is dropped, all have ended.
    let (alive, mut all_ended) = mpsc::channel::<()>(1);
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
            () = stop_requested(&mut stopping) => break,
        };

        let first_request = Arc::new(watch::Sender::new(false));
        let app = app.clone();
        let started = Arc::clone(&first_request);
        let service =
            tower::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                started.send_replace(true);
                request.extensions_mut().insert(PeerAddr(peer));
                app.clone().oneshot(request)
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        tokio::spawn(serve_until_stopped(
            connection,
            peer,
            first_request.subscribe(),
            stopping.clone(),
            alive.clone(),
        ));
    }

    // The listener stays open in systemd (or whoever passed it), queueing clients for the next
    // process; this one only lets go of its copy.
    drop(listener);
    drop(alive);
    all_ended.recv().await;
}

/// Serves one connection until it ends or the server stops. On a stop, a connection that has
/// not yet sent its first request gets [`FIRST_REQUEST_GRACE`] to send it: its client connected
/// before the stop and gets an answer, not a closed connection. Then keep-alive ends, and the
/// request in flight, if any, finishes.
async fn serve_until_stopped<C>(
    connection: C,
    peer: SocketAddr,
    mut first_request: watch::Receiver<bool>,
    mut stopping: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        result = connection.as_mut() => Some(result),
        () = stop_requested(&mut stopping) => None,
    };
    let result = match ended {
        Some(result) => result,
        None => {
            let first_request_or_grace = async {
                let _ = tokio::time::timeout(
                    FIRST_REQUEST_GRACE,
                    first_request.wait_for(|started| *started),
                )
                .await;
            };
            tokio::select! {
                result = connection.as_mut() => result,
                () = first_request_or_grace => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
    };
    if let Err(err) = result {
        debug!(%peer, "connection ended with an error: {err}");
    }
}

/// Resolves once the server is told to stop, or its [`Server`] is gone.
async fn stop_requested(stopping: &mut watch::Receiver<bool>) {
    // The borrow of the value ends here, so callers' futures stay `Send`.
    let _ = stopping.wait_for(|stop| *stop).await;
}
