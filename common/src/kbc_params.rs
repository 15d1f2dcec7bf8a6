//! `aa_kbc_params`: parsing and resolution across config, env, kata-agent config and cmdline.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::agent_config::{AgentConfig, AgentConfigError, DEFAULT_AGENT_CONFIG_PATH};
use crate::fsutil::read_to_string_if_exists;

/// Environment variable that overrides the kata-agent config's `aa_kbc_params`.
pub const AA_KBC_PARAMS_ENV: &str = "AA_KBC_PARAMS";
/// Environment variable naming the kata-agent config file.
pub const KATA_AGENT_CONFIG_PATH_ENV: &str = "KATA_AGENT_CONFIG_PATH";
/// The kernel command line of the running system.
pub const DEFAULT_CMDLINE_PATH: &str = "/proc/cmdline";
/// The kernel command line parameter carrying `aa_kbc_params`.
pub const CMDLINE_KEY: &str = "agent.aa_kbc_params";

/// A KBC name and the URL of its KBS, as written `<kbc>::<url>`.
///
/// The URL must not be empty: a KBC without a KBS writes `null`, as in
/// `offline_fs_kbc::null`, so an empty URL is always a mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbcParams {
    /// The KBC name, such as `cc_kbc` or `offline_fs_kbc`.
    pub kbc: String,
    /// The KBS URL, or `null` for a KBC that needs none.
    pub url: String,
}

/// Why an `aa_kbc_params` value is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KbcParamsParseError {
    /// The value has no `::` at all.
    #[error("expected <kbc>::<url> but found no '::'")]
    MissingSeparator,
    /// The value has a second `::` outside an IPv6 address in brackets.
    #[error("more than one '::' separator")]
    ExtraSeparator,
    /// Nothing before the `::`.
    #[error("empty kbc name")]
    EmptyKbc,
    /// The KBC name has characters no KBC name has.
    #[error("kbc name may only hold letters, digits, '_' and '-'")]
    InvalidKbc,
    /// Nothing after the `::`.
    #[error("empty url (a kbc without a kbs takes 'null')")]
    EmptyUrl,
}

impl FromStr for KbcParams {
    type Err = KbcParamsParseError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (kbc, url) = value
            .split_once("::")
            .ok_or(KbcParamsParseError::MissingSeparator)?;

        if kbc.is_empty() {
            return Err(KbcParamsParseError::EmptyKbc);
        }
        if !kbc
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(KbcParamsParseError::InvalidKbc);
        }
        if url.is_empty() {
            return Err(KbcParamsParseError::EmptyUrl);
        }
        if without_bracketed(url).contains("::") {
            return Err(KbcParamsParseError::ExtraSeparator);
        }

        Ok(Self {
            kbc: kbc.to_owned(),
            url: url.to_owned(),
        })
    }
}

impl Default for KbcParams {
    /// `offline_fs_kbc::null`: with nothing configured, resources come from the local file.
    fn default() -> Self {
        Self {
            kbc: "offline_fs_kbc".to_owned(),
            url: "null".to_owned(),
        }
    }
}

impl fmt::Display for KbcParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.kbc, self.url)
    }
}

/// The URL with every `[...]` part dropped, so an IPv6 host like `[::1]` is not a separator.
fn without_bracketed(url: &str) -> String {
    let mut depth = 0usize;
    url.chars()
        .filter(|&c| match c {
            '[' => {
                depth += 1;
                false
            }
            ']' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect()
}

/// Where a resolved `aa_kbc_params` value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KbcParamsSource {
    /// The service's own config file.
    ServiceConfig(PathBuf),
    /// The `AA_KBC_PARAMS` environment variable.
    Env,
    /// The kata-agent config file.
    AgentConfig(PathBuf),
    /// The kernel command line file.
    KernelCmdline(PathBuf),
    /// Nothing was configured.
    Default,
}

impl fmt::Display for KbcParamsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceConfig(path) => write!(f, "config file {}", path.display()),
            Self::Env => write!(f, "environment variable {AA_KBC_PARAMS_ENV}"),
            Self::AgentConfig(path) => write!(f, "kata-agent config {}", path.display()),
            Self::KernelCmdline(path) => write!(f, "kernel command line {}", path.display()),
            Self::Default => f.write_str("built-in default"),
        }
    }
}

