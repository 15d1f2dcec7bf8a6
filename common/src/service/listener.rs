//! Listeners: endpoints, the socket-activated listener or one bound here (private, never
//! stealing a live socket), and waiting until an endpoint accepts.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage, UnixAddr,
};

use super::ServiceError;
use crate::systemd::InheritedListeners;

/// The longest unix socket path the kernel accepts (`sun_path` minus its terminating NUL).
const MAX_UNIX_PATH: usize = 107;

/// How many pending connections the kernel queues for a listener we bind.
const BACKLOG: i32 = 1024;

/// Where a service listens: a unix socket path or a TCP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix stream socket at an absolute path.
    Unix(PathBuf),
    /// A TCP socket address.
    Tcp(SocketAddr),
}

impl Endpoint {
    /// Parses `unix:///abs`, `unix:/abs`, `/abs`, `tcp://ip:port` or `ip:port`.
    pub fn parse(input: &str) -> Result<Self, ServiceError> {
        let invalid = |reason| ServiceError::InvalidEndpoint {
            input: input.to_string(),
            reason,
        };
        if let Some(path) = input
            .strip_prefix("unix://")
            .or_else(|| input.strip_prefix("unix:"))
            .or_else(|| input.starts_with('/').then_some(input))
        {
            if !path.starts_with('/') {
                return Err(invalid("a unix socket path must be absolute"));
            }
            if path.len() > MAX_UNIX_PATH {
                return Err(invalid("the unix socket path is longer than 107 bytes"));
            }
            if path.contains('\0') {
                return Err(invalid("the unix socket path contains a NUL byte"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let address = input.strip_prefix("tcp://").unwrap_or(input);
        address
            .parse()
            .map(Endpoint::Tcp)
            .map_err(|_| invalid("expected unix:///path, /path, tcp://ip:port or ip:port"))
    }

    /// The URI form ttrpc expects, e.g. `unix:///run/x.sock` or `tcp://127.0.0.1:8006`.
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "tcp://{address}"),
        }
    }
}

/// A listening socket, non-blocking, ready to hand to tokio, ttrpc or tonic.
#[derive(Debug)]
pub enum ServiceListener {
    /// A unix stream listener.
    Unix(UnixListener),
    /// A TCP listener.
    Tcp(TcpListener),
}

/// Where a listener came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerOrigin {
    /// Passed by systemd socket activation.
    Inherited,
    /// Bound by this process.
    Bound,
}

/// Takes the inherited listener for `endpoint` (matched by `fd_name` or kind), else binds one.
pub fn acquire_listener(
    endpoint: &Endpoint,
    inherited: &mut InheritedListeners,
    fd_name: Option<&str>,
) -> Result<(ServiceListener, ListenerOrigin), ServiceError> {
    let inherited_error = |source| ServiceError::Inherited {
        endpoint: endpoint.clone(),
        source,
    };
    let listen_error = |source| ServiceError::Listen {
        endpoint: endpoint.clone(),
        source,
    };

    let taken = match endpoint {
        Endpoint::Unix(_) => inherited
            .take_unix(fd_name)
            .map_err(inherited_error)?
            .map(ServiceListener::Unix),
        Endpoint::Tcp(_) => inherited
            .take_tcp(fd_name)
            .map_err(inherited_error)?
            .map(ServiceListener::Tcp),
    };
    if let Some(listener) = taken {
        listener.set_nonblocking().map_err(listen_error)?;
        warn_if_elsewhere(&listener, endpoint);
        tracing::info!(%endpoint, "using the socket-activated listener");
        return Ok((listener, ListenerOrigin::Inherited));
    }

    let listener = match endpoint {
        Endpoint::Unix(path) => ServiceListener::Unix(bind_unix(endpoint, path)?),
        Endpoint::Tcp(address) => ServiceListener::Tcp(bind_tcp(*address).map_err(listen_error)?),
    };
    tracing::info!(%endpoint, "listening");
    Ok((listener, ListenerOrigin::Bound))
}

