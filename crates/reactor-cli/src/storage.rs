//! `reactor storage buckets|ls|cp|mv|rm|sign`: objects as files. A remote object is written
//! `ss:///bucket/path` (as Supabase's CLI writes it); anything else is a local path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::output::{cell, hinted, table};
use crate::session::Session;

#[derive(Debug, clap::Subcommand)]
pub enum StorageCommand {
    /// List buckets, or create, empty or delete one.
    Buckets {
        #[command(subcommand)]
        action: Option<BucketAction>,
        #[arg(long)]
        json: bool,
    },
    /// List a bucket's folder (`ss:///bucket/folder/`), or the buckets without an argument.
    Ls {
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Copy a file up (`cp photo.png ss:///avatars/`), down (`cp ss:///avatars/photo.png .`),
    /// or between objects.
    Cp {
        from: String,
        to: String,
        /// Replace an object that is already there.
        #[arg(long)]
        upsert: bool,
        /// The object's type [default: from the file's extension].
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Move (rename) an object.
    Mv { from: String, to: String },
    /// Delete objects.
    Rm {
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Print a signed URL that downloads an object without a key until it expires.
    Sign {
        target: String,
        /// Seconds the URL stays valid.
        #[arg(long, default_value_t = 3600)]
        expires_in: u64,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum BucketAction {
    /// Make a bucket (service key).
    Create {
        name: String,
        /// Anyone may download its objects at /storage/v1/object/public/….
        #[arg(long)]
        public: bool,
        /// Largest object, e.g. `10MB`.
        #[arg(long)]
        size_limit: Option<String>,
        /// Types it takes, e.g. `image/*,application/pdf`.
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
        /// The organization whose members share it (its id).
        #[arg(long)]
        org: Option<String>,
    },
    /// Delete every object of a bucket.
    Empty { name: String },
    /// Delete a bucket; one holding objects needs `--force` (emptied first).
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

/// `ss:///bucket/path` → `(bucket, path)`; anything else is local.
fn remote(text: &str) -> Option<(String, String)> {
    let rest = text.strip_prefix("ss://")?.trim_start_matches('/');
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    Some((bucket.to_string(), path.to_string()))
}

/// A remote target, its path checked here: an HTTP client would resolve a `..` or `.`
/// segment away before the server could refuse it.
fn need_remote(text: &str) -> anyhow::Result<(String, String)> {
    let (bucket, path) = remote(text).ok_or_else(|| {
        hinted(
            format!("`{text}` is not a remote object"),
            "write objects as ss:///bucket/path",
        )
    })?;
    let inner = path.strip_suffix('/').unwrap_or(&path);
    if bucket.is_empty()
        || (!inner.is_empty()
            && inner
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == ".."))
    {
        return Err(hinted(
            format!("`{text}` is not a valid object path"),
            "no empty, `.` or `..` segments: ss:///bucket/folder/file.txt",
        ));
    }
    Ok((bucket, path))
}

fn need_object(text: &str) -> anyhow::Result<(String, String)> {
    let (bucket, path) = need_remote(text)?;
    if path.is_empty() || path.ends_with('/') {
        return Err(hinted(
            format!("`{text}` names a bucket or folder, not an object"),
            "write the object's path: ss:///bucket/folder/file.txt",
        ));
    }
    Ok((bucket, path))
}

/// A byte counter on stderr, drawn only on a terminal.
pub(crate) fn bar(what: &str, total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub async fn run(session: &Session, cmd: StorageCommand) -> anyhow::Result<()> {
    let (_, client) = session.client().await?;
    match cmd {
        StorageCommand::Buckets { action: None, json }
        | StorageCommand::Ls { target: None, json } => {
            let buckets = client.buckets().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&buckets)?);
                return Ok(());
            }
            if buckets.is_empty() {
                eprintln!("no buckets: `reactor storage buckets create NAME` makes one");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = buckets
                .iter()
                .map(|b| {
                    vec![
                        text(&b["id"]),
                        if b["public"] == true {
                            "public"
                        } else {
                            "private"
                        }
                        .into(),
                        b["file_size_limit"]
                            .as_u64()
                            .map_or_else(|| "-".into(), human),
                        b["allowed_mime_types"].as_array().map_or_else(
                            || "any".into(),
                            |t| t.iter().map(text).collect::<Vec<_>>().join(","),
                        ),
                    ]
                })
                .collect();
            print!("{}", table(&["BUCKET", "ACCESS", "LIMIT", "TYPES"], &rows));
        }
        StorageCommand::Buckets {
            action: Some(action),
            ..
        } => match action {
            BucketAction::Create {
                name,
                public,
                size_limit,
                types,
                org,
            } => {
                let mut body = json!({ "id": name, "public": public });
                if let Some(l) = size_limit {
                    body["file_size_limit"] = json!(l);
                }
                if !types.is_empty() {
                    body["allowed_mime_types"] = json!(types);
                }
                if let Some(o) = org {
                    body["org_id"] = json!(o);
                }
                client.create_bucket(body).await?;
                eprintln!("created bucket {name}");
            }
            BucketAction::Empty { name } => {
                client.empty_bucket(&name).await?;
                eprintln!("emptied bucket {name}");
            }
            BucketAction::Delete { name, force } => {
                if force {
                    client.empty_bucket(&name).await?;
                }
                client.delete_bucket(&name).await?;
                eprintln!("deleted bucket {name}");
            }
        },
        StorageCommand::Ls {
            target: Some(target),
            json,
        } => {
            let (bucket, prefix) = need_remote(&target)?;
            let entries = client.list_objects(&bucket, &prefix).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    if e["id"].is_null() {
                        vec![
                            format!("{}/", text(&e["name"])),
                            String::new(),
                            String::new(),
                        ]
                    } else {
                        vec![
                            text(&e["name"]),
                            e["metadata"]["size"]
                                .as_u64()
                                .map_or_else(String::new, human),
                            text(&e["updated_at"]),
                        ]
                    }
                })
                .collect();
            print!("{}", table(&["NAME", "SIZE", "UPDATED"], &rows));
        }
        StorageCommand::Cp {
            from,
            to,
            upsert,
            content_type,
        } => match (remote(&from), remote(&to)) {
            (None, Some((bucket, path))) => {
                let file = PathBuf::from(&from);
                let name = file_name(&file)?;
                let path = if path.is_empty() || path.ends_with('/') {
                    format!("{path}{name}")
                } else {
                    path
                };
                let len = std::fs::metadata(&file)
                    .map_err(|e| hinted(format!("{}: {e}", file.display()), "check the path"))?
                    .len();
                let progress = Arc::new(bar(&name, Some(len)));
                let p = progress.clone();
                let uploaded = client
                    .upload_file(
                        &bucket,
                        &path,
                        &file,
                        content_type.as_deref(),
                        upsert,
                        move |n| p.set_position(n),
                    )
                    .await;
                progress.finish_and_clear();
                uploaded?;
                eprintln!(
                    "uploaded {} to ss:///{bucket}/{path} ({})",
                    file.display(),
                    human(len)
                );
            }
            (Some(_), None) => {
                let (bucket, path) = need_object(&from)?;
                let base = path.rsplit('/').next().unwrap_or(&path).to_string();
                let dest = PathBuf::from(&to);
                let dest = if dest.is_dir() {
                    dest.join(&base)
                } else {
                    dest
                };
                let progress = bar(&base, None);
                let got = client
                    .download_file(&bucket, &path, &dest, |n, total| {
                        if let Some(t) = total {
                            progress.set_length(t);
                        }
                        progress.set_position(n);
                    })
                    .await;
                progress.finish_and_clear();
                let got = got?;
                eprintln!(
                    "downloaded ss:///{bucket}/{path} to {} ({})",
                    dest.display(),
                    human(got)
                );
            }
            (Some(_), Some(_)) => {
                let (fb, fp) = need_object(&from)?;
                let (tb, tp) = need_remote(&to)?;
                let tp = if tp.is_empty() || tp.ends_with('/') {
                    format!("{tp}{}", fp.rsplit('/').next().unwrap_or(&fp))
                } else {
                    tp
                };
                client.relocate_object((&fb, &fp), (&tb, &tp), true).await?;
                eprintln!("copied {from} to ss:///{tb}/{tp}");
            }
            (None, None) => {
                return Err(hinted(
                    "neither side is a remote object",
                    "write objects as ss:///bucket/path: `reactor storage cp photo.png ss:///avatars/`",
                ));
            }
        },
        StorageCommand::Mv { from, to } => {
            let (fb, fp) = need_object(&from)?;
            let (tb, tp) = need_object(&to)?;
            client
                .relocate_object((&fb, &fp), (&tb, &tp), false)
                .await?;
            eprintln!("moved {from} to {to}");
        }
        StorageCommand::Rm { targets } => {
            let mut failed = Vec::new();
            for target in &targets {
                let (bucket, path) = need_object(target)?;
                let removed = client.remove_objects(&bucket, &[path]).await?;
                if removed.is_empty() {
                    failed.push(target.clone());
                } else {
                    eprintln!("removed {target}");
                }
            }
            if !failed.is_empty() {
                return Err(hinted(
                    format!("not found (or not yours to delete): {}", failed.join(", ")),
                    "`reactor storage ls ss:///bucket/folder/` lists what is there",
                ));
            }
        }
        StorageCommand::Sign { target, expires_in } => {
            let (bucket, path) = need_object(&target)?;
            println!("{}", client.sign_object(&bucket, &path, expires_in).await?);
        }
    }
    Ok(())
}

fn file_name(file: &Path) -> anyhow::Result<String> {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            hinted(
                format!("`{}` is not a file", file.display()),
                "name a file to upload",
            )
        })
}

fn text(v: &Value) -> String {
    cell(v, "-")
}

fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths() {
        assert_eq!(
            remote("ss:///avatars/a/b.png"),
            Some(("avatars".into(), "a/b.png".into()))
        );
        assert_eq!(
            remote("ss:///avatars"),
            Some(("avatars".into(), String::new()))
        );
        assert_eq!(
            remote("ss://avatars/x"),
            Some(("avatars".into(), "x".into()))
        );
        assert_eq!(remote("./photo.png"), None);
        assert!(need_object("ss:///avatars/folder/").is_err());
        for bad in [
            "ss:///docs/../x",
            "ss:///docs/a//b",
            "ss:///docs/./x",
            "ss:///",
        ] {
            assert!(need_remote(bad).is_err(), "{bad}");
        }
        assert!(need_remote("ss:///docs/folder/").is_ok());
    }
}
