//! End-to-end tests of the `attestation-agent` binary: every API method over ttrpc (and gRPC),
//! tokens from the test KBS, and the systemd contract (socket activation, readiness, reload,
//! SIGTERM).

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::wire::attestation_agent::{
    AttestationAgentServiceClient, BindInitDataRequest, ExtendRuntimeMeasurementRequest,
    GetAdditionalEvidenceRequest, GetAdditionalTeesRequest, GetEvidenceRequest, GetTeeTypeRequest,
    GetTokenRequest, GetTokenResponse, RuntimeMeasurementResult,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use stack_tests::kbs::{TestKbs, TestKbsConfig};

const AGENT: &str = env!("CARGO_BIN_EXE_attestation-agent");
/// Upper bound for anything the agent should do promptly; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running agent, killed if a test ends early.
struct Agent {
    child: Child,
    stderr: PathBuf,
}

impl Agent {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the agent to exit; async so this test's own clients keep running meanwhile.
    async fn wait(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent did not exit:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The agent command with an environment that sees nothing of this machine's config.
fn agent_command(dir: &Path) -> (Command, PathBuf) {
    let stderr = dir.join("agent.stderr");
    let mut command = Command::new(AGENT);
    for var in [
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "KATA_AGENT_CONFIG_PATH",
        "JOURNAL_STREAM",
    ] {
        command.env_remove(var);
    }
    command
        .env("AA_KBC_PARAMS", "offline_fs_kbc::null")
        .env("AA_EVENTLOG_PATH", dir.join("eventlog"))
        .env("AA_TSM_ROOT", dir.join("no-configfs"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).unwrap());
    (command, stderr)
}

/// [`agent_command`] for the sample attester serving ttrpc on `socket`.
fn sample_agent_command(dir: &Path, socket: &Path) -> (Command, PathBuf) {
    let (mut command, stderr) = agent_command(dir);
    command.args(["--tee", "sample", "--attestation_sock", &socket_uri(socket)]);
    (command, stderr)
}

fn spawn(mut command: Command, stderr: PathBuf) -> Agent {
    Agent {
        child: command.spawn().unwrap(),
        stderr,
    }
}

fn socket_uri(path: &Path) -> String {
    format!("unix://{}", path.display())
}

/// Connects a ttrpc client once the agent's socket accepts.
async fn connect(agent: &mut Agent, socket: &Path) -> AttestationAgentServiceClient {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            panic!("agent exited with {status}:\n{}", agent.stderr());
        }
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            let client = ttrpc::r#async::Client::connect(&socket_uri(socket))
                .await
                .unwrap();
            return AttestationAgentServiceClient::new(client);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent never listened:\n{}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(PATIENCE.as_nanos() as i64)
}

/// Asks the agent for a token of `token_type`.
async fn request_token(
    client: &AttestationAgentServiceClient,
    token_type: &str,
) -> ttrpc::Result<GetTokenResponse> {
    let request = GetTokenRequest {
        token_type: token_type.to_owned(),
    };
    client.get_token(ctx(), &request).await
}

/// The status code and message of a failed ttrpc call.
fn rpc_status<T: std::fmt::Debug>(result: ttrpc::Result<T>) -> (i32, String) {
    match result.unwrap_err() {
        ttrpc::Error::RpcStatus(status) => (status.code, status.message),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn every_method_answers_over_ttrpc_and_grpc_with_a_kbs_token() {
    let dir = tempfile::tempdir().unwrap();
    let resources = dir.path().join("resources");
    std::fs::create_dir(&resources).unwrap();
    let kbs = TestKbs::start(TestKbsConfig::new(&resources))
        .await
        .unwrap();

    let config = dir.path().join("aa.toml");
    std::fs::write(
        &config,
        format!(
            "[token_configs.kbs]\nurl = \"{}\"\n\n[eventlog_config]\nenable_eventlog = true\n",
            kbs.url()
        ),
    )
    .unwrap();
    let socket = dir.path().join("aa.sock");
    let grpc_port = free_tcp_port();
    let (mut command, stderr) = sample_agent_command(dir.path(), &socket);
    command.arg("-c").arg(&config);
    command.args(["--grpc", &format!("127.0.0.1:{grpc_port}")]);
    let mut agent = spawn(command, stderr);
    let client = connect(&mut agent, &socket).await;

    let runtime_data: Vec<u8> = (0..48).collect();
    let evidence = client
        .get_evidence(
            ctx(),
            &GetEvidenceRequest {
                runtime_data: runtime_data.clone(),
            },
        )
        .await
        .unwrap()
        .evidence;
    let parsed: serde_json::Value = serde_json::from_slice(&evidence).unwrap();
    assert_eq!(parsed["svn"], "1");
    assert_eq!(
        STANDARD
            .decode(parsed["report_data"].as_str().unwrap())
            .unwrap(),
        runtime_data
    );

    let (code, message) = rpc_status(
        client
            .get_evidence(
                ctx(),
                &GetEvidenceRequest {
                    runtime_data: vec![0; 65],
                },
            )
            .await,
    );
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT as i32);
    assert!(
        message.contains("65 bytes") && message.contains("at most 64"),
        "{message}"
    );

    let additional = client
        .get_additional_evidence(
            ctx(),
            &GetAdditionalEvidenceRequest {
                runtime_data: vec![1],
            },
        )
        .await
        .unwrap();
    assert_eq!(additional.evidence, b"{}");

    let token = request_token(&client, "kbs").await.unwrap().token;
    let message: serde_json::Value = serde_json::from_slice(&token).unwrap();
    let jwt = message["token"].as_str().unwrap();
    assert!(jwt_claims(jwt)["exp"].is_u64(), "token without exp: {jwt}");
    assert!(message["tee_keypair"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN"));
    let again = request_token(&client, "kbs").await.unwrap().token;
    assert_eq!(again, token, "a fresh token is served from the cache");
    assert_eq!(
        kbs.counts().attest,
        1,
        "one attestation for both GetToken calls"
    );

    let (code, message) = rpc_status(request_token(&client, "coco_as").await);
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT as i32);
    assert!(
        message.contains("coco_as") && message.contains("supported: kbs"),
        "{message}"
    );

    let extended = client
        .extend_runtime_measurement(
            ctx(),
            &ExtendRuntimeMeasurementRequest {
                domain: "github.com/confidential-containers".to_owned(),
                operation: "PullImage".to_owned(),
                content: "busybox@sha256:0123".to_owned(),
                register_index: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        extended.result,
        RuntimeMeasurementResult::NotSupported as i32
    );
    let eventlog = std::fs::read_to_string(dir.path().join("eventlog")).unwrap();
    assert!(eventlog.starts_with("INIT sha384/"), "{eventlog}");
    assert!(
        eventlog.ends_with("github.com/confidential-containers PullImage busybox@sha256:0123\n"),
        "{eventlog}"
    );
    let (code, _) = rpc_status(
        client
            .extend_runtime_measurement(
                ctx(),
                &ExtendRuntimeMeasurementRequest {
                    domain: "d".to_owned(),
                    operation: "op".to_owned(),
                    content: "two\nlines".to_owned(),
                    register_index: Some(17),
                },
            )
            .await,
    );
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT as i32);

    client
        .bind_init_data(
            ctx(),
            &BindInitDataRequest {
                digest: vec![0x5a; 32],
            },
        )
        .await
        .unwrap();
    let tee = client
        .get_tee_type(ctx(), &GetTeeTypeRequest {})
        .await
        .unwrap();
    assert_eq!(tee.tee, "sample");
    let tees = client
        .get_additional_tees(ctx(), &GetAdditionalTeesRequest {})
        .await
        .unwrap();
    assert!(tees.additional_tees.is_empty());

    #[cfg(feature = "grpc")]
    {
        use common::wire::grpc::attestation_agent::attestation_agent_service_client::AttestationAgentServiceClient as GrpcClient;
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut grpc = GrpcClient::new(channel);
        let over_grpc = grpc
            .get_evidence(GetEvidenceRequest {
                runtime_data: runtime_data.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .evidence;
        assert_eq!(over_grpc, evidence);
        let refused = grpc
            .get_evidence(GetEvidenceRequest {
                runtime_data: vec![0; 100],
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }

    agent.signal(Signal::SIGTERM);
    assert!(agent.wait().await.success(), "{}", agent.stderr());
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn token_errors_name_their_cause_and_the_agent_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();

    let socket = dir.path().join("offline.sock");
    let (command, stderr) = sample_agent_command(dir.path(), &socket);
    let mut offline = spawn(command, stderr);
    let client = connect(&mut offline, &socket).await;
    let (code, message) = rpc_status(request_token(&client, "kbs").await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION as i32);
    assert!(message.contains("no KBS is configured"), "{message}");
    assert!(message.contains("AA_KBC_PARAMS"), "{message}");

    let socket = dir.path().join("unreachable.sock");
    let (mut command, stderr) = sample_agent_command(dir.path(), &socket);
    let closed_port = free_tcp_port();
    command.env(
        "AA_KBC_PARAMS",
        format!("cc_kbc::http://127.0.0.1:{closed_port}"),
    );
    let mut unreachable = spawn(command, stderr);
    let client = connect(&mut unreachable, &socket).await;
    let (code, message) = rpc_status(request_token(&client, "kbs").await);
    assert_eq!(code, ttrpc::Code::UNAVAILABLE as i32, "{message}");
    assert!(message.contains(&closed_port.to_string()), "{message}");
    let tee = client
        .get_tee_type(ctx(), &GetTeeTypeRequest {})
        .await
        .unwrap();
    assert_eq!(tee.tee, "sample");
}

#[tokio::test]
async fn a_client_that_connected_before_sigterm_still_gets_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("aa.sock");
    let (command, stderr) = sample_agent_command(dir.path(), &socket);
    let mut agent = spawn(command, stderr);
    let client = connect(&mut agent, &socket).await;
    // Long enough for the agent to accept; its grace for a first call only starts at the stop.
    tokio::time::sleep(Duration::from_millis(300)).await;

    agent.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tee = client.get_tee_type(ctx(), &GetTeeTypeRequest {}).await;
    assert_eq!(
        tee.map(|answer| answer.tee).ok().as_deref(),
        Some("sample"),
        "the call was dropped:\n{}",
        agent.stderr()
    );
    assert!(agent.wait().await.success());
}

/// Receives notify messages until one contains `wanted`, returning it.
async fn notified(socket: &tokio::net::UnixDatagram, wanted: &str, agent: &Agent) -> String {
    let mut buffer = vec![0; 4096];
    loop {
        let received = tokio::time::timeout(PATIENCE, socket.recv(&mut buffer)).await;
        let Ok(Ok(len)) = received else {
            panic!("no {wanted} from the agent:\n{}", agent.stderr());
        };
        let message = String::from_utf8_lossy(&buffer[..len]).into_owned();
        if message.lines().any(|line| line == wanted) {
            return message;
        }
    }
}

#[tokio::test]
async fn socket_activation_readiness_reload_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("aa.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let notify_path = dir.path().join("notify");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let config = dir.path().join("aa.toml");
    std::fs::write(&config, "[log]\nlevel = \"debug\"\n").unwrap();

    let (command, stderr) = agent_command(dir.path());
    // A shell sets LISTEN_PID to its own pid and then becomes the agent, as systemd does it.
    let mut activated = Command::new("sh");
    activated
        .arg("-c")
        .arg(r#"export LISTEN_PID=$$; exec "$0" "$@""#)
        .arg(AGENT)
        .args([
            "--tee",
            "sample",
            "--attestation_sock",
            &socket_uri(&socket),
        ])
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).unwrap());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => activated.env(key, value),
            None => activated.env_remove(key),
        };
    }
    activated
        .env("LISTEN_FDS", "1")
        .env("NOTIFY_SOCKET", &notify_path);
    let listener_fd = listener.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe and only touch the child's descriptors.
    unsafe {
        activated.pre_exec(move || {
            let placed = if listener_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(listener_fd, 3)
            };
            if placed < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut agent = spawn(activated, stderr);
    // Only the agent's copy of the listener may serve from here on.
    drop(listener);

    let ready = notified(&notify, "READY=1", &agent).await;
    assert!(ready.contains("STATUS=serving; TEE sample"), "{ready}");
    let client = AttestationAgentServiceClient::new(
        ttrpc::r#async::Client::connect(&socket_uri(&socket))
            .await
            .unwrap(),
    );
    let tee = client
        .get_tee_type(ctx(), &GetTeeTypeRequest {})
        .await
        .unwrap();
    assert_eq!(tee.tee, "sample");
    let measurement = ExtendRuntimeMeasurementRequest {
        domain: "d".to_owned(),
        operation: "op".to_owned(),
        content: "c".to_owned(),
        register_index: None,
    };
    let extended = client
        .extend_runtime_measurement(ctx(), &measurement)
        .await
        .unwrap();
    assert_eq!(extended.result, RuntimeMeasurementResult::NotEnabled as i32);

    std::fs::write(&config, "[eventlog_config]\nenable_eventlog = true\n").unwrap();
    agent.signal(Signal::SIGHUP);
    notified(&notify, "RELOADING=1", &agent).await;
    let reloaded = notified(&notify, "READY=1", &agent).await;
    assert!(reloaded.contains("eventlog"), "{reloaded}");
    let extended = client
        .extend_runtime_measurement(ctx(), &measurement)
        .await
        .unwrap();
    assert_eq!(
        extended.result,
        RuntimeMeasurementResult::NotSupported as i32
    );

    std::fs::write(&config, "[eventlog_config\n").unwrap();
    agent.signal(Signal::SIGHUP);
    notified(&notify, "RELOADING=1", &agent).await;
    let failed = notified(&notify, "READY=1", &agent).await;
    assert!(failed.contains("reload failed"), "{failed}");
    assert!(failed.contains("aa.toml line 1"), "{failed}");
    let extended = client
        .extend_runtime_measurement(ctx(), &measurement)
        .await
        .unwrap();
    assert_eq!(
        extended.result,
        RuntimeMeasurementResult::NotSupported as i32,
        "the previous configuration keeps serving"
    );

    agent.signal(Signal::SIGTERM);
    notified(&notify, "STOPPING=1", &agent).await;
    assert!(agent.wait().await.success(), "{}", agent.stderr());
}

#[tokio::test]
async fn malformed_config_exits_non_zero_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.toml");
    std::fs::write(
        &config,
        "[token_configs.kbs]\nurl = \"http://kbs\"\ncert = \n",
    )
    .unwrap();
    let (mut command, stderr) = sample_agent_command(dir.path(), &dir.path().join("aa.sock"));
    command.arg("-c").arg(&config);
    let mut agent = spawn(command, stderr);
    let status = agent.wait().await;
    assert!(!status.success());
    let stderr = agent.stderr();
    assert!(
        stderr.contains(&format!("{} line 3", config.display())),
        "{stderr}"
    );
    assert!(
        !dir.path().join("aa.sock").exists(),
        "nothing is served on a bad config"
    );
}

#[tokio::test]
async fn an_unknown_tee_is_refused_listing_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut command, stderr) = agent_command(dir.path());
    command.args(["--tee", "sgx"]);
    let mut agent = spawn(command, stderr);
    assert!(!agent.wait().await.success());
    let stderr = agent.stderr();
    assert!(
        stderr.contains("sgx") && stderr.contains("sample") && stderr.contains("tsm"),
        "{stderr}"
    );
}
