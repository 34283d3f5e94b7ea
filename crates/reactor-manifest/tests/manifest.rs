//! Every bad input the manifest can hold gets an error naming the file, line and column.

use std::fs;
use std::path::Path;

use reactor_manifest::{Manifest, ManifestError, Trigger, discover};

/// A project directory with the folders a valid manifest points at.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in [
        "data/migrations",
        "functions/hello",
        "functions/rollup",
        "sites/web",
    ] {
        fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
    }
    fs::write(
        dir.path().join("functions/hello/index.ts"),
        "export default () => new Response('hi')",
    )
    .expect("write");
    fs::write(
        dir.path().join("functions/rollup/main.js"),
        "export default () => new Response('ok')",
    )
    .expect("write");
    dir
}

const VALID: &str = r#"project_id = "my-app-a1b2c3d4"
name = "My Application"
default_context = "local"

[data]
migrations_dir = "data/migrations"

[[functions]]
name = "hello"
source = "functions/hello"
runtime = "wasm"
entry = "index.ts"

[[functions]]
name = "rollup"
source = "functions/rollup"
entry = "main.js"

[[sites]]
name = "web"
source = "sites/web"
framework = "static"

[[jobs]]
name = "nightly-rollup"
function = "rollup"
trigger = { type = "cron", schedule = "0 0 * * *" }

[[jobs]]
name = "on-todo"
function = "hello"
trigger = { type = "event", event = "data.insert", table = "todos" }
"#;

fn parse(dir: &Path, src: &str) -> Result<Manifest, ManifestError> {
    let path = dir.join("reactor.toml");
    fs::write(&path, src).expect("write manifest");
    Manifest::load(&path)
}

/// The rendered error, asserting it is a located manifest error.
fn error(src: &str) -> String {
    let dir = project();
    match parse(dir.path(), src) {
        Ok(m) => panic!("expected an error, got {m:?}"),
        Err(e @ ManifestError::Invalid(_)) => e.to_string(),
        Err(other) => panic!("expected a located error, got {other}"),
    }
}

#[test]
fn the_spec_example_parses() {
    let dir = project();
    let m = parse(dir.path(), VALID).expect("valid manifest");
    assert_eq!(m.project_id, "my-app-a1b2c3d4");
    assert_eq!(m.name, "My Application");
    assert_eq!(m.default_context.as_deref(), Some("local"));
    assert_eq!(m.functions.len(), 2);
    assert_eq!(
        m.function("rollup").map(|f| f.entry.as_str()),
        Some("main.js")
    );
    assert_eq!(m.sites[0].framework, "static");
    assert_eq!(
        m.jobs[0].trigger,
        Trigger::Cron {
            schedule: "0 0 * * *".into(),
            timezone: None
        }
    );
    assert!(matches!(&m.jobs[1].trigger, Trigger::Event { table: Some(t), .. } if t == "todos"));
    assert_eq!(m.migrations_dir(), dir.path().join("data/migrations"));
}

#[test]
fn syntax_error_is_located() {
    let e = error("project_id = \"x-1234\"\nname = \"unterminated\n");
    assert!(e.contains("reactor.toml:2:"), "{e}");
    assert!(e.contains("invalid TOML"), "{e}");
}

#[test]
fn misspelt_key_gets_did_you_mean() {
    let src = VALID.replace("name = \"hello\"", "nmae = \"hello\"");
    let e = error(&src);
    assert!(e.contains("unknown key `nmae` in [[functions]]"), "{e}");
    assert!(e.contains("reactor.toml:9:1"), "{e}");
    assert!(e.contains("did you mean `name`?"), "{e}");
}

#[test]
fn misspelt_top_level_table_and_trigger_key() {
    let src = VALID
        .replace("[[sites]]", "[[stes]]")
        .replace("schedule = \"0 0 * * *\"", "schedul = \"0 0 * * *\"");
    let e = error(&src);
    assert!(e.contains("unknown key `stes` in the top level"), "{e}");
    assert!(e.contains("did you mean `sites`?"), "{e}");
    assert!(
        e.contains("unknown key `schedul` in a job's `trigger`"),
        "{e}"
    );
    assert!(e.contains("did you mean `schedule`?"), "{e}");
}

