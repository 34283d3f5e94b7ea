//! The provider catalog (`providers.toml`, compiled in): how Reactor talks to each third
//! party. A definition is checked when loaded, and a bad one is an error naming the provider
//! and the field, so a mistake in the catalog (or in a test's) never reaches a request.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The catalog shipped with this build.
pub const BUILT_IN: &str = include_str!("../providers.toml");

/// How a provider's credentials are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// The user approves in the browser; access tokens are refreshed with a refresh token.
    OAuth2,
    /// The server obtains tokens with the client's own credentials; no user step.
    OAuth2ClientCredentials,
    ApiKey,
    Basic,
}

impl AuthMode {
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::OAuth2 => "oauth2",
            AuthMode::OAuth2ClientCredentials => "oauth2_client_credentials",
            AuthMode::ApiKey => "api_key",
            AuthMode::Basic => "basic",
        }
    }

    pub fn is_oauth(self) -> bool {
        matches!(self, AuthMode::OAuth2 | AuthMode::OAuth2ClientCredentials)
    }
}

/// Where a token request carries the client's id and secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    /// `client_id` and `client_secret` form fields.
    Body,
    /// HTTP basic authentication.
    Basic,
}

/// How a provider signs the webhooks it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookScheme {
    /// `sha256=` + hex HMAC-SHA256 of the body, in `header`.
    Github,
    /// `v0=` + hex HMAC-SHA256 of `v0:<X-Slack-Request-Timestamp>:<body>`.
    Slack,
    /// `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">`.
    Stripe,
    /// Hex HMAC-SHA256 of the body, in `header`.
    HmacSha256,
}

/// A timestamped signature older than this is refused (a replay).
pub const WEBHOOK_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub scheme: WebhookScheme,
    /// Lowercase header name.
    pub header: String,
}

/// A string with `${…}` references, checked when the catalog loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

/// A value a template may take: a credential, or a key of the connection's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var<'t> {
    AccessToken,
    ApiKey,
    Username,
    Password,
    /// base64 of `username:password`.
    Basic,
    Config(&'t str),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let t = Template(text.to_string());
        t.vars()?;
        Ok(t)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The references, in order.
    pub fn vars(&self) -> Result<Vec<Var<'_>>, String> {
        let mut out = Vec::new();
        let mut rest = self.0.as_str();
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("`{}` has an unclosed `${{`", self.0))?;
            out.push(var(&after[..end]).ok_or_else(|| {
                format!(
                    "`${{{}}}` is not a known value; use ${{access_token}}, ${{api_key}}, ${{username}}, ${{password}}, ${{basic}} or ${{config.<key>}}",
                    &after[..end]
                )
            })?);
            rest = &after[end + 1..];
        }
        Ok(out)
    }

    /// The text with every reference replaced by `value(var)`; the first reference without a
    /// value is the error.
    pub fn render(&self, value: impl Fn(Var<'_>) -> Option<String>) -> Result<String, String> {
        let mut out = String::with_capacity(self.0.len());
        let mut rest = self.0.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!("`{}` has an unclosed `${{`", self.0));
            };
            let name = &after[..end];
            let v = var(name).ok_or_else(|| format!("`${{{name}}}` is not a known value"))?;
            out.push_str(&value(v).ok_or_else(|| format!("the connection has no `{name}`"))?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn var(name: &str) -> Option<Var<'_>> {
    Some(match name {
        "access_token" => Var::AccessToken,
        "api_key" => Var::ApiKey,
        "username" => Var::Username,
        "password" => Var::Password,
        "basic" => Var::Basic,
        _ => {
            let key = name.strip_prefix("config.")?;
            let ok = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return None;
            }
            Var::Config(key)
        }
    })
}

/// Where proxied calls go and what they carry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proxy {
    pub base_url: Option<Template>,
    /// Lowercase header name → value.
    pub headers: BTreeMap<String, Template>,
    pub retry_after_headers: Vec<String>,
}

/// One provider of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub display_name: String,
    pub auth_mode: AuthMode,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub refresh_url: Option<String>,
    pub default_scopes: Vec<String>,
    pub scope_separator: String,
    pub pkce: bool,
    pub token_request_auth: TokenAuth,
    pub authorization_params: BTreeMap<String, String>,
    pub proxy: Proxy,
    pub webhook: Option<Webhook>,
}

