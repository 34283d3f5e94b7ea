//! Migrations: `*.sql` files in `[data].migrations_dir`.
//!
//! Rules: files are applied in name order and each only once; every applied file is recorded
//! with its SHA-256, and a recorded file whose contents changed is an error naming it (never a
//! silent skip); all pending files are applied in one transaction, so a failure leaves the
//! database exactly as it was, and the error names the file, line and column and carries the
//! database's message and SQLSTATE.

use std::path::{Path, PathBuf};

use reactor_db::{Db, DbError, Migration};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Connection, Row};

/// One migration file as read from disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrationFile {
    pub name: String,
    pub sql: String,
    /// Hex SHA-256 of the file's bytes; recomputed on arrival, never trusted from a client.
    #[serde(skip_deserializing, default)]
    pub checksum: String,
}

impl MigrationFile {
    pub fn new(name: impl Into<String>, sql: impl Into<String>) -> MigrationFile {
        let sql = sql.into();
        MigrationFile {
            name: name.into(),
            checksum: hex::encode(Sha256::digest(sql.as_bytes())),
            sql,
        }
    }
}

/// Where a migration stands against a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Applied,
    Pending,
    /// Applied, but the file changed since.
    Modified,
    /// Applied, but the file is gone.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationState {
    pub name: String,
    pub status: Status,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot read migrations from {}: {source}", dir.display())]
    Read {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("migration {name} is not valid UTF-8")]
    NotUtf8 { name: String },
    #[error("migration {name} was changed after it was applied (its checksum differs)")]
    Modified { name: String },
    #[error("{file}:{line}:{column}: {message} (SQLSTATE {code}); nothing was applied")]
    Failed {
        file: String,
        line: usize,
        column: usize,
        message: String,
        code: String,
    },
    #[error("{file}:{line}:{column}: {message}; nothing was applied")]
    Untranslatable {
        file: String,
        line: usize,
        column: usize,
        message: String,
        hint: String,
    },
    #[error("reset is for a development database (SQLite, O1) only")]
    ResetRefused,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for MigrationError {
    fn from(e: sqlx::Error) -> Self {
        MigrationError::Db(DbError::Postgres(e))
    }
}

impl MigrationError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            MigrationError::Modified { .. } => Some(
                "never edit an applied migration: restore it and add a new file with the change (`reactor data new <name>`)",
            ),
            MigrationError::Failed { .. } => {
                Some("fix the statement at that line, then run the migrations again")
            }
            MigrationError::NotUtf8 { .. } => Some("save the file as UTF-8"),
            _ => None,
        }
    }

    /// The hint for this error, owned (an untranslatable statement carries its own).
    pub fn hint_text(&self) -> Option<String> {
        match self {
            MigrationError::Untranslatable { hint, .. } => Some(hint.clone()),
            other => other.hint().map(str::to_string),
        }
    }
}

/// The `*.sql` files of `dir`, in name order. A missing directory has no migrations.
pub fn read_dir(dir: &Path) -> Result<Vec<MigrationFile>, MigrationError> {
    let read = |source| MigrationError::Read {
        dir: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(read)?.path();
        if !path.is_file() || path.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let bytes = std::fs::read(&path).map_err(read)?;
        let sql =
            String::from_utf8(bytes).map_err(|_| MigrationError::NotUtf8 { name: name.clone() })?;
        files.push(MigrationFile::new(name, sql));
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

const POSTGRES_TABLES: &[Migration] = &[Migration {
    version: 1,
    name: "user migrations",
    sql: "create table reactor.user_migrations (
              name text primary key,
              checksum text not null,
              applied_at timestamptz not null default now()
          );",
}];

const SQLITE_TABLES: &[Migration] = &[
    Migration {
        version: 1,
        name: "user migrations",
        sql: "create table _reactor_user_migrations (
              name text primary key,
              checksum text not null,
              applied_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
          );",
    },
    Migration {
        version: 2,
        name: "row-level security and functions recorded from translated migrations",
        // `if not exists`: Storage records the default policies of `storage.objects` in
        // the same tables and may be first to create them.
        sql: "create table if not exists _reactor_rls (table_name text primary key);
          create table if not exists _reactor_policies (
              table_name text not null,
              name text not null,
              record text not null,
              primary key (table_name, name)
          );
          create table _reactor_functions (
              name text primary key,
              record text not null
          );",
    },
];

