//! The systemd watchdog: its interval from the environment and the task that keeps it fed.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::Notifier;

/// The watchdog interval systemd expects pings within, if it is enabled for this process.
///
/// Reads `WATCHDOG_USEC`; honours `WATCHDOG_PID` when it is set, so a process that merely
/// inherited the variables from its parent does not ping on the parent's behalf. A malformed
/// value is logged and treated as "no watchdog".
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    match parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id()) {
        Ok(interval) => interval,
        Err(reason) => {
            tracing::warn!("ignoring the watchdog settings from the environment: {reason}");
            None
        }
    }
}

/// Interprets `WATCHDOG_USEC` and `WATCHDOG_PID` for the process `own_pid`.
fn parse_watchdog(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if let Some(pid) = pid {
        let pid: u32 = pid
            .parse()
            .map_err(|_| format!("WATCHDOG_PID {pid:?} is not a process id"))?;
        if pid != own_pid {
            return Ok(None);
        }
    }
    let usec: u64 = usec
        .parse()
        .map_err(|_| format!("WATCHDOG_USEC {usec:?} is not a number of microseconds"))?;
    if usec == 0 {
        return Err("WATCHDOG_USEC is 0".to_string());
    }
    Ok(Some(Duration::from_micros(usec)))
}

/// Spawns a task on the current tokio runtime that sends `WATCHDOG=1` every half `interval`.
///
/// The ping is the service's liveness signal precisely because it comes from a task on the
/// same runtime that serves requests: if that runtime wedges (a blocked executor thread, a
/// deadlock), the task stops being polled, the pings stop, and systemd restarts the service.
/// A thread of its own would keep pinging for a process that no longer answers anyone.
pub fn spawn_watchdog(notifier: Notifier, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval / 2);
        // After a stall, one ping is enough; a burst would hide how late we were.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match notifier.watchdog_ping() {
                Ok(()) => failing = false,
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!("failed to send the watchdog ping: {err}");
                }
                Err(_) => {}
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::net::UnixDatagram;

    #[test]
    fn unset_means_no_watchdog() {
        assert_eq!(parse_watchdog(None, None, 42), Ok(None));
        assert_eq!(parse_watchdog(None, Some("42"), 42), Ok(None));
    }

    #[test]
    fn interval_without_pid_applies_to_us() {
        assert_eq!(
            parse_watchdog(Some("3000000"), None, 42),
            Ok(Some(Duration::from_secs(3)))
        );
    }

    #[test]
    fn interval_for_our_pid_applies() {
        assert_eq!(
            parse_watchdog(Some("500"), Some("42"), 42),
            Ok(Some(Duration::from_micros(500)))
        );
    }

    #[test]
    fn interval_for_another_pid_is_ignored() {
        assert_eq!(parse_watchdog(Some("3000000"), Some("41"), 42), Ok(None));
    }

    #[test]
    fn malformed_values_are_errors_naming_the_variable() {
        let err = parse_watchdog(Some("soon"), None, 42).unwrap_err();
        assert!(
            err.contains("WATCHDOG_USEC") && err.contains("soon"),
            "{err}"
        );
        let err = parse_watchdog(Some("100"), Some("me"), 42).unwrap_err();
        assert!(err.contains("WATCHDOG_PID"), "{err}");
        assert!(parse_watchdog(Some("0"), None, 42).is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn pings_repeatedly_while_the_runtime_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();

        let task = spawn_watchdog(notifier, Duration::from_millis(20));
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let n = socket.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"WATCHDOG=1");
        }
        task.abort();
    }
}
