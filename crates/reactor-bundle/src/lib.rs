//! The bundle: everything a server needs to run one release of a project, in one
//! `tar` + `zstd` file.
//!
//! ```text
//! reactor.json                     the index below (always the first entry)
//! reactor.toml                     the manifest as written
//! migrations/<file>.sql            the SQL migrations, applied in name order
//! functions/<fn>/<module>          each module of a JS/TS function, already transpiled
//! functions/<fn>/<entry>.wasm      a WASM function's module
//! sites/<site>/<path>              each site's built assets
//! variants/<site>/<path>.gz|.br    their precompressed variants, where worth it
//! ```
//!
//! `reactor.json` lists every other entry with its SHA-256 and size, so the server checks
//! each byte it receives, and asks only for files it does not already hold (a deploy that
//! changes one page uploads one page). The release's id is the SHA-256 of `reactor.json`:
//! the same inputs give a byte-identical bundle ([`build`]) and so the same release.

mod build;
mod ignore_rules;
mod read;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use build::{BuildOptions, BuildReport, Built, build, run_site_builds, thin};
pub use ignore_rules::IgnoreRules;
pub use reactor_sites::{Asset, Variant};
pub use read::{Limits, Received, read};

/// The version of the layout above; a server refuses a format it does not know.
pub const FORMAT: u32 = 1;
/// The first entry of every bundle.
pub const INDEX: &str = "reactor.json";

/// `reactor.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub format: u32,
    pub project_id: String,
    pub name: String,
    /// Migration file names in the order they apply (each at `migrations/<name>`).
    pub migrations: Vec<String>,
    pub functions: Vec<BuiltFunction>,
    pub sites: Vec<BuiltSite>,
    /// Every entry but this index, sorted by path.
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltFunction {
    pub name: String,
    /// The entry module (JS) or the module file (WASM), under `functions/<name>/`.
    pub entry: String,
    pub kind: FunctionKind,
    /// JS: every module of the graph, each at `functions/<name>/<module>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
    /// JS: how each import was resolved when the bundle was built.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionKind {
    Js,
    Wasm,
}

/// `from` imports `specifier`, which is the module `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub from: String,
    pub specifier: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltSite {
    pub name: String,
    /// Site path → the asset (its bytes at `sites/<name>/<path>`).
    pub files: BTreeMap<String, Asset>,
}

impl Index {
    /// The index as stored: compact JSON, keys in declaration order, so its hash is stable.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The release an index describes: the hex SHA-256 of its bytes.
    pub fn release_of(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }

    /// The migrations' paths in the bundle, in order.
    pub fn migration_paths(&self) -> impl Iterator<Item = (&str, String)> {
        self.migrations
            .iter()
            .map(|name| (name.as_str(), format!("migrations/{name}")))
    }
}

/// The short form of a release id people read and type (like a git commit's).
pub fn short(release: &str) -> &str {
    &release[..release.len().min(12)]
}

/// Why a bundle was not made or not accepted. Each says what to do in [`BundleError::hint`].
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{path}: {message}")]
    Function { path: String, message: String },
    #[error("site `{site}`: the build command `{command}` failed ({status})")]
    SiteBuild {
        site: String,
        command: String,
        status: String,
    },
    #[error("site `{site}`: {message}")]
    Site { site: String, message: String },
    #[error("this is not a Reactor bundle: {0}")]
    NotABundle(String),
    #[error("the bundle's format {0} is newer than this server understands ({FORMAT})")]
    Format(u32),
    #[error("the bundle's index is invalid: {0}")]
    Index(String),
    #[error("`{0}` is not a safe path inside a bundle")]
    UnsafePath(String),
    #[error("`{0}` is a link or a special file; a bundle holds regular files only")]
    NotAFile(String),
    #[error("`{0}` is not listed in the bundle's index")]
    NotListed(String),
    #[error("`{0}` appears twice in the bundle")]
    Duplicate(String),
    #[error("`{path}` does not match its hash in the index (expected {expected}, got {actual})")]
    Tampered {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("the bundle is too large: {0}")]
    TooLarge(String),
}

impl BundleError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            BundleError::Function { .. } => {
                "fix the function's code; `reactor dev` shows the same error as you edit".into()
            }
            BundleError::SiteBuild { .. } => {
                "run the command yourself in the site's `source` directory to see why".into()
            }
            BundleError::Site { .. } => {
                "check the site's `source` and `output` in reactor.toml".into()
            }
            BundleError::NotABundle(_) | BundleError::Format(_) | BundleError::Index(_) => {
                "make the bundle with `reactor build` of the same version as the server".into()
            }
            BundleError::UnsafePath(_)
            | BundleError::NotAFile(_)
            | BundleError::NotListed(_)
            | BundleError::Duplicate(_)
            | BundleError::Tampered { .. } => {
                "the bundle was changed after `reactor build` made it; build it again".into()
            }
            BundleError::TooLarge(_) => {
                "leave large files out with .reactorignore, or raise the server's [deploy] limits"
                    .into()
            }
            BundleError::Io(_) => return None,
        })
    }
}

/// A path as bundles write them: relative, `/`-separated, no empty, `.` or `..` segment, no
/// backslash or NUL. Anything else is refused wherever a path enters or leaves a bundle.
pub fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 4096
        && !path.starts_with('/')
        && !path.contains(['\\', '\0'])
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}