/// The socket unit, not our config, decides where an inherited socket lives; say so when the
/// two disagree, since clients following the config would miss it.
fn warn_if_elsewhere(listener: &ServiceListener, endpoint: &Endpoint) {
    let actual = match listener {
        ServiceListener::Unix(listener) => listener.local_addr().ok().and_then(|address| {
            address
                .as_pathname()
                .map(|path| Endpoint::Unix(path.into()))
        }),
        ServiceListener::Tcp(listener) => listener.local_addr().ok().map(Endpoint::Tcp),
    };
    if let Some(actual) = actual.filter(|actual| actual != endpoint) {
        tracing::warn!(
            %endpoint,
            %actual,
            "the socket-activated listener is not at the configured endpoint"
        );
    }
}

impl ServiceListener {
    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            ServiceListener::Unix(listener) => listener.set_nonblocking(true),
            ServiceListener::Tcp(listener) => listener.set_nonblocking(true),
        }
    }
}

/// Binds a unix listener at `path`, replacing a stale socket but never a live one or a file.
fn bind_unix(endpoint: &Endpoint, path: &Path) -> Result<UnixListener, ServiceError> {
    let path_error = |action, source| ServiceError::SocketPath {
        action,
        path: path.to_path_buf(),
        source,
    };

    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|source| path_error("create the directory of", source))?;
    }
    remove_stale_socket(path)?;

    let socket = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|errno| path_error("create a socket for", errno.into()))?;
    let address = UnixAddr::new(path).map_err(|errno| path_error("address", errno.into()))?;
    bind(socket.as_raw_fd(), &address).map_err(|errno| ServiceError::Listen {
        endpoint: endpoint.clone(),
        source: errno.into(),
    })?;
    // chmod between bind and listen rather than a umask: the umask is process-wide and other
    // threads may be creating files, and until listen() nobody can connect, so there is no
    // moment in which the socket is reachable with looser permissions.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| path_error("restrict the permissions of", source))?;
    start_listening(&socket).map_err(|source| ServiceError::Listen {
        endpoint: endpoint.clone(),
        source,
    })?;
    Ok(UnixListener::from(socket))
}

