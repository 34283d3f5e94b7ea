//! The Reactor server: one HTTP server composing the capabilities a build and its
//! configuration enable, over one [`Db`](reactor_db::Db).
//!
//! `reactor-server` (the binary in this crate) runs it for operators; `reactor dev` runs the
//! same [`Server`] in-process on the O1 adapters.

mod auth;
pub mod config;
#[cfg(feature = "data")]
pub mod deploy;
#[cfg(feature = "jobs")]
mod jobs;
mod routes;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use reactor_core::Capability;
use reactor_db::Db;
use tokio::net::TcpListener;

pub use config::ServerConfig;

/// The capabilities compiled into this build (cargo features).
pub fn compiled_capabilities() -> Vec<Capability> {
    Capability::ALL
        .into_iter()
        .filter(|c| match c {
            Capability::Identity => cfg!(feature = "identity"),
            Capability::Data => cfg!(feature = "data"),
            Capability::Storage => cfg!(feature = "storage"),
            Capability::Functions => cfg!(feature = "functions"),
            Capability::Jobs => cfg!(feature = "jobs"),
            Capability::Sites => cfg!(feature = "sites"),
            Capability::Gateway => cfg!(feature = "gateway"),
            Capability::Connect => cfg!(feature = "connect"),
        })
        .collect()
}

/// What every request handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub capabilities: Arc<Vec<Capability>>,
    /// Present when the identity capability is enabled: it verifies user access tokens.
    #[cfg(feature = "identity")]
    pub identity: Option<reactor_identity::Identity>,
    /// Present when the data capability is enabled.
    #[cfg(feature = "data")]
    pub data: Option<reactor_data::Data>,
    /// Present when the functions capability is enabled.
    #[cfg(feature = "functions")]
    pub functions: Option<reactor_functions::Functions>,
    /// Present when the storage capability is enabled.
    #[cfg(feature = "storage")]
    pub storage: Option<reactor_storage::Storage>,
    /// Present when the jobs capability is enabled (with functions, which jobs run).
    #[cfg(feature = "jobs")]
    pub jobs: Option<reactor_jobs::Jobs>,
    /// Present when the sites capability is enabled.
    #[cfg(feature = "sites")]
    pub sites: Option<reactor_sites::Sites>,
    /// Present when the gateway capability is enabled.
    #[cfg(feature = "gateway")]
    pub gateway: Option<reactor_gateway::Gateway>,
    /// Present when the connect capability is enabled.
    #[cfg(feature = "connect")]
    pub connect: Option<reactor_connect::Connect>,
    /// Receives releases (`/deploy/v1`); absent under `reactor dev`, which serves the
    /// working tree.
    #[cfg(feature = "data")]
    pub deploy: Option<deploy::Deployer>,
    /// The project's secrets (`/v1/secrets`); absent only in states built by tests.
    pub secrets: Option<reactor_db::secrets::Secrets>,
    /// Project keys seen in the last second (see `auth::KeyCache`).
    pub(crate) keys: Arc<auth::KeyCache>,
    /// Origins browsers may call from; empty means any.
    pub cors_origins: Arc<Vec<String>>,
}

