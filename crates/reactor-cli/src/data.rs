//! `reactor data new|status|migrate|reset|types|query`: the project's SQL migrations, its
//! schema's TypeScript types, and the SQL console.

use crate::output::{cell, hinted, table};
use crate::session::Session;

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Create a new, empty migration file named after the time and NAME.
    New { name: String },
    /// Which migrations the current context's server has applied, and which are pending,
    /// modified or missing.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Apply the pending migrations, all in one transaction.
    Migrate,
    /// Empty the development database (SQLite, `reactor dev`) and apply every migration again.
    Reset {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Print TypeScript types of the exposed schema (rows, inserts, updates, rpc arguments).
    Types {
        /// Write them to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Run one SQL statement with the owner's rights (service key only) and show its rows.
    Query {
        sql: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(session: &Session, cmd: DataCommand) -> anyhow::Result<()> {
    // The SQL console needs no project, only a server.
    if let DataCommand::Query { sql, json } = &cmd {
        let (_, client) = session.client().await?;
        let result = client.query(sql).await?;
        if *json {
            println!("{}", serde_json::to_string_pretty(&result)?);
        } else if let Some(affected) = result["rows_affected"].as_u64() {
            eprintln!("{affected} row(s) affected");
        } else {
            let columns: Vec<&str> = result["columns"]
                .as_array()
                .map(|c| c.iter().filter_map(|n| n.as_str()).collect())
                .unwrap_or_default();
            let rows: Vec<Vec<String>> = result["rows"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|r| {
                            r.as_array()
                                // NULL as an empty cell.
                                .map(|cells| cells.iter().map(|c| cell(c, "")).collect())
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !columns.is_empty() {
                println!("{}", table(&columns, &rows));
            }
            eprintln!(
                "({} row{})",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" }
            );
        }
        return Ok(());
    }
    if let DataCommand::Types { output } = &cmd {
        let (_, client) = session.client().await?;
        let ts = client.types().await?;
        match output {
            Some(path) => {
                std::fs::write(path, ts)?;
                eprintln!("wrote {}", path.display());
            }
            None => print!("{ts}"),
        }
        return Ok(());
    }
    let manifest = session.load_manifest()?;
    let dir = manifest.migrations_dir();
    if let DataCommand::New { name } = &cmd {
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .trim_matches('_')
            .to_string();
        if slug.is_empty() {
            return Err(hinted(
                "the name has no letters or digits",
                "for example: reactor data new add_tags",
            ));
        }
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}_{slug}.sql", timestamp()));
        if path.exists() {
            return Err(hinted(
                format!("{} already exists", path.display()),
                "wait a second, or pick another name",
            ));
        }
        std::fs::write(
            &path,
            format!(
                "-- {name}\n-- Written in PostgreSQL's dialect; applied once, in name order.\n\n"
            ),
        )?;
        println!("{}", path.display());
        return Ok(());
    }
    let files: Vec<(String, String)> = reactor_data::migrations::read_dir(&dir)
        .map_err(|e| hinted(e.to_string(), "check [data].migrations_dir in reactor.toml"))?
        .into_iter()
        .map(|f| (f.name, f.sql))
        .collect();
    let (_, client) = session.client().await?;
    match cmd {
        DataCommand::Status { json } => {
            let states = client.migration_status(&files).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&states)?);
            } else if states.is_empty() {
                eprintln!("no migrations in {}", dir.display());
            } else {
                let rows: Vec<Vec<String>> = states
                    .iter()
                    .map(|s| {
                        vec![
                            s["name"].as_str().unwrap_or_default().into(),
                            s["status"].as_str().unwrap_or_default().into(),
                        ]
                    })
                    .collect();
                println!("{}", table(&["MIGRATION", "STATUS"], &rows));
            }
        }
        DataCommand::Migrate => {
            let applied = client.migrate(&files).await?;
            if applied.is_empty() {
                eprintln!("nothing to apply: the database is up to date");
            }
            for name in applied {
                eprintln!("applied {name}");
            }
        }
        DataCommand::Reset { yes } => {
            let (context, _) = session.client().await?;
            if !yes
                && !confirm(&format!(
                    "This deletes every table and row of the development database behind `{}`. Continue? [y/N] ",
                    context.name
                ))?
            {
                return Err(hinted(
                    "reset cancelled",
                    "pass --yes to reset without a question (scripts and CI)",
                ));
            }
            client.reset().await?;
            eprintln!("reset: the database is empty");
            for name in client.migrate(&files).await? {
                eprintln!("applied {name}");
            }
        }
        DataCommand::New { .. } | DataCommand::Query { .. } | DataCommand::Types { .. } => {}
    }
    Ok(())
}

/// Asks on the terminal; without one, the answer is no.
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// `YYYYMMDDHHMMSS` in UTC, so files sort in the order they were made.
fn timestamp() -> String {
    let (y, mo, d, h, mi, sec, _) = reactor_core::time::utc_now();
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{sec:02}")
}
