//! The Data capability: reads, writes and rpc calls on the project's tables, as the caller.
//!
//! Each call renders one statement (two on SQLite for a write) against the schema cache and
//! runs it as the principal: on Postgres on a request connection whose session carries the
//! caller's role and `reactor.*` variables (`RequestPool`), where real row-level security
//! applies; on SQLite with the policies rendered into the statement.

use reactor_core::Principal;
use reactor_db::Db;
use reactor_db::requests::{Batching, RequestPool, RequestPoolSize};
use serde_json::{Map, Value};
use tokio_postgres::types::{ToSql, Type as PgType};

use crate::error::DataError;
use crate::grammar::SelectItem;
use crate::mutate::Insert;
use crate::render::{Body, Builder, Dialect, Levels, Param, Source, Statement};
use crate::schema::{SchemaCache, SchemaHandle, Table};
use crate::templates::ReadTemplates;

/// Server-side settings of the Data API.
#[derive(Debug, Clone)]
pub struct DataConfig {
    /// Let `PATCH` and `DELETE` run without a filter (off: they are refused).
    pub allow_unfiltered_writes: bool,
    /// Postgres: request connections this process opens at most (each a backend), beside
    /// the system pool's. Replicas over one database multiply it.
    pub request_connections: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            allow_unfiltered_writes: false,
            request_connections: DEFAULT_REQUEST_CONNECTIONS,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Data {
    db: Db,
    schema: SchemaHandle,
    config: DataConfig,
    /// Postgres: the connections requests run on (see `RequestPool`).
    requests: Option<RequestPool>,
    /// Reads rendered once per shape (see `templates`).
    templates: std::sync::Arc<ReadTemplates>,
}

/// Request connections per process on Postgres unless configured (`[data] connections`).
pub const DEFAULT_REQUEST_CONNECTIONS: usize = 16;

/// The statements of one caller a request connection carries at once before the next one
/// opens. They go out in batches under one `Sync`, so more per connection means larger
/// batches: on two cores 32 beat 8, 16 and 24 on reads and inserts, and 64 (one connection,
/// one PostgreSQL backend) starved lists of the second core (`bench/README.md`).
const REQUEST_SPREAD: usize = 32;

/// What one read or write asks besides its rows.
#[derive(Debug, Clone)]
pub struct Shape {
    pub select: Vec<SelectItem>,
    pub levels: Levels,
    pub body: Body,
    pub count: bool,
    /// `Accept: application/vnd.pgrst.object+json`: anything but exactly one row fails, and a
    /// write is rolled back.
    pub single: bool,
}

/// The statement's answer: the JSON body, the rows in it, and the total when counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub body: Option<String>,
    pub rows: i64,
    pub total: Option<i64>,
}

/// An rpc answer: the output, and whether the body is one value rather than an array.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcOutput {
    pub output: Output,
    pub single: bool,
}

