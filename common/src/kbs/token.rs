//! Reading the expiry of an attestation token (a JWT) without verifying it: the KBS verifies its
//! own tokens, the client only needs to know when to attest again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

/// The `exp` claim of `token`, `None` when the token has none; an error when it is not a JWT.
pub(super) fn expiry(token: &str) -> Result<Option<SystemTime>, String> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("token is not a JWT (three dot-separated parts)".to_owned());
    };

    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .or_else(|_| URL_SAFE.decode(payload))
        .map_err(|_| "token payload is not base64url".to_owned())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| "token payload is not JSON".to_owned())?;

    match claims.get("exp") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(exp) => {
            let seconds = exp
                .as_u64()
                .or_else(|| exp.as_f64().filter(|s| *s >= 0.0).map(|s| s as u64))
                .ok_or_else(|| "token exp is not a non-negative number".to_owned())?;
            Ok(Some(UNIX_EPOCH + Duration::from_secs(seconds)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn reads_exp() {
        let at = expiry(&jwt(r#"{"exp":1700000000,"iat":1}"#)).expect("valid");
        assert_eq!(at, Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
        let float = expiry(&jwt(r#"{"exp":12.9}"#)).expect("valid");
        assert_eq!(float, Some(UNIX_EPOCH + Duration::from_secs(12)));
    }

    #[test]
    fn missing_exp_is_none() {
        assert_eq!(expiry(&jwt(r#"{"iat":1}"#)).expect("valid"), None);
    }

    #[test]
    fn rejects_non_jwts_and_bad_exp() {
        assert!(expiry("abc").expect_err("one part").contains("not a JWT"));
        assert!(expiry("a.b.c.d")
            .expect_err("four parts")
            .contains("not a JWT"));
        assert!(expiry("a.!!!.c")
            .expect_err("payload")
            .contains("base64url"));
        let not_json = format!("a.{}.c", URL_SAFE_NO_PAD.encode("nope"));
        assert!(expiry(&not_json).expect_err("json").contains("JSON"));
        assert!(expiry(&jwt(r#"{"exp":"soon"}"#))
            .expect_err("exp")
            .contains("exp"));
        assert!(expiry(&jwt(r#"{"exp":-5}"#))
            .expect_err("negative")
            .contains("exp"));
    }
}
