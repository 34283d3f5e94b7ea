//! O1: SQLite through rusqlite.
//!
//! A small pool of connections in WAL mode (readers never wait for the writer) with a busy
//! timeout (writers queue instead of failing). Every call runs on tokio's blocking pool so
//! the async runtime never waits on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use reactor_core::Principal;
use reactor_core::keys::NewKey;
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Semaphore;

use crate::{ApiKeyRecord, DbError, Migration, ProjectRecord, tier_from_db};

const POOL_SIZE: usize = 4;

#[derive(Debug, Clone)]
pub struct SqlitePool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Pooled>>,
    permits: Semaphore,
    /// The writer thread's queue (see [`SqlitePool::write_with_principal`]); started on the
    /// first write.
    writer: std::sync::OnceLock<std::sync::mpsc::Sender<WriteJob>>,
}

/// What a queued write decided: keep its changes or roll them back, and the answer.
#[derive(Debug)]
pub enum WriteOutcome<T> {
    Keep(T),
    Undo(T),
}

/// The common case: a write that succeeded is kept, one that failed is undone.
impl<T, E> From<Result<T, E>> for WriteOutcome<Result<T, E>> {
    fn from(result: Result<T, E>) -> Self {
        match result {
            Ok(v) => WriteOutcome::Keep(Ok(v)),
            Err(e) => WriteOutcome::Undo(Err(e)),
        }
    }
}

/// Delivers a write's answer once the batch it ran in committed (or failed to).
type Deliver = Box<dyn FnOnce(Option<DbError>) + Send>;
type WriteJob = Box<dyn FnOnce(&mut Connection, &Mutex<RequestVars>) -> (bool, Deliver) + Send>;

/// Writes queued at once run in one transaction, each in its own savepoint.
const MAX_BATCH: usize = 64;

/// A connection and the request variables its `reactor_*()` SQL functions read.
#[derive(Debug)]
struct Pooled {
    conn: Connection,
    vars: Arc<Mutex<RequestVars>>,
    /// The read transaction this connection keeps open between inline reads, if any.
    snapshot: Option<Snapshot>,
}

/// A read transaction kept open across inline reads.
///
/// Beginning and ending a read transaction in WAL mode takes a lock on the shared-memory
/// index (a mutex the whole process shares, and `fcntl` calls): most of SQLite's cost in a
/// point read, and the one place the two runtime workers collide. A reader keeps its
/// snapshot while nothing has committed since ([`COMMITS`], bumped by every write path of
/// this process before its answer leaves) and for at most [`SNAPSHOT_FOR`], the bound on how
/// late a commit by another process (the `sqlite3` shell) is seen.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    commits: u64,
    taken: Instant,
}

/// Commits made through any pool of this process (see [`Snapshot`]). Global rather than per
/// pool: two pools on one file must see each other's writes.
static COMMITS: AtomicU64 = AtomicU64::new(0);

/// How long a reader may keep one snapshot (see [`Snapshot`]).
const SNAPSHOT_FOR: Duration = Duration::from_millis(1);

/// Says that this process committed (or may have): every reader takes a new snapshot on its
/// next read.
fn note_commit() {
    COMMITS.fetch_add(1, Ordering::Release);
}

/// What `reactor_user_id()`, `reactor_org_id()` and `reactor_role()` answer on a connection:
/// the caller of the request running on it, or NULL outside one.
#[derive(Debug, Default, Clone)]
struct RequestVars {
    user_id: Option<String>,
    org_id: Option<String>,
    role: Option<String>,
}

