//! Closed-loop load: a fixed number of ttrpc calls or REST requests over N connections, and the
//! latency percentiles and throughput they give; `wrk` runs and their parsed output.

use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::wire::api::{GetResourceRequest, GetResourceServiceClient};
use common::wire::attestation_agent::{AttestationAgentServiceClient, GetEvidenceRequest};
use prost::Message as _;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::frames::{EncodedCall, FrameConnection};
use stack_tests::http::HttpConnection;
use stack_tests::stack::{connect, context, Address, RESOURCE_URI};

/// What one load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// Row name in the table.
    pub name: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests completed, successful or not.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Median latency of successful requests, in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency of successful requests, in microseconds.
    pub p99_us: f64,
    /// Requests completed per second of wall time.
    pub per_second: f64,
}

/// Latencies of the successful requests of one connection, and its failure count.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    errors: u64,
}

/// The ttrpc call a load run repeats.
#[derive(Debug, Clone, Copy)]
pub enum TtrpcCall {
    /// `AttestationAgentService.GetEvidence`.
    Evidence,
    /// `GetResourceService.GetResource` of [`RESOURCE_URI`].
    Resource,
}

impl TtrpcCall {
    /// The call, encoded once for the bench's own frame client.
    fn encoded(self) -> EncodedCall {
        match self {
            TtrpcCall::Evidence => EncodedCall::new(
                "attestation_agent.AttestationAgentService",
                "GetEvidence",
                GetEvidenceRequest {
                    runtime_data: b"bench".to_vec(),
                }
                .encode_to_vec(),
            ),
            TtrpcCall::Resource => EncodedCall::new(
                "api.GetResourceService",
                "GetResource",
                GetResourceRequest {
                    resource_path: RESOURCE_URI.to_owned(),
                }
                .encode_to_vec(),
            ),
        }
    }
}

/// Which client a ttrpc load run speaks through.
#[derive(Debug, Clone, Copy)]
pub enum TtrpcClient {
    /// The ttrpc crate's async client, as the services' Rust callers use it.
    Crate,
    /// The bench's own [`FrameConnection`]: the service's cost per call, little of the client's.
    Frames,
}

/// Sends `requests` calls over `connections` ttrpc connections, each connection in a closed loop.
pub async fn ttrpc_load(
    name: &str,
    address: &Address,
    call: TtrpcCall,
    client: TtrpcClient,
    connections: usize,
    requests: usize,
) -> Result<LoadResult> {
    match client {
        TtrpcClient::Crate => {
            let mut clients = Vec::with_capacity(connections);
            for _ in 0..connections {
                clients.push(connect(address).await?);
            }
            closed_loops(name, requests, clients, move |client, count| {
                crate_client_loop(client, call, count)
            })
            .await
        }
        TtrpcClient::Frames => {
            let Address::Unix(path) = address else {
                bail!("{name}: ttrpc needs a unix socket, not {}", address.uri());
            };
            let mut streams = Vec::with_capacity(connections);
            for _ in 0..connections {
                streams.push(FrameConnection::connect(path).await?);
            }
            closed_loops(name, requests, streams, |stream, count| {
                frames_loop(stream, path.clone(), call, count)
            })
            .await
        }
    }
}

async fn crate_client_loop(
    client: ttrpc::r#async::Client,
    call: TtrpcCall,
    count: usize,
) -> Result<Samples> {
    match call {
        TtrpcCall::Evidence => {
            let client = AttestationAgentServiceClient::new(client);
            let request = GetEvidenceRequest {
                runtime_data: b"bench".to_vec(),
            };
            timed(count, || client.get_evidence(context(), &request)).await
        }
        TtrpcCall::Resource => {
            let client = GetResourceServiceClient::new(client);
            let request = GetResourceRequest {
                resource_path: RESOURCE_URI.to_owned(),
            };
            timed(count, || client.get_resource(context(), &request)).await
        }
    }
}

async fn frames_loop(
    mut stream: FrameConnection,
    path: PathBuf,
    call: TtrpcCall,
    count: usize,
) -> Result<Samples> {
    let call = call.encoded();
    let mut samples = Samples::default();
    for _ in 0..count {
        let sent = Instant::now();
        match stream.call(&call).await {
            Ok(_) => samples.latencies.push(sent.elapsed()),
            Err(_) => {
                // The frames may be out of step now: start over on a new connection.
                samples.errors += 1;
                stream = FrameConnection::connect(&path).await?;
            }
        }
    }
    Ok(samples)
}

