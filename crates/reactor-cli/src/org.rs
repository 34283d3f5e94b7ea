//! `reactor org create|list|use|members|invite|remove|role`: organizations, as the signed-in
//! user (`reactor login`).

use serde_json::Value;

use crate::output::{hinted, table};
use crate::session::Session;

#[derive(Debug, clap::Subcommand)]
pub enum OrgCommand {
    /// Create an organization; you become its owner.
    Create {
        name: String,
        /// The URL-friendly name [default: from the name].
        #[arg(long)]
        slug: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The organizations you belong to.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Act in an organization from now on (recorded in the context).
    Use { org: String },
    /// The members of an organization.
    Members {
        /// Id or slug [default: the context's org].
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Invite someone by email; prints the invitation token to pass on.
    Invite {
        email: String,
        #[arg(long, default_value = "member")]
        role: String,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a member (by email or user id).
    Remove {
        member: String,
        #[arg(long)]
        org: Option<String>,
    },
    /// Change a member's role.
    Role {
        member: String,
        role: String,
        #[arg(long)]
        org: Option<String>,
    },
}

pub async fn run(session: &Session, cmd: OrgCommand) -> anyhow::Result<()> {
    let (selected, client) = session.client().await?;
    let mut config = session.config()?;
    let context_org = config.context(&selected.name)?.org.clone();
    let org_or_context = |org: Option<String>| {
        org.or_else(|| context_org.clone()).ok_or_else(|| {
            hinted(
                "no organization named",
                "pass --org, or pick one with `reactor org use ORG`",
            )
        })
    };
    match cmd {
        OrgCommand::Create { name, slug, json } => {
            let org = client.create_org(&name, slug.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&org)?);
            } else {
                eprintln!(
                    "created organization `{}` ({}); `reactor org use {}` to act in it",
                    text(&org["name"]),
                    text(&org["slug"]),
                    text(&org["slug"])
                );
            }
        }
        OrgCommand::List { json } => {
            let orgs = client.orgs().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&orgs)?);
            } else if orgs.is_empty() {
                eprintln!("you belong to no organization; `reactor org create NAME` makes one");
            } else {
                let rows: Vec<Vec<String>> = orgs
                    .iter()
                    .map(|o| {
                        let current = context_org
                            .as_deref()
                            .is_some_and(|c| c == text(&o["slug"]) || c == text(&o["id"]));
                        vec![
                            if current { "*".into() } else { String::new() },
                            text(&o["slug"]),
                            text(&o["name"]),
                            text(&o["role"]),
                            text(&o["id"]),
                        ]
                    })
                    .collect();
                println!("{}", table(&["", "SLUG", "NAME", "ROLE", "ID"], &rows));
            }
        }
        OrgCommand::Use { org } => {
            let orgs = client.orgs().await?;
            let Some(found) = orgs
                .iter()
                .find(|o| text(&o["slug"]) == org || text(&o["id"]) == org)
            else {
                return Err(hinted(
                    format!("you are not a member of `{org}`"),
                    "`reactor org list` shows your organizations",
                ));
            };
            config.set_org(&selected.name, Some(&text(&found["slug"])))?;
            config.save()?;
            eprintln!(
                "context `{}` now acts in `{}` as {}",
                selected.name,
                text(&found["slug"]),
                text(&found["role"])
            );
        }
        OrgCommand::Members { org, json } => {
            let members = client.members(&org_or_context(org)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&members)?);
            } else {
                let rows: Vec<Vec<String>> = members
                    .iter()
                    .map(|m| {
                        vec![
                            text(&m["email"]),
                            text(&m["role"]),
                            text(&m["joined_at"]),
                            text(&m["user_id"]),
                        ]
                    })
                    .collect();
                println!("{}", table(&["EMAIL", "ROLE", "JOINED", "USER ID"], &rows));
            }
        }
        OrgCommand::Invite {
            email,
            role,
            org,
            json,
        } => {
            let invite = client.invite(&org_or_context(org)?, &email, &role).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&invite)?);
            } else {
                println!("{}", text(&invite["token"]));
                eprintln!(
                    "invited {} as {}; they join by signing up or in with this token (`invite_token`) or POST /auth/v1/invites/accept",
                    text(&invite["email"]),
                    text(&invite["role"])
                );
            }
        }
        OrgCommand::Remove { member, org } => {
            let org = org_or_context(org)?;
            let user = member_id(&client, &org, &member).await?;
            client.remove_member(&org, &user).await?;
            eprintln!("removed {member} from `{org}`");
        }
        OrgCommand::Role { member, role, org } => {
            let org = org_or_context(org)?;
            let user = member_id(&client, &org, &member).await?;
            client.set_member_role(&org, &user, &role).await?;
            eprintln!("{member} is now {role} in `{org}`");
        }
    }
    Ok(())
}

/// A member's user id, from an email address or the id itself.
async fn member_id(
    client: &reactor_client::Client,
    org: &str,
    member: &str,
) -> anyhow::Result<String> {
    let members = client.members(org).await?;
    let wanted = member.to_lowercase();
    members
        .iter()
        .find(|m| text(&m["email"]) == wanted || text(&m["user_id"]) == member)
        .map(|m| text(&m["user_id"]))
        .ok_or_else(|| {
            hinted(
                format!("{member} is not a member of `{org}`"),
                "`reactor org members` lists them",
            )
        })
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}
