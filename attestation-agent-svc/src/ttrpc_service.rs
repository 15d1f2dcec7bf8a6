//! The ttrpc transport: maps `attestation_agent.AttestationAgentService` onto the agent core.

use std::collections::HashMap;
use std::sync::Arc;

use common::wire::attestation_agent::{
    create_attestation_agent_service, AttestationAgentService, BindInitDataRequest,
    BindInitDataResponse, ExtendRuntimeMeasurementRequest, ExtendRuntimeMeasurementResponse,
    GetAdditionalEvidenceRequest, GetAdditionalTeesRequest, GetAdditionalTeesResponse,
    GetEvidenceRequest, GetEvidenceResponse, GetTeeTypeRequest, GetTeeTypeResponse,
    GetTokenRequest, GetTokenResponse,
};
use ttrpc::r#async::{Service, TtrpcContext};

use crate::agent::{AgentError, AttestationAgent, ErrorCode};

/// The agent behind the generated ttrpc service trait.
struct TtrpcAgent(Arc<AttestationAgent>);

/// The ttrpc services of `agent`, ready for `Server::register_service`.
pub fn services(agent: Arc<AttestationAgent>) -> HashMap<String, Service> {
    create_attestation_agent_service(Arc::new(TtrpcAgent(agent)))
}

fn status(method: &str, err: AgentError) -> ttrpc::Error {
    let err = err.logged(method);
    let code = match err.code {
        ErrorCode::InvalidArgument => ttrpc::Code::INVALID_ARGUMENT,
        ErrorCode::FailedPrecondition => ttrpc::Code::FAILED_PRECONDITION,
        ErrorCode::Unavailable => ttrpc::Code::UNAVAILABLE,
        ErrorCode::PermissionDenied => ttrpc::Code::PERMISSION_DENIED,
        ErrorCode::Unimplemented => ttrpc::Code::UNIMPLEMENTED,
        ErrorCode::Internal => ttrpc::Code::INTERNAL,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, err.message))
}

#[async_trait::async_trait]
impl AttestationAgentService for TtrpcAgent {
    async fn get_evidence(
        &self,
        _ctx: &TtrpcContext,
        req: GetEvidenceRequest,
    ) -> ttrpc::Result<GetEvidenceResponse> {
        let evidence = self
            .0
            .get_evidence(&req.runtime_data)
            .await
            .map_err(|err| status("GetEvidence", err))?;
        Ok(GetEvidenceResponse { evidence })
    }

    async fn get_additional_evidence(
        &self,
        _ctx: &TtrpcContext,
        req: GetAdditionalEvidenceRequest,
    ) -> ttrpc::Result<GetEvidenceResponse> {
        let evidence = self
            .0
            .get_additional_evidence(&req.runtime_data)
            .await
            .map_err(|err| status("GetAdditionalEvidence", err))?;
        Ok(GetEvidenceResponse { evidence })
    }

    async fn get_token(
        &self,
        _ctx: &TtrpcContext,
        req: GetTokenRequest,
    ) -> ttrpc::Result<GetTokenResponse> {
        let token = self
            .0
            .get_token(&req.token_type)
            .await
            .map_err(|err| status("GetToken", err))?;
        Ok(GetTokenResponse { token })
    }

    async fn extend_runtime_measurement(
        &self,
        _ctx: &TtrpcContext,
        req: ExtendRuntimeMeasurementRequest,
    ) -> ttrpc::Result<ExtendRuntimeMeasurementResponse> {
        let outcome = self
            .0
            .extend_runtime_measurement(req.domain, req.operation, req.content, req.register_index)
            .await
            .map_err(|err| status("ExtendRuntimeMeasurement", err))?;
        Ok(ExtendRuntimeMeasurementResponse {
            result: outcome.wire().into(),
        })
    }

    async fn bind_init_data(
        &self,
        _ctx: &TtrpcContext,
        req: BindInitDataRequest,
    ) -> ttrpc::Result<BindInitDataResponse> {
        self.0
            .bind_init_data(&req.digest)
            .await
            .map_err(|err| status("BindInitData", err))?;
        Ok(BindInitDataResponse {})
    }

    async fn get_tee_type(
        &self,
        _ctx: &TtrpcContext,
        _req: GetTeeTypeRequest,
    ) -> ttrpc::Result<GetTeeTypeResponse> {
        Ok(GetTeeTypeResponse {
            tee: self.0.tee_type(),
        })
    }

    async fn get_additional_tees(
        &self,
        _ctx: &TtrpcContext,
        _req: GetAdditionalTeesRequest,
    ) -> ttrpc::Result<GetAdditionalTeesResponse> {
        Ok(GetAdditionalTeesResponse {
            additional_tees: self.0.additional_tees(),
        })
    }
}
