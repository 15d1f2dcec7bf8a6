//! In-process ttrpc doubles of the Attestation Agent and the Confidential Data Hub with
//! deterministic answers, shared by the unit tests and the end-to-end tests.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::wire::api::{
    create_get_resource_service, GetResourceRequest, GetResourceResponse, GetResourceService,
};
use common::wire::attestation_agent::{
    create_attestation_agent_service, AttestationAgentService, ExtendRuntimeMeasurementRequest,
    ExtendRuntimeMeasurementResponse, GetAdditionalEvidenceRequest, GetAdditionalTeesRequest,
    GetAdditionalTeesResponse, GetEvidenceRequest, GetEvidenceResponse, GetTeeTypeRequest,
    GetTeeTypeResponse, GetTokenRequest, GetTokenResponse, RuntimeMeasurementResult,
};
use ttrpc::r#async::{Server, TtrpcContext};
use ttrpc::Code;

/// The token the fake AA hands out for `kbs`.
pub const TOKEN: &[u8] =
    br#"{"token":"eyJhbGciOiJFUzI1NiJ9.e30.c2ln","tee_keypair":"-----BEGIN PRIVATE KEY-----"}"#;

/// Resource bytes the fake CDH returns for `path`: not UTF-8, so any re-encoding shows.
pub fn resource_bytes(path: &str) -> Vec<u8> {
    let mut bytes = vec![0x00, 0xff, 0xfe];
    bytes.extend_from_slice(path.as_bytes());
    bytes
}

/// Evidence the fake AA returns: the sample attester's JSON with `runtime_data` bound.
pub fn evidence_for(runtime_data: &[u8]) -> Vec<u8> {
    format!(
        r#"{{"svn":"1","report_data":"{}"}}"#,
        STANDARD.encode(runtime_data)
    )
    .into_bytes()
}

/// Additional evidence the fake AA returns.
pub fn additional_evidence_for(runtime_data: &[u8]) -> Vec<u8> {
    format!(r#"{{"additional":"{}"}}"#, STANDARD.encode(runtime_data)).into_bytes()
}

fn status(code: Code, message: &str) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

/// A fake CDH: `kbs:///default/<kind>/<tag>` answers by tag, every request path is recorded.
#[derive(Clone, Default)]
pub struct FakeCdh {
    /// Every `ResourcePath` received, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl GetResourceService for FakeCdh {
    async fn get_resource(
        &self,
        _ctx: &TtrpcContext,
        req: GetResourceRequest,
    ) -> ttrpc::Result<GetResourceResponse> {
        self.seen
            .lock()
            .map_err(|_| status(Code::INTERNAL, "poisoned"))?
            .push(req.resource_path.clone());
        let tag = req.resource_path.rsplit('/').next().unwrap_or_default();
        match tag {
            "missing" => Err(status(Code::NOT_FOUND, "no such resource")),
            "denied" => Err(status(Code::PERMISSION_DENIED, "policy denies it")),
            "invalid" => Err(status(Code::INVALID_ARGUMENT, "bad uri")),
            "busy" => Err(status(Code::UNAVAILABLE, "kbs unreachable")),
            "broken" => Err(status(Code::INTERNAL, "something broke")),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Err(status(Code::INTERNAL, "too late"))
            }
            _ => Ok(GetResourceResponse {
                resource: resource_bytes(&req.resource_path),
            }),
        }
    }
}

/// A fake AA with the sample TEE.
#[derive(Clone, Default)]
pub struct FakeAa {
    /// Every eventlog entry recorded, as `domain operation content`.
    pub events: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl AttestationAgentService for FakeAa {
    async fn get_evidence(
        &self,
        _ctx: &TtrpcContext,
        req: GetEvidenceRequest,
    ) -> ttrpc::Result<GetEvidenceResponse> {
        if req.runtime_data.len() > 64 {
            return Err(status(
                Code::INVALID_ARGUMENT,
                "runtime data longer than 64 bytes",
            ));
        }
        Ok(GetEvidenceResponse {
            evidence: evidence_for(&req.runtime_data),
        })
    }

    async fn get_additional_evidence(
        &self,
        _ctx: &TtrpcContext,
        req: GetAdditionalEvidenceRequest,
    ) -> ttrpc::Result<GetEvidenceResponse> {
        Ok(GetEvidenceResponse {
            evidence: additional_evidence_for(&req.runtime_data),
        })
    }

    async fn get_token(
        &self,
        _ctx: &TtrpcContext,
        req: GetTokenRequest,
    ) -> ttrpc::Result<GetTokenResponse> {
        match req.token_type.as_str() {
            "kbs" => Ok(GetTokenResponse {
                token: TOKEN.to_vec(),
            }),
            other => Err(status(
                Code::INVALID_ARGUMENT,
                &format!("unsupported token type {other:?}"),
            )),
        }
    }

    async fn extend_runtime_measurement(
        &self,
        _ctx: &TtrpcContext,
        req: ExtendRuntimeMeasurementRequest,
    ) -> ttrpc::Result<ExtendRuntimeMeasurementResponse> {
        let result = match req.domain.as_str() {
            "unsupported" => RuntimeMeasurementResult::NotSupported,
            "disabled" => RuntimeMeasurementResult::NotEnabled,
            _ => {
                self.events
                    .lock()
                    .map_err(|_| status(Code::INTERNAL, "poisoned"))?
                    .push(format!("{} {} {}", req.domain, req.operation, req.content));
                RuntimeMeasurementResult::Ok
            }
        };
        Ok(ExtendRuntimeMeasurementResponse {
            result: result.into(),
        })
    }

    async fn get_tee_type(
        &self,
        _ctx: &TtrpcContext,
        _req: GetTeeTypeRequest,
    ) -> ttrpc::Result<GetTeeTypeResponse> {
        Ok(GetTeeTypeResponse {
            tee: "sample".to_owned(),
        })
    }

    async fn get_additional_tees(
        &self,
        _ctx: &TtrpcContext,
        _req: GetAdditionalTeesRequest,
    ) -> ttrpc::Result<GetAdditionalTeesResponse> {
        Ok(GetAdditionalTeesResponse {
            additional_tees: vec!["tpm".to_owned()],
        })
    }
}

/// Serves `cdh` on a unix socket at `path` (a leftover socket file is replaced).
pub async fn serve_cdh(path: &Path, cdh: FakeCdh) -> Server {
    serve(path, create_get_resource_service(Arc::new(cdh))).await
}

/// Serves `aa` on a unix socket at `path` (a leftover socket file is replaced).
pub async fn serve_aa(path: &Path, aa: FakeAa) -> Server {
    serve(path, create_attestation_agent_service(Arc::new(aa))).await
}

async fn serve(
    path: &Path,
    services: std::collections::HashMap<String, ttrpc::r#async::Service>,
) -> Server {
    if path.exists() {
        std::fs::remove_file(path).expect("remove the old socket");
    }
    let mut server = Server::new()
        .bind(&format!("unix://{}", path.display()))
        .expect("bind the fake backend")
        .register_service(services);
    server.start().await.expect("start the fake backend");
    server
}
