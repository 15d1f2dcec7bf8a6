//! End-to-end tests: the real `api-server-rest` binary on a loopback port, in front of
//! in-process ttrpc doubles of the AA and the CDH, spoken to with raw HTTP/1.1.

#![allow(clippy::unwrap_used)]

#[path = "support/backends.rs"]
mod backends;

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use backends::{FakeAa, FakeCdh};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as read off the wire.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<binary>")
    }

    fn content_type(&self) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim())
        })
    }
}

/// A running `api-server-rest`, killed when dropped.
struct Asr {
    child: Child,
    port: u16,
}

impl Drop for Asr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unix_uri(path: &Path) -> String {
    format!("unix://{}", path.display())
}

struct Sockets {
    dir: TempDir,
}

impl Sockets {
    fn new() -> Self {
        Self {
            dir: TempDir::new().unwrap(),
        }
    }
    fn aa(&self) -> PathBuf {
        self.dir.path().join("aa.sock")
    }
    fn cdh(&self) -> PathBuf {
        self.dir.path().join("cdh.sock")
    }
}

async fn start_asr(sockets: &Sockets, extra: &[&str], env: &[(&str, &Path)]) -> Asr {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_api-server-rest"));
    command
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--aa_addr", &unix_uri(&sockets.aa())])
        .args(["--cdh_addr", &unix_uri(&sockets.cdh())])
        .args(extra)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .stdin(Stdio::null());
    if !extra.contains(&"--backend-wait-ms") {
        command.args(["--backend-wait-ms", "500"]);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let asr = Asr {
        child: command.spawn().unwrap(),
        port,
    };
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return asr;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("api-server-rest did not start listening on port {port}");
}

impl Asr {
    /// Sends `raw` as is and reads the reply until the server closes.
    async fn raw(&self, raw: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let mut bytes = Vec::new();
        // The server may close before reading everything we sent (e.g. after a 431).
        let _ = stream.read_to_end(&mut bytes).await;
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&bytes)));
        let head = String::from_utf8(bytes[..split].to_vec()).unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Reply {
            status,
            head,
            body: bytes[split + 4..].to_vec(),
        }
    }

    async fn request(&self, method: &str, target: &str, body: &[u8]) -> Reply {
        let mut raw = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        self.raw(&raw).await
    }

    async fn get(&self, target: &str) -> Reply {
        self.request("GET", target, b"").await
    }

    async fn assert_still_serving(&self) {
        let reply = self.get("/info").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

#[tokio::test]
async fn every_route_and_status_code() {
    let sockets = Sockets::new();
    let _aa = backends::serve_aa(&sockets.aa(), FakeAa::default()).await;
    let _cdh = backends::serve_cdh(&sockets.cdh(), FakeCdh::default()).await;
    let asr = start_asr(&sockets, &["--features", "all"], &[]).await;

    let info = asr.get("/info").await;
    assert_eq!(info.status, 200);
    assert_eq!(info.content_type(), Some("application/json"));
    let info: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
    assert_eq!(info["tee"], "sample");
    assert_eq!(info["additional_tees"], serde_json::json!(["tpm"]));
    assert_eq!(info["feature"], "all");

    let openapi = asr.get("/openapi.json").await;
    let checked_in = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    assert_eq!(openapi.body, checked_in);

    let resource = asr.get("/cdh/resource/default/key/one").await;
    assert_eq!(resource.status, 200);
    assert_eq!(resource.content_type(), Some("application/octet-stream"));
    assert_eq!(
        resource.body,
        backends::resource_bytes("kbs:///default/key/one")
    );
    for (tag, status) in [
        ("missing", 404),
        ("denied", 403),
        ("invalid", 400),
        ("busy", 503),
        ("broken", 500),
    ] {
        let reply = asr.get(&format!("/cdh/resource/default/key/{tag}")).await;
        assert_eq!(reply.status, status, "{tag}: {}", reply.text());
    }

    let token = asr.get("/aa/token?token_type=kbs").await;
    assert_eq!(
        (token.status, token.body.as_slice()),
        (200, backends::TOKEN)
    );
    assert_eq!(asr.get("/aa/token").await.status, 400);

    let evidence = asr.get("/aa/evidence?runtime_data=nonce-123").await;
    assert_eq!(evidence.status, 200);
    assert_eq!(evidence.content_type(), Some("application/octet-stream"));
    assert_eq!(evidence.body, backends::evidence_for(b"nonce-123"));
    let evidence = asr
        .get("/aa/evidence?runtime_data=AAEC&encoding=base64")
        .await;
    assert_eq!(evidence.body, backends::evidence_for(&[0, 1, 2]));
    let additional = asr.get("/aa/additional-evidence?runtime_data=x").await;
    assert_eq!(additional.body, backends::additional_evidence_for(b"x"));

    let event = br#"{"domain":"github.com/pod","operation":"start","content":"c1"}"#;
    let aael = asr.request("POST", "/aa/aael", event).await;
    assert_eq!(aael.status, 200);
    assert_eq!(aael.body, br#"{"success":"true"}"#);

    assert_eq!(asr.request("DELETE", "/info", b"").await.status, 405);
    assert_eq!(asr.get("/aa/aael").await.status, 405);
    let unknown = asr.get("/unknown").await;
    assert_eq!((unknown.status, unknown.text()), (404, "URL NOT FOUND"));
}

#[tokio::test]
async fn disabled_feature_and_absent_backends() {
    let sockets = Sockets::new();
    let asr = start_asr(&sockets, &[], &[]).await;

    let reply = asr.get("/aa/evidence?runtime_data=x").await;
    assert_eq!(
        (reply.status, reply.text()),
        (404, "Attestation Feature Not Enabled")
    );

    // Nothing listens on the CDH socket: a bounded wait, then 503, and the server lives on.
    let reply = asr.get("/cdh/resource/default/key/one").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        reply.text().contains("confidential-data-hub"),
        "{}",
        reply.text()
    );

    let info = asr.get("/info").await;
    assert_eq!(info.status, 200);
    let info: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
    assert_eq!(info["feature"], "resource");
    assert!(info.get("tee").is_none());
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_the_service_keeps_serving() {
    let sockets = Sockets::new();
    let cdh = FakeCdh::default();
    let seen = cdh.seen.clone();
    let _aa = backends::serve_aa(&sockets.aa(), FakeAa::default()).await;
    let _cdh = backends::serve_cdh(&sockets.cdh(), cdh).await;
    let asr = start_asr(
        &sockets,
        &[
            "--features",
            "all",
            "--max-body-bytes",
            "1024",
            "--max-header-bytes",
            "8192",
        ],
        &[],
    )
    .await;

    for target in [
        "/cdh/resource/a/../b",
        "/cdh/resource/default/../../etc",
        "/cdh/resource/default/key%2Fone/tag",
        "/cdh/resource/default/key/%2e%2e",
        "/cdh/resource/default//tag",
        "/cdh/resource/default/key/t%00ag",
    ] {
        let reply = asr.get(target).await;
        assert_eq!(reply.status, 400, "{target}: {}", reply.text());
        assert!(reply.text().starts_with("BAD REQUEST: "), "{target}");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "a bad path reached the CDH"
    );

    for target in [
        "/aa/evidence?runtime_data=%ff%fe",
        "/aa/evidence?runtime_data=***&encoding=base64",
        "/aa/evidence?runtime_data=abc&encoding=rot13",
        "/aa/additional-evidence",
    ] {
        let reply = asr.get(target).await;
        assert_eq!(reply.status, 400, "{target}: {}", reply.text());
    }
    asr.assert_still_serving().await;

    let big = format!(
        r#"{{"domain":"d","operation":"o","content":"{}"}}"#,
        "x".repeat(4096)
    );
    assert_eq!(
        asr.request("POST", "/aa/aael", big.as_bytes()).await.status,
        413
    );
    assert_eq!(
        asr.request("POST", "/aa/aael", b"{not json").await.status,
        400
    );
    assert_eq!(
        asr.request("POST", "/aa/aael", b"\xff\xfe\x00")
            .await
            .status,
        400
    );

    let huge_header = format!(
        "GET /info HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "y".repeat(20_000)
    );
    assert_eq!(asr.raw(huge_header.as_bytes()).await.status, 431);
    assert_eq!(
        asr.raw(b"GET /info\xff\xfe HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .status
            / 100,
        4
    );
    assert_eq!(asr.raw(b"NOT HTTP AT ALL\r\n\r\n").await.status, 400);

    asr.assert_still_serving().await;
    assert_eq!(asr.get("/cdh/resource/default/key/one").await.status, 200);
}

#[tokio::test]
async fn cdh_restart_is_survived_without_restarting_the_server() {
    let sockets = Sockets::new();
    let mut cdh = backends::serve_cdh(&sockets.cdh(), FakeCdh::default()).await;
    let asr = start_asr(&sockets, &[], &[]).await;
    assert_eq!(asr.get("/cdh/resource/default/key/one").await.status, 200);

    cdh.shutdown().await.unwrap();
    drop(cdh);
    let reply = asr.get("/cdh/resource/default/key/one").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    asr.assert_still_serving().await;

    let _cdh = backends::serve_cdh(&sockets.cdh(), FakeCdh::default()).await;
    let reply = asr.get("/cdh/resource/default/key/two").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.body,
        backends::resource_bytes("kbs:///default/key/two")
    );
}

#[tokio::test]
async fn a_request_waits_for_a_starting_backend() {
    let sockets = Sockets::new();
    let asr = start_asr(&sockets, &["--backend-wait-ms", "20000"], &[]).await;
    let pending = asr.get("/cdh/resource/default/key/late");

    let start_cdh_soon = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        backends::serve_cdh(&sockets.cdh(), FakeCdh::default()).await
    };
    let (reply, _cdh) = tokio::join!(pending, start_cdh_soon);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.body,
        backends::resource_bytes("kbs:///default/key/late")
    );
}

