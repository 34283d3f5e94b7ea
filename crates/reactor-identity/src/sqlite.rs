//! O1 adapter: the identity tables in SQLite (`_reactor_` prefix, RFC 3339 text times).

use reactor_db::{Migration, SqlitePool};
use rusqlite::{OptionalExtension, Row, params};

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
        create table _reactor_users (
            id text primary key,
            email text not null unique,
            password_hash text,
            email_confirmed_at text,
            role text,
            user_metadata text not null default '{}',
            app_metadata text not null default '{}',
            banned_until text,
            created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            updated_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            last_sign_in_at text
        );
        create table _reactor_sessions (
            id text primary key,
            user_id text not null references _reactor_users(id) on delete cascade,
            created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            refreshed_at text,
            revoked_at text
        );
        create index _reactor_sessions_user on _reactor_sessions (user_id);
        create table _reactor_refresh_tokens (
            id integer primary key autoincrement,
            session_id text not null references _reactor_sessions(id) on delete cascade,
            token_hash text not null unique,
            created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            revoked_at text,
            rotated integer not null default 0
        );
        create index _reactor_refresh_tokens_session on _reactor_refresh_tokens (session_id);
        create table _reactor_signing_keys (
            kid text primary key,
            private_pkcs8 text not null,
            public_x text not null,
            created_at integer not null,
            retired_at integer
        );
    ",
    },
    Migration {
        version: 2,
        name: "sign-in throttle",
        sql: "
        create table _reactor_auth_throttle (
            bucket text primary key,
            window_start integer not null,
            count integer not null
        );
    ",
    },
    Migration {
        version: 3,
        name: "organizations, memberships, invitations",
        sql: "
        create table _reactor_orgs (
            id text primary key,
            slug text not null unique,
            name text not null,
            created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        );
        create table _reactor_memberships (
            org_id text not null references _reactor_orgs(id) on delete cascade,
            user_id text not null references _reactor_users(id) on delete cascade,
            role text not null,
            created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            primary key (org_id, user_id)
        );
        create index _reactor_memberships_user on _reactor_memberships (user_id);
        create table _reactor_invites (
            id text primary key,
            org_id text not null references _reactor_orgs(id) on delete cascade,
            email text not null,
            role text not null,
            token_hash text not null unique,
            invited_by text references _reactor_users(id) on delete set null,
            created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            expires_at integer not null,
            accepted_at text
        );
        alter table _reactor_sessions add column org_id text references _reactor_orgs(id) on delete set null;
    ",
    },
    Migration {
        version: 4,
        name: "one-time tokens and the email outbox",
        sql: "
        create table _reactor_one_time_tokens (
            token_hash text primary key,
            user_id text not null references _reactor_users(id) on delete cascade,
            kind text not null,
            expires_at integer not null,
            used_at text
        );
        create table _reactor_email_outbox (
            id integer primary key autoincrement,
            to_addr text not null,
            subject text not null,
            body text not null,
            created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            sent_at text,
            attempts integer not null default 0,
            last_error text
        );
    ",
    },
];

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

const USER_COLUMNS: &str =
    "id, email, password_hash, email_confirmed_at, role, user_metadata, app_metadata,
    banned_until is not null and banned_until > strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    created_at, updated_at, last_sign_in_at";

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        email: r.get(1)?,
        password_hash: r.get(2)?,
        email_confirmed_at: r.get(3)?,
        role: r.get(4)?,
        user_metadata: r.get(5)?,
        app_metadata: r.get(6)?,
        banned: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        last_sign_in_at: r.get(10)?,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

