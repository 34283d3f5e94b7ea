//! O2: runs and schedules in Postgres, shared by every replica. Claims take rows with
//! `FOR UPDATE SKIP LOCKED` (two workers never claim one run); jobs with a concurrency limit
//! are claimed one run at a time under a transaction-scoped advisory lock on the job, so the
//! count of running runs cannot change under the claim. Enqueues `NOTIFY reactor_jobs` at
//! commit; every replica listens and wakes its workers.

use std::collections::HashMap;

use reactor_db::Migration;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::{ClaimRequest, JobError, Millis, NewRun, Run, Settlement};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
    version: 1,
    name: "job runs and cron schedules",
    sql: "
        create table reactor.job_runs (
            id uuid primary key,
            job text not null,
            status text not null,
            trigger jsonb not null,
            payload jsonb not null,
            attempts int not null default 0,
            max_attempts int not null,
            run_at bigint not null,
            lease_until bigint,
            worker text,
            concurrency_key text,
            dedup_key text,
            created_at bigint not null,
            started_at bigint,
            finished_at bigint,
            last_error text,
            logs jsonb not null default '[]'
        );
        create index job_runs_due on reactor.job_runs (run_at) where status in ('queued', 'running');
        create index job_runs_job on reactor.job_runs (job, created_at desc);
        create table reactor.job_schedules (
            job text primary key,
            last_tick bigint not null
        );
        revoke all on reactor.job_runs, reactor.job_schedules from public;
    ",
    },
    Migration {
        version: 2,
        name: "event triggers enqueue in the changing transaction",
        // Arguments: the event, then (job, max attempts) pairs. Security definer: the change
        // runs as the request's role, which may not write the runs table. A user's password
        // hash and an object's storage key never reach a payload.
        sql: r#"
        create or replace function reactor.job_event() returns trigger
            language plpgsql security definer set search_path = pg_catalog, reactor as $f$
        declare
            rec jsonb;
            old_rec jsonb;
            now_ms bigint := (extract(epoch from clock_timestamp()) * 1000)::bigint;
            event text := TG_ARGV[0];
            i int := 1;
        begin
            if TG_OP <> 'DELETE' then rec := to_jsonb(NEW); end if;
            if TG_OP <> 'INSERT' then old_rec := to_jsonb(OLD); end if;
            if TG_TABLE_SCHEMA = 'reactor' and TG_TABLE_NAME = 'users' then
                rec := rec - 'password_hash';
            elsif TG_TABLE_SCHEMA = 'storage' then
                rec := rec - 'blob';
                old_rec := old_rec - 'blob';
            end if;
            while i < TG_NARGS loop
                insert into reactor.job_runs
                    (id, job, status, trigger, payload, max_attempts, run_at, created_at)
                values (
                    gen_random_uuid(), TG_ARGV[i], 'queued',
                    jsonb_build_object('type', 'event', 'event', event, 'table', TG_TABLE_NAME),
                    jsonb_strip_nulls(jsonb_build_object(
                        'event', event, 'record', rec, 'old_record', old_rec)),
                    TG_ARGV[i + 1]::int, now_ms, now_ms);
                i := i + 2;
            end loop;
            perform pg_notify('reactor_jobs', event);
            return null;
        end
        $f$;
    "#,
    },
    Migration {
        version: 3,
        name: "claims by an ordered index scan whatever the statistics say",
        // The claim is one function so that it can carry its own planner settings. Measured
        // with 100 000 runs enqueued at once into a table last analysed empty: the planner
        // believed a handful of rows were due, chose a bitmap scan of every queued row plus a
        // sort, and each claim took 55 ms; the ordered scan of the due index that stops after
        // `p_limit` rows takes 0.2 ms. Expired leases get an index of their own, so burying
        // runs whose worker died does not scan the queue either.
        sql: r#"
        create index job_runs_leases on reactor.job_runs (lease_until) where status = 'running';
        create function reactor.job_claim(p_now bigint, p_jobs text[], p_limit int,
                                          p_worker text, p_lease_until bigint)
            returns setof reactor.job_runs
            language sql
            set enable_bitmapscan = off
            set enable_seqscan = off
            set search_path = pg_catalog, reactor
        as $f$
            with due as (
                select id from reactor.job_runs
                where ((status = 'queued' and run_at <= p_now)
                       or (status = 'running' and lease_until < p_now))
                  and job = any(p_jobs)
                order by run_at limit p_limit
                for update skip locked
            )
            update reactor.job_runs
            set status = 'running', attempts = attempts + 1, worker = p_worker,
                lease_until = p_lease_until, started_at = p_now, finished_at = null
            where id in (select id from due)
            returning *
        $f$;
        revoke all on function reactor.job_claim(bigint, text[], int, text, bigint) from public;
    "#,
    },
];

