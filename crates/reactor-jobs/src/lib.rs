//! The Jobs capability: a job runs a function — on a cron schedule, when an event happens, or
//! when something enqueues it — with retries, backoff, a time limit and concurrency limits.
//!
//! Every run is a row (`reactor.job_runs` on Postgres, `_reactor_job_runs` on SQLite), so
//! delivery is at-least-once and survives restarts: a worker claims a run with a lease
//! (`FOR UPDATE SKIP LOCKED` on Postgres, so replicas never claim the same row), keeps the lease
//! alive while the function runs, and records the outcome only if it still holds the claim. A
//! run whose worker died is claimed again once its lease expires. Cron ticks are claimed with a
//! compare-and-set on the job's last tick, in the same transaction that enqueues the tick's run,
//! so each tick runs once however many replicas schedule. All times come from a [`Clock`], so
//! tests drive schedules and leases without sleeping.

pub mod http;
mod postgres;
mod sqlite;
mod triggers;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use reactor_core::ApiError;
use reactor_core::time::rfc3339_millis as rfc3339;
use reactor_db::{Db, DbError};
use reactor_manifest::Trigger;
use serde::Serialize;
use serde_json::{Value, json};

/// Milliseconds since the Unix epoch: the one time unit of the tables and the clock.
pub type Millis = i64;

/// Where the time comes from; tests move it by hand.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Millis;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Millis)
    }
}

/// What runs a job's function: the Functions capability, handed over by the server.
pub trait Runner: Send + Sync + fmt::Debug {
    fn run<'a>(&'a self, function: &'a str, request: RunRequest) -> BoxFuture<'a, RunOutcome>;
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt of a run, as the function receives it (its JSON body).
#[derive(Debug, Clone, Serialize)]
pub struct RunRequest {
    pub job: String,
    pub run: String,
    pub attempt: i32,
    pub trigger: Value,
    pub payload: Value,
    #[serde(skip)]
    pub timeout: Duration,
}

/// How an attempt ended: a 2xx is success; anything else, or no answer in time, a failure.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The function's log lines of this attempt.
    pub logs: Vec<Value>,
}

impl RunOutcome {
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// A job as the project declares it, with its options resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub function: String,
    pub trigger: Trigger,
    pub max_attempts: i32,
    pub backoff: Duration,
    pub timeout: Duration,
    pub concurrency: Option<i64>,
    pub concurrency_key: Option<String>,
    pub dedup_key: Option<String>,
    pub dedup_window: Duration,
    pub catch_up: bool,
}

impl JobSpec {
    pub fn from_manifest(manifest: &reactor_manifest::Manifest) -> Vec<JobSpec> {
        manifest
            .jobs
            .iter()
            .map(|j| JobSpec {
                name: j.name.clone(),
                function: j.function.clone(),
                trigger: j.trigger.clone(),
                max_attempts: j.max_attempts.unwrap_or(3) as i32,
                backoff: Duration::from_millis(j.backoff_ms.unwrap_or(1000)),
                timeout: Duration::from_millis(j.timeout_ms.unwrap_or(60_000)),
                concurrency: j.concurrency.map(i64::from),
                concurrency_key: j.concurrency_key.clone(),
                dedup_key: j.dedup_key.clone(),
                dedup_window: Duration::from_secs(j.dedup_window_secs.unwrap_or(3600)),
                catch_up: j.catch_up,
            })
            .collect()
    }

    /// A queue job with the defaults, for tests and callers that build specs by hand.
    pub fn queue(name: &str, function: &str) -> JobSpec {
        JobSpec {
            name: name.to_string(),
            function: function.to_string(),
            trigger: Trigger::Queue,
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
            concurrency: None,
            concurrency_key: None,
            dedup_key: None,
            dedup_window: Duration::from_secs(3600),
            catch_up: false,
        }
    }

    /// The delay before attempt `attempts + 1`: the backoff doubled per attempt, times a
    /// jitter in [0.5, 1.5), at most an hour.
    pub fn retry_delay(&self, attempts: i32, jitter: f64) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1u32 << (attempts.clamp(1, 20) - 1) as u32);
        doubled.mul_f64(jitter).min(Duration::from_secs(3600))
    }

    fn field(&self, payload: &Value, key: &Option<String>) -> Option<String> {
        let key = key.as_ref()?;
        match payload.get(key)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// Run states: `queued` (waiting for `run_at`), `running` (claimed under a lease), then one of
/// `succeeded`, `dead` (out of attempts) or `cancelled`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: String,
    pub job: String,
    pub status: String,
    pub trigger: Value,
    pub payload: Value,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: Millis,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub last_error: Option<String>,
    pub logs: Value,
    #[serde(skip)]
    pub lease_until: Option<Millis>,
    #[serde(skip)]
    pub worker: Option<String>,
    #[serde(skip)]
    pub concurrency_key: Option<String>,
}