impl Data {
    pub async fn new(db: Db, config: DataConfig) -> Result<Data, DataError> {
        crate::migrations::prepare(&db)
            .await
            .map_err(|e| DataError::Internal(e.to_string()))?;
        let cache = crate::schema::load(&db)
            .await
            .map_err(|e| DataError::Internal(e.to_string()))?;
        let requests = match &db {
            Db::Postgres(pool) => Some(
                RequestPool::new(
                    pool,
                    RequestPoolSize {
                        connections: config.request_connections,
                        spread: REQUEST_SPREAD,
                    },
                )
                .map_err(|e| DataError::Internal(e.to_string()))?,
            ),
            Db::Sqlite(_) => None,
        };
        Ok(Data {
            db,
            schema: SchemaHandle::new(cache),
            config,
            requests,
            templates: std::sync::Arc::new(ReadTemplates::new()),
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn schema(&self) -> std::sync::Arc<SchemaCache> {
        self.schema.get()
    }

    /// O1: the SQL predicate standing for the row-level security policies of a table another
    /// capability keeps in the project database (`storage.objects`), for `role` and
    /// `command` (`check`: the `WITH CHECK` side). An unknown table gives `0`: nothing passes.
    pub fn system_policy_predicate(
        &self,
        table: &str,
        role: reactor_core::DbRole,
        command: &str,
        check: bool,
    ) -> String {
        let schema = self.schema();
        match schema.system_tables.get(table) {
            Some(t) => crate::render::policy_predicate(&schema, t, command, check, role, 0),
            None => "0".to_string(),
        }
    }

    pub async fn reload_schema(&self) -> Result<(), DataError> {
        self.schema
            .reload(&self.db)
            .await
            .map(|_| ())
            .map_err(|e| DataError::Internal(e.to_string()))
    }

    fn requests(&self) -> Result<&RequestPool, DataError> {
        self.requests
            .as_ref()
            .ok_or_else(|| DataError::Internal("no request pool on Postgres".into()))
    }

    fn dialect(&self) -> Dialect {
        match self.db {
            Db::Postgres(_) => Dialect::Postgres,
            Db::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Renders with the cached schema; when the request names something the cache does not
    /// know, re-reads the catalog once (another replica may have migrated) and tries again.
    async fn render<T>(
        &self,
        f: impl Fn(&SchemaCache, Dialect) -> Result<T, DataError>,
    ) -> Result<T, DataError> {
        let first = f(&self.schema.get(), self.dialect());
        match first {
            Err(
                DataError::UnknownTable { .. }
                | DataError::UnknownColumn { .. }
                | DataError::NoRelationship { .. }
                | DataError::UnknownFunction { .. },
            ) if self.schema.reload_after_miss(&self.db).await => {
                f(&self.schema.get(), self.dialect())
            }
            other => other,
        }
    }

    pub async fn read(
        &self,
        principal: &Principal,
        table: &str,
        shape: &Shape,
    ) -> Result<Output, DataError> {
        let templated =
            self.templates
                .read(&self.schema.get(), self.dialect(), principal, table, shape);
        let statement = match templated {
            Some((template, values)) => {
                template.statement(self.dialect(), principal, values.values())?
            }
            None => {
                self.render(|schema, dialect| render_read(schema, dialect, principal, table, shape))
                    .await?
            }
        };
        match &self.db {
            Db::Postgres(_) => {
                let run = if shape.single {
                    PgRun::AloneSingle
                } else {
                    PgRun::Alone
                };
                run_pg(self.requests()?, principal, statement, run).await
            }
            Db::Sqlite(pool) => {
                let single = shape.single;
                pool.read_with_principal(principal, move |conn| {
                    Ok(sqlite_output(conn, &statement).and_then(|output| {
                        if single && output.rows != 1 {
                            Err(DataError::NotOne { rows: output.rows })
                        } else {
                            Ok(output)
                        }
                    }))
                })
                .await?
            }
        }
    }

    pub async fn insert(
        &self,
        principal: &Principal,
        table: &str,
        insert: &Insert,
        shape: &Shape,
    ) -> Result<Output, DataError> {
        if insert.rows.is_empty() {
            // An empty batch writes nothing; the table must still exist.
            self.render(|schema, _| find_table(schema, table).map(|_| ()))
                .await?;
            let body = (shape.body == Body::Json).then(|| "[]".to_string());
            return Ok(Output {
                body,
                rows: 0,
                total: None,
            });
        }
        match &self.db {
            Db::Postgres(_) => {
                self.write_pg(principal, table, shape, |b, t| {
                    b.insert_pg(t, insert, &shape.select, &shape.levels, shape.body)
                })
                .await
            }
            Db::Sqlite(pool) => {
                self.write_sqlite(pool, principal, table, shape, "insert", |b, t| {
                    // Postgres checks policies before constraints: with no policy letting
                    // this role insert, that is the error, whatever the row.
                    if b.policy(t, "insert", true).as_deref() == Some("0") {
                        return Err(rls_violation(&t.name));
                    }
                    Ok(SqliteDml {
                        existing: b.upsert_existing_sqlite(t, insert)?,
                        dml: b.insert_sqlite(t, insert)?,
                    })
                })
                .await
            }
        }
    }

    pub async fn update(
        &self,
        principal: &Principal,
        table: &str,
        patch: &Map<String, Value>,
        shape: &Shape,
    ) -> Result<Output, DataError> {
        self.guard_unfiltered(shape, "PATCH")?;
        match &self.db {
            Db::Postgres(_) => {
                self.write_pg(principal, table, shape, |b, t| {
                    b.update_pg(t, patch, &shape.select, &shape.levels, shape.body)
                })
                .await
            }
            Db::Sqlite(pool) => {
                self.write_sqlite(pool, principal, table, shape, "update", |b, t| {
                    Ok(SqliteDml {
                        existing: None,
                        dml: b.update_sqlite(t, patch, &shape.levels)?,
                    })
                })
                .await
            }
        }
    }

    pub async fn delete(
        &self,
        principal: &Principal,
        table: &str,
        shape: &Shape,
    ) -> Result<Output, DataError> {
        self.guard_unfiltered(shape, "DELETE")?;
        match &self.db {
            Db::Postgres(_) => {
                self.write_pg(principal, table, shape, |b, t| {
                    b.delete_pg(t, &shape.select, &shape.levels, shape.body)
                })
                .await
            }
            Db::Sqlite(pool) => {
                let (targets, read, name) = self
                    .render(|schema, dialect| {
                        let t = find_table(schema, table)?;
                        let mut b = builder(schema, dialect, principal);
                        let targets = b.delete_targets_sqlite(t, &shape.levels)?;
                        let read =
                            b.read_rowids_sqlite(t, &shape.select, &shape.levels, shape.body)?;
                        Ok((targets, read, t.name.clone()))
                    })
                    .await?;
                let single = shape.single;
                pool.write_with_principal(principal, move |conn| {
                    let delete = Statement {
                        sql: format!(
                            "delete from {} where rowid in (select value from json_each(?1)) returning rowid",
                            crate::render::quote_ident(&name)
                        ),
                        params: vec![Param::Text(String::new())],
                    };
                    sqlite_delete(conn, &targets, &delete, read, single).into()
                })
                .await?
            }
        }
    }

    /// Postgres: renders one write statement with `render` and runs it as the caller.
    async fn write_pg(
        &self,
        principal: &Principal,
        table: &str,
        shape: &Shape,
        render: impl for<'s> Fn(&mut Builder<'s>, &'s Table) -> Result<String, DataError>,
    ) -> Result<Output, DataError> {
        let statement = self
            .render(|schema, dialect| {
                let t = find_table(schema, table)?;
                let mut b = builder(schema, dialect, principal);
                let sql = render(&mut b, t)?;
                Ok(b.finish(sql))
            })
            .await?;
        let run = if shape.single {
            PgRun::Single
        } else {
            PgRun::Alone
        };
        run_pg(self.requests()?, principal, statement, run).await
    }

    /// SQLite: the DML `render` makes, the `with check` of `command` on what it wrote, and the
    /// representation, run on the writer thread.
    async fn write_sqlite(
        &self,
        pool: &reactor_db::SqlitePool,
        principal: &Principal,
        table: &str,
        shape: &Shape,
        command: &'static str,
        render: impl for<'s> Fn(&mut Builder<'s>, &'s Table) -> Result<SqliteDml, DataError>,
    ) -> Result<Output, DataError> {
        let write = self
            .render(|schema, dialect| {
                let t = find_table(schema, table)?;
                let mut b = builder(schema, dialect, principal);
                let SqliteDml { existing, dml } = render(&mut b, t)?;
                let mut checks = Vec::new();
                if existing.is_some() {
                    // A merging upsert: new rows meet the insert policies, overwritten ones
                    // the update policies, as on Postgres.
                    checks.extend(
                        b.rls_check_sqlite(t, "insert")
                            .map(|c| (c, Written::Inserted)),
                    );
                    checks.extend(
                        b.rls_check_sqlite(t, "update")
                            .map(|c| (c, Written::Updated)),
                    );
                } else {
                    checks.extend(b.rls_check_sqlite(t, command).map(|c| (c, Written::All)));
                }
                let read = b.read_rowids_sqlite(t, &shape.select, &shape.levels, shape.body)?;
                Ok(SqliteWrite {
                    table: t.name.clone(),
                    existing,
                    dml,
                    checks,
                    read,
                })
            })
            .await?;
        let single = shape.single;
        pool.write_with_principal(principal, move |conn| {
            sqlite_write(conn, write, single).into()
        })
        .await?
    }

    fn guard_unfiltered(&self, shape: &Shape, method: &'static str) -> Result<(), DataError> {
        let filtered = shape
            .levels
            .get(&Vec::new())
            .is_some_and(|l| !l.conditions.is_empty());
        if filtered || self.config.allow_unfiltered_writes {
            Ok(())
        } else {
            Err(DataError::UnfilteredWrite { method })
        }
    }

    /// `POST|GET /rpc/<name>`; `read_only` (GET) runs in a read-only transaction, so a volatile
    /// function fails as it does on PostgREST (25006 → 405).
    pub async fn rpc(
        &self,
        principal: &Principal,
        name: &str,
        args: &Map<String, Value>,
        shape: &Shape,
        read_only: bool,
    ) -> Result<RpcOutput, DataError> {
        let (plan, single, scalar) = self
            .render(|schema, dialect| {
                let function = find_function(schema, name, args)?;
                if dialect == Dialect::Sqlite && read_only && function.volatile {
                    return Err(DataError::Database {
                        code: "25006".into(),
                        message: format!(
                            "cannot execute the volatile function {name} in a read-only transaction"
                        ),
                        details: None,
                        hint: Some("call it with POST".into()),
                    });
                }
                let table = match &function.returns_table {
                    Some(t) => Some(find_table(schema, t)?),
                    None => None,
                };
                let single = !function.returns_set && table.is_some();
                let scalar = function.is_scalar() && !function.returns_set;
                let mut b = builder(schema, dialect, principal);
                let plan = match dialect {
                    Dialect::Postgres => {
                        let sql = b.rpc_pg(function, table, args, shape)?;
                        RpcPlan::Query(b.finish(sql))
                    }
                    Dialect::Sqlite => {
                        let (sql, dml) = b.rpc_sqlite(function, table, args, shape)?;
                        let kind = crate::schema::kind_of(&function.returns);
                        if dml {
                            RpcPlan::Dml(b.finish(sql), kind)
                        } else {
                            RpcPlan::Query(b.finish(sql))
                        }
                    }
                };
                Ok((plan, single, scalar))
            })
            .await?;
        let mut output = match (&self.db, plan) {
            (Db::Postgres(_), RpcPlan::Query(statement)) => {
                let run = if read_only {
                    PgRun::ReadOnly
                } else {
                    PgRun::OwnSync
                };
                run_pg(self.requests()?, principal, statement, run).await?
            }
            (Db::Sqlite(pool), RpcPlan::Query(statement)) => {
                pool.read_with_principal(principal, move |conn| Ok(sqlite_output(conn, &statement)))
                    .await??
            }
            (Db::Sqlite(pool), RpcPlan::Dml(statement, kind)) => {
                pool.write_with_principal(principal, move |conn| {
                    sqlite_dml_value(conn, &statement, kind).into()
                })
                .await??
            }
            (Db::Postgres(_), RpcPlan::Dml(..)) => {
                return Err(DataError::Internal("a DML rpc plan on Postgres".into()));
            }
        };
        if single && let Some(body) = output.body.take() {
            output.body = Some(unwrap_single(&body).to_string());
        }
        Ok(RpcOutput {
            output,
            single: single || scalar,
        })
    }
}

/// How an rpc call runs: a query answering `(body, rows, total)`, or (SQLite) a function body
/// that writes, whose first value is the answer.
#[derive(Debug)]
enum RpcPlan {
    Query(Statement),
    Dml(Statement, crate::schema::Kind),
}

/// Runs a writing function body on SQLite and renders its first value as JSON.
fn sqlite_dml_value(
    conn: &rusqlite::Connection,
    statement: &Statement,
    kind: crate::schema::Kind,
) -> Result<Output, DataError> {
    use rusqlite::types::Value as V;
    let value = {
        let mut stmt = conn.prepare(&statement.sql).map_err(sqlite_error)?;
        let params = sqlite_params(&statement.params);
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(sqlite_error)?;
        match rows.next().map_err(sqlite_error)? {
            Some(row) => row.get::<_, V>(0).map_err(sqlite_error)?,
            None => V::Null,
        }
    };
    let json = match (value, kind) {
        (V::Null, _) => Value::Null,
        (V::Integer(n), crate::schema::Kind::Bool) => Value::Bool(n != 0),
        (V::Integer(n), _) => Value::from(n),
        (V::Real(f), _) => Value::from(f),
        (V::Text(t), crate::schema::Kind::Json) => {
            serde_json::from_str(&t).unwrap_or(Value::String(t))
        }
        (V::Text(t), _) => Value::String(t),
        (V::Blob(_), _) => Value::Null,
    };
    Ok(Output {
        body: Some(json.to_string()),
        rows: 1,
        total: None,
    })
}

/// `shape`'s read of `table` for `principal`, rendered afresh.
pub(crate) fn render_read(
    schema: &SchemaCache,
    dialect: Dialect,
    principal: &Principal,
    table: &str,
    shape: &Shape,
) -> Result<Statement, DataError> {
    let t = find_table(schema, table)?;
    let mut b = builder(schema, dialect, principal);
    let sql = b.read(
        t,
        &Source::table(dialect, &t.name),
        &shape.select,
        &shape.levels,
        shape.body,
        shape.count,
    )?;
    Ok(b.finish(sql))
}

/// A builder for `principal`: its session guarded on Postgres, its policies applied on SQLite.
pub(crate) fn builder<'s>(
    schema: &'s SchemaCache,
    dialect: Dialect,
    principal: &Principal,
) -> Builder<'s> {
    Builder::new(dialect, schema)
        .with_session_guard(principal)
        .with_role(principal.db_role())
}

/// `[x]` → `x`: the body of a one-row answer as an object.
pub fn unwrap_single(body: &str) -> &str {
    let trimmed = body.trim();
    trimmed
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .map(str::trim)
        .unwrap_or(trimmed)
}

pub fn find_table<'s>(schema: &'s SchemaCache, name: &str) -> Result<&'s Table, DataError> {
    schema.table(name).ok_or_else(|| DataError::UnknownTable {
        name: name.to_string(),
        suggestion: schema.suggest_table(name).map(str::to_string),
    })
}

/// The overload whose parameters the call's argument names fit: every given name is a
/// parameter, and every parameter without a default is given.
fn find_function<'s>(
    schema: &'s SchemaCache,
    name: &str,
    args: &Map<String, Value>,
) -> Result<&'s crate::schema::Function, DataError> {
    let fits = |f: &&crate::schema::Function| {
        args.keys().all(|k| f.args.iter().any(|a| &a.name == k))
            && f.args
                .iter()
                .all(|a| a.has_default || args.contains_key(&a.name))
    };
    schema
        .functions
        .get(name)
        .and_then(|overloads| overloads.iter().find(fits))
        .ok_or_else(|| DataError::UnknownFunction {
            name: name.to_string(),
            args: args.keys().cloned().collect::<Vec<_>>().join(", "),
        })
}

