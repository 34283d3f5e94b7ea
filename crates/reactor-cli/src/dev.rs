//! `reactor dev`: the whole backend on a laptop. The same server `reactor-server` runs, in
//! this process, on the O1 adapters, with its state under the project's `.reactor/`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use reactor_core::keys;
use reactor_core::seal::MasterKey;
use reactor_core::{Capability, KeyTier};
use reactor_db::Db;
use reactor_server::config::ServerConfig;
use reactor_server::{AppState, Server, compiled_capabilities, shutdown_signal, telemetry};
use serde::{Deserialize, Serialize};

use crate::output::hinted;
use crate::session::{Credential, Session};

/// The context `reactor dev` registers for the commands that follow.
pub const LOCAL_CONTEXT: &str = "local";

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on. Anything but loopback exposes the service key's server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
}

/// `.reactor/keys.json`: the project's local keys, kept in plain text because they only ever
/// open this laptop's server, which stores their hashes like any other.
#[derive(Debug, Serialize, Deserialize)]
struct LocalKeys {
    public: String,
    service: String,
}

pub async fn run(session: &Session, args: DevArgs) -> anyhow::Result<()> {
    let manifest = session.load_manifest()?;
    let state_dir = manifest.root.join(".reactor");
    std::fs::create_dir_all(&state_dir)?;

    let db = Db::connect(&format!("sqlite://{}", state_dir.join("dev.db").display())).await?;
    db.set_project(&manifest.project_id, &manifest.name).await?;
    let keys = local_keys(&state_dir, &db).await?;

    let server = Server::bind(SocketAddr::new(args.host, args.port)).await?;
    let endpoint = server.endpoint()?;
    let capabilities: Vec<Capability> = compiled_capabilities();
    let config = ServerConfig {
        master_key: Some(local_master_key(&state_dir)?),
        // (No `project`: functions load from the project below, where reloads can be
        // reported.)
        storage: reactor_server::config::StorageSettings {
            path: Some(state_dir.join("storage")),
            ..Default::default()
        },
        dev: true,
        ..ServerConfig::new(server.local_addr()?, String::new(), capabilities.clone())
    };
    let state = AppState::start(db, &config, &endpoint).await?;

    let context_note = register_local_context(session, &endpoint, &keys)?;

    // Migrations apply at start and again whenever a file in the directory changes.
    let migrations_dir = manifest.migrations_dir();
    let watcher = state.data.clone().map(|data| {
        let dir = migrations_dir.clone();
        let jobs = state.jobs.clone();
        async move { watch_migrations(data, jobs, dir).await }
    });
    if let Some(data) = &state.data {
        apply_migrations(data, &migrations_dir).await;
    }

    // Functions and jobs load now and again whenever reactor.toml or a function's file
    // changes.
    if let Some(functions) = &state.functions {
        load_functions(functions, &manifest);
    }
    let driven = Driven {
        jobs: state.jobs.clone(),
        sites: state.sites.clone(),
        gateway: state.gateway.clone(),
        connect: state.connect.clone(),
    };
    driven.load(&manifest).await;
    let function_watcher = state.functions.clone().map(|functions| {
        let manifest_path = manifest.root.join(reactor_manifest::MANIFEST_FILE);
        async move { watch_functions(functions, driven, manifest_path).await }
    });

    telemetry::init();
    let shutdown = shutdown_signal();
    println!(
        "Reactor dev server for {} ({})",
        manifest.name, manifest.project_id
    );
    println!("  endpoint      {endpoint}");
    let (serving, planned): (Vec<Capability>, Vec<Capability>) =
        capabilities.iter().partition(|c| state.serves(**c));
    let names = |list: &[Capability]| list.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
    println!("  capabilities  {}", names(&serving));
    if !planned.is_empty() {
        println!("  coming soon   {}", names(&planned));
    }
    println!("  public key    {}", keys.public);
    println!(
        "  service key   {}   (server-side only: bypasses row-level security)",
        keys.service
    );
    println!("  state         {}", state_dir.display());
    println!("  context       {context_note}");
    println!(
        "  migrations    {} (applied on change)",
        migrations_dir.display()
    );
    if state.storage.is_some() {
        println!(
            "  storage       {} (objects' bytes)",
            state_dir.join("storage").display()
        );
    }
    if state.functions.is_some() {
        let names: Vec<&str> = manifest.functions.iter().map(|f| f.name.as_str()).collect();
        println!(
            "  functions     {} (reloaded on change)",
            if names.is_empty() {
                "none yet: `reactor functions new <name>`".to_string()
            } else {
                names.join(", ")
            }
        );
    }
    if state.sites.is_some() && !manifest.sites.is_empty() {
        let names: Vec<String> = manifest
            .sites
            .iter()
            .map(|s| format!("{} ({endpoint}/sites/v1/{}/)", s.name, s.name))
            .collect();
        println!(
            "  sites         {}; {} also at {endpoint}/",
            names.join(", "),
            manifest.sites[0].name
        );
    }
    if state.gateway.is_some() && !manifest.gateway.models.is_empty() {
        let names: Vec<&str> = manifest
            .gateway
            .models
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        println!(
            "  gateway       {} ({endpoint}/gateway/v1, OpenAI's API)",
            names.join(", ")
        );
    }
    if state.connect.is_some() && !manifest.connect.integrations.is_empty() {
        let names: Vec<&str> = manifest
            .connect
            .integrations
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        println!(
            "  connect       {} ({endpoint}/connect/v1)",
            names.join(", ")
        );
    }
    if state.jobs.is_some() && !manifest.jobs.is_empty() {
        let names: Vec<&str> = manifest.jobs.iter().map(|j| j.name.as_str()).collect();
        println!("  jobs          {} (`reactor jobs list`)", names.join(", "));
    }
    println!("Press Ctrl-C to stop.");

    if let Some(watcher) = watcher {
        tokio::spawn(watcher);
    }
    if let Some(watcher) = function_watcher {
        tokio::spawn(watcher);
    }
    server.run(state, shutdown).await?;
    println!("Reactor dev server stopped.");
    Ok(())
}

