//! The gateway's state in the database, shared by every replica: usage rows (one per
//! request served) and the counters limits are enforced with. A counter is one row per caller
//! scope and period. On Postgres reserving is one conditional upsert, so two replicas can
//! never both take the last of a budget. SQLite has one process (the file's owner), so its
//! counters are held in memory ([`Counters`]) and written behind with the recorder's batch:
//! a request never waits for the writer thread to reserve.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reactor_db::{Db, DbError, Migration};
use serde::Serialize;
use sqlx::Row;

pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "gateway usage and counters",
        sql: "
        create table reactor.gateway_usage (
            id bigserial primary key,
            at_ms bigint not null,
            day text not null,
            caller text not null,
            user_id text,
            org_id text,
            key_id text not null,
            model text not null,
            target text not null,
            prompt_tokens bigint not null,
            completion_tokens bigint not null,
            cost_micro bigint not null,
            status int not null
        );
        create index gateway_usage_day on reactor.gateway_usage (day);
        create table reactor.gateway_counters (
            scope text not null,
            period text not null,
            requests bigint not null,
            tokens bigint not null,
            cost_micro bigint not null,
            expires_ms bigint not null,
            primary key (scope, period)
        );
    ",
    },
    Migration {
        version: 2,
        name: "gateway response cache",
        sql: "
        create table reactor.gateway_cache (
            key text primary key,
            model text not null,
            body bytea not null,
            expires_ms bigint not null
        );
    ",
    },
    Migration {
        version: 3,
        name: "gateway expiry indexes",
        sql: "
        create index gateway_counters_expires on reactor.gateway_counters (expires_ms);
        create index gateway_cache_expires on reactor.gateway_cache (expires_ms);
    ",
    },
];

pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "gateway usage and counters",
        sql: "
        create table _reactor_gateway_usage (
            id integer primary key autoincrement,
            at_ms integer not null,
            day text not null,
            caller text not null,
            user_id text,
            org_id text,
            key_id text not null,
            model text not null,
            target text not null,
            prompt_tokens integer not null,
            completion_tokens integer not null,
            cost_micro integer not null,
            status integer not null
        );
        create index _reactor_gateway_usage_day on _reactor_gateway_usage (day);
        create table _reactor_gateway_counters (
            scope text not null,
            period text not null,
            requests integer not null,
            tokens integer not null,
            cost_micro integer not null,
            expires_ms integer not null,
            primary key (scope, period)
        );
    ",
    },
    Migration {
        version: 2,
        name: "gateway response cache",
        sql: "
        create table _reactor_gateway_cache (
            key text primary key,
            model text not null,
            body blob not null,
            expires_ms integer not null
        );
    ",
    },
    Migration {
        version: 3,
        name: "gateway expiry indexes",
        sql: "
        create index _reactor_gateway_counters_expires on _reactor_gateway_counters (expires_ms);
        create index _reactor_gateway_cache_expires on _reactor_gateway_cache (expires_ms);
    ",
    },
];

/// A cached answer's body, if one is fresh.
pub async fn cached(db: &Db, key: &str, now_ms: i64) -> Result<Option<Vec<u8>>, DbError> {
    Ok(match db {
        Db::Postgres(pool) => {
            sqlx::query_scalar(
                "select body from reactor.gateway_cache where key = $1 and expires_ms > $2",
            )
            .bind(key)
            .bind(now_ms)
            .fetch_optional(pool)
            .await?
        }
        Db::Sqlite(pool) => {
            let key = key.to_string();
            pool.with(move |conn| {
                use rusqlite::OptionalExtension;
                Ok(conn
                    .query_row(
                        "select body from _reactor_gateway_cache where key = ?1 and expires_ms > ?2",
                        rusqlite::params![key, now_ms],
                        |r| r.get(0),
                    )
                    .optional()?)
            })
            .await?
        }
    })
}