impl AppState {
    /// Starts every enabled capability over `db` (each applies its own system tables).
    /// `endpoint` is where this server is reached, the default for links in emails.
    pub async fn start(
        db: Db,
        config: &ServerConfig,
        endpoint: &str,
    ) -> Result<AppState, StartError> {
        let capabilities = config.capabilities.clone();
        #[cfg(feature = "identity")]
        let identity = if capabilities.contains(&Capability::Identity) {
            Some(
                reactor_identity::Identity::start(
                    &db,
                    identity_config(config, endpoint),
                    reactor_identity::system_clock(),
                )
                .await
                .map_err(|e| StartError::Capability(Capability::Identity, e.to_string()))?,
            )
        } else {
            None
        };
        #[cfg(not(feature = "identity"))]
        let _ = endpoint;
        #[cfg(feature = "data")]
        let data = if capabilities.contains(&Capability::Data) {
            let settings = reactor_data::DataConfig {
                allow_unfiltered_writes: config.data.allow_unfiltered_writes.unwrap_or(false),
                request_connections: config
                    .data
                    .connections
                    .map_or(reactor_data::DEFAULT_REQUEST_CONNECTIONS, |n| n as usize),
            };
            Some(
                reactor_data::Data::new(db.clone(), settings)
                    .await
                    .map_err(|e| StartError::Capability(Capability::Data, e.to_string()))?,
            )
        } else {
            None
        };
        let state = AppState::new(
            db,
            capabilities,
            #[cfg(feature = "identity")]
            identity,
        );
        #[cfg(feature = "data")]
        let state = state.with_data(data);
        #[cfg(feature = "functions")]
        let state = state.with_functions(start_functions(config, endpoint)?);
        #[cfg(feature = "storage")]
        let state = {
            let storage = start_storage(&state, config).await?;
            state.with_storage(storage)
        };
        let secrets = reactor_db::secrets::Secrets::start(&state.db, config.master_key.clone())
            .await
            .map_err(|e| StartError::Secrets(e.to_string()))?;
        #[cfg(feature = "jobs")]
        let state = {
            let jobs = start_jobs(&state, config, endpoint, &secrets).await?;
            state.with_jobs(jobs)
        };
        #[cfg(feature = "sites")]
        let state = {
            let sites = start_sites(config)?;
            AppState { sites, ..state }
        };
        #[cfg(feature = "gateway")]
        let state = {
            let gateway = start_gateway(&state.db, config, &secrets).await?;
            AppState { gateway, ..state }
        };
        #[cfg(feature = "connect")]
        let state = {
            let connect = start_connect(&state, config, endpoint, &secrets).await?;
            AppState { connect, ..state }
        };
        #[cfg(feature = "data")]
        let state = {
            let deploy = start_deploy(&state, config).await?;
            AppState { deploy, ..state }
        };
        Ok(AppState {
            cors_origins: Arc::new(config.cors_origins.clone()),
            secrets: Some(secrets),
            ..state
        })
    }

    /// State from capabilities already started (tests start them with their own settings).
    pub fn new(
        db: Db,
        capabilities: Vec<Capability>,
        #[cfg(feature = "identity")] identity: Option<reactor_identity::Identity>,
    ) -> AppState {
        AppState {
            db,
            capabilities: Arc::new(capabilities),
            #[cfg(feature = "identity")]
            identity,
            #[cfg(feature = "data")]
            data: None,
            #[cfg(feature = "functions")]
            functions: None,
            #[cfg(feature = "storage")]
            storage: None,
            #[cfg(feature = "jobs")]
            jobs: None,
            #[cfg(feature = "sites")]
            sites: None,
            #[cfg(feature = "gateway")]
            gateway: None,
            #[cfg(feature = "connect")]
            connect: None,
            #[cfg(feature = "data")]
            deploy: None,
            secrets: None,
            keys: Arc::new(auth::KeyCache::default()),
            cors_origins: Arc::new(Vec::new()),
        }
    }

    /// Adds the data capability (started by [`AppState::start`], or by a test).
    #[cfg(feature = "data")]
    pub fn with_data(mut self, data: Option<reactor_data::Data>) -> AppState {
        self.data = data;
        self
    }

    /// Adds the storage capability.
    #[cfg(feature = "storage")]
    pub fn with_storage(mut self, storage: Option<reactor_storage::Storage>) -> AppState {
        self.storage = storage;
        self
    }

    /// Adds the jobs capability.
    #[cfg(feature = "jobs")]
    pub fn with_jobs(mut self, jobs: Option<reactor_jobs::Jobs>) -> AppState {
        self.jobs = jobs;
        self
    }

    /// Adds the functions capability.
    #[cfg(feature = "functions")]
    pub fn with_functions(mut self, functions: Option<reactor_functions::Functions>) -> AppState {
        self.functions = functions;
        self
    }
}

/// O1's row-level security for Storage, from the Data capability's policy simulation.
#[cfg(all(feature = "storage", feature = "data"))]
#[derive(Debug)]
struct DataPolicies(reactor_data::Data);

