//! `reactor info`: which server the current context reaches, and what it offers.

use crate::session::Session;

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(session: &Session, args: InfoArgs) -> anyhow::Result<()> {
    let (selected, client) = session.client().await?;
    let info = client.info().await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "context": selected.name,
                "endpoint": client.endpoint(),
                "version": info.version,
                "project": info.project.as_ref().map(|p| serde_json::json!({"id": p.id, "name": p.name})),
                "topology": info.topology,
                "database": info.database,
                "capabilities": info.capabilities.iter().map(|c| serde_json::json!({"name": c.name, "status": c.status})).collect::<Vec<_>>(),
                "caller": {"tier": info.caller.tier, "role": info.caller.role},
            }))?
        );
        return Ok(());
    }
    let project = info.project.as_ref().map_or_else(
        || "(none deployed yet)".to_string(),
        |p| format!("{} ({})", p.name, p.id),
    );
    println!("context       {} ({})", selected.name, selected.source);
    println!("endpoint      {}", client.endpoint());
    println!(
        "server        reactor {} — {} on {}",
        info.version, info.topology, info.database
    );
    println!("project       {project}");
    let names = |status: &str| {
        info.capabilities
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("capabilities  {}", names("serving"));
    let planned = names("planned");
    if !planned.is_empty() {
        println!("coming soon   {planned}");
    }
    println!(
        "you           {} key ({})",
        info.caller.tier, info.caller.role
    );
    Ok(())
}
