//! The test KBS: RCAR over HTTP on loopback with cookie sessions, sample-evidence
//! verification, a deny-list policy, JWE-sealed resources from a directory and ES256 tokens.

mod jwt;
mod seal;
mod server;
mod tls;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use rand_core::OsRng;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use tls::TlsIdentity;

/// How a test KBS runs.
#[derive(Debug, Clone)]
pub struct TestKbsConfig {
    /// Resources live at `<resource_dir>/<repo>/<type>/<tag>`.
    pub resource_dir: PathBuf,
    /// Resources (`repo/type/tag`) the policy denies; everything else is allowed.
    pub deny: Vec<String>,
    /// How long a session cookie stays valid after the challenge.
    pub session_ttl: Duration,
    /// Lifetime of issued tokens (their `exp`).
    pub token_ttl: Duration,
    /// Address to bind; must be loopback.
    pub listen: SocketAddr,
    /// Serve HTTPS with this identity instead of plain HTTP.
    pub tls: Option<TlsIdentity>,
}

impl TestKbsConfig {
    /// Allow-all policy, five-minute sessions and tokens, an ephemeral loopback port.
    pub fn new(resource_dir: impl Into<PathBuf>) -> Self {
        Self {
            resource_dir: resource_dir.into(),
            deny: Vec::new(),
            session_ttl: Duration::from_secs(300),
            token_ttl: Duration::from_secs(300),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
        }
    }
}

/// Writes `content` as the resource `repo/type/tag` under a resource directory, the layout
/// [`TestKbsConfig::resource_dir`] serves.
pub fn write_resource(dir: &Path, path: &str, content: &[u8]) -> anyhow::Result<()> {
    let file = dir.join(path);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    std::fs::write(&file, content).with_context(|| format!("failed to write {}", file.display()))
}

/// Requests the test KBS received, by endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    /// `POST /kbs/v0/auth`.
    pub auth: u64,
    /// `POST /kbs/v0/attest`.
    pub attest: u64,
    /// `GET /kbs/v0/resource/...`.
    pub resource: u64,
}

/// A running test KBS.
pub struct TestKbs {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<KbsState>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

/// What the handlers share.
struct KbsState {
    resource_dir: PathBuf,
    deny: HashSet<String>,
    session_ttl: Duration,
    token_ttl: Duration,
    token_key: SigningKey,
    sessions: Mutex<HashMap<String, server::Session>>,
    received: [AtomicU64; 3],
}

impl TestKbs {
    /// Binds `config.listen` (loopback only) and serves until [`TestKbs::shutdown`].
    pub async fn start(config: TestKbsConfig) -> anyhow::Result<Self> {
        if !config.listen.ip().is_loopback() {
            bail!(
                "refusing to bind {}: the test KBS only listens on loopback",
                config.listen
            );
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("failed to bind {}", config.listen))?;
        let addr = listener.local_addr()?;

        let state = Arc::new(KbsState {
            resource_dir: config.resource_dir,
            deny: config.deny.into_iter().collect(),
            session_ttl: config.session_ttl,
            token_ttl: config.token_ttl,
            token_key: SigningKey::random(&mut OsRng),
            sessions: Mutex::new(HashMap::new()),
            received: Default::default(),
        });

        let (stop, stopped) = oneshot::channel::<()>();
        let app = server::router(Arc::clone(&state));
        let (scheme, server) = match &config.tls {
            Some(identity) => {
                let acceptor = identity.acceptor()?;
                let server = tokio::spawn(tls::serve(listener, app, acceptor, stopped));
                ("https", server)
            }
            None => {
                let server = tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            // A dropped sender stops the server just like an explicit stop.
                            let _ = stopped.await;
                        })
                        .await
                });
                ("http", server)
            }
        };
        Ok(Self {
            addr,
            scheme,
            state,
            stop,
            server,
        })
    }

    /// Base URL of the KBS, `http://127.0.0.1:PORT` (or `https://` with TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far, by endpoint.
    pub fn counts(&self) -> EndpointCounts {
        let received = |i: usize| self.state.received[i].load(Ordering::Relaxed);
        EndpointCounts {
            auth: received(server::AUTH),
            attest: received(server::ATTEST),
            resource: received(server::RESOURCE),
        }
    }

    /// The public key that verifies issued tokens, SPKI PEM.
    pub fn token_public_key_pem(&self) -> anyhow::Result<String> {
        self.state
            .token_key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .context("failed to encode the token key")
    }

    /// Forgets every session, as a KBS restart would; cookies in use become invalid.
    pub fn flush_sessions(&self) {
        self.state.sessions().clear();
    }

    /// Stops accepting, finishes in-flight requests and waits for the server to end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        // The server may already have ended on its own; its result below says how.
        let _ = self.stop.send(());
        self.server
            .await
            .context("test KBS task panicked")?
            .context("test KBS server failed")
    }
}

impl KbsState {
    /// The session table; a poisoned lock only means a handler panicked mid-test.
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, server::Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
