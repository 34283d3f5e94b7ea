//! Connect's tables, on both databases, with functions of the same names: connect sessions
//! (one user's pending OAuth dance) and connections (whose credentials are sealed by the
//! vault before they get here). Who may see a connection is decided here, in every query,
//! by [`Owner`]: a user reaches their org's connections (or, outside an org, their own).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use reactor_db::{Db, DbError, Migration};
use serde::Serialize;
use sqlx::Row;

pub const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    name: "connect sessions and connections",
    sql: "
        create table reactor.connect_sessions (
            id text primary key,
            integration text not null,
            user_id text,
            org_id text,
            end_user_id text,
            redirect_to text,
            state text unique,
            browser text,
            verifier text,
            expires_ms bigint not null,
            used_ms bigint
        );
        create table reactor.connect_connections (
            id text primary key,
            integration text not null,
            provider text not null,
            user_id text,
            org_id text,
            end_user_id text,
            status text not null,
            credentials text not null,
            expires_ms bigint,
            scopes text not null,
            config text not null,
            last_refresh_ms bigint,
            last_error text,
            created_ms bigint not null,
            updated_ms bigint not null
        );
        create index connect_connections_org on reactor.connect_connections (org_id);
        create index connect_connections_user on reactor.connect_connections (user_id);
        create index connect_connections_expires on reactor.connect_connections (expires_ms);
        revoke all on reactor.connect_sessions from public;
        revoke all on reactor.connect_connections from public;
    ",
}];

pub const SQLITE: &[Migration] = &[Migration {
    version: 1,
    name: "connect sessions and connections",
    sql: "
        create table _reactor_connect_sessions (
            id text primary key,
            integration text not null,
            user_id text,
            org_id text,
            end_user_id text,
            redirect_to text,
            state text unique,
            browser text,
            verifier text,
            expires_ms integer not null,
            used_ms integer
        );
        create table _reactor_connect_connections (
            id text primary key,
            integration text not null,
            provider text not null,
            user_id text,
            org_id text,
            end_user_id text,
            status text not null,
            credentials text not null,
            expires_ms integer,
            scopes text not null,
            config text not null,
            last_refresh_ms integer,
            last_error text,
            created_ms integer not null,
            updated_ms integer not null
        );
        create index _reactor_connect_connections_org on _reactor_connect_connections (org_id);
        create index _reactor_connect_connections_user on _reactor_connect_connections (user_id);
        create index _reactor_connect_connections_expires on _reactor_connect_connections (expires_ms);
    ",
}];

/// Whose connections a caller reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The service key: every connection.
    Service,
    /// A signed-in user: their org's connections, or outside an org their own.
    User {
        user_id: String,
        org_id: Option<String>,
    },
}

impl Owner {
    /// The `where` condition and its values, numbered from `first`.
    fn condition(&self, first: usize) -> (String, Vec<String>) {
        match self {
            Owner::Service => ("true".into(), Vec::new()),
            Owner::User {
                org_id: Some(org), ..
            } => (format!("org_id = ${first}"), vec![org.clone()]),
            Owner::User {
                user_id,
                org_id: None,
            } => (
                format!("user_id = ${first} and org_id is null"),
                vec![user_id.clone()],
            ),
        }
    }
}

/// A connect session: who is connecting which integration, and where the browser goes after.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 (hex) of the session token the caller was given.
    pub id: String,
    pub integration: String,
    pub user_id: Option<String>,
    pub org_id: Option<String>,
    pub end_user_id: Option<String>,
    pub redirect_to: Option<String>,
    /// The PKCE verifier, sealed (set when the dance starts).
    pub verifier: Option<String>,
    pub expires_ms: i64,
}

/// A connection's row. `credentials` is sealed; the API never shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionRow {
    pub id: String,
    pub integration: String,
    pub provider: String,
    pub user_id: Option<String>,
    pub org_id: Option<String>,
    pub end_user_id: Option<String>,
    /// `active`, or `failed` once its credentials stopped working for good.
    pub status: String,
    #[serde(skip)]
    pub credentials: String,
    /// When the access token expires (milliseconds since the epoch), if it does.
    pub expires_ms: Option<i64>,
    pub scopes: String,
    #[serde(skip)]
    pub config: String,
    pub last_refresh_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

const COLUMNS: &str = "id, integration, provider, user_id, org_id, end_user_id, status, credentials, expires_ms, scopes, config, last_refresh_ms, last_error, created_ms, updated_ms";

fn table(db: &Db, name: &str) -> String {
    match db {
        Db::Postgres(_) => format!("reactor.connect_{name}"),
        Db::Sqlite(_) => format!("_reactor_connect_{name}"),
    }
}