/// How a rendered statement runs on Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgRun {
    /// Alone, in autocommit, possibly sharing a `Sync` with other statements of the same
    /// caller (and then sent again if another of them fails).
    Alone,
    /// Alone, in autocommit, with a `Sync` of its own: an rpc, a developer's function whose
    /// effects outside the database (an extension's HTTP call) must not happen twice.
    OwnSync,
    /// A read that must find exactly one row: alone, then counted (nothing to roll back).
    AloneSingle,
    /// A write rolled back unless it touched exactly one row: a transaction of its own.
    Single,
    /// An rpc called by GET: a read-only transaction of its own.
    ReadOnly,
}

/// The parameters as Postgres receives them, with the types sqlx gave them before (the
/// rendered SQL casts where a column needs another type).
fn pg_params(params: &[Param]) -> (Vec<PgType>, Vec<&(dyn ToSql + Sync)>) {
    params
        .iter()
        .map(|p| -> (PgType, &(dyn ToSql + Sync)) {
            match p {
                Param::Text(s) => (PgType::TEXT, s),
                Param::Texts(v) => (PgType::TEXT_ARRAY, v),
                Param::Int(i) => (PgType::INT8, i),
                Param::Float(f) => (PgType::FLOAT8, f),
            }
        })
        .unzip()
}

