//! O2 adapter: the identity tables in Postgres's `reactor` schema.

use reactor_db::Migration;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool, Row};

use crate::jwt::StoredKey;
use crate::store::{NewUser, RefreshRow, StoreError, UserChanges, UserRow};

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "users, sessions, refresh tokens, signing keys",
        sql: "
        create table reactor.users (
            id uuid primary key,
            email text not null unique,
            password_hash text,
            email_confirmed_at timestamptz,
            role text,
            user_metadata jsonb not null default '{}',
            app_metadata jsonb not null default '{}',
            banned_until timestamptz,
            created_at timestamptz not null default now(),
            updated_at timestamptz not null default now(),
            last_sign_in_at timestamptz
        );
        create table reactor.sessions (
            id uuid primary key,
            user_id uuid not null references reactor.users(id) on delete cascade,
            created_at timestamptz not null default now(),
            refreshed_at timestamptz,
            revoked_at timestamptz
        );
        create index sessions_user_idx on reactor.sessions (user_id);
        create table reactor.refresh_tokens (
            id bigserial primary key,
            session_id uuid not null references reactor.sessions(id) on delete cascade,
            token_hash text not null unique,
            created_at timestamptz not null default now(),
            revoked_at timestamptz,
            rotated boolean not null default false
        );
        create index refresh_tokens_session_idx on reactor.refresh_tokens (session_id);
        create table reactor.signing_keys (
            kid text primary key,
            private_pkcs8 text not null,
            public_x text not null,
            created_at bigint not null,
            retired_at bigint
        );
    ",
    },
    Migration {
        version: 2,
        name: "sign-in throttle",
        sql: "
        create table reactor.auth_throttle (
            bucket text primary key,
            window_start bigint not null,
            count integer not null
        );
    ",
    },
];

/// Times leave as RFC 3339 text and JSON as text, the shapes the SQLite adapter returns.
const USER_COLUMNS: &str = "id::text as id, email, password_hash,
    to_json(email_confirmed_at) #>> '{}' as email_confirmed_at, role,
    user_metadata::text as user_metadata, app_metadata::text as app_metadata,
    coalesce(banned_until > now(), false) as banned,
    to_json(created_at) #>> '{}' as created_at, to_json(updated_at) #>> '{}' as updated_at,
    to_json(last_sign_in_at) #>> '{}' as last_sign_in_at";

fn user_row(r: &PgRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        password_hash: r.try_get("password_hash")?,
        email_confirmed_at: r.try_get("email_confirmed_at")?,
        role: r.try_get("role")?,
        user_metadata: r.try_get("user_metadata")?,
        app_metadata: r.try_get("app_metadata")?,
        banned: r.try_get("banned")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        last_sign_in_at: r.try_get("last_sign_in_at")?,
    })
}

fn unique_violation(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => StoreError::EmailTaken,
        _ => e.into(),
    }
}

pub(crate) async fn create_user(pool: &PgPool, u: &NewUser) -> Result<UserRow, StoreError> {
    let sql = format!(
        "insert into reactor.users (id, email, password_hash, email_confirmed_at, user_metadata, app_metadata, role)
         values ($1::uuid, $2, $3, case when $4 then now() end, $5::jsonb, $6::jsonb, $7)
         returning {USER_COLUMNS}"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(u.confirmed)
        .bind(&u.user_metadata)
        .bind(&u.app_metadata)
        .bind(&u.role)
        .fetch_one(pool)
        .await
        .map_err(unique_violation)?;
    Ok(user_row(&row)?)
}

pub(crate) async fn list_users(
    pool: &PgPool,
    offset: i64,
    limit: i64,
) -> Result<(Vec<UserRow>, i64), StoreError> {
    let sql = format!(
        "select {USER_COLUMNS} from reactor.users order by created_at, id limit $1 offset $2"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?;
    let total: i64 = sqlx::query_scalar("select count(*) from reactor.users")
        .fetch_one(pool)
        .await?;
    Ok((rows.iter().map(user_row).collect::<Result<_, _>>()?, total))
}

pub(crate) async fn delete_user(pool: &PgPool, id: &str) -> Result<bool, StoreError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(false);
    }
    let done = sqlx::query("delete from reactor.users where id = $1::uuid")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn user_by_email(
    pool: &PgPool,
    email: &str,
) -> Result<Option<UserRow>, StoreError> {
    let sql = format!("select {USER_COLUMNS} from reactor.users where email = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(email)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(user_row).transpose()?)
}

pub(crate) async fn user_by_id(pool: &PgPool, id: &str) -> Result<Option<UserRow>, StoreError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(None);
    }
    let sql = format!("select {USER_COLUMNS} from reactor.users where id = $1::uuid");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(user_row).transpose()?)
}

