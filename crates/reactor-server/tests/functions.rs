//! `/fn/v1` as callers drive it: a real server on loopback running a project's functions,
//! requests over HTTP, and the limits, logs and secrets around them.

use std::path::Path;
use std::time::{Duration, Instant};

use reactor_core::{KeyTier, keys};
use reactor_db::Db;
use reactor_server::config::ServerConfig;
use reactor_server::{AppState, Server};
use serde_json::{Value, json};

const MANIFEST: &str = r#"project_id = "fn-test-0001"
name = "functions test"

[[functions]]
name = "echo"
source = "functions/echo"

[[functions]]
name = "worker"
source = "functions/worker"
entry = "worker.js"

[[functions]]
name = "stream"
source = "functions/stream"

[[functions]]
name = "fail"
source = "functions/fail"

[[functions]]
name = "spin"
source = "functions/spin"
timeout_ms = 300

[[functions]]
name = "hog"
source = "functions/hog"
memory_mb = 16

[[functions]]
name = "slow"
source = "functions/slow"
concurrency = 1

[[functions]]
name = "snoop"
source = "functions/snoop"

[[functions]]
name = "counter"
source = "functions/counter"
isolation = "instance"
concurrency = 1
timeout_ms = 300

[[functions]]
name = "fresh"
source = "functions/fresh"

[[functions]]
name = "cgi"
source = "functions/cgi"
entry = "echo.wat"

[[functions]]
name = "component"
source = "functions/component"
entry = "handler.wasm"
timeout_ms = 500

[[functions]]
name = "caller"
source = "functions/caller"
allowed_hosts = ["127.0.0.1"]
"#;

const FILES: &[(&str, &str)] = &[
    (
        "functions/echo/index.ts",
        r#"import { shout } from "./lib/shout.ts";
interface Echo { method: string; path: string; query: string | null; body: unknown; }
export default async (req: Request, env: Record<string, string>): Promise<Response> => {
  const url = new URL(req.url);
  const text = await req.text();
  console.log("echo", req.method, url.pathname);
  const out: Echo & Record<string, unknown> = {
    method: req.method,
    path: url.pathname,
    query: url.searchParams.get("q"),
    body: text ? JSON.parse(text) : null,
    loud: shout("hi"),
    user: req.headers.get("x-reactor-user-id"),
    role: req.headers.get("x-reactor-role"),
    key: req.headers.get("x-reactor-key"),
    forged: req.headers.get("x-reactor-forged"),
    custom: req.headers.get("x-custom"),
    secret: env.GREETING ?? null,
  };
  return Response.json(out, { status: 201, headers: { "x-fn": "echo" } });
};
"#,
    ),
    (
        "functions/echo/lib/shout.ts",
        "export const shout = (s: string): string => s.toUpperCase() + '!';\n",
    ),
    (
        "functions/worker/worker.js",
        "export default { fetch(req, env, ctx) { return new Response('worker ok', { headers: { 'content-type': 'text/plain' } }); } };\n",
    ),
    (
        "functions/stream/index.ts",
        r#"export default () => {
  let i = 0;
  return new Response(new ReadableStream({
    async pull(c) {
      await new Promise((r) => setTimeout(r, 5));
      if (i === 4) return c.close();
      c.enqueue(new TextEncoder().encode(`chunk ${i++}\n`));
    },
  }), { headers: { "content-type": "text/plain" } });
};
"#,
    ),
    (
        "functions/fail/index.ts",
        "export default () => { throw new Error('database password is hunter2'); };\n",
    ),
    (
        "functions/spin/index.ts",
        "export default () => { for (;;) {} };\n",
    ),
    (
        "functions/hog/index.ts",
        "export default () => { const a: string[] = []; for (;;) a.push('x'.repeat(4096) + a.length); };\n",
    ),
    (
        "functions/slow/index.ts",
        "export default async () => { await new Promise((r) => setTimeout(r, 1000)); return new Response('slow'); };\n",
    ),
    (
        "functions/snoop/index.ts",
        r#"export default async () => {
  const globals = [typeof process, typeof Deno, typeof require, typeof std, typeof os, typeof Bun];
  let fsImport = "refused";
  try { await import("fs"); fsImport = "loaded"; } catch (e) { fsImport = String(e); }
  let evalled = "refused";
  try { evalled = String(eval("1 + 1")); } catch (e) { evalled = "refused"; }
  return Response.json({ globals, fsImport, evalled });
};
"#,
    ),
    (
        "functions/fresh/index.ts",
        "let n = 0;\nconsole.log('module evaluated');\nexport default () => new Response(String(++n));\n",
    ),
    (
        "functions/cgi/echo.wat",
        include_str!("../../reactor-functions/tests/fixtures/echo.wat"),
    ),
    (
        "functions/counter/index.ts",
        "let n = 0;\nconsole.log('loaded');\nexport default (req: Request) => {\n  if (new URL(req.url).pathname.endsWith('/spin')) for (;;) {}\n  return new Response(String(++n));\n};\n",
    ),
    (
        "functions/caller/index.ts",
        r#"export default async (req: Request, env: Record<string, string>): Promise<Response> => {
  const u = new URL(req.url);
  const forward = { apikey: req.headers.get("apikey") ?? "" };
  if (u.searchParams.get("what") === "data") {
    const r = await fetch(`${env.REACTOR_URL}/data/v1/notes?select=body&order=id`, { headers: forward });
    return new Response(await r.text(), { status: r.status, headers: { "content-type": "application/json" } });
  }
  try {
    const target = u.searchParams.get("target")!;
    const [a, b] = await Promise.all([fetch(target), fetch(target, { method: "POST", body: "ping" })]);
    return Response.json({ a: await a.text(), b: await b.text(), status: a.status, up: a.headers.get("x-up") });
  } catch (e) {
    return Response.json({ error: String(e) }, { status: 502 });
  }
};
"#,
    ),
];

