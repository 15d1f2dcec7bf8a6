//! `KbsClient`: one RCAR session per client, shared by every caller, renewed when the KBS
//! rejects it or its token expires; resources fetched with the session cookie and decrypted.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kbs_types::{Attestation, Challenge, CompositeEvidence, ErrorInformation, Request};
use kbs_types::{RuntimeData, TeePubKey};
use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest, Sha384};
use tokio::sync::{Mutex, OnceCell};
use tracing::{debug, info, warn};

use super::tee_key::TeeKey;
use super::{canonical_json, jwe, token};
use super::{EvidenceError, EvidenceProvider, KbsConfig, KbsError, ResourcePath};
use super::{RetryPolicy, TeeKeyAlgorithm, PROTOCOL_VERSION};

/// Name of the cookie a KBS keeps its session under.
const SESSION_COOKIE: &str = "kbs-session-id";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer body accepted from a KBS; a resource is a key or a small file.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Longest KBS error detail kept in an error message.
const MAX_DETAIL_CHARS: usize = 512;

/// An attestation token and the TEE key pair it was issued for.
#[derive(Clone)]
pub struct KbsToken {
    /// The token (a JWT) as the KBS issued it.
    pub token: String,
    /// The ephemeral TEE private key, PKCS#8 PEM.
    pub tee_keypair_pem: String,
    /// The token's `exp` claim, read without verifying the token.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for KbsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KbsToken")
            .field("token", &"<redacted>")
            .field("tee_keypair_pem", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// HTTP requests a client has sent, by endpoint; every retry counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundTrips {
    /// `POST /kbs/v0/auth` requests.
    pub auth: u64,
    /// `POST /kbs/v0/attest` requests.
    pub attest: u64,
    /// `GET /kbs/v0/resource/...` requests.
    pub resource: u64,
}

/// A KBS client; `Send + Sync`, meant to be shared in an `Arc` by every caller of a service.
pub struct KbsClient {
    base_url: String,
    http: reqwest::Client,
    evidence: Arc<dyn EvidenceProvider>,
    key_algorithm: TeeKeyAlgorithm,
    retry: RetryPolicy,
    tee_key: OnceCell<TeeKey>,
    session: Mutex<SessionSlot>,
    sent: [AtomicU64; 3],
}

/// The current session, if any, and how many sessions came before it.
#[derive(Default)]
struct SessionSlot {
    current: Option<Session>,
    generation: u64,
}

#[derive(Clone)]
struct Session {
    cookie: String,
    token: String,
    expires_at: Option<SystemTime>,
    generation: u64,
}

impl Session {
    fn is_fresh(&self) -> bool {
        self.expires_at.is_none_or(|at| SystemTime::now() < at)
    }
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Auth = 0,
    Attest = 1,
    Resource = 2,
}

/// A complete KBS answer that is not a server error.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    session_cookie: Option<String>,
    oversized: bool,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
}

impl KbsClient {
    /// A client for the KBS in `config`; nothing is sent until the first request.
    pub fn new(config: KbsConfig, evidence: Arc<dyn EvidenceProvider>) -> Result<Self, KbsError> {
        let base_url = validate_url(&config.url, config.cert_pem.is_some())?;
        let http = http_client(config.cert_pem.as_deref())?;
        Ok(Self {
            base_url,
            http,
            evidence,
            key_algorithm: config.key_algorithm,
            retry: config.retry,
            tee_key: OnceCell::new(),
            session: Mutex::new(SessionSlot::default()),
            sent: Default::default(),
        })
    }

    /// Attests (or reuses the session) and returns the token and the TEE key pair.
    pub async fn token(&self) -> Result<KbsToken, KbsError> {
        let (session, _) = self.session(None).await?;
        let tee_keypair_pem = self.tee_key().await?.private_pem()?;
        Ok(KbsToken {
            token: session.token,
            tee_keypair_pem,
            expires_at: session.expires_at,
        })
    }

