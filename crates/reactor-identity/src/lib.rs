//! Identity: users, sign-in sessions, access and refresh tokens, on `/auth/v1`.
//!
//! Where Supabase Auth (GoTrue) has an endpoint for the same job, the path and JSON shapes are
//! its own, so existing clients work. [`Identity`] is the capability: the HTTP layer
//! (`http.rs`) parses requests and calls it; it calls the store (`store.rs`), whose two
//! adapters keep the tables in SQLite or Postgres.

pub mod http;
pub mod jwt;
pub mod mail;
mod orgs;
mod password;
mod postgres;
mod recovery;
mod sqlite;
mod store;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reactor_core::{ApiError, keys};
use reactor_db::Db;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::jwt::{AUDIENCE, AccessClaims, JwtError, Keyring, StoredKey};
use crate::store::{NewUser, Store, StoreError, UserChanges, UserRow};

/// Seconds since the epoch; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    })
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The `iss` claim of access tokens.
    pub issuer: String,
    /// Access token lifetime in seconds.
    pub access_token_ttl: i64,
    /// How long after its rotation a refresh token may be used again (parallel tabs) before
    /// reuse is treated as theft and the whole session is revoked.
    pub refresh_reuse_grace_secs: f64,
    pub password_min_length: usize,
    pub disable_signup: bool,
    /// Failed sign-ins allowed per email address in one window, before 429.
    pub login_attempts_per_email: i64,
    /// Failed sign-ins allowed per client address in one window, before 429.
    pub login_attempts_per_address: i64,
    pub login_window_secs: i64,
    /// Password-reset emails asked per address, and per client address, in one window; past
    /// them `/recover` answers 429 whether or not the address has an account.
    pub recover_per_email: i64,
    pub recover_per_address: i64,
    pub recover_window_secs: i64,
    /// Organization roles beyond owner, admin and member, from server config.
    pub custom_roles: Vec<String>,
    /// How long an invitation stays valid, in seconds.
    pub invite_ttl_secs: i64,
    /// Whether a new account must confirm its email address before signing in.
    pub confirm_email: bool,
    /// Where links in emails point (the app or this server), e.g. `https://app.example.com`.
    pub site_url: String,
    /// How long recovery and confirmation links work, in seconds.
    pub one_time_token_ttl_secs: i64,
    pub mailer: mail::MailerConfig,
    /// Serves `GET /auth/v1/dev/mailbox` (only `reactor dev` turns this on).
    pub dev_mailbox: bool,
    /// Seals the signing keys at rest. Without one they are stored in plain base64.
    pub master_key: Option<reactor_core::seal::MasterKey>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            issuer: "reactor".into(),
            access_token_ttl: 3600,
            refresh_reuse_grace_secs: 10.0,
            password_min_length: 8,
            disable_signup: false,
            login_attempts_per_email: 10,
            login_attempts_per_address: 30,
            login_window_secs: 300,
            recover_per_email: 3,
            recover_per_address: 10,
            recover_window_secs: 3600,
            custom_roles: Vec::new(),
            invite_ttl_secs: 7 * 24 * 3600,
            confirm_email: false,
            site_url: "http://127.0.0.1:8080".into(),
            one_time_token_ttl_secs: 3600,
            mailer: mail::MailerConfig::Disabled,
            dev_mailbox: false,
            master_key: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("unable to validate email address: invalid format")]
    InvalidEmail,
    #[error("{0}")]
    WeakPassword(String),
    #[error("a user with this email address has already been registered")]
    EmailTaken,
    #[error("invalid login credentials")]
    InvalidCredentials,
    #[error("the user is banned")]
    UserBanned,
    #[error("signups are disabled on this server")]
    SignupDisabled,
    #[error("invalid refresh token: not found")]
    RefreshTokenNotFound,
    #[error("invalid refresh token: already used")]
    RefreshTokenReused,
    #[error("the session does not exist or was signed out")]
    SessionNotFound,
    #[error("the user does not exist")]
    UserNotFound,
    #[error("this endpoint requires a signed-in user's access token")]
    NoUser,
    #[error("invalid access token: {0}")]
    BadJwt(String),
    #[error("the access token has expired")]
    JwtExpired,
    #[error("an organization with this slug already exists")]
    SlugTaken,
    #[error("you are not a member of this organization")]
    NotMember,
    #[error("{0}")]
    InsufficientRole(String),
    #[error("the organization must keep at least one owner")]
    LastOwner,
    #[error("the invitation does not exist or was already used")]
    InviteNotFound,
    #[error("the invitation has expired")]
    InviteExpired,
    #[error("the invitation was sent to another email address")]
    InviteEmailMismatch,
    #[error("the email address is not confirmed yet")]
    EmailNotConfirmed,
    #[error("the link or code is invalid or has expired")]
    OtpExpired,
    #[error("too many failed sign-ins; try again in {0} seconds")]
    TooManyAttempts(u64),
    #[error("too many emails asked for this address or from this client; try again in {0} seconds")]
    TooManyEmails(u64),
    #[error("{0}")]
    BadRequest(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StoreError> for IdentityError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EmailTaken => IdentityError::EmailTaken,
            StoreError::SlugTaken => IdentityError::SlugTaken,
            StoreError::Db(e) => IdentityError::Internal(e.to_string()),
        }
    }
}

