//! `/storage/v1` as callers drive it: a real server on loopback, users signed up through
//! `/auth/v1`, objects uploaded and read over HTTP — on SQLite and Postgres, with the bytes
//! on the local disk and on a real S3-protocol server (moto, started here on loopback).

use std::io::{Read, Write};
use std::time::Duration;

use reactor_core::{KeyTier, keys};
use reactor_db::Db;
use reactor_db::testing::fresh_postgres_database;
use reactor_server::config::{ServerConfig, StorageSettings};
use reactor_server::{AppState, Server};
use serde_json::{Value, json};
use sha2::Digest;

/// Where the bytes go in one run.
enum Bytes {
    Fs(tempfile::TempDir),
    S3(Moto),
}

/// A moto S3 server on a free loopback port, stopped when dropped.
struct Moto {
    child: std::process::Child,
    endpoint: String,
    bucket: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto, or says why not: without it the S3 runs are skipped, except on CI, which
/// installs it (`scripts/test`) and must not skip.
async fn moto() -> Option<Moto> {
    let found = std::process::Command::new("moto_server")
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "moto_server is not installed (pip install 'moto[server]'); CI must run the S3 adapter"
        );
        eprintln!("skipping the S3 adapter: moto_server is not installed");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server starts");
    // Owned at once, so the server is stopped however this ends.
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "reactor-objects".to_string(),
    };
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = http
            .put(format!("{}/{}", moto.endpoint, moto.bucket))
            .send()
            .await
            && r.status().is_success()
        {
            return Some(moto);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not come up on {}", moto.endpoint);
}

