//! Filesystem checks shared by the unit tests of this crate.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The permission bits of the file at `path`.
pub(crate) fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o7777
}

/// The names in `dir`, sorted, to show that no temp file was left behind.
pub(crate) fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("dir is readable")
        .map(|entry| {
            let entry = entry.expect("dir entry is readable");
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    names
}
