//! The Gateway capability: OpenAI's wire format on `/gateway/v1`, each request routed to the
//! targets of the model it names, as `reactor.toml`'s `[gateway]` declares them.
//!
//! A caller names a model of the project (`"fast"`), never an upstream: the providers and
//! their URLs come from the manifest only, so nothing else is reachable through the gateway.
//! A model's targets are tried in order (or, when they carry weights, in a weighted random
//! order); a target is retried with backoff on 429, 5xx, a timeout or a connection error,
//! then the next one is tried; a target that keeps failing is skipped for a while. Answers
//! stream through as the upstream sends them: a streamed completion's events reach the caller
//! chunk by chunk, never buffered.

mod anthropic;
mod client;
pub mod http;
mod meter;
pub mod store;

pub use meter::Caller;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use reactor_manifest::{GatewayConfig, ProviderConfig, ProviderKind};
use serde_json::{Value, json};

/// The header that says which target served.
pub const TARGET_HEADER: &str = "x-reactor-gateway-target";
/// `hit` or `miss`, on models with a cache.
pub const CACHE_HEADER: &str = "x-reactor-gateway-cache";

/// The cache key of a request: its endpoint and its JSON with every object's keys sorted, so
/// the same request written in another order is the same request.
fn cache_key(endpoint: Endpoint, request: &serde_json::Map<String, Value>) -> String {
    use sha2::Digest;
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let sorted: std::collections::BTreeMap<&String, Value> =
                    o.iter().map(|(k, v)| (k, canonical(v))).collect();
                serde_json::to_value(sorted).unwrap_or(Value::Null)
            }
            Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let text = canonical(&Value::Object(request.clone())).to_string();
    let mut hasher = sha2::Sha256::new();
    hasher.update(endpoint.path().as_bytes());
    hasher.update([0]);
    hasher.update(text.as_bytes());
    hex::encode(hasher.finalize())
}

/// A future a [`KeySource`] returns.
pub type KeyFuture<'a> = Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;

/// Where provider API keys come from: the project's secrets, by name.
pub trait KeySource: Send + Sync + fmt::Debug {
    fn key<'a>(&'a self, secret: &'a str) -> KeyFuture<'a>;
}

/// What the gateway answers: OpenAI's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Embeddings,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: reactor_db::Db,
    /// The limit counters (in memory in front of SQLite; Postgres's table otherwise).
    counters: store::Counters,
    /// Shared with the recorder, which prices usage with the price table in force.
    routes: Arc<RwLock<Arc<Routes>>>,
    http: client::Client,
    keys: Arc<dyn KeySource>,
    /// Answers served, to the background recorder (usage rows, settled reservations).
    recorder: tokio::sync::mpsc::UnboundedSender<meter::Served>,
    /// Consecutive failures and cool-down per target (`provider/model`), in this process.
    health: Mutex<HashMap<String, Health>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Health {
    failures: u32,
    cooled_until: Option<Instant>,
}

/// The gateway's configuration as loaded.
#[derive(Debug, Default)]
struct Routes {
    providers: HashMap<String, Upstream>,
    config: GatewayConfig,
}

/// A provider with its URLs parsed once, at load, rather than on every request.
#[derive(Debug)]
struct Upstream {
    config: ProviderConfig,
    chat: Option<client::Address>,
    embeddings: Option<client::Address>,
    messages: Option<client::Address>,
}

impl Upstream {
    fn new(config: &ProviderConfig) -> Upstream {
        let url = |path: &str| client::Address::parse(&format!("{}{path}", config.base_url)).ok();
        Upstream {
            chat: url(Endpoint::ChatCompletions.path()),
            embeddings: url(Endpoint::Embeddings.path()),
            messages: url("/messages"),
            config: config.clone(),
        }
    }

