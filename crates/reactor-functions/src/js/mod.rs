//! The QuickJS engine: one invocation in a fresh runtime and context, under a memory limit and
//! a deadline, with the Web APIs of `web.js` and a small event loop for promises and timers.
//!
//! A runtime per invocation is what makes the limits per invocation: QuickJS counts memory
//! per runtime, and nothing one request leaves behind (globals, module state, pending timers)
//! can be seen by the next.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rquickjs::context::intrinsic;
use rquickjs::function::Opt;
use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::{Declared, WriteOptions};
use rquickjs::promise::PromiseState;
use rquickjs::{
    Array, CaughtError, Context, Ctx, Exception, Function, Module, Object, Persistent, Promise,
    Runtime, TypedArray, Value,
};

use crate::source::ModuleGraph;

const WEB_JS: &str = include_str!("web.js");
const WEB_MODULE: &str = "reactor:web";

/// A function's modules compiled to QuickJS bytecode: parsing is most of what a fresh context
/// would otherwise spend, so it happens once per load, not once per request.
#[derive(Debug)]
pub struct Program {
    pub graph: Arc<ModuleGraph>,
    bytecode: HashMap<String, Vec<u8>>,
}

/// A module QuickJS rejected although oxc accepted it (rare: an engine limit or a feature
/// QuickJS lacks).
#[derive(Debug, thiserror::Error)]
#[error("{module}: {message}")]
pub struct CompileError {
    pub module: String,
    pub message: String,
}

impl Program {
    pub fn compile(graph: Arc<ModuleGraph>) -> Result<Program, CompileError> {
        let compiled = compile_modules(
            graph
                .modules
                .iter()
                .map(|(name, code)| (name.as_str(), &**code)),
            false,
            Some(graph.clone()),
        )?;
        Ok(Program {
            graph,
            bytecode: compiled,
        })
    }
}

fn compile_modules<'a>(
    modules: impl Iterator<Item = (&'a str, &'a str)>,
    strip: bool,
    graph: Option<Arc<ModuleGraph>>,
) -> Result<HashMap<String, Vec<u8>>, CompileError> {
    let failed = |module: &str, e: &dyn std::fmt::Display| CompileError {
        module: module.to_string(),
        message: e.to_string(),
    };
    let runtime = Runtime::new().map_err(|e| failed("", &e))?;
    // Compiling a module resolves its imports, so the compiler sees the graph's sources.
    if let Some(graph) = graph {
        runtime.set_loader(GraphModules::source(&graph), GraphModules::source(&graph));
    }
    let context = Context::builder()
        .with::<(intrinsic::Eval, intrinsic::RegExpCompiler)>()
        .build(&runtime)
        .map_err(|e| failed("", &e))?;
    context.with(|ctx| {
        let mut out = HashMap::new();
        for (name, code) in modules {
            let declared = Module::declare(ctx.clone(), name, code).map_err(|e| {
                let caught = CaughtError::from_error(&ctx, e);
                failed(name, &caught)
            })?;
            let bytes = declared
                .write(WriteOptions {
                    strip_debug: strip,
                    strip_source: true,
                    ..WriteOptions::default()
                })
                .map_err(|e| failed(name, &e))?;
            out.insert(name.to_string(), bytes);
        }
        Ok(out)
    })
}

/// Compiles `web.js` now rather than on the first invocation, so that a function's first
/// request pays only for itself.
pub fn prepare() {
    web_bytecode();
}

/// `web.js`, compiled once per process.
fn web_bytecode() -> &'static [u8] {
    static BYTECODE: OnceLock<Vec<u8>> = OnceLock::new();
    BYTECODE.get_or_init(|| {
        compile_modules(std::iter::once((WEB_MODULE, WEB_JS)), true, None)
            .ok()
            .and_then(|mut m| m.remove(WEB_MODULE))
            .unwrap_or_default()
    })
}

/// Lines kept from a module's top level until its first invocation.
const EARLY_LINES: usize = 100;

/// Native stack QuickJS may use; deep recursion fails with a RangeError well before the
/// thread's own stack (tokio's blocking threads have 2 MiB) is at risk.
const MAX_STACK: usize = 1024 * 1024;

