//! Reading a bundle on the server, trusting nothing: the index is checked for consistency,
//! then every entry is checked against it (a regular file, a safe path, listed, the right
//! size and hash, seen once) before it is handed on. A bundle may be thin — the index and
//! only the files the server lacks — so what is absent is the caller's to check.

use std::collections::HashSet;
use std::io::Read;

use sha2::{Digest, Sha256};

use crate::{BundleError, FORMAT, FileEntry, FunctionKind, INDEX, Index, is_safe_path};

/// What a server accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// One file.
    pub max_file_bytes: u64,
    /// Every file of the release together.
    pub max_total_bytes: u64,
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 100 * 1024 * 1024,
            max_total_bytes: 1024 * 1024 * 1024,
            max_files: 100_000,
        }
    }
}

/// A bundle read and verified.
#[derive(Debug)]
pub struct Received {
    pub index: Index,
    /// The index exactly as it was in the bundle (the release id is its hash).
    pub index_bytes: Vec<u8>,
    pub release: String,
    /// The entries the bundle carried (each already handed to `store`).
    pub received: Vec<FileEntry>,
}

/// The index is at most this large.
const MAX_INDEX_BYTES: u64 = 32 * 1024 * 1024;

/// Reads the `tar.zst` bundle from `reader`; each verified file goes to `store`.
pub fn read<R: Read>(
    reader: R,
    limits: &Limits,
    mut store: impl FnMut(&FileEntry, Vec<u8>) -> Result<(), BundleError>,
) -> Result<Received, BundleError> {
    let decoder = zstd::Decoder::new(reader)
        .map_err(|e| BundleError::NotABundle(format!("not zstd: {e}")))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive
        .entries()
        .map_err(|e| BundleError::NotABundle(e.to_string()))?;

    let first = entries
        .next()
        .ok_or_else(|| BundleError::NotABundle("it is empty".into()))?
        .map_err(|e| BundleError::NotABundle(e.to_string()))?;
    if entry_path(&first)? != INDEX {
        return Err(BundleError::NotABundle(format!(
            "its first entry is not {INDEX}"
        )));
    }
    let index_bytes = read_entry(first, MAX_INDEX_BYTES, INDEX)?;
    let index: Index =
        serde_json::from_slice(&index_bytes).map_err(|e| BundleError::Index(e.to_string()))?;
    check_index(&index, limits)?;
    let release = Index::release_of(&index_bytes);

    let mut seen = HashSet::new();
    let mut received = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BundleError::NotABundle(e.to_string()))?;
        let path = entry_path(&entry)?;
        let listed = index
            .file(&path)
            .ok_or_else(|| BundleError::NotListed(path.clone()))?
            .clone();
        if !seen.insert(path.clone()) {
            return Err(BundleError::Duplicate(path));
        }
        if entry.header().size().unwrap_or(u64::MAX) != listed.size {
            return Err(BundleError::Tampered {
                path,
                expected: format!("{} bytes", listed.size),
                actual: format!("{} bytes", entry.header().size().unwrap_or(0)),
            });
        }
        let bytes = read_entry(entry, listed.size, &path)?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != listed.sha256 {
            return Err(BundleError::Tampered {
                path,
                expected: listed.sha256,
                actual,
            });
        }
        store(&listed, bytes)?;
        received.push(listed);
    }
    Ok(Received {
        index,
        index_bytes,
        release,
        received,
    })
}

/// A regular file's safe path; links, directories and devices are refused.
fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, BundleError> {
    let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    if !is_safe_path(&raw) {
        return Err(BundleError::UnsafePath(raw));
    }
    if !entry.header().entry_type().is_file() {
        return Err(BundleError::NotAFile(raw));
    }
    Ok(raw)
}

