//! `/jobs/v1` with real functions: a project's jobs run its TypeScript handlers through the
//! same path as `/fn/v1`; retries end dead; cron fires; and on Postgres a server killed with
//! SIGKILL mid-run has its run taken over by another `reactor-server` process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reactor_core::{KeyTier, keys};
use reactor_db::Db;
use reactor_db::testing::fresh_postgres_database;
use reactor_server::config::ServerConfig;
use reactor_server::{AppState, Server};
use serde_json::{Value, json};
use support::{Proc, free_port, wait_up};

mod support;

const MANIFEST: &str = r#"project_id = "jobs-test-0001"
name = "jobs test"

[[functions]]
name = "work"
source = "functions/work"

[[functions]]
name = "slow"
source = "functions/slow"

[[jobs]]
name = "send"
function = "work"
trigger = { type = "queue" }
max_attempts = 2
backoff_ms = 100

[[jobs]]
name = "every-second"
function = "work"
trigger = { type = "cron", schedule = "* * * * * *" }

[[jobs]]
name = "long"
function = "slow"
trigger = { type = "queue" }
timeout_ms = 20000

[[jobs]]
name = "on-signup"
function = "work"
trigger = { type = "event", event = "auth.user.created" }

[[jobs]]
name = "on-upload"
function = "work"
trigger = { type = "event", event = "storage.object.created", bucket = "inbox" }
"#;

const WORK: &str = r#"export default async (req: Request): Promise<Response> => {
  const run = await req.json();
  console.log(`run ${run.job} attempt ${run.attempt}`, JSON.stringify(run.payload));
  if (run.payload && run.payload.fail) return new Response("refused", { status: 500 });
  return Response.json({ ok: true, role: req.headers.get("x-reactor-role") });
};
"#;

const SLOW: &str = r#"export default async (req: Request): Promise<Response> => {
  const run = await req.json();
  console.log(`slow attempt ${run.attempt}`);
  await new Promise((r) => setTimeout(r, 3000));
  return new Response("done");
};
"#;

fn write_project(dir: &Path) {
    std::fs::write(dir.join("reactor.toml"), MANIFEST).expect("manifest");
    for (name, source) in [("work", WORK), ("slow", SLOW)] {
        let d = dir.join("functions").join(name);
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("index.ts"), source).expect("source");
    }
}

struct Harness {
    base: String,
    service_key: String,
    public_key: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        write_project(dir.path());
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .expect("db");
        let public = keys::generate(KeyTier::Public);
        db.insert_api_key(&public, "test").await.expect("key");
        let service = keys::generate(KeyTier::Service);
        db.insert_api_key(&service, "admin").await.expect("key");
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let endpoint = server.endpoint().expect("endpoint");
        let config = ServerConfig {
            master_key: Some(reactor_core::seal::MasterKey::generate()),
            project: Some(dir.path().to_path_buf()),
            storage: reactor_server::config::StorageSettings {
                path: Some(dir.path().join("objects")),
                ..Default::default()
            },
            ..ServerConfig::new(
                server.local_addr().expect("addr"),
                String::new(),
                vec![
                    reactor_core::Capability::Identity,
                    reactor_core::Capability::Storage,
                    reactor_core::Capability::Functions,
                    reactor_core::Capability::Jobs,
                ],
            )
        };
        let state = AppState::start(db, &config, &endpoint)
            .await
            .expect("state");
        tokio::spawn(server.run(state, std::future::pending()));
        Harness {
            base: endpoint,
            service_key: service.secret,
            public_key: public.secret,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn call(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.http, &self.base, key, method, path, body).await
    }
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http
        .request(method, format!("{base}{path}"))
        .header("apikey", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls a run until `done` holds for it.
async fn until_run(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, run) =
            call(http, base, key, "GET", &format!("/jobs/v1/runs/{id}"), None).await;
        assert_eq!(status, 200, "{run}");
        if done(&run) {
            return run;
        }
        assert!(Instant::now() < deadline, "the run never got there: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn jobs_run_functions_retry_and_fire_on_schedule() {
    let h = Harness::start().await;
    let key = h.service_key.clone();

    let (status, run) = h
        .call(
            &key,
            "POST",
            "/jobs/v1/send/runs",
            Some(json!({"to": "ada"})),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().expect("id").to_string();
    let done = until_run(&h.http, &h.base, &key, &id, |r| r["status"] == "succeeded").await;
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["payload"], json!({"to": "ada"}));
    let logs = done["logs"].as_array().expect("logs");
    assert!(
        logs.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("run send attempt 1") && m.contains("ada"))),
        "the function's log lines are the run's: {done}"
    );
    assert!(done["duration_ms"].as_i64().is_some());

    // A failing run is retried, then dead with the function's answer as its error.
    let (_, run) = h
        .call(
            &key,
            "POST",
            "/jobs/v1/send/runs",
            Some(json!({"fail": true})),
        )
        .await;
    let id = run["id"].as_str().expect("id").to_string();
    let dead = until_run(&h.http, &h.base, &key, &id, |r| r["status"] == "dead").await;
    assert_eq!(dead["attempts"], 2);
    assert_eq!(dead["last_error"], "the function answered 500: refused");
    let (status, again) = h
        .call(&key, "POST", &format!("/jobs/v1/runs/{id}/retry"), None)
        .await;
    assert_eq!(status, 200, "{again}");
    assert!(
        matches!(again["status"].as_str(), Some("queued" | "running")),
        "queued again (and maybe already claimed): {again}"
    );
    let (status, refused) = h
        .call(&key, "POST", &format!("/jobs/v1/runs/{id}/retry"), None)
        .await;
    assert!(status == 409 || refused["status"] == "queued", "{refused}");

