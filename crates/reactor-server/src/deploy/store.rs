//! Releases in the database, so every replica sees the same ones: the files of every release
//! by SHA-256 (`deploy_blobs`), the releases (`releases`: the bundle's index, who made it and
//! when, whether its deploy finished), and the append-only log of switches
//! (`release_activations`), whose last row is the release in force.
//!
//! Functions of the same names for both databases, like the capability adapters.

use reactor_db::{Db, DbError, Migration};
use sqlx::Row;

pub const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    name: "releases",
    sql: "
        create table reactor.deploy_blobs (
            sha256 text primary key,
            size bigint not null,
            bytes bytea not null
        );
        create table reactor.releases (
            id text primary key,
            project_id text not null,
            index_json text not null,
            status text not null,
            error text,
            created_ms bigint not null,
            created_by text,
            git_commit text
        );
        create table reactor.release_activations (
            seq bigserial primary key,
            release_id text not null references reactor.releases (id),
            kind text not null,
            at_ms bigint not null,
            by_whom text
        );
    ",
}];

pub const SQLITE: &[Migration] = &[Migration {
    version: 1,
    name: "releases",
    sql: "
        create table _reactor_deploy_blobs (
            sha256 text primary key,
            size integer not null,
            bytes blob not null
        );
        create table _reactor_releases (
            id text primary key,
            project_id text not null,
            index_json text not null,
            status text not null,
            error text,
            created_ms integer not null,
            created_by text,
            git_commit text
        );
        create table _reactor_release_activations (
            seq integer primary key autoincrement,
            release_id text not null references _reactor_releases (id),
            kind text not null,
            at_ms integer not null,
            by_whom text
        );
    ",
}];

/// One release as recorded.
#[derive(Debug, Clone)]
pub struct ReleaseRow {
    pub id: String,
    pub project_id: String,
    pub index_json: String,
    /// `pending` (its deploy is running or died), `failed`, or `ready`.
    pub status: String,
    pub error: Option<String>,
    pub created_ms: i64,
    pub created_by: Option<String>,
    pub git_commit: Option<String>,
    /// Its most recent switch: `(seq, kind, at_ms, by)`.
    pub activated: Option<(i64, String, i64, Option<String>)>,
}

pub async fn prepare(db: &Db) -> Result<(), DbError> {
    db.apply_migrations("deploy", SQLITE, POSTGRES).await
}

