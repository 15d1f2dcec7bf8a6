//! The CDH config: upstream's TOML, the flags and `aa_kbc_params`, resolved into one value.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use common::config_text::line_at;
use common::kbc_params::KbcParamsResolver;
use common::kbs::ResourcePath;
use common::service::Endpoint;
use serde::Deserialize;

use crate::cli::Cli;
use crate::offline::OfflineFiles;

/// Where the CDH listens when the config does not say.
pub const DEFAULT_SOCKET: &str = "unix:///run/confidential-containers/cdh.sock";

/// Where the Attestation Agent listens when the config does not say.
pub const DEFAULT_AA_SOCKET: &str =
    "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock";

/// The only directory credentials may be written under.
pub const CREDENTIALS_ROOT: &str = "/run/confidential-containers/cdh";

/// Log level when neither `[log] level` nor `RUST_LOG` says otherwise.
const DEFAULT_LOG_LEVEL: &str = "info";

/// The validated configuration of one CDH run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    /// The ttrpc endpoint of the CDH.
    pub socket: Endpoint,
    /// The ttrpc endpoint of the Attestation Agent.
    pub aa_socket: Endpoint,
    /// Which KBC serves resources, and where that choice came from.
    pub kbc: KbcSettings,
    /// Resources written to files before the CDH reports ready.
    pub credentials: Vec<Credential>,
    /// Default log filter.
    pub log_level: String,
    /// Config keys this build does not implement, reported once at start.
    pub ignored_keys: Vec<String>,
    /// The offline_fs KBC resource files.
    pub offline_files: OfflineFiles,
    /// Whether and how sealed secret signatures are checked.
    pub sealed_secret_check: SealedSecretCheck,
    /// Extra gRPC endpoint.
    pub grpc: Option<Endpoint>,
}

/// How sealed secrets are checked before they are unsealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedSecretCheck {
    /// The ES256 signature must verify; local keys (a `kid` that is no URI) live in `key_dir`.
    Verify {
        /// Directory of local verification keys.
        key_dir: PathBuf,
    },
    /// Signatures are not checked.
    Skip,
}

/// The KBC a resource request goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KbcKind {
    /// A Trustee KBS over RCAR, with evidence from the Attestation Agent.
    CcKbc,
    /// Local JSON files.
    OfflineFsKbc,
}

/// The KBC settings and their source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbcSettings {
    /// Which KBC.
    pub kind: KbcKind,
    /// KBS URL (cc_kbc only).
    pub url: String,
    /// PEM certificate of the KBS, the only root trusted for it.
    pub kbs_cert: Option<String>,
    /// Where the KBC choice came from, for logs and `STATUS=`.
    pub source: String,
}

/// One `[[credentials]]` entry: a resource written to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The validated resource URI as configured.
    pub uri: String,
    /// The validated target file.
    pub path: PathBuf,
}

/// The TOML as upstream writes it; unknown keys are found separately.
#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    socket: Option<String>,
    aa: Option<AaSection>,
    kbc: Option<KbcSection>,
    #[serde(default)]
    credentials: Vec<CredentialEntry>,
    log: Option<LogSection>,
}

