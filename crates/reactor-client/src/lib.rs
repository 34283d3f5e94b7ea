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
        self.get("/v1/info").await
    }

    /// `GET /healthz`: true when the process answers.
    pub async fn healthy(&self) -> bool {
        matches!(self.http.get(format!("{}/healthz", self.endpoint)).send().await, Ok(r) if r.status().is_success())
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut req = self.http.get(format!("{}{path}", self.endpoint));
        if let Some(token) = &self.token {
            req = req.header("apikey", token).bearer_auth(token);
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
            return serde_json::from_slice(&bytes).map_err(|_| unexpected(status, &bytes));
        }
        match serde_json::from_slice::<ApiErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(_) => Err(unexpected(status, &bytes)),
        }
    }
}

fn unexpected(status: u16, bytes: &[u8]) -> ClientError {
    let text = String::from_utf8_lossy(bytes);
    ClientError::Unexpected {
        status,
        snippet: text.chars().take(200).collect(),
    }
}
