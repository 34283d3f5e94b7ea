//! A typed client of the Reactor server's HTTP API. The CLI talks to every server through it,
//! so a command behaves the same against `reactor dev` and a remote `reactor-server`.

mod connect;
mod deploy;
mod gateway;
mod jobs;
mod storage;

use std::time::Duration;

pub use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The error body every Reactor route returns.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
    pub details: Option<String>,
    pub hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {endpoint}: {source}")]
    Unreachable {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the server answered {status}: {} ({})", body.message, body.code)]
    Api { status: u16, body: ApiErrorBody },
    #[error("the server answered {status} with a body this client does not understand: {snippet}")]
    Unexpected { status: u16, snippet: String },
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::Unreachable { .. } => Some(
                "is the server running? `reactor dev` starts one locally; `reactor context show` tells which endpoint is used".into(),
            ),
            ClientError::Api { body, .. } => body.hint.clone(),
            ClientError::Unexpected { .. } => Some("is the endpoint a Reactor server?".into()),
            ClientError::Local(_) => None,
        }
    }
}

/// `GET /v1/info`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerInfo {
    pub version: String,
    pub project: Option<ProjectInfo>,
    pub topology: String,
    pub database: String,
    pub capabilities: Vec<CapabilityInfo>,
    pub caller: CallerInfo,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProjectInfo {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CapabilityInfo {
    pub name: String,
    pub prefix: String,
    /// `serving`, or `planned` for a capability switched on but not built yet.
    pub status: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CallerInfo {
    pub tier: String,
    pub role: String,
    pub user_id: Option<String>,
    pub org_id: Option<String>,
    pub org_role: Option<String>,
}

/// A project key as listings show it: never the secret.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked: bool,
}

#[derive(Debug, Deserialize)]
struct KeyList {
    keys: Vec<KeyInfo>,
}

/// A key just created, with its secret.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct CreatedKey {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub prefix: String,
    pub key: String,
}

/// What a request presents: the project key (`apikey`) and, for a signed-in user, their access
/// token (`Authorization: Bearer`), plus the org to act in.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub apikey: Option<String>,
    pub bearer: Option<String>,
    pub org: Option<String>,
}

impl Credentials {
    /// A project key alone, sent both ways so either convention reaches the server.
    pub fn key(key: impl Into<String>) -> Credentials {
        let key = key.into();
        Credentials {
            apikey: Some(key.clone()),
            bearer: Some(key),
            org: None,
        }
    }
}

/// The answer of a sign-in or a refresh.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct AuthSession {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: i64,
    pub user: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    credentials: Credentials,
}

impl Client {
    pub fn new(endpoint: &str, credentials: Credentials) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("reactor-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Client {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            credentials,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn info(&self) -> Result<ServerInfo, ClientError> {
        self.send(reqwest::Method::GET, "/v1/info", None).await
    }

    /// `POST /auth/v1/token?grant_type=password`.
    pub async fn password_grant(
        &self,
        email: &str,
        password: &str,
    ) -> Result<AuthSession, ClientError> {
        let body = serde_json::json!({ "email": email, "password": password });
        self.send(
            reqwest::Method::POST,
            "/auth/v1/token?grant_type=password",
            Some(body),
        )
        .await
    }

