//! Functions: TypeScript and WASM handlers on `/fn/v1`, run in-process and sandboxed.
//!
//! [`Functions`] is the capability: a registry of loaded functions (each a compiled
//! [`js::Program`] with its limits), the invoke path every caller shares (HTTP, and later
//! Jobs), and the per-function logs. `source` turns a function's files into a module graph
//! (oxc strips TypeScript); `js` runs one invocation in a fresh QuickJS context; `wasm` runs
//! a WASI command module CGI-style and `component` serves a `wasi:http` component.

pub mod component;
mod exec;
pub mod http;
pub mod js;
pub mod logs;
pub mod outbound;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wasm;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use reactor_core::ApiError;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::js::{JsError, JsLimits, Program};
use crate::logs::LogBook;
use crate::source::{SourceError, TranspileCache};
use sha2::{Digest, Sha256};

/// Server-wide settings; a function's own limits in `reactor.toml` override the defaults.
#[derive(Debug, Clone)]
pub struct FunctionsConfig {
    pub default_limits: Limits,
    /// Largest request body a function is given.
    pub max_body_bytes: usize,
    /// Development (`reactor dev`): show a failing handler's error to the caller, and print
    /// log lines on stderr. Otherwise the caller gets a generic message and the error goes
    /// to the function's logs only.
    pub expose_errors: bool,
    /// Hosts every function may `fetch`, beside those its own `allowed_hosts` names.
    pub allowed_hosts: Vec<String>,
    /// This server's own address (`http://host:port`): always reachable by `fetch`, and given
    /// to handlers as `env.REACTOR_URL` so they can call the Data API.
    pub self_origin: Option<String>,
    /// Limits on one `fetch`: time (also bounded by the invocation's deadline) and body size.
    pub fetch_timeout: Duration,
    pub max_fetch_bytes: usize,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        FunctionsConfig {
            default_limits: Limits::default(),
            max_body_bytes: 10 * 1024 * 1024,
            expose_errors: false,
            allowed_hosts: Vec::new(),
            self_origin: None,
            fetch_timeout: Duration::from_secs(30),
            max_fetch_bytes: 10 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub memory_mb: u32,
    pub timeout_ms: u64,
    /// Invocations of one function running at once; the next is refused with 503.
    pub concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 64,
            timeout_ms: 10_000,
            concurrency: 64,
        }
    }
}

/// One function as declared: where its files are and the limits it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    pub name: String,
    /// Where its files are (the working tree); unused when `built` is given.
    pub dir: PathBuf,
    pub entry: String,
    /// The code a bundle carried, already transpiled: a deployed release runs this instead
    /// of reading `dir`.
    pub built: Option<Arc<Built>>,
    pub memory_mb: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub concurrency: Option<u32>,
    /// Hosts this function may `fetch` (`api.example.com`, `api.example.com:8443`,
    /// `*.example.com`).
    pub allowed_hosts: Vec<String>,
    pub isolation: Isolation,
}

pub use reactor_manifest::Isolation;

/// A function's code as a bundle carries it.
#[derive(Debug)]
pub enum Built {
    /// The module graph `reactor build` made with [`source::TranspileCache::load`].
    Js(Arc<source::ModuleGraph>),
    /// A WebAssembly module, binary or (`text`) WAT.
    Wasm { bytes: Vec<u8>, text: bool },
}

impl PartialEq for Built {
    fn eq(&self, other: &Built) -> bool {
        match (self, other) {
            (Built::Js(a), Built::Js(b)) => a.hash == b.hash,
            (Built::Wasm { bytes: a, text: x }, Built::Wasm { bytes: b, text: y }) => {
                a == b && x == y
            }
            _ => false,
        }
    }
}

impl Eq for Built {}

impl FunctionSpec {
    /// The functions a project's `reactor.toml` declares.
    pub fn from_manifest(manifest: &reactor_manifest::Manifest) -> Vec<FunctionSpec> {
        manifest
            .functions
            .iter()
            .map(|f| FunctionSpec {
                name: f.name.clone(),
                dir: manifest.root.join(&f.source),
                entry: f.entry.clone(),
                built: None,
                memory_mb: f.memory_mb,
                timeout_ms: f.timeout_ms,
                concurrency: f.concurrency,
                allowed_hosts: f.allowed_hosts.clone(),
                isolation: f.isolation,
            })
            .collect()
    }
}