const CHANNEL: &str = "reactor_jobs";

macro_rules! columns {
    () => {
        "id::text, job, status, trigger::text, payload::text, attempts, max_attempts, run_at, \
         lease_until, worker, concurrency_key, created_at, started_at, finished_at, last_error, \
         logs::text"
    };
}

fn run(r: &PgRow) -> Result<Run, sqlx::Error> {
    let json = |i: usize| -> Result<Value, sqlx::Error> {
        let text: String = r.try_get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    Ok(Run {
        id: r.try_get(0)?,
        job: r.try_get(1)?,
        status: r.try_get(2)?,
        trigger: json(3)?,
        payload: json(4)?,
        attempts: r.try_get(5)?,
        max_attempts: r.try_get(6)?,
        run_at: r.try_get(7)?,
        lease_until: r.try_get(8)?,
        worker: r.try_get(9)?,
        concurrency_key: r.try_get(10)?,
        created_at: r.try_get(11)?,
        started_at: r.try_get(12)?,
        finished_at: r.try_get(13)?,
        last_error: r.try_get(14)?,
        logs: json(15)?,
    })
}

fn runs_of(rows: &[PgRow]) -> Result<Vec<Run>, JobError> {
    Ok(rows.iter().map(run).collect::<Result<_, _>>()?)
}

async fn insert_row(
    tx: &mut sqlx::PgConnection,
    new: &NewRun,
    now: Millis,
) -> Result<Run, JobError> {
    if let Some(key) = &new.dedup_key {
        // Two replicas enqueueing the same key wait for each other here.
        sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("reactor.jobs.dedup:{}:{key}", new.job))
            .execute(&mut *tx)
            .await?;
        let same = sqlx::query(concat!(
            "select ",
            columns!(),
            " from reactor.job_runs where job = $1 and dedup_key = $2 and created_at >= $3
             order by created_at desc limit 1"
        ))
        .bind(&new.job)
        .bind(key)
        .bind(new.dedup_since)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(same) = same {
            return Ok(run(&same)?);
        }
    }
    let row = sqlx::query(concat!(
        "insert into reactor.job_runs
             (id, job, status, trigger, payload, max_attempts, run_at, concurrency_key, dedup_key,
              created_at)
         values ($1::uuid, $2, 'queued', $3::jsonb, $4::jsonb, $5, $6, $7, $8, $9)
         returning ",
        columns!()
    ))
    .bind(&new.id)
    .bind(&new.job)
    .bind(new.trigger.to_string())
    .bind(new.payload.to_string())
    .bind(new.max_attempts)
    .bind(new.run_at)
    .bind(&new.concurrency_key)
    .bind(&new.dedup_key)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("select pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(&new.job)
        .execute(&mut *tx)
        .await?;
    Ok(run(&row)?)
}

pub async fn insert(pool: &PgPool, new: NewRun, now: Millis) -> Result<Run, JobError> {
    let mut tx = pool.begin().await?;
    let made = insert_row(&mut tx, &new, now).await?;
    tx.commit().await?;
    Ok(made)
}

pub async fn find(pool: &PgPool, id: &str) -> Result<Option<Run>, JobError> {
    let row = sqlx::query(concat!(
        "select ",
        columns!(),
        " from reactor.job_runs where id = $1::uuid"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(run).transpose()?)
}

pub async fn runs(pool: &PgPool, job: &str, limit: i64) -> Result<Vec<Run>, JobError> {
    let rows = sqlx::query(concat!(
        "select ",
        columns!(),
        " from reactor.job_runs where job = $1 order by created_at desc, id limit $2"
    ))
    .bind(job)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    runs_of(&rows)
}

pub async fn last_statuses(
    pool: &PgPool,
    jobs: &[String],
) -> Result<HashMap<String, String>, JobError> {
    let rows = sqlx::query(
        "select j.job, (select status from reactor.job_runs r where r.job = j.job
                        order by created_at desc limit 1)
         from unnest($1::text[]) as j(job)",
    )
    .bind(jobs)
    .fetch_all(pool)
    .await?;
    let mut out = HashMap::new();
    for r in rows {
        let job: String = r.try_get(0)?;
        if let Some(status) = r.try_get::<Option<String>, _>(1)? {
            out.insert(job, status);
        }
    }
    Ok(out)
}

pub async fn requeue(pool: &PgPool, id: &str, now: Millis) -> Result<(), JobError> {
    let mut tx = pool.begin().await?;
    let job: Option<String> = sqlx::query_scalar(
        "update reactor.job_runs
         set status = 'queued', run_at = $2, attempts = 0, lease_until = null, worker = null,
             started_at = null, finished_at = null
         where id = $1::uuid returning job",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(job) = job {
        sqlx::query("select pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(job)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

const DUE: &str =
    "((status = 'queued' and run_at <= $1) or (status = 'running' and lease_until < $1))";

/// Runs whose worker died during their last attempt are out of attempts: dead.
pub async fn bury(pool: &PgPool, now: Millis) -> Result<(), JobError> {
    sqlx::query(
        "update reactor.job_runs
         set status = 'dead', finished_at = $1, lease_until = null, worker = null,
             last_error = coalesce(last_error, 'the worker stopped during the last attempt')
         where status = 'running' and lease_until < $1 and attempts >= max_attempts",
    )
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn claim(pool: &PgPool, req: &ClaimRequest) -> Result<Vec<Run>, JobError> {
    let lease_until = req.now + req.lease;
    let mut claimed = Vec::new();
    if !req.free.is_empty() {
        let rows = sqlx::query(concat!(
            "select ",
            columns!(),
            " from reactor.job_claim($1, $2, $3::int, $4, $5)"
        ))
        .bind(req.now)
        .bind(&req.free)
        .bind(req.limit)
        .bind(&req.worker)
        .bind(lease_until)
        .fetch_all(pool)
        .await?;
        claimed.extend(runs_of(&rows)?);
    }
    for (job, limit) in &req.limited {
        if claimed.len() as i64 >= req.limit {
            break;
        }
        let mut tx = pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("reactor.jobs.concurrency:{job}"))
            .execute(&mut *tx)
            .await?;
        // Like `reactor.job_claim`: the ordered index scan, even when the statistics are stale.
        sqlx::query("set local enable_bitmapscan = off")
            .execute(&mut *tx)
            .await?;
        while (claimed.len() as i64) < req.limit {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "update reactor.job_runs
                 set status = 'running', attempts = attempts + 1, worker = $4, lease_until = $5,
                     started_at = $1, finished_at = null
                 where id = (
                     select id from reactor.job_runs r
                     where {DUE} and job = $2
                       and (select count(*) from reactor.job_runs o
                            where o.job = r.job and o.status = 'running' and o.lease_until >= $1
                              and o.concurrency_key is not distinct from r.concurrency_key) < $3
                     order by run_at limit 1
                     for update skip locked)
                 returning {}",
                columns!()
            )))
            .bind(req.now)
            .bind(job)
            .bind(limit)
            .bind(&req.worker)
            .bind(lease_until)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(r) => claimed.push(run(&r)?),
                None => break,
            }
        }
        tx.commit().await?;
    }
    Ok(claimed)
}

