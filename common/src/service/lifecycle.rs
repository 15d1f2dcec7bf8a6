//! The lifecycle of a running service: signals, readiness and status for systemd, the
//! watchdog, reload, and a bounded drain on the way out.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;

use super::{wait_until_accepting, Endpoint, ServiceError};
use crate::systemd::{monotonic_usec, spawn_watchdog, watchdog_interval, Notifier};

/// How long `ready` waits for each endpoint to accept before giving up.
const READY_BOUND: Duration = Duration::from_secs(30);

/// What the service manager (or an operator) asked the service to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// SIGTERM or SIGINT: stop accepting, drain, exit.
    Terminate,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// The signal streams a service reacts to, installed once at start-up.
#[derive(Debug)]
pub struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    /// Installs handlers for SIGTERM, SIGINT and SIGHUP; needs a running tokio runtime.
    pub fn install() -> Result<Self, ServiceError> {
        let install = |kind, name| {
            signal(kind).map_err(|source| ServiceError::Signals {
                signal: name,
                source,
            })
        };
        Ok(Self {
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Waits for the next signal and says what it asks for.
    pub async fn next(&mut self) -> LifecycleEvent {
        // A closed stream means the runtime is going away: treat it as termination.
        tokio::select! {
            _ = self.terminate.recv() => LifecycleEvent::Terminate,
            _ = self.interrupt.recv() => LifecycleEvent::Terminate,
            received = self.hangup.recv() => match received {
                Some(()) => LifecycleEvent::Reload,
                None => LifecycleEvent::Terminate,
            },
        }
    }
}

/// A running service's side of systemd: notifier, signals and watchdog.
#[derive(Debug)]
pub struct Lifecycle {
    name: String,
    notifier: Notifier,
    signals: Signals,
    watchdog: Option<JoinHandle<()>>,
}

impl Lifecycle {
    /// Sets up notification, signal handling and (if systemd asks for it) the watchdog.
    ///
    /// Call it inside the tokio runtime, early, so a signal arriving during start-up is not
    /// lost to the default action.
    pub fn start(name: &str) -> Result<Self, ServiceError> {
        let notifier = Notifier::from_env().map_err(|source| ServiceError::Notify { source })?;
        let signals = Signals::install()?;
        let watchdog = watchdog_interval().map(|interval| {
            tracing::info!(service = name, ?interval, "watchdog enabled");
            spawn_watchdog(notifier.clone(), interval)
        });
        tracing::info!(service = name, "starting");
        Ok(Self {
            name: name.to_string(),
            notifier,
            signals,
            watchdog,
        })
    }

    /// The notifier, for messages beyond the lifecycle's own.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Waits until every endpoint accepts connections, then sends `READY=1` with `status`.
    pub async fn ready(&self, endpoints: &[Endpoint], status: &str) -> Result<(), ServiceError> {
        for endpoint in endpoints {
            wait_until_accepting(endpoint, READY_BOUND).await?;
            // The clock systemd stamps READY=1 with: the two can be compared.
            let monotonic_usec = monotonic_usec().unwrap_or_default();
            tracing::info!(%endpoint, monotonic_usec, "accepting connections");
        }
        self.notifier
            .ready(status)
            .map_err(|source| ServiceError::Notify { source })?;
        tracing::info!(service = %self.name, ?endpoints, status, "ready");
        Ok(())
    }

    /// Updates the status text; a failure is logged, not returned.
    pub fn status(&self, status: &str) {
        warn_unsent(self.notifier.status(status), "STATUS=");
    }

    /// Asks systemd for `extra` more time in the current phase; a failure is logged.
    pub fn extend_timeout(&self, extra: Duration) {
        warn_unsent(self.notifier.extend_timeout(extra), "EXTEND_TIMEOUT_USEC=");
    }

    /// Serves signals until SIGTERM or SIGINT; each SIGHUP runs `reload`.
    ///
    /// A reload is bracketed by `RELOADING=1` and `READY=1`; its `Ok` value becomes the new
    /// status. A failed reload is logged, the old configuration keeps serving, and the failure
    /// shows in the status. On termination `STOPPING=1` is sent and the caller drains.
    pub async fn run_until_terminated<F, Fut>(&mut self, mut reload: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<String>>,
    {
        loop {
            match self.signals.next().await {
                LifecycleEvent::Reload => {
                    tracing::info!(service = %self.name, "reloading");
                    warn_unsent(self.notifier.reloading(), "RELOADING=1");
                    let status = match reload().await {
                        Ok(status) => {
                            tracing::info!(service = %self.name, status, "reloaded");
                            status
                        }
                        Err(err) => {
                            tracing::error!(
                                service = %self.name,
                                "reload failed, keeping the previous configuration: {err:#}"
                            );
                            format!("reload failed, previous configuration active: {err:#}")
                        }
                    };
                    warn_unsent(self.notifier.ready(&status), "READY=1");
                }
                LifecycleEvent::Terminate => {
                    tracing::info!(service = %self.name, "stopping");
                    warn_unsent(self.notifier.stopping(), "STOPPING=1");
                    return;
                }
            }
        }
    }
}

/// Logs a notification that could not be sent; the service keeps running regardless.
fn warn_unsent(sent: io::Result<()>, what: &str) {
    if let Err(err) = sent {
        tracing::warn!("failed to send {what} to the service manager: {err}");
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
    }
}

/// Reports the error that ends a service: its chain goes to the log as one
/// event, and the chain on one line to `STATUS=`, so `systemctl status` says
/// why the unit failed.
pub fn report_failure(err: &anyhow::Error) {
    crate::logging::log_error_chain(err);
    if let Ok(notifier) = Notifier::from_env() {
        warn_unsent(notifier.status(&format!("failed: {err:#}")), "STATUS=");
    }
}

/// How long a client that connected just before a stop has to send its first request. Its
/// connection was accepted, so closing it unanswered would lose the request; meanwhile the
/// listening socket, held by systemd, queues newcomers for the next process.
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(200);

/// Stops a ttrpc server without losing a call that raced the stop: no more accepts, then
/// [`FIRST_REQUEST_GRACE`] for the calls of clients that had just connected, then each
/// connection closes once its calls are answered.
pub async fn stop_ttrpc(server: &mut ttrpc::r#async::Server) {
    server.stop_listen().await;
    tokio::time::sleep(FIRST_REQUEST_GRACE).await;
    if let Err(err) = server.shutdown().await {
        tracing::warn!(error = %err, "ttrpc server did not shut down cleanly");
    }
}

/// Runs `fut` (the in-flight work) for at most `bound`; true if it finished in time.
pub async fn drain<F: Future>(fut: F, bound: Duration) -> bool {
    match tokio::time::timeout(bound, fut).await {
        Ok(_) => true,
        Err(_) => {
            tracing::warn!(
                ?bound,
                "in-flight requests did not finish in time; cutting them off"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn drain_reports_whether_work_finished() {
        assert!(drain(async {}, Duration::from_secs(60)).await);
        assert!(!drain(std::future::pending::<()>(), Duration::ZERO).await);
    }
}