    fn url(&self, endpoint: Endpoint) -> Option<&client::Address> {
        match (self.config.kind, endpoint) {
            (ProviderKind::Anthropic, _) => self.messages.as_ref(),
            (_, Endpoint::ChatCompletions) => self.chat.as_ref(),
            (_, Endpoint::Embeddings) => self.embeddings.as_ref(),
        }
    }
}

/// Why a request was not served; rendered in OpenAI's error shape.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the model `{0}` does not exist")]
    UnknownModel(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("every target of model `{model}` failed; the last: {last}")]
    Exhausted {
        model: String,
        last: String,
        /// 429 when every failure was a rate limit (with the upstream's Retry-After).
        rate_limited: Option<Option<String>>,
    },
    #[error("{0}")]
    NotSupported(String),
    #[error("limit reached: {what}")]
    Limited { what: String, retry_after_secs: u64 },
    #[error("the service key is needed to read usage")]
    Forbidden,
    #[error("the gateway's records cannot be read")]
    Internal,
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, kind, code, param) = match &self {
            GatewayError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", None, None)
            }
            GatewayError::UnknownModel(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
                Some("model"),
            ),
            GatewayError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                None,
            ),
            GatewayError::Exhausted {
                rate_limited: Some(_),
                ..
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                None,
            ),
            GatewayError::Exhausted { .. } => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                Some("upstream_unavailable"),
                None,
            ),
            GatewayError::NotSupported(_) => (
                StatusCode::NOT_IMPLEMENTED,
                "invalid_request_error",
                Some("not_supported"),
                None,
            ),
            GatewayError::Limited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                None,
            ),
            GatewayError::Forbidden => (
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                Some("not_admin"),
                None,
            ),
            GatewayError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "api_error", None, None),
        };
        let mut response = (
            status,
            axum::Json(json!({
                "error": { "message": message, "type": kind, "param": param, "code": code }
            })),
        )
            .into_response();
        if let GatewayError::Exhausted {
            rate_limited: Some(Some(after)),
            ..
        } = &self
            && let Ok(v) = HeaderValue::from_str(after)
        {
            response.headers_mut().insert("retry-after", v);
        }
        if let GatewayError::Limited {
            retry_after_secs, ..
        } = &self
        {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(*retry_after_secs));
        }
        response
    }
}

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] reactor_db::DbError),
    /// A setting from the environment (`SSL_CERT_FILE`) that cannot be used.
    #[error("{message}")]
    Environment { message: String, hint: &'static str },
}

/// The settings in force, with their defaults.
struct Policy {
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    failures_before_cooldown: u32,
    cooldown: Duration,
}

impl Policy {
    fn of(c: &GatewayConfig) -> Policy {
        Policy {
            timeout: Duration::from_millis(c.timeout_ms.unwrap_or(60_000)),
            retries: c.retries.unwrap_or(1),
            backoff: Duration::from_millis(c.backoff_ms.unwrap_or(200)),
            failures_before_cooldown: c.failures_before_cooldown.unwrap_or(3),
            cooldown: Duration::from_secs(c.cooldown_secs.unwrap_or(30)),
        }
    }
}

/// One upstream attempt's failure: whether another attempt may help, and what to say.
struct Failure {
    message: String,
    rate_limit: Option<Option<String>>,
    /// Another attempt of the same target may help (not so for a request it cannot serve).
    retry: bool,
}