/// An `aa_kbc_params` value together with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKbcParams {
    /// The parsed value.
    pub params: KbcParams,
    /// Where it was found.
    pub source: KbcParamsSource,
}

/// Why `aa_kbc_params` could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum KbcParamsError {
    /// A source held a value that is not `<kbc>::<url>`.
    #[error("malformed aa_kbc_params {value:?} from {origin}: {reason}")]
    Malformed {
        /// Where the value came from.
        origin: KbcParamsSource,
        /// The value as found.
        value: String,
        /// What is wrong with it.
        reason: KbcParamsParseError,
    },
    /// `KATA_AGENT_CONFIG_PATH` names a file that does not exist.
    #[error("kata-agent config {path} named by {KATA_AGENT_CONFIG_PATH_ENV} does not exist",
        path = .path.display())]
    AgentConfigMissing {
        /// The missing file.
        path: PathBuf,
    },
    /// The kata-agent config could not be read or is invalid.
    #[error(transparent)]
    AgentConfig(#[from] AgentConfigError),
    /// The kernel command line exists but could not be read.
    #[error("failed to read kernel command line {path}", path = .path.display())]
    Cmdline {
        /// The cmdline file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The inputs of `aa_kbc_params` resolution, captured once so tests never touch the process env.
#[derive(Debug, Clone)]
pub struct KbcParamsResolver {
    env_value: Option<String>,
    agent_config_path: PathBuf,
    agent_config_explicit: bool,
    cmdline_path: PathBuf,
}

impl Default for KbcParamsResolver {
    /// No `AA_KBC_PARAMS`, the default kata-agent config path, and `/proc/cmdline`.
    fn default() -> Self {
        Self {
            env_value: None,
            agent_config_path: PathBuf::from(DEFAULT_AGENT_CONFIG_PATH),
            agent_config_explicit: false,
            cmdline_path: PathBuf::from(DEFAULT_CMDLINE_PATH),
        }
    }
}

impl KbcParamsResolver {
    /// Captures `AA_KBC_PARAMS`, `KATA_AGENT_CONFIG_PATH` and `/proc/cmdline` of this process.
    pub fn from_env() -> Self {
        let env_value =
            std::env::var_os(AA_KBC_PARAMS_ENV).map(|value| value.to_string_lossy().into_owned());
        let resolver = Self::default().with_env_value(env_value);
        match std::env::var_os(KATA_AGENT_CONFIG_PATH_ENV) {
            Some(path) if !path.is_empty() => resolver.with_agent_config_path(PathBuf::from(path)),
            _ => resolver,
        }
    }

    /// Sets the `AA_KBC_PARAMS` value seen by the resolver.
    pub fn with_env_value(mut self, value: Option<String>) -> Self {
        self.env_value = value;
        self
    }

    /// Sets the kata-agent config as if named by `KATA_AGENT_CONFIG_PATH`: it must exist.
    pub fn with_agent_config_path(mut self, path: PathBuf) -> Self {
        self.agent_config_path = path;
        self.agent_config_explicit = true;
        self
    }

    /// Sets the kata-agent config as if it were the built-in default: skipped when absent.
    pub fn with_default_agent_config_path(mut self, path: PathBuf) -> Self {
        self.agent_config_path = path;
        self.agent_config_explicit = false;
        self
    }

    /// Sets the file read as the kernel command line.
    pub fn with_cmdline_path(mut self, path: PathBuf) -> Self {
        self.cmdline_path = path;
        self
    }

    /// Resolves `aa_kbc_params`, given the service's own config value and that config's path.
    ///
    /// The first non-empty value wins: service config, env, kata-agent config, kernel
    /// command line, then the default `offline_fs_kbc::null`.
    pub fn resolve(
        &self,
        service_value: Option<(&str, &Path)>,
    ) -> Result<ResolvedKbcParams, KbcParamsError> {
        if let Some((value, path)) = service_value {
            if let Some(found) =
                parse_if_set(value, || KbcParamsSource::ServiceConfig(path.to_owned()))?
            {
                return Ok(found);
            }
        }

        if let Some(value) = &self.env_value {
            if let Some(found) = parse_if_set(value, || KbcParamsSource::Env)? {
                return Ok(found);
            }
        }

        if let Some(value) = self.agent_config_value()? {
            let source = || KbcParamsSource::AgentConfig(self.agent_config_path.clone());
            if let Some(found) = parse_if_set(&value, source)? {
                return Ok(found);
            }
        }

        if let Some(value) = self.cmdline_value()? {
            let source = || KbcParamsSource::KernelCmdline(self.cmdline_path.clone());
            if let Some(found) = parse_if_set(&value, source)? {
                return Ok(found);
            }
        }

        Ok(ResolvedKbcParams {
            params: KbcParams::default(),
            source: KbcParamsSource::Default,
        })
    }

    /// The kata-agent config's `aa_kbc_params`, if the file exists and sets it.
    fn agent_config_value(&self) -> Result<Option<String>, KbcParamsError> {
        let path = &self.agent_config_path;
        match AgentConfig::load_if_exists(path)? {
            Some(config) => Ok(config.aa_kbc_params().map(str::to_owned)),
            None if self.agent_config_explicit => {
                Err(KbcParamsError::AgentConfigMissing { path: path.clone() })
            }
            // A podvm image without a kata-agent config at the default path is normal.
            None => Ok(None),
        }
    }

    /// The last `agent.aa_kbc_params=` on the kernel command line, as the kernel lets later win.
    fn cmdline_value(&self) -> Result<Option<String>, KbcParamsError> {
        let cmdline = read_to_string_if_exists(&self.cmdline_path).map_err(|source| {
            KbcParamsError::Cmdline {
                path: self.cmdline_path.clone(),
                source,
            }
        })?;
        let prefix = format!("{CMDLINE_KEY}=");
        Ok(cmdline.and_then(|cmdline| {
            cmdline
                .split_whitespace()
                .filter_map(|param| param.strip_prefix(&prefix))
                .next_back()
                .map(str::to_owned)
        }))
    }
}

/// Parses a value from one source; an empty value is unset and yields `None`.
fn parse_if_set(
    value: &str,
    source: impl FnOnce() -> KbcParamsSource,
) -> Result<Option<ResolvedKbcParams>, KbcParamsError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse() {
        Ok(params) => Ok(Some(ResolvedKbcParams {
            params,
            source: source(),
        })),
        Err(reason) => Err(KbcParamsError::Malformed {
            origin: source(),
            value: value.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;
    use tempfile::TempDir;

    /// A resolver whose every input lives in a temp dir, with nothing set.
    fn isolated(dir: &TempDir) -> KbcParamsResolver {
        KbcParamsResolver::default()
            .with_default_agent_config_path(dir.path().join("agent-config.toml"))
            .with_cmdline_path(dir.path().join("cmdline"))
    }

    fn write_agent_config(dir: &TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("agent-config.toml");
        fs::write(&path, text).unwrap();
        path
    }

    fn write_cmdline(dir: &TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("cmdline");
        fs::write(&path, text).unwrap();
        path
    }

    /// An isolated resolver with the env, the kata-agent config and the cmdline all set.
    fn every_source_set(dir: &TempDir) -> KbcParamsResolver {
        let agent = write_agent_config(dir, "aa_kbc_params = \"cc_kbc::http://agent\"\n");
        write_cmdline(dir, "agent.aa_kbc_params=cc_kbc::http://cmdline\n");
        isolated(dir)
            .with_env_value(Some("cc_kbc::http://env".into()))
            .with_agent_config_path(agent)
    }

    fn params(kbc: &str, url: &str) -> KbcParams {
        KbcParams {
            kbc: kbc.to_owned(),
            url: url.to_owned(),
        }
    }

    #[test]
    fn parses_and_displays() {
        let parsed: KbcParams = "cc_kbc::http://1.2.3.4:8080".parse().unwrap();
        assert_eq!(parsed, params("cc_kbc", "http://1.2.3.4:8080"));
        assert_eq!(parsed.to_string(), "cc_kbc::http://1.2.3.4:8080");
        let offline: KbcParams = "offline_fs_kbc::null".parse().unwrap();
        assert_eq!(offline, KbcParams::default());
        assert_eq!(KbcParams::default().to_string(), "offline_fs_kbc::null");
    }

    #[test]
    fn ipv6_host_is_not_a_separator() {
        let parsed: KbcParams = "cc_kbc::http://[::1]:8080".parse().unwrap();
        assert_eq!(parsed.url, "http://[::1]:8080");
    }

    #[test]
    fn malformed_values_are_rejected() {
        let cases = [
            ("foo", KbcParamsParseError::MissingSeparator),
            ("a::b::c", KbcParamsParseError::ExtraSeparator),
            ("::http://kbs", KbcParamsParseError::EmptyKbc),
            ("cc_kbc::", KbcParamsParseError::EmptyUrl),
            ("cc kbc::http://kbs", KbcParamsParseError::InvalidKbc),
        ];
        for (value, expected) in cases {
            assert_eq!(value.parse::<KbcParams>(), Err(expected), "{value}");
        }
    }

    #[test]
    fn sources_display_their_origin() {
        let path = PathBuf::from("/etc/aa.toml");
        assert_eq!(
            KbcParamsSource::ServiceConfig(path).to_string(),
            "config file /etc/aa.toml"
        );
        assert_eq!(
            KbcParamsSource::Env.to_string(),
            "environment variable AA_KBC_PARAMS"
        );
        assert_eq!(
            KbcParamsSource::AgentConfig("/etc/agent-config.toml".into()).to_string(),
            "kata-agent config /etc/agent-config.toml"
        );
        assert_eq!(
            KbcParamsSource::KernelCmdline("/proc/cmdline".into()).to_string(),
            "kernel command line /proc/cmdline"
        );
        assert_eq!(KbcParamsSource::Default.to_string(), "built-in default");
    }

    #[test]
    fn nothing_set_gives_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let resolved = isolated(&dir).resolve(None).unwrap();
        assert_eq!(resolved.params, params("offline_fs_kbc", "null"));
        assert_eq!(resolved.source, KbcParamsSource::Default);
    }

    #[test]
    fn service_config_wins_over_everything() {
        let dir = tempfile::tempdir().unwrap();
        let resolver = every_source_set(&dir);

        let service_path = Path::new("/etc/aa.toml");
        let resolved = resolver
            .resolve(Some(("cc_kbc::http://service", service_path)))
            .unwrap();

        assert_eq!(resolved.params, params("cc_kbc", "http://service"));
        assert_eq!(
            resolved.source,
            KbcParamsSource::ServiceConfig(service_path.to_owned())
        );
    }

    #[test]
    fn env_wins_over_agent_config_and_cmdline() {
        let dir = tempfile::tempdir().unwrap();
        let resolver = every_source_set(&dir);

        let resolved = resolver
            .resolve(Some(("", Path::new("/etc/aa.toml"))))
            .unwrap();

        assert_eq!(resolved.params, params("cc_kbc", "http://env"));
        assert_eq!(resolved.source, KbcParamsSource::Env);
    }

    #[test]
    fn agent_config_wins_over_cmdline() {
        let dir = tempfile::tempdir().unwrap();
        let agent = write_agent_config(
            &dir,
            "# comment\naa_kbc_params = \"cc_kbc::http://agent\"\n[endpoints]\nallowed = []\n",
        );
        write_cmdline(&dir, "agent.aa_kbc_params=cc_kbc::http://cmdline\n");

        let resolved = isolated(&dir)
            .with_env_value(Some(String::new()))
            .with_default_agent_config_path(agent.clone())
            .resolve(None)
            .unwrap();

        assert_eq!(resolved.params, params("cc_kbc", "http://agent"));
        assert_eq!(resolved.source, KbcParamsSource::AgentConfig(agent));
    }

    #[test]
    fn cmdline_is_read_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let cmdline = write_cmdline(
            &dir,
            "console=ttyS0 agent.aa_kbc_params=cc_kbc::http://10.0.0.1:8080 quiet\n",
        );

        let resolved = isolated(&dir).resolve(None).unwrap();

        assert_eq!(resolved.params, params("cc_kbc", "http://10.0.0.1:8080"));
        assert_eq!(resolved.source, KbcParamsSource::KernelCmdline(cmdline));
    }

    #[test]
    fn later_cmdline_parameter_wins() {
        let dir = tempfile::tempdir().unwrap();
        write_cmdline(
            &dir,
            "agent.aa_kbc_params=cc_kbc::http://first agent.aa_kbc_params=cc_kbc::http://last",
        );
        let resolved = isolated(&dir).resolve(None).unwrap();
        assert_eq!(resolved.params.url, "http://last");
    }

    #[test]
    fn empty_values_fall_through_every_source() {
        let dir = tempfile::tempdir().unwrap();
        let agent = write_agent_config(&dir, "aa_kbc_params = \"\"\n");
        write_cmdline(&dir, "agent.aa_kbc_params= quiet\n");

        let resolved = isolated(&dir)
            .with_env_value(Some("  ".into()))
            .with_agent_config_path(agent)
            .resolve(Some(("", Path::new("/etc/aa.toml"))))
            .unwrap();

        assert_eq!(resolved.source, KbcParamsSource::Default);
    }

    #[test]
    fn agent_config_without_the_key_falls_through() {
        let dir = tempfile::tempdir().unwrap();
        let agent = write_agent_config(&dir, "server_addr = \"vsock://-1:1024\"\n");
        let resolved = isolated(&dir)
            .with_agent_config_path(agent)
            .resolve(None)
            .unwrap();
        assert_eq!(resolved.source, KbcParamsSource::Default);
    }

    #[test]
    fn missing_default_agent_config_falls_through() {
        let dir = tempfile::tempdir().unwrap();
        write_cmdline(&dir, "agent.aa_kbc_params=cc_kbc::http://cmdline");
        let resolved = isolated(&dir).resolve(None).unwrap();
        assert_eq!(resolved.params.url, "http://cmdline");
    }

    #[test]
    fn missing_explicit_agent_config_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere.toml");

        let err = isolated(&dir)
            .with_agent_config_path(missing.clone())
            .resolve(None)
            .unwrap_err();

        assert!(matches!(&err, KbcParamsError::AgentConfigMissing { path } if *path == missing));
        let message = err.to_string();
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
        assert!(message.contains(KATA_AGENT_CONFIG_PATH_ENV), "{message}");
    }

    #[test]
    fn malformed_agent_config_names_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let agent = write_agent_config(
            &dir,
            "# first\nserver_addr = \"x\"\naa_kbc_params = \"unterminated\n",
        );

        let err = isolated(&dir)
            .with_agent_config_path(agent.clone())
            .resolve(None)
            .unwrap_err();

        let message = err.to_string();
        assert!(message.contains(&agent.display().to_string()), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn malformed_values_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let service = Path::new("/etc/aa.toml");

        let err = isolated(&dir).resolve(Some(("foo", service))).unwrap_err();
        assert!(matches!(
            &err,
            KbcParamsError::Malformed { origin: KbcParamsSource::ServiceConfig(p), value, .. }
                if p == service && value == "foo"
        ));
        assert!(err.to_string().contains("config file /etc/aa.toml"));

        let err = isolated(&dir)
            .with_env_value(Some("a::b::c".into()))
            .resolve(None)
            .unwrap_err();
        assert!(matches!(
            &err,
            KbcParamsError::Malformed {
                origin: KbcParamsSource::Env,
                reason: KbcParamsParseError::ExtraSeparator,
                ..
            }
        ));
        assert!(err
            .to_string()
            .contains("environment variable AA_KBC_PARAMS"));

        let agent = write_agent_config(&dir, "aa_kbc_params = \"::url\"\n");
        let err = isolated(&dir)
            .with_agent_config_path(agent.clone())
            .resolve(None)
            .unwrap_err();
        assert!(matches!(
            &err,
            KbcParamsError::Malformed {
                origin: KbcParamsSource::AgentConfig(p),
                reason: KbcParamsParseError::EmptyKbc,
                ..
            } if *p == agent
        ));

        fs::remove_file(&agent).unwrap();
        let cmdline = write_cmdline(&dir, "agent.aa_kbc_params=foo");
        let err = isolated(&dir).resolve(None).unwrap_err();
        assert!(matches!(
            &err,
            KbcParamsError::Malformed { origin: KbcParamsSource::KernelCmdline(p), .. }
                if *p == cmdline
        ));
        assert!(err.to_string().contains("kernel command line"));
    }

    #[test]
    fn a_valid_earlier_source_hides_a_malformed_later_one() {
        let dir = tempfile::tempdir().unwrap();
        write_cmdline(&dir, "agent.aa_kbc_params=foo");
        let resolved = isolated(&dir)
            .with_env_value(Some("cc_kbc::http://env".into()))
            .resolve(None)
            .unwrap();
        assert_eq!(resolved.source, KbcParamsSource::Env);
    }
}
