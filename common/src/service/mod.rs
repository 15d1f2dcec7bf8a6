//! The one lifecycle every service binary follows: acquire listeners, report readiness,
//! react to signals, drain.
//!
//! A binary's `main` reads as a few steps:
//!
//! ```no_run
//! use std::time::Duration;
//! use common::service::{acquire_listener, drain, Endpoint, Lifecycle};
//! use common::systemd::InheritedListeners;
//!
//! fn main() -> anyhow::Result<()> {
//!     // Before any thread exists: this unsets the LISTEN_* variables.
//!     let mut inherited = InheritedListeners::take_from_env()?;
//!     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//!     runtime.block_on(async {
//!         let endpoint = Endpoint::parse("unix:///run/example/example.sock")?;
//!         let (listener, _origin) = acquire_listener(&endpoint, &mut inherited, None)?;
//!         let mut lifecycle = Lifecycle::start("example")?;
//!         let server = tokio::spawn(async move {
//!             // Serve requests on `listener` here.
//!             drop(listener);
//!         });
//!         lifecycle.ready(&[endpoint], "serving").await?;
//!         lifecycle
//!             .run_until_terminated(|| async { Ok("serving, config reloaded".to_string()) })
//!             .await;
//!         drain(server, Duration::from_secs(10)).await;
//!         Ok(())
//!     })
//! }
//! ```

mod lifecycle;
mod listener;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::systemd::ActivationError;

pub use lifecycle::{
    drain, report_failure, stop_ttrpc, Lifecycle, LifecycleEvent, Signals, FIRST_REQUEST_GRACE,
};
pub use listener::{
    acquire_listener, wait_until_accepting, Endpoint, ListenerOrigin, ServiceListener,
};

/// Why a service could not set up its listeners, signals or readiness.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An endpoint string is not one of the accepted forms.
    #[error("invalid endpoint {input:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another process answers on the socket path.
    #[error("socket {path} is already in use by a running process")]
    AddressInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket sits at the socket path; it is left alone.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A filesystem step around the socket path failed.
    #[error("failed to {action} {path}")]
    SocketPath {
        /// What was being done (e.g. "create the directory of").
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Binding or listening on the endpoint failed.
    #[error("failed to listen on {endpoint}")]
    Listen {
        /// The endpoint.
        endpoint: Endpoint,
        /// The underlying error.
        source: io::Error,
    },
    /// A socket passed by systemd could not be used.
    #[error("failed to take the socket-activated listener for {endpoint}")]
    Inherited {
        /// The endpoint.
        endpoint: Endpoint,
        /// The underlying error.
        source: ActivationError,
    },
    /// The endpoint did not accept a connection within the bound.
    #[error("{endpoint} did not accept connections within {bound:?}")]
    NotAccepting {
        /// The endpoint.
        endpoint: Endpoint,
        /// How long we waited.
        bound: Duration,
        /// The last connection error.
        source: io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("failed to install the handler for {signal}")]
    Signals {
        /// The signal name.
        signal: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// `NOTIFY_SOCKET` is malformed or the service manager could not be told something.
    #[error("failed to notify the service manager")]
    Notify {
        /// The underlying error.
        source: io::Error,
    },
}
