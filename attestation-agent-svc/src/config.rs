//! The agent's configuration, resolved in one place from the AA TOML file, `aa_kbc_params` and flags.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use common::config_text::line_at;
use common::kbc_params::{KbcParamsResolver, KbcParamsSource};
use serde::Deserialize;

/// PCR that upstream extends the eventlog's INIT entry into when the config names none.
const DEFAULT_INIT_PCR: u64 = 17;
/// Log level when neither `RUST_LOG` nor the config file sets one.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The KBC whose URL is a KBS.
const KBS_KBC: &str = "cc_kbc";
/// The KBC that serves resources from a local file and has no KBS.
const OFFLINE_KBC: &str = "offline_fs_kbc";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingSource {
    /// Nothing configured it.
    Default,
    /// The AA config file.
    ConfigFile(PathBuf),
    /// `aa_kbc_params`, from wherever that was found.
    KbcParams(KbcParamsSource),
}

impl fmt::Display for SettingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("built-in default"),
            Self::ConfigFile(path) => write!(f, "config file {}", path.display()),
            Self::KbcParams(source) => write!(f, "aa_kbc_params from {source}"),
        }
    }
}

/// A setting's value and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value in effect.
    pub value: T,
    /// Where it came from.
    pub source: SettingSource,
}

/// The KBS the agent attests to for tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbsEndpoint {
    /// Base URL of the KBS.
    pub url: String,
    /// PEM certificate to trust for an `https` URL.
    pub cert_pem: Option<String>,
}

/// How runtime measurements are recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventlogSettings {
    /// Whether ExtendRuntimeMeasurement records anything.
    pub enabled: bool,
    /// The register the INIT entry belongs to.
    pub init_pcr: u64,
    /// The AAEL file.
    pub path: PathBuf,
}

/// The validated configuration of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The KBS for GetToken, `None` when the configuration names no KBS.
    pub kbs: Sourced<Option<KbsEndpoint>>,
    /// Eventlog settings.
    pub eventlog: Sourced<EventlogSettings>,
    /// Default log level.
    pub log_level: Sourced<String>,
    /// Keys of the config file that this agent does not use, as dotted paths.
    pub ignored_keys: Vec<String>,
}

/// What the command line contributes to the configuration.
#[derive(Debug, Clone)]
pub struct ConfigInputs {
    /// The AA TOML file, if one was given.
    pub config_file: Option<PathBuf>,
    /// Where the AAEL lives.
    pub eventlog_path: PathBuf,
}

/// The upstream AA TOML file; every key optional.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    token_configs: TokenConfigs,
    eventlog_config: Option<EventlogSection>,
    log: Option<LogSection>,
}

#[derive(Debug, Default, Deserialize)]
struct TokenConfigs {
    kbs: Option<KbsSection>,
}

#[derive(Debug, Deserialize)]
struct KbsSection {
    url: String,
    cert: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EventlogSection {
    init_pcr: Option<u64>,
    enable_eventlog: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct LogSection {
    level: Option<String>,
}

/// Keys this agent reads, by table; anything else in the file is reported as ignored.
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    ("", &["token_configs", "eventlog_config", "log"]),
    ("token_configs", &["kbs"]),
    ("token_configs.kbs", &["url", "cert"]),
    ("eventlog_config", &["init_pcr", "enable_eventlog"]),
    ("log", &["level"]),
];

impl AgentConfig {
    /// Resolves the configuration: the config file first, then `aa_kbc_params` for the KBS.
    pub fn resolve(inputs: &ConfigInputs, kbc_params: &KbcParamsResolver) -> anyhow::Result<Self> {
        let (file, ignored_keys) = match &inputs.config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("failed to read config file {}", path.display()))?;
                parse_config_file(&text, path)?
            }
            None => (ConfigFile::default(), Vec::new()),
        };
        let file_source = || {
            inputs
                .config_file
                .clone()
                .map_or(SettingSource::Default, SettingSource::ConfigFile)
        };

        let kbs = match (file.token_configs.kbs, &inputs.config_file) {
            (Some(section), Some(path)) => Sourced {
                value: Some(kbs_from_section(section, path)?),
                source: SettingSource::ConfigFile(path.clone()),
            },
            _ => kbs_from_kbc_params(kbc_params)?,
        };

        let eventlog = Sourced {
            source: if file.eventlog_config.is_some() {
                file_source()
            } else {
                SettingSource::Default
            },
            value: EventlogSettings {
                enabled: file
                    .eventlog_config
                    .as_ref()
                    .and_then(|section| section.enable_eventlog)
                    .unwrap_or(false),
                init_pcr: file
                    .eventlog_config
                    .as_ref()
                    .and_then(|section| section.init_pcr)
                    .unwrap_or(DEFAULT_INIT_PCR),
                path: inputs.eventlog_path.clone(),
            },
        };

        let log_level = match file.log.and_then(|log| log.level) {
            Some(level) => Sourced {
                value: level,
                source: file_source(),
            },
            None => Sourced {
                value: DEFAULT_LOG_LEVEL.to_owned(),
                source: SettingSource::Default,
            },
        };

        Ok(Self {
            kbs,
            eventlog,
            log_level,
            ignored_keys,
        })
    }

    /// One line for the operator: which KBS, from where.
    pub fn kbs_summary(&self) -> String {
        match &self.kbs.value {
            Some(kbs) => format!("KBS {} ({})", kbs.url, self.kbs.source),
            None => format!("no KBS ({})", self.kbs.source),
        }
    }
}

