//! Server configuration. Every setting comes, in order of precedence, from a flag, a
//! `REACTOR_…` environment variable, the `--config` file, or the default.

use std::net::SocketAddr;
use std::path::PathBuf;

use reactor_core::Capability;
use serde::Deserialize;

use crate::compiled_capabilities;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://reactor.db";

/// The flags (and their environment variables) shared by every `reactor-server` command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// A TOML file with `listen`, `database_url` and `capabilities`.
    #[arg(long, env = "REACTOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "REACTOR_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// `postgres://…` for Postgres (O2), or a SQLite path / `sqlite://PATH` (O1)
    /// [default: sqlite://reactor.db].
    #[arg(long, env = "REACTOR_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Comma-separated capabilities to enable [default: all compiled in].
    #[arg(
        long,
        env = "REACTOR_CAPABILITIES",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub capabilities: Option<Vec<String>>,
    /// A project directory (holding `reactor.toml`) whose functions this server runs, until
    /// releases are deployed to it.
    #[arg(long, env = "REACTOR_PROJECT", value_name = "DIR")]
    pub project: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    identity: IdentitySettings,
    #[serde(default)]
    data: DataSettings,
    #[serde(default)]
    cors: CorsSettings,
    smtp: Option<SmtpSettings>,
    master_key: Option<String>,
    project: Option<PathBuf>,
    #[serde(default)]
    functions: FunctionSettings,
    #[serde(default)]
    storage: StorageSettings,
    #[serde(default)]
    jobs: JobsSettings,
    #[serde(default)]
    sites: SitesSettings,
    #[serde(default)]
    deploy: DeploySettings,
    #[serde(default)]
    connect: ConnectSettings,
}

/// `[connect]` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectSettings {
    /// Where browsers reach this server, for the OAuth callback
    /// (`<public_url>/connect/v1/oauth/callback`, registered with each provider);
    /// `REACTOR_PUBLIC_URL` overrides it [default: the listen address].
    pub public_url: Option<String>,
    /// Seals connections' credentials: 32 random bytes in base64;
    /// `REACTOR_CONNECT_VAULT_KEY` overrides it [default: derived from the master key].
    pub vault_key: Option<String>,
    /// Keys that sealed credentials before `vault_key` replaced them: they still open, and
    /// at start every credential they sealed is sealed again under `vault_key`.
    #[serde(default)]
    pub previous_vault_keys: Vec<String>,
    /// How often expiring tokens are looked for and refreshed, in seconds [default: 300].
    pub refresh_every_secs: Option<u64>,
}

/// `[sites]` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitesSettings {
    /// The site served at `/` [default: the first the manifest declares].
    pub default: Option<String>,
    /// With `example.com`, `<site>.example.com` serves that site at its root.
    pub domain: Option<String>,
}

/// `[deploy]` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// Where release files are cached on this machine; `REACTOR_CACHE_DIR` overrides it
    /// [default: `releases` beside the SQLite database, else `reactor-releases` in the
    /// system's temporary directory].
    pub cache_dir: Option<PathBuf>,
    /// The largest bundle accepted, compressed, in MiB [default: 512].
    pub max_bundle_mb: Option<u64>,
    /// The largest file inside a bundle, in MiB [default: 100].
    pub max_file_mb: Option<u64>,
    /// All the files of a release together, in MiB [default: 1024].
    pub max_release_mb: Option<u64>,
    /// Users (by email) who may deploy and roll back, beside the service key.
    #[serde(default)]
    pub admins: Vec<String>,
}

/// `[identity]` in the config file. Unset values keep the capability's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    /// Access token lifetime in seconds [default: 3600].
    pub jwt_expiry_secs: Option<i64>,
    /// [default: 8]
    pub password_min_length: Option<usize>,
    /// New accounts confirm their address before signing in [default: false].
    pub confirm_email: Option<bool>,
    /// [default: false]
    pub disable_signup: Option<bool>,
    /// Where links in emails point [default: http://<listen>].
    pub site_url: Option<String>,
    /// Organization roles beyond owner, admin and member.
    #[serde(default)]
    pub custom_roles: Vec<String>,
}

