//! O1: storage metadata in the project's SQLite database. SQLite has no row-level security,
//! so every statement that reads or changes object rows as a caller carries the policy
//! predicates ([`Preds`]) the Data capability derives from the policies recorded for
//! `storage.objects` — the same policies Postgres enforces — and written rows are checked
//! against the `WITH CHECK` side before the write is kept.

use reactor_core::Principal;
use reactor_db::{DbError, Migration, SqlitePool};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::StorageError;
use crate::meta::{Bucket, ObjectRow, Pending, Preds};
use crate::tus::Upload;

/// The storage tables, the row-level security switch for `storage.objects` and its default
/// policies, recorded where the Data capability's simulation reads them. The policy records
/// are the translation of the Postgres defaults (`postgres.rs`): keep the two in step.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "buckets, objects, pending bytes, signing key, default policies",
        sql: r#"
        create table _reactor_storage_buckets (
            id text primary key,
            public integer not null default 0,
            file_size_limit integer,
            allowed_mime_types text,
            org_id text,
            owner_id text,
            created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            updated_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        );
        create table _reactor_storage_objects (
            id text primary key,
            bucket_id text not null references _reactor_storage_buckets (id),
            name text not null,
            owner_id text,
            org_id text,
            size integer not null,
            mime_type text not null,
            sha256 text not null,
            blob text not null unique,
            metadata text not null default '{}',
            cache_control text,
            created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            updated_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            unique (bucket_id, name)
        );
        create table _reactor_storage_pending (
            blob text primary key,
            kind text not null,
            since integer not null default (unixepoch())
        );
        create table _reactor_storage_signing_key (
            id integer primary key check (id = 1),
            key text not null
        );
        create table if not exists _reactor_rls (table_name text primary key);
        create table if not exists _reactor_policies (
            table_name text not null,
            name text not null,
            record text not null,
            primary key (table_name, name)
        );
        insert or ignore into _reactor_rls (table_name) values ('storage.objects');
        insert or ignore into _reactor_policies (table_name, name, record) values
        ('storage.objects', 'reactor: owners manage their objects',
         '{"table":"storage.objects","name":"reactor: owners manage their objects","permissive":true,"command":"all","roles":["reactor_authenticated"],"using":"owner_id = reactor_user_id()","check":"owner_id = reactor_user_id() AND (org_id IS NULL OR org_id = reactor_org_id())"}'),
        ('storage.objects', 'reactor: org members share their org''s objects',
         '{"table":"storage.objects","name":"reactor: org members share their org''s objects","permissive":true,"command":"all","roles":["reactor_authenticated"],"using":"org_id = reactor_org_id()","check":"org_id = reactor_org_id()"}');
    "#,
    },
    Migration {
        version: 2,
        name: "resumable uploads",
        sql: "
        create table _reactor_storage_uploads (
            id text primary key,
            bucket_id text not null,
            name text not null,
            user_id text,
            service integer not null,
            length integer not null,
            received integer not null default 0,
            mime_type text not null,
            cache_control text,
            metadata text not null default '{}',
            upsert integer not null default 0,
            chunks text not null default '[]',
            expires_at integer not null
        );
    ",
    },
];

const OBJECT_COLUMNS: &str = "id, bucket_id, name, owner_id, org_id, size, mime_type, sha256, \
     blob, metadata, cache_control, created_at, updated_at";

const BUCKET_COLUMNS: &str = "id, public, file_size_limit, allowed_mime_types, org_id, \
     owner_id, created_at, updated_at";

fn object(r: &Row<'_>) -> rusqlite::Result<ObjectRow> {
    let metadata: String = r.get(9)?;
    Ok(ObjectRow {
        id: r.get(0)?,
        bucket_id: r.get(1)?,
        name: r.get(2)?,
        owner_id: r.get(3)?,
        org_id: r.get(4)?,
        size: r.get(5)?,
        mime_type: r.get(6)?,
        sha256: r.get(7)?,
        blob: r.get(8)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        cache_control: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
    })
}

