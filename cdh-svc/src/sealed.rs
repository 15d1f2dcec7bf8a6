//! Sealed secrets: `sealed.<header>.<payload>.<signature>`, a JWS (ES256) whose payload is a
//! secret object; a `vault` secret names the KBS resource that holds the value.

use std::path::Path;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Deserialize;

use crate::error::{ErrorKind, HubError};

/// The only secret layout version upstream defines.
const SECRET_VERSION: &str = "0.1.0";

/// The vault provider whose secrets are KBS resources.
const KBS_PROVIDER: &str = "kbs";

/// Payload decoders when the signature is not checked: base64url as the sealing tools write
/// it today, then standard base64 as older tools wrote it; padding optional in both.
const LENIENT_ENGINES: [GeneralPurpose; 2] = [
    GeneralPurpose::new(&alphabet::URL_SAFE, lenient_padding()),
    GeneralPurpose::new(&alphabet::STANDARD, lenient_padding()),
];

const fn lenient_padding() -> GeneralPurposeConfig {
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
}

/// Where a verification key comes from, as the JWS header's `kid` says.
#[derive(Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A KBS resource URI.
    Resource(String),
    /// A file name in the local signing key directory.
    LocalFile(String),
}

/// The JWS protected header.
#[derive(Deserialize)]
struct JwsHeader {
    alg: String,
    kid: String,
}

/// An EC public key as a JWK.
#[derive(Deserialize)]
struct EcJwk {
    kty: String,
    crv: String,
    x: String,
    y: String,
}

/// The common part of every secret payload.
#[derive(Deserialize)]
struct SecretHeader {
    version: String,
    #[serde(rename = "type")]
    kind: String,
}

/// A `vault` secret: the value is the resource `name` held by `provider`.
/// (`provider_settings` and `annotations` carry nothing the kbs provider needs.)
#[derive(Deserialize)]
struct VaultLayout {
    name: String,
    provider: String,
}

/// A sealed secret split into its JWS sections, nothing verified yet.
pub struct SealedSecret<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> SealedSecret<'a> {
    /// Splits `sealed` into header, payload and signature.
    pub fn parse(sealed: &'a [u8]) -> Result<Self, HubError> {
        let text =
            std::str::from_utf8(sealed).map_err(|_| invalid("sealed secret is not UTF-8"))?;
        let body = text
            .trim()
            .strip_prefix("sealed.")
            .ok_or_else(|| invalid("sealed secret does not start with \"sealed.\""))?;
        let sections: Vec<&str> = body.split('.').collect();
        let [header, payload, signature] = sections.as_slice() else {
            return Err(invalid(format!(
                "sealed secret has {} sections after \"sealed.\", expected 3",
                sections.len()
            )));
        };
        Ok(Self {
            header,
            payload,
            signature,
        })
    }

    /// Where the key that signed this secret is, from the header's `kid`; only ES256 is used.
    pub fn key_source(&self) -> Result<KeySource, HubError> {
        let header: JwsHeader = decode_json(self.header, "sealed secret header")?;
        if header.alg != "ES256" {
            return Err(invalid(format!(
                "sealed secret is signed with {:?}, only ES256 is accepted",
                header.alg
            )));
        }
        let kid = header.kid;
        if kid.starts_with("kbs://") {
            return Ok(KeySource::Resource(kid));
        }
        let plain_name = !kid.is_empty() && kid != "." && kid != ".." && !kid.contains('/');
        if !plain_name {
            return Err(invalid(format!(
                "sealed secret key id {kid:?} is neither a kbs:// URI nor a file name"
            )));
        }
        Ok(KeySource::LocalFile(kid))
    }

    /// Checks the ES256 signature with `jwk`, the public key as JSON.
    pub fn verify(&self, jwk: &[u8]) -> Result<(), HubError> {
        let key = verifying_key(jwk)?;
        let signature = URL_SAFE_NO_PAD
            .decode(self.signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or_else(|| invalid("sealed secret signature is not an ES256 signature"))?;
        let signing_input = format!("{}.{}", self.header, self.payload);
        key.verify(signing_input.as_bytes(), &signature)
            .map_err(|_| {
                HubError::new(
                    ErrorKind::PermissionDenied,
                    "sealed secret signature does not verify with its key",
                )
            })
    }

    /// The KBS resource URI of a vault secret (check the signature first, unless told not to).
    pub fn vault_resource_uri(&self) -> Result<String, HubError> {
        let payload = LENIENT_ENGINES
            .iter()
            .find_map(|engine| engine.decode(self.payload).ok())
            .ok_or_else(|| invalid("sealed secret payload is not base64"))?;

        let header: SecretHeader = serde_json::from_slice(&payload)
            .map_err(|e| invalid(format!("sealed secret payload is not a secret object: {e}")))?;
        if header.version != SECRET_VERSION {
            return Err(invalid(format!(
                "sealed secret version {:?} is not supported (expected {SECRET_VERSION})",
                header.version
            )));
        }
        match header.kind.as_str() {
            "vault" => {}
            "envelope" => {
                return Err(HubError::new(
                    ErrorKind::Unimplemented,
                    "sealed secrets of type envelope are not supported by this build",
                ))
            }
            other => return Err(invalid(format!("unknown sealed secret type {other:?}"))),
        }

        let vault: VaultLayout = serde_json::from_slice(&payload)
            .map_err(|e| invalid(format!("malformed vault sealed secret: {e}")))?;
        if vault.provider != KBS_PROVIDER {
            return Err(HubError::new(
                ErrorKind::Unimplemented,
                format!(
                    "vault provider {:?} is not supported by this build (only {KBS_PROVIDER:?})",
                    vault.provider
                ),
            ));
        }
        Ok(vault.name)
    }
}

