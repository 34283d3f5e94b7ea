//! Request extractors whose rejections are [`ApiError`]s, so a malformed body gets the same
//! JSON error shape (with a hint) as every other failure.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A JSON request body, limited to 1 MiB.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

const LIMIT: usize = 1024 * 1024;

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read the request body: {e}"),
            )
        })?;
        if bytes.len() > LIMIT {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {LIMIT} bytes"),
            ));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("the request body is not valid JSON for this endpoint: {e}"),
            )
            .with_hint("send a JSON object with Content-Type: application/json")
        })
    }
}
