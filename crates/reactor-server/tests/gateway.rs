//! `/gateway/v1` against a fake upstream that speaks OpenAI's wire format (JSON and
//! server-sent events) on loopback and can be told, by the upstream model name, to fail,
//! stall or rate-limit: routing, fallback, cool-down, weighted balance, streaming without
//! buffering, access, and OpenAI-shaped errors — then the unmodified `openai` npm client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use reactor_core::{KeyTier, keys};
use reactor_db::Db;
use reactor_server::config::ServerConfig;
use reactor_server::{AppState, Server};
use serde_json::{Value, json};

mod support;

/// What the fake upstream saw: requests per upstream model, the last Authorization, and the
/// last Anthropic request with its key.
#[derive(Default)]
struct Seen {
    calls: HashMap<String, u32>,
    authorization: Option<String>,
    anthropic: Option<(Option<String>, Value)>,
}

/// Anthropic's Messages API, as the fake speaks it.
async fn fake_messages(State(seen): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("").to_string();
    {
        let mut s = seen.lock().expect("lock");
        *s.calls.entry(model.clone()).or_default() += 1;
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        s.anthropic = Some((key, request.clone()));
    }
    if headers.get("anthropic-version").is_none() || request["max_tokens"].as_u64().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "anthropic-version and max_tokens are required",
        )
            .into_response();
    }
    if model == "claude-bad" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: 999999 > 8192"}})),
        )
            .into_response();
    }
    if model == "claude-tools" {
        return Json(json!({
            "id": "msg_t", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Lyon"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 12, "output_tokens": 8}
        }))
        .into_response();
    }
    if request["stream"] == json!(true) {
        let events = [
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant", "model": model, "content": [], "usage": {"input_tokens": 9, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        // Split mid-event, as TCP may: the translator must reassemble.
        let text: String = events
            .iter()
            .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
            .collect();
        let (a, b) = text.split_at(text.len() / 2);
        let parts = vec![Ok::<_, std::io::Error>(a.to_string()), Ok(b.to_string())];
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(futures_util::stream::iter(
                parts,
            )))
            .expect("response");
    }
    Json(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Hello from claude"}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 9, "output_tokens": 3}
    }))
    .into_response()
}

type Shared = Arc<Mutex<Seen>>;

async fn fake_chat(State(seen): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("").to_string();
    {
        let mut s = seen.lock().expect("lock");
        *s.calls.entry(model.clone()).or_default() += 1;
        s.authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }
    if model.starts_with("fail") {
        // An upstream that echoes the key it got must not leak it to the caller.
        let echo = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        return (StatusCode::INTERNAL_SERVER_ERROR, echo).into_response();
    }
    if model == "limited" {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "7")],
            Json(json!({"error": {"message": "slow down", "type": "rate_limit_error"}})),
        )
            .into_response();
    }
    if model == "stall" {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    if model == "bad-request" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "messages is required", "type": "invalid_request_error", "param": "messages", "code": null}})),
        )
            .into_response();
    }
    let text = format!("{model} says hi");
    if request["stream"] == json!(true) {
        // Three chunks a quarter of a second apart, then [DONE].
        let model2 = model.clone();
        let stream = async_stream(move |i| {
            let chunk = json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model2,
                "choices": [{"index": 0, "delta": {"content": format!("part{i} ")}, "finish_reason": null}]
            });
            format!("data: {chunk}\n\n")
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(stream))
            .expect("response");
    }
    Json(json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    }))
    .into_response()
}

use axum::Json;

/// Three SSE events 250 ms apart, then `[DONE]`.
fn async_stream(
    event: impl Fn(u32) -> String + Send + 'static,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
    futures_util::stream::unfold(0u32, move |i| {
        let next = match i {
            0..=2 => Some(event(i)),
            3 => Some("data: [DONE]\n\n".to_string()),
            _ => None,
        };
        async move {
            let item = next?;
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Some((Ok(item), i + 1))
        }
    })
}

