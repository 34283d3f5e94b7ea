//! O1: runs and schedules in SQLite. One process owns the database, so claims need no row
//! locks: every write goes through the pool's writer thread, one transaction at a time.

use std::collections::HashMap;

use reactor_core::{KeyTier, Principal};
use reactor_db::{Migration, SqlitePool};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use crate::{ClaimRequest, JobError, Millis, NewRun, Run, Settlement};

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "job runs and cron schedules",
    sql: "
        create table _reactor_job_runs (
            id text primary key,
            job text not null,
            status text not null,
            trigger text not null,
            payload text not null,
            attempts integer not null default 0,
            max_attempts integer not null,
            run_at integer not null,
            lease_until integer,
            worker text,
            concurrency_key text,
            dedup_key text,
            created_at integer not null,
            started_at integer,
            finished_at integer,
            last_error text,
            logs text not null default '[]'
        );
        create index _reactor_job_runs_due on _reactor_job_runs (status, run_at);
        create index _reactor_job_runs_job on _reactor_job_runs (job, created_at);
        create table _reactor_job_schedules (
            job text primary key,
            last_tick integer not null
        );
    ",
}];

const COLUMNS: &str = "id, job, status, trigger, payload, attempts, max_attempts, run_at, \
     lease_until, worker, concurrency_key, created_at, started_at, finished_at, last_error, logs";

fn run(r: &Row<'_>) -> rusqlite::Result<Run> {
    let json = |i: usize| -> rusqlite::Result<Value> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    Ok(Run {
        id: r.get(0)?,
        job: r.get(1)?,
        status: r.get(2)?,
        trigger: json(3)?,
        payload: json(4)?,
        attempts: r.get(5)?,
        max_attempts: r.get(6)?,
        run_at: r.get(7)?,
        lease_until: r.get(8)?,
        worker: r.get(9)?,
        concurrency_key: r.get(10)?,
        created_at: r.get(11)?,
        started_at: r.get(12)?,
        finished_at: r.get(13)?,
        last_error: r.get(14)?,
        logs: json(15)?,
    })
}

fn system() -> Principal {
    Principal::from_key("jobs", KeyTier::Service)
}

/// A write on the writer thread; an error rolls it back alone.
async fn write<T: Send + 'static>(
    pool: &SqlitePool,
    f: impl FnOnce(&Connection) -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    pool.write_with_principal(&system(), move |conn| f(conn).into())
        .await?
}

async fn read<T: Send + 'static>(
    pool: &SqlitePool,
    f: impl FnOnce(&mut Connection) -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    pool.with(move |conn| Ok(f(conn))).await?
}

fn insert_row(conn: &Connection, new: &NewRun, now: Millis) -> Result<Run, JobError> {
    if let Some(key) = &new.dedup_key {
        let same = conn
            .query_row(
                &format!(
                    "select {COLUMNS} from _reactor_job_runs
                     where job = ?1 and dedup_key = ?2 and created_at >= ?3
                     order by created_at desc limit 1"
                ),
                params![new.job, key, new.dedup_since],
                run,
            )
            .optional()?;
        if let Some(same) = same {
            return Ok(same);
        }
    }
    conn.execute(
        "insert into _reactor_job_runs
             (id, job, status, trigger, payload, max_attempts, run_at, concurrency_key, dedup_key,
              created_at)
         values (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            new.id,
            new.job,
            new.trigger.to_string(),
            new.payload.to_string(),
            new.max_attempts,
            new.run_at,
            new.concurrency_key,
            new.dedup_key,
            now
        ],
    )?;
    Ok(conn.query_row(
        &format!("select {COLUMNS} from _reactor_job_runs where id = ?1"),
        [&new.id],
        run,
    )?)
}

pub async fn insert(pool: &SqlitePool, new: NewRun, now: Millis) -> Result<Run, JobError> {
    write(pool, move |conn| insert_row(conn, &new, now)).await
}

pub async fn find(pool: &SqlitePool, id: &str) -> Result<Option<Run>, JobError> {
    let id = id.to_string();
    read(pool, move |conn| {
        Ok(conn
            .query_row(
                &format!("select {COLUMNS} from _reactor_job_runs where id = ?1"),
                [&id],
                run,
            )
            .optional()?)
    })
    .await
}

