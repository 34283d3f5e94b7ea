//! `reactor functions list|new|invoke|logs` and `reactor secrets set|list|unset`.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use crate::output::{hinted, table};
use crate::session::Session;

#[derive(Debug, clap::Subcommand)]
pub enum FunctionsCommand {
    /// The functions the current context's server runs, with their limits and load errors.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Scaffold functions/NAME/index.ts and register it in reactor.toml.
    New {
        name: String,
        /// Write JavaScript (index.js) instead of TypeScript.
        #[arg(long)]
        js: bool,
    },
    /// Call a function and print its answer (the body on stdout, the status on stderr).
    Invoke {
        name: String,
        /// The request body; `-` reads it from standard input. Sent as JSON unless a
        /// content-type header says otherwise.
        #[arg(long, short)]
        data: Option<String>,
        /// [default: POST with --data, GET without]
        #[arg(long, short = 'X')]
        method: Option<String>,
        /// A request header, `Name: value`; repeatable.
        #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// A path after the function's name, e.g. `/items/42?full=1`.
        #[arg(long, default_value = "")]
        path: String,
        /// Print the status line and headers before the body.
        #[arg(long, short)]
        include: bool,
    },
    /// Show what a function wrote to `console`.
    Logs {
        name: String,
        /// Keep printing new lines as they come.
        #[arg(long, short)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Set a secret (functions read it as `env.NAME`). Without VALUE it is read from
    /// standard input, so it stays out of the shell's history.
    Set { name: String, value: Option<String> },
    /// Names and when they changed; values are never shown.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret.
    Unset { name: String },
}

pub async fn run(session: &Session, cmd: FunctionsCommand) -> anyhow::Result<()> {
    match cmd {
        FunctionsCommand::New { name, js } => new_function(session, &name, js),
        FunctionsCommand::List { json } => {
            let (_, client) = session.client().await?;
            let functions = client.functions().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&functions)?);
                return Ok(());
            }
            if functions.is_empty() {
                eprintln!("no functions: `reactor functions new <name>` makes one");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = functions
                .iter()
                .map(|f| {
                    let limits = &f["limits"];
                    vec![
                        f["name"].as_str().unwrap_or_default().to_string(),
                        f["entry"].as_str().unwrap_or_default().to_string(),
                        format!(
                            "{} MiB, {} ms, {} at once",
                            limits["memory_mb"], limits["timeout_ms"], limits["concurrency"]
                        ),
                        match (f["error"].as_str(), f["hash"].as_str()) {
                            (Some(e), Some(_)) => format!("error (serving previous code): {e}"),
                            (Some(e), None) => format!("error: {e}"),
                            (None, Some(h)) => format!("ok {}", &h[..h.len().min(12)]),
                            (None, None) => "not loaded".into(),
                        },
                    ]
                })
                .collect();
            println!("{}", table(&["NAME", "ENTRY", "LIMITS", "STATUS"], &rows));
            Ok(())
        }
        FunctionsCommand::Invoke {
            name,
            data,
            method,
            headers,
            path,
            include,
        } => {
            let (_, client) = session.client().await?;
            let body = match data.as_deref() {
                Some("-") => {
                    let mut buf = Vec::new();
                    std::io::stdin().read_to_end(&mut buf)?;
                    Some(buf)
                }
                Some(text) => Some(text.as_bytes().to_vec()),
                None => None,
            };
            let mut parsed = Vec::new();
            for h in &headers {
                let Some((k, v)) = h.split_once(':') else {
                    return Err(hinted(
                        format!("`{h}` is not a header"),
                        "write headers as `Name: value`, e.g. -H 'x-trace: 1'",
                    ));
                };
                parsed.push((k.trim().to_string(), v.trim().to_string()));
            }
            if body.is_some()
                && !parsed
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                parsed.push(("content-type".into(), "application/json".into()));
            }
            let method = method
                .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into())
                .to_uppercase();
            let method = reactor_client::Method::from_bytes(method.as_bytes()).map_err(|_| {
                hinted(
                    format!("`{method}` is not an HTTP method"),
                    "use GET, POST, PUT, PATCH, DELETE…",
                )
            })?;
            let answer = client.invoke(&name, method, &path, &parsed, body).await?;
            if let Some(error) = answer.reactor_error() {
                let mut message = error.message.clone();
                if let Some(details) = &error.details {
                    message.push_str(&format!("\n{details}"));
                }
                return Err(match error.hint {
                    Some(hint) => hinted(message, hint),
                    None => anyhow::anyhow!(message),
                });
            }
            if include {
                println!("HTTP {}", answer.status);
                for (k, v) in &answer.headers {
                    println!("{k}: {v}");
                }
                println!();
            }
            let mut out = std::io::stdout();
            out.write_all(&answer.body)?;
            if !answer.body.ends_with(b"\n") && std::io::stdout().is_terminal() {
                println!();
            }
            out.flush()?;
            if answer.status >= 400 {
                return Err(anyhow::anyhow!("the function answered {}", answer.status));
            }
            Ok(())
        }
        FunctionsCommand::Logs { name, follow, json } => {
            let (_, client) = session.client().await?;
            let mut after = 0;
            loop {
                let lines = client
                    .function_logs(&name, after, if follow { 25 } else { 0 })
                    .await?;
                for line in &lines {
                    after = after.max(line["seq"].as_u64().unwrap_or(after));
                    if json {
                        println!("{line}");
                    } else {
                        println!(
                            "{} {:5} [{}] {}",
                            line["time"].as_str().unwrap_or_default(),
                            line["level"].as_str().unwrap_or_default(),
                            line["invocation"].as_str().unwrap_or_default(),
                            line["message"].as_str().unwrap_or_default()
                        );
                    }
                }
                if !follow {
                    if lines.is_empty() && !json {
                        eprintln!("no log lines yet for `{name}`");
                    }
                    return Ok(());
                }
            }
        }
    }
}