/// Removes a socket file nobody answers on; refuses a live socket or any other file.
fn remove_stale_socket(path: &Path) -> Result<(), ServiceError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServiceError::SocketPath {
                action: "inspect",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(ServiceError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServiceError::AddressInUse {
            path: path.to_path_buf(),
        }),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale socket");
            std::fs::remove_file(path).map_err(|source| ServiceError::SocketPath {
                action: "remove the stale socket",
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(ServiceError::SocketPath {
            action: "probe the existing socket",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Binds a TCP listener with `SO_REUSEADDR`, so a restart does not wait out TIME_WAIT.
fn bind_tcp(address: SocketAddr) -> io::Result<TcpListener> {
    let family = match address {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let socket = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    bind(socket.as_raw_fd(), &SockaddrStorage::from(address))?;
    start_listening(&socket)?;
    Ok(TcpListener::from(socket))
}

fn start_listening(socket: &OwnedFd) -> io::Result<()> {
    let backlog = Backlog::new(BACKLOG)?;
    listen(socket, backlog)?;
    Ok(())
}

/// Connects to `endpoint` until a connection succeeds, for at most `bound`.
pub async fn wait_until_accepting(
    endpoint: &Endpoint,
    bound: Duration,
) -> Result<(), ServiceError> {
    let deadline = tokio::time::Instant::now() + bound;
    let mut pause = Duration::from_millis(2);
    loop {
        let attempt = match endpoint {
            Endpoint::Unix(path) => tokio::net::UnixStream::connect(path).await.map(drop),
            Endpoint::Tcp(address) => tokio::net::TcpStream::connect(address).await.map(drop),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(source) if tokio::time::Instant::now() + pause > deadline => {
                return Err(ServiceError::NotAccepting {
                    endpoint: endpoint.clone(),
                    bound,
                    source,
                })
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn unix(path: &str) -> Endpoint {
        Endpoint::Unix(PathBuf::from(path))
    }

    #[test]
    fn parses_the_accepted_forms() {
        let sock = "/run/confidential-containers/cdh.sock";
        assert_eq!(
            Endpoint::parse(&format!("unix://{sock}")).unwrap(),
            unix(sock)
        );
        assert_eq!(
            Endpoint::parse(&format!("unix:{sock}")).unwrap(),
            unix(sock)
        );
        assert_eq!(Endpoint::parse(sock).unwrap(), unix(sock));
        let tcp = Endpoint::Tcp("127.0.0.1:8006".parse().unwrap());
        assert_eq!(Endpoint::parse("tcp://127.0.0.1:8006").unwrap(), tcp);
        assert_eq!(Endpoint::parse("127.0.0.1:8006").unwrap(), tcp);
        assert_eq!(
            Endpoint::parse("[::1]:8006").unwrap(),
            Endpoint::Tcp("[::1]:8006".parse().unwrap())
        );
    }

    #[test]
    fn rejects_everything_else_naming_the_input() {
        for input in [
            "unix://run/x.sock",
            "unix:x.sock",
            "x.sock",
            "vsock://3:1024",
            "tcp://localhost:8006",
            "127.0.0.1",
            "",
        ] {
            let err = Endpoint::parse(input).unwrap_err();
            assert!(err.to_string().contains(&format!("{input:?}")), "{err}");
        }
        let long = format!("/{}", "a".repeat(MAX_UNIX_PATH));
        assert!(Endpoint::parse(&long).is_err());
    }

    #[test]
    fn displays_as_a_uri() {
        let endpoint = Endpoint::parse("/run/aa.sock").unwrap();
        assert_eq!(endpoint.to_string(), "unix:///run/aa.sock");
        assert_eq!(endpoint.uri(), "unix:///run/aa.sock");
        let endpoint = Endpoint::parse("127.0.0.1:8006").unwrap();
        assert_eq!(endpoint.uri(), "tcp://127.0.0.1:8006");
    }

    #[test]
    fn binds_a_private_socket_creating_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/aa.sock");
        let endpoint = Endpoint::Unix(path.clone());

        let (listener, origin) =
            acquire_listener(&endpoint, &mut InheritedListeners::default(), None).unwrap();
        assert_eq!(origin, ListenerOrigin::Bound);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let parent_mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode();
        assert_eq!(parent_mode & 0o022, 0, "parent is writable by others");

        let ServiceListener::Unix(listener) = listener else {
            panic!("expected a unix listener");
        };
        let _client = UnixStream::connect(&path).unwrap();
        // Non-blocking, yet the queued connection is there to accept.
        assert!(listener.accept().is_ok());
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());

        let endpoint = Endpoint::Unix(path.clone());
        let (_listener, origin) =
            acquire_listener(&endpoint, &mut InheritedListeners::default(), None).unwrap();
        assert_eq!(origin, ListenerOrigin::Bound);
        UnixStream::connect(&path).unwrap();
    }

    #[test]
    fn refuses_a_live_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.sock");
        let _live = UnixListener::bind(&path).unwrap();

        let endpoint = Endpoint::Unix(path.clone());
        let err =
            acquire_listener(&endpoint, &mut InheritedListeners::default(), None).unwrap_err();
        assert!(matches!(err, ServiceError::AddressInUse { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        UnixStream::connect(&path).unwrap();
    }

    #[test]
    fn never_removes_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, "keep me").unwrap();

        let endpoint = Endpoint::Unix(path.clone());
        let err =
            acquire_listener(&endpoint, &mut InheritedListeners::default(), None).unwrap_err();
        assert!(matches!(err, ServiceError::NotASocket { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }

    #[test]
    fn binds_tcp_and_reports_a_taken_port() {
        let endpoint = Endpoint::parse("127.0.0.1:0").unwrap();
        let (listener, origin) =
            acquire_listener(&endpoint, &mut InheritedListeners::default(), None).unwrap();
        assert_eq!(origin, ListenerOrigin::Bound);
        let ServiceListener::Tcp(listener) = listener else {
            panic!("expected a tcp listener");
        };
        let taken = Endpoint::Tcp(listener.local_addr().unwrap());

        let err = acquire_listener(&taken, &mut InheritedListeners::default(), None).unwrap_err();
        assert!(err.to_string().contains(&taken.to_string()), "{err}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waits_until_a_late_listener_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.sock");
        let endpoint = Endpoint::Unix(path.clone());

        let waiter = tokio::spawn({
            let endpoint = endpoint.clone();
            async move { wait_until_accepting(&endpoint, Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let _listener = UnixListener::bind(&path).unwrap();
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn gives_up_naming_the_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Endpoint::Unix(dir.path().join("never.sock"));
        let err = wait_until_accepting(&endpoint, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("never.sock"), "{err}");
    }
}
