use std::path::{Path, PathBuf};

use crate::{MANIFEST_FILE, ManifestError};

/// Finds `reactor.toml` in `start` or the nearest parent, as Cargo finds `Cargo.toml`. The
/// search stops at the git root (a directory holding `.git`), so a project never picks up a
/// manifest from outside its repository.
pub fn discover(start: &Path) -> Result<PathBuf, ManifestError> {
    for dir in start.ancestors() {
        let candidate = dir.join(MANIFEST_FILE);
        if candidate.is_file() {
            return Ok(candidate);
        }
        if dir.join(".git").exists() {
            return Err(ManifestError::NotFound {
                start: start.to_path_buf(),
                stop: Some(dir.to_path_buf()),
            });
        }
    }
    Err(ManifestError::NotFound {
        start: start.to_path_buf(),
        stop: None,
    })
}
