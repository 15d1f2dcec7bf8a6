//! systemd integration: readiness notification, watchdog and socket activation.
//!
//! Everything here is written against the documented protocols (sd_notify(3),
//! sd_watchdog_enabled(3), sd_listen_fds(3)) on plain sockets, and does nothing when the
//! process does not run under systemd.

mod activation;
mod notify;
mod watchdog;

pub use activation::{ActivationError, InheritedListeners};
pub use notify::{monotonic_usec, Notifier};
pub use watchdog::{spawn_watchdog, watchdog_interval};
