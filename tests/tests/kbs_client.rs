//! The KBS client of `common` against the test KBS: handshake, session reuse, re-attestation,
//! refusals and retries, each observed through the KBS's own request counters.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::kbs::{
    EvidenceError, EvidenceProvider, KbsClient, KbsConfig, KbsErrorKind, ResourcePath, RetryPolicy,
    Tee, TeeKeyAlgorithm,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha384};
use stack_tests::kbs::{write_resource, EndpointCounts, TestKbs, TestKbsConfig, TlsIdentity};
use tempfile::TempDir;

/// How the test attester treats the report data it is given.
#[derive(Clone, Copy)]
enum Attester {
    /// Binds it, as the sample attester does.
    Honest,
    /// Binds the hash of something else.
    Lying,
    /// Cannot be reached.
    Down,
}

#[async_trait::async_trait]
impl EvidenceProvider for Attester {
    fn tee(&self) -> Tee {
        Tee::Sample
    }

    async fn primary_evidence(&self, report_data: &[u8]) -> Result<Vec<u8>, EvidenceError> {
        let bound = match self {
            Self::Honest => report_data.to_vec(),
            Self::Lying => Sha384::digest(b"some other runtime data").to_vec(),
            Self::Down => return Err(EvidenceError::unavailable("attestation agent is down")),
        };
        Ok(sample_evidence(&bound))
    }
}

/// The sample attester's evidence format.
fn sample_evidence(report_data: &[u8]) -> Vec<u8> {
    json!({"svn": "1", "report_data": STANDARD.encode(report_data)})
        .to_string()
        .into_bytes()
}

const FIRST: &[u8] = b"first secret \x00\xff bytes";
const SECOND: &[u8] = b"second secret";

fn resources() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in [
        ("default/key/one", FIRST),
        ("default/key/two", SECOND),
        ("default/key/blocked", b"never served".as_slice()),
    ] {
        write_resource(dir.path(), path, content).unwrap();
    }
    dir
}