    /// Fetches and decrypts one resource, attesting first when no session is valid.
    pub async fn get_resource(&self, path: &ResourcePath) -> Result<Vec<u8>, KbsError> {
        let (session, attested_now) = self.session(None).await?;
        let answer = self.fetch_resource(path, &session).await?;

        // A KBS answers 401 for an expired session as for a denied resource; only a fresh
        // session tells them apart, so attest once more and retry once, unless this call's
        // session is brand new already.
        let answer = if answer.status == StatusCode::UNAUTHORIZED && !attested_now {
            debug!(resource = %path, "KBS rejected the session, attesting again");
            let (session, _) = self.session(Some(session.generation)).await?;
            self.fetch_resource(path, &session).await?
        } else {
            answer
        };

        if answer.status != StatusCode::OK {
            return Err(self.resource_refused(path, &answer));
        }
        jwe::decrypt(&answer.body, self.tee_key().await?).map_err(|reason| KbsError::Decrypt {
            path: path.to_string(),
            url: self.base_url.clone(),
            reason,
        })
    }

    /// HTTP requests sent so far, by kind (auth, attest, resource) - for tests/benchmarks.
    pub fn round_trips(&self) -> RoundTrips {
        let sent = |endpoint: Endpoint| self.sent[endpoint as usize].load(Ordering::Relaxed);
        RoundTrips {
            auth: sent(Endpoint::Auth),
            attest: sent(Endpoint::Attest),
            resource: sent(Endpoint::Resource),
        }
    }

    /// A usable session and whether this call attested for it: the current one, or a new one
    /// when there is none, it expired, or it is the `rejected` generation. Callers queue on the
    /// lock, so one attestation serves them all.
    async fn session(&self, rejected: Option<u64>) -> Result<(Session, bool), KbsError> {
        let mut slot = self.session.lock().await;
        if let Some(current) = &slot.current {
            if Some(current.generation) != rejected && current.is_fresh() {
                return Ok((current.clone(), false));
            }
        }
        slot.current = None;

        let session = self.attest(slot.generation + 1).await?;
        slot.generation = session.generation;
        slot.current = Some(session.clone());
        Ok((session, true))
    }

    /// The RCAR handshake: auth (challenge), evidence over the runtime data, attest (token).
    async fn attest(&self, generation: u64) -> Result<Session, KbsError> {
        let auth_url = format!("{}/kbs/v0/auth", self.base_url);
        let request = Request {
            version: PROTOCOL_VERSION.to_owned(),
            tee: self.evidence.tee(),
            extra_params: serde_json::Value::String(String::new()),
        };
        let body = request_json(&request, &auth_url)?;
        let answer = self
            .exchange(Endpoint::Auth, &auth_url, || {
                self.post_json(&auth_url, &body, None)
            })
            .await?;
        let challenge: Challenge = accepted_json(&answer, &auth_url)?;
        let cookie = answer.session_cookie.ok_or_else(|| KbsError::Protocol {
            url: auth_url.clone(),
            reason: format!("no {SESSION_COOKIE} cookie in the challenge"),
        })?;

        let tee_pubkey = self.tee_key().await?.public_jwk();
        let additional_evidence = String::new();
        let report_data = report_data(&challenge.nonce, &tee_pubkey, &additional_evidence);
        let evidence = self.evidence.primary_evidence(&report_data).await?;
        let primary_evidence = serde_json::from_slice(&evidence).map_err(|e| {
            EvidenceError::failed(format!(
                "evidence of the {} attester is not JSON",
                request.tee
            ))
            .with_source(e)
        })?;

        let attest_url = format!("{}/kbs/v0/attest", self.base_url);
        let attestation = Attestation {
            init_data: None,
            runtime_data: RuntimeData {
                nonce: challenge.nonce,
                tee_pubkey,
            },
            tee_evidence: CompositeEvidence {
                primary_evidence,
                // Limitation: no additional TEE devices (GPUs, DPUs) are attested.
                additional_evidence,
            },
        };
        let body = request_json(&attestation, &attest_url)?;
        let answer = self
            .exchange(Endpoint::Attest, &attest_url, || {
                self.post_json(&attest_url, &body, Some(&cookie))
            })
            .await?;
        let TokenAnswer { token } = accepted_json(&answer, &attest_url)?;
        let expires_at = token::expiry(&token).map_err(|reason| KbsError::Protocol {
            url: attest_url.clone(),
            reason,
        })?;

        info!(kbs = %self.base_url, tee = %request.tee, "attested to the KBS");
        Ok(Session {
            cookie: answer.session_cookie.unwrap_or(cookie),
            token,
            expires_at,
            generation,
        })
    }

