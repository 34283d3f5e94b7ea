//! Caller resolution: once per request, before any route, the project key in the `apikey`
//! header (or an `Authorization: Bearer` that is a key rather than a JWT) becomes a
//! [`Principal`] in the request's extensions, and a user's access token in
//! `Authorization: Bearer <jwt>` adds the user, session, org and role to it. Routes never read
//! these headers themselves.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reactor_core::{ApiError, Principal, keys};
use reactor_db::{ApiKeyRecord, Db};

use crate::AppState;

const KEY_HINT: &str = "send a project key in the `apikey` header or as `Authorization: Bearer rk_pub_…`; `reactor dev` prints the local ones";

/// The key middleware's state: the server, and for every route but the streaming ones the
/// time within which the request must be answered. Key and timeout are one middleware so that
/// a request passes one wrapping service, not two (each is cloned per request).
#[derive(Clone)]
pub(crate) struct Gate {
    state: Arc<AppState>,
    timeout: Option<Duration>,
}

impl Gate {
    pub(crate) fn new(state: Arc<AppState>, timeout: Option<Duration>) -> Self {
        Gate { state, timeout }
    }
}

pub(crate) async fn gate(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let resolved = resolve_principal(gate.state, req, next);
    match gate.timeout {
        Some(limit) => within(limit, resolved).await,
        None => resolved.await,
    }
}

async fn resolve_principal(state: Arc<AppState>, mut req: Request, next: Next) -> Response {
    match principal(&state, req.headers()).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// `respond`'s response, or 408 when it takes longer than `limit`.
pub(crate) async fn within(limit: Duration, respond: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(limit, respond).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request was not answered within {} s", limit.as_secs()),
        )
        .with_hint(
            "large uploads go through the storage and deploy endpoints, which have no time limit",
        )
        .into_response(),
    }
}

async fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let Some(candidate) = presented_key(headers) else {
        return Err(
            ApiError::unauthorized("missing_api_key", "no API key was sent").with_hint(KEY_HINT),
        );
    };
    let Some(tier) = keys::tier_of(candidate) else {
        return Err(
            ApiError::unauthorized("invalid_api_key", "the API key is malformed")
                .with_hint(KEY_HINT),
        );
    };
    let Some(record) = state
        .keys
        .get(&state.db, candidate)
        .await?
        .filter(|r| r.tier == tier)
    else {
        return Err(ApiError::unauthorized(
            "invalid_api_key",
            "the API key is not known to this server",
        )
        .with_hint(KEY_HINT));
    };
    if record.revoked {
        return Err(
            ApiError::unauthorized("revoked_api_key", "the API key has been revoked")
                .with_hint("create a new key with `reactor keys create` and use it instead"),
        );
    }
    let mut principal = Principal::from_key(record.id.clone(), tier);
    let org = requested_org(headers)?;
    match bearer(headers).filter(|t| *t != candidate) {
        Some(token) => add_user(state, &mut principal, token, org).await?,
        None if org.is_some() => {
            return Err(ApiError::unauthorized(
                "no_authorization",
                "X-Reactor-Org needs a signed-in user",
            )
            .with_hint("send the user's access token as Authorization: Bearer <jwt>"));
        }
        None => {}
    }
    Ok(principal)
}

/// Project keys looked up in the last second. A key is read from the database at most once a
/// second per process, so a revocation reaches every replica within a second, while a busy key
/// costs no query per request. Unknown keys are remembered too, so a flood of garbage keys does
/// not become a flood of queries. Last use is recorded at most once a minute per key, off the
/// request path.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    entries: Mutex<HashMap<[u8; 32], Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    record: Option<Arc<ApiKeyRecord>>,
    fetched: Instant,
    touched: Option<Instant>,
}

impl Cached {
    fn fresh(&self, now: Instant) -> bool {
        now.duration_since(self.fetched) < KEY_TTL
    }

    /// A live key whose use was last recorded over a minute ago (or never).
    fn touch_due(&self, now: Instant) -> bool {
        self.record.as_ref().is_some_and(|r| !r.revoked)
            && self
                .touched
                .is_none_or(|t| now.duration_since(t) >= TOUCH_EVERY)
    }
}

const KEY_TTL: Duration = Duration::from_secs(1);
const TOUCH_EVERY: Duration = Duration::from_secs(60);
const MAX_CACHED_KEYS: usize = 10_000;