#[tokio::test]
async fn readiness_and_stop_are_reported_to_systemd() {
    let sockets = Sockets::new();
    let notify_path = sockets.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut asr = start_asr(&sockets, &[], &[("NOTIFY_SOCKET", &notify_path)]).await;

    let mut buf = [0u8; 4096];
    let n = notify.recv(&mut buf).unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("127.0.0.1:{}", asr.port)),
        "{ready}"
    );
    asr.assert_still_serving().await;

    kill(Pid::from_raw(asr.child.id() as i32), Signal::SIGTERM).unwrap();
    let n = notify.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let mut exit = None;
    for _ in 0..400 {
        exit = asr.child.try_wait().unwrap();
        if exit.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(exit.and_then(|status| status.code()), Some(0));
}

#[tokio::test]
async fn a_connection_accepted_before_sigterm_still_gets_its_answer() {
    let sockets = Sockets::new();
    let asr = start_asr(&sockets, &[], &[]).await;
    let mut stream = TcpStream::connect(("127.0.0.1", asr.port)).await.unwrap();
    // Long enough for the server to accept; its grace for a first request only starts at the stop.
    tokio::time::sleep(Duration::from_millis(300)).await;

    kill(Pid::from_raw(asr.child.id() as i32), Signal::SIGTERM).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream
        .write_all(b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "the request was dropped: {:?}",
        String::from_utf8_lossy(&reply)
    );
}