/// One request served.
#[derive(Debug, Clone)]
pub struct UsageRow {
    pub at_ms: i64,
    pub day: String,
    /// `user:<id>`, else `key:<id>`: who is billed.
    pub caller: String,
    pub user_id: Option<String>,
    pub org_id: Option<String>,
    pub key_id: String,
    pub model: String,
    pub target: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micro: i64,
    pub status: i32,
}

/// What a counter may grow to; `i64::MAX` where there is no limit.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub requests: i64,
    pub tokens: i64,
    pub cost_micro: i64,
}

/// One counter a request must fit in: what it adds, and what the counter may grow to.
#[derive(Debug, Clone)]
pub struct Check {
    pub scope: String,
    pub period: String,
    /// When the counter may be dropped.
    pub expires_ms: i64,
    pub requests: i64,
    pub tokens: i64,
    pub cost_micro: i64,
    pub caps: Caps,
}

const RESERVE_POSTGRES: &str = "insert into reactor.gateway_counters as c (scope, period, requests, tokens, cost_micro, expires_ms)
     values ($1, $2, $3, $4, $5, $6)
     on conflict (scope, period) do update set
       requests = c.requests + excluded.requests,
       tokens = c.tokens + excluded.tokens,
       cost_micro = c.cost_micro + excluded.cost_micro
     where c.requests + excluded.requests <= $7
       and c.tokens + excluded.tokens <= $8
       and c.cost_micro + excluded.cost_micro <= $9
     returning 1";

fn reserve_postgres(
    c: &Check,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(RESERVE_POSTGRES)
        .bind(&c.scope)
        .bind(&c.period)
        .bind(c.requests)
        .bind(c.tokens)
        .bind(c.cost_micro)
        .bind(c.expires_ms)
        .bind(c.caps.requests)
        .bind(c.caps.tokens)
        .bind(c.caps.cost_micro)
}

/// Where the limit counters are: Postgres's table (every replica shares it), or, for
/// SQLite, a ledger in this process in front of the table. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Counters {
    Table(sqlx::PgPool),
    Ledger(reactor_db::SqlitePool, Arc<Ledger>),
}

impl Counters {
    pub fn new(db: &Db) -> Counters {
        match db {
            Db::Postgres(pool) => Counters::Table(pool.clone()),
            Db::Sqlite(pool) => Counters::Ledger(pool.clone(), Arc::default()),
        }
    }
}

