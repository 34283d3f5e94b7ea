//! `/data/v1` routes. Today: the migration endpoints `reactor data status|migrate` use, for
//! the service key only. The client sends the files; the server recomputes their checksums.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use reactor_core::{ApiError, JsonBody, Principal};
use reactor_db::Db;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::migrations::{self, MigrationError, MigrationFile};

pub fn router(db: Db) -> Router {
    Router::new()
        .route("/migrations", post(apply))
        .route("/migrations/status", post(status))
        .route("/query", post(query))
        .with_state(db)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Files {
    files: Vec<MigrationFile>,
}

impl Files {
    /// The files with checksums computed here.
    fn checked(self) -> Vec<MigrationFile> {
        self.files
            .into_iter()
            .map(|f| MigrationFile::new(f.name, f.sql))
            .collect()
    }
}

impl From<MigrationError> for ApiError {
    fn from(e: MigrationError) -> Self {
        let hint = e.hint();
        let api = match &e {
            MigrationError::Modified { name } => {
                ApiError::new(StatusCode::CONFLICT, "migration_modified", e.to_string())
                    .with_details(name.clone())
            }
            MigrationError::Failed {
                file,
                line,
                column,
                message,
                code,
            } => ApiError::new(
                StatusCode::BAD_REQUEST,
                code.clone(),
                format!("{file}:{line}:{column}: {message}"),
            )
            .with_details(format!("{file}:{line}:{column}")),
            MigrationError::Unsupported => ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                e.to_string(),
            )
            .with_hint("run the migrations against a Postgres server (O2) for now"),
            MigrationError::NotUtf8 { .. } | MigrationError::Read { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_migration", e.to_string())
            }
            MigrationError::Db(cause) => {
                tracing::error!(error = %cause, "migration failed");
                return ApiError::internal();
            }
        };
        match hint {
            Some(h) => api.with_hint(h),
            None => api,
        }
    }
}

async fn status(
    State(db): State<Db>,
    Extension(principal): Extension<Principal>,
    JsonBody(files): JsonBody<Files>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("running migrations")?;
    let states = migrations::status(&db, &files.checked()).await?;
    Ok(Json(json!({ "migrations": states })))
}

async fn apply(
    State(db): State<Db>,
    Extension(principal): Extension<Principal>,
    JsonBody(files): JsonBody<Files>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("running migrations")?;
    let applied = migrations::migrate(&db, &files.checked()).await?;
    Ok(Json(json!({ "applied": applied })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    sql: String,
}

/// The SQL console: one statement, the owner's rights, the service key only.
async fn query(
    State(db): State<Db>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<QueryBody>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("running SQL")?;
    match crate::query::run(&db, &body.sql).await {
        Ok(result) => Ok(Json(json!(result))),
        Err(crate::query::QueryError::Database { code, message }) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, code, message)
                .with_hint("check the statement"))
        }
        Err(crate::query::QueryError::Db(e)) => {
            tracing::error!(error = %e, "query failed");
            Err(ApiError::internal())
        }
    }
}
