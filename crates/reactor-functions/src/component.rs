//! WASI HTTP handlers: a WebAssembly component exporting `wasi:http/incoming-handler`
//! (what `cargo component`, `jco componentize` or `componentize-py` build for the
//! `wasi:http/proxy` world) is served like a JavaScript handler — the request goes in as an
//! `incoming-request`, the head comes back through `response-outparam.set`, and the body
//! streams to the caller while the component still writes it.
//!
//! Wasmtime's own `wasi:http` and WASI preview 2 implementations do the work; Reactor decides
//! what a component is given: its project secrets as environment variables, no preopened
//! directories, no sockets, stdout and stderr into the function's logs line by line as they
//! are written ([`LogSink`]), and outgoing HTTP only through [`outbound::send`] (the
//! function's allow-list, the fetch size and time caps). Instances come from the same pool as command modules (see `wasm`), under the same
//! epoch deadline and memory cap.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::js::{JsError, Level, OutboundRequest};
use crate::logs::LogBook;
use crate::outbound::{self, Policy};
use crate::wasm::{self, TICK};
use crate::{Answer, AnswerBody, Call, FunctionError, Invocation};

/// Bytes of stdout and stderr an invocation may put in the logs; the rest is dropped (the
/// component's writes still succeed).
const MAX_LOG_BYTES: usize = 64 * 1024;

/// A compiled, pre-linked `wasi:http` component.
pub struct HttpComponent {
    pre: ProxyPre<State>,
    pub hash: String,
}

impl std::fmt::Debug for HttpComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpComponent")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Whether `binary` is a component rather than a core module: the layer field of the
/// preamble (bytes 6–7) is 1 for components, 0 for modules.
pub fn is_component(binary: &[u8]) -> bool {
    binary.get(..4) == Some(b"\0asm") && binary.get(6..8) == Some(&[1, 0])
}

