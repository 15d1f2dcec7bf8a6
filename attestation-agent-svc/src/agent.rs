//! The Attestation Agent core: what each API method does, independent of the transport.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::Context;
use common::kbs::{EvidenceError, EvidenceProvider, KbsErrorKind};
use common::wire::attestation_agent::RuntimeMeasurementResult;

use crate::attester::{Attester, AttesterError};
use crate::config::AgentConfig;
use crate::eventlog::{Event, Eventlog, EventlogError};
use crate::token::{KbsTokenSource, SUPPORTED_TOKEN_TYPES};

/// Longest init data digest accepted (SHA-512).
const INIT_DATA_DIGEST_LIMIT: usize = 64;

/// The class of a failed request, mapped to a status code by each transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request itself is wrong.
    InvalidArgument,
    /// The agent is not configured for this request.
    FailedPrecondition,
    /// A remote party (the KBS) cannot be reached; retrying may help.
    Unavailable,
    /// The KBS refused the attestation.
    PermissionDenied,
    /// This TEE cannot do what was asked.
    Unimplemented,
    /// Anything else.
    Internal,
}

/// A failed request: a status class and a message for the caller (never secret material).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    /// The status class.
    pub code: ErrorCode,
    /// What went wrong, with its causes.
    pub message: String,
}

impl AgentError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Logs the failure once, where the transport answers it, and hands it on.
    pub fn logged(self, method: &str) -> Self {
        tracing::warn!(method, code = ?self.code, "request failed: {}", self.message);
        self
    }
}

/// What ExtendRuntimeMeasurement achieved; no attester here extends a register, so never OK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeasurementOutcome {
    /// Recorded, but the TEE register could not be extended.
    NotSupported,
    /// The eventlog is disabled by configuration.
    NotEnabled,
}

impl MeasurementOutcome {
    /// The wire value both transports send.
    pub fn wire(self) -> RuntimeMeasurementResult {
        match self {
            Self::NotSupported => RuntimeMeasurementResult::NotSupported,
            Self::NotEnabled => RuntimeMeasurementResult::NotEnabled,
        }
    }
}

/// What a configuration turns into at run time; replaced whole on reload.
struct Settings {
    config: AgentConfig,
    tokens: Option<KbsTokenSource>,
    eventlog: Option<Arc<Eventlog>>,
}

/// The agent: one attester, the current settings, and the bound init data.
pub struct AttestationAgent {
    attester: Arc<Attester>,
    settings: RwLock<Arc<Settings>>,
    init_data: Mutex<Option<Vec<u8>>>,
}

impl AttestationAgent {
    /// An agent using `attester`, configured by `config`.
    pub fn new(attester: Attester, config: AgentConfig) -> anyhow::Result<Self> {
        let attester = Arc::new(attester);
        let settings = Settings::build(&attester, config)?;
        Ok(Self {
            attester,
            settings: RwLock::new(Arc::new(settings)),
            init_data: Mutex::new(None),
        })
    }

    /// Applies a new configuration; on error the old one stays in effect.
    pub fn reload(&self, config: AgentConfig) -> anyhow::Result<()> {
        let settings = Arc::new(Settings::build(&self.attester, config)?);
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = settings;
        Ok(())
    }

    fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One line for the operator: TEE and KBS with the source of each.
    pub fn status(&self) -> String {
        let settings = self.settings();
        let eventlog = match &settings.eventlog {
            Some(eventlog) => format!("eventlog {}", eventlog.path().display()),
            None => "eventlog disabled".to_owned(),
        };
        format!(
            "serving; TEE {}; {}; {eventlog}",
            self.attester.tee().name(),
            settings.config.kbs_summary()
        )
    }

    /// Evidence of the TEE with `runtime_data` bound as its report data.
    pub async fn get_evidence(&self, runtime_data: &[u8]) -> Result<Vec<u8>, AgentError> {
        tracing::debug!(runtime_data_len = runtime_data.len(), "GetEvidence");
        self.attester
            .evidence(runtime_data)
            .await
            .map_err(|err| match err {
                AttesterError::ReportDataTooLong { .. } => {
                    AgentError::new(ErrorCode::InvalidArgument, err.to_string())
                }
                other => AgentError::new(ErrorCode::Internal, error_chain(&other)),
            })
    }

    /// Evidence of the additional TEEs: there are none, so an empty JSON object.
    pub async fn get_additional_evidence(
        &self,
        runtime_data: &[u8],
    ) -> Result<Vec<u8>, AgentError> {
        tracing::debug!(
            runtime_data_len = runtime_data.len(),
            "GetAdditionalEvidence"
        );
        Ok(b"{}".to_vec())
    }