impl KeyCache {
    async fn get(&self, db: &Db, secret: &str) -> Result<Option<Arc<ApiKeyRecord>>, ApiError> {
        let digest = keys::digest(secret);
        let now = Instant::now();
        // Nearly every request: a key read within the second, its use recorded within the
        // minute. One lookup under the lock, nothing written.
        let hit = match self.lock().get(&digest).filter(|c| c.fresh(now)) {
            Some(cached) if !cached.touch_due(now) => return Ok(cached.record.clone()),
            hit => hit.cloned(),
        };
        let mut entry = match hit {
            Some(entry) => entry,
            None => {
                let record = db.find_api_key(&hex::encode(digest)).await.map_err(|e| {
                    tracing::error!(error = %e, "api key lookup failed");
                    ApiError::internal()
                })?;
                let touched = self.lock().get(&digest).and_then(|c| c.touched);
                Cached {
                    record: record.map(Arc::new),
                    fetched: now,
                    touched,
                }
            }
        };
        if entry.touch_due(now)
            && let Some(record) = &entry.record
        {
            entry.touched = Some(now);
            let (db, id) = (db.clone(), record.id.clone());
            tokio::spawn(async move {
                if let Err(e) = db.touch_api_key(&id).await {
                    tracing::warn!(error = %e, key = %id, "could not record api key use");
                }
            });
        }
        let record = entry.record.clone();
        let mut entries = self.lock();
        if entries.len() >= MAX_CACHED_KEYS {
            entries.clear();
        }
        entries.insert(digest, entry);
        Ok(record)
    }

    /// Drops a key from this process's cache (it was revoked here; other replicas see the
    /// revocation when their entry expires).
    pub(crate) fn forget(&self, id: &str) {
        self.lock()
            .retain(|_, c| c.record.as_ref().is_none_or(|r| r.id != id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Cached>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Verifies a user's access token and puts who they are into the principal. `org`, from
/// `X-Reactor-Org`, overrides the token's active org for this request after a membership check.
#[cfg(feature = "identity")]
async fn add_user(
    state: &AppState,
    principal: &mut Principal,
    token: &str,
    org: Option<&str>,
) -> Result<(), ApiError> {
    let Some(identity) = &state.identity else {
        return Err(no_identity());
    };
    let claims = identity.verify_access_token(token).await?;
    let (org_id, role) = match org {
        Some(wanted) => {
            let (id, role) = identity.membership(&claims.sub, wanted).await?;
            (Some(id), Some(role))
        }
        None => (claims.org_id, claims.org_role),
    };
    principal.user_id = Some(claims.sub);
    principal.session_id = Some(claims.session_id);
    principal.org_id = org_id;
    principal.role = role;
    Ok(())
}

#[cfg(not(feature = "identity"))]
async fn add_user(
    _: &AppState,
    _: &mut Principal,
    _: &str,
    _: Option<&str>,
) -> Result<(), ApiError> {
    Err(no_identity())
}

/// The `X-Reactor-Org` header: an org id or slug.
fn requested_org(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get("x-reactor-org") {
        None => Ok(None),
        Some(v) => match v.to_str().map(str::trim) {
            Ok(org) if !org.is_empty() => Ok(Some(org)),
            _ => Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "bad_org_header",
                "X-Reactor-Org is empty or not text",
            )
            .with_hint("send an organization id or slug")),
        },
    }
}

fn no_identity() -> ApiError {
    ApiError::unauthorized("bad_jwt", "this server does not accept user tokens")
        .with_hint("the identity capability is not enabled on this server")
}

/// The `apikey` header, else a Bearer token that has the shape of a project key.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get("apikey").and_then(|v| v.to_str().ok()) {
        return Some(key.trim());
    }
    bearer(headers).filter(|t| keys::tier_of(t).is_some())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    Some(token).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn apikey_header_wins_over_bearer() {
        let h = headers(&[("apikey", "rk_pub_a"), ("authorization", "Bearer rk_svc_b")]);
        assert_eq!(presented_key(&h), Some("rk_pub_a"));
    }

    #[test]
    fn a_bearer_key_is_used_without_apikey_but_a_jwt_is_not_a_key() {
        let key = keys::generate(reactor_core::KeyTier::Service).secret;
        let h = headers(&[("authorization", &format!("Bearer {key}"))]);
        assert_eq!(presented_key(&h), Some(key.as_str()));
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer a.b.c")])),
            None
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }
}
