//! Test support (feature `testing`): no toolchain on the build machine targets wasm32, so
//! the tests' `wasi:http` components are core modules written by hand in WAT and wrapped here
//! with `wit-component` — the step `cargo component` or `wasm-tools component new` takes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The world the test components target: `wasi:http/proxy` plus what a real toolchain's
/// output also imports (the environment, preopened directories).
const WORLD: &str = "package reactor:test;

world handler {
  include wasi:http/proxy@0.2.12;
  import wasi:cli/environment@0.2.12;
  import wasi:filesystem/preopens@0.2.12;
}
";

/// Wraps `core_wat` (a core module importing and exporting by the canonical ABI's names)
/// into a component of the `handler` world above.
pub fn http_component(core_wat: &str) -> Result<Vec<u8>, String> {
    let mut resolve = wit_parser::Resolve::default();
    resolve
        .push_dir(wasi_http_wit()?)
        .map_err(|e| format!("{e:#}"))?;
    let package = resolve
        .push_str("reactor-test.wit", WORLD)
        .map_err(|e| format!("{e:#}"))?;
    let world = resolve
        .select_world(&[package], Some("handler"))
        .map_err(|e| format!("{e:#}"))?;
    let mut module = wat::parse_str(core_wat).map_err(|e| e.to_string())?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(|e| format!("{e:#}"))?;
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| format!("{e:#}"))
}

/// The WIT files the server's `wasi:http` implementation was generated from, found through
/// `cargo metadata` (the crate's sources are on disk wherever this crate was built).
fn wasi_http_wit() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        // Only this host's packages: the others' sources were never downloaded.
        let rustc = Command::new("rustc")
            .arg("-vV")
            .output()
            .map_err(|e| format!("cannot run rustc: {e}"))?;
        let host = String::from_utf8_lossy(&rustc.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
            .ok_or("rustc -vV names no host")?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--offline"])
            .args(["--filter-platform", &host, "--manifest-path"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .output()
            .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| {
            format!(
                "cargo metadata printed no JSON ({e}): {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        metadata["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "wasmtime-wasi-http")
            .and_then(|p| p["manifest_path"].as_str())
            .and_then(|m| PathBuf::from(m).parent().map(|dir| dir.join("wit")))
            .ok_or_else(|| "cargo metadata does not list wasmtime-wasi-http".to_string())
    })
    .clone()
}
