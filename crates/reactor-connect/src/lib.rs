//! Connect: third-party integrations on `/connect/v1`. The project declares integrations in
//! `reactor.toml` (a provider of the [`catalog`] and its OAuth client); its users connect
//! their accounts through the OAuth dance (or by handing over an API key), and the server
//! keeps the credentials sealed in the [`vault`], refreshes them before they expire (one
//! replica at a time), and makes calls with them through the [`proxy`]. Credentials never
//! leave the server: no API returns them and no log line carries them.

pub mod catalog;
mod connections;
mod dance;
pub mod http;
pub mod oauth;
pub mod proxy;
mod refresh;
pub mod store;
pub mod vault;
pub mod webhook;

pub use dance::BrowserCookie;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use reactor_core::ApiError;
use reactor_db::{Db, DbError};
use serde::Serialize;
use serde_json::{Value, json};

use crate::catalog::{AuthMode, Catalog, Provider, Template};
use crate::store::Owner;
use crate::vault::{Vault, VaultError};

/// An access token expiring within this is refreshed before it is used.
pub const REFRESH_BEFORE_MS: i64 = 15 * 60 * 1000;

/// A connection not refreshed for this long is refreshed in the background (some providers
/// expire refresh tokens that go unused).
pub const REFRESH_AT_LEAST_EVERY_MS: i64 = 24 * 3600 * 1000;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The project's secrets (client secrets and webhook secrets are named there).
pub trait Secrets: Send + Sync + std::fmt::Debug {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<String>>;
}

/// Where Connect's events go (Jobs, handed over by the server).
pub trait Events: Send + Sync + std::fmt::Debug {
    fn emit<'a>(&'a self, event: &'a str, payload: Value) -> BoxFuture<'a, ()>;
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The server's settings for Connect.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// Where browsers reach this server: the OAuth callback is
    /// `<public_url>/connect/v1/oauth/callback`.
    pub public_url: String,
    pub vault: Vault,
    /// How long a connect session may take to finish.
    pub session_ttl: Duration,
    /// How often the background refresh looks for connections due.
    pub refresh_every: Duration,
    /// One request to a provider (token endpoint or proxied call, until its headers).
    pub timeout: Duration,
    /// Longest wait on a 429's retry-after before the 429 is passed on.
    pub max_retry_wait: Duration,
    /// 429 retries of one proxied call.
    pub retries: u32,
}

impl ConnectConfig {
    pub fn new(public_url: &str, vault: Vault) -> ConnectConfig {
        ConnectConfig {
            public_url: public_url.trim_end_matches('/').to_string(),
            vault,
            session_ttl: Duration::from_secs(30 * 60),
            refresh_every: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            max_retry_wait: Duration::from_secs(10),
            retries: 3,
        }
    }

    pub fn callback_url(&self) -> String {
        format!("{}/connect/v1/oauth/callback", self.public_url)
    }
}

/// An integration in force: its provider with the project's overrides applied.
#[derive(Debug, Clone)]
pub struct Integration {
    pub name: String,
    pub provider: Provider,
    pub client_id: Option<String>,
    /// The name of the project secret holding the client secret.
    pub client_secret: Option<String>,
    /// The provider's default scopes, then the integration's.
    pub scopes: Vec<String>,
    pub redirect_origins: Vec<String>,
    pub webhook_secret: Option<String>,
}

/// What `GET /connect/v1/integrations` shows of one.
#[derive(Debug, Clone, Serialize)]
pub struct IntegrationInfo {
    pub name: String,
    pub provider: String,
    pub display_name: String,
    pub auth_mode: &'static str,
    pub scopes: Vec<String>,
    pub webhooks: bool,
}

