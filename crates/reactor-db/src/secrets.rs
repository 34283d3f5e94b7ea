//! Project secrets: named values sealed under the server's master key, set by the service key
//! (`reactor secrets set`), never returned by any API, and read by the capabilities that hand
//! them to user code or upstream services (a function's `env`, later the gateway and connect).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reactor_core::seal::{MasterKey, SealError};
use serde::Serialize;

use crate::{Db, DbError, Migration};

const COMPONENT: &str = "secrets";

/// How long a replica serves secrets it read before reading them again: how long a change
/// takes to reach every replica.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// Longest value accepted.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

const SQLITE: &[Migration] = &[Migration {
    version: 1,
    name: "secrets",
    sql: "
        create table _reactor_secrets (
            name text primary key,
            sealed text not null,
            updated_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        );
    ",
}];

const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    name: "secrets",
    sql: "
        create table reactor.secrets (
            name text primary key,
            sealed text not null,
            updated_at timestamptz not null default now()
        );
        revoke all on reactor.secrets from public;
    ",
}];

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("this server has no master key, so it cannot store secrets")]
    NoMasterKey,
    #[error("`{0}` is not a valid secret name")]
    BadName(String),
    #[error("the value is longer than {MAX_VALUE_BYTES} bytes")]
    TooLong,
    #[error("secret `{0}` cannot be opened: {1}")]
    Open(String, SealError),
}

impl SecretError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SecretError::NoMasterKey => Some(
                "set REACTOR_MASTER_KEY (or master_key in the config file) to 32 random bytes in base64, e.g. from `openssl rand -base64 32`",
            ),
            SecretError::BadName(_) => Some(
                "use letters, digits and `_`, starting with a letter or `_`, at most 128 characters (e.g. STRIPE_KEY)",
            ),
            SecretError::Open(..) => Some(
                "the server's master key is not the one the secret was sealed with; set the secret again",
            ),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub updated_at: String,
}

/// Opened values and when they were read.
type Cached = (Instant, Arc<BTreeMap<String, String>>);

/// The secret store of one project. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Secrets {
    db: Db,
    key: Option<MasterKey>,
    cache: Arc<Mutex<Option<Cached>>>,
}

pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Secrets {
    /// Brings the secrets table up to date.
    pub async fn start(db: &Db, key: Option<MasterKey>) -> Result<Secrets, DbError> {
        db.apply_migrations(COMPONENT, SQLITE, POSTGRES).await?;
        Ok(Secrets {
            db: db.clone(),
            key,
            cache: Arc::new(Mutex::new(None)),
        })
    }

    pub async fn set(&self, name: &str, value: &str) -> Result<(), SecretError> {
        if !valid_name(name) {
            return Err(SecretError::BadName(name.to_string()));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(SecretError::TooLong);
        }
        let key = self.key.as_ref().ok_or(SecretError::NoMasterKey)?;
        let sealed = key.seal(value.as_bytes());
        match &self.db {
            Db::Sqlite(pool) => {
                let (name, sealed) = (name.to_string(), sealed);
                pool.with(move |conn| {
                    conn.execute(
                        "insert into _reactor_secrets (name, sealed) values (?1, ?2)
                         on conflict (name) do update set sealed = excluded.sealed,
                           updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                        [name, sealed],
                    )?;
                    Ok(())
                })
                .await?
            }
            Db::Postgres(pool) => {
                sqlx::query(
                    "insert into reactor.secrets (name, sealed) values ($1, $2)
                     on conflict (name) do update set sealed = excluded.sealed, updated_at = now()",
                )
                .bind(name)
                .bind(sealed)
                .execute(pool)
                .await
                .map_err(DbError::from)?;
            }
        }
        self.forget();
        Ok(())
    }

    /// Names and change times, never values.
    pub async fn list(&self) -> Result<Vec<SecretInfo>, SecretError> {
        let rows = match &self.db {
            Db::Sqlite(pool) => {
                pool.with(|conn| {
                    let mut stmt = conn
                        .prepare("select name, updated_at from _reactor_secrets order by name")?;
                    let rows = stmt
                        .query_map([], |r| {
                            Ok(SecretInfo {
                                name: r.get(0)?,
                                updated_at: r.get(1)?,
                            })
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    Ok(rows)
                })
                .await?
            }
            Db::Postgres(pool) => {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "select name, to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
                     from reactor.secrets order by name",
                )
                .fetch_all(pool)
                .await
                .map_err(DbError::from)?;
                rows.into_iter()
                    .map(|(name, updated_at)| SecretInfo { name, updated_at })
                    .collect()
            }
        };
        Ok(rows)
    }

    /// `false` when there was no such secret.
    pub async fn unset(&self, name: &str) -> Result<bool, SecretError> {
        let removed = match &self.db {
            Db::Sqlite(pool) => {
                let name = name.to_string();
                pool.with(move |conn| {
                    Ok(conn.execute("delete from _reactor_secrets where name = ?1", [name])? == 1)
                })
                .await?
            }
            Db::Postgres(pool) => {
                sqlx::query("delete from reactor.secrets where name = $1")
                    .bind(name)
                    .execute(pool)
                    .await
                    .map_err(DbError::from)?
                    .rows_affected()
                    == 1
            }
        };
        self.forget();
        Ok(removed)
    }

    /// Every secret, opened; read from the database at most once a second per process.
    pub async fn values(&self) -> Result<Arc<BTreeMap<String, String>>, SecretError> {
        if let Some((at, values)) = self.lock().as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Ok(values.clone());
        }
        let sealed: Vec<(String, String)> = match &self.db {
            Db::Sqlite(pool) => {
                pool.with(|conn| {
                    let mut stmt = conn.prepare("select name, sealed from _reactor_secrets")?;
                    let rows = stmt
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    Ok(rows)
                })
                .await?
            }
            Db::Postgres(pool) => sqlx::query_as("select name, sealed from reactor.secrets")
                .fetch_all(pool)
                .await
                .map_err(DbError::from)?,
        };
        let mut values = BTreeMap::new();
        if !sealed.is_empty() {
            let key = self.key.as_ref().ok_or(SecretError::NoMasterKey)?;
            for (name, sealed) in sealed {
                let opened = key
                    .open(&sealed)
                    .map_err(|e| SecretError::Open(name.clone(), e))?;
                values.insert(name, String::from_utf8_lossy(&opened).into_owned());
            }
        }
        let values = Arc::new(values);
        *self.lock() = Some((Instant::now(), values.clone()));
        Ok(values)
    }

    fn forget(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        // Holds a cache entry only; a poisoned lock still holds a consistent one.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["A", "STRIPE_KEY", "_x1", "lower_case"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "É", &"A".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn values_are_sealed_at_rest_and_listed_without_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .expect("db");
        let secrets = Secrets::start(&db, Some(MasterKey::generate()))
            .await
            .expect("start");
        secrets.set("API_TOKEN", "s3cr3t-value").await.expect("set");
        secrets
            .set("API_TOKEN", "s3cr3t-value-2")
            .await
            .expect("replace");
        let listed = secrets.list().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "API_TOKEN");
        assert_eq!(
            secrets
                .values()
                .await
                .expect("values")
                .get("API_TOKEN")
                .map(String::as_str),
            Some("s3cr3t-value-2")
        );
        let Db::Sqlite(pool) = &db else {
            unreachable!()
        };
        let raw: String = pool
            .with(|c| Ok(c.query_row("select sealed from _reactor_secrets", [], |r| r.get(0))?))
            .await
            .expect("raw");
        assert!(!raw.contains("s3cr3t"), "stored sealed: {raw}");
        assert!(secrets.unset("API_TOKEN").await.expect("unset"));
        assert!(!secrets.unset("API_TOKEN").await.expect("unset again"));
        assert!(secrets.values().await.expect("values").is_empty());

        let keyless = Secrets::start(&db, None).await.expect("start");
        assert!(matches!(
            keyless.set("A", "b").await,
            Err(SecretError::NoMasterKey)
        ));
        assert!(matches!(
            secrets.set("not valid", "b").await,
            Err(SecretError::BadName(_))
        ));
    }
}
