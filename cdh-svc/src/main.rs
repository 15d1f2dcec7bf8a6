//! The confidential-data-hub service: KBS resources and sealed secrets for a podvm's workloads.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser as _;
use common::systemd::InheritedListeners;

/// Evidence from the Attestation Agent for the KBS client.
mod aa;
/// Command-line flags.
mod cli;
/// The config file, flags and `aa_kbc_params`, resolved into one value.
mod config;
/// `[[credentials]]` fetched and written before readiness.
mod credentials;
/// Request errors and their status codes.
mod error;
/// The gRPC transport.
#[cfg(feature = "grpc")]
mod grpc_api;
/// The core both transports call.
mod hub;
/// The cc_kbc and offline_fs_kbc.
mod kbc;
/// The offline_fs KBC's resource files.
mod offline;
/// Sealed secret parsing.
mod sealed;
/// Listeners, readiness, reload and drain.
mod server;
/// Shared execution of concurrent identical requests.
mod single_flight;
/// The ttrpc transport.
mod ttrpc_api;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            common::service::report_failure(&err);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> Result<()> {
    let config = config::Config::load(&cli);
    common::logging::init(config.as_ref().map_or("info", |c| c.log_level.as_str()));
    let config = config?;

    // Before any thread exists: this unsets the LISTEN_* variables.
    let inherited =
        InheritedListeners::take_from_env().context("invalid socket activation environment")?;
    // One thread, as the other services: the work is I/O, and the rare TEE key generation
    // goes to the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(server::serve(cli, config, inherited))
}