/// Checks a manifest's `[connect]` against the catalog: the integrations it makes, or every
/// problem, each naming its integration and field.
pub fn check(
    catalog: &Catalog,
    config: &reactor_manifest::ConnectConfig,
) -> Result<Vec<Integration>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for i in &config.integrations {
        let mut problem = |m: String| problems.push(format!("integration `{}`: {m}", i.name));
        let Some(base) = catalog.get(&i.provider) else {
            let names: Vec<&str> = catalog.names().collect();
            problem(format!(
                "provider `{}` is not in the catalog (providers: {})",
                i.provider,
                names.join(", ")
            ));
            continue;
        };
        let mut provider = base.clone();
        if let Some(url) = &i.authorization_url {
            provider.authorization_url = Some(url.clone());
        }
        if let Some(url) = &i.token_url {
            provider.token_url = Some(url.clone());
        }
        if let Some(pkce) = i.pkce {
            provider.pkce = pkce;
        }
        if let Some(url) = &i.base_url {
            match Template::parse(url) {
                Ok(t) => provider.proxy.base_url = Some(t),
                Err(e) => problem(format!("`base_url`: {e}")),
            }
        }
        if provider.proxy.base_url.is_none() {
            problem(format!(
                "provider `{}` has no API base URL; add base_url = \"https://api.example.com\"",
                provider.name
            ));
        }
        match provider.auth_mode {
            AuthMode::OAuth2 | AuthMode::OAuth2ClientCredentials => {
                if provider.auth_mode == AuthMode::OAuth2 && provider.authorization_url.is_none() {
                    problem(format!(
                        "provider `{}` has no authorization URL; add authorization_url = \"https://…\"",
                        provider.name
                    ));
                }
                if provider.token_url.is_none() {
                    problem(format!(
                        "provider `{}` has no token URL; add token_url = \"https://…\"",
                        provider.name
                    ));
                }
                if i.client_id.is_none() {
                    problem("`client_id` is required by OAuth".into());
                }
                if i.client_secret.is_none() {
                    problem(
                        "`client_secret` (the name of a project secret) is required by OAuth"
                            .into(),
                    );
                }
            }
            AuthMode::ApiKey | AuthMode::Basic => {}
        }
        if i.webhook_secret.is_some() && provider.webhook.is_none() {
            problem(format!(
                "`webhook_secret` is set, but provider `{}` does not sign webhooks",
                provider.name
            ));
        }
        let mut scopes = provider.default_scopes.clone();
        for s in &i.scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        out.push(Integration {
            name: i.name.clone(),
            provider,
            client_id: i.client_id.clone(),
            client_secret: i.client_secret.clone(),
            scopes,
            redirect_origins: i.redirect_origins.clone(),
            webhook_secret: i.webhook_secret.clone(),
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no integration `{0}` in this project")]
    UnknownIntegration(String),
    #[error("no connection `{0}`")]
    UnknownConnection(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the connect session is unknown, used or expired")]
    BadSession,
    #[error("the OAuth state is unknown, used or expired, or this browser did not start it")]
    BadState,
    #[error("this browser did not start the connection (its cookie is missing)")]
    OtherBrowser,
    #[error("`{0}` is not an allowed redirect origin of this integration")]
    RedirectNotAllowed(String),
    #[error("connection `{id}` failed and must be connected again: {reason}")]
    ConnectionFailed { id: String, reason: String },
    #[error("the provider: {0}")]
    Provider(String),
    #[error("the provider refused: {0}")]
    ProviderRefused(String),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("the project secret `{0}` is not set")]
    MissingSecret(String),
    #[error("database: {0}")]
    Db(#[from] DbError),
}

impl ConnectError {
    fn api(&self) -> ApiError {
        let message = self.to_string();
        match self {
            ConnectError::UnknownIntegration(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "integration_not_found", message)
                    .with_hint("GET /connect/v1/integrations lists this project's integrations")
            }
            ConnectError::UnknownConnection(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "connection_not_found", message)
            }
            ConnectError::BadRequest(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            ConnectError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            ConnectError::BadSession => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_session", message)
                    .with_hint("start again: create a connect session (POST /connect/v1/sessions)")
            }
            ConnectError::BadState | ConnectError::OtherBrowser => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_state", message)
                    .with_hint("start the connection again from the app, in this browser")
            }
            ConnectError::RedirectNotAllowed(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "redirect_not_allowed", message).with_hint(
                    "add the origin to the integration's redirect_origins in reactor.toml",
                )
            }
            ConnectError::ConnectionFailed { .. } => {
                ApiError::new(StatusCode::CONFLICT, "connection_failed", message)
                    .with_hint("delete the connection and connect the account again")
            }
            ConnectError::Provider(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "provider_unavailable", message)
            }
            ConnectError::ProviderRefused(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "provider_refused", message)
            }
            ConnectError::Vault(VaultError::NoKey) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_vault_key",
                message,
            )
            .with_hint(
                "set REACTOR_MASTER_KEY (or [connect] vault_key in the server config) to 32 random bytes in base64",
            ),
            ConnectError::Vault(_) => {
                tracing::error!(error = %self, "connect vault");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "vault", message).with_hint(
                    "the server was not given the vault key these credentials were sealed with",
                )
            }
            ConnectError::MissingSecret(name) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "missing_secret", message)
                    .with_hint(format!("reactor secrets set {name}"))
            }
            ConnectError::Db(e) => {
                tracing::error!(error = %e, "connect");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        self.api().into_response()
    }
}

