//! `api-server-rest`: the REST front that lets containers of a confidential pod ask the
//! Confidential Data Hub for resources and the Attestation Agent for evidence and tokens.

/// The HTTP application: router, handlers and request guards.
mod app;
/// Lazily connecting ttrpc clients of the AA and the CDH.
mod backend;
/// Flags and the validated settings built from them.
mod config;
/// The route table and the OpenAPI document generated from it.
mod routes;
/// The HTTP/1.1 accept loop with limits and graceful stop.
mod server;
/// ttrpc doubles of the AA and the CDH, shared with the end-to-end tests.
#[cfg(test)]
#[path = "../tests/support/backends.rs"]
mod test_backends;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use common::service::{acquire_listener, drain, Endpoint, Lifecycle, ServiceListener};
use common::systemd::InheritedListeners;
use tracing::info;

use crate::app::AppState;
use crate::backend::{AaClient, CdhClient};
use crate::config::{Args, Settings};
use crate::server::Server;

fn main() -> ExitCode {
    let args = Args::parse();
    common::logging::init("info");
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            common::service::report_failure(&err);
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let settings = Settings::from_args(args)?;
    // Must happen before any thread exists: it unsets the LISTEN_* variables.
    let mut inherited = InheritedListeners::take_from_env()
        .context("failed to take the socket-activated listeners")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(serve(settings, &mut inherited))
}

async fn serve(settings: Settings, inherited: &mut InheritedListeners) -> Result<()> {
    let mut lifecycle = Lifecycle::start("api-server-rest")?;
    let listener = tcp_listener(&settings, inherited)?;
    let local = listener
        .local_addr()
        .context("failed to read the listener address")?;

    let limits = settings.limits;
    let aa = AaClient::new(settings.aa.clone(), limits.backend_wait);
    let cdh = CdhClient::new(settings.cdh.clone(), limits.backend_wait);
    let state = Arc::new(AppState::new(settings.features, limits, aa, cdh));
    let server = Server::start(listener, app::router(state), &limits);

    let status = format!("serving {} on http://{local}", settings.features);
    lifecycle.ready(&[Endpoint::Tcp(local)], &status).await?;
    info!(features = %settings.features, aa = %settings.aa, cdh = %settings.cdh, "backends");
    // Flags are the only configuration, so a reload has nothing to re-read.
    lifecycle
        .run_until_terminated(|| {
            let status = status.clone();
            async move { Ok(status) }
        })
        .await;

    drain(server.stop(), limits.shutdown_timeout).await;
    info!("stopped");
    Ok(())
}

/// The inherited TCP listener (socket activation, possibly inside the pod network namespace),
/// else one bound to `--bind`.
fn tcp_listener(
    settings: &Settings,
    inherited: &mut InheritedListeners,
) -> Result<tokio::net::TcpListener> {
    let endpoint = Endpoint::Tcp(settings.bind);
    let (listener, origin) = acquire_listener(&endpoint, inherited, None)?;
    let ServiceListener::Tcp(listener) = listener else {
        anyhow::bail!("the listener for {endpoint} is not a TCP socket");
    };
    info!(%endpoint, ?origin, "listener");
    tokio::net::TcpListener::from_std(listener)
        .with_context(|| format!("failed to register the listener for {endpoint}"))
}