#[test]
fn key_in_the_wrong_table_says_where_it_belongs() {
    let src = VALID.replace(
        "name = \"My Application\"\n",
        "name = \"My Application\"\nmigrations_dir = \"x\"\n",
    );
    let e = error(&src);
    assert!(
        e.contains("`migrations_dir` belongs in the [data] table"),
        "{e}"
    );
}

#[test]
fn wrong_type_is_located() {
    let src = VALID.replace(
        "framework = \"static\"",
        "framework = \"static\"\nspa = \"yes\"",
    );
    let e = error(&src);
    assert!(e.contains("reactor.toml:23:7"), "{e}");
    assert!(e.contains("expected a boolean"), "{e}");
}

#[test]
fn missing_required_key() {
    let e = error("name = \"x\"\n");
    assert!(e.contains("project_id"), "{e}");
}

#[test]
fn duplicate_names_are_caught() {
    let src = VALID
        .replace("name = \"rollup\"", "name = \"hello\"")
        .replace("function = \"rollup\"", "function = \"hello\"");
    let e = error(&src);
    assert!(e.contains("duplicate function name `hello`"), "{e}");
    assert!(e.contains("first declared on line 9"), "{e}");
    assert!(e.contains("reactor.toml:15:8"), "{e}");
}

#[test]
fn job_pointing_at_unknown_function() {
    let src = VALID.replace("function = \"rollup\"", "function = \"rolup\"");
    let e = error(&src);
    assert!(
        e.contains("job `nightly-rollup` runs function `rolup`, which is not declared"),
        "{e}"
    );
    assert!(e.contains("did you mean `rollup`?"), "{e}");
}

#[test]
fn missing_source_path() {
    let src = VALID.replace("source = \"sites/web\"", "source = \"sites/www\"");
    let e = error(&src);
    assert!(e.contains("source directory"), "{e}");
    assert!(e.contains("sites/www` does not exist"), "{e}");
    assert!(e.contains("reactor.toml:21:10"), "{e}");
}

#[test]
fn source_outside_the_project_is_refused() {
    let src = VALID.replace("source = \"sites/web\"", "source = \"../elsewhere\"");
    let e = error(&src);
    assert!(e.contains("must be a path inside the project"), "{e}");
}

#[test]
fn missing_entry_file() {
    let src = VALID.replace("entry = \"main.js\"", "entry = \"index.js\"");
    let e = error(&src);
    assert!(e.contains("entry file"), "{e}");
    assert!(e.contains("index.js` does not exist"), "{e}");
}

#[test]
fn invalid_cron_expression() {
    let src = VALID.replace("0 0 * * *", "61 0 * * *");
    let e = error(&src);
    assert!(e.contains("invalid cron expression `61 0 * * *`"), "{e}");
    assert!(e.contains("reactor.toml:27:39"), "{e}");
    let src = VALID.replace("0 0 * * *", "0 0 *");
    assert!(error(&src).contains("it has 3 fields"));
}

#[test]
fn unknown_trigger_type_and_runtime() {
    let src = VALID
        .replace("type = \"cron\"", "type = \"crn\"")
        .replace("runtime = \"wasm\"", "runtime = \"docker\"");
    let e = error(&src);
    assert!(e.contains("unknown trigger type `crn`"), "{e}");
    assert!(e.contains("did you mean `cron`?"), "{e}");
    assert!(e.contains("unknown runtime `docker`"), "{e}");
}

#[test]
fn data_event_needs_a_table() {
    let src = VALID.replace(", table = \"todos\"", "");
    let e = error(&src);
    assert!(
        e.contains("event `data.insert` needs the `table` it watches"),
        "{e}"
    );
}

#[test]
fn bad_project_id() {
    let src = VALID.replace("my-app-a1b2c3d4", "My App!");
    let e = error(&src);
    assert!(e.contains("`My App!` is not a valid project_id"), "{e}");
    assert!(e.contains("reactor.toml:1:14"), "{e}");
}

