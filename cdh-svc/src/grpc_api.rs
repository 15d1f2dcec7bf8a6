//! The gRPC transport: the same four services over tonic, each a thin call into the [`Hub`].

use std::sync::Arc;

use common::service::ServiceListener;
use common::wire::api::{
    GetResourceRequest, GetResourceResponse, ImagePullRequest, ImagePullResponse,
    SecureMountRequest, SecureMountResponse, UnsealSecretInput, UnsealSecretOutput,
};
use common::wire::grpc::api::get_resource_service_server::{
    GetResourceService, GetResourceServiceServer,
};
use common::wire::grpc::api::image_pull_service_server::{
    ImagePullService, ImagePullServiceServer,
};
use common::wire::grpc::api::sealed_secret_service_server::{
    SealedSecretService, SealedSecretServiceServer,
};
use common::wire::grpc::api::secure_mount_service_server::{
    SecureMountService, SecureMountServiceServer,
};
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};

use crate::hub::Hub;

/// The gRPC face of the hub.
struct GrpcApi(Arc<Hub>);

/// A tonic router with every service of the CDH API.
pub fn router(hub: Arc<Hub>) -> Router {
    let api = Arc::new(GrpcApi(hub));
    tonic::transport::Server::builder()
        .add_service(SealedSecretServiceServer::from_arc(api.clone()))
        .add_service(GetResourceServiceServer::from_arc(api.clone()))
        .add_service(SecureMountServiceServer::from_arc(api.clone()))
        .add_service(ImagePullServiceServer::from_arc(api))
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    router: Router,
    listener: ServiceListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    match listener {
        ServiceListener::Unix(listener) => {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(
                tokio::net::UnixListener::from_std(listener)?,
            );
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
        ServiceListener::Tcp(listener) => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(
                tokio::net::TcpListener::from_std(listener)?,
            );
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl SealedSecretService for GrpcApi {
    async fn unseal_secret(
        &self,
        request: Request<UnsealSecretInput>,
    ) -> Result<Response<UnsealSecretOutput>, Status> {
        let plaintext = self
            .0
            .unseal_secret(&request.into_inner().secret)
            .await
            .map_err(|e| e.to_grpc())?;
        Ok(Response::new(UnsealSecretOutput { plaintext }))
    }
}

#[tonic::async_trait]
impl GetResourceService for GrpcApi {
    async fn get_resource(
        &self,
        request: Request<GetResourceRequest>,
    ) -> Result<Response<GetResourceResponse>, Status> {
        let resource = self
            .0
            .get_resource(&request.into_inner().resource_path)
            .await
            .map_err(|e| e.to_grpc())?;
        Ok(Response::new(GetResourceResponse { resource }))
    }
}

#[tonic::async_trait]
impl SecureMountService for GrpcApi {
    async fn secure_mount(
        &self,
        _request: Request<SecureMountRequest>,
    ) -> Result<Response<SecureMountResponse>, Status> {
        self.0.secure_mount().map_err(|e| e.to_grpc())?;
        Ok(Response::new(SecureMountResponse {}))
    }
}

#[tonic::async_trait]
impl ImagePullService for GrpcApi {
    async fn pull_image(
        &self,
        _request: Request<ImagePullRequest>,
    ) -> Result<Response<ImagePullResponse>, Status> {
        self.0.pull_image().map_err(|e| e.to_grpc())?;
        Ok(Response::new(ImagePullResponse::default()))
    }
}
