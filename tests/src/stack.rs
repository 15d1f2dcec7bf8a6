//! The three services as plain processes: how each is launched, readiness over `NOTIFY_SOCKET`,
//! a real call as a readiness probe, socket activation with a caller-owned listener, and memory.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::wire::api::{GetResourceRequest, GetResourceServiceClient};
use common::wire::attestation_agent::{AttestationAgentServiceClient, GetEvidenceRequest};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use tokio::net::UnixDatagram;

use crate::http::HttpConnection;

/// Upper bound of any wait for a service; reached only when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The resource every CDH in the bench serves, offline or through the KBS.
pub const RESOURCE_URI: &str = "kbs:///default/key/1";

/// The REST route of [`RESOURCE_URI`].
pub const RESOURCE_ROUTE: &str = "/cdh/resource/default/key/1";

/// The REST route of evidence.
pub const EVIDENCE_ROUTE: &str = "/aa/evidence?runtime_data=bench";

/// One of the three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The Attestation Agent.
    Aa,
    /// The Confidential Data Hub.
    Cdh,
    /// The API Server REST.
    Asr,
}

impl Kind {
    /// All three, in start order.
    pub const ALL: [Kind; 3] = [Kind::Aa, Kind::Cdh, Kind::Asr];

    /// The binary name, which also names the service in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Aa => "attestation-agent",
            Kind::Cdh => "confidential-data-hub",
            Kind::Asr => "api-server-rest",
        }
    }

    /// The variable that overrides where the binary is.
    fn env_var(self) -> &'static str {
        match self {
            Kind::Aa => "AA_BIN",
            Kind::Cdh => "CDH_BIN",
            Kind::Asr => "ASR_BIN",
        }
    }
}

/// Where a service can be reached.
#[derive(Debug, Clone)]
pub enum Address {
    /// A ttrpc unix socket.
    Unix(PathBuf),
    /// A loopback HTTP port.
    Tcp(u16),
}

impl Address {
    /// The `unix://` URI of a socket address.
    pub fn uri(&self) -> String {
        match self {
            Address::Unix(path) => format!("unix://{}", path.display()),
            Address::Tcp(port) => format!("http://127.0.0.1:{port}"),
        }
    }
}

/// The three binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    paths: [PathBuf; 3],
}

impl Binaries {
    /// `AA_BIN`, `CDH_BIN` and `ASR_BIN`, each defaulting to this workspace's release build.
    pub fn from_env() -> Result<Self> {
        // What `make release` gathers: the binaries an image ships.
        let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/stack");
        let paths = Kind::ALL.map(|kind| match std::env::var_os(kind.env_var()) {
            Some(path) => PathBuf::from(path),
            None => release.join(kind.name()),
        });
        Self::checked(paths, |kind| {
            std::env::var_os(kind.env_var()).map_or("the default", |_| kind.env_var())
        })
    }

    /// The three binaries in `dir`, such as the workspace's debug build for a test.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        Self::checked(Kind::ALL.map(|kind| dir.join(kind.name())), |_| {
            "the directory"
        })
    }

    fn checked(paths: [PathBuf; 3], source: impl Fn(Kind) -> &'static str) -> Result<Self> {
        for (kind, path) in Kind::ALL.iter().zip(&paths) {
            if !path.is_file() {
                bail!(
                    "{} binary {} (from {}) does not exist: run `make release` or set {}",
                    kind.name(),
                    path.display(),
                    source(*kind),
                    kind.env_var()
                );
            }
        }
        Ok(Self { paths })
    }

    /// The binary of `kind`.
    pub fn path(&self, kind: Kind) -> &Path {
        &self.paths[kind as usize]
    }
}

/// How to start one service instance: binary, arguments, environment and where it serves.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Which service.
    pub kind: Kind,
    /// Where it will serve.
    pub address: Address,
    args: Vec<OsString>,
    env: Vec<(String, OsString)>,
}

impl Launch {
    /// The same launch with `args` appended to its flags.
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(OsString::from));
        self
    }
}

/// The runtime directory of one run and the files the services read from it.
pub struct Workspace {
    dir: tempfile::TempDir,
    binaries: Binaries,
    instances: usize,
}