impl Gateway {
    /// The gateway over `db` (its usage and counters tables made), provider keys from
    /// `keys`, its recorder running.
    ///
    /// Providers' certificates are checked against the Mozilla roots and, when the
    /// `SSL_CERT_FILE` environment variable names a PEM file, its certificates too (a
    /// company's own CA in front of a self-hosted model); providers are reached through the
    /// proxies `HTTPS_PROXY`/`HTTP_PROXY` name, except the hosts of `NO_PROXY`.
    pub async fn start(
        db: reactor_db::Db,
        keys: Arc<dyn KeySource>,
    ) -> Result<Gateway, StartError> {
        db.apply_migrations("gateway", store::SQLITE, store::POSTGRES)
            .await?;
        let trust = |path: &std::ffi::OsStr, message: &dyn fmt::Display| StartError::Environment {
            message: format!("SSL_CERT_FILE={}: {message}", path.to_string_lossy()),
            hint: "name a PEM file of CA certificates (they are trusted beside the Mozilla roots), or unset SSL_CERT_FILE",
        };
        let cert_file = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty());
        let extra_roots = match &cert_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| trust(path, &e))?),
            None => None,
        };
        // A proxy setting the gateway cannot use does not stop the server (`reactor dev`
        // serves far more than the gateway): it is said here, and the requests it would carry
        // fail with it rather than going around the proxy.
        let proxies = client::Proxies::from_env();
        for problem in proxies.unusable() {
            tracing::warn!(
                "{problem}; gateway requests through it will fail (write it as http://[user:password@]host:port)"
            );
        }
        let user_agent = concat!("reactor-gateway/", env!("CARGO_PKG_VERSION"));
        let http = client::Client::new(user_agent, extra_roots.as_deref(), proxies)
            .map_err(|message| trust(cert_file.as_deref().unwrap_or_default(), &message))?;
        let routes: Arc<RwLock<Arc<Routes>>> = Arc::default();
        let counters = store::Counters::new(&db);
        let recorder = {
            let routes = routes.clone();
            meter::spawn_recorder(counters.clone(), move || {
                routes
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .config
                    .clone()
            })
        };
        Ok(Gateway {
            inner: Arc::new(Inner {
                db,
                counters,
                routes,
                http,
                keys,
                recorder,
                health: Mutex::default(),
            }),
        })
    }

    /// Usage since `since` (`YYYY-MM-DD`), grouped by any of `caller`, `model`, `day`.
    pub async fn usage(
        &self,
        by: &[&str],
        since: &str,
    ) -> Result<Vec<store::UsageGroup>, GatewayError> {
        store::usage(&self.inner.db, by, since).await.map_err(|e| {
            tracing::error!(error = %e, "gateway usage");
            GatewayError::Internal
        })
    }

    /// Puts a manifest's `[gateway]` in force (a deploy or a reload of `reactor.toml`).
    pub fn load(&self, config: &GatewayConfig) {
        let routes = Routes {
            providers: config
                .providers
                .iter()
                .map(|p| (p.name.clone(), Upstream::new(p)))
                .collect(),
            config: config.clone(),
        };
        *self.inner.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
    }

    fn routes(&self) -> Arc<Routes> {
        self.inner
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn allows_anonymous(&self) -> bool {
        self.routes().config.allow_anonymous
    }

    /// `GET /models`: the project's models, in OpenAI's list shape.
    pub fn models(&self) -> Value {
        let routes = self.routes();
        let data: Vec<Value> = routes
            .config
            .models
            .iter()
            .map(
                |m| json!({ "id": m.name, "object": "model", "created": 0, "owned_by": "reactor" }),
            )
            .collect();
        json!({ "object": "list", "data": data })
    }

    /// Sends `body` (the caller's JSON) to the targets of the model it names, in turn, and
    /// answers with the first that serves.
    pub async fn forward(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        caller: &Caller,
        no_cache: bool,
    ) -> Result<Response, GatewayError> {
        let mut request: Value = serde_json::from_slice(body)
            .map_err(|e| GatewayError::BadRequest(format!("the body is not JSON: {e}")))?;
        let Some(object) = request.as_object_mut() else {
            return Err(GatewayError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        };
        let Some(model) = object
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Err(GatewayError::BadRequest(
                "`model` is required: name a model of this project (GET /gateway/v1/models)".into(),
            ));
        };
        let routes = self.routes();
        let Some(declared) = routes.config.models.iter().find(|m| m.name == model) else {
            return Err(GatewayError::UnknownModel(model));
        };
        let policy = Policy::of(&routes.config);

        // An identical request answered within the model's cache TTL is answered again,
        // unless the caller said `Cache-Control: no-cache` (then the fresh answer replaces it).
        let streamed = object.get("stream") == Some(&Value::Bool(true));
        let cache_key = declared
            .cache_ttl_secs
            .filter(|_| !streamed)
            .map(|ttl| (cache_key(endpoint, object), ttl));
        if let Some((key, _)) = &cache_key
            && !no_cache
        {
            match store::cached(&self.inner.db, key, meter::now_ms()).await {
                Ok(Some(body)) => {
                    let _ = self.inner.recorder.send(meter::Served {
                        caller: caller.clone(),
                        model: model.clone(),
                        target: "cache".into(),
                        upstream_model: String::new(),
                        status: 200,
                        reservation: meter::Reservation::none(),
                        prompt_tokens: 0,
                        completion_tokens: 0,
                        cache: None,
                        body: None,
                    });
                    let mut response =
                        ([("content-type", "application/json")], body).into_response();
                    let h = response.headers_mut();
                    h.insert(CACHE_HEADER, HeaderValue::from_static("hit"));
                    h.insert(TARGET_HEADER, HeaderValue::from_static("cache"));
                    return Ok(response);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "gateway: cache read"),
            }
        }

        // The caller's budget first: one request and an estimate of its tokens and cost
        // (at the dearest target's price), reserved atomically in every counter that applies.
        let tokens = meter::estimate_tokens(object, body.len());
        let cost = declared
            .targets
            .iter()
            .map(|t| meter::cost(&routes.config, &t.model, tokens, tokens))
            .max()
            .unwrap_or(0);
        let reservation =
            meter::reserve(&self.inner.counters, &routes.config, caller, tokens, cost)
                .await
                .map_err(|e| GatewayError::Limited {
                    what: e.what,
                    retry_after_secs: e.retry_after_secs,
                })?;
        // Streamed answers carry their usage in a last event only when asked: ask.
        if object.get("stream") == Some(&Value::Bool(true)) {
            let options = object.entry("stream_options").or_insert_with(|| json!({}));
            if let Some(o) = options.as_object_mut() {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
        let served = |target: &str, upstream_model: &str, status: u16| meter::Served {
            caller: caller.clone(),
            model: model.clone(),
            target: target.to_string(),
            upstream_model: upstream_model.to_string(),
            status,
            reservation: reservation.clone(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cache: cache_key
                .as_ref()
                .map(|(key, ttl)| (key.clone(), meter::now_ms() + *ttl as i64 * 1000)),
            body: None,
        };

        let mut last = Failure {
            message: "no target was tried".into(),
            rate_limit: None,
            retry: false,
        };
        let mut all_rate_limited = true;
        for target in self.order(&declared.targets) {
            let Some(upstream) = routes.providers.get(&target.provider) else {
                continue;
            };
            let label = format!("{}/{}", upstream.config.name, target.model);
            for attempt in 0..=policy.retries {
                if attempt > 0 {
                    tokio::time::sleep(policy.backoff * 2u32.saturating_pow(attempt - 1)).await;
                }
                match self
                    .attempt(endpoint, upstream, &target.model, object, &policy)
                    .await
                {
                    Ok(response) => {
                        self.record(&label, true, &policy);
                        let status = response.status().as_u16();
                        let mut response =
                            self.metered(response, served(&label, &target.model, status));
                        if let Ok(v) = HeaderValue::from_str(&label) {
                            response.headers_mut().insert(TARGET_HEADER, v);
                        }
                        if cache_key.is_some() {
                            response
                                .headers_mut()
                                .insert(CACHE_HEADER, HeaderValue::from_static("miss"));
                        }
                        return Ok(response);
                    }
                    Err(failure) => {
                        tracing::warn!(target = %label, attempt, error = %failure.message, "gateway upstream failed");
                        self.record(&label, false, &policy);
                        if failure.rate_limit.is_none() {
                            all_rate_limited = false;
                        }
                        let retry = failure.retry;
                        last = failure;
                        if !retry {
                            break;
                        }
                    }
                }
            }
        }
        // Nothing served: the reservation is given back (and the failure recorded).
        let _ = self.inner.recorder.send(served("-", "", 502));
        Err(GatewayError::Exhausted {
            model,
            rate_limited: if all_rate_limited {
                last.rate_limit.clone()
            } else {
                None
            },
            last: last.message,
        })
    }

    /// `response` with its body read for usage as it streams out; the recorder hears of it
    /// when the body ends (or the caller goes away).
    fn metered(&self, response: Response, served: meter::Served) -> Response {
        let json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"));
        let (parts, inner) = response.into_parts();
        let meter = meter::Meter::new(served, self.inner.recorder.clone(), json);
        Response::from_parts(parts, Body::new(MeteredBody { inner, meter }))
    }

    /// The targets to try: weighted ones in a weighted random order, the others as declared;
    /// cooled-down targets last (tried only when nothing else is left).
    fn order<'t>(
        &self,
        targets: &'t [reactor_manifest::TargetConfig],
    ) -> Vec<&'t reactor_manifest::TargetConfig> {
        use rand::Rng;
        let mut pool: Vec<&reactor_manifest::TargetConfig> = targets.iter().collect();
        let mut ordered = Vec::with_capacity(pool.len());
        if targets.iter().any(|t| t.weight.is_some()) {
            let mut rng = rand::rng();
            while !pool.is_empty() {
                let total: u32 = pool.iter().map(|t| t.weight.unwrap_or(1)).sum();
                let mut pick = rng.random_range(0..total.max(1));
                let index = pool
                    .iter()
                    .position(|t| {
                        let w = t.weight.unwrap_or(1);
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                ordered.push(pool.remove(index));
            }
        } else {
            ordered = pool;
        }
        let now = Instant::now();
        let health = self.inner.health.lock().unwrap_or_else(|p| p.into_inner());
        let cooled = |t: &&reactor_manifest::TargetConfig| {
            health
                .get(&format!("{}/{}", t.provider, t.model))
                .and_then(|h| h.cooled_until)
                .is_some_and(|until| until > now)
        };
        let (cold, warm): (Vec<_>, Vec<_>) = ordered.into_iter().partition(cooled);
        warm.into_iter().chain(cold).collect()
    }

    fn record(&self, label: &str, ok: bool, policy: &Policy) {
        let mut health = self.inner.health.lock().unwrap_or_else(|p| p.into_inner());
        let h = health.entry(label.to_string()).or_default();
        if ok {
            *h = Health::default();
            return;
        }
        h.failures += 1;
        if h.failures >= policy.failures_before_cooldown {
            h.cooled_until = Some(Instant::now() + policy.cooldown);
            h.failures = 0;
            tracing::warn!(target = %label, seconds = policy.cooldown.as_secs(), "gateway target cooled down");
        }
    }

    /// One request to one target. A 2xx, or a 4xx other than 429 (the caller's mistake, which
    /// another target would repeat), is the answer; the rest is a failure worth another try.
    async fn attempt(
        &self,
        endpoint: Endpoint,
        upstream: &Upstream,
        model: &str,
        request: &serde_json::Map<String, Value>,
        policy: &Policy,
    ) -> Result<Response, Failure> {
        let provider = &upstream.config;
        let fail = |message: String| Failure {
            message,
            rate_limit: None,
            retry: true,
        };
        let Some(url) = upstream.url(endpoint) else {
            return Err(Failure {
                retry: false,
                ..fail(format!(
                    "provider `{}` has no valid base_url",
                    provider.name
                ))
            });
        };
        let anthropic = provider.kind == ProviderKind::Anthropic;
        let key = match &provider.api_key_secret {
            Some(secret) => match self.inner.keys.key(secret).await {
                Some(key) => Some(key),
                None => {
                    return Err(Failure {
                        retry: false,
                        ..fail(format!(
                            "provider `{}`: the secret `{secret}` is not set",
                            provider.name
                        ))
                    });
                }
            },
            None => None,
        };
        let bearer = key.as_ref().map(|key| format!("Bearer {key}"));
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(2);
        let body = if anthropic {
            if endpoint == Endpoint::Embeddings {
                return Err(Failure {
                    retry: false,
                    ..fail(format!(
                        "provider `{}` (anthropic) has no embeddings",
                        provider.name
                    ))
                });
            }
            let body = match anthropic::request(request, model) {
                Ok(body) => body,
                // The caller's request: another target would refuse it too.
                Err(message) => return Ok(GatewayError::BadRequest(message).into_response()),
            };
            headers.push(("anthropic-version", anthropic::VERSION));
            if let Some(key) = &key {
                headers.push(("x-api-key", key));
            }
            serde_json::to_vec(&body)
        } else {
            if let Some(bearer) = &bearer {
                headers.push(("authorization", bearer));
            }
            let mut body = request.clone();
            body.insert("model".into(), Value::String(model.to_string()));
            serde_json::to_vec(&body)
        };
        let body = body.map_err(|e| fail(e.to_string()))?;
        let sent = self.inner.http.post(url, &headers, &body);
        let response = match tokio::time::timeout(policy.timeout, sent).await {
            Err(_) => return Err(fail(format!("`{}` did not answer in time", provider.name))),
            // A key that cannot stand in a header (a line break in the secret) is the
            // operator's to fix; the client never sends it, and it is never shown.
            Ok(Err(client::ClientError::LineBreak(_))) => {
                return Err(Failure {
                    retry: false,
                    ..fail(format!(
                        "provider `{}`: its key's secret holds a line break",
                        provider.name
                    ))
                });
            }
            // The client's errors name neither the URL nor the key. A proxy setting that
            // cannot be used fails every attempt alike: not worth another.
            Ok(Err(e)) => {
                return Err(Failure {
                    retry: !matches!(e, client::ClientError::ProxySetting(_)),
                    ..fail(format!("`{}`: {e}", provider.name))
                });
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status.as_u16();
        if status == 429 {
            let after = response
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Err(Failure {
                message: format!("`{}` answered 429", provider.name),
                rate_limit: Some(after),
                retry: true,
            });
        }
        if status >= 500 {
            return Err(fail(format!("`{}` answered {status}", provider.name)));
        }
        if anthropic {
            return Ok(anthropic_answer(response, request).await);
        }
        let mut out = Response::builder().status(status);
        for name in [
            "content-type",
            "cache-control",
            "x-request-id",
            "openai-processing-ms",
        ] {
            if let Some(v) = response.headers.get(name) {
                out = out.header(name, v.clone());
            }
        }
        // The upstream's body as it is (its length known when the upstream said it, so a
        // whole answer goes out with a Content-Length rather than chunked).
        out.body(Body::new(response.body))
            .map_err(|e| fail(e.to_string()))
    }
}

/// An answer's body passing through, each data frame shown to the meter on its way.
struct MeteredBody {
    inner: Body,
    meter: meter::Meter,
}

impl http_body::Body for MeteredBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.meter.observe(data);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An Anthropic answer in OpenAI's shape: a streamed one event by event, a whole one
/// translated, an error's body as OpenAI's.
async fn anthropic_answer(
    response: client::Answer,
    request: &serde_json::Map<String, Value>,
) -> Response {
    let status = response.status;
    let streamed = request.get("stream") == Some(&Value::Bool(true));
    if status.is_success() && streamed {
        let include_usage = request
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            == Some(&Value::Bool(true));
        return Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(Body::from_stream(anthropic::stream(
                response.body.into_stream(),
                include_usage,
            )))
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response());
    }
    let code = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = match response.body.bytes().await {
        Ok(b) => b,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    if !status.is_success() {
        return (code, axum::Json(anthropic::error(&bytes))).into_response();
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(message) => axum::Json(anthropic::response(&message)).into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
