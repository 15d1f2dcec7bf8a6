//! ES256 JSON Web Tokens: the attestation token the test KBS issues and accepts as a bearer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::Value;

const HEADER: &str = r#"{"alg":"ES256","typ":"JWT"}"#;

/// Seconds since the epoch, now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Signs `claims` into a compact JWS.
pub(crate) fn sign(key: &SigningKey, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: Signature = key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// Checks the signature, algorithm and `exp` of `token` and returns its claims.
pub(crate) fn verify(key: &VerifyingKey, token: &str) -> anyhow::Result<Value> {
    let (signing_input, signature) = token.rsplit_once('.').context("token has no signature")?;
    let (header, claims) = signing_input
        .split_once('.')
        .context("token has no claims")?;

    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header)?)?;
    if header["alg"] != "ES256" {
        bail!("token alg is not ES256");
    }
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature)?)?;
    key.verify(signing_input.as_bytes(), &signature)
        .context("token signature does not verify")?;

    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims)?)?;
    let exp = claims["exp"].as_u64().context("token has no exp")?;
    if exp <= now_secs() {
        bail!("token expired");
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn signed_tokens_verify_and_tampered_or_expired_ones_do_not() {
        let key = SigningKey::random(&mut OsRng);
        let claims = serde_json::json!({"exp": now_secs() + 60, "sub": "x"});
        let token = sign(&key, &claims);
        assert_eq!(
            verify(key.verifying_key(), &token).expect("valid")["sub"],
            "x"
        );

        let other = SigningKey::random(&mut OsRng);
        assert!(verify(other.verifying_key(), &token).is_err());

        let forged_claims = URL_SAFE_NO_PAD.encode(r#"{"exp":99999999999,"sub":"y"}"#);
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert!(verify(key.verifying_key(), &forged).is_err());

        let expired = sign(&key, &serde_json::json!({"exp": 1}));
        let err = verify(key.verifying_key(), &expired).expect_err("expired");
        assert!(err.to_string().contains("expired"));
    }
}
