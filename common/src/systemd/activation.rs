//! Socket activation: the listening sockets systemd passes as fds 3.. with `LISTEN_*` variables.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage,
};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// Why the inherited sockets could not be taken or used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A `LISTEN_*` variable has a value that cannot be parsed.
    #[error("invalid {variable} {value:?} from the environment: {reason}")]
    InvalidVariable {
        /// The variable name.
        variable: &'static str,
        /// Its raw value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An fd announced by `LISTEN_FDS` is not open or cannot be configured.
    #[error("inherited fd {fd} ({name}) is unusable: {source}")]
    BadFd {
        /// The fd number.
        fd: RawFd,
        /// Its name from `LISTEN_FDNAMES`.
        name: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The fd with the requested name is not the kind of socket the caller needs.
    #[error("inherited fd {fd} ({name}) is not a listening {wanted} socket")]
    WrongKind {
        /// The fd number.
        fd: RawFd,
        /// Its name from `LISTEN_FDNAMES`.
        name: String,
        /// What the caller asked for.
        wanted: &'static str,
    },
}

/// One passed fd, `None` once a caller has taken it.
#[derive(Debug)]
struct Passed {
    number: RawFd,
    name: String,
    fd: Option<OwnedFd>,
}

/// The listening sockets this process inherited from systemd, each taken at most once.
#[derive(Debug, Default)]
pub struct InheritedListeners {
    passed: Vec<Passed>,
}

/// The kind of listener a caller asks for.
#[derive(Clone, Copy)]
enum Kind {
    Unix,
    Tcp,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Unix => "unix stream",
            Kind::Tcp => "tcp",
        }
    }

    fn matches(self, fd: &OwnedFd) -> bool {
        let listening_stream = getsockopt(fd, sockopt::SockType) == Ok(SockType::Stream)
            && getsockopt(fd, sockopt::AcceptConn) == Ok(true);
        let family = getsockname::<SockaddrStorage>(fd.as_raw_fd())
            .ok()
            .and_then(|address| address.family());
        listening_stream
            && match self {
                Kind::Unix => family == Some(AddressFamily::Unix),
                Kind::Tcp => matches!(family, Some(AddressFamily::Inet | AddressFamily::Inet6)),
            }
    }
}

impl InheritedListeners {
    /// Takes the sockets systemd passed to this process and unsets `LISTEN_PID`, `LISTEN_FDS`
    /// and `LISTEN_FDNAMES`, so no child inherits them.
    ///
    /// Call it first thing in `main`, before any thread exists (in particular before the
    /// tokio runtime is built): changing the environment while another thread may read it is
    /// undefined behaviour in libc, which is why `std::env::remove_var` is `unsafe` from
    /// edition 2024 on. Without `LISTEN_PID` naming this process there is nothing to take.
    pub fn take_from_env() -> Result<Self, ActivationError> {
        let pid = std::env::var("LISTEN_PID").ok();
        let fds = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").ok();
        for variable in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(variable);
        }

        let announced = parse_listen_env(
            pid.as_deref(),
            fds.as_deref(),
            names.as_deref(),
            std::process::id(),
        )?;
        let mut passed = Vec::with_capacity(announced.len());
        for (number, name) in announced {
            passed.push(Passed {
                fd: Some(adopt(number, &name)?),
                number,
                name,
            });
        }
        Ok(Self { passed })
    }

    /// Takes a listening unix stream socket: the one named `name`, else the first unclaimed.
    ///
    /// The fallback serves units that name no sockets (systemd then names each fd after its
    /// socket unit); a name that exists but belongs to another kind of socket is an error.
    pub fn take_unix(
        &mut self,
        name: Option<&str>,
    ) -> Result<Option<UnixListener>, ActivationError> {
        Ok(self.take(Kind::Unix, name)?.map(UnixListener::from))
    }

    /// Takes a listening TCP socket: the one named `name`, else the first unclaimed.
    pub fn take_tcp(&mut self, name: Option<&str>) -> Result<Option<TcpListener>, ActivationError> {
        Ok(self.take(Kind::Tcp, name)?.map(TcpListener::from))
    }

    /// How many passed sockets are still unclaimed.
    pub fn len(&self) -> usize {
        self.passed.iter().filter(|p| p.fd.is_some()).count()
    }

    /// Whether no passed socket is left unclaimed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An fd named `name` must be of `kind`; without such a name, the first of `kind` wins.
    fn take(&mut self, kind: Kind, name: Option<&str>) -> Result<Option<OwnedFd>, ActivationError> {
        let named = name.and_then(|name| {
            self.passed
                .iter_mut()
                .find(|p| p.fd.is_some() && p.name == name)
        });
        if let Some(passed) = named {
            let matches = passed.fd.as_ref().is_some_and(|fd| kind.matches(fd));
            if !matches {
                return Err(ActivationError::WrongKind {
                    fd: passed.number,
                    name: passed.name.clone(),
                    wanted: kind.label(),
                });
            }
            return Ok(passed.fd.take());
        }
        let first = self
            .passed
            .iter_mut()
            .find(|p| p.fd.as_ref().is_some_and(|fd| kind.matches(fd)));
        Ok(first.and_then(|p| p.fd.take()))
    }
}

