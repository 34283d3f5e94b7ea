//! A function's module graph: its entry and every file it imports, relative to the function's
//! directory, each stripped of TypeScript by oxc once and cached by content hash.
//!
//! The graph is resolved ahead of any request, so a missing file, an import that leaves the
//! function's directory or a syntax error is reported when the function loads (with file, line
//! and column), not when a caller happens to reach it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use oxc::allocator::Allocator;
use oxc::codegen::Codegen;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::SourceType;
use oxc::transformer::{TransformOptions, Transformer};
use sha2::{Digest, Sha256};

/// Extensions tried, in order, for an import written without one (`./util` → `./util.ts`).
const RESOLVE_EXTENSIONS: &[&str] = &["ts", "mts", "js", "mjs"];

/// Why a function's code could not be loaded. `file` is relative to the function's directory.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}:{column}: {message}")]
pub struct SourceError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl SourceError {
    fn whole_file(file: &str, message: String, hint: Option<String>) -> SourceError {
        SourceError {
            file: file.to_string(),
            line: 1,
            column: 1,
            message,
            hint,
        }
    }
}

/// The loaded code of one function: module name (a `/`-separated path relative to the
/// function's directory) → JavaScript.
#[derive(Debug)]
pub struct ModuleGraph {
    pub entry: String,
    pub modules: HashMap<String, Arc<str>>,
    /// (importing module, specifier as written) → module: the resolution done at load time,
    /// which the engine replays without touching the disk.
    pub links: HashMap<(String, String), String>,
    /// SHA-256 over every module's name and source: equal hashes mean identical code.
    pub hash: String,
}

impl ModuleGraph {
    /// A graph from modules already transpiled (what a bundle carries), with its hash.
    pub fn new(
        entry: String,
        modules: HashMap<String, Arc<str>>,
        links: HashMap<(String, String), String>,
    ) -> ModuleGraph {
        let mut names: Vec<&String> = modules.keys().collect();
        names.sort();
        let mut hasher = Sha256::new();
        for name in names {
            let code = &modules[name];
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update((code.len() as u64).to_le_bytes());
            hasher.update(code.as_bytes());
        }
        ModuleGraph {
            entry,
            modules,
            links,
            hash: hex::encode(hasher.finalize()),
        }
    }
}

/// Transpiled files by the SHA-256 of their name and source, so a reload after an edit strips
/// only the files that changed.
#[derive(Debug, Default)]
pub struct TranspileCache {
    entries: Mutex<HashMap<[u8; 32], Transpiled>>,
}

#[derive(Debug, Clone)]
struct Transpiled {
    code: Arc<str>,
    imports: Vec<(String, usize)>,
}

/// At most this many files are kept; past it the cache starts over (edits are rare, functions
/// are few, so this only bounds a pathological case).
const CACHE_LIMIT: usize = 4096;

impl TranspileCache {
    /// Reads `entry` under `dir` and everything it imports.
    pub fn load(&self, dir: &Path, entry: &str) -> Result<ModuleGraph, SourceError> {
        let root = dir.canonicalize().map_err(|e| {
            SourceError::whole_file(
                entry,
                format!(
                    "cannot open the function's directory {}: {e}",
                    dir.display()
                ),
                None,
            )
        })?;
        let entry = normalize(entry).ok_or_else(|| {
            SourceError::whole_file(
                entry,
                format!("entry `{entry}` is not a path inside the function's directory"),
                None,
            )
        })?;
        let mut modules: BTreeMap<String, Arc<str>> = BTreeMap::new();
        let mut links = HashMap::new();
        let mut queue = VecDeque::from([entry.clone()]);
        while let Some(name) = queue.pop_front() {
            if modules.contains_key(&name) {
                continue;
            }
            let path = root.join(&name);
            let source = std::fs::read_to_string(&path).map_err(|e| {
                SourceError::whole_file(&name, format!("cannot read {}: {e}", path.display()), None)
            })?;
            let transpiled = self.transpile(&name, &source)?;
            for (specifier, offset) in &transpiled.imports {
                let target = resolve(&root, &name, specifier).map_err(|(message, hint)| {
                    let (line, column) = line_column(&source, *offset);
                    SourceError {
                        file: name.clone(),
                        line,
                        column,
                        message,
                        hint,
                    }
                })?;
                links.insert((name.clone(), specifier.clone()), target.clone());
                queue.push_back(target);
            }
            modules.insert(name, transpiled.code);
        }
        Ok(ModuleGraph::new(
            entry,
            modules.into_iter().collect(),
            links,
        ))
    }