pub(crate) async fn create_user(pool: &SqlitePool, user: &NewUser) -> Result<UserRow, StoreError> {
    let u = user.clone();
    let result = pool
        .with(move |conn| {
            let sql = format!(
                "insert into _reactor_users (id, email, password_hash, email_confirmed_at, user_metadata, app_metadata, role)
                 values (?1, ?2, ?3, case when ?4 then {NOW} end, ?5, ?6, ?7)
                 returning {USER_COLUMNS}"
            );
            Ok(conn.query_row(
                &sql,
                params![u.id, u.email, u.password_hash, u.confirmed, u.user_metadata, u.app_metadata, u.role],
                user_row,
            ))
        })
        .await?;
    match result {
        Ok(row) => Ok(row),
        Err(e) if is_unique_violation(&e) => Err(StoreError::EmailTaken),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn list_users(
    pool: &SqlitePool,
    offset: i64,
    limit: i64,
) -> Result<(Vec<UserRow>, i64), StoreError> {
    Ok(pool
        .with(move |conn| {
            let sql = format!("select {USER_COLUMNS} from _reactor_users order by created_at, id limit ?1 offset ?2");
            let rows = conn
                .prepare(&sql)?
                .query_map(params![limit, offset], user_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let total: i64 = conn.query_row("select count(*) from _reactor_users", [], |r| r.get(0))?;
            Ok((rows, total))
        })
        .await?)
}

pub(crate) async fn delete_user(pool: &SqlitePool, id: &str) -> Result<bool, StoreError> {
    let id = id.to_string();
    Ok(pool
        .with(move |conn| Ok(conn.execute("delete from _reactor_users where id = ?1", [id])? == 1))
        .await?)
}

pub(crate) async fn user_by_email(
    pool: &SqlitePool,
    email: &str,
) -> Result<Option<UserRow>, StoreError> {
    let email = email.to_string();
    Ok(pool
        .with(move |conn| {
            let sql = format!("select {USER_COLUMNS} from _reactor_users where email = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([email], user_row)
                .optional()?)
        })
        .await?)
}

pub(crate) async fn user_by_id(pool: &SqlitePool, id: &str) -> Result<Option<UserRow>, StoreError> {
    let id = id.to_string();
    Ok(pool
        .with(move |conn| {
            let sql = format!("select {USER_COLUMNS} from _reactor_users where id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], user_row)
                .optional()?)
        })
        .await?)
}

pub(crate) async fn update_user(
    pool: &SqlitePool,
    id: &str,
    changes: &UserChanges,
) -> Result<Option<UserRow>, StoreError> {
    let (id, c) = (id.to_string(), changes.clone());
    let result = pool
        .with(move |conn| {
            let sql = format!(
                "update _reactor_users set
                    email = coalesce(?2, email),
                    password_hash = coalesce(?3, password_hash),
                    user_metadata = coalesce(?4, user_metadata),
                    app_metadata = coalesce(?5, app_metadata),
                    role = case when ?6 then ?7 else role end,
                    banned_until = case when ?8 then
                        (case when ?9 is null then null else strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || ?9 || ' seconds') end)
                        else banned_until end,
                    email_confirmed_at = case when ?10 is null then email_confirmed_at
                        when ?10 then coalesce(email_confirmed_at, {NOW}) else null end,
                    updated_at = {NOW}
                 where id = ?1
                 returning {USER_COLUMNS}"
            );
            Ok(conn
                .query_row(
                    &sql,
                    params![
                        id,
                        c.email,
                        c.password_hash,
                        c.user_metadata,
                        c.app_metadata,
                        c.role.is_some(),
                        c.role.flatten(),
                        c.ban_secs.is_some(),
                        c.ban_secs.flatten(),
                        c.confirm_email
                    ],
                    user_row,
                )
                .optional())
        })
        .await?;
    match result {
        Ok(row) => Ok(row),
        Err(e) if is_unique_violation(&e) => Err(StoreError::EmailTaken),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn record_sign_in(pool: &SqlitePool, user_id: &str) -> Result<(), StoreError> {
    let id = user_id.to_string();
    pool.with(move |conn| {
        conn.execute(
            &format!("update _reactor_users set last_sign_in_at = {NOW} where id = ?1"),
            [id],
        )?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub(crate) async fn create_session(
    pool: &SqlitePool,
    session_id: &str,
    user_id: &str,
    token_hash: &str,
) -> Result<(), StoreError> {
    let (sid, uid, hash) = (
        session_id.to_string(),
        user_id.to_string(),
        token_hash.to_string(),
    );
    pool.with(move |conn| {
        let tx = conn.transaction()?;
        tx.execute(
            "insert into _reactor_sessions (id, user_id) values (?1, ?2)",
            params![sid, uid],
        )?;
        tx.execute(
            "insert into _reactor_refresh_tokens (session_id, token_hash) values (?1, ?2)",
            params![sid, hash],
        )?;
        tx.commit()?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub(crate) async fn session_active(
    pool: &SqlitePool,
    session_id: &str,
) -> Result<bool, StoreError> {
    let sid = session_id.to_string();
    Ok(pool
        .with(move |conn| {
            Ok(conn
                .prepare_cached(
                    "select 1 from _reactor_sessions where id = ?1 and revoked_at is null",
                )?
                .exists([sid])?)
        })
        .await?)
}

pub(crate) async fn refresh_token(
    pool: &SqlitePool,
    token_hash: &str,
) -> Result<Option<RefreshRow>, StoreError> {
    let hash = token_hash.to_string();
    Ok(pool
        .with(move |conn| {
            Ok(conn
                .prepare_cached(
                    "select t.id, t.session_id, s.user_id, t.revoked_at is not null, t.rotated,
                            (julianday('now') - julianday(t.revoked_at)) * 86400.0,
                            s.revoked_at is not null, s.org_id
                     from _reactor_refresh_tokens t join _reactor_sessions s on s.id = t.session_id
                     where t.token_hash = ?1",
                )?
                .query_row([hash], |r| {
                    Ok(RefreshRow {
                        id: r.get(0)?,
                        session_id: r.get(1)?,
                        user_id: r.get(2)?,
                        revoked: r.get(3)?,
                        rotated: r.get(4)?,
                        revoked_secs_ago: r.get(5)?,
                        session_revoked: r.get(6)?,
                        org_id: r.get(7)?,
                    })
                })
                .optional()?)
        })
        .await?)
}

pub(crate) async fn rotate_refresh_token(
    pool: &SqlitePool,
    id: i64,
    session_id: &str,
    new_hash: &str,
) -> Result<bool, StoreError> {
    let (sid, hash) = (session_id.to_string(), new_hash.to_string());
    Ok(pool
        .with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let rotated = tx.execute(
                &format!("update _reactor_refresh_tokens set revoked_at = {NOW}, rotated = 1 where id = ?1 and revoked_at is null"),
                [id],
            )?;
            if rotated == 1 {
                tx.execute(
                    "insert into _reactor_refresh_tokens (session_id, token_hash) values (?1, ?2)",
                    params![sid, hash],
                )?;
                tx.execute(&format!("update _reactor_sessions set refreshed_at = {NOW} where id = ?1"), [&sid])?;
            }
            tx.commit()?;
            Ok(rotated == 1)
        })
        .await?)
}

pub(crate) async fn add_refresh_token(
    pool: &SqlitePool,
    session_id: &str,
    new_hash: &str,
) -> Result<(), StoreError> {
    let (sid, hash) = (session_id.to_string(), new_hash.to_string());
    pool.with(move |conn| {
        conn.execute(
            "insert into _reactor_refresh_tokens (session_id, token_hash) values (?1, ?2)",
            params![sid, hash],
        )?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub(crate) async fn revoke_session(pool: &SqlitePool, session_id: &str) -> Result<(), StoreError> {
    let sid = session_id.to_string();
    pool.with(move |conn| {
        let tx = conn.transaction()?;
        tx.execute(&format!("update _reactor_sessions set revoked_at = {NOW} where id = ?1 and revoked_at is null"), [&sid])?;
        tx.execute(
            &format!("update _reactor_refresh_tokens set revoked_at = {NOW} where session_id = ?1 and revoked_at is null"),
            [&sid],
        )?;
        tx.commit()?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub(crate) async fn revoke_user_sessions(
    pool: &SqlitePool,
    user_id: &str,
    keep: Option<&str>,
) -> Result<(), StoreError> {
    let (uid, keep) = (user_id.to_string(), keep.map(str::to_string));
    pool.with(move |conn| {
        let tx = conn.transaction()?;
        tx.execute(
            &format!(
                "update _reactor_refresh_tokens set revoked_at = {NOW}
                 where revoked_at is null and session_id in
                   (select id from _reactor_sessions where user_id = ?1 and id is not ?2)"
            ),
            params![uid, keep],
        )?;
        tx.execute(
            &format!("update _reactor_sessions set revoked_at = {NOW} where user_id = ?1 and id is not ?2 and revoked_at is null"),
            params![uid, keep],
        )?;
        tx.commit()?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub(crate) async fn signing_keys(pool: &SqlitePool) -> Result<Vec<StoredKey>, StoreError> {
    Ok(pool
        .with(|conn| {
            let mut stmt = conn.prepare(
                "select kid, private_pkcs8, public_x, created_at, retired_at from _reactor_signing_keys order by created_at",
            )?;
            let keys = stmt
                .query_map([], |r| {
                    Ok(StoredKey {
                        kid: r.get(0)?,
                        private_pkcs8: r.get(1)?,
                        public_x: r.get(2)?,
                        created_at: r.get(3)?,
                        retired_at: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(keys)
        })
        .await?)
}

pub(crate) async fn insert_signing_key(
    pool: &SqlitePool,
    key: &StoredKey,
) -> Result<(), StoreError> {
    let k = key.clone();
    pool.with(move |conn| {
        conn.execute(
            "insert into _reactor_signing_keys (kid, private_pkcs8, public_x, created_at, retired_at) values (?1, ?2, ?3, ?4, ?5)",
            params![k.kid, k.private_pkcs8, k.public_x, k.created_at, k.retired_at],
        )?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub(crate) async fn retire_signing_keys_except(
    pool: &SqlitePool,
    kid: &str,
    now: i64,
) -> Result<(), StoreError> {
    let kid = kid.to_string();
    pool.with(move |conn| {
        conn.execute(
            "update _reactor_signing_keys set retired_at = ?2 where kid <> ?1 and retired_at is null",
            params![kid, now],
        )?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub(crate) async fn throttle_count(
    pool: &SqlitePool,
    bucket: &str,
    window_start: i64,
) -> Result<i64, StoreError> {
    let bucket = bucket.to_string();
    Ok(pool
        .with(move |conn| {
            Ok(conn
                .prepare_cached("select count from _reactor_auth_throttle where bucket = ?1 and window_start = ?2")?
                .query_row(params![bucket, window_start], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
        .await?)
}

pub(crate) async fn throttle_hit(
    pool: &SqlitePool,
    bucket: &str,
    window_start: i64,
) -> Result<(), StoreError> {
    let bucket = bucket.to_string();
    pool.with(move |conn| {
        conn.prepare_cached(
            "insert into _reactor_auth_throttle (bucket, window_start, count) values (?1, ?2, 1)
             on conflict (bucket) do update set
                 count = case when window_start = excluded.window_start then count + 1 else 1 end,
                 window_start = excluded.window_start",
        )?
        .execute(params![bucket, window_start])?;
        Ok(())
    })
    .await?;
    Ok(())
}

fn org_row(r: &Row<'_>) -> rusqlite::Result<OrgRow> {
    Ok(OrgRow {
        id: r.get(0)?,
        slug: r.get(1)?,
        name: r.get(2)?,
        created_at: r.get(3)?,
    })
}

pub(crate) async fn create_org(
    pool: &SqlitePool,
    org: &OrgRow,
    owner: &str,
) -> Result<OrgRow, StoreError> {
    let (o, owner) = (org.clone(), owner.to_string());
    let result = pool
        .with(move |conn| {
            let tx = conn.transaction()?;
            let row = tx.query_row(
                "insert into _reactor_orgs (id, slug, name) values (?1, ?2, ?3) returning id, slug, name, created_at",
                params![o.id, o.slug, o.name],
                org_row,
            );
            if let Ok(row) = &row {
                tx.execute(
                    "insert into _reactor_memberships (org_id, user_id, role) values (?1, ?2, 'owner')",
                    params![row.id, owner],
                )?;
                tx.commit()?;
            }
            Ok(row)
        })
        .await?;
    match result {
        Ok(row) => Ok(row),
        Err(e) if is_unique_violation(&e) => Err(StoreError::SlugTaken),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn org(pool: &SqlitePool, id_or_slug: &str) -> Result<Option<OrgRow>, StoreError> {
    let key = id_or_slug.to_string();
    Ok(pool
        .with(move |conn| {
            Ok(conn
                .prepare_cached("select id, slug, name, created_at from _reactor_orgs where id = ?1 or slug = ?1")?
                .query_row([key], org_row)
                .optional()?)
        })
        .await?)
}

pub(crate) async fn orgs_of(
    pool: &SqlitePool,
    user_id: &str,
) -> Result<Vec<(OrgRow, String)>, StoreError> {
    let uid = user_id.to_string();
    Ok(pool
        .with(move |conn| {
            let rows = conn
                .prepare_cached(
                    "select o.id, o.slug, o.name, o.created_at, m.role from _reactor_orgs o
                     join _reactor_memberships m on m.org_id = o.id where m.user_id = ?1 order by o.created_at, o.id",
                )?
                .query_map([uid], |r| Ok((org_row(r)?, r.get(4)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await?)
}

pub(crate) async fn role_in(
    pool: &SqlitePool,
    org_id: &str,
    user_id: &str,
) -> Result<Option<String>, StoreError> {
    let (oid, uid) = (org_id.to_string(), user_id.to_string());
    Ok(pool
        .with(move |conn| {
            Ok(conn
                .prepare_cached(
                    "select role from _reactor_memberships where org_id = ?1 and user_id = ?2",
                )?
                .query_row(params![oid, uid], |r| r.get(0))
                .optional()?)
        })
        .await?)
}

pub(crate) async fn members(pool: &SqlitePool, org_id: &str) -> Result<Vec<Member>, StoreError> {
    let oid = org_id.to_string();
    Ok(pool
        .with(move |conn| {
            let rows = conn
                .prepare_cached(
                    "select m.user_id, u.email, m.role, m.created_at from _reactor_memberships m
                     join _reactor_users u on u.id = m.user_id where m.org_id = ?1 order by m.created_at, u.email",
                )?
                .query_map([oid], |r| {
                    Ok(Member {
                        user_id: r.get(0)?,
                        email: r.get(1)?,
                        role: r.get(2)?,
                        joined_at: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await?)
}

/// Runs a membership change in an IMMEDIATE transaction (SQLite's write lock), refusing to
/// leave the org without an owner.
fn change_member(
    conn: &mut rusqlite::Connection,
    org_id: &str,
    user_id: &str,
    new_role: Option<&str>,
) -> Result<MemberChange, reactor_db::DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: Option<String> = tx
        .query_row(
            "select role from _reactor_memberships where org_id = ?1 and user_id = ?2",
            params![org_id, user_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(current) = current else {
        return Ok(MemberChange::NotMember);
    };
    if current == "owner" && new_role != Some("owner") {
        let owners: i64 = tx.query_row(
            "select count(*) from _reactor_memberships where org_id = ?1 and role = 'owner'",
            [org_id],
            |r| r.get(0),
        )?;
        if owners <= 1 {
            return Ok(MemberChange::LastOwner);
        }
    }
    match new_role {
        Some(role) => tx.execute(
            "update _reactor_memberships set role = ?3 where org_id = ?1 and user_id = ?2",
            params![org_id, user_id, role],
        )?,
        None => {
            tx.execute(
                "update _reactor_sessions set org_id = null where org_id = ?1 and user_id = ?2",
                params![org_id, user_id],
            )?;
            tx.execute(
                "delete from _reactor_memberships where org_id = ?1 and user_id = ?2",
                params![org_id, user_id],
            )?
        }
    };
    tx.commit()?;
    Ok(MemberChange::Done)
}

pub(crate) async fn set_member_role(
    pool: &SqlitePool,
    org_id: &str,
    user_id: &str,
    role: &str,
) -> Result<MemberChange, StoreError> {
    let (oid, uid, role) = (org_id.to_string(), user_id.to_string(), role.to_string());
    Ok(pool
        .with(move |conn| change_member(conn, &oid, &uid, Some(&role)))
        .await?)
}

pub(crate) async fn remove_member(
    pool: &SqlitePool,
    org_id: &str,
    user_id: &str,
) -> Result<MemberChange, StoreError> {
    let (oid, uid) = (org_id.to_string(), user_id.to_string());
    Ok(pool
        .with(move |conn| change_member(conn, &oid, &uid, None))
        .await?)
}

pub(crate) async fn create_invite(
    pool: &SqlitePool,
    i: &InviteRow,
    token_hash: &str,
    invited_by: &str,
) -> Result<(), StoreError> {
    let (i, hash, by) = (i.clone(), token_hash.to_string(), invited_by.to_string());
    pool.with(move |conn| {
        conn.execute(
            "insert into _reactor_invites (id, org_id, email, role, token_hash, invited_by, expires_at)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![i.id, i.org_id, i.email, i.role, hash, by, i.expires_at],
        )?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub(crate) async fn invite(
    pool: &SqlitePool,
    token_hash: &str,
) -> Result<Option<InviteRow>, StoreError> {
    let hash = token_hash.to_string();
    Ok(pool
        .with(move |conn| {
            Ok(conn
                .prepare_cached(
                    "select id, org_id, email, role, expires_at, accepted_at is not null from _reactor_invites where token_hash = ?1",
                )?
                .query_row([hash], |r| {
                    Ok(InviteRow {
                        id: r.get(0)?,
                        org_id: r.get(1)?,
                        email: r.get(2)?,
                        role: r.get(3)?,
                        expires_at: r.get(4)?,
                        accepted: r.get(5)?,
                    })
                })
                .optional()?)
        })
        .await?)
}

pub(crate) async fn accept_invite(
    pool: &SqlitePool,
    invite: &InviteRow,
    user_id: &str,
) -> Result<bool, StoreError> {
    let (i, uid) = (invite.clone(), user_id.to_string());
    Ok(pool
        .with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let taken = tx.execute(
                &format!("update _reactor_invites set accepted_at = {NOW} where id = ?1 and accepted_at is null"),
                [&i.id],
            )?;
            if taken == 1 {
                tx.execute(
                    "insert into _reactor_memberships (org_id, user_id, role) values (?1, ?2, ?3)
                     on conflict (org_id, user_id) do nothing",
                    params![i.org_id, uid, i.role],
                )?;
            }
            tx.commit()?;
            Ok(taken == 1)
        })
        .await?)
}

pub(crate) async fn set_session_org(
    pool: &SqlitePool,
    session_id: &str,
    org_id: Option<&str>,
) -> Result<(), StoreError> {
    let (sid, oid) = (session_id.to_string(), org_id.map(str::to_string));
    pool.with(move |conn| {
        conn.execute(
            "update _reactor_sessions set org_id = ?2 where id = ?1",
            params![sid, oid],
        )?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub(crate) async fn create_one_time_token(
    pool: &SqlitePool,
    hash: &str,
    user_id: &str,
    kind: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    let (hash, uid, kind) = (hash.to_string(), user_id.to_string(), kind.to_string());
    pool.with(move |conn| {
        conn.execute(
            "insert into _reactor_one_time_tokens (token_hash, user_id, kind, expires_at) values (?1, ?2, ?3, ?4)",
            params![hash, uid, kind, expires_at],
        )?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub(crate) async fn use_one_time_token(
    pool: &SqlitePool,
    hash: &str,
    kind: &str,
) -> Result<Option<(String, i64)>, StoreError> {
    let (hash, kind) = (hash.to_string(), kind.to_string());
    Ok(pool
        .with(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "update _reactor_one_time_tokens set used_at = {NOW}
                         where token_hash = ?1 and kind = ?2 and used_at is null
                         returning user_id, expires_at"
                    ),
                    params![hash, kind],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?)
        })
        .await?)
}

pub(crate) async fn enqueue_email(
    pool: &SqlitePool,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<(), StoreError> {
    let (to, subject, body) = (to.to_string(), subject.to_string(), body.to_string());
    pool.with(move |conn| {
        conn.execute(
            "insert into _reactor_email_outbox (to_addr, subject, body) values (?1, ?2, ?3)",
            params![to, subject, body],
        )?;
        Ok(())
    })
    .await?;
    Ok(())
}

fn outbox_row(r: &Row<'_>) -> rusqlite::Result<OutboxEmail> {
    Ok(OutboxEmail {
        id: r.get(0)?,
        to: r.get(1)?,
        subject: r.get(2)?,
        body: r.get(3)?,
        created_at: r.get(4)?,
        sent: r.get(5)?,
    })
}

pub(crate) async fn claim_email(
    pool: &SqlitePool,
    max_attempts: i64,
) -> Result<Option<OutboxEmail>, StoreError> {
    Ok(pool
        .with(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "update _reactor_email_outbox set sent_at = {NOW}, attempts = attempts + 1
                         where sent_at is null and id = (select id from _reactor_email_outbox
                             where sent_at is null and attempts < ?1 order by id limit 1)
                         returning id, to_addr, subject, body, created_at, 1"
                    ),
                    [max_attempts],
                    outbox_row,
                )
                .optional()?)
        })
        .await?)
}

pub(crate) async fn email_failed(
    pool: &SqlitePool,
    id: i64,
    error: &str,
) -> Result<(), StoreError> {
    let error = error.to_string();
    pool.with(move |conn| {
        conn.execute(
            "update _reactor_email_outbox set sent_at = null, last_error = ?2 where id = ?1",
            params![id, error],
        )?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub(crate) async fn mailbox(
    pool: &SqlitePool,
    to: Option<&str>,
) -> Result<Vec<OutboxEmail>, StoreError> {
    let to = to.map(str::to_string);
    Ok(pool
        .with(move |conn| {
            let rows = conn
                .prepare(
                    "select id, to_addr, subject, body, created_at, sent_at is not null from _reactor_email_outbox
                     where ?1 is null or to_addr = ?1 order by id desc limit 100",
                )?
                .query_map([to], outbox_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await?)
}
