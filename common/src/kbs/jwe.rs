//! Decryption of the flattened JWE (RFC 7516) a KBS seals each resource in: A256GCM content
//! encryption, the key transported with RSA-OAEP-256 or agreed with ECDH-ES+A256KW (RFC 7518).

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use aes_kw::KekAes256;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::elliptic_curve::sec1::FromEncodedPoint;
use rsa::Oaep;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::tee_key::{TeeKey, EC_ALG, EC_CURVE, RSA_ALG};

const CONTENT_ENCRYPTION: &str = "A256GCM";
const KEY_LEN: usize = 32;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// AES key wrap adds one 64-bit block to the key it wraps.
const KW_OVERHEAD: usize = 8;

/// The flattened JWE JSON serialisation. `protected` stays as received because the GCM
/// additional data is its exact base64url text, which re-serialising might not reproduce.
#[derive(Deserialize)]
struct FlattenedJwe {
    protected: String,
    encrypted_key: String,
    iv: String,
    ciphertext: String,
    tag: String,
    aad: Option<String>,
}

#[derive(Deserialize)]
struct ProtectedHeader {
    alg: String,
    enc: String,
    epk: Option<EphemeralKey>,
    apu: Option<String>,
    apv: Option<String>,
}

#[derive(Deserialize)]
struct EphemeralKey {
    kty: String,
    crv: String,
    x: String,
    y: String,
}

/// Decrypts a JWE `body` with the TEE key; the error says which step failed, never content.
pub(super) fn decrypt(body: &[u8], key: &TeeKey) -> Result<Vec<u8>, String> {
    let jwe: FlattenedJwe =
        serde_json::from_slice(body).map_err(|e| format!("not a flattened JWE: {e}"))?;
    let header: ProtectedHeader = serde_json::from_slice(&b64("protected", &jwe.protected)?)
        .map_err(|e| format!("malformed protected header: {e}"))?;
    if header.enc != CONTENT_ENCRYPTION {
        return Err(format!("unsupported enc {:?}", header.enc));
    }

    let encrypted_key = b64("encrypted_key", &jwe.encrypted_key)?;
    let cek = match key {
        TeeKey::Rsa(private) => {
            expect_alg(&header, RSA_ALG)?;
            private
                .decrypt(Oaep::new::<Sha256>(), &encrypted_key)
                .map_err(|_| "RSA-OAEP key unwrap failed".to_owned())?
        }
        TeeKey::Ec(private) => {
            expect_alg(&header, EC_ALG)?;
            let kek = ecdh_key_encryption_key(&header, private)?;
            let mut cek = [0u8; KEY_LEN];
            if encrypted_key.len() != KEY_LEN + KW_OVERHEAD {
                return Err("wrapped key has the wrong length for A256KW".to_owned());
            }
            KekAes256::from(kek)
                .unwrap(&encrypted_key, &mut cek)
                .map_err(|_| "AES key unwrap failed".to_owned())?;
            cek.to_vec()
        }
    };
    if cek.len() != KEY_LEN {
        return Err(format!("content key is {} bytes, not {KEY_LEN}", cek.len()));
    }

    let iv: [u8; IV_LEN] = b64("iv", &jwe.iv)?
        .try_into()
        .map_err(|_| "iv has the wrong length for A256GCM".to_owned())?;
    let tag: [u8; TAG_LEN] = b64("tag", &jwe.tag)?
        .try_into()
        .map_err(|_| "tag has the wrong length for A256GCM".to_owned())?;
    let mut additional_data = jwe.protected.into_bytes();
    if let Some(aad) = jwe.aad {
        additional_data.push(b'.');
        additional_data.extend_from_slice(aad.as_bytes());
    }

    let mut plaintext = b64("ciphertext", &jwe.ciphertext)?;
    Aes256Gcm::new_from_slice(&cek)
        .map_err(|_| "bad content key".to_owned())?
        .decrypt_in_place_detached(
            &Nonce::from(iv),
            &additional_data,
            &mut plaintext,
            &Tag::from(tag),
        )
        .map_err(|_| "content authentication failed".to_owned())?;
    Ok(plaintext)
}

fn expect_alg(header: &ProtectedHeader, alg: &str) -> Result<(), String> {
    if header.alg == alg {
        Ok(())
    } else {
        Err(format!(
            "alg {:?} does not match the {alg} TEE key",
            header.alg
        ))
    }
}

