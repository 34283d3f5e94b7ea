//! `/deploy/v1` against real `reactor-server` processes, on SQLite and on Postgres: a deploy
//! switches functions, sites, jobs and the schema together; a failing migration, a wrong
//! project or a tampered bundle changes nothing; rollback goes back; replicas follow; and a
//! server killed mid-deploy restarts on one whole release.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reactor_db::testing::fresh_postgres_database;
use serde_json::{Value, json};
use support::{Proc, free_port, keys_create, wait_up};

mod support;

/// Version `v` of a project: a migration per version up to `v`, a function and a site page
/// that say `v`, and a job.
fn write_project(dir: &Path, project_id: &str, v: u32) {
    let _ = std::fs::remove_dir_all(dir.join("data"));
    let write = |path: &str, text: &str| {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write(
        "reactor.toml",
        &format!(
            r#"project_id = "{project_id}"
name = "deploy test"

[[functions]]
name = "hello"
source = "functions/hello"

[[sites]]
name = "web"
source = "sites/web"
spa = true

[[jobs]]
name = "tidy"
function = "hello"
trigger = {{ type = "queue" }}
"#
        ),
    );
    write(
        "data/migrations/001_notes.sql",
        "create table notes (id int primary key, body text not null);",
    );
    if v >= 2 {
        write(
            "data/migrations/002_pinned.sql",
            "alter table notes add column pinned boolean not null default false;",
        );
    }
    write(
        "functions/hello/index.ts",
        "import { version } from './version';\nexport default (): Response => new Response(`hello from v${version}`);\n",
    );
    write(
        "functions/hello/version.ts",
        &format!("export const version: number = {v};\n"),
    );
    write("sites/web/index.html", &format!("<h1>site v{v}</h1>"));
    write("sites/web/logo.svg", "<svg/>");
}

fn bundle(dir: &Path) -> (String, PathBuf) {
    let manifest = reactor_manifest::Manifest::load(&dir.join("reactor.toml")).expect("manifest");
    let built = reactor_bundle::build(&manifest, &reactor_bundle::BuildOptions { out_dir: None })
        .expect("build");
    (built.release, built.path)
}

/// A server over `url`, with no project of its own: it runs what is deployed to it.
fn server(url: &str, work: &Path, port: u16) -> Proc {
    server_with_config(url, work, port, "")
}

struct Target {
    base: String,
    service: String,
    public: String,
    http: reqwest::Client,
}

impl Target {
    async fn up(port: u16, service: &str, public: &str) -> Target {
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        wait_up(&http, &base).await;
        Target {
            base,
            service: service.into(),
            public: public.into(),
            http,
        }
    }

    async fn upload(&self, key: &str, bytes: Vec<u8>, query: &str) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}/deploy/v1/releases{query}", self.base))
            .header("apikey", key)
            .body(bytes)
            .send()
            .await
            .expect("upload");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn deploy(&self, path: &Path) -> (u16, Value) {
        self.upload(&self.service, std::fs::read(path).expect("bundle"), "")
            .await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}{path}", self.base),
            )
            .header("apikey", &self.service);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("call");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn text(&self, path: &str) -> (u16, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header("apikey", &self.public)
            .send()
            .await
            .expect("get");
        (res.status().as_u16(), res.text().await.expect("text"))
    }

    /// A page as a browser loads it: no key.
    async fn page(&self, path: &str) -> (u16, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get");
        (res.status().as_u16(), res.text().await.expect("text"))
    }

    /// The function's and the site's answers: which release serves.
    async fn serving(&self) -> (String, String) {
        (self.text("/fn/v1/hello").await.1, self.page("/").await.1)
    }
}

