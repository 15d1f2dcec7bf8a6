//! End-to-end tests: the real `confidential-data-hub` binary served over ttrpc (and gRPC).

#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::wire::api::{
    GetResourceRequest, GetResourceServiceClient, ImagePullRequest, ImagePullServiceClient,
    SealedSecretServiceClient, SecureMountRequest, SecureMountServiceClient, UnsealSecretInput,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use stack_tests::kbs::{write_resource, TestKbs, TestKbsConfig};

/// Upper bound of any wait for the service; reached only when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running service (CDH or AA) with the datagram socket it reports readiness to.
struct Service {
    child: Child,
    notify: UnixDatagram,
    socket: PathBuf,
}

impl Service {
    /// Starts the CDH with `args` and `env`, and waits for `READY=1`; returns the status line.
    fn cdh(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Self, String) {
        let binary = Path::new(env!("CARGO_BIN_EXE_confidential-data-hub"));
        Self::start(binary, dir, "cdh", args, env)
    }

    /// Starts the real Attestation Agent with the sample attester on `<dir>/aa.sock`.
    fn attestation_agent(dir: &Path, name: &str) -> Self {
        let socket = dir.join("aa.sock");
        let socket_uri = format!("unix://{}", socket.display());
        let eventlog = dir.join("eventlog").display().to_string();
        let args = ["--attestation_sock", &socket_uri, "--tee", "sample"];
        let env = [
            ("AA_EVENTLOG_PATH", eventlog.as_str()),
            ("AA_KBC_PARAMS", "offline_fs_kbc::null"),
        ];
        let (mut aa, _) = Self::start(&attestation_agent_binary(), dir, name, &args, &env);
        aa.socket = socket;
        aa
    }

    fn start(
        binary: &Path,
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Self, String) {
        let notify_path = dir.join(format!("{name}-notify.sock"));
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(PATIENCE)).unwrap();

        let mut command = Command::new(binary);
        command
            .args(args)
            .env_clear()
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "info,confidential_data_hub=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut service = Self {
            child: command.spawn().unwrap(),
            notify,
            socket: dir.join(format!("{name}.sock")),
        };
        let ready = service.wait_for("READY=1");
        (service, ready)
    }

    /// Reads notifications until one holds the line `line`; returns that whole message.
    fn wait_for(&mut self, line: &str) -> String {
        let mut buffer = [0u8; 4096];
        loop {
            let len = self
                .notify
                .recv(&mut buffer)
                .unwrap_or_else(|e| panic!("no {line} from the service: {e}"));
            let message = String::from_utf8_lossy(&buffer[..len]).into_owned();
            if message.lines().any(|l| l == line) {
                return message;
            }
        }
    }

    fn signal(&self, signal: Signal) {
        kill(
            Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            signal,
        )
        .unwrap();
    }

    fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    async fn client(&self) -> ttrpc::r#async::Client {
        ttrpc::r#async::Client::connect(&self.uri()).await.unwrap()
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_for("STOPPING=1");
        self.child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn context() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(i64::try_from(PATIENCE.as_nanos()).unwrap())
}

