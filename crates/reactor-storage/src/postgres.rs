//! O2: storage metadata in the `storage` schema of the project's Postgres database, named as
//! Supabase names it (`storage.buckets`, `storage.objects`), so policies written for Supabase
//! read naturally. Object rows are read and written in a transaction running as the caller
//! (`begin_as`), where real row-level security applies.

use reactor_core::Principal;
use reactor_db::{DbError, Migration};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::StorageError;
use crate::meta::{Bucket, ObjectRow, Pending};
use crate::tus::{Chunk, Upload};

/// The default policies here and the records in `sqlite.rs` are the same rules: keep the
/// two in step.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "buckets, objects, pending bytes, signing key, default policies",
        sql: r#"
        create schema if not exists storage;
        create table storage.buckets (
            id text primary key,
            public boolean not null default false,
            file_size_limit bigint,
            allowed_mime_types text[],
            org_id uuid,
            owner_id uuid,
            created_at timestamptz not null default now(),
            updated_at timestamptz not null default now()
        );
        create table storage.objects (
            id uuid primary key,
            bucket_id text not null references storage.buckets (id),
            name text not null,
            owner_id uuid,
            org_id uuid,
            size bigint not null,
            mime_type text not null,
            sha256 text not null,
            blob text not null unique,
            metadata jsonb not null default '{}',
            cache_control text,
            created_at timestamptz not null default now(),
            updated_at timestamptz not null default now(),
            unique (bucket_id, name)
        );
        create index objects_bucket_name_prefix on storage.objects (bucket_id, name text_pattern_ops);
        create table storage.pending (
            blob text primary key,
            kind text not null check (kind in ('upload', 'delete')),
            since timestamptz not null default now()
        );
        create table storage.signing_key (
            id int primary key check (id = 1),
            key text not null
        );
        revoke all on all tables in schema storage from public;
        grant usage on schema storage to reactor_anon, reactor_authenticated, reactor_service;
        grant select, insert, update, delete on storage.objects
            to reactor_anon, reactor_authenticated, reactor_service;
        grant select on storage.buckets to reactor_anon, reactor_authenticated, reactor_service;
        -- Bytes a caller's delete or replace leaves behind are recorded in the caller's own
        -- transaction; only the server reads the table.
        grant insert on storage.pending to reactor_anon, reactor_authenticated, reactor_service;

        alter table storage.objects enable row level security;
        create policy "reactor: owners manage their objects" on storage.objects
            for all to reactor_authenticated
            using (owner_id = reactor.user_id())
            with check (owner_id = reactor.user_id() and (org_id is null or org_id = reactor.org_id()));
        create policy "reactor: org members share their org's objects" on storage.objects
            for all to reactor_authenticated
            using (org_id = reactor.org_id())
            with check (org_id = reactor.org_id());
    "#,
    },
    Migration {
        version: 2,
        name: "resumable uploads",
        sql: r#"
        create table storage.uploads (
            id uuid primary key,
            bucket_id text not null,
            name text not null,
            user_id uuid,
            service boolean not null,
            length bigint not null,
            received bigint not null default 0,
            mime_type text not null,
            cache_control text,
            metadata jsonb not null default '{}',
            upsert boolean not null default false,
            chunks jsonb not null default '[]',
            expires_at bigint not null
        );
        revoke all on storage.uploads from public;
    "#,
    },
];