/// A plain HTTP server on loopback for handlers to call: `/hello` answers, `/away` redirects
/// to a host no function may reach, `/big` sends more than `fetch` reads.
async fn upstream() -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/hello",
            get(|| async { ([("x-up", "yes")], "hello from upstream") })
                .post(|body: String| async move { format!("got {body}") }),
        )
        .route(
            "/away",
            get(|| async { axum::response::Redirect::temporary("http://example.com/") }),
        )
        .route("/big", get(|| async { vec![b'x'; 11 * 1024 * 1024] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn write_project(dir: &Path) {
    std::fs::write(dir.join("reactor.toml"), MANIFEST).expect("manifest");
    for (name, text) in FILES {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    let component = reactor_functions::testing::http_component(include_str!(
        "../../reactor-functions/tests/fixtures/http-handler.wat"
    ))
    .expect("the fixture wraps into a component");
    std::fs::create_dir_all(dir.join("functions/component")).expect("mkdir");
    std::fs::write(dir.join("functions/component/handler.wasm"), component).expect("write");
}

struct Harness {
    base: String,
    public_key: String,
    service_key: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(dev: bool) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        write_project(dir.path());
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .expect("db");
        let public = keys::generate(KeyTier::Public);
        db.insert_api_key(&public, "test").await.expect("key");
        let service = keys::generate(KeyTier::Service);
        db.insert_api_key(&service, "admin").await.expect("key");
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let endpoint = server.endpoint().expect("endpoint");
        let config = ServerConfig {
            master_key: Some(reactor_core::seal::MasterKey::generate()),
            project: Some(dir.path().to_path_buf()),
            dev,
            ..ServerConfig::new(
                server.local_addr().expect("addr"),
                String::new(),
                vec![
                    reactor_core::Capability::Identity,
                    reactor_core::Capability::Data,
                    reactor_core::Capability::Functions,
                ],
            )
        };
        let state = AppState::start(db, &config, &endpoint)
            .await
            .expect("state");
        tokio::spawn(server.run(state, std::future::pending()));
        Harness {
            base: endpoint,
            public_key: public.secret,
            service_key: service.secret,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn request(&self, method: &str, path: &str, key: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("apikey", key)
    }

    async fn call(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, headers, res.text().await.expect("body"))
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let (status, _, text) = self.call(req).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn logs(&self, name: &str) -> Vec<Value> {
        let (status, body) = self
            .json(self.request("GET", &format!("/fn/v1/_logs/{name}"), &self.service_key))
            .await;
        assert_eq!(status, 200, "{body}");
        body["lines"].as_array().cloned().unwrap_or_default()
    }
}

#[tokio::test]
async fn handlers_answer_over_http_with_the_callers_identity() {
    let h = Harness::start(false).await;

    // A signed-in user's identity reaches the handler as verified headers; forged ones don't.
    let (status, session) = h
        .json(
            h.request("POST", "/auth/v1/signup", &h.public_key)
                .json(&json!({"email": "ada@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let token = session["access_token"].as_str().expect("token").to_string();
    let user_id = session["user"]["id"].as_str().expect("id").to_string();

    let (status, headers, text) = h
        .call(
            h.request("POST", "/fn/v1/echo/items/7?q=search", &h.public_key)
                .bearer_auth(&token)
                .header("x-reactor-forged", "admin")
                .header("x-reactor-user-id", "someone-else")
                .header("x-custom", "kept")
                .json(&json!({"n": 1})),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(headers["x-fn"], "echo");
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers.contains_key("content-length"),
        "a whole body is not chunked"
    );
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/fn/v1/echo/items/7");
    assert_eq!(body["query"], "search");
    assert_eq!(body["body"], json!({"n": 1}));
    assert_eq!(body["loud"], "HI!", "relative imports work");
    assert_eq!(body["user"], user_id.as_str());
    assert_eq!(body["key"], "pub");
    assert_eq!(body["forged"], Value::Null);
    assert_eq!(body["custom"], "kept");
    assert_eq!(body["secret"], Value::Null);

    // Anonymous callers have no user header; the object form with fetch() works too.
    let (status, body) = h.json(h.request("GET", "/fn/v1/echo", &h.public_key)).await;
    assert_eq!((status, body["user"].clone()), (201, Value::Null));
    let (status, _, text) = h
        .call(h.request("GET", "/fn/v1/worker", &h.public_key))
        .await;
    assert_eq!((status, text.as_str()), (200, "worker ok"));

    // A key is required, and unknown functions are a JSON 404.
    let (status, _) = h.json(h.http.get(format!("{}/fn/v1/echo", h.base))).await;
    assert_eq!(status, 401);
    let (status, body) = h.json(h.request("GET", "/fn/v1/nope", &h.public_key)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("function_not_found"))
    );

    // What the handler logged is kept, with the request id as the invocation id.
    let lines = h.logs("echo").await;
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "echo POST /fn/v1/echo/items/7"),
        "{lines:?}"
    );
    let (status, _) = h
        .json(h.request("GET", "/fn/v1/_logs/echo", &h.public_key))
        .await;
    assert_eq!(status, 403, "logs are for the service key");

    // --follow: a long poll after the last line answers as soon as a new one is written.
    let last = lines.last().and_then(|l| l["seq"].as_u64()).expect("seq");
    let started = Instant::now();
    let follow = h.json(h.request(
        "GET",
        &format!("/fn/v1/_logs/echo?after={last}&wait=20"),
        &h.service_key,
    ));
    let invoke = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.call(h.request("GET", "/fn/v1/echo/later", &h.public_key))
            .await
    };
    let ((status, followed), _) = tokio::join!(follow, invoke);
    assert_eq!(status, 200);
    assert_eq!(
        followed["lines"][0]["message"],
        "echo GET /fn/v1/echo/later"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered without waiting out the poll"
    );

    // The list says what runs, with limits from reactor.toml over the defaults.
    let (status, list) = h.json(h.request("GET", "/fn/v1", &h.service_key)).await;
    assert_eq!(status, 200);
    let spin = list
        .as_array()
        .and_then(|l| l.iter().find(|f| f["name"] == "spin"))
        .expect("spin listed");
    assert_eq!(spin["limits"]["timeout_ms"], 300);
    assert_eq!(spin["limits"]["memory_mb"], 64);
}

#[tokio::test]
async fn streams_arrive_in_pieces() {
    let h = Harness::start(false).await;
    let mut res = h
        .request("GET", "/fn/v1/stream", &h.public_key)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert!(!res.headers().contains_key("content-length"));
    let mut chunks = Vec::new();
    while let Some(chunk) = res.chunk().await.expect("chunk") {
        chunks.push(String::from_utf8_lossy(&chunk).into_owned());
    }
    assert_eq!(chunks.concat(), "chunk 0\nchunk 1\nchunk 2\nchunk 3\n");
    assert!(chunks.len() > 1, "sent as it was produced: {chunks:?}");
}

#[tokio::test]
async fn failures_stay_inside_their_invocation() {
    let h = Harness::start(false).await;

    // A throw is a 500 whose text stays in the logs, out of the caller's sight in production.
    let (status, body) = h.json(h.request("GET", "/fn/v1/fail", &h.public_key)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("function_error"))
    );
    assert!(!body.to_string().contains("hunter2"), "{body}");
    let lines = h.logs("fail").await;
    assert!(
        lines.iter().any(|l| l["level"] == "error"
            && l["message"].as_str().is_some_and(|m| m.contains("hunter2"))),
        "{lines:?}"
    );

    // An endless loop is cut at its limit, and the server keeps serving meanwhile.
    let started = Instant::now();
    let spin = h.json(h.request("GET", "/fn/v1/spin", &h.public_key));
    let echo = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.json(h.request("GET", "/fn/v1/echo", &h.public_key)).await
    };
    let ((spin_status, spin_body), (echo_status, _)) = tokio::join!(spin, echo);
    assert_eq!(
        (spin_status, spin_body["code"].as_str()),
        (504, Some("function_timeout"))
    );
    assert_eq!(echo_status, 201);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Unbounded allocation ends at the memory cap.
    let (status, body) = h.json(h.request("GET", "/fn/v1/hog", &h.public_key)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("function_memory_limit")),
        "{body} {:?}",
        h.logs("hog").await
    );
    let (status, _) = h.json(h.request("GET", "/fn/v1/echo", &h.public_key)).await;
    assert_eq!(status, 201, "the server is fine afterwards");

    // Past the concurrency limit, callers are told to retry.
    let first = h.call(h.request("GET", "/fn/v1/slow", &h.public_key));
    let second = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.call(h.request("GET", "/fn/v1/slow", &h.public_key)).await
    };
    let ((s1, _, t1), (s2, headers2, t2)) = tokio::join!(first, second);
    assert_eq!((s1, t1.as_str()), (200, "slow"));
    assert_eq!(s2, 503, "{t2}");
    assert!(t2.contains("function_busy"));
    assert_eq!(headers2["retry-after"], "1");

    // Bodies over the limit are refused before the function runs.
    let (status, body) = h
        .json(
            h.request("POST", "/fn/v1/echo", &h.public_key)
                .body(vec![b'x'; 11 * 1024 * 1024]),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("request_too_large"))
    );
}

