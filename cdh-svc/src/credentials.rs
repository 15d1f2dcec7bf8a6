//! `[[credentials]]`: resources fetched and written to files before the CDH reports ready.

use std::os::unix::fs::DirBuilderExt as _;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::config::Credential;
use crate::error::{ErrorKind, HubError};
use crate::hub::Hub;

/// Attempts per credential before the start fails.
const FETCH_ATTEMPTS: u32 = 5;

/// Pause after the first failed attempt; doubled after each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Time one attempt may take (the KBS client's own retries included), asked of systemd.
const ATTEMPT_ALLOWANCE: Duration = Duration::from_secs(60);

/// Fetches every credential and writes it, mode 0600; `waiting` hears what is awaited and
/// how long it may take, for `STATUS=` and `EXTEND_TIMEOUT_USEC=`.
pub async fn provision(
    hub: &Hub,
    credentials: &[Credential],
    waiting: &dyn Fn(&str, Duration),
) -> Result<()> {
    for credential in credentials {
        let content = fetch(hub, credential, waiting).await?;
        write(credential, &content)?;
        tracing::info!(
            uri = %credential.uri,
            path = %credential.path.display(),
            "credential written"
        );
    }
    Ok(())
}

async fn fetch(
    hub: &Hub,
    credential: &Credential,
    waiting: &dyn Fn(&str, Duration),
) -> Result<Vec<u8>> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        waiting(
            &format!(
                "fetching credential {} (attempt {attempt} of {FETCH_ATTEMPTS})",
                credential.uri
            ),
            ATTEMPT_ALLOWANCE + backoff,
        );
        match hub.get_resource(&credential.uri).await {
            Ok(content) => return Ok(content),
            Err(err) if attempt < FETCH_ATTEMPTS && is_transient(&err) => {
                tracing::warn!(
                    uri = %credential.uri,
                    attempt,
                    "credential fetch failed, retrying: {err}"
                );
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            Err(err) => {
                return Err(err).with_context(|| {
                    format!(
                        "failed to fetch credential {} after {attempt} attempts",
                        credential.uri
                    )
                })
            }
        }
    }
}

/// Outages may pass; a missing, denied or malformed resource will not.
fn is_transient(err: &HubError) -> bool {
    matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Internal)
}

fn write(credential: &Credential, content: &[u8]) -> Result<()> {
    let path = &credential.path;
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("failed to create directory {}", parent.display()))?;
    }
    common::fsutil::write_atomic(path, content, Some(0o600)).with_context(|| {
        format!(
            "failed to write credential {} to {}",
            credential.uri,
            path.display()
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::config::SealedSecretCheck;
    use crate::kbc::Kbc;
    use crate::offline::{OfflineFiles, OfflineStore};

    fn hub_with(dir: &std::path::Path, json: &str) -> Hub {
        let file = dir.join("resources.json");
        std::fs::write(&file, json).unwrap();
        let store = OfflineStore::load(&OfflineFiles {
            standard: vec![file],
            extra: vec![],
        })
        .unwrap();
        Hub::new(Kbc::OfflineFs(store), SealedSecretCheck::Skip)
    }

    fn credential(uri: &str, path: std::path::PathBuf) -> Credential {
        Credential {
            uri: uri.to_owned(),
            path,
        }
    }

    #[tokio::test]
    async fn writes_each_credential_with_mode_0600_and_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(dir.path(), r#"{"default/cred/a": "c2VjcmV0"}"#);
        let target = dir.path().join("cdh/nested/a.json");
        let statuses = RefCell::new(Vec::new());

        provision(
            &hub,
            &[credential("kbs:///default/cred/a", target.clone())],
            &|status, _| statuses.borrow_mut().push(status.to_owned()),
        )
        .await
        .unwrap();

        assert_eq!(std::fs::read(&target).unwrap(), b"secret");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            statuses.into_inner(),
            ["fetching credential kbs:///default/cred/a (attempt 1 of 5)"]
        );
    }

    #[tokio::test]
    async fn a_missing_resource_fails_at_once_naming_the_uri() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(dir.path(), "{}");
        let target = dir.path().join("b.json");
        let attempts = RefCell::new(0);

        let err = provision(
            &hub,
            &[credential("kbs:///default/cred/b", target.clone())],
            &|_, _| *attempts.borrow_mut() += 1,
        )
        .await
        .unwrap_err();

        assert!(
            format!("{err:#}").contains("kbs:///default/cred/b"),
            "{err:#}"
        );
        assert_eq!(*attempts.borrow(), 1);
        assert!(!target.exists());
    }
}
