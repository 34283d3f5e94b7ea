//! The two files a Reactor user writes or owns: the project's `reactor.toml` ([`Manifest`])
//! and the CLI's global `~/.reactor/config.toml` ([`GlobalConfig`]), with the rules that pick a
//! context and a token for a command ([`resolve`]).

mod config;
mod credentials;
mod diagnostic;
mod discover;
mod manifest;
pub mod resolve;

use std::fmt;
use std::path::PathBuf;

pub use config::{AuthConfig, ContextConfig, GlobalConfig, reactor_home, write_private};
pub use credentials::{CredentialStore, StoredIn};
pub use diagnostic::{Diagnostic, did_you_mean};
pub use discover::discover;
pub use manifest::{
    ConnectConfig, DataConfig, FunctionConfig, GatewayConfig, HostPattern, IntegrationConfig,
    Isolation, JobConfig, LimitConfig, LimitScope, MANIFEST_FILE, Manifest, ModelConfig,
    PriceConfig, ProviderConfig, ProviderKind, Runtime, SiteConfig, SiteHeaders, SiteRedirect,
    TargetConfig, Trigger,
};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no reactor.toml in {} or any parent directory{}", start.display(), stop.as_ref().map(|s| format!(" up to the git root {}", s.display())).unwrap_or_default())]
    NotFound {
        start: PathBuf,
        stop: Option<PathBuf>,
    },
    #[error("{}", Diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ManifestError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ManifestError::NotFound { .. } => {
                Some("run `reactor init` to create a project, or pass --project DIR")
            }
            _ => None,
        }
    }
}

struct Diagnostics<'a>(&'a [Diagnostic]);

impl fmt::Display for Diagnostics<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostic),
    #[error("no context named `{name}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownContext {
        name: String,
        suggestion: Option<String>,
    },
    #[error("a context named `{0}` already exists")]
    ContextExists(String),
    #[error("`{0}` is not a valid context name: use letters, digits, `-` and `_`")]
    InvalidContextName(String),
    #[error("`{0}` is not a valid endpoint: it must start with http:// or https://")]
    InvalidEndpoint(String),
    #[error("the OS keychain failed: {0}")]
    Keychain(String),
}
