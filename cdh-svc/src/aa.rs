//! Evidence from the Attestation Agent over ttrpc, for the KBS client of the cc_kbc.

use std::future::Future;
use std::str::FromStr as _;
use std::sync::Mutex;
use std::time::Duration;

use common::kbs::{EvidenceError, EvidenceProvider, Tee};
use common::service::Endpoint;
use common::wire::attestation_agent::{
    AttestationAgentServiceClient, GetEvidenceRequest, GetTeeTypeRequest,
};

/// Bound of one call to the AA, so a wedged AA fails a request instead of hanging it.
const AA_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The AA as an [`EvidenceProvider`]: connects on first use and again after the AA restarts.
pub struct AaEvidence {
    uri: String,
    client: tokio::sync::Mutex<Option<AttestationAgentServiceClient>>,
    tee: Mutex<Option<Tee>>,
}

impl AaEvidence {
    /// A provider for the AA at `endpoint`; nothing is connected yet.
    pub fn new(endpoint: &Endpoint) -> Self {
        Self {
            uri: endpoint.uri(),
            client: tokio::sync::Mutex::new(None),
            tee: Mutex::new(None),
        }
    }

    /// The AA's TEE, asked once and remembered; must succeed before the KBS client runs.
    pub async fn ensure_tee(&self) -> Result<Tee, EvidenceError> {
        if let Some(tee) = self.cached_tee() {
            return Ok(tee);
        }
        let response = self
            .call("GetTeeType", |client| async move {
                client
                    .get_tee_type(context(), &GetTeeTypeRequest::default())
                    .await
            })
            .await?;
        let tee = Tee::from_str(&response.tee).map_err(|_| {
            EvidenceError::failed(format!(
                "attestation agent {} reports unknown tee {:?}",
                self.uri, response.tee
            ))
        })?;
        if let Ok(mut cached) = self.tee.lock() {
            *cached = Some(tee);
        }
        Ok(tee)
    }

    fn cached_tee(&self) -> Option<Tee> {
        self.tee.lock().ok().and_then(|tee| *tee)
    }

    /// Runs one AA call; a broken connection is replaced once, since the AA may have restarted.
    async fn call<T, F, Fut>(&self, method: &str, call: F) -> Result<T, EvidenceError>
    where
        F: Fn(AttestationAgentServiceClient) -> Fut,
        Fut: Future<Output = ttrpc::Result<T>>,
    {
        let mut last_error = None;
        for _ in 0..2 {
            let client = self.connected_client().await?;
            match call(client).await {
                Ok(value) => return Ok(value),
                Err(ttrpc::Error::RpcStatus(status)) => {
                    let message = format!(
                        "attestation agent {} failed {method}: {}",
                        self.uri, status.message
                    );
                    // An AA that is busy or too slow is an outage, not a broken attester.
                    let outage = [ttrpc::Code::UNAVAILABLE, ttrpc::Code::DEADLINE_EXCEEDED]
                        .iter()
                        .any(|code| status.code == *code as i32);
                    return Err(if outage {
                        EvidenceError::unavailable(message)
                    } else {
                        EvidenceError::failed(message)
                    });
                }
                Err(transport) => {
                    tracing::debug!(uri = %self.uri, error = %transport, "aa connection lost");
                    *self.client.lock().await = None;
                    last_error = Some(transport);
                }
            }
        }
        let message = format!("attestation agent {} unavailable for {method}", self.uri);
        Err(match last_error {
            Some(e) => EvidenceError::unavailable(message).with_source(e),
            None => EvidenceError::unavailable(message),
        })
    }

    async fn connected_client(&self) -> Result<AttestationAgentServiceClient, EvidenceError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let connection = ttrpc::r#async::Client::connect(&self.uri)
            .await
            .map_err(|e| {
                EvidenceError::unavailable(format!(
                    "attestation agent {} is not reachable",
                    self.uri
                ))
                .with_source(e)
            })?;
        tracing::debug!(uri = %self.uri, "connected to the attestation agent");
        let client = AttestationAgentServiceClient::new(connection);
        *slot = Some(client.clone());
        Ok(client)
    }
}

#[async_trait::async_trait]
impl EvidenceProvider for AaEvidence {
    fn tee(&self) -> Tee {
        // The cc_kbc asks `ensure_tee` before every KBS call, so the fallback is never used.
        self.cached_tee().unwrap_or(Tee::Sample)
    }

    async fn primary_evidence(&self, report_data: &[u8]) -> Result<Vec<u8>, EvidenceError> {
        let request = GetEvidenceRequest {
            runtime_data: report_data.to_vec(),
        };
        let response = self
            .call("GetEvidence", |client| {
                let request = request.clone();
                async move { client.get_evidence(context(), &request).await }
            })
            .await?;
        Ok(response.evidence)
    }
}

fn context() -> ttrpc::context::Context {
    let nanos = i64::try_from(AA_CALL_TIMEOUT.as_nanos()).unwrap_or(i64::MAX);
    ttrpc::context::with_timeout(nanos)
}