impl From<JwtError> for IdentityError {
    fn from(e: JwtError) -> Self {
        match e {
            JwtError::Expired => IdentityError::JwtExpired,
            JwtError::Invalid(m) => IdentityError::BadJwt(m),
            JwtError::UnknownKey => IdentityError::BadJwt("signed by an unknown key".into()),
            JwtError::Key(m) => IdentityError::Internal(m),
            JwtError::NoSigner => IdentityError::Internal("no signing key".into()),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        use IdentityError as E;
        let (status, code, hint) = match &e {
            E::InvalidEmail => (
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "send an address like name@example.com",
            ),
            E::WeakPassword(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "weak_password",
                "choose a longer, less repetitive password",
            ),
            E::EmailTaken => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "user_already_exists",
                "sign in instead, or recover the password",
            ),
            E::InvalidCredentials => (
                StatusCode::BAD_REQUEST,
                "invalid_credentials",
                "check the email address and password",
            ),
            E::UserBanned => (
                StatusCode::FORBIDDEN,
                "user_banned",
                "ask the project's administrators",
            ),
            E::SignupDisabled => (
                StatusCode::FORBIDDEN,
                "signup_disabled",
                "ask the project's administrators for an invitation",
            ),
            E::RefreshTokenNotFound => (
                StatusCode::BAD_REQUEST,
                "refresh_token_not_found",
                "sign in again",
            ),
            E::RefreshTokenReused => (
                StatusCode::BAD_REQUEST,
                "refresh_token_already_used",
                "the session was signed out because a refresh token was used twice; sign in again",
            ),
            E::SessionNotFound => (StatusCode::FORBIDDEN, "session_not_found", "sign in again"),
            E::UserNotFound => (
                StatusCode::NOT_FOUND,
                "user_not_found",
                "the user may have been deleted",
            ),
            E::NoUser => (
                StatusCode::UNAUTHORIZED,
                "no_authorization",
                "send the user's access token as Authorization: Bearer <jwt>, with the project key in `apikey`",
            ),
            E::BadJwt(_) => (
                StatusCode::UNAUTHORIZED,
                "bad_jwt",
                "sign in again to get a fresh access token",
            ),
            E::JwtExpired => (
                StatusCode::UNAUTHORIZED,
                "jwt_expired",
                "refresh the session with grant_type=refresh_token",
            ),
            E::TooManyAttempts(secs) => {
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "over_request_rate_limit",
                    e.to_string(),
                )
                .with_hint("wait, then check the email address and password")
                .with_retry_after(*secs);
            }
            E::TooManyEmails(secs) => {
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "over_email_send_rate_limit",
                    e.to_string(),
                )
                .with_hint(
                    "wait, then check the inbox (and the spam folder) for the email already sent",
                )
                .with_retry_after(*secs);
            }
            E::SlugTaken => (
                StatusCode::CONFLICT,
                "org_slug_taken",
                "choose another slug",
            ),
            E::NotMember => (
                StatusCode::FORBIDDEN,
                "not_a_member",
                "`GET /auth/v1/orgs` (or `reactor org list`) lists the organizations you belong to",
            ),
            E::InsufficientRole(_) => (
                StatusCode::FORBIDDEN,
                "insufficient_role",
                "ask an owner or admin of the organization",
            ),
            E::LastOwner => (
                StatusCode::CONFLICT,
                "last_owner",
                "make another member an owner first",
            ),
            E::EmailNotConfirmed => (
                StatusCode::BAD_REQUEST,
                "email_not_confirmed",
                "open the confirmation link sent to the address, then sign in",
            ),
            E::OtpExpired => (StatusCode::FORBIDDEN, "otp_expired", "ask for a new email"),
            E::InviteNotFound => (
                StatusCode::BAD_REQUEST,
                "invite_not_found",
                "ask for a new invitation",
            ),
            E::InviteExpired => (
                StatusCode::BAD_REQUEST,
                "invite_expired",
                "ask for a new invitation",
            ),
            E::InviteEmailMismatch => (
                StatusCode::FORBIDDEN,
                "invite_email_mismatch",
                "sign in with the address the invitation was sent to",
            ),
            E::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "see the Reactor README for this endpoint's parameters",
            ),
            E::Internal(cause) => {
                tracing::error!(%cause, "identity failure");
                return ApiError::internal();
            }
        };
        ApiError::new(status, code, e.to_string()).with_hint(hint)
    }
}

