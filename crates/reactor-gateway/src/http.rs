//! `/gateway/v1`, behind the key middleware: OpenAI's `POST /chat/completions`,
//! `POST /embeddings` and `GET /models`. Thin: who may call, then [`Gateway`].

use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use reactor_core::{KeyTier, Principal};

use crate::{Endpoint, Gateway, GatewayError};

/// Requests carry prompts, sometimes images: more than the default 2 MB.
const MAX_BODY: usize = 20 * 1024 * 1024;

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/chat/completions", post(chat))
        .route("/embeddings", post(embeddings))
        .route("/models", get(models))
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

async fn chat(
    State(gateway): State<Gateway>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    admit(&gateway, &principal)?;
    gateway.forward(Endpoint::ChatCompletions, &body).await
}

async fn embeddings(
    State(gateway): State<Gateway>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    admit(&gateway, &principal)?;
    gateway.forward(Endpoint::Embeddings, &body).await
}

async fn models(
    State(gateway): State<Gateway>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, GatewayError> {
    admit(&gateway, &principal)?;
    Ok(Json(gateway.models()).into_response())
}
