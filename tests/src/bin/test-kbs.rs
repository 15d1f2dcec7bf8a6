//! `test-kbs`: the test KBS as a process, for end-to-end runs of the services.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use stack_tests::kbs::{TestKbs, TestKbsConfig};
use tokio::signal::unix::{signal, SignalKind};

/// A loopback-only KBS speaking RCAR 0.4.0 with sample evidence, for tests.
#[derive(Parser)]
#[command(name = "test-kbs")]
struct Args {
    /// Loopback address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: SocketAddr,
    /// Directory holding resources as <repo>/<type>/<tag>.
    #[arg(long)]
    resources: PathBuf,
    /// A resource (repo/type/tag) the policy denies; repeatable.
    #[arg(long = "deny")]
    deny: Vec<String>,
    /// Session lifetime in seconds.
    #[arg(long = "session-ttl")]
    session_ttl: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("test-kbs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let mut config = TestKbsConfig::new(args.resources);
    config.listen = args.listen;
    config.deny = args.deny;
    if let Some(seconds) = args.session_ttl {
        config.session_ttl = Duration::from_secs(seconds);
    }

    let mut terminate = signal(SignalKind::terminate()).context("failed to watch SIGTERM")?;
    let kbs = TestKbs::start(config).await?;
    println!("listening on {}", kbs.url());

    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    kbs.shutdown().await
}