/// Parses the TOML text of `path`, returning the typed file and the keys it ignores.
fn parse_config_file(text: &str, path: &Path) -> anyhow::Result<(ConfigFile, Vec<String>)> {
    let located = |err: toml::de::Error| {
        let line = err
            .span()
            .map(|span| line_at(text, span.start))
            .map_or_else(String::new, |line| format!(" line {line}"));
        anyhow::anyhow!(
            "malformed config file {}{line}: {}",
            path.display(),
            err.message()
        )
    };
    let table: toml::Table = toml::from_str(text).map_err(located)?;
    let ignored = unknown_keys(&table, "");
    // Parsed again as the typed file so that a wrongly typed value is reported with its line.
    let file: ConfigFile = toml::from_str(text).map_err(located)?;
    Ok((file, ignored))
}

/// Dotted paths of the keys in `table` (at `prefix`) that [`KNOWN_KEYS`] does not list.
fn unknown_keys(table: &toml::Table, prefix: &str) -> Vec<String> {
    let known = KNOWN_KEYS
        .iter()
        .find(|(table_path, _)| *table_path == prefix)
        .map_or(&[][..], |(_, keys)| *keys);
    let mut ignored = Vec::new();
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if !known.contains(&key.as_str()) {
            ignored.push(path);
        } else if let toml::Value::Table(inner) = value {
            ignored.extend(unknown_keys(inner, &path));
        }
    }
    ignored
}

fn kbs_from_section(section: KbsSection, path: &Path) -> anyhow::Result<KbsEndpoint> {
    if section.url.trim().is_empty() {
        bail!(
            "empty token_configs.kbs.url in config file {}",
            path.display()
        );
    }
    Ok(KbsEndpoint {
        url: section.url,
        cert_pem: section.cert.filter(|cert| !cert.trim().is_empty()),
    })
}

