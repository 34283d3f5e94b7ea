//! The queue's contract, the same cases on SQLite and Postgres: delivery, retries with
//! backoff, dead runs, time limits, leases taken over after a worker dies, cron ticks claimed
//! once across instances, catch-up, concurrency limits, deduplication, cancel and retry.
//! Time is a manual clock; the function is a runner of the test's own (the server wires the
//! real Functions capability in and is tested with real handlers in reactor-server).

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reactor_db::Db;
use reactor_db::testing::fresh_postgres_database;
use reactor_jobs::{
    BoxFuture, Clock, JobSpec, Jobs, JobsConfig, Millis, RunOutcome, RunRequest, Runner,
};
use reactor_manifest::Trigger;
use serde_json::json;

#[derive(Debug, Default)]
struct ManualClock(AtomicI64);

impl ManualClock {
    fn at(text: &str) -> Arc<ManualClock> {
        let t = chrono::DateTime::parse_from_rfc3339(text)
            .expect("time")
            .timestamp_millis();
        Arc::new(ManualClock(AtomicI64::new(t)))
    }
    fn set(&self, text: &str) {
        let t = chrono::DateTime::parse_from_rfc3339(text)
            .expect("time")
            .timestamp_millis();
        self.0.store(t, Ordering::SeqCst);
    }
    fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Functions by name: `ok` answers 200, `fail` 500, `flaky` fails its first two attempts,
/// `hang` never answers, `gate` waits for the test to open it. Records every call, and
/// fails the test if one run is ever executed twice at the same time.
#[derive(Debug)]
struct TestRunner {
    calls: Mutex<Vec<RunRequest>>,
    running: Mutex<HashSet<String>>,
    overlaps: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl Default for TestRunner {
    fn default() -> Self {
        TestRunner {
            calls: Mutex::default(),
            running: Mutex::default(),
            overlaps: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Runner for TestRunner {
    fn run<'a>(&'a self, function: &'a str, request: RunRequest) -> BoxFuture<'a, RunOutcome> {
        Box::pin(async move {
            if !self
                .running
                .lock()
                .expect("lock")
                .insert(request.run.clone())
            {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            self.calls.lock().expect("lock").push(request.clone());
            let status = match function {
                "ok" => 200,
                "fail" => 500,
                "flaky" if request.attempt < 3 => 503,
                "flaky" => 204,
                "hang" => {
                    std::future::pending::<()>().await;
                    200
                }
                "gate" => {
                    let permit = self.gate.acquire().await;
                    permit.map(|p| p.forget()).ok();
                    200
                }
                _ => 404,
            };
            self.running.lock().expect("lock").remove(&request.run);
            RunOutcome {
                status: Some(status),
                error: None,
                logs: vec![json!({"message": format!("{function} attempt {}", request.attempt)})],
            }
        })
    }
}

fn config() -> JobsConfig {
    JobsConfig {
        lease: Duration::from_secs(30),
        poll: Duration::from_millis(50),
        workers: 8,
        tick_grace: Duration::from_secs(5),
    }
}

fn specs() -> Vec<JobSpec> {
    let cron = |name: &str, catch_up: bool| JobSpec {
        trigger: Trigger::Cron {
            schedule: "* * * * *".into(),
            timezone: None,
        },
        catch_up,
        ..JobSpec::queue(name, "ok")
    };
    vec![
        JobSpec::queue("ok", "ok"),
        JobSpec {
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            ..JobSpec::queue("fail", "fail")
        },
        JobSpec::queue("flaky", "flaky"),
        JobSpec {
            timeout: Duration::from_millis(200),
            max_attempts: 1,
            ..JobSpec::queue("hang", "hang")
        },
        JobSpec {
            concurrency: Some(1),
            concurrency_key: Some("user".into()),
            ..JobSpec::queue("gate", "gate")
        },
        JobSpec {
            dedup_key: Some("order".into()),
            ..JobSpec::queue("dedup", "ok")
        },
        cron("minutely", false),
        cron("catchup", true),
    ]
}

async fn start(url: &str, clock: Arc<ManualClock>, runner: Arc<TestRunner>) -> Jobs {
    let db = Db::connect(url).await.expect("db");
    let jobs = Jobs::start(db, runner, clock, config())
        .await
        .expect("jobs");
    jobs.load(specs());
    jobs
}

async fn contract(url: &str) {
    let clock = ManualClock::at("2026-11-26T11:59:30Z");
    let runner = Arc::new(TestRunner::default());
    let jobs = start(url, clock.clone(), runner.clone()).await;

    // Delivery: the function gets the job, run, attempt, trigger and payload.
    let run = jobs.enqueue("ok", json!({"n": 1})).await.expect("enqueue");
    assert_eq!((run.status.as_str(), run.attempts), ("queued", 0));
    assert_eq!(jobs.work_once().await.expect("work"), 1);
    let done = jobs.run(&run.id).await.expect("run");
    assert_eq!((done.status.as_str(), done.attempts), ("succeeded", 1));
    assert_eq!(done.logs, json!([{"message": "ok attempt 1"}]));
    {
        let calls = runner.calls.lock().expect("lock");
        let call = calls.last().expect("a call");
        assert_eq!(
            (call.job.as_str(), call.run.as_str(), call.attempt),
            ("ok", run.id.as_str(), 1)
        );
        assert_eq!(call.payload, json!({"n": 1}));
        assert_eq!(call.trigger, json!({"type": "queue"}));
    }
    assert!(matches!(
        jobs.enqueue("nope", json!(null)).await,
        Err(reactor_jobs::JobError::UnknownJob(_))
    ));

    // Retries back off, then the run is dead.
    let failing = jobs.enqueue("fail", json!(null)).await.expect("enqueue");
    jobs.work_once().await.expect("work");
    let after_one = jobs.run(&failing.id).await.expect("run");
    assert_eq!(
        (after_one.status.as_str(), after_one.attempts),
        ("queued", 1)
    );
    let delay = after_one.run_at - clock.now();
    assert!(
        (500..1500).contains(&delay),
        "first retry after 1 s ± jitter: {delay} ms"
    );
    assert_eq!(
        jobs.work_once().await.expect("work"),
        0,
        "not before its time"
    );
    clock.advance(1600);
    jobs.work_once().await.expect("work");
    let after_two = jobs.run(&failing.id).await.expect("run");
    let delay = after_two.run_at - clock.now();
    assert!(
        (1000..3000).contains(&delay),
        "second retry after 2 s ± jitter: {delay} ms"
    );
    clock.advance(3100);
    jobs.work_once().await.expect("work");
    let dead = jobs.run(&failing.id).await.expect("run");
    assert_eq!((dead.status.as_str(), dead.attempts), ("dead", 3));
    assert_eq!(
        dead.last_error.as_deref(),
        Some("the function answered 500")
    );
    clock.advance(10_000);
    assert_eq!(
        jobs.work_once().await.expect("work"),
        0,
        "a dead run stays dead"
    );

    // Retry a dead run by hand; flaky succeeds on its third attempt.
    let retried = jobs.retry(&dead.id).await.expect("retry");
    assert_eq!((retried.status.as_str(), retried.attempts), ("queued", 0));
    assert!(matches!(
        jobs.retry(&dead.id).await,
        Err(reactor_jobs::JobError::WrongState(..))
    ));
    let cancelled = jobs.cancel(&dead.id).await.expect("cancel");
    assert_eq!(cancelled.status, "cancelled");
    let flaky = jobs.enqueue("flaky", json!(null)).await.expect("enqueue");
    for _ in 0..3 {
        jobs.work_once().await.expect("work");
        clock.advance(5_000);
    }
    let flaky = jobs.run(&flaky.id).await.expect("run");
    assert_eq!((flaky.status.as_str(), flaky.attempts), ("succeeded", 3));

    // A time limit ends an attempt.
    let hung = jobs.enqueue("hang", json!(null)).await.expect("enqueue");
    jobs.work_once().await.expect("work");
    let hung = jobs.run(&hung.id).await.expect("run");
    assert_eq!(hung.status, "dead");
    assert_eq!(hung.last_error.as_deref(), Some("timed out after 200 ms"));

    // Deduplication within the window.
    let a = jobs
        .enqueue("dedup", json!({"order": 7}))
        .await
        .expect("enqueue");
    let b = jobs
        .enqueue("dedup", json!({"order": 7}))
        .await
        .expect("enqueue");
    let c = jobs
        .enqueue("dedup", json!({"order": 8}))
        .await
        .expect("enqueue");
    assert_eq!(a.id, b.id);
    assert_ne!(a.id, c.id);
    clock.advance(3_601_000);
    let d = jobs
        .enqueue("dedup", json!({"order": 7}))
        .await
        .expect("enqueue");
    assert_ne!(a.id, d.id, "after the window it is a new run");
    jobs.work_once().await.expect("work");

    // A worker that dies mid-run: its lease expires and another instance runs it again.
    let second_runner = Arc::new(TestRunner::default());
    let other = start(url, clock.clone(), second_runner.clone()).await;
    let gated = jobs
        .enqueue("gate", json!({"user": "ada"}))
        .await
        .expect("enqueue");
    let dying = {
        let jobs = jobs.clone();
        tokio::spawn(async move { jobs.work_once().await })
    };
    wait_for(|| runner.running.lock().expect("lock").contains(&gated.id)).await;
    dying.abort();
    let _ = dying.await;
    // The aborted call never returned; forget it.
    runner.running.lock().expect("lock").clear();
    let held = jobs.run(&gated.id).await.expect("run");
    assert_eq!((held.status.as_str(), held.attempts), ("running", 1));
    assert_eq!(other.work_once().await.expect("work"), 0, "the lease holds");
    clock.advance(31_000);
    second_runner.gate.add_permits(1);
    assert_eq!(other.work_once().await.expect("work"), 1, "taken over");
    let taken = jobs.run(&gated.id).await.expect("run");
    assert_eq!((taken.status.as_str(), taken.attempts), ("succeeded", 2));

    // Concurrency 1 per user: ada's second run waits for her first; bo's runs beside it.
    let first = jobs
        .enqueue("gate", json!({"user": "ada"}))
        .await
        .expect("enqueue");
    let second = jobs
        .enqueue("gate", json!({"user": "ada"}))
        .await
        .expect("enqueue");
    let bo = jobs
        .enqueue("gate", json!({"user": "bo"}))
        .await
        .expect("enqueue");
    let working = {
        let jobs = jobs.clone();
        tokio::spawn(async move { jobs.work_once().await })
    };
    wait_for(|| runner.running.lock().expect("lock").len() == 2).await;
    let statuses = async |ids: &[&str]| {
        let mut out = Vec::new();
        for id in ids {
            out.push(jobs.run(id).await.expect("run").status);
        }
        out
    };
    assert_eq!(
        statuses(&[&first.id, &second.id, &bo.id]).await,
        ["running", "queued", "running"]
    );
    runner.gate.add_permits(2);
    assert_eq!(working.await.expect("join").expect("work"), 2);
    runner.gate.add_permits(1);
    assert_eq!(jobs.work_once().await.expect("work"), 1);
    assert_eq!(
        statuses(&[&first.id, &second.id, &bo.id]).await,
        ["succeeded", "succeeded", "succeeded"]
    );

    // Cron: a tick seen late (missed while down) is skipped, unless the job catches up; each
    // tick then runs once, however many instances schedule it.
    clock.set("2026-11-26T12:05:30Z");
    let made = jobs.tick().await.expect("tick");
    assert_eq!(
        made.iter().map(|r| r.job.as_str()).collect::<Vec<_>>(),
        ["catchup"],
        "12:05 was missed: only the catch-up job runs it"
    );
    assert_eq!(made[0].payload, json!({"tick": "2026-11-26T12:05:00.000Z"}));
    assert!(jobs.tick().await.expect("tick").is_empty());
    let mut total = 0;
    for minute in 6..106 {
        let at = 1_795_694_400_000 + (minute as i64) * 60_000; // 12:00 + minute
        clock.0.store(at, Ordering::SeqCst);
        let (x, y) = tokio::join!(jobs.tick(), other.tick());
        total += x.expect("tick").len() + y.expect("tick").len();
    }
    assert_eq!(
        total, 200,
        "100 ticks × 2 cron jobs, each once across two instances"
    );
    let listed = jobs.list().await.expect("list");
    let minutely = listed
        .iter()
        .find(|j| j["name"] == "minutely")
        .expect("listed");
    assert_eq!(minutely["trigger"]["type"], "cron");
    assert_eq!(minutely["last_status"], "queued");
    assert!(
        minutely["next_run_at"]
            .as_str()
            .is_some_and(|t| t.ends_with(":00.000Z"))
    );
    assert_eq!(runner.overlaps.load(Ordering::SeqCst), 0);
}

async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the condition never held");
}

/// A database file in `dir`, as the URL `Db::connect` takes.
fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("jobs.db").display())
}

/// Two instances working one queue: every run at least once, none twice at once.
async fn many(url: &str, n: usize) {
    let clock = ManualClock::at("2026-11-26T12:00:00Z");
    let runner = Arc::new(TestRunner::default());
    let a = start(url, clock.clone(), runner.clone()).await;
    let b = start(url, clock.clone(), runner.clone()).await;
    let mut ids = HashSet::new();
    for i in 0..n {
        ids.insert(a.enqueue("ok", json!({"i": i})).await.expect("enqueue").id);
    }
    let mut loops = a.spawn();
    loops.extend(b.spawn());
    // (The schedulers run the cron jobs meanwhile; only the queued runs are counted.)
    let ran = || -> HashSet<String> {
        runner
            .calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|c| c.job == "ok")
            .map(|c| c.run.clone())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while ran().len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} ran",
            ran().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for l in loops {
        l.abort();
    }
    let ran = ran();
    assert_eq!(ran, ids, "every run ran");
    assert_eq!(
        runner.overlaps.load(Ordering::SeqCst),
        0,
        "no run ran twice at once"
    );
}

/// Attempts that end together are recorded together (on Postgres, in one statement): each
/// outcome lands on its own run, and one for a run cancelled meanwhile changes nothing.
async fn settled_together(url: &str) {
    let clock = ManualClock::at("2026-11-26T12:00:00Z");
    let runner = Arc::new(TestRunner::default());
    let jobs = start(url, clock.clone(), runner.clone()).await;
    let mut ok = Vec::new();
    let mut failing = Vec::new();
    for i in 0..3 {
        ok.push(
            jobs.enqueue("ok", json!({"i": i}))
                .await
                .expect("enqueue")
                .id,
        );
        failing.push(
            jobs.enqueue("fail", json!({"i": i}))
                .await
                .expect("enqueue")
                .id,
        );
    }
    let gated = jobs
        .enqueue("gate", json!({"user": "u1"}))
        .await
        .expect("enqueue")
        .id;
    let worker = {
        let jobs = jobs.clone();
        tokio::spawn(async move { jobs.work_once().await })
    };
    wait_for(|| runner.running.lock().expect("lock").contains(&gated)).await;
    jobs.cancel(&gated).await.expect("cancel");
    runner.gate.add_permits(1);
    assert_eq!(worker.await.expect("join").expect("work"), 7);

    for id in &ok {
        let run = jobs.run(id).await.expect("run");
        assert_eq!(
            (run.status.as_str(), run.attempts),
            ("succeeded", 1),
            "{id}"
        );
        assert_eq!(run.logs, json!([{"message": "ok attempt 1"}]));
        assert!(run.finished_at.is_some());
    }
    for id in &failing {
        let run = jobs.run(id).await.expect("run");
        assert_eq!((run.status.as_str(), run.attempts), ("queued", 1), "{id}");
        assert_eq!(run.last_error.as_deref(), Some("the function answered 500"));
        assert_eq!(run.logs, json!([{"message": "fail attempt 1"}]));
        assert!(run.run_at > clock.now(), "retried later, not now");
        assert!(run.finished_at.is_none());
    }
    let run = jobs.run(&gated).await.expect("run");
    assert_eq!(
        run.status, "cancelled",
        "the late outcome did not overwrite the cancel"
    );
    assert_eq!(run.logs, json!([]));
}

#[tokio::test]
async fn sqlite_outcomes_settled_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    settled_together(&sqlite_url(&dir)).await;
}

#[tokio::test]
async fn postgres_outcomes_settled_together() {
    let Some(url) = fresh_postgres_database("jobs_settled_together").await else {
        return;
    };
    settled_together(&url).await;
}

#[tokio::test]
async fn sqlite_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    contract(&sqlite_url(&dir)).await;
}