#[tokio::test]
async fn handlers_see_no_host_and_errors_show_in_development() {
    let h = Harness::start(true).await;
    let (status, body) = h
        .json(h.request("GET", "/fn/v1/snoop", &h.public_key))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["globals"], json!(vec!["undefined"; 6]));
    assert!(
        body["fsImport"]
            .as_str()
            .is_some_and(|m| m.contains("cannot import `fs`")),
        "{body}"
    );
    assert_eq!(body["evalled"], "refused", "no eval of strings");

    // On `reactor dev` the caller sees why the handler failed.
    let (status, body) = h.json(h.request("GET", "/fn/v1/fail", &h.public_key)).await;
    assert_eq!(status, 500);
    assert!(
        body["details"]
            .as_str()
            .is_some_and(|d| d.contains("hunter2")),
        "{body}"
    );
}

#[tokio::test]
async fn secrets_reach_handlers_and_never_leave_the_server() {
    let h = Harness::start(false).await;
    let put = |name: &str, value: &str, key: &str| {
        h.request("PUT", &format!("/v1/secrets/{name}"), key)
            .json(&json!({ "value": value }))
    };
    let (status, _, _) = h
        .call(put("GREETING", "hello from env", &h.public_key))
        .await;
    assert_eq!(status, 403, "only the service key manages secrets");
    let (status, _, text) = h
        .call(put("GREETING", "hello from env", &h.service_key))
        .await;
    assert_eq!(status, 204, "{text}");
    let (status, body) = h.json(put("not-valid", "x", &h.service_key)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_secret"))
    );
    assert!(body["hint"].is_string());

    let (status, list) = h
        .json(h.request("GET", "/v1/secrets", &h.service_key))
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["secrets"][0]["name"], "GREETING");
    assert!(!list.to_string().contains("hello from env"), "{list}");

    let (_, body) = h.json(h.request("GET", "/fn/v1/echo", &h.public_key)).await;
    assert_eq!(body["secret"], "hello from env");

    let (status, _, _) = h
        .call(h.request("DELETE", "/v1/secrets/GREETING", &h.service_key))
        .await;
    assert_eq!(status, 204);
    let (status, body) = h
        .json(h.request("DELETE", "/v1/secrets/GREETING", &h.service_key))
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (_, body) = h.json(h.request("GET", "/fn/v1/echo", &h.public_key)).await;
    assert_eq!(body["secret"], Value::Null);
}

