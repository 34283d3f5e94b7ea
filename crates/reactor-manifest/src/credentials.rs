//! Where `reactor` keeps a context's token: the OS keychain when the machine has one, else
//! `~/.reactor/credentials.toml` (mode 0600). A headless Linux box has no Secret Service, so
//! the file is the honest fallback there; the user is told once.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, value};

use crate::config::write_private;
use crate::{AuthConfig, ConfigError};

const KEYCHAIN_SERVICE: &str = "reactor";
const NOTICE_MARKER: &str = ".keychain-fallback-noticed";

/// Where a token was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredIn {
    Keychain,
    File,
}

#[derive(Debug, Clone)]
pub struct CredentialStore {
    home: PathBuf,
    use_keychain: bool,
}

impl CredentialStore {
    /// `REACTOR_KEYCHAIN=off` skips the keychain (CI machines, tests).
    pub fn new(home: &Path) -> Self {
        let off = std::env::var("REACTOR_KEYCHAIN")
            .is_ok_and(|v| matches!(v.as_str(), "off" | "0" | "false"));
        CredentialStore::with_keychain(home, !off)
    }

    pub fn with_keychain(home: &Path, use_keychain: bool) -> Self {
        CredentialStore {
            home: home.to_path_buf(),
            use_keychain,
        }
    }

    fn file(&self) -> PathBuf {
        self.home.join("credentials.toml")
    }

    /// Stores `token` for `context`. Returns how the config should point at it, and a notice
    /// to show the user the first time the file fallback is used.
    pub fn save(
        &self,
        context: &str,
        token: &str,
    ) -> Result<(AuthConfig, Option<String>), ConfigError> {
        let keychain_error = if self.use_keychain {
            match keychain_set(context, token) {
                Ok(()) => {
                    // A token left in the file from an earlier fallback must not shadow this one.
                    self.remove_from_file(context)?;
                    return Ok((
                        AuthConfig::Keychain {
                            service: KEYCHAIN_SERVICE.to_string(),
                            account: context.to_string(),
                        },
                        None,
                    ));
                }
                Err(e) => Some(e),
            }
        } else {
            None
        };
        self.write_file_token(context, Some(token))?;
        let marker = self.home.join(NOTICE_MARKER);
        let notice = if marker.exists() {
            None
        } else {
            write_private(&marker, b"")?;
            let why = keychain_error
                .map_or_else(|| "REACTOR_KEYCHAIN=off".to_string(), |e| e.to_string());
            Some(format!(
                "note: no OS keychain is available ({why}); tokens are stored in {} (mode 0600) instead",
                self.file().display()
            ))
        };
        Ok((AuthConfig::File, notice))
    }

    pub fn load(&self, context: &str, auth: &AuthConfig) -> Result<Option<String>, ConfigError> {
        match auth {
            AuthConfig::Keychain { service, account } => keychain_get(service, account),
            AuthConfig::File => Ok(self
                .read_file()?
                .get("tokens")
                .and_then(|t| t.get(context))
                .and_then(Item::as_str)
                .map(str::to_string)),
        }
    }

    pub fn delete(&self, context: &str, auth: &AuthConfig) -> Result<(), ConfigError> {
        match auth {
            AuthConfig::Keychain { service, account } => keychain_delete(service, account),
            AuthConfig::File => self.remove_from_file(context),
        }
    }

    fn remove_from_file(&self, context: &str) -> Result<(), ConfigError> {
        if self.file().exists() {
            self.write_file_token(context, None)?;
        }
        Ok(())
    }

    fn read_file(&self) -> Result<DocumentMut, ConfigError> {
        let path = self.file();
        match std::fs::read_to_string(&path) {
            Ok(src) => src.parse().map_err(|e: toml_edit::TomlError| {
                ConfigError::Invalid(crate::Diagnostic::at(
                    &path,
                    &src,
                    e.span(),
                    e.message().trim(),
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DocumentMut::new()),
            Err(source) => Err(ConfigError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    fn write_file_token(&self, context: &str, token: Option<&str>) -> Result<(), ConfigError> {
        let mut doc = self.read_file()?;
        let tokens = doc
            .entry("tokens")
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| {
                ConfigError::Keychain(format!(
                    "{} has a `tokens` key that is not a table",
                    self.file().display()
                ))
            })?;
        match token {
            Some(token) => tokens[context] = value(token),
            None => {
                tokens.remove(context);
            }
        }
        write_private(&self.file(), doc.to_string().as_bytes())
    }
}

fn keychain_set(account: &str, token: &str) -> Result<(), keyring::Error> {
    keyring::Entry::new(KEYCHAIN_SERVICE, account)?.set_password(token)
}

fn keychain_get(service: &str, account: &str) -> Result<Option<String>, ConfigError> {
    let entry =
        keyring::Entry::new(service, account).map_err(|e| ConfigError::Keychain(e.to_string()))?;
    match entry.get_password() {
        Ok(token) => Ok(Some(token)),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(ConfigError::Keychain(e.to_string())),
    }
}

fn keychain_delete(service: &str, account: &str) -> Result<(), ConfigError> {
    let entry =
        keyring::Entry::new(service, account).map_err(|e| ConfigError::Keychain(e.to_string()))?;
    match entry.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(ConfigError::Keychain(e.to_string())),
    }
}
