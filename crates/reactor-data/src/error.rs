//! What can go wrong answering `/data/v1`, and how PostgREST would say it: the same codes
//! (`PGRST…` for the grammar and the schema cache, SQLSTATE for the database) and the same
//! HTTP statuses, so an unmodified PostgREST client reacts to our errors as to its own.

use axum::http::StatusCode;
use reactor_core::ApiError;

use crate::grammar::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Grammar(#[from] ParseError),
    #[error("Could not find the table 'public.{name}' in the schema cache")]
    UnknownTable {
        name: String,
        suggestion: Option<String>,
    },
    #[error("column {table}.{column} does not exist")]
    UnknownColumn {
        table: String,
        column: String,
        suggestion: Option<String>,
    },
    #[error("Could not find a relationship between '{from}' and '{to}' in the schema cache")]
    NoRelationship { from: String, to: String },
    #[error("Could not embed because more than one relationship was found for '{from}' and '{to}'")]
    AmbiguousRelationship {
        from: String,
        to: String,
        candidates: Vec<String>,
    },
    #[error("'{0}' is not an embedded resource in this request")]
    NotEmbedded(String),
    #[error("Could not find the function public.{name}({args}) in the schema cache")]
    UnknownFunction { name: String, args: String },
    #[error("Cannot coerce the result to a single JSON object")]
    NotOne { rows: i64 },
    #[error("Requested range not satisfiable")]
    RangeNotSatisfiable { offset: u64, total: i64 },
    #[error("{method} requires a filter")]
    UnfilteredWrite { method: &'static str },
    #[error("{0}")]
    BadBody(String),
    #[error("{0}")]
    BadRequest(String),
    /// A request PostgREST refuses with a code of its own (`PGRST105`, `PGRST115`…).
    #[error("{message}")]
    Rule {
        code: &'static str,
        message: String,
        hint: &'static str,
    },
    #[error("{0} is not supported on SQLite (O1)")]
    Unsupported(String),
    #[error("{message}")]
    Database {
        code: String,
        message: String,
        details: Option<String>,
        hint: Option<String>,
    },
    #[error("internal: {0}")]
    Internal(String),
}

impl DataError {
    pub fn unknown_column(table: &crate::schema::Table, column: &str) -> DataError {
        DataError::UnknownColumn {
            table: table.name.clone(),
            column: column.to_string(),
            suggestion: table.suggest(column).map(str::to_string),
        }
    }

    /// Renders the error for a caller; `authenticated` decides 401 or 403 for `42501`, as
    /// PostgREST does.
    pub fn into_api(self, authenticated: bool) -> ApiError {
        let message = self.to_string();
        let status = |s: u16| StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST);
        match self {
            DataError::Grammar(e) => {
                let message = format!("\"failed to parse {} parameter ({})\"", e.param, e.value);
                ApiError::new(StatusCode::BAD_REQUEST, "PGRST100", message)
                    .with_details(format!("{} (column {})", e.expected, e.column))
                    .with_hint("see https://postgrest.org/en/stable/references/api/tables_views.html for the grammar")
            }
            DataError::UnknownTable { suggestion, .. } => {
                let e = ApiError::new(StatusCode::NOT_FOUND, "PGRST205", message);
                match suggestion {
                    Some(s) => e.with_hint(format!("Perhaps you meant the table 'public.{s}'")),
                    None => e.with_hint("tables come from the migrations: run `reactor data status`"),
                }
            }
            DataError::UnknownColumn { suggestion, .. } => {
                let e = ApiError::new(StatusCode::BAD_REQUEST, "42703", message);
                match suggestion {
                    Some(s) => e.with_hint(format!("Perhaps you meant to reference the column \"{s}\"")),
                    None => e,
                }
            }
            DataError::NoRelationship { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "PGRST200", message).with_hint(
                    "embedding needs a foreign key between the two tables (or a junction table with one to each)",
                )
            }
            DataError::AmbiguousRelationship { to, candidates, .. } => {
                let options = candidates
                    .iter()
                    .map(|c| format!("'{to}!{c}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
                ApiError::new(StatusCode::MULTIPLE_CHOICES, "PGRST201", message)
                    .with_details(candidates.join(", "))
                    .with_hint(format!("Try changing '{to}' to one of the following: {options}"))
            }
            DataError::NotEmbedded(_) => ApiError::new(StatusCode::BAD_REQUEST, "PGRST108", message)
                .with_hint("add the resource to select= before filtering or ordering it"),
            DataError::UnknownFunction { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "PGRST202", message)
                    .with_hint("functions come from the migrations; check the argument names")
            }
            DataError::NotOne { rows } => ApiError::new(status(406), "PGRST116", message)
                .with_details(format!("The result contains {rows} rows"))
                .with_hint("application/vnd.pgrst.object+json needs exactly one row: add a filter on a unique column"),
            DataError::RangeNotSatisfiable { offset, total } => {
                ApiError::new(status(416), "PGRST103", message).with_details(format!(
                    "An offset of {offset} was requested, but there are only {total} rows."
                ))
            }
            DataError::UnfilteredWrite { method } => {
                ApiError::new(StatusCode::BAD_REQUEST, "21000", message).with_hint(format!(
                    "{method} without a filter would touch every row: add one (e.g. ?id=eq.1), or set [data] allow_unfiltered_writes = true in the server configuration"
                ))
            }
            DataError::BadBody(_) => ApiError::new(StatusCode::BAD_REQUEST, "PGRST102", message)
                .with_hint("send a JSON object, or an array of objects with the same keys"),
            DataError::BadRequest(_) => ApiError::new(StatusCode::BAD_REQUEST, "PGRST100", message),
            DataError::Rule { code, hint, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message).with_hint(hint)
            }
            DataError::Unsupported(_) => ApiError::new(StatusCode::NOT_IMPLEMENTED, "PGRST127", message)
                .with_hint("this needs PostgreSQL: run reactor-server on Postgres (O2)"),
            DataError::Database {
                code,
                message,
                details,
                hint,
            } => {
                let e = ApiError::new(sqlstate_status(&code, authenticated), code, message);
                let e = match details {
                    Some(d) => e.with_details(d),
                    None => e,
                };
                match hint {
                    Some(h) => e.with_hint(h),
                    None => e,
                }
            }
            DataError::Internal(cause) => {
                tracing::error!(error = %cause, "data request failed");
                ApiError::internal()
            }
        }
    }
}