pub async fn secrets(session: &Session, cmd: SecretsCommand) -> anyhow::Result<()> {
    let (_, client) = session.client().await?;
    match cmd {
        SecretsCommand::Set { name, value } => {
            let value = match value {
                Some(v) => v,
                None => {
                    if std::io::stdin().is_terminal() {
                        eprint!("value for {name}: ");
                    }
                    let mut buf = String::new();
                    std::io::stdin().read_to_string(&mut buf)?;
                    buf.trim_end_matches(['\n', '\r']).to_string()
                }
            };
            client.set_secret(&name, &value).await?;
            eprintln!("secret {name} set");
        }
        SecretsCommand::List { json } => {
            let list = client.secrets().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                eprintln!("no secrets: `reactor secrets set NAME` adds one");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s["name"].as_str().unwrap_or_default().to_string(),
                            s["updated_at"].as_str().unwrap_or_default().to_string(),
                        ]
                    })
                    .collect();
                println!("{}", table(&["NAME", "UPDATED"], &rows));
            }
        }
        SecretsCommand::Unset { name } => {
            client.unset_secret(&name).await?;
            eprintln!("secret {name} removed");
        }
    }
    Ok(())
}

const TS_TEMPLATE: &str = r#"// The `NAME` function: a Web-standard handler, run in a fresh sandbox per request.
//   reactor functions invoke NAME --data '{"name":"Ada"}'
// or any HTTP client: POST /fn/v1/NAME with a project key (apikey header).
export default async (req: Request, env: Record<string, string>): Promise<Response> => {
  const text = await req.text();
  const { name = "world" } = text ? (JSON.parse(text) as { name?: string }) : {};
  console.log(`greeting ${name}`);
  return Response.json({ message: `Hello, ${name}!`, user: req.headers.get("x-reactor-user-id") });
};
"#;

const JS_TEMPLATE: &str = r#"// The `NAME` function: a Web-standard handler, run in a fresh sandbox per request.
//   reactor functions invoke NAME --data '{"name":"Ada"}'
// or any HTTP client: POST /fn/v1/NAME with a project key (apikey header).
export default async (req, env) => {
  const text = await req.text();
  const { name = "world" } = text ? JSON.parse(text) : {};
  console.log(`greeting ${name}`);
  return Response.json({ message: `Hello, ${name}!`, user: req.headers.get("x-reactor-user-id") });
};
"#;

fn new_function(session: &Session, name: &str, js: bool) -> anyhow::Result<()> {
    let manifest = session.load_manifest()?;
    let valid = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(hinted(
            format!("`{name}` is not a valid function name"),
            "use 1 to 63 lowercase letters, digits, `-` and `_`, starting with a letter or digit",
        ));
    }
    if manifest.function(name).is_some() {
        return Err(hinted(
            format!("reactor.toml already declares a function named `{name}`"),
            "pick another name, or edit the existing function",
        ));
    }
    let source = format!("functions/{name}");
    let dir = manifest.root.join(&source);
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        return Err(hinted(
            format!("{} exists and is not empty", dir.display()),
            "pick another name, or add a [[functions]] entry for it to reactor.toml by hand",
        ));
    }
    let entry = if js { "index.js" } else { "index.ts" };
    std::fs::create_dir_all(&dir)?;
    let template = if js { JS_TEMPLATE } else { TS_TEMPLATE };
    std::fs::write(dir.join(entry), template.replace("NAME", name))?;

    let manifest_path = manifest.root.join(reactor_manifest::MANIFEST_FILE);
    let before = std::fs::read_to_string(&manifest_path)?;
    let mut after = before.clone();
    if !after.ends_with('\n') {
        after.push('\n');
    }
    after.push_str(&format!(
        "\n[[functions]]\nname = \"{name}\"\nsource = \"{source}\"\nentry = \"{entry}\"\n"
    ));
    write_atomically(&manifest_path, &after)?;
    // The manifest must still load; if it does not, put the user's file back as it was.
    if let Err(e) = reactor_manifest::Manifest::load(&manifest_path) {
        write_atomically(&manifest_path, &before)?;
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e.into());
    }
    println!("created {}/{entry}", source);
    println!("registered `{name}` in reactor.toml");
    println!("try it: reactor functions invoke {name} --data '{{\"name\":\"Ada\"}}'");
    Ok(())
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
