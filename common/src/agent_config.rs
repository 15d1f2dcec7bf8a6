//! Reading and updating the kata-agent config while keeping its keys and comments.
//!
//! The file is edited as a TOML document, never through a typed struct, so keys this
//! crate does not know and every comment of the template survive an update.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml_edit::{DocumentMut, Item, TomlError, Value};
use tracing::info;

use crate::config_text::line_at;
use crate::fsutil::{read_to_string_if_exists, write_atomic};
use crate::kbc_params::{KbcParams, KbcParamsParseError};

/// Values `guest_components_procs` may take: which guest components the kata-agent spawns.
pub const GUEST_COMPONENTS_PROCS: [&str; 4] = [
    "none",
    "attestation-agent",
    "confidential-data-hub",
    "api-server-rest",
];
/// The kata-agent config shipped in the podvm image.
pub const DEFAULT_AGENT_CONFIG_PATH: &str = "/etc/agent-config.toml";
/// The daemon config the cloud-api-adaptor hands the podvm through user data.
pub const DEFAULT_DAEMON_CONFIG_PATH: &str = "/run/peerpod/daemon.json";
/// Where the registry auth from the daemon config is written.
pub const DEFAULT_AUTH_JSON_PATH: &str = "/run/peerpod/auth.json";

/// Top-level keys that must be strings when present.
const STRING_KEYS: [&str; 4] = [
    "aa_kbc_params",
    "guest_components_procs",
    "image_registry_auth_file",
    "server_addr",
];
/// What [`merge_agent_config`] copies from the source into the destination.
const MERGED_KEYS: [&str; 5] = [
    "aa_kbc_params",
    "guest_components_procs",
    "image_registry_auth_file",
    "server_addr",
    "endpoints",
];

/// Why a kata-agent config could not be read, updated or written.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// The config file could not be read.
    #[error("failed to read kata-agent config {path}", path = .path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The config file is not valid TOML.
    #[error("malformed kata-agent config {path} at {at}: {message}",
        path = .path.display(), at = line_text(*.line))]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// What the parser found wrong.
        message: String,
    },
    /// A key that must hold a string holds something else.
    #[error("{key} in kata-agent config {path} is not a string", path = .path.display())]
    NotAString {
        /// The config file.
        path: PathBuf,
        /// The offending key.
        key: &'static str,
    },
    /// `guest_components_procs` names no known set of guest components.
    #[error("guest_components_procs {value:?} in kata-agent config {path} is not one of {}",
        GUEST_COMPONENTS_PROCS.join(", "), path = .path.display())]
    InvalidProcs {
        /// The config file.
        path: PathBuf,
        /// The value found.
        value: String,
    },
    /// The updated config could not be written.
    #[error("failed to write kata-agent config {path}", path = .path.display())]
    Write {
        /// The destination file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The daemon config exists but could not be read.
    #[error("failed to read daemon config {path}", path = .path.display())]
    DaemonConfigRead {
        /// The daemon config file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The daemon config is not the JSON object expected.
    #[error("malformed daemon config {path}: {message}", path = .path.display())]
    DaemonConfigParse {
        /// The daemon config file.
        path: PathBuf,
        /// What the parser found wrong; it never quotes the file.
        message: String,
    },
    /// The daemon config's `aa-kbc-params` is not `<kbc>::<url>`.
    #[error("malformed aa-kbc-params {value:?} in daemon config {path}: {reason}",
        path = .path.display())]
    DaemonKbcParams {
        /// The daemon config file.
        path: PathBuf,
        /// The value found.
        value: String,
        /// What is wrong with it.
        reason: KbcParamsParseError,
    },
    /// The daemon config's `auth-json` does not hold JSON.
    #[error("auth-json in daemon config {path} is not valid JSON: {message}",
        path = .path.display())]
    AuthJsonInvalid {
        /// The daemon config file.
        path: PathBuf,
        /// Where the JSON breaks; never the content, which holds credentials.
        message: String,
    },
    /// The registry auth file must be absolute to become a `file://` URL.
    #[error("registry auth file {path} is not an absolute path", path = .path.display())]
    AuthPathNotAbsolute {
        /// The configured path.
        path: PathBuf,
    },
    /// The registry auth file could not be written.
    #[error("failed to write registry auth file {path}", path = .path.display())]
    AuthWrite {
        /// The auth file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Renders an optional line number for an error message.
fn line_text(line: Option<usize>) -> String {
    match line {
        Some(line) => format!("line {line}"),
        None => "an unknown line".to_owned(),
    }
}

/// A parsed kata-agent config, validated, that keeps the layout of its file.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    path: PathBuf,
    doc: DocumentMut,
}

