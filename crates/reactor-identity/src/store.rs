//! The identity tables, behind one type whose two adapters (`sqlite.rs`, `postgres.rs`)
//! expose functions of the same names and meaning.

use reactor_db::{Db, DbError, SqlitePool};
use sqlx::PgPool;

use crate::jwt::StoredKey;
use crate::{postgres, sqlite};

/// A user row. Timestamps are RFC 3339 text; metadata is JSON text.
#[derive(Debug, Clone)]
pub(crate) struct UserRow {
    pub id: String,
    pub email: String,
    pub password_hash: Option<String>,
    pub email_confirmed_at: Option<String>,
    pub role: Option<String>,
    pub user_metadata: String,
    pub app_metadata: String,
    pub banned: bool,
    pub created_at: String,
    pub updated_at: String,
    pub last_sign_in_at: Option<String>,
}

/// A refresh token looked up by hash, with what the rotation rules need.
#[derive(Debug, Clone)]
pub(crate) struct RefreshRow {
    pub id: i64,
    pub session_id: String,
    pub user_id: String,
    pub revoked: bool,
    pub rotated: bool,
    /// Seconds since it was revoked or rotated, measured by the database's clock.
    pub revoked_secs_ago: Option<f64>,
    pub session_revoked: bool,
    /// The session's active organization.
    pub org_id: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct OrgRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub role: String,
    pub joined_at: String,
}

#[derive(Debug, Clone)]
pub(crate) struct InviteRow {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub role: String,
    pub expires_at: i64,
    pub accepted: bool,
}

/// A message of the email outbox.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxEmail {
    pub id: i64,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub created_at: String,
    pub sent: bool,
}

/// What a membership change did. Owner counts are checked under a lock on the org, so two
/// owners demoting each other at once cannot leave it ownerless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberChange {
    Done,
    NotMember,
    LastOwner,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("the email is taken")]
    EmailTaken,
    #[error("the slug is taken")]
    SlugTaken,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(DbError::Sqlite(e))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(DbError::Postgres(e))
    }
}

/// A user to create.
#[derive(Debug, Clone)]
pub(crate) struct NewUser {
    pub id: String,
    pub email: String,
    pub password_hash: Option<String>,
    pub user_metadata: String,
    pub app_metadata: String,
    pub confirmed: bool,
    pub role: Option<String>,
}

/// Changes to a user; `None` leaves a field as it is. Metadata is the whole new JSON text.
#[derive(Debug, Default, Clone)]
pub(crate) struct UserChanges {
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub user_metadata: Option<String>,
    pub app_metadata: Option<String>,
    /// `Some(None)` clears the server role.
    pub role: Option<Option<String>>,
    /// `Some(Some(n))` bans for `n` seconds from now, `Some(None)` lifts a ban.
    pub ban_secs: Option<Option<i64>>,
    /// `Some(true)` confirms the email (keeping an earlier confirmation time), `Some(false)`
    /// unconfirms it.
    pub confirm_email: Option<bool>,
}

#[derive(Debug, Clone)]
pub(crate) enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

macro_rules! dispatch {
    ($self:ident, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(p) => sqlite::$f(p, $($arg),*).await,
            Store::Postgres(p) => postgres::$f(p, $($arg),*).await,
        }
    };
}

impl Store {
    pub async fn open(db: &Db) -> Result<Store, DbError> {
        db.apply_migrations("identity", sqlite::MIGRATIONS, postgres::MIGRATIONS)
            .await?;
        Ok(match db {
            Db::Sqlite(p) => Store::Sqlite(p.clone()),
            Db::Postgres(p) => Store::Postgres(p.clone()),
        })
    }

    pub async fn create_user(&self, user: &NewUser) -> Result<UserRow, StoreError> {
        dispatch!(self, create_user(user))
    }

    /// A page of users, oldest first, and the total count.
    pub async fn list_users(
        &self,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<UserRow>, i64), StoreError> {
        dispatch!(self, list_users(offset, limit))
    }

    pub async fn delete_user(&self, id: &str) -> Result<bool, StoreError> {
        dispatch!(self, delete_user(id))
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        dispatch!(self, user_by_email(email))
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        dispatch!(self, user_by_id(id))
    }

    pub async fn update_user(
        &self,
        id: &str,
        changes: &UserChanges,
    ) -> Result<Option<UserRow>, StoreError> {
        dispatch!(self, update_user(id, changes))
    }

    pub async fn record_sign_in(&self, user_id: &str) -> Result<(), StoreError> {
        dispatch!(self, record_sign_in(user_id))
    }

