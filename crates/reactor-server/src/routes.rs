//! The server's own routes and the layers every request passes through.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use axum::{Extension, Json, Router, middleware};
use reactor_core::{ApiError, Principal};
use serde_json::{Value, json};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::{AppState, auth};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub(crate) fn router(state: AppState) -> Router {
    // Everything here needs a project key; capability routers nest under it.
    let mut api = Router::new()
        .route("/v1/info", get(info))
        .with_state(state.clone());
    let mut public = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state.clone());
    #[cfg(feature = "identity")]
    if let Some(identity) = &state.identity {
        api = api.nest("/auth/v1", reactor_identity::http::router(identity.clone()));
        public = public.nest(
            "/auth/v1",
            reactor_identity::http::public_router(identity.clone()),
        );
    }
    let api = api.route_layer(middleware::from_fn_with_state(
        state,
        auth::resolve_principal,
    ));

    public
        .merge(api)
        .fallback(not_found)
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The process is up. Says nothing about the database, so an orchestrator does not restart a
/// healthy process during a database outage.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can serve: the database answers.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.db.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::unavailable("the database is not reachable")
            .with_hint("check the server log and the database")
    })?;
    Ok(Json(
        json!({ "status": "ready", "database": state.db.engine().name() }),
    ))
}

async fn info(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let project = state.db.project().await.map_err(|e| {
        tracing::error!(error = %e, "reading the project record failed");
        ApiError::internal()
    })?;
    let topology = match state.db.engine() {
        reactor_db::Engine::Sqlite => "O1",
        reactor_db::Engine::Postgres => "O2",
    };
    Ok(Json(json!({
        "name": "reactor",
        "version": env!("CARGO_PKG_VERSION"),
        "project": project,
        "topology": topology,
        "database": state.db.engine().name(),
        "capabilities": state.capabilities.iter().map(|c| json!({"name": c.name(), "prefix": c.prefix()})).collect::<Vec<_>>(),
        "caller": { "tier": principal.tier, "role": principal.db_role().name() },
    })))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
        .with_hint("GET /v1/info lists the capabilities this server offers")
}