#[cfg(all(feature = "storage", feature = "data"))]
impl reactor_storage::Policies for DataPolicies {
    fn predicate(
        &self,
        role: reactor_core::DbRole,
        command: reactor_storage::Command,
        check: bool,
    ) -> String {
        self.0
            .system_policy_predicate("storage.objects", role, command.name(), check)
    }
}

/// The storage capability over the configured backend, its sweeper running. On SQLite the
/// Data capability evaluates the policies; without it only the service key reaches objects.
#[cfg(feature = "storage")]
async fn start_storage(
    state: &AppState,
    config: &ServerConfig,
) -> Result<Option<reactor_storage::Storage>, StartError> {
    if !config.capabilities.contains(&Capability::Storage) {
        return Ok(None);
    }
    let settings = &config.storage;
    let failed = |e: String| StartError::Capability(Capability::Storage, e);
    let backend = match settings.backend.as_deref() {
        Some("s3") => reactor_storage::Backend::S3(reactor_storage::S3Config {
            bucket: settings.s3_bucket.clone().unwrap_or_default(),
            region: settings
                .s3_region
                .clone()
                .unwrap_or_else(|| "us-east-1".into()),
            endpoint: settings.s3_endpoint.clone(),
            access_key_id: settings
                .s3_access_key_id
                .clone()
                .or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok()),
            secret_access_key: settings
                .s3_secret_access_key
                .clone()
                .or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok()),
            path_style: settings.s3_path_style.unwrap_or(false),
        }),
        _ => reactor_storage::Backend::Fs(match (&settings.path, &state.db) {
            (Some(p), _) => p.clone(),
            (None, Db::Sqlite(pool)) => pool
                .path()
                .parent()
                .map_or_else(|| "storage".into(), |d| d.join("storage")),
            (None, Db::Postgres(_)) => "reactor-storage".into(),
        }),
    };
    let mut storage_config = reactor_storage::StorageConfig::new(backend);
    if let Some(mb) = settings.max_upload_mb {
        storage_config.max_upload_bytes = mb.saturating_mul(1024 * 1024);
    }
    if let Some(secs) = settings.upload_expiry_secs {
        storage_config.abandon_uploads_after = std::time::Duration::from_secs(secs.max(1));
    }
    // At least twice per expiry, so nothing outlives it by much.
    let sweep_every = (storage_config.abandon_uploads_after / 2).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    #[cfg(feature = "data")]
    let policies: Option<Arc<dyn reactor_storage::Policies>> = state
        .data
        .clone()
        .map(|d| Arc::new(DataPolicies(d)) as Arc<dyn reactor_storage::Policies>);
    #[cfg(not(feature = "data"))]
    let policies = None;
    let storage = reactor_storage::Storage::start(
        state.db.clone(),
        storage_config,
        config.master_key.as_ref(),
        policies,
    )
    .await
    .map_err(|e| failed(e.to_string()))?;
    // The schema cache was read before Storage made its tables.
    #[cfg(feature = "data")]
    if let Some(data) = &state.data {
        data.reload_schema()
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    tokio::spawn(storage.clone().run_sweeper(sweep_every));
    Ok(Some(storage))
}

/// The jobs capability, running the project's functions, its loops started. Its jobs come
/// from the project given to the server (`reactor dev` loads and reloads them itself).
#[cfg(feature = "jobs")]
async fn start_jobs(
    state: &AppState,
    config: &ServerConfig,
    endpoint: &str,
    secrets: &reactor_db::secrets::Secrets,
) -> Result<Option<reactor_jobs::Jobs>, StartError> {
    let (true, Some(functions)) = (
        config.capabilities.contains(&Capability::Jobs),
        state.functions.clone(),
    ) else {
        return Ok(None);
    };
    let failed = |e: String| StartError::Capability(Capability::Jobs, e);
    let runner = jobs::FunctionsRunner {
        functions,
        env: Arc::new(routes::SecretsEnv(secrets.clone())),
        endpoint: endpoint.to_string(),
    };
    let settings = &config.jobs;
    let defaults = reactor_jobs::JobsConfig::default();
    let jobs_config = reactor_jobs::JobsConfig {
        lease: settings
            .lease_secs
            .map_or(defaults.lease, std::time::Duration::from_secs),
        workers: settings.workers.unwrap_or(defaults.workers),
        ..defaults
    };
    let jobs = reactor_jobs::Jobs::start(
        state.db.clone(),
        Arc::new(runner),
        Arc::new(reactor_jobs::SystemClock),
        jobs_config,
    )
    .await
    .map_err(|e| failed(e.to_string()))?;
    if let Some(dir) = &config.project {
        let manifest = reactor_manifest::Manifest::load(&dir.join(reactor_manifest::MANIFEST_FILE))
            .map_err(|e| failed(e.to_string()))?;
        jobs.load(reactor_jobs::JobSpec::from_manifest(&manifest));
        for problem in jobs
            .sync_triggers()
            .await
            .map_err(|e| failed(e.to_string()))?
        {
            tracing::warn!("event job: {problem}");
        }
    }
    jobs.spawn();
    Ok(Some(jobs))
}