#[tokio::test]
async fn postgres_contract() {
    let Some(url) = fresh_postgres_database("jobs_contract").await else {
        return;
    };
    contract(&url).await;
}

#[tokio::test]
async fn sqlite_two_instances_share_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    many(&sqlite_url(&dir), 500).await;
}

#[tokio::test]
async fn postgres_two_instances_share_10000_runs() {
    let Some(url) = fresh_postgres_database("jobs_many").await else {
        return;
    };
    many(&url, 10_000).await;
}

fn event(name: &str, event: &str, table: Option<&str>, bucket: Option<&str>) -> JobSpec {
    JobSpec {
        trigger: Trigger::Event {
            event: event.into(),
            table: table.map(str::to_string),
            bucket: bucket.map(str::to_string),
        },
        ..JobSpec::queue(name, "ok")
    }
}

/// Runs SQL on the test database as the project would (a migration, a request's write).
async fn sql(db: &Db, text: &str) {
    match db {
        Db::Sqlite(p) => {
            let text = text.to_string();
            p.with(move |c| Ok(c.execute_batch(&text)?))
                .await
                .expect("sqlite");
        }
        Db::Postgres(p) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(text.to_string()))
                .execute(p)
                .await
                .expect("postgres");
        }
    }
}

async fn events(url: &str) {
    let clock = ManualClock::at("2026-11-26T12:00:00Z");
    let runner = Arc::new(TestRunner::default());
    let db = Db::connect(url).await.expect("db");
    let jobs = Jobs::start(db.clone(), runner, clock, config())
        .await
        .expect("jobs");
    jobs.load(vec![
        event("on-order", "data.insert", Some("orders"), None),
        event("on-order-gone", "data.delete", Some("orders"), None),
        event("on-avatar", "storage.object.created", None, Some("avatars")),
    ]);
    let problems = jobs.sync_triggers().await.expect("sync");
    assert_eq!(problems.len(), 3, "no tables yet: {problems:?}");
    sql(
        &db,
        "create table orders (id integer primary key, total integer not null)",
    )
    .await;
    let problems = jobs.sync_triggers().await.expect("sync");
    assert!(
        problems.len() == 1 && problems[0].contains("on-avatar"),
        "{problems:?}"
    );
    assert_eq!(
        jobs.sync_triggers().await.expect("sync"),
        problems,
        "idempotent"
    );

    sql(&db, "insert into orders (id, total) values (1, 250)").await;
    sql(
        &db,
        "begin; insert into orders (id, total) values (2, 999); rollback;",
    )
    .await;
    let runs = jobs.runs("on-order", 10).await.expect("runs");
    assert_eq!(runs.len(), 1, "a rolled-back insert enqueues nothing");
    assert_eq!(runs[0].payload["record"], json!({"id": 1, "total": 250}));
    assert_eq!(runs[0].payload["event"], "data.insert");
    assert_eq!(runs[0].trigger["type"], "event");
    assert_eq!(runs[0].status, "queued");

    sql(&db, "delete from orders where id = 1").await;
    let gone = jobs.runs("on-order-gone", 10).await.expect("runs");
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].payload["old_record"]["total"], 250);

    // A migration that adds a column: the trigger follows.
    sql(&db, "alter table orders add column note text").await;
    jobs.sync_triggers().await.expect("sync");
    sql(
        &db,
        "insert into orders (id, total, note) values (3, 10, 'gift')",
    )
    .await;
    let runs = jobs.runs("on-order", 10).await.expect("runs");
    assert_eq!(
        runs[0].payload["record"]["note"], "gift",
        "{:?}",
        runs[0].payload
    );

    // Jobs removed: their triggers go.
    jobs.load(vec![JobSpec::queue("ok", "ok")]);
    assert!(jobs.sync_triggers().await.expect("sync").is_empty());
    sql(&db, "insert into orders (id, total) values (4, 1)").await;
    jobs.load(vec![event("on-order", "data.insert", Some("orders"), None)]);
    let runs = jobs.runs("on-order", 10).await.expect("runs");
    assert_eq!(
        runs.len(),
        2,
        "no run for the insert made while no job wanted it"
    );
}

#[tokio::test]
async fn sqlite_event_triggers() {
    let dir = tempfile::tempdir().expect("tempdir");
    events(&sqlite_url(&dir)).await;
}

#[tokio::test]
async fn postgres_event_triggers() {
    let Some(url) = fresh_postgres_database("jobs_events").await else {
        return;
    };
    events(&url).await;
}
