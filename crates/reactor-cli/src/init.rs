//! `reactor init [DIR]`: a project that runs at once with `reactor dev`.

use std::path::{Path, PathBuf};

use rand::Rng;
use reactor_manifest::{MANIFEST_FILE, Manifest};

use crate::output::hinted;
use crate::session::Session;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where to create the project (created if missing) [default: the current directory].
    dir: Option<PathBuf>,
    /// The project's display name [default: the directory's name].
    #[arg(long)]
    name: Option<String>,
}

const MANIFEST: &str = include_str!("../templates/init/reactor.toml");
const MIGRATION: &str = include_str!("../templates/init/0001_init.sql");
const FUNCTION: &str = include_str!("../templates/init/hello.ts");
const SITE: &str = include_str!("../templates/init/index.html");
const REACTORIGNORE: &str = include_str!("../templates/init/reactorignore");
const GITIGNORE: &str = include_str!("../templates/init/gitignore");

pub fn run(_session: &Session, args: InitArgs) -> anyhow::Result<()> {
    let dir = std::path::absolute(args.dir.unwrap_or_else(|| PathBuf::from(".")))?;
    if dir.join(MANIFEST_FILE).exists() {
        return Err(hinted(
            format!("{} is already a Reactor project", dir.display()),
            "run `reactor dev` there, or pick another directory for a new project",
        ));
    }
    let name = match args.name {
        Some(n) if !n.trim().is_empty() => n.trim().to_string(),
        Some(_) => {
            return Err(hinted(
                "--name is empty",
                "give the project a name, e.g. --name \"My App\"",
            ));
        }
        None => dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("app")
            .to_string(),
    };
    let project_id = project_id(&name);
    let fill = |t: &str| {
        t.replace("{{project_id}}", &project_id)
            .replace("{{name}}", &escape_toml(&name))
    };

    let files: Vec<(PathBuf, String)> = vec![
        (dir.join(MANIFEST_FILE), fill(MANIFEST)),
        (
            dir.join("data/migrations/0001_init.sql"),
            MIGRATION.to_string(),
        ),
        (dir.join("functions/hello/index.ts"), FUNCTION.to_string()),
        (
            dir.join("sites/web/index.html"),
            SITE.replace("{{name}}", &escape_html(&name)),
        ),
        (dir.join(".reactorignore"), REACTORIGNORE.to_string()),
    ];
    let taken: Vec<String> = files
        .iter()
        .filter(|(p, _)| p.exists())
        .map(|(p, _)| p.display().to_string())
        .collect();
    if !taken.is_empty() {
        return Err(hinted(
            format!("refusing to overwrite existing files: {}", taken.join(", ")),
            "run `reactor init` in an empty directory, or move those files away",
        ));
    }

    let mut created = Vec::new();
    if let Err(e) = write_all(&files, &dir.join(".gitignore"), &mut created) {
        // Leave the directory as it was: no half-made project.
        for path in created.iter().rev() {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    // The scaffold must always pass its own validation.
    Manifest::load(&dir.join(MANIFEST_FILE))?;

    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| dir.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| dir.clone());
    eprintln!(
        "created project `{name}` ({project_id}) in {}",
        dir.display()
    );
    eprintln!();
    eprintln!("next:");
    if !shown.as_os_str().is_empty() {
        eprintln!("  cd {}", shown.display());
    }
    eprintln!("  reactor dev");
    Ok(())
}

fn write_all(
    files: &[(PathBuf, String)],
    gitignore: &Path,
    created: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    for (path, contents) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, contents)?;
        created.push(path.clone());
    }
    // An existing .gitignore is kept and gets only the lines it lacks.
    let existing = std::fs::read_to_string(gitignore).unwrap_or_default();
    let missing: Vec<&str> = GITIGNORE
        .lines()
        .filter(|l| l.starts_with('#') || !existing.lines().any(|e| e.trim() == l.trim()))
        .collect();
    if existing.is_empty() {
        std::fs::write(gitignore, GITIGNORE)?;
        created.push(gitignore.to_path_buf());
    } else if missing.iter().any(|l| !l.starts_with('#')) {
        let sep = if existing.ends_with('\n') { "" } else { "\n" };
        std::fs::write(
            gitignore,
            format!("{existing}{sep}{}\n", missing.join("\n")),
        )?;
    }
    Ok(())
}

/// `<slug of the name>-<8 hex>`: readable, and unique enough to tell projects apart.
fn project_id(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let mut slug: String = slug.trim_end_matches('-').chars().take(40).collect();
    slug = slug.trim_end_matches('-').to_string();
    if slug.is_empty() {
        slug = "app".into();
    }
    format!("{slug}-{:08x}", rand::rng().random::<u32>())
}

fn escape_toml(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_are_slug_and_eight_hex() {
        let id = project_id("My Application!");
        let (slug, hex) = id.rsplit_once('-').expect("dash");
        assert_eq!(slug, "my-application");
        assert_eq!(hex.len(), 8);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(project_id("???").starts_with("app-"));
        assert_ne!(project_id("x"), project_id("x"));
    }
}
