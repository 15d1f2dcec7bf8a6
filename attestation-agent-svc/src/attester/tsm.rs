//! The configfs-tsm attester: TDX and SNP reports through the kernel's TSM report interface.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;

use super::{AttesterError, TeeKind, REPORT_DATA_LIMIT};

/// Where configfs-tsm keeps report requests, under the configfs mount.
const REPORT_SUBDIR: &str = "tsm/report";
/// The ACPI CC event log that upstream sends next to a TDX quote.
const CCEL_PATH: &str = "/sys/firmware/acpi/tables/data/CCEL";
/// Report requests tried before giving up on a writer that keeps racing us.
const MAX_ATTEMPTS: u32 = 3;
/// How long to wait for an attribute to appear in a new report directory.
const ATTRIBUTE_WAIT: Duration = Duration::from_secs(1);
const ATTRIBUTE_POLL: Duration = Duration::from_millis(5);

/// Report directories made by this process, for unique names.
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(0);

/// The TSM provider the kernel names in a report directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsmProvider {
    /// Intel TDX guest driver.
    TdxGuest,
    /// AMD SEV guest driver.
    SevGuest,
}

impl TsmProvider {
    /// The provider for an attribute's text, if we support it.
    fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "tdx_guest" => Some(Self::TdxGuest),
            "sev_guest" => Some(Self::SevGuest),
            _ => None,
        }
    }

    /// The provider's name as the kernel writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::TdxGuest => "tdx_guest",
            Self::SevGuest => "sev_guest",
        }
    }

    /// The TEE the provider's reports prove.
    pub fn tee(self) -> TeeKind {
        match self {
            Self::TdxGuest => TeeKind::Tdx,
            Self::SevGuest => TeeKind::Snp,
        }
    }
}

/// Requests reports from configfs-tsm, one fresh report directory per request.
#[derive(Debug)]
pub struct TsmAttester {
    report_root: PathBuf,
    provider: TsmProvider,
    ccel_path: PathBuf,
}

impl TsmAttester {
    /// The report directory under a configfs mount point.
    pub fn report_root(configfs_root: &Path) -> PathBuf {
        configfs_root.join(REPORT_SUBDIR)
    }

    /// Probes the report interface under `configfs_root` and learns its provider.
    pub fn open(configfs_root: &Path) -> Result<Self, AttesterError> {
        let report_root = Self::report_root(configfs_root);
        let provider = ReportDir::create(&report_root)?.provider()?;
        Ok(Self {
            report_root,
            provider,
            ccel_path: PathBuf::from(CCEL_PATH),
        })
    }

    /// The TEE this attester speaks for.
    pub fn tee(&self) -> TeeKind {
        self.provider.tee()
    }

    /// Evidence JSON for `report_data`, zero-padded to 64 bytes as upstream's TDX and SNP attesters do.
    pub async fn evidence(&self, report_data: &[u8]) -> Result<Vec<u8>, AttesterError> {
        let mut inblob = [0u8; REPORT_DATA_LIMIT];
        let bound =
            inblob
                .get_mut(..report_data.len())
                .ok_or(AttesterError::ReportDataTooLong {
                    tee: self.tee().name(),
                    len: report_data.len(),
                    limit: REPORT_DATA_LIMIT,
                })?;
        bound.copy_from_slice(report_data);

        let report_root = self.report_root.clone();
        let provider = self.provider;
        let ccel_path = self.ccel_path.clone();
        tokio::task::spawn_blocking(move || {
            let report = request_report(&report_root, provider, &inblob)?;
            Ok(wrap_report(provider, &report, &ccel_path))
        })
        .await
        .map_err(|err| AttesterError::Task(err.to_string()))?
    }

    #[cfg(test)]
    fn with_ccel_path(mut self, path: PathBuf) -> Self {
        self.ccel_path = path;
        self
    }
}