    async fn fetch_resource(
        &self,
        path: &ResourcePath,
        session: &Session,
    ) -> Result<Answer, KbsError> {
        let url = format!("{}/kbs/v0/resource/{path}", self.base_url);
        debug!(resource = %path, "fetching resource from the KBS");
        self.exchange(Endpoint::Resource, &url, || {
            self.http.get(&url).header(COOKIE, &session.cookie)
        })
        .await
    }

    fn resource_refused(&self, path: &ResourcePath, answer: &Answer) -> KbsError {
        let status = answer.status.as_u16();
        let detail = error_detail(answer);
        if matches!(status, 401 | 403 | 404) {
            KbsError::ResourceNotFoundOrDenied {
                path: path.to_string(),
                url: self.base_url.clone(),
                status,
                detail,
            }
        } else {
            KbsError::Protocol {
                url: format!("{}/kbs/v0/resource/{path}", self.base_url),
                reason: format!("unexpected status {status}: {detail}"),
            }
        }
    }

    fn post_json(&self, url: &str, body: &[u8], cookie: Option<&str>) -> RequestBuilder {
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        match cookie {
            Some(cookie) => request.header(COOKIE, cookie),
            None => request,
        }
    }

    /// Sends a request, retrying with backoff on transport errors and server errors.
    async fn exchange(
        &self,
        endpoint: Endpoint,
        url: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, KbsError> {
        let attempts = self.retry.attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.sent[endpoint as usize].fetch_add(1, Ordering::Relaxed);

            let outcome = read_answer(build()).await;
            let final_attempt = attempt >= attempts;
            match outcome {
                Ok(answer) if answer.oversized => {
                    return Err(KbsError::Protocol {
                        url: url.to_owned(),
                        reason: format!("answer exceeds {MAX_BODY_BYTES} bytes"),
                    })
                }
                Ok(answer) if !answer.status.is_server_error() => return Ok(answer),
                Ok(answer) if final_attempt => {
                    return Err(KbsError::ServerError {
                        url: url.to_owned(),
                        status: answer.status.as_u16(),
                        attempts: attempt,
                        detail: error_detail(&answer),
                    })
                }
                // Limitation: a KBS certificate that fails verification surfaces as a connect
                // error, so it is retried and reported as unreachable rather than as config.
                Err(source) if final_attempt => {
                    return Err(KbsError::Unreachable {
                        url: url.to_owned(),
                        attempts: attempt,
                        source,
                    })
                }
                Ok(answer) => warn!(%url, attempt, status = %answer.status, "KBS failed, retrying"),
                Err(e) => warn!(%url, attempt, error = %e, "KBS unreachable, retrying"),
            }
            tokio::time::sleep(self.retry.backoff(attempt)).await;
        }
    }

    /// The TEE key, generated on first use off the executor (RSA takes a while).
    async fn tee_key(&self) -> Result<&TeeKey, KbsError> {
        let algorithm = self.key_algorithm;
        self.tee_key
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || TeeKey::generate(algorithm))
                    .await
                    .map_err(|e| KbsError::TeeKey(format!("key generation task failed: {e}")))?
            })
            .await
    }
}

