//! `reactor keys create|list|revoke`: the project's API keys, through the server's `/v1/keys`
//! (service key required).

use crate::output::table;
use crate::session::Session;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret, once.
    Create {
        /// `pub` (browser-safe; row-level security applies) or `svc` (server-side; bypasses it).
        #[arg(long, value_parser = ["pub", "svc"])]
        tier: String,
        /// What the key is for, e.g. `web` or `ci`.
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List keys: prefix, name, tier, created, last used. Never their secrets.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id; every server refuses it from the next request on.
    Revoke { id: String },
}

pub async fn run(session: &Session, cmd: KeysCommand) -> anyhow::Result<()> {
    let (_, client) = session.client().await?;
    match cmd {
        KeysCommand::Create { tier, name, json } => {
            let key = client.create_key(&tier, &name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&key)?);
            } else {
                println!("{}", key.key);
                eprintln!(
                    "created {} key `{}` ({}); it is shown only this once",
                    key.tier, key.name, key.id
                );
            }
        }
        KeysCommand::List { json } => {
            let keys = client.list_keys().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.clone(),
                            k.name.clone(),
                            k.tier.clone(),
                            format!("{}…", k.prefix),
                            k.created_at.clone(),
                            k.last_used_at.clone().unwrap_or_else(|| "never".into()),
                            if k.revoked {
                                "revoked".into()
                            } else {
                                "active".into()
                            },
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(
                        &[
                            "ID",
                            "NAME",
                            "TIER",
                            "PREFIX",
                            "CREATED",
                            "LAST USED",
                            "STATUS"
                        ],
                        &rows
                    )
                );
            }
        }
        KeysCommand::Revoke { id } => {
            client.revoke_key(&id).await?;
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}
