//! `reactor build`: the project's migrations, functions (transpiled here, so the server never
//! parses TypeScript) and sites (built by their own command when they have one, then
//! precompressed) into one reproducible bundle.
//!
//! Reproducible means byte-identical for the same inputs: entries in path order, every tar
//! header with the same owner, mode and time, compressed variants made without timestamps,
//! and the index serialised with a fixed key order.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use reactor_manifest::{Manifest, SiteConfig};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ignore_rules::IgnoreRules;
use crate::{
    Asset, BuiltFunction, BuiltSite, BundleError, FORMAT, FileEntry, FunctionKind, INDEX, Index,
    Link, Variant,
};

/// Site files smaller than this are not worth compressing.
const COMPRESS_FROM: u64 = 512;
/// A variant is kept only when it saves at least a tenth.
const KEEP_RATIO: f64 = 0.9;
/// zstd level of the bundle itself: small uploads without a slow build.
const ZSTD_LEVEL: i32 = 10;
/// Extensions of files that compress (text and a few binary formats that are not already
/// compressed).
const COMPRESSIBLE: &[&str] = &[
    "html",
    "htm",
    "css",
    "js",
    "mjs",
    "cjs",
    "json",
    "map",
    "svg",
    "xml",
    "txt",
    "md",
    "csv",
    "wasm",
    "ico",
    "ttf",
    "otf",
    "eot",
    "webmanifest",
];

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Where the bundle is written [default: `<project>/.reactor/build`].
    pub out_dir: Option<PathBuf>,
}

/// A bundle written to disk.
#[derive(Debug)]
pub struct Built {
    pub path: PathBuf,
    pub release: String,
    pub index: Index,
    pub report: BuildReport,
}