/// `[data]` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    /// Let `PATCH` and `DELETE` on `/data/v1` run without any filter [default: false].
    pub allow_unfiltered_writes: Option<bool>,
    /// Postgres: connections `/data/v1` requests run on, per server process, beside the 16 of
    /// the system pool; `REACTOR_DATA_CONNECTIONS` overrides it. With several replicas over
    /// one database, keep replicas × (this + 16) under its `max_connections` [default: 16].
    pub connections: Option<u32>,
}

/// `[functions]` in the config file: defaults for every function; a function's own
/// `memory_mb`, `timeout_ms` and `concurrency` in `reactor.toml` override them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSettings {
    /// [default: 64]
    pub memory_mb: Option<u32>,
    /// [default: 10000]
    pub timeout_ms: Option<u64>,
    /// Invocations of one function at once [default: 64].
    pub concurrency: Option<u32>,
    /// Largest request body a function receives [default: 10].
    pub max_body_mb: Option<u32>,
    /// Hosts every function may `fetch`, beside its own `allowed_hosts` [default: none].
    pub allowed_hosts: Option<Vec<String>>,
    /// Time limit of one `fetch` [default: 30000].
    pub fetch_timeout_ms: Option<u64>,
    /// Largest response body `fetch` reads [default: 10].
    pub max_fetch_mb: Option<u32>,
}

/// `[storage]` in the config file: where object bytes live. The S3 credentials fall back to
/// the standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `fs` (a local directory) or `s3` [default: fs].
    pub backend: Option<String>,
    /// The directory of the `fs` backend; `REACTOR_STORAGE_PATH` overrides it [default:
    /// `storage` beside the SQLite database, else `./reactor-storage`].
    pub path: Option<PathBuf>,
    pub s3_bucket: Option<String>,
    /// [default: us-east-1]
    pub s3_region: Option<String>,
    /// An S3-compatible server (MinIO, R2…) [default: AWS].
    pub s3_endpoint: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO wants [default: false].
    pub s3_path_style: Option<bool>,
    /// Largest object, in MiB; a bucket's own limit may only be lower [default: 5120].
    pub max_upload_mb: Option<u64>,
    /// How long a resumable upload may take before it is abandoned and its bytes removed
    /// [default: 86400].
    pub upload_expiry_secs: Option<u64>,
}

/// `[jobs]` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSettings {
    /// How long a claimed run is held without a heartbeat: a crashed server's runs are taken
    /// over after it [default: 30].
    pub lease_secs: Option<u64>,
    /// Runs one server executes at once [default: 16].
    pub workers: Option<usize>,
}

/// `[cors]` in the config file; `REACTOR_CORS_ORIGINS` (comma-separated) overrides it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins browsers may call the API from, e.g. `https://app.example.com`
    /// [default: any origin — requests authenticate with headers, never cookies].
    pub allowed_origins: Option<Vec<String>>,
}

