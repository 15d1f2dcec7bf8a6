//! `provision-files`: the `write_files` entries of cloud-config user data, checked and written.
//!
//! Every entry is validated before any is written, so one bad entry means nothing is
//! written at all. Files land only under `/run/peerpod`.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde::Deserialize;
use tracing::info;

use common::fsutil::write_atomic;

/// Where the cloud-init config drive puts the user data.
pub const DEFAULT_USER_DATA_PATH: &str = "/media/cidata/user-data";
/// The only directory user data may write into.
const ALLOWED_DIR: &str = "/run/peerpod";
/// The first line that marks user data as cloud-config.
const CLOUD_CONFIG_HEADER: &str = "#cloud-config";
/// Mode of an entry without `permissions`, as cloud-init does.
const DEFAULT_MODE: u32 = 0o644;
/// Mode of the directories created on the way to an entry.
const DIR_MODE: u32 = 0o755;

/// The part of cloud-config this tool acts on; other top-level keys are not ours.
#[derive(Deserialize)]
struct CloudConfig {
    #[serde(default)]
    write_files: Vec<WriteFile>,
}

/// One `write_files` entry; unknown fields such as `append` are refused, not ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteFile {
    path: String,
    #[serde(default)]
    content: String,
    encoding: Option<String>,
    permissions: Option<serde_yaml::Value>,
    owner: Option<String>,
}

/// A validated entry, ready to write.
struct PlannedFile {
    /// The path as the user data names it.
    path: PathBuf,
    /// `path` below the root this run treats as `/`.
    target: PathBuf,
    contents: Vec<u8>,
    mode: u32,
}

/// Writes every `write_files` entry of `user_data` below `root` (normally `/`).
///
/// Returns how many files were written.
pub fn provision_files(user_data: &Path, root: &Path) -> Result<usize> {
    let text = fs::read_to_string(user_data)
        .with_context(|| format!("failed to read user data {}", user_data.display()))?;
    let config = parse_cloud_config(&text)
        .with_context(|| format!("malformed user data {}", user_data.display()))?;

    let planned = plan(&config.write_files, root)
        .with_context(|| format!("rejected user data {}", user_data.display()))?;

    for file in &planned {
        write_planned(root, file)?;
    }
    Ok(planned.len())
}

/// Parses cloud-config text, which must start with the `#cloud-config` line.
fn parse_cloud_config(text: &str) -> Result<CloudConfig> {
    let first_line = text.lines().next().unwrap_or_default().trim_end();
    if first_line != CLOUD_CONFIG_HEADER {
        bail!("first line is not {CLOUD_CONFIG_HEADER}");
    }
    // An empty document is a cloud-config with nothing to write.
    let config: Option<CloudConfig> = serde_yaml::from_str(text)?;
    Ok(config.unwrap_or(CloudConfig {
        write_files: Vec::new(),
    }))
}

/// Validates every entry; on any rejection, returns all of them and plans nothing.
fn plan(entries: &[WriteFile], root: &Path) -> Result<Vec<PlannedFile>> {
    let mut planned = Vec::new();
    let mut rejected = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match plan_entry(entry, root) {
            Ok(file) => planned.push(file),
            Err(err) => rejected.push(format!("write_files[{index}] {:?}: {err:#}", entry.path)),
        }
    }
    rejected.extend(file_directory_clashes(&planned));

    if rejected.is_empty() {
        return Ok(planned);
    }
    Err(anyhow!(
        "{} of {} write_files entries rejected, nothing written:\n    - {}",
        rejected.len(),
        entries.len(),
        rejected.join("\n    - ")
    ))
}

fn plan_entry(entry: &WriteFile, root: &Path) -> Result<PlannedFile> {
    let path = allowed_path(&entry.path)?;
    let relative = path.strip_prefix("/")?;
    check_existing_components(root, relative)?;
    check_owner(entry.owner.as_deref())?;

    Ok(PlannedFile {
        target: root.join(relative),
        contents: decode(&entry.content, entry.encoding.as_deref())?,
        mode: parse_mode(entry.permissions.as_ref())?,
        path,
    })
}

