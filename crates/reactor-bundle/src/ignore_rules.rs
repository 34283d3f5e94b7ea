//! `.reactorignore`: gitignore syntax, relative to the project root. `.reactor/`, `.env*` and
//! `node_modules/` are excluded first, so a `!` line in the file can re-include them.

use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::BundleError;

/// The file read from the project root.
pub const FILE: &str = ".reactorignore";
/// Excluded unless `.reactorignore` re-includes them.
const DEFAULTS: &[&str] = &[".reactor/", ".env*", "node_modules/"];

#[derive(Debug)]
pub struct IgnoreRules {
    root: PathBuf,
    rules: Gitignore,
}

impl IgnoreRules {
    /// The defaults and the project's `.reactorignore`, if it has one.
    pub fn load(root: &Path) -> Result<IgnoreRules, BundleError> {
        let mut builder = GitignoreBuilder::new(root);
        for line in DEFAULTS {
            builder
                .add_line(None, line)
                .map_err(|e| BundleError::Io(std::io::Error::other(e.to_string())))?;
        }
        let file = root.join(FILE);
        if file.is_file() {
            let text = std::fs::read_to_string(&file)?;
            for (n, line) in text.lines().enumerate() {
                builder.add_line(Some(file.clone()), line).map_err(|e| {
                    BundleError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}:{}: {e}", file.display(), n + 1),
                    ))
                })?;
            }
        }
        let rules = builder
            .build()
            .map_err(|e| BundleError::Io(std::io::Error::other(e.to_string())))?;
        Ok(IgnoreRules {
            root: root.to_path_buf(),
            rules,
        })
    }

    /// Whether `path` (absolute, under the root) stays out of the bundle. A directory's rules
    /// apply to everything below it, as in git.
    pub fn excludes(&self, path: &Path, is_dir: bool) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        if rel.as_os_str().is_empty() {
            return false;
        }
        // The deepest rule that speaks wins; a directory excluded excludes its contents.
        let mut current = PathBuf::new();
        let components: Vec<_> = rel.components().collect();
        for (i, component) in components.iter().enumerate() {
            current.push(component);
            let last = i + 1 == components.len();
            match self
                .rules
                .matched(&current, if last { is_dir } else { true })
            {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) | Match::None => {}
            }
        }
        false
    }
}
