//! The HTTP side of the test KBS: the three RCAR endpoints, sessions and the resource policy.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use kbs_types::{Attestation, Challenge, ErrorInformation, Request, Tee, TeePubKey};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha384};

use super::{jwt, seal, KbsState};

/// Index of the auth counter.
pub(crate) const AUTH: usize = 0;
/// Index of the attest counter.
pub(crate) const ATTEST: usize = 1;
/// Index of the resource counter.
pub(crate) const RESOURCE: usize = 2;

const PROTOCOL_VERSION: &str = "0.4.0";
const SESSION_COOKIE: &str = "kbs-session-id";

/// One client's handshake: the nonce it was challenged with and, once attested, its TEE key.
pub(crate) struct Session {
    nonce: String,
    tee: Tee,
    expires: Instant,
    tee_pubkey: Option<TeePubKey>,
}

impl Session {
    fn is_alive(&self) -> bool {
        Instant::now() < self.expires
    }
}

/// The routes of a Trustee KBS this double implements.
pub(crate) fn router(state: Arc<KbsState>) -> Router {
    Router::new()
        .route("/kbs/v0/auth", post(auth))
        .route("/kbs/v0/attest", post(attest))
        .route("/kbs/v0/resource/:repo/:kind/:tag", get(resource))
        .with_state(state)
}

async fn auth(State(state): State<Arc<KbsState>>, body: Bytes) -> Response {
    state.received[AUTH].fetch_add(1, Ordering::Relaxed);

    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string()),
    };
    if value.get("extra-params").is_none() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "extra-params missing",
        );
    }
    let request: Request = match serde_json::from_value(value) {
        Ok(request) => request,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string()),
    };
    if request.version != PROTOCOL_VERSION {
        let detail = format!("protocol version {:?} unsupported", request.version);
        return refuse(StatusCode::UNAUTHORIZED, "ProtocolVersion", detail);
    }

    let nonce = STANDARD.encode(random::<32>());
    let id: String = random::<16>().iter().map(|b| format!("{b:02x}")).collect();
    let session = Session {
        nonce: nonce.clone(),
        tee: request.tee,
        expires: Instant::now() + state.session_ttl,
        tee_pubkey: None,
    };
    {
        let mut sessions = state.sessions();
        sessions.retain(|_, session| session.is_alive());
        sessions.insert(id.clone(), session);
    }

    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/kbs/v0; Max-Age={}; HttpOnly",
        state.session_ttl.as_secs()
    );
    let challenge = Challenge {
        nonce,
        extra_params: Value::String(String::new()),
    };
    ([(SET_COOKIE, cookie)], Json(challenge)).into_response()
}

async fn attest(State(state): State<Arc<KbsState>>, headers: HeaderMap, body: Bytes) -> Response {
    state.received[ATTEST].fetch_add(1, Ordering::Relaxed);

    let Some(id) = session_id(&headers) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "UnAuthenticated",
            "no session cookie",
        );
    };
    let attestation: Attestation = match serde_json::from_slice(&body) {
        Ok(attestation) => attestation,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string()),
    };
    let issued = state
        .sessions()
        .get(&id)
        .filter(|session| session.is_alive())
        .map(|session| (session.nonce.clone(), session.tee));
    let Some((nonce, tee)) = issued else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "UnAuthenticated",
            "unknown session",
        );
    };

    if attestation.runtime_data.nonce != nonce {
        let detail = "nonce was not issued to this session";
        return refuse(StatusCode::UNAUTHORIZED, "AttestationFailed", detail);
    }
    if tee != Tee::Sample {
        let detail = format!("no verifier for TEE {tee}");
        return refuse(StatusCode::UNAUTHORIZED, "AttestationFailed", detail);
    }
    if let Err(detail) = verify_sample_evidence(&attestation) {
        return refuse(StatusCode::UNAUTHORIZED, "AttestationFailed", detail);
    }

    let tee_pubkey = attestation.runtime_data.tee_pubkey;
    let now = jwt::now_secs();
    let claims = json!({
        "iss": "test-kbs",
        "iat": now,
        "exp": now + state.token_ttl.as_secs(),
        "tee": tee.to_string(),
        "tee-pubkey": tee_pubkey,
    });
    let token = jwt::sign(&state.token_key, &claims);
    if let Some(session) = state.sessions().get_mut(&id) {
        session.tee_pubkey = Some(tee_pubkey);
    }
    Json(json!({ "token": token })).into_response()
}

