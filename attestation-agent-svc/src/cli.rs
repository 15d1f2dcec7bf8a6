//! Command-line flags, compatible with upstream's `attestation-agent`.

use std::path::PathBuf;

use clap::Parser;

use crate::attester::TeeChoice;
use crate::config::ConfigInputs;
use crate::eventlog::DEFAULT_EVENTLOG_PATH;

/// Where upstream's agent listens.
const DEFAULT_ATTESTATION_SOCK: &str =
    "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock";

/// The Attestation Agent of a Confidential Containers guest.
#[derive(Debug, Parser)]
#[command(name = "attestation-agent", version, about)]
pub struct Cli {
    /// ttrpc socket to serve on (unix:///path)
    #[arg(short = 'a', long = "attestation_sock", default_value = DEFAULT_ATTESTATION_SOCK)]
    pub attestation_sock: String,

    /// Attestation Agent config file (TOML)
    #[arg(short = 'c', long = "config-file")]
    pub config_file: Option<PathBuf>,

    /// Also serve gRPC on this address (ip:port or unix:///path)
    #[arg(long)]
    pub grpc: Option<String>,

    /// Use this attester instead of detecting one
    #[arg(long, value_enum)]
    pub tee: Option<TeeChoice>,

    /// configfs mount point holding tsm/report (for tests)
    #[arg(
        long,
        hide = true,
        env = "AA_TSM_ROOT",
        default_value = "/sys/kernel/config"
    )]
    pub tsm_root: PathBuf,

    /// Eventlog file (for tests)
    #[arg(long, hide = true, env = "AA_EVENTLOG_PATH", default_value = DEFAULT_EVENTLOG_PATH)]
    pub eventlog_path: PathBuf,
}

impl Cli {
    /// What the flags contribute to the configuration.
    pub fn config_inputs(&self) -> ConfigInputs {
        ConfigInputs {
            config_file: self.config_file.clone(),
            eventlog_path: self.eventlog_path.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn upstream_flags_parse() {
        let cli = Cli::try_parse_from([
            "attestation-agent",
            "--attestation_sock",
            "unix:///tmp/aa.sock",
            "-c",
            "/etc/aa.toml",
        ])
        .unwrap();
        assert_eq!(cli.attestation_sock, "unix:///tmp/aa.sock");
        assert_eq!(cli.config_file, Some(PathBuf::from("/etc/aa.toml")));
        assert_eq!(cli.tee, None);
    }

    #[test]
    fn an_unknown_tee_lists_the_valid_ones() {
        let err = Cli::try_parse_from(["attestation-agent", "--tee", "sgx"]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("sgx"), "{message}");
        assert!(
            message.contains("sample") && message.contains("tsm"),
            "{message}"
        );
    }
}