pub async fn runs(pool: &SqlitePool, job: &str, limit: i64) -> Result<Vec<Run>, JobError> {
    let job = job.to_string();
    read(pool, move |conn| {
        let mut stmt = conn.prepare(&format!(
            "select {COLUMNS} from _reactor_job_runs where job = ?1
             order by created_at desc, id limit ?2"
        ))?;
        let rows = stmt
            .query_map(params![job, limit], run)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
    .await
}

pub async fn last_statuses(
    pool: &SqlitePool,
    jobs: &[String],
) -> Result<HashMap<String, String>, JobError> {
    let jobs = jobs.to_vec();
    read(pool, move |conn| {
        let mut stmt = conn.prepare(
            "select status from _reactor_job_runs where job = ?1 order by created_at desc limit 1",
        )?;
        let mut out = HashMap::new();
        for job in jobs {
            if let Some(status) = stmt
                .query_row([&job], |r| r.get::<_, String>(0))
                .optional()?
            {
                out.insert(job, status);
            }
        }
        Ok(out)
    })
    .await
}

pub async fn requeue(pool: &SqlitePool, id: &str, now: Millis) -> Result<(), JobError> {
    let id = id.to_string();
    write(pool, move |conn| {
        conn.execute(
            "update _reactor_job_runs
             set status = 'queued', run_at = ?2, attempts = 0, lease_until = null, worker = null,
                 started_at = null, finished_at = null
             where id = ?1",
            params![id, now],
        )?;
        Ok(())
    })
    .await
}

/// Claims one run: due (queued and `run_at` passed) or abandoned (running, lease expired).
const CLAIM_ONE: &str = "update _reactor_job_runs
     set status = 'running', attempts = attempts + 1, worker = ?1, lease_until = ?2,
         started_at = ?3, finished_at = null
     where id = ?4
     returning id, job, status, trigger, payload, attempts, max_attempts, run_at, lease_until,
               worker, concurrency_key, created_at, started_at, finished_at, last_error, logs";

/// Runs whose worker died during their last attempt are out of attempts: dead.
pub async fn bury(pool: &SqlitePool, now: Millis) -> Result<(), JobError> {
    write(pool, move |conn| {
        conn.execute(
            "update _reactor_job_runs
             set status = 'dead', finished_at = ?1, lease_until = null, worker = null,
                 last_error = coalesce(last_error, 'the worker stopped during the last attempt')
             where status = 'running' and lease_until < ?1 and attempts >= max_attempts",
            [now],
        )?;
        Ok(())
    })
    .await
}

pub async fn claim(pool: &SqlitePool, req: &ClaimRequest) -> Result<Vec<Run>, JobError> {
    let req = req.clone();
    write(pool, move |conn| {
        let due =
            "((status = 'queued' and run_at <= ?1) or (status = 'running' and lease_until < ?1))";
        let mut claimed = Vec::new();
        let lease_until = req.now + req.lease;
        if !req.free.is_empty() {
            let ids: Vec<String> = {
                let mut stmt = conn.prepare(&format!(
                    "select id from _reactor_job_runs
                     where {due} and job in (select value from json_each(?2))
                     order by run_at limit ?3"
                ))?;
                stmt.query_map(
                    params![
                        req.now,
                        serde_json::to_string(&req.free).unwrap_or_default(),
                        req.limit
                    ],
                    |r| r.get(0),
                )?
                .collect::<Result<_, _>>()?
            };
            for id in ids {
                claimed.push(conn.query_row(
                    CLAIM_ONE,
                    params![req.worker, lease_until, req.now, id],
                    run,
                )?);
            }
        }
        for (job, limit) in &req.limited {
            // One at a time, each against the runs holding the limit now (per key).
            while (claimed.len() as i64) < req.limit {
                let next: Option<String> = conn
                    .query_row(
                        &format!(
                            "select id from _reactor_job_runs r
                             where {due} and job = ?2
                               and (select count(*) from _reactor_job_runs o
                                    where o.job = r.job and o.status = 'running'
                                      and o.lease_until >= ?1
                                      and o.concurrency_key is r.concurrency_key) < ?3
                             order by run_at limit 1"
                        ),
                        params![req.now, job, limit],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(id) = next else { break };
                claimed.push(conn.query_row(
                    CLAIM_ONE,
                    params![req.worker, lease_until, req.now, id],
                    run,
                )?);
            }
        }
        Ok(claimed)
    })
    .await
}

pub async fn release(pool: &SqlitePool, id: &str, worker: &str) -> Result<(), JobError> {
    let (id, worker) = (id.to_string(), worker.to_string());
    write(pool, move |conn| {
        conn.execute(
            "update _reactor_job_runs
             set status = 'queued', attempts = attempts - 1, worker = null, lease_until = null
             where id = ?1 and worker = ?2 and status = 'running'",
            [&id, &worker],
        )?;
        Ok(())
    })
    .await
}

pub async fn extend(
    pool: &SqlitePool,
    id: &str,
    worker: &str,
    until: Millis,
) -> Result<(), JobError> {
    let (id, worker) = (id.to_string(), worker.to_string());
    write(pool, move |conn| {
        conn.execute(
            "update _reactor_job_runs set lease_until = ?3
             where id = ?1 and worker = ?2 and status = 'running'",
            params![id, worker, until],
        )?;
        Ok(())
    })
    .await
}

pub(crate) async fn settle(pool: &SqlitePool, s: Settlement) -> Result<(), JobError> {
    let logs = s.logs.as_ref().map(Value::to_string);
    let finished_at = s.finished_at();
    write(pool, move |conn| {
        conn.execute(
            "update _reactor_job_runs
             set status = ?2, run_at = coalesce(?3, run_at), logs = coalesce(?4, logs),
                 last_error = coalesce(?5, last_error), lease_until = null, worker = null,
                 finished_at = coalesce(?6, finished_at)
             where id = ?1
               and (case when ?7 is null then status in ('queued', 'running')
                         else worker = ?7 and status = 'running' end)",
            params![
                s.id,
                s.status,
                s.run_at,
                logs,
                s.error,
                finished_at,
                s.worker
            ],
        )?;
        Ok(())
    })
    .await
}

/// Claims `tick` for `job` if no process has (compare-and-set on the last tick), and makes
/// `run` in the same transaction.
pub async fn claim_tick(
    pool: &SqlitePool,
    job: &str,
    tick: Millis,
    run: Option<NewRun>,
    now: Millis,
) -> Result<Vec<Run>, JobError> {
    let job = job.to_string();
    write(pool, move |conn| {
        let claimed = conn.execute(
            "insert into _reactor_job_schedules (job, last_tick) values (?1, ?2)
             on conflict (job) do update set last_tick = excluded.last_tick
             where last_tick < excluded.last_tick",
            params![job, tick],
        )?;
        match run {
            Some(run) if claimed == 1 => Ok(vec![insert_row(conn, &run, now)?]),
            _ => Ok(Vec::new()),
        }
    })
    .await
}

/// Makes the event triggers the jobs want and drops the rest, in one transaction. The row
/// is spelled out column by column (`json_object('id', NEW."id", …)`), without a user's
/// password hash or an object's storage key.
pub async fn sync_triggers(
    pool: &SqlitePool,
    wanted: Vec<crate::triggers::Wanted>,
) -> Result<Vec<String>, JobError> {
    use crate::triggers::{Source, ident, literal};
    write(pool, move |conn| {
        let existing: Vec<String> = {
            let mut stmt = conn.prepare(
                "select name from sqlite_schema
                 where type = 'trigger' and name like '\\_reactor\\_job\\_%' escape '\\'",
            )?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        let mut problems = Vec::new();
        let mut keep = Vec::new();
        for w in &wanted {
            let (table, hidden): (&str, &[&str]) = match &w.source {
                Source::Data(t) => (t.as_str(), &[]),
                Source::Storage(_) => ("_reactor_storage_objects", &["blob"]),
                Source::Users => ("_reactor_users", &["password_hash"]),
            };
            let columns: Vec<String> = {
                let mut stmt = conn.prepare("select name from pragma_table_info(?1) order by cid")?;
                stmt.query_map([table], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            if columns.is_empty() {
                problems.push(format!(
                    "{} waits for table {table}, which does not exist yet",
                    w.jobs.iter().map(|j| j.0.as_str()).collect::<Vec<_>>().join(", ")
                ));
                continue;
            }
            let name = format!("_reactor_job_{}", w.hash_with(&columns.join(",")));
            keep.push(name.clone());
            if existing.contains(&name) {
                continue;
            }
            let row = if w.op == "DELETE" { "OLD" } else { "NEW" };
            let record = columns
                .iter()
                .filter(|c| !hidden.contains(&c.as_str()))
                .map(|c| format!("{}, {row}.{}", literal(c), ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let key = if w.op == "DELETE" { "old_record" } else { "record" };
            let when = match &w.source {
                Source::Storage(b) => format!("when {row}.bucket_id = {}", literal(b)),
                _ => String::new(),
            };
            let trigger_json = format!(
                "json_object('type', 'event', 'event', {}, 'table', {})",
                literal(&w.event),
                literal(table)
            );
            let payload = format!(
                "json_object('event', {}, {}, json_object({record}))",
                literal(&w.event),
                literal(key)
            );
            let inserts: String = w
                .jobs
                .iter()
                .map(|(job, attempts)| {
                    format!(
                        "insert into _reactor_job_runs
                             (id, job, status, trigger, payload, max_attempts, run_at, created_at)
                         values (reactor_uuid(), {}, 'queued', {trigger_json}, {payload}, {attempts},
                                 cast(unixepoch('subsec') * 1000 as integer),
                                 cast(unixepoch('subsec') * 1000 as integer));",
                        literal(job)
                    )
                })
                .collect();
            conn.execute_batch(&format!(
                "create trigger {} after {} on {} for each row {when} begin {inserts} end;",
                ident(&name),
                w.op,
                ident(table)
            ))?;
        }
        for name in existing {
            if !keep.contains(&name) {
                conn.execute_batch(&format!("drop trigger if exists {}", ident(&name)))?;
            }
        }
        Ok(problems)
    })
    .await
}