/// The functions capability, with the project's functions loaded when the server was given
/// one (`--project`); `reactor dev` loads and reloads them itself.
#[cfg(feature = "functions")]
fn start_functions(
    config: &ServerConfig,
    endpoint: &str,
) -> Result<Option<reactor_functions::Functions>, StartError> {
    if !config.capabilities.contains(&Capability::Functions) {
        return Ok(None);
    }
    let settings = &config.functions;
    let defaults = reactor_functions::Limits::default();
    let functions = reactor_functions::Functions::new(reactor_functions::FunctionsConfig {
        default_limits: reactor_functions::Limits {
            memory_mb: settings.memory_mb.unwrap_or(defaults.memory_mb),
            timeout_ms: settings.timeout_ms.unwrap_or(defaults.timeout_ms),
            concurrency: settings.concurrency.unwrap_or(defaults.concurrency),
        },
        max_body_bytes: settings.max_body_mb.map_or(
            reactor_functions::FunctionsConfig::default().max_body_bytes,
            |mb| mb as usize * 1024 * 1024,
        ),
        expose_errors: config.dev,
        allowed_hosts: settings.allowed_hosts.clone().unwrap_or_default(),
        self_origin: Some(endpoint.to_string()),
        fetch_timeout: std::time::Duration::from_millis(
            settings.fetch_timeout_ms.unwrap_or(30_000),
        ),
        max_fetch_bytes: settings
            .max_fetch_mb
            .map_or(10 * 1024 * 1024, |mb| mb as usize * 1024 * 1024),
    });
    if let Some(dir) = &config.project {
        let manifest = reactor_manifest::Manifest::load(&dir.join(reactor_manifest::MANIFEST_FILE))
            .map_err(|e| StartError::Capability(Capability::Functions, e.to_string()))?;
        for report in functions.load(&reactor_functions::FunctionSpec::from_manifest(&manifest)) {
            if let reactor_functions::LoadReport::Failed { name, error, .. } = report {
                return Err(StartError::Capability(
                    Capability::Functions,
                    format!("function `{name}`: {error}"),
                ));
            }
        }
    }
    Ok(Some(functions))
}

/// The sites capability: the project's working tree when the server was given one
/// (`--project`); a deployed release replaces it.
#[cfg(feature = "sites")]
fn start_sites(config: &ServerConfig) -> Result<Option<reactor_sites::Sites>, StartError> {
    if !config.capabilities.contains(&Capability::Sites) {
        return Ok(None);
    }
    let sites = reactor_sites::Sites::new(reactor_sites::SitesConfig {
        default_site: config.sites.default.clone(),
        domain: config.sites.domain.clone(),
    });
    if let Some(dir) = &config.project {
        let manifest = reactor_manifest::Manifest::load(&dir.join(reactor_manifest::MANIFEST_FILE))
            .map_err(|e| StartError::Capability(Capability::Sites, e.to_string()))?;
        sites.replace(reactor_sites::Sites::from_manifest(&manifest));
    }
    Ok(Some(sites))
}

/// The project's secrets as the capabilities that name them read them: the gateway's
/// provider keys, Connect's client and webhook secrets.
#[cfg(any(feature = "gateway", feature = "connect"))]
#[derive(Debug)]
struct ProjectSecrets(reactor_db::secrets::Secrets);