/// Runs `run` on every connection at once, each with its share of `requests`, and sums up.
async fn closed_loops<C, F, Fut>(
    name: &str,
    requests: usize,
    connections: Vec<C>,
    run: F,
) -> Result<LoadResult>
where
    F: Fn(C, usize) -> Fut,
    Fut: Future<Output = Result<Samples>> + Send + 'static,
{
    let count = connections.len();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (index, connection) in connections.into_iter().enumerate() {
        tasks.spawn(run(connection, share(requests, count, index)));
    }
    summarize(name, count, started, tasks).await
}

/// Sends `requests` GETs of `path` over `connections` keep-alive connections; only 200 counts
/// as success.
pub async fn rest_load(
    name: &str,
    port: u16,
    path: &'static str,
    connections: usize,
    requests: usize,
) -> Result<LoadResult> {
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        streams.push(HttpConnection::connect(port).await?);
    }
    closed_loops(
        name,
        requests,
        streams,
        move |mut stream, count| async move {
            let mut samples = Samples::default();
            for _ in 0..count {
                if !stream.is_open() {
                    stream = HttpConnection::connect(port).await?;
                }
                let sent = Instant::now();
                match stream.get(path).await {
                    Ok(200) => samples.latencies.push(sent.elapsed()),
                    Ok(_) => samples.errors += 1,
                    Err(_) => {
                        samples.errors += 1;
                        stream = HttpConnection::connect(port).await?;
                    }
                }
            }
            Ok(samples)
        },
    )
    .await
}

/// The part of `total` that connection `index` of `connections` sends.
fn share(total: usize, connections: usize, index: usize) -> usize {
    total / connections + usize::from(index < total % connections)
}

/// Runs `call` `count` times in a row, timing each.
async fn timed<F, Fut, T>(count: usize, mut call: F) -> Result<Samples>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ttrpc::Result<T>>,
{
    let mut samples = Samples::default();
    for _ in 0..count {
        let sent = Instant::now();
        match call().await {
            Ok(_) => samples.latencies.push(sent.elapsed()),
            Err(_) => samples.errors += 1,
        }
    }
    Ok(samples)
}

/// Joins the connections' tasks and turns their samples into one result.
async fn summarize(
    name: &str,
    connections: usize,
    started: Instant,
    mut tasks: JoinSet<Result<Samples>>,
) -> Result<LoadResult> {
    let mut all = Samples::default();
    while let Some(joined) = tasks.join_next().await {
        let samples = joined.context("a load connection panicked")??;
        all.latencies.extend(samples.latencies);
        all.errors += samples.errors;
    }
    all.into_result(name, connections, started.elapsed())
}

impl Samples {
    /// The percentiles and throughput of a run that took `elapsed`.
    fn into_result(
        mut self,
        name: &str,
        connections: usize,
        elapsed: Duration,
    ) -> Result<LoadResult> {
        if self.latencies.is_empty() {
            bail!("{name}: every one of {} requests failed", self.errors);
        }
        self.latencies.sort_unstable();
        let requests = self.latencies.len() as u64 + self.errors;
        Ok(LoadResult {
            name: name.to_owned(),
            connections,
            requests,
            errors: self.errors,
            p50_us: micros(percentile(&self.latencies, 0.50)),
            p99_us: micros(percentile(&self.latencies, 0.99)),
            per_second: requests as f64 / elapsed.as_secs_f64(),
        })
    }
}

/// The machine's floor for one round trip: 64 bytes each way over a unix socket pair between
/// two blocking threads, with no runtime and no protocol. On an idle VM most of it is the wake-up
/// of a sleeping vCPU, which every ttrpc and REST figure pays too.
pub fn socket_floor(requests: usize) -> Result<LoadResult> {
    let (mut near, mut far) = UnixStream::pair().context("failed to make a socket pair")?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut message = [0u8; 64];
        for _ in 0..requests {
            far.read_exact(&mut message)?;
            far.write_all(&message)?;
        }
        Ok(())
    });
    let mut samples = Samples::default();
    let mut message = [0u8; 64];
    let started = Instant::now();
    for _ in 0..requests {
        let sent = Instant::now();
        near.write_all(&message)?;
        near.read_exact(&mut message)?;
        samples.latencies.push(sent.elapsed());
    }
    let elapsed = started.elapsed();
    echo.join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))?
        .context("the echo thread failed")?;
    samples.into_result("floor: unix socket round trip, 2 threads", 1, elapsed)
}

