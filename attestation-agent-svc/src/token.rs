//! GetToken: attestation tokens from the KBS, cached until shortly before they expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::kbs::{EvidenceProvider, KbsClient, KbsConfig, KbsError, KbsToken};
use serde::Serialize;

use crate::config::KbsEndpoint;

/// The token types GetToken serves.
pub const SUPPORTED_TOKEN_TYPES: &[&str] = &["kbs"];

/// A cached token is replaced this long before its `exp`, so no caller gets one about to lapse.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// The GetToken answer upstream sends: the token and the TEE key pair it is bound to.
#[derive(Serialize)]
struct TokenMessage<'a> {
    token: &'a str,
    tee_keypair: &'a str,
}

/// Fetches KBS tokens with one client and caches the latest.
pub struct KbsTokenSource {
    client: KbsClient,
    cached: tokio::sync::Mutex<Option<KbsToken>>,
}

impl KbsTokenSource {
    /// A token source for the KBS at `endpoint`, attesting with `evidence`.
    pub fn new(
        endpoint: &KbsEndpoint,
        evidence: Arc<dyn EvidenceProvider>,
    ) -> Result<Self, KbsError> {
        let mut config = KbsConfig::new(endpoint.url.clone());
        config.cert_pem = endpoint.cert_pem.clone();
        Ok(Self {
            client: KbsClient::new(config, evidence)?,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The token JSON `{"token": ..., "tee_keypair": ...}`, from the cache while it is fresh.
    pub async fn token_json(&self) -> Result<Vec<u8>, KbsError> {
        // Holding the lock across the fetch makes concurrent callers share one attestation.
        let mut cached = self.cached.lock().await;
        let fresh = cached
            .as_ref()
            .filter(|token| is_fresh(token.expires_at, SystemTime::now()));
        let token = match fresh {
            Some(token) => {
                tracing::debug!("answering GetToken from the cached token");
                token
            }
            None => cached.insert(self.client.token().await?),
        };
        Ok(token_message(token))
    }
}

/// Whether a token expiring at `expires_at` may still be handed out at `now`.
fn is_fresh(expires_at: Option<SystemTime>, now: SystemTime) -> bool {
    // A token without `exp` cannot be judged, so it is never reused.
    expires_at.is_some_and(|expiry| now + REFRESH_MARGIN < expiry)
}

fn token_message(token: &KbsToken) -> Vec<u8> {
    let message = TokenMessage {
        token: &token.token,
        tee_keypair: &token.tee_keypair_pem,
    };
    // Two strings always serialise.
    serde_json::to_vec(&message).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_until_a_minute_before_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(is_fresh(Some(now + Duration::from_secs(3600)), now));
        assert!(is_fresh(Some(now + Duration::from_secs(61)), now));
        assert!(!is_fresh(Some(now + Duration::from_secs(60)), now));
        assert!(!is_fresh(Some(now + Duration::from_secs(10)), now));
        assert!(!is_fresh(Some(now - Duration::from_secs(10)), now));
        assert!(!is_fresh(None, now));
    }

    #[test]
    fn the_message_has_upstream_field_names_and_order() {
        let token = KbsToken {
            token: "a.b.c".to_owned(),
            tee_keypair_pem: "-----BEGIN PRIVATE KEY-----\n".to_owned(),
            expires_at: None,
        };
        assert_eq!(
            String::from_utf8(token_message(&token)).unwrap(),
            r#"{"token":"a.b.c","tee_keypair":"-----BEGIN PRIVATE KEY-----\n"}"#
        );
    }
}
