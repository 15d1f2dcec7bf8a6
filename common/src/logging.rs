//! Logging set-up: journald when stderr is the journal, plain text otherwise.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber; a non-empty `RUST_LOG` overrides `default_level` (`"info"`).
///
/// `RUST_LOG` is a level or a list of `target=level` directives; span, field and regex
/// directives are not understood (the filter that parses them links in a regex engine, and
/// these services have no spans worth filtering on).
///
/// Under systemd, when `JOURNAL_STREAM` names our stderr, events go to journald with their
/// fields intact and without timestamps of our own; elsewhere they go to stderr as text. A
/// second call keeps the first subscriber.
pub fn init(default_level: &str) {
    // An empty RUST_LOG would otherwise silence everything; treat it as unset.
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty());
    let (filter, rejected) = match rust_log.as_deref().map(str::parse::<Targets>) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(err)) => (default_filter(default_level), Some(err)),
        None => (default_filter(default_level), None),
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

/// Every target at `level`, or at `info` when `level` is not a level.
fn default_filter(level: &str) -> Targets {
    let level = level.parse().unwrap_or(LevelFilter::INFO);
    Targets::new().with_default(level)
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
    fn default_filter_takes_a_level_and_falls_back_to_info() {
        use tracing::Level;
        let debug = default_filter("debug");
        assert!(debug.would_enable("confidential_data_hub", &Level::DEBUG));
        assert!(!debug.would_enable("confidential_data_hub", &Level::TRACE));

        assert!(!default_filter("off").would_enable("api_server_rest", &Level::ERROR));

        let fallback = default_filter("loud");
        assert!(fallback.would_enable("attestation_agent", &Level::INFO));
        assert!(!fallback.would_enable("attestation_agent", &Level::DEBUG));
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