/// `$n` placeholders as SQLite writes them.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

fn pg_connection(r: &sqlx::postgres::PgRow) -> Result<ConnectionRow, sqlx::Error> {
    Ok(ConnectionRow {
        id: r.try_get("id")?,
        integration: r.try_get("integration")?,
        provider: r.try_get("provider")?,
        user_id: r.try_get("user_id")?,
        org_id: r.try_get("org_id")?,
        end_user_id: r.try_get("end_user_id")?,
        status: r.try_get("status")?,
        credentials: r.try_get("credentials")?,
        expires_ms: r.try_get("expires_ms")?,
        scopes: r.try_get("scopes")?,
        config: r.try_get("config")?,
        last_refresh_ms: r.try_get("last_refresh_ms")?,
        last_error: r.try_get("last_error")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

fn sqlite_connection(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConnectionRow> {
    Ok(ConnectionRow {
        id: r.get(0)?,
        integration: r.get(1)?,
        provider: r.get(2)?,
        user_id: r.get(3)?,
        org_id: r.get(4)?,
        end_user_id: r.get(5)?,
        status: r.get(6)?,
        credentials: r.get(7)?,
        expires_ms: r.get(8)?,
        scopes: r.get(9)?,
        config: r.get(10)?,
        last_refresh_ms: r.get(11)?,
        last_error: r.get(12)?,
        created_ms: r.get(13)?,
        updated_ms: r.get(14)?,
    })
}

/// A value bound to a statement of either engine.
#[derive(Debug, Clone)]
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(Some(v.to_string()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(Some(v))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        Value::Text(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(Some(v))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Value {
        Value::Int(v)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Value::Text(v) => v.to_sql(),
            Value::Int(v) => v.to_sql(),
        }
    }
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    values: &'q [Value],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for v in values {
        q = match v {
            Value::Text(t) => q.bind(t.as_deref()),
            Value::Int(i) => q.bind(*i),
        };
    }
    q
}

/// Runs a statement that changes rows; how many it changed.
async fn execute(db: &Db, sql: String, values: Vec<Value>) -> Result<u64, DbError> {
    match db {
        Db::Postgres(pool) => Ok(bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), &values)
            .execute(pool)
            .await?
            .rows_affected()),
        Db::Sqlite(pool) => {
            let sql = sqlite_sql(&sql);
            pool.write(move |conn| {
                Ok(conn
                    .prepare_cached(&sql)?
                    .execute(rusqlite::params_from_iter(values.iter()))? as u64)
            })
            .await
        }
    }
}

/// Connections a `select` finds.
async fn connections(
    db: &Db,
    sql: String,
    values: Vec<Value>,
) -> Result<Vec<ConnectionRow>, DbError> {
    match db {
        Db::Postgres(pool) => {
            let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), &values)
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(pg_connection)
                .collect::<Result<Vec<_>, _>>()?)
        }
        Db::Sqlite(pool) => {
            let sql = sqlite_sql(&sql);
            pool.with(move |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(values.iter()), sqlite_connection)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
        }
    }
}

pub async fn insert_session(db: &Db, s: &Session) -> Result<(), DbError> {
    let sql = format!(
        "insert into {} (id, integration, user_id, org_id, end_user_id, redirect_to, expires_ms)
         values ($1, $2, $3, $4, $5, $6, $7)",
        table(db, "sessions")
    );
    execute(
        db,
        sql,
        vec![
            s.id.as_str().into(),
            s.integration.as_str().into(),
            s.user_id.clone().into(),
            s.org_id.clone().into(),
            s.end_user_id.clone().into(),
            s.redirect_to.clone().into(),
            s.expires_ms.into(),
        ],
    )
    .await?;
    Ok(())
}

/// What the authorize step binds to a session (hashes, and the sealed verifier).
#[derive(Debug, Clone)]
pub struct Started {
    pub state_hash: String,
    /// The hash of the nonce in the browser's cookie: only that browser may finish.
    pub browser_hash: String,
    pub verifier: Option<String>,
}

/// Binds a fresh state, browser nonce and PKCE verifier to an unused, unexpired session of
/// `integration`; whether there was one. A second visit replaces the first's.
pub async fn start_session(
    db: &Db,
    id: &str,
    integration: &str,
    started: Started,
    now_ms: i64,
) -> Result<bool, DbError> {
    let sql = format!(
        "update {} set state = $1, verifier = $2, browser = $3
         where id = $4 and integration = $5 and used_ms is null and expires_ms > $6",
        table(db, "sessions")
    );
    let n = execute(
        db,
        sql,
        vec![
            started.state_hash.into(),
            started.verifier.into(),
            started.browser_hash.into(),
            id.into(),
            integration.into(),
            now_ms.into(),
        ],
    )
    .await?;
    Ok(n == 1)
}

