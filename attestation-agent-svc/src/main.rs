//! The Attestation Agent of a Confidential Containers podvm, run as a systemd service.

/// The agent core every transport calls.
mod agent;
/// TEE attesters: sample and configfs-tsm.
mod attester;
/// Command-line flags.
mod cli;
/// Configuration resolution.
mod config;
/// The AAEL eventlog.
mod eventlog;
/// The gRPC transport.
#[cfg(feature = "grpc")]
mod grpc_service;
/// Service lifecycle: listeners, servers, reload, drain.
mod server;
/// KBS tokens and their cache.
mod token;
/// The ttrpc transport.
mod ttrpc_service;

use std::process::ExitCode;

use clap::Parser;
use common::kbc_params::KbcParamsResolver;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let config = config::AgentConfig::resolve(&cli.config_inputs(), &KbcParamsResolver::from_env());
    let level = config.as_ref().map_or(config::DEFAULT_LOG_LEVEL, |config| {
        config.log_level.value.as_str()
    });
    common::logging::init(level);

    match config.and_then(|config| server::run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            common::service::report_failure(&err);
            ExitCode::FAILURE
        }
    }
}