impl HttpComponent {
    /// Compiles `binary` and links it against WASI preview 2 and `wasi:http`; a component
    /// that exports no `wasi:http/incoming-handler` is refused here, not at its first request.
    pub fn compile(binary: &[u8], hash: String) -> Result<HttpComponent, String> {
        let engine = wasm::engine()?;
        let component = Component::new(engine, binary).map_err(|e| format!("{e:#}"))?;
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| format!("{e:#}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| format!("{e:#}"))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| format!("{e:#}"))?;
        let pre = ProxyPre::new(pre).map_err(|e| {
            format!(
                "the component exports no `wasi:http/incoming-handler` (build it for the `wasi:http/proxy` world): {e:#}"
            )
        })?;
        Ok(HttpComponent { pre, hash })
    }
}

/// What one invocation's store holds.
struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: StoreLimits,
    outbound: Outbound,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Where a component's `wasi:http/outgoing-handler` requests go: through the same policy
/// and client as a JavaScript handler's `fetch`. Redirects are the component's to follow.
struct Outbound {
    client: Result<reqwest::Client, String>,
    policy: Arc<Policy>,
    deadline: Instant,
    /// Where a refusal is explained: the component itself only sees an error code.
    logs: Arc<LogBook>,
    function: String,
    invocation: String,
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let client = self.client.clone();
        let policy = self.policy.clone();
        let deadline = self.deadline;
        let logs = self.logs.clone();
        let (function, invocation) = (self.function.clone(), self.invocation.clone());
        Box::new(async move {
            use wasmtime_wasi_http::Error as E;
            let client = client.map_err(|e| E::InternalError(Some(e)))?;
            let (parts, body) = request.into_parts();
            let url = parts.uri.to_string();
            let parsed = url::Url::parse(&url).map_err(|_| E::HttpRequestUriInvalid)?;
            if let Err(why) = policy.check(&parsed) {
                logs.append(
                    &function,
                    &invocation,
                    Level::Warn,
                    &format!("{url} refused: {why}"),
                );
                return Err(E::HttpRequestDenied);
            }
            // The component's memory is capped; what it streams out is not, unless capped here.
            let body = http_body_util::Limited::new(body, policy.max_bytes())
                .collect()
                .await
                .map_err(|e| match e.downcast::<wasmtime_wasi_http::Error>() {
                    Ok(e) => *e,
                    Err(_) => E::HttpRequestBodySize(Some(policy.max_bytes() as u64)),
                })?
                .to_bytes()
                .to_vec();
            let outbound = OutboundRequest {
                method: parts.method.to_string(),
                url,
                headers: outbound::header_pairs(&parts.headers),
                body,
                redirect: "manual".into(),
                deadline,
            };
            let answer = outbound::send(&client, &policy, outbound)
                .await
                .map_err(|e| E::InternalError(Some(e)))?;
            let mut response = http::Response::builder().status(answer.status);
            for (name, value) in &answer.headers {
                response = response.header(name, value);
            }
            let body = Full::new(Bytes::from(answer.body))
                .map_err(|never| match never {})
                .boxed_unsync();
            let response = response
                .body(body)
                .map_err(|e| E::InternalError(Some(e.to_string())))?;
            let done: Box<dyn Future<Output = Result<(), E>> + Send> = Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// Runs `call` on `component` in a task of its own and answers with the head as soon as the
/// component sets it; the body streams after it. Failures go to the function's logs and to
/// the caller (as the answer, or as a cut-short body once the head is out).
pub(crate) async fn serve(
    component: Arc<HttpComponent>,
    call: Call,
) -> Result<Answer, FunctionError> {
    let Call {
        function,
        invocation,
        env,
        limits,
        policy,
        http,
        logs,
        permit,
    } = call;
    let id = invocation.id.clone();
    let scheme = if invocation.url.starts_with("https:") {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let request = incoming(invocation)?;
    let sink = |level| LogSink {
        logs: logs.clone(),
        function: function.as_str().into(),
        invocation: id.as_str().into(),
        level,
        budget: Arc::new(AtomicUsize::new(MAX_LOG_BYTES)),
    };
    let mut wasi = WasiCtx::builder();
    wasi.stdout(sink(Level::Info))
        .stderr(sink(Level::Error))
        .envs(&env.into_iter().collect::<Vec<_>>())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let engine = wasm::engine().map_err(|e| FunctionError::Failed(JsError::Engine(e)))?;
    let mut store = Store::new(
        engine,
        State {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            outbound: Outbound {
                client: http,
                policy,
                deadline: Instant::now() + limits.timeout,
                logs: logs.clone(),
                function: function.clone(),
                invocation: id.clone(),
            },
        },
    );
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline((limits.timeout.as_millis() / TICK.as_millis()).max(1) as u64);
    store.epoch_deadline_trap();
    let lost = |e: wasmtime::Error| FunctionError::Failed(JsError::Engine(format!("{e:#}")));
    let request = store
        .data_mut()
        .http()
        .new_incoming_request(scheme, request)
        .map_err(lost)?;
    let (head_tx, head_rx) = oneshot::channel();
    let out = store
        .data_mut()
        .http()
        .new_response_outparam(head_tx)
        .map_err(lost)?;
    let (body_tx, body_rx) = mpsc::channel(16);
    let failed = body_tx.clone();
    let pre = component.pre.clone();
    let run = tokio::spawn(async move {
        let _permit = permit;
        let handle = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        };
        let outcome = match tokio::time::timeout(limits.timeout, handle).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(wasm::failure(e, limits, "component")),
            Err(_) => Err(JsError::Timeout(limits.timeout)),
        };
        // Its stdout and stderr flush their last partial lines.
        drop(store);
        if let Err(error) = &outcome {
            if !matches!(error, JsError::Saturated(_)) {
                logs.append(&function, &id, Level::Error, &error.to_string());
                tracing::warn!(function = %function, invocation = %id, error = %error, "function failed");
            }
            // Reaches the caller only if the head was already out.
            let _ = failed
                .send(Err(FunctionError::Failed(JsError::Threw(
                    error.to_string(),
                ))))
                .await;
        }
        outcome
    });
    match head_rx.await {
        Ok(Ok(response)) => {
            let (parts, body) = response.into_parts();
            tokio::spawn(pump(body, body_tx));
            Ok(Answer {
                status: parts.status.as_u16(),
                headers: outbound::header_pairs(&parts.headers),
                body: AnswerBody::Stream(body_rx),
            })
        }
        Ok(Err(code)) => Err(FunctionError::Failed(JsError::Threw(format!(
            "the component answered with the error {code:?}"
        )))),
        // The component ended (or failed) without setting a response.
        Err(_) => match run.await {
            Ok(Err(error)) => Err(FunctionError::Failed(error)),
            Ok(Ok(())) => Err(FunctionError::Failed(JsError::Threw(
                "the component returned without setting a response (`response-outparam.set`)"
                    .into(),
            ))),
            Err(_) => Err(FunctionError::Lost),
        },
    }
}

/// A component's stdout or stderr: each line goes to the function's logs as it is written
/// (so `--follow` sees a long invocation's lines while it runs), up to the invocation's
/// budget; writing never fails, so a chatty component is not cut short by its logging.
#[derive(Clone)]
struct LogSink {
    logs: Arc<LogBook>,
    function: Arc<str>,
    invocation: Arc<str>,
    level: Level,
    /// Bytes left for this invocation, shared by its stdout and stderr writers.
    budget: Arc<AtomicUsize>,
}

impl IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogSink {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            sink: self.clone(),
            pending: Vec::new(),
        })
    }
}

/// One writer of a [`LogSink`]: bytes until a newline, then a log line.
struct LineWriter {
    sink: LogSink,
    pending: Vec<u8>,
}

impl LineWriter {
    fn take(&mut self, bytes: &[u8]) {
        let left = self
            .sink
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(bytes.len()))
            })
            .unwrap_or(0);
        let kept = &bytes[..bytes.len().min(left)];
        self.pending.extend_from_slice(kept);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line[..end]);
        }
        if kept.len() < bytes.len() && left > 0 {
            let note = format!("(output past {MAX_LOG_BYTES} bytes in one invocation is not kept)");
            self.emit(note.as_bytes());
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let s = &self.sink;
        s.logs.append(
            &s.function,
            &s.invocation,
            s.level,
            line.trim_end_matches('\r'),
        );
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest);
        }
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().take(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The invocation as the `http::Request` wasmtime turns into an `incoming-request`.
fn incoming(invocation: Invocation) -> Result<http::Request<Full<Bytes>>, FunctionError> {
    let bad = |e: String| FunctionError::Failed(JsError::Threw(e));
    let mut request = http::Request::builder()
        .method(invocation.method.as_str())
        .uri(invocation.url.as_str());
    for (name, value) in &invocation.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request
        .body(Full::new(Bytes::from(invocation.body)))
        .map_err(|e| bad(format!("the request cannot be given to the component: {e}")))
}

/// Forwards the component's body frames to the caller until it ends, fails, or the caller
/// goes away (dropping the body then tells the component its stream is closed).
async fn pump(
    mut body: wasmtime_wasi_http::p2::body::HyperOutgoingBody,
    tx: mpsc::Sender<Result<Vec<u8>, FunctionError>>,
) {
    while let Some(frame) = body.frame().await {
        let item = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => Ok(data.to_vec()),
                Err(_trailers) => continue,
            },
            Err(e) => Err(FunctionError::Failed(JsError::Threw(format!(
                "the component's body failed: {e}"
            )))),
        };
        let last = item.is_err();
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}
