//! `bench`: the three services as plain processes, measured the way a podvm feels them: binary
//! sizes, start-up, memory, ttrpc and REST latency and throughput, KBS round trips through the
//! test KBS, and requests lost across restarts. It prints one table and writes the same as JSON.
//! It never judges a figure; the README states the targets.

mod frames;
mod kbs;
mod load;
mod report;

use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use common::wire::api::{GetResourceRequest, GetResourceServiceClient};
use tokio::net::UnixDatagram;

use crate::kbs::KbsThread;
use crate::load::{rest_load, steady_stream, ttrpc_load, wrk, TtrpcCall, TtrpcClient};
use crate::report::{millis, BinarySize, KbsRoundTrips, MemoryRow, Report, RestartRow, Startup};
use stack_tests::stack::{
    connect, context, free_port, wait_ready, Kind, Launch, Running, Workspace, EVIDENCE_ROUTE,
    PATIENCE, RESOURCE_ROUTE,
};

/// Distinct resources a fresh cc_kbc CDH fetches to count its KBS round trips.
const DISTINCT_RESOURCES: usize = 10;

/// Concurrent connections of the parallel load runs.
const PARALLEL: usize = 16;

/// Concurrent short-lived clients of the steady load around a restart.
const STEADY_CLIENTS: usize = 4;

/// Measures the Attestation Agent, the Confidential Data Hub and the API Server REST.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Requests of every fixed-count load run
    #[arg(long, default_value_t = 20_000)]
    requests: usize,

    /// Starts of each service behind the start-up medians
    #[arg(long, default_value_t = 10)]
    starts: usize,

    /// Seconds of each wrk run through the REST server; 0 skips wrk
    #[arg(long, default_value_t = 5)]
    wrk_seconds: u64,

    /// Milliseconds of steady load before and after each restart
    #[arg(long, default_value_t = 1000)]
    restart_window_ms: u64,

    /// Where the JSON report goes
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench.json"))]
    json: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: failed to start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    let requests = args.requests.max(PARALLEL);
    let mut workspace = Workspace::new(stack_tests::stack::Binaries::from_env()?)?;
    let mut report = Report {
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        requests_per_run: requests,
        starts: args.starts.max(1),
        ..Report::default()
    };

    for kind in Kind::ALL {
        let path = workspace.binaries().path(kind);
        let bytes = std::fs::metadata(path)
            .with_context(|| format!("failed to read {}", path.display()))?
            .len();
        report.binaries.push(BinarySize {
            name: kind.name(),
            bytes,
        });
    }

    let stack = startup(&mut workspace, &mut report).await?;
    let idle = stack.memory()?;
    offline_load(&stack, requests, args.wrk_seconds, &mut report).await?;
    kbs_load(&mut workspace, &stack, requests, &mut report).await?;
    let loaded = stack.memory()?;
    for ((kind, idle), after_load) in Kind::ALL.into_iter().zip(idle).zip(loaded) {
        report.memory.push(MemoryRow {
            name: kind.name(),
            idle,
            after_load,
        });
    }
    stack.stop()?;

    restarts(
        &mut workspace,
        Duration::from_millis(args.restart_window_ms),
        &mut report,
    )
    .await?;

    print!("{}", report.table());
    report.write_json(&args.json)?;
    println!("\nJSON report: {}", args.json.display());
    Ok(())
}

/// The three services of the embedded default, running.
struct Stack {
    aa: Running,
    cdh: Running,
    asr: Running,
    port: u16,
}

impl Stack {
    fn memory(&self) -> Result<[stack_tests::stack::Memory; 3]> {
        Ok([self.aa.memory()?, self.cdh.memory()?, self.asr.memory()?])
    }

    fn stop(self) -> Result<()> {
        self.asr.kill()?;
        self.cdh.kill()?;
        self.aa.kill()
    }
}