    /// `POST /auth/v1/token?grant_type=refresh_token`, optionally switching the active org.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        org: Option<&str>,
    ) -> Result<AuthSession, ClientError> {
        let body = serde_json::json!({ "refresh_token": refresh_token, "org_id": org });
        self.send(
            reqwest::Method::POST,
            "/auth/v1/token?grant_type=refresh_token",
            Some(body),
        )
        .await
    }

    pub async fn logout(&self) -> Result<(), ClientError> {
        self.send::<serde_json::Value>(reqwest::Method::POST, "/auth/v1/logout", None)
            .await?;
        Ok(())
    }

    pub async fn user(&self) -> Result<serde_json::Value, ClientError> {
        self.send(reqwest::Method::GET, "/auth/v1/user", None).await
    }

    pub async fn orgs(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        self.send(reqwest::Method::GET, "/auth/v1/orgs", None).await
    }

    pub async fn create_org(
        &self,
        name: &str,
        slug: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({ "name": name, "slug": slug });
        self.send(reqwest::Method::POST, "/auth/v1/orgs", Some(body))
            .await
    }

    pub async fn members(&self, org: &str) -> Result<Vec<serde_json::Value>, ClientError> {
        let path = format!("/auth/v1/orgs/{}/members", encode_segment(org));
        self.send(reqwest::Method::GET, &path, None).await
    }

    pub async fn invite(
        &self,
        org: &str,
        email: &str,
        role: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let path = format!("/auth/v1/orgs/{}/invites", encode_segment(org));
        let body = serde_json::json!({ "email": email, "role": role });
        self.send(reqwest::Method::POST, &path, Some(body)).await
    }

    pub async fn set_member_role(
        &self,
        org: &str,
        user_id: &str,
        role: &str,
    ) -> Result<(), ClientError> {
        let path = format!(
            "/auth/v1/orgs/{}/members/{}",
            encode_segment(org),
            encode_segment(user_id)
        );
        let body = serde_json::json!({ "role": role });
        self.send::<serde_json::Value>(reqwest::Method::PUT, &path, Some(body))
            .await?;
        Ok(())
    }

    pub async fn remove_member(&self, org: &str, user_id: &str) -> Result<(), ClientError> {
        let path = format!(
            "/auth/v1/orgs/{}/members/{}",
            encode_segment(org),
            encode_segment(user_id)
        );
        self.send::<serde_json::Value>(reqwest::Method::DELETE, &path, None)
            .await?;
        Ok(())
    }

    /// Where each migration stands on the server; `files` are (name, sql) pairs.
    pub async fn migration_status(
        &self,
        files: &[(String, String)],
    ) -> Result<Vec<serde_json::Value>, ClientError> {
        let body: serde_json::Value = self
            .send(
                reqwest::Method::POST,
                "/data/v1/admin/migrations/status",
                Some(migration_body(files)),
            )
            .await?;
        Ok(body["migrations"].as_array().cloned().unwrap_or_default())
    }

    /// Applies the pending migrations; the names applied.
    pub async fn migrate(&self, files: &[(String, String)]) -> Result<Vec<String>, ClientError> {
        let body: serde_json::Value = self
            .send(
                reqwest::Method::POST,
                "/data/v1/admin/migrations",
                Some(migration_body(files)),
            )
            .await?;
        Ok(body["applied"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `POST /data/v1/admin/query`: `{columns, rows}` for a read, `{rows_affected}` otherwise.
    pub async fn query(&self, sql: &str) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({ "sql": sql });
        self.send(reqwest::Method::POST, "/data/v1/admin/query", Some(body))
            .await
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        let list: KeyList = self.send(reqwest::Method::GET, "/v1/keys", None).await?;
        Ok(list.keys)
    }

    /// Creates a key (`tier` is `pub` or `svc`); the answer holds the secret, shown once.
    pub async fn create_key(&self, tier: &str, name: &str) -> Result<CreatedKey, ClientError> {
        let body = serde_json::json!({ "tier": tier, "name": name });
        self.send(reqwest::Method::POST, "/v1/keys", Some(body))
            .await
    }

    pub async fn revoke_key(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/keys/{}", encode_segment(id));
        self.send::<serde_json::Value>(reqwest::Method::DELETE, &path, None)
            .await?;
        Ok(())
    }

    /// `GET /healthz`: true when the process answers.
    pub async fn healthy(&self) -> bool {
        matches!(self.http.get(format!("{}/healthz", self.endpoint)).send().await, Ok(r) if r.status().is_success())
    }

    /// `GET /data/v1/admin/types`: TypeScript types of the server's exposed schema.
    pub async fn types(&self) -> Result<String, ClientError> {
        let bytes = self
            .send_raw(reqwest::Method::GET, "/data/v1/admin/types", None)
            .await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `POST /data/v1/admin/reset`: empties a development database (O1 only).
    pub async fn reset(&self) -> Result<(), ClientError> {
        self.send::<serde_json::Value>(reqwest::Method::POST, "/data/v1/admin/reset", None)
            .await?;
        Ok(())
    }

    /// `GET /fn/v1`: the functions the server runs, with their limits and load errors.
    pub async fn functions(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        self.send(reqwest::Method::GET, "/fn/v1", None).await
    }

    /// `GET /fn/v1/_logs/<name>`: lines after `after`, waiting up to `wait` seconds for one.
    pub async fn function_logs(
        &self,
        name: &str,
        after: u64,
        wait: u64,
    ) -> Result<Vec<serde_json::Value>, ClientError> {
        let path = format!(
            "/fn/v1/_logs/{}?after={after}&wait={wait}",
            encode_segment(name)
        );
        let body: serde_json::Value = self.send(reqwest::Method::GET, &path, None).await?;
        Ok(body["lines"].as_array().cloned().unwrap_or_default())
    }

    /// Invokes a function the way any HTTP client would; the answer is returned whatever its
    /// status, since a function's own 4xx/5xx is not a client error.
    pub async fn invoke(
        &self,
        name: &str,
        method: reqwest::Method,
        path: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Invoked, ClientError> {
        let path = path.trim_start_matches('/');
        let url = if path.is_empty() {
            format!("{}/fn/v1/{}", self.endpoint, encode_segment(name))
        } else {
            format!("{}/fn/v1/{}/{path}", self.endpoint, encode_segment(name))
        };
        let mut req = self.authorized(self.http.request(method, url));
        for (name, value) in headers {
            req = req.header(name.as_str(), value.as_str());
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let unreachable = |source| ClientError::Unreachable {
            endpoint: self.endpoint.clone(),
            source,
        };
        let res = req.send().await.map_err(unreachable)?;
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = res.bytes().await.map_err(unreachable)?.to_vec();
        Ok(Invoked {
            status,
            headers,
            body,
        })
    }

    /// `GET /v1/secrets`: names and change times, never values.
    pub async fn secrets(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        let body: serde_json::Value = self.send(reqwest::Method::GET, "/v1/secrets", None).await?;
        Ok(body["secrets"].as_array().cloned().unwrap_or_default())
    }

    pub async fn set_secret(&self, name: &str, value: &str) -> Result<(), ClientError> {
        let path = format!("/v1/secrets/{}", encode_segment(name));
        let body = serde_json::json!({ "value": value });
        self.send::<serde_json::Value>(reqwest::Method::PUT, &path, Some(body))
            .await?;
        Ok(())
    }

    pub async fn unset_secret(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/secrets/{}", encode_segment(name));
        self.send::<serde_json::Value>(reqwest::Method::DELETE, &path, None)
            .await?;
        Ok(())
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let mut req = self.authorized(
            self.http
                .request(method, format!("{}{path}", self.endpoint)),
        );
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.answer(req).await
    }

    /// Sends with the credentials; a success's body, or the server's error.
    async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut req = self.authorized(
            self.http
                .request(method, format!("{}{path}", self.endpoint)),
        );
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.answer_raw(req).await
    }

    /// Sends a built request; a success's body, or the server's error.
    async fn answer_raw(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>, ClientError> {
        let res = req.send().await.map_err(|s| self.unreachable(s))?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|s| self.unreachable(s))?;
        if (200..300).contains(&status) {
            return Ok(bytes.to_vec());
        }
        Err(api_error(status, &bytes))
    }

    /// Sends a built request and reads its JSON answer.
    async fn answer<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let bytes = self.answer_raw(req).await?;
        // 204 and other empty answers read as JSON null.
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|_| unexpected(200, bytes))
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            endpoint: self.endpoint.clone(),
            source,
        }
    }
}

