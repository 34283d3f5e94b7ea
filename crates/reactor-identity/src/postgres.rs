//! O2 adapter: the identity tables in Postgres's `reactor` schema.

use reactor_db::Migration;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool, Row};

use crate::jwt::StoredKey;
use crate::store::{
    InviteRow, Member, MemberChange, NewUser, OrgRow, OutboxEmail, RefreshRow, StoreError,
    UserChanges, UserRow,
};

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
    Migration {
        version: 3,
        name: "organizations, memberships, invitations",
        sql: "
        create table reactor.orgs (
            id uuid primary key,
            slug text not null unique,
            name text not null,
            created_at timestamptz not null default now()
        );
        create table reactor.memberships (
            org_id uuid not null references reactor.orgs(id) on delete cascade,
            user_id uuid not null references reactor.users(id) on delete cascade,
            role text not null,
            created_at timestamptz not null default now(),
            primary key (org_id, user_id)
        );
        create index memberships_user on reactor.memberships (user_id);
        create table reactor.invites (
            id uuid primary key,
            org_id uuid not null references reactor.orgs(id) on delete cascade,
            email text not null,
            role text not null,
            token_hash text not null unique,
            invited_by uuid references reactor.users(id) on delete set null,
            created_at timestamptz not null default now(),
            expires_at bigint not null,
            accepted_at timestamptz
        );
        alter table reactor.sessions add column org_id uuid references reactor.orgs(id) on delete set null;
    ",
    },
    Migration {
        version: 4,
        name: "one-time tokens and the email outbox",
        sql: "
        create table reactor.one_time_tokens (
            token_hash text primary key,
            user_id uuid not null references reactor.users(id) on delete cascade,
            kind text not null,
            expires_at bigint not null,
            used_at timestamptz
        );
        create table reactor.email_outbox (
            id bigserial primary key,
            to_addr text not null,
            subject text not null,
            body text not null,
            created_at timestamptz not null default now(),
            sent_at timestamptz,
            attempts integer not null default 0,
            last_error text
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
                s.revoked_at is not null as session_revoked, s.org_id::text as org_id
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
        org_id: r.try_get("org_id")?,
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

const ORG_COLUMNS: &str =
    "o.id::text as id, o.slug, o.name, to_json(o.created_at) #>> '{}' as created_at";

fn org_row(r: &PgRow) -> Result<OrgRow, sqlx::Error> {
    Ok(OrgRow {
        id: r.try_get("id")?,
        slug: r.try_get("slug")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
    })
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

pub(crate) async fn create_org(
    pool: &PgPool,
    org: &OrgRow,
    owner: &str,
) -> Result<OrgRow, StoreError> {
    let mut tx = pool.begin().await?;
    let sql = format!(
        "insert into reactor.orgs as o (id, slug, name) values ($1::uuid, $2, $3) returning {ORG_COLUMNS}"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(&org.id)
        .bind(&org.slug)
        .bind(&org.name)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
                StoreError::SlugTaken
            }
            _ => e.into(),
        })?;
    sqlx::query("insert into reactor.memberships (org_id, user_id, role) values ($1::uuid, $2::uuid, 'owner')")
        .bind(&org.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(org_row(&row)?)
}

pub(crate) async fn org(pool: &PgPool, id_or_slug: &str) -> Result<Option<OrgRow>, StoreError> {
    let sql = if is_uuid(id_or_slug) {
        format!("select {ORG_COLUMNS} from reactor.orgs o where o.id = $1::uuid")
    } else {
        format!("select {ORG_COLUMNS} from reactor.orgs o where o.slug = $1")
    };
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id_or_slug)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(org_row).transpose()?)
}

