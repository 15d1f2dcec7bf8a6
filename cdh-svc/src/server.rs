//! The CDH's lifecycle: listeners, credentials, readiness, reload on SIGHUP, drain on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use common::service::{acquire_listener, drain, stop_ttrpc, Endpoint, Lifecycle, ServiceListener};
use common::systemd::InheritedListeners;
use ttrpc::r#async::transport::Listener;

use crate::cli::Cli;
use crate::config::{Config, SealedSecretCheck};
use crate::credentials;
use crate::hub::Hub;
use crate::kbc::Kbc;
use crate::ttrpc_api;

/// The service name in logs.
const SERVICE: &str = "confidential-data-hub";

/// How long in-flight requests may take to finish after SIGTERM.
const DRAIN_BOUND: Duration = Duration::from_secs(10);

/// Serves until SIGTERM or SIGINT.
pub async fn serve(cli: Cli, config: Config, mut inherited: InheritedListeners) -> Result<()> {
    let mut lifecycle = Lifecycle::start(SERVICE)?;
    report(&config);

    let hub = Arc::new(Hub::new(
        Kbc::from_config(&config)?,
        config.sealed_secret_check.clone(),
    ));

    let (listener, _) = acquire_listener(&config.socket, &mut inherited, None)?;
    let mut ttrpc_server = ttrpc::r#async::Server::new()
        .add_listener(ttrpc_listener(listener)?)
        .register_service(ttrpc_api::services(hub.clone()));
    ttrpc_server
        .start()
        .await
        .with_context(|| format!("failed to start the ttrpc server on {}", config.socket))?;

    #[cfg(feature = "grpc")]
    let grpc = match &config.grpc {
        Some(endpoint) => Some(start_grpc(endpoint, &mut inherited, hub.clone())?),
        None => None,
    };

    credentials::provision(&hub, &config.credentials, &|status, allowance| {
        lifecycle.status(status);
        lifecycle.extend_timeout(allowance);
    })
    .await?;

    lifecycle
        .ready(&endpoints(&config), &status_line(&config, &hub))
        .await?;

    lifecycle
        .run_until_terminated(|| {
            let (cli, hub) = (cli.clone(), hub.clone());
            async move { reload(&cli, &hub) }
        })
        .await;

    #[cfg(feature = "grpc")]
    if let Some((stop, task)) = grpc {
        // The receiver is gone only if the server already ended, which the task reports.
        let _ = stop.send(());
        drain(task, DRAIN_BOUND).await;
    }
    drain(stop_ttrpc(&mut ttrpc_server), DRAIN_BOUND).await;
    tracing::info!("stopped");
    Ok(())
}

/// Re-reads the config and the offline files and swaps in the new KBC.
fn reload(cli: &Cli, hub: &Hub) -> Result<String> {
    let config = Config::load(cli)?;
    report(&config);
    hub.replace_kbc(Kbc::from_config(&config)?);
    // Limitation: listener addresses and credentials are applied at start only.
    Ok(status_line(&config, hub))
}

/// Logs once what the config resolved to and what in it is ignored.
fn report(config: &Config) {
    match &config.file {
        Some(file) => tracing::info!(file = %file.display(), "config loaded"),
        None => tracing::info!("no config file, using built-in defaults"),
    }
    tracing::info!(kind = ?config.kbc.kind, source = %config.kbc.source, "kbc selected");
    if config.sealed_secret_check == SealedSecretCheck::Skip {
        tracing::warn!("sealed secret signatures are not verified");
    }
    if !config.ignored_keys.is_empty() {
        tracing::warn!(
            keys = %config.ignored_keys.join(", "),
            "config keys not implemented by this build are ignored"
        );
    }
}

/// Every endpoint this run serves, for the readiness check.
fn endpoints(config: &Config) -> Vec<Endpoint> {
    std::iter::once(config.socket.clone())
        .chain(config.grpc.clone())
        .collect()
}

fn status_line(config: &Config, hub: &Hub) -> String {
    format!(
        "serving on {}; {} (kbc from {})",
        config.socket,
        hub.describe(),
        config.kbc.source
    )
}

fn ttrpc_listener(listener: ServiceListener) -> Result<Listener> {
    Ok(match listener {
        ServiceListener::Unix(listener) => {
            Listener::from(tokio::net::UnixListener::from_std(listener)?)
        }
        ServiceListener::Tcp(listener) => {
            Listener::from(tokio::net::TcpListener::from_std(listener)?)
        }
    })
}

/// The gRPC server task and the sender that stops it.
#[cfg(feature = "grpc")]
type GrpcServer = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

#[cfg(feature = "grpc")]
fn start_grpc(
    endpoint: &Endpoint,
    inherited: &mut InheritedListeners,
    hub: Arc<Hub>,
) -> Result<GrpcServer> {
    let (listener, _) = acquire_listener(endpoint, inherited, Some("grpc"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = crate::grpc_api::router(hub);
    let endpoint = endpoint.clone();
    let task = tokio::spawn(async move {
        let shutdown = async {
            // A dropped sender means the service is going away too.
            let _ = stopped.await;
        };
        if let Err(err) = crate::grpc_api::serve(router, listener, shutdown).await {
            tracing::error!(%endpoint, "gRPC server failed: {err:#}");
        }
    });
    Ok((stop, task))
}