#[tokio::test]
async fn fetch_reaches_allowed_hosts_and_the_server_itself_only() {
    let h = Harness::start(false).await;
    let up = upstream().await;
    let call = |target: &str| {
        h.request(
            "GET",
            &format!("/fn/v1/caller?target={target}"),
            &h.public_key,
        )
    };

    let (status, body) = h.json(call(&format!("{up}/hello"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["a"], "hello from upstream");
    assert_eq!(body["b"], "got ping");
    assert_eq!(body["up"], "yes");

    // A host not in allowed_hosts is refused before any connection; so is a redirect to one.
    let (status, body) = h.json(call("http://example.com/")).await;
    assert_eq!(status, 502);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("example.com:80 is not an allowed host")),
        "{body}"
    );
    let (_, body) = h.json(call(&format!("{up}/away"))).await;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not an allowed host")),
        "{body}"
    );
    let (_, body) = h.json(call(&format!("{up}/big"))).await;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than")),
        "{body}"
    );
    let (_, body) = h.json(call("file:///etc/passwd")).await;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot be fetched")),
        "{body}"
    );

    // The server itself is always reachable: a handler reads the Data API as its caller.
    let migrate = json!({"files": [{"name": "0001_notes.sql", "sql": "create table notes (id integer primary key, body text not null);\ninsert into notes (id, body) values (1, 'first'), (2, 'second');\n"}]});
    let (status, body) = h
        .json(
            h.request("POST", "/data/v1/admin/migrations", &h.service_key)
                .json(&migrate),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h
        .json(h.request("GET", "/fn/v1/caller?what=data", &h.service_key))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!([{"body": "first"}, {"body": "second"}]));
}