/// Runs one rendered statement as the caller (see `RequestPool`).
async fn run_pg(
    requests: &RequestPool,
    principal: &Principal,
    statement: Statement,
    run: PgRun,
) -> Result<Output, DataError> {
    // The text is rendered from schema-cache identifiers and constants; values are bound.
    let (types, params) = pg_params(&statement.params);
    let single = matches!(run, PgRun::AloneSingle | PgRun::Single);
    let output = match run {
        PgRun::Alone | PgRun::AloneSingle | PgRun::OwnSync => {
            let batching = if run == PgRun::OwnSync {
                Batching::Own
            } else {
                Batching::Shared
            };
            pg_output(
                requests
                    .query_one(principal, &statement.sql, &types, &params, batching)
                    .await?,
            )?
        }
        PgRun::Single | PgRun::ReadOnly => {
            let mut conn = requests.exclusive(principal).await?;
            conn.begin(run == PgRun::ReadOnly).await?;
            let output = match conn.query_one(&statement.sql, &types, &params).await {
                Ok(row) => pg_output(row),
                Err(e) => Err(e.into()),
            };
            match output {
                Ok(output) if !single || output.rows == 1 => {
                    conn.commit().await?;
                    output
                }
                other => {
                    conn.rollback().await?;
                    other?
                }
            }
        }
    };
    if single && output.rows != 1 {
        return Err(DataError::NotOne { rows: output.rows });
    }
    Ok(output)
}