/// Applies the pending migrations of `dir`, reporting on stderr; a failure leaves the
/// database as it was and the server running.
async fn apply_migrations(data: &reactor_data::Data, dir: &Path) {
    let files = match reactor_data::migrations::read_dir(dir) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("migrations: {e}");
            return;
        }
    };
    match reactor_data::migrations::migrate(data.db(), &files).await {
        Ok(applied) => {
            if !applied.is_empty()
                && let Err(e) = data.reload_schema().await
            {
                eprintln!("migrations: the schema cache could not be reloaded: {e}");
            }
            for name in applied {
                eprintln!("migrations: applied {name}");
            }
        }
        Err(e) => {
            eprintln!("migrations: {e}");
            if let Some(hint) = e.hint_text() {
                eprintln!("  hint: {hint}");
            }
        }
    }
}

/// Names, sizes and modification times of the `.sql` files: what a change looks like.
fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<std::time::SystemTime>)> {
    let mut seen: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "sql"))
        .map(|e| {
            let meta = e.metadata().ok();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect();
    seen.sort();
    seen
}

/// Polls the migrations directory twice a second (no file-watching dependency, works on
/// every filesystem) and applies what changed.
async fn watch_migrations(
    data: reactor_data::Data,
    jobs: Option<reactor_jobs::Jobs>,
    dir: std::path::PathBuf,
) {
    let mut last = fingerprint(&dir);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = fingerprint(&dir);
        if now != last {
            last = now;
            apply_migrations(&data, &dir).await;
            // A new or changed table gets its event jobs' trigger at once.
            if let Some(jobs) = &jobs {
                sync_event_jobs(jobs).await;
            }
        }
    }
}