pub(crate) async fn orgs_of(
    pool: &PgPool,
    user_id: &str,
) -> Result<Vec<(OrgRow, String)>, StoreError> {
    let sql = format!(
        "select {ORG_COLUMNS}, m.role from reactor.orgs o join reactor.memberships m on m.org_id = o.id
         where m.user_id = $1::uuid order by o.created_at, o.id"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((org_row(r)?, r.try_get("role")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

pub(crate) async fn role_in(
    pool: &PgPool,
    org_id: &str,
    user_id: &str,
) -> Result<Option<String>, StoreError> {
    if !is_uuid(org_id) || !is_uuid(user_id) {
        return Ok(None);
    }
    Ok(sqlx::query_scalar(
        "select role from reactor.memberships where org_id = $1::uuid and user_id = $2::uuid",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?)
}

pub(crate) async fn members(pool: &PgPool, org_id: &str) -> Result<Vec<Member>, StoreError> {
    let rows = sqlx::query(
        "select m.user_id::text as user_id, u.email, m.role, to_json(m.created_at) #>> '{}' as joined_at
         from reactor.memberships m join reactor.users u on u.id = m.user_id
         where m.org_id = $1::uuid order by m.created_at, u.email",
    )
    .bind(org_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Member {
                user_id: r.try_get("user_id")?,
                email: r.try_get("email")?,
                role: r.try_get("role")?,
                joined_at: r.try_get("joined_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// A membership change under a row lock on the org, refusing to leave it without an owner.
async fn change_member(
    pool: &PgPool,
    org_id: &str,
    user_id: &str,
    new_role: Option<&str>,
) -> Result<MemberChange, StoreError> {
    if !is_uuid(org_id) || !is_uuid(user_id) {
        return Ok(MemberChange::NotMember);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("select 1 from reactor.orgs where id = $1::uuid for update")
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
    let current: Option<String> = sqlx::query_scalar(
        "select role from reactor.memberships where org_id = $1::uuid and user_id = $2::uuid",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(current) = current else {
        return Ok(MemberChange::NotMember);
    };
    if current == "owner" && new_role != Some("owner") {
        let owners: i64 = sqlx::query_scalar(
            "select count(*) from reactor.memberships where org_id = $1::uuid and role = 'owner'",
        )
        .bind(org_id)
        .fetch_one(&mut *tx)
        .await?;
        if owners <= 1 {
            return Ok(MemberChange::LastOwner);
        }
    }
    match new_role {
        Some(role) => {
            sqlx::query("update reactor.memberships set role = $3 where org_id = $1::uuid and user_id = $2::uuid")
                .bind(org_id)
                .bind(user_id)
                .bind(role)
                .execute(&mut *tx)
                .await?;
        }
        None => {
            sqlx::query("update reactor.sessions set org_id = null where org_id = $1::uuid and user_id = $2::uuid")
                .bind(org_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "delete from reactor.memberships where org_id = $1::uuid and user_id = $2::uuid",
            )
            .bind(org_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(MemberChange::Done)
}

pub(crate) async fn set_member_role(
    pool: &PgPool,
    org_id: &str,
    user_id: &str,
    role: &str,
) -> Result<MemberChange, StoreError> {
    change_member(pool, org_id, user_id, Some(role)).await
}

pub(crate) async fn remove_member(
    pool: &PgPool,
    org_id: &str,
    user_id: &str,
) -> Result<MemberChange, StoreError> {
    change_member(pool, org_id, user_id, None).await
}

pub(crate) async fn create_invite(
    pool: &PgPool,
    i: &InviteRow,
    token_hash: &str,
    invited_by: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into reactor.invites (id, org_id, email, role, token_hash, invited_by, expires_at)
         values ($1::uuid, $2::uuid, $3, $4, $5, $6::uuid, $7)",
    )
    .bind(&i.id)
    .bind(&i.org_id)
    .bind(&i.email)
    .bind(&i.role)
    .bind(token_hash)
    .bind(invited_by)
    .bind(i.expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn invite(
    pool: &PgPool,
    token_hash: &str,
) -> Result<Option<InviteRow>, StoreError> {
    let row = sqlx::query(
        "select id::text as id, org_id::text as org_id, email, role, expires_at, accepted_at is not null as accepted
         from reactor.invites where token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(InviteRow {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        email: r.try_get("email")?,
        role: r.try_get("role")?,
        expires_at: r.try_get("expires_at")?,
        accepted: r.try_get("accepted")?,
    }))
}

pub(crate) async fn accept_invite(
    pool: &PgPool,
    i: &InviteRow,
    user_id: &str,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let taken = sqlx::query("update reactor.invites set accepted_at = now() where id = $1::uuid and accepted_at is null")
        .bind(&i.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if taken {
        sqlx::query(
            "insert into reactor.memberships (org_id, user_id, role) values ($1::uuid, $2::uuid, $3)
             on conflict (org_id, user_id) do nothing",
        )
        .bind(&i.org_id)
        .bind(user_id)
        .bind(&i.role)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(taken)
}

pub(crate) async fn set_session_org(
    pool: &PgPool,
    session_id: &str,
    org_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("update reactor.sessions set org_id = $2::uuid where id = $1::uuid")
        .bind(session_id)
        .bind(org_id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) async fn create_one_time_token(
    pool: &PgPool,
    hash: &str,
    user_id: &str,
    kind: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query("insert into reactor.one_time_tokens (token_hash, user_id, kind, expires_at) values ($1, $2::uuid, $3, $4)")
        .bind(hash)
        .bind(user_id)
        .bind(kind)
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) async fn use_one_time_token(
    pool: &PgPool,
    hash: &str,
    kind: &str,
) -> Result<Option<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "update reactor.one_time_tokens set used_at = now()
         where token_hash = $1 and kind = $2 and used_at is null
         returning user_id::text, expires_at",
    )
    .bind(hash)
    .bind(kind)
    .fetch_optional(pool)
    .await?)
}

pub(crate) async fn enqueue_email(
    pool: &PgPool,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<(), StoreError> {
    sqlx::query("insert into reactor.email_outbox (to_addr, subject, body) values ($1, $2, $3)")
        .bind(to)
        .bind(subject)
        .bind(body)
        .execute(pool)
        .await?;
    Ok(())
}

fn outbox_row(r: &PgRow) -> Result<OutboxEmail, sqlx::Error> {
    Ok(OutboxEmail {
        id: r.try_get("id")?,
        to: r.try_get("to_addr")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
        sent: r.try_get("sent")?,
    })
}

pub(crate) async fn claim_email(
    pool: &PgPool,
    max_attempts: i64,
) -> Result<Option<OutboxEmail>, StoreError> {
    let row = sqlx::query(
        "update reactor.email_outbox set sent_at = now(), attempts = attempts + 1
         where sent_at is null and id = (select id from reactor.email_outbox
             where sent_at is null and attempts < $1 order by id limit 1 for update skip locked)
         returning id, to_addr, subject, body, to_json(created_at) #>> '{}' as created_at, true as sent",
    )
    .bind(max_attempts as i32)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(outbox_row).transpose()?)
}

pub(crate) async fn email_failed(pool: &PgPool, id: i64, error: &str) -> Result<(), StoreError> {
    sqlx::query("update reactor.email_outbox set sent_at = null, last_error = $2 where id = $1")
        .bind(id)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) async fn mailbox(
    pool: &PgPool,
    to: Option<&str>,
) -> Result<Vec<OutboxEmail>, StoreError> {
    let rows = sqlx::query(
        "select id, to_addr, subject, body, to_json(created_at) #>> '{}' as created_at, sent_at is not null as sent
         from reactor.email_outbox where $1::text is null or to_addr = $1 order by id desc limit 100",
    )
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(outbox_row).collect::<Result<_, _>>()?)
}