/// Creates this crate's bookkeeping table.
pub async fn prepare(db: &Db) -> Result<(), MigrationError> {
    Ok(db
        .apply_migrations("data", SQLITE_TABLES, POSTGRES_TABLES)
        .await?)
}

fn compare(files: &[MigrationFile], applied: &[(String, String)]) -> Vec<MigrationState> {
    let mut states: Vec<MigrationState> = files
        .iter()
        .map(|f| MigrationState {
            name: f.name.clone(),
            status: match applied.iter().find(|(name, _)| name == &f.name) {
                None => Status::Pending,
                Some((_, sum)) if sum == &f.checksum => Status::Applied,
                Some(_) => Status::Modified,
            },
        })
        .collect();
    for (name, _) in applied {
        if !files.iter().any(|f| &f.name == name) {
            states.push(MigrationState {
                name: name.clone(),
                status: Status::Missing,
            });
        }
    }
    states.sort_by(|a, b| a.name.cmp(&b.name));
    states
}

/// The files to apply, in order; an applied file that changed stops everything.
fn pending<'f>(
    files: &'f [MigrationFile],
    applied: &[(String, String)],
) -> Result<Vec<&'f MigrationFile>, MigrationError> {
    let states = compare(files, applied);
    if let Some(changed) = states.iter().find(|s| s.status == Status::Modified) {
        return Err(MigrationError::Modified {
            name: changed.name.clone(),
        });
    }
    Ok(files
        .iter()
        .filter(|f| {
            states
                .iter()
                .any(|s| s.name == f.name && s.status == Status::Pending)
        })
        .collect())
}

/// Applied, pending, modified and missing migrations.
pub async fn status(
    db: &Db,
    files: &[MigrationFile],
) -> Result<Vec<MigrationState>, MigrationError> {
    prepare(db).await?;
    let applied: Vec<(String, String)> = match db {
        Db::Postgres(pool) => {
            sqlx::query_as("select name, checksum from reactor.user_migrations")
                .fetch_all(pool)
                .await?
        }
        Db::Sqlite(pool) => pool.with(|conn| sqlite_applied(conn)).await?,
    };
    Ok(compare(files, &applied))
}

/// Applies the pending migrations, all in one transaction; returns their names.
pub async fn migrate(db: &Db, files: &[MigrationFile]) -> Result<Vec<String>, MigrationError> {
    migrate_with(db, files, &MigrateOptions::default()).await
}