/// What one invocation receives.
#[derive(Debug, Clone)]
pub struct JsRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub struct JsLimits {
    pub memory_bytes: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    fn parse(text: &str) -> Level {
        match text {
            "debug" => Level::Debug,
            "warn" => Level::Warn,
            "error" => Level::Error,
            _ => Level::Info,
        }
    }
}

/// The receiving end has gone (the client disconnected): the invocation stops.
#[derive(Debug)]
pub struct Closed;

/// Where an invocation's effects go: its log lines and its response.
pub trait Host {
    fn log(&self, level: Level, text: &str);
    /// The status and headers, with the whole body, or `None` when the body is a stream
    /// whose chunks follow until the invocation ends.
    fn head(
        &self,
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<(), Closed>;
    fn chunk(&self, bytes: Vec<u8>) -> Result<(), Closed>;
    /// Starts an outbound request for `fetch`; `done` is called once, from any thread, with
    /// the answer or why there is none. Refusals (a host not allowed) call it at once.
    fn fetch(&self, request: OutboundRequest, done: FetchDone);
}

/// What a handler's `fetch` asks the server to send.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `fetch`'s `redirect` option: `follow` (the default), `manual` or `error`.
    pub redirect: String,
    /// The invocation's own deadline; no request outlives it.
    pub deadline: Instant,
}

#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: u16,
    pub status_text: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// After redirects.
    pub url: String,
}

/// Called with a `fetch`'s outcome; the error text becomes the rejection's message.
pub type FetchDone = Box<dyn FnOnce(Result<OutboundResponse, String>) + Send>;

type Completion = (u32, Result<OutboundResponse, String>);

/// Outbound requests in flight for one invocation, and where their answers arrive.
struct Ops {
    pending: Cell<usize>,
    sender: std::sync::mpsc::Sender<Completion>,
    receiver: std::sync::mpsc::Receiver<Completion>,
}

/// Why an invocation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JsError {
    #[error("the function ran past its time limit of {0:?}")]
    Timeout(Duration),
    #[error("the function exceeded its memory limit of {} MiB", .0 / (1024 * 1024))]
    Memory(usize),
    /// The handler (or the module while loading) threw; the text is the error with its stack.
    #[error("{0}")]
    Threw(String),
    #[error(
        "the handler's promise never settled: nothing was left to run (no timer, no pending request)"
    )]
    Unsettled,
    #[error("the client went away")]
    Closed,
    #[error("engine: {0}")]
    Engine(String),
    /// Every WASM instance slot of the process is in use.
    #[error("all {0} WASM instance slots of this server are in use")]
    Saturated(u32),
}

/// Per-invocation state that the host functions and the interrupt handler read. An instance
/// swaps it for every invocation it serves, so nothing of one caller reaches the next.
struct Slot {
    host: RefCell<Option<Rc<dyn Host>>>,
    /// Lines logged while no invocation was being served (a module's top level, evaluated
    /// ahead of its request), handed to the next invocation's host.
    early: RefCell<Vec<(Level, String)>>,
    deadline: Cell<Instant>,
    interrupted: Cell<bool>,
    closed: Cell<bool>,
    ops: Ops,
}

impl Slot {
    fn host(&self) -> Option<Rc<dyn Host>> {
        self.host.borrow().clone()
    }
}