/// Makes the event jobs' triggers match; says which wait for a table.
async fn sync_event_jobs(jobs: &reactor_jobs::Jobs) {
    match jobs.sync_triggers().await {
        Ok(problems) => {
            for p in problems {
                eprintln!("jobs: {p}");
            }
        }
        Err(e) => eprintln!("jobs: cannot make the event triggers: {e}"),
    }
}

/// Loads the functions `manifest` declares and says what changed on stderr; a function whose
/// code does not load is reported with file, line and column, and keeps its previous code.
fn load_functions(functions: &reactor_functions::Functions, manifest: &reactor_manifest::Manifest) {
    use reactor_functions::LoadReport;
    for report in functions.load(&reactor_functions::FunctionSpec::from_manifest(manifest)) {
        match report {
            LoadReport::Loaded { name, .. } => eprintln!("functions: loaded {name}"),
            LoadReport::Unchanged { .. } => {}
            LoadReport::Removed { name } => eprintln!("functions: removed {name}"),
            LoadReport::Failed {
                name,
                error,
                kept_previous,
            } => {
                let source = manifest
                    .function(&name)
                    .map(|f| f.source.join(&error.file))
                    .unwrap_or_else(|| error.file.clone().into());
                eprintln!(
                    "functions: {name}: {}:{}:{}: {}",
                    source.display(),
                    error.line,
                    error.column,
                    error.message
                );
                if let Some(hint) = &error.hint {
                    eprintln!("  hint: {hint}");
                }
                if kept_previous {
                    eprintln!("  (the previous version keeps serving until this is fixed)");
                }
            }
        }
    }
}

/// Names, sizes and modification times of every file under the functions' directories and
/// of reactor.toml itself.
fn functions_fingerprint(
    manifest_path: &Path,
) -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
    fn walk(
        dir: &Path,
        out: &mut Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)>,
        depth: usize,
    ) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if depth < 16 && entry.file_name() != "node_modules" {
                    walk(&path, out, depth + 1);
                }
            } else {
                out.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    let mut seen = Vec::new();
    let meta = std::fs::metadata(manifest_path).ok();
    seen.push((
        manifest_path.to_path_buf(),
        meta.as_ref().map_or(0, |m| m.len()),
        meta.and_then(|m| m.modified().ok()),
    ));
    if let Ok(manifest) = reactor_manifest::Manifest::load(manifest_path) {
        for f in &manifest.functions {
            walk(&manifest.root.join(&f.source), &mut seen, 0);
        }
    }
    seen.sort();
    seen
}

/// What `reactor.toml` drives beside functions, loaded at start and with every change.
#[derive(Debug, Clone)]
struct Driven {
    jobs: Option<reactor_jobs::Jobs>,
    sites: Option<reactor_sites::Sites>,
    gateway: Option<reactor_gateway::Gateway>,
    connect: Option<reactor_connect::Connect>,
}

impl Driven {
    async fn load(&self, manifest: &reactor_manifest::Manifest) {
        if let Some(jobs) = &self.jobs {
            jobs.load(reactor_jobs::JobSpec::from_manifest(manifest));
            sync_event_jobs(jobs).await;
        }
        // Sites are read from the working tree on every request; only their list and rules
        // come from reactor.toml.
        if let Some(sites) = &self.sites {
            sites.replace(reactor_sites::Sites::from_manifest(manifest));
        }
        if let Some(gateway) = &self.gateway {
            gateway.load(&manifest.gateway);
        }
        if let Some(connect) = &self.connect
            && let Err(problems) = connect.load(&manifest.connect)
        {
            for p in problems {
                eprintln!("reactor.toml: {p} (integrations unchanged)");
            }
        }
    }
}

