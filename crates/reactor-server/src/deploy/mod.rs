//! Deploy: releases received as bundles, verified, recorded, and switched to.
//!
//! A deploy, in order: the bundle is read and every file checked against its index
//! (`reactor-bundle`), kept in the local cache and in the database; the project id is
//! checked; every function of the release is compiled; then one transaction applies the
//! pending migrations and records the switch (`store::activation`). Until that commit
//! nothing a caller sees has changed, and if anything fails it never happens: the previous
//! release keeps serving. After it, this process loads the release (functions, jobs, sites,
//! the schema cache) and every other replica does within a second ([`Deployer::watch`]).
//! A process killed at any point restarts on whatever the last committed switch names.

mod cache;
pub mod http;
pub(crate) mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reactor_bundle::{FunctionKind, Index};
use reactor_core::ApiError;
use reactor_core::time::rfc3339_millis as rfc3339;
use reactor_db::{Db, DbError};
use reactor_manifest::Manifest;
use serde_json::{Value, json};

pub use cache::BlobCache;
use store::ReleaseRow;

/// What a deploy is allowed and where it keeps files (`[deploy]` in the server config).
#[derive(Debug, Clone)]
pub struct DeployConfig {
    pub cache_dir: PathBuf,
    /// The largest bundle accepted, compressed.
    pub max_bundle_bytes: u64,
    pub limits: reactor_bundle::Limits,
    /// Users (by email) who may deploy beside the service key.
    pub admins: Vec<String>,
}

/// The capabilities a release drives, handed over by the server at start.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub data: Option<reactor_data::Data>,
    #[cfg(feature = "functions")]
    pub functions: Option<reactor_functions::Functions>,
    #[cfg(feature = "jobs")]
    pub jobs: Option<reactor_jobs::Jobs>,
    #[cfg(feature = "sites")]
    pub sites: Option<reactor_sites::Sites>,
    #[cfg(feature = "gateway")]
    pub gateway: Option<reactor_gateway::Gateway>,
    #[cfg(feature = "connect")]
    pub connect: Option<reactor_connect::Connect>,
    #[cfg(feature = "identity")]
    pub identity: Option<reactor_identity::Identity>,
}

#[derive(Debug, Clone)]
pub struct Deployer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    cache: BlobCache,
    config: DeployConfig,
    targets: Targets,
    /// The release this process runs; held while one is being loaded, so loads never overlap.
    applied: tokio::sync::Mutex<Option<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Bundle(#[from] reactor_bundle::BundleError),
    #[error("the bundle is for project `{bundle}`, but this server runs `{server}`")]
    ProjectMismatch { server: String, bundle: String },
    #[error("the bundle lacks files this server does not hold: {0}")]
    Missing(String),
    #[error("the bundle's reactor.toml is invalid: {0}")]
    Manifest(String),
    #[error("function `{name}` does not load: {message}")]
    Function {
        name: String,
        message: String,
        hint: Option<String>,
    },
    #[error("migration failed: {0}")]
    Migration(#[from] reactor_data::migrations::MigrationError),
    #[error("no release `{0}`")]
    NoRelease(String),
    #[error("`{0}` names more than one release")]
    Ambiguous(String),
    #[error("{0}")]
    Refused(String),
    #[error("the bundle is larger than this server accepts ({0} bytes)")]
    TooLarge(u64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> ApiError {
        use axum::http::StatusCode;
        let message = e.to_string();
        match e {
            DeployError::Bundle(b) => {
                let error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_bundle", message);
                match b.hint() {
                    Some(h) => error.with_hint(h),
                    None => error,
                }
            }
            DeployError::ProjectMismatch { .. } => {
                ApiError::new(StatusCode::CONFLICT, "project_mismatch", message).with_hint(
                    "check project_id in reactor.toml and the context you deploy to (`reactor context list`)",
                )
            }
            DeployError::Missing(_) => ApiError::new(StatusCode::CONFLICT, "missing_files", message)
                .with_hint("`reactor deploy` uploads what the server lacks; run it again"),
            DeployError::Manifest(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_manifest", message)
            }
            DeployError::Function { hint, .. } => {
                let e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "function_failed", message);
                match hint {
                    Some(h) => e.with_hint(h),
                    None => e,
                }
            }
            DeployError::Migration(m) => {
                let hint = m.hint_text();
                let e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "migration_failed", message)
                    .with_details("nothing was applied: the previous release keeps serving");
                match hint {
                    Some(h) => e.with_hint(h),
                    None => e,
                }
            }
            DeployError::NoRelease(_) => ApiError::not_found(message)
                .with_hint("`reactor releases list` shows the releases of this server"),
            DeployError::Ambiguous(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "ambiguous_release", message)
                    .with_hint("give more characters of the release id")
            }
            DeployError::Refused(_) => ApiError::new(StatusCode::CONFLICT, "refused", message),
            DeployError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "bundle_too_large", message)
                    .with_hint("raise [deploy] max_bundle_mb in the server's config, or leave large files out with .reactorignore")
            }
            DeployError::Io(_) | DeployError::Db(_) => {
                tracing::error!(error = %message, "deploy");
                ApiError::internal()
            }
        }
    }
}