/// SHA-384 over the canonical JSON of the runtime data, as the KBS recomputes it.
fn report_data(nonce: &str, tee_pubkey: &TeePubKey, additional_evidence: &str) -> Vec<u8> {
    let runtime_data = serde_json::json!({
        "additional-evidence": additional_evidence,
        "nonce": nonce,
        "tee-pubkey": tee_pubkey,
    });
    Sha384::digest(canonical_json::to_canonical_string(&runtime_data)).to_vec()
}

fn request_json(value: &impl serde::Serialize, url: &str) -> Result<Vec<u8>, KbsError> {
    serde_json::to_vec(value).map_err(|e| KbsError::Protocol {
        url: url.to_owned(),
        reason: format!("request could not be serialised: {e}"),
    })
}

/// Reads a whole answer; a body over [`MAX_BODY_BYTES`] is dropped and flagged.
async fn read_answer(request: RequestBuilder) -> Result<Answer, reqwest::Error> {
    let mut response = request.send().await?;
    let status = response.status();
    let session_cookie = session_cookie(response.headers());
    let mut body = Vec::new();
    let mut oversized = false;
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            body.clear();
            oversized = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        body,
        session_cookie,
        oversized,
    })
}

/// Parses the JSON of a 200 answer to auth or attest; any refusal is a rejected attestation.
fn accepted_json<T: serde::de::DeserializeOwned>(
    answer: &Answer,
    url: &str,
) -> Result<T, KbsError> {
    let status = answer.status.as_u16();
    if answer.status.is_client_error() {
        return Err(KbsError::AttestationRejected {
            url: url.to_owned(),
            status,
            detail: error_detail(answer),
        });
    }
    if answer.status != StatusCode::OK {
        return Err(KbsError::Protocol {
            url: url.to_owned(),
            reason: format!("unexpected status {status}"),
        });
    }
    serde_json::from_slice(&answer.body).map_err(|e| KbsError::Protocol {
        url: url.to_owned(),
        reason: format!("malformed answer: {e}"),
    })
}

/// The `detail` of an `ErrorInformation` body, or the status text when there is none.
fn error_detail(answer: &Answer) -> String {
    match serde_json::from_slice::<ErrorInformation>(&answer.body) {
        Ok(info) => info.detail.chars().take(MAX_DETAIL_CHARS).collect(),
        Err(_) => answer
            .status
            .canonical_reason()
            .unwrap_or("no detail")
            .to_owned(),
    }
}

/// `kbs-session-id=<value>` from the `Set-Cookie` headers, ready to send back.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|cookie| cookie.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, value)| name.trim() == SESSION_COOKIE && !value.trim().is_empty())
        .map(|(name, value)| format!("{}={}", name.trim(), value.trim()))
}

fn validate_url(url: &str, has_cert: bool) -> Result<String, KbsError> {
    let parsed = Url::parse(url)
        .map_err(|e| KbsError::Config(format!("KBS URL {url:?} is invalid: {e}")))?;
    if parsed.host_str().is_none() || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(KbsError::Config(format!(
            "KBS URL {url:?} must be scheme://host[:port][/path]"
        )));
    }
    match (parsed.scheme(), has_cert) {
        ("https", _) | ("http", false) => Ok(parsed.as_str().trim_end_matches('/').to_owned()),
        // Sending requests in the clear would silently ignore the certificate meant to
        // authenticate the KBS.
        ("http", true) => Err(KbsError::Config(format!(
            "KBS URL {url:?} is plain http but a KBS certificate is configured"
        ))),
        (scheme, _) => Err(KbsError::Config(format!(
            "KBS URL {url:?} has scheme {scheme:?}, expected http or https"
        ))),
    }
}

