//! The offline_fs KBC: resources from local JSON files mapping `repo/type/tag` to base64.
//!
//! The key file and the resource file share one format and one namespace, as upstream's:
//! a key is fetched as `kbs:///default/key/1` like any other resource.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::kbs::ResourcePath;

use crate::error::{ErrorKind, HubError};

/// The resource files to load, in order; a later file overrides an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineFiles {
    /// The standard files; a missing one is normal (a podvm may ship none).
    pub standard: Vec<PathBuf>,
    /// Files named explicitly (`OFFLINE_FS_KBC_EXTRA_FILE_PATH`); a missing one is an error.
    pub extra: Vec<PathBuf>,
}

/// Resources loaded once from the offline files, keyed by `repo/type/tag`.
#[derive(Default)]
pub struct OfflineStore {
    resources: HashMap<String, Vec<u8>>,
}

impl OfflineStore {
    /// Reads every file of `files`; any malformed file fails the whole load.
    pub fn load(files: &OfflineFiles) -> Result<Self> {
        let mut store = Self::default();
        for path in &files.standard {
            match std::fs::read(path) {
                Ok(bytes) => store.add_file(path, &bytes)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!(path = %path.display(), "offline resource file absent");
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("failed to read {}", path.display()))
                }
            }
        }
        for path in &files.extra {
            let bytes = std::fs::read(path).with_context(|| {
                format!("failed to read offline resource file {}", path.display())
            })?;
            store.add_file(path, &bytes)?;
        }
        Ok(store)
    }

    /// How many resources are loaded.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// The resource at `path`, or NOT_FOUND naming `uri`.
    pub fn get(&self, path: &ResourcePath, uri: &str) -> Result<Vec<u8>, HubError> {
        self.resources
            .get(&path.to_string())
            .cloned()
            .ok_or_else(|| {
                HubError::new(
                    ErrorKind::NotFound,
                    format!("resource {uri} not found in the offline resource files"),
                )
            })
    }

    fn add_file(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let entries: HashMap<String, String> =
            serde_json::from_slice(bytes).with_context(|| {
                format!(
                    "offline resource file {} is not a JSON object of base64 strings",
                    path.display()
                )
            })?;
        for (key, value) in entries {
            let resource = ResourcePath::parse(&key).with_context(|| {
                format!(
                    "offline resource file {}: bad resource path {key:?}",
                    path.display()
                )
            })?;
            // The value is secret: name the key, never echo the content.
            let content = STANDARD.decode(value.trim()).map_err(|_| {
                anyhow::anyhow!(
                    "offline resource file {}: value of {key:?} is not valid base64",
                    path.display()
                )
            })?;
            if self
                .resources
                .insert(resource.to_string(), content)
                .is_some()
            {
                tracing::warn!(
                    path = %path.display(),
                    resource = %resource,
                    "offline resource defined again, the later definition wins"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn get(store: &OfflineStore, path: &str) -> Result<Vec<u8>, HubError> {
        store.get(&ResourcePath::parse(path).unwrap(), path)
    }

    #[test]
    fn loads_standard_and_extra_files_later_wins() {
        let dir = tempfile::tempdir().unwrap();
        let keys = write(dir.path(), "keys.json", r#"{"default/key/1": "a2V5MQ=="}"#);
        let resources = write(
            dir.path(),
            "resources.json",
            r#"{"default/cfg/a": "YQ==", "default/key/1": "b3ZlcnJpZGRlbg=="}"#,
        );
        let extra = write(dir.path(), "extra.json", r#"{"other/x/y": "eHk="}"#);
        let files = OfflineFiles {
            standard: vec![keys, resources, dir.path().join("absent.json")],
            extra: vec![extra],
        };

        let store = OfflineStore::load(&files).unwrap();

        assert_eq!(store.len(), 3);
        assert_eq!(get(&store, "default/key/1").unwrap(), b"overridden");
        assert_eq!(get(&store, "default/cfg/a").unwrap(), b"a");
        assert_eq!(get(&store, "other/x/y").unwrap(), b"xy");
        let missing = get(&store, "default/key/2").unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert!(missing.to_string().contains("default/key/2"));
    }

    #[test]
    fn missing_extra_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = OfflineFiles {
            standard: vec![],
            extra: vec![dir.path().join("nope.json")],
        };
        let err = format!("{:#}", OfflineStore::load(&files).err().unwrap());
        assert!(err.contains("nope.json"), "{err}");
    }

    #[test]
    fn bad_base64_names_file_and_key_not_value() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(dir.path(), "bad.json", r#"{"default/key/1": "sec!ret"}"#);
        let files = OfflineFiles {
            standard: vec![bad],
            extra: vec![],
        };
        let err = format!("{:#}", OfflineStore::load(&files).err().unwrap());
        assert!(
            err.contains("bad.json") && err.contains("default/key/1"),
            "{err}"
        );
        assert!(!err.contains("sec!ret"), "{err}");
    }

    #[test]
    fn malformed_json_and_bad_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("array.json", "[1, 2]"),
            ("traversal.json", r#"{"default/../x": "YQ=="}"#),
        ] {
            let files = OfflineFiles {
                standard: vec![write(dir.path(), name, text)],
                extra: vec![],
            };
            let err = format!("{:#}", OfflineStore::load(&files).err().unwrap());
            assert!(err.contains(name), "{err}");
        }
    }
}