/// Which of `hashes` the database does not hold.
pub async fn missing(db: &Db, hashes: &[String]) -> Result<Vec<String>, DbError> {
    let held: Vec<String> = match db {
        Db::Postgres(pool) => {
            sqlx::query_scalar("select sha256 from reactor.deploy_blobs where sha256 = any($1)")
                .bind(hashes)
                .fetch_all(pool)
                .await?
        }
        Db::Sqlite(pool) => {
            let hashes = hashes.to_vec();
            pool.with(move |conn| {
                let mut stmt =
                    conn.prepare_cached("select 1 from _reactor_deploy_blobs where sha256 = ?1")?;
                let mut held = Vec::new();
                for h in hashes {
                    if stmt.exists([&h])? {
                        held.push(h);
                    }
                }
                Ok(held)
            })
            .await?
        }
    };
    let held: std::collections::HashSet<String> = held.into_iter().collect();
    let mut out: Vec<String> = hashes
        .iter()
        .filter(|h| !held.contains(*h))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Stores a blob (already verified against its hash); storing one twice is a no-op.
pub async fn put_blob(db: &Db, sha256: &str, bytes: Vec<u8>) -> Result<(), DbError> {
    match db {
        Db::Postgres(pool) => {
            sqlx::query(
                "insert into reactor.deploy_blobs (sha256, size, bytes) values ($1, $2, $3)
                 on conflict (sha256) do nothing",
            )
            .bind(sha256)
            .bind(bytes.len() as i64)
            .bind(bytes)
            .execute(pool)
            .await?;
        }
        Db::Sqlite(pool) => {
            let sha256 = sha256.to_string();
            pool.with(move |conn| {
                conn.execute(
                    "insert or ignore into _reactor_deploy_blobs (sha256, size, bytes) values (?1, ?2, ?3)",
                    rusqlite::params![sha256, bytes.len() as i64, bytes],
                )?;
                Ok(())
            })
            .await?;
        }
    }
    Ok(())
}

pub async fn blob(db: &Db, sha256: &str) -> Result<Option<Vec<u8>>, DbError> {
    Ok(match db {
        Db::Postgres(pool) => {
            sqlx::query_scalar("select bytes from reactor.deploy_blobs where sha256 = $1")
                .bind(sha256)
                .fetch_optional(pool)
                .await?
        }
        Db::Sqlite(pool) => {
            let sha256 = sha256.to_string();
            pool.with(move |conn| {
                use rusqlite::OptionalExtension;
                Ok(conn
                    .query_row(
                        "select bytes from _reactor_deploy_blobs where sha256 = ?1",
                        [&sha256],
                        |r| r.get(0),
                    )
                    .optional()?)
            })
            .await?
        }
    })
}

/// Records a release whose deploy starts (or starts again after failing); a release already
/// `ready` keeps its record.
pub async fn begin_release(db: &Db, row: &ReleaseRow) -> Result<(), DbError> {
    match db {
        Db::Postgres(pool) => {
            sqlx::query(
                "insert into reactor.releases
                   (id, project_id, index_json, status, created_ms, created_by, git_commit)
                 values ($1, $2, $3, 'pending', $4, $5, $6)
                 on conflict (id) do update set status = 'pending', error = null,
                   created_ms = excluded.created_ms, created_by = excluded.created_by,
                   git_commit = excluded.git_commit
                 where reactor.releases.status <> 'ready'",
            )
            .bind(&row.id)
            .bind(&row.project_id)
            .bind(&row.index_json)
            .bind(row.created_ms)
            .bind(&row.created_by)
            .bind(&row.git_commit)
            .execute(pool)
            .await?;
        }
        Db::Sqlite(pool) => {
            let row = row.clone();
            pool.with(move |conn| {
                conn.execute(
                    "insert into _reactor_releases
                       (id, project_id, index_json, status, created_ms, created_by, git_commit)
                     values (?1, ?2, ?3, 'pending', ?4, ?5, ?6)
                     on conflict (id) do update set status = 'pending', error = null,
                       created_ms = excluded.created_ms, created_by = excluded.created_by,
                       git_commit = excluded.git_commit
                     where _reactor_releases.status <> 'ready'",
                    rusqlite::params![
                        row.id,
                        row.project_id,
                        row.index_json,
                        row.created_ms,
                        row.created_by,
                        row.git_commit
                    ],
                )?;
                Ok(())
            })
            .await?;
        }
    }
    Ok(())
}

pub async fn fail_release(db: &Db, id: &str, error: &str) -> Result<(), DbError> {
    match db {
        Db::Postgres(pool) => {
            sqlx::query(
                "update reactor.releases set status = 'failed', error = $2
                 where id = $1 and status = 'pending'",
            )
            .bind(id)
            .bind(error)
            .execute(pool)
            .await?;
        }
        Db::Sqlite(pool) => {
            let (id, error) = (id.to_string(), error.to_string());
            pool.with(move |conn| {
                conn.execute(
                    "update _reactor_releases set status = 'failed', error = ?2
                     where id = ?1 and status = 'pending'",
                    [&id, &error],
                )?;
                Ok(())
            })
            .await?;
        }
    }
    Ok(())
}

/// The statements that switch to `release` (and mark it ready), for the migrations'
/// transaction: the switch happens exactly when they commit.
pub fn activation(
    release: &str,
    kind: &str,
    at_ms: i64,
    by: &str,
    project: (&str, &str),
) -> Vec<reactor_data::migrations::Epilogue> {
    use reactor_data::migrations::Epilogue;
    vec![
        Epilogue {
            postgres: "update reactor.releases set status = 'ready', error = null where id = $1"
                .into(),
            sqlite: "update _reactor_releases set status = 'ready', error = null where id = ?1"
                .into(),
            params: vec![release.into()],
        },
        Epilogue {
            postgres: "insert into reactor.release_activations (release_id, kind, at_ms, by_whom)
                       values ($1, $2, $3::bigint, $4)"
                .into(),
            sqlite: "insert into _reactor_release_activations (release_id, kind, at_ms, by_whom)
                     values (?1, ?2, ?3, ?4)"
                .into(),
            params: vec![release.into(), kind.into(), at_ms.to_string(), by.into()],
        },
        // The first deploy records the project; later ones were checked against it.
        Epilogue {
            postgres: "insert into reactor.project (project_id, name) values ($1, $2)
                       on conflict (singleton) do update set name = excluded.name
                       where reactor.project.project_id = excluded.project_id"
                .into(),
            sqlite: "insert into _reactor_project (singleton, project_id, name) values (1, ?1, ?2)
                     on conflict (singleton) do update set name = excluded.name
                     where _reactor_project.project_id = excluded.project_id"
                .into(),
            params: vec![project.0.into(), project.1.into()],
        },
        Epilogue {
            postgres: "select pg_notify('reactor_releases', $1)".into(),
            // One process per SQLite database: nobody else to tell.
            sqlite: String::new(),
            params: vec![release.into()],
        },
    ]
}

/// Switches to a release already ready (a rollback), outside any migration.
pub async fn activate(
    db: &Db,
    release: &str,
    kind: &str,
    at_ms: i64,
    by: &str,
) -> Result<(), DbError> {
    match db {
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "insert into reactor.release_activations (release_id, kind, at_ms, by_whom)
                 values ($1, $2, $3, $4)",
            )
            .bind(release)
            .bind(kind)
            .bind(at_ms)
            .bind(by)
            .execute(&mut *tx)
            .await?;
            sqlx::query("select pg_notify('reactor_releases', $1)")
                .bind(release)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Db::Sqlite(pool) => {
            let (release, kind, by) = (release.to_string(), kind.to_string(), by.to_string());
            pool.with(move |conn| {
                conn.execute(
                    "insert into _reactor_release_activations (release_id, kind, at_ms, by_whom)
                     values (?1, ?2, ?3, ?4)",
                    rusqlite::params![release, kind, at_ms, by],
                )?;
                Ok(())
            })
            .await?;
        }
    }
    Ok(())
}