/// SQLite's counters in memory: each loaded from the table the first time a reservation
/// names it, then kept here; what they gained since the last write is owed to the table and
/// paid by [`settle`]. A crash loses at most that (one recorder batch, ~50 ms of requests).
#[derive(Debug, Default)]
pub struct Ledger {
    tallies: Mutex<HashMap<(String, String), Tally>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    requests: i64,
    tokens: i64,
    cost_micro: i64,
    expires_ms: i64,
    /// Not yet in the table.
    owed: (i64, i64, i64),
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Tally>> {
        // Every change is a few additions under the lock: none is left half-done.
        self.tallies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes every check or none (see [`reserve`]), counters missing from memory read from
    /// the table first.
    async fn reserve(
        &self,
        pool: &reactor_db::SqlitePool,
        checks: &[Check],
    ) -> Result<Option<usize>, DbError> {
        let missing: Vec<((String, String), i64)> = {
            let tallies = self.lock();
            checks
                .iter()
                .map(|c| ((c.scope.clone(), c.period.clone()), c.expires_ms))
                .filter(|(k, _)| !tallies.contains_key(k))
                .collect()
        };
        if !missing.is_empty() {
            let keys: Vec<(String, String)> = missing.iter().map(|(k, _)| k.clone()).collect();
            let stored: Vec<Option<(i64, i64, i64)>> = pool
                .with(move |conn| {
                    use rusqlite::OptionalExtension;
                    let mut stmt = conn.prepare_cached(
                        "select requests, tokens, cost_micro from _reactor_gateway_counters
                         where scope = ?1 and period = ?2",
                    )?;
                    let mut out = Vec::new();
                    for (scope, period) in &keys {
                        out.push(
                            stmt.query_row(rusqlite::params![scope, period], |r| {
                                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                            })
                            .optional()?,
                        );
                    }
                    Ok(out)
                })
                .await?;
            let mut tallies = self.lock();
            for ((key, expires_ms), row) in missing.into_iter().zip(stored) {
                let (requests, tokens, cost_micro) = row.unwrap_or_default();
                // A reservation racing this one may have loaded it meanwhile: theirs stands.
                tallies.entry(key).or_insert(Tally {
                    requests,
                    tokens,
                    cost_micro,
                    expires_ms,
                    owed: (0, 0, 0),
                });
            }
        }
        let mut tallies = self.lock();
        for (i, c) in checks.iter().enumerate() {
            let t = tallies
                .get(&(c.scope.clone(), c.period.clone()))
                .copied()
                .unwrap_or_default();
            if t.requests + c.requests > c.caps.requests
                || t.tokens + c.tokens > c.caps.tokens
                || t.cost_micro + c.cost_micro > c.caps.cost_micro
            {
                return Ok(Some(i));
            }
        }
        for c in checks {
            let t = tallies
                .entry((c.scope.clone(), c.period.clone()))
                .or_default();
            t.requests += c.requests;
            t.tokens += c.tokens;
            t.cost_micro += c.cost_micro;
            t.expires_ms = t.expires_ms.max(c.expires_ms);
            t.owed.0 += c.requests;
            t.owed.1 += c.tokens;
            t.owed.2 += c.cost_micro;
        }
        Ok(None)
    }

    /// Applies a batch's corrections (real tokens and cost against the estimates), then hands
    /// over what the table is owed; expired counters leave memory once paid.
    fn settle(&self, adjust: &HashMap<(String, String), (i64, i64)>, now_ms: i64) -> Vec<Owed> {
        let mut tallies = self.lock();
        for (key, (tokens, cost)) in adjust {
            if let Some(t) = tallies.get_mut(key) {
                t.tokens += tokens;
                t.cost_micro += cost;
                t.owed.1 += tokens;
                t.owed.2 += cost;
            }
        }
        let mut owed = Vec::new();
        for ((scope, period), t) in tallies.iter_mut() {
            if t.owed != (0, 0, 0) {
                owed.push(Owed {
                    scope: scope.clone(),
                    period: period.clone(),
                    delta: std::mem::take(&mut t.owed),
                    expires_ms: t.expires_ms,
                });
            }
        }
        tallies.retain(|_, t| t.expires_ms >= now_ms);
        owed
    }

    /// A write that failed: what it carried is owed again.
    fn restore(&self, owed: Vec<Owed>) {
        let mut tallies = self.lock();
        for o in owed {
            let t = tallies.entry((o.scope, o.period)).or_default();
            t.owed.0 += o.delta.0;
            t.owed.1 += o.delta.1;
            t.owed.2 += o.delta.2;
            t.expires_ms = t.expires_ms.max(o.expires_ms);
        }
    }
}

/// What one counter gained in memory since the table last heard of it.
#[derive(Debug, Clone)]
struct Owed {
    scope: String,
    period: String,
    delta: (i64, i64, i64),
    expires_ms: i64,
}

/// Adds to every counter of `checks` if each stays within its caps, or to none: `None` when
/// all took it, else the index of the first that could not. On Postgres each add is a
/// conditional upsert, so replicas racing for the last of a budget cannot both win it; on
/// SQLite the ledger decides under its lock.
pub async fn reserve(counters: &Counters, checks: Vec<Check>) -> Result<Option<usize>, DbError> {
    if let Some(i) = checks.iter().position(|c| {
        c.requests > c.caps.requests || c.tokens > c.caps.tokens || c.cost_micro > c.caps.cost_micro
    }) {
        return Ok(Some(i));
    }
    let pool = match counters {
        Counters::Table(pool) => pool,
        Counters::Ledger(pool, ledger) => return ledger.reserve(pool, &checks).await,
    };
    // One counter: one statement, no transaction around it.
    if let [c] = checks.as_slice() {
        let took = reserve_postgres(c).fetch_optional(pool).await?.is_some();
        return Ok((!took).then_some(0));
    }
    // Several: in one transaction, taken in the same order by every caller (so two
    // reservations cannot deadlock), all or none.
    let mut tx = pool.begin().await?;
    for (i, c) in checks.iter().enumerate() {
        let took = reserve_postgres(c)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !took {
            tx.rollback().await?;
            return Ok(Some(i));
        }
    }
    tx.commit().await?;
    Ok(None)
}

/// An answer kept for identical requests until `expires_ms`.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub key: String,
    pub model: String,
    pub body: Vec<u8>,
    pub expires_ms: i64,
}