fn pg_output(row: reactor_db::requests::Row) -> Result<Output, DataError> {
    let column = |e: reactor_db::wire::WireError| DataError::Internal(e.to_string());
    Ok(Output {
        body: row.text(0).map_err(column)?.map(str::to_string),
        rows: row
            .int(1)
            .map_err(column)?
            .ok_or_else(|| DataError::Internal("the row count is null".into()))?,
        total: row.int(2).map_err(column)?,
    })
}

fn sqlite_params(params: &[Param]) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    params
        .iter()
        .map(|p| match p {
            Param::Text(s) => V::Text(s.clone()),
            Param::Texts(v) => V::Text(serde_json::to_string(v).unwrap_or_default()),
            Param::Int(i) => V::Integer(*i),
            Param::Float(f) => V::Real(*f),
        })
        .collect()
}

fn sqlite_error(e: rusqlite::Error) -> DataError {
    crate::sqlite_errors::translate(e)
}

fn sqlite_query_output(
    conn: &rusqlite::Connection,
    statement: &Statement,
) -> Result<Output, DataError> {
    let mut stmt = conn.prepare_cached(&statement.sql).map_err(sqlite_error)?;
    let params = sqlite_params(&statement.params);
    stmt.query_row(rusqlite::params_from_iter(params.iter()), |r| {
        Ok(Output {
            body: r.get(0)?,
            rows: r.get(1)?,
            total: r.get(2)?,
        })
    })
    .map_err(sqlite_error)
}