impl Run {
    /// The run in the API's words: times as RFC 3339.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "job": self.job,
            "status": self.status,
            "trigger": self.trigger,
            "payload": self.payload,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "run_at": rfc3339(self.run_at),
            "created_at": rfc3339(self.created_at),
            "started_at": self.started_at.map(rfc3339),
            "finished_at": self.finished_at.map(rfc3339),
            "duration_ms": match (self.started_at, self.finished_at) {
                (Some(s), Some(f)) => Some(f - s),
                _ => None,
            },
            "last_error": self.last_error,
            "logs": self.logs,
        })
    }
}

/// A new run, before its row exists.
#[derive(Debug, Clone)]
pub(crate) struct NewRun {
    pub id: String,
    pub job: String,
    pub trigger: Value,
    pub payload: Value,
    pub max_attempts: i32,
    pub run_at: Millis,
    pub concurrency_key: Option<String>,
    pub dedup_key: Option<String>,
    /// Runs with the same `dedup_key` created after this are the same run.
    pub dedup_since: Millis,
}

/// A run's new state, recorded if `worker` still holds it (`None`: whoever holds it, for a
/// cancel). `run_at` set means queued again for then.
#[derive(Debug, Clone)]
pub(crate) struct Settlement {
    pub id: String,
    pub worker: Option<String>,
    pub status: &'static str,
    pub run_at: Option<Millis>,
    pub logs: Option<Value>,
    pub error: Option<String>,
    pub now: Millis,
}

impl Settlement {
    /// When the run finished, if this state ends it.
    pub fn finished_at(&self) -> Option<Millis> {
        matches!(self.status, "succeeded" | "dead" | "cancelled").then_some(self.now)
    }
}

/// Where outcomes are recorded. SQLite's writer thread already commits queued writes
/// together; on Postgres the settler gathers them into one statement.
enum Outcomes {
    Sqlite(reactor_db::SqlitePool),
    Postgres(postgres::Settler),
}

/// What a worker asks the adapter for: up to `limit` runs of the known jobs, the jobs with a
/// concurrency limit claimed within it.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRequest {
    pub now: Millis,
    pub lease: Millis,
    pub worker: String,
    pub limit: i64,
    /// Jobs without a concurrency limit.
    pub free: Vec<String>,
    /// Jobs with one: (job, limit, keyed by a payload field).
    pub limited: Vec<(String, i64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("no job named `{0}`")]
    UnknownJob(String),
    #[error("no run `{0}`")]
    UnknownRun(String),
    #[error("run `{0}` is {1}")]
    WrongState(String, String),
    #[error("{0}")]
    BadRequest(String),
    /// Recording a batch of outcomes failed; every run in it got this.
    #[error("cannot record runs' outcomes: {0}")]
    Settle(String),
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Db(e.into())
    }
}

impl From<rusqlite::Error> for JobError {
    fn from(e: rusqlite::Error) -> Self {
        JobError::Db(e.into())
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        match e {
            JobError::Db(_) | JobError::Settle(_) => {
                tracing::error!(error = %e, "jobs failed");
                ApiError::internal()
            }
            JobError::UnknownJob(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "job_not_found",
                e.to_string(),
            )
            .with_hint(
                "`reactor jobs list` shows the project's jobs; they are declared in reactor.toml",
            ),
            JobError::UnknownRun(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "run_not_found", e.to_string())
            }
            JobError::WrongState(..) => ApiError::new(
                StatusCode::CONFLICT,
                "run_state",
                e.to_string(),
            )
            .with_hint(
                "cancel takes a queued or running run; retry a dead, cancelled or succeeded one",
            ),
            JobError::BadRequest(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// How long a claim holds without a heartbeat; a dead worker's runs are claimed again
    /// after it.
    pub lease: Duration,
    /// How often workers look for work when nothing wakes them.
    pub poll: Duration,
    /// Runs one process executes at once.
    pub workers: usize,
    /// A cron tick older than this when first seen was missed while servers were down: it
    /// runs only for `catch_up` jobs.
    pub tick_grace: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            workers: 16,
            tick_grace: Duration::from_secs(30),
        }
    }
}