/// What went in, for `reactor build --json` and the human summary.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub release: String,
    pub path: String,
    /// The bundle file's size.
    pub bytes: u64,
    /// The files inside, before compression.
    pub content_bytes: u64,
    pub migrations: Vec<String>,
    pub functions: Vec<FunctionReport>,
    pub sites: Vec<SiteReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionReport {
    pub name: String,
    pub kind: FunctionKind,
    pub modules: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteReport {
    pub name: String,
    pub files: usize,
    pub bytes: u64,
    /// Files that got a gzip or brotli variant.
    pub compressed: usize,
}

/// An entry's bytes: in memory (made by the build) or a file of the project, read when the
/// tar is written so a large site is never held whole.
enum Content {
    Bytes(Vec<u8>),
    File(PathBuf),
}

struct Entries(BTreeMap<String, (Content, FileEntry)>);

impl Entries {
    fn add_bytes(&mut self, path: String, bytes: Vec<u8>) -> FileEntry {
        let entry = FileEntry {
            path: path.clone(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            size: bytes.len() as u64,
        };
        self.0.insert(path, (Content::Bytes(bytes), entry.clone()));
        entry
    }

    fn add_file(&mut self, path: String, file: &Path) -> Result<FileEntry, BundleError> {
        let mut hasher = Sha256::new();
        let mut reader = std::fs::File::open(file)?;
        let size = std::io::copy(&mut reader, &mut hasher)?;
        let entry = FileEntry {
            path: path.clone(),
            sha256: hex::encode(hasher.finalize()),
            size,
        };
        self.0
            .insert(path, (Content::File(file.to_path_buf()), entry.clone()));
        Ok(entry)
    }
}

/// Runs the `build` command of every site that has one, in its `source` directory, with the
/// command's output shown as it runs.
pub fn run_site_builds(manifest: &Manifest) -> Result<(), BundleError> {
    for site in &manifest.sites {
        let Some(command) = &site.build else { continue };
        let dir = manifest.root.join(&site.source);
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| BundleError::SiteBuild {
                site: site.name.clone(),
                command: command.clone(),
                status: e.to_string(),
            })?;
        if !status.success() {
            return Err(BundleError::SiteBuild {
                site: site.name.clone(),
                command: command.clone(),
                status: status.to_string(),
            });
        }
    }
    Ok(())
}

/// Makes the bundle of `manifest`'s project (sites as they are on disk: see
/// [`run_site_builds`]).
pub fn build(manifest: &Manifest, options: &BuildOptions) -> Result<Built, BundleError> {
    let root = &manifest.root;
    let ignore = IgnoreRules::load(root)?;
    let mut entries = Entries(BTreeMap::new());

    entries.add_bytes(
        reactor_manifest::MANIFEST_FILE.into(),
        std::fs::read(&manifest.path)?,
    );

    let mut migrations = Vec::new();
    let dir = manifest.migrations_dir();
    if dir.is_dir() {
        let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql") && p.is_file())
            .filter(|p| !ignore.excludes(p, false))
            .filter_map(|p| Some((p.file_name()?.to_str()?.to_string(), p)))
            .collect();
        names.sort();
        for (name, path) in names {
            entries.add_file(format!("migrations/{name}"), &path)?;
            migrations.push(name);
        }
    }

    let mut functions = Vec::new();
    let mut function_reports = Vec::new();
    let transpiler = reactor_functions::source::TranspileCache::default();
    for f in &manifest.functions {
        let dir = root.join(&f.source);
        let located = |e: &dyn std::fmt::Display, file: &str| BundleError::Function {
            path: dir.join(file).display().to_string(),
            message: e.to_string(),
        };
        let is_wasm = f.entry.ends_with(".wasm") || f.entry.ends_with(".wat");
        if is_wasm {
            let entry = entries.add_file(
                format!("functions/{}/{}", f.name, f.entry),
                &dir.join(&f.entry),
            )?;
            function_reports.push(FunctionReport {
                name: f.name.clone(),
                kind: FunctionKind::Wasm,
                modules: 1,
                bytes: entry.size,
            });
            functions.push(BuiltFunction {
                name: f.name.clone(),
                entry: f.entry.clone(),
                kind: FunctionKind::Wasm,
                modules: Vec::new(),
                links: Vec::new(),
            });
            continue;
        }
        let graph = transpiler
            .load(&dir, &f.entry)
            .map_err(|e| BundleError::Function {
                path: format!("{}:{}:{}", dir.join(&e.file).display(), e.line, e.column),
                message: e.message.clone(),
            })?;
        let mut modules: Vec<String> = graph.modules.keys().cloned().collect();
        modules.sort();
        let mut bytes = 0;
        for module in &modules {
            if !crate::is_safe_path(module) {
                return Err(located(&"a module path the bundle cannot hold", module));
            }
            let code = graph.modules[module].as_bytes().to_vec();
            bytes += code.len() as u64;
            entries.add_bytes(format!("functions/{}/{module}", f.name), code);
        }
        let mut links: Vec<Link> = graph
            .links
            .iter()
            .map(|((from, specifier), to)| Link {
                from: from.clone(),
                specifier: specifier.clone(),
                to: to.clone(),
            })
            .collect();
        links.sort_by(|a, b| (&a.from, &a.specifier).cmp(&(&b.from, &b.specifier)));
        function_reports.push(FunctionReport {
            name: f.name.clone(),
            kind: FunctionKind::Js,
            modules: modules.len(),
            bytes,
        });
        functions.push(BuiltFunction {
            name: f.name.clone(),
            entry: graph.entry.clone(),
            kind: FunctionKind::Js,
            modules,
            links,
        });
    }

    let mut sites = Vec::new();
    let mut site_reports = Vec::new();
    for site in &manifest.sites {
        let (built, report) = add_site(&mut entries, root, site, &ignore)?;
        sites.push(built);
        site_reports.push(report);
    }

    let files: Vec<FileEntry> = entries.0.values().map(|(_, e)| e.clone()).collect();
    let content_bytes = files.iter().map(|f| f.size).sum();
    let index = Index {
        format: FORMAT,
        project_id: manifest.project_id.clone(),
        name: manifest.name.clone(),
        migrations: migrations.clone(),
        functions,
        sites,
        files,
    };
    let index_bytes = index.to_bytes();
    let release = Index::release_of(&index_bytes);

    let out_dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| root.join(".reactor").join("build"));
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join(format!(
        "{}-{}.tar.zst",
        manifest.project_id,
        crate::short(&release)
    ));
    let partial = out_dir.join(format!(".{}.partial", crate::short(&release)));
    write_tar(&partial, &index_bytes, &entries)?;
    std::fs::rename(&partial, &path)?;
    let bytes = std::fs::metadata(&path)?.len();

    let report = BuildReport {
        release: release.clone(),
        path: path.display().to_string(),
        bytes,
        content_bytes,
        migrations,
        functions: function_reports,
        sites: site_reports,
    };
    Ok(Built {
        path,
        release,
        index,
        report,
    })
}