/// A function's module, loaded in a context with the Web APIs, ready to serve invocations:
/// once (a fresh context per request, the default) or one after another (`isolation =
/// "instance"`, where module state persists between requests as in Workers or Deno).
pub struct Instance {
    /// Always present until drop, which releases them in this order: the saved handles, the
    /// context, then the runtime (QuickJS asserts nothing outlives its runtime).
    handles: Option<Handles>,
    context: Option<Context>,
    runtime: Option<Runtime>,
    slot: Rc<Slot>,
    memory_bytes: usize,
    /// Whether the runtime goes back to this thread's spare slot on drop.
    keep_runtime: bool,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.handles.take();
        self.context.take();
        if let Some(runtime) = self.runtime.take() {
            runtime.set_interrupt_handler(None);
            if self.keep_runtime && !runtime.is_job_pending() {
                // The dead context is all cycles: collect it now (its answer has gone out),
                // so the next instance starts from a clean runtime.
                runtime.run_gc();
                SPARE_RUNTIME.with(|spare| *spare.borrow_mut() = Some(runtime));
            }
        }
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("memory_bytes", &self.memory_bytes)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Builds a context for `code` and evaluates its modules (whose top level may log through
    /// `host`), all before `deadline`.
    pub fn new(
        code: &Arc<Program>,
        memory_bytes: usize,
        deadline: Instant,
        host: Option<Rc<dyn Host>>,
    ) -> Result<Instance, JsError> {
        let engine = |e: rquickjs::Error| JsError::Engine(e.to_string());
        let runtime = match SPARE_RUNTIME.with(|spare| spare.borrow_mut().take()) {
            Some(runtime) => runtime,
            None => {
                let runtime = Runtime::new().map_err(engine)?;
                runtime.set_max_stack_size(MAX_STACK);
                runtime
            }
        };
        runtime.set_memory_limit(memory_bytes);
        // A kept runtime was collected when its last instance ended; the new context's own
        // objects are all alive, so collecting while it is built would find nothing.
        runtime.set_gc_threshold(gc_threshold(memory_bytes));
        let (sender, receiver) = std::sync::mpsc::channel();
        let slot = Rc::new(Slot {
            host: RefCell::new(host),
            early: RefCell::new(Vec::new()),
            deadline: Cell::new(deadline),
            interrupted: Cell::new(false),
            closed: Cell::new(false),
            ops: Ops {
                pending: Cell::new(0),
                sender,
                receiver,
            },
        });
        let watched = slot.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let over = Instant::now() >= watched.deadline.get();
            if over {
                watched.interrupted.set(true);
            }
            over
        })));
        runtime.set_loader(GraphModules::compiled(code), GraphModules::compiled(code));
        let context = Context::builder()
            .with::<(
                intrinsic::Date,
                intrinsic::RegExpCompiler,
                intrinsic::RegExp,
                intrinsic::Json,
                intrinsic::Proxy,
                intrinsic::MapSet,
                intrinsic::TypedArrays,
                intrinsic::Promise,
                intrinsic::WeakRef,
                intrinsic::DOMException,
                intrinsic::Performance,
            )>()
            .build(&runtime)
            .map_err(engine)?;
        let loaded = context.with(|ctx| {
            let run = Run {
                ctx: ctx.clone(),
                slot: slot.clone(),
            };
            run.load(code).map_err(|e| run.classify(e))
        });
        *slot.host.borrow_mut() = None;
        let timed_out = slot.interrupted.get();
        let instance = Instance {
            handles: loaded.as_ref().ok().cloned(),
            context: Some(context),
            runtime: Some(runtime),
            slot,
            memory_bytes,
            keep_runtime: false,
        };
        match loaded {
            Ok(_) => Ok(instance),
            Err(e) => Err(classify_limits(e, timed_out, false, memory_bytes)),
        }
    }

    /// Serves one invocation, which must end by `deadline`.
    pub fn serve(
        &mut self,
        request: JsRequest,
        env: &BTreeMap<String, String>,
        host: Rc<dyn Host>,
        deadline: Instant,
    ) -> Result<(), JsError> {
        let slot = &self.slot;
        for (level, text) in slot.early.borrow_mut().drain(..) {
            host.log(level, &text);
        }
        *slot.host.borrow_mut() = Some(host);
        slot.deadline.set(deadline);
        slot.interrupted.set(false);
        slot.closed.set(false);
        // Answers to an earlier invocation's requests are of no use to this one.
        while slot.ops.receiver.try_recv().is_ok() {}
        slot.ops.pending.set(0);
        let (Some(context), Some(handles)) = (&self.context, &self.handles) else {
            return Err(JsError::Engine("the instance was not loaded".into()));
        };
        let outcome = context.with(|ctx| {
            let run = Run {
                ctx: ctx.clone(),
                slot: slot.clone(),
            };
            run.serve(handles, request, env)
                .map_err(|e| run.classify(e))
        });
        // The host (and through it the response body) is released now, not when the
        // collector finds the functions that held it.
        *slot.host.borrow_mut() = None;
        outcome.map_err(|e| {
            classify_limits(
                e,
                slot.interrupted.get(),
                slot.closed.get(),
                self.memory_bytes,
            )
        })
    }

    /// Whether the instance may serve again after `outcome`: not after a limit was hit (a
    /// runtime interrupted mid-allocation is not worth trusting) nor with work still queued.
    pub fn reusable(&self, outcome: &Result<(), JsError>) -> bool {
        matches!(
            outcome,
            Ok(()) | Err(JsError::Threw(_)) | Err(JsError::Unsettled)
        ) && self.runtime.as_ref().is_some_and(|r| !r.is_job_pending())
    }

    /// Ends the instance; its runtime is kept for the next instance on this thread when
    /// `reuse` says it is sound.
    pub fn retire(mut self, reuse: bool) {
        self.keep_runtime = reuse;
    }
}