fn bucket(r: &Row<'_>) -> rusqlite::Result<Bucket> {
    let types: Option<String> = r.get(3)?;
    Ok(Bucket {
        id: r.get(0)?,
        public: r.get(1)?,
        file_size_limit: r.get::<_, Option<i64>>(2)?.map(|n| n as u64),
        allowed_mime_types: types.and_then(|t| serde_json::from_str(&t).ok()),
        org_id: r.get(4)?,
        owner_id: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

fn now() -> String {
    reactor_core::time::utc_now_millis()
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn db(e: rusqlite::Error) -> StorageError {
    StorageError::Db(DbError::from(e))
}

/// A predicate for SQL text: the caller's, or true for the service key. A policy that
/// yields NULL (a comparison with a missing user) refuses, as on Postgres.
fn pred(preds: &Option<Preds>, check: bool) -> String {
    match preds {
        Some(p) if check => format!("coalesce(({}), 0)", p.check),
        Some(p) => format!("coalesce(({}), 0)", p.using),
        None => "1".into(),
    }
}

/// Runs a domain operation on a pooled connection; domain errors ride inside the `Ok`.
async fn with<T: Send + 'static>(
    pool: &SqlitePool,
    f: impl FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    pool.with(move |conn| Ok(f(conn))).await?
}

/// Runs a write as `principal` on the writer thread; a failure rolls this write back.
async fn write<T: Send + 'static>(
    pool: &SqlitePool,
    principal: &Principal,
    f: impl FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    pool.write_with_principal(principal, move |conn| f(conn).into())
        .await?
}

pub async fn buckets(pool: &SqlitePool) -> Result<Vec<Bucket>, StorageError> {
    with(pool, |conn| {
        let mut stmt = conn
            .prepare_cached(&format!(
                "select {BUCKET_COLUMNS} from _reactor_storage_buckets order by id"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map([], bucket)
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(rows)
    })
    .await
}

pub async fn find_bucket(pool: &SqlitePool, id: &str) -> Result<Option<Bucket>, StorageError> {
    let id = id.to_string();
    with(pool, move |conn| {
        conn.prepare_cached(&format!(
            "select {BUCKET_COLUMNS} from _reactor_storage_buckets where id = ?1"
        ))
        .and_then(|mut stmt| stmt.query_row([&id], bucket).optional())
        .map_err(db)
    })
    .await
}

pub async fn insert_bucket(pool: &SqlitePool, b: &Bucket) -> Result<(), StorageError> {
    let b = b.clone();
    with(pool, move |conn| {
        let types = b
            .allowed_mime_types
            .as_ref()
            .map(|t| serde_json::Value::from(t.clone()).to_string());
        conn.execute(
            "insert into _reactor_storage_buckets
                 (id, public, file_size_limit, allowed_mime_types, org_id, owner_id)
             values (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                b.id,
                b.public,
                b.file_size_limit.map(|n| n as i64),
                types,
                b.org_id,
                b.owner_id
            ],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                StorageError::BucketExists(b.id.clone())
            } else {
                db(e)
            }
        })?;
        Ok(())
    })
    .await
}

pub async fn update_bucket(pool: &SqlitePool, b: &Bucket) -> Result<(), StorageError> {
    let b = b.clone();
    with(pool, move |conn| {
        let types = b
            .allowed_mime_types
            .as_ref()
            .map(|t| serde_json::Value::from(t.clone()).to_string());
        conn.execute(
            "update _reactor_storage_buckets
             set public = ?2, file_size_limit = ?3, allowed_mime_types = ?4, updated_at = ?5
             where id = ?1",
            params![
                b.id,
                b.public,
                b.file_size_limit.map(|n| n as i64),
                types,
                now()
            ],
        )
        .map_err(db)?;
        Ok(())
    })
    .await
}

pub async fn empty_bucket(pool: &SqlitePool, id: &str) -> Result<Vec<String>, StorageError> {
    let id = id.to_string();
    with(pool, move |conn| {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let blobs = {
            let mut stmt = tx
                .prepare("select blob from _reactor_storage_objects where bucket_id = ?1")
                .map_err(db)?;
            stmt.query_map([&id], |r| r.get::<_, String>(0))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?
        };
        tx.execute(
            "insert or replace into _reactor_storage_pending (blob, kind)
             select blob, 'delete' from _reactor_storage_objects where bucket_id = ?1",
            [&id],
        )
        .map_err(db)?;
        tx.execute(
            "delete from _reactor_storage_objects where bucket_id = ?1",
            [&id],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(blobs)
    })
    .await
}

pub async fn delete_bucket(pool: &SqlitePool, id: &str) -> Result<(), StorageError> {
    let id = id.to_string();
    with(pool, move |conn| {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let held: i64 = tx
            .query_row(
                "select count(*) from _reactor_storage_objects where bucket_id = ?1",
                [&id],
                |r| r.get(0),
            )
            .map_err(db)?;
        if held > 0 {
            return Err(StorageError::BucketNotEmpty(id));
        }
        tx.execute("delete from _reactor_storage_buckets where id = ?1", [&id])
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(())
    })
    .await
}

pub async fn find(
    pool: &SqlitePool,
    principal: &Principal,
    preds: Option<Preds>,
    bucket_id: &str,
    name: &str,
) -> Result<Option<ObjectRow>, StorageError> {
    let sql = format!(
        "select {OBJECT_COLUMNS} from _reactor_storage_objects
         where bucket_id = ?1 and name = ?2 and {}",
        pred(&preds, false)
    );
    pool.read_with_principal(principal, |conn| {
        Ok(conn
            .prepare_cached(&sql)?
            .query_row([bucket_id, name], object)
            .optional()?)
    })
    .await
    .map_err(StorageError::from)
}

pub async fn list(
    pool: &SqlitePool,
    principal: &Principal,
    preds: Option<Preds>,
    bucket_id: &str,
    pattern: &str,
) -> Result<Vec<ObjectRow>, StorageError> {
    let sql = format!(
        "select {OBJECT_COLUMNS} from _reactor_storage_objects
         where bucket_id = ?1 and name like ?2 escape '\\' and {}
         order by name",
        pred(&preds, false)
    );
    let (bucket_id, pattern) = (bucket_id.to_string(), pattern.to_string());
    pool.with_principal(principal, move |conn| {
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map([bucket_id, pattern], object)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
    .await
    .map_err(StorageError::from)
}

/// A row's columns in table order, `now` standing for both timestamps (`?12`): what an
/// insert binds, and what a policy check of a row not yet written reads.
fn values(row: &ObjectRow, now: String) -> [rusqlite::types::Value; 12] {
    use rusqlite::types::Value as V;
    let text = |s: &Option<String>| s.clone().map_or(V::Null, V::Text);
    [
        V::Text(row.id.clone()),
        V::Text(row.bucket_id.clone()),
        V::Text(row.name.clone()),
        text(&row.owner_id),
        text(&row.org_id),
        V::Integer(row.size),
        V::Text(row.mime_type.clone()),
        V::Text(row.sha256.clone()),
        V::Text(row.blob.clone()),
        V::Text(row.metadata.to_string()),
        text(&row.cache_control),
        V::Text(now),
    ]
}

/// Does `row` (not yet in the table) pass `check`?
fn passes(conn: &Connection, check: &str, row: &ObjectRow) -> Result<bool, StorageError> {
    let sql = format!(
        "select count(*) from (select ?1 as id, ?2 as bucket_id, ?3 as name, ?4 as owner_id,
             ?5 as org_id, ?6 as size, ?7 as mime_type, ?8 as sha256, ?9 as blob,
             ?10 as metadata, ?11 as cache_control, ?12 as created_at, ?12 as updated_at)
         where {check}"
    );
    let n: i64 = conn
        .query_row(&sql, rusqlite::params_from_iter(values(row, now())), |r| {
            r.get(0)
        })
        .map_err(db)?;
    Ok(n > 0)
}

/// The existing row at the path and whether the caller may update it.
fn existing(
    conn: &Connection,
    update: &Option<Preds>,
    bucket_id: &str,
    name: &str,
) -> Result<Option<(String, String, bool)>, StorageError> {
    conn.query_row(
        &format!(
            "select id, blob, {} from _reactor_storage_objects where bucket_id = ?1 and name = ?2",
            pred(update, false)
        ),
        [bucket_id, name],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
    .map_err(db)
}

pub async fn may_write(
    pool: &SqlitePool,
    principal: &Principal,
    insert: Option<Preds>,
    update: Option<Preds>,
    row: &ObjectRow,
    upsert: bool,
) -> Result<(), StorageError> {
    let row = row.clone();
    pool.with_principal(principal, move |conn| {
        Ok(decide(conn, &insert, &update, &row, upsert).map(|_| ()))
    })
    .await?
}

/// Which write `row` would be — `None` an insert, `Some(id, blob)` an update of the row
/// there now — or why it is refused.
fn decide(
    conn: &Connection,
    insert: &Option<Preds>,
    update: &Option<Preds>,
    row: &ObjectRow,
    upsert: bool,
) -> Result<Option<(String, String)>, StorageError> {
    match existing(conn, update, &row.bucket_id, &row.name)? {
        Some(_) if !upsert => Err(StorageError::ObjectExists(row.name.clone())),
        Some((_, _, false)) => Err(StorageError::Denied("update")),
        Some((id, blob, true)) => {
            if passes(conn, &pred(update, true), row)? {
                Ok(Some((id, blob)))
            } else {
                Err(StorageError::Denied("update"))
            }
        }
        None => {
            if passes(conn, &pred(insert, true), row)? {
                Ok(None)
            } else {
                Err(StorageError::Denied("insert"))
            }
        }
    }
}

pub async fn commit(
    pool: &SqlitePool,
    principal: &Principal,
    insert: Option<Preds>,
    update: Option<Preds>,
    row: &ObjectRow,
    upsert: bool,
) -> Result<(ObjectRow, Option<String>), StorageError> {
    let row = row.clone();
    write(pool, principal, move |conn| {
        let now = now();
        let replaced = match decide(conn, &insert, &update, &row, upsert)? {
            Some((id, old_blob)) => {
                conn.execute(
                    "update _reactor_storage_objects
                     set owner_id = ?2, org_id = ?3, size = ?4, mime_type = ?5, sha256 = ?6,
                         blob = ?7, metadata = ?8, cache_control = ?9, updated_at = ?10
                     where id = ?1",
                    params![
                        id,
                        row.owner_id,
                        row.org_id,
                        row.size,
                        row.mime_type,
                        row.sha256,
                        row.blob,
                        row.metadata.to_string(),
                        row.cache_control,
                        now
                    ],
                )
                .map_err(db)?;
                conn.execute(
                    "insert or replace into _reactor_storage_pending (blob, kind) values (?1, 'delete')",
                    [&old_blob],
                )
                .map_err(db)?;
                Some(old_blob)
            }
            None => {
                conn.execute(
                    "insert into _reactor_storage_objects
                         (id, bucket_id, name, owner_id, org_id, size, mime_type, sha256, blob,
                          metadata, cache_control, created_at, updated_at)
                     values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
                    rusqlite::params_from_iter(values(&row, now)),
                )
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StorageError::ObjectExists(row.name.clone())
                    } else {
                        db(e)
                    }
                })?;
                None
            }
        };
        // The bytes are pointed to now: no longer pending.
        conn.execute(
            "delete from _reactor_storage_pending where blob = ?1 and kind = 'upload'",
            [&row.blob],
        )
        .map_err(db)?;
        let stored = conn
            .query_row(
                &format!("select {OBJECT_COLUMNS} from _reactor_storage_objects where blob = ?1"),
                [&row.blob],
                object,
            )
            .map_err(db)?;
        Ok((stored, replaced))
    })
    .await
}

pub async fn remove(
    pool: &SqlitePool,
    principal: &Principal,
    delete: Option<Preds>,
    bucket_id: &str,
    names: &[String],
) -> Result<Vec<ObjectRow>, StorageError> {
    let (bucket_id, names) = (bucket_id.to_string(), names.to_vec());
    let select = format!(
        "select {OBJECT_COLUMNS} from _reactor_storage_objects
         where bucket_id = ?1 and name = ?2 and {}",
        pred(&delete, false)
    );
    write(pool, principal, move |conn| {
        let mut removed = Vec::new();
        for name in &names {
            let Some(row) = conn
                .query_row(&select, [&bucket_id, name], object)
                .optional()
                .map_err(db)?
            else {
                continue;
            };
            conn.execute(
                "delete from _reactor_storage_objects where id = ?1",
                [&row.id],
            )
            .map_err(db)?;
            conn.execute(
                "insert or replace into _reactor_storage_pending (blob, kind) values (?1, 'delete')",
                [&row.blob],
            )
            .map_err(db)?;
            removed.push(row);
        }
        Ok(removed)
    })
    .await
}

pub async fn rename(
    pool: &SqlitePool,
    principal: &Principal,
    update: Option<Preds>,
    bucket_id: &str,
    from: &str,
    dest: &Bucket,
    to: &str,
) -> Result<ObjectRow, StorageError> {
    let (bucket_id, from, to) = (bucket_id.to_string(), from.to_string(), to.to_string());
    let (dest_id, dest_org) = (dest.id.clone(), dest.org_id.clone());
    let using = format!(
        "select {OBJECT_COLUMNS} from _reactor_storage_objects
         where bucket_id = ?1 and name = ?2 and {}",
        pred(&update, false)
    );
    let check = format!(
        "select count(*) from _reactor_storage_objects where id = ?1 and {}",
        pred(&update, true)
    );
    write(pool, principal, move |conn| {
        let row = conn
            .query_row(&using, [&bucket_id, &from], object)
            .optional()
            .map_err(db)?
            .ok_or_else(|| StorageError::ObjectNotFound(from.clone()))?;
        conn.execute(
            "update _reactor_storage_objects
             set bucket_id = ?2, name = ?3, org_id = ?4, updated_at = ?5 where id = ?1",
            params![row.id, dest_id, to, dest_org, now()],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                StorageError::ObjectExists(to.clone())
            } else {
                db(e)
            }
        })?;
        let ok: i64 = conn
            .query_row(&check, [&row.id], |r| r.get(0))
            .map_err(db)?;
        if ok == 0 {
            return Err(StorageError::Denied("update"));
        }
        conn.query_row(
            &format!("select {OBJECT_COLUMNS} from _reactor_storage_objects where id = ?1"),
            [&row.id],
            object,
        )
        .map_err(db)
    })
    .await
}