/// Nearest-rank percentile of sorted, non-empty samples.
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// The median of non-empty samples.
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    percentile(samples, 0.5)
}

/// Runs `wrk` for `seconds` against `url`; `None` when wrk is not installed.
pub fn wrk(name: &str, url: &str, connections: usize, seconds: u64) -> Result<Option<LoadResult>> {
    let threads = connections.min(2).to_string();
    let output = std::process::Command::new("wrk")
        .args(["-t", &threads, "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--latency", url])
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("failed to run wrk"),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk against {url} failed with {}: {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(name, connections, &text)
        .with_context(|| format!("unexpected wrk output for {url}:\n{text}"))
        .map(Some)
}

/// Reads requests, errors, p50, p99 and requests/s from wrk's `--latency` report.
fn parse_wrk(name: &str, connections: usize, text: &str) -> Result<LoadResult> {
    let mut p50 = None;
    let mut p99 = None;
    let mut per_second = None;
    let mut requests = None;
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => p50 = Some(wrk_duration_us(value)?),
            ["99%", value] => p99 = Some(wrk_duration_us(value)?),
            ["Requests/sec:", value] => per_second = Some(value.parse::<f64>()?),
            [count, "requests", "in", ..] => requests = Some(count.parse::<u64>()?),
            ["Non-2xx", "or", "3xx", "responses:", count] => errors += count.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|word| word.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    Ok(LoadResult {
        name: name.to_owned(),
        connections,
        requests: requests.context("no request count")?,
        errors,
        p50_us: p50.context("no 50% latency")?,
        p99_us: p99.context("no 99% latency")?,
        per_second: per_second.context("no Requests/sec")?,
    })
}

/// `123.45us`, `1.20ms`, `2.00s` or `1.00m` in microseconds.
fn wrk_duration_us(value: &str) -> Result<f64> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("duration {value:?} has no unit"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("malformed duration {value:?}"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => bail!("unknown duration unit in {value:?}"),
    };
    Ok(number * scale)
}

/// Requests of a steady stream and how many of them failed.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StreamCount {
    /// Requests sent.
    pub sent: u64,
    /// Requests that got no 200.
    pub lost: u64,
}

/// A steady stream of REST requests, each on a new connection as a short-lived client would
/// send it, until `stop` is set.
pub async fn steady_stream(
    port: u16,
    path: &'static str,
    gap: Duration,
    stop: Arc<AtomicBool>,
) -> StreamCount {
    let mut count = StreamCount::default();
    while !stop.load(Ordering::Relaxed) {
        count.sent += 1;
        let answered = match HttpConnection::connect(port).await {
            Ok(mut connection) => matches!(connection.get(path).await, Ok(200)),
            Err(_) => false,
        };
        if !answered {
            count.lost += 1;
        }
        tokio::time::sleep(gap).await;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_report_is_parsed() {
        let report = "Running 2s test @ http://127.0.0.1:1/x\n  2 threads and 16 connections\n\
            \x20 Latency Distribution\n     50%  410.00us\n     75%  600.00us\n     90%    1.10ms\n\
            \x20    99%    2.50ms\n  12000 requests in 2.00s, 1.00MB read\n\
            \x20 Socket errors: connect 0, read 1, write 0, timeout 2\n\
            \x20 Non-2xx or 3xx responses: 4\nRequests/sec:   6000.50\n";
        let result = parse_wrk("r", 16, report).expect("parses");
        assert_eq!(result.requests, 12000);
        assert_eq!(result.errors, 7);
        assert_eq!(result.p50_us, 410.0);
        assert_eq!(result.p99_us, 2500.0);
        assert_eq!(result.per_second, 6000.5);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&samples, 0.5), Duration::from_micros(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&samples[..1], 0.99), Duration::from_micros(1));
    }

    #[test]
    fn requests_are_shared_without_loss() {
        let shares: Vec<usize> = (0..16).map(|i| share(100, 16, i)).collect();
        assert_eq!(shares.iter().sum::<usize>(), 100);
        assert_eq!(shares[0], 7);
        assert_eq!(shares[15], 6);
    }
}