/// Timestamps as RFC 3339 UTC with milliseconds, as O1 stores them.
macro_rules! ts {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            " at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

macro_rules! object_columns {
    () => {
        concat!(
            "id::text, bucket_id, name, owner_id::text, org_id::text, size, mime_type, sha256, blob, metadata::text, cache_control, ",
            ts!("created_at"),
            ", ",
            ts!("updated_at")
        )
    };
}

macro_rules! bucket_columns {
    () => {
        concat!(
            "id, public, file_size_limit, allowed_mime_types, org_id::text, owner_id::text, ",
            ts!("created_at"),
            ", ",
            ts!("updated_at")
        )
    };
}

fn object(r: &PgRow) -> Result<ObjectRow, sqlx::Error> {
    let metadata: String = r.try_get(9)?;
    Ok(ObjectRow {
        id: r.try_get(0)?,
        bucket_id: r.try_get(1)?,
        name: r.try_get(2)?,
        owner_id: r.try_get(3)?,
        org_id: r.try_get(4)?,
        size: r.try_get(5)?,
        mime_type: r.try_get(6)?,
        sha256: r.try_get(7)?,
        blob: r.try_get(8)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        cache_control: r.try_get(10)?,
        created_at: r.try_get(11)?,
        updated_at: r.try_get(12)?,
    })
}

fn bucket(r: &PgRow) -> Result<Bucket, sqlx::Error> {
    Ok(Bucket {
        id: r.try_get(0)?,
        public: r.try_get(1)?,
        file_size_limit: r.try_get::<Option<i64>, _>(2)?.map(|n| n as u64),
        allowed_mime_types: r.try_get(3)?,
        org_id: r.try_get(4)?,
        owner_id: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
    })
}

fn db(e: sqlx::Error) -> StorageError {
    StorageError::Db(DbError::from(e))
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// A write's database error in the caller's words: 42501 is a policy's refusal, 23505 a
/// path already taken.
fn write_error(e: sqlx::Error, what: &'static str, name: &str) -> StorageError {
    match sqlstate(&e).as_deref() {
        Some("42501") => StorageError::Denied(what),
        Some("23505") => StorageError::ObjectExists(name.to_string()),
        _ => db(e),
    }
}

async fn begin_as(
    pool: &PgPool,
    principal: &Principal,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StorageError> {
    Ok(reactor_db::postgres::begin_as(pool, principal).await?)
}

pub async fn buckets(pool: &PgPool) -> Result<Vec<Bucket>, StorageError> {
    let rows = sqlx::query(concat!(
        "select ",
        bucket_columns!(),
        " from storage.buckets order by id"
    ))
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(bucket)
        .collect::<Result<_, _>>()
        .map_err(db)
}

pub async fn find_bucket(pool: &PgPool, id: &str) -> Result<Option<Bucket>, StorageError> {
    let row = sqlx::query(concat!(
        "select ",
        bucket_columns!(),
        " from storage.buckets where id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    row.as_ref().map(bucket).transpose().map_err(db)
}

pub async fn insert_bucket(pool: &PgPool, b: &Bucket) -> Result<(), StorageError> {
    sqlx::query(
        "insert into storage.buckets
             (id, public, file_size_limit, allowed_mime_types, org_id, owner_id)
         values ($1, $2, $3, $4, $5::uuid, $6::uuid)",
    )
    .bind(&b.id)
    .bind(b.public)
    .bind(b.file_size_limit.map(|n| n as i64))
    .bind(&b.allowed_mime_types)
    .bind(&b.org_id)
    .bind(&b.owner_id)
    .execute(pool)
    .await
    .map_err(|e| match sqlstate(&e).as_deref() {
        Some("23505") => StorageError::BucketExists(b.id.clone()),
        _ => db(e),
    })?;
    Ok(())
}

pub async fn update_bucket(pool: &PgPool, b: &Bucket) -> Result<(), StorageError> {
    sqlx::query(
        "update storage.buckets
         set public = $2, file_size_limit = $3, allowed_mime_types = $4, updated_at = now()
         where id = $1",
    )
    .bind(&b.id)
    .bind(b.public)
    .bind(b.file_size_limit.map(|n| n as i64))
    .bind(&b.allowed_mime_types)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn empty_bucket(pool: &PgPool, id: &str) -> Result<Vec<String>, StorageError> {
    let rows = sqlx::query(
        "with gone as (delete from storage.objects where bucket_id = $1 returning blob),
              marked as (insert into storage.pending (blob, kind)
                         select blob, 'delete' from gone
                         on conflict (blob) do update set kind = 'delete')
         select blob from gone",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()
        .map_err(db)
}

pub async fn delete_bucket(pool: &PgPool, id: &str) -> Result<(), StorageError> {
    sqlx::query("delete from storage.buckets where id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map_err(|e| match sqlstate(&e).as_deref() {
            // Objects still point to it.
            Some("23503") => StorageError::BucketNotEmpty(id.to_string()),
            _ => db(e),
        })?;
    Ok(())
}

pub async fn find(
    pool: &PgPool,
    principal: &Principal,
    bucket_id: &str,
    name: &str,
) -> Result<Option<ObjectRow>, StorageError> {
    let mut tx = begin_as(pool, principal).await?;
    let row = sqlx::query(concat!(
        "select ",
        object_columns!(),
        " from storage.objects where bucket_id = $1 and name = $2"
    ))
    .bind(bucket_id)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    row.as_ref().map(object).transpose().map_err(db)
}

pub async fn list(
    pool: &PgPool,
    principal: &Principal,
    bucket_id: &str,
    pattern: &str,
) -> Result<Vec<ObjectRow>, StorageError> {
    let mut tx = begin_as(pool, principal).await?;
    let rows = sqlx::query(concat!(
        "select ",
        object_columns!(),
        " from storage.objects where bucket_id = $1 and name like $2 order by name collate \"C\""
    ))
    .bind(bucket_id)
    .bind(pattern)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    rows.iter()
        .map(object)
        .collect::<Result<_, _>>()
        .map_err(db)
}

/// The insert (or upsert) of `row`, as the caller, returning the stored row and the bytes it
/// replaced. Used for real by `commit` and, rolled back, by `may_write`.
async fn write_row(
    tx: &mut sqlx::PgConnection,
    row: &ObjectRow,
    upsert: bool,
) -> Result<(ObjectRow, Option<String>), StorageError> {
    let sql = if upsert {
        concat!(
            "with old as (select blob from storage.objects where bucket_id = $2 and name = $3)
             insert into storage.objects as o
                 (id, bucket_id, name, owner_id, org_id, size, mime_type, sha256, blob, metadata, cache_control)
             values ($1::uuid, $2, $3, $4::uuid, $5::uuid, $6, $7, $8, $9, $10::jsonb, $11)
             on conflict (bucket_id, name) do update
             set owner_id = excluded.owner_id, org_id = excluded.org_id, size = excluded.size,
                 mime_type = excluded.mime_type, sha256 = excluded.sha256, blob = excluded.blob,
                 metadata = excluded.metadata, cache_control = excluded.cache_control,
                 updated_at = now()
             returning ",
            object_columns!(),
            ", (select blob from old)"
        )
    } else {
        concat!(
            "insert into storage.objects
                 (id, bucket_id, name, owner_id, org_id, size, mime_type, sha256, blob, metadata, cache_control)
             values ($1::uuid, $2, $3, $4::uuid, $5::uuid, $6, $7, $8, $9, $10::jsonb, $11)
             returning ",
            object_columns!(),
            ", null::text"
        )
    };
    let stored = sqlx::query(sql)
        .bind(&row.id)
        .bind(&row.bucket_id)
        .bind(&row.name)
        .bind(&row.owner_id)
        .bind(&row.org_id)
        .bind(row.size)
        .bind(&row.mime_type)
        .bind(&row.sha256)
        .bind(&row.blob)
        .bind(row.metadata.to_string())
        .bind(&row.cache_control)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| write_error(e, if upsert { "upsert" } else { "insert" }, &row.name))?;
    let replaced: Option<String> = stored.try_get(13).map_err(db)?;
    Ok((object(&stored).map_err(db)?, replaced))
}

pub async fn may_write(
    pool: &PgPool,
    principal: &Principal,
    row: &ObjectRow,
    upsert: bool,
) -> Result<(), StorageError> {
    let mut tx = begin_as(pool, principal).await?;
    // The real statement, rolled back: the policies answer exactly as they will at commit.
    let probe = ObjectRow {
        blob: format!("probe/{}", row.id),
        ..row.clone()
    };
    let answer = write_row(&mut tx, &probe, upsert).await.map(|_| ());
    tx.rollback().await.map_err(db)?;
    answer
}

pub async fn commit(
    pool: &PgPool,
    principal: &Principal,
    row: &ObjectRow,
    upsert: bool,
) -> Result<(ObjectRow, Option<String>), StorageError> {
    let mut tx = begin_as(pool, principal).await?;
    let (stored, replaced) = write_row(&mut tx, row, upsert).await?;
    if let Some(old) = &replaced {
        sqlx::query(
            "insert into storage.pending (blob, kind) values ($1, 'delete') on conflict do nothing",
        )
        .bind(old)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    // The upload's pending record, cleared by the server (the caller's role may only add to
    // the table); if this fails, the sweep sees the row and drops the record.
    if let Err(e) = pending_done(pool, &row.blob).await {
        tracing::warn!(error = %e, "cannot clear an upload's pending record");
    }
    Ok((stored, replaced))
}

pub async fn remove(
    pool: &PgPool,
    principal: &Principal,
    bucket_id: &str,
    names: &[String],
) -> Result<Vec<ObjectRow>, StorageError> {
    let mut tx = begin_as(pool, principal).await?;
    let rows = sqlx::query(concat!(
        "with gone as (delete from storage.objects where bucket_id = $1 and name = any($2) returning *),
              marked as (insert into storage.pending (blob, kind)
                         select blob, 'delete' from gone on conflict do nothing)
         select ",
        object_columns!(),
        " from gone"
    ))
    .bind(bucket_id)
    .bind(names)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| write_error(e, "delete", bucket_id))?;
    tx.commit().await.map_err(db)?;
    rows.iter()
        .map(object)
        .collect::<Result<_, _>>()
        .map_err(db)
}

pub async fn rename(
    pool: &PgPool,
    principal: &Principal,
    bucket_id: &str,
    from: &str,
    dest: &Bucket,
    to: &str,
) -> Result<ObjectRow, StorageError> {
    let mut tx = begin_as(pool, principal).await?;
    let row = sqlx::query(concat!(
        "update storage.objects set bucket_id = $3, name = $4, org_id = $5::uuid, updated_at = now()
         where bucket_id = $1 and name = $2 returning ",
        object_columns!()
    ))
    .bind(bucket_id)
    .bind(from)
    .bind(&dest.id)
    .bind(to)
    .bind(&dest.org_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| write_error(e, "update", to))?
    .ok_or_else(|| StorageError::ObjectNotFound(from.to_string()))?;
    tx.commit().await.map_err(db)?;
    object(&row).map_err(db)
}

pub async fn pending_add(pool: &PgPool, blob: &str, kind: Pending) -> Result<(), StorageError> {
    sqlx::query(
        "insert into storage.pending (blob, kind) values ($1, $2)
         on conflict (blob) do update set kind = excluded.kind",
    )
    .bind(blob)
    .bind(kind.name())
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn pending_done(pool: &PgPool, blob: &str) -> Result<(), StorageError> {
    sqlx::query("delete from storage.pending where blob = $1")
        .bind(blob)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

pub async fn pending_due(pool: &PgPool, abandoned_secs: i64) -> Result<Vec<String>, StorageError> {
    sqlx::query(
        "delete from storage.pending p where kind = 'upload'
           and exists (select 1 from storage.objects o where o.blob = p.blob)",
    )
    .execute(pool)
    .await
    .map_err(db)?;
    let rows = sqlx::query(
        "select blob from storage.pending p
         where (kind = 'delete' or since <= now() - make_interval(secs => $1))
           and not exists (select 1 from storage.objects o where o.blob = p.blob)",
    )
    .bind(abandoned_secs as f64)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()
        .map_err(db)
}

pub async fn signing_key(pool: &PgPool, candidate: &str) -> Result<String, StorageError> {
    sqlx::query("insert into storage.signing_key (id, key) values (1, $1) on conflict do nothing")
        .bind(candidate)
        .execute(pool)
        .await
        .map_err(db)?;
    sqlx::query_scalar("select key from storage.signing_key where id = 1")
        .fetch_one(pool)
        .await
        .map_err(db)
}

const UPLOAD_COLUMNS: &str = "id::text, bucket_id, name, user_id::text, service, length, received, \
     mime_type, cache_control, metadata::text, upsert, chunks::text, expires_at";

fn upload(r: &PgRow) -> Result<Upload, sqlx::Error> {
    let metadata: String = r.try_get(9)?;
    let chunks: String = r.try_get(11)?;
    Ok(Upload {
        id: r.try_get(0)?,
        bucket_id: r.try_get(1)?,
        name: r.try_get(2)?,
        user_id: r.try_get(3)?,
        service: r.try_get(4)?,
        length: r.try_get::<i64, _>(5)? as u64,
        offset: r.try_get::<i64, _>(6)? as u64,
        mime_type: r.try_get(7)?,
        cache_control: r.try_get(8)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        upsert: r.try_get(10)?,
        chunks: serde_json::from_str(&chunks).unwrap_or_default(),
        expires_at: r.try_get(12)?,
    })
}

pub async fn insert_upload(pool: &PgPool, u: &Upload) -> Result<(), StorageError> {
    sqlx::query(
        "insert into storage.uploads
             (id, bucket_id, name, user_id, service, length, received, mime_type, cache_control,
              metadata, upsert, chunks, expires_at)
         values ($1::uuid, $2, $3, $4::uuid, $5, $6, $7, $8, $9, $10::jsonb, $11, $12::jsonb, $13)",
    )
    .bind(&u.id)
    .bind(&u.bucket_id)
    .bind(&u.name)
    .bind(&u.user_id)
    .bind(u.service)
    .bind(u.length as i64)
    .bind(u.offset as i64)
    .bind(&u.mime_type)
    .bind(&u.cache_control)
    .bind(u.metadata.to_string())
    .bind(u.upsert)
    .bind(serde_json::to_string(&u.chunks).unwrap_or_default())
    .bind(u.expires_at)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn find_upload(pool: &PgPool, id: &str) -> Result<Option<Upload>, StorageError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(None);
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select {UPLOAD_COLUMNS} from storage.uploads where id = $1::uuid"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    row.as_ref().map(upload).transpose().map_err(db)
}

pub async fn advance_upload(
    pool: &PgPool,
    id: &str,
    from: u64,
    to: u64,
    chunks: &[Chunk],
) -> Result<bool, StorageError> {
    let done = sqlx::query(
        "update storage.uploads set received = $3, chunks = $4::jsonb
         where id = $1::uuid and received = $2",
    )
    .bind(id)
    .bind(from as i64)
    .bind(to as i64)
    .bind(serde_json::to_string(chunks).unwrap_or_default())
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete_upload(pool: &PgPool, id: &str) -> Result<(), StorageError> {
    sqlx::query("delete from storage.uploads where id = $1::uuid")
        .bind(id)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

pub async fn expire_uploads(pool: &PgPool, now: i64) -> Result<Vec<Upload>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "delete from storage.uploads where expires_at < $1 returning {UPLOAD_COLUMNS}"
    )))
    .bind(now)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(upload)
        .collect::<Result<_, _>>()
        .map_err(db)
}