/// Takes ownership of a passed fd after checking it is open, and keeps it from leaking into
/// children.
fn adopt(number: RawFd, name: &str) -> Result<OwnedFd, ActivationError> {
    let bad_fd = |errno: nix::errno::Errno| ActivationError::BadFd {
        fd: number,
        name: name.to_string(),
        source: errno.into(),
    };
    fcntl(number, FcntlArg::F_GETFD).map_err(bad_fd)?;
    fcntl(number, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(bad_fd)?;
    // SAFETY: the fd is open (F_GETFD succeeded), systemd handed it to this process via
    // LISTEN_PID, and nothing else owns it: the variables are gone, so it is adopted once.
    Ok(unsafe { OwnedFd::from_raw_fd(number) })
}

/// The fd numbers and names announced to `own_pid`, empty when the variables are for another
/// process or absent.
fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    own_pid: u32,
) -> Result<Vec<(RawFd, String)>, ActivationError> {
    let invalid = |variable, value: &str, reason: &str| ActivationError::InvalidVariable {
        variable,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    let pid: u32 = pid
        .parse()
        .map_err(|_| invalid("LISTEN_PID", pid, "not a process id"))?;
    if pid != own_pid {
        return Ok(Vec::new());
    }
    let count: RawFd = fds
        .parse()
        .ok()
        .filter(|count| (0..=4096).contains(count))
        .ok_or_else(|| invalid("LISTEN_FDS", fds, "not a count of file descriptors"))?;

    let names: Vec<String> = match names {
        Some(names) => {
            let names: Vec<String> = names.split(':').map(str::to_string).collect();
            if names.len() != count as usize {
                return Err(invalid(
                    "LISTEN_FDNAMES",
                    &names.join(":"),
                    &format!("has {} names for {count} fds", names.len()),
                ));
            }
            names
        }
        // What sd_listen_fds_with_names reports when systemd gave no names.
        None => vec!["unknown".to_string(); count as usize],
    };
    Ok((FIRST_FD..).zip(names).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nothing_without_variables() {
        assert!(parse_listen_env(None, None, None, 7).unwrap().is_empty());
        assert!(parse_listen_env(Some("7"), None, None, 7)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn nothing_for_another_process() {
        assert!(parse_listen_env(Some("8"), Some("2"), None, 7)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn fds_are_numbered_from_three_with_names() {
        let fds = parse_listen_env(Some("7"), Some("2"), Some("aa:rest"), 7).unwrap();
        assert_eq!(fds, vec![(3, "aa".to_string()), (4, "rest".to_string())]);
    }

    #[test]
    fn missing_names_default_to_unknown() {
        let fds = parse_listen_env(Some("7"), Some("1"), None, 7).unwrap();
        assert_eq!(fds, vec![(3, "unknown".to_string())]);
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let err = parse_listen_env(Some("x"), Some("1"), None, 7).unwrap_err();
        assert!(err.to_string().contains("LISTEN_PID"), "{err}");
        let err = parse_listen_env(Some("7"), Some("-1"), None, 7).unwrap_err();
        assert!(err.to_string().contains("LISTEN_FDS"), "{err}");
        let err = parse_listen_env(Some("7"), Some("2"), Some("one"), 7).unwrap_err();
        assert!(err.to_string().contains("LISTEN_FDNAMES"), "{err}");
    }

    #[test]
    fn take_by_name_checks_the_kind() {
        let dir = tempfile::tempdir().unwrap();
        let unix = UnixListener::bind(dir.path().join("s")).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_port = tcp.local_addr().unwrap().port();
        let mut inherited = InheritedListeners {
            passed: vec![
                Passed {
                    number: 3,
                    name: "rest".to_string(),
                    fd: Some(OwnedFd::from(tcp)),
                },
                Passed {
                    number: 4,
                    name: "aa".to_string(),
                    fd: Some(OwnedFd::from(unix)),
                },
            ],
        };
        assert_eq!(inherited.len(), 2);

        let err = inherited.take_unix(Some("rest")).unwrap_err();
        assert!(err.to_string().contains("fd 3 (rest)"), "{err}");

        let taken = inherited.take_tcp(Some("rest")).unwrap().unwrap();
        assert_eq!(taken.local_addr().unwrap().port(), tcp_port);
        assert!(inherited.take_tcp(None).unwrap().is_none());

        // An unknown name falls back to the first unclaimed socket of the right kind.
        assert!(inherited.take_unix(Some("other")).unwrap().is_some());
        assert!(inherited.is_empty());
    }
}
