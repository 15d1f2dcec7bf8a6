//! ttrpc clients of the Attestation Agent and the Confidential Data Hub that connect lazily,
//! reconnect after a backend restart and turn failures into [`BackendError`]s.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::kbs::ResourcePath;
use common::service::Endpoint;
use common::wire::api::{GetResourceRequest, GetResourceServiceClient};
use common::wire::attestation_agent::{
    AttestationAgentServiceClient, ExtendRuntimeMeasurementRequest, GetAdditionalEvidenceRequest,
    GetAdditionalTeesRequest, GetEvidenceRequest, GetTeeTypeRequest, GetTokenRequest,
    RuntimeMeasurementResult,
};
use tokio::sync::Mutex;
use tokio::time::{sleep, timeout_at, Instant};
use tracing::{debug, info};
use ttrpc::r#async::Client;
use ttrpc::Code;

/// First pause between connection attempts to a backend that is not up; doubles up to the max.
const CONNECT_BACKOFF_START: Duration = Duration::from_millis(50);
const CONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// `/info` must answer while the AA is down, so it waits for it only briefly.
const TEE_QUERY_WAIT: Duration = Duration::from_millis(300);

/// A backend status message is echoed to the client only up to this length.
const MAX_ECHOED_MESSAGE: usize = 256;

/// Why a backend call failed, in the terms the REST layer maps to status codes.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached within the wait bound, or the connection broke.
    #[error("{backend} unavailable at {endpoint}: {reason}")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// Its ttrpc address.
        endpoint: String,
        /// What went wrong, without request content.
        reason: String,
    },
    /// The backend answered with a non-OK ttrpc status.
    #[error("{backend} answered {code:?}: {message}")]
    Status {
        /// Which backend.
        backend: &'static str,
        /// The ttrpc status code.
        code: Code,
        /// The backend's message, shortened.
        message: String,
    },
}

/// Whether a call may be sent again after a transport failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Reading calls: sending twice does no harm.
    Safe,
    /// Calls with an effect (an eventlog entry): never sent twice.
    Never,
}

/// One lazily connected ttrpc connection, replaced when it breaks.
struct Channel {
    backend: &'static str,
    endpoint: Endpoint,
    wait: Duration,
    /// The live connection and its generation, so that a failure seen on an old connection
    /// never discards a newer one another request already made.
    client: Mutex<Option<(u64, Client)>>,
}

impl Channel {
    fn new(backend: &'static str, endpoint: Endpoint, wait: Duration) -> Self {
        Self {
            backend,
            endpoint,
            wait,
            client: Mutex::new(None),
        }
    }

    fn unavailable(&self, reason: impl Into<String>) -> BackendError {
        BackendError::Unavailable {
            backend: self.backend,
            endpoint: self.endpoint.uri(),
            reason: reason.into(),
        }
    }

    /// The cached connection, or a new one; retries until `deadline` while nobody listens.
    ///
    /// The lock is not held while connecting, so every waiting request keeps its own bound.
    async fn connection(&self, deadline: Instant) -> Result<(u64, Client), BackendError> {
        if let Some(live) = self.client.lock().await.clone() {
            return Ok(live);
        }

        let uri = self.endpoint.uri();
        let mut backoff = CONNECT_BACKOFF_START;
        let client = loop {
            match timeout_at(deadline, Client::connect(&uri)).await {
                Ok(Ok(client)) => break client,
                Ok(Err(err)) if Instant::now() + backoff < deadline => {
                    debug!(backend = self.backend, endpoint = %uri, error = %err, "connect failed");
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(CONNECT_BACKOFF_MAX);
                }
                Ok(Err(err)) => return Err(self.unavailable(format!("cannot connect: {err}"))),
                Err(_) => return Err(self.unavailable("cannot connect within the wait bound")),
            }
        };

        let mut cached = self.client.lock().await;
        // Another request may have connected meanwhile; one shared connection is enough.
        if let Some(live) = cached.as_ref() {
            return Ok(live.clone());
        }
        info!(backend = self.backend, endpoint = %uri, "connected");
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        *cached = Some((generation, client.clone()));
        Ok((generation, client))
    }

    /// Forgets connection `generation` if it is still the cached one.
    async fn discard(&self, generation: u64) {
        let mut cached = self.client.lock().await;
        if cached.as_ref().is_some_and(|(live, _)| *live == generation) {
            *cached = None;
        }
    }

    /// Runs `call` on a connection, reconnecting after a transport failure until `wait` ends.
    async fn call<T, F, Fut>(
        &self,
        replay: Replay,
        wait: Duration,
        call: F,
    ) -> Result<T, BackendError>
    where
        F: Fn(Client, ttrpc::context::Context) -> Fut,
        Fut: Future<Output = ttrpc::Result<T>>,
    {
        let deadline = Instant::now() + wait;
        loop {
            let (generation, client) = self.connection(deadline).await?;
            // No ttrpc deadline: the HTTP request timeout bounds the call and cancels it, and a
            // deadline error would look like a broken connection here.
            let err = match call(client, ttrpc::context::Context::default()).await {
                Ok(value) => return Ok(value),
                Err(ttrpc::Error::RpcStatus(status)) => {
                    return Err(BackendError::Status {
                        backend: self.backend,
                        code: Code::try_from(status.code).unwrap_or(Code::UNKNOWN),
                        message: shorten(&status.message),
                    })
                }
                Err(err) => err,
            };

            self.discard(generation).await;
            debug!(backend = self.backend, error = %err, "call failed on the transport");
            // A cached connection outlived a backend restart; a read may simply go again.
            if replay == Replay::Never || Instant::now() + CONNECT_BACKOFF_START >= deadline {
                return Err(self.unavailable(format!("call failed: {err}")));
            }
            sleep(CONNECT_BACKOFF_START).await;
        }
    }
}

