//! The podvm boot under real systemd: a cached Debian rootfs, our release
//! binaries and units installed, booted with systemd-nspawn, checked from
//! inside by `tests/nspawn/driver.sh`, then powered off.
//!
//! Needs root, `systemd-nspawn` and `debootstrap` (`make test` installs them);
//! elsewhere each test skips with a message.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One boot at a time: two cores do not boot two podvms and stay honest.
static BOOT: Mutex<()> = Mutex::new(());

const BOOT_LIMIT: Duration = Duration::from_secs(240);
const KBS_LISTEN: &str = "127.0.0.1:8080";

fn workspace() -> PathBuf {
    // Canonical: `systemctl --root` mishandles a root path with `..` in it.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn bin_dir() -> PathBuf {
    std::env::var_os("STACK_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/stack"))
}

/// Why the suite cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root".into());
    }
    for tool in ["systemd-nspawn", "debootstrap", "systemctl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed (make test installs it)"));
        }
    }
    None
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Debian rootfs, built once with debootstrap and cached under `target/`.
fn cached_rootfs() -> PathBuf {
    let cache = workspace().join("target/nspawn");
    let rootfs = cache.join("rootfs");
    if rootfs.join(".complete").exists() {
        return rootfs;
    }
    fs::create_dir_all(&cache).unwrap();
    let partial = cache.join("rootfs.partial");
    let _ = fs::remove_dir_all(&partial);
    println!("building the cached rootfs with debootstrap (once)");
    run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus,iproute2,curl",
            "bookworm",
        ])
        .arg(&partial));
    fs::write(partial.join(".complete"), b"").unwrap();
    let _ = fs::remove_dir_all(&rootfs);
    fs::rename(&partial, &rootfs).unwrap();
    rootfs
}

/// Which unit set the image gets.
#[derive(Clone, Copy)]
enum Layout {
    Socket,
    Path,
}

/// What the driver checks in the booted podvm.
#[derive(Clone, Copy)]
enum Scenario {
    /// Every check of the socket-activated layout.
    Socket,
    /// The end-to-end answer of the path-activated layout.
    Path,
    /// A malformed AA config.
    BadConfig,
    /// The embedded default: the tree, the unit states and one REST call, shown.
    Demo,
}

impl Scenario {
    /// The driver's argument.
    fn name(self) -> &'static str {
        match self {
            Scenario::Socket => "socket",
            Scenario::Path => "path",
            Scenario::BadConfig => "bad-config",
            Scenario::Demo => "demo",
        }
    }

    /// Whether a probe times the first resource after provisioning.
    fn times_first_resource(self) -> bool {
        matches!(self, Scenario::Socket | Scenario::Path)
    }
}

/// Where the podvm's resources come from.
#[derive(Clone, Copy)]
enum Kbc<'a> {
    /// The test KBS on loopback, named by user data (`cc_kbc`); the extra
    /// `write_files` entries go into the same user data.
    TestKbs { extra_user_files: &'a str },
    /// The embedded default: no user data, `offline_fs_kbc` with a sample
    /// resource file in `/etc`.
    Embedded,
}

/// A copy of the rootfs with the stack installed, ready to boot once.
struct Podvm {
    dir: tempfile::TempDir,
    resource: Vec<u8>,
}

impl Podvm {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn results(&self) -> PathBuf {
        self.dir.path().join("results")
    }

