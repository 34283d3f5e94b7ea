//! A typed client of the Reactor server's HTTP API. The CLI talks to every server through it,
//! so a command behaves the same against `reactor dev` and a remote `reactor-server`.

use std::time::Duration;

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
}

impl ClientError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::Unreachable { .. } => Some(
                "is the server running? `reactor dev` starts one locally; `reactor context show` tells which endpoint is used".into(),
            ),
            ClientError::Api { body, .. } => body.hint.clone(),
            ClientError::Unexpected { .. } => Some("is the endpoint a Reactor server?".into()),
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
}

#[derive(Debug, Clone, Deserialize)]
pub struct CallerInfo {
    pub tier: String,
    pub role: String,
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

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

impl Client {
    pub fn new(endpoint: &str, token: Option<String>) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("reactor-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Client {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn info(&self) -> Result<ServerInfo, ClientError> {
        self.send(reqwest::Method::GET, "/v1/info", None).await
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

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.endpoint));
        if let Some(token) = &self.token {
            req = req.header("apikey", token).bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        let status = res.status().as_u16();
        let bytes = res
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        if (200..300).contains(&status) {
            // 204 and other empty answers read as JSON null.
            let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return serde_json::from_slice(bytes).map_err(|_| unexpected(status, bytes));
        }
        match serde_json::from_slice::<ApiErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(_) => Err(unexpected(status, &bytes)),
        }
    }
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