async fn resource(
    State(state): State<Arc<KbsState>>,
    Path((repo, kind, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    state.received[RESOURCE].fetch_add(1, Ordering::Relaxed);

    if ![&repo, &kind, &tag].into_iter().all(|s| is_safe_segment(s)) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "invalid resource path",
        );
    }
    let tee_pubkey = match authorize(&state, &headers) {
        Ok(key) => key,
        Err(detail) => return refuse(StatusCode::UNAUTHORIZED, "UnAuthenticated", detail),
    };

    let path = format!("{repo}/{kind}/{tag}");
    if state.deny.contains(&path) {
        let detail = format!("policy denies {path}");
        return refuse(StatusCode::UNAUTHORIZED, "PolicyDeny", detail);
    }
    let file = state.resource_dir.join(&repo).join(&kind).join(&tag);
    let content = match tokio::fs::read(&file).await {
        Ok(content) => content,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let detail = format!("resource {path} not found");
            return refuse(StatusCode::UNAUTHORIZED, "ResourceNotFound", detail);
        }
        Err(e) => {
            let detail = format!("resource {path} unreadable: {e}");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", detail);
        }
    };
    match seal::seal(&tee_pubkey, &content) {
        Ok(jwe) => Json(jwe).into_response(),
        Err(e) => refuse(StatusCode::BAD_REQUEST, "InvalidTeeKey", format!("{e:#}")),
    }
}

/// The TEE key to seal to: from a verified bearer token's claims, or from the attested session.
fn authorize(state: &KbsState, headers: &HeaderMap) -> Result<TeePubKey, String> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("authorization is not a bearer token")?;
        let claims =
            jwt::verify(state.token_key.verifying_key(), token).map_err(|e| format!("{e:#}"))?;
        return serde_json::from_value(claims["tee-pubkey"].clone())
            .map_err(|_| "token carries no tee-pubkey".to_owned());
    }

    let id = session_id(headers).ok_or("no session cookie or bearer token")?;
    let sessions = state.sessions();
    let session = sessions
        .get(&id)
        .filter(|session| session.is_alive())
        .ok_or("unknown or expired session")?;
    session
        .tee_pubkey
        .clone()
        .ok_or_else(|| "session is not attested".to_owned())
}

/// The sample verifier: `report_data` must be the hash of this attestation's runtime data.
fn verify_sample_evidence(attestation: &Attestation) -> Result<(), String> {
    let evidence = &attestation.tee_evidence.primary_evidence;
    if !evidence.get("svn").is_some_and(Value::is_string) {
        return Err("sample evidence has no svn".to_owned());
    }
    let report_data = evidence
        .get("report_data")
        .and_then(Value::as_str)
        .ok_or("sample evidence has no report_data")?;
    let report_data = STANDARD
        .decode(report_data)
        .map_err(|_| "report_data is not base64")?;

    let expected = expected_report_data(attestation)?;
    if report_data != expected {
        return Err("report_data does not bind the runtime data".to_owned());
    }
    Ok(())
}

/// The runtime data the report data hashes, members declared in canonical (sorted) order so
/// that serde_json's compact output is the canonical form.
#[derive(Serialize)]
struct RuntimeDataDigest<'a> {
    #[serde(rename = "additional-evidence")]
    additional_evidence: &'a str,
    nonce: &'a str,
    #[serde(rename = "tee-pubkey")]
    tee_pubkey: BTreeMap<String, String>,
}

/// SHA-384 of the canonical runtime data of `attestation`.
fn expected_report_data(attestation: &Attestation) -> Result<Vec<u8>, String> {
    let tee_pubkey = serde_json::to_value(&attestation.runtime_data.tee_pubkey)
        .and_then(serde_json::from_value)
        .map_err(|_| "tee-pubkey is not a flat JWK")?;
    let digest_input = RuntimeDataDigest {
        additional_evidence: &attestation.tee_evidence.additional_evidence,
        nonce: &attestation.runtime_data.nonce,
        tee_pubkey,
    };
    let text = serde_json::to_string(&digest_input).map_err(|e| e.to_string())?;
    Ok(Sha384::digest(text.as_bytes()).to_vec())
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn is_safe_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

fn refuse(status: StatusCode, kind: &str, detail: impl Into<String>) -> Response {
    let info = ErrorInformation {
        error_type: format!("https://github.com/confidential-containers/kbs/errors/{kind}"),
        detail: detail.into(),
    };
    (status, Json(info)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_is_the_hash_of_the_sorted_compact_runtime_data() {
        let attestation: Attestation = serde_json::from_value(json!({
            "init-data": null,
            "runtime-data": {
                "nonce": "abc=",
                "tee-pubkey": {"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQAB", "e": "AQAB"},
            },
            "tee-evidence": {"primary_evidence": {}, "additional_evidence": ""},
        }))
        .expect("attestation");
        let text = concat!(
            r#"{"additional-evidence":"","nonce":"abc=","#,
            r#""tee-pubkey":{"alg":"RSA-OAEP-256","e":"AQAB","kty":"RSA","n":"AQAB"}}"#
        );
        assert_eq!(
            expected_report_data(&attestation).expect("hash"),
            Sha384::digest(text).to_vec()
        );
    }

    #[test]
    fn only_plain_segments_are_safe() {
        assert!(is_safe_segment("key-1.pem"));
        for bad in ["", ".", "..", "a/b", "a b", "a%2F"] {
            assert!(!is_safe_segment(bad), "{bad:?}");
        }
    }
}