impl AgentConfig {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Self, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Reads and validates the config at `path`, or `None` when there is no such file.
    pub fn load_if_exists(path: &Path) -> Result<Option<Self>, AgentConfigError> {
        let text = read_to_string_if_exists(path).map_err(|source| AgentConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        text.map(|text| Self::parse(&text, path)).transpose()
    }

    /// Parses and validates config text; `path` only names the text in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AgentConfigError> {
        let doc: DocumentMut = text
            .parse()
            .map_err(|err: TomlError| AgentConfigError::Parse {
                path: path.to_owned(),
                line: err.span().map(|span| line_at(text, span.start)),
                message: err.message().trim_end().to_owned(),
            })?;
        let config = Self {
            path: path.to_owned(),
            doc,
        };
        config.validate()?;
        Ok(config)
    }

    /// The file this config was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `aa_kbc_params` value, if set.
    pub fn aa_kbc_params(&self) -> Option<&str> {
        self.string("aa_kbc_params")
    }

    /// The `guest_components_procs` value, if set.
    pub fn guest_components_procs(&self) -> Option<&str> {
        self.string("guest_components_procs")
    }

    /// The `image_registry_auth_file` value, if set.
    pub fn image_registry_auth_file(&self) -> Option<&str> {
        self.string("image_registry_auth_file")
    }

    /// Sets `aa_kbc_params`, keeping the comments around the key.
    pub fn set_aa_kbc_params(&mut self, params: &KbcParams) {
        self.set_string("aa_kbc_params", &params.to_string());
    }

    /// Sets `image_registry_auth_file`, keeping the comments around the key.
    pub fn set_image_registry_auth_file(&mut self, url: &str) {
        self.set_string("image_registry_auth_file", url);
    }

    /// Writes the config atomically to `destination`, keeping that file's mode if it exists.
    pub fn write(&self, destination: &Path) -> Result<(), AgentConfigError> {
        write_atomic(destination, self.doc.to_string().as_bytes(), None).map_err(|source| {
            AgentConfigError::Write {
                path: destination.to_owned(),
                source,
            }
        })
    }

