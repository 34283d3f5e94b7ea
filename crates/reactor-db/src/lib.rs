//! The shared database handle.
//!
//! One [`Db`] per server: SQLite (rusqlite) for O1, Postgres (sqlx) for O2. It owns the
//! connection pool, applies the versioned system schema at start, and offers the system
//! tables every capability needs (the project record, API keys). Capability crates take a
//! `Db` and run their own SQL through it.
//!
//! Both adapters expose the same functions with the same names; [`Db`] only dispatches.

pub mod postgres;
pub mod requests;
pub mod secrets;
mod sqlite;
pub mod sqlite_functions;
pub mod testing;
pub mod wire;

use std::path::PathBuf;

use reactor_core::KeyTier;
use reactor_core::keys::NewKey;

pub use sqlite::{SqlitePool, WriteOutcome};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// From a Data request connection (`requests`), which speaks through `wire`.
    #[error("postgres: {0}")]
    PostgresRequest(#[from] wire::WireError),
    #[error("cannot open the SQLite database {}: {source}", path.display())]
    OpenSqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot connect to Postgres at {url}: {source}")]
    ConnectPostgres {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("system schema migration {component} {version} ({name}) failed: {message}")]
    Migration {
        component: &'static str,
        version: i64,
        name: &'static str,
        message: String,
    },
    #[error(
        "the database holds {component} schema version {found}, newer than this binary knows ({known}); upgrade reactor"
    )]
    SchemaTooNew {
        component: &'static str,
        found: i64,
        known: i64,
    },
    #[error("a database task failed: {0}")]
    Task(String),
}

/// Which engine a [`Db`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// The project a server serves: recorded by `reactor dev` at start, by the first deploy on O2.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProjectRecord {
    pub id: String,
    pub name: String,
}

/// A project API key as the system table holds it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub tier: KeyTier,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked: bool,
}

#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    /// Opens `url`: `postgres://…`/`postgresql://…` for Postgres; `sqlite://PATH`,
    /// `sqlite:PATH` or a plain path for SQLite. The system schema is brought up to date.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Db::Postgres(postgres::connect(url).await?)
        } else {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            Db::Sqlite(SqlitePool::open(PathBuf::from(path)).await?)
        };
        db.migrate().await?;
        Ok(db)
    }

    pub fn engine(&self) -> Engine {
        match self {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// Applies the system schema migrations this binary knows and the database lacks.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.apply_migrations(CORE_COMPONENT, sqlite::MIGRATIONS, postgres::MIGRATIONS)
            .await
    }

    /// Brings one component's system tables up to date: each capability owns its tables and
    /// hands its migrations (one list per dialect) here at start. Versions are counted per
    /// component, in the same bookkeeping table.
    pub async fn apply_migrations(
        &self,
        component: &'static str,
        sqlite_migrations: &'static [Migration],
        postgres_migrations: &'static [Migration],
    ) -> Result<(), DbError> {
        match self {
            Db::Sqlite(p) => sqlite::migrate(p, component, sqlite_migrations).await,
            Db::Postgres(p) => postgres::migrate(p, component, postgres_migrations).await,
        }
    }

    /// A round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(p) => sqlite::ping(p).await,
            Db::Postgres(p) => postgres::ping(p).await,
        }
    }

    /// The project this server serves, once recorded.
    pub async fn project(&self) -> Result<Option<ProjectRecord>, DbError> {
        match self {
            Db::Sqlite(p) => sqlite::project(p).await,
            Db::Postgres(p) => postgres::project(p).await,
        }
    }

    pub async fn set_project(&self, project_id: &str, name: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(p) => sqlite::set_project(p, project_id, name).await,
            Db::Postgres(p) => postgres::set_project(p, project_id, name).await,
        }
    }

    pub async fn insert_api_key(&self, key: &NewKey, name: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(p) => sqlite::insert_api_key(p, key, name).await,
            Db::Postgres(p) => postgres::insert_api_key(p, key, name).await,
        }
    }

    /// The key whose secret hashes to `hash`, revoked or not.
    pub async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, DbError> {
        match self {
            Db::Sqlite(p) => sqlite::find_api_key(p, hash).await,
            Db::Postgres(p) => postgres::find_api_key(p, hash).await,
        }
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, DbError> {
        match self {
            Db::Sqlite(p) => sqlite::list_api_keys(p).await,
            Db::Postgres(p) => postgres::list_api_keys(p).await,
        }
    }

    /// Marks a key revoked; `false` when no live key has that id.
    pub async fn revoke_api_key(&self, id: &str) -> Result<bool, DbError> {
        match self {
            Db::Sqlite(p) => sqlite::revoke_api_key(p, id).await,
            Db::Postgres(p) => postgres::revoke_api_key(p, id).await,
        }
    }

    /// Records that a key was used; at most one write a minute per key.
    pub async fn touch_api_key(&self, id: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(p) => sqlite::touch_api_key(p, id).await,
            Db::Postgres(p) => postgres::touch_api_key(p, id).await,
        }
    }
}

/// The component name of the tables this crate owns (project record, API keys).
const CORE_COMPONENT: &str = "core";

/// One step of a component's system schema. Lists are in version order, starting at 1; a
/// version once released never changes.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

fn tier_from_db(s: &str) -> KeyTier {
    match s {
        "svc" => KeyTier::Service,
        _ => KeyTier::Public,
    }
}
