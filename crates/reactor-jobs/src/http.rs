//! `/jobs/v1`: the project's jobs and their runs. Jobs are the project's own machinery, so
//! every route takes the service key (a browser enqueues work through a function or an event
//! of its own data instead).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use reactor_core::{ApiError, Principal};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Jobs;

type ApiResult<T> = Result<T, ApiError>;

pub fn router(jobs: Jobs) -> Router {
    Router::new()
        .route("/", get(list))
        .route("/runs/{id}", get(show))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/retry", post(retry))
        .route("/events/{event}", post(emit))
        .route("/{name}/runs", get(runs).post(enqueue))
        .with_state(jobs)
}

fn admin(principal: &Principal) -> ApiResult<()> {
    principal.require_service("managing jobs")
}

/// The request body as the payload: JSON, or `null` when there is none.
fn payload(body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the payload is not JSON: {e}"),
        )
    })
}

async fn list(
    State(jobs): State<Jobs>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    admin(&principal)?;
    Ok(Json(Value::from(jobs.list().await?)))
}

async fn enqueue(
    State(jobs): State<Jobs>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin(&principal)?;
    let run = jobs.enqueue(&name, payload(&body)?).await?;
    Ok((StatusCode::CREATED, Json(run.to_json())))
}

#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<i64>,
}

async fn runs(
    State(jobs): State<Jobs>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(q): Query<Limit>,
) -> ApiResult<Json<Value>> {
    admin(&principal)?;
    let runs = jobs
        .runs(&name, q.limit.unwrap_or(50).clamp(1, 1000))
        .await?;
    Ok(Json(runs.iter().map(crate::Run::to_json).collect()))
}

async fn show(
    State(jobs): State<Jobs>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    admin(&principal)?;
    Ok(Json(jobs.run(&id).await?.to_json()))
}

async fn cancel(
    State(jobs): State<Jobs>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    admin(&principal)?;
    Ok(Json(jobs.cancel(&id).await?.to_json()))
}

async fn retry(
    State(jobs): State<Jobs>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    admin(&principal)?;
    Ok(Json(jobs.retry(&id).await?.to_json()))
}

async fn emit(
    State(jobs): State<Jobs>,
    Extension(principal): Extension<Principal>,
    Path(event): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin(&principal)?;
    let runs = jobs.emit(&event, payload(&body)?).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "runs": runs.iter().map(crate::Run::to_json).collect::<Vec<_>>() })),
    ))
}