#[cfg(any(feature = "gateway", feature = "connect"))]
impl ProjectSecrets {
    async fn get(&self, name: &str, reader: &str) -> Option<String> {
        match self.0.values().await {
            Ok(values) => values.get(name).cloned(),
            Err(e) => {
                tracing::error!(error = %e, "{reader}: the secrets cannot be read");
                None
            }
        }
    }
}

#[cfg(feature = "gateway")]
impl reactor_gateway::KeySource for ProjectSecrets {
    fn key<'a>(&'a self, secret: &'a str) -> reactor_gateway::KeyFuture<'a> {
        Box::pin(self.get(secret, "gateway"))
    }
}

#[cfg(feature = "connect")]
impl reactor_connect::Secrets for ProjectSecrets {
    fn get<'a>(&'a self, name: &'a str) -> reactor_connect::BoxFuture<'a, Option<String>> {
        Box::pin(ProjectSecrets::get(self, name, "connect"))
    }
}

/// The gateway, configured from the project given to the server (`--project`); a deployed
/// release, or `reactor dev`, loads its own.
#[cfg(feature = "gateway")]
async fn start_gateway(
    db: &Db,
    config: &ServerConfig,
    secrets: &reactor_db::secrets::Secrets,
) -> Result<Option<reactor_gateway::Gateway>, StartError> {
    if !config.capabilities.contains(&Capability::Gateway) {
        return Ok(None);
    }
    let gateway =
        reactor_gateway::Gateway::start(db.clone(), Arc::new(ProjectSecrets(secrets.clone())))
            .await
            .map_err(|e| match e {
                reactor_gateway::StartError::Environment { message, hint } => {
                    StartError::Environment {
                        message,
                        hint: hint.into(),
                    }
                }
                e => StartError::Capability(Capability::Gateway, e.to_string()),
            })?;
    if let Some(dir) = &config.project {
        let manifest = reactor_manifest::Manifest::load(&dir.join(reactor_manifest::MANIFEST_FILE))
            .map_err(|e| StartError::Capability(Capability::Gateway, e.to_string()))?;
        gateway.load(&manifest.gateway);
    }
    Ok(Some(gateway))
}

/// Connect's events become Jobs events (runs of the jobs that listen for them).
#[cfg(all(feature = "connect", feature = "jobs"))]
#[derive(Debug)]
struct JobEvents(reactor_jobs::Jobs);

#[cfg(all(feature = "connect", feature = "jobs"))]
impl reactor_connect::Events for JobEvents {
    fn emit<'a>(
        &'a self,
        event: &'a str,
        payload: serde_json::Value,
    ) -> reactor_connect::BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.0.emit(event, payload).await {
                tracing::error!(event, error = %e, "connect: cannot emit the event");
            }
        })
    }
}

/// Connect, with the integrations of the project given to the server (`--project`); a
/// deployed release, or `reactor dev`, loads its own. Its vault key is the configured one,
/// else one derived from the master key.
#[cfg(feature = "connect")]
async fn start_connect(
    state: &AppState,
    config: &ServerConfig,
    endpoint: &str,
    secrets: &reactor_db::secrets::Secrets,
) -> Result<Option<reactor_connect::Connect>, StartError> {
    use reactor_core::seal::MasterKey;
    if !config.capabilities.contains(&Capability::Connect) {
        return Ok(None);
    }
    let failed = |e: String| StartError::Capability(Capability::Connect, e);
    let settings = &config.connect;
    const PURPOSE: &str = "connect-vault";
    let derive = |text: &String| {
        MasterKey::from_base64(text)
            .map(|k| k.derive(PURPOSE))
            .map_err(|e| failed(format!("a vault key: {e}")))
    };
    let current = match (&settings.vault_key, &config.master_key) {
        (Some(text), _) => Some(derive(text)?),
        (None, Some(master)) => Some(master.derive(PURPOSE)),
        (None, None) => None,
    };
    let previous = settings
        .previous_vault_keys
        .iter()
        .map(derive)
        .collect::<Result<Vec<_>, _>>()?;
    let vault = match current {
        Some(key) => reactor_connect::vault::Vault::new(&key, &previous),
        None => reactor_connect::vault::Vault::none(),
    };
    let mut connect_config = reactor_connect::ConnectConfig::new(
        settings.public_url.as_deref().unwrap_or(endpoint),
        vault,
    );
    if let Some(secs) = settings.refresh_every_secs {
        connect_config.refresh_every = std::time::Duration::from_secs(secs.max(1));
    }
    let connect = reactor_connect::Connect::start(
        state.db.clone(),
        connect_config,
        Arc::new(ProjectSecrets(secrets.clone())),
    )
    .await
    .map_err(failed)?;
    #[cfg(feature = "jobs")]
    if let Some(jobs) = &state.jobs {
        connect.set_events(Arc::new(JobEvents(jobs.clone())));
    }
    if let Some(dir) = &config.project {
        let manifest = reactor_manifest::Manifest::load(&dir.join(reactor_manifest::MANIFEST_FILE))
            .map_err(|e| failed(e.to_string()))?;
        connect
            .load(&manifest.connect)
            .map_err(|problems| failed(problems.join("; ")))?;
    }
    connect.spawn();
    Ok(Some(connect))
}

