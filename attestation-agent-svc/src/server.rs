//! The service: listeners, the ttrpc (and gRPC) servers, readiness, reload and drain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::kbc_params::KbcParamsResolver;
use common::service::{acquire_listener, drain, stop_ttrpc, Endpoint, Lifecycle, ServiceListener};
use common::systemd::InheritedListeners;

use crate::agent::AttestationAgent;
use crate::attester::Attester;
use crate::cli::Cli;
use crate::config::{AgentConfig, ConfigInputs};
use crate::ttrpc_service;

/// The name systemd and the logs know this service by.
const SERVICE_NAME: &str = "attestation-agent";
/// How long in-flight requests may run after SIGTERM.
const DRAIN_BOUND: Duration = Duration::from_secs(10);

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(cli: Cli, config: AgentConfig) -> anyhow::Result<()> {
    // Before the runtime exists: taking the listeners unsets LISTEN_* in a single-threaded process.
    let mut inherited =
        InheritedListeners::take_from_env().context("failed to take socket-activated listeners")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(serve(cli, config, &mut inherited))
}

async fn serve(
    cli: Cli,
    config: AgentConfig,
    inherited: &mut InheritedListeners,
) -> anyhow::Result<()> {
    let mut lifecycle = Lifecycle::start(SERVICE_NAME)?;
    report_config(&config);

    let attester =
        Attester::select(cli.tee, &cli.tsm_root).context("failed to set up the attester")?;
    tracing::info!(tee = attester.tee().name(), "attester selected");
    let agent = Arc::new(AttestationAgent::new(attester, config)?);

    let ttrpc_endpoint = Endpoint::parse(&cli.attestation_sock)?;
    // Limitation: inherited sockets are matched by kind, not by FileDescriptorName, so a socket
    // unit passing both a ttrpc and a gRPC unix socket must list the ttrpc one first.
    let (listener, _) = acquire_listener(&ttrpc_endpoint, inherited, None)?;
    let mut ttrpc_server = start_ttrpc(listener, agent.clone())
        .await
        .with_context(|| format!("failed to serve ttrpc on {ttrpc_endpoint}"))?;
    #[cfg_attr(not(feature = "grpc"), allow(unused_mut))]
    let mut endpoints = vec![ttrpc_endpoint];

    #[cfg(feature = "grpc")]
    let grpc_server = match &cli.grpc {
        Some(address) => {
            let endpoint = Endpoint::parse(address)?;
            let (listener, _) = acquire_listener(&endpoint, inherited, None)?;
            let server = crate::grpc_service::GrpcServer::spawn(listener, agent.clone())
                .with_context(|| format!("failed to serve gRPC on {endpoint}"))?;
            endpoints.push(endpoint);
            Some(server)
        }
        None => None,
    };
    #[cfg(not(feature = "grpc"))]
    if let Some(address) = &cli.grpc {
        anyhow::bail!("--grpc {address}: this build has no gRPC support");
    }

    lifecycle.ready(&endpoints, &agent.status()).await?;

    let inputs = cli.config_inputs();
    lifecycle
        .run_until_terminated(|| reload(agent.clone(), inputs.clone()))
        .await;

    drain(
        async {
            stop_ttrpc(&mut ttrpc_server).await;
            #[cfg(feature = "grpc")]
            if let Some(server) = grpc_server {
                server.shutdown().await;
            }
        },
        DRAIN_BOUND,
    )
    .await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the ttrpc server on `listener`.
async fn start_ttrpc(
    listener: ServiceListener,
    agent: Arc<AttestationAgent>,
) -> anyhow::Result<ttrpc::r#async::Server> {
    let listener = match listener {
        ServiceListener::Unix(listener) => ttrpc::r#async::transport::Listener::try_from(listener)?,
        ServiceListener::Tcp(listener) => ttrpc::r#async::transport::Listener::try_from(listener)?,
    };
    let mut server = ttrpc::r#async::Server::new()
        .add_listener(listener)
        .register_service(ttrpc_service::services(agent));
    server.start().await?;
    Ok(server)
}

/// Re-reads the config file and `aa_kbc_params`; the agent keeps its old settings on error.
async fn reload(agent: Arc<AttestationAgent>, inputs: ConfigInputs) -> anyhow::Result<String> {
    // Limitation: the log level is fixed at start; a changed `[log] level` applies after a restart.
    let config = AgentConfig::resolve(&inputs, &KbcParamsResolver::from_env())?;
    report_config(&config);
    agent.reload(config)?;
    Ok(agent.status())
}

/// Logs where the configuration came from, and what in the file is ignored.
fn report_config(config: &AgentConfig) {
    tracing::info!(
        kbs = %config.kbs_summary(),
        eventlog = config.eventlog.value.enabled,
        eventlog_source = %config.eventlog.source,
        "configuration resolved"
    );
    if !config.ignored_keys.is_empty() {
        tracing::warn!(
            keys = %config.ignored_keys.join(", "),
            "config file keys not used by this agent are ignored"
        );
    }
}