/// Who asks: the service key (perhaps for an end user of the app), or a signed-in user.
#[derive(Debug, Clone)]
pub enum Caller {
    Service,
    User {
        user_id: String,
        org_id: Option<String>,
    },
}

impl Caller {
    pub fn owner(&self) -> Owner {
        match self {
            Caller::Service => Owner::Service,
            Caller::User { user_id, org_id } => Owner::User {
                user_id: user_id.clone(),
                org_id: org_id.clone(),
            },
        }
    }
}

/// For whom the service key creates a session or a connection.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct EndUser {
    pub id: String,
    pub org_id: Option<String>,
}

/// The owner columns of a session or connection.
#[derive(Debug, Clone)]
struct Owned {
    user_id: Option<String>,
    org_id: Option<String>,
    end_user_id: Option<String>,
}

/// What a connection shows: everything but its credentials.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    pub id: String,
    pub integration: String,
    pub provider: String,
    pub auth_mode: String,
    pub user_id: Option<String>,
    pub org_id: Option<String>,
    pub end_user_id: Option<String>,
    pub status: String,
    pub scopes: Vec<String>,
    pub config: Value,
    /// When the access token expires (RFC 3339), for OAuth connections.
    pub expires_at: Option<String>,
    pub last_refresh_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub use reactor_core::time::rfc3339_millis as rfc3339;

/// A connect session handed to the caller.
#[derive(Debug, Clone, Serialize)]
pub struct SessionCreated {
    pub token: String,
    /// Where to send the user's browser (OAuth integrations).
    pub authorize_url: Option<String>,
    pub expires_at: String,
}

/// What `POST /connect/v1/connections` takes for a key, basic or client-credentials
/// integration.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConnection {
    pub integration: String,
    pub api_key: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Values the provider's templates read (`${config.subdomain}`).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    pub end_user: Option<EndUser>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    catalog: Catalog,
    integrations: RwLock<Arc<BTreeMap<String, Arc<Integration>>>>,
    config: ConnectConfig,
    secrets: Arc<dyn Secrets>,
    events: RwLock<Option<Arc<dyn Events>>>,
    http: reqwest::Client,
    locks: store::LocalLocks,
}

/// The Connect capability.
#[derive(Debug, Clone)]
pub struct Connect {
    inner: Arc<Inner>,
}

/// Longest credential or config value accepted.
const MAX_VALUE: usize = 8 * 1024;

impl Connect {
    /// Connect over `db` (its tables made), with the built-in catalog.
    pub async fn start(
        db: Db,
        config: ConnectConfig,
        secrets: Arc<dyn Secrets>,
    ) -> Result<Connect, String> {
        let catalog = Catalog::built_in().map_err(|e| e.to_string())?;
        db.apply_migrations("connect", store::SQLITE, store::POSTGRES)
            .await
            .map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A provider's redirect could lead anywhere, credentials attached: never follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("reactor-connect/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Connect {
            inner: Arc::new(Inner {
                db,
                catalog,
                integrations: RwLock::default(),
                config,
                secrets,
                events: RwLock::default(),
                http,
                locks: store::LocalLocks::default(),
            }),
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Puts a manifest's `[connect]` in force, whole, or changes nothing and says why.
    pub fn load(&self, config: &reactor_manifest::ConnectConfig) -> Result<(), Vec<String>> {
        let integrations = check(&self.inner.catalog, config)?;
        let map = integrations
            .into_iter()
            .map(|i| (i.name.clone(), Arc::new(i)))
            .collect();
        *self
            .inner
            .integrations
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
        Ok(())
    }

    /// Where `connect.connection.failed` and webhook events go.
    pub fn set_events(&self, events: Arc<dyn Events>) {
        *self.inner.events.write().unwrap_or_else(|p| p.into_inner()) = Some(events);
    }

    async fn emit(&self, event: &str, payload: Value) {
        let events = self
            .inner
            .events
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match events {
            Some(events) => events.emit(event, payload).await,
            None => tracing::info!(event, "connect event (no jobs to run it)"),
        }
    }

    fn integration(&self, name: &str) -> Result<Arc<Integration>, ConnectError> {
        self.inner
            .integrations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| ConnectError::UnknownIntegration(name.to_string()))
    }

