//! Logging set-up: journald when stderr is the journal, plain text otherwise.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a non-empty `RUST_LOG` overrides `default_level` (`"info"`).
///
/// Under systemd, when `JOURNAL_STREAM` names our stderr, events go to journald with their
/// fields intact and without timestamps of our own; elsewhere they go to stderr as text. A
/// second call keeps the first subscriber.
pub fn init(default_level: &str) {
    // An empty RUST_LOG would otherwise silence everything; treat it as unset.
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty());
    let (filter, rejected) = match rust_log.as_deref().map(EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(err)) => (EnvFilter::new(default_level), Some(err)),
        None => (EnvFilter::new(default_level), None),
    };

    let (journal, unreachable) = match stderr_is_journal().then(tracing_journald::layer) {
        Some(Ok(layer)) => (Some(layer), None),
        Some(Err(err)) => (None, Some(err)),
        None => (None, None),
    };
    let installed = match journal {
        Some(journal) => tracing_subscriber::registry()
            .with(filter)
            .with(journal)
            .try_init(),
        None => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
    };

    if installed.is_err() {
        return;
    }
    if let Some(err) = unreachable {
        tracing::warn!("journald is unreachable, logging to stderr instead: {err}");
    }
    if let Some(err) = rejected {
        tracing::warn!("ignoring RUST_LOG, using level {default_level}: {err}");
    }
}

/// Whether `JOURNAL_STREAM` says stderr is connected to the journal.
fn stderr_is_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM")
        .is_some_and(|stream| names_fd(&stream, std::io::stderr().as_fd()))
}

/// Whether a `JOURNAL_STREAM` value (`device:inode`) names the file open at `fd`.
fn names_fd(stream: &OsStr, fd: BorrowedFd<'_>) -> bool {
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    nix::sys::stat::fstat(fd.as_raw_fd()).is_ok_and(|stat| stat.st_dev == dev && stat.st_ino == ino)
}

/// Logs an error and its causes as one event, each cause on its own line.
pub fn log_error_chain(err: &anyhow::Error) {
    tracing::error!("{}", chain_message(err));
}

/// The error's message followed by one `caused by:` line per cause.
fn chain_message(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        message.push_str("\n  caused by: ");
        message.push_str(&cause.to_string());
    }
    message
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn journal_stream_must_name_the_same_file() {
        let file = tempfile::tempfile().unwrap();
        let metadata = file.metadata().unwrap();
        let own = format!("{}:{}", metadata.dev(), metadata.ino());
        let other = format!("{}:{}", metadata.dev(), metadata.ino() + 1);

        assert!(names_fd(OsStr::new(&own), file.as_fd()));
        assert!(!names_fd(OsStr::new(&other), file.as_fd()));
        assert!(!names_fd(OsStr::new("8"), file.as_fd()));
        assert!(!names_fd(OsStr::new("x:1"), file.as_fd()));
    }

    #[test]
    fn chain_puts_each_cause_on_its_own_line() {
        let err = anyhow::anyhow!("connection refused")
            .context("failed to reach the KBS at http://kbs:8080")
            .context("failed to get a token");
        assert_eq!(
            chain_message(&err),
            "failed to get a token\n  caused by: failed to reach the KBS at http://kbs:8080\n  \
             caused by: connection refused"
        );
    }
}