/// A user as the API shows it (GoTrue's shape).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    pub id: String,
    pub aud: &'static str,
    pub role: &'static str,
    pub email: String,
    pub email_confirmed_at: Option<String>,
    pub confirmed_at: Option<String>,
    pub phone: &'static str,
    pub last_sign_in_at: Option<String>,
    pub app_metadata: Value,
    pub user_metadata: Value,
    pub identities: Vec<Value>,
    pub is_anonymous: bool,
    pub created_at: String,
    pub updated_at: String,
    /// The server-level role (`admin` may deploy), when the user has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_role: Option<String>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            aud: AUDIENCE,
            role: "authenticated",
            email: r.email,
            confirmed_at: r.email_confirmed_at.clone(),
            email_confirmed_at: r.email_confirmed_at,
            phone: "",
            last_sign_in_at: r.last_sign_in_at,
            app_metadata: serde_json::from_str(&r.app_metadata).unwrap_or_else(|_| json!({})),
            user_metadata: serde_json::from_str(&r.user_metadata).unwrap_or_else(|_| json!({})),
            identities: Vec::new(),
            is_anonymous: false,
            created_at: r.created_at,
            updated_at: r.updated_at,
            server_role: r.role,
        }
    }
}

/// Whether a throttled action may go ahead in the current window.
pub(crate) enum Throttle {
    Open { window: i64 },
    Closed { retry_after: u64 },
}

/// What a successful sign-in or refresh returns.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub expires_at: i64,
    pub refresh_token: String,
    pub user: User,
}

/// What a sign-up gives: a session, or (when emails must be confirmed) the new user.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SignupOutcome {
    Session(Box<Session>),
    ConfirmationSent(Box<User>),
}

/// `POST /logout?scope=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    /// This session only (the default).
    Local,
    /// Every session of the user.
    Global,
    /// Every session but this one.
    Others,
}

/// `PUT /user`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    pub email: Option<String>,
    pub password: Option<String>,
    pub data: Option<Map<String, Value>>,
}

/// The identity capability.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Wakes this process's email delivery loop; `None` when no mailer is configured.
    mail_wake: Option<Arc<tokio::sync::Notify>>,
    config: IdentityConfig,
    keyring: RwLock<Arc<Keyring>>,
    last_reload: Mutex<Option<Instant>>,
    clock: Clock,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

const REFRESH_TOKEN_LEN: usize = 40;

impl Identity {
    /// Applies the identity tables' migrations and makes the first signing key if there is none.
    pub async fn start(
        db: &Db,
        config: IdentityConfig,
        clock: Clock,
    ) -> Result<Identity, IdentityError> {
        let store = Store::open(db)
            .await
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let mut keys = store.signing_keys().await?;
        if !keys.iter().any(|k| k.retired_at.is_none()) {
            let key = StoredKey::generate(clock(), config.master_key.as_ref())?;
            store.insert_signing_key(&key).await?;
            keys = store.signing_keys().await?;
        }
        let keyring = Keyring::new(&keys, config.access_token_ttl, config.master_key.as_ref())?;
        let mail_wake = mail::start_dispatcher(store.clone(), &config.mailer)
            .map_err(IdentityError::Internal)?;
        Ok(Identity {
            inner: Arc::new(Inner {
                mail_wake,
                store,
                config,
                keyring: RwLock::new(Arc::new(keyring)),
                last_reload: Mutex::new(None),
                clock,
            }),
        })
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.inner.config
    }

