//! Which context and which token a command uses. Both orders are fixed by the spec:
//!
//! - context: `--context` → `REACTOR_CONTEXT` → the project's `default_context` → the global
//!   config's `default`;
//! - token: `--token` → `REACTOR_TOKEN` → `REACTOR_TOKEN_<CONTEXT>` → the stored credential
//!   (OS keychain, or the 0600 file where there is none).
//!
//! The environment is passed in as a lookup function so the rules are tested without
//! touching the process environment.

use std::fmt;
use std::path::PathBuf;

use crate::{AuthConfig, ConfigError, CredentialStore};

/// Reads one environment variable; empty values count as unset.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as an [`Env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    Flag,
    Env,
    Project(PathBuf),
    ConfigDefault,
}

impl fmt::Display for ContextSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextSource::Flag => f.write_str("--context flag"),
            ContextSource::Env => f.write_str("REACTOR_CONTEXT"),
            ContextSource::Project(path) => write!(f, "default_context in {}", path.display()),
            ContextSource::ConfigDefault => f.write_str("default in the global config"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedContext {
    pub name: String,
    pub source: ContextSource,
}

/// Picks the context name; `None` when nothing names one.
pub fn select_context(
    flag: Option<&str>,
    env: Env<'_>,
    project_default: Option<(&str, PathBuf)>,
    config_default: Option<&str>,
) -> Option<SelectedContext> {
    let pick = |name: &str, source| {
        Some(SelectedContext {
            name: name.to_string(),
            source,
        })
    };
    if let Some(name) = flag.filter(|f| !f.is_empty()) {
        return pick(name, ContextSource::Flag);
    }
    if let Some(name) = env("REACTOR_CONTEXT") {
        return pick(&name, ContextSource::Env);
    }
    if let Some((name, path)) = project_default {
        return pick(name, ContextSource::Project(path));
    }
    config_default.and_then(|name| pick(name, ContextSource::ConfigDefault))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Flag,
    Env,
    ContextEnv(String),
    Keychain,
    File,
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Flag => f.write_str("--token flag"),
            TokenSource::Env => f.write_str("REACTOR_TOKEN"),
            TokenSource::ContextEnv(var) => f.write_str(var),
            TokenSource::Keychain => f.write_str("OS keychain"),
            TokenSource::File => f.write_str("credentials file"),
        }
    }
}

/// `REACTOR_TOKEN_<CONTEXT>`: the context name upper-cased, `-` turned into `_`.
pub fn context_token_var(context: &str) -> String {
    format!(
        "REACTOR_TOKEN_{}",
        context.to_ascii_uppercase().replace('-', "_")
    )
}

/// Finds the token for a command, and where it came from. `context` is the selected
/// context's name and stored auth, when there is one.
pub fn resolve_token(
    flag: Option<&str>,
    env: Env<'_>,
    context: Option<(&str, Option<&AuthConfig>)>,
    store: &CredentialStore,
) -> Result<Option<(String, TokenSource)>, ConfigError> {
    if let Some(token) = flag.filter(|t| !t.is_empty()) {
        return Ok(Some((token.to_string(), TokenSource::Flag)));
    }
    if let Some(token) = env("REACTOR_TOKEN") {
        return Ok(Some((token, TokenSource::Env)));
    }
    let Some((name, auth)) = context else {
        return Ok(None);
    };
    let var = context_token_var(name);
    if let Some(token) = env(&var) {
        return Ok(Some((token, TokenSource::ContextEnv(var))));
    }
    let Some(auth) = auth else {
        return Ok(None);
    };
    let source = match auth {
        AuthConfig::Keychain { .. } => TokenSource::Keychain,
        AuthConfig::File => TokenSource::File,
    };
    Ok(store.load(name, auth)?.map(|token| (token, source)))
}
