//! The HTTP application: the router built from the route table, its handlers, and the guards
//! every request passes (loopback only, concurrency, timeout, body size).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodRouter};
use axum::{Extension, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::kbs::ResourcePath;
use common::wire::attestation_agent::RuntimeMeasurementResult;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::{debug, warn};
use ttrpc::Code;

use crate::backend::{AaClient, BackendError, CdhClient};
use crate::config::{Features, Limits};
use crate::routes::{self, Handler, Needs, ROUTES};

/// Address of the client of a connection, put into each request by the server loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// What the handlers share.
pub struct AppState {
    features: Features,
    limits: Limits,
    aa: AaClient,
    cdh: CdhClient,
    openapi: String,
    in_flight: Arc<Semaphore>,
}

impl AppState {
    /// State for `features`, with lazily connecting backend clients.
    pub fn new(features: Features, limits: Limits, aa: AaClient, cdh: CdhClient) -> Self {
        Self {
            features,
            limits,
            aa,
            cdh,
            openapi: routes::openapi_text(),
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
        }
    }
}

type Shared = State<Arc<AppState>>;

/// A response with a short plain-text body.
fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

/// A request that is malformed, answered with 400 and the reason.
struct BadRequest(String);

impl BadRequest {
    fn new(reason: impl std::fmt::Display) -> Self {
        Self(reason.to_string())
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        text(StatusCode::BAD_REQUEST, format!("BAD REQUEST: {}", self.0))
    }
}

fn octet_stream(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Maps a backend failure to its status; the body names the operation and the failure.
fn backend_failure(operation: &str, err: &BackendError) -> Response {
    let status = match err {
        BackendError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        BackendError::Status { code, .. } => match *code {
            Code::NOT_FOUND => StatusCode::NOT_FOUND,
            Code::PERMISSION_DENIED => StatusCode::FORBIDDEN,
            Code::INVALID_ARGUMENT => StatusCode::BAD_REQUEST,
            Code::UNAVAILABLE | Code::DEADLINE_EXCEEDED => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
    };
    if status.is_server_error() {
        warn!(operation, error = %err, %status, "backend call failed");
    } else {
        debug!(operation, error = %err, %status, "backend refused the request");
    }
    text(status, format!("{operation} failed: {err}"))
}

/// Builds the router of every route the features enable, with its guards.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        let enabled = match route.needs {
            Needs::Nothing => true,
            Needs::Resource => state.features.resource(),
            Needs::Attestation => state.features.attestation(),
        };
        if enabled {
            router = router.route(&route.router_path(), method_router(route));
        }
    }

    let limits = state.limits;
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), bounded))
        .layer(middleware::from_fn(loopback_only))
        .with_state(state)
}

fn method_router(route: &routes::Route) -> MethodRouter<Arc<AppState>> {
    let filter = route.method.filter();
    let handler = match route.handler {
        Handler::Info => on(filter, info),
        Handler::OpenApi => on(filter, openapi),
        Handler::Resource => on(filter, resource),
        Handler::Token => on(filter, token),
        Handler::Evidence => on(filter, evidence),
        Handler::AdditionalEvidence => on(filter, additional_evidence),
        Handler::Aael => on(filter, aael),
    };
    handler.fallback(|| async { text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed") })
}

/// Refuses any client that is not on the loopback interface, before anything else happens.
async fn loopback_only(
    peer: Option<Extension<PeerAddr>>,
    request: Request,
    next: Next,
) -> Response {
    match peer {
        Some(Extension(PeerAddr(addr))) if addr.ip().is_loopback() => next.run(request).await,
        _ => text(StatusCode::FORBIDDEN, "Forbidden"),
    }
}

/// Bounds how many requests run at once and how long each may take.
async fn bounded(State(state): Shared, request: Request, next: Next) -> Response {
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight",
        );
    };
    debug!(method = %request.method(), path = request.uri().path(), "request");
    let timeout = state.limits.request_timeout;
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("request timed out after {} ms", timeout.as_millis()),
        ),
    }
}

/// Unknown paths; a disabled feature answers with the upstream text for its prefix.
async fn not_found(State(state): Shared, uri: Uri) -> Response {
    let path = uri.path();
    let body = if path.starts_with("/aa/") && !state.features.attestation() {
        "Attestation Feature Not Enabled"
    } else if path.starts_with("/cdh/") && !state.features.resource() {
        "Resource Feature Not Enabled"
    } else {
        "URL NOT FOUND"
    };
    text(StatusCode::NOT_FOUND, body)
}

