//! Building bundles (reproducibly, honouring `.reactorignore`) and reading them back the
//! way a server does, including every way a bundle can be refused.

use std::path::Path;

use reactor_bundle::{
    BuildOptions, BundleError, FileEntry, FunctionKind, INDEX, Index, Limits, build, read,
};
use reactor_manifest::Manifest;

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A project with a migration, a TypeScript function importing a helper, a WAT function and
/// a site with a page worth compressing, plus files that must stay out.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        root,
        "reactor.toml",
        r#"project_id = "bundle-test"
name = "Bundle test"

[[functions]]
name = "hello"
source = "functions/hello"

[[functions]]
name = "raw"
source = "functions/raw"
entry = "main.wat"

[[sites]]
name = "web"
source = "sites/web"
spa = true
"#,
    );
    write(
        root,
        "data/migrations/001_todos.sql",
        "create table todos (id int primary key);",
    );
    write(root, "data/migrations/002_draft.sql", "select 1;");
    write(
        root,
        "functions/hello/index.ts",
        "import { greet } from './util';\nexport default (_req: Request): Response => new Response(greet('you'));\n",
    );
    write(
        root,
        "functions/hello/util.ts",
        "export function greet(name: string): string { return `hello ${name}`; }\n",
    );
    write(root, "functions/raw/main.wat", "(module)");
    let page = format!(
        "<!doctype html><title>t</title>{}",
        "<p>a paragraph that repeats</p>".repeat(100)
    );
    write(root, "sites/web/index.html", &page);
    write(root, "sites/web/app.js", "console.log(1)");
    write(root, "sites/web/drafts/wip.html", "not yet");
    write(root, "sites/web/.env", "SECRET=1");
    write(root, "sites/web/node_modules/dep.js", "dependency");
    write(root, "sites/web/.well-known/security.txt", "Contact: x");
    write(root, ".env.local", "SECRET=2");
    write(
        root,
        ".reactorignore",
        "# drafts stay out\nsites/web/drafts/\n002_*.sql\n",
    );
    dir
}

fn manifest(root: &Path) -> Manifest {
    Manifest::load(&root.join("reactor.toml")).expect("manifest")
}

fn built(root: &Path) -> reactor_bundle::Built {
    build(&manifest(root), &BuildOptions { out_dir: None }).expect("build")
}

/// The files a read handed on, with their bytes.
type Stored = Vec<(FileEntry, Vec<u8>)>;

fn read_all(bytes: &[u8]) -> Result<(reactor_bundle::Received, Stored), BundleError> {
    let mut stored = Vec::new();
    let received = read(bytes, &Limits::default(), |entry, data| {
        stored.push((entry.clone(), data));
        Ok(())
    })?;
    Ok((received, stored))
}

#[test]
fn the_same_inputs_give_a_byte_identical_bundle() {
    let dir = project();
    let first = built(dir.path());
    let first_bytes = std::fs::read(&first.path).expect("read");
    // Touching every file (a fresh checkout) changes nothing.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(dir.path(), "sites/web/app.js", "console.log(1)");
    write(
        dir.path(),
        "functions/hello/util.ts",
        "export function greet(name: string): string { return `hello ${name}`; }\n",
    );
    let second = built(dir.path());
    assert_eq!(first.release, second.release);
    assert_eq!(first_bytes, std::fs::read(&second.path).expect("read"));
    assert!(
        first.path.to_string_lossy().ends_with(&format!(
            ".reactor/build/bundle-test-{}.tar.zst",
            &first.release[..12]
        )),
        "{}",
        first.path.display()
    );
    // A changed file is a new release.
    write(dir.path(), "sites/web/app.js", "console.log(2)");
    assert_ne!(built(dir.path()).release, first.release);
}