/// The result of (re)loading one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadReport {
    Loaded {
        name: String,
        hash: String,
    },
    Unchanged {
        name: String,
    },
    /// The code could not be loaded; `kept_previous` says whether an earlier version still
    /// serves.
    Failed {
        name: String,
        error: SourceError,
        kept_previous: bool,
    },
    Removed {
        name: String,
    },
}

/// What `GET /fn/v1` says about a function.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionInfo {
    pub name: String,
    pub entry: String,
    pub runtime: &'static str,
    pub isolation: Isolation,
    pub limits: Limits,
    /// SHA-256 of the loaded code; absent when it never loaded.
    pub hash: Option<String>,
    /// Why the current files do not load, when they do not.
    pub error: Option<String>,
}

/// A function's loaded code.
#[derive(Debug, Clone)]
pub(crate) enum Code {
    Js(Arc<Program>),
    Wasm(Arc<wasm::WasmProgram>),
    /// Served by [`component::serve`] on the caller's runtime, never on a worker thread.
    Component(Arc<component::HttpComponent>),
}

impl Code {
    fn hash(&self) -> &str {
        match self {
            Code::Js(p) => &p.graph.hash,
            Code::Wasm(w) => &w.hash,
            Code::Component(c) => &c.hash,
        }
    }
}

/// Compiles a module graph to QuickJS bytecode.
fn compile_js(graph: Arc<source::ModuleGraph>) -> Result<Code, SourceError> {
    let program = Program::compile(graph).map_err(|e| SourceError {
        file: e.module,
        line: 1,
        column: 1,
        message: e.message,
        hint: None,
    })?;
    Ok(Code::Js(Arc::new(program)))
}

fn is_wasm_entry(entry: &str) -> bool {
    entry.ends_with(".wasm") || entry.ends_with(".wat")
}

#[derive(Debug)]
struct Deployed {
    spec: FunctionSpec,
    limits: Limits,
    program: Option<Code>,
    error: Option<SourceError>,
    permits: Arc<Semaphore>,
    /// The workers of an `isolation = "instance"` function.
    pool: Option<Arc<exec::Pool>>,
    /// The workers of a per-request JavaScript function, each with a context built ahead.
    prepared: Option<Arc<exec::Prepared>>,
    /// Where its `fetch` may go.
    policy: Arc<outbound::Policy>,
}

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("no function named `{0}`")]
    NotFound(String),
    #[error("function `{name}` has no code that loads: {error}")]
    NotLoaded { name: String, error: SourceError },
    #[error("function `{0}` is running as many invocations as its concurrency limit allows")]
    Busy(String),
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("{0}")]
    Failed(JsError),
    #[error("the invocation ended without a response")]
    Lost,
}

impl FunctionError {
    /// The caller's view: limits and failures are 5xx with a code a client can branch on;
    /// the handler's own error text only when `expose` (development) allows it.
    pub fn into_api(self, expose: bool) -> ApiError {
        match self {
            FunctionError::NotFound(name) => ApiError::new(
                StatusCode::NOT_FOUND,
                "function_not_found",
                format!("no function named `{name}`"),
            )
            .with_hint("`reactor functions list` shows the deployed functions"),
            FunctionError::NotLoaded { name, error } => {
                let e = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "function_not_loaded",
                    format!("function `{name}` could not be loaded"),
                );
                if expose {
                    let e = e.with_details(error.to_string());
                    match error.hint {
                        Some(h) => e.with_hint(h),
                        None => e,
                    }
                } else {
                    e
                }
            }
            FunctionError::Busy(name) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "function_busy",
                format!("function `{name}` is at its concurrency limit"),
            )
            .with_retry_after(1)
            .with_hint("retry shortly, or raise `concurrency` for the function in reactor.toml"),
            FunctionError::BodyTooLarge(max) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("the request body is larger than the {max} bytes a function accepts"),
            ),
            FunctionError::Failed(JsError::Timeout(limit)) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "function_timeout",
                format!("the function ran past its time limit of {} ms", limit.as_millis()),
            )
            .with_hint("raise `timeout_ms` for the function in reactor.toml, or make it do less per request"),
            FunctionError::Failed(JsError::Saturated(slots)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "functions_saturated",
                format!("all {slots} WASM instance slots of this server are in use"),
            )
            .with_retry_after(1)
            .with_hint("retry shortly; lower `concurrency` of the WASM functions, or add a replica"),
            FunctionError::Failed(JsError::Memory(limit)) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "function_memory_limit",
                format!(
                    "the function exceeded its memory limit of {} MiB",
                    limit / (1024 * 1024)
                ),
            )
            .with_hint("raise `memory_mb` for the function in reactor.toml"),
            FunctionError::Failed(error) => {
                let e = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "function_error",
                    "the function failed",
                );
                if expose {
                    e.with_details(error.to_string())
                } else {
                    e.with_hint("the function's logs (`reactor functions logs`) have the error")
                }
            }
            FunctionError::Lost => ApiError::internal(),
        }
    }
}

