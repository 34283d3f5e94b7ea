//! Where invocations run. `isolation = "request"` (the default): each on a blocking thread of
//! tokio's pool, in a fresh context. `isolation = "instance"`: on the function's own worker
//! threads, each keeping one loaded instance that serves request after request.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::js::{self, Closed, Host, Instance, JsError, JsLimits, JsRequest, Level};
use crate::logs::LogBook;
use crate::{Call, Code, FunctionError, outbound, wasm};

/// The head the waiting request receives: status, headers, and the whole body unless it
/// streams.
pub(crate) type Head = Result<(u16, Vec<(String, String)>, Option<Vec<u8>>), FunctionError>;

pub(crate) type BodySender = mpsc::Sender<Result<Vec<u8>, FunctionError>>;

/// One invocation, with everything it needs to run anywhere and answer its caller.
pub(crate) struct Job {
    pub code: Code,
    pub call: Call,
    pub runtime: tokio::runtime::Handle,
    pub head: oneshot::Sender<Head>,
    pub body: BodySender,
}

/// What runs the code of a job: a fresh context or instance, or a worker's instance.
type Engine<'a> = dyn FnMut(
        &Code,
        JsRequest,
        &BTreeMap<String, String>,
        JsLimits,
        Rc<dyn Host>,
    ) -> Result<(), JsError>
    + 'a;

impl Job {
    /// Runs on the current thread; failures go to the function's logs and to the caller
    /// (as the head, or as a cut-short body once the head is out).
    fn run(self, engine: &mut Engine<'_>) {
        let Call {
            function,
            invocation,
            env,
            limits,
            policy,
            http,
            logs,
            permit: _permit,
        } = self.call;
        let id = invocation.id.clone();
        let host = Rc::new(ChannelHost {
            logs: logs.clone(),
            http,
            policy,
            runtime: self.runtime,
            function: function.clone(),
            invocation: id.clone(),
            head: std::cell::RefCell::new(Some(self.head)),
            body: std::cell::RefCell::new(Some(self.body)),
        });
        let request = JsRequest {
            method: invocation.method,
            url: invocation.url,
            headers: invocation.headers,
            body: invocation.body,
        };
        let result = engine(&self.code, request, &env, limits, host.clone())
            .map_err(|e| e.with_timeout(limits.timeout));
        // The engine may hold `host` until its runtime collects it; the body ends now.
        let body = host.body.borrow_mut().take();
        let Err(error) = result else { return };
        if !matches!(error, JsError::Closed) {
            logs.append(&function, &id, Level::Error, &error.to_string());
            tracing::warn!(function = %function, invocation = %id, error = %error, "function failed");
        }
        let head = host.head.borrow_mut().take();
        match (head, body) {
            (Some(head), _) => {
                let _ = head.send(Err(FunctionError::Failed(error)));
            }
            (None, Some(body)) => {
                let _ = body.blocking_send(Err(FunctionError::Failed(error)));
            }
            (None, None) => {}
        }
    }
}

/// Runs `job` in a fresh context (or WASM instance) on tokio's blocking pool.
pub(crate) fn fresh(job: Job) {
    tokio::task::spawn_blocking(move || job.run(&mut run_fresh));
}

fn run_fresh(
    code: &Code,
    request: JsRequest,
    env: &BTreeMap<String, String>,
    limits: JsLimits,
    host: Rc<dyn Host>,
) -> Result<(), JsError> {
    match code {
        Code::Js(program) => js::invoke(program, request, env, limits, host),
        Code::Wasm(program) => wasm::invoke(program, request, env, limits, host),
        // `Functions::invoke` hands components to `component::serve` before any job exists.
        Code::Component(_) => Err(JsError::Engine(
            "a component is served on the runtime, not on a worker thread".into(),
        )),
    }
}

/// The worker threads of one `isolation = "instance"` function. Dropping the pool (a reload,
/// a removal) lets the workers finish what they hold and exit.
#[derive(Debug)]
pub(crate) struct Pool {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl Pool {
    pub fn start(function: &str, workers: usize, queue: usize) -> Pool {
        let (jobs, receiver) = std::sync::mpsc::sync_channel::<Job>(queue.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..workers.max(1) {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("fn-{function}-{i}"))
                .spawn(move || work(&receiver));
            if let Err(e) = spawned {
                tracing::error!(function = %function, error = %e, "cannot start a function worker");
            }
        }
        Pool { jobs }
    }

    /// Queues `job`; it is handed back when no worker is left to take it.
    pub fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        self.jobs.send(job).map_err(|e| Box::new(e.0))
    }
}