/// The KBS named by `aa_kbc_params`: `cc_kbc::URL` is one, `offline_fs_kbc::...` means none.
fn kbs_from_kbc_params(
    resolver: &KbcParamsResolver,
) -> anyhow::Result<Sourced<Option<KbsEndpoint>>> {
    let resolved = resolver
        .resolve(None)
        .context("failed to resolve aa_kbc_params")?;
    let value = match resolved.params.kbc.as_str() {
        KBS_KBC => Some(KbsEndpoint {
            url: resolved.params.url,
            cert_pem: None,
        }),
        OFFLINE_KBC => None,
        other => bail!(
            "unsupported kbc {other:?} in aa_kbc_params from {}: supported are {KBS_KBC} and {OFFLINE_KBC}",
            resolved.source
        ),
    };
    Ok(Sourced {
        value,
        source: SettingSource::KbcParams(resolved.source),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A resolver that sees nothing of this machine: no env, no agent config, no cmdline.
    fn isolated_resolver(dir: &Path) -> KbcParamsResolver {
        KbcParamsResolver::from_env()
            .with_env_value(None)
            .with_default_agent_config_path(dir.join("no-agent-config.toml"))
            .with_cmdline_path(dir.join("no-cmdline"))
    }

    fn resolve_text(text: &str) -> anyhow::Result<AgentConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aa.toml");
        std::fs::write(&path, text).unwrap();
        let inputs = ConfigInputs {
            config_file: Some(path),
            eventlog_path: dir.path().join("eventlog"),
        };
        AgentConfig::resolve(&inputs, &isolated_resolver(dir.path()))
    }

    #[test]
    fn defaults_without_a_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = ConfigInputs {
            config_file: None,
            eventlog_path: PathBuf::from("/run/attestation-agent/eventlog"),
        };
        let config = AgentConfig::resolve(&inputs, &isolated_resolver(dir.path())).unwrap();
        assert_eq!(config.kbs.value, None);
        assert_eq!(
            config.kbs.source,
            SettingSource::KbcParams(KbcParamsSource::Default)
        );
        assert_eq!(
            config.eventlog.value,
            EventlogSettings {
                enabled: false,
                init_pcr: 17,
                path: PathBuf::from("/run/attestation-agent/eventlog"),
            }
        );
        assert_eq!(config.log_level.value, "info");
        assert!(config.ignored_keys.is_empty());
        assert_eq!(
            config.kbs_summary(),
            "no KBS (aa_kbc_params from built-in default)"
        );
    }

    #[test]
    fn upstream_sample_config_is_read_with_sources() {
        let config = resolve_text(
            r#"
[token_configs]

[token_configs.coco_as]
url = "http://127.0.0.1:8000"

[token_configs.kbs]
url = "https://127.0.0.1:8080"
cert = '''
-----BEGIN CERTIFICATE-----
MIIDljCCAn6gAwIBAgIUR
-----END CERTIFICATE-----
'''

[eventlog_config]

init_pcr = 17
enable_eventlog = true

[log]
level = "debug"
"#,
        )
        .unwrap();
        let kbs = config.kbs.value.clone().unwrap();
        assert_eq!(kbs.url, "https://127.0.0.1:8080");
        assert!(kbs
            .cert_pem
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(matches!(config.kbs.source, SettingSource::ConfigFile(_)));
        assert!(config.eventlog.value.enabled);
        assert_eq!(config.eventlog.value.init_pcr, 17);
        assert_eq!(config.log_level.value, "debug");
        assert_eq!(config.ignored_keys, ["token_configs.coco_as"]);
    }

    #[test]
    fn unknown_keys_at_every_level_are_reported() {
        let config = resolve_text(
            "extra = 1\n[token_configs.kbs]\nurl = \"http://kbs\"\nproxy = \"x\"\n[eventlog_config]\neventlog_algorithm = \"sha384\"\n[other]\nkey = 2\n",
        )
        .unwrap();
        let mut ignored = config.ignored_keys;
        ignored.sort();
        assert_eq!(
            ignored,
            [
                "eventlog_config.eventlog_algorithm",
                "extra",
                "other",
                "token_configs.kbs.proxy"
            ]
        );
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let err = resolve_text("[log]\nlevel = \"info\"\n\n[eventlog_config\ninit_pcr = 1\n")
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("aa.toml line 4"), "{message}");
        assert!(message.starts_with("malformed config file"), "{message}");
    }

    #[test]
    fn wrongly_typed_values_name_the_file() {
        let err = resolve_text("[eventlog_config]\ninit_pcr = \"seventeen\"\n").unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("aa.toml line 2"), "{message}");
        assert!(message.contains("seventeen"), "{message}");
    }

    #[test]
    fn cc_kbc_params_give_the_kbs_and_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let resolver = isolated_resolver(dir.path())
            .with_env_value(Some("cc_kbc::http://127.0.0.1:8080".to_owned()));
        let inputs = ConfigInputs {
            config_file: None,
            eventlog_path: dir.path().join("eventlog"),
        };
        let config = AgentConfig::resolve(&inputs, &resolver).unwrap();
        assert_eq!(config.kbs.value.unwrap().url, "http://127.0.0.1:8080");
        assert_eq!(
            config.kbs.source,
            SettingSource::KbcParams(KbcParamsSource::Env)
        );
    }

    #[test]
    fn the_config_file_kbs_wins_over_kbc_params() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aa.toml");
        std::fs::write(&path, "[token_configs.kbs]\nurl = \"http://file:1\"\n").unwrap();
        let resolver =
            isolated_resolver(dir.path()).with_env_value(Some("cc_kbc::http://env:2".to_owned()));
        let inputs = ConfigInputs {
            config_file: Some(path.clone()),
            eventlog_path: dir.path().join("eventlog"),
        };
        let config = AgentConfig::resolve(&inputs, &resolver).unwrap();
        assert_eq!(config.kbs.value.unwrap().url, "http://file:1");
        assert_eq!(config.kbs.source, SettingSource::ConfigFile(path));
    }

    #[test]
    fn an_unsupported_kbc_is_named_with_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let resolver =
            isolated_resolver(dir.path()).with_env_value(Some("eaa_kbc::1.2.3.4:50000".to_owned()));
        let inputs = ConfigInputs {
            config_file: None,
            eventlog_path: dir.path().join("eventlog"),
        };
        let message = format!(
            "{:#}",
            AgentConfig::resolve(&inputs, &resolver).unwrap_err()
        );
        assert!(message.contains("eaa_kbc"), "{message}");
        assert!(message.contains("AA_KBC_PARAMS"), "{message}");
    }

    #[test]
    fn a_missing_config_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = ConfigInputs {
            config_file: Some(dir.path().join("absent.toml")),
            eventlog_path: dir.path().join("eventlog"),
        };
        let message = format!(
            "{:#}",
            AgentConfig::resolve(&inputs, &isolated_resolver(dir.path())).unwrap_err()
        );
        assert!(message.contains("absent.toml"), "{message}");
    }
}
