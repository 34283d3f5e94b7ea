//! Keeping credentials usable: a refresh before use, the background pass, and sealing again
//! under a new vault key — each under the connection's lock, reading the row after taking it.

use serde_json::json;

use crate::catalog::AuthMode;
use crate::oauth::{self, Credentials, Grant, TokenError};
use crate::store::{self, ConnectionRow};
use crate::*;

impl Connect {
    /// The credentials to call with: refreshed first when the access token expires within
    /// [`REFRESH_BEFORE_MS`].
    pub(crate) async fn usable(
        &self,
        row: &ConnectionRow,
        integration: &Integration,
    ) -> Result<Credentials, ConnectError> {
        if row.status == "failed" {
            return Err(ConnectError::ConnectionFailed {
                id: row.id.clone(),
                reason: row.last_error.clone().unwrap_or_default(),
            });
        }
        let due = integration.provider.auth_mode.is_oauth()
            && row
                .expires_ms
                .is_some_and(|e| e < now_ms() + REFRESH_BEFORE_MS);
        if due {
            return self.refresh(&row.id, integration, Due::Soon).await;
        }
        self.open(row)
    }

    /// Refreshes a connection under its lock. After taking the lock the row is read again:
    /// if another replica refreshed meanwhile, its tokens are used and the refresh token is
    /// not spent twice.
    async fn refresh(
        &self,
        id: &str,
        integration: &Integration,
        due: Due,
    ) -> Result<Credentials, ConnectError> {
        let secret = self.client_secret(integration).await?;
        let outcome = store::with_lock(&self.inner.db, &self.inner.locks, id, |row| async move {
            let now = now_ms();
            if row.status == "failed" {
                let reason = row.last_error.clone().unwrap_or_default();
                return (
                    None,
                    Err(ConnectError::ConnectionFailed { id: row.id, reason }),
                );
            }
            let old = match self.open(&row) {
                Ok(c) => c,
                Err(e) => return (None, Err(e)),
            };
            if !due.now(&row, now) {
                return (None, Ok((old, None)));
            }
            let grant = match (integration.provider.auth_mode, &old.refresh_token) {
                (AuthMode::OAuth2ClientCredentials, _) => Grant::ClientCredentials,
                (_, Some(token)) => Grant::Refresh(token),
                // Nothing to refresh with: use the token until the provider refuses it.
                (_, None) => return (None, Ok((old, None))),
            };
            let answer = oauth::token(
                &self.inner.http,
                integration,
                secret.as_deref(),
                grant,
                self.inner.config.timeout,
            )
            .await;
            match answer {
                Ok(tokens) => {
                    let fresh = Credentials {
                        access_token: Some(tokens.access_token),
                        // A provider that does not rotate refresh tokens sends none back.
                        refresh_token: tokens.refresh_token.or(old.refresh_token),
                        ..old
                    };
                    let expires_ms = Some(
                        now + tokens
                            .expires_in
                            .unwrap_or(REFRESH_AT_LEAST_EVERY_MS / 1000)
                            .saturating_mul(1000),
                    );
                    match self.seal(&row.id, &fresh) {
                        Ok(sealed) => (
                            Some(store::Write::Credentials {
                                sealed,
                                expires_ms,
                                now_ms: now,
                            }),
                            Ok((fresh, None)),
                        ),
                        Err(e) => (None, Err(e)),
                    }
                }
                Err(TokenError::Refused(reason)) => (
                    Some(store::Write::Failed {
                        error: reason.clone(),
                        now_ms: now,
                    }),
                    Ok((old, Some((row, reason)))),
                ),
                Err(TokenError::Unavailable(m)) => (None, Err(ConnectError::Provider(m))),
            }
        })
        .await?
        .ok_or_else(|| ConnectError::UnknownConnection(id.to_string()))?;
        let (credentials, failed) = outcome?;
        if let Some((row, reason)) = failed {
            tracing::warn!(connection = %row.id, integration = %row.integration, error = %reason, "connect: refresh refused; connection failed");
            self.emit(
                "connect.connection.failed",
                json!({
                    "connection_id": row.id,
                    "integration": row.integration,
                    "provider": row.provider,
                    "user_id": row.user_id,
                    "org_id": row.org_id,
                    "end_user_id": row.end_user_id,
                    "error": reason,
                }),
            )
            .await;
            return Err(ConnectError::ConnectionFailed { id: row.id, reason });
        }
        Ok(credentials)
    }