/// Source of connection generations, shared by all channels (only equality matters).
static GENERATION: AtomicU64 = AtomicU64::new(0);

fn shorten(message: &str) -> String {
    match message.char_indices().nth(MAX_ECHOED_MESSAGE) {
        Some((cut, _)) => format!("{}...", &message[..cut]),
        None => message.to_owned(),
    }
}

/// The Confidential Data Hub, as the `/cdh` routes use it.
pub struct CdhClient {
    channel: Channel,
}

impl CdhClient {
    /// A client that connects on first use.
    pub fn new(endpoint: Endpoint, wait: Duration) -> Self {
        Self {
            channel: Channel::new("confidential-data-hub", endpoint, wait),
        }
    }

    /// Fetches the resource at `path` (as `kbs:///repo/type/tag`).
    pub async fn resource(&self, path: &ResourcePath) -> Result<Vec<u8>, BackendError> {
        let request = &GetResourceRequest {
            resource_path: format!("kbs:///{path}"),
        };
        let response = self
            .channel
            .call(Replay::Safe, self.channel.wait, |client, ctx| async move {
                GetResourceServiceClient::new(client)
                    .get_resource(ctx, request)
                    .await
            })
            .await?;
        Ok(response.resource)
    }
}

/// The Attestation Agent, as the `/aa` routes and `/info` use it.
pub struct AaClient {
    channel: Channel,
}

impl AaClient {
    /// A client that connects on first use.
    pub fn new(endpoint: Endpoint, wait: Duration) -> Self {
        Self {
            channel: Channel::new("attestation-agent", endpoint, wait),
        }
    }

    /// Runs `call` on the AA service client of a live connection; see [`Channel::call`].
    async fn call<T, F, Fut>(
        &self,
        replay: Replay,
        wait: Duration,
        call: F,
    ) -> Result<T, BackendError>
    where
        F: Fn(AttestationAgentServiceClient, ttrpc::context::Context) -> Fut,
        Fut: Future<Output = ttrpc::Result<T>>,
    {
        self.channel
            .call(replay, wait, |client, ctx| {
                call(AttestationAgentServiceClient::new(client), ctx)
            })
            .await
    }

    /// A token of `token_type`, as the AA returns it.
    pub async fn token(&self, token_type: &str) -> Result<Vec<u8>, BackendError> {
        let request = &GetTokenRequest {
            token_type: token_type.to_owned(),
        };
        let response = self
            .call(Replay::Safe, self.channel.wait, |aa, ctx| async move {
                aa.get_token(ctx, request).await
            })
            .await?;
        Ok(response.token)
    }

    /// Evidence of the primary TEE with `runtime_data` bound into it.
    pub async fn evidence(&self, runtime_data: Vec<u8>) -> Result<Vec<u8>, BackendError> {
        let request = &GetEvidenceRequest { runtime_data };
        let response = self
            .call(Replay::Safe, self.channel.wait, |aa, ctx| async move {
                aa.get_evidence(ctx, request).await
            })
            .await?;
        Ok(response.evidence)
    }

    /// Evidence of the additional TEEs with `runtime_data` bound into it.
    pub async fn additional_evidence(
        &self,
        runtime_data: Vec<u8>,
    ) -> Result<Vec<u8>, BackendError> {
        let request = &GetAdditionalEvidenceRequest { runtime_data };
        let response = self
            .call(Replay::Safe, self.channel.wait, |aa, ctx| async move {
                aa.get_additional_evidence(ctx, request).await
            })
            .await?;
        Ok(response.evidence)
    }

    /// Records one eventlog entry and returns how the AA handled it (`None`: a result this
    /// build does not know).
    pub async fn extend_runtime_measurement(
        &self,
        domain: String,
        operation: String,
        content: String,
    ) -> Result<Option<RuntimeMeasurementResult>, BackendError> {
        let request = &ExtendRuntimeMeasurementRequest {
            domain,
            operation,
            content,
            register_index: None,
        };
        // Limitation: after the AA restarts, the first entry sent on the old connection fails
        // with 503 rather than being resent, because the transport cannot tell whether the AA
        // already recorded it.
        let response = self
            .call(Replay::Never, self.channel.wait, |aa, ctx| async move {
                aa.extend_runtime_measurement(ctx, request).await
            })
            .await?;
        Ok(RuntimeMeasurementResult::try_from(response.result).ok())
    }

    /// The TEE and additional TEEs, asked without waiting long for an AA that is down or hung.
    pub async fn tees(&self) -> Result<(String, Vec<String>), BackendError> {
        let ask = async {
            let tee = self
                .call(Replay::Safe, TEE_QUERY_WAIT, |aa, ctx| async move {
                    aa.get_tee_type(ctx, &GetTeeTypeRequest {}).await
                })
                .await?;
            let additional = self
                .call(Replay::Safe, TEE_QUERY_WAIT, |aa, ctx| async move {
                    aa.get_additional_tees(ctx, &GetAdditionalTeesRequest {})
                        .await
                })
                .await?;
            Ok((tee.tee, additional.additional_tees))
        };
        tokio::time::timeout(TEE_QUERY_WAIT * 3, ask)
            .await
            .unwrap_or_else(|_| Err(self.channel.unavailable("no answer to the tee query")))
    }
}
