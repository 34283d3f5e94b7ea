//! The server's own routes and the layers every request passes through.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderName, Request};
use axum::response::Response;
use axum::routing::{delete, get, put};
use axum::{Extension, Json, Router, middleware};
use reactor_core::{ApiError, JsonBody, KeyTier, Principal, keys};
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::{AppState, auth};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a random prefix per process and a counter — unique across replicas like a
/// UUID, without asking the kernel for randomness on every request.
#[derive(Debug, Clone)]
struct RequestIds {
    prefix: std::sync::Arc<str>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        RequestIds {
            prefix: keys::random_base62(12).into(),
            next: std::sync::Arc::default(),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{n:x}", self.prefix);
        axum::http::HeaderValue::from_str(&id)
            .ok()
            .map(RequestId::new)
    }
}

/// What browsers may send and read. Preflights are answered here, before the key middleware
/// (a preflight carries no key).
fn cors(origins: &[String]) -> CorsLayer {
    use axum::http::Method;
    let headers = [
        "apikey",
        "authorization",
        "content-type",
        "prefer",
        "range",
        "range-unit",
        "accept",
        "accept-profile",
        "content-profile",
        "x-reactor-org",
        "x-client-info",
        "x-upsert",
        "x-request-id",
        "cache-control",
        "if-none-match",
        "if-modified-since",
        "x-metadata",
        "content-md5",
        "x-checksum-sha256",
        "tus-resumable",
        "upload-length",
        "upload-offset",
        "upload-metadata",
    ]
    .map(HeaderName::from_static);
    let exposed = [
        "content-range",
        "location",
        "preference-applied",
        "x-request-id",
        "etag",
        "retry-after",
        "content-disposition",
        "content-length",
        "accept-ranges",
        "last-modified",
        "tus-resumable",
        "tus-version",
        "tus-extension",
        "upload-offset",
        "upload-length",
        "upload-expires",
    ]
    .map(HeaderName::from_static);
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(headers)
        .expose_headers(exposed)
        .max_age(Duration::from_secs(3600));
    if origins.is_empty() {
        layer.allow_origin(tower_http::cors::Any)
    } else {
        // Validated when the configuration was read.
        layer.allow_origin(AllowOrigin::list(
            origins.iter().filter_map(|o| o.parse().ok()),
        ))
    }
}

/// Everything but the streaming routes answers within this; an upload or download of
/// gigabytes takes as long as its bytes take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The server as one service: the routes, each behind the middleware it needs, inside the
/// layers every request passes (CORS, request id, trace span).
///
/// The outer layers wrap the router once rather than through `Router::layer`, which wraps
/// every route in a boxed service that is cloned for each request: a read by key crossed
/// eight, and what lay between hyper and the handler was 15 % of the machine (8.5 % after).
/// For the same reason each route passes one middleware (key and timeout in one), and the
/// Data and Functions routes carry their prefix rather than being nested.
pub(crate) fn router(
    state: AppState,
) -> impl Service<
    Request<axum::body::Body>,
    Response = Response,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let cors_layer = cors(&state.cors_origins);
    let state_for_fallback = state.clone();
    // Everything here needs a project key; capability routers nest under it.
    let (capabilities, public_capabilities) = capability_routers(&state);
    let (streams, public_streams) = streaming_routers(&state);
    // The key middleware runs on every request and gets its state by clone: one `Arc`, not
    // the dozen an `AppState` clone touches.
    let gate = Arc::new(state.clone());
    let api = Router::new()
        .route("/v1/info", get(info))
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}", delete(revoke_key))
        .route("/v1/secrets", get(list_secrets))
        .route("/v1/secrets/{name}", put(set_secret).delete(unset_secret))
        .with_state(state.clone())
        .merge(capabilities)
        .route_layer(middleware::from_fn_with_state(
            auth::Gate::new(gate.clone(), Some(REQUEST_TIMEOUT)),
            auth::gate,
        ));
    // (A layer on no routes is refused, so only when some capability streams.)
    let streams = if streams.has_routes() {
        streams.route_layer(middleware::from_fn_with_state(
            auth::Gate::new(gate, None),
            auth::gate,
        ))
    } else {
        streams
    };
    let public = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(public_capabilities)
        .route_layer(middleware::from_fn(|req, next: middleware::Next| {
            auth::within(REQUEST_TIMEOUT, next.run(req))
        }));

    let routes = public
        .merge(api)
        .merge(streams)
        .merge(public_streams)
        .fallback({
            let state = state_for_fallback.clone();
            move |method, uri, headers| fallback(State(state), method, uri, headers)
        })
        .method_not_allowed_fallback(method_not_allowed);
    ServiceBuilder::new()
        .layer(cors_layer)
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::new()))
        // The trace layer wraps the body to see its end; CORS answers preflights with an
        // empty body of the type beneath it, so the body is made plain again between them.
        .map_response(|response: Response<_>| response.map(axum::body::Body::new))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .service(routes)
}