pub(crate) async fn update_user(
    pool: &PgPool,
    id: &str,
    c: &UserChanges,
) -> Result<Option<UserRow>, StoreError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(None);
    }
    let sql = format!(
        "update reactor.users set
            email = coalesce($2, email),
            password_hash = coalesce($3, password_hash),
            user_metadata = coalesce($4::jsonb, user_metadata),
            app_metadata = coalesce($5::jsonb, app_metadata),
            role = case when $6 then $7 else role end,
            banned_until = case when $8 then
                (case when $9::bigint is null then null else now() + make_interval(secs => $9::bigint) end)
                else banned_until end,
            email_confirmed_at = case when $10::boolean is null then email_confirmed_at
                when $10 then coalesce(email_confirmed_at, now()) else null end,
            updated_at = now()
         where id = $1::uuid
         returning {USER_COLUMNS}"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .bind(&c.email)
        .bind(&c.password_hash)
        .bind(&c.user_metadata)
        .bind(&c.app_metadata)
        .bind(c.role.is_some())
        .bind(c.role.clone().flatten())
        .bind(c.ban_secs.is_some())
        .bind(c.ban_secs.flatten())
        .bind(c.confirm_email)
        .fetch_optional(pool)
        .await
        .map_err(unique_violation)?;
    Ok(row.as_ref().map(user_row).transpose()?)
}