/// Through the writer thread, so it shares a commit with the writes queued beside it.
pub async fn pending_add(pool: &SqlitePool, blob: &str, kind: Pending) -> Result<(), StorageError> {
    let blob = blob.to_string();
    let system = reactor_core::Principal::from_key("storage", reactor_core::KeyTier::Service);
    write(pool, &system, move |conn| {
        conn.execute(
            "insert into _reactor_storage_pending (blob, kind) values (?1, ?2)
             on conflict (blob) do update set kind = excluded.kind",
            [&blob, kind.name()],
        )
        .map_err(db)?;
        Ok(())
    })
    .await
}

pub async fn pending_done(pool: &SqlitePool, blob: &str) -> Result<(), StorageError> {
    let blob = blob.to_string();
    let system = reactor_core::Principal::from_key("storage", reactor_core::KeyTier::Service);
    write(pool, &system, move |conn| {
        conn.execute(
            "delete from _reactor_storage_pending where blob = ?1",
            [&blob],
        )
        .map_err(db)?;
        Ok(())
    })
    .await
}

pub async fn pending_due(
    pool: &SqlitePool,
    abandoned_secs: i64,
) -> Result<Vec<String>, StorageError> {
    with(pool, move |conn| {
        conn.execute(
            "delete from _reactor_storage_pending
             where kind = 'upload'
               and exists (select 1 from _reactor_storage_objects o
                           where o.blob = _reactor_storage_pending.blob)",
            [],
        )
        .map_err(db)?;
        let mut stmt = conn
            .prepare(
                "select blob from _reactor_storage_pending p
                 where (kind = 'delete' or since <= unixepoch() - ?1)
                   and not exists (select 1 from _reactor_storage_objects o where o.blob = p.blob)",
            )
            .map_err(db)?;
        let due = stmt
            .query_map([abandoned_secs], |r| r.get::<_, String>(0))
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(due)
    })
    .await
}

