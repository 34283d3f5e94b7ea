//! `reactor data query`: one SQL statement from an operator, run with the owner's rights (the
//! service key's SQL console), its rows returned as JSON with the columns in their order.
//!
//! A statement that reads (`select`, `with`, `values`, `table`, `show`, `explain`) returns rows;
//! anything else is executed and reports the rows it changed.

use reactor_db::{Db, DbError};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Row};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum QueryResult {
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<Value>>,
    },
    Changed {
        rows_affected: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{message} (SQLSTATE {code})")]
    Database { code: String, message: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

fn reads(sql: &str) -> bool {
    let first = sql
        .trim_start()
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(
        first.as_str(),
        "select" | "with" | "values" | "table" | "show" | "explain"
    )
}

pub async fn run(db: &Db, sql: &str) -> Result<QueryResult, QueryError> {
    let sql = sql.trim().trim_end_matches(';').to_string();
    match db {
        Db::Postgres(pool) => {
            let failed = |e: sqlx::Error| match e.as_database_error() {
                Some(d) => QueryError::Database {
                    code: d.code().map(|c| c.to_string()).unwrap_or_default(),
                    message: d.message().to_string(),
                },
                None => QueryError::Db(DbError::Postgres(e)),
            };
            if !reads(&sql) {
                // The operator's own statement, as typed: that is what this console is for.
                let done = sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .map_err(failed)?;
                return Ok(QueryResult::Changed {
                    rows_affected: done.rows_affected(),
                });
            }
            // Postgres renders each row as JSON, keys in column order.
            let wrapped = format!("select row_to_json(q)::text as row from ({sql}) q");
            let rows = sqlx::query(AssertSqlSafe(wrapped))
                .fetch_all(pool)
                .await
                .map_err(failed)?;
            let mut columns = Vec::new();
            let mut out = Vec::new();
            for row in rows {
                let text: String = row.try_get("row").map_err(failed)?;
                let object: Map<String, Value> = serde_json::from_str(&text).unwrap_or_default();
                if columns.is_empty() {
                    columns = object.keys().cloned().collect();
                }
                out.push(object.into_iter().map(|(_, v)| v).collect());
            }
            Ok(QueryResult::Rows { columns, rows: out })
        }
        Db::Sqlite(pool) => {
            let result = pool
                .with(move |conn| {
                    let outcome = (|| -> rusqlite::Result<QueryResult> {
                        if !reads(&sql) {
                            let changed = conn.execute(&sql, [])?;
                            return Ok(QueryResult::Changed {
                                rows_affected: changed as u64,
                            });
                        }
                        let mut stmt = conn.prepare(&sql)?;
                        let columns: Vec<String> =
                            stmt.column_names().iter().map(|c| c.to_string()).collect();
                        let width = columns.len();
                        let rows = stmt
                            .query_map([], |r| {
                                (0..width).map(|i| r.get_ref(i).map(sqlite_json)).collect()
                            })?
                            .collect::<rusqlite::Result<Vec<Vec<Value>>>>()?;
                        Ok(QueryResult::Rows { columns, rows })
                    })();
                    Ok(outcome)
                })
                .await?;
            result.map_err(|e| QueryError::Database {
                code: "sqlite".into(),
                message: e.to_string(),
            })
        }
    }
}

fn sqlite_json(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => Value::from(f),
        ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::from(format!("\\x{}", hex::encode(b))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reading_statements() {
        for sql in [
            "select 1",
            "  SELECT 1",
            "with x as (select 1) select * from x",
            "values (1)",
            "explain select 1",
        ] {
            assert!(super::reads(sql), "{sql}");
        }
        for sql in [
            "insert into t values (1)",
            "create table t (x int)",
            "delete from t",
        ] {
            assert!(!super::reads(sql), "{sql}");
        }
    }
}