/// The routers that stream request or response bodies of any size, so no request timeout
/// applies: those behind the key middleware, and those anyone may call.
#[cfg_attr(
    not(any(
        feature = "storage",
        feature = "sites",
        feature = "data",
        feature = "gateway",
        feature = "connect"
    )),
    allow(unused_variables)
)]
fn streaming_routers(state: &AppState) -> (Router, Router) {
    let routers = (Router::new(), Router::new());
    // Sites may serve large files; anyone may read them.
    #[cfg(feature = "sites")]
    let routers = match &state.sites {
        Some(sites) => (
            routers.0,
            routers.1.nest(
                reactor_sites::http::PREFIX,
                reactor_sites::http::public_router(sites.clone()),
            ),
        ),
        None => routers,
    };
    // A completion streams for as long as the model writes.
    #[cfg(feature = "gateway")]
    let routers = match &state.gateway {
        Some(gateway) => (
            routers.0.nest(
                "/gateway/v1",
                reactor_gateway::http::router(gateway.clone()),
            ),
            routers.1,
        ),
        None => routers,
    };
    // A proxied call streams for as long as the provider answers.
    #[cfg(feature = "connect")]
    let routers = match &state.connect {
        Some(connect) => (
            routers.0.nest(
                "/connect/v1",
                reactor_connect::http::router(connect.clone()),
            ),
            routers.1.nest(
                "/connect/v1",
                reactor_connect::http::public_router(connect.clone()),
            ),
        ),
        None => routers,
    };
    // A bundle's upload takes as long as its bytes.
    #[cfg(feature = "data")]
    let routers = match &state.deploy {
        Some(deployer) => (
            routers.0.nest(
                "/deploy/v1",
                crate::deploy::http::upload_router(deployer.clone()),
            ),
            routers.1,
        ),
        None => routers,
    };
    #[cfg(feature = "storage")]
    let routers = match &state.storage {
        Some(storage) => (
            routers.0.nest(
                "/storage/v1",
                reactor_storage::http::router(storage.clone()),
            ),
            routers.1.nest(
                "/storage/v1",
                reactor_storage::http::public_router(storage.clone()),
            ),
        ),
        None => routers,
    };
    routers
}