    fn transpile(&self, name: &str, source: &str) -> Result<Transpiled, SourceError> {
        let mut hasher = Sha256::new();
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(source.as_bytes());
        let key: [u8; 32] = hasher.finalize().into();
        if let Some(hit) = self.lock().get(&key) {
            return Ok(hit.clone());
        }
        let transpiled = transpile(name, source)?;
        let mut entries = self.lock();
        if entries.len() >= CACHE_LIMIT {
            entries.clear();
        }
        entries.insert(key, transpiled.clone());
        Ok(transpiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Transpiled>> {
        // The map holds no invariant a panicking holder could break.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Strips TypeScript from one module and lists what it imports at run time.
fn transpile(name: &str, source: &str) -> Result<Transpiled, SourceError> {
    let path = Path::new(name);
    let source_type = SourceType::from_path(path)
        .unwrap_or_else(|_| SourceType::mjs())
        .with_module(true);
    let allocator = Allocator::default();
    let parsed = Parser::new(&allocator, source, source_type).parse();
    let located = |d: &oxc::diagnostics::OxcDiagnostic| {
        let offset = d.labels.first().map_or(0, |l| l.offset() as usize);
        let (line, column) = line_column(source, offset);
        SourceError {
            file: name.to_string(),
            line,
            column,
            message: d.message.to_string(),
            hint: d.help.as_ref().map(|h| h.to_string()),
        }
    };
    if let Some(error) = parsed.diagnostics.errors().next() {
        return Err(located(error));
    }
    let imports = parsed
        .module_record
        .requested_modules
        .iter()
        .filter(|(_, requests)| requests.iter().any(|r| !r.is_type))
        .map(|(specifier, requests)| {
            let offset = requests.first().map_or(0, |r| r.span.start as usize);
            (specifier.to_string(), offset)
        })
        .collect::<Vec<_>>();
    let mut program = parsed.program;
    let semantic = SemanticBuilder::new().build(&program);
    if let Some(error) = semantic.diagnostics.errors().next() {
        return Err(located(error));
    }
    let scoping = semantic.semantic.into_scoping();
    let options = TransformOptions::default();
    let transformed =
        Transformer::new(&allocator, path, &options).build_with_scoping(scoping, &mut program);
    if let Some(error) = transformed.diagnostics.errors().next() {
        return Err(located(error));
    }
    let code = Codegen::new().build(&program).code;
    let mut imports = imports;
    imports.sort_by_key(|(_, offset)| *offset);
    Ok(Transpiled {
        code: code.into(),
        imports,
    })
}

/// The module an import names, relative to the function's directory, or why it cannot be.
fn resolve(
    root: &Path,
    importer: &str,
    specifier: &str,
) -> Result<String, (String, Option<String>)> {
    if !(specifier.starts_with("./") || specifier.starts_with("../")) {
        return Err((
            format!("cannot import `{specifier}`: only relative imports between the function's files are supported"),
            Some("bundle packages into the function (for example with esbuild), or copy the file into the function's directory".into()),
        ));
    }
    let base = Path::new(importer).parent().unwrap_or(Path::new(""));
    let joined = base.join(specifier);
    let outside = || {
        (
            format!("`{specifier}` is outside the function's directory"),
            Some("a function may import only files under its `source` directory".into()),
        )
    };
    let name = normalize(&joined.to_string_lossy()).ok_or_else(outside)?;
    let mut candidates = vec![name.clone()];
    if Path::new(&name).extension().is_none() {
        candidates.extend(RESOLVE_EXTENSIONS.iter().map(|ext| format!("{name}.{ext}")));
        candidates.extend(
            RESOLVE_EXTENSIONS
                .iter()
                .map(|ext| format!("{name}/index.{ext}")),
        );
    }
    for candidate in candidates {
        let path = root.join(&candidate);
        if path.is_file() {
            // A symbolic link may point anywhere; what it resolves to must stay inside.
            let real = path.canonicalize().map_err(|_| outside())?;
            if !real.starts_with(root) {
                return Err(outside());
            }
            return Ok(candidate);
        }
    }
    Err((
        format!("cannot find module `{specifier}`"),
        Some(format!(
            "looked for {name} (with .{} and /index.* tried)",
            RESOLVE_EXTENSIONS.join(", .")
        )),
    ))
}

/// `a/./b/../c.ts` → `a/c.ts`; `None` for an absolute path or one that climbs out.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for component in PathBuf::from(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn strips_types_and_follows_relative_imports() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "index.ts",
            "import { greet } from './lib/greet';\nimport type { Name } from './types';\nexport default (req: Request): Response => new Response(greet('x' as Name));\n",
        );
        write(
            dir.path(),
            "lib/greet.ts",
            "export const greet = (n: string): string => `hi ${n}`;\n",
        );
        write(dir.path(), "types.ts", "export type Name = string;\n");
        let graph = TranspileCache::default()
            .load(dir.path(), "index.ts")
            .expect("loads");
        assert_eq!(graph.entry, "index.ts");
        let mut names: Vec<_> = graph.modules.keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            ["index.ts", "lib/greet.ts"],
            "type-only imports are not loaded"
        );
        let index = &graph.modules["index.ts"];
        assert!(!index.contains(": Request"), "{index}");
        assert!(index.contains("./lib/greet"), "{index}");
    }