    /// Checks what the kata-agent would refuse: non-string values and unknown procs.
    fn validate(&self) -> Result<(), AgentConfigError> {
        for key in STRING_KEYS {
            if let Some(item) = self.doc.get(key) {
                if item.as_str().is_none() {
                    return Err(AgentConfigError::NotAString {
                        path: self.path.clone(),
                        key,
                    });
                }
            }
        }
        match self.guest_components_procs() {
            Some(procs) if !GUEST_COMPONENTS_PROCS.contains(&procs) => {
                Err(AgentConfigError::InvalidProcs {
                    path: self.path.clone(),
                    value: procs.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    fn string(&self, key: &str) -> Option<&str> {
        self.doc.get(key).and_then(Item::as_str)
    }

    /// Replaces a top-level value; the key's own decor holds the comments above it.
    fn set_string(&mut self, key: &str, value: &str) {
        let mut new = Value::from(value);
        if let Some(old) = self.doc.get(key).and_then(Item::as_value) {
            *new.decor_mut() = old.decor().clone();
        }
        self.doc[key] = Item::Value(new);
    }
}

impl fmt::Display for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.doc)
    }
}

/// What the podvm learns at boot from the cloud-api-adaptor's `daemon.json`.
///
/// Only the keys that concern the kata-agent config are read; the rest of the file
/// (network, TLS keys) is ignored. No `Debug`: `auth_json` holds credentials.
#[derive(Deserialize)]
struct DaemonConfig {
    #[serde(rename = "aa-kbc-params", default)]
    aa_kbc_params: Option<String>,
    #[serde(rename = "auth-json", default)]
    auth_json: Option<String>,
}

impl DaemonConfig {
    /// Reads the daemon config, or `None` when the podvm got none.
    fn load_if_exists(path: &Path) -> Result<Option<Self>, AgentConfigError> {
        let text = read_to_string_if_exists(path).map_err(|source| {
            AgentConfigError::DaemonConfigRead {
                path: path.to_owned(),
                source,
            }
        })?;
        text.map(|text| {
            serde_json::from_str(&text).map_err(|err| AgentConfigError::DaemonConfigParse {
                path: path.to_owned(),
                message: err.to_string(),
            })
        })
        .transpose()
    }
}

/// One run of `process-user-data update-agent-config`: template plus daemon config.
#[derive(Debug, Clone)]
pub struct AgentConfigUpdate {
    /// The kata-agent config template to start from.
    pub template: PathBuf,
    /// The daemon config carrying `aa-kbc-params` and `auth-json`.
    pub daemon_config: PathBuf,
    /// Where the updated config goes; the template itself to update in place.
    pub destination: PathBuf,
    /// Where `auth-json` is written for the kata-agent to read.
    pub auth_json: PathBuf,
}

impl AgentConfigUpdate {
    /// Applies the daemon config to the template and writes the result to the destination.
    ///
    /// A key absent or empty in the daemon config leaves the template's value. Without a
    /// daemon config the template is written unchanged, so the destination always exists
    /// for the kata-agent. An `auth-json` is written, mode 0600, only when no auth file
    /// exists yet: one provisioned directly from user data takes precedence.
    pub fn run(&self) -> Result<(), AgentConfigError> {
        let mut config = AgentConfig::load(&self.template)?;

        match DaemonConfig::load_if_exists(&self.daemon_config)? {
            Some(daemon) => self.apply(&daemon, &mut config)?,
            None => info!(
                daemon_config = %self.daemon_config.display(),
                "no daemon config, kata-agent config keeps the template values"
            ),
        }

        config.write(&self.destination)?;
        info!(destination = %self.destination.display(), "kata-agent config written");
        Ok(())
    }

    fn apply(
        &self,
        daemon: &DaemonConfig,
        config: &mut AgentConfig,
    ) -> Result<(), AgentConfigError> {
        if let Some(value) = non_empty(&daemon.aa_kbc_params) {
            let params: KbcParams =
                value
                    .parse()
                    .map_err(|reason| AgentConfigError::DaemonKbcParams {
                        path: self.daemon_config.clone(),
                        value: value.to_owned(),
                        reason,
                    })?;
            info!(aa_kbc_params = %params, "aa_kbc_params set from daemon config");
            config.set_aa_kbc_params(&params);
        }

        if let Some(auth) = non_empty(&daemon.auth_json) {
            self.write_auth_file(auth)?;
            let url = format!("file://{}", self.auth_json.display());
            info!(image_registry_auth_file = %url, "registry auth set from daemon config");
            config.set_image_registry_auth_file(&url);
        }
        Ok(())
    }

    /// Writes the registry auth file unless one is already there.
    fn write_auth_file(&self, auth: &str) -> Result<(), AgentConfigError> {
        serde_json::from_str::<serde_json::Value>(auth).map_err(|err| {
            AgentConfigError::AuthJsonInvalid {
                path: self.daemon_config.clone(),
                message: err.to_string(),
            }
        })?;
        if !self.auth_json.is_absolute() {
            return Err(AgentConfigError::AuthPathNotAbsolute {
                path: self.auth_json.clone(),
            });
        }

        if std::fs::symlink_metadata(&self.auth_json).is_ok() {
            let auth_file = self.auth_json.display();
            info!(%auth_file, "registry auth file already provisioned, kept");
            return Ok(());
        }
        write_atomic(&self.auth_json, auth.as_bytes(), Some(0o600)).map_err(|source| {
            AgentConfigError::AuthWrite {
                path: self.auth_json.clone(),
                source,
            }
        })
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|value| !value.is_empty())
}

/// Copies `aa_kbc_params`, `guest_components_procs`, `image_registry_auth_file`,
/// `server_addr` and `[endpoints]` from `source` into `destination`, in place.
///
/// Every other key of the destination, and its comments, stay; a key absent from the
/// source leaves the destination's value.
pub fn merge_agent_config(source: &Path, destination: &Path) -> Result<(), AgentConfigError> {
    let source = AgentConfig::load(source)?;
    let mut merged = AgentConfig::load(destination)?;

    for key in MERGED_KEYS {
        let Some(item) = source.doc.get(key) else {
            continue;
        };
        let mut item = item.clone();
        match (&mut item, merged.doc.get(key)) {
            (Item::Value(new), Some(Item::Value(old))) => *new.decor_mut() = old.decor().clone(),
            (Item::Table(new), Some(Item::Table(old))) => {
                *new.decor_mut() = old.decor().clone();
                if let Some(position) = old.position() {
                    new.set_position(position);
                }
            }
            _ => {}
        }
        merged.doc[key] = item;
    }

    merged.validate()?;
    merged.write(destination)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_support::{entries, mode_of};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use tempfile::TempDir;

    const TEMPLATE: &str = r#"# Signature checks are done elsewhere.
enable_signature_verification = false

# The agent listens here.
server_addr = "vsock://-1:1024"

# Replaced at boot from daemon.json.
aa_kbc_params = ""  # trailing note

# Registry credentials.
image_registry_auth_file = "file:///etc/attestation-agent/auth.json"

# Guest components run as systemd services.
guest_components_procs = "none"

# A key this crate does not know.
dev_mode = true

# Calls the agent accepts.
[endpoints]
allowed = [
"CreateContainerRequest",
"PullImageRequest",
]
"#;

    struct Setup {
        dir: TempDir,
        template: PathBuf,
    }

    impl Setup {
        fn new(template: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("agent-config.toml");
            fs::write(&path, template).unwrap();
            Self {
                dir,
                template: path,
            }
        }

        fn update(&self, daemon_json: Option<&str>, destination: &Path) -> AgentConfigUpdate {
            let daemon_config = self.dir.path().join("daemon.json");
            if let Some(json) = daemon_json {
                fs::write(&daemon_config, json).unwrap();
            }
            AgentConfigUpdate {
                template: self.template.clone(),
                daemon_config,
                destination: destination.to_owned(),
                auth_json: self.dir.path().join("auth.json"),
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn entries(&self) -> Vec<String> {
            entries(self.dir.path())
        }
    }

    /// Every comment line of the template, to check none is lost.
    fn comments(text: &str) -> Vec<&str> {
        text.lines().filter(|line| line.starts_with('#')).collect()
    }

    #[test]
    fn template_parses_and_exposes_values() {
        let config = AgentConfig::parse(TEMPLATE, Path::new("t.toml")).unwrap();
        assert_eq!(config.aa_kbc_params(), Some(""));
        assert_eq!(config.guest_components_procs(), Some("none"));
        assert_eq!(
            config.image_registry_auth_file(),
            Some("file:///etc/attestation-agent/auth.json")
        );
        assert_eq!(config.to_string(), TEMPLATE);
    }

    #[test]
    fn every_known_procs_value_is_accepted() {
        for procs in GUEST_COMPONENTS_PROCS {
            let text = format!("guest_components_procs = \"{procs}\"\n");
            let config = AgentConfig::parse(&text, Path::new("t.toml")).unwrap();
            assert_eq!(config.guest_components_procs(), Some(procs));
        }
    }

    #[test]
    fn invalid_procs_is_rejected_naming_file_and_value() {
        let err = AgentConfig::parse(
            "guest_components_procs = \"everything\"\n",
            Path::new("/etc/agent-config.toml"),
        )
        .unwrap_err();
        assert!(
            matches!(&err, AgentConfigError::InvalidProcs { value, .. } if value == "everything")
        );
        let message = err.to_string();
        assert!(message.contains("/etc/agent-config.toml"), "{message}");
        assert!(message.contains("\"everything\""), "{message}");
        assert!(message.contains("api-server-rest"), "{message}");
    }

    #[test]
    fn non_string_values_are_rejected() {
        let err = AgentConfig::parse("aa_kbc_params = 5\n", Path::new("a.toml")).unwrap_err();
        assert!(matches!(
            err,
            AgentConfigError::NotAString {
                key: "aa_kbc_params",
                ..
            }
        ));
    }

    #[test]
    fn syntax_errors_name_path_and_line() {
        let err =
            AgentConfig::parse("a = 1\nb = 2\nc = = 3\n", Path::new("/x/agent.toml")).unwrap_err();
        assert!(matches!(err, AgentConfigError::Parse { line: Some(3), .. }));
        let message = err.to_string();
        assert!(message.starts_with("malformed kata-agent config /x/agent.toml at line 3"));
    }

    #[test]
    fn daemon_config_updates_values_and_keeps_everything_else() {
        let setup = Setup::new(TEMPLATE);
        let destination = setup.path("out.toml");
        let daemon = r#"{"pod-name": "p", "aa-kbc-params": "cc_kbc::http://10.0.0.2:8080",
            "auth-json": "{\"auths\": {}}"}"#;

        setup.update(Some(daemon), &destination).run().unwrap();

        let written = fs::read_to_string(&destination).unwrap();
        let config = AgentConfig::parse(&written, &destination).unwrap();
        assert_eq!(config.aa_kbc_params(), Some("cc_kbc::http://10.0.0.2:8080"));
        let auth_path = setup.path("auth.json");
        assert_eq!(
            config.image_registry_auth_file(),
            Some(format!("file://{}", auth_path.display()).as_str())
        );
        assert_eq!(config.guest_components_procs(), Some("none"));
        assert_eq!(comments(&written), comments(TEMPLATE));
        assert!(
            written.contains("aa_kbc_params = \"cc_kbc::http://10.0.0.2:8080\"  # trailing note")
        );
        assert!(written.contains("dev_mode = true"));
        assert!(written.contains("server_addr = \"vsock://-1:1024\""));
        assert!(written.contains(
            "[endpoints]\nallowed = [\n\"CreateContainerRequest\",\n\"PullImageRequest\",\n]"
        ));
        assert_eq!(fs::read_to_string(&setup.template).unwrap(), TEMPLATE);

        assert_eq!(fs::read_to_string(&auth_path).unwrap(), "{\"auths\": {}}");
        assert_eq!(mode_of(&auth_path), 0o600);
        assert_eq!(mode_of(&destination), 0o644);
        assert_eq!(
            setup.entries(),
            vec!["agent-config.toml", "auth.json", "daemon.json", "out.toml"]
        );
    }

    #[test]
    fn in_place_update_keeps_the_file_mode() {
        let setup = Setup::new(TEMPLATE);
        fs::set_permissions(&setup.template, fs::Permissions::from_mode(0o640)).unwrap();

        setup
            .update(
                Some(r#"{"aa-kbc-params": "cc_kbc::http://kbs"}"#),
                &setup.template,
            )
            .run()
            .unwrap();

        let config = AgentConfig::load(&setup.template).unwrap();
        assert_eq!(config.aa_kbc_params(), Some("cc_kbc::http://kbs"));
        assert_eq!(mode_of(&setup.template), 0o640);
        assert_eq!(setup.entries(), vec!["agent-config.toml", "daemon.json"]);
    }

    #[test]
    fn absent_and_empty_keys_leave_template_values() {
        let setup = Setup::new(TEMPLATE);
        let destination = setup.path("out.toml");

        setup
            .update(
                Some(r#"{"aa-kbc-params": "", "pod-name": "p"}"#),
                &destination,
            )
            .run()
            .unwrap();

        assert_eq!(fs::read_to_string(&destination).unwrap(), TEMPLATE);
        assert!(!setup.path("auth.json").exists());
    }

    #[test]
    fn missing_daemon_config_copies_the_template() {
        let setup = Setup::new(TEMPLATE);
        let destination = setup.path("out.toml");

        setup.update(None, &destination).run().unwrap();

        assert_eq!(fs::read_to_string(&destination).unwrap(), TEMPLATE);
    }

    #[test]
    fn existing_auth_file_is_kept() {
        let setup = Setup::new(TEMPLATE);
        let auth_path = setup.path("auth.json");
        fs::write(&auth_path, "{\"provisioned\": true}").unwrap();
        let destination = setup.path("out.toml");

        setup
            .update(Some(r#"{"auth-json": "{\"auths\": {}}"}"#), &destination)
            .run()
            .unwrap();

        assert_eq!(
            fs::read_to_string(&auth_path).unwrap(),
            "{\"provisioned\": true}"
        );
        let config = AgentConfig::load(&destination).unwrap();
        assert_eq!(
            config.image_registry_auth_file(),
            Some(format!("file://{}", auth_path.display()).as_str())
        );
    }

    #[test]
    fn bad_daemon_config_fails_without_writing() {
        let cases = [
            ("{not json", "malformed daemon config"),
            (
                r#"{"aa-kbc-params": "a::b::c"}"#,
                "malformed aa-kbc-params \"a::b::c\"",
            ),
            (
                r#"{"auth-json": "{\"secret-token\": "}"#,
                "auth-json in daemon config",
            ),
        ];
        for (daemon, expected) in cases {
            let setup = Setup::new(TEMPLATE);
            let destination = setup.path("out.toml");

            let err = setup.update(Some(daemon), &destination).run().unwrap_err();

            let message = err.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("daemon.json"), "{message}");
            assert!(!message.contains("secret-token"), "{message}");
            assert_eq!(setup.entries(), vec!["agent-config.toml", "daemon.json"]);
        }
    }

    #[test]
    fn invalid_template_fails_without_writing() {
        let setup = Setup::new("guest_components_procs = \"all\"\n");
        let destination = setup.path("out.toml");

        let err = setup.update(None, &destination).run().unwrap_err();

        assert!(matches!(err, AgentConfigError::InvalidProcs { .. }));
        assert_eq!(setup.entries(), vec!["agent-config.toml"]);
    }

    #[test]
    fn failed_write_leaves_no_temp_file() {
        let setup = Setup::new(TEMPLATE);
        // A directory in the way makes the final rename fail.
        let destination = setup.path("out.toml");
        fs::create_dir(&destination).unwrap();
        fs::write(destination.join("keep"), "x").unwrap();

        let err = setup.update(None, &destination).run().unwrap_err();

        assert!(matches!(&err, AgentConfigError::Write { path, .. } if *path == destination));
        assert_eq!(setup.entries(), vec!["agent-config.toml", "out.toml"]);
    }

    #[test]
    fn merge_copies_listed_keys_and_keeps_destination_comments() {
        let setup = Setup::new(TEMPLATE);
        let source = setup.path("source.toml");
        fs::write(
            &source,
            "server_addr = \"unix:///run/kata.sock\"\naa_kbc_params = \"cc_kbc::http://src\"\n\
             other = \"not copied\"\n[endpoints]\nallowed = [\"GetGuestDetailsRequest\"]\n",
        )
        .unwrap();

        merge_agent_config(&source, &setup.template).unwrap();

        let merged = fs::read_to_string(&setup.template).unwrap();
        let config = AgentConfig::parse(&merged, &setup.template).unwrap();
        assert_eq!(config.aa_kbc_params(), Some("cc_kbc::http://src"));
        assert_eq!(config.guest_components_procs(), Some("none"));
        assert!(merged.contains("server_addr = \"unix:///run/kata.sock\""));
        assert!(merged.contains("allowed = [\"GetGuestDetailsRequest\"]"));
        assert!(!merged.contains("CreateContainerRequest"));
        assert!(!merged.contains("not copied"));
        assert!(merged.contains("dev_mode = true"));
        assert_eq!(comments(&merged), comments(TEMPLATE));
        assert_eq!(setup.entries(), vec!["agent-config.toml", "source.toml"]);
    }
}
