//! Errors of the KBS client and the coarse kinds callers map to status codes.

use super::EvidenceError;

/// What class of failure a [`KbsError`] is, for mapping to gRPC/HTTP status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KbsErrorKind {
    /// The client was configured wrongly (URL, certificate).
    Config,
    /// The caller's input was malformed (a resource path).
    InvalidInput,
    /// The KBS or the evidence source could not be reached or is failing; try again later.
    Unavailable,
    /// The KBS refused the attestation (evidence, nonce or report data did not verify).
    AttestationRejected,
    /// The resource does not exist or policy denies it; a KBS answers both alike.
    NotFoundOrDenied,
    /// The KBS answered something this client cannot use.
    Protocol,
    /// The local attester failed, or the TEE key could not be made or used.
    Internal,
}

/// A failure of the KBS client; never carries resource content or key material.
#[derive(Debug, thiserror::Error)]
pub enum KbsError {
    /// The KBS URL or certificate is unusable.
    #[error("invalid KBS config: {0}")]
    Config(String),

    /// A resource path or URI that is not `repo/type/tag`.
    #[error("invalid resource path {path:?}: {reason}")]
    InvalidResourcePath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No answer from the KBS after every allowed attempt.
    #[error("KBS {url} unreachable after {attempts} attempts")]
    Unreachable {
        /// The request URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: reqwest::Error,
    },

    /// The KBS kept failing with a server error.
    #[error("KBS {url} failed with {status} after {attempts} attempts: {detail}")]
    ServerError {
        /// The request URL.
        url: String,
        /// HTTP status of the last answer.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The KBS's `ErrorInformation` detail, or the status text.
        detail: String,
    },

    /// The KBS refused the handshake or the evidence.
    #[error("KBS {url} rejected the attestation with {status}: {detail}")]
    AttestationRejected {
        /// The request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The KBS's `ErrorInformation` detail.
        detail: String,
    },

    /// The KBS has no such resource or its policy denies it.
    #[error("resource {path} not found or denied by KBS {url} ({status}): {detail}")]
    ResourceNotFoundOrDenied {
        /// The resource path.
        path: String,
        /// The KBS base URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The KBS's `ErrorInformation` detail.
        detail: String,
    },

    /// An answer of the KBS that does not follow the protocol.
    #[error("unexpected answer from KBS {url}: {reason}")]
    Protocol {
        /// The request URL.
        url: String,
        /// What was wrong.
        reason: String,
    },

    /// The evidence provider failed.
    #[error("evidence for the KBS could not be produced")]
    Evidence(#[from] EvidenceError),

    /// The ephemeral TEE key could not be generated or exported.
    #[error("TEE key: {0}")]
    TeeKey(String),

    /// A resource arrived but could not be decrypted with the TEE key.
    #[error("resource {path} from KBS {url} could not be decrypted: {reason}")]
    Decrypt {
        /// The resource path.
        path: String,
        /// The KBS base URL.
        url: String,
        /// Which step failed (never content).
        reason: String,
    },
}

impl KbsError {
    /// The class of this failure.
    pub fn kind(&self) -> KbsErrorKind {
        match self {
            Self::Config(_) => KbsErrorKind::Config,
            Self::InvalidResourcePath { .. } => KbsErrorKind::InvalidInput,
            Self::Unreachable { .. } | Self::ServerError { .. } => KbsErrorKind::Unavailable,
            Self::AttestationRejected { .. } => KbsErrorKind::AttestationRejected,
            Self::ResourceNotFoundOrDenied { .. } => KbsErrorKind::NotFoundOrDenied,
            Self::Protocol { .. } | Self::Decrypt { .. } => KbsErrorKind::Protocol,
            Self::Evidence(e) if e.is_unavailable() => KbsErrorKind::Unavailable,
            Self::Evidence(_) | Self::TeeKey(_) => KbsErrorKind::Internal,
        }
    }

    /// The `detail` the KBS gave in its `ErrorInformation`, when it answered with one.
    pub fn kbs_detail(&self) -> Option<&str> {
        match self {
            Self::ServerError { detail, .. }
            | Self::AttestationRejected { detail, .. }
            | Self::ResourceNotFoundOrDenied { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_outage_is_unavailable_and_failure_is_internal() {
        let outage = KbsError::from(EvidenceError::unavailable("aa socket missing"));
        let failure = KbsError::from(EvidenceError::failed("tsm report unreadable"));
        assert_eq!(outage.kind(), KbsErrorKind::Unavailable);
        assert_eq!(failure.kind(), KbsErrorKind::Internal);
    }

    #[test]
    fn kinds_and_details_of_kbs_answers() {
        let denied = KbsError::ResourceNotFoundOrDenied {
            path: "a/b/c".into(),
            url: "http://kbs".into(),
            status: 401,
            detail: "policy denied".into(),
        };
        assert_eq!(denied.kind(), KbsErrorKind::NotFoundOrDenied);
        assert_eq!(denied.kbs_detail(), Some("policy denied"));
        assert!(denied.to_string().contains("a/b/c"));

        let server = KbsError::ServerError {
            url: "http://kbs/kbs/v0/auth".into(),
            status: 503,
            attempts: 3,
            detail: "overloaded".into(),
        };
        assert_eq!(server.kind(), KbsErrorKind::Unavailable);

        let rejected = KbsError::AttestationRejected {
            url: "http://kbs/kbs/v0/attest".into(),
            status: 401,
            detail: "nonce mismatch".into(),
        };
        assert_eq!(rejected.kind(), KbsErrorKind::AttestationRejected);
        assert_eq!(KbsError::Config("x".into()).kbs_detail(), None);
    }
}