#[tokio::test]
async fn socket_activated_listener_is_used_instead_of_binding() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let sockets = Sockets::new();
    let _cdh = backends::serve_cdh(&sockets.cdh(), FakeCdh::default()).await;
    let inherited = TcpListener::bind("127.0.0.1:0").unwrap();
    let inherited_port = inherited.local_addr().unwrap().port();
    let inherited_fd = inherited.as_raw_fd();
    let unused_bind_port = free_port();

    // `sh` sets LISTEN_PID to its own pid, which `exec` hands on to the server.
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_api-server-rest"))
        .args(["--bind", &format!("127.0.0.1:{unused_bind_port}")])
        .args(["--cdh_addr", &unix_uri(&sockets.cdh())])
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    // SAFETY: the closure only calls dup2, which is async-signal-safe, on fds that are open.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(inherited_fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let asr = Asr {
        child: command.spawn().unwrap(),
        port: inherited_port,
    };
    drop(inherited);

    let mut served = false;
    for _ in 0..200 {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", inherited_port)).await {
            stream
                .write_all(
                    b"GET /cdh/resource/default/key/one HTTP/1.1\r\nConnection: close\r\n\r\n",
                )
                .await
                .unwrap();
            let mut reply = Vec::new();
            let _ = stream.read_to_end(&mut reply).await;
            served = reply.starts_with(b"HTTP/1.1 200");
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served, "the inherited listener did not serve");
    assert!(
        TcpStream::connect(("127.0.0.1", unused_bind_port))
            .await
            .is_err(),
        "--bind was bound although a listener was inherited"
    );
    asr.assert_still_serving().await;
}