/// Allocation volume before the collector runs inside an invocation: a quarter of its memory
/// limit, at most 16 MiB, so a handler making cyclic garbage is still collected long before
/// it reaches the limit.
fn gc_threshold(memory_bytes: usize) -> usize {
    (memory_bytes / 4).clamp(256 * 1024, 16 * 1024 * 1024)
}

/// A limit hit shows as an engine error; the flags say which.
fn classify_limits(
    error: JsError,
    interrupted: bool,
    closed: bool,
    memory_bytes: usize,
) -> JsError {
    match error {
        _ if interrupted => JsError::Timeout(Duration::ZERO),
        _ if closed => JsError::Closed,
        JsError::Threw(message) if is_out_of_memory(&message) => JsError::Memory(memory_bytes),
        other => other,
    }
}

impl JsError {
    /// A timeout names the limit that was hit (the engine only knows its deadline).
    pub fn with_timeout(self, limit: Duration) -> JsError {
        match self {
            JsError::Timeout(_) => JsError::Timeout(limit),
            other => other,
        }
    }
}

/// Runs one invocation of `code` to completion on the current thread, in a fresh context.
pub fn invoke(
    code: &Arc<Program>,
    request: JsRequest,
    env: &BTreeMap<String, String>,
    limits: JsLimits,
    host: Rc<dyn Host>,
) -> Result<(), JsError> {
    let deadline = Instant::now() + limits.timeout;
    let with_limit = |e: JsError| e.with_timeout(limits.timeout);
    let mut instance = Instance::new(code, limits.memory_bytes, deadline, Some(host.clone()))
        .map_err(with_limit)?;
    let outcome = instance.serve(request, env, host, deadline);
    let reuse = instance.reusable(&outcome);
    instance.retire(reuse);
    outcome.map_err(with_limit)
}

thread_local! {
    /// A runtime kept between invocations on this thread. Contexts are never reused by
    /// `invoke`, so no global or module state carries over; what is saved is the runtime's
    /// own setup (its atom table and shapes).
    static SPARE_RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// QuickJS's out-of-memory error, or what is left of it: when the limit is hit so hard that
/// the error object itself cannot be made, the exception is a bare `null` (a handler that
/// throws `null` itself is reported as out of memory too; both are 500s).
fn is_out_of_memory(message: &str) -> bool {
    message.starts_with("InternalError: out of memory")
        || message == "out of memory"
        || message == "Uncaught null"
}

/// What a failure inside the context was, before the runtime's flags are consulted.
enum Failure<'js> {
    Js(CaughtError<'js>),
    Unsettled,
    Timeout,
}

struct Run<'js> {
    ctx: Ctx<'js>,
    slot: Rc<Slot>,
}

/// The functions of `web.js` the event loop calls between turns.
struct EventLoop<'js> {
    run_timers: Function<'js>,
    complete: Function<'js>,
}

/// What loading leaves for serving: `web.js`'s functions and the module's default export.
#[derive(Clone)]
struct Handles {
    serve: Persistent<Function<'static>>,
    run_timers: Persistent<Function<'static>>,
    complete: Persistent<Function<'static>>,
    exported: Persistent<Value<'static>>,
}

