//! `reactor`: the command-line interface to Reactor.
//!
//! Every command resolves its project (the nearest `reactor.toml`), its context and its token
//! through `reactor-manifest`, and talks to servers only through `reactor-client` — except
//! `reactor dev`, which runs the server in-process.

/// mimalloc: the request path allocates many small, short-lived buffers, where it measured
/// markedly cheaper than glibc's allocator (see bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod connect;
mod context;
mod data;
mod deploy;
mod dev;
mod functions;
mod gateway;
mod info;
mod init;
mod jobs;
mod keys;
mod login;
mod org;
mod output;
mod session;
mod storage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "reactor",
    version,
    about = "Reactor: a whole backend from one reactor.toml"
)]
struct Cli {
    /// The context (named server connection) to use [env: REACTOR_CONTEXT].
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    /// The API token to use, overriding every stored one [env: REACTOR_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where to look for reactor.toml, instead of the current directory.
    #[arg(long, global = true, value_name = "DIR")]
    project: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new project that works at once.
    Init(init::InitArgs),
    /// Run the whole backend locally (SQLite, local disk, in-process runtimes).
    Dev(dev::DevArgs),
    /// Manage contexts: named connections to Reactor servers.
    #[command(subcommand)]
    Context(context::ContextCommand),
    /// The project's SQL migrations: new, status, migrate.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Functions: list, new, invoke, logs.
    #[command(subcommand)]
    Functions(functions::FunctionsCommand),
    /// Project secrets, given to functions as `env` (values are never shown).
    #[command(subcommand)]
    Secrets(functions::SecretsCommand),
    /// Jobs: list, run, runs, show, cancel, retry.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Storage: buckets, and objects copied up and down like files (ss:///bucket/path).
    #[command(subcommand)]
    Storage(storage::StorageCommand),
    /// Show the server behind the current context: version, project, capabilities.
    Info(info::InfoArgs),
    /// Sign in to the current context's server as a user.
    Login(login::LoginArgs),
    /// Sign out and forget the stored session.
    Logout,
    /// Who the current context acts as.
    Whoami(login::WhoamiArgs),
    /// Organizations: create, list, use, members, invite, remove, role.
    #[command(subcommand)]
    Org(org::OrgCommand),
    /// Manage the project's API keys (needs the service key).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Package the project into a bundle: .reactor/build/<project>-<release>.tar.zst.
    Build(deploy::BuildArgs),
    /// Build, upload what the server lacks, apply migrations and switch to the new release.
    Deploy(deploy::DeployArgs),
    /// The server's releases.
    #[command(subcommand)]
    Releases(deploy::ReleasesCommand),
    /// Switch back to an earlier release (code and sites; migrations stay).
    Rollback(deploy::RollbackArgs),
    /// The AI gateway's state (it is configured in reactor.toml): usage.
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// Third-party integrations (declared in reactor.toml) and users' connections.
    #[command(subcommand)]
    Connect(connect::ConnectCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let session = session::Session::new(cli.context, cli.token, cli.project);
    let result = match cli.command {
        Command::Init(args) => init::run(&session, args),
        Command::Dev(args) => dev::run(&session, args).await,
        Command::Context(cmd) => context::run(&session, cmd),
        Command::Info(args) => info::run(&session, args).await,
        Command::Data(cmd) => data::run(&session, cmd).await,
        Command::Functions(cmd) => functions::run(&session, cmd).await,
        Command::Secrets(cmd) => functions::secrets(&session, cmd).await,
        Command::Keys(cmd) => keys::run(&session, cmd).await,
        Command::Storage(cmd) => storage::run(&session, cmd).await,
        Command::Jobs(cmd) => jobs::run(&session, cmd).await,
        Command::Login(args) => login::login(&session, args).await,
        Command::Logout => login::logout(&session).await,
        Command::Whoami(args) => login::whoami(&session, args).await,
        Command::Org(cmd) => org::run(&session, cmd).await,
        Command::Build(args) => deploy::build(&session, args),
        Command::Deploy(args) => deploy::deploy(&session, args).await,
        Command::Releases(cmd) => deploy::releases(&session, cmd).await,
        Command::Rollback(args) => deploy::rollback(&session, args).await,
        Command::Gateway(cmd) => gateway::run(&session, cmd).await,
        Command::Connect(cmd) => connect::run(&session, cmd).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&e);
            ExitCode::FAILURE
        }
    }
}
