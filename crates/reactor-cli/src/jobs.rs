//! `reactor jobs list|run|runs|show|cancel|retry`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::output::{cell, hinted, table};
use crate::session::Session;

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// The project's jobs: trigger, next run, last status.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Enqueue a run of a job now.
    Run {
        name: String,
        /// The payload, as JSON.
        #[arg(long, short)]
        data: Option<String>,
        /// Wait until the run has finished (succeeded, dead or cancelled); fail unless it
        /// succeeded.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// A job's latest runs.
    Runs {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One run: status, attempts, timings, error and the function's log lines.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running run.
    Cancel { id: String },
    /// Run a finished run again, from its first attempt.
    Retry { id: String },
}

fn text(v: &Value) -> String {
    cell(v, "-")
}

fn finished(status: &Value) -> bool {
    matches!(status.as_str(), Some("succeeded" | "dead" | "cancelled"))
}

pub async fn run(session: &Session, cmd: JobsCommand) -> anyhow::Result<()> {
    let (_, client) = session.client().await?;
    match cmd {
        JobsCommand::List { json } => {
            let jobs = client.jobs().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
                return Ok(());
            }
            if jobs.is_empty() {
                eprintln!("no jobs: declare them as [[jobs]] in reactor.toml");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|j| {
                    let t = &j["trigger"];
                    let trigger = match t["type"].as_str() {
                        Some("cron") => format!("cron {}", text(&t["schedule"])),
                        Some("event") => format!("event {}", text(&t["event"])),
                        other => other.unwrap_or("-").to_string(),
                    };
                    vec![
                        text(&j["name"]),
                        text(&j["function"]),
                        trigger,
                        text(&j["next_run_at"]),
                        text(&j["last_status"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["JOB", "FUNCTION", "TRIGGER", "NEXT RUN", "LAST"], &rows)
            );
        }
        JobsCommand::Run {
            name,
            data,
            wait,
            timeout,
            json,
        } => {
            let payload: Value = match data.as_deref() {
                None => Value::Null,
                Some(text) => serde_json::from_str(text).map_err(|e| {
                    hinted(
                        format!("--data is not JSON: {e}"),
                        r#"quote it for the shell: --data '{"to": "ada@example.com"}'"#,
                    )
                })?,
            };
            let mut run = client.enqueue_run(&name, payload).await?;
            let id = text(&run["id"]);
            if wait {
                let deadline = Instant::now() + Duration::from_secs(timeout);
                while !finished(&run["status"]) {
                    if Instant::now() > deadline {
                        return Err(hinted(
                            format!("run {id} did not finish within {timeout} s"),
                            format!("`reactor jobs show {id}` tells where it stands"),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    run = client.job_run(&id).await?;
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else if wait {
                print_run(&run);
            } else {
                println!("{id}");
                eprintln!("queued run {id} of {name}: `reactor jobs show {id}` follows it");
            }
            if wait && run["status"] != "succeeded" {
                return Err(hinted(
                    format!("run {id} ended {}", text(&run["status"])),
                    format!("`reactor jobs show {id}` has its error and log lines"),
                ));
            }
        }
        JobsCommand::Runs { name, limit, json } => {
            let runs = client.job_runs(&name, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    vec![
                        text(&r["id"]),
                        text(&r["status"]),
                        format!("{}/{}", r["attempts"], r["max_attempts"]),
                        text(&r["created_at"]),
                        r["duration_ms"]
                            .as_i64()
                            .map_or_else(|| "-".into(), |d| format!("{d} ms")),
                        text(&r["last_error"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["RUN", "STATUS", "ATTEMPTS", "CREATED", "TOOK", "ERROR"],
                    &rows
                )
            );
        }
        JobsCommand::Show { id, json } => {
            let run = client.job_run(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                print_run(&run);
            }
        }
        JobsCommand::Cancel { id } => {
            let run = client.job_run_action(&id, "cancel").await?;
            eprintln!("run {id} is {}", text(&run["status"]));
        }
        JobsCommand::Retry { id } => {
            let run = client.job_run_action(&id, "retry").await?;
            // A worker may have claimed it already: say what it is now.
            eprintln!("run {id} queued again (now {})", text(&run["status"]));
        }
    }
    Ok(())
}

fn print_run(run: &Value) {
    println!("run       {}", text(&run["id"]));
    println!("job       {}", text(&run["job"]));
    println!("status    {}", text(&run["status"]));
    println!("attempts  {}/{}", run["attempts"], run["max_attempts"]);
    println!("trigger   {}", run["trigger"]);
    println!("payload   {}", run["payload"]);
    println!("created   {}", text(&run["created_at"]));
    println!("started   {}", text(&run["started_at"]));
    println!("finished  {}", text(&run["finished_at"]));
    if let Some(e) = run["last_error"].as_str() {
        println!("error     {e}");
    }
    if let Some(lines) = run["logs"].as_array().filter(|l| !l.is_empty()) {
        println!("logs");
        for l in lines {
            println!(
                "  {} {:5} {}",
                text(&l["time"]),
                text(&l["level"]),
                text(&l["message"])
            );
        }
    }
}