impl<'js> Run<'js> {
    /// Evaluates `web.js` and the function's modules in this context.
    fn load(&self, code: &Arc<Program>) -> Result<Handles, Failure<'js>> {
        let ctx = &self.ctx;
        let js = |e| self.caught(e);
        let host_object = self.host_object().map_err(js)?;
        let web_module = bytecode::load(ctx, web_bytecode()).map_err(js)?;
        let (web_module, web_ready) = web_module.eval().map_err(js)?;
        let () = self.settle(&web_ready, None)?;
        let factory: Function = web_module.get("default").map_err(js)?;
        let web: Object = factory.call((host_object,)).map_err(js)?;
        let serve: Function = web.get("serve").map_err(js)?;
        let events = EventLoop {
            run_timers: web.get("runTimers").map_err(js)?,
            complete: web.get("complete").map_err(js)?,
        };
        let loaded = Module::import(ctx, code.graph.entry.as_str()).map_err(js)?;
        let namespace: Object = self.settle(&loaded, Some(&events))?;
        let exported: Value = namespace.get("default").map_err(js)?;
        Ok(Handles {
            serve: Persistent::save(ctx, serve),
            run_timers: Persistent::save(ctx, events.run_timers),
            complete: Persistent::save(ctx, events.complete),
            exported: Persistent::save(ctx, exported),
        })
    }

    /// Calls the handler through `web.js`'s `serve` and runs until the response is out.
    fn serve(
        &self,
        instance: &Handles,
        request: JsRequest,
        env: &BTreeMap<String, String>,
    ) -> Result<(), Failure<'js>> {
        let ctx = &self.ctx;
        let js = |e| self.caught(e);
        let serve = instance.serve.clone().restore(ctx).map_err(js)?;
        let events = EventLoop {
            run_timers: instance.run_timers.clone().restore(ctx).map_err(js)?,
            complete: instance.complete.clone().restore(ctx).map_err(js)?,
        };
        let exported = instance.exported.clone().restore(ctx).map_err(js)?;
        let headers = pairs(ctx, request.headers).map_err(js)?;
        let body = TypedArray::<u8>::new(ctx.clone(), request.body).map_err(js)?;
        let env_object = Object::new(ctx.clone()).map_err(js)?;
        for (name, value) in env {
            env_object.set(name.as_str(), value.as_str()).map_err(js)?;
        }
        let done: Promise = serve
            .call((
                exported,
                request.method,
                request.url,
                headers,
                body,
                env_object,
            ))
            .map_err(js)?;
        let _: Value = self.settle(&done, Some(&events))?;
        Ok(())
    }

    /// Runs jobs, timers and `fetch` answers until `promise` settles, the deadline passes, or
    /// nothing is left that could settle it.
    fn settle<T: rquickjs::FromJs<'js>>(
        &self,
        promise: &Promise<'js>,
        events: Option<&EventLoop<'js>>,
    ) -> Result<T, Failure<'js>> {
        loop {
            while self.ctx.execute_pending_job() {}
            match promise.state() {
                PromiseState::Resolved => {
                    return promise
                        .result::<T>()
                        .unwrap_or(Err(rquickjs::Error::Unknown))
                        .map_err(|e| self.caught(e));
                }
                PromiseState::Rejected => {
                    let error = promise
                        .result::<Value>()
                        .and_then(Result::err)
                        .unwrap_or(rquickjs::Error::Exception);
                    return Err(self.caught(error));
                }
                PromiseState::Pending => {}
            }
            let Some(events) = events else {
                return Err(Failure::Unsettled);
            };
            if let Ok(completion) = self.slot.ops.receiver.try_recv() {
                self.deliver(events, completion)?;
                continue;
            }
            let next: i64 = events.run_timers.call(()).map_err(|e| self.caught(e))?;
            if self.ctx.execute_pending_job() {
                continue;
            }
            let in_flight = self.slot.ops.pending.get() > 0;
            if next < 0 && !in_flight {
                return Err(Failure::Unsettled);
            }
            let now = Instant::now();
            let deadline = self.slot.deadline.get();
            if now >= deadline {
                return Err(Failure::Timeout);
            }
            let mut wait = deadline - now;
            if next >= 0 {
                wait = wait.min(Duration::from_millis(next as u64));
            }
            if in_flight {
                if let Ok(completion) = self.slot.ops.receiver.recv_timeout(wait) {
                    self.deliver(events, completion)?;
                }
            } else if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }

    /// Hands a `fetch` answer to `web.js`, which settles the handler's promise for it.
    fn deliver(
        &self,
        events: &EventLoop<'js>,
        (id, outcome): Completion,
    ) -> Result<(), Failure<'js>> {
        let pending = &self.slot.ops.pending;
        pending.set(pending.get().saturating_sub(1));
        let ctx = &self.ctx;
        let js = |e| self.caught(e);
        match outcome {
            Ok(response) => {
                let headers = pairs(ctx, response.headers).map_err(js)?;
                let body = TypedArray::<u8>::new(ctx.clone(), response.body).map_err(js)?;
                events
                    .complete
                    .call::<_, ()>((
                        id,
                        true,
                        response.status,
                        response.status_text,
                        headers,
                        body,
                        response.url,
                    ))
                    .map_err(js)
            }
            Err(message) => events
                .complete
                .call::<_, ()>((id, false, 0, message))
                .map_err(js),
        }
    }

    fn caught(&self, error: rquickjs::Error) -> Failure<'js> {
        Failure::Js(CaughtError::from_error(&self.ctx, error))
    }

    fn classify(&self, failure: Failure<'js>) -> JsError {
        match failure {
            Failure::Unsettled => JsError::Unsettled,
            Failure::Timeout => JsError::Timeout(Duration::ZERO),
            Failure::Js(CaughtError::Error(rquickjs::Error::Allocation)) => {
                JsError::Threw("out of memory".into())
            }
            Failure::Js(CaughtError::Exception(exception)) => {
                JsError::Threw(describe_exception(&exception))
            }
            Failure::Js(CaughtError::Value(value)) => {
                JsError::Threw(format!("Uncaught {}", describe_value(&self.ctx, &value)))
            }
            Failure::Js(CaughtError::Error(error)) => JsError::Threw(error.to_string()),
        }
    }

    /// The functions `web.js` builds on.
    fn host_object(&self) -> rquickjs::Result<Object<'js>> {
        let ctx = &self.ctx;
        let object = Object::new(ctx.clone())?;
        let slot = self.slot.clone();
        object.set(
            "log",
            Function::new(ctx.clone(), move |level: String, text: String| {
                match slot.host() {
                    Some(host) => host.log(Level::parse(&level), &text),
                    None => {
                        let mut early = slot.early.borrow_mut();
                        if early.len() < EARLY_LINES {
                            early.push((Level::parse(&level), text));
                        }
                    }
                }
            })?,
        )?;
        object.set(
            "utf8Encode",
            Function::new(ctx.clone(), |ctx: Ctx<'js>, text: String| {
                TypedArray::<u8>::new(ctx, text.into_bytes())
            })?,
        )?;
        object.set(
            "utf8Decode",
            Function::new(
                ctx.clone(),
                |ctx: Ctx<'js>,
                 bytes: TypedArray<'js, u8>,
                 fatal: Opt<bool>,
                 ignore_bom: Opt<bool>| {
                    let bytes = bytes::copy(&bytes);
                    let bytes = if !ignore_bom.0.unwrap_or(false) {
                        bytes
                            .strip_prefix(&[0xEF, 0xBB, 0xBF][..])
                            .unwrap_or(&bytes)
                            .to_vec()
                    } else {
                        bytes
                    };
                    match String::from_utf8(bytes) {
                        Ok(text) => Ok(text),
                        Err(_) if fatal.0.unwrap_or(false) => Err(Exception::throw_type(
                            &ctx,
                            "The encoded data was not valid UTF-8",
                        )),
                        Err(e) => Ok(String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    }
                },
            )?,
        )?;
        object.set("randomUUID", Function::new(ctx.clone(), random_uuid)?)?;
        object.set(
            "randomBytes",
            Function::new(ctx.clone(), |ctx: Ctx<'js>, n: usize| {
                let mut bytes = vec![0u8; n.min(65536)];
                rand::Rng::fill(&mut rand::rng(), bytes.as_mut_slice());
                TypedArray::<u8>::new(ctx, bytes)
            })?,
        )?;
        object.set(
            "urlParse",
            Function::new(ctx.clone(), |input: String, base: Option<String>| {
                let parsed = match base {
                    Some(base) => url::Url::parse(&base).and_then(|b| b.join(&input)),
                    None => url::Url::parse(&input),
                };
                parsed.ok().map(|u| url_parts(&u))
            })?,
        )?;
        object.set(
            "urlSet",
            Function::new(ctx.clone(), |href: String, part: String, value: String| {
                url_set(&href, &part, &value).map(|u| url_parts(&u))
            })?,
        )?;
        let slot = self.slot.clone();
        object.set(
            "fetch",
            Function::new(
                ctx.clone(),
                move |ctx: Ctx<'js>,
                      id: u32,
                      method: String,
                      url: String,
                      headers: Vec<Vec<String>>,
                      body: TypedArray<'js, u8>,
                      redirect: String| {
                    let Some(host) = slot.host() else {
                        return Err(Exception::throw_type(&ctx, "fetch outside an invocation"));
                    };
                    let ops = &slot.ops;
                    ops.pending.set(ops.pending.get() + 1);
                    let sender = ops.sender.clone();
                    host.fetch(
                        OutboundRequest {
                            method,
                            url,
                            headers: headers
                                .into_iter()
                                .filter_map(|mut pair| {
                                    let value = pair.pop()?;
                                    let name = pair.pop()?;
                                    Some((name, value))
                                })
                                .collect(),
                            body: bytes::copy(&body),
                            redirect,
                            deadline: slot.deadline.get(),
                        },
                        Box::new(move |outcome| {
                            let _ = sender.send((id, outcome));
                        }),
                    );
                    Ok(())
                },
            )?,
        )?;
        let slot = self.slot.clone();
        object.set(
            "head",
            Function::new(
                ctx.clone(),
                move |ctx: Ctx<'js>,
                      status: u16,
                      headers: Vec<Vec<String>>,
                      body: Option<TypedArray<'js, u8>>| {
                    let headers = headers
                        .into_iter()
                        .filter_map(|mut pair| {
                            let value = pair.pop()?;
                            let name = pair.pop()?;
                            Some((name, value))
                        })
                        .collect();
                    let body = body.map(|b| bytes::copy(&b));
                    let host = slot.host().ok_or(Closed);
                    host.and_then(|h| h.head(status, headers, body))
                        .map_err(|Closed| {
                            slot.closed.set(true);
                            Exception::throw_internal(&ctx, "the client went away")
                        })
                },
            )?,
        )?;
        let slot = self.slot.clone();
        object.set(
            "chunk",
            Function::new(
                ctx.clone(),
                move |ctx: Ctx<'js>, bytes: TypedArray<'js, u8>| {
                    let host = slot.host().ok_or(Closed);
                    host.and_then(|h| h.chunk(bytes::copy(&bytes)))
                        .map_err(|Closed| {
                            slot.closed.set(true);
                            Exception::throw_internal(&ctx, "the client went away")
                        })
                },
            )?,
        )?;
        Ok(object)
    }
}