/// What a caller sends to a function.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub method: String,
    /// The full URL the handler sees as `req.url`.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Correlates the function's log lines with the request (its `x-request-id`).
    pub id: String,
}

/// Everything one invocation needs besides its code and the way back to its caller.
pub(crate) struct Call {
    pub function: String,
    pub invocation: Invocation,
    pub env: BTreeMap<String, String>,
    pub limits: JsLimits,
    pub policy: Arc<outbound::Policy>,
    pub http: Result<reqwest::Client, String>,
    pub logs: Arc<LogBook>,
    /// Held until the invocation ends: the function's concurrency limit.
    pub permit: tokio::sync::OwnedSemaphorePermit,
}

/// A function's answer: the head now, the body whole or as it is produced.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: AnswerBody,
}

#[derive(Debug)]
pub enum AnswerBody {
    Full(Vec<u8>),
    /// Chunks as the handler's stream yields them; an `Err` cuts the response short.
    Stream(mpsc::Receiver<Result<Vec<u8>, FunctionError>>),
}

/// The Functions capability. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Functions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Compiled WASM modules and components by the SHA-256 of their bytes.
    wasm: std::sync::Mutex<HashMap<String, Code>>,
    config: FunctionsConfig,
    http: Result<reqwest::Client, String>,
    cache: TranspileCache,
    registry: RwLock<HashMap<String, Arc<Deployed>>>,
    logs: Arc<LogBook>,
}

/// How long a request waits for a free slot under the concurrency limit before a 503.
const QUEUE_WAIT: Duration = Duration::from_millis(250);