pub(crate) async fn record_sign_in(pool: &PgPool, user_id: &str) -> Result<(), StoreError> {
    sqlx::query("update reactor.users set last_sign_in_at = now() where id = $1::uuid")
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) async fn create_session(
    pool: &PgPool,
    session_id: &str,
    user_id: &str,
    token_hash: &str,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("insert into reactor.sessions (id, user_id) values ($1::uuid, $2::uuid)")
        .bind(session_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into reactor.refresh_tokens (session_id, token_hash) values ($1::uuid, $2)",
    )
    .bind(session_id)
    .bind(token_hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn session_active(pool: &PgPool, session_id: &str) -> Result<bool, StoreError> {
    if uuid::Uuid::parse_str(session_id).is_err() {
        return Ok(false);
    }
    let found: Option<i32> = sqlx::query_scalar(
        "select 1 from reactor.sessions where id = $1::uuid and revoked_at is null",
    )
    .bind(session_id)
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

pub(crate) async fn refresh_token(
    pool: &PgPool,
    token_hash: &str,
) -> Result<Option<RefreshRow>, StoreError> {
    let row = sqlx::query(
        "select t.id, t.session_id::text as session_id, s.user_id::text as user_id,
                t.revoked_at is not null as revoked, t.rotated,
                extract(epoch from now() - t.revoked_at)::float8 as revoked_secs_ago,
                s.revoked_at is not null as session_revoked
         from reactor.refresh_tokens t join reactor.sessions s on s.id = t.session_id
         where t.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(RefreshRow {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        user_id: r.try_get("user_id")?,
        revoked: r.try_get("revoked")?,
        rotated: r.try_get("rotated")?,
        revoked_secs_ago: r.try_get("revoked_secs_ago")?,
        session_revoked: r.try_get("session_revoked")?,
    }))
}

pub(crate) async fn rotate_refresh_token(
    pool: &PgPool,
    id: i64,
    session_id: &str,
    new_hash: &str,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let rotated = sqlx::query(
        "update reactor.refresh_tokens set revoked_at = now(), rotated = true where id = $1 and revoked_at is null",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if rotated {
        sqlx::query(
            "insert into reactor.refresh_tokens (session_id, token_hash) values ($1::uuid, $2)",
        )
        .bind(session_id)
        .bind(new_hash)
        .execute(&mut *tx)
        .await?;
        sqlx::query("update reactor.sessions set refreshed_at = now() where id = $1::uuid")
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(rotated)
}

pub(crate) async fn add_refresh_token(
    pool: &PgPool,
    session_id: &str,
    new_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into reactor.refresh_tokens (session_id, token_hash) values ($1::uuid, $2)",
    )
    .bind(session_id)
    .bind(new_hash)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn revoke_session(pool: &PgPool, session_id: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "update reactor.sessions set revoked_at = now() where id = $1::uuid and revoked_at is null",
    )
    .bind(session_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update reactor.refresh_tokens set revoked_at = now() where session_id = $1::uuid and revoked_at is null")
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn revoke_user_sessions(
    pool: &PgPool,
    user_id: &str,
    keep: Option<&str>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "update reactor.refresh_tokens set revoked_at = now()
         where revoked_at is null and session_id in
           (select id from reactor.sessions where user_id = $1::uuid and id is distinct from $2::uuid)",
    )
    .bind(user_id)
    .bind(keep)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update reactor.sessions set revoked_at = now()
         where user_id = $1::uuid and id is distinct from $2::uuid and revoked_at is null",
    )
    .bind(user_id)
    .bind(keep)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn signing_keys(pool: &PgPool) -> Result<Vec<StoredKey>, StoreError> {
    let rows = sqlx::query("select kid, private_pkcs8, public_x, created_at, retired_at from reactor.signing_keys order by created_at")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredKey {
                kid: r.try_get("kid")?,
                private_pkcs8: r.try_get("private_pkcs8")?,
                public_x: r.try_get("public_x")?,
                created_at: r.try_get("created_at")?,
                retired_at: r.try_get("retired_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

pub(crate) async fn insert_signing_key(pool: &PgPool, k: &StoredKey) -> Result<(), StoreError> {
    sqlx::query("insert into reactor.signing_keys (kid, private_pkcs8, public_x, created_at, retired_at) values ($1, $2, $3, $4, $5)")
        .bind(&k.kid)
        .bind(&k.private_pkcs8)
        .bind(&k.public_x)
        .bind(k.created_at)
        .bind(k.retired_at)
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) async fn retire_signing_keys_except(
    pool: &PgPool,
    kid: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "update reactor.signing_keys set retired_at = $2 where kid <> $1 and retired_at is null",
    )
    .bind(kid)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn throttle_count(
    pool: &PgPool,
    bucket: &str,
    window_start: i64,
) -> Result<i64, StoreError> {
    let count: Option<i32> = sqlx::query_scalar(
        "select count from reactor.auth_throttle where bucket = $1 and window_start = $2",
    )
    .bind(bucket)
    .bind(window_start)
    .fetch_optional(pool)
    .await?;
    Ok(i64::from(count.unwrap_or(0)))
}

pub(crate) async fn throttle_hit(
    pool: &PgPool,
    bucket: &str,
    window_start: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into reactor.auth_throttle as t (bucket, window_start, count) values ($1, $2, 1)
         on conflict (bucket) do update set
             count = case when t.window_start = excluded.window_start then t.count + 1 else 1 end,
             window_start = excluded.window_start",
    )
    .bind(bucket)
    .bind(window_start)
    .execute(pool)
    .await?;
    Ok(())
}
