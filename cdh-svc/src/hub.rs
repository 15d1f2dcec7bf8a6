//! The hub: the one implementation both transports call.

use std::sync::{Arc, RwLock};

use crate::config::SealedSecretCheck;
use crate::error::{ErrorKind, HubError};
use crate::kbc::Kbc;
use crate::sealed::{self, KeySource, SealedSecret};

/// What this build answers for image pulls and secure mounts.
const NOT_OFFERED: &str =
    "this build of the confidential data hub does not pull images or mount volumes";

/// Serves resources and unseals secrets through the KBC of the current configuration.
pub struct Hub {
    kbc: RwLock<Arc<Kbc>>,
    sealed_secret_check: SealedSecretCheck,
}

impl Hub {
    /// A hub serving through `kbc`, checking sealed secrets as `sealed_secret_check` says.
    pub fn new(kbc: Kbc, sealed_secret_check: SealedSecretCheck) -> Self {
        Self {
            kbc: RwLock::new(Arc::new(kbc)),
            sealed_secret_check,
        }
    }

    /// Swaps in the KBC of a reloaded configuration; requests in flight finish on the old one.
    pub fn replace_kbc(&self, kbc: Kbc) {
        match self.kbc.write() {
            Ok(mut current) => *current = Arc::new(kbc),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(kbc),
        }
    }

    /// A description of the current KBC.
    pub fn describe(&self) -> String {
        self.current().describe()
    }

    /// The resource a `kbs://` URI names.
    pub async fn get_resource(&self, uri: &str) -> Result<Vec<u8>, HubError> {
        tracing::debug!(uri, "get resource");
        let result = self.current().get_resource(uri).await;
        log_failure("get resource", &result);
        result
    }

    /// The secret a sealed secret points to.
    pub async fn unseal_secret(&self, sealed: &[u8]) -> Result<Vec<u8>, HubError> {
        tracing::debug!("unseal secret");
        let result = self.unseal(sealed).await;
        log_failure("unseal secret", &result);
        result
    }

    async fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, HubError> {
        let secret = SealedSecret::parse(sealed)?;
        let kbc = self.current();
        if let SealedSecretCheck::Verify { key_dir } = &self.sealed_secret_check {
            let key = match secret.key_source()? {
                KeySource::Resource(uri) => kbc.get_resource(&uri).await?,
                KeySource::LocalFile(name) => sealed::read_local_key(key_dir, &name)?,
            };
            secret.verify(&key)?;
        }
        kbc.get_resource(&secret.vault_resource_uri()?).await
    }

    /// Image pulls are not offered by this build.
    pub fn pull_image(&self) -> Result<(), HubError> {
        Err(HubError::new(ErrorKind::Unimplemented, NOT_OFFERED))
    }

    /// Secure mounts are not offered by this build.
    pub fn secure_mount(&self) -> Result<(), HubError> {
        Err(HubError::new(ErrorKind::Unimplemented, NOT_OFFERED))
    }

    fn current(&self) -> Arc<Kbc> {
        match self.kbc.read() {
            Ok(kbc) => Arc::clone(&kbc),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

fn log_failure<T>(what: &str, result: &Result<T, HubError>) {
    if let Err(err) = result {
        tracing::warn!(kind = ?err.kind(), "{what} failed: {err}");
    }
}