    pub fn integrations(&self) -> Vec<IntegrationInfo> {
        self.inner
            .integrations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|i| IntegrationInfo {
                name: i.name.clone(),
                provider: i.provider.name.clone(),
                display_name: i.provider.display_name.clone(),
                auth_mode: i.provider.auth_mode.name(),
                scopes: i.scopes.clone(),
                webhooks: i.provider.webhook.is_some(),
            })
            .collect()
    }

    async fn secret(&self, name: &str) -> Result<String, ConnectError> {
        self.inner
            .secrets
            .get(name)
            .await
            .ok_or_else(|| ConnectError::MissingSecret(name.to_string()))
    }

    async fn client_secret(
        &self,
        integration: &Integration,
    ) -> Result<Option<String>, ConnectError> {
        match &integration.client_secret {
            Some(name) => Ok(Some(self.secret(name).await?)),
            None => Ok(None),
        }
    }

    /// Who owns what `caller` creates (an end user, when the service key names one).
    fn owned_by(caller: &Caller, end_user: Option<&EndUser>) -> Result<Owned, ConnectError> {
        match (caller, end_user) {
            (Caller::Service, Some(e)) => {
                let id = e.id.trim();
                if id.is_empty() || id.len() > 256 {
                    return Err(ConnectError::BadRequest(
                        "`end_user.id` must have 1 to 256 characters".into(),
                    ));
                }
                Ok(Owned {
                    user_id: None,
                    org_id: e.org_id.clone(),
                    end_user_id: Some(id.to_string()),
                })
            }
            (Caller::Service, None) => Err(ConnectError::BadRequest(
                "the service key connects for an end user: send `end_user: {\"id\": …, \"org_id\": …}`".into(),
            )),
            (Caller::User { .. }, Some(_)) => Err(ConnectError::Forbidden(
                "only the service key may act for an end user".into(),
            )),
            (Caller::User { user_id, org_id }, None) => Ok(Owned {
                user_id: Some(user_id.clone()),
                org_id: org_id.clone(),
                end_user_id: None,
            }),
        }
    }

    /// `POST /webhooks/<integration>`: checks the signature where the provider signs, then
    /// hands the payload to Jobs as `connect.webhook.<integration>`.
    pub async fn webhook(
        &self,
        integration: &str,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<(), ConnectError> {
        let integration = self.integration(integration)?;
        if let Some(hook) = &integration.provider.webhook {
            let Some(secret_name) = &integration.webhook_secret else {
                return Err(ConnectError::Forbidden(format!(
                    "integration `{}` has no webhook_secret, so its webhooks cannot be verified",
                    integration.name
                )));
            };
            let secret = self.secret(secret_name).await?;
            webhook::verify(hook, &secret, headers, body, now_ms() / 1000).map_err(|e| {
                tracing::warn!(integration = %integration.name, error = %e, "connect: webhook refused");
                ConnectError::Forbidden(format!("webhook signature: {e}"))
            })?;
        }
        let payload: Value = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        self.emit(
            &format!("connect.webhook.{}", integration.name),
            json!({
                "integration": integration.name,
                "provider": integration.provider.name,
                "payload": payload,
            }),
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_798_761_599_000), "2026-12-31T23:59:59.000Z");
    }

    #[test]
    fn config_values_cannot_reach_another_host() {
        assert!(connections::check_config_value("subdomain", "acme-1").is_ok());
        for bad in ["evil.com/x", "a@b", "..", "a b", "x?y", ""] {
            assert!(
                connections::check_config_value("subdomain", bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn integrations_are_checked_against_the_catalog() {
        let catalog = Catalog::built_in().expect("catalog");
        let integration = |provider: &str| reactor_manifest::IntegrationConfig {
            name: "x".into(),
            provider: provider.into(),
            client_id: Some("id".into()),
            client_secret: Some("SECRET".into()),
            scopes: vec!["repo".into()],
            redirect_origins: vec![],
            webhook_secret: None,
            pkce: None,
            authorization_url: None,
            token_url: None,
            base_url: None,
        };
        let config = |i| reactor_manifest::ConnectConfig {
            integrations: vec![i],
        };
        let ok = check(&catalog, &config(integration("github"))).expect("github");
        assert_eq!(ok[0].scopes, ["repo"]);
        let e = check(&catalog, &config(integration("gitlub"))).expect_err("unknown");
        assert!(
            e[0].contains("provider `gitlub` is not in the catalog"),
            "{e:?}"
        );
        let e = check(&catalog, &config(integration("oauth2"))).expect_err("no urls");
        assert!(
            e.iter().any(|p| p.contains("no authorization URL")),
            "{e:?}"
        );
        assert!(e.iter().any(|p| p.contains("no token URL")), "{e:?}");
        let e = check(
            &catalog,
            &config(reactor_manifest::IntegrationConfig {
                client_secret: None,
                ..integration("github")
            }),
        )
        .expect_err("no secret");
        assert!(e[0].contains("`client_secret`"), "{e:?}");
    }
}
