//! Process-level tests of the systemd plumbing: socket activation and the lifecycle's signals,
//! each run in a re-executed copy of this test binary so fds, environment and signals stay
//! private to it.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::service::{acquire_listener, drain, Endpoint, Lifecycle, ListenerOrigin};
use common::systemd::InheritedListeners;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Set in a re-executed child: the `child_*` tests only do their work when it is present.
const CHILD_ROLE: &str = "COMMON_SYSTEMD_TEST_CHILD";

/// A command re-running exactly the test `name` of this binary in child mode.
fn child_test(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, "1")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES");
    command
}

/// Asserts the child ran its one test and it passed (a filter matching nothing also exits 0).
fn assert_child_passed(output: Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

fn in_child() -> bool {
    std::env::var_os(CHILD_ROLE).is_some()
}

/// Duplicates `fd` above the range systemd uses, so placing it at 3 or 4 cannot clobber it.
fn high_copy(fd: &impl AsRawFd) -> OwnedFd {
    let copy = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(20)).unwrap();
    // SAFETY: F_DUPFD_CLOEXEC just returned this new fd, owned by nobody else.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(copy) }
}

#[test]
fn socket_activation_hands_over_named_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");
    let unix = UnixListener::bind(&path).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let unix_fd = high_copy(&unix);
    let tcp_fd = high_copy(&tcp);
    let (unix_raw, tcp_raw) = (unix_fd.as_raw_fd(), tcp_fd.as_raw_fd());

    // LISTEN_PID must be the pid of the process that reads it, known only once it exists:
    // a shell exports its own pid and then execs the test binary in place.
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", "export LISTEN_PID=$$; exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_takes_inherited_listeners",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, "1")
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "aa:rest")
        .env("EXPECTED_UNIX_PATH", &path)
        .env("EXPECTED_TCP_PORT", port.to_string());
    // SAFETY: only dup2 runs between fork and exec, which is async-signal-safe; dup2 also
    // clears FD_CLOEXEC on the target, so fds 3 and 4 survive into the shell and the test.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::dup2(unix_raw, 3)?;
            nix::unistd::dup2(tcp_raw, 4)?;
            Ok(())
        });
    }
    assert_child_passed(command.output().unwrap());
}

#[test]
fn child_takes_inherited_listeners() {
    if !in_child() {
        return;
    }
    let expected_path = PathBuf::from(std::env::var_os("EXPECTED_UNIX_PATH").unwrap());
    let expected_port: u16 = std::env::var("EXPECTED_TCP_PORT").unwrap().parse().unwrap();

    let mut inherited = InheritedListeners::take_from_env().unwrap();
    assert_eq!(inherited.len(), 2);
    for variable in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        assert!(std::env::var_os(variable).is_none(), "{variable} still set");
    }
    for fd in [3, 4] {
        let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
        assert!(
            flags.contains(FdFlag::FD_CLOEXEC),
            "fd {fd} lacks FD_CLOEXEC"
        );
    }

    // A name that belongs to the TCP socket is refused for a unix endpoint.
    let err = inherited.take_unix(Some("rest")).unwrap_err();
    assert!(err.to_string().contains("fd 4 (rest)"), "{err}");

    let tcp = inherited.take_tcp(Some("rest")).unwrap().unwrap();
    assert_eq!(tcp.local_addr().unwrap().port(), expected_port);

    let endpoint = Endpoint::Unix(expected_path.clone());
    let (listener, origin) = acquire_listener(&endpoint, &mut inherited, Some("aa")).unwrap();
    assert_eq!(origin, ListenerOrigin::Inherited);
    assert!(inherited.is_empty());
    let common::service::ServiceListener::Unix(listener) = listener else {
        panic!("expected the inherited unix listener");
    };
    let _client = UnixStream::connect(&expected_path).unwrap();
    listener.accept().unwrap();
}

/// Reads notify datagrams, counting watchdog pings apart from the other messages.
struct NotifyReader {
    socket: UnixDatagram,
    pings: AtomicUsize,
}

impl NotifyReader {
    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buf).unwrap();
            let message = String::from_utf8(buf[..n].to_vec()).unwrap();
            if message == "WATCHDOG=1" {
                self.pings.fetch_add(1, Ordering::Relaxed);
            } else {
                return message;
            }
        }
    }

    fn expect_reloading(&self) {
        let message = self.next();
        let stamp = message.strip_prefix("RELOADING=1\nMONOTONIC_USEC=");
        assert!(stamp.is_some_and(|s| s.parse::<u64>().is_ok()), "{message}");
    }
}

fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), signal).unwrap();
}

#[test]
fn lifecycle_reports_ready_reload_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&notify_path).unwrap();
    // A bound for a broken child, so the test fails instead of hanging.
    socket
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let reader = NotifyReader {
        socket,
        pings: AtomicUsize::new(0),
    };

    let child = child_test("child_runs_the_lifecycle")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "3600000000")
        .env("SERVICE_SOCKET", dir.path().join("svc/service.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // READY=1 may only come once the listener, bound after this status, accepts.
    assert_eq!(reader.next(), "STATUS=binding");
    assert_eq!(reader.next(), "READY=1\nSTATUS=serving");

    signal(&child, Signal::SIGHUP);
    reader.expect_reloading();
    assert_eq!(reader.next(), "READY=1\nSTATUS=reloaded 1");

    signal(&child, Signal::SIGHUP);
    reader.expect_reloading();
    assert_eq!(
        reader.next(),
        "READY=1\nSTATUS=reload failed, previous configuration active: bad config in test"
    );

    signal(&child, Signal::SIGTERM);
    assert_eq!(reader.next(), "STOPPING=1");
    assert_child_passed(child.wait_with_output().unwrap());
    assert!(
        reader.pings.load(Ordering::Relaxed) >= 1,
        "no watchdog ping"
    );
}

#[test]
fn child_runs_the_lifecycle() {
    if !in_child() {
        return;
    }
    let path = PathBuf::from(std::env::var_os("SERVICE_SOCKET").unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut lifecycle = Lifecycle::start("lifecycle-test").unwrap();
        let endpoint = Endpoint::Unix(path);

        // Bind only after the readiness wait has tried (and failed) to connect a few times.
        let bind_late = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            lifecycle.notifier().status("binding").unwrap();
            acquire_listener(&endpoint, &mut InheritedListeners::default(), None).unwrap()
        };
        let (ready, _listener) = tokio::join!(
            lifecycle.ready(std::slice::from_ref(&endpoint), "serving"),
            bind_late
        );
        ready.unwrap();

        let mut reloads = 0;
        lifecycle
            .run_until_terminated(|| {
                reloads += 1;
                let attempt = reloads;
                async move {
                    match attempt {
                        1 => Ok("reloaded 1".to_string()),
                        _ => Err(anyhow::anyhow!("bad config in test")),
                    }
                }
            })
            .await;
        assert!(drain(async {}, Duration::from_secs(60)).await);
    });
}

/// Runs the logging child with stderr going to a file, returning what it wrote there.
fn logging_child_stderr(
    journal_stream: impl Fn(&std::fs::File) -> String,
    rust_log: &str,
) -> String {
    let stderr_file = tempfile::NamedTempFile::new().unwrap();
    let file = stderr_file.reopen().unwrap();
    let output = child_test("child_logs_an_event_and_an_error_chain")
        .env("JOURNAL_STREAM", journal_stream(&file))
        .env("RUST_LOG", rust_log)
        .stderr(file)
        .output()
        .unwrap();
    assert_child_passed(output);
    std::fs::read_to_string(stderr_file.path()).unwrap()
}

#[test]
fn logs_plain_text_when_stderr_is_not_the_journal() {
    let stderr = logging_child_stderr(|_| "1:1".to_string(), "");
    assert!(stderr.contains("child started"), "{stderr}");
    assert!(!stderr.contains("journald"), "{stderr}");
    assert!(
        stderr.contains("failed to serve\n  caused by: root cause in test"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escapes in a file: {stderr}"
    );

    let stderr = logging_child_stderr(|_| "1:1".to_string(), "error");
    assert!(
        !stderr.contains("child started"),
        "RUST_LOG ignored: {stderr}"
    );
    assert!(stderr.contains("root cause in test"), "{stderr}");
}

#[test]
fn falls_back_to_stderr_when_journald_is_unreachable() {
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("skipped: journald is running here, so events would go to the journal");
        return;
    }
    let stderr = logging_child_stderr(
        |file| {
            let metadata = file.metadata().unwrap();
            format!("{}:{}", metadata.dev(), metadata.ino())
        },
        "",
    );
    assert!(stderr.contains("journald is unreachable"), "{stderr}");
    assert!(stderr.contains("child started"), "{stderr}");
}

#[test]
fn child_logs_an_event_and_an_error_chain() {
    if !in_child() {
        return;
    }
    common::logging::init("info");
    tracing::info!("child started");
    let err = anyhow::anyhow!("root cause in test").context("failed to serve");
    common::logging::log_error_chain(&err);
}