#[tokio::test]
async fn instance_isolation_keeps_state_until_a_limit_is_hit() {
    let h = Harness::start(false).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (status, _, text) = h
            .call(h.request("GET", "/fn/v1/counter", &h.public_key))
            .await;
        assert_eq!(status, 200);
        seen.push(text);
    }
    assert_eq!(seen, ["1", "2", "3"], "one instance served all three");
    let (status, body) = h
        .json(h.request("GET", "/fn/v1/counter/spin", &h.public_key))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (504, Some("function_timeout"))
    );
    let (_, _, text) = h
        .call(h.request("GET", "/fn/v1/counter", &h.public_key))
        .await;
    assert_eq!(
        text, "1",
        "the interrupted instance was replaced by a fresh one"
    );
    let loaded = h
        .logs("counter")
        .await
        .iter()
        .filter(|l| l["message"] == "loaded")
        .count();
    assert_eq!(loaded, 2, "the module loaded once per instance");
    let (_, list) = h.json(h.request("GET", "/fn/v1", &h.service_key)).await;
    let counter = list
        .as_array()
        .and_then(|l| l.iter().find(|f| f["name"] == "counter"))
        .expect("listed");
    assert_eq!(counter["isolation"], "instance");
}

#[tokio::test]
async fn wasm_commands_answer_over_http() {
    let h = Harness::start(false).await;
    let (status, headers, body) = h
        .call(
            h.request("POST", "/fn/v1/cgi/deep/path?x=1", &h.public_key)
                .header("content-type", "text/plain")
                .body("posted"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["x-wasm"], "yes");
    assert!(body.starts_with("posted|"), "{body}");
    for var in [
        "PATH_INFO=/deep/path",
        "QUERY_STRING=x=1",
        "HTTP_X_REACTOR_KEY=pub",
    ] {
        assert!(body.contains(&format!("{var}\0")), "{var} in {body:?}");
    }
    assert!(body.ends_with("|nofs"));
    assert!(
        h.logs("cgi")
            .await
            .iter()
            .any(|l| l["message"] == "hello from wasm"),
        "stderr goes to the logs"
    );
    let (_, list) = h.json(h.request("GET", "/fn/v1", &h.service_key)).await;
    let cgi = list
        .as_array()
        .and_then(|l| l.iter().find(|f| f["name"] == "cgi"))
        .expect("listed");
    assert_eq!(cgi["runtime"], "wasm");
    assert_eq!(cgi["hash"].as_str().map(str::len), Some(64));
}

#[tokio::test]
async fn wasi_http_components_answer_over_http() {
    let h = Harness::start(false).await;
    let (status, headers, body) = h
        .call(
            h.request("POST", "/fn/v1/component/deep/path?x=1", &h.public_key)
                .header("content-type", "text/plain")
                .body("posted"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["x-wasm"], "component");
    assert_eq!(headers["content-type"], "text/plain");
    let (echo, env) = body.split_once("|dirs=0").expect("no directories given");
    assert_eq!(echo, "POST /fn/v1/component/deep/path?x=1|posted");
    // The project's secrets (none here) and the server's own address, nothing of the host.
    assert!(env.contains("|REACTOR_URL=http://"), "{env}");
    assert!(!env.contains("PATH=") && !env.contains("HOME="), "{env}");
    assert!(
        h.logs("component")
            .await
            .iter()
            .any(|l| l["message"] == "hello from a component"),
        "stdout goes to the logs"
    );
    let (status, _, body) = h
        .call(h.request("PUT", "/fn/v1/component", &h.public_key))
        .await;
    assert_eq!(
        status, 504,
        "the time limit ends a spinning component: {body}"
    );
    let (status, _, body) = h
        .call(h.request("GET", "/fn/v1/component", &h.public_key))
        .await;
    assert_eq!(status, 201, "still serving after a timeout: {body}");
    assert!(body.starts_with("GET /fn/v1/component||dirs=0"), "{body}");
}

#[tokio::test]
async fn every_request_gets_a_context_no_request_used_before() {
    let h = Harness::start(false).await;
    // One after another (served by workers with a context built ahead) and several at once
    // (some of them on fresh contexts built on demand): never any state from before.
    for _ in 0..5 {
        let (status, _, text) = h
            .call(h.request("GET", "/fn/v1/fresh", &h.public_key))
            .await;
        assert_eq!((status, text.as_str()), (200, "1"));
    }
    let calls: Vec<_> = (0..8)
        .map(|_| h.call(h.request("GET", "/fn/v1/fresh", &h.public_key)))
        .collect();
    for (status, _, text) in futures_util::future::join_all(calls).await {
        assert_eq!((status, text.as_str()), (200, "1"));
    }
    // What the module's top level logged reaches the logs of the request it served.
    let evaluated = h
        .logs("fresh")
        .await
        .iter()
        .filter(|l| l["message"] == "module evaluated")
        .count();
    assert_eq!(evaluated, 13, "one evaluation per request");
}