/// The AA binary, built next to ours by `cargo test --workspace` (or `cargo build`).
fn attestation_agent_binary() -> PathBuf {
    let ours = Path::new(env!("CARGO_BIN_EXE_confidential-data-hub"));
    let binary = ours.with_file_name("attestation-agent");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p attestation-agent-svc` (or `cargo test --workspace`)",
        binary.display()
    );
    binary
}

/// The status code of a failed ttrpc call.
fn code<T: std::fmt::Debug>(result: ttrpc::Result<T>) -> (i32, String) {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => (status.code, status.message),
        other => panic!("expected an rpc status, got {other:?}"),
    }
}

/// The key the test secrets are signed with; its public JWK is the resource `SIGNER_URI`.
fn signing_key() -> SigningKey {
    SigningKey::from_slice(&[7; 32]).unwrap()
}

/// Where the CDH finds the public key of [`signing_key`].
const SIGNER_URI: &str = "kbs:///default/signer/pub";

fn signer_jwk() -> Vec<u8> {
    let point = signing_key().verifying_key().to_encoded_point(false);
    serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    })
    .to_string()
    .into_bytes()
}

/// A vault sealed secret for `uri`, signed ES256 as upstream's sealing tool does.
fn sealed_vault(uri: &str) -> Vec<u8> {
    let payload = format!(
        r#"{{"version":"0.1.0","type":"vault","name":"{uri}","provider":"kbs",
            "provider_settings":{{}},"annotations":{{}}}}"#
    );
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","kid":"{SIGNER_URI}"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(payload);
    let signature: Signature = signing_key().sign(format!("{header}.{payload}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
    format!("sealed.{header}.{payload}.{signature}").into_bytes()
}

fn write_json(path: &Path, entries: &[(&str, &[u8])]) {
    let map: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(key, value)| ((*key).to_owned(), STANDARD.encode(value).into()))
        .collect();
    std::fs::write(path, serde_json::to_vec(&map).unwrap()).unwrap();
}

/// A config for the offline_fs KBC on a socket in `dir`, and the flags pointing at its files.
fn offline_setup(dir: &Path) -> Vec<String> {
    let config = dir.join("cdh.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"unix://{}\"\n[kbc]\nname = \"offline_fs_kbc\"\nurl = \"\"\n\n\
             [image]\nmax_concurrent_layer_downloads_per_image = 3\n",
            dir.join("cdh.sock").display()
        ),
    )
    .unwrap();
    write_json(
        &dir.join("keys.json"),
        &[
            ("default/key/1", b"key-one"),
            ("default/signer/pub", &signer_jwk()),
        ],
    );
    write_json(
        &dir.join("resources.json"),
        &[("default/cfg/app", b"{\"debug\":true}")],
    );
    write_json(&dir.join("extra.json"), &[("extra/secret/db", b"hunter2")]);
    vec![
        "-c".into(),
        config.display().to_string(),
        "--offline-fs-keys".into(),
        dir.join("keys.json").display().to_string(),
        "--offline-fs-resources".into(),
        dir.join("resources.json").display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_fs_kbc_serves_resources_and_sealed_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let args = offline_setup(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let extra = dir.path().join("extra.json").display().to_string();
    let (mut cdh, ready) = Service::cdh(
        dir.path(),
        &args,
        &[("OFFLINE_FS_KBC_EXTRA_FILE_PATH", &extra)],
    );
    assert!(ready.contains("offline_fs_kbc, resources: 4"), "{ready}");
    assert!(ready.contains("cdh.toml"), "{ready}");

    let client = cdh.client().await;
    let resources = GetResourceServiceClient::new(client.clone());
    let get = |uri: &str| {
        let request = GetResourceRequest {
            resource_path: uri.to_owned(),
        };
        let resources = resources.clone();
        async move { resources.get_resource(context(), &request).await }
    };

    assert_eq!(
        get("kbs:///default/key/1").await.unwrap().resource,
        b"key-one"
    );
    assert_eq!(
        get("kbs://kbs.example:8080/default/cfg/app")
            .await
            .unwrap()
            .resource,
        b"{\"debug\":true}"
    );
    assert_eq!(
        get("kbs:///extra/secret/db").await.unwrap().resource,
        b"hunter2"
    );

    let (status, message) = code(get("kbs:///default/key/2").await);
    assert_eq!(status, ttrpc::Code::NOT_FOUND as i32);
    assert!(message.contains("kbs:///default/key/2"), "{message}");
    let (status, message) = code(get("kbs:///a/../b").await);
    assert_eq!(status, ttrpc::Code::INVALID_ARGUMENT as i32);
    assert!(message.contains("kbs:///a/../b"), "{message}");

    let secrets = SealedSecretServiceClient::new(client.clone());
    let unsealed = secrets
        .unseal_secret(
            context(),
            &UnsealSecretInput {
                secret: sealed_vault("kbs:///extra/secret/db"),
            },
        )
        .await
        .unwrap();
    assert_eq!(unsealed.plaintext, b"hunter2");
    let mut forged = sealed_vault("kbs:///extra/secret/db");
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let (status, message) = code(
        secrets
            .unseal_secret(context(), &UnsealSecretInput { secret: forged })
            .await,
    );
    assert_eq!(status, ttrpc::Code::PERMISSION_DENIED as i32, "{message}");
    let (status, _) = code(
        secrets
            .unseal_secret(
                context(),
                &UnsealSecretInput {
                    secret: b"sealed.only.two".to_vec(),
                },
            )
            .await,
    );
    assert_eq!(status, ttrpc::Code::INVALID_ARGUMENT as i32);

    let (status, message) = code(
        ImagePullServiceClient::new(client.clone())
            .pull_image(context(), &ImagePullRequest::default())
            .await,
    );
    assert_eq!(status, ttrpc::Code::UNIMPLEMENTED as i32);
    assert!(message.contains("does not pull images"), "{message}");
    let (status, _) = code(
        SecureMountServiceClient::new(client.clone())
            .secure_mount(context(), &SecureMountRequest::default())
            .await,
    );
    assert_eq!(status, ttrpc::Code::UNIMPLEMENTED as i32);

    // SIGHUP re-reads the offline files; the service never restarts.
    write_json(
        &dir.path().join("resources.json"),
        &[("default/cfg/app", b"v2"), ("default/cfg/new", b"fresh")],
    );
    cdh.signal(Signal::SIGHUP);
    cdh.wait_for("RELOADING=1");
    let reloaded = cdh.wait_for("READY=1");
    assert!(
        reloaded.contains("offline_fs_kbc, resources: 5"),
        "{reloaded}"
    );
    assert_eq!(
        get("kbs:///default/cfg/new").await.unwrap().resource,
        b"fresh"
    );
    assert_eq!(get("kbs:///default/cfg/app").await.unwrap().resource, b"v2");

    // A broken file on reload keeps the previous resources serving.
    std::fs::write(dir.path().join("resources.json"), "{ not json").unwrap();
    cdh.signal(Signal::SIGHUP);
    cdh.wait_for("RELOADING=1");
    let failed = cdh.wait_for("READY=1");
    assert!(failed.contains("reload failed"), "{failed}");
    assert_eq!(
        get("kbs:///default/cfg/new").await.unwrap().resource,
        b"fresh"
    );

    let status = cdh.terminate();
    assert!(status.success(), "{status}");
}

#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread")]
async fn grpc_calls_the_same_core() {
    use common::wire::grpc::api::get_resource_service_client::GetResourceServiceClient as Grpc;

    let dir = tempfile::tempdir().unwrap();
    let mut args = offline_setup(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    args.extend(["--grpc".into(), format!("127.0.0.1:{port}")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (cdh, ready) = Service::cdh(dir.path(), &args, &[]);
    assert!(ready.contains("READY=1"));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = Grpc::new(channel);
    let found = client
        .get_resource(GetResourceRequest {
            resource_path: "kbs:///default/key/1".into(),
        })
        .await
        .unwrap();
    assert_eq!(found.into_inner().resource, b"key-one");
    let missing = client
        .get_resource(GetResourceRequest {
            resource_path: "kbs:///default/key/404".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains("kbs:///default/key/404"));
    drop(client);
    assert!(cdh.terminate().success());
}

#[test]
fn malformed_config_fails_the_start_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.toml");
    std::fs::write(
        &config,
        "socket = \"unix:///tmp/x.sock\"\n\n[kbc\nname = \"cc_kbc\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_confidential-data-hub"))
        .env_clear()
        .env("CDH_CONFIG_PATH", &config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.toml") && stderr.contains("line 3"),
        "{stderr}"
    );
}

#[test]
fn credential_outside_its_directory_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cdh.toml");
    std::fs::write(
        &config,
        "[kbc]\nname = \"offline_fs_kbc\"\n\
         [[credentials]]\npath = \"/etc/shadow\"\nresource_uri = \"kbs:///a/b/c\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_confidential-data-hub"))
        .env_clear()
        .args(["-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/etc/shadow"), "{stderr}");
}

/// A test KBS serving four resources (one denied by its policy) and the signer's key.
async fn test_kbs(dir: &Path) -> TestKbs {
    let resources = dir.join("kbs-resources");
    for (path, content) in [
        ("default/key/1", b"kbs-key-one".to_vec()),
        ("default/key/denied", b"never released".to_vec()),
        ("default/sealed/db", b"s3cret".to_vec()),
        ("default/signer/pub", signer_jwk()),
    ] {
        write_resource(&resources, path, &content).unwrap();
    }
    let mut config = TestKbsConfig::new(&resources);
    config.deny = vec!["default/key/denied".into()];
    TestKbs::start(config).await.unwrap()
}

/// CDH flags for the cc_kbc against `kbs`, with the AA at `<dir>/aa.sock`; without
/// `kbc_in_config` the KBC must come from `AA_KBC_PARAMS`.
fn cc_kbc_args(dir: &Path, kbs: &TestKbs, kbc_in_config: bool) -> Vec<String> {
    let config = dir.join("cdh.toml");
    let mut text = format!(
        "socket = \"unix://{}\"\n[aa]\naa_socket = \"unix://{}\"\n",
        dir.join("cdh.sock").display(),
        dir.join("aa.sock").display(),
    );
    if kbc_in_config {
        text.push_str(&format!(
            "[kbc]\nname = \"cc_kbc\"\nurl = \"{}\"\n",
            kbs.url()
        ));
    }
    std::fs::write(&config, text).unwrap();
    vec!["-c".into(), config.display().to_string()]
}

/// Fetches `uri` from the CDH at `cdh`.
async fn get_resource(cdh: &Service, uri: &str) -> ttrpc::Result<Vec<u8>> {
    let request = GetResourceRequest {
        resource_path: uri.to_owned(),
    };
    GetResourceServiceClient::new(cdh.client().await)
        .get_resource(context(), &request)
        .await
        .map(|response| response.resource)
}

#[tokio::test(flavor = "multi_thread")]
async fn cc_kbc_fetches_and_unseals_through_the_aa_and_the_kbs() {
    let dir = tempfile::tempdir().unwrap();
    let kbs = test_kbs(dir.path()).await;
    let _aa = Service::attestation_agent(dir.path(), "aa");
    let args = cc_kbc_args(dir.path(), &kbs, true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (cdh, ready) = Service::cdh(dir.path(), &args, &[]);
    assert!(
        ready.contains(&format!("cc_kbc with KBS {}", kbs.url())),
        "{ready}"
    );

    assert_eq!(
        get_resource(&cdh, "kbs:///default/key/1").await.unwrap(),
        b"kbs-key-one"
    );
    let unsealed = SealedSecretServiceClient::new(cdh.client().await)
        .unseal_secret(
            context(),
            &UnsealSecretInput {
                secret: sealed_vault("kbs:///default/sealed/db"),
            },
        )
        .await
        .unwrap();
    assert_eq!(unsealed.plaintext, b"s3cret");
    assert_eq!(
        get_resource(&cdh, "kbs://ignored.example:1/default/key/1")
            .await
            .unwrap(),
        b"kbs-key-one"
    );

    // One attestation served all four resources (the signing key among them).
    let counts = kbs.counts();
    assert_eq!((counts.auth, counts.attest, counts.resource), (1, 1, 4));

    for uri in ["kbs:///default/key/denied", "kbs:///default/key/absent"] {
        let (status, message) = code(get_resource(&cdh, uri).await);
        assert_eq!(status, ttrpc::Code::PERMISSION_DENIED as i32, "{message}");
        assert!(message.contains(uri), "{message}");
        assert!(!message.contains("never released"), "{message}");
    }

    assert!(cdh.terminate().success());
    kbs.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cc_kbc_rides_out_an_attestation_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kbs = test_kbs(dir.path()).await;
    let args = cc_kbc_args(dir.path(), &kbs, false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let kbc_params = format!("cc_kbc::{}", kbs.url());

    // The CDH starts and reports ready without an AA, the KBC taken from the environment.
    let (mut cdh, ready) = Service::cdh(dir.path(), &args, &[("AA_KBC_PARAMS", &kbc_params)]);
    assert!(
        ready.contains("kbc from environment variable AA_KBC_PARAMS"),
        "{ready}"
    );
    let (status, message) = code(get_resource(&cdh, "kbs:///default/key/1").await);
    assert_eq!(status, ttrpc::Code::UNAVAILABLE as i32, "{message}");
    assert!(message.contains("aa.sock"), "{message}");

    let aa = Service::attestation_agent(dir.path(), "aa");
    assert_eq!(
        get_resource(&cdh, "kbs:///default/key/1").await.unwrap(),
        b"kbs-key-one"
    );

    // With the AA gone and the KBS session dropped, attestation cannot happen.
    drop(aa);
    kbs.flush_sessions();
    let (status, message) = code(get_resource(&cdh, "kbs:///default/key/1").await);
    assert_eq!(status, ttrpc::Code::UNAVAILABLE as i32, "{message}");

    // A new AA on the same socket: the same CDH process serves again.
    let _aa = Service::attestation_agent(dir.path(), "aa-restarted");
    assert_eq!(
        get_resource(&cdh, "kbs:///default/key/1").await.unwrap(),
        b"kbs-key-one"
    );
    assert!(cdh.child.try_wait().unwrap().is_none(), "the CDH restarted");
    assert_eq!(kbs.counts().attest, 2);

    assert!(cdh.terminate().success());
    kbs.shutdown().await.unwrap();
}

#[test]
fn a_credential_that_cannot_be_fetched_fails_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cdh.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"unix://{}\"\n[kbc]\nname = \"offline_fs_kbc\"\n\
             [[credentials]]\npath = \"/run/confidential-containers/cdh/never-written\"\n\
             resource_uri = \"kbs:///default/cred/absent\"\n",
            dir.path().join("cdh.sock").display()
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_confidential-data-hub"))
        .env_clear()
        .env("NOTIFY_SOCKET", &notify_path)
        .args(["-c", config.to_str().unwrap()])
        .args(["--offline-fs-keys", "/nonexistent/keys.json"])
        .args(["--offline-fs-resources", "/nonexistent/resources.json"])
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("kbs:///default/cred/absent"), "{stderr}");
    let mut buffer = [0u8; 4096];
    let len = notify.recv(&mut buffer).unwrap();
    let message = String::from_utf8_lossy(&buffer[..len]);
    assert!(
        message.contains("STATUS=fetching credential kbs:///default/cred/absent"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_on_a_socket_activated_listener() {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;

    let dir = tempfile::tempdir().unwrap();
    let args = offline_setup(dir.path());
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("cdh.sock")).unwrap();
    let listener_fd = listener.as_raw_fd();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();

    let mut command = Command::new("sh");
    // `exec` keeps the shell's pid, so `$$` is the pid the service sees as its own.
    command
        .args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_confidential-data-hub"))
        .args(&args)
        .env_clear()
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "cdh")
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe and touches only the child's descriptor table.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::dup2(listener_fd, 3)?;
            Ok(())
        });
    }
    let mut cdh = Service {
        child: command.spawn().unwrap(),
        notify,
        socket: dir.path().join("cdh.sock"),
    };
    cdh.wait_for("READY=1");

    assert_eq!(
        get_resource(&cdh, "kbs:///default/key/1").await.unwrap(),
        b"key-one"
    );
    // Logs stay far below a pipe's buffer, so reading after exit cannot block the service.
    let mut stderr = cdh.child.stderr.take().unwrap();
    assert!(cdh.terminate().success());
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut logs).unwrap();
    assert!(logs.contains("socket-activated"), "{logs}");
    drop(listener);
}