/// A failure's body as the server's error, or as what it is.
fn api_error(status: u16, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ApiErrorBody>(bytes) {
        Ok(body) => ClientError::Api { status, body },
        Err(_) => unexpected(status, bytes),
    }
}

impl Client {
    /// Adds the key, the user's token and the active org.
    fn authorized(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let c = &self.credentials;
        if let Some(key) = &c.apikey {
            req = req.header("apikey", key);
        }
        if let Some(token) = &c.bearer {
            req = req.bearer_auth(token);
        }
        if let Some(org) = &c.org {
            req = req.header("x-reactor-org", org);
        }
        req
    }
}

/// A function's answer, as `Client::invoke` returns it.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Invoked {
    /// Reactor's own error (`function_not_found`, `function_timeout`…), when the answer is one.
    pub fn reactor_error(&self) -> Option<ApiErrorBody> {
        let is_json = self
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json"));
        if self.status < 400 || !is_json {
            return None;
        }
        serde_json::from_slice::<ApiErrorBody>(&self.body)
            .ok()
            .filter(|b| {
                b.code.starts_with("function_")
                    || b.code.starts_with("request_")
                    || b.code == "internal"
            })
    }
}

fn migration_body(files: &[(String, String)]) -> serde_json::Value {
    let files: Vec<_> = files
        .iter()
        .map(|(name, sql)| serde_json::json!({ "name": name, "sql": sql }))
        .collect();
    serde_json::json!({ "files": files })
}

/// A path segment with everything but unreserved characters percent-encoded.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn unexpected(status: u16, bytes: &[u8]) -> ClientError {
    let text = String::from_utf8_lossy(bytes);
    ClientError::Unexpected {
        status,
        snippet: text.chars().take(200).collect(),
    }
}