/// Polls twice a second, like the migrations watcher, and reloads what changed.
async fn watch_functions(
    functions: reactor_functions::Functions,
    driven: Driven,
    manifest_path: std::path::PathBuf,
) {
    let mut last = functions_fingerprint(&manifest_path);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = functions_fingerprint(&manifest_path);
        if now == last {
            continue;
        }
        last = now;
        match reactor_manifest::Manifest::load(&manifest_path) {
            Ok(manifest) => {
                load_functions(&functions, &manifest);
                driven.load(&manifest).await;
            }
            Err(e) => eprintln!("reactor.toml: {e} (functions, jobs and sites unchanged)"),
        }
    }
}

/// `.reactor/master.key`: seals this project's local secrets; made once.
fn local_master_key(state_dir: &Path) -> anyhow::Result<MasterKey> {
    let path = state_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => MasterKey::from_base64(&text).map_err(|e| {
            hinted(
                format!("{} is damaged: {e}", path.display()),
                "restore it from a backup; without it the local signing keys cannot be opened (`reactor data reset` starts over)",
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate();
            reactor_manifest::write_private(&path, key.to_base64().as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

/// The project's local keys: made once, re-registered if the database was reset, replaced
/// if someone revoked them.
async fn local_keys(state_dir: &Path, db: &Db) -> anyhow::Result<LocalKeys> {
    let path = state_dir.join("keys.json");
    let stored: Option<LocalKeys> = match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).map_err(|e| {
            hinted(
                format!("{} is damaged: {e}", path.display()),
                format!(
                    "delete {} and run `reactor dev` again to make new local keys",
                    path.display()
                ),
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let mut changed = stored.is_none();
    let (public, service) = match stored {
        Some(k) => (k.public, k.service),
        None => (String::new(), String::new()),
    };
    let public = ensure_key(
        db,
        KeyTier::Public,
        public,
        "local public key",
        &mut changed,
    )
    .await?;
    let service = ensure_key(
        db,
        KeyTier::Service,
        service,
        "local service key",
        &mut changed,
    )
    .await?;
    let keys = LocalKeys { public, service };
    if changed {
        reactor_manifest::write_private(&path, serde_json::to_string_pretty(&keys)?.as_bytes())?;
    }
    Ok(keys)
}

async fn ensure_key(
    db: &Db,
    tier: KeyTier,
    secret: String,
    name: &str,
    changed: &mut bool,
) -> anyhow::Result<String> {
    if keys::tier_of(&secret) == Some(tier) {
        match db.find_api_key(&keys::hash(&secret)).await? {
            Some(record) if !record.revoked => return Ok(secret),
            Some(_) => {}
            None => {
                // The database was reset: register the same key again so clients keep working.
                if let Some(key) = keys::adopt(&secret) {
                    db.insert_api_key(&key, name).await?;
                    return Ok(secret);
                }
            }
        }
    }
    let key = keys::generate(tier);
    db.insert_api_key(&key, name).await?;
    *changed = true;
    Ok(key.secret)
}

/// Points the `local` context at this server with the project's service key, so commands
/// in another terminal work without a login. Returns a line for the banner.
fn register_local_context(
    session: &Session,
    endpoint: &str,
    keys: &LocalKeys,
) -> anyhow::Result<String> {
    let mut config = session.config()?;
    config.put_context(LOCAL_CONTEXT, endpoint)?;
    config.set_key(LOCAL_CONTEXT, Some(&keys.public))?;
    // A user who ran `reactor login` against this server stays signed in across restarts.
    let current = session.resolve_stored(&config, LOCAL_CONTEXT)?;
    if !matches!(current.map(Credential::parse), Some(Credential::User(_))) {
        let (auth, notice) = session.store().save(LOCAL_CONTEXT, &keys.service)?;
        if let Some(notice) = notice {
            eprintln!("{notice}");
        }
        config.set_auth(LOCAL_CONTEXT, Some(&auth))?;
    }
    if config.default_context().is_none() {
        config.use_context(LOCAL_CONTEXT)?;
    }
    config.save()?;
    Ok(format!(
        "{LOCAL_CONTEXT} (registered in {})",
        config.path().display()
    ))
}