    fn now(&self) -> i64 {
        (self.inner.clock)()
    }

    fn keyring(&self) -> Arc<Keyring> {
        match self.inner.keyring.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the signing keys (another replica may have rotated), at most once a second.
    async fn reload_keys(&self) -> Result<(), IdentityError> {
        {
            let mut last = self
                .inner
                .last_reload
                .lock()
                .map_err(|e| IdentityError::Internal(e.to_string()))?;
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let keys = self.inner.store.signing_keys().await?;
        let ring = Keyring::new(
            &keys,
            self.inner.config.access_token_ttl,
            self.inner.config.master_key.as_ref(),
        )?;
        if let Ok(mut slot) = self.inner.keyring.write() {
            *slot = Arc::new(ring);
        }
        Ok(())
    }

    /// Verifies an access token. An unknown `kid` triggers one reload of the keys first.
    pub async fn verify_access_token(&self, token: &str) -> Result<AccessClaims, IdentityError> {
        let kid = jwt::kid_of(token)?;
        if !self.keyring().knows(&kid) {
            self.reload_keys().await?;
        }
        Ok(self.keyring().verify(token, self.now())?)
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        self.keyring().jwks(self.now())
    }

    /// Makes a new signing key the signer; older keys keep verifying until their tokens expire.
    pub async fn rotate_signing_key(&self) -> Result<String, IdentityError> {
        let now = self.now();
        let key = StoredKey::generate(now, self.inner.config.master_key.as_ref())?;
        self.inner.store.insert_signing_key(&key).await?;
        self.inner
            .store
            .retire_signing_keys_except(&key.kid, now)
            .await?;
        if let Ok(mut last) = self.inner.last_reload.lock() {
            *last = None;
        }
        self.reload_keys().await?;
        Ok(key.kid)
    }

    /// Creates a user and signs them in. With an invitation token, the new user joins its
    /// organization, which becomes the session's active one.
    pub async fn signup(
        &self,
        email: &str,
        password: &str,
        data: Option<Map<String, Value>>,
        invite: Option<&str>,
    ) -> Result<SignupOutcome, IdentityError> {
        if self.inner.config.disable_signup {
            return Err(IdentityError::SignupDisabled);
        }
        let email = normalize_email(email)?;
        let hash = self.new_password_hash(password).await?;
        // Checked before the user exists, so a bad invitation creates nothing.
        let invite = match invite {
            Some(token) => Some(self.check_invite(token, &email).await?),
            None => None,
        };
        let row = self
            .inner
            .store
            .create_user(&NewUser {
                id: uuid::Uuid::new_v4().to_string(),
                email,
                password_hash: Some(hash),
                user_metadata: Value::Object(data.unwrap_or_default()).to_string(),
                app_metadata: default_app_metadata(),
                // An invitation came to this address: that confirms it.
                confirmed: !self.inner.config.confirm_email || invite.is_some(),
                role: None,
            })
            .await?;
        if row.email_confirmed_at.is_none() {
            self.send_confirmation(&row).await?;
            return Ok(SignupOutcome::ConfirmationSent(Box::new(row.into())));
        }
        let org = match invite {
            Some(invite) => Some(self.join(&invite, &row.id).await?),
            None => None,
        };
        Ok(SignupOutcome::Session(Box::new(
            self.open_session(row, org).await?,
        )))
    }

    /// Signs in with email and password. Failures are counted per email and per client
    /// address in the database (so every replica sees them); past the limits the answer is 429
    /// whether or not the email exists.
    pub async fn password_grant(
        &self,
        email: &str,
        password: &str,
        client: Option<IpAddr>,
        invite: Option<&str>,
    ) -> Result<Session, IdentityError> {
        let normalized = normalize_email(email);
        let config = &self.inner.config;
        let mut buckets = vec![(
            format!("email:{}", normalized.as_deref().unwrap_or(email.trim())),
            config.login_attempts_per_email,
        )];
        if let Some(ip) = client {
            buckets.push((format!("addr:{ip}"), config.login_attempts_per_address));
        }
        let window = match self.throttle(&buckets, config.login_window_secs).await? {
            Throttle::Open { window } => window,
            Throttle::Closed { retry_after } => {
                return Err(IdentityError::TooManyAttempts(retry_after));
            }
        };
        let result = self.check_password(normalized.ok(), password).await;
        if matches!(result, Err(IdentityError::InvalidCredentials)) {
            self.throttle_hit(&buckets, window).await?;
        }
        let row = result?;
        if self.inner.config.confirm_email && row.email_confirmed_at.is_none() {
            return Err(IdentityError::EmailNotConfirmed);
        }
        let org = match invite {
            Some(token) => {
                let invite = self.check_invite(token, &row.email).await?;
                Some(self.join(&invite, &row.id).await?)
            }
            None => None,
        };
        self.open_session(row, org).await
    }

    /// Checks `(bucket, limit)` counters in the current window of `window_secs`, kept in the
    /// database so every replica counts together.
    pub(crate) async fn throttle(
        &self,
        buckets: &[(String, i64)],
        window_secs: i64,
    ) -> Result<Throttle, IdentityError> {
        let now = self.now();
        let window = now - now.rem_euclid(window_secs);
        for (bucket, limit) in buckets {
            if self.inner.store.throttle_count(bucket, window).await? >= *limit {
                let retry_after = (window + window_secs - now).max(1) as u64;
                return Ok(Throttle::Closed { retry_after });
            }
        }
        Ok(Throttle::Open { window })
    }

    pub(crate) async fn throttle_hit(
        &self,
        buckets: &[(String, i64)],
        window: i64,
    ) -> Result<(), IdentityError> {
        for (bucket, _) in buckets {
            self.inner.store.throttle_hit(bucket, window).await?;
        }
        Ok(())
    }

    async fn check_password(
        &self,
        email: Option<String>,
        password: &str,
    ) -> Result<UserRow, IdentityError> {
        // A malformed address is treated as unknown: no answer differs by whether it exists.
        let row = match email {
            Some(email) => self.inner.store.user_by_email(&email).await?,
            None => None,
        };
        let stored = row.as_ref().and_then(|r| r.password_hash.clone());
        let candidate = password.to_string();
        let ok =
            tokio::task::spawn_blocking(move || password::verify(&candidate, stored.as_deref()))
                .await
                .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let Some(row) = row.filter(|_| ok) else {
            return Err(IdentityError::InvalidCredentials);
        };
        if row.banned {
            return Err(IdentityError::UserBanned);
        }
        Ok(row)
    }

    /// A new session for `row`, active in `org` (id, role) when given.
    async fn open_session(
        &self,
        row: UserRow,
        org: Option<(String, String)>,
    ) -> Result<Session, IdentityError> {
        let session_id = uuid::Uuid::new_v4().to_string();
        let refresh = keys::random_base62(REFRESH_TOKEN_LEN);
        self.inner
            .store
            .create_session(&session_id, &row.id, &keys::hash(&refresh))
            .await?;
        if let Some((org_id, _)) = &org {
            self.inner
                .store
                .set_session_org(&session_id, Some(org_id))
                .await?;
        }
        self.inner.store.record_sign_in(&row.id).await?;
        let row = self.inner.store.user_by_id(&row.id).await?.unwrap_or(row);
        self.issue(row, session_id, refresh, org)
    }

    fn issue(
        &self,
        row: UserRow,
        session_id: String,
        refresh_token: String,
        org: Option<(String, String)>,
    ) -> Result<Session, IdentityError> {
        let now = self.now();
        let ttl = self.inner.config.access_token_ttl;
        let user = User::from(row);
        let claims = AccessClaims {
            sub: user.id.clone(),
            aud: AUDIENCE.into(),
            iss: self.inner.config.issuer.clone(),
            iat: now,
            exp: now + ttl,
            email: user.email.clone(),
            role: "authenticated".into(),
            session_id,
            org_id: org.as_ref().map(|(id, _)| id.clone()),
            org_role: org.map(|(_, role)| role),
            app_metadata: user.app_metadata.clone(),
            user_metadata: user.user_metadata.clone(),
        };
        Ok(Session {
            access_token: self.keyring().sign(&claims)?,
            token_type: "bearer",
            expires_in: ttl,
            expires_at: now + ttl,
            refresh_token,
            user,
        })
    }

    /// Exchanges a refresh token for a new session token pair, rotating it. A token used again
    /// within the grace window gets a fresh sibling (two tabs refreshing at once); later, the
    /// reuse is treated as theft and the whole session is revoked.
    ///
    /// `switch_org` (an org id or slug) makes that org the session's active one, if the user
    /// is a member; otherwise the session keeps its org, with the role read afresh (a member
    /// removed meanwhile loses it).
    pub async fn refresh_grant(
        &self,
        refresh_token: &str,
        switch_org: Option<&str>,
    ) -> Result<Session, IdentityError> {
        let hash = keys::hash(refresh_token);
        let store = &self.inner.store;
        let Some(token) = store.refresh_token(&hash).await? else {
            return Err(IdentityError::RefreshTokenNotFound);
        };
        if token.session_revoked {
            return Err(IdentityError::RefreshTokenNotFound);
        }
        // A switch the user may not make fails before the token is spent.
        let switch = match switch_org {
            Some(wanted) => Some(self.membership(&token.user_id, wanted).await?),
            None => None,
        };
        let next = keys::random_base62(REFRESH_TOKEN_LEN);
        let granted = if !token.revoked {
            store
                .rotate_refresh_token(token.id, &token.session_id, &keys::hash(&next))
                .await?
        } else {
            false
        };
        if !granted {
            // Someone rotated it before us: read again to learn when.
            let again = store
                .refresh_token(&hash)
                .await?
                .ok_or(IdentityError::RefreshTokenNotFound)?;
            let within_grace = again.rotated
                && !again.session_revoked
                && again
                    .revoked_secs_ago
                    .is_some_and(|s| s <= self.inner.config.refresh_reuse_grace_secs);
            if !within_grace {
                store.revoke_session(&token.session_id).await?;
                tracing::warn!(session = %token.session_id, "refresh token reused; session revoked");
                return Err(IdentityError::RefreshTokenReused);
            }
            store
                .add_refresh_token(&token.session_id, &keys::hash(&next))
                .await?;
        }
        let row = store
            .user_by_id(&token.user_id)
            .await?
            .ok_or(IdentityError::UserNotFound)?;
        if row.banned {
            store.revoke_session(&token.session_id).await?;
            return Err(IdentityError::UserBanned);
        }
        let org = match (switch, &token.org_id) {
            (Some((org_id, role)), _) => {
                store
                    .set_session_org(&token.session_id, Some(&org_id))
                    .await?;
                Some((org_id, role))
            }
            (None, Some(org_id)) => match store.role_in(org_id, &row.id).await? {
                Some(role) => Some((org_id.clone(), role)),
                None => {
                    store.set_session_org(&token.session_id, None).await?;
                    None
                }
            },
            (None, None) => None,
        };
        self.issue(row, token.session_id, next, org)
    }

    /// Checks that a verified token's session is still signed in.
    async fn live_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<UserRow, IdentityError> {
        if !self.inner.store.session_active(session_id).await? {
            return Err(IdentityError::SessionNotFound);
        }
        self.inner
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(IdentityError::UserNotFound)
    }

    pub async fn logout(
        &self,
        user_id: &str,
        session_id: &str,
        scope: LogoutScope,
    ) -> Result<(), IdentityError> {
        self.live_session(user_id, session_id).await?;
        let store = &self.inner.store;
        match scope {
            LogoutScope::Local => store.revoke_session(session_id).await?,
            LogoutScope::Global => store.revoke_user_sessions(user_id, None).await?,
            LogoutScope::Others => {
                store
                    .revoke_user_sessions(user_id, Some(session_id))
                    .await?
            }
        }
        Ok(())
    }

    pub async fn user(&self, user_id: &str, session_id: &str) -> Result<User, IdentityError> {
        Ok(self.live_session(user_id, session_id).await?.into())
    }

    /// Changes email, password and metadata (merged key by key; a `null` value removes a key).
    /// A new password signs out every other session.
    pub async fn update_user(
        &self,
        user_id: &str,
        session_id: &str,
        update: UserUpdate,
    ) -> Result<User, IdentityError> {
        let current = self.live_session(user_id, session_id).await?;
        let changes = self
            .profile_changes(&current, update.email, update.password, update.data)
            .await?;
        let row = self
            .inner
            .store
            .update_user(user_id, &changes)
            .await?
            .ok_or(IdentityError::UserNotFound)?;
        if changes.password_hash.is_some() {
            self.inner
                .store
                .revoke_user_sessions(user_id, Some(session_id))
                .await?;
        }
        Ok(row.into())
    }

    /// The changes a user may make to themselves (and an admin to anyone): email, password and
    /// user metadata, checked and merged into `current`.
    async fn profile_changes(
        &self,
        current: &UserRow,
        email: Option<String>,
        password: Option<String>,
        user_metadata: Option<Map<String, Value>>,
    ) -> Result<UserChanges, IdentityError> {
        Ok(UserChanges {
            email: email.as_deref().map(normalize_email).transpose()?,
            password_hash: match &password {
                Some(p) => Some(self.new_password_hash(p).await?),
                None => None,
            },
            user_metadata: user_metadata.map(|data| merge_metadata(&current.user_metadata, data)),
            ..UserChanges::default()
        })
    }

    /// The hash of a new password, once it passes the policy.
    async fn new_password_hash(&self, password: &str) -> Result<String, IdentityError> {
        if let Some(why) = password::weakness(password, self.inner.config.password_min_length) {
            return Err(IdentityError::WeakPassword(why));
        }
        hash_password(password).await
    }

    /// Admin: a page of users (1-based `page`).
    pub async fn admin_list_users(
        &self,
        page: i64,
        per_page: i64,
    ) -> Result<(Vec<User>, i64), IdentityError> {
        let per_page = per_page.clamp(1, 1000);
        let offset = (page.max(1) - 1) * per_page;
        let (rows, total) = self.inner.store.list_users(offset, per_page).await?;
        Ok((rows.into_iter().map(User::from).collect(), total))
    }

    pub async fn admin_get_user(&self, id: &str) -> Result<User, IdentityError> {
        Ok(self
            .inner
            .store
            .user_by_id(id)
            .await?
            .ok_or(IdentityError::UserNotFound)?
            .into())
    }

    /// Admin: creates a user, with or without a password, confirmed or not.
    pub async fn admin_create_user(&self, new: AdminUserCreate) -> Result<User, IdentityError> {
        let email = normalize_email(&new.email)?;
        let password_hash = match &new.password {
            Some(p) => Some(self.new_password_hash(p).await?),
            None => None,
        };
        let role = new.role.as_deref().map(check_server_role).transpose()?;
        let app = merge_metadata(
            &default_app_metadata(),
            new.app_metadata.unwrap_or_default(),
        );
        let row = self
            .inner
            .store
            .create_user(&NewUser {
                id: uuid::Uuid::new_v4().to_string(),
                email,
                password_hash,
                user_metadata: Value::Object(new.user_metadata.unwrap_or_default()).to_string(),
                app_metadata: app,
                confirmed: new.email_confirm.unwrap_or(false),
                role,
            })
            .await?;
        Ok(row.into())
    }

    /// Admin: changes anything about a user. A ban or a new password signs the user out
    /// everywhere (access tokens already issued live until they expire).
    pub async fn admin_update_user(
        &self,
        id: &str,
        update: AdminUserUpdate,
    ) -> Result<User, IdentityError> {
        let current = self
            .inner
            .store
            .user_by_id(id)
            .await?
            .ok_or(IdentityError::UserNotFound)?;
        let mut changes = self
            .profile_changes(
                &current,
                update.email,
                update.password,
                update.user_metadata,
            )
            .await?;
        if let Some(data) = update.app_metadata {
            changes.app_metadata = Some(merge_metadata(&current.app_metadata, data));
        }
        if let Some(role) = &update.role {
            changes.role = Some(role.as_deref().map(check_server_role).transpose()?);
        }
        if let Some(duration) = &update.ban_duration {
            changes.ban_secs = Some(parse_ban_duration(duration)?);
        }
        changes.confirm_email = update.email_confirm;
        let row = self
            .inner
            .store
            .update_user(id, &changes)
            .await?
            .ok_or(IdentityError::UserNotFound)?;
        if changes.password_hash.is_some() || matches!(changes.ban_secs, Some(Some(_))) {
            self.inner.store.revoke_user_sessions(id, None).await?;
        }
        Ok(row.into())
    }

    pub async fn admin_delete_user(&self, id: &str) -> Result<(), IdentityError> {
        if self.inner.store.delete_user(id).await? {
            Ok(())
        } else {
            Err(IdentityError::UserNotFound)
        }
    }
}

/// `POST /admin/users`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUserCreate {
    pub email: String,
    pub password: Option<String>,
    pub email_confirm: Option<bool>,
    pub user_metadata: Option<Map<String, Value>>,
    pub app_metadata: Option<Map<String, Value>>,
    pub role: Option<String>,
}

/// `PUT /admin/users/{id}`. `role: null` clears the server role; an absent `role` keeps it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUserUpdate {
    pub email: Option<String>,
    pub password: Option<String>,
    pub email_confirm: Option<bool>,
    pub user_metadata: Option<Map<String, Value>>,
    pub app_metadata: Option<Map<String, Value>>,
    /// `"none"` lifts a ban; otherwise a duration such as `"24h"`, `"90m"` or `"1h30m"`.
    pub ban_duration: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub role: Option<Option<String>>,
}