/// Worker threads for an instance-isolated function: one per core (at least two), never more
/// than its concurrency. A handler waiting on `fetch` or a timer holds its worker meanwhile.
fn start_pool(spec: &FunctionSpec, limits: Limits) -> Option<Arc<exec::Pool>> {
    if spec.isolation != Isolation::Instance {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = cores.max(2).min(limits.concurrency as usize);
    Some(Arc::new(exec::Pool::start(
        &spec.name,
        workers,
        limits.concurrency as usize,
    )))
}

/// Workers with contexts built ahead, for a per-request JavaScript function: one per core,
/// never more than its concurrency.
fn start_prepared(spec: &FunctionSpec, limits: Limits, code: &Code) -> Option<Arc<exec::Prepared>> {
    let Code::Js(program) = code else { return None };
    if spec.isolation != Isolation::Request {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = cores.min(limits.concurrency as usize);
    Some(Arc::new(exec::Prepared::start(
        &spec.name,
        program.clone(),
        JsLimits {
            memory_bytes: limits.memory_mb as usize * 1024 * 1024,
            timeout: Duration::from_millis(limits.timeout_ms),
        },
        workers,
    )))
}

impl Functions {
    pub fn new(config: FunctionsConfig) -> Functions {
        Functions {
            inner: Arc::new(Inner {
                wasm: std::sync::Mutex::new(HashMap::new()),
                http: outbound::client(),
                logs: Arc::new(LogBook::new(config.expose_errors)),
                config,
                cache: TranspileCache::default(),
                registry: RwLock::new(HashMap::new()),
            }),
        }
    }

    pub fn config(&self) -> &FunctionsConfig {
        &self.inner.config
    }

    pub fn logs(&self) -> &LogBook {
        &self.inner.logs
    }

    /// Compiles a function's code without installing it: a deploy proves every function of a
    /// release loads before switching to it.
    pub fn check(&self, spec: &FunctionSpec) -> Result<(), SourceError> {
        js::prepare();
        self.load_code(spec).map(|_| ())
    }

    /// Makes `specs` the set of functions: new ones load, changed ones reload (a function
    /// whose new code fails keeps serving its previous code), missing ones are removed.
    /// Transpiling and compiling happen here, never on a request.
    pub fn load(&self, specs: &[FunctionSpec]) -> Vec<LoadReport> {
        js::prepare();
        let current = self.read_registry().clone();
        let mut next = HashMap::new();
        let mut reports = Vec::new();
        for spec in specs {
            let previous = current.get(&spec.name);
            let limits = self.limits_of(spec);
            let loaded = self.load_code(spec);
            let deployed = match loaded {
                Ok(program) => {
                    let unchanged = previous.is_some_and(|p| {
                        p.limits == limits
                            && p.spec == *spec
                            && p.error.is_none()
                            && p.program.as_ref().map(Code::hash) == Some(program.hash())
                    });
                    if unchanged {
                        reports.push(LoadReport::Unchanged {
                            name: spec.name.clone(),
                        });
                        if let Some(p) = previous {
                            next.insert(spec.name.clone(), p.clone());
                        }
                        continue;
                    }
                    reports.push(LoadReport::Loaded {
                        name: spec.name.clone(),
                        hash: program.hash().to_string(),
                    });
                    Deployed {
                        spec: spec.clone(),
                        limits,
                        pool: matches!(program, Code::Js(_))
                            .then(|| start_pool(spec, limits))
                            .flatten(),
                        prepared: start_prepared(spec, limits, &program),
                        program: Some(program),
                        error: None,
                        permits: Arc::new(Semaphore::new(limits.concurrency as usize)),
                        policy: Arc::new(outbound::Policy::new(
                            &spec.allowed_hosts,
                            &self.inner.config,
                        )),
                    }
                }
                Err(error) => {
                    let kept = previous.and_then(|p| p.program.clone());
                    let kept_pool = previous.and_then(|p| p.pool.clone());
                    let kept_prepared = previous.and_then(|p| p.prepared.clone());
                    let unchanged = previous.is_some_and(|p| p.error.as_ref() == Some(&error));
                    if !unchanged {
                        reports.push(LoadReport::Failed {
                            name: spec.name.clone(),
                            error: error.clone(),
                            kept_previous: kept.is_some(),
                        });
                    }
                    Deployed {
                        spec: spec.clone(),
                        limits,
                        program: kept,
                        error: Some(error),
                        permits: Arc::new(Semaphore::new(limits.concurrency as usize)),
                        pool: kept_pool,
                        prepared: kept_prepared,
                        policy: Arc::new(outbound::Policy::new(
                            &spec.allowed_hosts,
                            &self.inner.config,
                        )),
                    }
                }
            };
            next.insert(spec.name.clone(), Arc::new(deployed));
        }
        for name in current.keys() {
            if !next.contains_key(name) {
                reports.push(LoadReport::Removed { name: name.clone() });
            }
        }
        *self
            .inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner()) = next;
        reports
    }

    /// Reads, strips and compiles a function's code: a JavaScript module graph, or a WASM
    /// module (compiled modules are kept by content hash, so an unchanged one is not
    /// compiled again).
    fn load_code(&self, spec: &FunctionSpec) -> Result<Code, SourceError> {
        match spec.built.as_deref() {
            Some(Built::Js(graph)) => return compile_js(graph.clone()),
            Some(Built::Wasm { bytes, text }) => return self.compile_wasm(spec, bytes, *text),
            None => {}
        }
        if is_wasm_entry(&spec.entry) {
            let path = spec.dir.join(&spec.entry);
            let bytes = std::fs::read(&path).map_err(|e| SourceError {
                file: spec.entry.clone(),
                line: 1,
                column: 1,
                message: format!("cannot read {}: {e}", path.display()),
                hint: None,
            })?;
            return self.compile_wasm(spec, &bytes, spec.entry.ends_with(".wat"));
        }
        compile_js(Arc::new(self.inner.cache.load(&spec.dir, &spec.entry)?))
    }

    fn compile_wasm(
        &self,
        spec: &FunctionSpec,
        bytes: &[u8],
        text: bool,
    ) -> Result<Code, SourceError> {
        let hash = hex::encode(Sha256::digest(bytes));
        if let Some(hit) = self.lock_wasm().get(&hash) {
            return Ok(hit.clone());
        }
        let compiled = wasm::binary(bytes, text).and_then(|binary| {
            Ok(if component::is_component(&binary) {
                Code::Component(Arc::new(component::HttpComponent::compile(
                    &binary,
                    hash.clone(),
                )?))
            } else {
                Code::Wasm(Arc::new(wasm::WasmProgram::compile(
                    &binary,
                    false,
                    hash.clone(),
                )?))
            })
        });
        let code = compiled.map_err(|e| SourceError {
            file: spec.entry.clone(),
            line: 1,
            column: 1,
            message: e,
            hint: Some(
                "a WASI preview 1 command module is served CGI-style, a `wasi:http/proxy` component like a JavaScript handler; see the README"
                    .into(),
            ),
        })?;
        let mut cache = self.lock_wasm();
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(hash, code.clone());
        Ok(code)
    }

    fn lock_wasm(&self) -> std::sync::MutexGuard<'_, HashMap<String, Code>> {
        // A cache: nothing in it can be half-written.
        self.inner.wasm.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limits_of(&self, spec: &FunctionSpec) -> Limits {
        let d = self.inner.config.default_limits;
        Limits {
            memory_mb: spec.memory_mb.unwrap_or(d.memory_mb),
            timeout_ms: spec.timeout_ms.unwrap_or(d.timeout_ms),
            concurrency: spec.concurrency.unwrap_or(d.concurrency).max(1),
        }
    }

    fn read_registry(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Deployed>>> {
        // The registry is replaced whole under the write lock; it is never half-updated.
        self.inner
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<FunctionInfo> {
        let mut out: Vec<FunctionInfo> = self
            .read_registry()
            .values()
            .map(|d| FunctionInfo {
                name: d.spec.name.clone(),
                entry: d.spec.entry.clone(),
                runtime: match d.program {
                    Some(Code::Wasm(_) | Code::Component(_)) => "wasm",
                    _ if is_wasm_entry(&d.spec.entry) => "wasm",
                    _ => "js",
                },
                isolation: d.spec.isolation,
                limits: d.limits,
                hash: d.program.as_ref().map(|p| p.hash().to_string()),
                error: d.error.as_ref().map(ToString::to_string),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn exists(&self, name: &str) -> bool {
        self.read_registry().contains_key(name)
    }

    /// Runs `name` on `invocation`: waits for the response head, then streams the body.
    /// The handler runs on a blocking thread of its own; the caller's task only waits.
    pub async fn invoke(
        &self,
        name: &str,
        invocation: Invocation,
        mut env: BTreeMap<String, String>,
    ) -> Result<Answer, FunctionError> {
        let deployed = self
            .read_registry()
            .get(name)
            .cloned()
            .ok_or_else(|| FunctionError::NotFound(name.to_string()))?;
        let program = match (&deployed.program, &deployed.error) {
            (Some(program), _) => program.clone(),
            (None, Some(error)) => {
                return Err(FunctionError::NotLoaded {
                    name: name.to_string(),
                    error: error.clone(),
                });
            }
            (None, None) => return Err(FunctionError::NotFound(name.to_string())),
        };
        if invocation.body.len() > self.inner.config.max_body_bytes {
            return Err(FunctionError::BodyTooLarge(
                self.inner.config.max_body_bytes,
            ));
        }
        // At the limit, a request waits a moment for a slot (the invocation before it may be
        // finishing after its answer went out), then is refused.
        let permit = tokio::time::timeout(QUEUE_WAIT, deployed.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| FunctionError::Busy(name.to_string()))?;
        let limits = JsLimits {
            memory_bytes: deployed.limits.memory_mb as usize * 1024 * 1024,
            timeout: Duration::from_millis(deployed.limits.timeout_ms),
        };
        if let Some(origin) = &self.inner.config.self_origin {
            env.entry("REACTOR_URL".into())
                .or_insert_with(|| origin.clone());
        }
        let call = Call {
            function: name.to_string(),
            invocation,
            env,
            limits,
            policy: deployed.policy.clone(),
            http: self.inner.http.clone(),
            logs: self.inner.logs.clone(),
            permit,
        };
        if let Code::Component(component) = program {
            return component::serve(component, call).await;
        }
        let (head_tx, head_rx) = oneshot::channel();
        let (body_tx, body_rx) = mpsc::channel(16);
        let job = exec::Job {
            code: program,
            call,
            runtime: tokio::runtime::Handle::current(),
            head: head_tx,
            body: body_tx,
        };
        match (&deployed.pool, &deployed.prepared) {
            (Some(pool), _) => {
                if pool.submit(job).is_err() {
                    return Err(FunctionError::Lost);
                }
            }
            (None, Some(prepared)) => {
                if let Err(job) = prepared.offer(job) {
                    exec::fresh(*job);
                }
            }
            (None, None) => exec::fresh(job),
        }
        match head_rx.await {
            Ok(Ok((status, headers, body))) => Ok(Answer {
                status,
                headers,
                body: match body {
                    Some(bytes) => AnswerBody::Full(bytes),
                    None => AnswerBody::Stream(body_rx),
                },
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(FunctionError::Lost),
        }
    }
}