/// The directory a site's files come from: `source`, or the `output` its build writes
/// (`dist` for Vite, `out` for a Next.js static export unless set).
pub(crate) fn site_dir(root: &Path, site: &SiteConfig) -> Result<PathBuf, BundleError> {
    let source = root.join(&site.source);
    let output = match (&site.output, site.framework.as_str()) {
        (Some(output), _) => Some(output.clone()),
        (None, "static") => None,
        (None, "vite") => Some("dist".into()),
        (None, "nextjs") => Some("out".into()),
        (None, other) => {
            return Err(BundleError::Site {
                site: site.name.clone(),
                message: format!(
                    "framework `{other}` needs `output`, the directory its build writes"
                ),
            });
        }
    };
    let dir = output.map_or(source.clone(), |o| source.join(o));
    if !dir.is_dir() {
        return Err(BundleError::Site {
            site: site.name.clone(),
            message: format!(
                "{} does not exist{}",
                dir.display(),
                if site.build.is_some() {
                    " (did its build run?)"
                } else {
                    ""
                }
            ),
        });
    }
    Ok(dir)
}

fn add_site(
    entries: &mut Entries,
    root: &Path,
    site: &SiteConfig,
    ignore: &IgnoreRules,
) -> Result<(BuiltSite, SiteReport), BundleError> {
    let dir = site_dir(root, site)?;
    let real_dir = dir.canonicalize()?;
    let mut found = Vec::new();
    walk(&dir, &real_dir, "", ignore, &mut found, site)?;
    found.sort();
    let mut files = BTreeMap::new();
    let mut bytes = 0;
    let mut compressed = 0;
    for (rel, path) in found {
        let entry = entries.add_file(format!("sites/{}/{rel}", site.name), &path)?;
        bytes += entry.size;
        let (gzip, br) = if entry.size >= COMPRESS_FROM && compressible(&rel) {
            let data = std::fs::read(&path)?;
            let worth = |v: &[u8]| (v.len() as f64) <= entry.size as f64 * KEEP_RATIO;
            let mut variant = |bytes: Vec<u8>, ext: &str| {
                worth(&bytes).then(|| {
                    let e = entries.add_bytes(format!("variants/{}/{rel}.{ext}", site.name), bytes);
                    Variant {
                        sha256: e.sha256,
                        size: e.size,
                    }
                })
            };
            let gz = variant(gzip(&data)?, "gz");
            let b = variant(brotli_bytes(&data)?, "br");
            (gz, b)
        } else {
            (None, None)
        };
        if gzip.is_some() || br.is_some() {
            compressed += 1;
        }
        files.insert(
            rel,
            Asset {
                sha256: entry.sha256,
                size: entry.size,
                gzip,
                br,
            },
        );
    }
    let report = SiteReport {
        name: site.name.clone(),
        files: files.len(),
        bytes,
        compressed,
    };
    Ok((
        BuiltSite {
            name: site.name.clone(),
            files,
        },
        report,
    ))
}

