//! Attesters: the TEE drivers that turn caller data into signed evidence.

mod sample;
mod tsm;

use std::path::{Path, PathBuf};

pub use sample::SampleAttester;
pub use tsm::TsmAttester;

/// Largest report data any of our attesters binds (TDX and SNP report data are 64 bytes).
pub const REPORT_DATA_LIMIT: usize = 64;

/// The attester the operator asked for with `--tee`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TeeChoice {
    /// The sample attester: no TEE, evidence in the clear.
    Sample,
    /// Linux configfs-tsm reports (TDX or SNP).
    Tsm,
}

/// The TEE an attester speaks for, as a KBS names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeeKind {
    /// No TEE: the sample attester.
    Sample,
    /// Intel TDX.
    Tdx,
    /// AMD SEV-SNP.
    Snp,
}

impl TeeKind {
    /// The name GetTeeType answers and a KBS expects.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sample => "sample",
            Self::Tdx => "tdx",
            Self::Snp => "snp",
        }
    }

    /// The same TEE as the RCAR wire type.
    pub fn as_kbs_tee(self) -> kbs_types::Tee {
        match self {
            Self::Sample => kbs_types::Tee::Sample,
            Self::Tdx => kbs_types::Tee::Tdx,
            Self::Snp => kbs_types::Tee::Snp,
        }
    }
}

/// Why an attester could not produce evidence.
#[derive(Debug, thiserror::Error)]
pub enum AttesterError {
    /// The caller passed more report data than the TEE binds.
    #[error("runtime data is {len} bytes, the {tee} attester accepts at most {limit} bytes")]
    ReportDataTooLong {
        /// TEE name.
        tee: &'static str,
        /// Bytes passed.
        len: usize,
        /// Bytes accepted.
        limit: usize,
    },
    /// A configfs-tsm file could not be read or written.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// What was attempted ("read", "write", "create").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The report directory has no `provider` attribute.
    #[error("configfs-tsm report {} has no provider attribute", dir.display())]
    MissingProvider {
        /// The report directory.
        dir: PathBuf,
    },
    /// The provider is not one we map to a TEE.
    #[error("configfs-tsm provider {provider:?} at {} is not supported (supported: tdx_guest, sev_guest)", path.display())]
    UnknownProvider {
        /// The provider text.
        provider: String,
        /// The attribute file.
        path: PathBuf,
    },
    /// The provider changed since start-up.
    #[error("configfs-tsm provider at {} is {found}, expected {expected}", path.display())]
    ProviderChanged {
        /// The attribute file.
        path: PathBuf,
        /// Provider seen at start-up.
        expected: &'static str,
        /// Provider seen now.
        found: String,
    },
    /// The `generation` attribute is not a number.
    #[error("configfs-tsm generation {value:?} at {} is not a number", path.display())]
    BadGeneration {
        /// The attribute file.
        path: PathBuf,
        /// Its content.
        value: String,
    },
    /// Another writer kept overwriting our report request.
    #[error("configfs-tsm report request under {} raced with another writer {attempts} times", root.display())]
    GenerationRace {
        /// The report root.
        root: PathBuf,
        /// Attempts made.
        attempts: u32,
    },
    /// The kernel returned an empty report.
    #[error("configfs-tsm report {} is empty", path.display())]
    EmptyReport {
        /// The `outblob` file.
        path: PathBuf,
    },
    /// A blocking configfs task did not finish.
    #[error("configfs-tsm report task failed: {0}")]
    Task(String),
}

/// The attester this agent uses, chosen once at start.
#[derive(Debug)]
pub enum Attester {
    /// The sample attester.
    Sample(SampleAttester),
    /// configfs-tsm.
    Tsm(TsmAttester),
}

impl Attester {
    /// Picks the attester: the forced one, else tsm when its configfs report dir works, else sample.
    pub fn select(choice: Option<TeeChoice>, configfs_root: &Path) -> Result<Self, AttesterError> {
        match choice {
            Some(TeeChoice::Sample) => Ok(Self::Sample(SampleAttester)),
            Some(TeeChoice::Tsm) => TsmAttester::open(configfs_root).map(Self::Tsm),
            None if !TsmAttester::report_root(configfs_root).is_dir() => {
                Ok(Self::Sample(SampleAttester))
            }
            None => match TsmAttester::open(configfs_root) {
                Ok(tsm) => Ok(Self::Tsm(tsm)),
                Err(err) => {
                    // A report dir the kernel will not serve is not an available TEE.
                    tracing::warn!(error = %err, "configfs-tsm present but unusable, using the sample attester");
                    Ok(Self::Sample(SampleAttester))
                }
            },
        }
    }

    /// The TEE this attester speaks for.
    pub fn tee(&self) -> TeeKind {
        match self {
            Self::Sample(_) => TeeKind::Sample,
            Self::Tsm(tsm) => tsm.tee(),
        }
    }

    /// Evidence JSON with `report_data` bound into it.
    pub async fn evidence(&self, report_data: &[u8]) -> Result<Vec<u8>, AttesterError> {
        check_report_data(self.tee(), report_data)?;
        match self {
            Self::Sample(sample) => Ok(sample.evidence(report_data)),
            Self::Tsm(tsm) => tsm.evidence(report_data).await,
        }
    }
}

/// Refuses report data longer than a TEE report can carry.
fn check_report_data(tee: TeeKind, report_data: &[u8]) -> Result<(), AttesterError> {
    if report_data.len() > REPORT_DATA_LIMIT {
        return Err(AttesterError::ReportDataTooLong {
            tee: tee.name(),
            len: report_data.len(),
            limit: REPORT_DATA_LIMIT,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_report_data_is_refused_with_size_and_limit() {
        let attester = Attester::Sample(SampleAttester);
        let err = attester.evidence(&[7; 65]).await.unwrap_err();
        assert!(matches!(
            err,
            AttesterError::ReportDataTooLong {
                len: 65,
                limit: 64,
                ..
            }
        ));
        assert!(err.to_string().contains("65 bytes"), "{err}");
        assert!(err.to_string().contains("at most 64"), "{err}");
        assert!(attester.evidence(&[7; 64]).await.is_ok());
    }

    #[test]
    fn detection_falls_back_to_sample_without_configfs_tsm() {
        let root = tempfile::tempdir().unwrap();
        let attester = Attester::select(None, root.path()).unwrap();
        assert_eq!(attester.tee(), TeeKind::Sample);
    }

    #[test]
    fn forcing_tsm_without_configfs_tsm_names_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let err = Attester::select(Some(TeeChoice::Tsm), root.path()).unwrap_err();
        assert!(err.to_string().contains("tsm/report"), "{err}");
    }

    #[test]
    fn tee_names_match_the_kbs_wire_names() {
        for kind in [TeeKind::Sample, TeeKind::Tdx, TeeKind::Snp] {
            let wire = serde_json::to_value(kind.as_kbs_tee()).unwrap();
            assert_eq!(wire, serde_json::Value::from(kind.name()));
        }
    }
}
