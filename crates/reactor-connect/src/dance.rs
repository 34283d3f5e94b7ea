//! Connecting through the browser: a connect session, the authorize step (state, PKCE
//! verifier and a cookie binding the dance to this browser), and the callback that spends the
//! state and stores the connection.

use std::collections::BTreeMap;

use crate::catalog::AuthMode;
use crate::oauth::{self, Credentials, Grant};
use crate::store::{self, Session};
use crate::*;

/// The cookie binding an OAuth dance to the browser that started it: set by the authorize
/// step, required by the callback. Without it, someone could start a dance for their own
/// account and have a victim's browser finish it.
#[derive(Debug, Clone)]
pub struct BrowserCookie {
    pub name: String,
    pub value: String,
    pub secure: bool,
    pub max_age_secs: u64,
}

impl BrowserCookie {
    /// One cookie per dance (named after its state), so two tabs do not overwrite each other.
    fn name_for(state: &str) -> String {
        format!("reactor_connect_{}", &oauth::hash(state)[..16])
    }

    fn find(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// The `Set-Cookie` value: only for the callback's path, never readable by scripts.
    pub fn header(&self) -> String {
        format!(
            "{}={}; Path=/connect/v1/oauth/callback; Max-Age={}; HttpOnly; SameSite=Lax{}",
            self.name,
            self.value,
            self.max_age_secs,
            if self.secure { "; Secure" } else { "" }
        )
    }
}

impl Connect {
    /// Starts connecting `integration`: a session token, and for OAuth the URL to send the
    /// browser to. `redirect_to` must be on one of the integration's allowed origins.
    pub async fn create_session(
        &self,
        caller: &Caller,
        integration: &str,
        redirect_to: Option<&str>,
        end_user: Option<&EndUser>,
    ) -> Result<SessionCreated, ConnectError> {
        let integration = self.integration(integration)?;
        let Owned {
            user_id,
            org_id,
            end_user_id,
        } = Self::owned_by(caller, end_user)?;
        if let Some(to) = redirect_to {
            check_redirect(&integration, to)?;
        }
        let token = oauth::random_token();
        let expires_ms = now_ms() + self.inner.config.session_ttl.as_millis() as i64;
        store::insert_session(
            &self.inner.db,
            &Session {
                id: oauth::hash(&token),
                integration: integration.name.clone(),
                user_id,
                org_id,
                end_user_id,
                redirect_to: redirect_to.map(str::to_string),
                verifier: None,
                expires_ms,
            },
        )
        .await?;
        let authorize_url = (integration.provider.auth_mode == AuthMode::OAuth2).then(|| {
            format!(
                "{}/connect/v1/oauth/{}/authorize?session={token}",
                self.inner.config.public_url, integration.name
            )
        });
        Ok(SessionCreated {
            token,
            authorize_url,
            expires_at: rfc3339(expires_ms),
        })
    }

    /// `GET …/oauth/<integration>/authorize`: binds a fresh state, PKCE verifier and browser
    /// nonce to the session; answers with the provider's authorization URL and the cookie
    /// that lets this browser, and no other, finish the dance.
    pub async fn authorize(
        &self,
        integration: &str,
        session_token: &str,
    ) -> Result<(String, BrowserCookie), ConnectError> {
        let integration = self.integration(integration)?;
        if integration.provider.auth_mode != AuthMode::OAuth2 {
            return Err(ConnectError::BadRequest(format!(
                "integration `{}` ({}) has no browser step",
                integration.name,
                integration.provider.auth_mode.name()
            )));
        }
        let state = oauth::random_token();
        let nonce = oauth::random_token();
        let verifier = integration.provider.pkce.then(oauth::random_token);
        let sealed = match &verifier {
            Some(v) => Some(
                self.inner
                    .config
                    .vault
                    .seal(&oauth::hash(&state), v.as_bytes())?,
            ),
            None => None,
        };
        let started = store::start_session(
            &self.inner.db,
            &oauth::hash(session_token),
            &integration.name,
            store::Started {
                state_hash: oauth::hash(&state),
                browser_hash: oauth::hash(&nonce),
                verifier: sealed,
            },
            now_ms(),
        )
        .await?;
        if !started {
            return Err(ConnectError::BadSession);
        }
        let url = oauth::authorization_url(
            &integration,
            &self.inner.config.callback_url(),
            &state,
            verifier.as_deref(),
        )
        .ok_or_else(|| {
            ConnectError::BadRequest("the integration has no authorization URL".into())
        })?;
        let cookie = BrowserCookie {
            name: BrowserCookie::name_for(&state),
            value: nonce,
            secure: self.inner.config.public_url.starts_with("https://"),
            max_age_secs: self.inner.config.session_ttl.as_secs(),
        };
        Ok((url, cookie))
    }