    fn new(layout: Layout, scenario: Scenario, kbc: Kbc) -> Self {
        // First the cache, which also makes the directory the copy goes to.
        let rootfs = cached_rootfs();
        let dir = tempfile::Builder::new()
            .prefix("podvm-")
            .tempdir_in(workspace().join("target/nspawn"))
            .unwrap();
        let root = dir.path().join("root");
        run(Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(rootfs)
            .arg(&root));
        fs::create_dir_all(dir.path().join("results")).unwrap();

        let layout_name = match layout {
            Layout::Socket => "socket",
            Layout::Path => "path",
        };
        let bins = bin_dir();
        assert!(
            bins.join("attestation-agent").exists() && bins.join("test-kbs").exists(),
            "no release binaries in {}: run `make release` first",
            bins.display()
        );
        run(Command::new(workspace().join("scripts/install.sh"))
            .arg(&bins)
            .arg(&root)
            .args(["/usr/local", layout_name]));

        let resource: Vec<u8> = match kbc {
            // Every byte value a KBS may hold, not only text.
            Kbc::TestKbs { .. } => (0..48u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect(),
            Kbc::Embedded => b"hello from the offline KBC of the podvm\n".to_vec(),
        };
        let podvm = Podvm { dir, resource };
        match kbc {
            Kbc::TestKbs { extra_user_files } => {
                podvm.install_test_kbs(&bins);
                podvm.install_user_data(extra_user_files);
            }
            Kbc::Embedded => podvm.install_offline_resources(),
        }
        podvm.install_driver(scenario);
        podvm.enable(layout);
        podvm
    }

    fn write(&self, guest: &str, contents: &[u8], mode: u32) {
        let path = self.root().join(guest.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn install_test_kbs(&self, bins: &Path) {
        self.write(
            "/usr/local/bin/test-kbs",
            &fs::read(bins.join("test-kbs")).unwrap(),
            0o755,
        );
        self.write("/srv/kbs/default/key/1", &self.resource, 0o600);
        let unit = format!(
            "[Unit]\nDescription=Test KBS on loopback\n\
             Before=attestation-agent.service confidential-data-hub.service\n\n\
             [Service]\nExecStart=/usr/local/bin/test-kbs --listen {KBS_LISTEN} --resources /srv/kbs\n\n\
             [Install]\nWantedBy=multi-user.target\n"
        );
        self.write(
            "/etc/systemd/system/test-kbs.service",
            unit.as_bytes(),
            0o644,
        );
    }

    fn install_offline_resources(&self) {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&self.resource);
        self.write(
            "/etc/aa-offline_fs_kbc-resources.json",
            format!("{{\"default/key/1\": \"{encoded}\"}}\n").as_bytes(),
            0o600,
        );
        self.write("/srv/kbs/default/key/1", &self.resource, 0o600);
    }

    fn install_user_data(&self, extra_user_files: &str) {
        let daemon = format!("{{\"aa-kbc-params\": \"cc_kbc::http://{KBS_LISTEN}\"}}");
        let user_data = format!(
            "#cloud-config\nwrite_files:\n  - path: /run/peerpod/daemon.json\n    \
             permissions: \"0600\"\n    content: '{daemon}'\n{extra_user_files}"
        );
        self.write("/media/cidata/user-data", user_data.as_bytes(), 0o600);
    }

    fn install_driver(&self, scenario: Scenario) {
        let driver = fs::read(workspace().join("tests/nspawn/driver.sh")).unwrap();
        self.write("/usr/local/lib/stack-test/driver.sh", &driver, 0o755);
        let unit = format!(
            "[Unit]\nDescription=Stack test driver\n\n[Service]\nType=simple\n\
             ExecStart=/usr/local/lib/stack-test/driver.sh {}\n\n\
             [Install]\nWantedBy=multi-user.target\n",
            scenario.name()
        );
        self.write(
            "/etc/systemd/system/stack-test.service",
            unit.as_bytes(),
            0o644,
        );
        if scenario.times_first_resource() {
            // Polls from the moment provisioning is over, as a pod would.
            self.write(
                "/etc/systemd/system/first-resource-probe.service",
                b"[Unit]\nDescription=Time the first resource after provisioning\n\
                  After=process-user-data.service\n\n\
                  [Service]\nType=oneshot\n\
                  ExecStart=/usr/local/lib/stack-test/driver.sh first-resource-probe\n\n\
                  [Install]\nWantedBy=multi-user.target\n",
                0o644,
            );
        }
    }

    /// Enables units as an image builder would: by preset, plus the test's own.
    fn enable(&self, layout: Layout) {
        let units: &[&str] = match layout {
            Layout::Socket => &[
                "attestation-agent.socket",
                "attestation-agent.service",
                "confidential-data-hub.socket",
                "confidential-data-hub.service",
                "api-server-rest.socket",
                "api-server-rest.service",
                "process-user-data.path",
                "kata-agent.service",
            ],
            Layout::Path => &[
                "attestation-agent.service",
                "confidential-data-hub.path",
                "api-server-rest.path",
                "process-user-data.path",
                "kata-agent.service",
            ],
        };
        // One unit a call: `systemctl --root` trips over a socket that a
        // service of the same call already enabled through `Also=`.
        for unit in units {
            run(Command::new("systemctl")
                .arg(format!("--root={}", self.root().display()))
                .args(["preset", unit]));
        }
        for unit in [
            "test-kbs.service",
            "stack-test.service",
            "first-resource-probe.service",
        ] {
            if self.root().join("etc/systemd/system").join(unit).exists() {
                run(Command::new("systemctl")
                    .arg(format!("--root={}", self.root().display()))
                    .args(["enable", unit]));
            }
        }
    }

    /// Boots the container until the driver powers it off; returns the report.
    fn boot(&self) -> Report {
        let started = Instant::now();
        let log = fs::File::create(self.dir.path().join("console.log")).unwrap();
        let mut child = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(self.root())
            .args([
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--capability=all",
                "--console=pipe",
            ])
            .arg(format!("--bind={}:/results", self.results().display()))
            .arg("-b")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > BOOT_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the podvm did not power off within {BOOT_LIMIT:?}; console:\n{}",
                    self.tail("console.log")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("boot to poweroff: {:.1} s", started.elapsed().as_secs_f64());
        let text = fs::read_to_string(self.results().join("report")).unwrap_or_else(|_| {
            panic!(
                "the driver wrote no report; console:\n{}",
                self.tail("console.log")
            )
        });
        Report {
            text,
            journal: self.results().join("journal"),
        }
    }

    fn tail(&self, name: &str) -> String {
        let text = fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

/// What the driver saw, line by line.
struct Report {
    text: String,
    journal: PathBuf,
}

impl Report {
    /// Prints every figure and check, then asserts that each expected check
    /// ran and passed.
    fn assert_passed(&self, expected: &[&str]) {
        println!("{}", self.text);
        assert!(
            self.text.lines().any(|l| l == "done"),
            "the driver did not finish:\n{}",
            self.text
        );
        let failed: Vec<&str> = self
            .text
            .lines()
            .filter(|l| l.starts_with("check ") && l.split(' ').nth(2) != Some("ok"))
            .collect();
        if !failed.is_empty() {
            let journal = fs::read_to_string(&self.journal).unwrap_or_default();
            let tail: Vec<&str> = journal.lines().rev().take(80).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "failed checks:\n{}\njournal tail:\n{}",
                failed.join("\n"),
                tail.join("\n")
            );
        }
        for name in expected {
            let prefix = format!("check {name} ok");
            assert!(
                self.text.lines().any(|l| l.starts_with(&prefix)),
                "check {name} did not run:\n{}",
                self.text
            );
        }
    }
}

const STACK: [&str; 3] = [
    "attestation-agent",
    "confidential-data-hub",
    "api-server-rest",
];

fn per_service(prefix: &str) -> Vec<String> {
    STACK.iter().map(|s| format!("{prefix}-{s}")).collect()
}

/// Installs and boots a podvm, one at a time; `None`, with a message, where the suite cannot
/// run. The report reads files of the podvm's directory, so the caller keeps both.
fn boot_podvm(layout: Layout, scenario: Scenario, kbc: Kbc) -> Option<(Podvm, Report)> {
    if let Some(reason) = skip_reason() {
        println!("skipped: the systemd-nspawn suite needs {reason}");
        return None;
    }
    let _one = BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let podvm = Podvm::new(layout, scenario, kbc);
    let report = podvm.boot();
    Some((podvm, report))
}

#[test]
fn socket_activated_podvm_boots_serves_and_survives() {
    let Some((podvm, report)) = boot_podvm(
        Layout::Socket,
        Scenario::Socket,
        Kbc::TestKbs {
            extra_user_files: "",
        },
    ) else {
        return;
    };
    println!(
        "{}",
        fs::read_to_string(podvm.results().join("tree")).unwrap_or_default()
    );

    let mut expected: Vec<String> = Vec::new();
    for prefix in [
        "active",
        "parent",
        "ready-after-accept",
        "restarted",
        "hardening",
    ] {
        expected.extend(per_service(prefix));
    }
    expected.extend(
        [
            "kata-agent-skipped",
            "aa-after-user-data",
            "resource-via-rest",
            "token-via-rest",
            "rest-not-in-root-netns",
            "first-resource-after-user-data",
            "no-request-lost",
            "watchdog-restart",
            "units-verify",
            "reload-attestation-agent",
            "reload-confidential-data-hub",
        ]
        .map(String::from),
    );
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    report.assert_passed(&expected);
}

#[test]
fn path_activated_podvm_serves_the_same_answer() {
    let Some((_podvm, report)) = boot_podvm(
        Layout::Path,
        Scenario::Path,
        Kbc::TestKbs {
            extra_user_files: "",
        },
    ) else {
        return;
    };

    let mut expected: Vec<String> = Vec::new();
    for prefix in ["active", "parent"] {
        expected.extend(per_service(prefix));
    }
    expected.extend(
        [
            "resource-via-rest",
            "token-via-rest",
            "rest-not-in-root-netns",
            "first-resource-after-user-data",
        ]
        .map(String::from),
    );
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    report.assert_passed(&expected);
}

#[test]
fn malformed_aa_config_fails_clearly_without_a_restart_storm() {
    let bad_toml =
        "  - path: /run/peerpod/aa.toml\n    content: |\n      [token_configs.kbs\n      url = 1\n";
    let Some((_podvm, report)) = boot_podvm(
        Layout::Socket,
        Scenario::BadConfig,
        Kbc::TestKbs {
            extra_user_files: bad_toml,
        },
    ) else {
        return;
    };
    report.assert_passed(&["start-limit", "bad-config-journal", "bad-config-status"]);
}

/// The embedded default, as `make podvm` shows it: no user data, no KBS, and the podvm still
/// boots, runs all three under systemd and serves the offline resource through the REST server.
#[test]
fn embedded_default_podvm_serves_offline_resources() {
    let Some((podvm, report)) = boot_podvm(Layout::Socket, Scenario::Demo, Kbc::Embedded) else {
        return;
    };
    println!(
        "{}",
        fs::read_to_string(podvm.results().join("demo")).unwrap_or_default()
    );
    let mut expected: Vec<String> = Vec::new();
    for prefix in ["active", "parent"] {
        expected.extend(per_service(prefix));
    }
    expected.extend(["kata-agent-skipped", "resource-via-rest"].map(String::from));
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    report.assert_passed(&expected);
}
