//! `fetch` from handlers, performed by the server: only to hosts the project allowed (and to
//! this server itself), within a time limit and a size cap, following redirects only to
//! allowed hosts.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue, LOCATION};

use crate::FunctionsConfig;
use crate::js::{OutboundRequest, OutboundResponse};

const MAX_REDIRECTS: usize = 10;

/// One client for every function: connections are pooled across invocations. Redirects are
/// followed by [`send`] itself, so each hop meets the allow-list; a client that cannot be
/// built that way is an error every `fetch` reports, never a client that follows redirects.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("reactor-functions/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("outbound HTTP is unavailable on this server: {e}"))
}

/// Where one function's `fetch` may go.
#[derive(Debug, Clone)]
pub struct Policy {
    entries: Vec<HostPattern>,
    self_origin: Option<(String, u16)>,
    timeout: Duration,
    max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    /// Lowercase; for `*.example.com`, `.example.com`.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostPattern {
    fn parse(entry: &str) -> Option<HostPattern> {
        let pattern = reactor_manifest::HostPattern::parse(entry)?;
        Some(HostPattern {
            host: if pattern.wildcard {
                format!(".{}", pattern.host)
            } else {
                pattern.host
            },
            wildcard: pattern.wildcard,
            port: pattern.port,
        })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host_ok = if self.wildcard {
            host.ends_with(&self.host)
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

impl Policy {
    pub fn new(function_hosts: &[String], config: &FunctionsConfig) -> Policy {
        let entries = function_hosts
            .iter()
            .chain(&config.allowed_hosts)
            .filter_map(|e| HostPattern::parse(e))
            .collect();
        let self_origin = config
            .self_origin
            .as_deref()
            .and_then(|o| url::Url::parse(o).ok())
            .and_then(|u| {
                Some((
                    u.host_str()?.to_ascii_lowercase(),
                    u.port_or_known_default()?,
                ))
            });
        Policy {
            entries,
            self_origin,
            timeout: config.fetch_timeout,
            max_bytes: config.max_fetch_bytes,
        }
    }

    /// The largest body a request or its answer may carry.
    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Whether `url` may be requested; why not, in words for the function's author.
    pub(crate) fn check(&self, url: &url::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "`{}:` URLs cannot be fetched; use http or https",
                url.scheme()
            ));
        }
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(0);
        let own = self
            .self_origin
            .as_ref()
            .is_some_and(|(h, p)| *h == host && *p == port);
        if own || self.entries.iter().any(|e| e.matches(&host, port)) {
            Ok(())
        } else {
            Err(format!(
                "{host}:{port} is not an allowed host; add \"{host}\" to the function's allowed_hosts in reactor.toml"
            ))
        }
    }
}

/// Sends `request` under `policy`: the answer, or why there is none.
pub async fn send(
    client: &reqwest::Client,
    policy: &Policy,
    request: OutboundRequest,
) -> Result<OutboundResponse, String> {
    let mut url =
        url::Url::parse(&request.url).map_err(|e| format!("invalid URL {}: {e}", request.url))?;
    let mut method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| format!("invalid method {}", request.method))?;
    let mut body = request.body;
    for _ in 0..=MAX_REDIRECTS {
        policy.check(&url)?;
        let now = Instant::now();
        if now >= request.deadline {
            return Err("the invocation's time ran out".into());
        }
        let mut builder = client
            .request(method.clone(), url.clone())
            .timeout(policy.timeout.min(request.deadline - now));
        for (name, value) in &request.headers {
            if matches!(
                name.as_str(),
                "host" | "content-length" | "connection" | "transfer-encoding"
            ) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                builder = builder.header(name, value);
            }
        }
        if !body.is_empty() {
            builder = builder.body(body.clone());
        }
        let mut response = builder.send().await.map_err(describe)?;
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok());
        if status.is_redirection()
            && request.redirect != "manual"
            && let Some(location) = location
        {
            if request.redirect == "error" {
                return Err(format!(
                    "{url} redirected and the request said redirect: \"error\""
                ));
            }
            url = url
                .join(location)
                .map_err(|e| format!("bad redirect location {location}: {e}"))?;
            if status == reqwest::StatusCode::SEE_OTHER
                || (matches!(status.as_u16(), 301 | 302) && method == reqwest::Method::POST)
            {
                method = reqwest::Method::GET;
                body.clear();
            }
            continue;
        }
        let headers = header_pairs(response.headers());
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if bytes.len() + chunk.len() > policy.max_bytes {
                return Err(format!(
                    "the response from {url} is larger than {} bytes",
                    policy.max_bytes
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        return Ok(OutboundResponse {
            status: status.as_u16(),
            status_text: status.canonical_reason().unwrap_or("").to_string(),
            headers,
            body: bytes,
            url: url.to_string(),
        });
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

/// Headers as the name/value pairs handlers see (a value that is not text is left out).
pub(crate) fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "the request timed out".into()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str]) -> Policy {
        let config = FunctionsConfig {
            self_origin: Some("http://127.0.0.1:8080".into()),
            ..FunctionsConfig::default()
        };
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        Policy::new(&hosts, &config)
    }

    fn allowed(p: &Policy, url: &str) -> bool {
        p.check(&url::Url::parse(url).expect("url")).is_ok()
    }

    #[test]
    fn the_allow_list_decides() {
        let p = policy(&["api.example.com", "*.svc.test", "pinned.test:8443"]);
        assert!(allowed(&p, "https://api.example.com/v1"));
        assert!(
            allowed(&p, "http://API.example.com:9000/"),
            "no port means any port"
        );
        assert!(!allowed(&p, "https://evil-api.example.com/"));
        assert!(!allowed(&p, "https://api.example.com.evil.test/"));
        assert!(allowed(&p, "https://a.svc.test/"));
        assert!(
            !allowed(&p, "https://svc.test/"),
            "a wildcard needs a subdomain"
        );
        assert!(allowed(&p, "https://pinned.test:8443/"));
        assert!(!allowed(&p, "https://pinned.test/"));
        assert!(
            allowed(&p, "http://127.0.0.1:8080/data/v1/x"),
            "the server itself"
        );
        assert!(
            !allowed(&p, "http://127.0.0.1:5432/"),
            "not other ports on loopback"
        );
        assert!(!allowed(&p, "file:///etc/passwd"));
        assert!(!allowed(&p, "http://169.254.169.254/latest/meta-data"));
    }
}