    /// `GET …/oauth/callback`: the provider sent the browser back. The state is used up
    /// whatever happens next; on success the connection is stored. The answer is where to
    /// send the browser (the session's `redirect_to`, told the outcome), if anywhere.
    pub async fn callback(
        &self,
        query: &BTreeMap<String, String>,
        cookies: &axum::http::HeaderMap,
    ) -> Result<(Option<String>, Option<ConnectionInfo>), ConnectError> {
        let state = query.get("state").ok_or(ConnectError::BadState)?;
        let nonce = BrowserCookie::find(cookies, &BrowserCookie::name_for(state))
            .ok_or(ConnectError::OtherBrowser)?;
        let session = store::take_session(
            &self.inner.db,
            &oauth::hash(state),
            &oauth::hash(&nonce),
            now_ms(),
        )
        .await?
        .ok_or(ConnectError::BadState)?;
        let back = |params: &[(&str, &str)]| {
            session.redirect_to.as_ref().map(|to| {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.extend_pairs(params);
                let joiner = if to.contains('?') { '&' } else { '?' };
                format!("{to}{joiner}{}", q.finish())
            })
        };
        if let Some(error) = query.get("error") {
            // The user said no (or the provider failed): nothing is stored.
            let location = back(&[("error", error), ("integration", &session.integration)]);
            return match location {
                Some(l) => Ok((Some(l), None)),
                None => Err(ConnectError::ProviderRefused(error.clone())),
            };
        }
        let code = query
            .get("code")
            .ok_or_else(|| ConnectError::BadRequest("the callback has no `code`".into()))?;
        let integration = self.integration(&session.integration)?;
        let verifier = match &session.verifier {
            Some(sealed) => Some(
                String::from_utf8(self.inner.config.vault.open(&oauth::hash(state), sealed)?)
                    .map_err(|_| ConnectError::BadState)?,
            ),
            None => None,
        };
        let secret = self.client_secret(&integration).await?;
        let tokens = oauth::token(
            &self.inner.http,
            &integration,
            secret.as_deref(),
            Grant::Code {
                code,
                redirect_uri: &self.inner.config.callback_url(),
                verifier: verifier.as_deref(),
            },
            self.inner.config.timeout,
        )
        .await;
        let tokens = match tokens {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(integration = %integration.name, error = %e, "connect: code exchange failed");
                return match back(&[
                    ("error", "token_exchange_failed"),
                    ("integration", &integration.name),
                ]) {
                    Some(l) => Ok((Some(l), None)),
                    None => Err(ConnectError::ProviderRefused(e.to_string())),
                };
            }
        };
        let info = self
            .store_new(
                &integration,
                Owned {
                    user_id: session.user_id,
                    org_id: session.org_id,
                    end_user_id: session.end_user_id,
                },
                Credentials {
                    access_token: Some(tokens.access_token),
                    refresh_token: tokens.refresh_token,
                    ..Default::default()
                },
                tokens.expires_in,
                tokens.scope,
                BTreeMap::new(),
            )
            .await?;
        let location = back(&[
            ("connection_id", &info.id),
            ("integration", &integration.name),
        ]);
        Ok((location, Some(info)))
    }
}

/// `redirect_to`'s origin must be one the integration allows.
pub(crate) fn check_redirect(integration: &Integration, to: &str) -> Result<(), ConnectError> {
    let url = reqwest::Url::parse(to)
        .map_err(|_| ConnectError::BadRequest(format!("`redirect_to` = {to:?} is not a URL")))?;
    let origin = url.origin().ascii_serialization();
    if matches!(url.scheme(), "http" | "https")
        && integration.redirect_origins.iter().any(|o| o == &origin)
    {
        Ok(())
    } else {
        Err(ConnectError::RedirectNotAllowed(origin))
    }
}
