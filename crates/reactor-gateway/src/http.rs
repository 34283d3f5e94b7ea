//! `/gateway/v1`, behind the key middleware: OpenAI's `POST /chat/completions`,
//! `POST /embeddings` and `GET /models`. Thin: who may call, then [`Gateway`].

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use reactor_core::{KeyTier, Principal};

use crate::{Caller, Endpoint, Gateway, GatewayError};

/// Requests carry prompts, sometimes images: more than the default 2 MB.
const MAX_BODY: usize = 20 * 1024 * 1024;

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/chat/completions", post(chat))
        .route("/embeddings", post(embeddings))
        .route("/models", get(models))
        .route("/usage", get(usage))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(gateway)
}

/// The service key and signed-in users; a bare public key only when the project allows it.
fn admit(gateway: &Gateway, principal: &Principal) -> Result<(), GatewayError> {
    if principal.tier == KeyTier::Public
        && principal.user_id.is_none()
        && !gateway.allows_anonymous()
    {
        return Err(GatewayError::Unauthorized(
            "the gateway needs a signed-in user or the service key (send the user's access token as the Bearer token, the project key as `apikey`); [gateway] allow_anonymous = true opens it to the public key".into(),
        ));
    }
    Ok(())
}

fn caller(principal: &Principal) -> Caller {
    Caller {
        key_id: principal.key_id.clone(),
        user_id: principal.user_id.clone(),
        org_id: principal.org_id.clone(),
    }
}

/// `Cache-Control: no-cache` (or `no-store`): the caller wants a fresh answer.
fn no_cache(headers: &HeaderMap) -> bool {
    headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("no-cache") || v.contains("no-store"))
}

async fn chat(
    State(gateway): State<Gateway>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GatewayError> {
    forward(
        Endpoint::ChatCompletions,
        &gateway,
        &principal,
        &headers,
        &body,
    )
    .await
}

async fn embeddings(
    State(gateway): State<Gateway>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GatewayError> {
    forward(Endpoint::Embeddings, &gateway, &principal, &headers, &body).await
}

async fn forward(
    endpoint: Endpoint,
    gateway: &Gateway,
    principal: &Principal,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, GatewayError> {
    admit(gateway, principal)?;
    gateway
        .forward(endpoint, body, &caller(principal), no_cache(headers))
        .await
}

#[derive(serde::Deserialize)]
struct UsageQuery {
    /// Comma-separated: `caller`, `model`, `day` [default: caller,model,day].
    group_by: Option<String>,
    /// `YYYY-MM-DD` [default: 30 days ago].
    since: Option<String>,
}

/// `GET /usage`: the usage table, grouped; the service key only.
async fn usage(
    State(gateway): State<Gateway>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<UsageQuery>,
) -> Result<Response, GatewayError> {
    if !principal.is_service() {
        return Err(GatewayError::Forbidden);
    }
    let by: Vec<&str> = query
        .group_by
        .as_deref()
        .unwrap_or("caller,model,day")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = by.iter().find(|b| !["caller", "model", "day"].contains(b)) {
        return Err(GatewayError::BadRequest(format!(
            "cannot group by `{bad}`: use caller, model and day"
        )));
    }
    let since = match query.since {
        Some(s) if s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit() || b == b'-') => s,
        Some(s) => {
            return Err(GatewayError::BadRequest(format!(
                "`since` = {s:?} is not a date (YYYY-MM-DD)"
            )));
        }
        None => crate::meter::day_of(crate::meter::now_ms() - 30 * 86_400_000),
    };
    let groups = gateway.usage(&by, &since).await?;
    Ok(
        Json(serde_json::json!({ "since": since, "group_by": by, "usage": groups }))
            .into_response(),
    )
}

async fn models(
    State(gateway): State<Gateway>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, GatewayError> {
    admit(&gateway, &principal)?;
    Ok(Json(gateway.models()).into_response())
}
