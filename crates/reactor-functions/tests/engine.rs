//! The QuickJS engine on its own: one invocation at a time, against handlers written the way
//! users write them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reactor_functions::js::{
    self, Closed, FetchDone, Host, JsError, JsLimits, JsRequest, Level, OutboundRequest,
    OutboundResponse, Program,
};
use reactor_functions::source::TranspileCache;

/// Status, headers, and whether the body streams.
type Head = (u16, Vec<(String, String)>, bool);

#[derive(Default)]
struct Recorder {
    logs: RefCell<Vec<(Level, String)>>,
    head: RefCell<Option<Head>>,
    body: RefCell<Vec<Vec<u8>>>,
    /// `fetch`es to `api.test` that have arrived, and a signal when one does.
    arrived: std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
}

impl Host for Recorder {
    fn log(&self, level: Level, text: &str) {
        self.logs.borrow_mut().push((level, text.to_string()));
    }
    fn head(
        &self,
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<(), Closed> {
        *self.head.borrow_mut() = Some((status, headers, body.is_none()));
        self.body.borrow_mut().extend(body);
        Ok(())
    }
    fn chunk(&self, bytes: Vec<u8>) -> Result<(), Closed> {
        self.body.borrow_mut().push(bytes);
        Ok(())
    }
    /// Answers from another thread, echoing what was asked, once two requests to `api.test`
    /// have arrived: fetches the engine ran one after the other would never both arrive (they
    /// fail after two seconds). `refused.test` is refused the way the server refuses a host.
    fn fetch(&self, request: OutboundRequest, done: FetchDone) {
        let arrived = self.arrived.clone();
        std::thread::spawn(move || {
            if request.url.contains("refused.test") {
                return done(Err("refused.test:80 is not an allowed host".into()));
            }
            let (count, changed) = &*arrived;
            let mut n = count.lock().expect("lock");
            *n += 1;
            changed.notify_all();
            let (n, wait) = changed
                .wait_timeout_while(n, Duration::from_secs(2), |n| *n < 2)
                .expect("lock");
            drop(n);
            if wait.timed_out() {
                return done(Err("the fetches were not in flight together".into()));
            }
            done(Ok(OutboundResponse {
                status: 200,
                status_text: "OK".into(),
                headers: vec![("x-method".into(), request.method.clone())],
                body: format!(
                    "{} {} {}",
                    request.method,
                    request.url,
                    String::from_utf8_lossy(&request.body)
                )
                .into_bytes(),
                url: request.url,
            }))
        });
    }
}

impl Recorder {
    fn status(&self) -> u16 {
        self.head.borrow().as_ref().map_or(0, |h| h.0)
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head
            .borrow()
            .as_ref()?
            .1
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.borrow().concat()).expect("utf-8")
    }
}

fn load(files: &[(&str, &str)]) -> Arc<Program> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    let graph = TranspileCache::default()
        .load(dir.path(), files[0].0)
        .expect("loads");
    Arc::new(Program::compile(Arc::new(graph)).expect("compiles"))
}

fn limits() -> JsLimits {
    JsLimits {
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(5),
    }
}

fn request(method: &str, url: &str, body: &str) -> JsRequest {
    JsRequest {
        method: method.into(),
        url: url.into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-test".into(), "yes".into()),
        ],
        body: body.as_bytes().to_vec(),
    }
}

fn run(
    code: &Arc<Program>,
    req: JsRequest,
    limits: JsLimits,
) -> (Rc<Recorder>, Result<(), JsError>) {
    let recorder = Rc::new(Recorder::default());
    let result = js::invoke(
        code,
        req,
        &BTreeMap::from([("GREETING".to_string(), "hej".to_string())]),
        limits,
        recorder.clone(),
    );
    (recorder, result)
}

