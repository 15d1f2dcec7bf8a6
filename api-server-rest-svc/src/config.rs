//! Command-line flags of `api-server-rest` and the validated settings built from them.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::service::Endpoint;

const DEFAULT_BIND: &str = "127.0.0.1:8006";
const DEFAULT_AA_ADDR: &str =
    "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock";
const DEFAULT_CDH_ADDR: &str = "unix:///run/confidential-containers/cdh.sock";

/// hyper refuses a read buffer below this, so the header limit cannot go lower.
const MIN_HEADER_BYTES: usize = 8192;

/// Flags, compatible with the upstream `api-server-rest` (`--features`, `--bind`,
/// `--aa_addr`, `--cdh_addr`), plus limits.
#[derive(Debug, Parser)]
#[command(
    name = "api-server-rest",
    version,
    about = "REST front of the Attestation Agent and the Confidential Data Hub"
)]
pub struct Args {
    /// Which backends to expose: resource, attestation or all.
    #[arg(short, long = "features", default_value = "resource")]
    pub features: String,

    /// Address to listen on; with socket activation the inherited listener is used instead.
    #[arg(short, long = "bind", default_value = DEFAULT_BIND)]
    pub bind: String,

    /// ttrpc address of the Attestation Agent.
    #[arg(short, long = "aa_addr", default_value = DEFAULT_AA_ADDR)]
    pub aa_addr: String,

    /// ttrpc address of the Confidential Data Hub.
    #[arg(short, long = "cdh_addr", default_value = DEFAULT_CDH_ADDR)]
    pub cdh_addr: String,

    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Largest accepted request head (request line and headers), in bytes; at least 8192.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Requests served at once; more get 503.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent_requests: usize,

    /// Time one request may take end to end, in milliseconds.
    #[arg(long, default_value_t = 50_000)]
    pub request_timeout_ms: u64,

    /// Time a request waits for a backend that is (re)starting, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub backend_wait_ms: u64,

    /// Time in-flight requests get to finish after SIGTERM, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,
}

/// The backends a running server exposes, as chosen by `--features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Features {
    /// `/cdh/...` only.
    Resource,
    /// `/aa/...` only.
    Attestation,
    /// Both.
    All,
}

impl Features {
    /// Parses the `--features` value.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "resource" => Ok(Self::Resource),
            "attestation" => Ok(Self::Attestation),
            "all" => Ok(Self::All),
            other => bail!(
                "unknown --features value {other:?}: supported are resource, attestation, all"
            ),
        }
    }

    /// Whether the `/cdh` routes are served.
    pub fn resource(self) -> bool {
        matches!(self, Self::Resource | Self::All)
    }

    /// Whether the `/aa` routes are served.
    pub fn attestation(self) -> bool {
        matches!(self, Self::Attestation | Self::All)
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Resource => "resource",
            Self::Attestation => "attestation",
            Self::All => "all",
        })
    }
}

/// Bounds that keep one client from exhausting the service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Requests served at once.
    pub max_concurrent_requests: usize,
    /// End-to-end bound of one request.
    pub request_timeout: Duration,
    /// How long a request waits for a backend to come (back) up.
    pub backend_wait: Duration,
    /// How long in-flight requests get after SIGTERM.
    pub shutdown_timeout: Duration,
}

/// Validated settings of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Exposed backends.
    pub features: Features,
    /// Where to listen when no listener is inherited.
    pub bind: SocketAddr,
    /// Attestation Agent ttrpc endpoint.
    pub aa: Endpoint,
    /// Confidential Data Hub ttrpc endpoint.
    pub cdh: Endpoint,
    /// Request bounds.
    pub limits: Limits,
}

impl Settings {
    /// Validates the flags; each error names the flag and its value.
    pub fn from_args(args: &Args) -> Result<Self> {
        let features = Features::parse(&args.features)?;
        let bind = args
            .bind
            .parse()
            .with_context(|| format!("invalid --bind address {:?}", args.bind))?;
        let aa = Endpoint::parse(&args.aa_addr)
            .with_context(|| format!("invalid --aa_addr {:?}", args.aa_addr))?;
        let cdh = Endpoint::parse(&args.cdh_addr)
            .with_context(|| format!("invalid --cdh_addr {:?}", args.cdh_addr))?;

        if args.max_header_bytes < MIN_HEADER_BYTES {
            bail!(
                "--max-header-bytes {} is below the minimum of {MIN_HEADER_BYTES}",
                args.max_header_bytes
            );
        }
        if args.max_concurrent_requests == 0 {
            bail!("--max-concurrent-requests must be at least 1");
        }
        if args.request_timeout_ms == 0 {
            bail!("--request-timeout-ms must be at least 1");
        }
        let limits = Limits {
            max_body_bytes: args.max_body_bytes,
            max_header_bytes: args.max_header_bytes,
            max_concurrent_requests: args.max_concurrent_requests,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            backend_wait: Duration::from_millis(args.backend_wait_ms),
            shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        };

        Ok(Self {
            features,
            bind,
            aa,
            cdh,
            limits,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(argv: &[&str]) -> Result<Settings> {
        let mut full = vec!["api-server-rest"];
        full.extend_from_slice(argv);
        Settings::from_args(&Args::try_parse_from(full)?)
    }

    #[test]
    fn defaults_match_upstream() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.features, Features::Resource);
        assert_eq!(s.bind, "127.0.0.1:8006".parse().unwrap());
        assert_eq!(s.aa.uri(), DEFAULT_AA_ADDR);
        assert_eq!(s.cdh.uri(), DEFAULT_CDH_ADDR);
    }

    #[test]
    fn upstream_flag_spellings_are_accepted() {
        let s = settings(&[
            "--features",
            "all",
            "--bind",
            "127.0.0.1:9000",
            "--aa_addr",
            "unix:///tmp/aa.sock",
            "--cdh_addr",
            "unix:///tmp/cdh.sock",
        ])
        .unwrap();
        assert_eq!(s.features, Features::All);
        assert!(s.features.resource() && s.features.attestation());
        assert_eq!(s.bind.port(), 9000);
        assert_eq!(s.aa.uri(), "unix:///tmp/aa.sock");
        assert_eq!(s.cdh.uri(), "unix:///tmp/cdh.sock");
    }

    #[test]
    fn bad_values_are_named() {
        let err = settings(&["--features", "everything"]).unwrap_err();
        assert!(err.to_string().contains("\"everything\""), "{err}");
        let err = settings(&["--bind", "localhost"]).unwrap_err();
        assert!(err.to_string().contains("--bind"), "{err}");
        let err = settings(&["--cdh_addr", "vsock://3:1"]).unwrap_err();
        assert!(err.to_string().contains("--cdh_addr"), "{err}");
        let err = settings(&["--max-header-bytes", "100"]).unwrap_err();
        assert!(err.to_string().contains("8192"), "{err}");
        let err = settings(&["--max-concurrent-requests", "0"]).unwrap_err();
        assert!(
            err.to_string().contains("--max-concurrent-requests"),
            "{err}"
        );
    }
}