    #[test]
    fn syntax_errors_are_located() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "index.ts", "export default 1;\n");
        write(dir.path(), "bad.ts", "const a = 1;\nconst b = (;\n");
        write(dir.path(), "main.ts", "import './bad.ts';\n");
        let error = TranspileCache::default()
            .load(dir.path(), "main.ts")
            .expect_err("fails");
        assert_eq!((error.file.as_str(), error.line), ("bad.ts", 2));
        assert_eq!(error.column, 12, "{error}");
    }

    #[test]
    fn imports_cannot_leave_the_directory_or_name_packages() {
        let outer = tempfile::tempdir().expect("tempdir");
        let dir = outer.path().join("fn");
        write(&dir, "index.ts", "import x from '../secret.ts';\n");
        write(outer.path(), "secret.ts", "export default 1;\n");
        let error = TranspileCache::default()
            .load(&dir, "index.ts")
            .expect_err("escape refused");
        assert!(error.message.contains("outside"), "{error}");
        assert_eq!((error.line, error.column), (1, 15));

        write(&dir, "pkg.ts", "import lodash from 'lodash';\n");
        let error = TranspileCache::default()
            .load(&dir, "pkg.ts")
            .expect_err("package refused");
        assert!(error.message.contains("only relative imports"), "{error}");
        assert!(error.hint.is_some());

        write(&dir, "missing.ts", "import './nope';\n");
        let error = TranspileCache::default()
            .load(&dir, "missing.ts")
            .expect_err("missing refused");
        assert!(
            error.message.contains("cannot find module `./nope`"),
            "{error}"
        );
    }

    #[test]
    fn the_hash_follows_the_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "index.js",
            "export default () => new Response('a');\n",
        );
        let cache = TranspileCache::default();
        let first = cache.load(dir.path(), "index.js").expect("loads").hash;
        assert_eq!(
            first,
            cache.load(dir.path(), "index.js").expect("loads").hash
        );
        write(
            dir.path(),
            "index.js",
            "export default () => new Response('b');\n",
        );
        assert_ne!(
            first,
            cache.load(dir.path(), "index.js").expect("loads").hash
        );
    }
}
