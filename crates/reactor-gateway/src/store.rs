//! The gateway's state in the database, shared by every replica: usage rows (one per
//! request served) and the counters limits are enforced with. A counter is one row per caller
//! scope and period; reserving is one conditional upsert, so two replicas can never both
//! take the last of a budget.

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

const RESERVE_SQLITE: &str = "insert into _reactor_gateway_counters as c (scope, period, requests, tokens, cost_micro, expires_ms)
     values (?1, ?2, ?3, ?4, ?5, ?6)
     on conflict (scope, period) do update set
       requests = c.requests + excluded.requests,
       tokens = c.tokens + excluded.tokens,
       cost_micro = c.cost_micro + excluded.cost_micro
     where c.requests + excluded.requests <= ?7
       and c.tokens + excluded.tokens <= ?8
       and c.cost_micro + excluded.cost_micro <= ?9
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

/// Adds to every counter of `checks` if each stays within its caps, or to none: `None` when
/// all took it, else the index of the first that could not. Each add is a conditional upsert,
/// so replicas racing for the last of a budget cannot both win it.
pub async fn reserve(db: &Db, checks: Vec<Check>) -> Result<Option<usize>, DbError> {
    if let Some(i) = checks.iter().position(|c| {
        c.requests > c.caps.requests || c.tokens > c.caps.tokens || c.cost_micro > c.caps.cost_micro
    }) {
        return Ok(Some(i));
    }
    match db {
        // One counter: one statement, no transaction around it.
        Db::Postgres(pool) if checks.len() == 1 => {
            let c = &checks[0];
            let took = reserve_postgres(c).fetch_optional(pool).await?.is_some();
            Ok((!took).then_some(0))
        }
        // Several: in one transaction, taken in the same order by every caller (so two
        // reservations cannot deadlock), all or none.
        Db::Postgres(pool) => {
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
        Db::Sqlite(pool) => {
            pool.write(move |conn| {
                use rusqlite::OptionalExtension;
                // The writer runs this in a savepoint of a shared transaction; this inner one
                // undoes the counters already taken when a later one is full.
                conn.execute_batch("savepoint reserve")?;
                let mut refused = None;
                for (i, c) in checks.iter().enumerate() {
                    let took = conn
                        .prepare_cached(RESERVE_SQLITE)?
                        .query_row(
                            rusqlite::params![
                                c.scope,
                                c.period,
                                c.requests,
                                c.tokens,
                                c.cost_micro,
                                c.expires_ms,
                                c.caps.requests,
                                c.caps.tokens,
                                c.caps.cost_micro
                            ],
                            |_| Ok(()),
                        )
                        .optional()?
                        .is_some();
                    if !took {
                        refused = Some(i);
                        break;
                    }
                }
                conn.execute_batch(if refused.is_some() {
                    "rollback to reserve; release reserve"
                } else {
                    "release reserve"
                })?;
                Ok(refused)
            })
            .await
        }
    }
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
pub async fn settle(db: &Db, s: Settlement, now_ms: i64) -> Result<(), DbError> {
    match db {
        Db::Postgres(pool) => {
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
        Db::Sqlite(pool) => {
            // The writer thread runs this in a transaction of its own.
            pool.write(move |conn| {
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
                for ((scope, period), (tokens, cost)) in &s.adjust {
                    conn.prepare_cached(
                        "update _reactor_gateway_counters set tokens = tokens + ?3, cost_micro = cost_micro + ?4
                         where scope = ?1 and period = ?2",
                    )?
                    .execute(rusqlite::params![scope, period, tokens, cost])?;
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
            .await?;
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