#[test]
fn the_bundle_holds_what_the_project_declares_and_nothing_ignored() {
    let dir = project();
    let b = built(dir.path());
    let paths: Vec<&str> = b.index.files.iter().map(|f| f.path.as_str()).collect();
    for expected in [
        "reactor.toml",
        "migrations/001_todos.sql",
        "functions/hello/index.ts",
        "functions/hello/util.ts",
        "functions/raw/main.wat",
        "sites/web/index.html",
        "sites/web/app.js",
        "sites/web/.well-known/security.txt",
        "variants/web/index.html.gz",
        "variants/web/index.html.br",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
    for excluded in [
        "migrations/002_draft.sql",
        "sites/web/drafts/wip.html",
        "sites/web/.env",
        "sites/web/node_modules/dep.js",
        "variants/web/app.js.gz",
    ] {
        assert!(!paths.contains(&excluded), "{excluded} should stay out");
    }
    assert!(!paths.iter().any(|p| p.contains(".env")));
    assert_eq!(b.index.migrations, vec!["001_todos.sql"]);

    // Functions arrive transpiled, with their imports resolved.
    let hello = &b.index.functions[0];
    assert_eq!(hello.kind, FunctionKind::Js);
    assert_eq!(hello.entry, "index.ts");
    assert_eq!(hello.links.len(), 1);
    assert_eq!(hello.links[0].to, "util.ts");
    assert_eq!(b.index.functions[1].kind, FunctionKind::Wasm);
    let (received, stored) = read_all(&std::fs::read(&b.path).expect("read")).expect("valid");
    let code = stored
        .iter()
        .find(|(e, _)| e.path == "functions/hello/index.ts")
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .expect("module");
    assert!(!code.contains(": Request"), "types stripped: {code}");
    assert_eq!(received.release, b.release);
    assert_eq!(received.received.len(), b.index.files.len());

    // The report says what went in.
    assert_eq!(b.report.sites[0].files, 3);
    assert_eq!(b.report.sites[0].compressed, 1);
    assert_eq!(b.report.functions[0].modules, 2);
}

#[test]
fn reactorignore_can_re_include_a_default() {
    let dir = project();
    write(dir.path(), ".reactorignore", "!node_modules/\n");
    let b = built(dir.path());
    assert!(b.index.file("sites/web/node_modules/dep.js").is_some());
    assert!(b.index.file("sites/web/drafts/wip.html").is_some());
}

#[test]
fn a_function_that_does_not_compile_fails_the_build_with_its_location() {
    let dir = project();
    write(dir.path(), "functions/hello/util.ts", "export function (");
    let e =
        build(&manifest(dir.path()), &BuildOptions { out_dir: None }).expect_err("a syntax error");
    let text = e.to_string();
    assert!(text.contains("util.ts:1:"), "{text}");
    assert!(e.hint().is_some());
}

#[test]
fn a_site_link_leaving_its_directory_fails_the_build() {
    let dir = project();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        dir.path().join(".env.local"),
        dir.path().join("sites/web/env.txt"),
    )
    .expect("symlink");
    let e = build(&manifest(dir.path()), &BuildOptions { out_dir: None }).expect_err("escape");
    assert!(e.to_string().contains("links outside the site"), "{e}");
}

// --- Refusals -------------------------------------------------------------------------------

enum Kind {
    File,
    Symlink(&'static str),
}

/// A `tar.zst` written by hand: entries as given, for bundles `reactor build` never makes.
fn forge(entries: &[(&str, Vec<u8>, Kind)]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let encoder = zstd::Encoder::new(&mut out, 3).expect("zstd").auto_finish();
        let mut tar = tar::Builder::new(encoder);
        for (path, data, kind) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            match kind {
                Kind::File => header.set_entry_type(tar::EntryType::Regular),
                Kind::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_link_name(target).expect("link");
                }
            }
            // Written raw so that unsafe names reach the reader unchanged.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            tar.append(&header, data.as_slice()).expect("append");
        }
        tar.finish().expect("finish");
    }
    out
}

/// An index listing `files` (what each forged bundle claims).
fn index_for(files: &[(&str, &[u8])]) -> Vec<u8> {
    use sha2::Digest;
    let mut list: Vec<FileEntry> = files
        .iter()
        .map(|(path, data)| FileEntry {
            path: path.to_string(),
            sha256: hex::encode(sha2::Sha256::digest(data)),
            size: data.len() as u64,
        })
        .collect();
    list.sort_by(|a, b| a.path.cmp(&b.path));
    Index {
        format: 1,
        project_id: "bundle-test".into(),
        name: "x".into(),
        migrations: vec![],
        functions: vec![],
        sites: vec![],
        files: list,
    }
    .to_bytes()
}

fn refused(bytes: &[u8]) -> BundleError {
    match read_all(bytes) {
        Ok(_) => panic!("a bad bundle was accepted"),
        Err(e) => e,
    }
}

