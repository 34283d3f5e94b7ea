//! Flows that go through an email: password recovery, address confirmation, invitations.
//! Each email carries a one-time token: random, stored hashed, expiring, spent on first use.

use reactor_core::keys;
use std::net::IpAddr;

use crate::store::UserRow;
use crate::{Identity, IdentityError, Session, Throttle, normalize_email};

const TOKEN_LEN: usize = 40;

/// The kinds of one-time tokens, as `POST /verify` names them (`email` is GoTrue's alias).
fn kind(verify_type: &str) -> Result<&'static str, IdentityError> {
    match verify_type {
        "recovery" => Ok("recovery"),
        "signup" | "email" => Ok("signup"),
        other => Err(IdentityError::BadRequest(format!(
            "unknown verification type `{other}`; use recovery or signup"
        ))),
    }
}

impl Identity {
    /// Queues an email; the delivery loop of this process is woken at once.
    pub(crate) async fn queue_email(
        &self,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Result<(), IdentityError> {
        self.inner.store.enqueue_email(to, subject, body).await?;
        match &self.inner.mail_wake {
            Some(wake) => wake.notify_one(),
            None => {
                tracing::warn!(%to, "an email is waiting in the outbox: no mailer is configured (set [smtp] in the server config)")
            }
        }
        Ok(())
    }

    fn link(&self, kind: &str, token: &str) -> String {
        format!(
            "{}/auth/v1/verify?type={kind}&token={token}",
            self.inner.config.site_url.trim_end_matches('/')
        )
    }

    async fn one_time_token(&self, user: &UserRow, kind: &str) -> Result<String, IdentityError> {
        let token = keys::random_base62(TOKEN_LEN);
        let expires = self.now() + self.inner.config.one_time_token_ttl_secs;
        self.inner
            .store
            .create_one_time_token(&keys::hash(&token), &user.id, kind, expires)
            .await?;
        Ok(token)
    }

    pub(crate) async fn send_confirmation(&self, user: &UserRow) -> Result<(), IdentityError> {
        let token = self.one_time_token(user, "signup").await?;
        let body = format!(
            "Welcome! To confirm this address, open:\n\n{}\n\nor enter this code: {token}\n\nThe link works once, within {} minutes.",
            self.link("signup", &token),
            self.inner.config.one_time_token_ttl_secs / 60
        );
        self.queue_email(&user.email, "Confirm your email address", &body)
            .await
    }

    /// `POST /recover`: emails a recovery link if the address has an account. The answer is
    /// the same, and as fast, either way: the lookup and the email happen after it.
    pub async fn recover(&self, email: &str, client: Option<IpAddr>) -> Result<(), IdentityError> {
        let email = normalize_email(email)?;
        // Counted whether or not the address has an account, so the limit reveals nothing.
        let config = &self.inner.config;
        let mut buckets = vec![(format!("recover:{email}"), config.recover_per_email)];
        if let Some(ip) = client {
            buckets.push((format!("recover-addr:{ip}"), config.recover_per_address));
        }
        let window = match self.throttle(&buckets, config.recover_window_secs).await? {
            Throttle::Open { window } => window,
            Throttle::Closed { retry_after } => {
                return Err(IdentityError::TooManyEmails(retry_after));
            }
        };
        self.throttle_hit(&buckets, window).await?;
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.send_recovery(&email).await {
                tracing::warn!(error = %e, "could not send a recovery email");
            }
        });
        Ok(())
    }

    async fn send_recovery(&self, email: &str) -> Result<(), IdentityError> {
        let Some(user) = self.inner.store.user_by_email(email).await? else {
            return Ok(());
        };
        let token = self.one_time_token(&user, "recovery").await?;
        let body = format!(
            "Someone asked to reset the password of this account. To choose a new one, open:\n\n{}\n\nor enter this code: {token}\n\nThe link works once, within {} minutes. If you did not ask, ignore this email.",
            self.link("recovery", &token),
            self.inner.config.one_time_token_ttl_secs / 60
        );
        self.queue_email(&user.email, "Reset your password", &body)
            .await
    }

    /// `POST /verify`: spends a one-time token and signs the user in. A recovery session can
    /// then set a new password with `PUT /user`; a confirmation marks the address confirmed.
    pub async fn verify(&self, verify_type: &str, token: &str) -> Result<Session, IdentityError> {
        let kind = kind(verify_type)?;
        let store = &self.inner.store;
        let Some((user_id, expires_at)) =
            store.use_one_time_token(&keys::hash(token), kind).await?
        else {
            return Err(IdentityError::OtpExpired);
        };
        if expires_at <= self.now() {
            return Err(IdentityError::OtpExpired);
        }
        if kind == "signup" {
            let confirm = crate::store::UserChanges {
                confirm_email: Some(true),
                ..Default::default()
            };
            store.update_user(&user_id, &confirm).await?;
        }
        let row = store
            .user_by_id(&user_id)
            .await?
            .ok_or(IdentityError::UserNotFound)?;
        if row.banned {
            return Err(IdentityError::UserBanned);
        }
        self.open_session(row, None).await
    }

    /// Messages of the outbox, for the dev mailbox.
    pub async fn mailbox(
        &self,
        to: Option<&str>,
    ) -> Result<Vec<crate::store::OutboxEmail>, IdentityError> {
        Ok(self.inner.store.mailbox(to).await?)
    }
}