/// The routers of the enabled capabilities: those behind the key middleware, and those
/// anyone may call.
#[cfg_attr(
    not(any(feature = "identity", feature = "data")),
    allow(unused_variables)
)]
fn capability_routers(state: &AppState) -> (Router, Router) {
    let routers = (Router::new(), Router::new());
    #[cfg(feature = "identity")]
    let routers = match &state.identity {
        Some(identity) => (
            routers
                .0
                .nest("/auth/v1", reactor_identity::http::router(identity.clone())),
            routers.1.nest(
                "/auth/v1",
                reactor_identity::http::public_router(identity.clone()),
            ),
        ),
        None => routers,
    };
    #[cfg(feature = "data")]
    let routers = match &state.data {
        Some(data) => (
            routers
                .0
                .merge(reactor_data::http::router(data.clone()))
                // The OpenAPI document answers at the API root with or without the slash.
                .route(
                    "/data/v1/",
                    axum::routing::get(|| async {
                        axum::response::Redirect::permanent("/data/v1")
                    }),
                ),
            routers.1,
        ),
        None => routers,
    };
    #[cfg(feature = "jobs")]
    let routers = match &state.jobs {
        Some(jobs) => (
            routers
                .0
                .nest("/jobs/v1", reactor_jobs::http::router(jobs.clone())),
            routers.1,
        ),
        None => routers,
    };
    #[cfg(feature = "sites")]
    let routers = match &state.sites {
        Some(sites) => (
            routers.0.nest(
                reactor_sites::http::PREFIX,
                reactor_sites::http::router(sites.clone()),
            ),
            routers.1,
        ),
        None => routers,
    };
    #[cfg(feature = "data")]
    let routers = match &state.deploy {
        Some(deployer) => (
            routers
                .0
                .nest("/deploy/v1", crate::deploy::http::router(deployer.clone()))
                .route(
                    "/sites/v1/releases",
                    get(crate::deploy::http::list_releases).with_state(deployer.clone()),
                ),
            routers.1,
        ),
        None => routers,
    };
    #[cfg(feature = "functions")]
    let routers = match &state.functions {
        Some(functions) => {
            let env: std::sync::Arc<dyn reactor_functions::http::EnvSource> =
                match state.secrets.clone() {
                    Some(secrets) => std::sync::Arc::new(SecretsEnv(secrets)),
                    None => std::sync::Arc::new(reactor_functions::http::NoEnv),
                };
            (
                routers
                    .0
                    .merge(reactor_functions::http::router(functions.clone(), env)),
                routers.1,
            )
        }
        None => routers,
    };
    routers
}

/// A function's `env`: the project's secrets.
#[cfg(feature = "functions")]
#[derive(Debug)]
pub(crate) struct SecretsEnv(pub(crate) reactor_db::secrets::Secrets);

#[cfg(feature = "functions")]
impl reactor_functions::http::EnvSource for SecretsEnv {
    fn env(&self) -> reactor_functions::http::EnvFuture<'_> {
        Box::pin(async move {
            self.0
                .values()
                .await
                .map(|values| (*values).clone())
                .map_err(secret_failure)
        })
    }
}

fn secret_failure(e: reactor_db::secrets::SecretError) -> ApiError {
    use reactor_db::secrets::SecretError;
    let hint = e.hint();
    let error = match &e {
        SecretError::BadName(_) | SecretError::TooLong => ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_secret",
            e.to_string(),
        ),
        SecretError::NoMasterKey => ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "no_master_key",
            e.to_string(),
        ),
        SecretError::Open(..) => {
            tracing::error!(error = %e, "secret store");
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "secret_unreadable",
                e.to_string(),
            )
        }
        SecretError::Db(db) => {
            tracing::error!(error = %db, "secret store");
            ApiError::internal()
        }
    };
    match hint {
        Some(h) => error.with_hint(h),
        None => error,
    }
}

fn secret_store(state: &AppState) -> Result<&reactor_db::secrets::Secrets, ApiError> {
    state
        .secrets
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this server has no secret store"))
}

async fn list_secrets(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("managing secrets")?;
    let secrets = secret_store(&state)?.list().await.map_err(secret_failure)?;
    Ok(Json(json!({ "secrets": secrets })))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    value: String,
}