/// Starts the stack `report.starts` times, timing each service from exec to `READY=1` and to
/// its first successful call; the last stack stays up for the load.
async fn startup(workspace: &mut Workspace, report: &mut Report) -> Result<Stack> {
    let mut ready: [Vec<Duration>; 3] = Default::default();
    let mut first_call: [Vec<Duration>; 3] = Default::default();
    let mut never_notified = [false; 3];
    let mut stack = None;
    for round in 0..report.starts {
        let notify_path = workspace.path(&format!("notify-{round}.sock"));
        let notify = UnixDatagram::bind(&notify_path)
            .with_context(|| format!("failed to bind {}", notify_path.display()))?;

        let aa_launch = workspace.aa();
        let aa = timed_start(workspace, &aa_launch, &notify, &notify_path).await?;
        let cdh_launch = workspace.cdh_offline(aa.running.address())?;
        let cdh = timed_start(workspace, &cdh_launch, &notify, &notify_path).await?;
        let port = free_port()?;
        let asr_launch = workspace.asr_on(port, aa.running.address(), cdh.running.address());
        let asr = timed_start(workspace, &asr_launch, &notify, &notify_path).await?;

        for (index, start) in [&aa, &cdh, &asr].into_iter().enumerate() {
            match start.ready {
                Some(duration) => ready[index].push(duration),
                None => never_notified[index] = true,
            }
            first_call[index].push(start.first_call);
        }
        if let Some(previous) = stack.replace(Stack {
            aa: aa.running,
            cdh: cdh.running,
            asr: asr.running,
            port,
        }) {
            previous.stop()?;
        }
    }
    for (index, kind) in Kind::ALL.into_iter().enumerate() {
        report.startup.push(Startup {
            name: kind.name(),
            ready_ms: (!never_notified[index]).then(|| millis(load::median(&mut ready[index]))),
            first_call_ms: millis(load::median(&mut first_call[index])),
        });
    }
    stack.context("no start-up round ran")
}

/// One timed start.
struct TimedStart {
    running: Running,
    ready: Option<Duration>,
    first_call: Duration,
}

/// Starts `launch` with `NOTIFY_SOCKET` and waits, concurrently, for `READY=1` and for one
/// successful call.
async fn timed_start(
    workspace: &mut Workspace,
    launch: &Launch,
    notify: &UnixDatagram,
    notify_path: &std::path::Path,
) -> Result<TimedStart> {
    let exec = Instant::now();
    let mut running = workspace.spawn(launch, Some(notify_path), None)?;
    let (ready, serving) = tokio::join!(wait_ready(notify, PATIENCE), running.wait_serving());
    serving?;
    let first_call = exec.elapsed();
    Ok(TimedStart {
        running,
        ready: ready?.map(|at| at - exec),
        first_call,
    })
}

/// ttrpc and REST runs against the offline stack, one connection and [`PARALLEL`].
async fn offline_load(
    stack: &Stack,
    requests: usize,
    wrk_seconds: u64,
    report: &mut Report,
) -> Result<()> {
    report.load.push(load::socket_floor(requests)?);
    for connections in [1, PARALLEL] {
        let runs = [
            (
                "ttrpc AA GetEvidence",
                stack.aa.address(),
                TtrpcCall::Evidence,
            ),
            (
                "ttrpc CDH GetResource offline",
                stack.cdh.address(),
                TtrpcCall::Resource,
            ),
        ];
        for (name, address, call) in runs {
            report.load.push(
                ttrpc_load(
                    name,
                    address,
                    call,
                    TtrpcClient::Crate,
                    connections,
                    requests,
                )
                .await?,
            );
            report.load.push(
                ttrpc_load(
                    &format!("{name}, own frames"),
                    address,
                    call,
                    TtrpcClient::Frames,
                    connections,
                    requests,
                )
                .await?,
            );
        }
    }
    for connections in [1, PARALLEL] {
        for (name, route) in [
            ("REST /aa/evidence", EVIDENCE_ROUTE),
            ("REST /cdh/resource offline", RESOURCE_ROUTE),
        ] {
            report
                .load
                .push(rest_load(name, stack.port, route, connections, requests).await?);
        }
    }
    if wrk_seconds > 0 {
        for (name, route) in [
            ("wrk REST /aa/evidence", EVIDENCE_ROUTE),
            ("wrk REST /cdh/resource offline", RESOURCE_ROUTE),
        ] {
            let url = format!("http://127.0.0.1:{}{route}", stack.port);
            // wrk blocks this thread, which only drives the bench's own clients.
            match wrk(name, &url, PARALLEL, wrk_seconds)? {
                Some(result) => report.load.push(result),
                None => println!("wrk is not installed: skipping {name}"),
            }
        }
    }
    Ok(())
}

