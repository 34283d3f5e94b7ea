//! `/fn/v1`: any method on `/<name>` and `/<name>/<path…>` invokes the function; `GET /`
//! lists the functions and `GET /_logs/<name>` reads one's logs (both for the service key).
//! Function names start with a letter or digit, so `_`-prefixed segments never collide.

use std::collections::BTreeMap;

use axum::body::{Body, to_bytes};
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Json, Router};
use reactor_core::{ApiError, Principal};
use serde::Deserialize;
use serde_json::json;

use crate::{AnswerBody, FunctionError, Functions, Invocation};

/// What [`EnvSource::env`] returns.
pub type EnvFuture<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<BTreeMap<String, String>, ApiError>> + Send + 'a>>;

/// Loads the environment a handler gets (`env`): the project's secrets.
pub trait EnvSource: Send + Sync + std::fmt::Debug + 'static {
    fn env(&self) -> EnvFuture<'_>;
}

/// No secrets: what a server without a secret store gives its functions.
#[derive(Debug)]
pub struct NoEnv;

impl EnvSource for NoEnv {
    fn env(&self) -> EnvFuture<'_> {
        Box::pin(async { Ok(BTreeMap::new()) })
    }
}

#[derive(Debug, Clone)]
struct FnState {
    functions: Functions,
    env: std::sync::Arc<dyn EnvSource>,
}

/// Where the router answers. Its routes carry the prefix themselves rather than being nested
/// under it: a nested route is wrapped in two more services, each cloned (boxed) per request.
pub const PREFIX: &str = "/fn/v1";

pub fn router(functions: Functions, env: std::sync::Arc<dyn EnvSource>) -> Router {
    let at = |path: &str| format!("{PREFIX}{path}");
    Router::new()
        .route(PREFIX, get(list))
        .route(&at("/_logs/{name}"), get(logs))
        .route(&at("/{name}"), any(invoke))
        .route(&at("/{name}/"), any(invoke))
        .route(&at("/{name}/{*path}"), any(invoke_path))
        .with_state(FnState { functions, env })
}

async fn list(
    State(state): State<FnState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    principal.require_service("listing functions")?;
    Ok(Json(state.functions.list()).into_response())
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    /// Only lines with a greater `seq`.
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
    /// Seconds to wait for a first new line (long poll for `--follow`), at most 30.
    #[serde(default)]
    wait: u64,
}

async fn logs(
    State(state): State<FnState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    principal.require_service("reading function logs")?;
    if !state.functions.exists(&name) {
        return Err(FunctionError::NotFound(name).into_api(false));
    }
    let limit = query.limit.unwrap_or(200).min(1000);
    let wait = std::time::Duration::from_secs(query.wait.min(30));
    let lines = state
        .functions
        .logs()
        .follow(&name, query.after, limit, wait)
        .await;
    Ok(Json(json!({ "function": name, "lines": lines })).into_response())
}

async fn invoke(
    State(state): State<FnState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    request: Request,
) -> Response {
    run(state, principal, name, uri, request).await
}

async fn invoke_path(
    State(state): State<FnState>,
    Extension(principal): Extension<Principal>,
    Path((name, _path)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    request: Request,
) -> Response {
    run(state, principal, name, uri, request).await
}

async fn run(
    state: FnState,
    principal: Principal,
    name: String,
    uri: axum::http::Uri,
    request: Request,
) -> Response {
    let expose = state.functions.config().expose_errors;
    let fail = |e: FunctionError| e.into_api(expose).into_response();
    if !state.functions.exists(&name) {
        return fail(FunctionError::NotFound(name));
    }
    let (parts, body) = request.into_parts();
    let max = state.functions.config().max_body_bytes;
    let body = match to_bytes(body, max).await {
        Ok(bytes) => bytes.to_vec(),
        Err(_) => return fail(FunctionError::BodyTooLarge(max)),
    };
    let env = match state.env.env().await {
        Ok(env) => env,
        Err(e) => return e.into_response(),
    };
    let invocation = Invocation {
        method: parts.method.as_str().to_string(),
        url: full_url(&parts.headers, &uri),
        headers: forwarded_headers(&parts.headers, &principal),
        body,
        id: parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
    };
    match state.functions.invoke(&name, invocation, env).await {
        Ok(answer) => {
            let body = match answer.body {
                AnswerBody::Full(bytes) => Body::from(bytes),
                AnswerBody::Stream(rx) => {
                    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|item| (item, rx))
                    }))
                }
            };
            let mut response = Response::new(body);
            *response.status_mut() =
                StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let headers = response.headers_mut();
            for (name, value) in answer.headers {
                if is_hop_by_hop(&name) || name == "content-length" {
                    continue;
                }
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    headers.append(name, value);
                }
            }
            response
        }
        Err(e) => fail(e),
    }
}

/// The URL the handler sees: the one the client asked for, with the scheme a proxy in front
/// reported.
fn full_url(headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{host}{path}")
}

/// The client's headers minus connection-level ones and any `x-reactor-*` it tried to set,
/// plus the verified identity.
fn forwarded_headers(headers: &HeaderMap, principal: &Principal) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = crate::outbound::header_pairs(headers);
    out.retain(|(name, _)| !is_hop_by_hop(name) && !name.starts_with("x-reactor-"));
    let mut add = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            out.push((name.to_string(), value.to_string()));
        }
    };
    add("x-reactor-user-id", principal.user_id.as_deref());
    add("x-reactor-org-id", principal.org_id.as_deref());
    add("x-reactor-role", principal.role.as_deref());
    add("x-reactor-key", Some(principal.tier.name()));
    out
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}