async fn start_kbs(dir: &TempDir) -> TestKbs {
    let mut config = TestKbsConfig::new(dir.path());
    config.deny = vec!["default/key/blocked".to_owned()];
    TestKbs::start(config).await.unwrap()
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

fn client(url: &str, key_algorithm: TeeKeyAlgorithm, attester: Attester) -> KbsClient {
    let mut config = KbsConfig::new(url);
    config.key_algorithm = key_algorithm;
    config.retry = fast_retries();
    KbsClient::new(config, Arc::new(attester)).unwrap()
}

fn path(s: &str) -> ResourcePath {
    ResourcePath::parse(s).unwrap()
}

fn counts(auth: u64, attest: u64, resource: u64) -> EndpointCounts {
    EndpointCounts {
        auth,
        attest,
        resource,
    }
}

async fn happy_path(key_algorithm: TeeKeyAlgorithm, pem_header: &str) {
    let dir = resources();
    let kbs = start_kbs(&dir).await;
    let client = client(&kbs.url(), key_algorithm, Attester::Honest);

    let first = client.get_resource(&path("default/key/one")).await.unwrap();
    let second = client
        .get_resource(&path("kbs:///default/key/two"))
        .await
        .unwrap();
    assert_eq!(first, FIRST);
    assert_eq!(second, SECOND);

    let token = client.token().await.unwrap();
    assert!(token.expires_at.unwrap() > SystemTime::now());
    assert!(token.tee_keypair_pem.starts_with(pem_header));
    assert_eq!(token.token.split('.').count(), 3);
    assert_eq!(kbs.counts(), counts(1, 1, 2));
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn resources_decrypt_with_an_ec_tee_key() {
    happy_path(TeeKeyAlgorithm::Ec, "-----BEGIN PRIVATE KEY-----").await;
}

#[tokio::test]
async fn resources_decrypt_with_an_rsa_tee_key() {
    happy_path(TeeKeyAlgorithm::Rsa, "-----BEGIN PRIVATE KEY-----").await;
}

#[tokio::test]
async fn one_attestation_serves_many_reads_and_tokens() {
    let dir = resources();
    let kbs = start_kbs(&dir).await;
    let client = client(&kbs.url(), TeeKeyAlgorithm::Ec, Attester::Honest);

    let token = client.token().await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            client.get_resource(&path("default/key/one")).await.unwrap(),
            FIRST
        );
    }
    let again = client.token().await.unwrap();

    assert_eq!(
        again.token, token.token,
        "the cached token is handed out again"
    );
    assert_eq!(again.tee_keypair_pem, token.tee_keypair_pem);
    assert_eq!(kbs.counts(), counts(1, 1, 5));
    let sent = client.round_trips();
    assert_eq!((sent.auth, sent.attest, sent.resource), (1, 1, 5));
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_callers_share_one_attestation() {
    let dir = resources();
    let kbs = start_kbs(&dir).await;
    let client = Arc::new(client(&kbs.url(), TeeKeyAlgorithm::Ec, Attester::Honest));

    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let client = Arc::clone(&client);
        readers.spawn(async move { client.get_resource(&path("default/key/two")).await });
    }
    while let Some(read) = readers.join_next().await {
        assert_eq!(read.unwrap().unwrap(), SECOND);
    }
    assert_eq!(kbs.counts(), counts(1, 1, 8));
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rejected_session_is_replaced_by_exactly_one_attestation() {
    let dir = resources();
    let kbs = start_kbs(&dir).await;
    let client = client(&kbs.url(), TeeKeyAlgorithm::Ec, Attester::Honest);

    client.get_resource(&path("default/key/one")).await.unwrap();
    kbs.flush_sessions();
    let after_flush = client.get_resource(&path("default/key/two")).await.unwrap();

    assert_eq!(after_flush, SECOND);
    // The read after the flush: one refused with the old cookie, one retried with the new.
    assert_eq!(kbs.counts(), counts(2, 2, 3));
    client.get_resource(&path("default/key/one")).await.unwrap();
    assert_eq!(kbs.counts(), counts(2, 2, 4));
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn denied_and_missing_resources_are_not_found_or_denied() {
    let dir = resources();
    let kbs = start_kbs(&dir).await;
    let client = client(&kbs.url(), TeeKeyAlgorithm::Ec, Attester::Honest);

    let denied = client
        .get_resource(&path("default/key/blocked"))
        .await
        .unwrap_err();
    assert_eq!(denied.kind(), KbsErrorKind::NotFoundOrDenied);
    assert!(denied.kbs_detail().unwrap().contains("policy denies"));
    assert!(!denied.to_string().contains("never served"));

    let missing = client
        .get_resource(&path("default/key/absent"))
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), KbsErrorKind::NotFoundOrDenied);
    assert!(missing.kbs_detail().unwrap().contains("not found"));

    // The first refusal came on a brand-new session and is final; the second, on a reused
    // session, costs exactly one fresh attestation and one retry.
    assert_eq!(kbs.counts(), counts(2, 2, 3));
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn evidence_that_does_not_bind_the_runtime_data_is_rejected_without_retry() {
    let dir = resources();
    let kbs = start_kbs(&dir).await;
    let client = client(&kbs.url(), TeeKeyAlgorithm::Ec, Attester::Lying);

    let err = client
        .get_resource(&path("default/key/one"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), KbsErrorKind::AttestationRejected);
    assert!(err.kbs_detail().unwrap().contains("report_data"));
    assert_eq!(kbs.counts(), counts(1, 1, 0), "a 4xx is not retried");
    assert_eq!(client.round_trips().attest, 1);
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_attester_is_unavailable() {
    let dir = resources();
    let kbs = start_kbs(&dir).await;
    let client = client(&kbs.url(), TeeKeyAlgorithm::Ec, Attester::Down);

    let err = client.token().await.unwrap_err();
    assert_eq!(err.kind(), KbsErrorKind::Unavailable);
    assert_eq!(kbs.counts(), counts(1, 0, 0));
    kbs.shutdown().await.unwrap();
}

/// Drives auth by hand and returns the session cookie and the nonce.
async fn raw_auth(http: &reqwest::Client, url: &str) -> (String, String) {
    let answer = http
        .post(format!("{url}/kbs/v0/auth"))
        .body(json!({"version": "0.4.0", "tee": "sample", "extra-params": ""}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let cookie = answer.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let challenge: Value = json_of(answer).await;
    let nonce = challenge["nonce"].as_str().unwrap().to_owned();
    assert_eq!(STANDARD.decode(&nonce).unwrap().len(), 32);
    (cookie, nonce)
}

/// An attestation whose evidence honestly binds `nonce` and a fixed JWK.
fn raw_attestation(nonce: &str) -> Value {
    let jwk = json!({"alg": "RSA-OAEP-256", "e": "AQAB", "kty": "RSA", "n": "AQAB"});
    let runtime = format!(r#"{{"additional-evidence":"","nonce":"{nonce}","tee-pubkey":{jwk}}}"#);
    let evidence: Value =
        serde_json::from_slice(&sample_evidence(&Sha384::digest(runtime))).unwrap();
    json!({
        "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
    })
}

async fn json_of(answer: reqwest::Response) -> Value {
    serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn a_nonce_the_session_did_not_issue_is_rejected() {
    let dir = resources();
    let kbs = start_kbs(&dir).await;
    let http = reqwest::Client::new();
    let (cookie, nonce) = raw_auth(&http, &kbs.url()).await;
    let attest = |body: Value| {
        http.post(format!("{}/kbs/v0/attest", kbs.url()))
            .header("cookie", &cookie)
            .body(body.to_string())
            .send()
    };

    let foreign_nonce = STANDARD.encode([7u8; 32]);
    let refused = attest(raw_attestation(&foreign_nonce)).await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(json_of(refused).await["detail"]
        .as_str()
        .unwrap()
        .contains("nonce"));

    // The same request with the issued nonce passes: the refusal was about the nonce alone.
    let accepted = attest(raw_attestation(&nonce)).await.unwrap();
    assert_eq!(accepted.status(), 200);
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused_with_401() {
    let dir = resources();
    let kbs = start_kbs(&dir).await;
    let answer = reqwest::Client::new()
        .post(format!("{}/kbs/v0/auth", kbs.url()))
        .body(json!({"version": "0.3.0", "tee": "sample", "extra-params": ""}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let info = json_of(answer).await;
    assert!(info["type"].as_str().unwrap().ends_with("ProtocolVersion"));
    assert!(info["detail"].as_str().unwrap().contains("0.3.0"));
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_attestation_token_works_as_a_bearer_and_a_forged_one_does_not() {
    let dir = resources();
    let kbs = start_kbs(&dir).await;
    let client = client(&kbs.url(), TeeKeyAlgorithm::Ec, Attester::Honest);
    let token = client.token().await.unwrap().token;
    let http = reqwest::Client::new();
    let fetch = |bearer: String| {
        http.get(format!("{}/kbs/v0/resource/default/key/one", kbs.url()))
            .header("authorization", format!("Bearer {bearer}"))
            .send()
    };

    let sealed = fetch(token.clone()).await.unwrap();
    assert_eq!(sealed.status(), 200);
    let jwe = json_of(sealed).await;
    for member in ["protected", "encrypted_key", "iv", "ciphertext", "tag"] {
        assert!(jwe[member].is_string(), "{member} missing");
    }
    assert!(!jwe.to_string().contains("first secret"));

    let (signed, _signature) = token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", "A".repeat(86));
    assert_eq!(fetch(forged).await.unwrap().status(), 401);
    assert!(kbs.token_public_key_pem().unwrap().contains("PUBLIC KEY"));
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_absent_kbs_is_retried_a_bounded_number_of_times() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let client = client(
        &format!("http://127.0.0.1:{port}"),
        TeeKeyAlgorithm::Ec,
        Attester::Honest,
    );

    let err = client
        .get_resource(&path("default/key/one"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), KbsErrorKind::Unavailable);
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    let sent = client.round_trips();
    assert_eq!((sent.auth, sent.attest, sent.resource), (3, 0, 0));
}

/// A server answering every request with `status` and `body`, counting the requests.
async fn canned_server(status: u16, body: Vec<u8>) -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&hits);
    let status = axum::http::StatusCode::from_u16(status).unwrap();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        let body = body.clone();
        async move { (status, body) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let body = br#"{"type":"x","detail":"overloaded"}"#.to_vec();
    let (url, hits) = canned_server(503, body).await;
    let client = client(&url, TeeKeyAlgorithm::Ec, Attester::Honest);

    let err = client.token().await.unwrap_err();
    assert_eq!(err.kind(), KbsErrorKind::Unavailable);
    assert_eq!(err.kbs_detail(), Some("overloaded"));
    assert_eq!(hits.load(Ordering::Relaxed), 3);
    assert_eq!(client.round_trips().auth, 3);
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let (url, hits) = canned_server(200, vec![b' '; 17 * 1024 * 1024]).await;
    let client = client(&url, TeeKeyAlgorithm::Ec, Attester::Honest);

    let err = client.token().await.unwrap_err();
    assert_eq!(err.kind(), KbsErrorKind::Protocol);
    assert!(err.to_string().contains("exceeds"), "{err}");
    assert_eq!(hits.load(Ordering::Relaxed), 1);
}

async fn start_tls_kbs(dir: &TempDir, identity: &TlsIdentity) -> TestKbs {
    let mut config = TestKbsConfig::new(dir.path());
    config.tls = Some(identity.clone());
    TestKbs::start(config).await.unwrap()
}

fn tls_client(url: &str, cert_pem: Option<&str>) -> KbsClient {
    let mut config = KbsConfig::new(url);
    config.cert_pem = cert_pem.map(str::to_owned);
    config.retry = fast_retries();
    KbsClient::new(config, Arc::new(Attester::Honest)).unwrap()
}

#[tokio::test]
async fn https_trusts_the_configured_certificate() {
    let dir = resources();
    let identity = TlsIdentity::self_signed_loopback().unwrap();
    let kbs = start_tls_kbs(&dir, &identity).await;
    assert!(kbs.url().starts_with("https://"));

    let client = tls_client(&kbs.url(), Some(identity.cert_pem()));
    let secret = client.get_resource(&path("default/key/one")).await.unwrap();
    assert_eq!(secret, FIRST);
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn https_refuses_a_kbs_whose_certificate_is_not_the_configured_one() {
    let dir = resources();
    let served = TlsIdentity::self_signed_loopback().unwrap();
    let other = TlsIdentity::self_signed_loopback().unwrap();
    let kbs = start_tls_kbs(&dir, &served).await;

    for cert in [Some(other.cert_pem()), None] {
        let client = tls_client(&kbs.url(), cert);
        let err = client.token().await.unwrap_err();
        assert_eq!(err.kind(), KbsErrorKind::Unavailable, "{err}");
    }
    assert_eq!(
        kbs.counts(),
        counts(0, 0, 0),
        "no request got past the handshake"
    );
    kbs.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_test_kbs_refuses_a_non_loopback_address() {
    let dir = resources();
    let mut config = TestKbsConfig::new(dir.path());
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = TestKbs::start(config).await.err().unwrap();
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test]
async fn the_test_kbs_binary_serves_until_sigterm() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = resources();
    let mut child = Command::new(env!("CARGO_BIN_EXE_test-kbs"))
        .args(["--listen", "127.0.0.1:0", "--resources"])
        .arg(dir.path())
        .args(["--deny", "default/key/blocked", "--session-ttl", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();

    let client = client(&url, TeeKeyAlgorithm::Ec, Attester::Honest);
    assert_eq!(
        client.get_resource(&path("default/key/one")).await.unwrap(),
        FIRST
    );
    let denied = client.get_resource(&path("default/key/blocked")).await;
    assert_eq!(denied.unwrap_err().kind(), KbsErrorKind::NotFoundOrDenied);

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_test_kbs_binary_refuses_a_non_loopback_address() {
    let dir = resources();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_test-kbs"))
        .args(["--listen", "0.0.0.0:0", "--resources"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