/// A cc_kbc CDH against the test KBS: the KBS requests of a fresh CDH for
/// [`DISTINCT_RESOURCES`] resources, then GetResource with a warm KBS session.
async fn kbs_load(
    workspace: &mut Workspace,
    stack: &Stack,
    requests: usize,
    report: &mut Report,
) -> Result<()> {
    let resources = workspace.path("kbs-resources");
    for index in 1..=DISTINCT_RESOURCES {
        stack_tests::kbs::write_resource(
            &resources,
            &format!("default/key/{index}"),
            b"bench-resource",
        )?;
    }
    let kbs = KbsThread::start(&resources)?;
    let socket = workspace.path("cdh-kbs.sock");
    let launch = workspace.cdh_on(socket, stack.aa.address(), Some(kbs.url()))?;
    let mut cdh = workspace.spawn(&launch, None, None)?;
    // Only accepting, not serving: a probing GetResource would already talk to the KBS.
    cdh.wait_accepting().await?;

    let client = GetResourceServiceClient::new(connect(cdh.address()).await?);
    for index in 1..=DISTINCT_RESOURCES {
        let request = GetResourceRequest {
            resource_path: format!("kbs:///default/key/{index}"),
        };
        client
            .get_resource(context(), &request)
            .await
            .with_context(|| format!("the cc_kbc CDH did not serve {}", request.resource_path))?;
    }
    let counts = kbs.counts().await?;
    report.kbs_round_trips = Some(KbsRoundTrips {
        resources: DISTINCT_RESOURCES,
        auth: counts.auth,
        attest: counts.attest,
        resource: counts.resource,
    });

    // The KBS is slower than a file; a quarter of the requests keeps the run short.
    let kbs_requests = (requests / 4).max(PARALLEL);
    for connections in [1, PARALLEL] {
        report.load.push(
            ttrpc_load(
                "ttrpc CDH GetResource via KBS (warm)",
                cdh.address(),
                TtrpcCall::Resource,
                TtrpcClient::Crate,
                connections,
                kbs_requests,
            )
            .await?,
        );
    }
    cdh.kill()?;
    kbs.shutdown()
}

/// The stack on listeners the bench owns, as systemd's socket units would: each service in
/// turn is stopped with SIGTERM and started again on the same listener while short-lived
/// clients keep sending through the REST server.
async fn restarts(workspace: &mut Workspace, window: Duration, report: &mut Report) -> Result<()> {
    let aa_socket = workspace.path("activated-aa.sock");
    let cdh_socket = workspace.path("activated-cdh.sock");
    let aa_listener = bind_unix(&aa_socket)?;
    let cdh_listener = bind_unix(&cdh_socket)?;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")
        .context("failed to bind a loopback listener for the REST server")?;
    let port = tcp.local_addr()?.port();

    let aa_launch = workspace.aa_on(aa_socket, None);
    let cdh_launch = workspace.cdh_on(cdh_socket, &aa_launch.address, None)?;
    let asr_launch = workspace.asr_on(port, &aa_launch.address, &cdh_launch.address);
    let plan = [
        (aa_launch, aa_listener.as_raw_fd(), EVIDENCE_ROUTE),
        (cdh_launch, cdh_listener.as_raw_fd(), RESOURCE_ROUTE),
        (asr_launch, tcp.as_raw_fd(), EVIDENCE_ROUTE),
    ];

    let mut running = Vec::with_capacity(plan.len());
    for (launch, fd, _) in &plan {
        let mut service = workspace.spawn(launch, None, Some(*fd))?;
        service.wait_serving().await?;
        running.push(service);
    }

    for (index, (launch, fd, route)) in plan.iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..STEADY_CLIENTS)
            .map(|_| {
                tokio::spawn(steady_stream(
                    port,
                    route,
                    Duration::from_millis(1),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        tokio::time::sleep(window).await;
        // As `systemctl restart`: the old process drains and exits, then the new one starts
        // on the same listener, which kept queueing connections in between.
        running[index].terminate()?;
        running[index] = workspace.spawn(launch, None, Some(*fd))?;
        running[index].wait_serving().await?;
        tokio::time::sleep(window).await;
        stop.store(true, Ordering::Relaxed);
        let mut count = load::StreamCount::default();
        for client in clients {
            let part = client.await.context("a steady client panicked")?;
            count.sent += part.sent;
            count.lost += part.lost;
        }
        report.restarts.push(RestartRow {
            name: launch.kind.name(),
            route,
            count,
        });
    }
    for service in running.into_iter().rev() {
        service.kill()?;
    }
    Ok(())
}

fn bind_unix(path: &std::path::Path) -> Result<std::os::unix::net::UnixListener> {
    std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("failed to bind {}", path.display()))
}