    // Cron with seconds: runs appear without anyone enqueueing them.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, runs) = h
            .call(&key, "GET", "/jobs/v1/every-second/runs", None)
            .await;
        if runs.as_array().is_some_and(|r| {
            r.iter()
                .any(|x| x["status"] == "succeeded" && x["trigger"]["type"] == "cron")
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no cron run: {runs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, listed) = h.call(&key, "GET", "/jobs/v1", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["every-second", "long", "on-signup", "on-upload", "send"]
    );
    assert!(listed[0]["next_run_at"].is_string(), "{listed}");

    // Errors: unknown job or run, bad JSON, and only the service key.
    let (status, e) = h.call(&key, "POST", "/jobs/v1/nope/runs", None).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("job_not_found")));
    let (status, _) = h
        .call(
            &key,
            "GET",
            "/jobs/v1/runs/00000000-0000-0000-0000-000000000000",
            None,
        )
        .await;
    assert_eq!(status, 404);
    let res = h
        .http
        .post(format!("{}/jobs/v1/send/runs", h.base))
        .header("apikey", &key)
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 400);
    let (status, e) = h.call(&h.public_key, "GET", "/jobs/v1", None).await;
    assert_eq!((status, e["code"].as_str()), (403, Some("not_admin")));

    // A cancelled run stays cancelled, though its function was already running.
    let (_, run) = h.call(&key, "POST", "/jobs/v1/long/runs", None).await;
    let id = run["id"].as_str().expect("id").to_string();
    let (status, cancelled) = h
        .call(&key, "POST", &format!("/jobs/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (_, after) = h
        .call(&key, "GET", &format!("/jobs/v1/runs/{id}"), None)
        .await;
    assert_eq!(
        after["status"], "cancelled",
        "a cancelled run stays cancelled: {after}"
    );
}

fn server_process(url: &str, project: &Path, config: &Path, port: u16) -> Proc {
    Proc(
        Command::new(support::BIN)
            .env("REACTOR_DATABASE_URL", url)
            .env("REACTOR_LISTEN", format!("127.0.0.1:{port}"))
            .env("REACTOR_PROJECT", project)
            .env("REACTOR_CONFIG", config)
            .env("REACTOR_STORAGE_PATH", project.join("objects"))
            .env("REACTOR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn reactor-server"),
    )
}

#[tokio::test]
async fn a_run_outlives_a_server_killed_mid_run() {
    let Some(url) = fresh_postgres_database("jobs_sigkill").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    write_project(dir.path());
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[jobs]\nlease_secs = 2\n").expect("config");
    let out = Command::new(support::BIN)
        .args(["keys", "create", "--tier", "svc", "--name", "t"])
        .env("REACTOR_DATABASE_URL", &url)
        .output()
        .expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let (pa, pb) = (free_port(), free_port());
    let a = server_process(&url, dir.path(), &config, pa);
    let a_base = format!("http://127.0.0.1:{pa}");
    wait_up(&http, &a_base).await;
    let (status, run) = call(&http, &a_base, &key, "POST", "/jobs/v1/long/runs", None).await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().expect("id").to_string();
    until_run(&http, &a_base, &key, &id, |r| r["status"] == "running").await;
    // A has the run; kill it hard, then start B, which takes the run over once A's lease
    // lapses.
    let mut a = a;
    a.0.kill().expect("SIGKILL");
    let _ = a.0.wait();
    let b = server_process(&url, dir.path(), &config, pb);
    let b_base = format!("http://127.0.0.1:{pb}");
    wait_up(&http, &b_base).await;
    let done = until_run(&http, &b_base, &key, &id, |r| r["status"] == "succeeded").await;
    assert_eq!(done["attempts"], 2, "{done}");
    drop(b);
}

/// Polls a job's runs until one satisfies `done`.
async fn until_job_run(h: &Harness, job: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, runs) = h
            .call(&h.service_key, "GET", &format!("/jobs/v1/{job}/runs"), None)
            .await;
        if let Some(run) = runs.as_array().and_then(|r| r.iter().find(|x| done(x))) {
            return run.clone();
        }
        assert!(Instant::now() < deadline, "no such run of {job}: {runs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sign_ups_and_uploads_run_their_event_jobs() {
    let h = Harness::start().await;
    let (status, session) = h
        .call(
            &h.public_key,
            "POST",
            "/auth/v1/signup",
            Some(json!({"email": "events@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let run = until_job_run(&h, "on-signup", |r| r["status"] == "succeeded").await;
    let record = &run["payload"]["record"];
    assert_eq!(record["email"], "events@example.com", "{run}");
    assert_eq!(record["id"], session["user"]["id"]);
    assert!(
        record.get("password_hash").is_none(),
        "no password hash in a payload: {run}"
    );
    assert_eq!(run["trigger"]["event"], "auth.user.created");

    let key = h.service_key.clone();
    for bucket in ["inbox", "other"] {
        let (status, _) = h
            .call(
                &key,
                "POST",
                "/storage/v1/bucket",
                Some(json!({"id": bucket})),
            )
            .await;
        assert_eq!(status, 200);
    }
    for path in [
        "/storage/v1/object/other/skip.txt",
        "/storage/v1/object/inbox/hello.txt",
    ] {
        let res = h
            .http
            .post(format!("{}{path}", h.base))
            .header("apikey", &key)
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .expect("upload");
        assert_eq!(res.status().as_u16(), 200);
    }
    let run = until_job_run(&h, "on-upload", |r| r["status"] == "succeeded").await;
    assert_eq!(run["payload"]["record"]["name"], "hello.txt", "{run}");
    assert!(run["payload"]["record"].get("blob").is_none(), "{run}");
    let (_, runs) = h.call(&key, "GET", "/jobs/v1/on-upload/runs", None).await;
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(1),
        "only the inbox bucket: {runs}"
    );
}
