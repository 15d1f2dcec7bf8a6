//! The sd_notify datagram protocol: readiness, status, reload and stop messages.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends state changes to the service manager over `NOTIFY_SOCKET`; a no-op outside systemd.
///
/// `NOTIFY_SOCKET` stays in the environment: each binary is exactly one service, and a child
/// it might spawn is not meant to report for it, so there is nothing to hide it from.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`; unset or empty gives a notifier that sends nothing.
    pub fn from_env() -> io::Result<Self> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(address) if !address.is_empty() => Self::new(&address),
            _ => Ok(Self::default()),
        }
    }

    /// A notifier for `address`: an absolute path, or `@name` for the abstract namespace.
    pub fn new(address: &OsStr) -> io::Result<Self> {
        let bytes = address.as_bytes();
        let target = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(address)?,
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            // Limitation: AF_VSOCK notify addresses (`vsock:CID:PORT`) are not supported; the
            // podvm's systemd runs in the same VM and always hands out a unix address.
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET {:?} is neither an absolute path nor an @abstract name",
                        address
                    ),
                ))
            }
        };
        Ok(Self {
            target: Some(target),
        })
    }

    /// Whether a service manager is listening, i.e. messages are actually sent.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Start-up (or a reload) is complete; `status` is shown by `systemctl status`.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// Updates the free-form status text.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", one_line(status)))
    }

    /// The service is shutting down.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// The service starts reloading its configuration; `ready` must follow when done.
    pub fn reloading(&self) -> io::Result<()> {
        // systemd >= 253 matches reload cycles by this timestamp (Type=notify-reload).
        let usec = monotonic_usec()?;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"))
    }

    /// Asks for `extra` more time in the current start, reload or stop phase.
    pub fn extend_timeout(&self, extra: Duration) -> io::Result<()> {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", extra.as_micros()))
    }

    /// Tells the watchdog the service is alive.
    pub fn watchdog_ping(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// Sends one datagram with `state` (newline-separated `KEY=value` lines).
    fn send(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        // A fresh unbound socket per message: nothing to keep open or share between threads,
        // and messages are rare.
        let socket = UnixDatagram::unbound()?;
        let sent = socket.send_to_addr(state.as_bytes(), target)?;
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write of a notify datagram",
            ));
        }
        Ok(())
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reload stamps against.
pub fn monotonic_usec() -> io::Result<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec that outlives the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    Ok(seconds * 1_000_000 + nanos / 1_000)
}

/// Keeps a status text on one line, so it cannot smuggle in another `KEY=value` assignment.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn path_address_receives_exact_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();
        assert!(notifier.is_enabled());

        notifier.ready("serving on unix:///x").unwrap();
        assert_eq!(receive(&socket), "READY=1\nSTATUS=serving on unix:///x");
        notifier.status("busy").unwrap();
        assert_eq!(receive(&socket), "STATUS=busy");
        notifier.stopping().unwrap();
        assert_eq!(receive(&socket), "STOPPING=1");
        notifier.watchdog_ping().unwrap();
        assert_eq!(receive(&socket), "WATCHDOG=1");
        notifier
            .extend_timeout(Duration::from_millis(1500))
            .unwrap();
        assert_eq!(receive(&socket), "EXTEND_TIMEOUT_USEC=1500000");
    }

    #[test]
    fn reloading_carries_a_monotonic_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();

        notifier.reloading().unwrap();
        let message = receive(&socket);
        let usec = message
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap()
            .parse::<u64>()
            .unwrap();
        assert!(usec > 0);
    }

    #[test]
    fn abstract_address_is_reached() {
        let name = format!("common-notify-test-{}", std::process::id());
        let socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();

        notifier.stopping().unwrap();
        assert_eq!(receive(&socket), "STOPPING=1");
    }

    #[test]
    fn status_newlines_cannot_inject_assignments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();

        notifier.status("reload failed\nREADY=1").unwrap();
        assert_eq!(receive(&socket), "STATUS=reload failed READY=1");
    }

    #[test]
    fn unset_target_sends_nothing_and_succeeds() {
        let notifier = Notifier::default();
        assert!(!notifier.is_enabled());
        notifier.ready("ok").unwrap();
    }

    #[test]
    fn relative_and_vsock_addresses_are_rejected() {
        let err = Notifier::new(OsStr::new("run/notify")).unwrap_err();
        assert!(err.to_string().contains("run/notify"), "{err}");
        assert!(Notifier::new(OsStr::new("vsock:2:1234")).is_err());
    }

    #[test]
    fn missing_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::new(dir.path().join("absent").as_os_str()).unwrap();
        assert!(notifier.ready("x").is_err());
    }
}