fn sqlite_output(
    conn: &mut rusqlite::Connection,
    statement: &Statement,
) -> Result<Output, DataError> {
    sqlite_query_output(conn, statement)
}

fn sqlite_rowids(
    conn: &rusqlite::Connection,
    statement: &Statement,
) -> Result<Vec<i64>, DataError> {
    let mut stmt = conn.prepare_cached(&statement.sql).map_err(sqlite_error)?;
    let params = sqlite_params(&statement.params);
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params.iter()), |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sqlite_error)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)
}

fn with_rowids(mut statement: Statement, rowids: &[i64]) -> Statement {
    if let Some(p) = statement.params.first_mut() {
        *p = Param::Text(serde_json::to_string(rowids).unwrap_or_else(|_| "[]".into()));
    }
    statement
}

fn rls_violation(table: &str) -> DataError {
    DataError::Database {
        code: "42501".into(),
        message: format!("new row violates row-level security policy for table \"{table}\""),
        details: None,
        hint: None,
    }
}

/// The DML, the row-level security check of what it wrote (a violation rolls everything back
/// with Postgres's 42501), then the representation.
/// A SQLite write's DML, and for a merging upsert under row-level security the rows it will
/// find already there.
struct SqliteDml {
    existing: Option<Statement>,
    dml: Statement,
}