/// Tells a `null` apart from an absent field.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(serde::Deserialize::deserialize(d)?))
}

const SERVER_ROLES: &[&str] = &["admin"];

fn check_server_role(role: &str) -> Result<String, IdentityError> {
    if SERVER_ROLES.contains(&role) {
        Ok(role.to_string())
    } else {
        Err(IdentityError::BadRequest(format!(
            "unknown server role `{role}`; the server roles are: {} (or null for none)",
            SERVER_ROLES.join(", ")
        )))
    }
}

/// `none` → lift the ban; `24h`, `90m`, `1h30m`, `45s` → seconds.
fn parse_ban_duration(text: &str) -> Result<Option<i64>, IdentityError> {
    if text == "none" {
        return Ok(None);
    }
    let bad = || {
        IdentityError::BadRequest(format!(
            "invalid ban_duration `{text}`; use \"none\" or a duration like \"24h\", \"90m\", \"1h30m\""
        ))
    };
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || total <= 0 {
        return Err(bad());
    }
    Ok(Some(total))
}

fn default_app_metadata() -> String {
    json!({"provider": "email", "providers": ["email"]}).to_string()
}

/// Merges `changes` into the JSON object `current`, key by key; a `null` value removes a key.
fn merge_metadata(current: &str, changes: Map<String, Value>) -> String {
    let mut meta: Map<String, Value> = serde_json::from_str(current).unwrap_or_default();
    for (k, v) in changes {
        if v.is_null() {
            meta.remove(&k);
        } else {
            meta.insert(k, v);
        }
    }
    Value::Object(meta).to_string()
}

