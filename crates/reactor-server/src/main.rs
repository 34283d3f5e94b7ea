//! `reactor-server`: the Reactor server for operators (O2: Postgres; or SQLite on one box).

/// mimalloc: the request path allocates many small, short-lived buffers, where it measured
/// markedly cheaper than glibc's allocator (see bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use reactor_core::KeyTier;
use reactor_core::keys;
use reactor_db::Db;
use reactor_server::config::{ServerArgs, ServerConfig};
use reactor_server::{AppState, Server, shutdown_signal, telemetry};

#[derive(Debug, Parser)]
#[command(name = "reactor-server", version, about = "The Reactor backend server")]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Manage project API keys directly in the database (for bootstrapping a server).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Server administration directly in the database.
    #[cfg(feature = "identity")]
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[cfg(feature = "identity")]
#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a user with the server role `admin` (who may deploy), email confirmed.
    CreateUser {
        #[arg(long)]
        email: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it once.
    Create {
        #[arg(long, value_enum)]
        tier: Tier,
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Tier {
    Pub,
    Svc,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = hint_for(&e) {
                eprintln!("  hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn hint_for(e: &anyhow::Error) -> Option<String> {
    if let Some(e) = e.downcast_ref::<reactor_server::config::ConfigError>() {
        return Some(e.hint());
    }
    if let Some(e) = e.downcast_ref::<reactor_server::StartError>() {
        return Some(e.hint());
    }
    if e.downcast_ref::<reactor_db::DbError>().is_some() {
        return Some(
            "check REACTOR_DATABASE_URL (or --database-url / database_url in the config file)"
                .into(),
        );
    }
    None
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = ServerConfig::resolve(&cli.server)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Keys(cmd) => keys_command(config, cmd).await,
        #[cfg(feature = "identity")]
        Command::Admin(cmd) => admin_command(config, cmd).await,
    }
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    telemetry::init();
    let db = Db::connect(&config.database_url).await?;
    let server = Server::bind(config.listen).await?;
    if config.master_key.is_none() {
        tracing::warn!(
            "REACTOR_MASTER_KEY is not set: signing keys are stored unsealed in the database"
        );
    }
    let state = AppState::start(db, &config, &server.endpoint()?).await?;
    let addr = server.local_addr()?;
    let shutdown = shutdown_signal();
    tracing::info!(
        %addr,
        capabilities = %config.capabilities.iter().map(|c| c.name()).collect::<Vec<_>>().join(","),
        "reactor-server listening"
    );
    server.run(state, shutdown).await?;
    tracing::info!("reactor-server stopped");
    Ok(())
}

async fn keys_command(config: ServerConfig, cmd: KeysCommand) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url).await?;
    match cmd {
        KeysCommand::Create { tier, name, json } => {
            let tier = match tier {
                Tier::Pub => KeyTier::Public,
                Tier::Svc => KeyTier::Service,
            };
            let key = keys::generate(tier);
            db.insert_api_key(&key, &name).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": key.id, "name": name, "tier": tier, "prefix": key.prefix, "key": key.secret})
                );
            } else {
                println!("{}", key.secret);
                eprintln!(
                    "created {} key `{name}` ({}); it is shown only this once",
                    tier.name(),
                    key.id
                );
            }
        }
        KeysCommand::List { json } => {
            let keys = db.list_api_keys().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!(
                    "{:<22} {:<16} {:<5} {:<14} {:<8} LAST USED",
                    "ID", "NAME", "TIER", "PREFIX", "STATUS"
                );
                for k in keys {
                    println!(
                        "{:<22} {:<16} {:<5} {:<14} {:<8} {}",
                        k.id,
                        k.name,
                        k.tier.name(),
                        k.prefix,
                        if k.revoked { "revoked" } else { "active" },
                        k.last_used_at.as_deref().unwrap_or("never")
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            if !db.revoke_api_key(&id).await? {
                anyhow::bail!("no active key with id `{id}` (see `reactor-server keys list`)");
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

#[cfg(feature = "identity")]
async fn admin_command(config: ServerConfig, cmd: AdminCommand) -> anyhow::Result<()> {
    let AdminCommand::CreateUser {
        email,
        password_stdin,
    } = cmd;
    if !password_stdin {
        anyhow::bail!(
            "pass --password-stdin and pipe the password in, so it stays out of shell history"
        );
    }
    let mut password = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    let db = Db::connect(&config.database_url).await?;
    let identity = reactor_identity::Identity::start(
        &db,
        reactor_identity::IdentityConfig {
            master_key: config.master_key.clone(),
            ..Default::default()
        },
        reactor_identity::system_clock(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let user = identity
        .admin_create_user(reactor_identity::AdminUserCreate {
            email,
            password: Some(password),
            email_confirm: Some(true),
            role: Some("admin".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("created admin user {} ({})", user.email, user.id);
    Ok(())
}
