//! `reactor build`, `reactor deploy`, `reactor releases list`, `reactor rollback`.

use std::collections::HashSet;

use serde_json::Value;

use crate::output::{cell, hinted, table};
use crate::session::Session;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Print what went in as JSON.
    #[arg(long)]
    json: bool,
    /// Package the sites as they are, without running their `build` commands.
    #[arg(long)]
    no_site_build: bool,
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Verify the bundle and run the migrations in a transaction that is rolled back:
    /// shows what would change, changes nothing.
    #[arg(long)]
    dry_run: bool,
    /// Package the sites as they are, without running their `build` commands.
    #[arg(long)]
    no_site_build: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReleasesCommand {
    /// The releases of the server, the newest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The release to go back to (its id or a prefix of 4+ characters) [default: the one
    /// before the current].
    release: Option<String>,
    #[arg(long)]
    json: bool,
}

fn make_bundle(session: &Session, site_builds: bool) -> anyhow::Result<reactor_bundle::Built> {
    let manifest = session.load_manifest()?;
    if site_builds {
        reactor_bundle::run_site_builds(&manifest).map_err(bundle_error)?;
    }
    reactor_bundle::build(&manifest, &reactor_bundle::BuildOptions { out_dir: None })
        .map_err(bundle_error)
}

fn bundle_error(e: reactor_bundle::BundleError) -> anyhow::Error {
    match e.hint() {
        Some(hint) => hinted(e.to_string(), hint),
        None => e.into(),
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 * 1024 => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
        b if b >= 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

pub fn build(session: &Session, args: BuildArgs) -> anyhow::Result<()> {
    let built = make_bundle(session, !args.no_site_build)?;
    let r = &built.report;
    if args.json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "Built release {} ({}, {} of files)",
        reactor_bundle::short(&r.release),
        size(r.bytes),
        size(r.content_bytes)
    );
    println!("  bundle      {}", r.path);
    println!(
        "  migrations  {}",
        if r.migrations.is_empty() {
            "none".to_string()
        } else {
            r.migrations.join(", ")
        }
    );
    for f in &r.functions {
        println!(
            "  function    {} ({:?}, {} module{}, {})",
            f.name,
            f.kind,
            f.modules,
            if f.modules == 1 { "" } else { "s" },
            size(f.bytes)
        );
    }
    for s in &r.sites {
        println!(
            "  site        {} ({} files, {}, {} precompressed)",
            s.name,
            s.files,
            size(s.bytes),
            s.compressed
        );
    }
    Ok(())
}

/// The commit the project is at, when it is a git checkout.
fn git_commit(root: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

pub async fn deploy(session: &Session, args: DeployArgs) -> anyhow::Result<()> {
    let (selected, client) = session.client().await?;
    let built = make_bundle(session, !args.no_site_build)?;
    let release = built.release.clone();
    let short = reactor_bundle::short(&release).to_string();

    // Only what the server lacks travels.
    let hashes: Vec<String> = built.index.files.iter().map(|f| f.sha256.clone()).collect();
    let missing: HashSet<String> = client.deploy_missing(&hashes).await?.into_iter().collect();
    let thin =
        reactor_bundle::thin(&built.path, |f| missing.contains(&f.sha256)).map_err(bundle_error)?;
    let sending = built
        .index
        .files
        .iter()
        .filter(|f| missing.contains(&f.sha256))
        .count();
    if !args.json {
        eprintln!(
            "Deploying release {short} to {} ({}): {sending} of {} files to upload",
            selected.name,
            client.endpoint(),
            built.index.files.len()
        );
    }
    let bar = (!args.json).then(|| crate::storage::bar("uploading", Some(thin.len() as u64)));
    let progress = {
        let bar = bar.clone();
        move |sent: u64| {
            if let Some(bar) = &bar {
                bar.set_position(sent);
            }
        }
    };
    let manifest = session.load_manifest()?;
    let commit = git_commit(&manifest.root);
    let outcome = client
        .deploy_bundle(thin, args.dry_run, commit.as_deref(), progress)
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let outcome = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(());
    }
    let list = |v: &Value| {
        let names: Vec<String> = v
            .as_array()
            .map(|a| a.iter().map(|x| cell(x, "")).collect())
            .unwrap_or_default();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    if args.dry_run {
        println!("Dry run of release {short}: nothing was changed.");
        println!("  migrations to apply  {}", list(&outcome["migrations"]));
    } else if outcome["unchanged"].as_bool() == Some(true) {
        println!("Release {short} is already the one serving; nothing changed.");
        return Ok(());
    } else {
        println!("Deployed release {short}: it is serving now.");
        println!("  migrations applied   {}", list(&outcome["migrations"]));
    }
    println!("  functions            {}", list(&outcome["functions"]));
    println!("  sites                {}", list(&outcome["sites"]));
    println!("  jobs                 {}", list(&outcome["jobs"]));
    if let Some(previous) = outcome["previous"].as_str()
        && !args.dry_run
    {
        println!(
            "  previous release     {} (`reactor rollback` goes back to it)",
            reactor_bundle::short(previous)
        );
    }
    Ok(())
}

pub async fn releases(session: &Session, cmd: ReleasesCommand) -> anyhow::Result<()> {
    let (_, client) = session.client().await?;
    let ReleasesCommand::List { json } = cmd;
    let answer = client.releases().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let releases = answer["releases"].as_array().cloned().unwrap_or_default();
    if releases.is_empty() {
        eprintln!("no releases yet: `reactor deploy` makes the first");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            vec![
                format!(
                    "{}{}",
                    cell(&r["short"], "-"),
                    if r["active"].as_bool() == Some(true) {
                        " *"
                    } else {
                        ""
                    }
                ),
                cell(&r["status"], "-"),
                cell(&r["created_at"], "-"),
                cell(&r["created_by"], "-"),
                r["git_commit"]
                    .as_str()
                    .map_or("-".into(), |c| c[..c.len().min(10)].to_string()),
                cell(&r["activated_at"], "-"),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "RELEASE",
                "STATUS",
                "CREATED",
                "BY",
                "GIT",
                "LAST SERVING FROM"
            ],
            &rows
        )
    );
    println!("(* serving now)");
    Ok(())
}

pub async fn rollback(session: &Session, args: RollbackArgs) -> anyhow::Result<()> {
    let (_, client) = session.client().await?;
    let answer = client.rollback(args.release.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    println!(
        "Rolled back to release {}: it is serving now (code, sites and jobs).",
        reactor_bundle::short(answer["release"].as_str().unwrap_or("?"))
    );
    let kept: Vec<String> = answer["migrations_kept"]
        .as_array()
        .map(|a| a.iter().map(|m| cell(m, "")).collect())
        .unwrap_or_default();
    if kept.is_empty() {
        println!("  migrations: none to keep (the release knows every migration applied)");
    } else {
        println!(
            "  migrations stay applied (never rolled back silently): {}",
            kept.join(", ")
        );
        println!("  write a new migration to undo them if the older code needs it");
    }
    Ok(())
}