/// Deploy, change, deploy (thin), fail, roll back: the whole life on one server.
async fn deploy_life(url: &str, work: &Path) {
    let service = keys_create(url, "svc");
    let public = keys_create(url, "pub");
    let port = free_port();
    let _server = server(url, work, port);
    let t = Target::up(port, &service, &public).await;
    let project = work.join("project");

    // Before any deploy: no site, no function.
    assert_eq!(t.page("/").await.0, 404);
    let (status, releases) = t.call("GET", "/deploy/v1/releases", None).await;
    assert_eq!(status, 200, "{releases}");
    assert_eq!(releases["releases"], json!([]));

    // The public key may not deploy.
    write_project(&project, "deploy-life", 1);
    let (r1, v1) = bundle(&project);
    let (status, body) = t
        .upload(&public, std::fs::read(&v1).expect("read"), "")
        .await;
    assert_eq!(status, 403, "{body}");

    // A dry run changes nothing but says what would happen.
    let (status, dry) = t
        .upload(&service, std::fs::read(&v1).expect("read"), "?dry_run=true")
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["migrations"], json!(["001_notes.sql"]));
    assert_eq!(t.call("GET", "/data/v1/notes", None).await.0, 404);
    assert_eq!(t.page("/").await.0, 404);

    // v1: everything at once, with the commit it was built from.
    let (status, out) = t
        .upload(
            &service,
            std::fs::read(&v1).expect("read"),
            "?git_commit=0123456789abcdef0123456789abcdef01234567",
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["release"], r1);
    assert_eq!(out["migrations"], json!(["001_notes.sql"]));
    assert_eq!(
        t.serving().await,
        ("hello from v1".into(), "<h1>site v1</h1>".into())
    );
    let (status, _) = t
        .call(
            "POST",
            "/data/v1/notes",
            Some(json!({"id": 1, "body": "kept"})),
        )
        .await;
    assert_eq!(status, 201);
    let (_, jobs) = t.call("GET", "/jobs/v1", None).await;
    assert_eq!(jobs[0]["name"], "tidy", "{jobs}");
    let (_, sites) = t.call("GET", "/sites/v1", None).await;
    assert_eq!(sites["release"], r1, "{sites}");
    assert_eq!(sites["sites"][0]["source"], "release");
    assert_eq!(sites["sites"][0]["files"], 2);
    let (status, releases) = t.call("GET", "/sites/v1/releases", None).await;
    assert_eq!(status, 200, "{releases}");
    let first = &releases["releases"][0];
    assert_eq!(first["id"], r1);
    assert_eq!(first["active"], true);
    assert_eq!(first["status"], "ready");
    assert_eq!(
        first["git_commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert!(
        first["created_by"]
            .as_str()
            .unwrap_or("")
            .starts_with("service key"),
        "{first}"
    );
    let (status, one) = t
        .call("GET", &format!("/deploy/v1/releases/{}", &r1[..10]), None)
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["migrations"], json!(["001_notes.sql"]));
    assert_eq!(one["functions"], json!(["hello"]));
    // The SPA fallback and the site's own prefix, from the release.
    assert_eq!(t.page("/todos/1").await.1, "<h1>site v1</h1>");
    assert_eq!(t.page("/sites/v1/web/").await.1, "<h1>site v1</h1>");
    // An API client's mistyped path is the JSON 404, not the SPA's page.
    let (status, body) = t.text("/dat/v1/notes").await;
    assert_eq!(status, 404);
    assert!(body.contains("no route for /dat/v1/notes"), "{body}");

    // The same bundle again: nothing to do.
    let (status, again) = t.deploy(&v1).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["unchanged"], true);

    // v2: only what changed travels.
    write_project(&project, "deploy-life", 2);
    let (r2, v2) = bundle(&project);
    let manifest = reactor_manifest::Manifest::load(&project.join("reactor.toml")).expect("m");
    let index = reactor_bundle::build(&manifest, &reactor_bundle::BuildOptions { out_dir: None })
        .expect("build")
        .index;
    let hashes: Vec<String> = index.files.iter().map(|f| f.sha256.clone()).collect();
    let (status, missing) = t
        .call(
            "POST",
            "/deploy/v1/missing",
            Some(json!({ "files": hashes })),
        )
        .await;
    assert_eq!(status, 200);
    let missing: Vec<String> = serde_json::from_value(missing["missing"].clone()).expect("list");
    let changed: Vec<&str> = index
        .files
        .iter()
        .filter(|f| missing.contains(&f.sha256))
        .map(|f| f.path.as_str())
        .collect();
    assert!(
        changed.contains(&"migrations/002_pinned.sql"),
        "{changed:?}"
    );
    assert!(changed.contains(&"sites/web/index.html"), "{changed:?}");
    assert!(!changed.contains(&"sites/web/logo.svg"), "{changed:?}");
    assert!(
        !changed.contains(&"migrations/001_notes.sql"),
        "{changed:?}"
    );
    // A thin bundle lacking a file the server does not hold is refused…
    let too_thin = reactor_bundle::thin(&v2, |_| false).expect("thin");
    let (status, body) = t.upload(&service, too_thin, "").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "missing_files");
    // …the one with exactly what is missing is not.
    let thin = reactor_bundle::thin(&v2, |f| missing.contains(&f.sha256)).expect("thin");
    let (status, out) = t.upload(&service, thin, "").await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["release"], r2);
    assert_eq!(out["migrations"], json!(["002_pinned.sql"]));
    assert_eq!(out["uploaded"], json!(missing.len()));
    assert_eq!(
        t.serving().await,
        ("hello from v2".into(), "<h1>site v2</h1>".into())
    );

    // v3 with a migration failing on its second statement: nothing changes.
    write_project(&project, "deploy-life", 2);
    std::fs::write(
        project.join("data/migrations/003_broken.sql"),
        "create table archive (id int);\ninsert into missing_table values (1);\n",
    )
    .expect("write");
    std::fs::write(
        project.join("functions/hello/version.ts"),
        "export const version: number = 3;\n",
    )
    .expect("write");
    let (r3, v3) = bundle(&project);
    let (status, body) = t.deploy(&v3).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "migration_failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("003_broken.sql:2"),
        "{body}"
    );
    assert_eq!(
        t.serving().await,
        ("hello from v2".into(), "<h1>site v2</h1>".into()),
        "the previous release keeps serving"
    );
    assert_eq!(
        t.call("GET", "/data/v1/archive", None).await.0,
        404,
        "nothing applied"
    );
    let (_, list) = t.call("GET", "/deploy/v1/releases", None).await;
    let failed = list["releases"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == r3))
        .expect("the failed release is recorded");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["active"], false);

    // A function whose code does not compile (the index made to match it, as only a
    // hand-made bundle could): refused before anything is touched.
    let broken = rewrite(
        &std::fs::read(&v2).expect("read"),
        "functions/hello/version.ts",
        b"export const version = ;",
    );
    let (status, body) = t.upload(&service, broken, "").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "function_failed");
    assert!(
        body["message"].as_str().unwrap_or("").contains("hello"),
        "{body}"
    );
    assert_eq!(t.serving().await.0, "hello from v2");

    // Rollback to v1: code and site go back; migration 002 stays, and is named.
    let (status, back) = t.call("POST", "/deploy/v1/rollback", Some(json!({}))).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["release"], r1);
    assert_eq!(back["migrations_kept"], json!(["002_pinned.sql"]));
    assert_eq!(
        t.serving().await,
        ("hello from v1".into(), "<h1>site v1</h1>".into())
    );
    let (status, notes) = t.call("GET", "/data/v1/notes?select=id,pinned", None).await;
    assert_eq!(status, 200, "{notes}");
    assert_eq!(
        notes,
        json!([{"id": 1, "pinned": false}]),
        "data and the column stay"
    );
    // Forward again by id prefix; an unknown prefix is a 404.
    let (status, _) = t
        .call(
            "POST",
            "/deploy/v1/rollback",
            Some(json!({"release": &r2[..8]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(t.serving().await.0, "hello from v2");
    let (status, body) = t
        .call(
            "POST",
            "/deploy/v1/rollback",
            Some(json!({"release": "ffffffff"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = t
        .call(
            "POST",
            "/deploy/v1/rollback",
            Some(json!({"release": &r3[..8]})),
        )
        .await;
    assert_eq!(status, 409, "a failed release is not a target: {body}");

    // Another project's bundle is refused, by name.
    let other = work.join("other");
    write_project(&other, "someone-else", 1);
    let (_, foreign) = bundle(&other);
    let (status, body) = t.deploy(&foreign).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "project_mismatch");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("someone-else")
    );

    // A tampered bundle: one byte of the site changed after the build.
    let full = std::fs::read(&v2).expect("read");
    let tampered = retamper(&full);
    let (status, body) = t.upload(&service, tampered, "").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_bundle");
    assert_eq!(t.serving().await.0, "hello from v2");
}

/// A bundle's entries, in order.
fn entries(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
    let tar = zstd::decode_all(bundle).expect("zstd");
    let mut archive = tar::Archive::new(tar.as_slice());
    archive
        .entries()
        .expect("entries")
        .map(|entry| {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("read");
            (path, data)
        })
        .collect()
}

fn pack(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        out.append_data(&mut header, path, data.as_slice())
            .expect("append");
    }
    zstd::encode_all(out.into_inner().expect("tar").as_slice(), 3).expect("zstd")
}

/// The bundle with the first byte of `sites/web/index.html` changed (index untouched).
fn retamper(bundle: &[u8]) -> Vec<u8> {
    let mut all = entries(bundle);
    for (path, data) in &mut all {
        if path == "sites/web/index.html" {
            data[0] ^= 1;
        }
    }
    pack(&all)
}

/// The bundle with `path` replaced by `bytes` and its index updated to match.
fn rewrite(bundle: &[u8], path: &str, bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut all = entries(bundle);
    let mut index: reactor_bundle::Index = serde_json::from_slice(&all[0].1).expect("index");
    for f in &mut index.files {
        if f.path == path {
            f.sha256 = hex::encode(sha2::Sha256::digest(bytes));
            f.size = bytes.len() as u64;
        }
    }
    all[0].1 = index.to_bytes();
    for (p, data) in &mut all {
        if p == path {
            *data = bytes.to_vec();
        }
    }
    pack(&all)
}

#[tokio::test]
async fn a_release_lives_on_sqlite() {
    let work = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", work.path().join("server.db").display());
    deploy_life(&url, work.path()).await;
}

#[tokio::test]
async fn a_release_lives_on_postgres() {
    let Some(url) = fresh_postgres_database("deploy_life").await else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    deploy_life(&url, work.path()).await;
}

#[tokio::test]
async fn replicas_follow_a_deploy_and_a_killed_deploy_leaves_one_release() {
    let Some(url) = fresh_postgres_database("deploy_replicas").await else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let project = work.path().join("project");
    let service = keys_create(&url, "svc");
    let public = keys_create(&url, "pub");
    let (pa, pb) = (free_port(), free_port());
    let a = server(&url, work.path(), pa);
    let _b = server(&url, work.path(), pb);
    let ta = Target::up(pa, &service, &public).await;
    let tb = Target::up(pb, &service, &public).await;

    // A deploy to A reaches B within a couple of seconds.
    write_project(&project, "deploy-replicas", 1);
    let (r1, v1) = bundle(&project);
    let (status, out) = ta.deploy(&v1).await;
    assert_eq!(status, 201, "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tb.serving().await.0 != "hello from v1" {
        assert!(Instant::now() < deadline, "B never switched to v1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tb.page("/").await.1, "<h1>site v1</h1>");

    // v2's migration takes seconds; A is killed while it runs.
    write_project(&project, "deploy-replicas", 2);
    std::fs::write(
        project.join("data/migrations/002_pinned.sql"),
        "alter table notes add column pinned boolean not null default false;\nselect pg_sleep(4);\n",
    )
    .expect("write");
    let (r2, v2) = bundle(&project);
    let bytes = std::fs::read(&v2).expect("read");
    let upload = {
        let base = ta.base.clone();
        let key = service.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/deploy/v1/releases"))
                .header("apikey", key)
                .body(bytes)
                .send()
                .await
        })
    };
    // Wait until the deploy is inside its transaction (the release is recorded pending).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = tb.call("GET", "/deploy/v1/releases", None).await;
        if list["releases"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["id"] == r2 && r["status"] == "pending"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deploy never started: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut a = a;
    a.0.kill().expect("SIGKILL");
    let _ = a.0.wait();
    assert!(
        upload.await.expect("join").is_err(),
        "the connection died with A"
    );

    // A restarts on v1, whole: code, site, and a schema without v2's column.
    let a = server(&url, work.path(), pa);
    let ta = Target::up(pa, &service, &public).await;
    assert_eq!(
        ta.serving().await,
        ("hello from v1".into(), "<h1>site v1</h1>".into())
    );
    let (status, body) = ta.call("GET", "/data/v1/notes?select=pinned", None).await;
    assert_eq!(status, 400, "v2's column was never added: {body}");
    let (_, list) = ta.call("GET", "/deploy/v1/releases", None).await;
    let active: Vec<&Value> = list["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .filter(|r| r["active"] == true)
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["id"], r1);

    // The same deploy, again, completes.
    let (status, out) = ta.deploy(&v2).await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(ta.serving().await.0, "hello from v2");
    drop(a);
}

/// A server as `server` starts it, with `config` as its config file.
fn server_with_config(url: &str, work: &Path, port: u16, config: &str) -> Proc {
    let path = work.join(format!("server-{port}.toml"));
    std::fs::write(&path, config).expect("config");
    Proc(
        Command::new(support::BIN)
            .env("REACTOR_DATABASE_URL", url)
            .env("REACTOR_LISTEN", format!("127.0.0.1:{port}"))
            .env("REACTOR_STORAGE_PATH", work.join("objects"))
            .env("REACTOR_CACHE_DIR", work.join(format!("cache-{port}")))
            .env("REACTOR_CONFIG", &path)
            .env("REACTOR_LOG", "warn")
            .env_remove("REACTOR_PROJECT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn reactor-server"),
    )
}

/// Signs `email` up on `t` and returns their access token.
async fn user_token(t: &Target, email: &str) -> String {
    let res = t
        .http
        .post(format!("{}/auth/v1/signup", t.base))
        .header("apikey", &t.public)
        .json(&json!({ "email": email, "password": "correct horse battery" }))
        .send()
        .await
        .expect("signup");
    let body: Value = res.json().await.expect("json");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {body}"))
        .to_string()
}

#[tokio::test]
async fn admins_deploy_limits_hold_and_requests_in_flight_finish_on_their_release() {
    let work = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", work.path().join("server.db").display());
    let service = keys_create(&url, "svc");
    let public = keys_create(&url, "pub");
    let port = free_port();
    let _server = server_with_config(
        &url,
        work.path(),
        port,
        "[deploy]\nadmins = [\"ops@example.com\"]\nmax_bundle_mb = 1\n",
    );
    let t = Target::up(port, &service, &public).await;

    // A project whose function answers slowly, with its version.
    let project = work.path().join("project");
    write_project(&project, "deploy-admins", 1);
    std::fs::write(
        project.join("functions/hello/index.ts"),
        "import { version } from './version';\nexport default async (): Promise<Response> => {\n  await new Promise((r) => setTimeout(r, 1500));\n  return new Response(`slow v${version}`);\n};\n",
    )
    .expect("write");
    let (_, v1) = bundle(&project);

    // A signed-in user the config names deploys; another user may not.
    let ops = user_token(&t, "ops@example.com").await;
    let eve = user_token(&t, "eve@example.com").await;
    let as_user = |token: &str, path: &Path| {
        t.http
            .post(format!("{}/deploy/v1/releases", t.base))
            .header("apikey", &t.public)
            .bearer_auth(token)
            .body(std::fs::read(path).expect("bundle"))
            .send()
    };
    let res = as_user(&eve, &v1).await.expect("deploy");
    assert_eq!(res.status().as_u16(), 403);
    let res = as_user(&ops, &v1).await.expect("deploy");
    assert_eq!(res.status().as_u16(), 201);
    let (_, list) = t.call("GET", "/deploy/v1/releases", None).await;
    assert_eq!(
        list["releases"][0]["created_by"], "ops@example.com",
        "{list}"
    );

    // A request that started on v1 finishes on v1 while v2 is deployed under it.
    std::fs::write(
        project.join("functions/hello/version.ts"),
        "export const version: number = 2;\n",
    )
    .expect("write");
    let (_, v2) = bundle(&project);
    let in_flight = {
        let (http, base, key) = (t.http.clone(), t.base.clone(), public.clone());
        tokio::spawn(async move {
            http.get(format!("{base}/fn/v1/hello"))
                .header("apikey", key)
                .send()
                .await
                .expect("invoke")
                .text()
                .await
                .expect("text")
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, out) = t.deploy(&v2).await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(in_flight.await.expect("join"), "slow v1");
    assert_eq!(t.text("/fn/v1/hello").await.1, "slow v2");

    // Past `max_bundle_mb`: refused while it streams in, nothing kept.
    let big = vec![7u8; 1024 * 1024 + 1];
    let (status, body) = t.upload(&service, big, "").await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "bundle_too_large");
    let uploads = std::fs::read_dir(work.path().join(format!("cache-{port}/uploads")))
        .expect("uploads")
        .count();
    assert_eq!(uploads, 0, "the partial upload was removed");
    // Garbage under the limit is not a bundle.
    let (status, body) = t.upload(&service, b"not a bundle".to_vec(), "").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_bundle");
}
