//! What every command needs to know about where it runs: the global flags, the project
//! around the current directory, the global config, and from those the context and token.

use std::path::PathBuf;

use reactor_client::Client;
use reactor_manifest::resolve::{self, SelectedContext, TokenSource};
use reactor_manifest::{CredentialStore, GlobalConfig, Manifest, discover, reactor_home};

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

    /// A client for the selected context's server, with its token.
    pub fn client(&self) -> anyhow::Result<(SelectedContext, Client)> {
        let config = self.config()?;
        let Some(selected) = self.select_context(&config) else {
            return Err(hinted(
                "no context selected",
                "run `reactor dev` in a project (it registers `local`), or `reactor context add NAME --endpoint URL` then `reactor context use NAME`",
            ));
        };
        let context = config.context(&selected.name)?;
        let token = self.resolve_token(&config, &selected.name)?.map(|(t, _)| t);
        Ok((selected, Client::new(&context.endpoint, token)))
    }
}