#[derive(Debug, Deserialize)]
struct AaSection {
    aa_socket: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KbcSection {
    name: String,
    #[serde(default)]
    url: String,
    kbs_cert: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CredentialEntry {
    path: PathBuf,
    resource_uri: String,
}

#[derive(Debug, Deserialize)]
struct LogSection {
    level: Option<String>,
}

/// The keys this build reads, per table; anything else is reported as ignored.
const KNOWN_KEYS: [(&str, &[&str]); 5] = [
    ("socket", &[]),
    ("aa", &["aa_socket"]),
    ("kbc", &["name", "url", "kbs_cert"]),
    ("credentials", &["path", "resource_uri"]),
    ("log", &["level"]),
];

impl Config {
    /// Resolves the config of this process from its flags, config file and environment.
    pub fn load(cli: &Cli) -> Result<Self> {
        Self::resolve(cli, &KbcParamsResolver::from_env())
    }

    /// Resolves the config with the `aa_kbc_params` inputs of `kbc_params`.
    pub fn resolve(cli: &Cli, kbc_params: &KbcParamsResolver) -> Result<Self> {
        let (file, ignored_keys) = match &cli.config {
            Some(path) => read_file(path)?,
            None => (FileConfig::default(), Vec::new()),
        };
        let origin = cli.config.as_deref();
        let named = |what: &str| match origin {
            Some(path) => format!("{what} in config file {}", path.display()),
            None => format!("built-in {what}"),
        };

        let socket = file.socket.as_deref().unwrap_or(DEFAULT_SOCKET);
        let socket = Endpoint::parse(socket).with_context(|| named("socket"))?;
        let aa_socket = file.aa.and_then(|aa| aa.aa_socket);
        let aa_socket = aa_socket.as_deref().unwrap_or(DEFAULT_AA_SOCKET);
        let aa_socket = Endpoint::parse(aa_socket).with_context(|| named("aa.aa_socket"))?;

        let kbc = match (file.kbc, origin) {
            (Some(section), Some(path)) => kbc_from_file(section, path)?,
            _ => kbc_from_params(kbc_params)?,
        };

        let credentials = file
            .credentials
            .into_iter()
            .map(|entry| credential(entry, Path::new(CREDENTIALS_ROOT)))
            .collect::<Result<Vec<_>>>()
            .with_context(|| named("[[credentials]]"))?;

        let log_level = match file.log.and_then(|log| log.level) {
            Some(level) => check_log_level(&level).with_context(|| named("log.level"))?,
            None => DEFAULT_LOG_LEVEL.to_owned(),
        };

        Ok(Self {
            file: cli.config.clone(),
            socket,
            aa_socket,
            kbc,
            credentials,
            log_level,
            ignored_keys,
            offline_files: offline_files(cli),
            sealed_secret_check: if cli.skip_sealed_secret_verification {
                SealedSecretCheck::Skip
            } else {
                SealedSecretCheck::Verify {
                    key_dir: cli.sealed_secret_keys.clone(),
                }
            },
            grpc: grpc_endpoint(cli)?,
        })
    }
}

/// Reads and parses the config file, returning it with the keys it has that we ignore.
fn read_file(path: &Path) -> Result<(FileConfig, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read config file {}", path.display()))?;
    let describe = |e: toml::de::Error| toml_error(path, &text, &e);
    let table: toml::Table = toml::from_str(&text).map_err(describe)?;
    let file: FileConfig = toml::from_str(&text).map_err(describe)?;
    Ok((file, ignored_keys(&table)))
}

/// An error naming the file and the line a TOML error points at, without echoing the line.
fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> anyhow::Error {
    let message = err.message().trim_end();
    match err.span() {
        Some(span) => {
            let line = line_at(text, span.start);
            anyhow::anyhow!(
                "invalid config file {} at line {line}: {message}",
                path.display()
            )
        }
        None => anyhow::anyhow!("invalid config file {}: {message}", path.display()),
    }
}

/// Every key of `table` that [`KNOWN_KEYS`] does not list, as a dotted path.
fn ignored_keys(table: &toml::Table) -> Vec<String> {
    let mut ignored = Vec::new();
    for (key, value) in table {
        let Some((_, children)) = KNOWN_KEYS.iter().find(|(known, _)| known == key) else {
            ignored.push(key.clone());
            continue;
        };
        let unknown_in = |prefix: String, table: &toml::Table, ignored: &mut Vec<String>| {
            let unknown = table.keys().filter(|k| !children.contains(&k.as_str()));
            ignored.extend(unknown.map(|k| format!("{prefix}.{k}")));
        };
        match value {
            toml::Value::Table(inner) => unknown_in(key.clone(), inner, &mut ignored),
            toml::Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    if let toml::Value::Table(inner) = item {
                        unknown_in(format!("{key}[{index}]"), inner, &mut ignored);
                    }
                }
            }
            _ => {}
        }
    }
    ignored
}

fn kbc_from_file(section: KbcSection, path: &Path) -> Result<KbcSettings> {
    let source = format!("config file {}", path.display());
    let kind = kbc_kind(&section.name, &source)?;
    let kbs_cert = section.kbs_cert.filter(|cert| !cert.trim().is_empty());
    if let Some(cert) = &kbs_cert {
        if !cert.contains("-----BEGIN CERTIFICATE-----") {
            bail!("kbc.kbs_cert in {source} is not a PEM certificate");
        }
    }
    settings(kind, section.url, kbs_cert, source)
}

fn kbc_from_params(resolver: &KbcParamsResolver) -> Result<KbcSettings> {
    let resolved = resolver
        .resolve(None)
        .context("failed to resolve aa_kbc_params")?;
    let source = resolved.source.to_string();
    let kind = kbc_kind(&resolved.params.kbc, &source)?;
    settings(kind, resolved.params.url, None, source)
}

fn settings(
    kind: KbcKind,
    url: String,
    kbs_cert: Option<String>,
    source: String,
) -> Result<KbcSettings> {
    if kind == KbcKind::CcKbc && !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("cc_kbc from {source} needs an http:// or https:// KBS URL, got {url:?}");
    }
    Ok(KbcSettings {
        kind,
        url,
        kbs_cert,
        source,
    })
}

fn kbc_kind(name: &str, source: &str) -> Result<KbcKind> {
    match name {
        "cc_kbc" => Ok(KbcKind::CcKbc),
        "offline_fs_kbc" => Ok(KbcKind::OfflineFsKbc),
        other => bail!(
            "kbc {other:?} from {source} is not supported by this build \
             (supported: cc_kbc, offline_fs_kbc)"
        ),
    }
}