/// PostgREST's table from SQLSTATE to HTTP status.
pub fn sqlstate_status(code: &str, authenticated: bool) -> StatusCode {
    let s = match code {
        "23503" | "23505" | "23P01" => 409,
        "25006" => 405,
        "42883" | "42P01" => 404,
        "42501" => {
            if authenticated {
                403
            } else {
                401
            }
        }
        "P0001" => 400,
        _ => match code.get(..2).unwrap_or("") {
            "08" | "53" => 503,
            "0L" | "0P" | "28" => 403,
            "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "54" | "55" | "57" | "58" | "F0"
            | "HV" | "P0" | "XX" => 500,
            _ => 400,
        },
    };
    StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST)
}

impl From<reactor_db::DbError> for DataError {
    fn from(e: reactor_db::DbError) -> Self {
        match e {
            reactor_db::DbError::Postgres(ref inner) => match inner.as_database_error() {
                Some(d) => {
                    let pg = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
                    DataError::Database {
                        code: d.code().map(|c| c.to_string()).unwrap_or_default(),
                        message: d.message().to_string(),
                        details: pg.and_then(|p| p.detail()).map(str::to_string),
                        hint: pg.and_then(|p| p.hint()).map(str::to_string),
                    }
                }
                None => DataError::Internal(e.to_string()),
            },
            reactor_db::DbError::PostgresRequest(ref inner) => match inner.as_db() {
                Some(d) => DataError::Database {
                    code: d.code.clone(),
                    message: d.message.clone(),
                    details: d.detail.clone(),
                    hint: d.hint.clone(),
                },
                None => DataError::Internal(e.to_string()),
            },
            other => DataError::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for DataError {
    fn from(e: sqlx::Error) -> Self {
        DataError::from(reactor_db::DbError::Postgres(e))
    }
}
