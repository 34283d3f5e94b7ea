//! How the CLI speaks: errors on stderr with a hint, tables for people, JSON for scripts.

use std::fmt;

/// An error with the next step for the user.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

pub fn print_error(e: &anyhow::Error) {
    // Manifest diagnostics render themselves, `error:` lines and hints included.
    if let Some(reactor_manifest::ManifestError::Invalid(_)) = e.downcast_ref() {
        eprint!("{e}");
        return;
    }
    eprintln!("error: {e:#}");
    if let Some(hint) = hint_of(e) {
        eprintln!("  hint: {hint}");
    }
}

fn hint_of(e: &anyhow::Error) -> Option<String> {
    if let Some(h) = e.downcast_ref::<Hinted>() {
        return Some(h.hint.clone());
    }
    if let Some(m) = e.downcast_ref::<reactor_manifest::ManifestError>() {
        return m.hint().map(str::to_string);
    }
    if let Some(c) = e.downcast_ref::<reactor_manifest::ConfigError>() {
        return Some(match c {
            reactor_manifest::ConfigError::UnknownContext { .. } => {
                "`reactor context list` shows the contexts; `reactor context add NAME --endpoint URL` adds one".into()
            }
            reactor_manifest::ConfigError::ContextExists(name) => {
                format!("remove it first with `reactor context remove {name}`, or pick another name")
            }
            reactor_manifest::ConfigError::Keychain(_) => {
                "set REACTOR_KEYCHAIN=off to keep tokens in ~/.reactor/credentials.toml instead".into()
            }
            _ => "fix ~/.reactor/config.toml (or $REACTOR_HOME/config.toml) and retry".into(),
        });
    }
    if let Some(c) = e.downcast_ref::<reactor_client::ClientError>() {
        return c.hint();
    }
    if let Some(s) = e.downcast_ref::<reactor_server::StartError>() {
        return Some(s.hint());
    }
    None
}

/// A plain, aligned table: a header row and rows of cells.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A JSON value as a table cell: strings bare, `null` as `null_as`, anything else as JSON.
pub fn cell(v: &serde_json::Value, null_as: &str) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => null_as.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let t = super::table(
            &["NAME", "ENDPOINT"],
            &[
                vec!["local".into(), "http://x".into()],
                vec!["production".into(), "https://y".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME        ENDPOINT\nlocal       http://x\nproduction  https://y"
        );
    }
}
