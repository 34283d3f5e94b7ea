//! `/deploy/v1`, the control plane: which files the server lacks, a bundle up, the releases,
//! a rollback. Only the service key or a user the server's config names as an admin.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use reactor_core::{ApiError, JsonBody, Principal};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::{Actor, DeployError, Deployer};

/// Routes of quick answers (under the request timeout).
pub fn router(deployer: Deployer) -> Router {
    Router::new()
        .route("/missing", post(missing))
        .route("/releases", get(list_releases))
        .route("/releases/{id}", get(one))
        .route("/rollback", post(rollback))
        .with_state(deployer)
}

/// The upload, which takes as long as its bytes take.
pub fn upload_router(deployer: Deployer) -> Router {
    Router::new()
        .route("/releases", post(upload))
        .with_state(deployer)
}

/// Who may deploy: the service key, or a signed-in user listed in `[deploy] admins`.
async fn authorize(deployer: &Deployer, principal: &Principal) -> Result<Actor, ApiError> {
    if principal.is_service() {
        return Ok(Actor {
            name: format!("service key {}", principal.key_id),
        });
    }
    #[cfg(feature = "identity")]
    if let (Some(user_id), Some(identity)) = (&principal.user_id, deployer.identity())
        && let Ok(user) = identity.admin_get_user(user_id).await
        && deployer.is_admin(&user.email)
    {
        return Ok(Actor { name: user.email });
    }
    #[cfg(not(feature = "identity"))]
    let _ = deployer;
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "not_admin",
        "deploying needs the service key or a server admin",
    )
    .with_hint("use REACTOR_TOKEN=rk_svc_… (CI), or sign in as a user listed in the server's [deploy] admins"))
}

#[derive(Deserialize)]
struct MissingBody {
    files: Vec<String>,
}

async fn missing(
    State(deployer): State<Deployer>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<MissingBody>,
) -> Result<Json<Value>, ApiError> {
    authorize(&deployer, &principal).await?;
    if body.files.len() > deployer.config().limits.max_files {
        return Err(DeployError::Refused("too many files".into()).into());
    }
    let missing = deployer.missing(&body.files).await?;
    Ok(Json(json!({ "missing": missing })))
}

#[derive(Deserialize)]
struct UploadQuery {
    #[serde(default)]
    dry_run: bool,
    git_commit: Option<String>,
}

async fn upload(
    State(deployer): State<Deployer>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = authorize(&deployer, &principal).await?;
    let path = deployer.upload_path();
    if let Err(e) = receive(&deployer, body, &path).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e.into());
    }
    let git_commit = query
        .git_commit
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_hexdigit()));
    let outcome = deployer
        .deploy(path, query.dry_run, git_commit, &actor)
        .await?;
    let status = if outcome.dry_run || outcome.unchanged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(outcome)).into_response())
}

/// The request body to `path`, refused past the size limit.
async fn receive(
    deployer: &Deployer,
    body: Body,
    path: &std::path::Path,
) -> Result<(), DeployError> {
    let limit = deployer.config().max_bundle_bytes;
    let mut file = tokio::fs::File::create(path).await?;
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(std::io::Error::other)?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(DeployError::TooLarge(limit));
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(())
}

/// The releases, the newest first, and the one this process runs.
pub async fn list_releases(
    State(deployer): State<Deployer>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    authorize(&deployer, &principal).await?;
    Ok(Json(json!({
        "current": deployer.current().await,
        "releases": deployer.releases().await?,
    })))
}

async fn one(
    State(deployer): State<Deployer>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&deployer, &principal).await?;
    Ok(Json(deployer.release(&id).await?))
}

#[derive(Deserialize)]
struct RollbackBody {
    release: Option<String>,
}

async fn rollback(
    State(deployer): State<Deployer>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<RollbackBody>,
) -> Result<Json<Value>, ApiError> {
    let actor = authorize(&deployer, &principal).await?;
    Ok(Json(
        deployer.rollback(body.release.as_deref(), &actor).await?,
    ))
}