/// ECDH with the sender's ephemeral key, then the Concat KDF of RFC 7518 section 4.6.2.
fn ecdh_key_encryption_key(
    header: &ProtectedHeader,
    private: &p256::SecretKey,
) -> Result<[u8; KEY_LEN], String> {
    let epk = header
        .epk
        .as_ref()
        .ok_or_else(|| "ECDH-ES header has no epk".to_owned())?;
    if epk.kty != "EC" || epk.crv != EC_CURVE {
        return Err(format!("epk {}/{} is not EC/{EC_CURVE}", epk.kty, epk.crv));
    }
    let point = p256::EncodedPoint::from_affine_coordinates(
        &coordinate("epk.x", &epk.x)?.into(),
        &coordinate("epk.y", &epk.y)?.into(),
        false,
    );
    let public = Option::<p256::PublicKey>::from(p256::PublicKey::from_encoded_point(&point))
        .ok_or_else(|| "epk is not a point on P-256".to_owned())?;
    let shared = p256::ecdh::diffie_hellman(private.to_nonzero_scalar(), public.as_affine());

    let apu = header.apu.as_deref().map(|v| b64("apu", v)).transpose()?;
    let apv = header.apv.as_deref().map(|v| b64("apv", v)).transpose()?;
    Ok(concat_kdf(
        shared.raw_secret_bytes(),
        EC_ALG,
        apu.as_deref().unwrap_or_default(),
        apv.as_deref().unwrap_or_default(),
        256,
    ))
}

fn coordinate(name: &str, value: &str) -> Result<[u8; KEY_LEN], String> {
    let bytes = b64(name, value)?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| format!("{name} is {len} bytes, not {KEY_LEN}"))
}