/// Accepts only absolute, plain paths strictly below `/run/peerpod`.
fn allowed_path(raw: &str) -> Result<PathBuf> {
    if raw.contains('\0') {
        bail!("path contains a NUL byte");
    }
    if !raw.starts_with('/') {
        bail!("path is not absolute");
    }
    // Checked on the raw text: `Path::components` silently drops inner `.` parts.
    if raw.split('/').any(|part| part == "." || part == "..") {
        bail!("path has a '.' or '..' component");
    }
    if raw.ends_with('/') {
        bail!("path names a directory");
    }
    let path = PathBuf::from(raw);
    match path.strip_prefix(ALLOWED_DIR) {
        Ok(inside) if inside.components().next().is_some() => Ok(path),
        _ => bail!("path is outside {ALLOWED_DIR}/"),
    }
}

/// Refuses a path whose existing parents are symlinks or files, or that is a directory.
// Limitation: checked before writing, not held: a symlink planted between the check and
// the write would be followed. At boot nothing else writes /run/peerpod.
fn check_existing_components(root: &Path, relative: &Path) -> Result<()> {
    let mut current = root.to_path_buf();
    let mut logical = PathBuf::from("/");
    let count = relative.components().count();
    for (index, component) in relative.components().enumerate() {
        current.push(component);
        logical.push(component);
        let meta = match fs::symlink_metadata(&current) {
            Ok(meta) => meta,
            // Everything from here down is created fresh.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => {
                return Err(err).with_context(|| format!("failed to inspect {}", logical.display()))
            }
        };
        let is_last = index + 1 == count;
        if is_last {
            if meta.is_dir() {
                bail!("{} is an existing directory", logical.display());
            }
        } else if meta.file_type().is_symlink() {
            bail!("{} is a symlink", logical.display());
        } else if !meta.is_dir() {
            bail!("{} is not a directory", logical.display());
        }
    }
    Ok(())
}

/// Entries where one file would have to be a directory for another.
fn file_directory_clashes(planned: &[PlannedFile]) -> Vec<String> {
    let mut clashes = Vec::new();
    for file in planned {
        for other in planned {
            if other.path != file.path && other.path.starts_with(&file.path) {
                clashes.push(format!(
                    "{:?}: is a file but {:?} needs it as a directory",
                    file.path.display().to_string(),
                    other.path.display().to_string()
                ));
            }
        }
    }
    clashes
}

/// Decodes an entry's content per its cloud-init `encoding`.
fn decode(content: &str, encoding: Option<&str>) -> Result<Vec<u8>> {
    match encoding {
        None | Some("text/plain") => Ok(content.as_bytes().to_vec()),
        Some("b64" | "base64") => {
            // cloud-init tolerates base64 folded over several lines.
            let compact: String = content.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|err| anyhow!("content is not valid base64: {err}"))
        }
        // Limitation: gzip-compressed content is refused; no decompressor is linked in,
        // and the cloud-api-adaptor never compresses what it sends.
        Some("gz" | "gzip" | "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64") => {
            bail!("gzip encoding is not supported, use plain text or base64")
        }
        Some(other) => bail!("unknown encoding {other:?}"),
    }
}

/// Parses `permissions`, a quoted octal string such as `"0644"`.
fn parse_mode(permissions: Option<&serde_yaml::Value>) -> Result<u32> {
    let Some(permissions) = permissions else {
        return Ok(DEFAULT_MODE);
    };
    // An unquoted 0644 reaches us as a YAML number whose base depends on the YAML version.
    let serde_yaml::Value::String(text) = permissions else {
        bail!("permissions must be a quoted octal string like \"0644\"");
    };
    let digits = text.trim().trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| anyhow!("permissions {text:?} is not an octal mode like \"0644\""))?;
    if mode > 0o777 {
        bail!("permissions {text:?} sets setuid, setgid or sticky bits");
    }
    Ok(mode)
}

/// Accepts only root as the owner.
// Limitation: files are written by this root process and not chowned; an entry for
// another owner is refused rather than written with the wrong owner.
fn check_owner(owner: Option<&str>) -> Result<()> {
    match owner {
        None | Some("root" | "root:root" | "0" | "0:0") => Ok(()),
        Some(other) => bail!("owner {other:?} is not supported, only root"),
    }
}

fn write_planned(root: &Path, file: &PlannedFile) -> Result<()> {
    if let Some(parent) = file.target.parent() {
        create_missing_dirs(root, parent).with_context(|| {
            format!("failed to create the directory of {}", file.path.display())
        })?;
    }
    write_atomic(&file.target, &file.contents, Some(file.mode))
        .with_context(|| format!("failed to write {}", file.path.display()))?;
    info!(path = %file.path.display(), mode = %format!("{:04o}", file.mode), "file provisioned");
    Ok(())
}

