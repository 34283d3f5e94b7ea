//! Wraps a core module written in WAT into a `wasi:http` component, as the tests do (see
//! `reactor_functions::testing`); `bench/functions.py` uses it for its component row.
//!
//! `cargo run -p reactor-functions --features testing --example componentize -- IN.wat OUT.wasm`

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        return Err("usage: componentize IN.wat OUT.wasm".into());
    };
    let wat = std::fs::read_to_string(&input).map_err(|e| format!("{input}: {e}"))?;
    let component = reactor_functions::testing::http_component(&wat)?;
    std::fs::write(&output, component).map_err(|e| format!("{output}: {e}"))
}