/// Reads a local verification key named by `name` from `dir`.
pub fn read_local_key(dir: &Path, name: &str) -> Result<Vec<u8>, HubError> {
    std::fs::read(dir.join(name)).map_err(|e| {
        HubError::new(
            ErrorKind::PermissionDenied,
            format!(
                "sealed secret key {name:?} is not readable in {}: {e}",
                dir.display()
            ),
        )
    })
}

fn verifying_key(jwk: &[u8]) -> Result<VerifyingKey, HubError> {
    let bad_key = |why: &str| {
        HubError::new(
            ErrorKind::Internal,
            format!("sealed secret verification key is unusable: {why}"),
        )
    };
    let jwk: EcJwk = serde_json::from_slice(jwk).map_err(|_| bad_key("not an EC JWK"))?;
    if jwk.kty != "EC" || jwk.crv != "P-256" {
        return Err(bad_key("not a P-256 key"));
    }
    let coordinate = |value: &str| {
        URL_SAFE_NO_PAD
            .decode(value)
            .ok()
            .filter(|bytes| bytes.len() == 32)
            .ok_or_else(|| bad_key("bad coordinate"))
    };
    let mut point = vec![0x04];
    point.extend(coordinate(&jwk.x)?);
    point.extend(coordinate(&jwk.y)?);
    VerifyingKey::from_sec1_bytes(&point).map_err(|_| bad_key("not a point on P-256"))
}