/// `[smtp]` in the config file; `REACTOR_SMTP_PASSWORD` overrides `password`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    /// [default: 587]
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender, e.g. "Acme <no-reply@acme.test>".
    pub from: String,
    /// `starttls` (the default), `tls` or `none`.
    pub tls: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub database_url: String,
    pub capabilities: Vec<Capability>,
    pub identity: IdentitySettings,
    pub data: DataSettings,
    /// Origins browsers may call from; empty means any.
    pub cors_origins: Vec<String>,
    pub smtp: Option<SmtpSettings>,
    /// Seals secrets at rest (signing keys): `REACTOR_MASTER_KEY`, else `master_key` in the file.
    pub master_key: Option<reactor_core::seal::MasterKey>,
    /// The project whose functions to run (`--project`).
    pub project: Option<PathBuf>,
    pub functions: FunctionSettings,
    pub storage: StorageSettings,
    pub jobs: JobsSettings,
    pub sites: SitesSettings,
    pub deploy: DeploySettings,
    pub connect: ConnectSettings,
    /// `reactor dev`: emails go to the console and the dev mailbox.
    pub dev: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("`{value}` is not a listen address (from {origin})")]
    Listen { value: String, origin: &'static str },
    #[error("{0} (from {1})")]
    UnknownCapability(reactor_core::UnknownCapability, &'static str),
    #[error("capability `{0}` is not compiled into this build")]
    NotCompiled(Capability),
    #[error("invalid [smtp] setting: {0}")]
    Smtp(String),
    #[error("`{0}` is not an origin (from {1})")]
    CorsOrigin(String, &'static str),
    #[error("invalid master key (from {1}): {0}")]
    MasterKey(reactor_core::seal::SealError, &'static str),
    #[error("`{0}` in [functions].allowed_hosts is not a host")]
    AllowedHost(String),
    #[error("invalid [storage] setting: {0}")]
    Storage(String),
    #[error("invalid [connect] setting: {0}")]
    Connect(String),
    #[error("invalid [data] setting: {0}")]
    Data(String),
}

impl ConfigError {
    pub fn hint(&self) -> String {
        match self {
            ConfigError::Read { .. } => "check the path given to --config or REACTOR_CONFIG".into(),
            ConfigError::Parse { .. } => {
                "the keys allowed are listen, database_url, capabilities, master_key, project, [identity], [data], [functions], [storage], [jobs], [sites], [deploy], [connect], [cors] and [smtp]"
                    .into()
            }
            ConfigError::Smtp(_) => "see the README's reactor-server section on email".into(),
            ConfigError::Connect(_) => {
                "public_url is where browsers reach this server (https://api.example.com); vault keys are 32 random bytes in base64 (`openssl rand -base64 32`)".into()
            }
            ConfigError::Data(_) => {
                "connections is how many Postgres connections Data requests use per server, from 1 to 1000 (default 16)".into()
            }
            ConfigError::Storage(_) => {
                "backend = \"fs\" takes path; backend = \"s3\" needs s3_bucket (and s3_endpoint for MinIO or R2)".into()
            }
            ConfigError::MasterKey(..) => {
                "make one with `openssl rand -base64 32`, and keep it: sealed data needs it".into()
            }
            ConfigError::AllowedHost(_) => {
                "write host names, optionally with a port or a leading `*.`: \"api.example.com\", \"localhost:3000\", \"*.example.com\"".into()
            }
            ConfigError::CorsOrigin(..) => {
                "an origin is scheme://host[:port] with no path, e.g. https://app.example.com".into()
            }
            ConfigError::Listen { .. } => {
                "use HOST:PORT, for example 127.0.0.1:8080 or 0.0.0.0:8080".into()
            }
            ConfigError::UnknownCapability(..) => {
                "list them comma-separated, e.g. REACTOR_CAPABILITIES=identity,data".into()
            }
            ConfigError::NotCompiled(c) => format!(
                "rebuild reactor-server with `--features {c}`, or leave it out of capabilities"
            ),
        }
    }
}

impl ServerConfig {
    /// A server on `listen` over `database_url` with `capabilities`, every other setting at
    /// its default: what `reactor dev` and tests start from.
    pub fn new(
        listen: SocketAddr,
        database_url: impl Into<String>,
        capabilities: Vec<Capability>,
    ) -> ServerConfig {
        ServerConfig {
            listen,
            database_url: database_url.into(),
            capabilities,
            identity: IdentitySettings::default(),
            data: DataSettings::default(),
            cors_origins: Vec::new(),
            smtp: None,
            master_key: None,
            project: None,
            functions: FunctionSettings::default(),
            storage: StorageSettings::default(),
            jobs: JobsSettings::default(),
            sites: SitesSettings::default(),
            deploy: DeploySettings::default(),
            connect: ConnectSettings::default(),
            dev: false,
        }
    }

    pub fn resolve(args: &ServerArgs) -> Result<ServerConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&src).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string().trim().to_string(),
                })?
            }
            None => FileConfig::default(),
        };

        let (listen, origin) = pick(args.listen.clone(), file.listen, DEFAULT_LISTEN.to_string());
        let listen = listen.parse().map_err(|_| ConfigError::Listen {
            value: listen.clone(),
            origin,
        })?;
        let (database_url, _) = pick(
            args.database_url.clone(),
            file.database_url,
            DEFAULT_DATABASE_URL.to_string(),
        );
        let (names, origin) = match (args.capabilities.clone(), file.capabilities) {
            (Some(names), _) => (Some(names), "--capabilities / REACTOR_CAPABILITIES"),
            (None, Some(names)) => (Some(names), "the config file"),
            (None, None) => (None, "the default"),
        };
        let compiled = compiled_capabilities();
        let capabilities = match names {
            None => compiled,
            Some(names) => {
                let mut wanted = Vec::new();
                for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                    let c: Capability = name
                        .parse()
                        .map_err(|e| ConfigError::UnknownCapability(e, origin))?;
                    if !compiled.contains(&c) {
                        return Err(ConfigError::NotCompiled(c));
                    }
                    if !wanted.contains(&c) {
                        wanted.push(c);
                    }
                }
                wanted.sort();
                wanted
            }
        };
        let mut smtp = file.smtp;
        if let Some(smtp) = &mut smtp {
            if let Ok(password) = std::env::var("REACTOR_SMTP_PASSWORD") {
                smtp.password = Some(password);
            }
            if !matches!(
                smtp.tls.as_deref(),
                None | Some("starttls" | "tls" | "none")
            ) {
                return Err(ConfigError::Smtp(format!(
                    "tls = {:?}; use \"starttls\", \"tls\" or \"none\"",
                    smtp.tls.as_deref().unwrap_or_default()
                )));
            }
        }
        let master_key = match std::env::var("REACTOR_MASTER_KEY")
            .ok()
            .filter(|k| !k.is_empty())
        {
            Some(text) => Some(
                reactor_core::seal::MasterKey::from_base64(&text)
                    .map_err(|e| ConfigError::MasterKey(e, "REACTOR_MASTER_KEY"))?,
            ),
            None => file
                .master_key
                .map(|text| reactor_core::seal::MasterKey::from_base64(&text))
                .transpose()
                .map_err(|e| ConfigError::MasterKey(e, "the config file"))?,
        };
        let (cors_origins, origin) = match std::env::var("REACTOR_CORS_ORIGINS") {
            Ok(list) => (
                list.split(',')
                    .map(|o| o.trim().to_string())
                    .filter(|o| !o.is_empty())
                    .collect(),
                "REACTOR_CORS_ORIGINS",
            ),
            Err(_) => (
                file.cors.allowed_origins.unwrap_or_default(),
                "the config file",
            ),
        };
        for o in &cors_origins {
            if !valid_origin(o) {
                return Err(ConfigError::CorsOrigin(o.clone(), origin));
            }
        }
        for host in file.functions.allowed_hosts.iter().flatten() {
            if reactor_manifest::HostPattern::parse(host).is_none() {
                return Err(ConfigError::AllowedHost(host.clone()));
            }
        }
        let mut storage = file.storage;
        if let Some(path) = std::env::var_os("REACTOR_STORAGE_PATH") {
            storage.path = Some(path.into());
        }
        match storage.backend.as_deref() {
            None | Some("fs") => {}
            Some("s3") if storage.s3_bucket.is_some() => {}
            Some("s3") => {
                return Err(ConfigError::Storage(
                    "backend = \"s3\" without s3_bucket".into(),
                ));
            }
            Some(other) => {
                return Err(ConfigError::Storage(format!(
                    "backend = \"{other}\"; it is \"fs\" or \"s3\""
                )));
            }
        }
        let mut connect = file.connect;
        if let Ok(url) = std::env::var("REACTOR_PUBLIC_URL") {
            connect.public_url = Some(url);
        }
        if let Ok(key) = std::env::var("REACTOR_CONNECT_VAULT_KEY") {
            connect.vault_key = Some(key);
        }
        if let Some(url) = &connect.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Connect(format!(
                "public_url = {url:?} is not an http(s) URL"
            )));
        }
        for key in connect.vault_key.iter().chain(&connect.previous_vault_keys) {
            reactor_core::seal::MasterKey::from_base64(key)
                .map_err(|e| ConfigError::Connect(format!("a vault key: {e}")))?;
        }
        let mut data = file.data;
        if let Ok(n) = std::env::var("REACTOR_DATA_CONNECTIONS") {
            data.connections = Some(n.trim().parse().map_err(|_| {
                ConfigError::Data(format!(
                    "REACTOR_DATA_CONNECTIONS={n:?} is not a number of connections"
                ))
            })?);
        }
        if let Some(n) = data.connections
            && !(1..=1000).contains(&n)
        {
            return Err(ConfigError::Data(format!(
                "connections = {n}; it is from 1 to 1000"
            )));
        }
        let mut deploy = file.deploy;
        if let Some(dir) = std::env::var_os("REACTOR_CACHE_DIR") {
            deploy.cache_dir = Some(dir.into());
        }
        Ok(ServerConfig {
            listen,
            database_url,
            capabilities,
            identity: file.identity,
            data,
            cors_origins,
            smtp,
            master_key,
            project: args.project.clone().or(file.project),
            functions: file.functions,
            storage,
            jobs: file.jobs,
            sites: file.sites,
            deploy,
            connect,
            dev: false,
        })
    }
}