/// Validates one credential: a well-formed resource URI and a target under `root`.
fn credential(entry: CredentialEntry, root: &Path) -> Result<Credential> {
    ResourcePath::parse(&entry.resource_uri)
        .with_context(|| format!("invalid resource_uri {:?}", entry.resource_uri))?;
    check_credential_path(&entry.path, root)?;
    Ok(Credential {
        uri: entry.resource_uri,
        path: entry.path,
    })
}

/// A credential target must be an absolute path strictly below `root`, without `.` or `..`.
fn check_credential_path(path: &Path, root: &Path) -> Result<()> {
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !path.is_absolute() || !plain || path.as_os_str().to_string_lossy().contains("/./") {
        bail!(
            "credential path {} must be absolute, without '.' or '..' components",
            path.display()
        );
    }
    if !path.starts_with(root) || path == root {
        bail!(
            "credential path {} is not under {}",
            path.display(),
            root.display()
        );
    }
    Ok(())
}

fn grpc_endpoint(cli: &Cli) -> Result<Option<Endpoint>> {
    let Some(address) = &cli.grpc else {
        return Ok(None);
    };
    if !cfg!(feature = "grpc") {
        bail!("--grpc {address}: this build has no gRPC support");
    }
    let endpoint = Endpoint::parse(address).context("invalid --grpc address")?;
    Ok(Some(endpoint))
}

fn check_log_level(level: &str) -> Result<String> {
    let lower = level.to_ascii_lowercase();
    match lower.as_str() {
        "trace" | "debug" | "info" | "warn" | "error" | "off" => Ok(lower),
        _ => bail!("unknown log level {level:?} (use trace, debug, info, warn, error or off)"),
    }
}

