//! `reactor gateway usage`: the AI gateway's usage table. The gateway itself is configured
//! in `reactor.toml`; this only reads its state.

use crate::output::{cell, table};
use crate::session::Session;

#[derive(Debug, clap::Subcommand)]
pub enum GatewayCommand {
    /// Requests, tokens and cost, grouped by caller, model and day (service key).
    Usage {
        /// Comma-separated: caller, model, day.
        #[arg(long, default_value = "caller,model,day")]
        by: String,
        /// The first day counted, YYYY-MM-DD [default: 30 days ago].
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(session: &Session, cmd: GatewayCommand) -> anyhow::Result<()> {
    let (_, client) = session.client().await?;
    let GatewayCommand::Usage { by, since, json } = cmd;
    let answer = client.gateway_usage(&by, since.as_deref()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let rows = answer["usage"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() || rows.iter().all(|r| r["requests"] == 0) {
        eprintln!("no gateway usage since {}", cell(&answer["since"], "?"));
        return Ok(());
    }
    let columns: Vec<&str> = ["caller", "model", "day"]
        .into_iter()
        .filter(|c| by.split(',').any(|b| b.trim() == *c))
        .collect();
    let mut header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    header.extend(["REQUESTS", "PROMPT", "COMPLETION", "COST (USD)"].map(String::from));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut line: Vec<String> = columns.iter().map(|c| cell(&r[*c], "-")).collect();
            line.push(cell(&r["requests"], "0"));
            line.push(cell(&r["prompt_tokens"], "0"));
            line.push(cell(&r["completion_tokens"], "0"));
            line.push(format!("{:.6}", r["cost"].as_f64().unwrap_or(0.0)));
            line
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    print!("{}", table(&header, &body));
    Ok(())
}
