//! Sealing a resource to a TEE public key as a flattened JWE, the way a Trustee KBS does:
//! A256GCM content encryption, RSA-OAEP-256 or ECDH-ES+A256KW for the content key.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use aes_kw::KekAes256;
use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kbs_types::{ProtectedHeader, Response, TeePubKey};
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use rand_core::{OsRng, RngCore};
use rsa::{BigUint, Oaep, RsaPublicKey};
use sha2::{Digest, Sha256};

/// Encrypts `plaintext` so only the holder of the private half of `recipient` can read it.
pub(crate) fn seal(recipient: &TeePubKey, plaintext: &[u8]) -> anyhow::Result<Response> {
    let mut cek = [0u8; 32];
    OsRng.fill_bytes(&mut cek);

    let (alg, other_fields, encrypted_key) = match recipient {
        TeePubKey::RSA { alg, k_mod, k_exp } => {
            if alg != "RSA-OAEP-256" {
                bail!("RSA TEE key asks for unsupported alg {alg:?}");
            }
            let key = RsaPublicKey::new(
                BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(k_mod).context("JWK n")?),
                BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(k_exp).context("JWK e")?),
            )
            .context("JWK is not a usable RSA key")?;
            let wrapped = key
                .encrypt(&mut OsRng, Oaep::new::<Sha256>(), &cek)
                .context("RSA-OAEP")?;
            (alg.clone(), serde_json::Map::new(), wrapped)
        }
        TeePubKey::EC { crv, alg, x, y } => {
            if crv != "P-256" || alg != "ECDH-ES+A256KW" {
                bail!("EC TEE key asks for unsupported {crv}/{alg}");
            }
            let point = p256::EncodedPoint::from_affine_coordinates(
                &fixed32(x).context("JWK x")?.into(),
                &fixed32(y).context("JWK y")?.into(),
                false,
            );
            let key = Option::<p256::PublicKey>::from(p256::PublicKey::from_encoded_point(&point))
                .context("JWK is not a P-256 point")?;
            let ephemeral = p256::ecdh::EphemeralSecret::random(&mut OsRng);
            let shared = ephemeral.diffie_hellman(&key);
            let kek = derive_a256kw_key(shared.raw_secret_bytes());
            let mut wrapped = vec![0u8; cek.len() + 8];
            KekAes256::from(kek)
                .wrap(&cek, &mut wrapped)
                .map_err(|e| anyhow::anyhow!("AES key wrap: {e}"))?;

            let epk = ephemeral.public_key().to_encoded_point(false);
            let mut fields = serde_json::Map::new();
            fields.insert(
                "epk".to_owned(),
                serde_json::json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(epk.x().context("epk x")?),
                    "y": URL_SAFE_NO_PAD.encode(epk.y().context("epk y")?),
                }),
            );
            (alg.clone(), fields, wrapped)
        }
        TeePubKey::AKP { alg, .. } => bail!("AKP TEE keys ({alg}) are not supported"),
    };

    let protected = ProtectedHeader {
        alg,
        enc: "A256GCM".to_owned(),
        other_fields,
    };
    let aad = protected.generate_aad().context("protected header")?;
    let mut iv = [0u8; 12];
    OsRng.fill_bytes(&mut iv);
    let mut ciphertext = plaintext.to_vec();
    let tag = Aes256Gcm::new(&cek.into())
        .encrypt_in_place_detached(&iv.into(), &aad, &mut ciphertext)
        .map_err(|e| anyhow::anyhow!("A256GCM: {e}"))?;

    Ok(Response {
        protected,
        encrypted_key,
        aad: None,
        iv: iv.to_vec(),
        ciphertext,
        tag: tag.to_vec(),
    })
}

fn fixed32(value: &str) -> anyhow::Result<[u8; 32]> {
    URL_SAFE_NO_PAD
        .decode(value)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("coordinate is not 32 bytes"))
}

/// RFC 7518 section 4.6.2 with no PartyUInfo/PartyVInfo: a 256-bit key is one SHA-256 round.
fn derive_a256kw_key(shared_secret: &[u8]) -> [u8; 32] {
    const ALG: &[u8] = b"ECDH-ES+A256KW";
    let mut other_info = Vec::new();
    other_info.extend_from_slice(&(ALG.len() as u32).to_be_bytes());
    other_info.extend_from_slice(ALG);
    other_info.extend_from_slice(&[0u8; 4]); // empty PartyUInfo
    other_info.extend_from_slice(&[0u8; 4]); // empty PartyVInfo
    other_info.extend_from_slice(&256u32.to_be_bytes());

    let mut round = Vec::new();
    round.extend_from_slice(&[0, 0, 0, 1]);
    round.extend_from_slice(shared_secret);
    round.extend_from_slice(&other_info);
    Sha256::digest(&round).into()
}