#[test]
fn every_kind_of_bad_bundle_is_refused() {
    let toml: &[u8] = b"project_id = \"bundle-test\"\nname = \"x\"\n";
    let ok_index = index_for(&[("reactor.toml", toml)]);
    // The baseline is accepted.
    read_all(&forge(&[
        (INDEX, ok_index.clone(), Kind::File),
        ("reactor.toml", toml.to_vec(), Kind::File),
    ]))
    .expect("a minimal bundle");

    // A byte changed after the build.
    let e = refused(&forge(&[
        (INDEX, ok_index.clone(), Kind::File),
        (
            "reactor.toml",
            b"project_id = \"bundle-tesT\"\nname = \"x\"\n".to_vec(),
            Kind::File,
        ),
    ]));
    assert!(matches!(e, BundleError::Tampered { .. }), "{e}");
    assert!(e.hint().expect("hint").contains("build it again"));

    // Paths that climb out or are absolute, even when the index lists them.
    for path in ["../evil.sh", "/etc/passwd", "sites/web/../../x", "a//b"] {
        let index = index_for(&[("reactor.toml", toml), (path, b"x")]);
        let e = refused(&forge(&[
            (INDEX, index, Kind::File),
            (path, b"x".to_vec(), Kind::File),
        ]));
        assert!(matches!(e, BundleError::UnsafePath(_)), "{path}: {e}");
    }

    // A link, wherever it points.
    let e = refused(&forge(&[
        (INDEX, ok_index.clone(), Kind::File),
        ("reactor.toml", Vec::new(), Kind::Symlink("/etc/passwd")),
    ]));
    assert!(matches!(e, BundleError::NotAFile(_)), "{e}");

    // A file the index does not list; one listed twice.
    let e = refused(&forge(&[
        (INDEX, ok_index.clone(), Kind::File),
        ("extra.txt", b"x".to_vec(), Kind::File),
    ]));
    assert!(matches!(e, BundleError::NotListed(_)), "{e}");
    let e = refused(&forge(&[
        (INDEX, ok_index.clone(), Kind::File),
        ("reactor.toml", toml.to_vec(), Kind::File),
        ("reactor.toml", toml.to_vec(), Kind::File),
    ]));
    assert!(matches!(e, BundleError::Duplicate(_)), "{e}");

    // No index first; not a bundle at all; an index of another format.
    let e = refused(&forge(&[("reactor.toml", toml.to_vec(), Kind::File)]));
    assert!(matches!(e, BundleError::NotABundle(_)), "{e}");
    let e = refused(b"PK\x03\x04 a zip file");
    assert!(matches!(e, BundleError::NotABundle(_)), "{e}");
    let future = String::from_utf8(ok_index.clone())
        .expect("utf8")
        .replace("\"format\":1", "\"format\":99");
    let e = refused(&forge(&[(INDEX, future.into_bytes(), Kind::File)]));
    assert!(matches!(e, BundleError::Format(99)), "{e}");

    // Over the limits.
    let big = index_for(&[("reactor.toml", toml), ("big.bin", &vec![0u8; 2048])]);
    let bytes = forge(&[(INDEX, big, Kind::File)]);
    let limits = Limits {
        max_file_bytes: 1024,
        ..Limits::default()
    };
    let e = read(bytes.as_slice(), &limits, |_, _| Ok(())).expect_err("too large");
    assert!(matches!(e, BundleError::TooLarge(_)), "{e}");
}

#[test]
fn a_thin_bundle_carries_the_index_and_only_some_files() {
    let dir = project();
    let b = built(dir.path());
    let full = std::fs::read(&b.path).expect("read");
    // Re-pack with only the index and the site's page: still valid, only that received.
    let (_, stored) = read_all(&full).expect("full");
    let page = stored
        .iter()
        .find(|(e, _)| e.path == "sites/web/index.html")
        .map(|(_, d)| d.clone())
        .expect("page");
    let index = b.index.to_bytes();
    let thin = forge(&[
        (INDEX, index, Kind::File),
        ("sites/web/index.html", page, Kind::File),
    ]);
    let (received, _) = read_all(&thin).expect("thin");
    assert_eq!(received.release, b.release);
    assert_eq!(received.received.len(), 1);
}

#[test]
fn a_framework_site_is_built_by_its_command_and_its_output_packaged() {
    let dir = project();
    let root = dir.path();
    std::fs::create_dir_all(root.join("apps/dash")).expect("mkdir");
    write(root, "apps/dash/src/main.ts", "the sources stay out");
    let text = std::fs::read_to_string(root.join("reactor.toml")).expect("read");
    let with = |build: &str, extra: &str| {
        format!(
            "{text}\n[[sites]]\nname = \"dash\"\nsource = \"apps/dash\"\nframework = \"vite\"\nbuild = \"{build}\"\n{extra}"
        )
    };
    // Vite's output directory by default: `dist`.
    write(
        root,
        "reactor.toml",
        &with(
            "mkdir -p dist/assets && printf '<h1>built</h1>' > dist/index.html",
            "",
        ),
    );
    let m = manifest(root);
    reactor_bundle::run_site_builds(&m).expect("the build command runs");
    let b = build(&m, &BuildOptions { out_dir: None }).expect("build");
    let dash = b
        .index
        .sites
        .iter()
        .find(|s| s.name == "dash")
        .expect("site");
    assert_eq!(dash.files.keys().collect::<Vec<_>>(), vec!["index.html"]);

    // A failing command stops the build, naming the site, the command and its status.
    write(root, "reactor.toml", &with("exit 3", ""));
    let e = reactor_bundle::run_site_builds(&manifest(root)).expect_err("exit 3");
    let text_e = e.to_string();
    assert!(
        text_e.contains("site `dash`") && text_e.contains("exit 3") && text_e.contains("3"),
        "{text_e}"
    );
    assert!(e.hint().is_some());

    // An output directory the build did not make is named.
    write(root, "reactor.toml", &with("true", "output = \"build\"\n"));
    let e = build(&manifest(root), &BuildOptions { out_dir: None }).expect_err("no output");
    assert!(
        e.to_string()
            .contains("apps/dash/build does not exist (did its build run?)"),
        "{e}"
    );
}