/// The Jobs capability. Cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    config: JobsConfig,
    specs: RwLock<Arc<HashMap<String, JobSpec>>>,
    worker_id: String,
    /// Wakes this process's workers (enqueues here; NOTIFY from other replicas).
    wake: tokio::sync::Notify,
    /// Runs this process executes now.
    busy: Arc<tokio::sync::Semaphore>,
    outcomes: Outcomes,
}

impl fmt::Debug for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jobs")
            .field("worker", &self.inner.worker_id)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Jobs {
    pub async fn start(
        db: Db,
        runner: Arc<dyn Runner>,
        clock: Arc<dyn Clock>,
        config: JobsConfig,
    ) -> Result<Jobs, JobError> {
        db.apply_migrations("jobs", sqlite::MIGRATIONS, postgres::MIGRATIONS)
            .await?;
        let workers = config.workers.max(1);
        let outcomes = match &db {
            Db::Sqlite(pool) => Outcomes::Sqlite(pool.clone()),
            Db::Postgres(pool) => Outcomes::Postgres(postgres::Settler::start(pool.clone())),
        };
        Ok(Jobs {
            inner: Arc::new(Inner {
                db,
                runner,
                clock,
                config,
                specs: RwLock::default(),
                worker_id: format!(
                    "{}-{}",
                    std::process::id(),
                    &uuid::Uuid::new_v4().to_string()[..8]
                ),
                wake: tokio::sync::Notify::new(),
                busy: Arc::new(tokio::sync::Semaphore::new(workers)),
                outcomes,
            }),
        })
    }

    /// Replaces the jobs this server knows; runs of jobs it does not know stay queued.
    pub fn load(&self, specs: Vec<JobSpec>) {
        let map = specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        *self.inner.specs.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        self.inner.wake.notify_waiters();
    }

    /// Makes the database triggers of the event jobs (Data, Storage and Identity changes)
    /// match the jobs loaded; what cannot be made yet (a table not migrated) is returned as a
    /// sentence each. Runs after every `load` and every few seconds, so a migration that
    /// creates a table gets its trigger.
    pub async fn sync_triggers(&self) -> Result<Vec<String>, JobError> {
        let specs = self.specs();
        let mut list: Vec<&JobSpec> = specs.values().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        let wanted = triggers::wanted(&list);
        match &self.inner.db {
            Db::Sqlite(p) => sqlite::sync_triggers(p, wanted).await,
            Db::Postgres(p) => postgres::sync_triggers(p, &wanted).await,
        }
    }

    pub fn specs(&self) -> Arc<HashMap<String, JobSpec>> {
        self.inner
            .specs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn spec(&self, job: &str) -> Result<JobSpec, JobError> {
        self.specs()
            .get(job)
            .cloned()
            .ok_or_else(|| JobError::UnknownJob(job.to_string()))
    }

    pub fn now(&self) -> Millis {
        self.inner.clock.now()
    }

    /// Enqueues a run of `job` with `payload` (any job may be run by hand); with a
    /// `dedup_key`, a run with the same key made within the window is returned instead.
    pub async fn enqueue(&self, job: &str, payload: Value) -> Result<Run, JobError> {
        let spec = self.spec(job)?;
        self.insert(&spec, json!({ "type": "queue" }), payload)
            .await
    }

    /// Emits a custom event: one run of every job triggered by it.
    pub async fn emit(&self, event: &str, payload: Value) -> Result<Vec<Run>, JobError> {
        let specs = self.specs();
        let mut runs = Vec::new();
        let mut names: Vec<&JobSpec> = specs
            .values()
            .filter(|s| matches!(&s.trigger, Trigger::Event { event: e, .. } if e == event))
            .collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        for spec in names {
            runs.push(
                self.insert(
                    spec,
                    json!({ "type": "event", "event": event }),
                    payload.clone(),
                )
                .await?,
            );
        }
        Ok(runs)
    }

    async fn insert(
        &self,
        spec: &JobSpec,
        trigger: Value,
        payload: Value,
    ) -> Result<Run, JobError> {
        let now = self.now();
        let new = NewRun {
            id: uuid::Uuid::new_v4().to_string(),
            job: spec.name.clone(),
            concurrency_key: spec.field(&payload, &spec.concurrency_key),
            dedup_key: spec.field(&payload, &spec.dedup_key),
            dedup_since: now - spec.dedup_window.as_millis() as Millis,
            trigger,
            payload,
            max_attempts: spec.max_attempts,
            run_at: now,
        };
        let run = match &self.inner.db {
            Db::Sqlite(p) => sqlite::insert(p, new, now).await?,
            Db::Postgres(p) => postgres::insert(p, new, now).await?,
        };
        self.inner.wake.notify_waiters();
        Ok(run)
    }

    pub async fn run(&self, id: &str) -> Result<Run, JobError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(JobError::UnknownRun(id.to_string()));
        }
        match &self.inner.db {
            Db::Sqlite(p) => sqlite::find(p, id).await?,
            Db::Postgres(p) => postgres::find(p, id).await?,
        }
        .ok_or_else(|| JobError::UnknownRun(id.to_string()))
    }

    /// The newest runs of `job`, newest first.
    pub async fn runs(&self, job: &str, limit: i64) -> Result<Vec<Run>, JobError> {
        self.spec(job)?;
        Ok(match &self.inner.db {
            Db::Sqlite(p) => sqlite::runs(p, job, limit).await?,
            Db::Postgres(p) => postgres::runs(p, job, limit).await?,
        })
    }

    /// Cancels a queued or running run (a running function finishes, its outcome ignored).
    pub async fn cancel(&self, id: &str) -> Result<Run, JobError> {
        let run = self.run(id).await?;
        if !matches!(run.status.as_str(), "queued" | "running") {
            return Err(JobError::WrongState(id.to_string(), run.status));
        }
        self.settle(&run, "cancelled", None, None, Some("cancelled"))
            .await?;
        self.run(id).await
    }

    /// Queues a finished run again, from its first attempt.
    pub async fn retry(&self, id: &str) -> Result<Run, JobError> {
        let run = self.run(id).await?;
        if matches!(run.status.as_str(), "queued" | "running") {
            return Err(JobError::WrongState(id.to_string(), run.status));
        }
        let now = self.now();
        match &self.inner.db {
            Db::Sqlite(p) => sqlite::requeue(p, id, now).await?,
            Db::Postgres(p) => postgres::requeue(p, id, now).await?,
        }
        self.inner.wake.notify_waiters();
        self.run(id).await
    }

    /// Every job with its next fire time (cron) and its last run's status.
    pub async fn list(&self) -> Result<Vec<Value>, JobError> {
        let specs = self.specs();
        let mut names: Vec<&String> = specs.keys().collect();
        names.sort();
        let known: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let last = match &self.inner.db {
            Db::Sqlite(p) => sqlite::last_statuses(p, &known).await?,
            Db::Postgres(p) => postgres::last_statuses(p, &known).await?,
        };
        let now = self.now();
        Ok(names
            .into_iter()
            .filter_map(|n| specs.get(n))
            .map(|s| {
                let (kind, detail) = match &s.trigger {
                    Trigger::Cron { schedule, timezone } => (
                        "cron",
                        json!({ "schedule": schedule, "timezone": timezone }),
                    ),
                    Trigger::Event {
                        event,
                        table,
                        bucket,
                    } => (
                        "event",
                        json!({ "event": event, "table": table, "bucket": bucket }),
                    ),
                    Trigger::Queue => ("queue", json!({})),
                };
                let mut trigger = detail;
                trigger["type"] = json!(kind);
                json!({
                    "name": s.name,
                    "function": s.function,
                    "trigger": trigger,
                    "next_run_at": cron_next(&s.trigger, now).map(rfc3339),
                    "last_status": last.get(&s.name),
                    "max_attempts": s.max_attempts,
                })
            })
            .collect())
    }

    // --- the scheduler ----------------------------------------------------------------------

    /// One scheduling pass at the clock's now: runs abandoned on their last attempt are marked
    /// dead, then every cron job whose latest tick has not been claimed gets it
    /// (compare-and-set) and its run, in one transaction. A tick older than
    /// the grace period was missed while servers were down: it is claimed without a run
    /// unless the job catches up. Returns the runs made.
    pub async fn tick(&self) -> Result<Vec<Run>, JobError> {
        let now = self.now();
        // Runs abandoned on their last attempt are dead (checked here, once a pass, rather
        // than on every claim).
        match &self.inner.db {
            Db::Sqlite(p) => sqlite::bury(p, now).await?,
            Db::Postgres(p) => postgres::bury(p, now).await?,
        }
        let specs = self.specs();
        let mut made = Vec::new();
        for spec in specs.values() {
            let Trigger::Cron { .. } = &spec.trigger else {
                continue;
            };
            let Some(tick) = cron_latest(&spec.trigger, now) else {
                continue;
            };
            let stale = now - tick > self.inner.config.tick_grace.as_millis() as Millis;
            let run = (!stale || spec.catch_up).then(|| NewRun {
                id: uuid::Uuid::new_v4().to_string(),
                job: spec.name.clone(),
                trigger: json!({ "type": "cron", "tick": rfc3339(tick) }),
                payload: json!({ "tick": rfc3339(tick) }),
                max_attempts: spec.max_attempts,
                run_at: now,
                concurrency_key: None,
                dedup_key: None,
                dedup_since: now,
            });
            let claimed = match &self.inner.db {
                Db::Sqlite(p) => sqlite::claim_tick(p, &spec.name, tick, run, now).await?,
                Db::Postgres(p) => postgres::claim_tick(p, &spec.name, tick, run, now).await?,
            };
            made.extend(claimed);
        }
        if !made.is_empty() {
            self.inner.wake.notify_waiters();
        }
        Ok(made)
    }

    // --- workers ------------------------------------------------------------------------------

    /// Claims what this process may run now and runs it, concurrently, on this task (so
    /// dropping the future stops them, as a dying process would); resolves when those runs
    /// are settled. Returns how many ran.
    pub async fn work_once(&self) -> Result<usize, JobError> {
        let claimed = self.claim().await?;
        let n = claimed.len();
        futures_util::future::join_all(claimed.into_iter().map(|(run, permit)| async move {
            self.execute(run).await;
            drop(permit);
        }))
        .await;
        Ok(n)
    }

    /// Claims up to the free worker slots.
    async fn claim(&self) -> Result<Vec<(Run, tokio::sync::OwnedSemaphorePermit)>, JobError> {
        let free = self.inner.busy.available_permits();
        if free == 0 {
            return Ok(Vec::new());
        }
        let specs = self.specs();
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let mut request = ClaimRequest {
            now: self.now(),
            lease: self.inner.config.lease.as_millis() as Millis,
            worker: self.inner.worker_id.clone(),
            limit: free as i64,
            free: Vec::new(),
            limited: Vec::new(),
        };
        for s in specs.values() {
            match s.concurrency {
                Some(limit) => request.limited.push((s.name.clone(), limit)),
                None => request.free.push(s.name.clone()),
            }
        }
        let runs = match &self.inner.db {
            Db::Sqlite(p) => sqlite::claim(p, &request).await?,
            Db::Postgres(p) => postgres::claim(p, &request).await?,
        };
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            // Claimed no more than the free slots, so a permit is there.
            match self.inner.busy.clone().try_acquire_owned() {
                Ok(permit) => out.push((run, permit)),
                Err(_) => {
                    // Give it back: another claim took the slot meanwhile.
                    self.release(&run).await;
                }
            }
        }
        Ok(out)
    }

    async fn release(&self, run: &Run) {
        let result = match &self.inner.db {
            Db::Sqlite(p) => sqlite::release(p, &run.id, &self.inner.worker_id).await,
            Db::Postgres(p) => postgres::release(p, &run.id, &self.inner.worker_id).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, run = %run.id, "cannot release a claimed run; its lease will expire");
        }
    }

    /// Runs one claimed attempt, keeping its lease alive, and records how it ended.
    async fn execute(&self, run: Run) {
        let Some(spec) = self.specs().get(&run.job).cloned() else {
            self.release(&run).await;
            return;
        };
        let request = RunRequest {
            job: run.job.clone(),
            run: run.id.clone(),
            attempt: run.attempts,
            trigger: run.trigger.clone(),
            payload: run.payload.clone(),
            timeout: spec.timeout,
        };
        // Stops with this attempt, however it ends (dropped included).
        let heartbeat = AbortOnDrop(self.heartbeat(run.id.clone()));
        let outcome =
            tokio::time::timeout(spec.timeout, self.inner.runner.run(&spec.function, request))
                .await;
        drop(heartbeat);
        let outcome = outcome.unwrap_or_else(|_| RunOutcome {
            status: None,
            error: Some(format!("timed out after {} ms", spec.timeout.as_millis())),
            logs: Vec::new(),
        });
        let logs = Value::from(outcome.logs.clone());
        let result = if outcome.succeeded() {
            self.settle(&run, "succeeded", None, Some(logs), None).await
        } else {
            let error = outcome
                .error
                .clone()
                .or_else(|| outcome.status.map(|s| format!("the function answered {s}")))
                .unwrap_or_else(|| "the function failed".into());
            if run.attempts >= run.max_attempts {
                self.settle(&run, "dead", None, Some(logs), Some(&error))
                    .await
            } else {
                let delay = spec.retry_delay(run.attempts, 0.5 + rand::random::<f64>());
                let at = self.now() + delay.as_millis() as Millis;
                self.settle(&run, "queued", Some(at), Some(logs), Some(&error))
                    .await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, run = %run.id, "cannot record a run's outcome; it runs again after its lease");
        }
    }

    /// Records a run's new state, if this worker still holds it (a cancelled or reclaimed run
    /// is not overwritten). `run_at` set means queued again for then.
    async fn settle(
        &self,
        run: &Run,
        status: &'static str,
        run_at: Option<Millis>,
        logs: Option<Value>,
        error: Option<&str>,
    ) -> Result<(), JobError> {
        let now = self.now();
        let worker = if status == "cancelled" {
            None
        } else {
            Some(self.inner.worker_id.as_str())
        };
        let settlement = Settlement {
            id: run.id.clone(),
            worker: worker.map(str::to_string),
            status,
            run_at,
            logs,
            error: error.map(str::to_string),
            now,
        };
        match &self.inner.outcomes {
            Outcomes::Sqlite(pool) => sqlite::settle(pool, settlement).await?,
            Outcomes::Postgres(settler) => settler.settle(settlement).await?,
        }
        if run_at.is_some() {
            self.inner.wake.notify_waiters();
        }
        Ok(())
    }

    /// Extends the run's lease every third of it while the function runs.
    fn heartbeat(&self, id: String) -> tokio::task::JoinHandle<()> {
        let jobs = self.clone();
        tokio::spawn(async move {
            let every = jobs.inner.config.lease / 3;
            loop {
                tokio::time::sleep(every).await;
                let until = jobs.now() + jobs.inner.config.lease.as_millis() as Millis;
                let result = match &jobs.inner.db {
                    Db::Sqlite(p) => sqlite::extend(p, &id, &jobs.inner.worker_id, until).await,
                    Db::Postgres(p) => postgres::extend(p, &id, &jobs.inner.worker_id, until).await,
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, run = %id, "cannot extend a lease");
                }
            }
        })
    }

    /// The background loops: the scheduler every second, workers woken by enqueues (and by
    /// Postgres NOTIFY from other replicas) or by the poll interval.
    pub fn spawn(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let scheduler = {
            let jobs = self.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut said = Vec::new();
                for n in 0u64.. {
                    every.tick().await;
                    if let Err(e) = jobs.tick().await {
                        tracing::warn!(error = %e, "job scheduling failed; trying again");
                    }
                    if n % 5 == 0 {
                        match jobs.sync_triggers().await {
                            // Said once, not every five seconds.
                            Ok(problems) if problems != said => {
                                for p in &problems {
                                    tracing::warn!("event job: {p}");
                                }
                                said = problems;
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "cannot sync event triggers"),
                        }
                    }
                }
            })
        };
        let workers = {
            let jobs = self.clone();
            tokio::spawn(async move { jobs.work_forever().await })
        };
        let mut handles = vec![scheduler, workers];
        if let Db::Postgres(pool) = &self.inner.db {
            let jobs = self.clone();
            let pool = pool.clone();
            handles.push(tokio::spawn(async move {
                postgres::listen(&pool, || jobs.inner.wake.notify_waiters()).await
            }));
        }
        handles
    }

    async fn work_forever(&self) {
        // While busy, a claim waits (5 ms at most) for a quarter of the slots to free up, so
        // one round trip claims several runs: claiming each slot as it frees serialized on
        // the round trips (measured: 1.4k runs/s however many workers; several claim loops
        // instead only multiplied the queries). Idle, a claim goes at once.
        let batch = (self.inner.config.workers / 4).max(1);
        loop {
            let woken = self.inner.wake.notified();
            match self.claim().await {
                Ok(claimed) if !claimed.is_empty() => {
                    for (run, permit) in claimed {
                        let jobs = self.clone();
                        tokio::spawn(async move {
                            jobs.execute(run).await;
                            drop(permit);
                            jobs.inner.wake.notify_waiters();
                        });
                    }
                    let until = tokio::time::Instant::now() + Duration::from_millis(5);
                    while self.inner.busy.available_permits() < batch
                        && tokio::time::Instant::now() < until
                    {
                        let _ = tokio::time::timeout_at(until, self.inner.wake.notified()).await;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "claiming runs failed; trying again"),
            }
            let _ = tokio::time::timeout(self.inner.config.poll, woken).await;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The latest tick at or before `now`.
fn cron_latest(trigger: &Trigger, now: Millis) -> Option<Millis> {
    cron_at(trigger, now, false)
}

/// The next tick after `now`.
fn cron_next(trigger: &Trigger, now: Millis) -> Option<Millis> {
    cron_at(trigger, now, true)
}

fn cron_at(trigger: &Trigger, now: Millis, forward: bool) -> Option<Millis> {
    let Trigger::Cron { schedule, timezone } = trigger else {
        return None;
    };
    let cron: croner::Cron = schedule.parse().ok()?;
    let utc = chrono::DateTime::from_timestamp_millis(now)?;
    let found = match timezone.as_deref().map(str::parse::<chrono_tz::Tz>) {
        Some(Ok(tz)) => {
            let local = utc.with_timezone(&tz);
            let t = if forward {
                cron.find_next_occurrence(&local, false)
            } else {
                cron.find_previous_occurrence(&local, true)
            };
            t.ok()?.timestamp_millis()
        }
        Some(Err(_)) => return None,
        None => {
            let t = if forward {
                cron.find_next_occurrence(&utc, false)
            } else {
                cron.find_previous_occurrence(&utc, true)
            };
            t.ok()?.timestamp_millis()
        }
    };
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Millis {
        chrono::DateTime::parse_from_rfc3339(text)
            .expect("time")
            .timestamp_millis()
    }

    #[test]
    fn cron_ticks_in_utc_and_in_a_timezone() {
        let every_minute = Trigger::Cron {
            schedule: "* * * * *".into(),
            timezone: None,
        };
        assert_eq!(
            cron_latest(&every_minute, at("2026-11-26T12:00:30Z")),
            Some(at("2026-11-26T12:00:00Z"))
        );
        assert_eq!(
            cron_latest(&every_minute, at("2026-11-26T12:00:00Z")),
            Some(at("2026-11-26T12:00:00Z")),
            "a tick is due at its own instant"
        );
        assert_eq!(
            cron_next(&every_minute, at("2026-11-26T12:00:00Z")),
            Some(at("2026-11-26T12:01:00Z"))
        );
        let nine_in_paris = Trigger::Cron {
            schedule: "0 9 * * *".into(),
            timezone: Some("Europe/Paris".into()),
        };
        assert_eq!(
            cron_next(&nine_in_paris, at("2026-11-26T00:00:00Z")),
            Some(at("2026-11-26T08:00:00Z")),
            "9:00 in Paris is 8:00 UTC in winter"
        );
        let seconds = Trigger::Cron {
            schedule: "*/10 * * * * *".into(),
            timezone: None,
        };
        assert_eq!(
            cron_latest(&seconds, at("2026-11-26T12:00:15Z")),
            Some(at("2026-11-26T12:00:10Z"))
        );
    }

    #[test]
    fn retries_back_off_exponentially_within_an_hour() {
        let spec = JobSpec::queue("j", "f");
        assert_eq!(spec.retry_delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(spec.retry_delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(spec.retry_delay(3, 1.5), Duration::from_secs(6));
        assert_eq!(spec.retry_delay(30, 1.0), Duration::from_secs(3600));
    }

    #[test]
    fn keys_come_from_top_level_payload_fields() {
        let spec = JobSpec {
            concurrency_key: Some("user".into()),
            ..JobSpec::queue("j", "f")
        };
        assert_eq!(
            spec.field(&json!({"user": "u1"}), &spec.concurrency_key),
            Some("u1".into())
        );
        assert_eq!(
            spec.field(&json!({"user": 7}), &spec.concurrency_key),
            Some("7".into())
        );
        assert_eq!(spec.field(&json!({}), &spec.concurrency_key), None);
    }
}
