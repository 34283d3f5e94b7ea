//! `reactor-server` as an operator runs it: a subprocess on an ephemeral port, driven over
//! real HTTP, against SQLite and against the machine's Postgres.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reactor_db::testing::fresh_postgres_database;
use serde_json::Value;

use support::{BIN, keys_create};

mod support;

struct Running {
    child: Child,
    base: String,
    /// Where the server keeps object bytes; removed with it.
    _objects: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server and waits for its "listening" log line, which names the bound port.
fn start(database_url: &str) -> Running {
    let objects = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .env("REACTOR_DATABASE_URL", database_url)
        .env("REACTOR_STORAGE_PATH", objects.path())
        .env("REACTOR_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn reactor-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .expect("read line");
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            panic!("log lines are JSON when stdout is not a terminal: {line}");
        };
        if event["message"] == "reactor-server listening" {
            break event["addr"].as_str().expect("addr field").to_string();
        }
    };
    // Keep draining the logs so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Running {
        child,
        base: format!("http://{addr}"),
        _objects: objects,
    }
}

async fn get(url: &str, key: Option<&str>) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(key) = key {
        req = req.header("apikey", key);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, headers)
}

async fn exercise(database_url: &str, topology: &str) {
    let public = keys_create(database_url, "pub");
    let service = keys_create(database_url, "svc");
    assert!(public.starts_with("rk_pub_") && service.starts_with("rk_svc_"));
    let server = start(database_url);
    let base = &server.base;

    let (status, body, headers) = get(&format!("{base}/healthz"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    assert!(
        headers.contains_key("x-request-id"),
        "every response carries a request id"
    );

    let (status, body, _) = get(&format!("{base}/readyz"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");

    let (status, body, headers) = get(&format!("{base}/v1/info"), None).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "missing_api_key");
    assert!(
        body["hint"].as_str().is_some_and(|h| h.contains("apikey")),
        "{body}"
    );
    assert!(body.get("details").is_some());
    assert!(headers.contains_key("x-request-id"));

    let (status, body, _) = get(
        &format!("{base}/v1/info"),
        Some("rk_pub_00000000000000000000000000000000"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (status, _, _) = get(&format!("{base}/v1/info"), Some("not-a-key")).await;
    assert_eq!(status, 401);

    let (status, body, _) = get(&format!("{base}/v1/info"), Some(&public)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topology"], topology);
    assert_eq!(body["caller"]["tier"], "public");
    let capabilities = body["capabilities"].as_array().expect("capabilities");
    let status = |name: &str| {
        capabilities
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].clone())
    };
    assert_eq!(status("identity"), Some(serde_json::json!("serving")));
    assert_eq!(status("data"), Some(serde_json::json!("serving")));
    assert_eq!(status("storage"), Some(serde_json::json!("serving")));
    assert_eq!(status("jobs"), Some(serde_json::json!("serving")));
    assert_eq!(status("sites"), Some(serde_json::json!("serving")));
    assert_eq!(status("gateway"), Some(serde_json::json!("serving")));
    assert_eq!(status("connect"), Some(serde_json::json!("serving")));
    assert!(body["version"].is_string());

    // A service key presented as a Bearer token works the same way.
    let res = reqwest::Client::new()
        .get(format!("{base}/v1/info"))
        .bearer_auth(&service)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["caller"]["role"], "reactor_service");

    // A key's use is recorded (off the request path, so it may take a moment to land).
    let list = || {
        let listed = Command::new(BIN)
            .args(["keys", "list", "--json"])
            .env("REACTOR_DATABASE_URL", database_url)
            .output()
            .expect("keys list");
        let listed: Value = serde_json::from_slice(&listed.stdout).expect("json list");
        let public_key = listed
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["tier"] == "public"))
            .cloned()
            .expect("public key listed");
        (listed, public_key)
    };
    let used_since = std::time::Instant::now();
    let (listed, public_key) = loop {
        let (listed, public_key) = list();
        if public_key["last_used_at"].is_string() {
            break (listed, public_key);
        }
        assert!(
            used_since.elapsed() < Duration::from_secs(5),
            "the public key's use was never recorded: {public_key}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Revoked keys are refused on the next request.
    let id = public_key["id"]
        .as_str()
        .expect("public key id")
        .to_string();
    assert!(
        !listed.to_string().contains(&public),
        "listings never show secrets"
    );
    let revoked = Command::new(BIN)
        .args(["keys", "revoke", &id])
        .env("REACTOR_DATABASE_URL", database_url)
        .status()
        .expect("revoke");
    assert!(revoked.success());
    // Revoked by another process (as on another replica): refused within a second.
    let revoked_at = std::time::Instant::now();
    loop {
        let (status, body, _) = get(&format!("{base}/v1/info"), Some(&public)).await;
        if status == 401 {
            assert_eq!(body["code"], "revoked_api_key");
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_millis(1500),
            "a revoked key still works after {:?}",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, body, _) = get(&format!("{base}/nope"), Some(&service)).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    sigterm_exits_cleanly(server);
}

/// SIGTERM stops the server with status 0, and a request already in flight (here: half its
/// headers sent) still gets its answer.
fn sigterm_exits_cleanly(mut server: Running) {
    use std::io::{Read, Write};
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut in_flight = std::net::TcpStream::connect(&addr).expect("connect");
    in_flight
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        .expect("write half");
    std::thread::sleep(Duration::from_millis(200));

    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    std::thread::sleep(Duration::from_millis(300));
    in_flight.write_all(b"\r\n").expect("finish the request");
    in_flight
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = String::new();
    in_flight.read_to_string(&mut answer).expect("read answer");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight request answered: {answer}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "SIGTERM ends the server with status 0, got {status}"
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn serves_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    exercise(
        &format!("sqlite://{}", dir.path().join("r.db").display()),
        "O1",
    )
    .await;
}

#[tokio::test]
async fn serves_on_postgres() {
    let Some(url) = fresh_postgres_database("server").await else {
        return;
    };
    exercise(&url, "O2").await;
}

#[test]
fn bad_configuration_fails_with_a_hint() {
    let out = Command::new(BIN)
        .env("REACTOR_LISTEN", "nowhere")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`nowhere` is not a listen address"), "{err}");
    assert!(err.contains("hint:"), "{err}");

    let out = Command::new(BIN)
        .env(
            "REACTOR_DATABASE_URL",
            "postgres://nobody:pw@127.0.0.1:1/none",
        )
        .env("REACTOR_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to Postgres"), "{err}");
    assert!(!err.contains(":pw@"), "the password is not echoed: {err}");

    for (connections, says) in [
        ("many", "REACTOR_DATA_CONNECTIONS=\"many\" is not a number"),
        ("0", "connections = 0; it is from 1 to 1000"),
    ] {
        let out = Command::new(BIN)
            .env("REACTOR_DATA_CONNECTIONS", connections)
            .env("REACTOR_LISTEN", "127.0.0.1:0")
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert!(err.contains("hint:"), "{err}");
    }

    // The gateway's trusted CAs come from the environment; a file that cannot be used stops
    // the server rather than leaving every TLS provider to fail.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("env.db").display());
    for (value, says) in [
        ("/nonexistent/ca.pem", "SSL_CERT_FILE=/nonexistent/ca.pem"),
        (BIN, "no CA certificate in it"),
    ] {
        let out = Command::new(BIN)
            .env("REACTOR_DATABASE_URL", &url)
            .env("REACTOR_STORAGE_PATH", dir.path())
            .env("REACTOR_CAPABILITIES", "gateway")
            .env("REACTOR_LISTEN", "127.0.0.1:0")
            .env("SSL_CERT_FILE", value)
            .output()
            .expect("run");
        assert!(!out.status.success(), "SSL_CERT_FILE={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert!(err.contains("hint:"), "{err}");
    }
}

#[tokio::test]
async fn admin_create_user_makes_a_server_admin() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("admin.db").display());
    let refused = Command::new(BIN)
        .args(["admin", "create-user", "--email", "root@example.com"])
        .env("REACTOR_DATABASE_URL", &url)
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--password-stdin"));

    let mut child = Command::new(BIN)
        .args([
            "admin",
            "create-user",
            "--email",
            "Root@example.com",
            "--password-stdin",
        ])
        .env("REACTOR_DATABASE_URL", &url)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"root's password\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let public = keys_create(&url, "pub");
    let server = start(&url);
    let session: Value = reqwest::Client::new()
        .post(format!("{}/auth/v1/token?grant_type=password", server.base))
        .header("apikey", &public)
        .json(&serde_json::json!({"email": "root@example.com", "password": "root's password"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    assert_eq!(session["user"]["server_role"], "admin", "{session}");
    assert!(session["user"]["email_confirmed_at"].is_string());
}

#[test]
fn signing_keys_are_sealed_with_the_master_key() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("sealed.db").display());
    let create = |email: &str, master: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["admin", "create-user", "--email", email, "--password-stdin"])
            .env("REACTOR_DATABASE_URL", &url)
            .env_remove("REACTOR_MASTER_KEY")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(master) = master {
            cmd.env("REACTOR_MASTER_KEY", master);
        }
        let mut child = cmd.spawn().expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"a good password\n")
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let k1 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let k2 = "HxAeHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";
    let (ok, err) = create("first@example.com", Some(k1));
    assert!(ok, "{err}");
    let (ok, err) = create("second@example.com", Some(k2));
    assert!(
        !ok && err.contains("cannot open the signing key"),
        "another key cannot open it: {err}"
    );
    let (ok, err) = create("third@example.com", None);
    assert!(!ok && err.contains("none is configured"), "{err}");
    let (ok, err) = create("fourth@example.com", Some("too-short"));
    assert!(
        !ok && err.contains("invalid master key") && err.contains("hint:"),
        "{err}"
    );
    let (ok, err) = create("fifth@example.com", Some(k1));
    assert!(ok, "the right key opens it again: {err}");
}

/// Browsers on another origin may call the API: preflights are answered without a key, and
/// answers expose the headers clients read. `REACTOR_CORS_ORIGINS` narrows the origins.
#[tokio::test]
async fn browsers_pass_cors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("cors.db").display());
    let key = keys_create(&url, "pub");
    let server = start(&url);
    let http = reqwest::Client::new();
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/data/v1/todos", server.base),
        )
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "apikey, authorization, prefer, x-reactor-org",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status().as_u16(), 200);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let allowed = h["access-control-allow-headers"].to_str().expect("ascii");
    for name in ["apikey", "authorization", "prefer", "x-reactor-org"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .expect("ascii")
            .contains("PATCH")
    );
    let answer = http
        .get(format!("{}/v1/info", server.base))
        .header("origin", "http://localhost:5173")
        .header("apikey", &key)
        .send()
        .await
        .expect("get");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.headers()["access-control-allow-origin"], "*");
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii");
    assert!(
        exposed.contains("content-range") && exposed.contains("x-request-id"),
        "{exposed}"
    );
    drop(server);

    // Narrowed to one origin: others get no CORS headers, so browsers refuse them.
    let objects = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .env("REACTOR_DATABASE_URL", &url)
        .env("REACTOR_STORAGE_PATH", objects.path())
        .env("REACTOR_LISTEN", "127.0.0.1:0")
        .env("REACTOR_CORS_ORIGINS", "https://app.example.com")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines.next().expect("line").expect("read");
        let event: Value = serde_json::from_str(&line).expect("json");
        if event["message"] == "reactor-server listening" {
            break event["addr"].as_str().expect("addr").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let narrowed = Running {
        child,
        base: format!("http://{addr}"),
        _objects: objects,
    };
    let ask = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/info", narrowed.base),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .send()
    };
    let ok = ask("https://app.example.com").await.expect("preflight");
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let other = ask("https://evil.example").await.expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // A malformed origin is a configuration error with a hint.
    let out = Command::new(BIN)
        .env("REACTOR_DATABASE_URL", &url)
        .env("REACTOR_CORS_ORIGINS", "app.example.com/path")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not an origin") && err.contains("hint:"),
        "{err}"
    );
}