    /// One pass of the background refresh: every connection whose token expires before the
    /// next pass (plus the margin), or that was not refreshed for a day. How many it refreshed.
    pub async fn refresh_due(&self) -> Result<usize, ConnectError> {
        let now = now_ms();
        let horizon = now + self.inner.config.refresh_every.as_millis() as i64 + REFRESH_BEFORE_MS;
        let stale = now - REFRESH_AT_LEAST_EVERY_MS;
        let rows = store::due(&self.inner.db, horizon, stale).await?;
        let mut done = 0;
        for row in rows {
            let Ok(integration) = self.integration(&row.integration) else {
                continue;
            };
            if !integration.provider.auth_mode.is_oauth() {
                continue;
            }
            match self
                .refresh(&row.id, &integration, Due::Background { horizon, stale })
                .await
            {
                Ok(_) => done += 1,
                Err(e) => {
                    tracing::warn!(connection = %row.id, error = %e, "connect: background refresh")
                }
            }
        }
        Ok(done)
    }

    /// Seals again, under the current vault key, every connection sealed by an older one.
    pub async fn reseal(&self) -> Result<usize, ConnectError> {
        let Some(current) = self.inner.config.vault.current_id() else {
            return Ok(0);
        };
        let mut done = 0;
        loop {
            let rows = store::sealed_by_other_keys(&self.inner.db, current).await?;
            if rows.is_empty() {
                return Ok(done);
            }
            let mut progressed = false;
            for row in rows {
                let outcome = store::with_lock(
                    &self.inner.db,
                    &self.inner.locks,
                    &row.id,
                    |row| async move {
                        if !self.inner.config.vault.is_stale(&row.credentials) {
                            return (None, Ok(false));
                        }
                        match self.open(&row).and_then(|c| self.seal(&row.id, &c)) {
                            Ok(sealed) => (Some(store::Write::Resealed { sealed }), Ok(true)),
                            Err(e) => (None, Err(e)),
                        }
                    },
                )
                .await?;
                match outcome {
                    Some(Ok(true)) => {
                        done += 1;
                        progressed = true;
                    }
                    Some(Err(e)) => {
                        tracing::error!(connection = %row.id, error = %e, "connect: cannot seal again");
                    }
                    _ => {}
                }
            }
            if !progressed {
                return Ok(done);
            }
        }
    }

    /// The background work: sealing under a new vault key once, then the refresh pass and
    /// the sweep of old sessions, every `refresh_every`.
    pub fn spawn(&self) {
        let connect = self.clone();
        tokio::spawn(async move {
            match connect.reseal().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    connections = n,
                    "connect: credentials sealed under the new vault key"
                ),
                Err(e) => tracing::error!(error = %e, "connect: sealing under the new vault key"),
            }
            let mut tick = tokio::time::interval(connect.inner.config.refresh_every);
            loop {
                tick.tick().await;
                if let Err(e) = connect.refresh_due().await {
                    tracing::warn!(error = %e, "connect: background refresh");
                }
                if let Err(e) = store::sweep_sessions(&connect.inner.db, now_ms()).await {
                    tracing::warn!(error = %e, "connect: session sweep");
                }
            }
        });
    }
}

/// When a refresh is still needed once the lock is held.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// About to be used: the token expires within [`REFRESH_BEFORE_MS`].
    Soon,
    /// The background pass: expiring before `horizon`, or last refreshed before `stale`.
    Background { horizon: i64, stale: i64 },
}

impl Due {
    fn now(self, row: &ConnectionRow, now: i64) -> bool {
        let expires = row.expires_ms.unwrap_or(i64::MAX);
        match self {
            Due::Soon => expires < now + REFRESH_BEFORE_MS,
            Due::Background { horizon, stale } => {
                expires < horizon || row.last_refresh_ms.unwrap_or(row.created_ms) < stale
            }
        }
    }
}