/// `[[name, value], …]` for `web.js`.
fn pairs<'js>(ctx: &Ctx<'js>, list: Vec<(String, String)>) -> rquickjs::Result<Array<'js>> {
    let array = Array::new(ctx.clone())?;
    for (i, (name, value)) in list.into_iter().enumerate() {
        let pair = Array::new(ctx.clone())?;
        pair.set(0, name)?;
        pair.set(1, value)?;
        array.set(i, pair)?;
    }
    Ok(array)
}

/// Loading bytecode this process compiled (QuickJS trusts bytecode blindly, so nothing else
/// is ever loaded).
#[allow(unsafe_code)]
mod bytecode {
    use rquickjs::module::Declared;
    use rquickjs::{Ctx, Module};

    pub(super) fn load<'js>(
        ctx: &Ctx<'js>,
        bytes: &[u8],
    ) -> rquickjs::Result<Module<'js, Declared>> {
        // SAFETY: `bytes` was written by `Module::write` in this process (by `compile_modules`),
        // and it outlives the runtime: it belongs to the `Program` the invocation holds, or to
        // the process-wide `web.js` bytecode. QuickJS may keep pointers into it (ROM data).
        unsafe { Module::load(ctx.clone(), bytes) }
    }
}

/// The one place bytes leave a JavaScript typed array.
#[allow(unsafe_code)]
mod bytes {
    use rquickjs::TypedArray;