/// Writes `inblob` and reads the report, retrying in a fresh directory when another writer raced.
fn request_report(
    report_root: &Path,
    provider: TsmProvider,
    inblob: &[u8],
) -> Result<Vec<u8>, AttesterError> {
    for attempt in 1..=MAX_ATTEMPTS {
        let dir = ReportDir::create(report_root)?;
        let found = dir.provider()?;
        if found != provider {
            return Err(AttesterError::ProviderChanged {
                path: dir.attribute("provider"),
                expected: provider.name(),
                found: found.name().to_owned(),
            });
        }

        let before = dir.generation()?;
        dir.write("inblob", inblob)?;
        let report = dir.read("outblob")?;
        let after = dir.generation()?;

        // Each inblob write bumps the generation once; more means someone else wrote too,
        // and the report may bind their data instead of ours.
        if after == before + 1 {
            if report.is_empty() {
                return Err(AttesterError::EmptyReport {
                    path: dir.attribute("outblob"),
                });
            }
            return Ok(report);
        }
        tracing::warn!(
            attempt,
            before,
            after,
            dir = %dir.path.display(),
            "configfs-tsm report request raced with another writer, retrying"
        );
    }
    Err(AttesterError::GenerationRace {
        root: report_root.to_path_buf(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Wraps a raw report in the evidence JSON upstream's attester for that TEE sends.
fn wrap_report(provider: TsmProvider, report: &[u8], ccel_path: &Path) -> Vec<u8> {
    let engine = base64::engine::general_purpose::STANDARD;
    let evidence = match provider {
        TsmProvider::TdxGuest => {
            let cc_eventlog = match std::fs::read(ccel_path) {
                Ok(ccel) => Some(engine.encode(ccel)),
                Err(err) => {
                    tracing::debug!(path = %ccel_path.display(), error = %err, "no CC event log");
                    None
                }
            };
            serde_json::json!({ "cc_eventlog": cc_eventlog, "quote": engine.encode(report) })
        }
        // Limitation: upstream's SNP attester sends the report parsed into its fields (sev
        // crate) plus the certificate chain; we send the raw report in base64 and no chain,
        // which a Trustee SNP verifier does not parse yet.
        TsmProvider::SevGuest => serde_json::json!({
            "attestation_report": engine.encode(report),
            "cert_chain": null,
        }),
    };
    evidence.to_string().into_bytes()
}

/// One report request directory, removed again when dropped.
struct ReportDir {
    path: PathBuf,
}

impl ReportDir {
    /// Makes a uniquely named report directory under `report_root`.
    fn create(report_root: &Path) -> Result<Self, AttesterError> {
        let request = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
        let path = report_root.join(format!(
            "attestation-agent-{}-{request}",
            std::process::id()
        ));
        std::fs::create_dir(&path).map_err(|source| AttesterError::Io {
            action: "create",
            path: path.clone(),
            source,
        })?;
        Ok(Self { path })
    }

    fn attribute(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Reads an attribute. configfs creates every attribute with the directory; the bounded
    /// wait covers a directory that something other than configfs populates.
    fn read(&self, name: &str) -> Result<Vec<u8>, AttesterError> {
        let path = self.attribute(name);
        let deadline = Instant::now() + ATTRIBUTE_WAIT;
        loop {
            match std::fs::read(&path) {
                Err(err) if err.kind() == ErrorKind::NotFound && Instant::now() < deadline => {
                    std::thread::sleep(ATTRIBUTE_POLL);
                }
                result => {
                    return result.map_err(|source| AttesterError::Io {
                        action: "read",
                        path,
                        source,
                    })
                }
            }
        }
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), AttesterError> {
        let path = self.attribute(name);
        std::fs::write(&path, data).map_err(|source| AttesterError::Io {
            action: "write",
            path,
            source,
        })
    }

    fn provider(&self) -> Result<TsmProvider, AttesterError> {
        let text = match self.read("provider") {
            Err(AttesterError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                return Err(AttesterError::MissingProvider {
                    dir: self.path.clone(),
                })
            }
            other => other?,
        };
        let text = String::from_utf8_lossy(&text);
        TsmProvider::parse(&text).ok_or_else(|| AttesterError::UnknownProvider {
            provider: text.trim().to_owned(),
            path: self.attribute("provider"),
        })
    }

    fn generation(&self) -> Result<u64, AttesterError> {
        let text = self.read("generation")?;
        let text = String::from_utf8_lossy(&text);
        text.trim()
            .parse()
            .map_err(|_| AttesterError::BadGeneration {
                path: self.attribute("generation"),
                value: text.trim().to_owned(),
            })
    }
}

impl Drop for ReportDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir(&self.path) {
            tracing::warn!(dir = %self.path.display(), error = %err, "failed to remove configfs-tsm report directory");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The tests play the kernel: a thread watches the fake report root, fills each new report
    //! directory with `generation` and `provider`, and answers each `inblob` with an `outblob`,
    //! bumping `generation` as configfs does.

    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicU32};
    use std::sync::Arc;

    /// How the fake kernel behaves.
    #[derive(Clone, Copy)]
    struct KernelBehaviour {
        provider: Option<&'static str>,
        /// Requests, counted from 1, during which another writer also writes `inblob`.
        raced_requests: u32,
    }

    struct FakeKernel {
        stop: Arc<AtomicBool>,
        requests: Arc<AtomicU32>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl FakeKernel {
        fn start(report_root: PathBuf, behaviour: KernelBehaviour) -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let requests = Arc::new(AtomicU32::new(0));
            let thread = {
                let (stop, requests) = (stop.clone(), requests.clone());
                std::thread::spawn(move || {
                    let mut populated = HashSet::new();
                    let mut served = HashSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        for entry in std::fs::read_dir(&report_root).unwrap() {
                            let dir = entry.unwrap().path();
                            if populated.insert(dir.clone()) {
                                put(&dir, "generation", b"0\n");
                                if let Some(provider) = behaviour.provider {
                                    put(&dir, "provider", format!("{provider}\n").as_bytes());
                                }
                            }
                            // Our inblobs are always 64 bytes: fewer means the write is underway.
                            let inblob = std::fs::read(dir.join("inblob")).unwrap_or_default();
                            if inblob.len() == REPORT_DATA_LIMIT && served.insert(dir.clone()) {
                                let request = requests.fetch_add(1, Ordering::SeqCst) + 1;
                                let writes = if request <= behaviour.raced_requests {
                                    2
                                } else {
                                    1
                                };
                                put(&dir, "generation", format!("{writes}\n").as_bytes());
                                put(&dir, "outblob", &[b"QUOTE".as_slice(), &inblob].concat());
                            }
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            };
            Self {
                stop,
                requests,
                thread: Some(thread),
            }
        }

        fn requests(&self) -> u32 {
            self.requests.load(Ordering::SeqCst)
        }
    }

    impl Drop for FakeKernel {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
        }
    }

    /// Writes an attribute whole, as configfs shows it: never half-written.
    fn put(dir: &Path, name: &str, data: &[u8]) {
        let staged = dir.join(format!(".{name}"));
        std::fs::write(&staged, data).unwrap();
        std::fs::rename(staged, dir.join(name)).unwrap();
    }

    fn fake_configfs() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let report_root = TsmAttester::report_root(root.path());
        std::fs::create_dir_all(&report_root).unwrap();
        (root, report_root)
    }

    fn decode(text: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    }

    #[tokio::test]
    async fn tdx_report_binds_padded_report_data_and_wraps_it_like_upstream() {
        let (root, report_root) = fake_configfs();
        let kernel = FakeKernel::start(
            report_root,
            KernelBehaviour {
                provider: Some("tdx_guest"),
                raced_requests: 0,
            },
        );
        let ccel = root.path().join("CCEL");
        std::fs::write(&ccel, b"event log").unwrap();
        let attester = TsmAttester::open(root.path()).unwrap().with_ccel_path(ccel);
        assert_eq!(attester.tee(), TeeKind::Tdx);

        let evidence = attester.evidence(b"nonce").await.unwrap();
        let evidence: serde_json::Value = serde_json::from_slice(&evidence).unwrap();
        let mut expected = b"QUOTE".to_vec();
        expected.extend_from_slice(b"nonce");
        expected.resize(5 + 64, 0);
        assert_eq!(decode(evidence["quote"].as_str().unwrap()), expected);
        assert_eq!(
            decode(evidence["cc_eventlog"].as_str().unwrap()),
            b"event log"
        );
        assert_eq!(kernel.requests(), 1);
    }

    #[tokio::test]
    async fn a_generation_race_is_retried_in_a_fresh_directory() {
        let (root, report_root) = fake_configfs();
        let kernel = FakeKernel::start(
            report_root,
            KernelBehaviour {
                provider: Some("sev_guest"),
                raced_requests: 1,
            },
        );
        let attester = TsmAttester::open(root.path()).unwrap();
        assert_eq!(attester.tee(), TeeKind::Snp);

        let evidence = attester.evidence(&[9; 64]).await.unwrap();
        let evidence: serde_json::Value = serde_json::from_slice(&evidence).unwrap();
        let report = decode(evidence["attestation_report"].as_str().unwrap());
        assert_eq!(&report[5..], &[9; 64]);
        assert_eq!(kernel.requests(), 2, "one raced request, one retried");
    }

    #[tokio::test]
    async fn a_writer_that_always_races_gives_up_after_bounded_attempts() {
        let (root, report_root) = fake_configfs();
        let kernel = FakeKernel::start(
            report_root,
            KernelBehaviour {
                provider: Some("tdx_guest"),
                raced_requests: u32::MAX,
            },
        );
        let attester = TsmAttester::open(root.path()).unwrap();
        let err = attester.evidence(b"x").await.unwrap_err();
        assert!(matches!(
            err,
            AttesterError::GenerationRace {
                attempts: MAX_ATTEMPTS,
                ..
            }
        ));
        assert_eq!(kernel.requests(), MAX_ATTEMPTS);
    }

    #[test]
    fn a_missing_provider_is_named_and_the_directory_removed() {
        let (root, report_root) = fake_configfs();
        let _kernel = FakeKernel::start(
            report_root.clone(),
            KernelBehaviour {
                provider: None,
                raced_requests: 0,
            },
        );
        let err = TsmAttester::open(root.path()).unwrap_err();
        assert!(
            matches!(err, AttesterError::MissingProvider { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("no provider attribute"), "{err}");
    }

    #[test]
    fn an_unknown_provider_is_refused_with_its_name() {
        let (root, report_root) = fake_configfs();
        let _kernel = FakeKernel::start(
            report_root,
            KernelBehaviour {
                provider: Some("arm_cca_guest"),
                raced_requests: 0,
            },
        );
        let err = TsmAttester::open(root.path()).unwrap_err();
        assert!(err.to_string().contains("arm_cca_guest"), "{err}");
    }

    #[test]
    fn an_empty_report_directory_is_removed_after_a_failed_probe() {
        let (root, report_root) = fake_configfs();
        let err = TsmAttester::open(root.path()).unwrap_err();
        assert!(
            matches!(err, AttesterError::MissingProvider { .. }),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&report_root).unwrap().count(), 0);
    }
}