/// Releases: the tables, the release in force loaded, other replicas' switches followed.
/// Not under `reactor dev`, which serves the working tree.
#[cfg(feature = "data")]
async fn start_deploy(
    state: &AppState,
    config: &ServerConfig,
) -> Result<Option<deploy::Deployer>, StartError> {
    if config.dev {
        return Ok(None);
    }
    let settings = &config.deploy;
    let cache_dir = match (&settings.cache_dir, &state.db) {
        (Some(dir), _) => dir.clone(),
        (None, Db::Sqlite(pool)) => pool
            .path()
            .parent()
            .map_or_else(|| "releases".into(), |d| d.join("releases")),
        (None, Db::Postgres(_)) => std::env::temp_dir().join("reactor-releases"),
    };
    let mb = |v: Option<u64>, default: u64| v.unwrap_or(default).saturating_mul(1024 * 1024);
    let deploy_config = deploy::DeployConfig {
        cache_dir,
        max_bundle_bytes: mb(settings.max_bundle_mb, 512),
        limits: reactor_bundle::Limits {
            max_file_bytes: mb(settings.max_file_mb, 100),
            max_total_bytes: mb(settings.max_release_mb, 1024),
            ..Default::default()
        },
        admins: settings.admins.clone(),
    };
    let targets = deploy::Targets {
        data: state.data.clone(),
        #[cfg(feature = "functions")]
        functions: state.functions.clone(),
        #[cfg(feature = "jobs")]
        jobs: state.jobs.clone(),
        #[cfg(feature = "sites")]
        sites: state.sites.clone(),
        #[cfg(feature = "gateway")]
        gateway: state.gateway.clone(),
        #[cfg(feature = "connect")]
        connect: state.connect.clone(),
        #[cfg(feature = "identity")]
        identity: state.identity.clone(),
    };
    let deployer = deploy::Deployer::start(state.db.clone(), deploy_config, targets)
        .await
        .map_err(|e| StartError::Deploy(e.to_string()))?;
    deployer.watch();
    Ok(Some(deployer))
}

