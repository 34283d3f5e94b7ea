//! O2: PostgreSQL through sqlx.
//!
//! System tables live in the `reactor` schema, apart from the user's tables in `public`.
//! Several replicas may start at once against one database: migrations run in one
//! transaction under an advisory lock, so exactly one of them applies each version.

use std::time::Duration;

use reactor_core::Principal;
use reactor_core::keys::NewKey;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
// Statements built with format! only splice in constants of this module.
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::{ApiKeyRecord, DbError, Migration, ProjectRecord, tier_from_db};

pub(crate) async fn connect(url: &str) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|source| DbError::ConnectPostgres {
            url: redact(url),
            source,
        })
}

/// The URL without its password, for error messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "project and api keys",
        sql: "
        create table reactor.project (
            singleton boolean primary key default true check (singleton),
            project_id text not null,
            name text not null,
            created_at timestamptz not null default now()
        );
        create table reactor.api_keys (
            id text primary key,
            name text not null,
            tier text not null check (tier in ('pub', 'svc')),
            prefix text not null,
            hash text not null unique,
            created_at timestamptz not null default now(),
            last_used_at timestamptz,
            revoked_at timestamptz
        );
    ",
    },
    Migration {
        version: 2,
        name: "request roles and helpers for row-level security",
        // Roles belong to the cluster, so several databases (and several replicas) may race to
        // create them: a role that appeared meanwhile is fine.
        sql: r#"
        do $$
        declare
            r record;
        begin
            for r in select * from (values
                ('reactor_anon', 'nologin noinherit'),
                ('reactor_authenticated', 'nologin noinherit'),
                ('reactor_service', 'nologin noinherit bypassrls')
            ) as t(name, options) loop
                if not exists (select from pg_roles where rolname = r.name) then
                    begin
                        execute format('create role %I %s', r.name, r.options);
                    exception when duplicate_object or unique_violation then
                        null;
                    end;
                end if;
                execute format('grant %I to current_user', r.name);
            end loop;
        end
        $$;

        create or replace function reactor.user_id() returns uuid language sql stable
            as $f$ select nullif(current_setting('reactor.user_id', true), '')::uuid $f$;
        create or replace function reactor.org_id() returns uuid language sql stable
            as $f$ select nullif(current_setting('reactor.org_id', true), '')::uuid $f$;
        create or replace function reactor.role() returns text language sql stable
            as $f$ select nullif(current_setting('reactor.role', true), '') $f$;

        grant usage on schema reactor to reactor_anon, reactor_authenticated, reactor_service;
        grant execute on function reactor.user_id(), reactor.org_id(), reactor.role()
            to reactor_anon, reactor_authenticated, reactor_service;
        grant usage on schema public to reactor_anon, reactor_authenticated, reactor_service;
        -- Tables the project's migrations create are reachable by every request role; row-level
        -- security policies decide which rows (reactor_service bypasses them).
        alter default privileges in schema public
            grant select, insert, update, delete on tables to reactor_anon, reactor_authenticated, reactor_service;
        alter default privileges in schema public
            grant usage, select on sequences to reactor_anon, reactor_authenticated, reactor_service;
        alter default privileges in schema public
            grant execute on functions to reactor_anon, reactor_authenticated, reactor_service;
    "#,
    },
    Migration {
        version: 3,
        name: "session guard for request connections",
        // Request connections keep the caller's role and settings between statements (see
        // `requests::RequestPool`); every statement carries this guard, so a session changed behind the
        // pool's back (a function running `reset role`) fails the statement instead of acting
        // as someone else.
        sql: r#"
        create or replace function reactor.assert_session(r text, u text, o text, orole text)
            returns boolean language plpgsql stable as $f$
        begin
            if current_user <> r
               or coalesce(current_setting('reactor.user_id', true), '') <> u
               or coalesce(current_setting('reactor.org_id', true), '') <> o
               or coalesce(current_setting('reactor.role', true), '') <> orole then
                raise exception 'reactor: the request session changed under it'
                    using errcode = 'XX000';
            end if;
            return true;
        end
        $f$;
        grant execute on function reactor.assert_session(text, text, text, text)
            to reactor_anon, reactor_authenticated, reactor_service;
    "#,
    },
];