async fn fake_embeddings(State(seen): State<Shared>, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("").to_string();
    *seen
        .lock()
        .expect("lock")
        .calls
        .entry(model.clone())
        .or_default() += 1;
    // As OpenAI does: floats, or their little-endian f32 bytes in base64 when asked (the
    // `openai` client asks by default).
    let vector = [0.25f32, -0.5, 1.0];
    let embedding = if request["encoding_format"] == "base64" {
        use base64::Engine;
        let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
        json!(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        json!(vector)
    };
    Json(json!({
        "object": "list", "model": model,
        "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
        "usage": {"prompt_tokens": 2, "total_tokens": 2}
    }))
    .into_response()
}

async fn fake_upstream() -> (String, Shared) {
    let seen: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(fake_chat))
        .route("/v1/embeddings", axum::routing::post(fake_embeddings))
        .route("/anthropic/v1/messages", axum::routing::post(fake_messages))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), seen)
}

/// A listener that counts connections: where a caller would like to send the gateway.
async fn elsewhere() -> (String, Arc<Mutex<u32>>) {
    let hits = Arc::new(Mutex::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            *counter.lock().expect("lock") += 1;
        }
    });
    (format!("http://{addr}/v1"), hits)
}

struct Harness {
    base: String,
    service: String,
    public: String,
    http: reqwest::Client,
    seen: Shared,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let (upstream, seen) = fake_upstream().await;
        let upstream_root = upstream.trim_end_matches("/v1").to_string();
        // A port nothing listens on: connections are refused.
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("reactor.toml"),
            format!(
                r#"project_id = "gateway-test"
name = "gateway test"

[gateway]
retries = 1
backoff_ms = 10
timeout_ms = 500
failures_before_cooldown = 2
cooldown_secs = 60

[[gateway.limits]]
per = "user"
requests_per_minute = 3

[[gateway.prices]]
model = "ok-a"
input_per_million = 1
output_per_million = 2

[[gateway.providers]]
name = "fake"
kind = "openai-compatible"
base_url = "{upstream}"
api_key_secret = "FAKE_KEY"

[[gateway.providers]]
name = "keyless"
kind = "openai-compatible"
base_url = "{upstream}"
api_key_secret = "NOT_SET"

[[gateway.providers]]
name = "ant"
kind = "anthropic"
base_url = "{upstream_root}/anthropic/v1"
api_key_secret = "ANT_KEY"

[[gateway.models]]
name = "claude"
targets = [{{ provider = "ant", model = "claude-ok" }}]

[[gateway.models]]
name = "claude-tools"
targets = [{{ provider = "ant", model = "claude-tools" }}]

[[gateway.models]]
name = "claude-bad"
targets = [{{ provider = "ant", model = "claude-bad" }}]

[[gateway.models]]
name = "embed"
targets = [{{ provider = "ant", model = "claude-ok" }}, {{ provider = "fake", model = "ok-g" }}]

[[gateway.models]]
name = "chat"
targets = [{{ provider = "fake", model = "ok-a" }}]

[[gateway.providers]]
name = "gone"
kind = "openai-compatible"
base_url = "http://127.0.0.1:{closed_port}/v1"

[[gateway.models]]
name = "unreachable"
targets = [{{ provider = "gone", model = "x" }}, {{ provider = "fake", model = "ok-i" }}]

[[gateway.models]]
name = "broken"
targets = [{{ provider = "fake", model = "fail-2" }}]

[[gateway.models]]
name = "cached"
cache_ttl_secs = 60
targets = [{{ provider = "fake", model = "ok-h" }}]

[[gateway.models]]
name = "fallback"
targets = [{{ provider = "fake", model = "fail-1" }}, {{ provider = "fake", model = "ok-b" }}]

[[gateway.models]]
name = "limited"
targets = [{{ provider = "fake", model = "limited" }}]

[[gateway.models]]
name = "stalling"
targets = [{{ provider = "fake", model = "stall" }}, {{ provider = "fake", model = "ok-c" }}]

[[gateway.models]]
name = "balanced"
targets = [{{ provider = "fake", model = "ok-x", weight = 3 }}, {{ provider = "fake", model = "ok-y", weight = 1 }}]

[[gateway.models]]
name = "cooling"
targets = [{{ provider = "fake", model = "fail-cool" }}, {{ provider = "fake", model = "ok-d" }}]

[[gateway.models]]
name = "no-key"
targets = [{{ provider = "keyless", model = "ok-e" }}]

[[gateway.models]]
name = "strict"
targets = [{{ provider = "fake", model = "bad-request" }}, {{ provider = "fake", model = "ok-f" }}]
"#
            ),
        )
        .expect("manifest");
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .expect("db");
        let public = keys::generate(KeyTier::Public);
        db.insert_api_key(&public, "web").await.expect("key");
        let service = keys::generate(KeyTier::Service);
        db.insert_api_key(&service, "admin").await.expect("key");
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let endpoint = server.endpoint().expect("endpoint");
        let config = ServerConfig {
            master_key: Some(reactor_core::seal::MasterKey::generate()),
            project: Some(dir.path().to_path_buf()),
            ..ServerConfig::new(
                server.local_addr().expect("addr"),
                String::new(),
                vec![
                    reactor_core::Capability::Identity,
                    reactor_core::Capability::Gateway,
                ],
            )
        };
        let state = AppState::start(db, &config, &endpoint)
            .await
            .expect("state");
        tokio::spawn(server.run(state, std::future::pending()));
        let h = Harness {
            base: endpoint,
            service: service.secret,
            public: public.secret,
            http: reqwest::Client::new(),
            seen,
            _dir: dir,
        };
        let res = h
            .http
            .put(format!("{}/v1/secrets/FAKE_KEY", h.base))
            .header("apikey", &h.service)
            .json(&json!({"value": "sk-fake-secret-value"}))
            .send()
            .await
            .expect("secret");
        assert_eq!(res.status().as_u16(), 204);
        let res = h
            .http
            .put(format!("{}/v1/secrets/ANT_KEY", h.base))
            .header("apikey", &h.service)
            .json(&json!({"value": "sk-ant-fake"}))
            .send()
            .await
            .expect("secret");
        assert_eq!(res.status().as_u16(), 204);
        h
    }

    async fn chat(&self, key: &str, body: Value) -> (u16, HeaderMap, Value) {
        let res = self
            .http
            .post(format!("{}/gateway/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("chat");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, headers, res.json().await.unwrap_or(Value::Null))
    }

    fn calls(&self, model: &str) -> u32 {
        self.seen
            .lock()
            .expect("lock")
            .calls
            .get(model)
            .copied()
            .unwrap_or(0)
    }
}

fn target(headers: &HeaderMap) -> &str {
    headers
        .get("x-reactor-gateway-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn routes_falls_back_cools_down_and_balances() {
    let h = Harness::start().await;

    // The model callers name maps to the upstream's, with the project's secret as the key.
    let (status, headers, body) = h.chat(&h.service, hello("chat")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "ok-a says hi");
    assert_eq!(target(&headers), "fake/ok-a");
    assert_eq!(
        h.seen.lock().expect("lock").authorization.as_deref(),
        Some("Bearer sk-fake-secret-value")
    );

    // 5xx: retried once, then the next target; the upstream's body (echoing the key) stays
    // with the gateway.
    let (status, headers, body) = h.chat(&h.service, hello("fallback")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(target(&headers), "fake/ok-b");
    assert_eq!(h.calls("fail-1"), 2, "one attempt and one retry");

    // A refused connection: the next target serves.
    let (status, headers, _) = h.chat(&h.service, hello("unreachable")).await;
    assert_eq!(status, 200);
    assert_eq!(target(&headers), "fake/ok-i");

    // Every target failing: 502, and the upstream's body (which echoed the provider key) is
    // not passed on.
    let res = h
        .http
        .post(format!("{}/gateway/v1/chat/completions", h.base))
        .bearer_auth(&h.service)
        .json(&hello("broken"))
        .send()
        .await
        .expect("chat");
    assert_eq!(res.status().as_u16(), 502);
    let text = res.text().await.expect("text");
    assert!(!text.contains("sk-fake-secret-value"), "{text}");
    assert!(text.contains("upstream_unavailable"), "{text}");

    // A stalled target times out and the next serves.
    let started = Instant::now();
    let (status, headers, _) = h.chat(&h.service, hello("stalling")).await;
    assert_eq!(status, 200);
    assert_eq!(target(&headers), "fake/ok-c");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Every target rate-limited: 429 with the upstream's Retry-After, OpenAI's shape.
    let (status, headers, body) = h.chat(&h.service, hello("limited")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7")
    );
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // A target failing twice in a row is cooled down: the next request skips it.
    let (status, headers, _) = h.chat(&h.service, hello("cooling")).await;
    assert_eq!(status, 200);
    assert_eq!(target(&headers), "fake/ok-d");
    assert_eq!(h.calls("fail-cool"), 2);
    let (_, headers, _) = h.chat(&h.service, hello("cooling")).await;
    assert_eq!(target(&headers), "fake/ok-d");
    assert_eq!(h.calls("fail-cool"), 2, "cooled down: not tried again");

    // The caller's own mistake (a 4xx) is its answer: another target would say the same.
    let (status, headers, body) = h.chat(&h.service, hello("strict")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "messages");
    assert_eq!(target(&headers), "fake/bad-request");
    assert_eq!(h.calls("ok-f"), 0);

    // Weights 3:1 over 400 requests.
    for _ in 0..400 {
        let (status, _, _) = h.chat(&h.service, hello("balanced")).await;
        assert_eq!(status, 200);
    }
    let (x, y) = (h.calls("ok-x"), h.calls("ok-y"));
    assert_eq!(x + y, 400);
    assert!(
        (240..=360).contains(&x),
        "ok-x served {x} of 400 (expected about 300)"
    );

    // A provider whose key secret is unset: 502, naming the secret, never a key.
    let (status, _, body) = h.chat(&h.service, hello("no-key")).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("NOT_SET"),
        "{body}"
    );
    assert_eq!(h.calls("ok-e"), 0);
}

#[tokio::test]
async fn errors_access_and_no_way_to_another_upstream() {
    let h = Harness::start().await;
    // A model that is not configured: 404 in OpenAI's shape.
    let (status, _, body) = h.chat(&h.service, hello("gpt-4")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // Malformed bodies: 400 in OpenAI's shape.
    for bad in ["{", "[1]", "{\"messages\": []}"] {
        let res = h
            .http
            .post(format!("{}/gateway/v1/chat/completions", h.base))
            .bearer_auth(&h.service)
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .expect("post");
        assert_eq!(res.status().as_u16(), 400, "{bad}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(
            body["error"]["type"], "invalid_request_error",
            "{bad}: {body}"
        );
    }
    // A caller naming its own upstream reaches nothing but the configured ones.
    let (url, hits) = elsewhere().await;
    for body in [
        json!({"model": url, "messages": []}),
        json!({"model": "chat", "base_url": url, "messages": []}),
    ] {
        let _ = h.chat(&h.service, body).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *hits.lock().expect("lock"),
        0,
        "no connection reached the caller's URL"
    );

    // A bare public key is refused (the project did not allow anonymous callers).
    let (status, _, body) = h.chat(&h.public, hello("chat")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");

    // The models and embeddings.
    let res = h
        .http
        .get(format!("{}/gateway/v1/models", h.base))
        .bearer_auth(&h.service)
        .send()
        .await
        .expect("models");
    let models: Value = res.json().await.expect("json");
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"chat") && ids.contains(&"claude"), "{ids:?}");
    assert!(
        !ids.iter().any(|id| id.contains("ok-")),
        "upstream names stay private"
    );
}

#[tokio::test]
async fn streams_pass_through_chunk_by_chunk_and_the_openai_client_works() {
    let h = Harness::start().await;
    // The first event arrives long before the last: nothing waits for the whole answer.
    let started = Instant::now();
    let res = h
        .http
        .post(format!("{}/gateway/v1/chat/completions", h.base))
        .bearer_auth(&h.service)
        .json(&json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut stream = res.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        arrivals.push(started.elapsed());
    }
    assert!(
        text.contains("part0") && text.contains("part2") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    let (first, last) = (arrivals[0], arrivals[arrivals.len() - 1]);
    assert!(
        last - first >= Duration::from_millis(500),
        "chunks arrived together ({first:?} … {last:?}): the stream was buffered"
    );

    // The unmodified `openai` npm client: chat, stream, embeddings, errors.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/openai").exists(),
        "run `npm ci --prefix crates/reactor-server/tests/js` (scripts/test does)"
    );
    let mut node = std::process::Command::new("node");
    node.arg("gateway.mjs")
        .current_dir(&dir)
        .env("REACTOR_GATEWAY_URL", format!("{}/gateway/v1", h.base))
        .env("REACTOR_SERVICE_KEY", &h.service);
    let out = tokio::task::spawn_blocking(move || node.output())
        .await
        .expect("join")
        .expect("node runs");
    assert!(
        out.status.success(),
        "openai client:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn anthropic_providers_are_translated_both_ways() {
    let h = Harness::start().await;
    let (status, headers, body) = h
        .chat(
            &h.service,
            json!({"model": "claude", "max_tokens": 100, "stop": ["END"], "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(target(&headers), "ant/claude-ok");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from claude"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})
    );
    let (key, sent) = h
        .seen
        .lock()
        .expect("lock")
        .anthropic
        .clone()
        .expect("a request");
    assert_eq!(
        key.as_deref(),
        Some("sk-ant-fake"),
        "x-api-key, not a Bearer"
    );
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    );

    // Tool calls come back as OpenAI's tool_calls.
    let (_, _, body) = h
        .chat(
            &h.service,
            json!({"model": "claude-tools", "messages": [{"role": "user", "content": "Weather?"}],
                   "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]}),
        )
        .await;
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert_eq!(choice["message"]["content"], "Checking.");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"],
        "weather"
    );
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Lyon\"}"
    );
    let (_, sent) = h
        .seen
        .lock()
        .expect("lock")
        .anthropic
        .clone()
        .expect("a request");
    assert_eq!(sent["tools"][0]["input_schema"], json!({"type": "object"}));

    // An Anthropic error in OpenAI's shape, with its status.
    let (status, _, body) = h.chat(&h.service, hello("claude-bad")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_tokens"),
        "{body}"
    );

    // A streamed answer: Anthropic's events become OpenAI's chunks, then [DONE].
    let res = h
        .http
        .post(format!("{}/gateway/v1/chat/completions", h.base))
        .bearer_auth(&h.service)
        .json(
            &json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .send()
        .await
        .expect("stream");
    let text = res.text().await.expect("text");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("a JSON chunk"))
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("usage chunk");
    assert_eq!(usage["usage"]["total_tokens"], 11);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // Anthropic has no embeddings: the next target serves them.
    let res = h
        .http
        .post(format!("{}/gateway/v1/embeddings", h.base))
        .bearer_auth(&h.service)
        .json(&json!({"model": "embed", "input": "x"}))
        .send()
        .await
        .expect("embeddings");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(target(res.headers()), "fake/ok-g");
}

/// Signs a user up; their access token.
async fn sign_up(h: &Harness, email: &str) -> String {
    let res = h
        .http
        .post(format!("{}/auth/v1/signup", h.base))
        .header("apikey", &h.public)
        .json(&json!({"email": email, "password": "correct horse battery"}))
        .send()
        .await
        .expect("signup");
    let body: Value = res.json().await.expect("json");
    body["access_token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn users_are_limited_and_usage_is_recorded_by_caller_model_and_day() {
    let h = Harness::start().await;
    let token = sign_up(&h, "ada@example.com").await;
    let as_user = |body: Value| {
        h.http
            .post(format!("{}/gateway/v1/chat/completions", h.base))
            .header("apikey", &h.public)
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    // Three requests a minute for each user; the fourth is refused in OpenAI's shape.
    for _ in 0..3 {
        let res = as_user(hello("chat")).await.expect("chat");
        assert_eq!(res.status().as_u16(), 200);
        res.text().await.expect("body");
    }
    let res = as_user(hello("chat")).await.expect("chat");
    assert_eq!(res.status().as_u16(), 429);
    let after: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&after), "{after}");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        h.calls("ok-a"),
        3,
        "the refused request never reached the upstream"
    );
    // The service key (no user) is not under the per-user limit.
    assert_eq!(h.chat(&h.service, hello("chat")).await.0, 200);

    // Usage, recorded off the request path: poll until the recorder caught up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let usage = loop {
        let res = h
            .http
            .get(format!("{}/gateway/v1/usage?group_by=caller,model", h.base))
            .header("apikey", &h.service)
            .send()
            .await
            .expect("usage");
        assert_eq!(res.status().as_u16(), 200);
        let body: Value = res.json().await.expect("json");
        let rows = body["usage"].as_array().cloned().unwrap_or_default();
        let ada = rows
            .iter()
            .find(|r| {
                r["caller"].as_str().is_some_and(|c| c.starts_with("user:")) && r["model"] == "chat"
            })
            .cloned();
        if let Some(ada) = ada.filter(|a| a["requests"] == 3) {
            break ada;
        }
        assert!(Instant::now() < deadline, "usage never showed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(usage["prompt_tokens"], 9);
    assert_eq!(usage["completion_tokens"], 12);
    // 3 × (3 input tokens at $1/M + 4 output at $2/M) = $0.000033.
    assert!(
        (usage["cost"].as_f64().expect("cost") - 0.000033).abs() < 1e-9,
        "{usage}"
    );

    // Only the service key reads usage; a bad grouping is a 400.
    let res = h
        .http
        .get(format!("{}/gateway/v1/usage", h.base))
        .header("apikey", &h.public)
        .bearer_auth(&token)
        .send()
        .await
        .expect("usage");
    assert_eq!(res.status().as_u16(), 403);
    let res = h
        .http
        .get(format!("{}/gateway/v1/usage?group_by=password", h.base))
        .header("apikey", &h.service)
        .send()
        .await
        .expect("usage");
    assert_eq!(res.status().as_u16(), 400);
}

/// Two `reactor-server` processes on one Postgres share a key's daily budget exactly.
#[tokio::test]
async fn a_budget_holds_across_two_servers_on_one_postgres() {
    let Some(url) = reactor_db::testing::fresh_postgres_database("gateway_budget").await else {
        return;
    };
    let (upstream, seen) = fake_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("reactor.toml"),
        format!(
            r#"project_id = "gateway-budget"
name = "budget"

[[gateway.limits]]
per = "key"
spend_per_day = 0.0002

[[gateway.prices]]
model = "ok-a"
input_per_million = 1
output_per_million = 1

[[gateway.providers]]
name = "fake"
kind = "openai-compatible"
base_url = "{upstream}"

[[gateway.models]]
name = "chat"
targets = [{{ provider = "fake", model = "ok-a" }}]
"#
        ),
    )
    .expect("manifest");
    let key = support::keys_create(&url, "svc");
    let master = reactor_core::seal::MasterKey::generate().to_base64();
    let start = |port: u16| {
        support::Proc(
            std::process::Command::new(support::BIN)
                .env("REACTOR_DATABASE_URL", &url)
                .env("REACTOR_LISTEN", format!("127.0.0.1:{port}"))
                .env("REACTOR_PROJECT", dir.path())
                .env("REACTOR_MASTER_KEY", &master)
                .env(
                    "REACTOR_CACHE_DIR",
                    dir.path().join(format!("cache-{port}")),
                )
                .env("REACTOR_STORAGE_PATH", dir.path().join("objects"))
                .env("REACTOR_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    };
    let http = reqwest::Client::new();
    let (pa, pb) = (support::free_port(), support::free_port());
    let (_a, _b) = (start(pa), start(pb));
    let bases = [
        format!("http://127.0.0.1:{pa}"),
        format!("http://127.0.0.1:{pb}"),
    ];
    for base in &bases {
        support::wait_up(&http, base).await;
    }
    // Each request reserves about 2 × 60 tokens' worth ($0.00012) and costs $0.000007: the
    // $0.0002 budget admits a request while what was spent plus that estimate fits.
    let body =
        json!({"model": "chat", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]});
    let mut served = 0;
    let mut refused = 0;
    for i in 0..30 {
        let base = &bases[i % 2];
        let res = http
            .post(format!("{base}/gateway/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .expect("chat");
        match res.status().as_u16() {
            200 => served += 1,
            429 => refused += 1,
            other => panic!("{other}: {}", res.text().await.unwrap_or_default()),
        }
        res.bytes().await.expect("body");
        // The recorder settles each reservation off the request path; let it.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let upstream_calls = seen
        .lock()
        .expect("lock")
        .calls
        .get("ok-a")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        upstream_calls, served,
        "every admitted request reached the upstream, no other"
    );
    assert!(
        refused > 0 && served > 0,
        "served {served}, refused {refused}"
    );
    // What was spent never passed the budget, though two servers admitted requests.
    let spent_micro = served as i64 * 7;
    assert!(
        spent_micro <= 200,
        "spent {spent_micro} micro-dollars of 200"
    );
    assert!(
        served >= 10,
        "the budget was used, not refused early: served {served}"
    );
}

#[tokio::test]
async fn identical_requests_are_answered_from_the_cache_unless_told_not_to() {
    let h = Harness::start().await;
    let send = |body: &'static str, no_cache: bool| {
        let mut req = h
            .http
            .post(format!("{}/gateway/v1/chat/completions", h.base))
            .bearer_auth(&h.service)
            .header("content-type", "application/json")
            .body(body);
        if no_cache {
            req = req.header("cache-control", "no-cache");
        }
        req.send()
    };
    let first = send(
        r#"{"model":"cached","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
        false,
    )
    .await
    .expect("chat");
    assert_eq!(first.headers()["x-reactor-gateway-cache"], "miss");
    let answer: Value = first.json().await.expect("json");
    assert_eq!(h.calls("ok-h"), 1);

    // The same request, its keys in another order: from the cache (once the answer is kept,
    // which happens off the request path).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = send(
            r#"{"temperature":0,"messages":[{"content":"hi","role":"user"}],"model":"cached"}"#,
            false,
        )
        .await
        .expect("chat");
        if res.headers()["x-reactor-gateway-cache"] == "hit" {
            assert_eq!(res.headers()["x-reactor-gateway-target"], "cache");
            let cached: Value = res.json().await.expect("json");
            assert_eq!(cached, answer);
            break;
        }
        res.bytes().await.expect("body");
        assert!(Instant::now() < deadline, "never served from the cache");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let upstream_calls = h.calls("ok-h");

    // `Cache-Control: no-cache` goes to the upstream; another question is another entry.
    let res = send(
        r#"{"model":"cached","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
        true,
    )
    .await
    .expect("chat");
    assert_eq!(res.headers()["x-reactor-gateway-cache"], "miss");
    res.bytes().await.expect("body");
    assert_eq!(h.calls("ok-h"), upstream_calls + 1);
    let res = send(
        r#"{"model":"cached","messages":[{"role":"user","content":"bye"}]}"#,
        false,
    )
    .await
    .expect("chat");
    assert_eq!(res.headers()["x-reactor-gateway-cache"], "miss");
    res.bytes().await.expect("body");
    // A model without a cache says nothing about one.
    let (_, headers, _) = h.chat(&h.service, hello("chat")).await;
    assert!(headers.get("x-reactor-gateway-cache").is_none());
}