/// Which written rows a `with check` applies to.
#[derive(Debug, Clone, Copy)]
enum Written {
    All,
    Inserted,
    Updated,
}

/// Everything one SQLite write runs, in order, on the writer thread.
struct SqliteWrite {
    table: String,
    existing: Option<Statement>,
    dml: Statement,
    checks: Vec<(Statement, Written)>,
    read: Statement,
}

/// The DML, the row-level security checks of what it wrote (a violation rolls everything
/// back with Postgres's 42501), then the representation.
fn sqlite_write(
    tx: &rusqlite::Connection,
    write: SqliteWrite,
    single: bool,
) -> Result<Output, DataError> {
    let existing = match &write.existing {
        Some(statement) => sqlite_rowids(tx, statement)?,
        None => Vec::new(),
    };
    let rowids = sqlite_rowids(tx, &write.dml)?;
    // An existing row the upsert did not return was kept from it by the update policies.
    if existing.iter().any(|id| !rowids.contains(id)) {
        return Err(DataError::Database {
            code: "42501".into(),
            message: format!(
                "new row violates row-level security policy (USING expression) for table \"{}\"",
                write.table
            ),
            details: None,
            hint: None,
        });
    }
    for (check, applies) in write.checks {
        let ids: Vec<i64> = rowids
            .iter()
            .copied()
            .filter(|id| match applies {
                Written::All => true,
                Written::Inserted => !existing.contains(id),
                Written::Updated => existing.contains(id),
            })
            .collect();
        let violations = sqlite_rowids(tx, &with_rowids(check, &ids))?;
        if violations.first().is_some_and(|n| *n > 0) {
            return Err(rls_violation(&write.table));
        }
    }
    if single && rowids.len() != 1 {
        return Err(DataError::NotOne {
            rows: rowids.len() as i64,
        });
    }
    sqlite_query_output(tx, &with_rowids(write.read, &rowids))
}

fn sqlite_delete(
    tx: &rusqlite::Connection,
    targets: &Statement,
    delete: &Statement,
    read: Statement,
    single: bool,
) -> Result<Output, DataError> {
    let rowids = sqlite_rowids(tx, targets)?;
    if single && rowids.len() != 1 {
        return Err(DataError::NotOne {
            rows: rowids.len() as i64,
        });
    }
    let output = sqlite_query_output(tx, &with_rowids(read, &rowids))?;
    sqlite_rowids(tx, &with_rowids(delete.clone(), &rowids))?;
    Ok(output)
}