fn decode_json<T: serde::de::DeserializeOwned>(section: &str, what: &str) -> Result<T, HubError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(section)
        .map_err(|_| invalid(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{what} is malformed: {e}")))
}

fn invalid(message: impl Into<String>) -> HubError {
    HubError::new(ErrorKind::InvalidArgument, message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::SigningKey;

    use super::*;

    const VAULT: &str = r#"{"version":"0.1.0","type":"vault","name":"kbs:///default/key/1",
        "provider":"kbs","provider_settings":{},"annotations":{}}"#;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn jwk(key: &SigningKey) -> Vec<u8> {
        let point = key.verifying_key().to_encoded_point(false);
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        })
        .to_string()
        .into_bytes()
    }

    fn seal_with(key: &SigningKey, alg: &str, kid: &str, payload: &str) -> Vec<u8> {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"{kid}"}}"#));
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let signature: Signature = key.sign(format!("{header}.{payload}").as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        format!("sealed.{header}.{payload}.{signature}").into_bytes()
    }

    fn seal(payload: &str) -> Vec<u8> {
        seal_with(&key(7), "ES256", "test-key", payload)
    }

    fn uri_of(sealed: &[u8]) -> Result<String, HubError> {
        SealedSecret::parse(sealed)?.vault_resource_uri()
    }

    #[test]
    fn signed_vault_secret_verifies_and_names_its_resource() {
        let sealed = seal(VAULT);
        let secret = SealedSecret::parse(&sealed).unwrap();
        assert_eq!(
            secret.key_source().unwrap(),
            KeySource::LocalFile("test-key".into())
        );
        secret.verify(&jwk(&key(7))).unwrap();
        assert_eq!(secret.vault_resource_uri().unwrap(), "kbs:///default/key/1");
    }

    #[test]
    fn wrong_key_or_tampering_is_denied() {
        let sealed = seal(VAULT);
        let err = SealedSecret::parse(&sealed)
            .unwrap()
            .verify(&jwk(&key(8)))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);

        let text = String::from_utf8(sealed).unwrap();
        let parts: Vec<&str> = text.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(VAULT.replace("key/1", "key/2"));
        let tampered = format!("sealed.{}.{forged}.{}", parts[1], parts[3]);
        let err = SealedSecret::parse(tampered.as_bytes())
            .unwrap()
            .verify(&jwk(&key(7)))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    }

    #[test]
    fn key_ids_are_uris_or_plain_file_names() {
        let source = |kid: &str| {
            let sealed = seal_with(&key(7), "ES256", kid, VAULT);
            SealedSecret::parse(&sealed).unwrap().key_source()
        };
        assert_eq!(
            source("kbs:///default/keys/signer").unwrap(),
            KeySource::Resource("kbs:///default/keys/signer".into())
        );
        for bad in ["../etc/passwd", "a/b", "..", ""] {
            assert_eq!(
                source(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
        let hs256 = seal_with(&key(7), "HS256", "k", VAULT);
        let err = SealedSecret::parse(&hs256)
            .unwrap()
            .key_source()
            .unwrap_err();
        assert!(err.to_string().contains("HS256"), "{err}");
    }

    #[test]
    fn unusable_keys_and_signatures_are_reported() {
        let secret_bytes = seal(VAULT);
        let secret = SealedSecret::parse(&secret_bytes).unwrap();
        assert_eq!(
            secret.verify(b"{}").unwrap_err().kind(),
            ErrorKind::Internal
        );
        let unsigned = b"sealed.fakejwsheader.e30.fakesignature";
        let err = SealedSecret::parse(unsigned)
            .unwrap()
            .verify(&jwk(&key(7)))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn local_keys_are_read_from_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("signer"), jwk(&key(7))).unwrap();
        assert_eq!(read_local_key(dir.path(), "signer").unwrap(), jwk(&key(7)));
        let err = read_local_key(dir.path(), "absent").unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn standard_base64_payload_of_older_tools_is_accepted() {
        let sealed = format!(
            "sealed.fakejwsheader.{}.fakesignature",
            STANDARD.encode(VAULT)
        );
        assert_eq!(uri_of(sealed.as_bytes()).unwrap(), "kbs:///default/key/1");
    }

    #[test]
    fn envelope_and_other_providers_are_unimplemented_and_named() {
        let envelope = seal(
            r#"{"version":"0.1.0","type":"envelope","provider":"aliyun","key_id":"k",
                "encrypted_key":"a","encrypted_data":"b","wrap_type":"A256GCM","iv":"c",
                "provider_settings":{},"annotations":{}}"#,
        );
        let err = uri_of(&envelope).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unimplemented);
        assert!(err.to_string().contains("envelope"), "{err}");

        let aliyun = seal(
            r#"{"version":"0.1.0","type":"vault","name":"x","provider":"aliyun",
                "provider_settings":{},"annotations":{}}"#,
        );
        let err = uri_of(&aliyun).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unimplemented);
        assert!(err.to_string().contains("aliyun"), "{err}");
    }

    #[test]
    fn malformed_inputs_are_invalid_arguments() {
        let cases: [&[u8]; 8] = [
            b"not-sealed.a.b.c",
            b"sealed.a.b",
            b"sealed.a.b.c.d",
            b"sealed.h.!!!.s",
            b"\xff\xfe",
            &seal("not json"),
            &seal(r#"{"version":"9.9.9","type":"vault","name":"n","provider":"kbs"}"#),
            &seal(r#"{"version":"0.1.0","type":"vault","provider":"kbs"}"#),
        ];
        for case in cases {
            let err = uri_of(case).expect_err("malformed input must fail");
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        }
        let err = uri_of(&seal(r#"{"version":"0.1.0","type":"magic"}"#)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("magic"));
    }
}