/// Body of `GET /info`, field for field as upstream serialises it.
#[derive(Serialize)]
struct VersionInfo {
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tee: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    additional_tees: Vec<String>,
    feature: String,
}

async fn info(State(state): Shared) -> Response {
    // The TEE comes from the AA, asked only when attestation is enabled (as upstream does);
    // an AA that is down leaves it out rather than failing `/info`.
    let (tee, additional_tees) = if state.features.attestation() {
        match state.aa.tees().await {
            Ok((tee, additional)) => (Some(tee), additional),
            Err(err) => {
                debug!(error = %err, "tee unknown for /info");
                (None, Vec::new())
            }
        }
    } else {
        (None, Vec::new())
    };
    let info = VersionInfo {
        version: format!("Guest Components Version: {}", env!("CARGO_PKG_VERSION")),
        tee,
        additional_tees,
        feature: state.features.to_string(),
    };
    match serde_json::to_string(&info) {
        Ok(body) => json(body),
        Err(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("info failed: {err}"),
        ),
    }
}

async fn openapi(State(state): Shared) -> Response {
    json(state.openapi.clone())
}

/// The raw (still percent-encoded) path is validated, so `%2F` and `..` are seen as sent.
async fn resource(State(state): Shared, uri: Uri) -> Result<Response, BadRequest> {
    let segments = uri.path().strip_prefix("/cdh/resource").unwrap_or_default();
    let path = ResourcePath::parse(&format!("kbs://{segments}")).map_err(BadRequest::new)?;
    Ok(match state.cdh.resource(&path).await {
        Ok(bytes) => octet_stream(bytes),
        Err(err) => backend_failure(&format!("get resource {path}"), &err),
    })
}

/// Query parameters, percent-decoded as form data; a value that is not UTF-8 is refused.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(uri: &Uri) -> Result<Self, BadRequest> {
        let decode = |raw: &str, what: &str| {
            let plus_as_space = raw.replace('+', " ");
            percent_encoding::percent_decode_str(&plus_as_space)
                .decode_utf8()
                .map(|value| value.into_owned())
                .map_err(|_| BadRequest(format!("query {what} is not valid UTF-8")))
        };
        let mut pairs = Vec::new();
        for pair in uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name, "parameter name")?;
            let value = decode(value, &format!("parameter {name}"))?;
            pairs.push((name, value));
        }
        Ok(Self(pairs))
    }

    /// The value of `name`; when repeated the last one wins, as in upstream's map.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, BadRequest> {
        self.get(name)
            .ok_or_else(|| BadRequest(format!("missing query parameter {name}")))
    }

    /// `runtime_data` as bytes: its UTF-8 text, or with `encoding=base64` URL-safe base64.
    fn runtime_data(&self) -> Result<Vec<u8>, BadRequest> {
        let raw = self.required("runtime_data")?;
        match self.get("encoding") {
            None => Ok(raw.as_bytes().to_vec()),
            Some("base64") => URL_SAFE_NO_PAD
                .decode(raw)
                .map_err(|err| BadRequest(format!("runtime_data is not URL-safe base64: {err}"))),
            Some(other) => Err(BadRequest(format!(
                "unsupported encoding {other:?}: only base64 is supported"
            ))),
        }
    }
}

async fn token(State(state): Shared, uri: Uri) -> Result<Response, BadRequest> {
    let query = Query::parse(&uri)?;
    let token_type = query.required("token_type")?;
    Ok(match state.aa.token(token_type).await {
        Ok(token) => octet_stream(token),
        Err(err) => backend_failure("get token", &err),
    })
}

async fn evidence(State(state): Shared, uri: Uri) -> Result<Response, BadRequest> {
    let runtime_data = Query::parse(&uri)?.runtime_data()?;
    Ok(match state.aa.evidence(runtime_data).await {
        Ok(evidence) => octet_stream(evidence),
        Err(err) => backend_failure("get evidence", &err),
    })
}

