//! `reactor context add|use|list|show|remove`.

use std::io::Read;

use reactor_manifest::resolve::{ContextSource, TokenSource};
use serde_json::json;

use crate::output::{hinted, table};
use crate::session::Session;

#[derive(Debug, clap::Subcommand)]
pub enum ContextCommand {
    /// Add a context.
    Add {
        name: String,
        /// The server's base URL, e.g. https://api.example.com.
        #[arg(long)]
        endpoint: String,
        /// The organization to act in.
        #[arg(long)]
        org: Option<String>,
        /// The project's public key (rk_pub_…) on that server, used beside `reactor login`.
        #[arg(long)]
        key: Option<String>,
        /// Read a token for this context from standard input and store it (OS keychain,
        /// or ~/.reactor/credentials.toml where there is none).
        #[arg(long)]
        token_stdin: bool,
    },
    /// Make a context the default.
    Use { name: String },
    /// Set the project's public key (rk_pub_…) of a context.
    SetKey { name: String, key: String },
    /// List contexts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a context (the current one by default) and where its token comes from.
    Show {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a context and its stored token.
    Remove { name: String },
}

pub fn run(session: &Session, cmd: ContextCommand) -> anyhow::Result<()> {
    let mut config = session.config()?;
    match cmd {
        ContextCommand::Add {
            name,
            endpoint,
            org,
            key,
            token_stdin,
        } => {
            let first = config.default_context().is_none();
            config.add_context(&name, &endpoint, org.as_deref())?;
            if let Some(key) = &key {
                check_public_key(key)?;
                config.set_key(&name, Some(key))?;
            }
            if first {
                config.use_context(&name)?;
            }
            if token_stdin {
                let mut token = String::new();
                std::io::stdin().read_to_string(&mut token)?;
                let token = token.trim();
                if token.is_empty() {
                    return Err(hinted(
                        "--token-stdin read an empty token",
                        "pipe the token in: `echo $TOKEN | reactor context add …`",
                    ));
                }
                let (auth, notice) = session.store().save(&name, token)?;
                if let Some(notice) = notice {
                    eprintln!("{notice}");
                }
                config.set_auth(&name, Some(&auth))?;
            }
            config.save()?;
            eprintln!(
                "added context `{name}` → {}{}",
                config.context(&name)?.endpoint,
                if first { " (now the default)" } else { "" }
            );
        }
        ContextCommand::SetKey { name, key } => {
            check_public_key(&key)?;
            config.set_key(&name, Some(&key))?;
            config.save()?;
            eprintln!(
                "context `{name}` now uses project key {}…",
                &key[..key.len().min(13)]
            );
        }
        ContextCommand::Use { name } => {
            config.use_context(&name)?;
            config.save()?;
            eprintln!("now using context `{name}`");
        }
        ContextCommand::List { json } => {
            let current = session.select_context(&config).map(|s| s.name);
            let rows: Vec<_> = config
                .contexts()
                .iter()
                .map(|(name, c)| {
                    (
                        name,
                        c,
                        current.as_deref() == Some(name.as_str()),
                        config.default_context() == Some(name.as_str()),
                    )
                })
                .collect();
            if json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|(name, c, current, default)| {
                        json!({"name": name, "endpoint": c.endpoint, "org": c.org, "current": current, "default": default})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if rows.is_empty() {
                eprintln!(
                    "no contexts yet; `reactor dev` registers `local`, `reactor context add` adds others"
                );
            } else {
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|(name, c, current, _)| {
                        vec![
                            if *current { "*".into() } else { String::new() },
                            name.to_string(),
                            c.endpoint.clone(),
                            c.org.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                println!("{}", table(&["", "NAME", "ENDPOINT", "ORG"], &cells));
            }
        }
        ContextCommand::Show { name, json } => {
            let (name, source) = match name {
                Some(name) => (name, None),
                None => match session.select_context(&config) {
                    Some(s) => (s.name, Some(s.source)),
                    None => {
                        return Err(hinted(
                            "no context selected",
                            "name one (`reactor context show NAME`), or select one with --context, REACTOR_CONTEXT or `reactor context use`",
                        ));
                    }
                },
            };
            let context = config.context(&name)?.clone();
            let token = session
                .resolve_token(&config, &name)?
                .map(|(_, source)| source);
            let selected_by = source.as_ref().map(ContextSource::to_string);
            let token_source = token.as_ref().map(TokenSource::to_string);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "name": name,
                        "endpoint": context.endpoint,
                        "org": context.org,
                        "selected_by": selected_by,
                        "token_source": token_source,
                    }))?
                );
            } else {
                println!("name         {name}");
                println!("endpoint     {}", context.endpoint);
                println!("org          {}", context.org.as_deref().unwrap_or("-"));
                if let Some(by) = selected_by {
                    println!("selected by  {by}");
                }
                println!(
                    "token        {}",
                    token_source.map_or("none".to_string(), |s| format!("from {s}"))
                );
            }
        }
        ContextCommand::Remove { name } => {
            let removed = config.remove_context(&name)?;
            if let Some(auth) = &removed.auth {
                session.store().delete(&name, auth)?;
            }
            config.save()?;
            eprintln!("removed context `{name}`");
        }
    }
    Ok(())
}

/// A context keeps only the public key: service keys are secrets and go through the token chain.
fn check_public_key(key: &str) -> anyhow::Result<()> {
    match reactor_core::keys::tier_of(key) {
        Some(reactor_core::KeyTier::Public) => Ok(()),
        Some(reactor_core::KeyTier::Service) => Err(hinted(
            "that is a service key, which is a secret and does not belong in config.toml",
            "pass the project's rk_pub_ key here; give a service key with --token-stdin or REACTOR_TOKEN",
        )),
        None => Err(hinted(
            "that is not a Reactor project key",
            "project keys look like rk_pub_ followed by 32 letters and digits",
        )),
    }
}