#[test]
fn several_errors_are_reported_together() {
    let src = VALID
        .replace("sites/web", "sites/nope")
        .replace("function = \"rollup\"", "function = \"nope\"");
    let e = error(&src);
    assert_eq!(e.matches("error:").count(), 2, "{e}");
}

#[test]
fn discovery_walks_up_and_stops_at_the_git_root() {
    let dir = project();
    fs::write(dir.path().join("reactor.toml"), VALID).expect("write");
    let deep = dir.path().join("functions/hello");
    assert_eq!(
        discover(&deep).expect("found"),
        dir.path().join("reactor.toml")
    );

    // A repository nested inside the project: discovery must not cross its root.
    let repo = dir.path().join("vendor/other");
    fs::create_dir_all(repo.join(".git")).expect("mkdir");
    fs::create_dir_all(repo.join("src")).expect("mkdir");
    match discover(&repo.join("src")) {
        Err(e @ ManifestError::NotFound { .. }) => {
            assert!(e.to_string().contains("up to the git root"), "{e}");
            assert!(e.hint().is_some_and(|h| h.contains("reactor init")));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn function_limits_parse_and_are_range_checked() {
    let dir = project();
    let src = VALID.replace(
        "entry = \"main.js\"",
        "entry = \"main.js\"\nmemory_mb = 128\ntimeout_ms = 2500\nconcurrency = 4",
    );
    let m = parse(dir.path(), &src).expect("valid");
    let rollup = m.function("rollup").expect("declared");
    assert_eq!(
        (rollup.memory_mb, rollup.timeout_ms, rollup.concurrency),
        (Some(128), Some(2500), Some(4))
    );
    assert_eq!(m.function("hello").map(|f| f.memory_mb), Some(None));

    let e = error(&VALID.replace("entry = \"main.js\"", "entry = \"main.js\"\nmemory_mb = 0"));
    assert!(e.contains("`memory_mb` = 0 is out of range"), "{e}");
    assert!(e.contains("reactor.toml:18:13"), "{e}");
    assert!(e.contains("use 1 to 4096 MiB"), "{e}");
}

#[test]
fn allowed_hosts_are_host_patterns() {
    let dir = project();
    let src = VALID.replace(
        "entry = \"main.js\"",
        "entry = \"main.js\"\nallowed_hosts = [\"api.example.com\", \"*.svc.test\", \"localhost:3000\"]",
    );
    let m = parse(dir.path(), &src).expect("valid");
    assert_eq!(m.function("rollup").map(|f| f.allowed_hosts.len()), Some(3));
    let e = error(&VALID.replace(
        "entry = \"main.js\"",
        "entry = \"main.js\"\nallowed_hosts = [\"https://api.example.com/v1\"]",
    ));
    assert!(
        e.contains("`https://api.example.com/v1` is not a host"),
        "{e}"
    );
    assert!(e.contains("reactor.toml:18:18"), "{e}");
}

#[test]
fn job_options_are_read_and_checked() {
    let dir = project();
    let src = VALID.replace(
        "trigger = { type = \"cron\", schedule = \"0 0 * * *\" }",
        "trigger = { type = \"cron\", schedule = \"0 0 * * *\", timezone = \"Europe/Paris\" }\nmax_attempts = 5\nbackoff_ms = 250\ntimeout_ms = 30000\nconcurrency = 2\nconcurrency_key = \"user\"\ndedup_key = \"order\"\ndedup_window_secs = 600\ncatch_up = true",
    );
    let m = parse(dir.path(), &src).expect("valid");
    let j = &m.jobs[0];
    assert_eq!(
        (j.max_attempts, j.backoff_ms, j.timeout_ms, j.concurrency),
        (Some(5), Some(250), Some(30_000), Some(2))
    );
    assert_eq!(j.concurrency_key.as_deref(), Some("user"));
    assert_eq!(
        (j.dedup_key.as_deref(), j.dedup_window_secs),
        (Some("order"), Some(600))
    );
    assert!(j.catch_up);
    assert!(!m.jobs[1].catch_up);

    let e = error(&VALID.replace("name = \"on-todo\"", "name = \"on-todo\"\nmax_attempts = 0"));
    assert!(
        e.contains("`max_attempts` = 0 is out of range") && e.contains("1 to 100"),
        "{e}"
    );
    let e = error(&VALID.replace(
        "schedule = \"0 0 * * *\" }",
        "schedule = \"0 0 * * *\", timezone = \"Mars/Olympus\" }",
    ));
    assert!(
        e.contains("`Mars/Olympus`") && e.contains("not a time zone"),
        "{e}"
    );
    let e = error(&VALID.replace("name = \"on-todo\"", "name = \"runs\""));
    assert!(
        e.contains("`runs` is a word of the jobs API's routes"),
        "{e}"
    );
    let e = error(&VALID.replace("name = \"on-todo\"", "name = \"on-todo\"\nretries = 3"));
    assert!(e.contains("unknown key `retries`"), "{e}");
}

#[test]
fn site_headers_and_redirects_are_read_and_checked() {
    let dir = project();
    let src = VALID.replace(
        "framework = \"static\"\n",
        "framework = \"static\"\nspa = true\nheaders = [{ for = \"/assets/*\", values = { X-Frame-Options = \"DENY\" } }]\nredirects = [{ from = \"/old/*\", to = \"/new/:splat\", status = 308 }, { from = \"/docs\", to = \"https://docs.example.com\" }]\n",
    );
    let m = Manifest::parse(&dir.path().join("reactor.toml"), &src).expect("valid");
    let site = &m.sites[0];
    assert_eq!(site.headers[0].path, "/assets/*");
    assert_eq!(
        site.headers[0].values,
        vec![("X-Frame-Options".to_string(), "DENY".to_string())]
    );
    assert_eq!(site.redirects[0].status, 308);
    assert_eq!(site.redirects[1].status, 301, "301 unless said otherwise");

    for (bad, expected) in [
        (
            "redirects = [{ from = \"old\", to = \"/new\" }]",
            "`from` pattern `old` is not a site path",
        ),
        (
            "redirects = [{ from = \"/a/*/b\", to = \"/new\" }]",
            "is not a site path",
        ),
        (
            "redirects = [{ from = \"/a\", to = \"/b\", status = 200 }]",
            "200 is not a redirect status",
        ),
        (
            "redirects = [{ from = \"/a\", to = \"javascript:alert(1)\" }]",
            "is neither a path nor a URL",
        ),
        (
            "headers = [{ for = \"/\", values = { \"Bad Name\" = \"x\" } }]",
            "`Bad Name` is not a valid header",
        ),
        (
            "headers = [{ path = \"/\", values = {} }]",
            "unknown key `path` in a site's `headers`",
        ),
        ("output = \"../dist\"", "`output` must be a path inside"),
    ] {
        let src = VALID.replace(
            "framework = \"static\"\n",
            &format!("framework = \"static\"\n{bad}\n"),
        );
        let e = match Manifest::parse(&dir.path().join("reactor.toml"), &src) {
            Ok(_) => panic!("accepted: {bad}"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(expected), "{bad}: {e}");
    }
}

#[test]
fn a_snapshot_is_checked_without_the_project_files() {
    // Nothing on disk: the server reads the manifest a bundle carried.
    let m = Manifest::parse_snapshot(VALID).expect("valid without its directories");
    assert_eq!(m.functions.len(), 2);
    let e =
        match Manifest::parse_snapshot(&VALID.replace("function = \"rollup\"", "function = \"x\""))
        {
            Ok(_) => panic!("a job naming no function was accepted"),
            Err(e) => e.to_string(),
        };
    assert!(e.contains("which is not declared"), "{e}");
}

const GATEWAY: &str = r#"
[gateway]
allow_anonymous = false
retries = 2

[[gateway.providers]]
name = "openai"
kind = "openai"
api_key_secret = "OPENAI_API_KEY"

[[gateway.providers]]
name = "local"
kind = "openai-compatible"
base_url = "http://127.0.0.1:11434/v1/"

[[gateway.models]]
name = "fast"
targets = [{ provider = "openai", model = "gpt-4o-mini", weight = 3 }, { provider = "local", model = "llama3" }]
"#;

#[test]
fn the_gateway_section_is_read_and_checked() {
    let dir = project();
    let src = format!("{VALID}{GATEWAY}");
    let m = parse(dir.path(), &src).expect("valid");
    let g = &m.gateway;
    assert_eq!(
        g.providers[0].base_url, "https://api.openai.com/v1",
        "the kind's default"
    );
    assert_eq!(
        g.providers[1].base_url, "http://127.0.0.1:11434/v1",
        "no trailing slash"
    );
    assert_eq!(
        g.providers[0].api_key_secret.as_deref(),
        Some("OPENAI_API_KEY")
    );
    assert_eq!(g.models[0].targets[0].weight, Some(3));
    assert_eq!(g.retries, Some(2));

    for (from, to, expected) in [
        (
            "provider = \"local\"",
            "provider = \"locl\"",
            "names provider `locl`, which is not declared",
        ),
        (
            "provider = \"local\"",
            "provider = \"locl\"",
            "did you mean `local`?",
        ),
        (
            "kind = \"openai-compatible\"",
            "kind = \"openai-compat\"",
            "unknown provider kind `openai-compat`",
        ),
        (
            "base_url = \"http://127.0.0.1:11434/v1/\"",
            "base_url = \"ftp://x\"",
            "is not an http(s) base URL",
        ),
        (
            "base_url = \"http://127.0.0.1:11434/v1/\"\n",
            "",
            "has no `base_url`",
        ),
        (
            "\"OPENAI_API_KEY\"",
            "\"sk-live-123\"",
            "`sk-live-123` is not a secret name",
        ),
        ("weight = 3", "weight = 0", "`weight` = 0 is out of range"),
        ("retries = 2", "retrys = 2", "did you mean `retries`?"),
    ] {
        let broken = src.replacen(from, to, 1);
        assert_ne!(broken, src, "{from}");
        let e = error(&broken);
        assert!(e.contains(expected), "{to}: {e}");
    }
}

const CONNECT: &str = r#"
[[connect.integrations]]
name = "github"
provider = "github"
client_id = "Iv1.abc"
client_secret = "GITHUB_CLIENT_SECRET"
scopes = ["repo"]
redirect_origins = ["http://localhost:5173/", "https://app.example.com"]
webhook_secret = "GITHUB_WEBHOOK_SECRET"

[[connect.integrations]]
name = "crm"
provider = "oauth2"
client_id = "reactor"
authorization_url = "https://crm.example.com/oauth/authorize"
token_url = "https://crm.example.com/oauth/token"
base_url = "https://api.crm.example.com/v2/"
pkce = false
"#;

#[test]
fn the_connect_section_is_read_and_checked() {
    let dir = project();
    let src = format!("{VALID}{CONNECT}");
    let m = parse(dir.path(), &src).expect("valid");
    let c = &m.connect.integrations;
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].client_secret.as_deref(), Some("GITHUB_CLIENT_SECRET"));
    assert_eq!(
        c[0].redirect_origins,
        ["http://localhost:5173", "https://app.example.com"],
        "origins without a trailing slash"
    );
    assert_eq!(c[1].pkce, Some(false));
    assert_eq!(
        c[1].base_url.as_deref(),
        Some("https://api.crm.example.com/v2")
    );

    for (from, to, expected) in [
        (
            "name = \"crm\"",
            "name = \"github\"",
            "duplicate integration name `github`",
        ),
        (
            "name = \"crm\"",
            "name = \"CRM!\"",
            "`CRM!` is not a valid integration name",
        ),
        (
            "\"GITHUB_CLIENT_SECRET\"",
            "\"ghs_live secret\"",
            "`ghs_live secret` is not a secret name",
        ),
        (
            "\"https://app.example.com\"",
            "\"https://app.example.com/callback\"",
            "`https://app.example.com/callback` is not an origin",
        ),
        (
            "token_url = \"https://",
            "token_url = \"ftp://",
            "is not an http(s) URL",
        ),
        ("scopes = ", "scope = ", "did you mean `scopes`?"),
    ] {
        let broken = src.replacen(from, to, 1);
        assert_ne!(broken, src, "{from}");
        let e = error(&broken);
        assert!(e.contains(expected), "{to}: {e}");
    }
}