/// The workers of a per-request (default isolation) JavaScript function. Each keeps one
/// context built ahead and never used, so a request pays only for running its handler; the
/// context serves that one request and the worker builds the next. A request that finds no
/// worker waiting runs in a fresh context on the blocking pool, as without workers, so slow
/// handlers never queue behind each other.
#[derive(Debug)]
pub(crate) struct Prepared {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl Prepared {
    pub fn start(
        function: &str,
        program: Arc<js::Program>,
        limits: JsLimits,
        workers: usize,
    ) -> Prepared {
        // A rendezvous: a job is taken only by a worker waiting for it.
        let (jobs, receiver) = std::sync::mpsc::sync_channel::<Job>(0);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..workers.max(1) {
            let receiver = receiver.clone();
            let program = program.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("fn-{function}-{i}"))
                .spawn(move || prepare(&program, limits, &receiver));
            if let Err(e) = spawned {
                tracing::error!(function = %function, error = %e, "cannot start a function worker");
            }
        }
        Prepared { jobs }
    }

    /// Hands `job` to a waiting worker, or back when none waits.
    pub fn offer(&self, job: Job) -> Result<(), Box<Job>> {
        self.jobs.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(job)
            | std::sync::mpsc::TrySendError::Disconnected(job) => Box::new(job),
        })
    }
}

/// A per-request worker: builds a context, waits for a job, serves it once, retires it.
fn prepare(
    program: &Arc<js::Program>,
    limits: JsLimits,
    jobs: &Mutex<std::sync::mpsc::Receiver<Job>>,
) {
    loop {
        // The module's top level runs now, under the function's own time limit.
        let mut ready = Instance::new(
            program,
            limits.memory_bytes,
            Instant::now() + limits.timeout,
            None,
        )
        .ok();
        let next = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(job) = next else { return };
        job.run(&mut |code, request, env, limits, host| {
            serve_js(&mut ready, false, code, request, env, limits, host)
        });
    }
}

/// Serves a job with the instance in `slot` (or one built now, with the caller there to see
/// what its loading logs or why it fails). With `keep`, a sound instance goes back into the
/// slot for the next job; otherwise it ends here, its runtime kept if it is sound.
fn serve_js(
    slot: &mut Option<Instance>,
    keep: bool,
    code: &Code,
    request: JsRequest,
    env: &BTreeMap<String, String>,
    limits: JsLimits,
    host: Rc<dyn Host>,
) -> Result<(), JsError> {
    let Code::Js(program) = code else {
        return run_fresh(code, request, env, limits, host);
    };
    let deadline = Instant::now() + limits.timeout;
    let mut instance = match slot.take() {
        Some(built) => built,
        None => Instance::new(program, limits.memory_bytes, deadline, Some(host.clone()))?,
    };
    let outcome = instance.serve(request, env, host, deadline);
    let sound = instance.reusable(&outcome);
    if keep && sound {
        *slot = Some(instance);
    } else {
        instance.retire(sound);
    }
    outcome
}

/// A worker: one instance, loaded on the first job, kept while it stays sound.
fn work(jobs: &Mutex<std::sync::mpsc::Receiver<Job>>) {
    let mut instance: Option<Instance> = None;
    loop {
        // Whoever holds the lock waits for the next job; the others wait for the lock.
        let next = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(job) = next else { return };
        job.run(&mut |code, request, env, limits, host| {
            serve_js(&mut instance, true, code, request, env, limits, host)
        });
    }
}

/// The bridge from the engine's thread to the waiting request.
struct ChannelHost {
    logs: Arc<LogBook>,
    http: Result<reqwest::Client, String>,
    policy: Arc<outbound::Policy>,
    runtime: tokio::runtime::Handle,
    function: String,
    invocation: String,
    head: std::cell::RefCell<Option<oneshot::Sender<Head>>>,
    body: std::cell::RefCell<Option<BodySender>>,
}

impl Host for ChannelHost {
    fn log(&self, level: Level, text: &str) {
        self.logs
            .append(&self.function, &self.invocation, level, text);
    }

    fn head(
        &self,
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<(), Closed> {
        let sender = self.head.borrow_mut().take().ok_or(Closed)?;
        sender.send(Ok((status, headers, body))).map_err(|_| Closed)
    }

    fn chunk(&self, bytes: Vec<u8>) -> Result<(), Closed> {
        if bytes.is_empty() {
            return Ok(());
        }
        let body = self.body.borrow();
        let sender = body.as_ref().ok_or(Closed)?;
        sender.blocking_send(Ok(bytes)).map_err(|_| Closed)
    }

    fn fetch(&self, request: js::OutboundRequest, done: js::FetchDone) {
        let client = match &self.http {
            Ok(client) => client.clone(),
            Err(e) => return done(Err(e.clone())),
        };
        let policy = self.policy.clone();
        self.runtime.spawn(async move {
            done(outbound::send(&client, &policy, request).await);
        });
    }
}