impl Workspace {
    /// A fresh runtime directory with the offline resources file.
    pub fn new(binaries: Binaries) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("guest-components-stack.")
            .tempdir()
            .context("failed to create the bench runtime directory")?;
        let resources = dir.path().join("resources.json");
        std::fs::write(
            &resources,
            "{\"default/key/1\": \"YmVuY2gtcmVzb3VyY2U=\"}\n",
        )
        .with_context(|| format!("failed to write {}", resources.display()))?;
        Ok(Self {
            dir,
            binaries,
            instances: 0,
        })
    }

    /// The binaries under test.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// A path in the runtime directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A path in the runtime directory no other instance of this run uses.
    fn unique(&mut self, stem: &str, extension: &str) -> PathBuf {
        self.instances += 1;
        self.path(&format!("{stem}-{}.{extension}", self.instances))
    }

    /// An Attestation Agent on a new socket, with the embedded default (no KBS).
    pub fn aa(&mut self) -> Launch {
        let socket = self.unique("aa", "sock");
        self.aa_on(socket, None)
    }

    /// An Attestation Agent on `socket`; with `kbs_url` it gets tokens from that KBS (`cc_kbc`),
    /// else it has none.
    pub fn aa_on(&mut self, socket: PathBuf, kbs_url: Option<&str>) -> Launch {
        let address = Address::Unix(socket);
        let eventlog = self.unique("aa", "eventlog");
        let kbc_params = kbs_url.map_or("offline_fs_kbc::null".to_owned(), |url| {
            format!("cc_kbc::{url}")
        });
        Launch {
            kind: Kind::Aa,
            args: vec!["--attestation_sock".into(), address.uri().into()],
            env: vec![
                ("AA_EVENTLOG_PATH".into(), eventlog.into()),
                ("AA_KBC_PARAMS".into(), kbc_params.into()),
            ],
            address,
        }
    }

    /// A CDH with the offline_fs KBC on a new socket.
    pub fn cdh_offline(&mut self, aa: &Address) -> Result<Launch> {
        let socket = self.unique("cdh", "sock");
        self.cdh_on(socket, aa, None)
    }

    /// A CDH on `socket` using the AA at `aa`; with `kbs_url` the cc_kbc, else offline_fs.
    pub fn cdh_on(
        &mut self,
        socket: PathBuf,
        aa: &Address,
        kbs_url: Option<&str>,
    ) -> Result<Launch> {
        let address = Address::Unix(socket);
        let kbc = match kbs_url {
            Some(url) => format!("name = \"cc_kbc\"\nurl = \"{url}\"\n"),
            None => "name = \"offline_fs_kbc\"\nurl = \"null\"\n".to_owned(),
        };
        let config = self.unique("cdh", "toml");
        let text = format!(
            "socket = \"{}\"\n\n[aa]\naa_socket = \"{}\"\n\n[kbc]\n{kbc}",
            address.uri(),
            aa.uri()
        );
        std::fs::write(&config, text)
            .with_context(|| format!("failed to write {}", config.display()))?;
        Ok(Launch {
            kind: Kind::Cdh,
            args: vec!["-c".into(), config.into()],
            env: vec![(
                "OFFLINE_FS_KBC_EXTRA_FILE_PATH".into(),
                self.path("resources.json").into(),
            )],
            address,
        })
    }

    /// An API Server REST with every feature on `port`, in front of `aa` and `cdh`.
    pub fn asr_on(&self, port: u16, aa: &Address, cdh: &Address) -> Launch {
        Launch {
            kind: Kind::Asr,
            args: vec![
                "--features".into(),
                "all".into(),
                "--bind".into(),
                format!("127.0.0.1:{port}").into(),
                "--aa_addr".into(),
                aa.uri().into(),
                "--cdh_addr".into(),
                cdh.uri().into(),
            ],
            env: Vec::new(),
            address: Address::Tcp(port),
        }
    }

    /// Starts `launch`; with `notify`, it reports readiness to that socket path; with
    /// `listener`, that descriptor becomes its socket-activated fd 3.
    pub fn spawn(
        &mut self,
        launch: &Launch,
        notify: Option<&Path>,
        listener: Option<RawFd>,
    ) -> Result<Running> {
        let binary = self.binaries.path(launch.kind).to_owned();
        let log = self.unique(launch.kind.name(), "log");
        let stderr = std::fs::File::create(&log)
            .with_context(|| format!("failed to create {}", log.display()))?;

        let mut command = match listener {
            Some(fd) => activated_command(&binary, fd),
            None => Command::new(&binary),
        };
        command
            .args(&launch.args)
            .env_clear()
            .env("RUST_LOG", "warn")
            .envs(launch.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(path) = notify {
            command.env("NOTIFY_SOCKET", path);
        }
        if listener.is_some() {
            command.env("LISTEN_FDS", "1");
        }
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        Ok(Running {
            child,
            launch: launch.clone(),
            log,
        })
    }
}

/// `sh` sets `LISTEN_PID` to its own pid and execs the service, which so keeps that pid, as
/// systemd hands over a listener; `fd` lands on descriptor 3 (the caller sets `LISTEN_FDS`).
fn activated_command(binary: &Path, fd: RawFd) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""])
        .arg(binary);
    // SAFETY: dup2 and fcntl are async-signal-safe and touch only the child's descriptors.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                fcntl(3, FcntlArg::F_SETFD(FdFlag::empty()))?;
            } else {
                nix::unistd::dup2(fd, 3)?;
            }
            Ok(())
        });
    }
    command
}

/// A started service process, killed when dropped.
pub struct Running {
    child: Child,
    launch: Launch,
    log: PathBuf,
}