/// The files under `dir`: hidden ones left out (but `.well-known`), `.reactorignore`
/// honoured, symbolic links followed only when they stay inside the site.
fn walk(
    dir: &Path,
    real_root: &Path,
    prefix: &str,
    ignore: &IgnoreRules,
    out: &mut Vec<(String, PathBuf)>,
    site: &SiteConfig,
) -> Result<(), BundleError> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(BundleError::Site {
                site: site.name.clone(),
                message: format!("{} has a name that is not UTF-8", entry.path().display()),
            });
        };
        if name.starts_with('.') && name != ".well-known" {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path)?;
        if ignore.excludes(&path, meta.is_dir()) {
            continue;
        }
        let real = path.canonicalize()?;
        if !real.starts_with(real_root) {
            return Err(BundleError::Site {
                site: site.name.clone(),
                message: format!("{} links outside the site's directory", path.display()),
            });
        }
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        if meta.is_dir() {
            walk(&path, real_root, &rel, ignore, out, site)?;
        } else if meta.is_file() {
            if !crate::is_safe_path(&rel) {
                return Err(BundleError::Site {
                    site: site.name.clone(),
                    message: format!("{rel} cannot be served"),
                });
            }
            out.push((rel, path));
        }
    }
    Ok(())
}

fn compressible(path: &str) -> bool {
    path.rsplit_once('.')
        .is_some_and(|(_, ext)| COMPRESSIBLE.contains(&ext.to_ascii_lowercase().as_str()))
}

/// gzip at the best level, with no name and no time in its header (reproducible).
fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(data)?;
    encoder.finish()
}

fn brotli_bytes(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: if data.len() > 4 * 1024 * 1024 { 9 } else { 11 },
        lgwin: 22,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut std::io::Cursor::new(data), &mut out, &params)?;
    Ok(out)
}

fn write_tar(path: &Path, index: &[u8], entries: &Entries) -> Result<(), BundleError> {
    let file = std::fs::File::create(path)?;
    let encoder = zstd::Encoder::new(std::io::BufWriter::new(file), ZSTD_LEVEL)?;
    let mut tar = tar::Builder::new(encoder);
    append(&mut tar, INDEX, index.len() as u64, index)?;
    for (path, (content, entry)) in &entries.0 {
        match content {
            Content::Bytes(bytes) => append(&mut tar, path, entry.size, bytes.as_slice())?,
            Content::File(file) => {
                let reader = std::fs::File::open(file)?;
                // The file must not change between hashing and packing.
                let len = reader.metadata()?.len();
                if len != entry.size {
                    return Err(BundleError::Io(std::io::Error::other(format!(
                        "{} changed while the bundle was being built",
                        file.display()
                    ))));
                }
                append(&mut tar, path, entry.size, reader)?;
            }
        }
    }
    let encoder = tar.into_inner()?;
    let mut writer = encoder.finish()?;
    writer.flush()?;
    writer
        .into_inner()
        .map_err(|e| BundleError::Io(e.into_error()))?
        .sync_all()?;
    Ok(())
}

fn append<W: Write, R: std::io::Read>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: R,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data)
}

/// The bundle at `path` re-packed with its index and only the files `keep` selects: what a
/// deploy uploads when the server already holds the rest.
pub fn thin(path: &Path, keep: impl Fn(&FileEntry) -> bool) -> Result<Vec<u8>, BundleError> {
    let reader = std::io::BufReader::new(std::fs::File::open(path)?);
    let limits = crate::Limits {
        max_file_bytes: u64::MAX,
        max_total_bytes: u64::MAX,
        max_files: usize::MAX,
    };
    let mut kept: Vec<(FileEntry, Vec<u8>)> = Vec::new();
    let received = crate::read(reader, &limits, |entry, bytes| {
        if keep(entry) {
            kept.push((entry.clone(), bytes));
        }
        Ok(())
    })?;
    let mut out = Vec::new();
    {
        let encoder = zstd::Encoder::new(&mut out, ZSTD_LEVEL)?;
        let mut tar = tar::Builder::new(encoder);
        append(
            &mut tar,
            INDEX,
            received.index_bytes.len() as u64,
            received.index_bytes.as_slice(),
        )?;
        for (entry, bytes) in &kept {
            append(&mut tar, &entry.path, entry.size, bytes.as_slice())?;
        }
        tar.into_inner()?.finish()?;
    }
    Ok(out)
}
