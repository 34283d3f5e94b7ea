//! `ANY /connect/v1/proxy/<connection>/<path>`: a call to the provider's API with the
//! connection's credentials put in by the server. The caller names a path under the
//! provider's base URL and nothing else: the host, the scheme and the base path are the
//! catalog's, and a path that climbs out of the base (`..`, encoded or not) is refused.
//! Bodies stream both ways; a 429 is retried after the provider's retry-after when the
//! request body could be sent again (it was small enough to hold).

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::TryStreamExt;

use crate::catalog::Var;
use crate::oauth::Credentials;
use crate::{Caller, Connect, ConnectError, now_ms};

/// On every answer that came from the provider.
pub const PROXIED_HEADER: &str = "x-reactor-proxied";

/// A request body up to this size is held, so a 429 can be retried; a larger one streams
/// through once.
const REPLAYABLE: u64 = 1024 * 1024;

/// Request headers never passed on: hop-by-hop ones, and the caller's own credentials for
/// Reactor (which the provider must never see).
const DROPPED_REQUEST: &[&str] = &[
    "host",
    "authorization",
    "apikey",
    "cookie",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "x-reactor-org",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-real-ip",
    "x-request-id",
    "origin",
    "referer",
];

const DROPPED_RESPONSE: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
];

/// The caller's request, as the HTTP layer took it apart.
#[derive(Debug)]
pub struct Call {
    pub method: Method,
    /// The raw (still percent-encoded) path after `/proxy/<id>/`.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Body,
}

impl Connect {
    pub async fn proxy(
        &self,
        caller: &Caller,
        id: &str,
        call: Call,
    ) -> Result<Response, ConnectError> {
        let row = self.row(caller, id).await?;
        let integration = self.integration(&row.integration)?;
        let credentials = self.usable(&row, &integration).await?;
        let config: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&row.config).unwrap_or_default();
        let config_var = |v: Var<'_>| match v {
            Var::Config(k) => config.get(k).cloned(),
            _ => None,
        };
        let proxy = &integration.provider.proxy;
        let base = proxy
            .base_url
            .as_ref()
            .ok_or_else(|| ConnectError::BadRequest("the integration has no base_url".into()))?
            .render(config_var)
            .map_err(ConnectError::BadRequest)?;
        let url = target(&base, &call.path, call.query.as_deref())?;

        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &call.headers {
            let n = name.as_str();
            if !DROPPED_REQUEST.contains(&n) && !n.starts_with("x-reactor-") {
                headers.append(name.clone(), value.clone());
            }
        }
        for (name, template) in &proxy.headers {
            let value = template
                .render(|v| credential(&credentials, &config, v))
                .map_err(ConnectError::BadRequest)?;
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) else {
                return Err(ConnectError::BadRequest(format!(
                    "the provider's header `{name}` cannot be made from this connection"
                )));
            };
            headers.insert(name, value);
        }

        // Small bodies are held (a 429 may be retried); large ones stream through once.
        let length = call
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let has_body =
            length.is_some_and(|l| l > 0) || call.headers.contains_key("transfer-encoding");
        let (held, mut streamed): (Option<Bytes>, Option<Body>) = match length {
            _ if !has_body => (Some(Bytes::new()), None),
            Some(l) if l <= REPLAYABLE => (
                Some(
                    axum::body::to_bytes(call.body, REPLAYABLE as usize)
                        .await
                        .map_err(|_| {
                            ConnectError::BadRequest("the request body broke off".into())
                        })?,
                ),
                None,
            ),
            _ => (None, Some(call.body)),
        };
        let config = &self.inner.config;
        let mut attempt = 0;
        loop {
            let body = match (&held, streamed.take()) {
                (Some(bytes), _) => reqwest::Body::from(bytes.clone()),
                (None, Some(body)) => reqwest::Body::wrap_stream(body.into_data_stream()),
                (None, None) => reqwest::Body::from(Bytes::new()),
            };
            let request = self
                .inner
                .http
                .request(call.method.clone(), url.clone())
                .headers(headers.clone())
                .body(body);
            let response = match tokio::time::timeout(config.timeout, request.send()).await {
                Err(_) => {
                    return Err(ConnectError::Provider(
                        "the provider did not answer in time".into(),
                    ));
                }
                Ok(Err(e)) => {
                    return Err(ConnectError::Provider(if e.is_connect() {
                        "the provider cannot be reached".into()
                    } else {
                        "the call to the provider failed".into()
                    }));
                }
                Ok(Ok(r)) => r,
            };
            if response.status() == StatusCode::TOO_MANY_REQUESTS
                && held.is_some()
                && attempt < config.retries
                && let Some(wait) = retry_after(response.headers(), &proxy.retry_after_headers)
                && wait <= config.max_retry_wait
            {
                attempt += 1;
                tracing::info!(connection = %row.id, attempt, wait_ms = wait.as_millis() as u64, "connect proxy: 429, retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(answer(response));
        }
    }
}