/// The release in force: the last one switched to.
pub async fn active(db: &Db) -> Result<Option<String>, DbError> {
    Ok(match db {
        Db::Postgres(pool) => {
            sqlx::query_scalar(
                "select release_id from reactor.release_activations order by seq desc limit 1",
            )
            .fetch_optional(pool)
            .await?
        }
        Db::Sqlite(pool) => {
            pool.with(|conn| {
                use rusqlite::OptionalExtension;
                Ok(conn
                    .query_row(
                        "select release_id from _reactor_release_activations
                         order by seq desc limit 1",
                        [],
                        |r| r.get(0),
                    )
                    .optional()?)
            })
            .await?
        }
    })
}

const COLUMNS: &str = "r.id, r.project_id, r.index_json, r.status, r.error, r.created_ms,
    r.created_by, r.git_commit, a.seq, a.kind, a.at_ms, a.by_whom";

/// Every release, the newest first (by its last switch, then by when it was made).
pub async fn list(db: &Db) -> Result<Vec<ReleaseRow>, DbError> {
    select(db, None).await
}

pub async fn get(db: &Db, id: &str) -> Result<Option<ReleaseRow>, DbError> {
    Ok(select(db, Some(id)).await?.into_iter().next())
}

async fn select(db: &Db, id: Option<&str>) -> Result<Vec<ReleaseRow>, DbError> {
    match db {
        Db::Postgres(pool) => {
            let sql = format!(
                "select {COLUMNS} from reactor.releases r
                 left join lateral (select seq, kind, at_ms, by_whom
                                    from reactor.release_activations
                                    where release_id = r.id order by seq desc limit 1) a on true
                 where $1::text is null or r.id = $1
                 order by a.seq desc nulls last, r.created_ms desc"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    let seq: Option<i64> = r.try_get("seq")?;
                    Ok(ReleaseRow {
                        id: r.try_get("id")?,
                        project_id: r.try_get("project_id")?,
                        index_json: r.try_get("index_json")?,
                        status: r.try_get("status")?,
                        error: r.try_get("error")?,
                        created_ms: r.try_get("created_ms")?,
                        created_by: r.try_get("created_by")?,
                        git_commit: r.try_get("git_commit")?,
                        activated: match seq {
                            Some(seq) => Some((
                                seq,
                                r.try_get("kind")?,
                                r.try_get("at_ms")?,
                                r.try_get("by_whom")?,
                            )),
                            None => None,
                        },
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(DbError::from)
        }
        Db::Sqlite(pool) => {
            let id = id.map(str::to_string);
            pool.with(move |conn| {
                let sql = format!(
                    "select {COLUMNS} from _reactor_releases r
                     left join _reactor_release_activations a on a.seq =
                       (select max(seq) from _reactor_release_activations where release_id = r.id)
                     where ?1 is null or r.id = ?1
                     order by a.seq is null, a.seq desc, r.created_ms desc"
                );
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt
                    .query_map([&id], |r| {
                        let seq: Option<i64> = r.get(8)?;
                        Ok(ReleaseRow {
                            id: r.get(0)?,
                            project_id: r.get(1)?,
                            index_json: r.get(2)?,
                            status: r.get(3)?,
                            error: r.get(4)?,
                            created_ms: r.get(5)?,
                            created_by: r.get(6)?,
                            git_commit: r.get(7)?,
                            activated: match seq {
                                Some(seq) => Some((seq, r.get(9)?, r.get(10)?, r.get(11)?)),
                                None => None,
                            },
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
        }
    }
}
