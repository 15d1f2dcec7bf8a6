//! The two KBCs a resource request can go through: a KBS (cc_kbc) or local files (offline_fs).

use std::sync::Arc;

use anyhow::{Context as _, Result};
use common::kbs::{EvidenceError, KbsClient, KbsConfig, KbsError, KbsErrorKind, ResourcePath};

use crate::aa::AaEvidence;
use crate::config::{Config, KbcKind};
use crate::error::{ErrorKind, HubError};
use crate::offline::OfflineStore;
use crate::single_flight::SingleFlight;

/// The KBC of the current configuration.
pub enum Kbc {
    /// Resources from the offline files, loaded when the KBC was built.
    OfflineFs(OfflineStore),
    /// Resources from a KBS, attesting with evidence from the Attestation Agent.
    Cc(Box<CcKbc>),
}

impl Kbc {
    /// Builds the KBC `config` selects; offline files are read here, never per request.
    pub fn from_config(config: &Config) -> Result<Self> {
        match config.kbc.kind {
            KbcKind::OfflineFsKbc => {
                let store = OfflineStore::load(&config.offline_files)
                    .context("failed to load the offline_fs KBC resources")?;
                Ok(Self::OfflineFs(store))
            }
            KbcKind::CcKbc => Ok(Self::Cc(Box::new(CcKbc::new(config)?))),
        }
    }

    /// A short description for `STATUS=` and logs.
    pub fn describe(&self) -> String {
        match self {
            Self::OfflineFs(store) => format!("offline_fs_kbc, resources: {}", store.len()),
            Self::Cc(cc) => format!("cc_kbc with KBS {}", cc.url),
        }
    }

    /// Fetches the resource a `kbs://` URI names.
    pub async fn get_resource(&self, uri: &str) -> Result<Vec<u8>, HubError> {
        let path = ResourcePath::parse(uri).map_err(|e| {
            HubError::new(
                ErrorKind::InvalidArgument,
                format!("invalid resource URI: {e}"),
            )
        })?;
        match self {
            Self::OfflineFs(store) => store.get(&path, uri),
            Self::Cc(cc) => cc.get_resource(path, uri).await,
        }
    }
}

/// The cc_kbc: one KBS client (one attestation serves many resources) and single-flight fetches.
pub struct CcKbc {
    url: String,
    evidence: Arc<AaEvidence>,
    client: KbsClient,
    in_flight: SingleFlight<ResourcePath, Result<Vec<u8>, HubError>>,
}

impl CcKbc {
    fn new(config: &Config) -> Result<Self> {
        let evidence = Arc::new(AaEvidence::new(&config.aa_socket));
        let kbs = KbsConfig {
            cert_pem: config.kbc.kbs_cert.clone(),
            ..KbsConfig::new(config.kbc.url.clone())
        };
        let client = KbsClient::new(kbs, evidence.clone())
            .with_context(|| format!("invalid KBS settings from {}", config.kbc.source))?;
        Ok(Self {
            url: config.kbc.url.clone(),
            evidence,
            client,
            in_flight: SingleFlight::new(),
        })
    }

    /// Fetches `path`; concurrent requests for the same path share one KBS round trip.
    async fn get_resource(&self, path: ResourcePath, uri: &str) -> Result<Vec<u8>, HubError> {
        self.in_flight.run(&path, || self.fetch(&path, uri)).await
    }

    async fn fetch(&self, path: &ResourcePath, uri: &str) -> Result<Vec<u8>, HubError> {
        self.evidence
            .ensure_tee()
            .await
            .map_err(|e| evidence_error(&e, uri))?;
        self.client
            .get_resource(path)
            .await
            .map_err(|e| kbs_error(&e, uri))
    }
}

fn evidence_error(err: &EvidenceError, uri: &str) -> HubError {
    let kind = if err.is_unavailable() {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Internal
    };
    HubError::new(kind, format!("resource {uri}: {}", chain(err)))
}

fn kbs_error(err: &KbsError, uri: &str) -> HubError {
    let kind = match err.kind() {
        _ if matches!(err, KbsError::ResourceNotFoundOrDenied { status: 404, .. }) => {
            ErrorKind::NotFound
        }
        KbsErrorKind::InvalidInput => ErrorKind::InvalidArgument,
        KbsErrorKind::Unavailable => ErrorKind::Unavailable,
        // A Trustee KBS answers a missing and a denied resource alike (401).
        KbsErrorKind::NotFoundOrDenied | KbsErrorKind::AttestationRejected => {
            ErrorKind::PermissionDenied
        }
        KbsErrorKind::Config | KbsErrorKind::Protocol | KbsErrorKind::Internal => {
            ErrorKind::Internal
        }
    };
    HubError::new(kind, format!("resource {uri}: {}", chain(err)))
}

/// An error and its causes on one line (the KBS errors never hold resource content).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn denied(status: u16) -> KbsError {
        KbsError::ResourceNotFoundOrDenied {
            path: "default/key/1".into(),
            url: "http://127.0.0.1:1".into(),
            status,
            detail: "policy".into(),
        }
    }

    #[test]
    fn kbs_failures_map_to_status_kinds_naming_the_uri() {
        let uri = "kbs:///default/key/1";
        let cases = [
            (denied(401), ErrorKind::PermissionDenied),
            (denied(404), ErrorKind::NotFound),
            (
                KbsError::ServerError {
                    url: "http://127.0.0.1:1/kbs/v0/auth".into(),
                    status: 503,
                    attempts: 3,
                    detail: "busy".into(),
                },
                ErrorKind::Unavailable,
            ),
            (
                KbsError::Evidence(EvidenceError::unavailable("aa down")),
                ErrorKind::Unavailable,
            ),
            (
                KbsError::Evidence(EvidenceError::failed("attester broke")),
                ErrorKind::Internal,
            ),
            (
                KbsError::Protocol {
                    url: "http://127.0.0.1:1".into(),
                    reason: "not json".into(),
                },
                ErrorKind::Internal,
            ),
        ];
        for (err, kind) in cases {
            let mapped = kbs_error(&err, uri);
            assert_eq!(mapped.kind(), kind, "{err}");
            assert!(mapped.to_string().contains(uri), "{mapped}");
        }
    }

    #[test]
    fn evidence_causes_are_kept_in_the_message() {
        let err = EvidenceError::unavailable("attestation agent unix:///aa.sock unavailable")
            .with_source(std::io::Error::other("connection refused"));
        let mapped = evidence_error(&err, "kbs:///a/b/c");
        assert_eq!(mapped.kind(), ErrorKind::Unavailable);
        assert!(
            mapped.to_string().contains("connection refused"),
            "{mapped}"
        );
    }

    #[tokio::test]
    async fn a_bad_uri_is_an_invalid_argument_naming_it() {
        let kbc = Kbc::OfflineFs(OfflineStore::default());
        for uri in [
            "kbs:///a/../b",
            "kbs:///only/two",
            "https://x/a/b/c",
            "kbs:///a/%2e%2e/c",
        ] {
            let err = kbc.get_resource(uri).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{uri}");
            assert!(err.to_string().contains(uri), "{err}");
        }
    }
}