/// What a batch of served requests leaves behind: their usage rows, what each counter gets
/// back or owes once the real usage is known (tokens, cost), and answers to cache.
#[derive(Debug, Default)]
pub struct Settlement {
    pub rows: Vec<UsageRow>,
    pub adjust: std::collections::HashMap<(String, String), (i64, i64)>,
    pub cache: Vec<CacheEntry>,
}

/// Writes a settlement in one transaction, and drops counters and cached answers whose
/// time is over.
pub async fn settle(counters: &Counters, s: Settlement, now_ms: i64) -> Result<(), DbError> {
    match counters {
        Counters::Table(pool) => {
            let mut tx = pool.begin().await?;
            for r in &s.rows {
                sqlx::query(
                    "insert into reactor.gateway_usage (at_ms, day, caller, user_id, org_id, key_id, model,
                       target, prompt_tokens, completion_tokens, cost_micro, status)
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(r.at_ms)
                .bind(&r.day)
                .bind(&r.caller)
                .bind(&r.user_id)
                .bind(&r.org_id)
                .bind(&r.key_id)
                .bind(&r.model)
                .bind(&r.target)
                .bind(r.prompt_tokens)
                .bind(r.completion_tokens)
                .bind(r.cost_micro)
                .bind(r.status)
                .execute(&mut *tx)
                .await?;
            }
            for ((scope, period), (tokens, cost)) in &s.adjust {
                sqlx::query(
                    "update reactor.gateway_counters set tokens = tokens + $3, cost_micro = cost_micro + $4
                     where scope = $1 and period = $2",
                )
                .bind(scope)
                .bind(period)
                .bind(tokens)
                .bind(cost)
                .execute(&mut *tx)
                .await?;
            }
            for c in &s.cache {
                sqlx::query(
                    "insert into reactor.gateway_cache (key, model, body, expires_ms) values ($1, $2, $3, $4)
                     on conflict (key) do update set body = excluded.body, expires_ms = excluded.expires_ms",
                )
                .bind(&c.key)
                .bind(&c.model)
                .bind(&c.body)
                .bind(c.expires_ms)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("delete from reactor.gateway_counters where expires_ms < $1")
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            sqlx::query("delete from reactor.gateway_cache where expires_ms < $1")
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Counters::Ledger(pool, ledger) => {
            let owed = ledger.settle(&s.adjust, now_ms);
            let paying = owed.clone();
            // The writer thread runs this in a transaction of its own.
            let written = pool
                .write(move |conn| {
                    let mut insert = conn.prepare_cached(
                        "insert into _reactor_gateway_usage (at_ms, day, caller, user_id, org_id, key_id, model,
                           target, prompt_tokens, completion_tokens, cost_micro, status)
                         values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    )?;
                    for r in &s.rows {
                        insert.execute(rusqlite::params![
                            r.at_ms,
                            r.day,
                            r.caller,
                            r.user_id,
                            r.org_id,
                            r.key_id,
                            r.model,
                            r.target,
                            r.prompt_tokens,
                            r.completion_tokens,
                            r.cost_micro,
                            r.status
                        ])?;
                    }
                    let mut pay = conn.prepare_cached(
                        "insert into _reactor_gateway_counters as c (scope, period, requests, tokens, cost_micro, expires_ms)
                         values (?1, ?2, ?3, ?4, ?5, ?6)
                         on conflict (scope, period) do update set
                           requests = c.requests + excluded.requests,
                           tokens = c.tokens + excluded.tokens,
                           cost_micro = c.cost_micro + excluded.cost_micro,
                           expires_ms = max(c.expires_ms, excluded.expires_ms)",
                    )?;
                    for o in &paying {
                        pay.execute(rusqlite::params![
                            o.scope,
                            o.period,
                            o.delta.0,
                            o.delta.1,
                            o.delta.2,
                            o.expires_ms
                        ])?;
                    }
                    for c in &s.cache {
                        conn.prepare_cached(
                            "insert into _reactor_gateway_cache (key, model, body, expires_ms) values (?1, ?2, ?3, ?4)
                             on conflict (key) do update set body = excluded.body, expires_ms = excluded.expires_ms",
                        )?
                        .execute(rusqlite::params![c.key, c.model, c.body, c.expires_ms])?;
                    }
                    conn.prepare_cached("delete from _reactor_gateway_counters where expires_ms < ?1")?
                        .execute([now_ms])?;
                    conn.prepare_cached("delete from _reactor_gateway_cache where expires_ms < ?1")?
                        .execute([now_ms])?;
                    Ok(())
                })
                .await;
            if written.is_err() {
                ledger.restore(owed);
            }
            written?;
        }
    }
    Ok(())
}

/// One group of the usage table.
#[derive(Debug, Clone, Serialize)]
pub struct UsageGroup {
    pub caller: Option<String>,
    pub model: Option<String>,
    pub day: Option<String>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// In US dollars, from the price table.
    pub cost: f64,
}

/// Usage since `since_day` (inclusive, `YYYY-MM-DD`), grouped by the columns named in
/// `by` (`caller`, `model`, `day`; checked by the caller against that list).
pub async fn usage(db: &Db, by: &[&str], since_day: &str) -> Result<Vec<UsageGroup>, DbError> {
    let pick = |c: &str| {
        if by.contains(&c) {
            c.to_string()
        } else {
            format!("cast(null as text) as {c}")
        }
    };
    let group: Vec<&str> = ["caller", "model", "day"]
        .into_iter()
        .filter(|c| by.contains(c))
        .collect();
    let group_sql = if group.is_empty() {
        String::new()
    } else {
        format!("group by {0} order by {0}", group.join(", "))
    };
    let table = match db {
        Db::Postgres(_) => "reactor.gateway_usage",
        Db::Sqlite(_) => "_reactor_gateway_usage",
    };
    let sql = format!(
        "select {}, {}, {}, count(*) as requests,
           cast(coalesce(sum(prompt_tokens), 0) as bigint) as prompt_tokens,
           cast(coalesce(sum(completion_tokens), 0) as bigint) as completion_tokens,
           cast(coalesce(sum(cost_micro), 0) as bigint) as cost_micro
         from {table} where day >= {} {group_sql}",
        pick("caller"),
        pick("model"),
        pick("day"),
        if matches!(db, Db::Postgres(_)) {
            "$1"
        } else {
            "?1"
        },
    );
    match db {
        Db::Postgres(pool) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(since_day)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(UsageGroup {
                        caller: r.try_get("caller")?,
                        model: r.try_get("model")?,
                        day: r.try_get("day")?,
                        requests: r.try_get("requests")?,
                        prompt_tokens: r.try_get("prompt_tokens")?,
                        completion_tokens: r.try_get("completion_tokens")?,
                        cost: r.try_get::<i64, _>("cost_micro")? as f64 / 1e6,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(DbError::from)
        }
        Db::Sqlite(pool) => {
            let since = since_day.to_string();
            pool.with(move |conn| {
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt
                    .query_map([&since], |r| {
                        Ok(UsageGroup {
                            caller: r.get(0)?,
                            model: r.get(1)?,
                            day: r.get(2)?,
                            requests: r.get(3)?,
                            prompt_tokens: r.get(4)?,
                            completion_tokens: r.get(5)?,
                            cost: r.get::<_, i64>(6)? as f64 / 1e6,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
        }
    }
}
