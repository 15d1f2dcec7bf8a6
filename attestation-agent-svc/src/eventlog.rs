//! The Attestation Agent eventlog (AAEL): one text line per runtime measurement event.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Where upstream keeps the AAEL.
pub const DEFAULT_EVENTLOG_PATH: &str = "/run/attestation-agent/eventlog";

/// Hash algorithm named in the INIT entry, upstream's default for the AAEL.
const INIT_HASH: &str = "sha384";
/// Hex digits of a SHA-384 register value.
const INIT_VALUE_DIGITS: usize = 96;

/// Why an event could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum EventlogError {
    /// A field would break the one-line, space-separated format.
    #[error("eventlog {field} {reason}")]
    InvalidField {
        /// Which field: domain, operation or content.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The eventlog file could not be written.
    #[error("failed to {action} eventlog {}", path.display())]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The eventlog path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One runtime event as the AAEL records it.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    domain: &'a str,
    operation: &'a str,
    content: &'a str,
}

impl<'a> Event<'a> {
    /// Validates the fields: domain and operation are single words, content is one line.
    pub fn new(
        domain: &'a str,
        operation: &'a str,
        content: &'a str,
    ) -> Result<Self, EventlogError> {
        for (field, value) in [("domain", domain), ("operation", operation)] {
            if value.is_empty() {
                return Err(EventlogError::InvalidField {
                    field,
                    reason: "is empty",
                });
            }
            if value.chars().any(char::is_whitespace) {
                return Err(EventlogError::InvalidField {
                    field,
                    reason: "contains whitespace",
                });
            }
        }
        if content.contains(['\n', '\r']) {
            return Err(EventlogError::InvalidField {
                field: "content",
                reason: "contains a line break",
            });
        }
        Ok(Self {
            domain,
            operation,
            content,
        })
    }

    /// The AAEL line: `<domain> <operation> <content>`.
    fn line(&self) -> String {
        format!("{} {} {}\n", self.domain, self.operation, self.content)
    }
}

/// Appends events to the AAEL file, starting it with an INIT entry.
#[derive(Debug)]
pub struct Eventlog {
    path: PathBuf,
}

impl Eventlog {
    /// Opens the eventlog at `path`, creating it (and its directory) with an INIT entry when new or empty.
    pub fn open(path: &Path) -> Result<Self, EventlogError> {
        let eventlog = Self {
            path: path.to_path_buf(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|source| eventlog.io("create the directory of", source))?;
        }
        // Limitation: no attester here can read a measurement register, so the INIT entry
        // records an all-zero register value instead of the register's real start value.
        let init = format!("INIT {INIT_HASH}/{}\n", "0".repeat(INIT_VALUE_DIGITS));
        eventlog.append_with(|len| (len == 0).then_some(init))?;
        Ok(eventlog)
    }

    /// The file the events go to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event line.
    pub fn record(&self, event: &Event<'_>) -> Result<(), EventlogError> {
        let line = event.line();
        self.append_with(|_| Some(line))
    }

    /// Appends what `line_for(current length)` returns, under an exclusive lock, whole or not at all.
    fn append_with(
        &self,
        line_for: impl FnOnce(u64) -> Option<String>,
    ) -> Result<(), EventlogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|source| self.io("open", source))?;
        // The lock orders appends across processes, e.g. an old and a new agent during a restart.
        let mut file = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| self.io("lock", errno.into()))?;
        let len = file
            .metadata()
            .map_err(|source| self.io("inspect", source))?
            .len();
        let Some(line) = line_for(len) else {
            return Ok(());
        };

        if let Err(source) = write_synced(&mut file, line.as_bytes()) {
            // A torn line would corrupt every later entry: cut back to the last whole one.
            if let Err(err) = file.set_len(len) {
                tracing::error!(path = %self.path.display(), error = %err, "failed to cut a partial eventlog line");
            }
            return Err(self.io("append to", source));
        }
        Ok(())
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> EventlogError {
        EventlogError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

fn write_synced(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_data()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_new_eventlog_starts_with_init_then_one_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/attestation-agent/eventlog");
        let eventlog = Eventlog::open(&path).unwrap();
        eventlog
            .record(
                &Event::new("github.com/kata", "PullImage", "busybox:latest sha256:ab").unwrap(),
            )
            .unwrap();
        eventlog
            .record(&Event::new("d", "op", "").unwrap())
            .unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], format!("INIT sha384/{}", "0".repeat(96)));
        assert_eq!(
            lines[1],
            "github.com/kata PullImage busybox:latest sha256:ab"
        );
        assert_eq!(lines[2], "d op ");
        assert_eq!(lines.len(), 3);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn reopening_keeps_the_existing_log_without_a_second_init() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eventlog");
        Eventlog::open(&path)
            .unwrap()
            .record(&Event::new("a", "b", "c").unwrap())
            .unwrap();
        Eventlog::open(&path)
            .unwrap()
            .record(&Event::new("a", "b", "d").unwrap())
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("INIT ").count(), 1);
        assert!(text.ends_with("a b c\na b d\n"), "{text}");
    }

    #[test]
    fn fields_that_would_break_the_line_format_are_refused() {
        let cases = [
            (("", "op", "c"), "domain is empty"),
            (("do main", "op", "c"), "domain contains whitespace"),
            (("d", "o\tp", "c"), "operation contains whitespace"),
            (("d", "op", "two\nlines"), "content contains a line break"),
        ];
        for ((domain, operation, content), message) in cases {
            let err = Event::new(domain, operation, content).unwrap_err();
            assert_eq!(err.to_string(), format!("eventlog {message}"));
        }
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eventlog");
        Eventlog::open(&path).unwrap();
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let eventlog = Eventlog::open(&path).unwrap();
                    let content = format!("{writer}").repeat(5000);
                    for _ in 0..20 {
                        eventlog
                            .record(&Event::new("d", "op", &content).unwrap())
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let events: Vec<_> = text.lines().skip(1).collect();
        assert_eq!(events.len(), 80);
        for line in events {
            let content = line.strip_prefix("d op ").unwrap();
            let first = content.chars().next().unwrap();
            assert!(content.chars().all(|c| c == first) && content.len() == 5000);
        }
    }
}