/// Every provider, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    providers: BTreeMap<String, Provider>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider `{provider}`: {message}")]
pub struct CatalogError {
    pub provider: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    display_name: Option<String>,
    auth_mode: String,
    authorization_url: Option<String>,
    token_url: Option<String>,
    refresh_url: Option<String>,
    #[serde(default)]
    default_scopes: Vec<String>,
    scope_separator: Option<String>,
    pkce: Option<bool>,
    token_request_auth: Option<String>,
    #[serde(default)]
    authorization_params: BTreeMap<String, String>,
    #[serde(default)]
    proxy: RawProxy,
    webhook: Option<RawWebhook>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    base_url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    retry_after_headers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    scheme: String,
    header: Option<String>,
}

/// An absolute http(s) URL without a fragment.
pub fn is_http_url(text: &str) -> bool {
    (text.starts_with("https://") || text.starts_with("http://"))
        && text.len() > "https://".len()
        && !text.contains(['#', ' ', '\\'])
}

impl Catalog {
    /// The catalog shipped with this build.
    pub fn built_in() -> Result<Catalog, CatalogError> {
        Catalog::parse(BUILT_IN)
    }

    /// A catalog from its TOML text: one table per provider.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| CatalogError {
            provider: "?".into(),
            message: format!("the catalog is not valid TOML: {}", e.message()),
        })?;
        let mut providers = BTreeMap::new();
        for (name, value) in table {
            let fail = |message: String| CatalogError {
                provider: name.clone(),
                message,
            };
            let raw = RawProvider::deserialize(value).map_err(|e| fail(e.message().into()))?;
            let provider = Provider::check(&name, raw).map_err(fail)?;
            providers.insert(name, provider);
        }
        Ok(Catalog { providers })
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }
}