pub async fn signing_key(pool: &SqlitePool, candidate: &str) -> Result<String, StorageError> {
    let candidate = candidate.to_string();
    with(pool, move |conn| {
        conn.execute(
            "insert or ignore into _reactor_storage_signing_key (id, key) values (1, ?1)",
            [&candidate],
        )
        .map_err(db)?;
        conn.query_row(
            "select key from _reactor_storage_signing_key where id = 1",
            [],
            |r| r.get(0),
        )
        .map_err(db)
    })
    .await
}

const UPLOAD_COLUMNS: &str = "id, bucket_id, name, user_id, service, length, received, mime_type, \
     cache_control, metadata, upsert, chunks, expires_at";

fn upload(r: &Row<'_>) -> rusqlite::Result<Upload> {
    let metadata: String = r.get(9)?;
    let chunks: String = r.get(11)?;
    Ok(Upload {
        id: r.get(0)?,
        bucket_id: r.get(1)?,
        name: r.get(2)?,
        user_id: r.get(3)?,
        service: r.get(4)?,
        length: r.get::<_, i64>(5)? as u64,
        offset: r.get::<_, i64>(6)? as u64,
        mime_type: r.get(7)?,
        cache_control: r.get(8)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        upsert: r.get(10)?,
        chunks: serde_json::from_str(&chunks).unwrap_or_default(),
        expires_at: r.get(12)?,
    })
}

