//! The KBS client: RCAR attestation, session reuse and resource decryption.
//!
//! The client speaks the Request-Challenge-Attestation-Response protocol of a Trustee KBS
//! (protocol version 0.4.0): it attests once, keeps the `kbs-session-id` cookie for every later
//! request, and decrypts each resource, which the KBS sends as a JWE sealed to an ephemeral TEE
//! key that never leaves this process.

mod canonical_json;
mod client;
mod error;
mod jwe;
mod resource_path;
mod tee_key;
mod token;

use std::time::Duration;

pub use client::{KbsClient, KbsToken, RoundTrips};
pub use error::{KbsError, KbsErrorKind};
pub use kbs_types::Tee;
pub use resource_path::ResourcePath;
pub use tee_key::TeeKeyAlgorithm;

/// The RCAR protocol version this client speaks; a KBS refuses any other.
pub const PROTOCOL_VERSION: &str = "0.4.0";

/// Produces evidence for the KBS; the AA implements it with its attester, the CDH by calling
/// the AA's GetEvidence over ttrpc.
#[async_trait::async_trait]
pub trait EvidenceProvider: Send + Sync {
    /// TEE name as the KBS knows it ("sample", "tdx", "snp", ...).
    fn tee(&self) -> Tee;

    /// Evidence JSON bytes with `report_data` (48 bytes) bound into it.
    async fn primary_evidence(&self, report_data: &[u8]) -> Result<Vec<u8>, EvidenceError>;
}

/// Why evidence could not be produced; `unavailable` separates an outage (the AA is down, try
/// again later) from a failure of the attester itself.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EvidenceError {
    message: String,
    unavailable: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl EvidenceError {
    /// The attester ran and failed (bad report data, unreadable TEE device, ...).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: false,
            source: None,
        }
    }

    /// The evidence source could not be reached; callers map this to "unavailable".
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: true,
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Whether the evidence source was unreachable rather than failing.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

/// Bounded retries with exponential backoff for connection errors and 5xx answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per request, the first one included (at least 1 is always made).
    pub attempts: u32,
    /// Pause before the second attempt; doubled before each further one.
    pub initial_backoff: Duration,
    /// Upper bound of any single pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Where the KBS is and how to talk to it.
#[derive(Debug, Clone)]
pub struct KbsConfig {
    /// Base URL of the KBS, `http://host:port` or `https://host:port`.
    pub url: String,
    /// PEM certificate to trust as the only root; requires an `https` URL. Without it an
    /// `https` KBS is checked against the built-in web PKI roots.
    pub cert_pem: Option<String>,
    /// Type of the ephemeral TEE key resources are sealed to.
    pub key_algorithm: TeeKeyAlgorithm,
    /// Retries for unreachable or failing KBS.
    pub retry: RetryPolicy,
}

impl KbsConfig {
    /// A config for `url` with no certificate, an EC TEE key and the default retries.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cert_pem: None,
            key_algorithm: TeeKeyAlgorithm::default(),
            retry: RetryPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        assert_eq!(policy.backoff(1), Duration::from_millis(100));
        assert_eq!(policy.backoff(2), Duration::from_millis(200));
        assert_eq!(policy.backoff(3), Duration::from_millis(350));
        assert_eq!(policy.backoff(40), Duration::from_millis(350));
    }

    #[test]
    fn evidence_error_keeps_its_kind() {
        assert!(EvidenceError::unavailable("aa down").is_unavailable());
        assert!(!EvidenceError::failed("bad device").is_unavailable());
    }
}