/// The session a `state` belongs to, used up at once: a state works one time only, only in
/// the browser that started it, and not after its session expired. A wrong browser uses
/// nothing up.
pub async fn take_session(
    db: &Db,
    state_hash: &str,
    browser_hash: &str,
    now_ms: i64,
) -> Result<Option<Session>, DbError> {
    let sql = format!(
        "update {} set used_ms = $1
         where state = $2 and browser = $3 and used_ms is null and expires_ms > $1
         returning id, integration, user_id, org_id, end_user_id, redirect_to, verifier, expires_ms",
        table(db, "sessions")
    );
    match db {
        Db::Postgres(pool) => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now_ms)
                .bind(state_hash)
                .bind(browser_hash)
                .fetch_optional(pool)
                .await?;
            let Some(r) = row else { return Ok(None) };
            Ok(Some(Session {
                id: r.try_get("id")?,
                integration: r.try_get("integration")?,
                user_id: r.try_get("user_id")?,
                org_id: r.try_get("org_id")?,
                end_user_id: r.try_get("end_user_id")?,
                redirect_to: r.try_get("redirect_to")?,
                verifier: r.try_get("verifier")?,
                expires_ms: r.try_get("expires_ms")?,
            }))
        }
        Db::Sqlite(pool) => {
            let sql = sqlite_sql(&sql);
            let (state, browser) = (state_hash.to_string(), browser_hash.to_string());
            pool.write(move |conn| {
                use rusqlite::OptionalExtension;
                Ok(conn
                    .prepare_cached(&sql)?
                    .query_row(rusqlite::params![now_ms, state, browser], |r| {
                        Ok(Session {
                            id: r.get(0)?,
                            integration: r.get(1)?,
                            user_id: r.get(2)?,
                            org_id: r.get(3)?,
                            end_user_id: r.get(4)?,
                            redirect_to: r.get(5)?,
                            verifier: r.get(6)?,
                            expires_ms: r.get(7)?,
                        })
                    })
                    .optional()?)
            })
            .await
        }
    }
}

/// Drops sessions that expired (used or not).
pub async fn sweep_sessions(db: &Db, now_ms: i64) -> Result<u64, DbError> {
    let sql = format!(
        "delete from {} where expires_ms < $1",
        table(db, "sessions")
    );
    execute(db, sql, vec![now_ms.into()]).await
}

pub async fn insert_connection(db: &Db, c: &ConnectionRow) -> Result<(), DbError> {
    let sql = format!(
        "insert into {} ({COLUMNS})
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        table(db, "connections")
    );
    execute(
        db,
        sql,
        vec![
            c.id.as_str().into(),
            c.integration.as_str().into(),
            c.provider.as_str().into(),
            c.user_id.clone().into(),
            c.org_id.clone().into(),
            c.end_user_id.clone().into(),
            c.status.as_str().into(),
            c.credentials.as_str().into(),
            c.expires_ms.into(),
            c.scopes.as_str().into(),
            c.config.as_str().into(),
            c.last_refresh_ms.into(),
            c.last_error.clone().into(),
            c.created_ms.into(),
            c.updated_ms.into(),
        ],
    )
    .await?;
    Ok(())
}

/// What a listing may be narrowed to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub integration: Option<String>,
    pub end_user_id: Option<String>,
}

pub async fn list(db: &Db, owner: &Owner, filter: &Filter) -> Result<Vec<ConnectionRow>, DbError> {
    let (mut condition, values) = owner.condition(1);
    let mut values: Vec<Value> = values.into_iter().map(Value::from).collect();
    for (column, v) in [
        ("integration", &filter.integration),
        ("end_user_id", &filter.end_user_id),
    ] {
        if let Some(v) = v {
            values.push(v.as_str().into());
            condition.push_str(&format!(" and {column} = ${}", values.len()));
        }
    }
    let sql = format!(
        "select {COLUMNS} from {} where {condition} order by created_ms, id",
        table(db, "connections")
    );
    connections(db, sql, values).await
}

/// A connection `owner` may reach.
pub async fn get(db: &Db, owner: &Owner, id: &str) -> Result<Option<ConnectionRow>, DbError> {
    let (condition, values) = owner.condition(2);
    let mut all: Vec<Value> = vec![id.into()];
    all.extend(values.into_iter().map(Value::from));
    let sql = format!(
        "select {COLUMNS} from {} where id = $1 and {condition}",
        table(db, "connections")
    );
    Ok(connections(db, sql, all).await?.into_iter().next())
}

