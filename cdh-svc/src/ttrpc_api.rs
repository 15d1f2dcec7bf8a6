//! The ttrpc transport: the four `api` services, each a thin call into the [`Hub`].

use std::collections::HashMap;
use std::sync::Arc;

use common::wire::api::{
    create_get_resource_service, create_image_pull_service, create_sealed_secret_service,
    create_secure_mount_service, GetResourceRequest, GetResourceResponse, GetResourceService,
    ImagePullRequest, ImagePullResponse, ImagePullService, SealedSecretService, SecureMountRequest,
    SecureMountResponse, SecureMountService, UnsealSecretInput, UnsealSecretOutput,
};
use ttrpc::r#async::{Service, TtrpcContext};

use crate::hub::Hub;

/// The ttrpc face of the hub.
struct TtrpcApi(Arc<Hub>);

/// Every service of the CDH API, ready for `ttrpc::r#async::Server::register_service`.
pub fn services(hub: Arc<Hub>) -> HashMap<String, Service> {
    let api = Arc::new(TtrpcApi(hub));
    let mut services = create_sealed_secret_service(api.clone());
    services.extend(create_get_resource_service(api.clone()));
    services.extend(create_secure_mount_service(api.clone()));
    services.extend(create_image_pull_service(api));
    services
}

#[async_trait::async_trait]
impl SealedSecretService for TtrpcApi {
    async fn unseal_secret(
        &self,
        _ctx: &TtrpcContext,
        request: UnsealSecretInput,
    ) -> ttrpc::Result<UnsealSecretOutput> {
        let plaintext = self
            .0
            .unseal_secret(&request.secret)
            .await
            .map_err(|e| e.to_ttrpc())?;
        Ok(UnsealSecretOutput { plaintext })
    }
}

#[async_trait::async_trait]
impl GetResourceService for TtrpcApi {
    async fn get_resource(
        &self,
        _ctx: &TtrpcContext,
        request: GetResourceRequest,
    ) -> ttrpc::Result<GetResourceResponse> {
        let resource = self
            .0
            .get_resource(&request.resource_path)
            .await
            .map_err(|e| e.to_ttrpc())?;
        Ok(GetResourceResponse { resource })
    }
}

#[async_trait::async_trait]
impl SecureMountService for TtrpcApi {
    async fn secure_mount(
        &self,
        _ctx: &TtrpcContext,
        _request: SecureMountRequest,
    ) -> ttrpc::Result<SecureMountResponse> {
        self.0.secure_mount().map_err(|e| e.to_ttrpc())?;
        Ok(SecureMountResponse {})
    }
}

#[async_trait::async_trait]
impl ImagePullService for TtrpcApi {
    async fn pull_image(
        &self,
        _ctx: &TtrpcContext,
        _request: ImagePullRequest,
    ) -> ttrpc::Result<ImagePullResponse> {
        self.0.pull_image().map_err(|e| e.to_ttrpc())?;
        Ok(ImagePullResponse::default())
    }
}