/// A statement of the caller's that runs in the migrations' transaction, after them: what
/// must happen if and only if they apply (a deploy switches its release there). Parameters
/// are bound as text (cast them in the SQL). An empty statement is skipped on its database.
#[derive(Debug, Clone)]
pub struct Epilogue {
    pub postgres: String,
    pub sqlite: String,
    pub params: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct MigrateOptions {
    pub epilogue: Vec<Epilogue>,
    /// Apply them and roll back: proves they apply, changes nothing (the epilogue is skipped).
    pub dry_run: bool,
}

/// [`migrate`], with statements of the caller's in the same transaction, or as a dry run.
pub async fn migrate_with(
    db: &Db,
    files: &[MigrationFile],
    options: &MigrateOptions,
) -> Result<Vec<String>, MigrationError> {
    prepare(db).await?;
    let pool = match db {
        Db::Postgres(pool) => pool,
        Db::Sqlite(pool) => {
            let files = files.to_vec();
            let options = options.clone();
            return pool
                .with(move |conn| Ok(migrate_sqlite(conn, &files, &options)))
                .await?;
        }
    };
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    // One migrator at a time across replicas.
    sqlx::query("select pg_advisory_xact_lock(hashtext('reactor.user_migrations'))")
        .execute(&mut *tx)
        .await?;
    let applied: Vec<(String, String)> =
        sqlx::query("select name, checksum from reactor.user_migrations")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("checksum")?)))
            .collect::<Result<_, sqlx::Error>>()?;
    let mut done = Vec::new();
    for file in pending(files, &applied)? {
        // The project's own SQL, run as written: that is what a migration is.
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(file.sql.clone()))
            .execute(&mut *tx)
            .await
        {
            return Err(located(file, e));
        }
        sqlx::query("insert into reactor.user_migrations (name, checksum) values ($1, $2)")
            .bind(&file.name)
            .bind(&file.checksum)
            .execute(&mut *tx)
            .await?;
        done.push(file.name.clone());
    }
    if options.dry_run {
        tx.rollback().await?;
        return Ok(done);
    }
    for statement in options.epilogue.iter().filter(|s| !s.postgres.is_empty()) {
        let mut query = sqlx::query(AssertSqlSafe(statement.postgres.clone()));
        for p in &statement.params {
            query = query.bind(p);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(done)
}

fn sqlite_applied(conn: &rusqlite::Connection) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt = conn.prepare("select name, checksum from _reactor_user_migrations")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// O1 only: drops every table, view and index the project's migrations made and forgets
/// them, in one transaction, so the migrations can run again from an empty schema. Postgres
/// is refused: a server's data is never one command away from deletion.
pub async fn reset(db: &Db) -> Result<(), MigrationError> {
    prepare(db).await?;
    let Db::Sqlite(pool) = db else {
        return Err(MigrationError::ResetRefused);
    };
    pool.with(|conn| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Parents and children go in any order; keys are checked at commit, when none remain.
        tx.execute_batch("pragma defer_foreign_keys = on")?;
        let objects: Vec<(String, String)> = {
            let mut stmt = tx.prepare(
                "select type, name from sqlite_schema
                 where type in ('view', 'table') and name not like 'sqlite\\_%' escape '\\'
                   and name not like '\\_reactor\\_%' escape '\\'
                 order by type = 'table'",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        for (kind, name) in objects {
            tx.execute_batch(&format!(
                "drop {kind} if exists \"{}\"",
                name.replace('"', "\"\"")
            ))?;
        }
        tx.execute_batch(
            "delete from _reactor_user_migrations;
             delete from _reactor_policies
                 where table_name <> 'storage.objects' or name not like 'reactor: %';
             delete from _reactor_rls where table_name <> 'storage.objects';
             delete from _reactor_functions;",
        )?;
        tx.commit()?;
        Ok(())
    })
    .await?;
    Ok(())
}

fn record<T: serde::Serialize>(value: &T) -> Result<String, MigrationError> {
    serde_json::to_string(value).map_err(|e| MigrationError::Db(DbError::Task(e.to_string())))
}

/// O1: every pending file translated to SQLite (or refused), then applied with its recorded
/// policies and functions in one immediate transaction.
fn migrate_sqlite(
    conn: &mut rusqlite::Connection,
    files: &[MigrationFile],
    options: &MigrateOptions,
) -> Result<Vec<String>, MigrationError> {
    use crate::translate::{Step, translate};
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(DbError::from)?;
    let mut done = Vec::new();
    for file in pending(files, &sqlite_applied(&tx)?)? {
        let steps = translate(&file.sql).map_err(|e| MigrationError::Untranslatable {
            file: file.name.clone(),
            line: e.line,
            column: e.column,
            message: e.message,
            hint: e.hint,
        })?;
        for located in steps {
            let failed = |e: rusqlite::Error| {
                let translated = crate::sqlite_errors::translate(e);
                MigrationError::Failed {
                    file: file.name.clone(),
                    line: located.line,
                    column: located.column,
                    message: translated.to_string(),
                    code: match &translated {
                        crate::error::DataError::Database { code, .. } => code.clone(),
                        _ => "XX000".to_string(),
                    },
                }
            };
            match located.step {
                Step::Sql(sql) => tx.execute_batch(&sql).map_err(failed)?,
                Step::EnableRls { table } => {
                    tx.execute(
                        "insert or ignore into _reactor_rls (table_name) values (?1)",
                        [&table],
                    )
                    .map_err(failed)?;
                }
                Step::Policy(p) => {
                    tx.execute(
                        "insert into _reactor_policies (table_name, name, record) values (?1, ?2, ?3)",
                        rusqlite::params![p.table, p.name, record(&p)?],
                    )
                    .map_err(failed)?;
                }
                Step::DropPolicy { table, name } => {
                    tx.execute(
                        "delete from _reactor_policies where table_name = ?1 and name = ?2",
                        [&table, &name],
                    )
                    .map_err(failed)?;
                }
                Step::Function(f) => {
                    tx.execute(
                        "insert or replace into _reactor_functions (name, record) values (?1, ?2)",
                        rusqlite::params![f.name, record(&f)?],
                    )
                    .map_err(failed)?;
                }
                Step::DropFunction { name } => {
                    tx.execute("delete from _reactor_functions where name = ?1", [&name])
                        .map_err(failed)?;
                }
            }
        }
        tx.execute(
            "insert into _reactor_user_migrations (name, checksum) values (?1, ?2)",
            [&file.name, &file.checksum],
        )
        .map_err(DbError::from)?;
        done.push(file.name.clone());
    }
    if options.dry_run {
        // Dropping the transaction rolls it back.
        return Ok(done);
    }
    for statement in options.epilogue.iter().filter(|s| !s.sqlite.is_empty()) {
        tx.execute(
            &statement.sqlite,
            rusqlite::params_from_iter(statement.params.iter()),
        )
        .map_err(DbError::from)?;
    }
    tx.commit().map_err(DbError::from)?;
    Ok(done)
}

/// A database error placed in the file: Postgres reports a 1-based character position in the
/// text it was sent, which is the whole file.
fn located(file: &MigrationFile, e: sqlx::Error) -> MigrationError {
    let Some(db) = e.as_database_error() else {
        return e.into();
    };
    let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
    let position = pg.and_then(|pg| match pg.position() {
        Some(sqlx::postgres::PgErrorPosition::Original(p)) => Some(p),
        _ => None,
    });
    let (line, column) = match position {
        Some(p) => line_and_column(&file.sql, p),
        None => (0, 0),
    };
    MigrationError::Failed {
        file: file.name.clone(),
        line,
        column,
        message: db.message().to_string(),
        code: db.code().map(|c| c.to_string()).unwrap_or_default(),
    }
}

/// 1-based line and column of the 1-based character `position` of `text`.
fn line_and_column(text: &str, position: usize) -> (usize, usize) {
    let before: String = text.chars().take(position.saturating_sub(1)).collect();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_become_lines_and_columns() {
        let sql = "create table a (x int);\ncreate tabel b (y int);";
        assert_eq!(line_and_column(sql, 1), (1, 1));
        assert_eq!(line_and_column(sql, 25), (2, 1));
        assert_eq!(line_and_column(sql, 32), (2, 8));
    }

    #[test]
    fn comparison_finds_every_state() {
        let files = vec![
            MigrationFile::new("1.sql", "a"),
            MigrationFile::new("2.sql", "b"),
            MigrationFile::new("3.sql", "c"),
        ];
        let applied = vec![
            ("1.sql".to_string(), files[0].checksum.clone()),
            ("2.sql".to_string(), "stale".to_string()),
            ("0.sql".to_string(), "gone".to_string()),
        ];
        let states: Vec<(String, Status)> = compare(&files, &applied)
            .into_iter()
            .map(|s| (s.name, s.status))
            .collect();
        assert_eq!(
            states,
            [
                ("0.sql".into(), Status::Missing),
                ("1.sql".into(), Status::Applied),
                ("2.sql".into(), Status::Modified),
                ("3.sql".into(), Status::Pending)
            ]
        );
    }
}