fn offline_files(cli: &Cli) -> OfflineFiles {
    OfflineFiles {
        standard: vec![
            cli.offline_fs_keys.clone(),
            cli.offline_fs_resources.clone(),
        ],
        extra: cli
            .offline_fs_extra
            .iter()
            .filter(|path| !path.as_os_str().is_empty())
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// A resolver that sees no env, no agent config and an empty kernel command line.
    fn quiet_resolver(dir: &Path) -> KbcParamsResolver {
        let cmdline = dir.join("cmdline");
        std::fs::write(&cmdline, "quiet\n").unwrap();
        KbcParamsResolver::from_env()
            .with_env_value(None)
            .with_default_agent_config_path(dir.join("no-agent-config.toml"))
            .with_cmdline_path(cmdline)
    }

    fn cli(args: &[&str]) -> Cli {
        let mut argv = vec!["confidential-data-hub"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap()
    }

    fn load(dir: &Path, toml: &str) -> Result<Config> {
        let path = dir.join("cdh.toml");
        std::fs::write(&path, toml).unwrap();
        Config::resolve(&cli(&["-c", path.to_str().unwrap()]), &quiet_resolver(dir))
    }

    #[test]
    fn defaults_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(&cli(&[]), &quiet_resolver(dir.path())).unwrap();
        assert_eq!(config.socket.to_string(), DEFAULT_SOCKET);
        assert_eq!(config.aa_socket.to_string(), DEFAULT_AA_SOCKET);
        assert_eq!(config.kbc.kind, KbcKind::OfflineFsKbc);
        assert_eq!(config.kbc.source, "built-in default");
        assert!(config.credentials.is_empty());
        assert_eq!(config.log_level, "info");
    }

    #[test]
    fn upstream_sample_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(
            dir.path(),
            r#"
socket = "unix:///run/confidential-containers/cdh.sock"

[kbc]
name = "cc_kbc"
url = "http://1.2.3.4:8080"

[[credentials]]
path = "/run/confidential-containers/cdh/kms-credential/aliyun/ecsRamRole.json"
resource_uri = "kbs:///default/aliyun/ecs_ram_role"

[image]
max_concurrent_layer_downloads_per_image = 3
image_security_policy_uri = "kbs:///default/security-policy/test"
"#,
        )
        .unwrap();
        assert_eq!(config.kbc.kind, KbcKind::CcKbc);
        assert_eq!(config.kbc.url, "http://1.2.3.4:8080");
        assert!(
            config.kbc.source.contains("cdh.toml"),
            "{}",
            config.kbc.source
        );
        assert_eq!(config.credentials.len(), 1);
        assert_eq!(
            config.credentials[0].uri,
            "kbs:///default/aliyun/ecs_ram_role"
        );
        assert_eq!(config.ignored_keys, vec!["image".to_owned()]);
    }

    #[test]
    fn offline_kbc_with_empty_url_and_cert_as_upstream_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(
            dir.path(),
            "[kbc]\nname = \"offline_fs_kbc\"\nurl = \"\"\nkbs_cert = \"\"\n",
        )
        .unwrap();
        assert_eq!(config.kbc.kind, KbcKind::OfflineFsKbc);
        assert_eq!(config.kbc.kbs_cert, None);
    }

    #[test]
    fn aa_socket_and_log_level_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(
            dir.path(),
            "[aa]\naa_socket = \"unix:///tmp/aa.sock\"\n[log]\nlevel = \"DEBUG\"\n",
        )
        .unwrap();
        assert_eq!(config.aa_socket.to_string(), "unix:///tmp/aa.sock");
        assert_eq!(config.log_level, "debug");
    }

    #[test]
    fn unknown_keys_are_listed_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(
            dir.path(),
            r#"
shiny = true
[kbc]
name = "offline_fs_kbc"
colour = "blue"
[[credentials]]
path = "/run/confidential-containers/cdh/a"
resource_uri = "kbs:///a/b/c"
mode = "0644"
"#,
        )
        .unwrap();
        let mut ignored = config.ignored_keys;
        ignored.sort();
        assert_eq!(ignored, ["credentials[0].mode", "kbc.colour", "shiny"]);
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), "socket = \"unix:///x\"\n[kbc\nname = 1\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("cdh.toml") && text.contains("line 2"),
            "{text}"
        );

        let err = load(dir.path(), "\n\n[kbc]\nname = 7\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("cdh.toml") && text.contains("line 4"),
            "{text}"
        );
    }

    #[test]
    fn unsupported_kbc_and_bad_url_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), "[kbc]\nname = \"online_sev_kbc\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("online_sev_kbc"));
        let err = load(dir.path(), "[kbc]\nname = \"cc_kbc\"\nurl = \"\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("cc_kbc"));
        let err = load(
            dir.path(),
            "[kbc]\nname = \"cc_kbc\"\nurl = \"http://k\"\nkbs_cert = \"not a pem\"\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("kbs_cert"));
    }

    #[test]
    fn kbc_from_aa_kbc_params_records_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let resolver =
            quiet_resolver(dir.path()).with_env_value(Some("cc_kbc::http://10.0.0.1:8080".into()));
        let config = Config::resolve(&cli(&[]), &resolver).unwrap();
        assert_eq!(config.kbc.kind, KbcKind::CcKbc);
        assert_eq!(config.kbc.url, "http://10.0.0.1:8080");
        assert!(
            config.kbc.source.contains("AA_KBC_PARAMS"),
            "{}",
            config.kbc.source
        );
    }

    #[test]
    fn credential_paths_outside_the_root_are_rejected_at_load() {
        let dir = tempfile::tempdir().unwrap();
        for path in [
            "/etc/passwd",
            "relative/x",
            "/run/confidential-containers/cdh/../escape",
            "/run/confidential-containers/cdh",
            "/run/confidential-containers/cdhx/y",
        ] {
            let toml =
                format!("[[credentials]]\npath = {path:?}\nresource_uri = \"kbs:///a/b/c\"\n");
            let err = load(dir.path(), &toml).unwrap_err();
            assert!(format!("{err:#}").contains(path), "{path}: {err:#}");
        }
        let toml = "[[credentials]]\npath = \"/run/confidential-containers/cdh/x\"\n\
                    resource_uri = \"kbs:///a/../b\"\n";
        let err = load(dir.path(), toml).unwrap_err();
        assert!(format!("{err:#}").contains("kbs:///a/../b"));
    }

    #[test]
    fn credential_path_check_accepts_nested_files() {
        let root = Path::new("/run/confidential-containers/cdh");
        check_credential_path(Path::new("/run/confidential-containers/cdh/a/b.json"), root)
            .unwrap();
        assert!(
            check_credential_path(Path::new("/run/confidential-containers/cdh/./a"), root).is_err()
        );
    }

    #[test]
    fn sealed_secrets_are_verified_unless_told_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(&cli(&[]), &quiet_resolver(dir.path())).unwrap();
        assert_eq!(
            config.sealed_secret_check,
            SealedSecretCheck::Verify {
                key_dir: PathBuf::from("/run/confidential-containers/cdh/sealed-secret")
            }
        );
        let skip = cli(&["--skip-sealed-secret-verification"]);
        let config = Config::resolve(&skip, &quiet_resolver(dir.path())).unwrap();
        assert_eq!(config.sealed_secret_check, SealedSecretCheck::Skip);
    }

    #[test]
    fn extra_offline_files_come_from_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let cli = cli(&["--offline-fs-extra", "/a.json,/b.json"]);
        let config = Config::resolve(&cli, &quiet_resolver(dir.path())).unwrap();
        assert_eq!(
            config.offline_files.extra,
            [PathBuf::from("/a.json"), PathBuf::from("/b.json")]
        );
    }
}