pub async fn insert_upload(pool: &SqlitePool, u: &Upload) -> Result<(), StorageError> {
    let u = u.clone();
    with(pool, move |conn| {
        conn.execute(
            &format!(
                "insert into _reactor_storage_uploads ({UPLOAD_COLUMNS})
                 values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params![
                u.id,
                u.bucket_id,
                u.name,
                u.user_id,
                u.service,
                u.length as i64,
                u.offset as i64,
                u.mime_type,
                u.cache_control,
                u.metadata.to_string(),
                u.upsert,
                serde_json::to_string(&u.chunks).unwrap_or_default(),
                u.expires_at
            ],
        )
        .map_err(db)?;
        Ok(())
    })
    .await
}

pub async fn find_upload(pool: &SqlitePool, id: &str) -> Result<Option<Upload>, StorageError> {
    let id = id.to_string();
    with(pool, move |conn| {
        conn.query_row(
            &format!("select {UPLOAD_COLUMNS} from _reactor_storage_uploads where id = ?1"),
            [&id],
            upload,
        )
        .optional()
        .map_err(db)
    })
    .await
}

/// Moves the upload from `from` to `to` bytes with `chunks`, unless another request moved it
/// first (false).
pub async fn advance_upload(
    pool: &SqlitePool,
    id: &str,
    from: u64,
    to: u64,
    chunks: &[crate::tus::Chunk],
) -> Result<bool, StorageError> {
    let (id, chunks) = (
        id.to_string(),
        serde_json::to_string(chunks).unwrap_or_default(),
    );
    with(pool, move |conn| {
        let n = conn
            .execute(
                "update _reactor_storage_uploads set received = ?3, chunks = ?4
                 where id = ?1 and received = ?2",
                params![id, from as i64, to as i64, chunks],
            )
            .map_err(db)?;
        Ok(n == 1)
    })
    .await
}

pub async fn delete_upload(pool: &SqlitePool, id: &str) -> Result<(), StorageError> {
    let id = id.to_string();
    with(pool, move |conn| {
        conn.execute("delete from _reactor_storage_uploads where id = ?1", [&id])
            .map_err(db)?;
        Ok(())
    })
    .await
}

/// Removes uploads past their expiry; their chunks are pending bytes the sweep removes.
pub async fn expire_uploads(pool: &SqlitePool, now: i64) -> Result<Vec<Upload>, StorageError> {
    with(pool, move |conn| {
        let mut stmt = conn
            .prepare(&format!(
                "delete from _reactor_storage_uploads where expires_at < ?1 returning {UPLOAD_COLUMNS}"
            ))
            .map_err(db)?;
        let gone = stmt
            .query_map([now], upload)
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(gone)
    })
    .await
}