    /// A new session with its first refresh token.
    pub async fn create_session(
        &self,
        session_id: &str,
        user_id: &str,
        token_hash: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, create_session(session_id, user_id, token_hash))
    }

    pub async fn session_active(&self, session_id: &str) -> Result<bool, StoreError> {
        dispatch!(self, session_active(session_id))
    }

    pub async fn refresh_token(&self, token_hash: &str) -> Result<Option<RefreshRow>, StoreError> {
        dispatch!(self, refresh_token(token_hash))
    }

    /// Marks token `id` rotated and adds its successor, atomically and only if `id` was live:
    /// of two concurrent uses of one token, exactly one rotates it.
    pub async fn rotate_refresh_token(
        &self,
        id: i64,
        session_id: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, rotate_refresh_token(id, session_id, new_hash))
    }

    /// Adds a token to a session without rotating anything (the reuse grace window).
    pub async fn add_refresh_token(
        &self,
        session_id: &str,
        new_hash: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, add_refresh_token(session_id, new_hash))
    }

    pub async fn revoke_session(&self, session_id: &str) -> Result<(), StoreError> {
        dispatch!(self, revoke_session(session_id))
    }

    /// Revokes every session of a user, but `keep` when given.
    pub async fn revoke_user_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<(), StoreError> {
        dispatch!(self, revoke_user_sessions(user_id, keep))
    }

    /// Failed attempts recorded in `bucket` during the window starting at `window_start`.
    pub async fn throttle_count(&self, bucket: &str, window_start: i64) -> Result<i64, StoreError> {
        dispatch!(self, throttle_count(bucket, window_start))
    }

    /// Records one failed attempt; a new window restarts the count.
    pub async fn throttle_hit(&self, bucket: &str, window_start: i64) -> Result<(), StoreError> {
        dispatch!(self, throttle_hit(bucket, window_start))
    }

    /// Creates an org with `owner` as its first owner.
    pub async fn create_org(&self, org: &OrgRow, owner: &str) -> Result<OrgRow, StoreError> {
        dispatch!(self, create_org(org, owner))
    }

    /// An org by id or slug.
    pub async fn org(&self, id_or_slug: &str) -> Result<Option<OrgRow>, StoreError> {
        dispatch!(self, org(id_or_slug))
    }

    /// The orgs a user belongs to, with the user's role in each.
    pub async fn orgs_of(&self, user_id: &str) -> Result<Vec<(OrgRow, String)>, StoreError> {
        dispatch!(self, orgs_of(user_id))
    }

    pub async fn role_in(&self, org_id: &str, user_id: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, role_in(org_id, user_id))
    }

    pub async fn members(&self, org_id: &str) -> Result<Vec<Member>, StoreError> {
        dispatch!(self, members(org_id))
    }

    pub async fn set_member_role(
        &self,
        org_id: &str,
        user_id: &str,
        role: &str,
    ) -> Result<MemberChange, StoreError> {
        dispatch!(self, set_member_role(org_id, user_id, role))
    }

    pub async fn remove_member(
        &self,
        org_id: &str,
        user_id: &str,
    ) -> Result<MemberChange, StoreError> {
        dispatch!(self, remove_member(org_id, user_id))
    }

    pub async fn create_invite(
        &self,
        invite: &InviteRow,
        token_hash: &str,
        invited_by: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, create_invite(invite, token_hash, invited_by))
    }

    pub async fn invite(&self, token_hash: &str) -> Result<Option<InviteRow>, StoreError> {
        dispatch!(self, invite(token_hash))
    }

    /// Marks the invite accepted and adds the membership (an existing one keeps its role);
    /// `false` when someone accepted it first.
    pub async fn accept_invite(
        &self,
        invite: &InviteRow,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, accept_invite(invite, user_id))
    }

    pub async fn set_session_org(
        &self,
        session_id: &str,
        org_id: Option<&str>,
    ) -> Result<(), StoreError> {
        dispatch!(self, set_session_org(session_id, org_id))
    }

    pub async fn create_one_time_token(
        &self,
        token_hash: &str,
        user_id: &str,
        kind: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        dispatch!(
            self,
            create_one_time_token(token_hash, user_id, kind, expires_at)
        )
    }

    /// Spends a one-time token of `kind`: the user and expiry, once; `None` ever after.
    pub async fn use_one_time_token(
        &self,
        token_hash: &str,
        kind: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        dispatch!(self, use_one_time_token(token_hash, kind))
    }

    pub async fn enqueue_email(
        &self,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, enqueue_email(to, subject, body))
    }

    /// Takes the oldest unsent message for delivery (marking it sent, so no other replica
    /// takes it too); a failed delivery puts it back with `email_failed`.
    pub async fn claim_email(&self, max_attempts: i64) -> Result<Option<OutboxEmail>, StoreError> {
        dispatch!(self, claim_email(max_attempts))
    }

    pub async fn email_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        dispatch!(self, email_failed(id, error))
    }

    /// The newest messages, to one address or all (the dev mailbox).
    pub async fn mailbox(&self, to: Option<&str>) -> Result<Vec<OutboxEmail>, StoreError> {
        dispatch!(self, mailbox(to))
    }

    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        dispatch!(self, signing_keys())
    }

    pub async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        dispatch!(self, insert_signing_key(key))
    }

    pub async fn retire_signing_keys_except(&self, kid: &str, now: i64) -> Result<(), StoreError> {
        dispatch!(self, retire_signing_keys_except(kid, now))
    }
}