/// The HTTP client: with a certificate it is the only trusted root; without one an `https` KBS
/// is checked against the built-in web PKI roots.
fn http_client(cert_pem: Option<&str>) -> Result<reqwest::Client, KbsError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    if let Some(pem) = cert_pem {
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(KbsError::Config(
                "KBS certificate has no PEM CERTIFICATE block".to_owned(),
            ));
        }
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| KbsError::Config(format!("KBS certificate is unusable: {e}")))?;
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .https_only(true);
    }
    builder
        .build()
        .map_err(|e| KbsError::Config(format!("HTTP client could not be built: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn report_data_hashes_the_canonical_runtime_data() {
        let jwk = TeePubKey::EC {
            crv: "P-256".into(),
            alg: "ECDH-ES+A256KW".into(),
            x: "eA".into(),
            y: "eQ".into(),
        };
        let canonical = concat!(
            r#"{"additional-evidence":"","nonce":"bm9uY2U=","#,
            r#""tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"eA","y":"eQ"}}"#
        );
        let hash = report_data("bm9uY2U=", &jwk, "");
        assert_eq!(hash.len(), 48);
        assert_eq!(hash, Sha384::digest(canonical).to_vec());
        assert_ne!(hash, report_data("bm9uY2U=", &jwk, "x"));
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, HeaderValue::from_static("other=1; Path=/"));
        headers.append(
            SET_COOKIE,
            HeaderValue::from_static("kbs-session-id=abc123; Expires=Wed, 21 Oct 2026"),
        );
        assert_eq!(
            session_cookie(&headers).as_deref(),
            Some("kbs-session-id=abc123")
        );
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn error_detail_prefers_the_kbs_error_information() {
        let answer = |body: &str| Answer {
            status: StatusCode::UNAUTHORIZED,
            body: body.as_bytes().to_vec(),
            session_cookie: None,
            oversized: false,
        };
        let info = r#"{"type":"https://x/PolicyDeny","detail":"denied by policy"}"#;
        assert_eq!(error_detail(&answer(info)), "denied by policy");
        assert_eq!(error_detail(&answer("<html>")), "Unauthorized");
    }

    #[test]
    fn config_is_validated() {
        let kind = |url: &str, cert: Option<&str>| {
            let mut config = KbsConfig::new(url);
            config.cert_pem = cert.map(str::to_owned);
            let provider: Arc<dyn EvidenceProvider> = Arc::new(NoEvidence);
            KbsClient::new(config, provider).map(|_| ())
        };
        assert!(kind("http://127.0.0.1:8080", None).is_ok());
        assert!(kind("https://kbs.example/prefix/", None).is_ok());
        for (url, cert, needle) in [
            ("not a url", None, "invalid"),
            ("ftp://kbs", None, "scheme"),
            ("http://kbs?x=1", None, "scheme://host"),
            ("http://kbs", Some("x"), "plain http"),
            ("https://kbs", Some("not pem"), "PEM"),
        ] {
            let err = kind(url, cert).expect_err(url);
            assert!(err.to_string().contains(needle), "{url}: {err}");
            assert_eq!(err.kind(), super::super::KbsErrorKind::Config);
        }
    }

    #[test]
    fn base_url_loses_its_trailing_slash() {
        assert_eq!(
            validate_url("http://kbs:8080/", false).expect("valid"),
            "http://kbs:8080"
        );
    }

    #[test]
    fn token_debug_hides_secrets() {
        let token = KbsToken {
            token: "eyJsecret".into(),
            tee_keypair_pem: "-----BEGIN PRIVATE KEY-----".into(),
            expires_at: None,
        };
        let shown = format!("{token:?}");
        assert!(!shown.contains("eyJsecret") && !shown.contains("PRIVATE"));
    }

    struct NoEvidence;

    #[async_trait::async_trait]
    impl EvidenceProvider for NoEvidence {
        fn tee(&self) -> kbs_types::Tee {
            kbs_types::Tee::Sample
        }

        async fn primary_evidence(&self, _report_data: &[u8]) -> Result<Vec<u8>, EvidenceError> {
            Err(EvidenceError::failed("no attester in this test"))
        }
    }
}
