//! WASI command modules written in WAT, run CGI-style by the engine on its own.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use reactor_functions::js::{
    Closed, FetchDone, Host, JsError, JsLimits, JsRequest, Level, OutboundRequest,
};
use reactor_functions::wasm::{self, WasmProgram};

/// Status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

#[derive(Default)]
struct Recorder {
    logs: RefCell<Vec<String>>,
    head: RefCell<Option<Answer>>,
}

impl Host for Recorder {
    fn log(&self, _level: Level, text: &str) {
        self.logs.borrow_mut().push(text.to_string());
    }
    fn head(
        &self,
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<(), Closed> {
        *self.head.borrow_mut() = Some((status, headers, body.unwrap_or_default()));
        Ok(())
    }
    fn chunk(&self, _bytes: Vec<u8>) -> Result<(), Closed> {
        Ok(())
    }
    fn fetch(&self, _request: OutboundRequest, done: FetchDone) {
        done(Err("no network here".into()));
    }
}

fn program(wat: &str) -> WasmProgram {
    WasmProgram::compile(wat.as_bytes(), true, "test".into()).expect("compiles")
}

fn run(program: &WasmProgram, limits: JsLimits) -> (Rc<Recorder>, Result<(), JsError>) {
    let out = Rc::new(Recorder::default());
    let request = JsRequest {
        method: "POST".into(),
        url: "http://h/fn/v1/cgi/items/7?q=1".into(),
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"the body".to_vec(),
    };
    let env = BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
    let result = wasm::invoke(program, request, &env, limits, out.clone());
    (out, result)
}

fn limits() -> JsLimits {
    JsLimits {
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn a_command_module_answers_cgi_style() {
    let (out, result) = run(&program(include_str!("fixtures/echo.wat")), limits());
    result.expect("runs");
    let (status, headers, body) = out.head.borrow().clone().expect("answered");
    assert_eq!(status, 201);
    assert!(
        headers.contains(&("x-wasm".to_string(), "yes".to_string())),
        "{headers:?}"
    );
    let body = String::from_utf8(body).expect("utf-8");
    assert!(body.starts_with("the body|"), "{body}");
    for var in [
        "REQUEST_METHOD=POST",
        "PATH_INFO=/items/7",
        "QUERY_STRING=q=1",
        "CONTENT_TYPE=text/plain",
        "TOKEN=s3cret",
    ] {
        assert!(body.contains(&format!("{var}\0")), "{var} in {body:?}");
    }
    assert!(body.ends_with("|nofs"), "no file system: {body:?}");
    assert_eq!(out.logs.borrow().as_slice(), ["hello from wasm"]);
}

#[test]
fn limits_and_failures() {
    let started = Instant::now();
    let (_, result) = run(
        &program(include_str!("fixtures/spin.wat")),
        JsLimits {
            timeout: Duration::from_millis(200),
            ..limits()
        },
    );
    assert!(matches!(result, Err(JsError::Timeout(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let (_, result) = run(
        &program(include_str!("fixtures/grow.wat")),
        JsLimits {
            memory_bytes: 4 << 20,
            ..limits()
        },
    );
    assert!(matches!(result, Err(JsError::Memory(_))), "{result:?}");

    let (out, result) = run(&program(include_str!("fixtures/exit.wat")), limits());
    match result {
        Err(JsError::Threw(message)) => assert!(
            message.contains("exited with code 3: config missing"),
            "{message}"
        ),
        other => panic!("expected a failed exit, got {other:?}"),
    }
    assert_eq!(out.logs.borrow().as_slice(), ["config missing"]);

    let error = WasmProgram::compile(b"(module)", true, "x".into()).expect_err("no _start");
    assert!(error.contains("_start"), "{error}");
    let error = WasmProgram::compile(b"(module (func", true, "x".into()).expect_err("bad text");
    assert!(!error.is_empty());
    let foreign = r#"(module (import "env" "secret" (func)) (memory (export "memory") 1) (func (export "_start")))"#;
    let error =
        WasmProgram::compile(foreign.as_bytes(), true, "x".into()).expect_err("unknown import");
    assert!(error.contains("secret"), "{error}");
}