    /// A token of `token_type` (only `kbs`): `{"token": ..., "tee_keypair": ...}`.
    pub async fn get_token(&self, token_type: &str) -> Result<Vec<u8>, AgentError> {
        tracing::debug!(token_type, "GetToken");
        if !SUPPORTED_TOKEN_TYPES.contains(&token_type) {
            return Err(AgentError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "unsupported token type {token_type:?}; supported: {}",
                    SUPPORTED_TOKEN_TYPES.join(", ")
                ),
            ));
        }

        let settings = self.settings();
        let Some(tokens) = &settings.tokens else {
            return Err(AgentError::new(
                ErrorCode::FailedPrecondition,
                format!(
                    "no KBS is configured (kbs setting from {}), so there is no token to get",
                    settings.config.kbs.source
                ),
            ));
        };
        tokens.token_json().await.map_err(|err| {
            let code = match err.kind() {
                KbsErrorKind::Unavailable => ErrorCode::Unavailable,
                KbsErrorKind::AttestationRejected | KbsErrorKind::NotFoundOrDenied => {
                    ErrorCode::PermissionDenied
                }
                KbsErrorKind::Config => ErrorCode::FailedPrecondition,
                KbsErrorKind::InvalidInput => ErrorCode::InvalidArgument,
                KbsErrorKind::Protocol | KbsErrorKind::Internal => ErrorCode::Internal,
            };
            AgentError::new(
                code,
                format!("failed to get a KBS token: {}", error_chain(&err)),
            )
        })
    }

    /// Records an event in the eventlog; no attester here can extend a TEE register.
    pub async fn extend_runtime_measurement(
        &self,
        domain: String,
        operation: String,
        content: String,
        register_index: Option<u64>,
    ) -> Result<MeasurementOutcome, AgentError> {
        let settings = self.settings();
        // As upstream: without an index the event belongs to the register of the INIT entry.
        let register = register_index.unwrap_or(settings.config.eventlog.value.init_pcr);
        tracing::debug!(%domain, %operation, register, "ExtendRuntimeMeasurement");
        let Some(eventlog) = settings.eventlog.clone() else {
            return Ok(MeasurementOutcome::NotEnabled);
        };

        let recorded = tokio::task::spawn_blocking(move || {
            eventlog.record(&Event::new(&domain, &operation, &content)?)
        })
        .await
        .map_err(|err| {
            AgentError::new(ErrorCode::Internal, format!("eventlog task failed: {err}"))
        })?;
        recorded.map_err(|err| match err {
            EventlogError::InvalidField { .. } => {
                AgentError::new(ErrorCode::InvalidArgument, err.to_string())
            }
            EventlogError::Io { .. } => AgentError::new(ErrorCode::Internal, error_chain(&err)),
        })?;

        // Limitation: neither the sample nor the configfs-tsm attester can extend a runtime
        // measurement register (configfs-tsm reports have no extend interface), so the event
        // is only recorded in the eventlog.
        Ok(MeasurementOutcome::NotSupported)
    }

    /// Binds the init data digest: the sample attester records it, TEEs here cannot check it.
    pub async fn bind_init_data(&self, digest: &[u8]) -> Result<(), AgentError> {
        tracing::debug!(digest_len = digest.len(), "BindInitData");
        if digest.is_empty() || digest.len() > INIT_DATA_DIGEST_LIMIT {
            return Err(AgentError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "init data digest is {} bytes, expected 1 to {INIT_DATA_DIGEST_LIMIT}",
                    digest.len()
                ),
            ));
        }
        match self.attester.as_ref() {
            Attester::Sample(_) => {
                let mut bound = self
                    .init_data
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                tracing::info!(digest = %hex(digest), "init data digest bound");
                *bound = Some(digest.to_vec());
                Ok(())
            }
            // Limitation: checking init data on TDX or SNP needs the TD report's MRCONFIGID or
            // the SNP HOSTDATA, which configfs-tsm reports do not expose in a parsed form here.
            Attester::Tsm(tsm) => Err(AgentError::new(
                ErrorCode::Unimplemented,
                format!(
                    "binding init data is not supported by the tsm attester ({})",
                    tsm.tee().name()
                ),
            )),
        }
    }

    /// The TEE name: `sample`, `tdx` or `snp`.
    pub fn tee_type(&self) -> String {
        tracing::debug!("GetTeeType");
        self.attester.tee().name().to_owned()
    }

    /// Additional TEEs (confidential devices): none are supported.
    pub fn additional_tees(&self) -> Vec<String> {
        tracing::debug!("GetAdditionalTees");
        Vec::new()
    }

    /// The init data digest bound so far, if any.
    #[cfg(test)]
    fn bound_init_data(&self) -> Option<Vec<u8>> {
        self.init_data
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Settings {
    fn build(attester: &Arc<Attester>, config: AgentConfig) -> anyhow::Result<Self> {
        let tokens = match &config.kbs.value {
            Some(endpoint) => {
                let evidence: Arc<dyn EvidenceProvider> =
                    Arc::new(AttesterEvidence(attester.clone()));
                let source = KbsTokenSource::new(endpoint, evidence).with_context(|| {
                    format!("invalid KBS {} from {}", endpoint.url, config.kbs.source)
                })?;
                Some(source)
            }
            None => None,
        };
        let eventlog = if config.eventlog.value.enabled {
            let eventlog = Eventlog::open(&config.eventlog.value.path)
                .with_context(|| format!("eventlog enabled by {}", config.eventlog.source))?;
            Some(Arc::new(eventlog))
        } else {
            None
        };
        Ok(Self {
            config,
            tokens,
            eventlog,
        })
    }
}

/// Lends the attester to the KBS client.
struct AttesterEvidence(Arc<Attester>);

#[async_trait::async_trait]
impl EvidenceProvider for AttesterEvidence {
    fn tee(&self) -> kbs_types::Tee {
        self.0.tee().as_kbs_tee()
    }

    async fn primary_evidence(&self, report_data: &[u8]) -> Result<Vec<u8>, EvidenceError> {
        self.0.evidence(report_data).await.map_err(|err| {
            EvidenceError::failed(format!("{} attester failed", self.0.tee().name()))
                .with_source(err)
        })
    }
}

/// An error and its causes on one line, for a status message.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::attester::SampleAttester;
    use crate::config::{EventlogSettings, SettingSource, Sourced};

    fn config(eventlog: Option<&std::path::Path>) -> AgentConfig {
        AgentConfig {
            kbs: Sourced {
                value: None,
                source: SettingSource::Default,
            },
            eventlog: Sourced {
                value: EventlogSettings {
                    enabled: eventlog.is_some(),
                    init_pcr: 17,
                    path: eventlog.map(|p| p.to_path_buf()).unwrap_or_default(),
                },
                source: SettingSource::Default,
            },
            log_level: Sourced {
                value: "info".to_owned(),
                source: SettingSource::Default,
            },
            ignored_keys: Vec::new(),
        }
    }

    fn sample_agent(eventlog: Option<&std::path::Path>) -> AttestationAgent {
        AttestationAgent::new(Attester::Sample(SampleAttester), config(eventlog)).unwrap()
    }

    #[tokio::test]
    async fn token_requests_are_refused_clearly() {
        let agent = sample_agent(None);
        let err = agent.get_token("coco_as").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert_eq!(
            err.message,
            r#"unsupported token type "coco_as"; supported: kbs"#
        );

        let err = agent.get_token("kbs").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition);
        assert!(
            err.message.contains("no KBS is configured"),
            "{}",
            err.message
        );
        assert!(err.message.contains("built-in default"), "{}", err.message);
    }

    #[tokio::test]
    async fn measurements_are_not_enabled_without_an_eventlog() {
        let agent = sample_agent(None);
        let outcome = agent
            .extend_runtime_measurement("d".into(), "op".into(), "c".into(), None)
            .await
            .unwrap();
        assert_eq!(outcome, MeasurementOutcome::NotEnabled);
    }

    #[tokio::test]
    async fn measurements_are_recorded_and_reload_switches_the_eventlog() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let agent = sample_agent(Some(&first));
        let outcome = agent
            .extend_runtime_measurement("d".into(), "op".into(), "one".into(), Some(3))
            .await
            .unwrap();
        assert_eq!(outcome, MeasurementOutcome::NotSupported);
        let err = agent
            .extend_runtime_measurement("d".into(), "op".into(), "a\nb".into(), None)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);

        let second = dir.path().join("second");
        agent.reload(config(Some(&second))).unwrap();
        agent
            .extend_runtime_measurement("d".into(), "op".into(), "two".into(), None)
            .await
            .unwrap();
        assert!(std::fs::read_to_string(&first)
            .unwrap()
            .ends_with("d op one\n"));
        assert!(std::fs::read_to_string(&second)
            .unwrap()
            .ends_with("d op two\n"));
        assert!(agent.status().contains(&second.display().to_string()));
    }

    #[tokio::test]
    async fn a_failed_reload_keeps_the_old_settings() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("eventlog");
        let agent = sample_agent(Some(&log));
        std::fs::write(dir.path().join("file"), "").unwrap();
        let unusable = dir.path().join("file/eventlog");
        assert!(agent.reload(config(Some(&unusable))).is_err());
        agent
            .extend_runtime_measurement("d".into(), "op".into(), "kept".into(), None)
            .await
            .unwrap();
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .ends_with("d op kept\n"));
    }

    #[tokio::test]
    async fn init_data_is_recorded_by_the_sample_attester() {
        let agent = sample_agent(None);
        agent.bind_init_data(&[0xab; 32]).await.unwrap();
        assert_eq!(agent.bound_init_data(), Some(vec![0xab; 32]));
        let err = agent.bind_init_data(&[0; 65]).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains("65 bytes"), "{}", err.message);
    }

    #[tokio::test]
    async fn oversized_runtime_data_is_an_invalid_argument() {
        let agent = sample_agent(None);
        let err = agent.get_evidence(&[0; 100]).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains("100 bytes"), "{}", err.message);
        assert_eq!(agent.get_additional_evidence(b"x").await.unwrap(), b"{}");
        assert_eq!(agent.tee_type(), "sample");
        assert!(agent.additional_tees().is_empty());
    }
}