pub async fn release(pool: &PgPool, id: &str, worker: &str) -> Result<(), JobError> {
    sqlx::query(
        "update reactor.job_runs
         set status = 'queued', attempts = attempts - 1, worker = null, lease_until = null
         where id = $1::uuid and worker = $2 and status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn extend(pool: &PgPool, id: &str, worker: &str, until: Millis) -> Result<(), JobError> {
    sqlx::query(
        "update reactor.job_runs set lease_until = $3
         where id = $1::uuid and worker = $2 and status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(until)
    .execute(pool)
    .await?;
    Ok(())
}

/// The most outcomes one statement records.
const MAX_SETTLE_BATCH: usize = 256;

type Reply = tokio::sync::oneshot::Sender<Result<(), JobError>>;

/// Records outcomes in batches: whatever settles while the previous statement is in flight
/// goes in the next one, so a busy queue pays one round trip and one durable commit per batch
/// rather than per run (no waiting is added: an idle settler sends at once). An outcome not
/// yet recorded when the process dies is lost like any other: its run is claimed again after
/// its lease.
#[derive(Clone)]
pub(crate) struct Settler(tokio::sync::mpsc::UnboundedSender<(Settlement, Reply)>);

impl Settler {
    pub fn start(pool: PgPool) -> Settler {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Settlement, Reply)>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, MAX_SETTLE_BATCH).await > 0 {
                let (settlements, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                match settle_batch(&pool, &settlements).await {
                    Ok(()) => {
                        for reply in replies {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(JobError::Settle(message.clone())));
                        }
                    }
                }
            }
        });
        Settler(tx)
    }

    pub async fn settle(&self, settlement: Settlement) -> Result<(), JobError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let stopped = || JobError::Settle("the settler stopped".into());
        self.0.send((settlement, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// One statement for the batch. A run its worker no longer holds (cancelled, or reclaimed after
/// its lease) or one already finished is left alone. Retries wake the workers in the same
/// statement.
async fn settle_batch(pool: &PgPool, batch: &[Settlement]) -> Result<(), JobError> {
    let mut ids = Vec::with_capacity(batch.len());
    let mut workers = Vec::with_capacity(batch.len());
    let mut statuses = Vec::with_capacity(batch.len());
    let mut run_ats = Vec::with_capacity(batch.len());
    let mut logs = Vec::with_capacity(batch.len());
    let mut errors = Vec::with_capacity(batch.len());
    let mut finished = Vec::with_capacity(batch.len());
    for s in batch {
        ids.push(s.id.as_str());
        workers.push(s.worker.as_deref());
        statuses.push(s.status);
        run_ats.push(s.run_at);
        logs.push(s.logs.as_ref().map(Value::to_string));
        errors.push(s.error.as_deref());
        finished.push(s.finished_at());
    }
    sqlx::query(
        "with input as (
             select * from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                                  $6::text[], $7::bigint[])
                 as i(id, worker, status, run_at, logs, error, finished_at)
         ), settled as (
             update reactor.job_runs r
             set status = i.status, run_at = coalesce(i.run_at, r.run_at),
                 logs = coalesce(i.logs::jsonb, r.logs), last_error = coalesce(i.error, r.last_error),
                 lease_until = null, worker = null,
                 finished_at = coalesce(i.finished_at, r.finished_at)
             from input i
             where r.id = i.id::uuid
               and (case when i.worker is null then r.status in ('queued', 'running')
                         else r.worker = i.worker and r.status = 'running' end)
             returning r.job, i.run_at)
         select count(*) from settled
         where run_at is null or pg_notify('reactor_jobs', job) is not null",
    )
    .bind(&ids)
    .bind(&workers)
    .bind(&statuses)
    .bind(&run_ats)
    .bind(&logs)
    .bind(&errors)
    .bind(&finished)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn claim_tick(
    pool: &PgPool,
    job: &str,
    tick: Millis,
    run: Option<NewRun>,
    now: Millis,
) -> Result<Vec<Run>, JobError> {
    let mut tx = pool.begin().await?;
    let claimed = sqlx::query(
        "insert into reactor.job_schedules (job, last_tick) values ($1, $2)
         on conflict (job) do update set last_tick = excluded.last_tick
         where reactor.job_schedules.last_tick < excluded.last_tick",
    )
    .bind(job)
    .bind(tick)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let made = match run {
        Some(run) if claimed => vec![insert_row(&mut tx, &run, now).await?],
        _ => Vec::new(),
    };
    tx.commit().await?;
    Ok(made)
}

/// Wakes this process's workers on every enqueue any replica commits; reconnects when the
/// connection drops (the poll interval covers the gap).
pub async fn listen(pool: &PgPool, wake: impl Fn()) {
    loop {
        match sqlx::postgres::PgListener::connect_with(pool).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "cannot LISTEN for jobs; polling meanwhile");
                } else {
                    while listener.recv().await.is_ok() {
                        wake();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to LISTEN for jobs; polling meanwhile")
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Makes the event triggers the jobs want and drops the ones they no longer do, in one
/// transaction. A trigger on a table that does not exist yet is skipped (and said).
pub async fn sync_triggers(
    pool: &PgPool,
    wanted: &[crate::triggers::Wanted],
) -> Result<Vec<String>, JobError> {
    use crate::triggers::{Source, ident, literal};
    let mut tx = pool.begin().await?;
    let existing: Vec<(String, String, String)> = sqlx::query_as(
        "select t.tgname::text, n.nspname::text, c.relname::text
         from pg_trigger t join pg_class c on c.oid = t.tgrelid
         join pg_namespace n on n.oid = c.relnamespace
         where not t.tgisinternal and t.tgname like 'reactor\\_job\\_%'",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut problems = Vec::new();
    let mut keep = Vec::new();
    for w in wanted {
        let (schema, table, when) = match &w.source {
            Source::Data(t) => ("public", t.as_str(), None),
            Source::Storage(b) => (
                "storage",
                "objects",
                Some(format!(
                    "{}.bucket_id = {}",
                    if w.op == "DELETE" { "OLD" } else { "NEW" },
                    literal(b)
                )),
            ),
            Source::Users => ("reactor", "users", None),
        };
        let exists: Option<String> = sqlx::query_scalar("select to_regclass($1)::text")
            .bind(format!("{}.{}", ident(schema), ident(table)))
            .fetch_one(&mut *tx)
            .await?;
        if exists.is_none() {
            problems.push(format!(
                "{} waits for table {schema}.{table}, which does not exist yet",
                w.jobs
                    .iter()
                    .map(|j| j.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        }
        let name = format!("reactor_job_{}", w.hash_with(""));
        keep.push(name.clone());
        if existing.iter().any(|(n, _, _)| n == &name) {
            continue;
        }
        let mut args = vec![literal(&w.event)];
        for (job, attempts) in &w.jobs {
            args.push(literal(job));
            args.push(literal(&attempts.to_string()));
        }
        let sql = format!(
            "create trigger {} after {} on {}.{} for each row {} execute function reactor.job_event({})",
            ident(&name),
            w.op,
            ident(schema),
            ident(table),
            when.map(|w| format!("when ({w})")).unwrap_or_default(),
            args.join(", ")
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    for (name, schema, table) in existing {
        if !keep.contains(&name) {
            let sql = format!(
                "drop trigger if exists {} on {}.{}",
                ident(&name),
                ident(&schema),
                ident(&table)
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(problems)
}