impl Running {
    /// Where it serves.
    pub fn address(&self) -> &Address {
        &self.launch.address
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of its log, when the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let status = self
            .child
            .try_wait()
            .with_context(|| format!("failed to poll {}", self.launch.kind.name()))?;
        match status {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited with {status}; its log {} ends with:\n{}",
                self.launch.kind.name(),
                self.log.display(),
                log_tail(&self.log)
            ),
        }
    }

    /// Calls the service in a tight loop until one real call succeeds.
    pub async fn wait_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if probe(&self.launch).await {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} at {} answered no call within {PATIENCE:?}; its log {} ends with:\n{}",
                    self.launch.kind.name(),
                    self.launch.address.uri(),
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            // Short enough to see the first moment it serves, long enough not to starve it.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) -> Result<()> {
        self.child
            .kill()
            .with_context(|| format!("failed to kill {}", self.launch.kind.name()))?;
        self.child
            .wait()
            .with_context(|| format!("failed to reap {}", self.launch.kind.name()))?;
        Ok(())
    }

    /// SIGTERM, then waits until the process has exited, as systemd stops a service.
    pub fn terminate(&mut self) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(
            i32::try_from(self.pid()).context("process id out of range")?,
        );
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .with_context(|| format!("failed to signal {}", self.launch.kind.name()))?;
        self.child
            .wait()
            .with_context(|| format!("failed to reap {}", self.launch.kind.name()))?;
        Ok(())
    }

    /// Waits until its unix socket accepts a connection, without calling anything.
    pub async fn wait_accepting(&mut self) -> Result<()> {
        let Address::Unix(path) = self.launch.address.clone() else {
            bail!("{} does not serve a unix socket", self.launch.kind.name());
        };
        let deadline = Instant::now() + PATIENCE;
        while tokio::net::UnixStream::connect(&path).await.is_err() {
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not accept on {} within {PATIENCE:?}; its log {} ends with:\n{}",
                    self.launch.kind.name(),
                    path.display(),
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// VmRSS and VmHWM of the process now.
    pub fn memory(&self) -> Result<Memory> {
        Memory::of(self.pid())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Already reaped when `kill` ran; otherwise this is the cleanup of a failed run.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a service log, for an error message.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        }
        Err(e) => format!("(unreadable: {e})"),
    }
}

/// One real call: GetEvidence, GetResource, or `GET /aa/evidence`; true when it succeeded.
async fn probe(launch: &Launch) -> bool {
    match (&launch.address, launch.kind) {
        (Address::Tcp(port), _) => match HttpConnection::connect(*port).await {
            Ok(mut connection) => matches!(connection.get(EVIDENCE_ROUTE).await, Ok(200)),
            Err(_) => false,
        },
        (address, Kind::Aa) => evidence_call(address).await.is_ok(),
        (address, _) => resource_call(address).await.is_ok(),
    }
}

/// A ttrpc context with the bench's patience as the deadline.
pub fn context() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(PATIENCE.as_nanos().try_into().unwrap_or(i64::MAX))
}

/// Connects to a ttrpc address.
pub async fn connect(address: &Address) -> Result<ttrpc::r#async::Client> {
    ttrpc::r#async::Client::connect(&address.uri())
        .await
        .with_context(|| format!("failed to connect to {}", address.uri()))
}

async fn evidence_call(address: &Address) -> Result<()> {
    let client = AttestationAgentServiceClient::new(connect(address).await?);
    let request = GetEvidenceRequest {
        runtime_data: b"bench".to_vec(),
    };
    client.get_evidence(context(), &request).await?;
    Ok(())
}

async fn resource_call(address: &Address) -> Result<()> {
    let client = GetResourceServiceClient::new(connect(address).await?);
    let request = GetResourceRequest {
        resource_path: RESOURCE_URI.to_owned(),
    };
    client.get_resource(context(), &request).await?;
    Ok(())
}

/// Waits for a datagram holding the line `READY=1`; `None` when none came within `limit`.
pub async fn wait_ready(notify: &UnixDatagram, limit: Duration) -> Result<Option<Instant>> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    loop {
        let received = tokio::time::timeout_at(deadline, notify.recv(&mut buffer)).await;
        let Ok(received) = received else {
            return Ok(None);
        };
        let len = received.context("failed to read the notify socket")?;
        let message = String::from_utf8_lossy(&buffer[..len]);
        if message.lines().any(|line| line == "READY=1") {
            return Ok(Some(Instant::now()));
        }
    }
}

/// Resident memory of one process, in KiB.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Memory {
    /// Resident set size now.
    pub vm_rss_kib: u64,
    /// Peak resident set size.
    pub vm_hwm_kib: u64,
}

impl Memory {
    /// Reads `/proc/<pid>/status`.
    fn of(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("{path} has no readable {name}"))
        };
        Ok(Self {
            vm_rss_kib: field("VmRSS:")?,
            vm_hwm_kib: field("VmHWM:")?,
        })
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("failed to bind an ephemeral loopback port")?;
    Ok(listener.local_addr()?.port())
}
