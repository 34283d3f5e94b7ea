//! `wasi:http` components served through [`Functions::invoke`], as `/fn/v1` and Jobs call
//! them. The component is `fixtures/http-handler.wat`, wrapped by `testing::http_component`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reactor_functions::js::JsError;
use reactor_functions::{
    AnswerBody, Built, FunctionError, FunctionSpec, Functions, FunctionsConfig, Invocation,
    LoadReport,
};

fn spec(name: &str, bytes: Vec<u8>, text: bool) -> FunctionSpec {
    FunctionSpec {
        name: name.into(),
        dir: std::env::temp_dir(),
        entry: format!("{name}.wasm"),
        built: Some(Arc::new(Built::Wasm { bytes, text })),
        memory_mb: Some(16),
        timeout_ms: Some(500),
        concurrency: None,
        allowed_hosts: Vec::new(),
        isolation: Default::default(),
    }
}

fn functions() -> Functions {
    let component =
        reactor_functions::testing::http_component(include_str!("fixtures/http-handler.wat"))
            .expect("the fixture wraps into a component");
    let functions = Functions::new(FunctionsConfig::default());
    let reports = functions.load(&[spec("hello", component, false)]);
    assert!(
        matches!(reports.as_slice(), [LoadReport::Loaded { .. }]),
        "{reports:?}"
    );
    functions
}

fn invocation(method: &str, path: &str, body: &str) -> Invocation {
    Invocation {
        method: method.into(),
        url: format!("http://localhost{path}"),
        headers: vec![("content-type".into(), "text/plain".into())],
        body: body.as_bytes().to_vec(),
        id: format!("inv-{method}"),
    }
}

async fn text(body: AnswerBody) -> Result<String, FunctionError> {
    let bytes = match body {
        AnswerBody::Full(bytes) => bytes,
        AnswerBody::Stream(mut rx) => {
            let mut bytes = Vec::new();
            while let Some(chunk) = rx.recv().await {
                bytes.extend(chunk?);
            }
            bytes
        }
    };
    Ok(String::from_utf8(bytes).expect("utf-8"))
}

#[tokio::test]
async fn a_component_answers_like_a_handler() {
    let functions = functions();
    let env = BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
    let answer = functions
        .invoke(
            "hello",
            invocation("POST", "/fn/v1/hello/items?q=1", "the body"),
            env,
        )
        .await
        .expect("answers");
    assert_eq!(answer.status, 201);
    for (name, value) in [("content-type", "text/plain"), ("x-wasm", "component")] {
        assert!(
            answer
                .headers
                .contains(&(name.to_string(), value.to_string())),
            "{name} in {:?}",
            answer.headers
        );
    }
    // Method, path, the body read to its end, no directories, and only the secrets given.
    assert_eq!(
        text(answer.body).await.expect("a whole body"),
        "POST /fn/v1/hello/items?q=1|the body|dirs=0|TOKEN=s3cret"
    );
    let logs = functions.logs().read("hello", 0, 10);
    assert!(
        logs.iter()
            .any(|l| l.message == "hello from a component" && l.invocation == "inv-POST"),
        "{logs:?}"
    );
    let functions_list = functions.list();
    assert_eq!(functions_list[0].runtime, "wasm");
}

#[tokio::test]
async fn limits_end_a_component_and_the_next_request_is_served() {
    let functions = functions();
    let started = Instant::now();
    let result = functions
        .invoke("hello", invocation("PUT", "/", ""), BTreeMap::new())
        .await;
    assert!(
        matches!(result, Err(FunctionError::Failed(JsError::Timeout(_)))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let result = functions
        .invoke("hello", invocation("DELETE", "/", ""), BTreeMap::new())
        .await;
    assert!(
        matches!(result, Err(FunctionError::Failed(JsError::Memory(_)))),
        "{result:?}"
    );
    let logs = functions.logs().read("hello", 0, 50);
    assert!(
        logs.iter()
            .any(|l| l.level == "error" && l.message.contains("memory limit")),
        "{logs:?}"
    );

    let answer = functions
        .invoke("hello", invocation("GET", "/after", ""), BTreeMap::new())
        .await
        .expect("still serving");
    assert_eq!(
        text(answer.body).await.expect("a whole body"),
        "GET /after||dirs=0"
    );
}

/// What a component prints goes to the logs line by line, up to a budget per invocation;
/// past it the lines are dropped, never the component's writes (which would trap it).
#[tokio::test]
async fn a_chatty_component_is_not_cut_short_by_its_logs() {
    let functions = functions();
    let answer = functions
        .invoke("hello", invocation("OPTIONS", "/loud", ""), BTreeMap::new())
        .await
        .expect("answers");
    assert_eq!(answer.status, 201);
    assert_eq!(
        text(answer.body).await.expect("a whole body"),
        "OPTIONS /loud||dirs=0"
    );
    let logs = functions.logs().read_invocation("hello", "inv-OPTIONS");
    let hellos = logs
        .iter()
        .filter(|l| l.message == "hello from a component")
        .count();
    // The book keeps the newest 1,000 lines of a function; 64 KiB is 2,849 of these.
    assert!(hellos > 900, "{hellos} lines kept");
    assert!(
        logs.iter()
            .any(|l| l.message.contains("is not kept") && l.level == "info"),
        "the cut is said once: {:?}",
        logs.last()
    );
}

#[tokio::test]
async fn a_component_without_an_http_handler_is_refused_at_load() {
    let functions = Functions::new(FunctionsConfig::default());
    let reports = functions.load(&[spec("empty", b"(component)".to_vec(), true)]);
    match reports.as_slice() {
        [LoadReport::Failed { error, .. }] => assert!(
            error.message.contains("wasi:http/incoming-handler"),
            "{error}"
        ),
        other => panic!("expected a failed load, got {other:?}"),
    }
    let result = functions
        .invoke("empty", invocation("GET", "/", ""), BTreeMap::new())
        .await;
    assert!(
        matches!(result, Err(FunctionError::NotLoaded { .. })),
        "{result:?}"
    );
}

/// Answers every connection with `200 pong`.
async fn pong_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong",
                    )
                    .await;
            });
        }
    });
    addr
}

/// Outgoing requests go through the function's allow-list, as a JavaScript `fetch` does.
#[tokio::test]
async fn outgoing_requests_meet_the_allow_list() {
    let server = pong_server().await;
    let component =
        reactor_functions::testing::http_component(include_str!("fixtures/http-handler.wat"))
            .expect("wraps");
    let allowed = FunctionSpec {
        allowed_hosts: vec![server.to_string()],
        ..spec("allowed", component.clone(), false)
    };
    let functions = Functions::new(FunctionsConfig::default());
    functions.load(&[allowed, spec("closed", component, false)]);
    let fetch = |name: &'static str| {
        let functions = functions.clone();
        async move {
            let answer = functions
                .invoke(
                    name,
                    invocation("PATCH", "/", &server.to_string()),
                    BTreeMap::new(),
                )
                .await
                .expect("answers");
            text(answer.body).await.expect("a whole body")
        }
    };
    assert_eq!(fetch("allowed").await, "fetched 200");
    // 15 is `HTTP-request-denied` in wasi:http's error-code.
    assert_eq!(fetch("closed").await, "refused 15");
    let logs = functions.logs().read("closed", 0, 10);
    assert!(
        logs.iter().any(|l| l.level == "warn"
            && l.message.contains("is not an allowed host")
            && l.message.contains(&server.to_string())),
        "the refusal is explained in the logs: {logs:?}"
    );
}