/// The identity capability's settings from the server's.
#[cfg(feature = "identity")]
fn identity_config(config: &ServerConfig, endpoint: &str) -> reactor_identity::IdentityConfig {
    use reactor_identity::mail::{MailerConfig, SmtpConfig, SmtpTls};
    let s = &config.identity;
    let defaults = reactor_identity::IdentityConfig::default();
    let mailer = match (&config.smtp, config.dev) {
        (Some(smtp), _) => MailerConfig::Smtp(SmtpConfig {
            host: smtp.host.clone(),
            port: smtp.port.unwrap_or(587),
            username: smtp.username.clone(),
            password: smtp.password.clone(),
            from: smtp.from.clone(),
            tls: match smtp.tls.as_deref() {
                Some("none") => SmtpTls::None,
                Some("tls") => SmtpTls::Tls,
                _ => SmtpTls::StartTls,
            },
        }),
        (None, true) => MailerConfig::Console,
        (None, false) => MailerConfig::Disabled,
    };
    reactor_identity::IdentityConfig {
        access_token_ttl: s.jwt_expiry_secs.unwrap_or(defaults.access_token_ttl),
        password_min_length: s
            .password_min_length
            .unwrap_or(defaults.password_min_length),
        confirm_email: s.confirm_email.unwrap_or(defaults.confirm_email),
        disable_signup: s.disable_signup.unwrap_or(defaults.disable_signup),
        site_url: s.site_url.clone().unwrap_or_else(|| endpoint.to_string()),
        custom_roles: s.custom_roles.clone(),
        mailer,
        dev_mailbox: config.dev,
        master_key: config.master_key.clone(),
        ..defaults
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{addr} is already in use")]
    AddrInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the {0} capability failed to start: {1}")]
    Capability(Capability, String),
    /// A setting read from the environment by a capability, that cannot be used.
    #[error("{message}")]
    Environment { message: String, hint: String },
    #[error("the secret store failed to start: {0}")]
    Secrets(String),
    #[error("releases failed to load: {0}")]
    Deploy(String),
}

impl StartError {
    pub fn hint(&self) -> String {
        match self {
            StartError::AddrInUse { addr } => format!(
                "another process is listening on port {}; stop it, or pick another port (--port, or REACTOR_LISTEN for reactor-server)",
                addr.port()
            ),
            StartError::Bind { .. } => "check the listen address and your permissions".to_string(),
            StartError::Capability(..) | StartError::Secrets(_) | StartError::Deploy(_) => {
                "the server log has details; check the database".to_string()
            }
            StartError::Environment { hint, .. } => hint.clone(),
        }
    }
}

impl AppState {
    /// Whether an enabled capability already serves its API on this server; the others are
    /// switched on but not built yet, and `/v1/info` and `reactor dev` say so.
    pub fn serves(&self, capability: Capability) -> bool {
        match capability {
            #[cfg(feature = "identity")]
            Capability::Identity => self.identity.is_some(),
            #[cfg(feature = "data")]
            Capability::Data => self.data.is_some(),
            #[cfg(feature = "functions")]
            Capability::Functions => self.functions.is_some(),
            #[cfg(feature = "storage")]
            Capability::Storage => self.storage.is_some(),
            #[cfg(feature = "jobs")]
            Capability::Jobs => self.jobs.is_some(),
            #[cfg(feature = "sites")]
            Capability::Sites => self.sites.is_some(),
            #[cfg(feature = "gateway")]
            Capability::Gateway => self.gateway.is_some(),
            #[cfg(feature = "connect")]
            Capability::Connect => self.connect.is_some(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// A listening socket, bound before anything else so a taken port is reported at once.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> Result<Server, StartError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AddrInUse => StartError::AddrInUse { addr },
                _ => StartError::Bind { addr, source },
            })?;
        Ok(Server { listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// `http://host:port`, with a wildcard host shown as loopback.
    pub fn endpoint(&self) -> std::io::Result<String> {
        let addr = self.local_addr()?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        Ok(format!("http://{host}:{}", addr.port()))
    }

    /// Serves `state` until `shutdown` completes, then stops accepting and lets requests in
    /// flight finish.
    pub async fn run(
        self,
        state: AppState,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::ServiceExt;
        use axum::serve::ListenerExt;
        let app = routes::router(state);
        // Without TCP_NODELAY a response written in two parts (headers, then a streamed body:
        // a download, a function's stream) waits out Nagle and delayed ACK, 40 ms, before its
        // body; measured: a 4 KiB download at 34 req/s on one connection.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        // The peer address reaches handlers (sign-in throttling per client address).
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled, so a signal that arrives while the server is still
/// starting is not lost (or fatal): call it before announcing that the server is up.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => tracing::info!("received Ctrl-C, shutting down"),
                    _ = terminate.recv() => tracing::info!("received SIGTERM, shutting down"),
                },
                _ => {
                    tracing::warn!("cannot install signal handlers; stop the server with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("received Ctrl-C, shutting down");
        } else {
            std::future::pending::<()>().await;
        }
    }
}
