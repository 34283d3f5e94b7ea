//! The `reactor` CLI driven as a user drives it: a subprocess with its own `REACTOR_HOME`,
//! talking real HTTP to a real `reactor dev`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_reactor");

/// A temporary `REACTOR_HOME` and working area, isolated from the user's real config,
/// keychain and environment.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cmd(&self, cwd: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(cwd)
            .env("REACTOR_HOME", self.home())
            .env("REACTOR_KEYCHAIN", "off")
            .env_remove("REACTOR_CONTEXT")
            .env_remove("REACTOR_TOKEN")
            .env_remove("REACTOR_TOKEN_LOCAL")
            .env_remove("REACTOR_TOKEN_STAGING")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        self.cmd(cwd).args(args).output().expect("run reactor")
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.run(cwd, args);
        assert!(
            out.status.success(),
            "reactor {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// Runs and asserts failure; returns stderr.
    fn fails(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.run(cwd, args);
        assert!(!out.status.success(), "reactor {args:?} should fail");
        String::from_utf8(out.stderr).expect("utf8")
    }

    fn init(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        self.ok(self.dir.path(), &["init", dir.to_str().expect("utf8 path")]);
        dir
    }
}

/// A running `reactor dev` and what its banner said.
struct Dev {
    child: Child,
    endpoint: String,
    public_key: String,
    service_key: String,
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev(sandbox: &Sandbox, project: &Path) -> Dev {
    let mut child = sandbox
        .cmd(project)
        .args(["dev", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reactor dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = child.stderr.take().expect("stderr");
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if err_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut endpoint, mut public_key, mut service_key) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "reactor dev did not start:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        };
        let field = |prefix: &str| {
            line.trim()
                .strip_prefix(prefix)
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        };
        endpoint = endpoint.or_else(|| field("endpoint"));
        public_key = public_key.or_else(|| field("public key"));
        service_key = service_key.or_else(|| field("service key"));
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    Dev {
        child,
        endpoint: endpoint.expect("banner names the endpoint"),
        public_key: public_key.expect("banner prints the public key"),
        service_key: service_key.expect("banner prints the service key"),
        stdout: rx,
        stderr: err_rx,
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn wait_exit(dev: &mut Dev) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = dev.child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "reactor dev did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn get(url: &str, key: Option<&str>) -> (u16, Value, bool) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(key) = key {
        req = req.header("apikey", key);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let has_request_id = res.headers().contains_key("x-request-id");
    (
        status,
        res.json().await.unwrap_or(Value::Null),
        has_request_id,
    )
}

#[tokio::test]
async fn init_then_dev_serves_with_the_printed_keys() {
    let sb = Sandbox::new();
    let project = sb.init("todo");
    for file in [
        "reactor.toml",
        "data/migrations/0001_init.sql",
        "functions/hello/index.ts",
        "sites/web/index.html",
        ".reactorignore",
        ".gitignore",
    ] {
        assert!(project.join(file).is_file(), "init creates {file}");
    }
    let manifest = std::fs::read_to_string(project.join("reactor.toml")).expect("manifest");
    let id_line = manifest
        .lines()
        .find(|l| l.starts_with("project_id"))
        .expect("project_id");
    let id = id_line.split('"').nth(1).expect("quoted");
    let (slug, hex) = id.rsplit_once('-').expect("slug-hex");
    assert_eq!(slug, "todo");
    assert!(
        hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(
        std::fs::read_to_string(project.join(".gitignore"))
            .expect("gitignore")
            .contains(".reactor/")
    );
    let sql = std::fs::read_to_string(project.join("data/migrations/0001_init.sql")).expect("sql");
    assert!(sql.contains("enable row level security") && sql.contains("create policy"));

    let mut dev = start_dev(&sb, &project);
    assert!(dev.public_key.starts_with("rk_pub_"), "{}", dev.public_key);
    assert!(
        dev.service_key.starts_with("rk_svc_"),
        "{}",
        dev.service_key
    );
    let base = dev.endpoint.clone();

    let (status, body, has_id) = get(&format!("{base}/healthz"), None).await;
    assert_eq!(
        (status, body["status"].as_str(), has_id),
        (200, Some("ok"), true)
    );
    let (status, _, _) = get(&format!("{base}/readyz"), None).await;
    assert_eq!(status, 200);

    let (status, body, has_id) = get(&format!("{base}/v1/info"), None).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "missing_api_key");
    assert!(body["hint"].is_string() && has_id);

    let (status, body, _) = get(&format!("{base}/v1/info"), Some(&dev.public_key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["project"]["id"], id);
    assert_eq!(body["topology"], "O1");
    assert_eq!(body["caller"]["tier"], "public");

    // The local context now reaches this server with the service key, from anywhere.
    let info: Value =
        serde_json::from_str(&sb.ok(sb.dir.path(), &["info", "--json"])).expect("json");
    assert_eq!(info["context"], "local");
    assert_eq!(info["project"]["id"], id);
    assert_eq!(info["caller"]["tier"], "service");
    let show: Value =
        serde_json::from_str(&sb.ok(&project, &["context", "show", "--json"])).expect("json");
    assert_eq!(show["endpoint"], base.as_str());
    assert_eq!(show["token_source"], "credentials file");
    assert!(
        show["selected_by"]
            .as_str()
            .is_some_and(|s| s.contains("reactor.toml")),
        "{show}"
    );
    assert!(
        !show.to_string().contains(&dev.service_key),
        "show never prints the token"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["config.toml", "credentials.toml"] {
            let mode = std::fs::metadata(sb.home().join(file))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file} is private");
        }
        let mode = std::fs::metadata(project.join(".reactor/master.key"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the local master key is private");
        let mode = std::fs::metadata(project.join(".reactor/keys.json"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    signal(&dev.child, "INT");
    let status = wait_exit(&mut dev);
    assert!(status.success(), "Ctrl-C is a clean exit, got {status}");
    let rest: Vec<String> = dev.stdout.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");

    // A second start keeps the same keys; SIGTERM also stops it cleanly.
    let (first_pub, first_svc) = (dev.public_key.clone(), dev.service_key.clone());
    let mut again = start_dev(&sb, &project);
    assert_eq!(
        (&again.public_key, &again.service_key),
        (&first_pub, &first_svc)
    );
    signal(&again.child, "TERM");
    assert!(wait_exit(&mut again).success());

    // After the local database is wiped the same keys are registered again and work.
    std::fs::remove_file(project.join(".reactor/dev.db")).expect("remove db");
    let fresh = start_dev(&sb, &project);
    assert_eq!(fresh.public_key, first_pub);
    let (status, _, _) = get(&format!("{}/v1/info", fresh.endpoint), Some(&first_pub)).await;
    assert_eq!(status, 200);
}

#[test]
fn dev_on_a_taken_port_is_a_clear_error() {
    let sb = Sandbox::new();
    let project = sb.init("app");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let err = sb.fails(&project, &["dev", "--port", &port]);
    assert!(
        err.contains(&format!("127.0.0.1:{port} is already in use")),
        "{err}"
    );
    assert!(err.contains("hint:") && err.contains("--port"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn dev_outside_a_project_and_with_a_broken_manifest() {
    let sb = Sandbox::new();
    let empty = sb.path("empty");
    std::fs::create_dir_all(empty.join(".git")).expect("mkdir");
    let err = sb.fails(&empty, &["dev"]);
    assert!(err.contains("no reactor.toml"), "{err}");
    assert!(err.contains("reactor init"), "{err}");

    let project = sb.init("broken");
    let manifest = project.join("reactor.toml");
    let text = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(
        &manifest,
        text.replace("entry = \"index.ts\"", "entyr = \"index.ts\""),
    )
    .expect("write");
    let err = sb.fails(&project, &["dev", "--port", "0"]);
    assert!(
        err.contains("unknown key `entyr` in [[functions]]"),
        "{err}"
    );
    assert!(err.contains("reactor.toml:15:1"), "{err}");
    assert!(err.contains("did you mean `entry`?"), "{err}");
}

#[test]
fn init_refuses_to_overwrite() {
    let sb = Sandbox::new();
    let project = sb.init("app");
    let err = sb.fails(sb.dir.path(), &["init", project.to_str().expect("utf8")]);
    assert!(err.contains("already a Reactor project"), "{err}");

    // A directory holding one of the files init writes: nothing is written at all.
    let other = sb.path("other");
    std::fs::create_dir_all(other.join("functions/hello")).expect("mkdir");
    std::fs::write(other.join("functions/hello/index.ts"), "mine").expect("write");
    std::fs::write(other.join(".gitignore"), "target/\n").expect("write");
    let err = sb.fails(sb.dir.path(), &["init", other.to_str().expect("utf8")]);
    assert!(
        err.contains("refusing to overwrite") && err.contains("index.ts"),
        "{err}"
    );
    assert!(!other.join("reactor.toml").exists());
    assert_eq!(
        std::fs::read_to_string(other.join("functions/hello/index.ts")).expect("read"),
        "mine"
    );

    // An existing .gitignore is extended, not replaced.
    let third = sb.path("third");
    std::fs::create_dir_all(&third).expect("mkdir");
    std::fs::write(third.join(".gitignore"), "target/").expect("write");
    sb.ok(
        sb.dir.path(),
        &["init", third.to_str().expect("utf8"), "--name", "Third App"],
    );
    let gi = std::fs::read_to_string(third.join(".gitignore")).expect("read");
    assert!(
        gi.starts_with("target/\n") && gi.contains(".reactor/"),
        "{gi}"
    );
    let manifest = std::fs::read_to_string(third.join("reactor.toml")).expect("read");
    assert!(
        manifest.contains("name = \"Third App\"") && manifest.contains("project_id = \"third-app-")
    );
}

#[test]
fn context_commands_and_precedence() {
    let sb = Sandbox::new();
    let here = sb.dir.path();
    assert!(
        sb.fails(here, &["context", "show"])
            .contains("no context selected")
    );

    sb.ok(
        here,
        &[
            "context",
            "add",
            "staging",
            "--endpoint",
            "https://staging.example.com",
            "--org",
            "acme",
        ],
    );
    sb.ok(
        here,
        &[
            "context",
            "add",
            "prod",
            "--endpoint",
            "https://api.example.com/",
        ],
    );
    let err = sb.fails(
        here,
        &[
            "context",
            "add",
            "prod",
            "--endpoint",
            "https://x.example.com",
        ],
    );
    assert!(
        err.contains("already exists") && err.contains("hint:"),
        "{err}"
    );
    assert!(
        sb.fails(
            here,
            &["context", "add", "x", "--endpoint", "api.example.com"]
        )
        .contains("not a valid endpoint")
    );
    let err = sb.fails(here, &["context", "use", "prd"]);
    assert!(err.contains("did you mean `prod`?"), "{err}");

    let list: Value =
        serde_json::from_str(&sb.ok(here, &["context", "list", "--json"])).expect("json");
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["prod", "staging"]);
    // The first context added became the default.
    let current: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter(|c| c["current"] == true)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(current, ["staging"]);
    assert!(
        sb.ok(here, &["context", "list"])
            .contains("*  staging  https://staging.example.com  acme")
    );

    let show = |cwd: &Path, extra: &[&str], env: &[(&str, &str)]| -> Value {
        let mut cmd = sb.cmd(cwd);
        cmd.args(["context", "show", "--json"]).args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };

    // Context: config default → project default_context → REACTOR_CONTEXT → --context.
    assert_eq!(show(here, &[], &[])["name"], "staging");
    assert_eq!(
        show(here, &[], &[])["selected_by"],
        "default in the global config"
    );
    let project = sb.path("proj");
    std::fs::create_dir_all(project.join("sub")).expect("mkdir");
    std::fs::write(
        project.join("reactor.toml"),
        "project_id = \"p-00000000\"\nname = \"P\"\ndefault_context = \"prod\"\n",
    )
    .expect("write");
    let inside = project.join("sub");
    assert_eq!(show(&inside, &[], &[])["name"], "prod");
    assert_eq!(
        show(&inside, &[], &[("REACTOR_CONTEXT", "staging")])["name"],
        "staging"
    );
    assert_eq!(
        show(&inside, &[], &[("REACTOR_CONTEXT", "staging")])["selected_by"],
        "REACTOR_CONTEXT"
    );
    let flagged = show(
        &inside,
        &["--context", "prod"],
        &[("REACTOR_CONTEXT", "staging")],
    );
    assert_eq!(
        (flagged["name"].as_str(), flagged["selected_by"].as_str()),
        (Some("prod"), Some("--context flag"))
    );

    // Token: stored → REACTOR_TOKEN_<CONTEXT> → REACTOR_TOKEN → --token.
    assert_eq!(show(here, &[], &[])["token_source"], Value::Null);
    let mut add = sb.cmd(here);
    add.args([
        "context",
        "add",
        "my-ci",
        "--endpoint",
        "http://127.0.0.1:9",
        "--token-stdin",
    ])
    .stdin(Stdio::piped());
    let mut child = add.stderr(Stdio::piped()).spawn().expect("spawn");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"rk_svc_fromstdin\n")
            .expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("credentials.toml"),
        "the fallback is announced"
    );
    let creds = std::fs::read_to_string(sb.home().join("credentials.toml")).expect("creds");
    assert!(creds.contains("rk_svc_fromstdin"));
    let config = std::fs::read_to_string(sb.home().join("config.toml")).expect("config");
    assert!(
        !config.contains("rk_svc_fromstdin"),
        "tokens never land in config.toml"
    );

    let ci = ["my-ci"];
    assert_eq!(show(here, &ci, &[])["token_source"], "credentials file");
    assert_eq!(
        show(here, &ci, &[("REACTOR_TOKEN_MY_CI", "t")])["token_source"],
        "REACTOR_TOKEN_MY_CI"
    );
    assert_eq!(
        show(
            here,
            &ci,
            &[("REACTOR_TOKEN_MY_CI", "t"), ("REACTOR_TOKEN", "t")]
        )["token_source"],
        "REACTOR_TOKEN"
    );
    let flagged = show(here, &["my-ci", "--token", "t"], &[("REACTOR_TOKEN", "t")]);
    assert_eq!(flagged["token_source"], "--token flag");
    let text = sb.ok(
        here,
        &["context", "show", "my-ci", "--token", "rk_svc_secret_flag"],
    );
    assert!(
        text.contains("token        from --token flag") && !text.contains("rk_svc_secret_flag"),
        "{text}"
    );

    sb.ok(here, &["context", "use", "prod"]);
    assert_eq!(show(here, &[], &[])["name"], "prod");
    sb.ok(here, &["context", "remove", "prod"]);
    sb.ok(here, &["context", "remove", "my-ci"]);
    let creds = std::fs::read_to_string(sb.home().join("credentials.toml")).expect("creds");
    assert!(
        !creds.contains("rk_svc_fromstdin"),
        "remove deletes the stored token"
    );
    assert!(
        sb.fails(here, &["context", "show"])
            .contains("no context selected")
    );
    assert!(
        sb.fails(here, &["context", "remove", "prod"])
            .contains("no context named `prod`")
    );
}

#[test]
fn info_without_a_reachable_server_says_what_to_do() {
    let sb = Sandbox::new();
    let here = sb.dir.path();
    let err = sb.fails(here, &["info"]);
    assert!(
        err.contains("no context selected") && err.contains("reactor dev"),
        "{err}"
    );
    sb.ok(
        here,
        &["context", "add", "gone", "--endpoint", "http://127.0.0.1:9"],
    );
    let err = sb.fails(here, &["info"]);
    assert!(err.contains("cannot reach http://127.0.0.1:9"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[tokio::test]
async fn keys_commands_through_the_local_context() {
    let sb = Sandbox::new();
    let project = sb.init("keys");
    let dev = start_dev(&sb, &project);

    let created: Value = serde_json::from_str(&sb.ok(
        &project,
        &["keys", "create", "--tier", "pub", "--name", "web", "--json"],
    ))
    .expect("json");
    let secret = created["key"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("rk_pub_"));
    let (status, _, _) = get(&format!("{}/v1/info", dev.endpoint), Some(&secret)).await;
    assert_eq!(status, 200, "a created key works at once");

    let listed = sb.ok(&project, &["keys", "list", "--json"]);
    assert!(
        !listed.contains(&secret) && !listed.contains(&dev.service_key),
        "listings never show secrets"
    );
    let listed: Value = serde_json::from_str(&listed).expect("json");
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert!(
        names.contains(&"web") && names.contains(&"local service key"),
        "{names:?}"
    );
    let table = sb.ok(&project, &["keys", "list"]);
    assert!(table.starts_with("ID") && table.contains("web"), "{table}");

    let id = created["id"].as_str().expect("id");
    sb.ok(&project, &["keys", "revoke", id]);
    let (status, body, _) = get(&format!("{}/v1/info", dev.endpoint), Some(&secret)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("revoked_api_key"))
    );
    let err = sb.fails(&project, &["keys", "revoke", id]);
    assert!(
        err.contains("no active key") && err.contains("hint:"),
        "{err}"
    );

    // A public key cannot manage keys.
    let err = sb.fails(&project, &["keys", "list", "--token", &dev.public_key]);
    assert!(
        err.contains("requires the service key") && err.contains("hint:"),
        "{err}"
    );
    let err = sb.fails(
        &project,
        &["keys", "create", "--tier", "admin", "--name", "x"],
    );
    assert!(err.contains("invalid value 'admin'"), "{err}");
}

/// Runs `reactor` with `input` on standard input.
fn with_stdin(sb: &Sandbox, cwd: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = sb
        .cmd(cwd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    child.wait_with_output().expect("wait")
}

#[tokio::test]
async fn login_whoami_and_organizations() {
    let sb = Sandbox::new();
    let project = sb.init("orgs");
    let dev = start_dev(&sb, &project);
    let http = reqwest::Client::new();
    let signup = |email: &str, invite: Option<&str>| {
        http.post(format!("{}/auth/v1/signup", dev.endpoint))
            .header("apikey", &dev.public_key)
            .json(&serde_json::json!({"email": email, "password": "a good password", "invite_token": invite}))
            .send()
    };
    assert_eq!(
        signup("ada@example.com", None)
            .await
            .expect("signup")
            .status(),
        200
    );

    // Before a login, the local context acts with the service key.
    let who: Value = serde_json::from_str(&sb.ok(&project, &["whoami", "--json"])).expect("json");
    assert_eq!(
        (who["tier"].as_str(), who["user_id"].as_str()),
        (Some("service"), None)
    );

    let out = with_stdin(
        &sb,
        &project,
        &["login", "--email", "ada@example.com", "--password-stdin"],
        "wrong password\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid login credentials") && err.contains("hint:"),
        "{err}"
    );
    let out = with_stdin(
        &sb,
        &project,
        &["login", "--email", "ada@example.com", "--password-stdin"],
        "a good password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "login prints no secret");

    let who: Value = serde_json::from_str(&sb.ok(&project, &["whoami", "--json"])).expect("json");
    assert_eq!(
        (who["email"].as_str(), who["tier"].as_str()),
        (Some("ada@example.com"), Some("public"))
    );
    assert!(who["user_id"].is_string());
    let config = std::fs::read_to_string(sb.home().join("config.toml")).expect("config");
    assert!(
        config.contains(&dev.public_key) && !config.contains("access_token"),
        "{config}"
    );

    // An access token about to expire is refreshed on the next command, and the rotated
    // session is stored in its place.
    let creds_path = sb.home().join("credentials.toml");
    let stored_session = |text: &str| -> Value {
        let table: toml::Table = toml::from_str(text).expect("toml");
        serde_json::from_str(table["tokens"]["local"].as_str().expect("local token"))
            .expect("session json")
    };
    let text = std::fs::read_to_string(&creds_path).expect("creds");
    let mut session = stored_session(&text);
    let old_refresh = session["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    session["expires_at"] = serde_json::json!(0);
    let mut table: toml::Table = toml::from_str(&text).expect("toml");
    if let Some(tokens) = table.get_mut("tokens").and_then(|t| t.as_table_mut()) {
        tokens.insert("local".into(), toml::Value::String(session.to_string()));
    }
    std::fs::write(&creds_path, toml::to_string(&table).expect("toml")).expect("write");
    let who: Value = serde_json::from_str(&sb.ok(&project, &["whoami", "--json"])).expect("json");
    assert_eq!(who["email"], "ada@example.com");
    let renewed = stored_session(&std::fs::read_to_string(&creds_path).expect("creds"));
    assert_ne!(
        renewed["refresh_token"],
        serde_json::json!(old_refresh),
        "rotated"
    );
    assert!(renewed["expires_at"].as_i64().is_some_and(|e| e > 0));

    // Organizations through the CLI.
    let org: Value =
        serde_json::from_str(&sb.ok(&project, &["org", "create", "Acme Inc", "--json"]))
            .expect("json");
    assert_eq!(
        (org["slug"].as_str(), org["role"].as_str()),
        (Some("acme-inc"), Some("owner"))
    );
    assert!(
        sb.fails(&project, &["org", "members"])
            .contains("pass --org"),
        "no org yet"
    );
    let err = sb.fails(&project, &["org", "use", "globex"]);
    assert!(err.contains("not a member of `globex`"), "{err}");
    sb.ok(&project, &["org", "use", "acme-inc"]);
    let who: Value = serde_json::from_str(&sb.ok(&project, &["whoami", "--json"])).expect("json");
    assert_eq!(who["org_role"], "owner");
    assert!(sb.ok(&project, &["org", "list"]).contains("*  acme-inc"));

    let invite: Value =
        serde_json::from_str(&sb.ok(&project, &["org", "invite", "bob@example.com", "--json"]))
            .expect("json");
    let token = invite["token"].as_str().expect("token");
    // reactor dev delivers email to its console and its dev mailbox.
    let mailbox: Value = http
        .get(format!(
            "{}/auth/v1/dev/mailbox?to=bob@example.com",
            dev.endpoint
        ))
        .header("apikey", &dev.service_key)
        .send()
        .await
        .expect("mailbox")
        .json()
        .await
        .expect("json");
    assert_eq!(mailbox[0]["subject"], "You are invited", "{mailbox}");
    assert!(
        mailbox[0]["body"]
            .as_str()
            .is_some_and(|b| b.contains(token))
    );
    let printed: Vec<String> = (0..50)
        .filter_map(|_| dev.stdout.recv_timeout(Duration::from_millis(100)).ok())
        .take_while(|l| !l.contains("end of email"))
        .collect();
    assert!(
        printed
            .iter()
            .any(|l| l.contains("email to bob@example.com")),
        "{printed:?}"
    );
    assert_eq!(
        signup("bob@example.com", Some(token))
            .await
            .expect("signup")
            .status(),
        200
    );
    let members: Value =
        serde_json::from_str(&sb.ok(&project, &["org", "members", "--json"])).expect("json");
    assert_eq!(members.as_array().map(Vec::len), Some(2));
    sb.ok(&project, &["org", "role", "bob@example.com", "admin"]);
    assert!(
        sb.ok(&project, &["org", "members"])
            .contains("bob@example.com  admin")
    );
    let err = sb.fails(&project, &["org", "role", "ada@example.com", "member"]);
    assert!(err.contains("at least one owner"), "{err}");
    sb.ok(&project, &["org", "remove", "bob@example.com"]);
    assert!(
        sb.fails(&project, &["org", "remove", "bob@example.com"])
            .contains("not a member")
    );

    // Logout forgets the session; the context falls back to its public key.
    sb.ok(&project, &["logout"]);
    let who: Value = serde_json::from_str(&sb.ok(&project, &["whoami", "--json"])).expect("json");
    assert_eq!(
        (who["tier"].as_str(), who["user_id"].as_str()),
        (Some("public"), None)
    );
    let creds = std::fs::read_to_string(sb.home().join("credentials.toml")).expect("creds");
    assert!(!creds.contains("access_token"), "{creds}");
}

// The server runs in this process while the CLI subprocess blocks a thread: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_migrations_against_a_postgres_server() {
    let Some(url) = reactor_db::testing::fresh_postgres_database("cli_data").await else {
        return;
    };
    let db = reactor_db::Db::connect(&url).await.expect("db");
    let service = reactor_core::keys::generate(reactor_core::KeyTier::Service);
    db.insert_api_key(&service, "ci").await.expect("key");
    let server = reactor_server::Server::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let endpoint = server.endpoint().expect("endpoint");
    let config = reactor_server::config::ServerConfig::new(
        server.local_addr().expect("addr"),
        url.clone(),
        reactor_server::compiled_capabilities(),
    );
    let state = reactor_server::AppState::start(db, &config, &endpoint)
        .await
        .expect("state");
    tokio::spawn(server.run(state, std::future::pending()));

    let sb = Sandbox::new();
    let project = sb.init("pgapp");
    let out = with_stdin(
        &sb,
        &project,
        &[
            "context",
            "add",
            "pg",
            "--endpoint",
            &endpoint,
            "--token-stdin",
        ],
        &service.secret,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fn run<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [args, &["--context", "pg"][..]].concat()
    }

    let status: Value =
        serde_json::from_str(&sb.ok(&project, &run(&["data", "status", "--json"]))).expect("json");
    assert_eq!(status[0]["name"], "0001_init.sql");
    assert_eq!(status[0]["status"], "pending");
    sb.ok(&project, &run(&["data", "migrate"]));
    assert!(
        sb.ok(&project, &run(&["data", "status"]))
            .contains("0001_init.sql  applied")
    );

    // A new migration with a mistake: a located error, nothing applied.
    let path = sb.ok(&project, &["data", "new", "Add tags!"]);
    let path = PathBuf::from(path.trim());
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    assert!(
        name.ends_with("_add_tags.sql") && name.len() == "20261126011500_add_tags.sql".len(),
        "{name}"
    );
    std::fs::write(
        &path,
        "create table tags (id int primary key);\ncreate tabel oops (x int);\n",
    )
    .expect("write");
    let err = sb.fails(&project, &run(&["data", "migrate"]));
    assert!(
        err.contains(&format!("{name}:2:8: syntax error")) && err.contains("hint:"),
        "{err}"
    );
    assert!(
        sb.ok(&project, &run(&["data", "status"]))
            .contains(&format!("{name}  pending"))
    );
    std::fs::write(&path, "create table tags (id int primary key);\n").expect("write");
    sb.ok(&project, &run(&["data", "migrate"]));

    // The SQL console, as the owner.
    let changed: Value = serde_json::from_str(&sb.ok(
        &project,
        &run(&[
            "data",
            "query",
            "insert into tags (id) values (1), (2)",
            "--json",
        ]),
    ))
    .expect("json");
    assert_eq!(changed["rows_affected"], 2);
    let read: Value = serde_json::from_str(&sb.ok(
        &project,
        &run(&[
            "data",
            "query",
            "select id, id * 10 as tenfold from tags order by id",
            "--json",
        ]),
    ))
    .expect("json");
    assert_eq!(
        read["columns"],
        serde_json::json!(["id", "tenfold"]),
        "columns keep their order"
    );
    assert_eq!(read["rows"], serde_json::json!([[1, 10], [2, 20]]));
    let shown = sb.ok(
        &project,
        &run(&["data", "query", "select id from tags where id = 2"]),
    );
    assert_eq!(shown.trim(), "id\n2");
    let err = sb.fails(&project, &run(&["data", "query", "select nope from tags"]));
    assert!(
        err.contains("column \"nope\" does not exist") && err.contains("42703"),
        "{err}"
    );

    // Editing an applied migration is refused by name.
    let first = project.join("data/migrations/0001_init.sql");
    let text = std::fs::read_to_string(&first).expect("read");
    std::fs::write(&first, format!("{text}\n-- edited\n")).expect("write");
    let err = sb.fails(&project, &run(&["data", "migrate"]));
    assert!(
        err.contains("0001_init.sql was changed after it was applied"),
        "{err}"
    );
    let table = sb.ok(&project, &run(&["data", "status"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("0001_init.sql ") && l.ends_with(" modified")),
        "{table}"
    );
}

#[test]
fn data_on_o1_migrates_and_serves_the_scaffold() {
    let sb = Sandbox::new();
    let project = sb.init("o1");
    let dev = start_dev(&sb, &project);
    // `reactor dev` applied the scaffold's PostgreSQL migration, translated to SQLite with its
    // policies, before it announced itself.
    let status = sb.ok(&project, &["data", "status"]);
    assert!(
        status.contains("0001_init.sql") && status.contains("applied"),
        "{status}"
    );
    let out = sb.run(&project, &["data", "migrate"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("nothing to apply"),
        "{said}"
    );
    // /data/v1 serves the table; the public key meets its row-level security (no rows).
    let (status, body) = http_get(
        &dev.endpoint,
        "/data/v1/todos?select=title",
        &dev.public_key,
    );
    assert_eq!((status, body.as_str()), (200, "[]"));
    // A new file is applied by the running server within a second or so.
    let dir = project.join("data/migrations");
    std::fs::write(
        dir.join("0002_tags.sql"),
        "create table tags (id integer primary key, name text);\n",
    )
    .expect("write");
    let mut served = (0, String::new());
    for _ in 0..50 {
        served = http_get(&dev.endpoint, "/data/v1/tags", &dev.public_key);
        if served.0 == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!((served.0, served.1.as_str()), (200, "[]"));
    // The generated types know the table.
    let types = sb.ok(&project, &["data", "types"]);
    assert!(
        types.contains("      tags: {") && types.contains("export type Database"),
        "{types}"
    );
    // A migration O1 cannot keep the meaning of is refused with its place and a hint.
    std::fs::write(dir.join("9999_ext.sql"), "\ncreate extension pgcrypto;\n").expect("write");
    let err = sb.fails(&project, &["data", "migrate"]);
    assert!(
        err.contains("9999_ext.sql:2:1") && err.contains("hint:") && err.contains("O2"),
        "{err}"
    );
    std::fs::remove_file(dir.join("9999_ext.sql")).expect("remove");
    // Reset asks first; without a terminal or --yes it does nothing.
    let err = sb.fails(&project, &["data", "reset"]);
    assert!(err.contains("--yes"), "{err}");
    let out = sb.run(&project, &["data", "reset", "--yes"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("applied 0002_tags.sql"),
        "{said}"
    );
    // The SQL console works on O1.
    let shown = sb.ok(&project, &["data", "query", "select 1 as one, 'x' as two"]);
    assert_eq!(shown.trim(), "one  two\n1    x");
    let err = sb.fails(
        &project,
        &["data", "query", "select 1", "--token", &dev.public_key],
    );
    assert!(
        err.contains("running SQL requires the service key"),
        "{err}"
    );
}

/// A GET over plain HTTP/1.1 with the project key; the status and body.
/// A GET with `key` as the `apikey` (none when empty: a browser loading a page).
fn http_get(endpoint: &str, path: &str, key: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{}Connection: close\r\n\r\n",
        if key.is_empty() {
            String::new()
        } else {
            format!("apikey: {key}\r\n")
        }
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// Polls `reactor functions invoke` until its stdout satisfies `done` (reloads take up to a
/// second); the last stdout.
fn until_output(
    sb: &Sandbox,
    project: &Path,
    args: &[&str],
    done: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    for _ in 0..60 {
        let out = sb.run(project, args);
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && done(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("reactor {args:?} never satisfied the check; last answer: {last}")
}

#[test]
fn functions_from_scaffold_to_hot_reload() {
    let sb = Sandbox::new();
    let project = sb.init("fns");
    let dev = start_dev(&sb, &project);

    // The scaffold's function answers through the CLI, with its query string.
    let out = sb.ok(
        &project,
        &["functions", "invoke", "hello", "--path", "?name=Ada"],
    );
    assert!(out.contains("Hello, Ada!"), "{out}");

    // `functions new` scaffolds and registers; the running server picks it up.
    let said = sb.ok(&project, &["functions", "new", "greet"]);
    assert!(said.contains("functions/greet/index.ts"), "{said}");
    let manifest = std::fs::read_to_string(project.join("reactor.toml")).expect("manifest");
    assert!(
        manifest.contains("name = \"greet\"") && manifest.contains("# The whole backend"),
        "comments kept:\n{manifest}"
    );
    let out = until_output(
        &sb,
        &project,
        &["functions", "invoke", "greet", "--data", r#"{"name":"Bo"}"#],
        |o| o.contains("Hello, Bo!"),
    );
    assert!(out.contains("\"user\":null"), "{out}");
    let err = sb.fails(&project, &["functions", "new", "greet"]);
    assert!(err.contains("already declares"), "{err}");
    let err = sb.fails(&project, &["functions", "new", "Bad Name"]);
    assert!(
        err.contains("not a valid function name") && err.contains("hint:"),
        "{err}"
    );

    let list = sb.ok(&project, &["functions", "list"]);
    assert!(
        list.contains("greet") && list.contains("hello") && list.contains("64 MiB"),
        "{list}"
    );
    let logs = sb.ok(&project, &["functions", "logs", "greet"]);
    assert!(logs.contains("greeting Bo"), "{logs}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut printed = Vec::new();
    while !printed
        .iter()
        .any(|l: &String| l.contains("greet") && l.contains("greeting Bo"))
    {
        assert!(
            Instant::now() < deadline,
            "reactor dev prints handlers' logs: {printed:?}"
        );
        if let Ok(line) = dev.stderr.recv_timeout(Duration::from_millis(200)) {
            printed.push(line);
        }
    }

    // Secrets: the value comes from stdin, is never listed, and reaches the handler as env.
    let out = with_stdin(&sb, &project, &["secrets", "set", "TOKEN"], "tok-123\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = sb.ok(&project, &["secrets", "list"]);
    assert!(
        list.contains("TOKEN") && !list.contains("tok-123"),
        "{list}"
    );
    std::fs::write(
        project.join("functions/greet/index.ts"),
        "export default (req: Request, env: Record<string, string>) => new Response(`token=${env.TOKEN}`);\n",
    )
    .expect("write");
    until_output(&sb, &project, &["functions", "invoke", "greet"], |o| {
        o == "token=tok-123"
    });

    // A syntax error is reported with file, line and column; the previous code keeps serving.
    std::fs::write(
        project.join("functions/greet/index.ts"),
        "export default () => {\n  return new Response(\"x\";\n};\n",
    )
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("functions/greet/index.ts:2:"))
    {
        assert!(
            Instant::now() < deadline,
            "no located error on stderr: {seen:?}"
        );
        if let Ok(line) = dev.stderr.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let out = sb.ok(&project, &["functions", "invoke", "greet"]);
    assert_eq!(out, "token=tok-123");
    let list = sb.ok(&project, &["functions", "list"]);
    assert!(list.contains("serving previous code"), "{list}");

    sb.ok(&project, &["secrets", "unset", "TOKEN"]);
    let err = sb.fails(&project, &["secrets", "unset", "TOKEN"]);
    assert!(err.contains("no secret named `TOKEN`"), "{err}");

    // Unknown functions fail with a hint; a function's own error status is a failed command.
    let err = sb.fails(&project, &["functions", "invoke", "nope"]);
    assert!(
        err.contains("no function named `nope`") && err.contains("reactor functions list"),
        "{err}"
    );
    std::fs::write(
        project.join("functions/greet/index.ts"),
        "export default () => new Response('teapot', { status: 418 });\n",
    )
    .expect("write");
    until_output(&sb, &project, &["functions", "list"], |o| {
        !o.contains("error")
    });
    let out = sb.run(&project, &["functions", "invoke", "greet"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "teapot");
    assert!(String::from_utf8_lossy(&out.stderr).contains("418"));
}

#[test]
fn storage_commands_move_files_up_and_down() {
    let sb = Sandbox::new();
    let project = sb.init("files");
    let dev = start_dev(&sb, &project);

    sb.ok(
        &project,
        &[
            "storage",
            "buckets",
            "create",
            "docs",
            "--size-limit",
            "1MB",
        ],
    );
    let err = sb.fails(&project, &["storage", "buckets", "create", "docs"]);
    assert!(err.contains("already exists"), "{err}");
    let list = sb.ok(&project, &["storage", "buckets"]);
    assert!(list.contains("docs") && list.contains("1.00 MiB"), "{list}");

    // Up, listed, and down again byte for byte.
    let local = sb.path("report.txt");
    let text: String = (0..200).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&local, &text).expect("write");
    let said = sb.run(
        &project,
        &[
            "storage",
            "cp",
            local.to_str().expect("utf8"),
            "ss:///docs/reports/",
        ],
    );
    assert!(
        said.status.success(),
        "{}",
        String::from_utf8_lossy(&said.stderr)
    );
    assert!(
        String::from_utf8_lossy(&said.stderr).contains("ss:///docs/reports/report.txt"),
        "{}",
        String::from_utf8_lossy(&said.stderr)
    );
    let listed = sb.ok(&project, &["storage", "ls", "ss:///docs/"]);
    assert!(listed.contains("reports/"), "{listed}");
    let listed = sb.ok(
        &project,
        &["storage", "ls", "ss:///docs/reports/", "--json"],
    );
    let entries: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(entries[0]["name"], "report.txt", "{listed}");
    let back = sb.path("back.txt");
    sb.ok(
        &project,
        &[
            "storage",
            "cp",
            "ss:///docs/reports/report.txt",
            back.to_str().expect("utf8"),
        ],
    );
    assert_eq!(std::fs::read_to_string(&back).expect("read"), text);
    // Into a directory, under the object's name.
    let dir = sb.path("downloads");
    std::fs::create_dir(&dir).expect("mkdir");
    sb.ok(
        &project,
        &[
            "storage",
            "cp",
            "ss:///docs/reports/report.txt",
            dir.to_str().expect("utf8"),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("report.txt")).expect("read"),
        text
    );

    // Refusals are clear, exit non-zero, and leave nothing behind.
    let big = sb.path("big.bin");
    std::fs::write(&big, vec![0u8; 2 * 1024 * 1024]).expect("write");
    let err = sb.fails(
        &project,
        &["storage", "cp", big.to_str().expect("utf8"), "ss:///docs/"],
    );
    assert!(err.contains("limit") && err.contains("hint:"), "{err}");
    let missing = dir.join("missing.txt");
    let err = sb.fails(
        &project,
        &[
            "storage",
            "cp",
            "ss:///docs/missing.txt",
            missing.to_str().expect("utf8"),
        ],
    );
    assert!(err.contains("not found"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "a failed download leaves no file: {left:?}");
    let err = sb.fails(&project, &["storage", "cp", "a.txt", "b.txt"]);
    assert!(
        err.contains("neither side") && err.contains("ss:///"),
        "{err}"
    );
    let err = sb.fails(
        &project,
        &[
            "storage",
            "cp",
            local.to_str().expect("utf8"),
            "ss:///docs/../x",
        ],
    );
    assert!(
        err.contains("invalid") || err.contains("not a valid object path"),
        "{err}"
    );

    // A signed URL works without a key.
    let url = sb.ok(
        &project,
        &[
            "storage",
            "sign",
            "ss:///docs/reports/report.txt",
            "--expires-in",
            "60",
        ],
    );
    let path = url.trim().trim_start_matches(&dev.endpoint).to_string();
    let (status, body) = http_get(&dev.endpoint, &path, "");
    assert_eq!((status, body.len()), (200, text.len()), "{url}");

    sb.ok(
        &project,
        &[
            "storage",
            "mv",
            "ss:///docs/reports/report.txt",
            "ss:///docs/archive/2026.txt",
        ],
    );
    let listed = sb.ok(&project, &["storage", "ls", "ss:///docs/archive/"]);
    assert!(listed.contains("2026.txt"), "{listed}");
    sb.ok(&project, &["storage", "rm", "ss:///docs/archive/2026.txt"]);
    let err = sb.fails(&project, &["storage", "rm", "ss:///docs/archive/2026.txt"]);
    assert!(err.contains("not found"), "{err}");
    sb.ok(
        &project,
        &[
            "storage",
            "cp",
            local.to_str().expect("utf8"),
            "ss:///docs/again.txt",
        ],
    );
    let err = sb.fails(&project, &["storage", "buckets", "delete", "docs"]);
    assert!(err.contains("not empty") && err.contains("hint:"), "{err}");
    sb.ok(
        &project,
        &["storage", "buckets", "delete", "docs", "--force"],
    );
    let list = sb.ok(&project, &["storage", "buckets", "--json"]);
    assert_eq!(list.trim(), "[]");
}

#[test]
fn jobs_commands_run_a_function_and_show_the_run() {
    let sb = Sandbox::new();
    let project = sb.init("jobs");
    let manifest = project.join("reactor.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("manifest");
    text.push_str(
        "\n[[jobs]]\nname = \"greet\"\nfunction = \"hello\"\ntrigger = { type = \"queue\" }\n\n[[jobs]]\nname = \"nightly\"\nfunction = \"hello\"\ntrigger = { type = \"cron\", schedule = \"0 3 * * *\" }\n",
    );
    std::fs::write(&manifest, text).expect("write");
    let _dev = start_dev(&sb, &project);

    let list = sb.ok(&project, &["jobs", "list"]);
    assert!(
        list.contains("greet") && list.contains("cron 0 3 * * *") && list.contains("T03:00:00"),
        "{list}"
    );
    let out = sb.ok(
        &project,
        &[
            "jobs",
            "run",
            "greet",
            "--data",
            r#"{"name": "Ada"}"#,
            "--wait",
        ],
    );
    assert!(
        out.contains("status    succeeded") && out.contains("attempts  1/3"),
        "{out}"
    );
    assert!(out.contains(r#"payload   {"name":"Ada"}"#), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("run       "))
        .expect("the run's id")
        .trim()
        .to_string();
    let runs = sb.ok(&project, &["jobs", "runs", "greet"]);
    assert!(runs.contains(&id) && runs.contains("succeeded"), "{runs}");
    let shown: Value =
        serde_json::from_str(&sb.ok(&project, &["jobs", "show", &id, "--json"])).expect("json");
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["trigger"]["type"], "queue");

    let queued = sb.ok(&project, &["jobs", "run", "greet"]);
    assert_eq!(queued.trim().len(), 36, "prints the run id: {queued}");

    let err = sb.fails(&project, &["jobs", "run", "nope"]);
    assert!(
        err.contains("no job named `nope`") && err.contains("hint:"),
        "{err}"
    );
    let err = sb.fails(&project, &["jobs", "run", "greet", "--data", "{oops"]);
    assert!(err.contains("--data is not JSON"), "{err}");
    let err = sb.fails(&project, &["jobs", "cancel", &id]);
    assert!(
        err.contains("is succeeded") && err.contains("hint:"),
        "{err}"
    );
    let out = sb.run(&project, &["jobs", "retry", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("queued again"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// `reactor build && reactor deploy` of the todo example into a server on Postgres, then its
/// data, function and site over HTTP; a changed page uploads only itself; rollback; a
/// dry run; another project refused. (The server runs in this process while the CLI
/// subprocess blocks a thread: two workers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_and_deploy_the_todo_example_to_a_postgres_server() {
    let Some(url) = reactor_db::testing::fresh_postgres_database("cli_deploy").await else {
        return;
    };
    let db = reactor_db::Db::connect(&url).await.expect("db");
    let service = reactor_core::keys::generate(reactor_core::KeyTier::Service);
    db.insert_api_key(&service, "ci").await.expect("key");
    let public = reactor_core::keys::generate(reactor_core::KeyTier::Public);
    db.insert_api_key(&public, "web").await.expect("key");
    let server = reactor_server::Server::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let endpoint = server.endpoint().expect("endpoint");
    let sb = Sandbox::new();
    let mut config = reactor_server::config::ServerConfig::new(
        server.local_addr().expect("addr"),
        url.clone(),
        reactor_server::compiled_capabilities(),
    );
    config.deploy.cache_dir = Some(sb.path("server-cache"));
    config.storage.path = Some(sb.path("server-objects"));
    let state = reactor_server::AppState::start(db, &config, &endpoint)
        .await
        .expect("state");
    tokio::spawn(server.run(state, std::future::pending()));

    let project = sb.path("todo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/todo"),
        &project,
    );
    let _ = std::fs::remove_dir_all(project.join(".reactor"));
    // A git checkout: the deploy records its commit.
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
            .args(args)
            .current_dir(&project)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "todo"]);
    let commit = git(&["rev-parse", "HEAD"]);
    sb.ok(
        &project,
        &["context", "add", "prod", "--endpoint", &endpoint],
    );
    // CI style: the token from the environment, the context by flag.
    let deploy = |args: &[&str]| {
        let out = sb
            .cmd(&project)
            .env("REACTOR_TOKEN", &service.secret)
            .args(args)
            .args(["--context", "prod"])
            .output()
            .expect("run reactor");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let report: Value = serde_json::from_str(&sb.ok(&project, &["build", "--json"])).expect("json");
    let release = report["release"].as_str().expect("release").to_string();
    assert!(
        Path::new(report["path"].as_str().expect("path")).is_file(),
        "{report}"
    );
    assert_eq!(report["sites"][0]["name"], "web");
    assert_eq!(report["migrations"][0], "0001_init.sql");

    let (ok, out, err) = deploy(&["deploy"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains(&format!("Deployed release {}", &release[..12])),
        "{out}"
    );
    assert!(out.contains("0001_init.sql, 0002_lists.sql"), "{out}");

    // The deployed backend answers: data (under RLS), the function, the site.
    let (status, body) = http_get(&endpoint, "/data/v1/todos", &service.secret);
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(&endpoint, "/fn/v1/hello?name=ci", &public.secret);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello, ci!"), "{body}");
    let (status, body) = http_get(&endpoint, "/", "");
    assert_eq!(status, 200);
    assert!(body.contains("<title>Todo</title>"), "{body}");
    let (status, body) = http_get(&endpoint, "/app.js", "");
    assert_eq!(status, 200);
    assert!(body.contains("createClient"), "{body}");

    // Again: nothing to do.
    let (ok, out, _) = deploy(&["deploy"]);
    assert!(ok);
    assert!(out.contains("already the one serving"), "{out}");

    // A changed page: only it (and its compressed variants) travel.
    let page = project.join("sites/web/index.html");
    let html = std::fs::read_to_string(&page).expect("page");
    std::fs::write(&page, html.replace("<h1>Todo</h1>", "<h1>Todo, v2</h1>")).expect("write");
    let (ok, out, err) = deploy(&["deploy"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains(": 3 of "),
        "the page and its two variants: {err}"
    );
    assert!(out.contains("previous release"), "{out}");
    assert!(http_get(&endpoint, "/", "").1.contains("Todo, v2"));

    let (ok, list, err) = deploy(&["releases", "list"]);
    assert!(ok, "{err}");
    assert_eq!(
        list.matches(" * ").count() + list.matches(" *\n").count(),
        1,
        "{list}"
    );
    assert!(list.contains(&release[..12]), "{list}");
    assert!(list.contains(&commit[..10]), "the commit deployed: {list}");

    // Back to the first release.
    let (ok, out, err) = deploy(&["rollback"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("Rolled back to release {}", &release[..12])),
        "{out}"
    );
    assert!(out.contains("none to keep"), "{out}");
    assert!(!http_get(&endpoint, "/", "").1.contains("Todo, v2"));

    // A dry run with a new migration: said, not done.
    std::fs::write(
        project.join("data/migrations/0003_tags.sql"),
        "create table tags (id int primary key);",
    )
    .expect("write");
    let (ok, out, err) = deploy(&["deploy", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Dry run") && out.contains("0003_tags.sql"),
        "{out}"
    );
    assert_eq!(http_get(&endpoint, "/data/v1/tags", &service.secret).0, 404);

    // Another project's bundle: refused with the reason and a hint.
    let manifest = project.join("reactor.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(&manifest, text.replace("todo-b0c8898d", "not-the-todo-app")).expect("write");
    let (ok, _, err) = deploy(&["deploy"]);
    assert!(!ok);
    assert!(
        err.contains("not-the-todo-app") && err.contains("todo-b0c8898d"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");

    // Without the service key: refused.
    std::fs::write(&manifest, text).expect("write");
    let out = sb
        .cmd(&project)
        .env("REACTOR_TOKEN", &public.secret)
        .args(["deploy", "--context", "prod"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("service key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An upstream that answers every request with one OpenAI chat completion: enough for the
/// gateway to have something to record.
fn canned_upstream() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 65536];
            let mut got = Vec::new();
            // Headers, then the body its Content-Length announces.
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let body = r#"{"id":"c","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/v1")
}

#[test]
fn gateway_usage_reads_what_the_gateway_served() {
    let upstream = canned_upstream();
    let sb = Sandbox::new();
    let project = sb.init("ai");
    let manifest = project.join("reactor.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("manifest");
    text.push_str(&format!(
        "\n[[gateway.providers]]\nname = \"up\"\nkind = \"openai-compatible\"\nbase_url = \"{upstream}\"\n\n[[gateway.models]]\nname = \"fast\"\ntargets = [{{ provider = \"up\", model = \"tiny\" }}]\n\n[[gateway.prices]]\nmodel = \"tiny\"\ninput_per_million = 2\noutput_per_million = 4\n"
    ));
    std::fs::write(&manifest, text).expect("write");
    let dev = start_dev(&sb, &project);
    assert!(
        sb.ok(&project, &["gateway", "usage"]).is_empty(),
        "nothing yet"
    );

    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}/gateway/v1/chat/completions", dev.endpoint),
            "-H",
            &format!("authorization: Bearer {}", dev.service_key),
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#,
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");

    // Recorded off the request path: within a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let table = sb.ok(&project, &["gateway", "usage", "--by", "model"]);
        if table.contains("fast") {
            break table;
        }
        assert!(Instant::now() < deadline, "no usage row: {table}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        table.contains("MODEL") && table.contains("COST (USD)"),
        "{table}"
    );
    // 5 prompt tokens at $2/M and 6 completion tokens at $4/M.
    assert!(table.contains("0.000034"), "{table}");
    let json: Value =
        serde_json::from_str(&sb.ok(&project, &["gateway", "usage", "--json"])).expect("json");
    assert_eq!(json["usage"][0]["requests"], 1, "{json}");
    assert_eq!(json["usage"][0]["prompt_tokens"], 5);
    let err = sb.fails(&project, &["gateway", "usage", "--by", "password"]);
    assert!(err.contains("cannot group by `password`"), "{err}");
}

#[test]
fn connect_lists_integrations_and_connections_and_deletes_one() {
    let sb = Sandbox::new();
    let project = sb.init("links");
    let manifest = project.join("reactor.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("manifest");
    text.push_str(
        "\n[[connect.integrations]]\nname = \"billing\"\nprovider = \"stripe\"\n\n[[connect.integrations]]\nname = \"crm\"\nprovider = \"api-key\"\nbase_url = \"https://api.crm.example.com/v2\"\n",
    );
    std::fs::write(&manifest, text).expect("write");
    let dev = start_dev(&sb, &project);

    let table = sb.ok(&project, &["connect", "integrations"]);
    assert!(
        table.contains("billing") && table.contains("stripe") && table.contains("api_key"),
        "{table}"
    );
    assert!(
        sb.ok(&project, &["connect", "connections"]).is_empty(),
        "none yet"
    );

    let out = Command::new("curl")
        .args([
            "-s",
            &format!("{}/connect/v1/connections", dev.endpoint),
            "-H",
            &format!("authorization: Bearer {}", dev.service_key),
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"integration":"billing","api_key":"sk_test_cli","end_user":{"id":"cust-9"}}"#,
        ])
        .output()
        .expect("curl");
    let made: Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = made["id"].as_str().expect("id").to_string();

    let table = sb.ok(&project, &["connect", "connections"]);
    assert!(
        table.contains(&id) && table.contains("end user cust-9") && table.contains("active"),
        "{table}"
    );
    assert!(
        !table.contains("sk_test_cli"),
        "credentials are never shown"
    );
    let json: Value = serde_json::from_str(&sb.ok(
        &project,
        &[
            "connect",
            "connections",
            "--integration",
            "billing",
            "--json",
        ],
    ))
    .expect("json");
    assert_eq!(json[0]["id"], id.as_str());
    let none: Value = serde_json::from_str(&sb.ok(
        &project,
        &["connect", "connections", "--integration", "crm", "--json"],
    ))
    .expect("json");
    assert_eq!(none, serde_json::json!([]));

    let deleted: Value =
        serde_json::from_str(&sb.ok(&project, &["connect", "delete", &id, "--json"]))
            .expect("json");
    assert_eq!(deleted["deleted"], id.as_str());
    let err = sb.fails(&project, &["connect", "delete", &id]);
    assert!(err.contains("no connection"), "{err}");
    assert!(sb.ok(&project, &["connect", "connections"]).is_empty());
}
