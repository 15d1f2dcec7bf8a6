//! The bench's findings: one table on stdout and the same as JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::load::{LoadResult, StreamCount};
use stack_tests::stack::Memory;

/// Everything one bench run measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Online CPUs of the machine that ran it.
    pub cores: usize,
    /// Requests per fixed-count load run.
    pub requests_per_run: usize,
    /// Starts per service behind each start-up median.
    pub starts: usize,
    /// Binary sizes, in service order.
    pub binaries: Vec<BinarySize>,
    /// Start-up medians, in service order.
    pub startup: Vec<Startup>,
    /// Memory of each service, idle after start and after the load.
    pub memory: Vec<MemoryRow>,
    /// Latency and throughput runs.
    pub load: Vec<LoadResult>,
    /// KBS requests a fresh cc_kbc CDH makes to fetch distinct resources.
    pub kbs_round_trips: Option<KbsRoundTrips>,
    /// Requests lost while each service restarts under load.
    pub restarts: Vec<RestartRow>,
}

/// One binary as installed.
#[derive(Debug, Serialize)]
pub struct BinarySize {
    /// Binary name.
    pub name: &'static str,
    /// Size in bytes.
    pub bytes: u64,
}

/// How fast one service comes up.
#[derive(Debug, Serialize)]
pub struct Startup {
    /// Binary name.
    pub name: &'static str,
    /// Median from exec to `READY=1`, in milliseconds; `None` when it never notified.
    pub ready_ms: Option<f64>,
    /// Median from exec to the first successful call, in milliseconds.
    pub first_call_ms: f64,
}

/// Memory of one service.
#[derive(Debug, Serialize)]
pub struct MemoryRow {
    /// Binary name.
    pub name: &'static str,
    /// Right after start-up.
    pub idle: Memory,
    /// After every load run.
    pub after_load: Memory,
}

/// KBS requests made for a number of distinct resources.
#[derive(Debug, Serialize)]
pub struct KbsRoundTrips {
    /// Distinct resources fetched.
    pub resources: usize,
    /// `POST /kbs/v0/auth` requests.
    pub auth: u64,
    /// `POST /kbs/v0/attest` requests.
    pub attest: u64,
    /// `GET /kbs/v0/resource/...` requests.
    pub resource: u64,
}

/// Requests lost while one service restarted.
#[derive(Debug, Serialize)]
pub struct RestartRow {
    /// Binary name of the restarted service.
    pub name: &'static str,
    /// The REST route the steady load used.
    pub route: &'static str,
    /// What the steady load sent and lost.
    pub count: StreamCount,
}

/// Milliseconds of a duration, as a float.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.write_table(&mut out)
            .expect("writing to a String cannot fail");
        out
    }

    fn write_table(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "guest-components bench on {} cores", self.cores)?;

        writeln!(out, "\nbinary                      size (bytes)      MiB")?;
        let mut total = 0;
        for binary in &self.binaries {
            total += binary.bytes;
            writeln!(
                out,
                "  {:<24} {:>14} {:>8.2}",
                binary.name,
                binary.bytes,
                mib(binary.bytes)
            )?;
        }
        writeln!(
            out,
            "  {:<24} {:>14} {:>8.2}",
            "together",
            total,
            mib(total)
        )?;

        writeln!(
            out,
            "\nstart-up, median of {} (ms)  exec to READY=1  exec to first call",
            self.starts
        )?;
        for row in &self.startup {
            let ready = row
                .ready_ms
                .map_or_else(|| "never".to_owned(), |ms| format!("{ms:.2}"));
            writeln!(
                out,
                "  {:<24} {:>17} {:>19.2}",
                row.name, ready, row.first_call_ms
            )?;
        }

        writeln!(
            out,
            "\nmemory (KiB)                idle VmRSS  idle VmHWM  load VmRSS  load VmHWM"
        )?;
        for row in &self.memory {
            writeln!(
                out,
                "  {:<24} {:>11} {:>11} {:>11} {:>11}",
                row.name,
                row.idle.vm_rss_kib,
                row.idle.vm_hwm_kib,
                row.after_load.vm_rss_kib,
                row.after_load.vm_hwm_kib
            )?;
        }

        writeln!(
            out,
            "\nload ({} requests per fixed run)                conns  requests errors   p50 us   p99 us     per s",
            self.requests_per_run
        )?;
        for run in &self.load {
            writeln!(
                out,
                "  {:<44} {:>6} {:>9} {:>6} {:>8.1} {:>8.1} {:>9.0}",
                run.name,
                run.connections,
                run.requests,
                run.errors,
                run.p50_us,
                run.p99_us,
                run.per_second
            )?;
        }

        if let Some(trips) = &self.kbs_round_trips {
            writeln!(
                out,
                "\nKBS requests for {} distinct resources: auth {}, attest {}, resource {}, total {}",
                trips.resources,
                trips.auth,
                trips.attest,
                trips.resource,
                trips.auth + trips.attest + trips.resource
            )?;
        }

        writeln!(
            out,
            "\nrestart under steady load  route                              sent   lost"
        )?;
        for row in &self.restarts {
            writeln!(
                out,
                "  {:<24} {:<32} {:>6} {:>6}",
                row.name, row.route, row.count.sent, row.count.lost
            )?;
        }
        Ok(())
    }

    /// Writes the JSON form to `path`, atomically.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("failed to serialize the report")?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("failed to create {}", parent.display()))?;
        }
        common::fsutil::write_atomic(path, &json, Some(0o644))
            .with_context(|| format!("failed to write {}", path.display()))
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
