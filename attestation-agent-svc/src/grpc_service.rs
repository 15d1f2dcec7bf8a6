//! The gRPC transport: the same service over tonic, for clients that speak gRPC.

use std::sync::Arc;

use common::service::ServiceListener;
use common::wire::attestation_agent::{
    BindInitDataRequest, BindInitDataResponse, ExtendRuntimeMeasurementRequest,
    ExtendRuntimeMeasurementResponse, GetAdditionalEvidenceRequest, GetAdditionalTeesRequest,
    GetAdditionalTeesResponse, GetEvidenceRequest, GetEvidenceResponse, GetTeeTypeRequest,
    GetTeeTypeResponse, GetTokenRequest, GetTokenResponse,
};
use common::wire::grpc::attestation_agent::attestation_agent_service_server::{
    AttestationAgentService, AttestationAgentServiceServer,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::agent::{AgentError, AttestationAgent, ErrorCode};

/// The agent behind the generated tonic service trait.
struct GrpcAgent(Arc<AttestationAgent>);

/// A running gRPC server and the switch that stops it.
pub struct GrpcServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcServer {
    /// Serves `agent` on `listener` until [`GrpcServer::shutdown`].
    pub fn spawn(listener: ServiceListener, agent: Arc<AttestationAgent>) -> std::io::Result<Self> {
        let (stop, stopped) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .add_service(AttestationAgentServiceServer::new(GrpcAgent(agent)));
        let shutdown = async {
            // A dropped sender stops the server as well.
            let _ = stopped.await;
        };
        let task = match listener {
            ServiceListener::Unix(listener) => {
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(
                    tokio::net::UnixListener::from_std(listener)?,
                );
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown))
            }
            ServiceListener::Tcp(listener) => {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(
                    tokio::net::TcpListener::from_std(listener)?,
                );
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown))
            }
        };
        Ok(Self { stop, task })
    }

    /// Stops accepting and waits for in-flight requests to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "gRPC server ended with an error"),
            Err(err) => tracing::warn!(error = %err, "gRPC server task failed"),
        }
    }
}

fn status(method: &str, err: AgentError) -> Status {
    let err = err.logged(method);
    let code = match err.code {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::Unimplemented => tonic::Code::Unimplemented,
        ErrorCode::Internal => tonic::Code::Internal,
    };
    Status::new(code, err.message)
}

#[tonic::async_trait]
impl AttestationAgentService for GrpcAgent {
    async fn get_evidence(
        &self,
        request: Request<GetEvidenceRequest>,
    ) -> Result<Response<GetEvidenceResponse>, Status> {
        let evidence = self
            .0
            .get_evidence(&request.into_inner().runtime_data)
            .await
            .map_err(|err| status("GetEvidence", err))?;
        Ok(Response::new(GetEvidenceResponse { evidence }))
    }

    async fn get_additional_evidence(
        &self,
        request: Request<GetAdditionalEvidenceRequest>,
    ) -> Result<Response<GetEvidenceResponse>, Status> {
        let evidence = self
            .0
            .get_additional_evidence(&request.into_inner().runtime_data)
            .await
            .map_err(|err| status("GetAdditionalEvidence", err))?;
        Ok(Response::new(GetEvidenceResponse { evidence }))
    }

    async fn get_token(
        &self,
        request: Request<GetTokenRequest>,
    ) -> Result<Response<GetTokenResponse>, Status> {
        let token = self
            .0
            .get_token(&request.into_inner().token_type)
            .await
            .map_err(|err| status("GetToken", err))?;
        Ok(Response::new(GetTokenResponse { token }))
    }

    async fn extend_runtime_measurement(
        &self,
        request: Request<ExtendRuntimeMeasurementRequest>,
    ) -> Result<Response<ExtendRuntimeMeasurementResponse>, Status> {
        let req = request.into_inner();
        let outcome = self
            .0
            .extend_runtime_measurement(req.domain, req.operation, req.content, req.register_index)
            .await
            .map_err(|err| status("ExtendRuntimeMeasurement", err))?;
        Ok(Response::new(ExtendRuntimeMeasurementResponse {
            result: outcome.wire().into(),
        }))
    }

    async fn bind_init_data(
        &self,
        request: Request<BindInitDataRequest>,
    ) -> Result<Response<BindInitDataResponse>, Status> {
        self.0
            .bind_init_data(&request.into_inner().digest)
            .await
            .map_err(|err| status("BindInitData", err))?;
        Ok(Response::new(BindInitDataResponse {}))
    }

    async fn get_tee_type(
        &self,
        _request: Request<GetTeeTypeRequest>,
    ) -> Result<Response<GetTeeTypeResponse>, Status> {
        Ok(Response::new(GetTeeTypeResponse {
            tee: self.0.tee_type(),
        }))
    }

    async fn get_additional_tees(
        &self,
        _request: Request<GetAdditionalTeesRequest>,
    ) -> Result<Response<GetAdditionalTeesResponse>, Status> {
        Ok(Response::new(GetAdditionalTeesResponse {
            additional_tees: self.0.additional_tees(),
        }))
    }
}
