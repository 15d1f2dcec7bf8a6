//! `process-user-data`: turns what the cloud-api-adaptor hands a podvm at boot into files.
//!
//! `provision-files` writes the cloud-config `write_files` entries under `/run/peerpod`;
//! `update-agent-config` applies `daemon.json` to the kata-agent config template.

/// Validated writes of cloud-config `write_files` entries.
mod provision;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing::info;

use common::agent_config::{
    AgentConfigUpdate, DEFAULT_AGENT_CONFIG_PATH, DEFAULT_AUTH_JSON_PATH,
    DEFAULT_DAEMON_CONFIG_PATH,
};

/// Provisions podvm files from user data and updates the kata-agent config.
#[derive(Parser)]
#[command(name = "process-user-data", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The two boot steps, run as separate oneshot units.
#[derive(Subcommand)]
enum Command {
    /// Write the `write_files` entries of cloud-config user data under /run/peerpod.
    ProvisionFiles {
        /// Cloud-config user data to read.
        #[arg(long, value_name = "FILE", default_value = provision::DEFAULT_USER_DATA_PATH)]
        user_data: PathBuf,
        /// Directory treated as `/`: `/run/peerpod/x` is written to `DIR/run/peerpod/x`.
        #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
        root: PathBuf,
    },
    /// Apply daemon.json (`aa-kbc-params`, `auth-json`) to the kata-agent config.
    UpdateAgentConfig {
        /// Kata-agent config template.
        #[arg(short = 'a', long, value_name = "FILE", default_value = DEFAULT_AGENT_CONFIG_PATH)]
        agent_config_file: PathBuf,
        /// Daemon config provisioned from user data.
        #[arg(short = 'd', long, value_name = "FILE", default_value = DEFAULT_DAEMON_CONFIG_PATH)]
        daemon_config_path: PathBuf,
        /// Where to write the updated config [default: the template, in place].
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
        /// Where to write the registry auth from `auth-json`, mode 0600.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_AUTH_JSON_PATH)]
        auth_json_path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::logging::init("info");

    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            common::logging::log_error_chain(&err);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::ProvisionFiles { user_data, root } => {
            let written = provision::provision_files(&user_data, &root)?;
            info!(user_data = %user_data.display(), written, "user data provisioned");
        }
        Command::UpdateAgentConfig {
            agent_config_file,
            daemon_config_path,
            to,
            auth_json_path,
        } => {
            let update = AgentConfigUpdate {
                destination: to.unwrap_or_else(|| agent_config_file.clone()),
                template: agent_config_file,
                daemon_config: daemon_config_path,
                auth_json: auth_json_path,
            };
            update
                .run()
                .context("failed to update the kata-agent config")?;
        }
    }
    Ok(())
}