/// Creates each missing directory from `root` down to `dir`, mode 0755 whatever the umask.
fn create_missing_dirs(root: &Path, dir: &Path) -> io::Result<()> {
    let relative = dir.strip_prefix(root).unwrap_or(dir);
    let mut current = root.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match DirBuilder::new().mode(DIR_MODE).create(&current) {
            Ok(()) => fs::set_permissions(&current, fs::Permissions::from_mode(DIR_MODE))?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn yaml_string(text: &str) -> serde_yaml::Value {
        serde_yaml::Value::String(text.to_owned())
    }

    #[test]
    fn paths_under_run_peerpod_are_allowed() {
        assert_eq!(
            allowed_path("/run/peerpod/daemon.json").unwrap(),
            PathBuf::from("/run/peerpod/daemon.json")
        );
        assert!(allowed_path("/run/peerpod/a/b/c.toml").is_ok());
    }

    #[test]
    fn paths_elsewhere_are_rejected() {
        let cases = [
            ("/etc/passwd", "outside /run/peerpod/"),
            ("/run/peerpodx/file", "outside /run/peerpod/"),
            ("/run/peerpod", "outside /run/peerpod/"),
            ("run/peerpod/file", "not absolute"),
            ("/run/peerpod/../x", "'..' component"),
            ("/run/peerpod/./x", "'..' component"),
            ("/run/peerpod/dir/", "names a directory"),
            ("/run/peerpod/a\0b", "NUL byte"),
        ];
        for (path, expected) in cases {
            let message = allowed_path(path).unwrap_err().to_string();
            assert!(message.contains(expected), "{path}: {message}");
        }
    }

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode(None).unwrap(), 0o644);
        assert_eq!(parse_mode(Some(&yaml_string("0600"))).unwrap(), 0o600);
        assert_eq!(parse_mode(Some(&yaml_string("755"))).unwrap(), 0o755);
        assert_eq!(parse_mode(Some(&yaml_string("0o640"))).unwrap(), 0o640);
    }

    #[test]
    fn bad_modes_are_rejected() {
        assert!(parse_mode(Some(&yaml_string("0999"))).is_err());
        assert!(parse_mode(Some(&yaml_string("rw-r--r--"))).is_err());
        assert!(parse_mode(Some(&yaml_string("4755"))).is_err());
        let number = serde_yaml::from_str::<serde_yaml::Value>("644").unwrap();
        let message = parse_mode(Some(&number)).unwrap_err().to_string();
        assert!(message.contains("quoted"), "{message}");
    }

    #[test]
    fn content_is_decoded() {
        assert_eq!(decode("plain", None).unwrap(), b"plain");
        assert_eq!(decode("plain", Some("text/plain")).unwrap(), b"plain");
        assert_eq!(decode("aGVs\n bG8=\n", Some("b64")).unwrap(), b"hello");
        assert_eq!(decode("aGVsbG8=", Some("base64")).unwrap(), b"hello");
        assert!(decode("not base64!", Some("b64")).is_err());
        let message = decode("H4sI", Some("gzip+base64")).unwrap_err().to_string();
        assert!(message.contains("gzip"), "{message}");
        assert!(decode("x", Some("rot13")).is_err());
    }

    #[test]
    fn only_root_owner_is_accepted() {
        assert!(check_owner(None).is_ok());
        assert!(check_owner(Some("root:root")).is_ok());
        assert!(check_owner(Some("nobody:nogroup")).is_err());
    }

    #[test]
    fn header_is_required() {
        assert!(parse_cloud_config("write_files: []\n").is_err());
        let config = parse_cloud_config("#cloud-config\n").unwrap();
        assert!(config.write_files.is_empty());
    }

    #[test]
    fn unknown_entry_fields_are_refused() {
        let text = "#cloud-config\nwrite_files:\n- path: /run/peerpod/a\n  append: true\n";
        let message = format!("{:#}", parse_cloud_config(text).err().unwrap());
        assert!(message.contains("append"), "{message}");
    }

    #[test]
    fn a_file_cannot_also_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |path: &str| WriteFile {
            path: path.to_owned(),
            content: String::new(),
            encoding: None,
            permissions: None,
            owner: None,
        };
        let entries = [entry("/run/peerpod/a"), entry("/run/peerpod/a/b")];

        let message = plan(&entries, dir.path()).err().unwrap().to_string();

        assert!(message.contains("needs it as a directory"), "{message}");
    }
}