async fn hash_password(password: &str) -> Result<String, IdentityError> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))?
        .map_err(IdentityError::Internal)
}

/// Lower-cased and trimmed; refuses what cannot be an address.
fn normalize_email(email: &str) -> Result<String, IdentityError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.len() <= 64
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            }
            None => false,
        };
    if valid {
        Ok(email)
    } else {
        Err(IdentityError::InvalidEmail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_durations() {
        assert_eq!(parse_ban_duration("none").ok(), Some(None));
        assert_eq!(parse_ban_duration("24h").ok(), Some(Some(86_400)));
        assert_eq!(parse_ban_duration("1h30m").ok(), Some(Some(5_400)));
        assert_eq!(parse_ban_duration("45s").ok(), Some(Some(45)));
        for bad in ["", "10", "1d", "h", "0s", "-5m", "99999999999999999999h"] {
            assert!(parse_ban_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_merges_key_by_key() {
        let merged = merge_metadata(
            r#"{"a":1,"b":2}"#,
            serde_json::from_str(r#"{"b":null,"c":3}"#).expect("json"),
        );
        assert_eq!(
            serde_json::from_str::<Value>(&merged).expect("json"),
            json!({"a":1,"c":3})
        );
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").ok().as_deref(),
            Some("ada@example.com")
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "a@b@c.com",
            "ada@.com",
            "ada@x..com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