pub(crate) async fn migrate(
    pool: &PgPool,
    component: &'static str,
    migrations: &'static [Migration],
) -> Result<(), DbError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtext('reactor.system_migrations'))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(
        "create schema if not exists reactor;
         create table if not exists reactor.schema_migrations (
             component text not null,
             version bigint not null,
             name text not null,
             applied_at timestamptz not null default now(),
             primary key (component, version)
         );",
    )
    .execute(&mut *tx)
    .await?;
    let current: i64 = sqlx::query_scalar(
        "select coalesce(max(version), 0) from reactor.schema_migrations where component = $1",
    )
    .bind(component)
    .fetch_one(&mut *tx)
    .await?;
    let known = migrations.last().map_or(0, |m| m.version);
    if current > known {
        return Err(DbError::SchemaTooNew {
            component,
            found: current,
            known,
        });
    }
    for m in migrations.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| DbError::Migration {
                component,
                version: m.version,
                name: m.name,
                message: e.to_string(),
            })?;
        sqlx::query(
            "insert into reactor.schema_migrations (component, version, name) values ($1, $2, $3)",
        )
        .bind(component)
        .bind(m.version)
        .bind(m.name)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn ping(pool: &PgPool) -> Result<(), DbError> {
    sqlx::query("select 1").execute(pool).await?;
    Ok(())
}

pub(crate) async fn project(pool: &PgPool) -> Result<Option<ProjectRecord>, DbError> {
    let row: Option<(String, String)> =
        sqlx::query_as("select project_id, name from reactor.project")
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(id, name)| ProjectRecord { id, name }))
}

pub(crate) async fn set_project(
    pool: &PgPool,
    project_id: &str,
    name: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "insert into reactor.project (project_id, name) values ($1, $2)
         on conflict (singleton) do update set project_id = excluded.project_id, name = excluded.name",
    )
    .bind(project_id)
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn insert_api_key(pool: &PgPool, key: &NewKey, name: &str) -> Result<(), DbError> {
    sqlx::query(
        "insert into reactor.api_keys (id, name, tier, prefix, hash) values ($1, $2, $3, $4, $5)",
    )
    .bind(&key.id)
    .bind(name)
    .bind(key.tier.name())
    .bind(&key.prefix)
    .bind(&key.hash)
    .execute(pool)
    .await?;
    Ok(())
}

/// Timestamps leave the database as RFC 3339 text, as SQLite stores them.
const KEY_COLUMNS: &str = "id, name, tier, prefix, to_json(created_at) #>> '{}' as created_at,
    to_json(last_used_at) #>> '{}' as last_used_at, revoked_at is not null as revoked";

fn key_row(r: &PgRow) -> Result<ApiKeyRecord, sqlx::Error> {
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        tier: tier_from_db(r.try_get("tier")?),
        prefix: r.try_get("prefix")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked: r.try_get("revoked")?,
    })
}

pub(crate) async fn find_api_key(
    pool: &PgPool,
    hash: &str,
) -> Result<Option<ApiKeyRecord>, DbError> {
    let sql = format!("select {KEY_COLUMNS} from reactor.api_keys where hash = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(hash)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(key_row).transpose()?)
}

pub(crate) async fn list_api_keys(pool: &PgPool) -> Result<Vec<ApiKeyRecord>, DbError> {
    let sql = format!("select {KEY_COLUMNS} from reactor.api_keys order by created_at, id");
    let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await?;
    Ok(rows.iter().map(key_row).collect::<Result<_, _>>()?)
}

pub(crate) async fn revoke_api_key(pool: &PgPool, id: &str) -> Result<bool, DbError> {
    let done = sqlx::query(
        "update reactor.api_keys set revoked_at = now() where id = $1 and revoked_at is null",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn touch_api_key(pool: &PgPool, id: &str) -> Result<(), DbError> {
    sqlx::query(
        "update reactor.api_keys set last_used_at = now()
         where id = $1 and (last_used_at is null or last_used_at < now() - interval '60 seconds')",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Begins a transaction that runs as the request's caller: `SET LOCAL ROLE` to the principal's
/// database role, and the `reactor.*` variables (plus `request.jwt.claims`, so policies written
/// for Supabase keep working) set for this transaction only. Real row-level security does the
/// rest. Dropping the transaction without committing rolls it back.
pub async fn begin_as(
    pool: &PgPool,
    principal: &Principal,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, DbError> {
    let mut tx = pool.begin().await?;
    let role = principal.db_role().name();
    let claims = crate::requests::jwt_claims(principal);
    // One round trip: `set_config('role', …, true)` is `SET LOCAL ROLE`; the role is one of
    // three constants and every value goes through a bind parameter.
    sqlx::query(
        "select set_config('role', $1, true), set_config('reactor.user_id', $2, true),
                set_config('reactor.org_id', $3, true), set_config('reactor.role', $4, true),
                set_config('request.jwt.claims', $5, true)",
    )
    .bind(role)
    .bind(principal.user_id.clone().unwrap_or_default())
    .bind(principal.org_id.clone().unwrap_or_default())
    .bind(principal.role.clone().unwrap_or_default())
    .bind(claims.to_string())
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
    }
}