#[test]
fn a_handler_reads_the_request_and_answers_json() {
    let code = load(&[(
        "index.ts",
        r#"
        interface In { name: string }
        export default async (req: Request, env: Record<string, string>): Promise<Response> => {
          const url = new URL(req.url);
          const body = (await req.json()) as In;
          console.log("got", body.name, { n: 1 });
          return Response.json({
            method: req.method,
            path: url.pathname,
            q: url.searchParams.get("q"),
            header: req.headers.get("X-Test"),
            name: body.name,
            greeting: env.GREETING,
          }, { status: 201, headers: { "x-out": "1" } });
        };
        "#,
    )]);
    let (out, result) = run(
        &code,
        request("POST", "http://h/fn/v1/a/b?q=1", r#"{"name":"ada"}"#),
        limits(),
    );
    result.expect("runs");
    assert_eq!(out.status(), 201);
    assert_eq!(out.header("x-out").as_deref(), Some("1"));
    assert_eq!(
        out.header("content-type").as_deref(),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_str(&out.text()).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"method":"POST","path":"/fn/v1/a/b","q":"1","header":"yes","name":"ada","greeting":"hej"})
    );
    assert_eq!(
        out.logs.borrow()[0],
        (Level::Info, "got ada { n: 1 }".to_string())
    );
}

#[test]
fn web_apis_behave() {
    let code = load(&[(
        "index.js",
        r#"
        export default {
          async fetch(req) {
            const out = {};
            out.b64 = btoa("hello"); out.unb64 = atob("aGVsbG8=");
            out.utf8 = new TextDecoder().decode(new TextEncoder().encode("héllo ✓"));
            out.uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(crypto.randomUUID());
            out.random = crypto.getRandomValues(new Uint8Array(8)).length;
            const u = new URL("/x/y?a=1&b=2#h", "https://example.com:8443");
            u.searchParams.append("c", "3 4");
            out.url = [u.href, u.host, u.origin, u.hash];
            const h = new Headers({ "Set-Cookie": "a=1" }); h.append("set-cookie", "b=2"); h.set("X-A", "1");
            out.headers = [...h];
            out.timer = await new Promise((r) => setTimeout(() => r("fired"), 20));
            out.sp = new URLSearchParams({ a: "x y", b: "é" }).toString();
            const refused = (f) => { try { f(); return "accepted"; } catch (e) { return e.name; } };
            out.badHeaders = [
              refused(() => new Headers({ "a b": "1" })),
              refused(() => new Headers({ "X-Ok": "x\r\ninjected: 1" })),
              new Headers({ "X-Trim": "  padded\t" }).get("x-trim"),
            ];
            return new Response(JSON.stringify(out));
          },
        };
        "#,
    )]);
    let (out, result) = run(&code, request("GET", "http://h/", ""), limits());
    result.expect("runs");
    let body: serde_json::Value = serde_json::from_str(&out.text()).expect("json");
    assert_eq!(body["b64"], "aGVsbG8=");
    assert_eq!(body["unb64"], "hello");
    assert_eq!(body["utf8"], "héllo ✓");
    assert_eq!(body["uuid"], true);
    assert_eq!(body["random"], 8);
    assert_eq!(
        body["url"],
        serde_json::json!([
            "https://example.com:8443/x/y?a=1&b=2&c=3+4#h",
            "example.com:8443",
            "https://example.com:8443",
            "#h"
        ])
    );
    assert_eq!(
        body["headers"],
        serde_json::json!([["set-cookie", "a=1"], ["set-cookie", "b=2"], ["x-a", "1"]])
    );
    assert_eq!(body["timer"], "fired");
    assert_eq!(body["sp"], "a=x+y&b=%C3%A9");
    assert_eq!(
        body["badHeaders"],
        serde_json::json!(["TypeError", "TypeError", "padded"])
    );
    assert_eq!(
        out.header("content-type").as_deref(),
        Some("text/plain;charset=UTF-8")
    );
}

#[test]
fn a_stream_is_sent_chunk_by_chunk() {
    let code = load(&[(
        "index.ts",
        r#"
        export default () => {
          let i = 0;
          const body = new ReadableStream({
            async pull(controller) {
              await new Promise((r) => setTimeout(r, 1));
              if (i === 3) return controller.close();
              controller.enqueue(new TextEncoder().encode(`part${i++};`));
            },
          });
          return new Response(body, { headers: { "content-type": "text/plain" } });
        };
        "#,
    )]);
    let (out, result) = run(&code, request("GET", "http://h/", ""), limits());
    result.expect("runs");
    assert!(
        out.head.borrow().as_ref().is_some_and(|h| h.2),
        "streaming head"
    );
    assert_eq!(out.body.borrow().len(), 3);
    assert_eq!(out.text(), "part0;part1;part2;");
}