impl Provider {
    fn check(name: &str, raw: RawProvider) -> Result<Provider, String> {
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_name {
            return Err("a provider name is lowercase letters, digits and `-`".into());
        }
        let auth_mode = match raw.auth_mode.as_str() {
            "oauth2" => AuthMode::OAuth2,
            "oauth2_client_credentials" => AuthMode::OAuth2ClientCredentials,
            "api_key" => AuthMode::ApiKey,
            "basic" => AuthMode::Basic,
            other => {
                return Err(format!(
                    "`auth_mode` = {other:?} is not one of oauth2, oauth2_client_credentials, api_key, basic"
                ));
            }
        };
        for (field, url) in [
            ("authorization_url", &raw.authorization_url),
            ("token_url", &raw.token_url),
            ("refresh_url", &raw.refresh_url),
        ] {
            if let Some(url) = url {
                if !is_http_url(url) {
                    return Err(format!("`{field}` = {url:?} is not an http(s) URL"));
                }
                if !auth_mode.is_oauth() {
                    return Err(format!(
                        "`{field}` is set, but auth_mode {} has no OAuth flow",
                        auth_mode.name()
                    ));
                }
            }
        }
        let token_request_auth = match raw.token_request_auth.as_deref() {
            None | Some("body") => TokenAuth::Body,
            Some("basic") => TokenAuth::Basic,
            Some(other) => {
                return Err(format!(
                    "`token_request_auth` = {other:?} is not one of body, basic"
                ));
            }
        };
        let base_url = match raw.proxy.base_url {
            Some(url) => {
                let t = Template::parse(&url).map_err(|e| format!("`proxy.base_url`: {e}"))?;
                // Only config values may vary the URL; a credential has no place in it.
                if t.vars()?.iter().any(|v| !matches!(v, Var::Config(_))) {
                    return Err("`proxy.base_url` may only use ${config.<key>}".into());
                }
                if !is_http_url(&url) {
                    return Err(format!("`proxy.base_url` = {url:?} is not an http(s) URL"));
                }
                Some(Template(url.trim_end_matches('/').to_string()))
            }
            None => None,
        };
        let mut headers = BTreeMap::new();
        for (header, value) in raw.proxy.headers {
            let valid = !header.is_empty()
                && header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(format!("`proxy.headers`: `{header}` is not a header name"));
            }
            let t =
                Template::parse(&value).map_err(|e| format!("`proxy.headers.{header}`: {e}"))?;
            headers.insert(header.to_ascii_lowercase(), t);
        }
        let webhook = match raw.webhook {
            None => None,
            Some(w) => {
                let scheme = match w.scheme.as_str() {
                    "github" => WebhookScheme::Github,
                    "slack" => WebhookScheme::Slack,
                    "stripe" => WebhookScheme::Stripe,
                    "hmac-sha256" => WebhookScheme::HmacSha256,
                    other => {
                        return Err(format!(
                            "`webhook.scheme` = {other:?} is not one of github, slack, stripe, hmac-sha256"
                        ));
                    }
                };
                let header = match (scheme, w.header) {
                    (_, Some(h)) => h.to_ascii_lowercase(),
                    (WebhookScheme::Slack, None) => "x-slack-signature".into(),
                    (WebhookScheme::Stripe, None) => "stripe-signature".into(),
                    (WebhookScheme::Github, None) => "x-hub-signature-256".into(),
                    (WebhookScheme::HmacSha256, None) => {
                        return Err("`webhook.header` is required by scheme hmac-sha256".into());
                    }
                };
                Some(Webhook { scheme, header })
            }
        };
        Ok(Provider {
            name: name.to_string(),
            display_name: raw.display_name.unwrap_or_else(|| name.to_string()),
            auth_mode,
            authorization_url: raw.authorization_url,
            token_url: raw.token_url,
            refresh_url: raw.refresh_url,
            default_scopes: raw.default_scopes,
            scope_separator: raw.scope_separator.unwrap_or_else(|| " ".into()),
            pkce: raw.pkce.unwrap_or(true),
            token_request_auth,
            authorization_params: raw.authorization_params,
            proxy: Proxy {
                base_url,
                headers,
                retry_after_headers: raw
                    .proxy
                    .retry_after_headers
                    .into_iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
            },
            webhook,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_loads() {
        let catalog = Catalog::built_in().expect("the shipped catalog is valid");
        for name in [
            "github", "google", "slack", "notion", "linear", "stripe", "oauth2",
        ] {
            assert!(catalog.get(name).is_some(), "{name} is in the catalog");
        }
        assert_eq!(
            catalog.get("stripe").map(|p| p.auth_mode),
            Some(AuthMode::ApiKey)
        );
        assert_eq!(
            catalog.get("slack").map(|p| p.scope_separator.as_str()),
            Some(",")
        );
    }

    #[test]
    fn a_bad_definition_names_its_provider_and_field() {
        let good = "[x]\nauth_mode = \"oauth2\"\ntoken_url = \"https://x.test/token\"\nproxy.base_url = \"https://${config.shop}.x.test\"\nproxy.headers = { authorization = \"Bearer ${access_token}\" }\n";
        Catalog::parse(good).expect("valid");
        for (from, to, expected) in [
            (
                "auth_mode = \"oauth2\"",
                "auth_mode = \"oauth3\"",
                "`auth_mode` = \"oauth3\"",
            ),
            (
                "token_url = \"https://",
                "token_url = \"ftp://",
                "`token_url` = \"ftp://",
            ),
            ("token_url", "tokn_url", "unknown field `tokn_url`"),
            (
                "${access_token}",
                "${acces_token}",
                "`proxy.headers.authorization`: `${acces_token}` is not a known value",
            ),
            ("${access_token}", "${access_token", "unclosed"),
            (
                "${config.shop}",
                "${access_token}",
                "`proxy.base_url` may only use ${config.<key>}",
            ),
        ] {
            let bad = good.replacen(from, to, 1);
            let e = Catalog::parse(&bad).expect_err(to).to_string();
            assert!(e.starts_with("provider `x`: "), "{e}");
            assert!(e.contains(expected), "{to}: {e}");
        }
    }

    #[test]
    fn templates_render_their_values() {
        let t = Template::parse("Bearer ${access_token} for ${config.team}").expect("valid");
        let out = t
            .render(|v| match v {
                Var::AccessToken => Some("tok".into()),
                Var::Config("team") => Some("eng".into()),
                _ => None,
            })
            .expect("rendered");
        assert_eq!(out, "Bearer tok for eng");
        let missing = t.render(|_| None).expect_err("no token");
        assert!(missing.contains("access_token"), "{missing}");
    }
}