impl SqlitePool {
    pub async fn open(path: PathBuf) -> Result<SqlitePool, DbError> {
        let opened = path.clone();
        let conns = tokio::task::spawn_blocking(move || {
            if let Some(parent) = opened.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| DbError::OpenSqlite {
                    path: opened.clone(),
                    source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
                })?;
            }
            (0..POOL_SIZE)
                .map(|_| open_connection(&opened))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))??;
        Ok(SqlitePool {
            inner: Arc::new(Inner {
                path,
                idle: Mutex::new(conns),
                permits: Semaphore::new(POOL_SIZE),
                writer: std::sync::OnceLock::new(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` with a pooled connection on the blocking pool.
    pub async fn with<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        self.run(None, f).await
    }

    /// Runs `f` as the request's caller: on this connection, and for the duration of `f` only,
    /// `reactor_user_id()`, `reactor_org_id()` and `reactor_role()` answer with the principal's
    /// user, org and role — the O1 stand-in for Postgres's `reactor.*()` helpers.
    pub async fn with_principal<T, F>(&self, principal: &Principal, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        self.run(Some(RequestVars::of(principal)), f).await
    }

    /// Like [`SqlitePool::with_principal`] for a short read, run on the calling thread: a
    /// point read takes microseconds, while handing it to the blocking pool and back costs
    /// more than the read (two thread wake-ups). In WAL mode readers never wait for the writer,
    /// so this does not block on a lock; writes, which may, use `with_principal`.
    pub async fn read_with_principal<T, F>(&self, principal: &Principal, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut Connection) -> Result<T, DbError>,
    {
        let (_permit, mut pooled) = self.checkout().await?;
        pooled.fresh_snapshot()?;
        set_vars(&pooled.vars, RequestVars::of(principal));
        let result = f(&mut pooled.conn);
        set_vars(&pooled.vars, RequestVars::default());
        pooled.after_read();
        self.inner.give_back(pooled);
        result
    }

    /// Runs a short write as `principal` on the pool's writer thread, in a savepoint of a
    /// transaction that may hold other queued writes; answers after that transaction
    /// committed. One thread that stays busy while writes queue up costs far less than a
    /// hand-off to the blocking pool per write, and one commit serves a whole batch. `Undo`
    /// rolls back this write alone.
    pub async fn write_with_principal<T, F>(
        &self,
        principal: &Principal,
        f: F,
    ) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> WriteOutcome<T> + Send + 'static,
    {
        self.queue_write(RequestVars::of(principal), f).await
    }

    /// A short write of the platform's own (no caller), on the writer thread like
    /// [`SqlitePool::write_with_principal`]: kept when `f` succeeds, rolled back when it fails.
    /// Writes from many tasks never wait on SQLite's file lock, whose busy handler sleeps in
    /// steps of milliseconds.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        self.queue_write(RequestVars::default(), move |conn| f(conn).into())
            .await?
    }

    async fn queue_write<T, F>(&self, vars: RequestVars, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> WriteOutcome<T> + Send + 'static,
    {
        let sender = match self.inner.writer.get() {
            Some(s) => s.clone(),
            None => {
                let s = start_writer(&self.inner.path, Arc::downgrade(&self.inner))?;
                // Another task may have won the race; its thread serves both.
                self.inner.writer.get_or_init(|| s).clone()
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, DbError>>();
        let job: WriteJob = Box::new(move |conn, cell| {
            set_vars(cell, vars);
            let outcome = f(conn);
            set_vars(cell, RequestVars::default());
            let (keep, value) = match outcome {
                WriteOutcome::Keep(v) => (true, v),
                WriteOutcome::Undo(v) => (false, v),
            };
            let deliver: Deliver = Box::new(move |failed| {
                let _ = tx.send(match failed {
                    None => Ok(value),
                    Some(e) => Err(e),
                });
            });
            (keep, deliver)
        });
        sender
            .send(job)
            .map_err(|_| DbError::Task("the SQLite writer thread stopped".into()))?;
        rx.await.map_err(|_| {
            DbError::Task("a queued write was lost (the writer thread failed)".into())
        })?
    }

    /// A connection, and the permit that counts it until the work is done.
    async fn checkout(&self) -> Result<(tokio::sync::SemaphorePermit<'_>, Pooled), DbError> {
        let permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|e| DbError::Task(e.to_string()))?;
        Ok((permit, self.inner.take()?))
    }

    async fn run<T, F>(&self, vars: Option<RequestVars>, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (_permit, mut pooled) = self.checkout().await?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // `f` may open a transaction of its own, and may write or migrate: it starts
            // outside any snapshot and, whatever it did, readers take a new one after it.
            pooled.end_snapshot();
            set_vars(&pooled.vars, vars.unwrap_or_default());
            let result = f(&mut pooled.conn);
            set_vars(&pooled.vars, RequestVars::default());
            note_commit();
            inner.give_back(pooled);
            result
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }
}

/// The writer thread: waits for a write, takes every write queued behind it (up to
/// `MAX_BATCH`), runs them in one immediate transaction, each in a savepoint, commits, then
/// answers them all. It ends when the pool is dropped.
///
/// The writer never checkpoints the WAL itself: a checkpoint fsyncs the database, which can
/// take milliseconds, and every queued write would wait behind it. It asks the checkpointer
/// thread instead, at most every [`CHECKPOINT_EVERY`]; a passive checkpoint there runs beside
/// the writer.
fn start_writer(
    path: &Path,
    pool: Weak<Inner>,
) -> Result<std::sync::mpsc::Sender<WriteJob>, DbError> {
    let mut pooled = open_connection(path)?;
    pooled.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let checkpoint = start_checkpointer(path, pool)?;
    let (sender, receiver) = std::sync::mpsc::channel::<WriteJob>();
    std::thread::Builder::new()
        .name("reactor-sqlite-writer".into())
        .spawn(move || {
            let mut asked = std::time::Instant::now();
            while let Ok(first) = receiver.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                run_batch(&mut pooled, batch);
                if asked.elapsed() >= CHECKPOINT_EVERY {
                    // Full means one is already asked for.
                    let _ = checkpoint.try_send(());
                    asked = std::time::Instant::now();
                }
            }
        })
        .map_err(|e| DbError::Task(format!("cannot start the SQLite writer thread: {e}")))?;
    Ok(sender)
}

/// How often the writer asks for a checkpoint while it writes.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The thread that checkpoints what the writer wrote, on its own connection, when asked.
/// It ends when the writer does (its sender is dropped). A checkpoint cannot copy past the
/// oldest snapshot a reader holds, so it first ends those of the idle connections.
fn start_checkpointer(
    path: &Path,
    pool: Weak<Inner>,
) -> Result<std::sync::mpsc::SyncSender<()>, DbError> {
    let pooled = open_connection(path)?;
    let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("reactor-sqlite-checkpoint".into())
        .spawn(move || {
            while asked.recv().is_ok() {
                if let Some(pool) = pool.upgrade() {
                    pool.end_idle_snapshots();
                }
                if let Err(e) = pooled
                    .conn
                    .query_row("pragma wal_checkpoint(passive)", [], |_| Ok(()))
                {
                    tracing::warn!(error = %e, "SQLite checkpoint");
                }
            }
        })
        .map_err(|e| DbError::Task(format!("cannot start the SQLite checkpoint thread: {e}")))?;
    Ok(ask)
}

fn run_batch(pooled: &mut Pooled, batch: Vec<WriteJob>) {
    let conn = &mut pooled.conn;
    if let Err(e) = conn.execute_batch("begin immediate") {
        let message = e.to_string();
        for job in batch {
            // Nothing ran: answer each with the failure, without running it.
            drop(job);
            tracing::error!(error = %message, "a write batch could not begin");
        }
        return;
    }
    let mut delivers = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(e) = conn.execute_batch("savepoint w") {
            tracing::error!(error = %e, "savepoint failed");
            continue;
        }
        let vars = &pooled.vars;
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn, vars)));
        let keep = match &ran {
            Ok((keep, _)) => *keep,
            Err(_) => false,
        };
        let end = if keep {
            "release w"
        } else {
            "rollback to w; release w"
        };
        if let Err(e) = conn.execute_batch(end) {
            tracing::error!(error = %e, "closing a savepoint failed");
        }
        if let Ok((_, deliver)) = ran {
            delivers.push(deliver);
        }
    }
    let committed = conn.execute_batch("commit");
    if committed.is_err() {
        let _ = conn.execute_batch("rollback");
    }
    // Before any answer: a caller that reads after its write must see it.
    note_commit();
    for deliver in delivers {
        deliver(
            committed
                .as_ref()
                .err()
                .map(|e| DbError::Task(format!("commit failed: {e}"))),
        );
    }
}

impl RequestVars {
    fn of(principal: &Principal) -> RequestVars {
        RequestVars {
            user_id: principal.user_id.clone(),
            org_id: principal.org_id.clone(),
            role: principal.role.clone(),
        }
    }
}

impl Inner {
    /// An idle connection, or a new one (one is lost only when a closure panicked).
    fn take(&self) -> Result<Pooled, DbError> {
        let taken = self
            .idle
            .lock()
            .map_err(|e| DbError::Task(e.to_string()))?
            .pop();
        match taken {
            Some(pooled) => Ok(pooled),
            None => open_connection(&self.path),
        }
    }

    fn give_back(&self, pooled: Pooled) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(pooled);
        }
    }

    fn end_idle_snapshots(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            for pooled in idle.iter_mut() {
                pooled.end_snapshot();
            }
        }
    }
}

impl Pooled {
    /// Makes sure an inline read runs in a read transaction no older than the last commit of
    /// this process and [`SNAPSHOT_FOR`] (see [`Snapshot`]).
    fn fresh_snapshot(&mut self) -> Result<(), DbError> {
        let commits = COMMITS.load(Ordering::Acquire);
        if let Some(snapshot) = self.snapshot {
            if snapshot.commits == commits && snapshot.taken.elapsed() < SNAPSHOT_FOR {
                return Ok(());
            }
            self.end_snapshot();
        }
        // Deferred: the snapshot is taken by the read itself, after `commits` was read, so it
        // holds at least those commits.
        self.conn.prepare_cached("begin")?.execute([])?;
        self.snapshot = Some(Snapshot {
            commits,
            taken: Instant::now(),
        });
        Ok(())
    }

    /// Keeps the transaction open only if the read left it reading: a statement that wrote
    /// (an rpc whose function does) is committed now, as it would have been alone.
    fn after_read(&mut self) {
        use rusqlite::TransactionState;
        match self.conn.transaction_state(None::<&str>) {
            Ok(TransactionState::Read | TransactionState::None) if !self.conn.is_autocommit() => {}
            Ok(TransactionState::Write) => {
                self.end_snapshot();
                note_commit();
            }
            _ => self.end_snapshot(),
        }
    }

    /// Ends the kept read transaction, if one is open.
    fn end_snapshot(&mut self) {
        self.snapshot = None;
        if !self.conn.is_autocommit() {
            let ended = self
                .conn
                .prepare_cached("commit")
                .and_then(|mut s| s.execute([]));
            if ended.is_err() {
                let _ = self.conn.execute_batch("rollback");
            }
        }
    }
}

type VarGetter = fn(&RequestVars) -> Option<String>;

fn set_vars(vars: &Mutex<RequestVars>, value: RequestVars) {
    *vars
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
}

fn open_connection(path: &Path) -> Result<Pooled, DbError> {
    let vars = Arc::new(Mutex::new(RequestVars::default()));
    let open = || -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let getters: [(&str, VarGetter); 3] = [
            ("reactor_user_id", |v| v.user_id.clone()),
            ("reactor_org_id", |v| v.org_id.clone()),
            ("reactor_role", |v| v.role.clone()),
        ];
        crate::sqlite_functions::register(&conn)?;
        for (name, get) in getters {
            let vars = Arc::clone(&vars);
            // Not deterministic: the answer changes between requests on one connection.
            conn.create_scalar_function(name, 0, FunctionFlags::SQLITE_UTF8, move |_| {
                Ok(get(&vars
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)))
            })?;
        }
        Ok(conn)
    };
    let conn = open().map_err(|source| DbError::OpenSqlite {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Pooled {
        conn,
        vars,
        snapshot: None,
    })
}

pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "project and api keys",
    sql: "
        create table _reactor_project (
            singleton integer primary key check (singleton = 1),
            project_id text not null,
            name text not null,
            created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        );
        create table _reactor_api_keys (
            id text primary key,
            name text not null,
            tier text not null check (tier in ('pub', 'svc')),
            prefix text not null,
            hash text not null unique,
            created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            last_used_at text,
            revoked_at text
        );
    ",
}];

pub(crate) async fn migrate(
    pool: &SqlitePool,
    component: &'static str,
    migrations: &'static [Migration],
) -> Result<(), DbError> {
    pool.with(move |conn| {
        // IMMEDIATE takes the write lock first, so two processes starting on one file
        // cannot both apply the same version.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "create table if not exists _reactor_schema_migrations (
                component text not null,
                version integer not null,
                name text not null,
                applied_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                primary key (component, version)
            )",
        )?;
        let current: i64 = tx.query_row(
            "select coalesce(max(version), 0) from _reactor_schema_migrations where component = ?1",
            [component],
            |r| r.get(0),
        )?;
        let known = migrations.last().map_or(0, |m| m.version);
        if current > known {
            return Err(DbError::SchemaTooNew { component, found: current, known });
        }
        for m in migrations.iter().filter(|m| m.version > current) {
            tx.execute_batch(m.sql).map_err(|e| DbError::Migration {
                component,
                version: m.version,
                name: m.name,
                message: e.to_string(),
            })?;
            tx.execute(
                "insert into _reactor_schema_migrations (component, version, name) values (?1, ?2, ?3)",
                params![component, m.version, m.name],
            )?;
        }
        tx.commit()?;
        Ok(())
    })
    .await
}

pub(crate) async fn ping(pool: &SqlitePool) -> Result<(), DbError> {
    pool.with(|conn| {
        Ok(conn
            .query_row("select 1", [], |r| r.get::<_, i64>(0))
            .map(|_| ())?)
    })
    .await
}

pub(crate) async fn project(pool: &SqlitePool) -> Result<Option<ProjectRecord>, DbError> {
    pool.with(|conn| {
        Ok(conn
            .query_row("select project_id, name from _reactor_project", [], |r| {
                Ok(ProjectRecord {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            })
            .optional()?)
    })
    .await
}

pub(crate) async fn set_project(
    pool: &SqlitePool,
    project_id: &str,
    name: &str,
) -> Result<(), DbError> {
    let (project_id, name) = (project_id.to_string(), name.to_string());
    pool.with(move |conn| {
        conn.execute(
            "insert into _reactor_project (singleton, project_id, name) values (1, ?1, ?2)
             on conflict (singleton) do update set project_id = excluded.project_id, name = excluded.name",
            params![project_id, name],
        )?;
        Ok(())
    })
    .await
}

pub(crate) async fn insert_api_key(
    pool: &SqlitePool,
    key: &NewKey,
    name: &str,
) -> Result<(), DbError> {
    let (id, tier, prefix, hash, name) = (
        key.id.clone(),
        key.tier.name(),
        key.prefix.clone(),
        key.hash.clone(),
        name.to_string(),
    );
    pool.with(move |conn| {
        conn.execute(
            "insert into _reactor_api_keys (id, name, tier, prefix, hash) values (?1, ?2, ?3, ?4, ?5)",
            params![id, name, tier, prefix, hash],
        )?;
        Ok(())
    })
    .await
}

const KEY_COLUMNS: &str =
    "id, name, tier, prefix, created_at, last_used_at, revoked_at is not null";

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        tier: tier_from_db(&r.get::<_, String>(2)?),
        prefix: r.get(3)?,
        created_at: r.get(4)?,
        last_used_at: r.get(5)?,
        revoked: r.get(6)?,
    })
}

pub(crate) async fn find_api_key(
    pool: &SqlitePool,
    hash: &str,
) -> Result<Option<ApiKeyRecord>, DbError> {
    let hash = hash.to_string();
    pool.with(move |conn| {
        let sql = format!("select {KEY_COLUMNS} from _reactor_api_keys where hash = ?1");
        Ok(conn
            .prepare_cached(&sql)?
            .query_row([hash], key_row)
            .optional()?)
    })
    .await
}

pub(crate) async fn list_api_keys(pool: &SqlitePool) -> Result<Vec<ApiKeyRecord>, DbError> {
    pool.with(|conn| {
        let sql = format!("select {KEY_COLUMNS} from _reactor_api_keys order by created_at, id");
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt
            .query_map([], key_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
    .await
}

pub(crate) async fn revoke_api_key(pool: &SqlitePool, id: &str) -> Result<bool, DbError> {
    let id = id.to_string();
    pool.with(move |conn| {
        let n = conn.execute(
            "update _reactor_api_keys set revoked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             where id = ?1 and revoked_at is null",
            [id],
        )?;
        Ok(n == 1)
    })
    .await
}

pub(crate) async fn touch_api_key(pool: &SqlitePool, id: &str) -> Result<(), DbError> {
    let id = id.to_string();
    pool.with(move |conn| {
        conn.prepare_cached(
            "update _reactor_api_keys set last_used_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             where id = ?1 and (last_used_at is null
                 or last_used_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-60 seconds'))",
        )?
        .execute([id])?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod writer_tests {
    use super::*;
    use reactor_core::KeyTier;

    /// Concurrent writes share transactions on the writer thread, yet each keeps or undoes
    /// only its own changes, and its answer comes after its batch committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_keep_or_undo_their_own_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = SqlitePool::open(dir.path().join("w.db"))
            .await
            .expect("open");
        pool.with(|c| Ok(c.execute_batch("create table t (n integer primary key, who text)")?))
            .await
            .expect("table");
        let mut principal = Principal::from_key("k", KeyTier::Public);
        principal.user_id = Some("u-1".into());
        let mut tasks = Vec::new();
        for n in 0..200_i64 {
            let pool = pool.clone();
            let principal = principal.clone();
            tasks.push(tokio::spawn(async move {
                pool.write_with_principal(&principal, move |c| {
                    let inserted =
                        c.execute("insert into t (n, who) values (?1, reactor_user_id())", [n]);
                    match inserted {
                        Ok(_) if n % 3 == 0 => WriteOutcome::Undo(false),
                        Ok(_) => WriteOutcome::Keep(true),
                        Err(_) => WriteOutcome::Undo(false),
                    }
                })
                .await
            }));
        }
        let mut kept = 0;
        for task in tasks {
            if task.await.expect("join").expect("write") {
                kept += 1;
            }
        }
        let (count, undone, who): (i64, i64, String) = pool
            .with(|c| {
                Ok(c.query_row(
                    "select count(*), (select count(*) from t where n % 3 = 0), min(who) from t",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?)
            })
            .await
            .expect("count");
        assert_eq!((count, undone, kept), (133, 0, 133));
        assert_eq!(who, "u-1", "each write ran as its caller");
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;
    use reactor_core::KeyTier;

    async fn pool_with_table(dir: &tempfile::TempDir) -> SqlitePool {
        let pool = SqlitePool::open(dir.path().join("s.db"))
            .await
            .expect("open");
        pool.with(|c| Ok(c.execute_batch("create table t (n integer primary key)")?))
            .await
            .expect("table");
        pool
    }

    async fn count(pool: &SqlitePool) -> i64 {
        let anon = Principal::from_key("k", KeyTier::Public);
        pool.read_with_principal(&anon, |c| {
            Ok(c.query_row("select count(*) from t", [], |r| r.get(0))?)
        })
        .await
        .expect("read")
    }

    /// Another process's connection on the same file, with a short busy timeout.
    fn outsider(dir: &tempfile::TempDir) -> Connection {
        let conn = Connection::open(dir.path().join("s.db")).expect("outsider");
        conn.busy_timeout(Duration::from_millis(50))
            .expect("timeout");
        conn
    }

    /// A reader keeps its snapshot between reads, yet sees every write of this process the
    /// moment that write has answered, whichever path wrote it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inline_reads_see_each_commit_of_this_process_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = pool_with_table(&dir).await;
        let anon = Principal::from_key("k", KeyTier::Public);
        for n in 0..100_i64 {
            assert_eq!(count(&pool).await, n);
            if n % 2 == 0 {
                pool.write_with_principal(&anon, move |c| {
                    c.execute("insert into t values (?1)", [n])
                        .map(|_| ())
                        .into()
                })
                .await
                .expect("queued write")
                .expect("insert");
            } else {
                pool.with(move |c| Ok(c.execute("insert into t values (?1)", [n])?))
                    .await
                    .expect("pooled write");
            }
        }
        assert_eq!(count(&pool).await, 100);
    }

    /// A commit this process did not make (the `sqlite3` shell) is seen once the snapshot's
    /// bound has passed.
    #[tokio::test]
    async fn a_commit_by_another_process_is_seen_within_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = pool_with_table(&dir).await;
        assert_eq!(count(&pool).await, 0);
        outsider(&dir)
            .execute("insert into t values (1)", [])
            .expect("outside insert");
        tokio::time::sleep(SNAPSHOT_FOR * 5).await;
        assert_eq!(count(&pool).await, 1);
    }

    /// A connection holding a snapshot still serves `with`, which may begin its own
    /// transaction, and whose writes the next read sees.
    #[tokio::test]
    async fn a_kept_snapshot_is_ended_before_other_work_on_its_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = pool_with_table(&dir).await;
        assert_eq!(count(&pool).await, 0);
        pool.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("insert into t values (1)", [])?;
            tx.commit()?;
            Ok(())
        })
        .await
        .expect("an immediate transaction on the same connection");
        assert_eq!(count(&pool).await, 1);
    }

    /// An inline read whose statement wrote is committed at once, as alone it would have
    /// been: the write is not left holding the database's write lock.
    #[tokio::test]
    async fn an_inline_read_that_wrote_does_not_keep_the_write_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = pool_with_table(&dir).await;
        let anon = Principal::from_key("k", KeyTier::Public);
        pool.read_with_principal(&anon, |c| Ok(c.execute("insert into t values (1)", [])?))
            .await
            .expect("a read that writes");
        outsider(&dir)
            .execute("insert into t values (2)", [])
            .expect("the write lock is free");
        tokio::time::sleep(SNAPSHOT_FOR * 5).await;
        assert_eq!(count(&pool).await, 2);
    }

    /// Idle readers' snapshots would keep a checkpoint from finishing; the checkpointer ends
    /// them first.
    #[tokio::test]
    async fn idle_snapshots_end_before_a_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = pool_with_table(&dir).await;
        pool.with(|c| Ok(c.execute("insert into t values (1)", [])?))
            .await
            .expect("insert");
        assert_eq!(count(&pool).await, 1);
        let truncate = |conn: &Connection| -> i64 {
            conn.query_row("pragma wal_checkpoint(truncate)", [], |r| r.get(0))
                .expect("checkpoint")
        };
        let outsider = outsider(&dir);
        assert_eq!(truncate(&outsider), 1, "busy: a reader holds the WAL");
        pool.inner.end_idle_snapshots();
        assert_eq!(truncate(&outsider), 0, "done once the idle snapshots ended");
    }
}
