//! What the guest-component services share: config resolution, the systemd
//! plumbing, one service lifecycle, the KBS client and the wire API.

/// The kata-agent config: read, validate and update it in place.
pub mod agent_config;
/// Line numbers of config text, for errors that point into a file.
pub mod config_text;
/// Atomic writes of config files and secrets.
pub mod fsutil;
/// `aa_kbc_params` parsing and resolution.
pub mod kbc_params;
/// The KBS client of the RCAR protocol.
pub mod kbs;
/// Tracing set-up for journald or a terminal.
pub mod logging;
/// Listener acquisition, readiness, signals and drain.
pub mod service;
/// sd_notify, watchdog and socket activation.
pub mod systemd;
/// Generated ttrpc and gRPC code of the wire API.
pub mod wire;

#[cfg(test)]
mod test_support;