/// `scheme://host[:port]`, nothing after.
fn valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', '*'])
        && axum::http::HeaderValue::from_str(origin).is_ok()
}

/// Flag-or-environment (clap merges those two), else file, else default.
fn pick(arg: Option<String>, file: Option<String>, default: String) -> (String, &'static str) {
    match (arg, file) {
        (Some(v), _) => (v, "the flag or environment"),
        (None, Some(v)) => (v, "the config file"),
        (None, None) => (default, "the default"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert!(valid_origin("https://app.example.com"));
        assert!(valid_origin("http://localhost:5173"));
        assert!(!valid_origin("app.example.com"));
        assert!(!valid_origin("https://app.example.com/"));
        assert!(!valid_origin("ftp://x"));
        assert!(!valid_origin("https://*.example.com"));
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("tempfile");
        std::fs::write(f.path(), text).expect("write");
        f
    }

    #[test]
    fn defaults_apply_without_anything() {
        let c = ServerConfig::resolve(&ServerArgs::default()).expect("resolve");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.capabilities, compiled_capabilities());
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let f = file(
            "listen = \"127.0.0.1:9000\"\ndatabase_url = \"postgres://h/db\"\ncapabilities = [\"data\"]\n",
        );
        let mut args = ServerArgs {
            config: Some(f.path().to_path_buf()),
            ..ServerArgs::default()
        };
        let c = ServerConfig::resolve(&args).expect("resolve");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.database_url, "postgres://h/db");
        args.listen = Some("127.0.0.1:9100".into());
        args.capabilities = Some(vec!["identity".into(), "data".into(), "identity".into()]);
        let c = ServerConfig::resolve(&args).expect("resolve");
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.database_url, "postgres://h/db");
        if cfg!(all(feature = "identity", feature = "data")) {
            assert_eq!(c.capabilities, vec![Capability::Identity, Capability::Data]);
        }
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let args = ServerArgs {
            listen: Some("localhost".into()),
            ..ServerArgs::default()
        };
        let e = ServerConfig::resolve(&args).expect_err("bad listen");
        assert!(
            e.to_string()
                .contains("`localhost` is not a listen address"),
            "{e}"
        );
        assert!(e.hint().contains("HOST:PORT"));

        let args = ServerArgs {
            capabilities: Some(vec!["dta".into()]),
            ..ServerArgs::default()
        };
        let e = ServerConfig::resolve(&args).expect_err("bad capability");
        assert!(e.to_string().contains("unknown capability `dta`"), "{e}");

        let f = file("listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n");
        let args = ServerArgs {
            config: Some(f.path().to_path_buf()),
            ..ServerArgs::default()
        };
        let e = ServerConfig::resolve(&args).expect_err("unknown key");
        assert!(e.to_string().contains("listen_addr"), "{e}");
    }

    #[test]
    fn data_connections() {
        let resolve = |text: &str| {
            let f = file(text);
            ServerConfig::resolve(&ServerArgs {
                config: Some(f.path().to_path_buf()),
                ..ServerArgs::default()
            })
        };
        let c = resolve("[data]\nconnections = 4\n").expect("resolve");
        assert_eq!(c.data.connections, Some(4));
        for bad in ["[data]\nconnections = 0\n", "[data]\nconnections = 5000\n"] {
            let e = resolve(bad).expect_err(bad);
            assert!(e.to_string().contains("from 1 to 1000"), "{e}");
            assert!(e.hint().contains("Postgres connections"), "{}", e.hint());
        }
    }

    #[test]
    fn storage_settings() {
        let f = file(
            "[storage]\nbackend = \"s3\"\ns3_bucket = \"objects\"\ns3_endpoint = \"http://127.0.0.1:9000\"\ns3_path_style = true\nmax_upload_mb = 100\n",
        );
        let args = ServerArgs {
            config: Some(f.path().to_path_buf()),
            ..ServerArgs::default()
        };
        let c = ServerConfig::resolve(&args).expect("resolve");
        assert_eq!(c.storage.s3_bucket.as_deref(), Some("objects"));
        assert_eq!(c.storage.s3_path_style, Some(true));
        assert_eq!(c.storage.max_upload_mb, Some(100));
        for (text, says) in [
            ("[storage]\nbackend = \"s3\"\n", "without s3_bucket"),
            ("[storage]\nbackend = \"gcs\"\n", "\"gcs\""),
            ("[storage]\nbucket = \"x\"\n", "bucket"),
        ] {
            let f = file(text);
            let args = ServerArgs {
                config: Some(f.path().to_path_buf()),
                ..ServerArgs::default()
            };
            let e = ServerConfig::resolve(&args).expect_err(text);
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn functions_settings_and_the_project() {
        let f = file(
            "project = \"/srv/app\"\n[functions]\nmemory_mb = 32\ntimeout_ms = 500\nallowed_hosts = [\"api.example.com\", \"*.svc.test:8443\"]\n",
        );
        let args = ServerArgs {
            config: Some(f.path().to_path_buf()),
            ..ServerArgs::default()
        };
        let c = ServerConfig::resolve(&args).expect("resolve");
        assert_eq!(c.project.as_deref(), Some(std::path::Path::new("/srv/app")));
        assert_eq!(c.functions.memory_mb, Some(32));
        assert_eq!(c.functions.allowed_hosts.as_ref().map(Vec::len), Some(2));
        let flag = ServerArgs {
            project: Some("/elsewhere".into()),
            ..args
        };
        let c = ServerConfig::resolve(&flag).expect("resolve");
        assert_eq!(
            c.project.as_deref(),
            Some(std::path::Path::new("/elsewhere")),
            "the flag wins"
        );

        let f = file("[functions]\nallowed_hosts = [\"https://api.example.com/\"]\n");
        let args = ServerArgs {
            config: Some(f.path().to_path_buf()),
            ..ServerArgs::default()
        };
        let e = ServerConfig::resolve(&args).expect_err("bad host");
        assert!(e.to_string().contains("is not a host"), "{e}");
        assert!(e.hint().contains("*."), "{}", e.hint());
    }
}