/// One round of the Concat KDF; callers keep the first `key_bits` bits, and a 256-bit key is
/// exactly one SHA-256 output, so one round always suffices here.
fn concat_kdf(
    shared_secret: &[u8],
    algorithm: &str,
    apu: &[u8],
    apv: &[u8],
    key_bits: u32,
) -> [u8; KEY_LEN] {
    let length_prefixed = |data: &[u8]| {
        let mut out = u32::try_from(data.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(data);
        out
    };

    let mut hash = Sha256::new();
    hash.update(1u32.to_be_bytes());
    hash.update(shared_secret);
    hash.update(length_prefixed(algorithm.as_bytes()));
    hash.update(length_prefixed(apu));
    hash.update(length_prefixed(apv));
    hash.update(key_bits.to_be_bytes());
    hash.finalize().into()
}

/// Base64url, tolerating the padding some encoders add.
fn b64(name: &str, value: &str) -> Result<Vec<u8>, String> {
    let decoded = if value.ends_with('=') {
        URL_SAFE.decode(value)
    } else {
        URL_SAFE_NO_PAD.decode(value)
    };
    decoded.map_err(|_| format!("{name} is not base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kbs::tee_key::TeeKeyAlgorithm;
    use aes_gcm::aead::Aead;
    use kbs_types::TeePubKey;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use rand_core::{OsRng, RngCore};

    /// RFC 7518 appendix C: the key agreement example (ECDH-ES with A128GCM, apu "Alice",
    /// apv "Bob") derives this 128-bit key.
    #[test]
    fn concat_kdf_reproduces_the_rfc_example() {
        let z = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let derived = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 128);
        assert_eq!(
            URL_SAFE_NO_PAD.encode(&derived[..16]),
            "VqqN6vgjbSBcIijNcacQGg"
        );
    }

    /// Builds an ECDH-ES+A256KW JWE for `recipient` step by step with primitives only.
    fn seal_ec(recipient: &TeePubKey, plaintext: &[u8], aad: Option<&str>) -> Vec<u8> {
        let TeePubKey::EC { x, y, .. } = recipient else {
            panic!("EC key expected");
        };
        let point = p256::EncodedPoint::from_affine_coordinates(
            &coordinate("x", x).expect("x").into(),
            &coordinate("y", y).expect("y").into(),
            false,
        );
        let recipient = p256::PublicKey::from_encoded_point(&point).expect("point");
        let ephemeral = p256::ecdh::EphemeralSecret::random(&mut OsRng);
        let epk = ephemeral.public_key().to_encoded_point(false);
        let z = ephemeral.diffie_hellman(&recipient);
        let kek = concat_kdf(z.raw_secret_bytes(), "ECDH-ES+A256KW", b"", b"", 256);

        let cek = random_cek();
        let mut wrapped = [0u8; KEY_LEN + KW_OVERHEAD];
        KekAes256::from(kek).wrap(&cek, &mut wrapped).expect("wrap");
        let header = serde_json::json!({
            "alg": "ECDH-ES+A256KW",
            "enc": "A256GCM",
            "epk": {
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(epk.x().expect("x")),
                "y": URL_SAFE_NO_PAD.encode(epk.y().expect("y")),
            },
        });
        seal_content(&header, &wrapped, &cek, plaintext, aad)
    }

    /// Builds an RSA-OAEP-256 JWE for `recipient` with the `rsa` crate's encryption.
    fn seal_rsa(recipient: &TeePubKey, plaintext: &[u8]) -> Vec<u8> {
        let TeePubKey::RSA { k_mod, k_exp, .. } = recipient else {
            panic!("RSA key expected");
        };
        let public = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(k_mod).expect("n")),
            rsa::BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(k_exp).expect("e")),
        )
        .expect("public key");
        let cek = random_cek();
        let wrapped = public
            .encrypt(&mut OsRng, Oaep::new::<Sha256>(), &cek)
            .expect("encrypt");
        let header = serde_json::json!({"alg": "RSA-OAEP-256", "enc": "A256GCM"});
        seal_content(&header, &wrapped, &cek, plaintext, None)
    }

    fn random_cek() -> [u8; KEY_LEN] {
        let mut cek = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut cek);
        cek
    }

    /// A256GCM over `plaintext` with the AAD of RFC 7516 section 5.1 step 14.
    fn seal_content(
        header: &serde_json::Value,
        encrypted_key: &[u8],
        cek: &[u8; KEY_LEN],
        plaintext: &[u8],
        aad: Option<&str>,
    ) -> Vec<u8> {
        let protected = URL_SAFE_NO_PAD.encode(header.to_string());
        let mut additional = protected.clone();
        if let Some(aad) = aad {
            additional = format!("{additional}.{aad}");
        }
        let iv = [7u8; IV_LEN];
        let sealed = Aes256Gcm::new(&(*cek).into())
            .encrypt(
                &Nonce::from(iv),
                aes_gcm::aead::Payload {
                    msg: plaintext,
                    aad: additional.as_bytes(),
                },
            )
            .expect("seal");
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let mut jwe = serde_json::json!({
            "protected": protected,
            "encrypted_key": URL_SAFE_NO_PAD.encode(encrypted_key),
            "iv": URL_SAFE_NO_PAD.encode(iv),
            "ciphertext": URL_SAFE_NO_PAD.encode(ciphertext),
            "tag": URL_SAFE_NO_PAD.encode(tag),
        });
        if let Some(aad) = aad {
            jwe["aad"] = aad.into();
        }
        serde_json::to_vec(&jwe).expect("json")
    }

    #[test]
    fn decrypts_an_rsa_oaep_jwe_and_refuses_it_for_an_ec_key() {
        let key = TeeKey::generate(TeeKeyAlgorithm::Rsa).expect("key");
        let body = seal_rsa(&key.public_jwk(), b"rsa secret");
        assert_eq!(decrypt(&body, &key).expect("decrypt"), b"rsa secret");

        let ec = TeeKey::generate(TeeKeyAlgorithm::Ec).expect("key");
        let err = decrypt(&body, &ec).expect_err("wrong key type");
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn decrypts_an_ecdh_es_jwe_with_and_without_aad() {
        let key = TeeKey::generate(TeeKeyAlgorithm::Ec).expect("key");
        for aad in [None, Some("ZXh0cmE")] {
            let body = seal_ec(&key.public_jwk(), b"top secret", aad);
            assert_eq!(decrypt(&body, &key).expect("decrypt"), b"top secret");
        }
    }

    #[test]
    fn rejects_a_jwe_for_another_key_or_tampered() {
        let key = TeeKey::generate(TeeKeyAlgorithm::Ec).expect("key");
        let other = TeeKey::generate(TeeKeyAlgorithm::Ec).expect("key");
        let body = seal_ec(&other.public_jwk(), b"secret", None);
        assert!(decrypt(&body, &key).is_err());

        let mut jwe: serde_json::Value =
            serde_json::from_slice(&seal_ec(&key.public_jwk(), b"secret", None)).expect("json");
        let tampered = URL_SAFE_NO_PAD.encode(b"secreT");
        jwe["ciphertext"] = tampered.into();
        let err = decrypt(&serde_json::to_vec(&jwe).expect("json"), &key).expect_err("tamper");
        assert_eq!(err, "content authentication failed");

        assert!(decrypt(b"{}", &key)
            .expect_err("empty")
            .contains("not a flattened JWE"));
    }
}
