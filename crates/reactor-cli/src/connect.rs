//! `reactor connect integrations|connections|delete`: Connect's state. Integrations are
//! declared in `reactor.toml`; users make connections through the app.

use crate::output::{cell, table};
use crate::session::Session;

#[derive(Debug, clap::Subcommand)]
pub enum ConnectCommand {
    /// The project's integrations: provider, auth mode, scopes.
    Integrations {
        #[arg(long)]
        json: bool,
    },
    /// Connections (all of them with the service key): owner, status, token expiry.
    Connections {
        /// Only this integration's.
        #[arg(long)]
        integration: Option<String>,
        /// Only this end user's (connections the service key made for them).
        #[arg(long)]
        end_user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Deletes a connection (its credentials go with it).
    Delete {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(session: &Session, cmd: ConnectCommand) -> anyhow::Result<()> {
    let (_, client) = session.client().await?;
    match cmd {
        ConnectCommand::Integrations { json } => {
            let answer = client.connect_integrations().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer["integrations"])?);
                return Ok(());
            }
            let rows = answer["integrations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if rows.is_empty() {
                eprintln!(
                    "no integrations: declare them as [[connect.integrations]] in reactor.toml"
                );
                return Ok(());
            }
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|i| {
                    let scopes: Vec<String> = i["scopes"]
                        .as_array()
                        .map(|s| s.iter().map(|v| cell(v, "")).collect())
                        .unwrap_or_default();
                    vec![
                        cell(&i["name"], "?"),
                        cell(&i["provider"], "?"),
                        cell(&i["auth_mode"], "?"),
                        if scopes.is_empty() {
                            "-".into()
                        } else {
                            scopes.join(" ")
                        },
                        if i["webhooks"] == true {
                            "verified"
                        } else {
                            "-"
                        }
                        .into(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["NAME", "PROVIDER", "AUTH", "SCOPES", "WEBHOOKS"], &body)
            );
        }
        ConnectCommand::Connections {
            integration,
            end_user,
            json,
        } => {
            let answer = client
                .connect_connections(integration.as_deref(), end_user.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer["connections"])?);
                return Ok(());
            }
            let rows = answer["connections"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if rows.is_empty() {
                eprintln!("no connections");
                return Ok(());
            }
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|c| {
                    let owner = if !c["end_user_id"].is_null() {
                        format!("end user {}", cell(&c["end_user_id"], "?"))
                    } else {
                        format!("user {}", cell(&c["user_id"], "?"))
                    };
                    vec![
                        cell(&c["id"], "?"),
                        cell(&c["integration"], "?"),
                        owner,
                        cell(&c["org_id"], "-"),
                        cell(&c["status"], "?"),
                        cell(&c["expires_at"], "-"),
                        cell(&c["last_refresh_at"], "-"),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "ID",
                        "INTEGRATION",
                        "OWNER",
                        "ORG",
                        "STATUS",
                        "TOKEN EXPIRES",
                        "LAST REFRESH"
                    ],
                    &body
                )
            );
        }
        ConnectCommand::Delete { id, json } => {
            client.connect_delete(&id).await?;
            if json {
                println!("{}", serde_json::json!({ "deleted": id }));
            } else {
                println!("deleted connection {id}");
            }
        }
    }
    Ok(())
}