/// Deletes a connection `owner` may reach; whether there was one.
pub async fn delete(db: &Db, owner: &Owner, id: &str) -> Result<bool, DbError> {
    let (condition, values) = owner.condition(2);
    let mut all: Vec<Value> = vec![id.into()];
    all.extend(values.into_iter().map(Value::from));
    let sql = format!(
        "delete from {} where id = $1 and {condition}",
        table(db, "connections")
    );
    Ok(execute(db, sql, all).await? == 1)
}

/// Active OAuth connections to refresh now: their token expires before `expiring_before`, or
/// they were last refreshed (or made) before `stale_before`.
pub async fn due(
    db: &Db,
    expiring_before: i64,
    stale_before: i64,
) -> Result<Vec<ConnectionRow>, DbError> {
    let sql = format!(
        "select {COLUMNS} from {} where status = 'active' and expires_ms is not null
           and (expires_ms < $1 or coalesce(last_refresh_ms, created_ms) < $2)
         order by expires_ms limit 500",
        table(db, "connections")
    );
    connections(db, sql, vec![expiring_before.into(), stale_before.into()]).await
}

/// Connections whose credentials were not sealed by the key `current_id`.
pub async fn sealed_by_other_keys(
    db: &Db,
    current_id: &str,
) -> Result<Vec<ConnectionRow>, DbError> {
    let sql = format!(
        "select {COLUMNS} from {} where credentials not like $1 order by id limit 1000",
        table(db, "connections")
    );
    connections(db, sql, vec![format!("x1:{current_id}:%").into()]).await
}

/// Per-connection locks of one process, for SQLite (one process owns the file).
#[derive(Debug, Default, Clone)]
pub struct LocalLocks(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl LocalLocks {
    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Drop locks nobody holds, so the map stays as small as the work in flight.
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(id.to_string()).or_default().clone()
    }
}

/// Runs `work` on connection `id` while holding its lock: on Postgres a transaction-scoped
/// advisory lock, so replicas take turns; on SQLite this process's lock. The row is read
/// after the lock is taken, so `work` sees what a previous holder wrote. `work` answers with
/// what to store (if anything) and what to return.
pub async fn with_lock<T, F, Fut>(
    db: &Db,
    locks: &LocalLocks,
    id: &str,
    work: F,
) -> Result<Option<T>, DbError>
where
    F: FnOnce(ConnectionRow) -> Fut,
    Fut: Future<Output = (Option<Write>, T)>,
{
    match db {
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "select pg_advisory_xact_lock(hashtextextended('reactor.connect:' || $1, 0))",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let sql = format!("select {COLUMNS} from reactor.connect_connections where id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row.as_ref().map(pg_connection).transpose()? else {
                return Ok(None);
            };
            let (write, out) = work(row).await;
            if let Some(w) = write {
                let (sql, values) = w.statement(db, id);
                bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), &values)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(Some(out))
        }
        Db::Sqlite(_) => {
            let lock = locks.lock_for(id);
            let _held = lock.lock().await;
            let sql = format!("select {COLUMNS} from _reactor_connect_connections where id = $1");
            let Some(row) = connections(db, sql, vec![id.into()])
                .await?
                .into_iter()
                .next()
            else {
                return Ok(None);
            };
            let (write, out) = work(row).await;
            if let Some(w) = write {
                let (sql, values) = w.statement(db, id);
                execute(db, sql, values).await?;
            }
            Ok(Some(out))
        }
    }
}

/// What a locked piece of work leaves on its connection.
#[derive(Debug, Clone)]
pub enum Write {
    Credentials {
        sealed: String,
        expires_ms: Option<i64>,
        now_ms: i64,
    },
    Failed {
        error: String,
        now_ms: i64,
    },
    /// The same credentials, sealed under the current vault key.
    Resealed {
        sealed: String,
    },
}

impl Write {
    fn statement(self, db: &Db, id: &str) -> (String, Vec<Value>) {
        let t = table(db, "connections");
        match self {
            Write::Credentials {
                sealed,
                expires_ms,
                now_ms,
            } => (
                format!(
                    "update {t} set credentials = $2, expires_ms = $3, last_refresh_ms = $4,
                       updated_ms = $4, status = 'active', last_error = null
                     where id = $1"
                ),
                vec![id.into(), sealed.into(), expires_ms.into(), now_ms.into()],
            ),
            Write::Failed { error, now_ms } => (
                format!(
                    "update {t} set status = 'failed', last_error = $2, updated_ms = $3 where id = $1"
                ),
                vec![id.into(), error.into(), now_ms.into()],
            ),
            Write::Resealed { sealed } => (
                format!("update {t} set credentials = $2 where id = $1"),
                vec![id.into(), sealed.into()],
            ),
        }
    }
}