async fn set_secret(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<SecretBody>,
) -> Result<axum::http::StatusCode, ApiError> {
    principal.require_service("managing secrets")?;
    secret_store(&state)?
        .set(&name, &body.value)
        .await
        .map_err(secret_failure)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

async fn unset_secret(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    principal.require_service("managing secrets")?;
    if secret_store(&state)?
        .unset(&name)
        .await
        .map_err(secret_failure)?
    {
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no secret named `{name}`"))
            .with_hint("`reactor secrets list` shows the names"))
    }
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
    let project = state.db.project().await.map_err(db_failure)?;
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
        "capabilities": state.capabilities.iter().map(|c| json!({
            "name": c.name(),
            "prefix": c.prefix(),
            "status": if state.serves(*c) { "serving" } else { "planned" },
        })).collect::<Vec<_>>(),
        "caller": {
            "tier": principal.tier,
            "role": principal.db_role().name(),
            "user_id": principal.user_id,
            "org_id": principal.org_id,
            "org_role": principal.role,
        },
    })))
}

fn db_failure(e: reactor_db::DbError) -> ApiError {
    tracing::error!(error = %e, "database failure");
    ApiError::internal()
}

async fn list_keys(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("managing project keys")?;
    let keys = state.db.list_api_keys().await.map_err(db_failure)?;
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyBody {
    tier: String,
    name: String,
}

/// Creates a key; the answer is the only time its secret is shown.
async fn create_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<NewKeyBody>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    principal.require_service("managing project keys")?;
    let tier = match body.tier.as_str() {
        "pub" | "public" => KeyTier::Public,
        "svc" | "service" => KeyTier::Service,
        other => {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_tier",
                format!("unknown key tier `{other}`"),
            )
            .with_hint("use \"pub\" (browser-safe, row-level security applies) or \"svc\" (server-side, bypasses it)"));
        }
    };
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_name",
            "a key name is 1 to 100 printable characters",
        )
        .with_hint("name keys after where they are used, e.g. \"web\" or \"ci\""));
    }
    let key = keys::generate(tier);
    state
        .db
        .insert_api_key(&key, name)
        .await
        .map_err(db_failure)?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(
            json!({"id": key.id, "name": name, "tier": tier, "prefix": key.prefix, "key": key.secret}),
        ),
    ))
}

async fn revoke_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    principal.require_service("managing project keys")?;
    if state.db.revoke_api_key(&id).await.map_err(db_failure)? {
        state.keys.forget(&id);
        state.keys.forget(&id);
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no active key with id `{id}`"))
            .with_hint("`reactor keys list` shows the keys and their ids"))
    }
}

/// A path no route claims: a site's page when sites serve one (by host, or the default site
/// at `/`), else the JSON 404. A request carrying a key is an API client's, which gets the
/// JSON 404 even then (a mistyped `/dat/v1/todos` must not answer a SPA's `index.html`).
#[cfg_attr(not(feature = "sites"), allow(unused_variables))]
async fn fallback(
    State(state): State<AppState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let api_client =
        headers.contains_key("apikey") || headers.contains_key(axum::http::header::AUTHORIZATION);
    #[cfg(feature = "sites")]
    if let Some(sites) = &state.sites
        && !api_client
        && let Some(response) = reactor_sites::http::fallback(sites, &method, &uri, &headers).await
    {
        return response;
    }
    not_found(uri).await.into_response()
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
        .with_hint("GET /v1/info lists the capabilities this server offers")
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not a method of {}", uri.path()),
    )
    .with_hint("check the method and the path; a `..` in a path is resolved away by HTTP clients")
}

#[cfg(test)]
mod request_id_tests {
    use super::*;

    fn id(ids: &mut RequestIds) -> String {
        let made = ids.make_request_id(&Request::new(())).expect("an id");
        made.header_value().to_str().expect("ascii").to_string()
    }

    #[test]
    fn ids_are_unique_within_and_across_processes() {
        let mut ids = RequestIds::new();
        let (a, b) = (id(&mut ids), id(&mut ids));
        assert_ne!(a, b);
        let prefix = |s: &str| s.split('-').next().unwrap_or_default().to_string();
        assert_eq!(prefix(&a), prefix(&b));
        assert_eq!(prefix(&a).len(), 12);
        let mut elsewhere = RequestIds::new();
        assert_ne!(prefix(&id(&mut elsewhere)), prefix(&a));
    }
}
