//! `/connect/v1`. Thin: who may call, then [`Connect`].
//!
//! Behind the key middleware ([`router`]): integrations, sessions, connections and the
//! proxy. Open to anyone ([`public_router`]): the OAuth authorize and callback pages (a
//! browser navigates there, with no key) and provider webhooks (checked by signature).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use reactor_core::{ApiError, JsonBody, KeyTier, Principal};
use serde::Deserialize;
use serde_json::json;

use crate::proxy::Call;
use crate::store::Filter;
use crate::{Caller, Connect, ConnectError, EndUser, NewConnection};

/// A webhook delivery larger than this is refused.
const MAX_WEBHOOK: usize = 5 * 1024 * 1024;

pub fn router(connect: Connect) -> Router {
    Router::new()
        .route("/integrations", get(integrations))
        .route("/sessions", post(create_session))
        .route("/connections", get(list).post(create_connection))
        .route("/connections/{id}", get(get_one).delete(delete_one))
        .route("/proxy/{id}", any(proxy))
        .route("/proxy/{id}/", any(proxy))
        .route("/proxy/{id}/{*path}", any(proxy))
        .layer(DefaultBodyLimit::disable())
        .with_state(connect)
}

pub fn public_router(connect: Connect) -> Router {
    Router::new()
        .route("/oauth/callback", get(callback))
        .route("/oauth/{integration}/authorize", get(authorize))
        .route("/webhooks/{integration}", post(webhook))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK))
        .with_state(connect)
}

/// The service key, or a signed-in user; a bare public key reaches nothing here.
fn caller(principal: &Principal) -> Result<Caller, ApiError> {
    if principal.is_service() {
        return Ok(Caller::Service);
    }
    match (&principal.tier, &principal.user_id) {
        (KeyTier::Public, Some(user_id)) => Ok(Caller::User {
            user_id: user_id.clone(),
            org_id: principal.org_id.clone(),
        }),
        _ => Err(ApiError::unauthorized(
            "not_signed_in",
            "connections belong to users: sign in (send the user's access token as the Bearer token), or use the service key",
        )),
    }
}

async fn integrations(
    State(connect): State<Connect>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    caller(&principal)?;
    Ok(Json(json!({ "integrations": connect.integrations() })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    integration: String,
    redirect_to: Option<String>,
    end_user: Option<EndUser>,
}

async fn create_session(
    State(connect): State<Connect>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<NewSession>,
) -> Result<Response, Response> {
    let caller = caller(&principal).map_err(IntoResponse::into_response)?;
    let created = connect
        .create_session(
            &caller,
            &body.integration,
            body.redirect_to.as_deref(),
            body.end_user.as_ref(),
        )
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    integration: Option<String>,
    end_user_id: Option<String>,
}

async fn list(
    State(connect): State<Connect>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Response, Response> {
    let caller = caller(&principal).map_err(IntoResponse::into_response)?;
    let filter = Filter {
        integration: q.integration,
        end_user_id: q.end_user_id,
    };
    let connections = connect
        .list(&caller, &filter)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Json(json!({ "connections": connections })).into_response())
}

async fn create_connection(
    State(connect): State<Connect>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<NewConnection>,
) -> Result<Response, Response> {
    let caller = caller(&principal).map_err(IntoResponse::into_response)?;
    let info = connect
        .create_connection(&caller, body)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn get_one(
    State(connect): State<Connect>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let caller = caller(&principal).map_err(IntoResponse::into_response)?;
    let info = connect
        .get(&caller, &id)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Json(info).into_response())
}

async fn delete_one(
    State(connect): State<Connect>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let caller = caller(&principal).map_err(IntoResponse::into_response)?;
    connect
        .delete(&caller, &id)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn proxy(
    State(connect): State<Connect>,
    Extension(principal): Extension<Principal>,
    Path(params): Path<BTreeMap<String, String>>,
    request: Request,
) -> Result<Response, Response> {
    let caller = caller(&principal).map_err(IntoResponse::into_response)?;
    let id = params.get("id").cloned().unwrap_or_default();
    let (parts, body) = request.into_parts();
    // The raw path, still encoded: the provider gets exactly what the caller wrote.
    let raw = parts.uri.path();
    let path = raw
        .find(&format!("/proxy/{id}"))
        .map(|i| &raw[i + "/proxy/".len() + id.len()..])
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    let call = Call {
        method: parts.method,
        path,
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body: Body::new(body),
    };
    connect
        .proxy(&caller, &id, call)
        .await
        .map_err(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    session: Option<String>,
}

/// A browser arrives with its session token; it leaves for the provider.
async fn authorize(
    State(connect): State<Connect>,
    Path(integration): Path<String>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let Some(session) = q.session.filter(|s| !s.is_empty()) else {
        return ConnectError::BadSession.into_response();
    };
    match connect.authorize(&integration, &session).await {
        Ok((url, cookie)) => {
            let mut response = no_store(Redirect::to(&url).into_response());
            if let Ok(v) = header::HeaderValue::from_str(&cookie.header()) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The provider sends the browser back: to the app, or (with no `redirect_to`) a short page.
async fn callback(
    State(connect): State<Connect>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match connect.callback(&query, &headers).await {
        Ok((Some(location), _)) => no_store(Redirect::to(&location).into_response()),
        Ok((None, Some(info))) => no_store(
            Json(json!({
                "connected": true,
                "connection_id": info.id,
                "integration": info.integration,
                "message": "connected; you may close this window",
            }))
            .into_response(),
        ),
        Ok((None, None)) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

async fn webhook(
    State(connect): State<Connect>,
    Path(integration): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match connect.webhook(&integration, &headers, &body).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "accepted": true }))).into_response(),
        Err(e) => e.into_response(),
    }
}
