//! Atomic file writes and path checks shared by every writer of config and secrets.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of a file written without an explicit mode and with no file to take one from.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// Distinguishes temp files made by concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `contents` so that readers see the old file or the new one, never a mix.
///
/// The mode is `mode` if given, else the mode of the file being replaced, else
/// [`DEFAULT_FILE_MODE`]. A symlink at `path` is replaced, not followed. If writing or
/// renaming fails, the temp file is removed and `path` is untouched; an error after that
/// comes from syncing the directory. Errors do not name the path: callers do.
pub fn write_atomic(path: &Path, contents: &[u8], mode: Option<u32>) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mode = match mode {
        Some(mode) => mode,
        None => existing_mode(path)?.unwrap_or(DEFAULT_FILE_MODE),
    };

    let (temp_path, mut temp) = create_temp(dir, file_name)?;
    let written = (|| {
        temp.write_all(contents)?;
        temp.set_permissions(fs::Permissions::from_mode(mode))?;
        temp.sync_all()?;
        fs::rename(&temp_path, path)
    })();
    if let Err(err) = written {
        // The temp file is ours alone; failing to remove it must not hide the real error.
        let _ = fs::remove_file(&temp_path);
        return Err(err);
    }

    // The rename is durable only once the directory entry itself reaches the disk.
    File::open(dir)?.sync_all()
}

/// Reads a file to a string, or `None` when it does not exist.
pub fn read_to_string_if_exists(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// The permission bits of the file at `path`, following no symlink, or `None` if absent.
fn existing_mode(path: &Path) -> io::Result<Option<u32>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.permissions().mode() & 0o7777)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Creates a new, private temp file next to the target, never reusing an existing name.
fn create_temp(dir: &Path, file_name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    loop {
        let mut name = OsString::from(".");
        name.push(file_name);
        name.push(format!(
            ".tmp.{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp_path = dir.join(name);
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path);
        match opened {
            Ok(file) => return Ok((temp_path, file)),
            // A leftover of a crashed run with the same pid: try the next name.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_support::{entries, mode_of};

    #[test]
    fn new_file_gets_default_mode_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");

        write_atomic(&path, b"x = 1\n", None).unwrap();

        assert_eq!(fs::read_to_string(&path).unwrap(), "x = 1\n");
        assert_eq!(mode_of(&path), DEFAULT_FILE_MODE);
        assert_eq!(entries(dir.path()), vec!["a.toml"]);
    }

    #[test]
    fn explicit_mode_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.json");
        fs::write(&path, b"old").unwrap();

        write_atomic(&path, b"{}", Some(0o600)).unwrap();

        assert_eq!(fs::read(&path).unwrap(), b"{}");
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn replacing_keeps_the_existing_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();

        write_atomic(&path, b"new", None).unwrap();

        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), 0o640);
        assert_eq!(entries(dir.path()), vec!["agent.toml"]);
    }

    #[test]
    fn symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        fs::write(&target, b"target").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();

        write_atomic(&link, b"new", None).unwrap();

        assert_eq!(fs::read(&target).unwrap(), b"target");
        assert!(!fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&link).unwrap(), b"new");
    }

    #[test]
    fn failed_rename_leaves_target_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory cannot be replaced by a file, so the rename fails.
        let path = dir.path().join("busy");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"kept").unwrap();

        let err = write_atomic(&path, b"new", Some(0o644)).unwrap_err();

        assert_ne!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"kept");
        assert_eq!(entries(dir.path()), vec!["busy"]);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent/file");

        let err = write_atomic(&path, b"x", None).unwrap_err();

        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn path_without_file_name_is_rejected() {
        let err = write_atomic(Path::new("/"), b"x", None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn read_if_exists_tells_absent_from_present() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(read_to_string_if_exists(&path).unwrap(), None);
        fs::write(&path, "text").unwrap();
        assert_eq!(
            read_to_string_if_exists(&path).unwrap().as_deref(),
            Some("text")
        );
    }
}
