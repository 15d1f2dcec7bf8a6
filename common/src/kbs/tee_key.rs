//! The ephemeral TEE key pair: resources are sealed to its public half, which is bound into the
//! evidence, and only this process holds the private half.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kbs_types::TeePubKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;

use super::KbsError;

/// JWE key management algorithm announced for an RSA TEE key.
pub(super) const RSA_ALG: &str = "RSA-OAEP-256";
/// JWE key management algorithm announced for an EC TEE key.
pub(super) const EC_ALG: &str = "ECDH-ES+A256KW";
/// Curve of the EC TEE key.
pub(super) const EC_CURVE: &str = "P-256";

const RSA_BITS: usize = 2048;

/// Type of the ephemeral TEE key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TeeKeyAlgorithm {
    /// RSA 2048 with RSA-OAEP-256 key transport; slow to generate.
    Rsa,
    /// P-256 with ECDH-ES+A256KW key agreement; fast to generate.
    #[default]
    Ec,
}

/// The private TEE key.
pub(super) enum TeeKey {
    /// Boxed: an RSA key is much larger than the EC one.
    Rsa(Box<RsaPrivateKey>),
    Ec(p256::SecretKey),
}

impl TeeKey {
    /// Generates a fresh key; blocking and slow for RSA, so run it off the async executor.
    pub(super) fn generate(algorithm: TeeKeyAlgorithm) -> Result<Self, KbsError> {
        match algorithm {
            TeeKeyAlgorithm::Rsa => RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                .map(|key| Self::Rsa(Box::new(key)))
                .map_err(|e| KbsError::TeeKey(format!("RSA key generation failed: {e}"))),
            TeeKeyAlgorithm::Ec => Ok(Self::Ec(p256::SecretKey::random(&mut OsRng))),
        }
    }

    /// The public half as the JWK the KBS expects: `kty`, `alg` and the key material only.
    pub(super) fn public_jwk(&self) -> TeePubKey {
        match self {
            Self::Rsa(key) => TeePubKey::RSA {
                alg: RSA_ALG.to_owned(),
                k_mod: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                k_exp: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            },
            Self::Ec(key) => {
                // An uncompressed point of a valid key always has both coordinates.
                let point = key.public_key().to_encoded_point(false);
                let coordinate = |c: Option<&p256::FieldBytes>| {
                    c.map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
                        .unwrap_or_default()
                };
                TeePubKey::EC {
                    crv: EC_CURVE.to_owned(),
                    alg: EC_ALG.to_owned(),
                    x: coordinate(point.x()),
                    y: coordinate(point.y()),
                }
            }
        }
    }

    /// The private key as PKCS#8 PEM, handed to callers of `token()`.
    pub(super) fn private_pem(&self) -> Result<String, KbsError> {
        let pem = match self {
            Self::Rsa(key) => key.to_pkcs8_pem(LineEnding::LF),
            Self::Ec(key) => key.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map(|pem| pem.to_string())
            .map_err(|e| KbsError::TeeKey(format!("PKCS#8 export failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::DecodePrivateKey;

    #[test]
    fn ec_key_exports_a_matching_jwk_and_pem() {
        let key = TeeKey::generate(TeeKeyAlgorithm::Ec).expect("generate");
        let TeePubKey::EC { crv, alg, x, y } = key.public_jwk() else {
            panic!("not an EC JWK");
        };
        assert_eq!((crv.as_str(), alg.as_str()), (EC_CURVE, EC_ALG));

        let pem = key.private_pem().expect("pem");
        let reloaded = p256::SecretKey::from_pkcs8_pem(&pem).expect("reload");
        let point = reloaded.public_key().to_encoded_point(false);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(x).expect("x"),
            point.x().expect("x").to_vec()
        );
        assert_eq!(
            URL_SAFE_NO_PAD.decode(y).expect("y"),
            point.y().expect("y").to_vec()
        );
    }

    #[test]
    fn jwk_serialises_with_only_the_allowed_members() {
        let key = TeeKey::generate(TeeKeyAlgorithm::Ec).expect("generate");
        let jwk = serde_json::to_value(key.public_jwk()).expect("serialise");
        let mut members: Vec<&str> = jwk
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        members.sort_unstable();
        assert_eq!(members, ["alg", "crv", "kty", "x", "y"]);
        assert_eq!(jwk["kty"], "EC");
    }
}