#[test]
fn errors_limits_and_isolation() {
    let thrower = load(&[(
        "index.ts",
        "export default () => { throw new Error('boom'); };\n",
    )]);
    let (out, result) = run(&thrower, request("GET", "http://h/", ""), limits());
    match result {
        Err(JsError::Threw(message)) => assert!(message.starts_with("Error: boom"), "{message}"),
        other => panic!("expected a throw, got {other:?}"),
    }
    assert!(out.head.borrow().is_none());

    let spinner = load(&[("index.ts", "export default () => { for (;;) {} };\n")]);
    let started = Instant::now();
    let (_, result) = run(
        &spinner,
        request("GET", "http://h/", ""),
        JsLimits {
            timeout: Duration::from_millis(200),
            ..limits()
        },
    );
    assert!(matches!(result, Err(JsError::Timeout(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let hog = load(&[(
        "index.ts",
        "export default () => { const a = []; for (;;) a.push('x'.repeat(1000) + a.length); };\n",
    )]);
    let (_, result) = run(
        &hog,
        request("GET", "http://h/", ""),
        JsLimits {
            memory_bytes: 16 << 20,
            ..limits()
        },
    );
    assert!(matches!(result, Err(JsError::Memory(_))), "{result:?}");

    // Cyclic garbage far past the limit in total is still collected within the invocation.
    let churn = load(&[(
        "index.ts",
        "export default () => {\n  let kept = 0;\n  for (let i = 0; i < 300000; i++) { const a: any = { pad: 'x'.repeat(64) + i }; a.self = a; kept += a.pad.length; }\n  return new Response(String(kept));\n};\n",
    )]);
    let (out, result) = run(
        &churn,
        request("GET", "http://h/", ""),
        JsLimits {
            memory_bytes: 16 << 20,
            ..limits()
        },
    );
    result.expect("garbage is collected, not counted against the limit");
    assert!(
        out.text().parse::<u64>().is_ok_and(|n| n > 16 << 20),
        "{}",
        out.text()
    );

    let never = load(&[("index.ts", "export default () => new Promise(() => {});\n")]);
    let (_, result) = run(&never, request("GET", "http://h/", ""), limits());
    assert!(matches!(result, Err(JsError::Unsettled)), "{result:?}");

    let counter = load(&[(
        "index.ts",
        "let n = 0; globalThis.seen = (globalThis.seen || 0) + 1;\nexport default () => new Response(String(++n) + ':' + globalThis.seen);\n",
    )]);
    for _ in 0..2 {
        let (out, result) = run(&counter, request("GET", "http://h/", ""), limits());
        result.expect("runs");
        assert_eq!(
            out.text(),
            "1:1",
            "module state never outlives an invocation"
        );
    }

    let snoop = load(&[(
        "index.ts",
        "export default async () => {\n  const seen = [typeof process, typeof Deno, typeof require, typeof std, typeof os, typeof __host];\n  let imported = 'no';\n  try { await import('fs'); imported = 'yes'; } catch (e) { imported = String(e.message); }\n  return Response.json({ seen, imported });\n};\n",
    )]);
    let (out, result) = run(&snoop, request("GET", "http://h/", ""), limits());
    result.expect("runs");
    let body: serde_json::Value = serde_json::from_str(&out.text()).expect("json");
    assert_eq!(body["seen"], serde_json::json!(vec!["undefined"; 6]));
    assert!(
        body["imported"]
            .as_str()
            .is_some_and(|m| m.contains("cannot import `fs`")),
        "{body}"
    );
}

#[test]
fn fetches_run_concurrently_and_settle_their_promises() {
    let code = load(&[(
        "index.ts",
        r#"
        export default async () => {
          const [a, b] = await Promise.all([
            fetch("https://api.test/a"),
            fetch(new Request("https://api.test/b", { method: "POST", body: "hi" })),
          ]);
          let refused = "";
          try { await fetch("http://refused.test/"); } catch (e) { refused = `${e.name}: ${e.message}`; }
          return Response.json({
            a: await a.text(), b: await b.text(), method: b.headers.get("x-method"),
            status: a.status, ok: a.ok, refused,
          });
        };
        "#,
    )]);
    let (out, result) = run(&code, request("GET", "http://h/", ""), limits());
    result.expect("runs");
    let body: serde_json::Value = serde_json::from_str(&out.text()).expect("json");
    assert_eq!(body["a"], "GET https://api.test/a ");
    assert_eq!(body["b"], "POST https://api.test/b hi");
    assert_eq!(body["method"], "POST");
    assert_eq!(
        (body["status"].as_u64(), body["ok"].as_bool()),
        (Some(200), Some(true))
    );
    assert_eq!(
        body["refused"],
        "TypeError: fetch failed: refused.test:80 is not an allowed host"
    );
}

#[test]
fn an_instance_keeps_module_state_between_invocations_until_it_fails() {
    let code = load(&[(
        "index.ts",
        "let n = 0;\nexport default (req: Request) => {\n  if (new URL(req.url).pathname === '/spin') for (;;) {}\n  return new Response(String(++n));\n};\n",
    )]);
    let deadline = || Instant::now() + Duration::from_secs(5);
    let mut instance = js::Instance::new(&code, 64 << 20, deadline(), None).expect("loads");
    for expected in ["1", "2", "3"] {
        let out = Rc::new(Recorder::default());
        let result = instance.serve(
            request("GET", "http://h/", ""),
            &Default::default(),
            out.clone(),
            deadline(),
        );
        assert!(instance.reusable(&result));
        assert_eq!(out.text(), expected);
    }
    let out = Rc::new(Recorder::default());
    let result = instance.serve(
        request("GET", "http://h/spin", ""),
        &Default::default(),
        out,
        Instant::now() + Duration::from_millis(100),
    );
    assert!(matches!(result, Err(JsError::Timeout(_))), "{result:?}");
    assert!(
        !instance.reusable(&result),
        "an interrupted instance is replaced"
    );

    // A module whose top level throws or never ends fails to load, with the reason.
    let broken = load(&[(
        "index.ts",
        "throw new Error('at load');\nexport default () => new Response('x');\n",
    )]);
    let error = js::Instance::new(&broken, 64 << 20, deadline(), None).expect_err("fails");
    assert!(error.to_string().contains("at load"), "{error}");
    let endless = load(&[(
        "index.ts",
        "for (;;) {}\nexport default () => new Response('x');\n",
    )]);
    let error = js::Instance::new(
        &endless,
        64 << 20,
        Instant::now() + Duration::from_millis(100),
        None,
    )
    .expect_err("fails");
    assert!(matches!(error, JsError::Timeout(_)), "{error:?}");
}

#[test]
#[ignore = "prints the cost of one invocation; run with --ignored --nocapture in release"]
fn cost_of_a_warm_invocation() {
    let code = load(&[(
        "index.ts",
        "export default () => Response.json({ hello: 'world' });\n",
    )]);
    let far = Instant::now() + Duration::from_secs(3600);
    let mut instance = js::Instance::new(&code, 64 << 20, far, None).expect("loads");
    let n: u32 = std::env::var("ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20000);
    let started = Instant::now();
    for _ in 0..n {
        let out = Rc::new(Recorder::default());
        instance
            .serve(
                request("GET", "http://h/", ""),
                &Default::default(),
                out,
                far,
            )
            .expect("runs");
    }
    println!("{:?} per warm invocation", started.elapsed() / n);
}

#[test]
#[ignore = "prints the cost of one invocation; run with --ignored --nocapture in release"]
fn cost_of_an_invocation() {
    let code = load(&[(
        "index.ts",
        "export default () => Response.json({ hello: 'world' });\n",
    )]);
    for _ in 0..50 {
        run(&code, request("GET", "http://h/", ""), limits())
            .1
            .expect("runs");
    }
    let n: u32 = std::env::var("ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let started = Instant::now();
    for _ in 0..n {
        run(&code, request("GET", "http://h/", ""), limits())
            .1
            .expect("runs");
    }
    println!("{:?} per invocation", started.elapsed() / n);
}