async fn additional_evidence(State(state): Shared, uri: Uri) -> Result<Response, BadRequest> {
    let runtime_data = Query::parse(&uri)?.runtime_data()?;
    Ok(match state.aa.additional_evidence(runtime_data).await {
        Ok(evidence) => octet_stream(evidence),
        Err(err) => backend_failure("get additional evidence", &err),
    })
}

/// Body of `POST /aa/aael`.
#[derive(Deserialize)]
struct AaelEvent {
    domain: String,
    operation: String,
    content: String,
}

async fn aael(State(state): Shared, body: Bytes) -> Result<Response, BadRequest> {
    let event: AaelEvent = serde_json::from_slice(&body)
        .map_err(|err| BadRequest(format!("body is not an AAEL event: {err}")))?;
    let result = state
        .aa
        .extend_runtime_measurement(event.domain, event.operation, event.content)
        .await;
    // The bodies are upstream's, byte for byte.
    let body = match result {
        Ok(Some(RuntimeMeasurementResult::Ok)) => r#"{"success":"true"}"#,
        Ok(Some(RuntimeMeasurementResult::NotSupported)) => {
            r#"{"success":"false","message": "The platform does not support runtime measurement"}"#
        }
        Ok(Some(RuntimeMeasurementResult::NotEnabled)) => {
            r#"{"success":"false","message": "Attestation Agent does not enable eventlog recording"}"#
        }
        Ok(None) => r#"{"success":"false","message": "Unknown runtime measurement result"}"#,
        Err(err) => return Ok(backend_failure("extend runtime measurement", &err)),
    };
    Ok(json(body.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use axum::body::{to_bytes, Body};
    use axum::http::Method;
    use clap::Parser;
    use tempfile::TempDir;
    use tower::ServiceExt;

    use super::*;
    use crate::config::{Args, Settings};
    use crate::test_backends::{self, FakeAa, FakeCdh};

    /// A router over fake backends on temp sockets; the servers live as long as the fixture.
    struct Fixture {
        state: Arc<AppState>,
        cdh_seen: Arc<std::sync::Mutex<Vec<String>>>,
        _servers: Vec<ttrpc::r#async::Server>,
        _dir: TempDir,
    }

    async fn fixture(features: Features, limits: Limits, backends_up: bool) -> Fixture {
        let dir = TempDir::new().unwrap();
        let aa_path = dir.path().join("aa.sock");
        let cdh_path = dir.path().join("cdh.sock");
        let cdh = FakeCdh::default();
        let cdh_seen = cdh.seen.clone();
        let mut servers = Vec::new();
        if backends_up {
            servers.push(test_backends::serve_aa(&aa_path, FakeAa::default()).await);
            servers.push(test_backends::serve_cdh(&cdh_path, cdh).await);
        }
        let endpoint = |p: &std::path::Path| {
            common::service::Endpoint::parse(&format!("unix://{}", p.display())).unwrap()
        };
        let aa = AaClient::new(endpoint(&aa_path), limits.backend_wait);
        let cdh = CdhClient::new(endpoint(&cdh_path), limits.backend_wait);
        Fixture {
            state: Arc::new(AppState::new(features, limits, aa, cdh)),
            cdh_seen,
            _servers: servers,
            _dir: dir,
        }
    }

    /// The default limits, but a short wait for backends that are down.
    fn quick_limits() -> Limits {
        let args = Args::try_parse_from(["api-server-rest", "--backend-wait-ms", "200"]).unwrap();
        Settings::from_args(&args).unwrap().limits
    }

    async fn up(features: Features) -> Fixture {
        fixture(features, quick_limits(), true).await
    }

    impl Fixture {
        async fn send(
            &self,
            method: Method,
            uri: &str,
            body: impl Into<Body>,
        ) -> (StatusCode, String, Vec<u8>) {
            self.send_from("127.0.0.1:40000", method, uri, body).await
        }

        async fn send_from(
            &self,
            peer: &str,
            method: Method,
            uri: &str,
            body: impl Into<Body>,
        ) -> (StatusCode, String, Vec<u8>) {
            let mut request = axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .body(body.into())
                .unwrap();
            request
                .extensions_mut()
                .insert(PeerAddr(peer.parse().unwrap()));
            let response = router(self.state.clone()).oneshot(request).await.unwrap();
            let status = response.status();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
            (status, content_type, body.to_vec())
        }

        async fn get(&self, uri: &str) -> (StatusCode, String, Vec<u8>) {
            self.send(Method::GET, uri, Body::empty()).await
        }
    }

    fn text_of(body: &[u8]) -> &str {
        std::str::from_utf8(body).unwrap()
    }

    #[tokio::test]
    async fn resource_is_returned_byte_for_byte_as_octet_stream() {
        let f = up(Features::Resource).await;
        let (status, content_type, body) = f.get("/cdh/resource/default/key/one").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/octet-stream");
        assert_eq!(
            body,
            test_backends::resource_bytes("kbs:///default/key/one")
        );
    }

    #[tokio::test]
    async fn bad_resource_paths_are_refused_before_the_cdh() {
        let f = up(Features::Resource).await;
        for path in [
            "/cdh/resource/a/../b",
            "/cdh/resource/default/key/..",
            "/cdh/resource/default/key%2Fone/x",
            "/cdh/resource/default%2F..%2F/key/x",
            "/cdh/resource/default//one",
            "/cdh/resource/default/key",
            "/cdh/resource/default/key/one/more",
        ] {
            let (status, _, body) = f.get(path).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{path}: {}",
                text_of(&body)
            );
            assert!(text_of(&body).starts_with("BAD REQUEST: "), "{path}");
        }
        assert!(f.cdh_seen.lock().unwrap().is_empty());
        let (status, _, body) = f.get("/cdh/resource/").await;
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::NOT_FOUND, &b"URL NOT FOUND"[..])
        );
    }

    #[tokio::test]
    async fn backend_statuses_map_to_http_statuses() {
        let f = up(Features::Resource).await;
        for (tag, expected) in [
            ("missing", StatusCode::NOT_FOUND),
            ("denied", StatusCode::FORBIDDEN),
            ("invalid", StatusCode::BAD_REQUEST),
            ("busy", StatusCode::SERVICE_UNAVAILABLE),
            ("broken", StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            let (status, _, body) = f.get(&format!("/cdh/resource/default/key/{tag}")).await;
            assert_eq!(status, expected, "{tag}");
            let body = text_of(&body);
            assert!(body.contains(&format!("default/key/{tag}")), "{body}");
        }
    }

    #[tokio::test]
    async fn disabled_features_answer_upstream_404_texts() {
        let resource_only = up(Features::Resource).await;
        for path in ["/aa/token?token_type=kbs", "/aa/whatever"] {
            let (status, _, body) = resource_only.get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(body, b"Attestation Feature Not Enabled");
        }
        let attestation_only = up(Features::Attestation).await;
        let (status, _, body) = attestation_only.get("/cdh/resource/default/key/one").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, b"Resource Feature Not Enabled");
        let (status, _, body) = attestation_only.get("/nowhere").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, b"URL NOT FOUND");
    }

    #[tokio::test]
    async fn wrong_method_is_405_and_remote_peer_is_403() {
        let f = up(Features::All).await;
        let (status, _, body) = f
            .send(Method::POST, "/cdh/resource/a/b/c", Body::empty())
            .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body, b"Method Not Allowed");
        let (status, _, _) = f.get("/aa/aael").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

        let (status, _, body) = f
            .send_from("10.0.0.7:5000", Method::GET, "/info", Body::empty())
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, b"Forbidden");
    }

    #[tokio::test]
    async fn info_reports_tee_only_with_attestation() {
        let f = up(Features::All).await;
        let (status, content_type, body) = f.get("/info").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let expected = format!(
            r#"{{"version":"Guest Components Version: {}","tee":"sample","additional_tees":["tpm"],"feature":"all"}}"#,
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(text_of(&body), expected);

        let f = up(Features::Resource).await;
        let (_, _, body) = f.get("/info").await;
        assert!(!text_of(&body).contains("tee"), "{}", text_of(&body));
    }

    #[tokio::test]
    async fn info_answers_while_backends_are_down() {
        let f = fixture(Features::All, quick_limits(), false).await;
        let (status, _, body) = f.get("/info").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            text_of(&body),
            format!(
                r#"{{"version":"Guest Components Version: {}","feature":"all"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        );
        let (status, _, body) = f.get("/aa/evidence?runtime_data=x").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            text_of(&body).contains("attestation-agent unavailable"),
            "{}",
            text_of(&body)
        );
    }

    #[tokio::test]
    async fn runtime_data_is_decoded_as_upstream_does() {
        let f = up(Features::Attestation).await;
        let (status, content_type, body) = f.get("/aa/evidence?runtime_data=hello%20there").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/octet-stream");
        assert_eq!(body, test_backends::evidence_for(b"hello there"));

        let (_, _, body) = f
            .get("/aa/evidence?runtime_data=cmVwb3J0&encoding=base64")
            .await;
        assert_eq!(body, test_backends::evidence_for(b"report"));

        let (_, _, body) = f
            .get("/aa/additional-evidence?runtime_data=_-8&encoding=base64")
            .await;
        assert_eq!(body, test_backends::additional_evidence_for(&[0xff, 0xef]));

        for bad in [
            "/aa/evidence",
            "/aa/evidence?runtime_data=!!!&encoding=base64",
            "/aa/evidence?runtime_data=abc&encoding=hex",
            "/aa/evidence?runtime_data=%ff%fe",
            "/aa/additional-evidence?encoding=base64",
        ] {
            let (status, _, body) = f.get(bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {}", text_of(&body));
        }

        let long = "a".repeat(65);
        let (status, _, _) = f.get(&format!("/aa/evidence?runtime_data={long}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn token_is_passed_through_and_errors_mapped() {
        let f = up(Features::Attestation).await;
        let (status, content_type, body) = f.get("/aa/token?token_type=kbs").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/octet-stream");
        assert_eq!(body, test_backends::TOKEN);
        let (status, _, _) = f.get("/aa/token").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, body) = f.get("/aa/token?token_type=oidc").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text_of(&body).contains("oidc"));
    }

    #[tokio::test]
    async fn aael_bodies_match_upstream() {
        let f = up(Features::Attestation).await;
        let post = |domain: &str| {
            format!(r#"{{"domain":"{domain}","operation":"create","content":"pod-a"}}"#)
        };
        let (status, content_type, body) = f.send(Method::POST, "/aa/aael", post("sandbox")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        assert_eq!(body, br#"{"success":"true"}"#);
        let (_, _, body) = f.send(Method::POST, "/aa/aael", post("unsupported")).await;
        assert_eq!(
            body,
            br#"{"success":"false","message": "The platform does not support runtime measurement"}"#
        );
        let (_, _, body) = f.send(Method::POST, "/aa/aael", post("disabled")).await;
        assert_eq!(
            body,
            br#"{"success":"false","message": "Attestation Agent does not enable eventlog recording"}"#
        );

        for bad in ["", "{", r#"{"domain":"d"}"#, "[1,2]"] {
            let (status, _, _) = f.send(Method::POST, "/aa/aael", bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let limits = Limits {
            max_body_bytes: 128,
            ..quick_limits()
        };
        let f = fixture(Features::Attestation, limits, true).await;
        let content = "x".repeat(1000);
        let body = format!(r#"{{"domain":"d","operation":"o","content":"{content}"}}"#);
        let (status, _, _) = f.send(Method::POST, "/aa/aael", body).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn slow_backend_hits_the_request_timeout() {
        let limits = Limits {
            request_timeout: Duration::from_millis(200),
            ..quick_limits()
        };
        let f = fixture(Features::Resource, limits, true).await;
        let (status, _, body) = f.get("/cdh/resource/default/key/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text_of(&body).contains("timed out"), "{}", text_of(&body));
    }

    #[tokio::test]
    async fn requests_beyond_the_concurrency_limit_get_503() {
        let limits = Limits {
            max_concurrent_requests: 1,
            ..quick_limits()
        };
        let f = fixture(Features::Resource, limits, true).await;
        let state = f.state.clone();
        let slow = tokio::spawn({
            let request = axum::http::Request::builder()
                .uri("/cdh/resource/default/key/slow")
                .extension(PeerAddr("127.0.0.1:1".parse().unwrap()))
                .body(Body::empty())
                .unwrap();
            router(state.clone()).oneshot(request)
        });
        while state.in_flight.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let (status, _, body) = f.get("/info").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, b"too many requests in flight");
        slow.abort();
    }

    #[tokio::test]
    async fn openapi_is_served() {
        let f = up(Features::Resource).await;
        let (status, content_type, body) = f.get("/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        assert_eq!(text_of(&body), routes::openapi_text());
    }
}