    pub(super) fn copy(array: &TypedArray<'_, u8>) -> Vec<u8> {
        // SAFETY: the slice is copied before any JavaScript can run again, so the array
        // cannot be detached or resized while it is borrowed; a detached array yields `None`.
        unsafe { array.as_bytes() }
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }
}

fn describe_exception(exception: &Exception<'_>) -> String {
    let message = exception.message().unwrap_or_default();
    let name: String = exception
        .get::<_, String>("name")
        .unwrap_or_else(|_| "Error".into());
    let mut text = format!("{name}: {message}");
    if let Some(stack) = exception.stack()
        && !stack.trim().is_empty()
    {
        text.push('\n');
        text.push_str(stack.trim_end());
    }
    text
}

fn describe_value<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> String {
    if let Some(text) = value.as_string().and_then(|s| s.to_string().ok()) {
        return text;
    }
    ctx.json_stringify(value.clone())
        .ok()
        .flatten()
        .and_then(|s| s.to_string().ok())
        .unwrap_or_else(|| format!("{:?}", value.type_of()))
}

fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// href, origin, protocol, username, password, host, hostname, port, pathname, search, hash:
/// the order `web.js` reads them in.
fn url_parts(u: &url::Url) -> Vec<String> {
    let with_prefix = |prefix: char, part: Option<&str>| match part {
        Some(p) if !p.is_empty() => format!("{prefix}{p}"),
        _ => String::new(),
    };
    let host = match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    vec![
        u.as_str().to_string(),
        u.origin().ascii_serialization(),
        format!("{}:", u.scheme()),
        u.username().to_string(),
        u.password().unwrap_or("").to_string(),
        host,
        u.host_str().unwrap_or("").to_string(),
        u.port().map(|p| p.to_string()).unwrap_or_default(),
        u.path().to_string(),
        with_prefix('?', u.query()),
        with_prefix('#', u.fragment()),
    ]
}