/// What one deploy did (or, dry, would do).
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    pub release: String,
    pub dry_run: bool,
    /// The release was already the one in force: nothing changed.
    pub unchanged: bool,
    /// Applied, or (dry) that would be.
    pub migrations: Vec<String>,
    pub functions: Vec<String>,
    pub sites: Vec<String>,
    pub jobs: Vec<String>,
    /// Files this upload carried that the server did not hold.
    pub uploaded: usize,
    pub previous: Option<String>,
}

/// Who asked: recorded with the release and its switch.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Deployer {
    /// Makes the tables, then loads the release in force, if any.
    pub async fn start(
        db: Db,
        config: DeployConfig,
        targets: Targets,
    ) -> Result<Deployer, DeployError> {
        store::prepare(&db).await?;
        let cache = BlobCache::new(config.cache_dir.clone(), db.clone())?;
        std::fs::create_dir_all(config.cache_dir.join("uploads"))?;
        let deployer = Deployer {
            inner: Arc::new(Inner {
                db,
                cache,
                config,
                targets,
                applied: tokio::sync::Mutex::new(None),
            }),
        };
        if let Some(id) = store::active(&deployer.inner.db).await? {
            deployer.load(&id).await?;
        }
        Ok(deployer)
    }

    pub fn config(&self) -> &DeployConfig {
        &self.inner.config
    }

    /// The release this process runs.
    pub async fn current(&self) -> Option<String> {
        self.inner.applied.lock().await.clone()
    }

    /// Follows the switches other replicas make (checked every second).
    pub fn watch(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                match store::active(&this.inner.db).await {
                    Ok(Some(id)) if this.current().await.as_deref() != Some(id.as_str()) => {
                        if let Err(e) = this.load(&id).await {
                            tracing::error!(release = %id, error = %e, "cannot load the release in force");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read the release in force"),
                }
            }
        });
    }

    /// Whether `email`'s user may deploy.
    pub fn is_admin(&self, email: &str) -> bool {
        self.inner
            .config
            .admins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(email))
    }

    #[cfg(feature = "identity")]
    pub fn identity(&self) -> Option<&reactor_identity::Identity> {
        self.inner.targets.identity.as_ref()
    }

    /// Which of `hashes` this server lacks.
    pub async fn missing(&self, hashes: &[String]) -> Result<Vec<String>, DeployError> {
        Ok(store::missing(&self.inner.db, hashes).await?)
    }

    /// A new file for an upload in progress.
    pub fn upload_path(&self) -> PathBuf {
        self.inner
            .config
            .cache_dir
            .join("uploads")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Deploys the bundle in `file` (removed afterwards).
    pub async fn deploy(
        &self,
        file: PathBuf,
        dry_run: bool,
        git_commit: Option<String>,
        actor: &Actor,
    ) -> Result<Outcome, DeployError> {
        let result = self.deploy_file(&file, dry_run, git_commit, actor).await;
        let _ = tokio::fs::remove_file(&file).await;
        result
    }

    async fn deploy_file(
        &self,
        file: &std::path::Path,
        dry_run: bool,
        git_commit: Option<String>,
        actor: &Actor,
    ) -> Result<Outcome, DeployError> {
        let db = &self.inner.db;
        // 1. Every byte checked against the index as it is read; files kept by hash.
        let cache = self.inner.cache.clone();
        let limits = self.inner.config.limits;
        let path = file.to_path_buf();
        let received = tokio::task::spawn_blocking(move || {
            let reader = std::io::BufReader::new(std::fs::File::open(path)?);
            reactor_bundle::read(reader, &limits, |entry, bytes| {
                cache.put_verified(&entry.sha256, &bytes)?;
                Ok(())
            })
            .map_err(DeployError::from)
        })
        .await
        .map_err(std::io::Error::other)??;
        let index = &received.index;
        let release = received.release.clone();

        // 2. The right project.
        if let Some(project) = db.project().await?
            && project.id != index.project_id
        {
            return Err(DeployError::ProjectMismatch {
                server: project.id,
                bundle: index.project_id.clone(),
            });
        }

        // 3. Every file present: carried now or held from an earlier deploy.
        let carried: std::collections::HashSet<&str> = received
            .received
            .iter()
            .map(|f| f.sha256.as_str())
            .collect();
        let others: Vec<String> = index
            .files
            .iter()
            .filter(|f| !carried.contains(f.sha256.as_str()))
            .map(|f| f.sha256.clone())
            .collect();
        let lacking = store::missing(db, &others).await?;
        if !lacking.is_empty() {
            let paths: Vec<&str> = index
                .files
                .iter()
                .filter(|f| lacking.contains(&f.sha256))
                .map(|f| f.path.as_str())
                .take(10)
                .collect();
            return Err(DeployError::Missing(paths.join(", ")));
        }

        let manifest = self.manifest_of(index).await?;
        if manifest.project_id != index.project_id {
            return Err(DeployError::Manifest(
                "its project_id differs from the bundle's".into(),
            ));
        }

        // 4. Every function compiles.
        #[cfg(feature = "functions")]
        let specs = self.function_specs(index, &manifest).await?;
        #[cfg(feature = "functions")]
        if let Some(functions) = &self.inner.targets.functions {
            for spec in &specs {
                functions
                    .check(spec)
                    .map_err(|error| DeployError::Function {
                        name: spec.name.clone(),
                        message: error.to_string(),
                        hint: error.hint,
                    })?;
            }
        }

        // 5. Every integration names a provider of the catalog, with what it needs.
        #[cfg(feature = "connect")]
        if let Some(connect) = &self.inner.targets.connect
            && let Err(problems) = reactor_connect::check(connect.catalog(), &manifest.connect)
        {
            return Err(DeployError::Manifest(problems.join("; ")));
        }

        let previous = store::active(db).await?;
        let mut outcome = Outcome {
            release: release.clone(),
            dry_run,
            unchanged: previous.as_deref() == Some(release.as_str()),
            migrations: Vec::new(),
            functions: manifest.functions.iter().map(|f| f.name.clone()).collect(),
            sites: manifest.sites.iter().map(|s| s.name.clone()).collect(),
            jobs: manifest.jobs.iter().map(|j| j.name.clone()).collect(),
            uploaded: 0,
            previous: previous.clone(),
        };
        let migrations = self.migrations_of(index).await?;
        if dry_run {
            outcome.migrations = reactor_data::migrations::migrate_with(
                db,
                &migrations,
                &reactor_data::migrations::MigrateOptions {
                    epilogue: Vec::new(),
                    dry_run: true,
                },
            )
            .await?;
            return Ok(outcome);
        }

        // 5. The files in the database, for every replica.
        let new = store::missing(
            db,
            &carried.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .await?;
        for sha in &new {
            store::put_blob(db, sha, self.inner.cache.read(sha).await?).await?;
        }
        outcome.uploaded = new.len();
        if outcome.unchanged {
            return Ok(outcome);
        }

        // 6. Migrations and the switch, in one transaction.
        let row = ReleaseRow {
            id: release.clone(),
            project_id: index.project_id.clone(),
            index_json: String::from_utf8_lossy(&received.index_bytes).into_owned(),
            status: "pending".into(),
            error: None,
            created_ms: now_ms(),
            created_by: Some(actor.name.clone()),
            git_commit,
            activated: None,
        };
        store::begin_release(db, &row).await?;
        let epilogue = store::activation(
            &release,
            "deploy",
            now_ms(),
            &actor.name,
            (&index.project_id, &index.name),
        );
        match reactor_data::migrations::migrate_with(
            db,
            &migrations,
            &reactor_data::migrations::MigrateOptions {
                epilogue,
                dry_run: false,
            },
        )
        .await
        {
            Ok(applied) => outcome.migrations = applied,
            Err(e) => {
                store::fail_release(db, &release, &e.to_string()).await?;
                return Err(e.into());
            }
        }
        tracing::info!(release = %release, by = %actor.name, "deployed");

        // 7. This process switches now; the others within a second.
        self.load(&release).await?;
        Ok(outcome)
    }

    /// Switches back to `target` (a release id or its prefix), or to the release in force
    /// before the current one. Migrations stay: they are named in the answer.
    pub async fn rollback(
        &self,
        target: Option<&str>,
        actor: &Actor,
    ) -> Result<Value, DeployError> {
        let db = &self.inner.db;
        let releases = store::list(db).await?;
        let current = store::active(db).await?;
        let target = match target {
            Some(prefix) => self.resolve(&releases, prefix)?,
            None => {
                // The release switched to before the current one.
                let mut switched: Vec<&ReleaseRow> = releases
                    .iter()
                    .filter(|r| r.activated.is_some() && Some(&r.id) != current.as_ref())
                    .collect();
                switched.sort_by_key(|r| std::cmp::Reverse(r.activated.as_ref().map(|a| a.0)));
                switched.first().map(|r| (*r).clone()).ok_or_else(|| {
                    DeployError::Refused("there is no earlier release to go back to".into())
                })?
            }
        };
        if target.status != "ready" {
            return Err(DeployError::Refused(format!(
                "release {} never finished deploying ({})",
                reactor_bundle::short(&target.id),
                target.status
            )));
        }
        if current.as_deref() == Some(target.id.as_str()) {
            return Err(DeployError::Refused(format!(
                "release {} is already the one serving",
                reactor_bundle::short(&target.id)
            )));
        }
        // Migrations the current release has that the target lacks stay applied.
        let kept = match current
            .as_ref()
            .and_then(|c| releases.iter().find(|r| &r.id == c))
        {
            Some(cur) => {
                let theirs = migrations_listed(&target.index_json);
                migrations_listed(&cur.index_json)
                    .into_iter()
                    .filter(|m| !theirs.contains(m))
                    .collect()
            }
            None => Vec::new(),
        };
        store::activate(db, &target.id, "rollback", now_ms(), &actor.name).await?;
        self.load(&target.id).await?;
        tracing::info!(release = %target.id, by = %actor.name, "rolled back");
        Ok(json!({
            "release": target.id,
            "previous": current,
            "migrations_kept": kept,
        }))
    }

    /// The release a (prefix of an) id names.
    fn resolve(&self, releases: &[ReleaseRow], prefix: &str) -> Result<ReleaseRow, DeployError> {
        let found: Vec<&ReleaseRow> = releases
            .iter()
            .filter(|r| prefix.len() >= 4 && r.id.starts_with(prefix))
            .collect();
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(DeployError::NoRelease(prefix.to_string())),
            _ => Err(DeployError::Ambiguous(prefix.to_string())),
        }
    }

    pub async fn releases(&self) -> Result<Vec<Value>, DeployError> {
        let db = &self.inner.db;
        let active = store::active(db).await?;
        Ok(store::list(db)
            .await?
            .iter()
            .map(|r| describe(r, active.as_deref()))
            .collect())
    }

    pub async fn release(&self, prefix: &str) -> Result<Value, DeployError> {
        let db = &self.inner.db;
        let releases = store::list(db).await?;
        let row = self.resolve(&releases, prefix)?;
        let active = store::active(db).await?;
        let mut value = describe(&row, active.as_deref());
        if let Ok(index) = serde_json::from_str::<Index>(&row.index_json) {
            value["migrations"] = json!(index.migrations);
            value["functions"] = json!(index.functions.iter().map(|f| &f.name).collect::<Vec<_>>());
            value["sites"] = json!(
                index
                    .sites
                    .iter()
                    .map(|s| json!({"name": s.name, "files": s.files.len()}))
                    .collect::<Vec<_>>()
            );
            value["files"] = json!(index.files.len());
            value["bytes"] = json!(index.files.iter().map(|f| f.size).sum::<u64>());
        }
        Ok(value)
    }

    /// Loads `id` into this process: functions, jobs, sites and the schema cache.
    async fn load(&self, id: &str) -> Result<(), DeployError> {
        let mut applied = self.inner.applied.lock().await;
        if applied.as_deref() == Some(id) {
            return Ok(());
        }
        let row = store::get(&self.inner.db, id)
            .await?
            .ok_or_else(|| DeployError::NoRelease(id.to_string()))?;
        let index: Index = serde_json::from_str(&row.index_json)
            .map_err(|e| DeployError::Manifest(e.to_string()))?;
        let manifest = self.manifest_of(&index).await?;
        let targets = &self.inner.targets;
        if let Some(data) = &targets.data
            && let Err(e) = data.reload_schema().await
        {
            tracing::warn!(error = %e, "schema cache reload after a release switch");
        }
        #[cfg(feature = "functions")]
        if let Some(functions) = &targets.functions {
            let specs = self.function_specs(&index, &manifest).await?;
            for report in functions.load(&specs) {
                if let reactor_functions::LoadReport::Failed { name, error, .. } = report {
                    tracing::error!(function = %name, error = %error, "a released function does not load here");
                }
            }
        }
        #[cfg(feature = "jobs")]
        if let Some(jobs) = &targets.jobs {
            jobs.load(reactor_jobs::JobSpec::from_manifest(&manifest));
            match jobs.sync_triggers().await {
                Ok(problems) => {
                    for p in problems {
                        tracing::warn!("event job: {p}");
                    }
                }
                Err(e) => tracing::error!(error = %e, "event job triggers"),
            }
        }
        #[cfg(feature = "sites")]
        if let Some(sites) = &targets.sites {
            sites.replace(self.site_deployment(id, &index, &manifest, row.created_ms));
        }
        #[cfg(feature = "gateway")]
        if let Some(gateway) = &targets.gateway {
            gateway.load(&manifest.gateway);
        }
        #[cfg(feature = "connect")]
        if let Some(connect) = &targets.connect
            && let Err(problems) = connect.load(&manifest.connect)
        {
            // Checked before the release was accepted; a catalog that changed since says so.
            tracing::error!(problems = %problems.join("; "), "the release's integrations do not load here");
        }
        #[cfg(not(any(feature = "functions", feature = "jobs", feature = "sites")))]
        let _ = (&manifest, &row);
        *applied = Some(id.to_string());
        tracing::info!(release = %id, "release loaded");
        Ok(())
    }

    async fn manifest_of(&self, index: &Index) -> Result<Manifest, DeployError> {
        let file = index
            .file(reactor_manifest::MANIFEST_FILE)
            .ok_or_else(|| DeployError::Manifest("missing".into()))?;
        let text = String::from_utf8(self.inner.cache.read(&file.sha256).await?)
            .map_err(|_| DeployError::Manifest("not UTF-8".into()))?;
        Manifest::parse_snapshot(&text).map_err(|e| DeployError::Manifest(e.to_string()))
    }

    async fn migrations_of(
        &self,
        index: &Index,
    ) -> Result<Vec<reactor_data::migrations::MigrationFile>, DeployError> {
        let mut files = Vec::new();
        for (name, path) in index.migration_paths() {
            let entry = index
                .file(&path)
                .ok_or_else(|| DeployError::Manifest(format!("{path} is missing")))?;
            let bytes = self.inner.cache.read(&entry.sha256).await?;
            let sql = String::from_utf8(bytes)
                .map_err(|_| DeployError::Manifest(format!("{path} is not UTF-8")))?;
            files.push(reactor_data::migrations::MigrationFile::new(name, sql));
        }
        Ok(files)
    }

    /// The functions of a release: the manifest's settings with the bundle's code.
    #[cfg(feature = "functions")]
    async fn function_specs(
        &self,
        index: &Index,
        manifest: &Manifest,
    ) -> Result<Vec<reactor_functions::FunctionSpec>, DeployError> {
        use reactor_functions::Built;
        let mut specs = reactor_functions::FunctionSpec::from_manifest(manifest);
        for spec in &mut specs {
            let built = index
                .functions
                .iter()
                .find(|f| f.name == spec.name)
                .ok_or_else(|| {
                    DeployError::Manifest(format!(
                        "function `{}` has no code in the bundle",
                        spec.name
                    ))
                })?;
            let read = |module: &str| {
                let path = format!("functions/{}/{module}", built.name);
                let sha = index.file(&path).map(|f| f.sha256.clone());
                let cache = self.inner.cache.clone();
                async move {
                    let sha =
                        sha.ok_or_else(|| DeployError::Manifest(format!("{path} is missing")))?;
                    Ok::<_, DeployError>(cache.read(&sha).await?)
                }
            };
            spec.built = Some(Arc::new(match built.kind {
                FunctionKind::Wasm => Built::Wasm {
                    bytes: read(&built.entry).await?,
                    text: built.entry.ends_with(".wat"),
                },
                FunctionKind::Js => {
                    let mut modules = HashMap::new();
                    for m in &built.modules {
                        let code = String::from_utf8(read(m).await?).map_err(|_| {
                            DeployError::Manifest(format!("module {m} is not UTF-8"))
                        })?;
                        modules.insert(m.clone(), Arc::<str>::from(code));
                    }
                    let links = built
                        .links
                        .iter()
                        .map(|l| ((l.from.clone(), l.specifier.clone()), l.to.clone()))
                        .collect();
                    Built::Js(Arc::new(reactor_functions::source::ModuleGraph::new(
                        built.entry.clone(),
                        modules,
                        links,
                    )))
                }
            }));
        }
        Ok(specs)
    }

    #[cfg(feature = "sites")]
    fn site_deployment(
        &self,
        id: &str,
        index: &Index,
        manifest: &Manifest,
        created_ms: i64,
    ) -> reactor_sites::Deployment {
        let modified = SystemTime::UNIX_EPOCH + Duration::from_millis(created_ms.max(0) as u64);
        let blobs: Arc<dyn reactor_sites::Blobs> = Arc::new(self.inner.cache.clone());
        reactor_sites::Deployment {
            release: Some(id.to_string()),
            sites: manifest
                .sites
                .iter()
                .map(|s| {
                    let files = index
                        .sites
                        .iter()
                        .find(|b| b.name == s.name)
                        .map(|b| b.files.clone().into_iter().collect())
                        .unwrap_or_default();
                    Arc::new(reactor_sites::Site {
                        name: s.name.clone(),
                        spa: s.spa,
                        headers: s.headers.clone(),
                        redirects: s.redirects.clone(),
                        files: reactor_sites::Files::Assets(reactor_sites::Assets {
                            files,
                            blobs: blobs.clone(),
                            modified,
                            memory: Default::default(),
                        }),
                    })
                })
                .collect(),
        }
    }
}

fn migrations_listed(index_json: &str) -> Vec<String> {
    serde_json::from_str::<Index>(index_json)
        .map(|i| i.migrations)
        .unwrap_or_default()
}

fn describe(r: &ReleaseRow, active: Option<&str>) -> Value {
    json!({
        "id": r.id,
        "short": reactor_bundle::short(&r.id),
        "active": active == Some(r.id.as_str()),
        "status": r.status,
        "error": r.error,
        "created_at": rfc3339(r.created_ms),
        "created_by": r.created_by,
        "git_commit": r.git_commit,
        "activated_at": r.activated.as_ref().map(|a| rfc3339(a.2)),
        "activated_by": r.activated.as_ref().and_then(|a| a.3.clone()),
        "activation": r.activated.as_ref().map(|a| a.1.clone()),
    })
}
