//! `~/.reactor/config.toml`: the CLI's contexts (named server connections) and the default.
//!
//! The file is rewritten with toml_edit so a user's comments and layout survive, always
//! atomically (temporary file, fsync, rename) and with mode 0600 in a 0700 directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml_edit::{DocumentMut, Item, Table, value};

use crate::ConfigError;
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::manifest::is_context_name;

/// `REACTOR_HOME`, else `~/.reactor`.
pub fn reactor_home() -> PathBuf {
    if let Some(home) = std::env::var_os("REACTOR_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    let user_home = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    user_home.join(".reactor")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextConfig {
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The project's public (`rk_pub_`) key on that server: not a secret, and what a signed-in
    /// user's requests present as `apikey`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
}

/// Where a context's stored token lives. The token itself is never in this file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AuthConfig {
    /// The OS keychain, under `service`/`account`.
    Keychain { service: String, account: String },
    /// `credentials.toml` beside this file (mode 0600), for machines without a keychain.
    File,
}

#[derive(Debug, Default, Deserialize)]
struct Typed {
    default: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, ContextConfig>,
}

#[derive(Debug)]
pub struct GlobalConfig {
    home: PathBuf,
    doc: DocumentMut,
    typed: Typed,
}

impl GlobalConfig {
    /// Reads `<home>/config.toml`; a missing file is an empty configuration.
    pub fn load(home: &Path) -> Result<GlobalConfig, ConfigError> {
        let path = home.join("config.toml");
        let src = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let doc: DocumentMut = src.parse().map_err(|e: toml_edit::TomlError| {
            ConfigError::Invalid(Diagnostic::at(&path, &src, e.span(), e.message().trim()))
        })?;
        let typed: Typed = toml::from_str(&src).map_err(|e| {
            ConfigError::Invalid(Diagnostic::at(&path, &src, e.span(), e.message().trim()))
        })?;
        Ok(GlobalConfig {
            home: home.to_path_buf(),
            doc,
            typed,
        })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn path(&self) -> PathBuf {
        self.home.join("config.toml")
    }

    pub fn default_context(&self) -> Option<&str> {
        self.typed.default.as_deref()
    }

    pub fn contexts(&self) -> &BTreeMap<String, ContextConfig> {
        &self.typed.contexts
    }

    pub fn context(&self, name: &str) -> Result<&ContextConfig, ConfigError> {
        self.typed
            .contexts
            .get(name)
            .ok_or_else(|| self.unknown(name))
    }

    fn unknown(&self, name: &str) -> ConfigError {
        ConfigError::UnknownContext {
            name: name.to_string(),
            suggestion: did_you_mean(name, self.typed.contexts.keys().map(String::as_str))
                .map(str::to_string),
        }
    }

    /// Adds a new context; refuses to replace one.
    pub fn add_context(
        &mut self,
        name: &str,
        endpoint: &str,
        org: Option<&str>,
    ) -> Result<(), ConfigError> {
        if self.typed.contexts.contains_key(name) {
            return Err(ConfigError::ContextExists(name.to_string()));
        }
        self.put_context(name, endpoint)?;
        self.set_field(name, "org", org)
    }

    /// Creates a context or changes its endpoint, keeping everything else.
    pub fn put_context(&mut self, name: &str, endpoint: &str) -> Result<(), ConfigError> {
        if !is_context_name(name) {
            return Err(ConfigError::InvalidContextName(name.to_string()));
        }
        let endpoint = endpoint.trim_end_matches('/');
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.len() < 10
        {
            return Err(ConfigError::InvalidEndpoint(endpoint.to_string()));
        }
        self.context_table(name)["endpoint"] = value(endpoint);
        self.refresh()
    }

    /// Sets or clears a context's active organization.
    pub fn set_org(&mut self, name: &str, org: Option<&str>) -> Result<(), ConfigError> {
        self.context(name)?;
        self.set_field(name, "org", org)
    }

    /// Sets or clears the project's public key for a context.
    pub fn set_key(&mut self, name: &str, key: Option<&str>) -> Result<(), ConfigError> {
        self.context(name)?;
        self.set_field(name, "key", key)
    }

    fn set_field(&mut self, name: &str, field: &str, v: Option<&str>) -> Result<(), ConfigError> {
        let table = self.context_table(name);
        match v {
            Some(v) => table[field] = value(v),
            None => {
                table.remove(field);
            }
        }
        self.refresh()
    }

    pub fn set_auth(&mut self, name: &str, auth: Option<&AuthConfig>) -> Result<(), ConfigError> {
        self.context(name)?;
        let table = self.context_table(name);
        match auth {
            Some(AuthConfig::Keychain { service, account }) => {
                let mut t = Table::new();
                t["kind"] = value("keychain");
                t["service"] = value(service.as_str());
                t["account"] = value(account.as_str());
                table["auth"] = Item::Table(t);
            }
            Some(AuthConfig::File) => {
                let mut t = Table::new();
                t["kind"] = value("file");
                table["auth"] = Item::Table(t);
            }
            None => {
                table.remove("auth");
            }
        }
        self.refresh()
    }

    pub fn use_context(&mut self, name: &str) -> Result<(), ConfigError> {
        self.context(name)?;
        self.doc["default"] = value(name);
        self.refresh()
    }

    /// Removes a context (and the default, if it was the default); returns what it was.
    pub fn remove_context(&mut self, name: &str) -> Result<ContextConfig, ConfigError> {
        let removed = self.context(name)?.clone();
        if let Some(contexts) = self
            .doc
            .get_mut("contexts")
            .and_then(Item::as_table_like_mut)
        {
            contexts.remove(name);
        }
        if self.default_context() == Some(name) {
            self.doc.remove("default");
        }
        self.refresh()?;
        Ok(removed)
    }

    fn context_table(&mut self, name: &str) -> &mut Table {
        let contexts = self.doc.entry("contexts").or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        let contexts = contexts
            .as_table_mut()
            .expect("`contexts` was checked to be a table on load");
        contexts
            .entry(name)
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .expect("a context was checked to be a table on load")
    }

    fn refresh(&mut self) -> Result<(), ConfigError> {
        let src = self.doc.to_string();
        self.typed = toml::from_str(&src).map_err(|e| {
            ConfigError::Invalid(Diagnostic::at(
                &self.path(),
                &src,
                e.span(),
                e.message().trim(),
            ))
        })?;
        Ok(())
    }

    pub fn save(&self) -> Result<(), ConfigError> {
        write_private(&self.path(), self.doc.to_string().as_bytes())
    }
}

/// Writes `bytes` to `path` atomically, readable by the owner only, creating the parent
/// directory (mode 0700) when needed. A crash leaves either the old file or the new one.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let io = |action, source| ConfigError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(|e| io("create the directory of", e))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io("write", e))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