fn url_set(href: &str, part: &str, value: &str) -> Option<url::Url> {
    let mut u = url::Url::parse(href).ok()?;
    let optional = |v: &str, prefix: char| {
        let v = v.strip_prefix(prefix).unwrap_or(v).to_string();
        (!v.is_empty()).then_some(v)
    };
    match part {
        "href" => return url::Url::parse(value).ok(),
        "protocol" => u.set_scheme(value.trim_end_matches(':')).ok()?,
        "username" => u.set_username(value).ok()?,
        "password" => u.set_password(Some(value).filter(|v| !v.is_empty())).ok()?,
        "host" => {
            let (host, port) = match value.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, p.parse().ok()),
                _ => (value, None),
            };
            u.set_host(Some(host)).ok()?;
            u.set_port(port).ok()?;
        }
        "hostname" => u.set_host(Some(value)).ok()?,
        "port" => u
            .set_port(if value.is_empty() {
                None
            } else {
                Some(value.parse().ok()?)
            })
            .ok()?,
        "pathname" => u.set_path(value),
        "search" => u.set_query(optional(value, '?').as_deref()),
        "hash" => u.set_fragment(optional(value, '#').as_deref()),
        _ => return None,
    }
    Some(u)
}

/// Serves a function's modules to QuickJS: resolution replays what the graph recorded at load
/// time, so no import reaches the disk at run time. Invocations load the compiled bytecode;
/// the compiler (no bytecode yet) declares from source.
struct GraphModules {
    graph: Arc<ModuleGraph>,
    compiled: Option<Arc<Program>>,
}

impl GraphModules {
    fn compiled(program: &Arc<Program>) -> GraphModules {
        GraphModules {
            graph: program.graph.clone(),
            compiled: Some(program.clone()),
        }
    }

    fn source(graph: &Arc<ModuleGraph>) -> GraphModules {
        GraphModules {
            graph: graph.clone(),
            compiled: None,
        }
    }
}

impl Resolver for GraphModules {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        let graph = &self.graph;
        match graph.links.get(&(base.to_string(), name.to_string())) {
            Some(target) => Ok(target.clone()),
            None if graph.modules.contains_key(name) => Ok(name.to_string()),
            None => Err(Exception::throw_type(
                ctx,
                &format!(
                    "cannot import `{name}` from {base}: only the function's own files, imported statically, can be loaded"
                ),
            )),
        }
    }
}

impl Loader for GraphModules {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        let missing = || Exception::throw_type(ctx, &format!("no module {name}"));
        match &self.compiled {
            Some(program) => bytecode::load(ctx, program.bytecode.get(name).ok_or_else(missing)?),
            None => {
                let source = self.graph.modules.get(name).ok_or_else(missing)?;
                Module::declare(ctx.clone(), name, source.as_bytes())
            }
        }
    }
}
