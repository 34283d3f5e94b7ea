//! Connections: made with a key, basic credentials or the client's own credentials (and by
//! the callback), sealed on the way in, shown without their credentials, listed, deleted —
//! always as the caller may see them.

use std::collections::BTreeMap;

use serde_json::json;

use crate::catalog::AuthMode;
use crate::oauth::{self, Credentials, Grant, TokenError};
use crate::store::{self, ConnectionRow};
use crate::vault::VaultError;
use crate::*;

impl Connect {
    /// `POST /connections`: an API key, basic or client-credentials connection.
    pub async fn create_connection(
        &self,
        caller: &Caller,
        new: NewConnection,
    ) -> Result<ConnectionInfo, ConnectError> {
        let integration = self.integration(&new.integration)?;
        let owner = Self::owned_by(caller, new.end_user.as_ref())?;
        for (k, v) in &new.config {
            check_config_value(k, v)?;
        }
        let present = |v: &Option<String>, what: &str| -> Result<String, ConnectError> {
            match v.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() && s.len() <= MAX_VALUE => Ok(s.to_string()),
                _ => Err(ConnectError::BadRequest(format!(
                    "`{what}` is required by integration `{}` ({})",
                    integration.name,
                    integration.provider.auth_mode.name()
                ))),
            }
        };
        let (credentials, expires_in, scope) = match integration.provider.auth_mode {
            AuthMode::ApiKey => (
                Credentials {
                    api_key: Some(present(&new.api_key, "api_key")?),
                    ..Default::default()
                },
                None,
                None,
            ),
            AuthMode::Basic => (
                Credentials {
                    username: Some(present(&new.username, "username")?),
                    password: Some(present(&new.password, "password")?),
                    ..Default::default()
                },
                None,
                None,
            ),
            AuthMode::OAuth2ClientCredentials => {
                let secret = self.client_secret(&integration).await?;
                let tokens = oauth::token(
                    &self.inner.http,
                    &integration,
                    secret.as_deref(),
                    Grant::ClientCredentials,
                    self.inner.config.timeout,
                )
                .await
                .map_err(|e| match e {
                    TokenError::Refused(m) => ConnectError::ProviderRefused(m),
                    TokenError::Unavailable(m) => ConnectError::Provider(m),
                })?;
                (
                    Credentials {
                        access_token: Some(tokens.access_token),
                        ..Default::default()
                    },
                    // Without an expiry, fetched again daily.
                    Some(
                        tokens
                            .expires_in
                            .unwrap_or(REFRESH_AT_LEAST_EVERY_MS / 1000),
                    ),
                    tokens.scope,
                )
            }
            AuthMode::OAuth2 => {
                return Err(ConnectError::BadRequest(format!(
                    "integration `{}` connects through the browser: create a session (POST /connect/v1/sessions) and send the user to its authorize_url",
                    integration.name
                )));
            }
        };
        self.store_new(
            &integration,
            owner,
            credentials,
            expires_in,
            scope,
            new.config,
        )
        .await
    }

    pub(crate) async fn store_new(
        &self,
        integration: &Integration,
        owned: Owned,
        credentials: Credentials,
        expires_in: Option<i64>,
        scope: Option<String>,
        config: BTreeMap<String, String>,
    ) -> Result<ConnectionInfo, ConnectError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let sealed = self.seal(&id, &credentials)?;
        let scopes = scope
            .map(|s| {
                s.split([' ', ','])
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| integration.scopes.join(" "));
        let row = ConnectionRow {
            id,
            integration: integration.name.clone(),
            provider: integration.provider.name.clone(),
            user_id: owned.user_id,
            org_id: owned.org_id,
            end_user_id: owned.end_user_id,
            status: "active".into(),
            credentials: sealed,
            expires_ms: expires_in.map(|s| now + s.saturating_mul(1000)),
            scopes,
            config: serde_json::to_string(&config).unwrap_or_else(|_| "{}".into()),
            last_refresh_ms: None,
            last_error: None,
            created_ms: now,
            updated_ms: now,
        };
        store::insert_connection(&self.inner.db, &row).await?;
        tracing::info!(connection = %row.id, integration = %row.integration, "connect: connection made");
        Ok(self.info(&row))
    }

    pub(crate) fn seal(&self, id: &str, credentials: &Credentials) -> Result<String, ConnectError> {
        let json = serde_json::to_vec(credentials).unwrap_or_default();
        Ok(self.inner.config.vault.seal(id, &json)?)
    }

    pub(crate) fn open(&self, row: &ConnectionRow) -> Result<Credentials, ConnectError> {
        let bytes = self.inner.config.vault.open(&row.id, &row.credentials)?;
        serde_json::from_slice(&bytes).map_err(|_| ConnectError::Vault(VaultError::Open))
    }

    pub(crate) fn info(&self, row: &ConnectionRow) -> ConnectionInfo {
        let auth_mode = self
            .inner
            .catalog
            .get(&row.provider)
            .map_or("unknown", |p| p.auth_mode.name());
        ConnectionInfo {
            id: row.id.clone(),
            integration: row.integration.clone(),
            provider: row.provider.clone(),
            auth_mode: auth_mode.to_string(),
            user_id: row.user_id.clone(),
            org_id: row.org_id.clone(),
            end_user_id: row.end_user_id.clone(),
            status: row.status.clone(),
            scopes: row
                .scopes
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            config: serde_json::from_str(&row.config).unwrap_or_else(|_| json!({})),
            expires_at: row.expires_ms.map(rfc3339),
            last_refresh_at: row.last_refresh_ms.map(rfc3339),
            last_error: row.last_error.clone(),
            created_at: rfc3339(row.created_ms),
            updated_at: rfc3339(row.updated_ms),
        }
    }

    pub async fn list(
        &self,
        caller: &Caller,
        filter: &store::Filter,
    ) -> Result<Vec<ConnectionInfo>, ConnectError> {
        let rows = store::list(&self.inner.db, &caller.owner(), filter).await?;
        Ok(rows.iter().map(|r| self.info(r)).collect())
    }

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<ConnectionInfo, ConnectError> {
        let row = self.row(caller, id).await?;
        Ok(self.info(&row))
    }

    /// A connection `caller` may reach; another org's is as unknown as a missing one.
    pub(crate) async fn row(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ConnectionRow, ConnectError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(ConnectError::UnknownConnection(id.to_string()));
        }
        store::get(&self.inner.db, &caller.owner(), id)
            .await?
            .ok_or_else(|| ConnectError::UnknownConnection(id.to_string()))
    }

    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), ConnectError> {
        if uuid::Uuid::parse_str(id).is_ok()
            && store::delete(&self.inner.db, &caller.owner(), id).await?
        {
            tracing::info!(connection = %id, "connect: connection deleted");
            return Ok(());
        }
        Err(ConnectError::UnknownConnection(id.to_string()))
    }
}

/// Config values end up in URLs and headers: plain words only.
pub(crate) fn check_config_value(key: &str, value: &str) -> Result<(), ConnectError> {
    let word = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !s.contains("..")
    };
    if word(key, 64) && word(value, 256) {
        Ok(())
    } else {
        Err(ConnectError::BadRequest(format!(
            "config `{key}`: keys and values are letters, digits, `-`, `_` and `.` (at most 64 and 256 characters)"
        )))
    }
}