struct Harness {
    base: String,
    public_key: String,
    service_key: String,
    http: reqwest::Client,
    bytes: Bytes,
    /// name → (access token, user id)
    users: Vec<(&'static str, String, String)>,
    acme: String,
    /// Users act in their org once the orgs exist.
    orgs_ready: bool,
    label: String,
}

/// Who sends a request.
#[derive(Clone, Copy)]
enum Who {
    Service,
    Anon,
    User(&'static str),
    Nobody,
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Harness {
    async fn start(url: &str, bytes: Bytes, label: &str, expiry: Option<u64>) -> Harness {
        let db = Db::connect(url).await.expect("db");
        let public = keys::generate(KeyTier::Public);
        db.insert_api_key(&public, "test").await.expect("key");
        let service = keys::generate(KeyTier::Service);
        db.insert_api_key(&service, "admin").await.expect("key");
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let endpoint = server.endpoint().expect("endpoint");
        let mut storage = match &bytes {
            Bytes::Fs(dir) => StorageSettings {
                path: Some(dir.path().to_path_buf()),
                max_upload_mb: Some(64),
                ..Default::default()
            },
            Bytes::S3(m) => StorageSettings {
                backend: Some("s3".into()),
                s3_bucket: Some(m.bucket.clone()),
                s3_endpoint: Some(m.endpoint.clone()),
                s3_access_key_id: Some("testing".into()),
                s3_secret_access_key: Some("testing".into()),
                s3_path_style: Some(true),
                max_upload_mb: Some(64),
                ..Default::default()
            },
        };
        storage.upload_expiry_secs = expiry;
        let config = ServerConfig {
            master_key: Some(reactor_core::seal::MasterKey::generate()),
            storage,
            ..ServerConfig::new(
                server.local_addr().expect("addr"),
                url.to_string(),
                vec![
                    reactor_core::Capability::Identity,
                    reactor_core::Capability::Data,
                    reactor_core::Capability::Storage,
                ],
            )
        };
        let state = AppState::start(db, &config, &endpoint)
            .await
            .expect("state");
        tokio::spawn(server.run(state, std::future::pending()));
        let mut h = Harness {
            base: endpoint,
            public_key: public.secret,
            service_key: service.secret,
            http: reqwest::Client::new(),
            bytes,
            users: Vec::new(),
            acme: String::new(),
            orgs_ready: false,
            label: label.to_string(),
        };
        h.tenancy().await;
        h
    }

    fn request(&self, who: Who, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let req = self.http.request(method, format!("{}{path}", self.base));
        match who {
            Who::Nobody => req,
            Who::Service => req.header("apikey", &self.service_key),
            Who::Anon => req.header("apikey", &self.public_key),
            Who::User(name) => {
                let (_, token, _) = self
                    .users
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .expect("known user");
                // Everyone acts in their own org: carol and alice in acme, bob in globex.
                let org = if name == "bob" { "globex" } else { "acme" };
                let req = req.header("apikey", &self.public_key).bearer_auth(token);
                if self.orgs_ready {
                    req.header("x-reactor-org", org)
                } else {
                    req
                }
            }
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("request");
        Reply {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: res.bytes().await.expect("body").to_vec(),
        }
    }

    async fn call(&self, who: Who, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.request(who, method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    async fn upload(
        &self,
        who: Who,
        path: &str,
        bytes: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.request(who, "POST", &format!("/storage/v1/object/{path}"));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        self.send(req.body(bytes)).await
    }

    async fn download(&self, who: Who, path: &str) -> Reply {
        self.send(self.request(who, "GET", &format!("/storage/v1/object/{path}")))
            .await
    }

    fn user_id(&self, name: &str) -> String {
        self.users
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, id)| id.clone())
            .expect("known user")
    }

    /// alice owns acme and carol is a member of it; bob owns globex.
    async fn tenancy(&mut self) {
        let signup = async |h: &Harness, email: &str, invite: Option<&Value>| {
            let mut body = json!({"email": email, "password": "correct horse battery"});
            if let Some(t) = invite {
                body["invite_token"] = t.clone();
            }
            let r = h
                .call(Who::Anon, "POST", "/auth/v1/signup", Some(body))
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            let s = r.json();
            (
                s["access_token"].as_str().expect("token").to_string(),
                s["user"]["id"].as_str().expect("user id").to_string(),
            )
        };
        let (alice, alice_id) = signup(self, "alice@example.com", None).await;
        let (bob, bob_id) = signup(self, "bob@example.com", None).await;
        self.users = vec![("alice", alice, alice_id), ("bob", bob, bob_id)];
        let r = self
            .call(
                Who::User("alice"),
                "POST",
                "/auth/v1/orgs",
                Some(json!({"name": "Acme", "slug": "acme"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        self.acme = r.json()["id"].as_str().expect("org id").to_string();
        let r = self
            .call(
                Who::User("bob"),
                "POST",
                "/auth/v1/orgs",
                Some(json!({"name": "Globex", "slug": "globex"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let r = self
            .call(
                Who::User("alice"),
                "POST",
                "/auth/v1/orgs/acme/invites",
                Some(json!({"email": "carol@example.com"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let (carol, carol_id) = signup(self, "carol@example.com", Some(&r.json()["token"])).await;
        self.users.push(("carol", carol, carol_id));
        self.orgs_ready = true;
    }

    /// Keys of the bytes in the store: what must shrink back when objects go.
    async fn stored_blobs(&self) -> Vec<String> {
        match &self.bytes {
            Bytes::Fs(dir) => {
                let mut out = Vec::new();
                let mut stack = vec![dir.path().to_path_buf()];
                while let Some(d) = stack.pop() {
                    for e in std::fs::read_dir(&d).expect("read dir").flatten() {
                        let p = e.path();
                        if p.is_dir() {
                            stack.push(p);
                        } else {
                            out.push(
                                p.strip_prefix(dir.path())
                                    .expect("under")
                                    .display()
                                    .to_string(),
                            );
                        }
                    }
                }
                out.sort();
                out
            }
            Bytes::S3(m) => {
                let text = self
                    .http
                    .get(format!("{}/{}?list-type=2", m.endpoint, m.bucket))
                    .send()
                    .await
                    .expect("list")
                    .text()
                    .await
                    .expect("text");
                let mut out: Vec<String> = text
                    .split("<Key>")
                    .skip(1)
                    .filter_map(|s| s.split("</Key>").next())
                    .map(str::to_string)
                    .collect();
                out.sort();
                out
            }
        }
    }

    fn say(&self, what: &str) -> String {
        format!("[{}] {what}", self.label)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A migration that confines users to their own folder in `homes` (a restrictive policy, on
/// top of the owner default), and lets anyone read `pics` through the key-checked routes.
/// The same SQL on both databases.
const POLICIES: &str = r#"
create policy "homes: users keep to their own folder" on storage.objects
  as restrictive for all to reactor_authenticated
  using (bucket_id <> 'homes' or name like reactor.user_id()::text || '/%')
  with check (bucket_id <> 'homes' or name like reactor.user_id()::text || '/%');
create policy "anyone reads pics" on storage.objects
  for select to reactor_anon
  using (bucket_id = 'pics');
create policy "acme-files: admins write" on storage.objects
  as restrictive for insert to reactor_authenticated
  with check (bucket_id <> 'acme-files' or reactor.role() in ('owner', 'admin'));
"#;

async fn contract(url: &str, bytes: Bytes, label: &str) {
    let h = Harness::start(url, bytes, label, None).await;
    let say = |w: &str| h.say(w);

    // --- buckets -------------------------------------------------------------------------
    for (body, status) in [
        (
            json!({"id": "docs", "file_size_limit": "1MB", "allowed_mime_types": ["text/*", "application/json", "image/png"]}),
            200,
        ),
        (json!({"name": "pics", "public": true}), 200),
        (json!({"id": "homes"}), 200),
        (json!({"id": "acme-files", "org_id": h.acme}), 200),
        (json!({"id": "docs"}), 409),
        (json!({"id": "Bad Name"}), 400),
        (json!({"id": "public"}), 400),
        (json!({"id": "x", "allowed_mime_types": ["nonsense"]}), 400),
    ] {
        let r = h
            .call(
                Who::Service,
                "POST",
                "/storage/v1/bucket",
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            r.status,
            status,
            "{}",
            say(&format!("create {body}: {}", r.text()))
        );
    }
    let r = h
        .call(
            Who::User("alice"),
            "POST",
            "/storage/v1/bucket",
            Some(json!({"id": "mine"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("not_admin")),
        "{}",
        say("users cannot make buckets")
    );
    let names = |r: &Reply| {
        r.json()
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| b["id"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let r = h
        .call(Who::User("alice"), "GET", "/storage/v1/bucket", None)
        .await;
    assert_eq!(
        names(&r),
        ["acme-files", "docs", "homes", "pics"],
        "{}",
        say("alice's buckets")
    );
    let r = h
        .call(Who::User("bob"), "GET", "/storage/v1/bucket", None)
        .await;
    assert_eq!(
        names(&r),
        ["docs", "homes", "pics"],
        "{}",
        say("another org's bucket is hidden")
    );
    let r = h
        .call(
            Who::User("bob"),
            "GET",
            "/storage/v1/bucket/acme-files",
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", say("bob cannot get acme's bucket"));
    let r = h
        .call(Who::Service, "GET", "/storage/v1/bucket/docs", None)
        .await;
    assert_eq!(
        r.json()["file_size_limit"],
        json!(1 << 20),
        "{}",
        say(&r.text())
    );
    let r = h
        .call(
            Who::Service,
            "PUT",
            "/storage/v1/bucket/homes",
            Some(json!({"file_size_limit": 2_000_000})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    let r = h
        .call(Who::Service, "GET", "/storage/v1/bucket/homes", None)
        .await;
    assert_eq!(
        r.json()["file_size_limit"],
        json!(2_000_000),
        "{}",
        say("bucket updated")
    );

    // --- upload, download, validators -------------------------------------------------------
    let text = b"hello, storage\n".repeat(10);
    let r = h
        .upload(
            Who::User("alice"),
            "docs/alice/hello.txt",
            text.clone(),
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    assert_eq!(r.json()["Key"], "docs/alice/hello.txt");
    let r = h.download(Who::User("alice"), "docs/alice/hello.txt").await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    assert_eq!(r.body, text);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let etag = r.header("etag").expect("etag").to_string();
    assert_eq!(
        etag,
        format!("\"{}\"", sha256_hex(&text)),
        "{}",
        say("the ETag is the SHA-256")
    );
    let last_modified = r
        .header("last-modified")
        .expect("last-modified")
        .to_string();
    for who in [Who::User("bob"), Who::User("carol"), Who::Anon] {
        let r = h.download(who, "docs/alice/hello.txt").await;
        assert_eq!(r.status, 404, "{}", say("only the owner reads it"));
    }
    let r = h.download(Who::Nobody, "docs/alice/hello.txt").await;
    assert_eq!(r.status, 401, "{}", say("no key, no object"));
    let r = h.download(Who::Service, "docs/alice/hello.txt").await;
    assert_eq!(r.body, text, "{}", say("the service key reads everything"));
    let r = h
        .send(
            h.request(
                Who::User("alice"),
                "GET",
                "/storage/v1/object/authenticated/docs/alice/hello.txt",
            )
            .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(r.status, 304, "{}", say("If-None-Match"));
    let r = h
        .send(
            h.request(
                Who::User("alice"),
                "GET",
                "/storage/v1/object/docs/alice/hello.txt",
            )
            .header("if-modified-since", &last_modified),
        )
        .await;
    assert_eq!(r.status, 304, "{}", say("If-Modified-Since"));
    let r = h
        .send(
            h.request(
                Who::User("alice"),
                "GET",
                "/storage/v1/object/docs/alice/hello.txt",
            )
            .header("range", "bytes=7-13"),
        )
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (206, "storage"),
        "{}",
        say("a range")
    );
    assert_eq!(r.header("content-range"), Some("bytes 7-13/150"));
    let r = h
        .send(
            h.request(
                Who::User("alice"),
                "GET",
                "/storage/v1/object/docs/alice/hello.txt",
            )
            .header("range", "bytes=-5"),
        )
        .await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (206, &text[145..]),
        "{}",
        say("a suffix range")
    );
    let r = h
        .send(
            h.request(
                Who::User("alice"),
                "GET",
                "/storage/v1/object/docs/alice/hello.txt",
            )
            .header("range", "bytes=500-"),
        )
        .await;
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some("bytes */150")),
        "{}",
        say("beyond the end")
    );
    let r = h
        .send(h.request(
            Who::User("alice"),
            "HEAD",
            "/storage/v1/object/docs/alice/hello.txt",
        ))
        .await;
    assert_eq!(
        (r.status, r.header("content-length"), r.body.len()),
        (200, Some("150"), 0),
        "{}",
        say("HEAD")
    );
    let r = h
        .download(
            Who::User("alice"),
            "docs/alice/hello.txt?download=greeting%20%C3%A9.txt",
        )
        .await;
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"greeting _.txt\"; filename*=UTF-8''greeting%20%C3%A9.txt"),
        "{}",
        say("?download names the attachment")
    );
    let r = h
        .call(
            Who::User("alice"),
            "GET",
            "/storage/v1/object/info/docs/alice/hello.txt",
            None,
        )
        .await;
    assert_eq!(
        (r.json()["size"].clone(), r.json()["sha256"].clone()),
        (json!(150), json!(sha256_hex(&text))),
        "{}",
        say(&r.text())
    );
    assert_eq!(r.json()["owner_id"], json!(h.user_id("alice")));

    // A type guessed from the extension; a type the bucket refuses.
    let r = h
        .upload(Who::User("alice"), "docs/alice/data.json", "{}", &[])
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    let r = h.download(Who::User("alice"), "docs/alice/data.json").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = h
        .upload(
            Who::User("alice"),
            "docs/alice/page.html",
            "<p>",
            &[("content-type", "text/html")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", say("text/* admits html"));
    let r = h
        .upload(
            Who::User("alice"),
            "docs/alice/run.sh",
            "x",
            &[("content-type", "application/x-sh")],
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (415, Some("invalid_mime_type")),
        "{}",
        say(&r.text())
    );

    // --- conflicts and replacing ----------------------------------------------------------
    let r = h
        .upload(
            Who::User("alice"),
            "docs/alice/hello.txt",
            "again",
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("object_exists")),
        "{}",
        say(&r.text())
    );
    let blobs_before = h.stored_blobs().await;
    let r = h
        .upload(
            Who::User("alice"),
            "docs/alice/hello.txt",
            "replaced",
            &[("content-type", "text/plain"), ("x-upsert", "true")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    assert_eq!(
        h.download(Who::User("alice"), "docs/alice/hello.txt")
            .await
            .text(),
        "replaced"
    );
    assert_eq!(
        h.stored_blobs().await.len(),
        blobs_before.len(),
        "{}",
        say("the replaced bytes are gone")
    );
    let r = h
        .send(
            h.request(
                Who::User("bob"),
                "PUT",
                "/storage/v1/object/docs/alice/hello.txt",
            )
            .body("bob was here"),
        )
        .await;
    assert_eq!(
        r.status,
        403,
        "{}",
        say("bob cannot replace alice's object")
    );
    assert_eq!(
        h.download(Who::User("alice"), "docs/alice/hello.txt")
            .await
            .text(),
        "replaced"
    );

    // --- bad input: paths, sizes, checksums, cut-off uploads ------------------------------
    for bad in [
        "docs/../escape.txt",
        "docs/%2e%2e/escape.txt",
        "docs/a/%2E%2E/%2E%2E/b",
        "docs/a/./b",
        "docs/a%00b",
        "docs/a%0Ab",
        "docs/a//b",
        "docs/a%5Cb",
        "docs/ends/",
        "docs//etc/passwd",
    ] {
        let (status, body) = raw(&h, "POST", &format!("/storage/v1/object/{bad}"), "x").await;
        assert_eq!(status, 400, "{}", say(&format!("{bad}: {body}")));
        assert!(
            body.contains("invalid_path"),
            "{}",
            say(&format!("{bad}: {body}"))
        );
    }
    let r = h.upload(Who::User("alice"), "nosuch/a.txt", "x", &[]).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("bucket_not_found"))
    );
    let blobs_before = h.stored_blobs().await;
    let big = vec![b'x'; 1_500_000];
    let r = h
        .upload(Who::User("alice"), "docs/alice/big.txt", big.clone(), &[])
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (413, Some("payload_too_large")),
        "{}",
        say("declared too large")
    );
    // Without a declared length the limit is met while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..15).map(|_| Ok(vec![b'y'; 100_000])).collect();
    let r = h
        .upload(
            Who::User("alice"),
            "docs/alice/big.txt",
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
            &[],
        )
        .await;
    assert_eq!(r.status, 413, "{}", say("streamed too large"));
    let r = h
        .upload(
            Who::User("alice"),
            "docs/alice/sum.txt",
            "checked",
            &[("x-checksum-sha256", &sha256_hex(b"other"))],
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("checksum_mismatch")),
        "{}",
        say(&r.text())
    );
    let r = h
        .upload(
            Who::User("alice"),
            "docs/alice/sum.txt",
            "checked",
            &[("x-checksum-sha256", &sha256_hex(b"checked"))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", say("a matching checksum"));
    let r = h
        .upload(
            Who::User("alice"),
            "docs/alice/md5.txt",
            "checked",
            &[("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", say("a wrong Content-MD5"));
    cut_off_upload(&h, "docs/alice/cut.txt").await;
    let r = h.download(Who::Service, "docs/alice/cut.txt").await;
    assert_eq!(r.status, 404, "{}", say("a cut-off upload is not visible"));
    for path in ["docs/alice/big.txt", "docs/alice/md5.txt"] {
        assert_eq!(
            h.download(Who::Service, path).await.status,
            404,
            "{}",
            say(path)
        );
    }
    let mut after = h.stored_blobs().await;
    for _ in 0..50 {
        if after.len() == blobs_before.len() + 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = h.stored_blobs().await;
    }
    assert_eq!(
        after.len(),
        blobs_before.len() + 1,
        "{}",
        say(&format!(
            "only sum.txt's bytes were added: {blobs_before:?} → {after:?}"
        ))
    );

    // --- a large object goes up in parts and comes back whole -------------------------------
    let large: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let r = h
        .upload(Who::User("alice"), "homes/big.bin", large.clone(), &[])
        .await;
    assert_eq!(r.status, 413, "{}", say("homes' 2 MB limit"));
    let r = h
        .upload(Who::Service, "pics/large.bin", large.clone(), &[])
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    let r = h.download(Who::Service, "pics/large.bin").await;
    assert_eq!(
        (r.body.len(), sha256_hex(&r.body)),
        (large.len(), sha256_hex(&large)),
        "{}",
        say("20 MiB round trip")
    );
    let r = h
        .send(
            h.request(Who::Service, "GET", "/storage/v1/object/pics/large.bin")
                .header("range", "bytes=9000000-9000099"),
        )
        .await;
    assert_eq!(
        r.body,
        &large[9_000_000..9_000_100],
        "{}",
        say("a range of a multipart object")
    );

    // --- orgs share their bucket ---------------------------------------------------------
    let r = h
        .upload(Who::User("alice"), "acme-files/plan.txt", "the plan", &[])
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    assert_eq!(
        h.download(Who::User("carol"), "acme-files/plan.txt")
            .await
            .text(),
        "the plan",
        "{}",
        say("carol is in acme")
    );
    let r = h.download(Who::User("bob"), "acme-files/plan.txt").await;
    assert_eq!(r.status, 404, "{}", say("bob is not"));
    let r = h
        .upload(Who::User("bob"), "acme-files/intrusion.txt", "x", &[])
        .await;
    assert_eq!(
        r.status,
        404,
        "{}",
        say("bob cannot write into acme's bucket")
    );
    let r = h
        .upload(Who::User("carol"), "acme-files/notes.txt", "carol's", &[])
        .await;
    assert_eq!(r.status, 200, "{}", say("members write"));
    let r = h
        .call(
            Who::User("alice"),
            "POST",
            "/storage/v1/object/list/acme-files",
            Some(json!({"prefix": ""})),
        )
        .await;
    let listed: Vec<String> = r
        .json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        listed,
        ["notes.txt", "plan.txt"],
        "{}",
        say("alice lists carol's object too")
    );

    // --- policies from migrations: per-user folders, anonymous reads ------------------------
    let r = h
        .call(
            Who::Service,
            "POST",
            "/data/v1/admin/migrations",
            Some(json!({"files": [{"name": "0001_storage.sql", "sql": POLICIES}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    let alice_id = h.user_id("alice");
    let bob_id = h.user_id("bob");
    let r = h
        .upload(
            Who::User("alice"),
            &format!("homes/{alice_id}/diary.txt"),
            "dear diary",
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    let r = h
        .upload(
            Who::User("bob"),
            &format!("homes/{alice_id}/forged.txt"),
            "x",
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        403,
        "{}",
        say("bob cannot write in alice's folder")
    );
    let r = h
        .upload(
            Who::User("bob"),
            &format!("homes/{bob_id}/mine.txt"),
            "bob's",
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    let r = h
        .download(Who::User("bob"), &format!("homes/{alice_id}/diary.txt"))
        .await;
    assert_eq!(r.status, 404, "{}", say("nor read there"));
    let r = h.download(Who::Anon, "pics/large.bin").await;
    assert_eq!(r.status, 200, "{}", say("the anon read policy on pics"));
    let r = h
        .upload(Who::User("carol"), "acme-files/late.txt", "x", &[])
        .await;
    assert_eq!(
        r.status,
        403,
        "{}",
        say("members no longer write acme-files")
    );
    let r = h
        .upload(Who::User("alice"), "acme-files/late.txt", "x", &[])
        .await;
    assert_eq!(r.status, 200, "{}", say("its owner does"));
    assert_eq!(
        h.download(Who::User("carol"), "acme-files/late.txt")
            .await
            .status,
        200,
        "{}",
        say("and members read")
    );

    // --- public buckets and signed URLs --------------------------------------------------
    let r = h
        .send(h.request(
            Who::Nobody,
            "GET",
            "/storage/v1/object/public/pics/large.bin",
        ))
        .await;
    assert_eq!(
        (r.status, r.body.len()),
        (200, large.len()),
        "{}",
        say("public without a key")
    );
    let r = h
        .send(h.request(
            Who::Nobody,
            "GET",
            "/storage/v1/object/public/docs/alice/hello.txt",
        ))
        .await;
    assert_eq!(r.status, 404, "{}", say("a private bucket is not public"));
    let r = h
        .call(
            Who::User("alice"),
            "POST",
            "/storage/v1/object/sign/docs/alice/hello.txt",
            Some(json!({"expiresIn": 60})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    let signed = r.json()["signedURL"]
        .as_str()
        .expect("signedURL")
        .to_string();
    let r = h
        .send(h.request(Who::Nobody, "GET", &format!("/storage/v1{signed}")))
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "replaced"),
        "{}",
        say("a signed URL without a key")
    );
    let tampered = signed.replace("hello.txt", "data.json");
    let r = h
        .send(h.request(Who::Nobody, "GET", &format!("/storage/v1{tampered}")))
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("invalid_signature")),
        "{}",
        say("another path")
    );
    let mut forged = signed.clone();
    forged.pop();
    forged.push(if signed.ends_with('A') { 'B' } else { 'A' });
    let r = h
        .send(h.request(Who::Nobody, "GET", &format!("/storage/v1{forged}")))
        .await;
    assert_eq!(r.status, 403, "{}", say("a changed signature"));
    let r = h
        .call(
            Who::User("bob"),
            "POST",
            "/storage/v1/object/sign/docs/alice/hello.txt",
            Some(json!({"expiresIn": 60})),
        )
        .await;
    assert_eq!(
        r.status,
        404,
        "{}",
        say("bob cannot sign what he cannot read")
    );
    let r = h
        .call(
            Who::User("alice"),
            "POST",
            "/storage/v1/object/sign/docs",
            Some(json!({"expiresIn": 1, "paths": ["alice/hello.txt", "alice/none.txt"]})),
        )
        .await;
    let many = r.json();
    assert!(many[1]["error"].is_string(), "{}", say(&many.to_string()));
    let short = many[0]["signedURL"].as_str().expect("signed").to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = h
        .send(h.request(Who::Nobody, "GET", &format!("/storage/v1{short}")))
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("signature_expired")),
        "{}",
        say("expired")
    );
    // A signed upload URL: made by alice, used without a key, the object is alice's.
    let r = h
        .call(
            Who::User("alice"),
            "POST",
            "/storage/v1/object/upload/sign/docs/alice/dropbox.txt",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    let url = r.json()["url"].as_str().expect("url").to_string();
    let r = h
        .send(
            h.request(Who::Nobody, "PUT", &format!("/storage/v1{url}"))
                .header("content-type", "text/plain")
                .body("dropped"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    assert_eq!(
        h.download(Who::User("alice"), "docs/alice/dropbox.txt")
            .await
            .text(),
        "dropped"
    );
    let r = h
        .send(
            h.request(
                Who::Nobody,
                "PUT",
                &format!("/storage/v1{}", url.replace("dropbox", "other")),
            )
            .body("x"),
        )
        .await;
    assert_eq!(r.status, 403, "{}", say("the token is for one path"));
    let r = h
        .call(
            Who::User("bob"),
            "POST",
            "/storage/v1/object/upload/sign/docs/alice/x.txt",
            None,
        )
        .await;
    assert!(r.status == 200 || r.status == 403, "{}", say(&r.text()));

    resumable(&h).await;

    // --- list, move, copy, delete ----------------------------------------------------------
    let r = h
        .call(Who::User("alice"), "POST", "/storage/v1/object/list/docs", Some(json!({"prefix": "alice/", "search": "txt", "sortBy": {"column": "name", "order": "desc"}, "limit": 3})))
        .await;
    let listed: Vec<String> = r
        .json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        listed,
        ["sum.txt", "hello.txt", "dropbox.txt"],
        "{}",
        say(&r.text())
    );
    let r = h
        .call(
            Who::User("bob"),
            "POST",
            "/storage/v1/object/list/docs",
            Some(json!({"prefix": "alice/"})),
        )
        .await;
    assert_eq!(
        r.json(),
        json!([]),
        "{}",
        say("bob lists nothing of alice's")
    );
    let r = h
        .call(Who::User("alice"), "POST", "/storage/v1/object/move", Some(json!({"bucketId": "docs", "sourceKey": "alice/data.json", "destinationKey": "alice/moved/data.json"})))
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    assert_eq!(
        h.download(Who::User("alice"), "docs/alice/data.json")
            .await
            .status,
        404
    );
    assert_eq!(
        h.download(Who::User("alice"), "docs/alice/moved/data.json")
            .await
            .text(),
        "{}"
    );
    let r = h
        .call(Who::User("bob"), "POST", "/storage/v1/object/move", Some(json!({"bucketId": "docs", "sourceKey": "alice/moved/data.json", "destinationKey": "bob/stolen.json"})))
        .await;
    assert_eq!(r.status, 404, "{}", say("bob cannot move alice's object"));
    let r = h
        .call(Who::User("alice"), "POST", "/storage/v1/object/copy", Some(json!({"bucketId": "docs", "sourceKey": "alice/sum.txt", "destinationKey": "alice/sum-copy.txt"})))
        .await;
    assert_eq!(
        (r.status, r.json()["Key"].as_str()),
        (200, Some("docs/alice/sum-copy.txt")),
        "{}",
        say(&r.text())
    );
    assert_eq!(
        h.download(Who::User("alice"), "docs/alice/sum-copy.txt")
            .await
            .text(),
        "checked"
    );
    let r = h
        .call(
            Who::User("bob"),
            "DELETE",
            "/storage/v1/object/docs/alice/sum.txt",
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", say("bob cannot delete it"));
    let blobs_before = h.stored_blobs().await;
    let r = h
        .call(
            Who::User("alice"),
            "DELETE",
            "/storage/v1/object/docs/alice/sum.txt",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    let r = h
        .call(
            Who::User("alice"),
            "DELETE",
            "/storage/v1/object/docs",
            Some(json!({"prefixes": ["alice/sum-copy.txt", "alice/none.txt"]})),
        )
        .await;
    assert_eq!(
        r.json().as_array().map(Vec::len),
        Some(1),
        "{}",
        say(&r.text())
    );
    assert_eq!(
        h.stored_blobs().await.len(),
        blobs_before.len() - 2,
        "{}",
        say("deleted objects' bytes are gone")
    );

    // --- emptying and deleting buckets -----------------------------------------------------
    let r = h
        .call(
            Who::Service,
            "DELETE",
            "/storage/v1/bucket/acme-files",
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("bucket_not_empty")),
        "{}",
        say(&r.text())
    );
    let r = h
        .call(
            Who::User("alice"),
            "POST",
            "/storage/v1/bucket/acme-files/empty",
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", say("users cannot empty buckets"));
    let r = h
        .call(
            Who::Service,
            "POST",
            "/storage/v1/bucket/acme-files/empty",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    let r = h
        .call(
            Who::Service,
            "DELETE",
            "/storage/v1/bucket/acme-files",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", say(&r.text()));
    let r = h
        .call(Who::Service, "GET", "/storage/v1/bucket/acme-files", None)
        .await;
    assert_eq!(r.status, 404);

    storage_js(&h).await;
}

/// Runs tests/js/storage.mjs: the unmodified `@supabase/storage-js` and `tus-js-client`
/// against this server, from node.
async fn storage_js(h: &Harness) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/@supabase/storage-js").exists(),
        "run `npm ci --prefix crates/reactor-server/tests/js` (scripts/test does)"
    );
    let (_, token, _) = h
        .users
        .iter()
        .find(|(n, _, _)| *n == "alice")
        .expect("alice");
    let mut node = std::process::Command::new("node");
    node.arg("storage.mjs")
        .current_dir(&dir)
        .env("REACTOR_STORAGE_URL", format!("{}/storage/v1", h.base))
        .env("REACTOR_SERVICE_KEY", &h.service_key)
        .env("REACTOR_PUBLIC_KEY", &h.public_key)
        .env("REACTOR_USER_TOKEN", token);
    let out = tokio::task::spawn_blocking(move || node.output())
        .await
        .expect("join")
        .expect("node runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        h.say(&format!(
            "storage-js:\n{said}{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    );
}

fn tus_meta(pairs: &[(&str, &str)]) -> String {
    use base64::Engine;
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} {}",
                base64::engine::general_purpose::STANDARD.encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Harness {
    fn tus(&self, who: Who, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.request(who, method, path)
            .header("tus-resumable", "1.0.0")
    }

    /// Creates a resumable upload; its path.
    async fn tus_create(&self, who: Who, bucket: &str, name: &str, length: usize) -> Reply {
        self.send(
            self.tus(who, "POST", "/storage/v1/upload/resumable")
                .header("upload-length", length.to_string())
                .header(
                    "upload-metadata",
                    tus_meta(&[
                        ("bucketName", bucket),
                        ("objectName", name),
                        ("contentType", "application/octet-stream"),
                    ]),
                ),
        )
        .await
    }

    async fn tus_patch(&self, who: Who, location: &str, offset: usize, bytes: Vec<u8>) -> Reply {
        self.send(
            self.tus(who, "PATCH", location)
                .header("upload-offset", offset.to_string())
                .header("content-type", "application/offset+octet-stream")
                .body(bytes),
        )
        .await
    }

    async fn tus_offset(&self, who: Who, location: &str) -> (u16, Option<usize>) {
        let r = self.send(self.tus(who, "HEAD", location)).await;
        (
            r.status,
            r.header("upload-offset").and_then(|v| v.parse().ok()),
        )
    }
}

/// TUS: create, send in parts, a wrong offset, a dropped connection resumed from the offset
/// the server reports, someone else's upload, the limits, termination.
async fn resumable(h: &Harness) {
    let say = |w: &str| h.say(w);
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let r = h
        .send(
            h.request(Who::User("alice"), "POST", "/storage/v1/upload/resumable")
                .header("upload-length", "10"),
        )
        .await;
    assert_eq!(r.status, 412, "{}", say("no Tus-Resumable"));
    let r = h
        .tus_create(Who::User("alice"), "docs", "alice/huge.bin", 5_000_000)
        .await;
    assert_eq!(
        r.status,
        413,
        "{}",
        say("over docs' limit, refused before any byte")
    );
    let r = h.tus_create(Who::User("alice"), "docs", "../x", 10).await;
    assert_eq!(r.status, 400, "{}", say("a bad path"));

    let r = h
        .tus_create(Who::User("alice"), "pics", "resumed.bin", data.len())
        .await;
    assert_eq!(r.status, 201, "{}", say(&r.text()));
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    assert!(
        r.header("tus-extension")
            .is_some_and(|e| e.contains("creation")),
        "{}",
        say("what this server supports")
    );
    let location = r.header("location").expect("location").to_string();
    assert!(r.header("upload-expires").is_some());
    assert_eq!(
        h.tus_offset(Who::User("alice"), &location).await,
        (200, Some(0))
    );
    assert_eq!(
        h.tus_offset(Who::User("bob"), &location).await.0,
        404,
        "{}",
        say("bob cannot see alice's upload")
    );
    let r = h
        .tus_patch(Who::User("bob"), &location, 0, data[..10].to_vec())
        .await;
    assert_eq!(r.status, 404, "{}", say("nor write to it"));

    let first = 1024 * 1024;
    let r = h
        .tus_patch(Who::User("alice"), &location, 0, data[..first].to_vec())
        .await;
    assert_eq!(
        (r.status, r.header("upload-offset")),
        (204, Some("1048576")),
        "{}",
        say(&r.text())
    );
    let r = h
        .tus_patch(Who::User("alice"), &location, 0, data[..first].to_vec())
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("offset_mismatch")),
        "{}",
        say("a stale offset")
    );
    assert_eq!(
        h.download(Who::User("alice"), "pics/resumed.bin")
            .await
            .status,
        404,
        "{}",
        say("not visible while incomplete")
    );

    // The connection drops 300 KB into a 1 MB PATCH; the bytes that arrived are kept.
    let (_, token, _) = h
        .users
        .iter()
        .find(|(n, _, _)| *n == "alice")
        .expect("alice");
    let addr = h.base.trim_start_matches("http://").to_string();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nhost: {addr}\r\napikey: {}\r\nauthorization: Bearer {token}\r\nx-reactor-org: acme\r\ntus-resumable: 1.0.0\r\nupload-offset: {first}\r\ncontent-type: application/offset+octet-stream\r\ncontent-length: {first}\r\n\r\n",
        h.public_key
    );
    let part = data[first..first + 300_000].to_vec();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(&part).expect("part");
        s.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(300));
    })
    .await
    .expect("join");
    let mut offset = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        offset = h.tus_offset(Who::User("alice"), &location).await.1;
        if offset != Some(first) {
            break;
        }
    }
    let offset = offset.expect("an offset");
    assert!(
        offset > first && offset <= first + 300_000,
        "{}",
        say(&format!("kept the bytes that arrived: {offset}"))
    );
    let r = h
        .tus_patch(
            Who::User("alice"),
            &location,
            offset,
            data[offset..].to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.header("upload-offset").map(str::to_string)),
        (204, Some(data.len().to_string())),
        "{}",
        say(&r.text())
    );
    let r = h.download(Who::User("alice"), "pics/resumed.bin").await;
    assert_eq!(
        (r.body.len(), sha256_hex(&r.body)),
        (data.len(), sha256_hex(&data)),
        "{}",
        say("resumed object whole")
    );
    let r = h
        .call(
            Who::User("alice"),
            "GET",
            "/storage/v1/object/info/pics/resumed.bin",
            None,
        )
        .await;
    assert_eq!(
        r.json()["sha256"],
        json!(sha256_hex(&data)),
        "{}",
        say("its checksum")
    );
    assert_eq!(
        h.tus_offset(Who::User("alice"), &location).await.0,
        404,
        "{}",
        say("a finished upload is gone")
    );

    // One PATCH for a whole object; then one abandoned by its client.
    let r = h
        .tus_create(Who::User("alice"), "pics", "whole.bin", 1000)
        .await;
    let location = r.header("location").expect("location").to_string();
    let r = h
        .tus_patch(Who::User("alice"), &location, 0, data[..1000].to_vec())
        .await;
    assert_eq!(r.status, 204, "{}", say(&r.text()));
    assert_eq!(
        h.download(Who::User("alice"), "pics/whole.bin").await.body,
        &data[..1000]
    );
    let r = h
        .tus_patch(Who::User("alice"), &location, 1000, vec![1])
        .await;
    assert_eq!(r.status, 404, "{}", say("nothing more to send"));
    let before = h.stored_blobs().await.len();
    let r = h
        .tus_create(Who::User("alice"), "pics", "dropped.bin", 5000)
        .await;
    let location = r.header("location").expect("location").to_string();
    let r = h
        .tus_patch(Who::User("alice"), &location, 0, data[..2000].to_vec())
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .tus_patch(Who::User("alice"), &location, 2000, data[..4000].to_vec())
        .await;
    assert_eq!(r.status, 413, "{}", say("more than the declared length"));
    assert_eq!(h.stored_blobs().await.len(), before + 1);
    let r = h.send(h.tus(Who::User("alice"), "DELETE", &location)).await;
    assert_eq!(r.status, 204, "{}", say(&r.text()));
    assert_eq!(h.tus_offset(Who::User("alice"), &location).await.0, 404);
    assert_eq!(
        h.stored_blobs().await.len(),
        before,
        "{}",
        say("a terminated upload's bytes are gone")
    );
}

/// A request sent byte for byte as written (HTTP clients normalise `..` away), as alice;
/// the status and body of the answer.
async fn raw(h: &Harness, method: &str, path: &str, body: &str) -> (u16, String) {
    let addr = h.base.trim_start_matches("http://").to_string();
    let (_, token, _) = h
        .users
        .iter()
        .find(|(n, _, _)| *n == "alice")
        .expect("alice");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\napikey: {}\r\nauthorization: Bearer {token}\r\nx-reactor-org: acme\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        h.public_key,
        body.len()
    );
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.write_all(request.as_bytes()).expect("send");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    })
    .await
    .expect("join")
}

/// An upload whose client promises 1 MB and hangs up after 100 KB.
async fn cut_off_upload(h: &Harness, path: &str) {
    let addr = h.base.trim_start_matches("http://").to_string();
    let (token, key) = {
        let (_, token, _) = h
            .users
            .iter()
            .find(|(n, _, _)| *n == "alice")
            .expect("alice");
        (token.clone(), h.public_key.clone())
    };
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        write!(
            s,
            "POST /storage/v1/object/{path} HTTP/1.1\r\nhost: {addr}\r\napikey: {key}\r\nauthorization: Bearer {token}\r\nx-reactor-org: acme\r\ncontent-type: text/plain\r\ncontent-length: 1000000\r\n\r\n"
        )
        .expect("head");
        s.write_all(&vec![b'z'; 100_000]).expect("part of the body");
        s.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(200));
        let _ = s.shutdown(std::net::Shutdown::Both);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    })
    .await
    .expect("join");
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn sqlite_on_local_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let objects = tempfile::tempdir().expect("tempdir");
    contract(
        &format!("sqlite://{}", dir.path().join("o1.db").display()),
        Bytes::Fs(objects),
        "sqlite+fs",
    )
    .await;
}

#[tokio::test]
async fn postgres_on_local_disk() {
    let Some(url) = fresh_postgres_database("storage_fs").await else {
        return;
    };
    contract(
        &url,
        Bytes::Fs(tempfile::tempdir().expect("tempdir")),
        "postgres+fs",
    )
    .await;
}

#[tokio::test]
async fn sqlite_on_s3() {
    let Some(moto) = moto().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    contract(
        &format!("sqlite://{}", dir.path().join("o1.db").display()),
        Bytes::S3(moto),
        "sqlite+s3",
    )
    .await;
}

#[tokio::test]
async fn postgres_on_s3() {
    let Some(url) = fresh_postgres_database("storage_s3").await else {
        return;
    };
    let Some(moto) = moto().await else { return };
    contract(&url, Bytes::S3(moto), "postgres+s3").await;
}

/// An upload nobody finishes is removed after its expiry, bytes and all.
#[tokio::test]
async fn abandoned_resumable_uploads_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::start(
        &format!("sqlite://{}", dir.path().join("o1.db").display()),
        Bytes::Fs(tempfile::tempdir().expect("tempdir")),
        "expiry",
        Some(2),
    )
    .await;
    let r = h
        .call(
            Who::Service,
            "POST",
            "/storage/v1/bucket",
            Some(json!({"id": "up"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = h.tus_create(Who::User("alice"), "up", "a.bin", 100).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let location = r.header("location").expect("location").to_string();
    let r = h
        .tus_patch(Who::User("alice"), &location, 0, vec![7; 40])
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(h.stored_blobs().await.len(), 1);
    let mut gone = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if h.tus_offset(Who::User("alice"), &location).await.0 == 404
            && h.stored_blobs().await.is_empty()
        {
            gone = true;
            break;
        }
    }
    assert!(
        gone,
        "the upload and its bytes outlived the expiry: {:?}",
        h.stored_blobs().await
    );
}
