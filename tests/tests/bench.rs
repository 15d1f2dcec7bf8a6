//! The benchmark runs once with a tiny load, to prove it works end to end: every section is
//! filled, no request fails, and the behaviour it counts (KBS round trips, requests lost across
//! restarts) is what the stack promises. Timings are printed, never judged.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_runs_with_a_tiny_load() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--requests", "48", "--starts", "2", "--wrk-seconds", "0"])
        .args(["--restart-window-ms", "200", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("exec to READY=1"), "no start-up table");

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let names = [
        "attestation-agent",
        "confidential-data-hub",
        "api-server-rest",
    ];

    let binaries = report["binaries"].as_array().unwrap();
    assert_eq!(binaries.len(), 3);
    for (binary, name) in binaries.iter().zip(names) {
        assert_eq!(binary["name"], name);
        assert!(binary["bytes"].as_u64().unwrap() > 0);
    }

    for (row, name) in report["startup"].as_array().unwrap().iter().zip(names) {
        assert_eq!(row["name"], name);
        assert!(
            row["ready_ms"].as_f64().is_some(),
            "{name} never sent READY=1"
        );
        assert!(row["first_call_ms"].as_f64().unwrap() > 0.0);
    }

    for (row, name) in report["memory"].as_array().unwrap().iter().zip(names) {
        assert_eq!(row["name"], name);
        for phase in ["idle", "after_load"] {
            assert!(
                row[phase]["vm_rss_kib"].as_u64().unwrap() > 0,
                "{name} {phase}"
            );
            assert!(
                row[phase]["vm_hwm_kib"].as_u64().unwrap()
                    >= row[phase]["vm_rss_kib"].as_u64().unwrap()
            );
        }
    }

    let load = report["load"].as_array().unwrap();
    assert_eq!(
        load.len(),
        15,
        "the socket floor, ttrpc offline 4, the same with the bench's own frames 4, REST 4, \
         ttrpc via KBS 2"
    );
    for run in load {
        assert_eq!(run["errors"], 0, "{run}");
        assert!(run["requests"].as_u64().unwrap() >= 12, "{run}");
        assert!(run["p99_us"].as_f64().unwrap() >= run["p50_us"].as_f64().unwrap());
    }

    let trips = &report["kbs_round_trips"];
    assert_eq!(trips["resources"], 10);
    assert_eq!(trips["auth"], 1, "one attestation serves every resource");
    assert_eq!(trips["attest"], 1);
    assert_eq!(trips["resource"], 10);

    let restarts = report["restarts"].as_array().unwrap();
    assert_eq!(restarts.len(), 3);
    for (row, name) in restarts.iter().zip(names) {
        assert_eq!(row["name"], name);
        assert!(row["count"]["sent"].as_u64().unwrap() > 0);
        assert_eq!(row["count"]["lost"], 0, "requests lost restarting {name}");
    }
}
