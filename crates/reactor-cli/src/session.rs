//! What every command needs to know about where it runs: the global flags, the project
//! around the current directory, the global config, and from those the context and token.

use std::path::PathBuf;

use reactor_client::{AuthSession, Client, Credentials};
use reactor_manifest::resolve::{self, SelectedContext, TokenSource};
use reactor_manifest::{CredentialStore, GlobalConfig, Manifest, discover, reactor_home};
use serde::{Deserialize, Serialize};

use crate::output::hinted;

#[derive(Debug)]
pub struct Session {
    context_flag: Option<String>,
    token_flag: Option<String>,
    project_flag: Option<PathBuf>,
    home: PathBuf,
}

impl Session {
    pub fn new(
        context_flag: Option<String>,
        token_flag: Option<String>,
        project_flag: Option<PathBuf>,
    ) -> Self {
        Session {
            context_flag,
            token_flag,
            project_flag,
            home: reactor_home(),
        }
    }

    /// `--project`, else the current directory.
    pub fn start_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.project_flag {
            Some(dir) if !dir.is_dir() => Err(hinted(
                format!("--project {}: no such directory", dir.display()),
                "pass the directory that holds reactor.toml",
            )),
            Some(dir) => Ok(std::path::absolute(dir)?),
            None => Ok(std::env::current_dir()?),
        }
    }

    pub fn load_manifest(&self) -> anyhow::Result<Manifest> {
        let path = discover(&self.start_dir()?)?;
        Ok(Manifest::load(&path)?)
    }

    pub fn config(&self) -> anyhow::Result<GlobalConfig> {
        Ok(GlobalConfig::load(&self.home)?)
    }

    pub fn store(&self) -> CredentialStore {
        CredentialStore::new(&self.home)
    }

    /// The project's `default_context`, read leniently: a manifest with unrelated errors
    /// must not stop `reactor context list`.
    fn project_default(&self) -> Option<(String, PathBuf)> {
        let path = discover(&self.start_dir().ok()?).ok()?;
        let text = std::fs::read_to_string(&path).ok()?;
        let table: toml::Table = toml::from_str(&text).ok()?;
        let name = table.get("default_context")?.as_str()?.to_string();
        Some((name, path))
    }

    pub fn select_context(&self, config: &GlobalConfig) -> Option<SelectedContext> {
        let project = self.project_default();
        resolve::select_context(
            self.context_flag.as_deref(),
            &resolve::process_env,
            project
                .as_ref()
                .map(|(name, path)| (name.as_str(), path.clone())),
            config.default_context(),
        )
    }

    pub fn resolve_token(
        &self,
        config: &GlobalConfig,
        name: &str,
    ) -> anyhow::Result<Option<(String, TokenSource)>> {
        let auth = config.contexts().get(name).and_then(|c| c.auth.as_ref());
        Ok(resolve::resolve_token(
            self.token_flag.as_deref(),
            &resolve::process_env,
            Some((name, auth)),
            &self.store(),
        )?)
    }

    /// The credential stored for a context (keychain or file), ignoring flags and variables.
    pub fn resolve_stored(
        &self,
        config: &GlobalConfig,
        name: &str,
    ) -> anyhow::Result<Option<String>> {
        match config.contexts().get(name).and_then(|c| c.auth.as_ref()) {
            Some(auth) => Ok(self.store().load(name, auth)?),
            None => Ok(None),
        }
    }

    /// A client for the selected context's server, presenting its credential: a project key
    /// as is, or a signed-in user's access token (refreshed first when it is about to expire)
    /// beside the context's public key, in the context's org.
    pub async fn client(&self) -> anyhow::Result<(SelectedContext, Client)> {
        let mut config = self.config()?;
        let Some(selected) = self.select_context(&config) else {
            return Err(hinted(
                "no context selected",
                "run `reactor dev` in a project (it registers `local`), or `reactor context add NAME --endpoint URL` then `reactor context use NAME`",
            ));
        };
        let context = config.context(&selected.name)?.clone();
        let credentials = match self.resolve_token(&config, &selected.name)? {
            None => Credentials {
                apikey: context.key.clone(),
                ..Credentials::default()
            },
            Some((raw, source)) => match Credential::parse(raw) {
                Credential::Key(key) => Credentials::key(key),
                Credential::User(stored) => {
                    let Some(key) = context.key.clone() else {
                        return Err(hinted(
                            format!(
                                "context `{}` has no project key to sign requests with",
                                selected.name
                            ),
                            format!(
                                "add the project's rk_pub_ key: `reactor context set-key {} rk_pub_…`",
                                selected.name
                            ),
                        ));
                    };
                    let fresh = self
                        .fresh(
                            &mut config,
                            &selected.name,
                            &context.endpoint,
                            &key,
                            stored,
                            &source,
                        )
                        .await?;
                    Credentials {
                        apikey: Some(key),
                        bearer: Some(fresh.access_token),
                        org: context.org.clone(),
                    }
                }
            },
        };
        Ok((selected, Client::new(&context.endpoint, credentials)))
    }

    /// The stored session, refreshed (and stored again) when it expires within a minute.
    async fn fresh(
        &self,
        config: &mut GlobalConfig,
        name: &str,
        endpoint: &str,
        key: &str,
        stored: StoredSession,
        source: &TokenSource,
    ) -> anyhow::Result<StoredSession> {
        if stored.expires_at - 60 > now() {
            return Ok(stored);
        }
        let anon = Client::new(
            endpoint,
            Credentials {
                apikey: Some(key.to_string()),
                ..Credentials::default()
            },
        );
        let renewed = anon
            .refresh(&stored.refresh_token, None)
            .await
            .map_err(|e| {
                hinted(
                    format!("the saved sign-in for `{name}` is no longer valid: {e}"),
                    "sign in again with `reactor login`",
                )
            })?;
        let renewed = StoredSession::from_auth(renewed, stored.email);
        if matches!(source, TokenSource::Keychain | TokenSource::File) {
            self.save_session(config, name, &renewed)?;
        }
        Ok(renewed)
    }

    /// Keeps a signed-in session as the context's credential.
    pub fn save_session(
        &self,
        config: &mut GlobalConfig,
        name: &str,
        session: &StoredSession,
    ) -> anyhow::Result<()> {
        let (auth, notice) = self.store().save(name, &serde_json::to_string(session)?)?;
        if let Some(notice) = notice {
            eprintln!("{notice}");
        }
        config.set_auth(name, Some(&auth))?;
        config.save()?;
        Ok(())
    }
}

/// What `reactor login` keeps for a context: a user's session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSession {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: i64,
    pub email: String,
}

impl StoredSession {
    pub fn from_auth(auth: AuthSession, email: String) -> StoredSession {
        StoredSession {
            access_token: auth.access_token,
            refresh_token: auth.refresh_token,
            expires_at: auth.expires_at,
            email,
        }
    }
}

/// A context's credential: a project key, or a signed-in user's session (stored as JSON).
#[derive(Debug)]
pub enum Credential {
    Key(String),
    User(StoredSession),
}

impl Credential {
    pub fn parse(raw: String) -> Credential {
        match serde_json::from_str::<StoredSession>(&raw) {
            Ok(session) => Credential::User(session),
            Err(_) => Credential::Key(raw),
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
