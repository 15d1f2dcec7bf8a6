//! The whole stack as plain processes: the real `attestation-agent`, `confidential-data-hub`
//! and `api-server-rest` binaries in front of the test KBS, every REST route and the error
//! codes a real stack can produce, and recovery when the AA and the CDH restart under the
//! REST server.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stack_tests::kbs::{TestKbs, TestKbsConfig};

/// Upper bound of any wait; reached only when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

/// How long the REST server waits for a backend that is down before it answers 503.
const BACKEND_WAIT_MS: &str = "300";

/// The workspace's binaries, built next to the test KBS by `cargo test --workspace`.
fn binary(name: &str) -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_test-kbs")).with_file_name(name);
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --workspace --bins` (or `cargo test --workspace`)",
        binary.display()
    );
    binary
}

/// A service process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The three services' addresses and how to start each.
struct Stack {
    dir: tempfile::TempDir,
    kbs_url: String,
    port: u16,
}

impl Stack {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&self, name: &str, args: &[String], env: &[(&str, String)]) -> Process {
        let mut command = Command::new(binary(name));
        command
            .args(args)
            .env_clear()
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        Process(command.spawn().unwrap())
    }

    /// The AA with the sample attester, its KBS from `aa_kbc_params`.
    fn start_aa(&self) -> Process {
        let socket = self.path("aa.sock");
        let aa = self.spawn(
            "attestation-agent",
            &[
                "--attestation_sock".into(),
                format!("unix://{}", socket.display()),
                "--tee".into(),
                "sample".into(),
            ],
            &[
                ("AA_KBC_PARAMS", format!("cc_kbc::{}", self.kbs_url)),
                (
                    "AA_EVENTLOG_PATH",
                    self.path("eventlog").display().to_string(),
                ),
            ],
        );
        wait_accepting(&socket);
        aa
    }

    /// The CDH with `cc_kbc` against the test KBS, evidence from the AA.
    fn start_cdh(&self) -> Process {
        let config = self.path("cdh.toml");
        if !config.exists() {
            let text = format!(
                "socket = \"unix://{}\"\n[aa]\naa_socket = \"unix://{}\"\n\
                 [kbc]\nname = \"cc_kbc\"\nurl = \"{}\"\n",
                self.path("cdh.sock").display(),
                self.path("aa.sock").display(),
                self.kbs_url,
            );
            std::fs::write(&config, text).unwrap();
        }
        let cdh = self.spawn(
            "confidential-data-hub",
            &["-c".into(), config.display().to_string()],
            &[],
        );
        wait_accepting(&self.path("cdh.sock"));
        cdh
    }

    /// The REST server with every feature on a free loopback port.
    fn start_asr(&self) -> Process {
        let port = self.port.to_string();
        let asr = self.spawn(
            "api-server-rest",
            &[
                "--features".into(),
                "all".into(),
                "--bind".into(),
                format!("127.0.0.1:{port}"),
                "--aa_addr".into(),
                format!("unix://{}", self.path("aa.sock").display()),
                "--cdh_addr".into(),
                format!("unix://{}", self.path("cdh.sock").display()),
                "--backend-wait-ms".into(),
                BACKEND_WAIT_MS.into(),
            ],
            &[],
        );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < PATIENCE,
                "the REST server never listened"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        asr
    }

    fn url(&self, route: &str) -> String {
        format!("http://127.0.0.1:{}{route}", self.port)
    }
}

fn wait_accepting(socket: &Path) {
    let started = Instant::now();
    while UnixStream::connect(socket).is_err() {
        assert!(
            started.elapsed() < PATIENCE,
            "{} never accepted",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn test_kbs(dir: &Path) -> TestKbs {
    let resources = dir.join("kbs-resources");
    for (path, content) in [
        ("default/key/1", b"\x00stack resource\xff".as_slice()),
        ("default/key/denied", b"never released"),
    ] {
        let file = resources.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    let mut config = TestKbsConfig::new(&resources);
    config.deny = vec!["default/key/denied".into()];
    TestKbs::start(config).await.unwrap()
}

/// Status and body of one request.
async fn call(client: &reqwest::Client, request: reqwest::RequestBuilder) -> (u16, Vec<u8>) {
    let response = client
        .execute(request.build().unwrap())
        .await
        .unwrap_or_else(|e| panic!("no answer: {e}"));
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    call(client, client.get(url)).await
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[tokio::test]
async fn every_route_through_the_real_stack_and_recovery_after_backend_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let kbs = test_kbs(dir.path()).await;
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stack = Stack {
        dir,
        kbs_url: kbs.url(),
        port,
    };
    let aa = stack.start_aa();
    let cdh = stack.start_cdh();
    let _asr = stack.start_asr();
    let client = reqwest::Client::new();

    let (status, body) = get(&client, &stack.url("/info")).await;
    assert_eq!(status, 200, "{}", text(&body));
    assert!(text(&body).contains("sample"), "{}", text(&body));

    let resource = stack.url("/cdh/resource/default/key/1");
    let (status, body) = get(&client, &resource).await;
    assert_eq!(
        (status, body.as_slice()),
        (200, b"\x00stack resource\xff".as_slice())
    );

    let (status, body) = get(&client, &stack.url("/cdh/resource/default/key/denied")).await;
    assert_eq!(status, 403, "{}", text(&body));
    assert!(!text(&body).contains("never released"), "{}", text(&body));

    for bad in [
        "/cdh/resource/default//1",
        "/cdh/resource/default%2Fkey/1/x",
    ] {
        let (status, body) = get(&client, &stack.url(bad)).await;
        assert_eq!(status, 400, "{bad}: {}", text(&body));
    }
    let (status, _) = get(&client, &stack.url("/no/such/route")).await;
    assert_eq!(status, 404);

    let (status, body) = get(&client, &stack.url("/aa/token?token_type=kbs")).await;
    assert_eq!(status, 200, "{}", text(&body));
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(token["token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));
    assert!(token["tee_keypair"]
        .as_str()
        .unwrap()
        .contains("PRIVATE KEY"));
    let (status, body) = get(&client, &stack.url("/aa/token?token_type=bogus")).await;
    assert_eq!(status, 400, "{}", text(&body));

    let (status, body) = get(&client, &stack.url("/aa/evidence?runtime_data=hello")).await;
    assert_eq!(status, 200, "{}", text(&body));
    let evidence: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(evidence["report_data"].is_string(), "{evidence}");
    for bad in [
        "/aa/evidence",
        "/aa/evidence?runtime_data=!!!&encoding=base64",
    ] {
        let (status, body) = get(&client, &stack.url(bad)).await;
        assert_eq!(status, 400, "{bad}: {}", text(&body));
    }
    let (status, body) = get(
        &client,
        &stack.url("/aa/additional-evidence?runtime_data=hello"),
    )
    .await;
    assert_eq!(status, 200, "{}", text(&body));

    let aael = stack.url("/aa/aael");
    let entry = serde_json::json!({"domain": "test", "operation": "boot", "content": "ok"});
    let json = client
        .post(&aael)
        .header("content-type", "application/json")
        .body(entry.to_string());
    let (status, body) = call(&client, json).await;
    assert_eq!(status, 200, "{}", text(&body));
    let (status, _) = call(&client, client.post(&aael).body("{not json")).await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &client,
        client.post(stack.url("/aa/evidence?runtime_data=a")),
    )
    .await;
    assert_eq!(status, 405);

    // The AA goes away: attestation answers 503, resources the CDH holds a session for stay.
    drop(aa);
    let (status, body) = get(&client, &stack.url("/aa/evidence?runtime_data=hello")).await;
    assert_eq!(status, 503, "{}", text(&body));
    let _aa = stack.start_aa();
    let (status, body) = get(&client, &stack.url("/aa/evidence?runtime_data=again")).await;
    assert_eq!(status, 200, "after the AA restarted: {}", text(&body));

    drop(cdh);
    let (status, body) = get(&client, &resource).await;
    assert_eq!(status, 503, "{}", text(&body));
    let _cdh = stack.start_cdh();
    let (status, body) = get(&client, &resource).await;
    assert_eq!(status, 200, "after the CDH restarted: {}", text(&body));

    kbs.shutdown().await.unwrap();
}
