//! The OAuth 2.0 wire: the authorization URL (with PKCE), and token requests for a code, a
//! refresh token or the client's own credentials. Answers are read as JSON, or as a form
//! (what GitHub sends when not asked for JSON).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Integration;
use crate::catalog::TokenAuth;

/// 32 random bytes, base64url: session tokens, states, PKCE verifiers.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 in hex: how tokens handed out are stored.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The S256 code challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The provider's authorization URL for this dance.
pub fn authorization_url(
    integration: &Integration,
    redirect_uri: &str,
    state: &str,
    verifier: Option<&str>,
) -> Option<String> {
    let base = integration.provider.authorization_url.as_deref()?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", integration.client_id.as_deref().unwrap_or(""))
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", state);
    if !integration.scopes.is_empty() {
        query.append_pair(
            "scope",
            &integration
                .scopes
                .join(&integration.provider.scope_separator),
        );
    }
    if let Some(verifier) = verifier {
        query
            .append_pair("code_challenge", &challenge(verifier))
            .append_pair("code_challenge_method", "S256");
    }
    for (k, v) in &integration.provider.authorization_params {
        query.append_pair(k, v);
    }
    let joiner = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{joiner}{}", query.finish()))
}

/// What a connection holds, sealed as JSON. Its `Debug` shows which fields are set, never
/// their values.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "…" } else { "-" };
        f.debug_struct("Credentials")
            .field("access_token", &set(&self.access_token))
            .field("refresh_token", &set(&self.refresh_token))
            .field("api_key", &set(&self.api_key))
            .field("username", &set(&self.username))
            .field("password", &set(&self.password))
            .finish()
    }
}

impl Credentials {
    /// `Basic` credentials' header value (base64 of `username:password`).
    pub fn basic(&self) -> Option<String> {
        Some(STANDARD.encode(format!(
            "{}:{}",
            self.username.as_deref()?,
            self.password.as_deref()?
        )))
    }
}

/// A token endpoint's answer.
#[derive(Clone)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<i64>,
    pub scope: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why a token request failed: for good (the grant is gone: `invalid_grant`, a revoked or
/// unknown client), or for now (the provider is down or slow).
#[derive(Debug, Clone)]
pub enum TokenError {
    Refused(String),
    Unavailable(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Refused(m) | TokenError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// What a token request trades in. Its `Debug` names the kind only: codes and tokens never
/// reach a log.
pub enum Grant<'a> {
    Code {
        code: &'a str,
        redirect_uri: &'a str,
        verifier: Option<&'a str>,
    },
    Refresh(&'a str),
    ClientCredentials,
}

impl std::fmt::Debug for Grant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Grant::Code { .. } => "Grant::Code",
            Grant::Refresh(_) => "Grant::Refresh",
            Grant::ClientCredentials => "Grant::ClientCredentials",
        })
    }
}

/// One token request to the integration's token (or refresh) URL.
pub async fn token(
    http: &reqwest::Client,
    integration: &Integration,
    client_secret: Option<&str>,
    grant: Grant<'_>,
    timeout: Duration,
) -> Result<Tokens, TokenError> {
    let provider = &integration.provider;
    let url = match &grant {
        Grant::Refresh(_) => provider
            .refresh_url
            .as_ref()
            .or(provider.token_url.as_ref()),
        _ => provider.token_url.as_ref(),
    }
    .ok_or_else(|| TokenError::Refused("the integration has no token_url".into()))?;
    let mut form: Vec<(&str, &str)> = Vec::new();
    let scopes = integration.scopes.join(&provider.scope_separator);
    match &grant {
        Grant::Code {
            code,
            redirect_uri,
            verifier,
        } => {
            form.push(("grant_type", "authorization_code"));
            form.push(("code", code));
            form.push(("redirect_uri", redirect_uri));
            if let Some(v) = verifier {
                form.push(("code_verifier", v));
            }
        }
        Grant::Refresh(token) => {
            form.push(("grant_type", "refresh_token"));
            form.push(("refresh_token", token));
        }
        Grant::ClientCredentials => {
            form.push(("grant_type", "client_credentials"));
            if !scopes.is_empty() {
                form.push(("scope", &scopes));
            }
        }
    }
    let client_id = integration.client_id.as_deref().unwrap_or("");
    let mut req = http
        .post(url)
        .header("accept", "application/json")
        .timeout(timeout);
    match provider.token_request_auth {
        TokenAuth::Body => {
            form.push(("client_id", client_id));
            if let Some(secret) = client_secret {
                form.push(("client_secret", secret));
            }
        }
        TokenAuth::Basic => {
            req = req.basic_auth(client_id, client_secret);
        }
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = req
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            TokenError::Unavailable(if e.is_timeout() {
                "the provider's token endpoint did not answer in time".into()
            } else {
                "the provider's token endpoint cannot be reached".into()
            })
        })?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|_| TokenError::Unavailable("the token answer broke off".into()))?;
    let fields = parse_answer(&text);
    // Slack answers errors with 200 and `"ok": false`.
    let error = fields
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| (fields.get("ok") == Some(&Value::Bool(false))).then(|| "not ok".into()));
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(TokenError::Unavailable(format!(
            "the provider's token endpoint answered {}",
            status.as_u16()
        )));
    }
    if !status.is_success() || error.is_some() {
        let described = fields
            .get("error_description")
            .and_then(Value::as_str)
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return Err(TokenError::Refused(format!(
            "the provider refused the token request ({}{described})",
            error.unwrap_or_else(|| format!("HTTP {}", status.as_u16()))
        )));
    }
    let Some(access_token) = fields
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return Err(TokenError::Refused(
            "the provider's token answer has no access_token".into(),
        ));
    };
    Ok(Tokens {
        access_token: access_token.to_string(),
        refresh_token: fields
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_string),
        expires_in: fields.get("expires_in").and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        }),
        scope: fields
            .get("scope")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// A token answer's fields, from JSON or from a form.
fn parse_answer(text: &str) -> serde_json::Map<String, Value> {
    if let Ok(Value::Object(map)) = serde_json::from_str(text) {
        return map;
    }
    form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_rfc_7636s() {
        // The example of RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn answers_are_read_as_json_or_as_a_form() {
        let json = parse_answer(r#"{"access_token":"a","expires_in":3600}"#);
        assert_eq!(json["access_token"], "a");
        let form = parse_answer("access_token=b&scope=repo%2Cuser&token_type=bearer");
        assert_eq!(form["access_token"], "b");
        assert_eq!(form["scope"], "repo,user");
    }
}