/// `base` + `/` + `path` (+ `?query`), refused unless it stays on the base's origin and
/// under its path.
fn target(base: &str, path: &str, query: Option<&str>) -> Result<reqwest::Url, ConnectError> {
    let refuse =
        || ConnectError::BadRequest(format!("`{path}` is not a path under the provider's API"));
    let base_url = reqwest::Url::parse(base).map_err(|_| refuse())?;
    if path.contains('\\') || path.starts_with('/') || path.contains("//") {
        return Err(refuse());
    }
    let mut text = format!("{}/{path}", base.trim_end_matches('/'));
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        text.push('?');
        text.push_str(q);
    }
    // Parsing resolves `.` and `..` (and their encodings) the way the provider would.
    let url = reqwest::Url::parse(&text).map_err(|_| refuse())?;
    let base_path = base_url.path().trim_end_matches('/');
    let under = url.path() == base_path || url.path().starts_with(&format!("{base_path}/"));
    if url.origin() != base_url.origin() || !under || url.fragment().is_some() {
        return Err(refuse());
    }
    Ok(url)
}

fn credential(
    c: &Credentials,
    config: &std::collections::BTreeMap<String, String>,
    v: Var<'_>,
) -> Option<String> {
    match v {
        Var::AccessToken => c.access_token.clone(),
        Var::ApiKey => c.api_key.clone(),
        Var::Username => c.username.clone(),
        Var::Password => c.password.clone(),
        Var::Basic => c.basic(),
        Var::Config(k) => config.get(k).cloned(),
    }
}

/// How long a 429 asks to wait: the first of the provider's headers that says, in seconds
/// or as a Unix time; one second when none does.
fn retry_after(headers: &reqwest::header::HeaderMap, names: &[String]) -> Option<Duration> {
    for name in names {
        let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Ok(n) = v.trim().parse::<f64>() {
            if !n.is_finite() || n < 0.0 {
                return None;
            }
            // A Unix time (e.g. x-ratelimit-reset) rather than a number of seconds.
            let secs = if n > 1e9 {
                n - now_ms() as f64 / 1000.0
            } else {
                n
            };
            return Some(Duration::from_secs_f64(secs.max(0.0)));
        }
    }
    Some(Duration::from_secs(1))
}

/// The provider's answer, streamed back without its hop-by-hop headers or cookies.
fn answer(response: reqwest::Response) -> Response {
    let status = response.status();
    // Says the answer is the provider's (any status), not Reactor's own error.
    let mut out = Response::builder()
        .status(status)
        .header(PROXIED_HEADER, "1");
    for (name, value) in response.headers() {
        if !DROPPED_RESPONSE.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    let stream = response.bytes_stream().map_err(std::io::Error::other);
    out.body(Body::from_stream(stream)).unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_base() {
        let base = "https://api.example.com/v2";
        let ok = target(base, "users/me", Some("page=2")).expect("under");
        assert_eq!(ok.as_str(), "https://api.example.com/v2/users/me?page=2");
        for bad in [
            "../admin",
            "%2e%2e/admin",
            "users/../../admin",
            "/evil.com/x",
            "\\evil.com",
            "//evil.com/x",
            "x#frag",
        ] {
            assert!(target(base, bad, None).is_err(), "{bad}");
        }
        // `..` that stays under the base is harmless.
        assert_eq!(
            target(base, "users/../teams", None).expect("under").path(),
            "/v2/teams"
        );
        assert!(
            target("https://api.example.com", "@evil.com/", None)
                .map(|u| u.host_str() == Some("api.example.com"))
                .unwrap_or(true)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_unix_times() {
        let mut h = reqwest::header::HeaderMap::new();
        let names = vec!["retry-after".to_string(), "x-ratelimit-reset".to_string()];
        assert_eq!(retry_after(&h, &names), Some(Duration::from_secs(1)));
        h.insert(
            "x-ratelimit-reset",
            ((now_ms() / 1000) + 3).to_string().parse().expect("v"),
        );
        let wait = retry_after(&h, &names).expect("a wait");
        assert!(
            wait <= Duration::from_secs(3) && wait >= Duration::from_secs(1),
            "{wait:?}"
        );
        h.insert("retry-after", "2".parse().expect("v"));
        assert_eq!(retry_after(&h, &names), Some(Duration::from_secs(2)));
    }
}