fn read_entry<R: Read>(
    mut entry: tar::Entry<'_, R>,
    limit: u64,
    path: &str,
) -> Result<Vec<u8>, BundleError> {
    let size = entry.header().size().unwrap_or(u64::MAX);
    if size > limit {
        return Err(BundleError::TooLarge(format!(
            "{path} is {size} bytes (at most {limit})"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    (&mut entry).take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The index must describe a release the server can run: safe sorted paths, hashes of the
/// right shape, every function module, site asset and migration present in `files`, within
/// the limits.
fn check_index(index: &Index, limits: &Limits) -> Result<(), BundleError> {
    let bad = |m: String| Err(BundleError::Index(m));
    if index.format > FORMAT || index.format == 0 {
        return Err(BundleError::Format(index.format));
    }
    if index.files.len() > limits.max_files {
        return Err(BundleError::TooLarge(format!(
            "{} files (at most {})",
            index.files.len(),
            limits.max_files
        )));
    }
    let mut total: u64 = 0;
    for (i, f) in index.files.iter().enumerate() {
        if !is_safe_path(&f.path) || f.path == INDEX {
            return Err(BundleError::UnsafePath(f.path.clone()));
        }
        if i > 0 && index.files[i - 1].path >= f.path {
            return bad(format!("files are not sorted or `{}` repeats", f.path));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad(format!("`{}` has no SHA-256", f.path));
        }
        if f.size > limits.max_file_bytes {
            return Err(BundleError::TooLarge(format!(
                "{} is {} bytes (at most {})",
                f.path, f.size, limits.max_file_bytes
            )));
        }
        total = total.saturating_add(f.size);
    }
    if total > limits.max_total_bytes {
        return Err(BundleError::TooLarge(format!(
            "{total} bytes of files (at most {})",
            limits.max_total_bytes
        )));
    }
    let has = |path: &str| index.file(path).is_some();
    if !has(reactor_manifest::MANIFEST_FILE) {
        return bad(format!("it has no {}", reactor_manifest::MANIFEST_FILE));
    }
    for (name, path) in index.migration_paths() {
        if !is_safe_path(name) || name.contains('/') || !has(&path) {
            return bad(format!("migration `{name}` is missing"));
        }
    }
    for f in &index.functions {
        if !is_safe_path(&f.name) || f.name.contains('/') {
            return bad(format!("`{}` is not a function name", f.name));
        }
        let module = |m: &str| format!("functions/{}/{m}", f.name);
        match f.kind {
            FunctionKind::Wasm => {
                if !has(&module(&f.entry)) {
                    return bad(format!("function `{}` has no module", f.name));
                }
            }
            FunctionKind::Js => {
                if !f.modules.contains(&f.entry) {
                    return bad(format!("function `{}` has no entry module", f.name));
                }
                for m in &f.modules {
                    if !is_safe_path(m) || !has(&module(m)) {
                        return bad(format!("function `{}`: module `{m}` is missing", f.name));
                    }
                }
                for l in &f.links {
                    if !f.modules.contains(&l.from) || !f.modules.contains(&l.to) {
                        return bad(format!("function `{}`: a link names no module", f.name));
                    }
                }
            }
        }
    }
    for s in &index.sites {
        if !is_safe_path(&s.name) || s.name.contains('/') {
            return bad(format!("`{}` is not a site name", s.name));
        }
        for (path, asset) in &s.files {
            let listed = is_safe_path(path)
                && index
                    .file(&format!("sites/{}/{path}", s.name))
                    .is_some_and(|f| f.sha256 == asset.sha256 && f.size == asset.size);
            let variant = |v: &Option<crate::Variant>, ext: &str| {
                v.as_ref().is_none_or(|v| {
                    index
                        .file(&format!("variants/{}/{path}.{ext}", s.name))
                        .is_some_and(|f| f.sha256 == v.sha256 && f.size == v.size)
                })
            };
            if !listed || !variant(&asset.gzip, "gz") || !variant(&asset.br, "br") {
                return bad(format!(
                    "site `{}`: `{path}` does not match its file",
                    s.name
                ));
            }
        }
    }
    Ok(())
}
