//! Command-line flags, compatible with upstream's `confidential-data-hub`.

use std::path::PathBuf;

use clap::Parser;

/// The Confidential Data Hub: secrets and resources for the workloads of a podvm.
#[derive(Debug, Clone, Parser)]
#[command(name = "confidential-data-hub", version)]
pub struct Cli {
    /// CDH config file (TOML); built-in defaults when absent.
    #[arg(short = 'c', long = "config", env = "CDH_CONFIG_PATH")]
    pub config: Option<PathBuf>,

    /// Also serve gRPC on this address (`127.0.0.1:PORT` or a unix socket path).
    #[arg(long, value_name = "ADDR")]
    pub grpc: Option<String>,

    /// Unseal sealed secrets without checking their signature (as upstream's env switch).
    #[arg(long, env = "SKIP_SEALED_SECRET_VERIFICATION")]
    pub skip_sealed_secret_verification: bool,

    /// Directory of local sealed-secret verification keys, named by their `kid`.
    #[arg(
        long,
        hide = true,
        default_value = "/run/confidential-containers/cdh/sealed-secret"
    )]
    pub sealed_secret_keys: PathBuf,

    /// The offline_fs KBC key file.
    #[arg(long, hide = true, default_value = "/etc/aa-offline_fs_kbc-keys.json")]
    pub offline_fs_keys: PathBuf,

    /// The offline_fs KBC resource file.
    #[arg(
        long,
        hide = true,
        default_value = "/etc/aa-offline_fs_kbc-resources.json"
    )]
    pub offline_fs_resources: PathBuf,

    /// Further offline_fs KBC resource files, comma-separated.
    #[arg(
        long,
        hide = true,
        env = "OFFLINE_FS_KBC_EXTRA_FILE_PATH",
        value_delimiter = ','
    )]
    pub offline_fs_extra: Vec<PathBuf>,
}
