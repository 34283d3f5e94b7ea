//! Connect end to end: a fake OAuth 2.0 provider on loopback (authorize, token with rotating
//! refresh tokens, an API) and a real server. The full dance, the proxy, refresh on expiry,
//! one refresh across two server processes, and every refusal that must change nothing.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use reactor_core::{KeyTier, keys};
use reactor_db::Db;
use reactor_server::config::ConnectSettings;
use reactor_server::{AppState, Server, ServerConfig};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CLIENT_ID: &str = "reactor-test-client";
const CLIENT_SECRET: &str = "fake-client-secret";

/// The fake provider's state: codes, tokens, and what it saw.
#[derive(Default)]
struct Provider {
    /// code → (challenge, redirect_uri).
    codes: HashMap<String, (Option<String>, String)>,
    /// Live refresh tokens (one per grant), and the access token issued last.
    refresh: Vec<String>,
    access: Option<String>,
    /// Refresh tokens already spent: using one again is a double spend.
    spent: Vec<String>,
    refreshes: u32,
    double_spends: u32,
    revoked: bool,
    next: u32,
    /// `/api/limited` answers 429 this many more times.
    limited: u32,
    api_calls: Vec<Value>,
    client_credentials: u32,
}

type Shared = Arc<Mutex<Provider>>;

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Provider> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

async fn fake_authorize(
    State(p): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || q.get("response_type").map(String::as_str) != Some("code")
    {
        return (StatusCode::BAD_REQUEST, "bad client").into_response();
    }
    let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
    let state = q.get("state").cloned().unwrap_or_default();
    if q.get("scope").map(String::as_str) == Some("deny") {
        return Redirect::to(&format!("{redirect}?error=access_denied&state={state}"))
            .into_response();
    }
    let mut p = lock(&p);
    p.next += 1;
    let code = format!("code-{}", p.next);
    p.codes.insert(
        code.clone(),
        (q.get("code_challenge").cloned(), redirect.clone()),
    );
    Redirect::to(&format!("{redirect}?code={code}&state={state}")).into_response()
}

fn token_error(code: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": code}))).into_response()
}

async fn fake_token(State(p): State<Shared>, body: String) -> Response {
    let f: BTreeMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    if f.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || f.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let grant = f.get("grant_type").cloned().unwrap_or_default();
    let slow = grant == "refresh_token";
    if slow {
        // A refresh takes a while, so racing replicas overlap.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut p = lock(&p);
    match grant.as_str() {
        "authorization_code" => {
            let code = f.get("code").cloned().unwrap_or_default();
            let Some((challenge, redirect)) = p.codes.remove(&code) else {
                return token_error("invalid_grant");
            };
            if f.get("redirect_uri") != Some(&redirect) {
                return token_error("invalid_grant");
            }
            let verified = match (&challenge, f.get("code_verifier")) {
                (Some(c), Some(v)) => {
                    use base64::Engine;
                    let made = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(Sha256::digest(v.as_bytes()));
                    &made == c
                }
                (None, None) => true,
                _ => false,
            };
            if !verified {
                return token_error("invalid_grant");
            }
        }
        "refresh_token" => {
            let token = f.get("refresh_token").cloned().unwrap_or_default();
            if p.spent.contains(&token) {
                p.double_spends += 1;
                return token_error("invalid_grant");
            }
            if p.revoked || !p.refresh.contains(&token) {
                return token_error("invalid_grant");
            }
            p.refresh.retain(|t| t != &token);
            p.spent.push(token);
            p.refreshes += 1;
        }
        "client_credentials" => {
            p.client_credentials += 1;
            p.next += 1;
            let access = format!("cc-access-{}", p.next);
            p.access = Some(access.clone());
            return Json(
                json!({"access_token": access, "token_type": "bearer", "expires_in": 3600}),
            )
            .into_response();
        }
        _ => return token_error("unsupported_grant_type"),
    }
    p.next += 1;
    let (access, refresh) = (format!("access-{}", p.next), format!("refresh-{}", p.next));
    p.access = Some(access.clone());
    p.refresh.push(refresh.clone());
    Json(json!({
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "bearer",
        "expires_in": 3600,
        "scope": "read write",
    }))
    .into_response()
}

async fn fake_api(
    State(p): State<Shared>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    if uri.path().ends_with("/slow") {
        // Three chunks, 300 ms apart: a proxy that buffers delivers them together.
        use futures_util::StreamExt;
        let chunks = futures_util::stream::iter(0..3).then(|i| async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok::<_, std::io::Error>(axum::body::Bytes::from(format!("chunk{i}\n")))
        });
        return Response::new(axum::body::Body::from_stream(chunks));
    }
    let mut p = lock(&p);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let seen = json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "authorization": auth,
        "apikey": headers.get("apikey").and_then(|v| v.to_str().ok()),
        "x_custom": headers.get("x-custom").and_then(|v| v.to_str().ok()),
        "body": if body.len() > 1000 { format!("{} bytes", body.len()) } else { body },
    });
    p.api_calls.push(seen.clone());
    if uri.path().ends_with("/limited") && p.limited > 0 {
        p.limited -= 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response();
    }
    let bearer_ok = p
        .access
        .as_ref()
        .is_some_and(|a| auth == format!("Bearer {a}"));
    if auth.starts_with("Bearer") && !auth.contains("sk_test") && !bearer_ok {
        return (StatusCode::UNAUTHORIZED, "expired token").into_response();
    }
    ([("set-cookie", "provider=secret")], Json(seen)).into_response()
}

/// The fake provider on a free port; its base URL.
async fn fake_provider() -> (String, Shared) {
    let shared: Shared = Arc::default();
    let app = Router::new()
        .route("/oauth/authorize", get(fake_authorize))
        .route("/oauth/token", post(fake_token))
        .route("/api/{*rest}", any(fake_api))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), shared)
}

fn manifest(provider: &str) -> String {
    format!(
        r#"project_id = "connect-test"
name = "connect test"

[[functions]]
name = "record"
source = "functions/record"

[[jobs]]
name = "on-failed"
function = "record"
trigger = {{ type = "event", event = "connect.connection.failed" }}

[[jobs]]
name = "on-hook"
function = "record"
trigger = {{ type = "event", event = "connect.webhook.hooks" }}

[[connect.integrations]]
name = "fake"
provider = "oauth2"
client_id = "{CLIENT_ID}"
client_secret = "CLIENT_SECRET"
scopes = ["read", "write"]
redirect_origins = ["http://app.test"]
authorization_url = "{provider}/oauth/authorize"
token_url = "{provider}/oauth/token"
base_url = "{provider}/api"

[[connect.integrations]]
name = "machine"
provider = "oauth2-client-credentials"
client_id = "{CLIENT_ID}"
client_secret = "CLIENT_SECRET"
token_url = "{provider}/oauth/token"
base_url = "{provider}/api"

[[connect.integrations]]
name = "keyed"
provider = "api-key"
base_url = "{provider}/api/v1"

[[connect.integrations]]
name = "basic"
provider = "basic"
base_url = "{provider}/api"

[[connect.integrations]]
name = "hooks"
provider = "stripe"
webhook_secret = "HOOK_SECRET"
base_url = "{provider}/api"
"#
    )
}

const RECORD: &str = r#"export default async (req: Request): Promise<Response> => {
  const run = await req.json();
  console.log(JSON.stringify(run.payload));
  return Response.json({ ok: true });
};
"#;

fn write_project(dir: &std::path::Path, provider: &str) {
    std::fs::write(dir.join("reactor.toml"), manifest(provider)).expect("manifest");
    let f = dir.join("functions").join("record");
    std::fs::create_dir_all(&f).expect("dir");
    std::fs::write(f.join("index.ts"), RECORD).expect("function");
}

struct Harness {
    base: String,
    service: String,
    public: String,
    http: reqwest::Client,
    provider: Shared,
    db_path: std::path::PathBuf,
    master: reactor_core::seal::MasterKey,
    /// The cookies the "browser" of these tests holds.
    jar: Jar,
    _dir: tempfile::TempDir,
}

type Jar = Mutex<Vec<String>>;

/// A GET as a browser makes it: with the cookies it holds, keeping those it is given.
async fn browse(http: &reqwest::Client, jar: &Jar, url: &str) -> reqwest::Response {
    let cookies = jar.lock().unwrap_or_else(|e| e.into_inner()).join("; ");
    let mut req = http.get(url);
    if !cookies.is_empty() {
        req = req.header("cookie", cookies);
    }
    let res = req.send().await.expect("get");
    for set in res.headers().get_all("set-cookie") {
        let pair = set
            .to_str()
            .expect("cookie")
            .split(';')
            .next()
            .unwrap_or("");
        jar.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pair.to_string());
    }
    res
}

/// A server for the project in `dir` over `db`; its endpoint.
async fn serve(
    db: Db,
    dir: &std::path::Path,
    master: &reactor_core::seal::MasterKey,
    connect: ConnectSettings,
) -> String {
    let server = Server::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let endpoint = server.endpoint().expect("endpoint");
    let config = ServerConfig {
        master_key: Some(master.clone()),
        project: Some(dir.to_path_buf()),
        connect,
        ..ServerConfig::new(
            server.local_addr().expect("addr"),
            String::new(),
            vec![
                reactor_core::Capability::Identity,
                reactor_core::Capability::Functions,
                reactor_core::Capability::Jobs,
                reactor_core::Capability::Connect,
            ],
        )
    };
    let state = AppState::start(db, &config, &endpoint)
        .await
        .expect("state");
    tokio::spawn(server.run(state, std::future::pending()));
    endpoint
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_with(ConnectSettings::default()).await
    }

    async fn start_with(connect: ConnectSettings) -> Harness {
        let (provider_url, provider) = fake_provider().await;
        let dir = tempfile::tempdir().expect("tempdir");
        write_project(dir.path(), &provider_url);
        let db_path = dir.path().join("t.db");
        let db = Db::connect(&format!("sqlite://{}", db_path.display()))
            .await
            .expect("db");
        let public = keys::generate(KeyTier::Public);
        db.insert_api_key(&public, "web").await.expect("key");
        let service = keys::generate(KeyTier::Service);
        db.insert_api_key(&service, "admin").await.expect("key");
        let master = reactor_core::seal::MasterKey::generate();
        let endpoint = serve(db, dir.path(), &master, connect).await;
        let h = Harness {
            base: endpoint,
            master,
            jar: Jar::default(),
            service: service.secret,
            public: public.secret,
            // Redirects are the subject here: never followed.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            provider,
            db_path,
            _dir: dir,
        };
        h.secret("CLIENT_SECRET", CLIENT_SECRET).await;
        h.secret("HOOK_SECRET", "whsec_test").await;
        h
    }

    /// `POST /connect/v1/connections` with the service key.
    async fn create(&self, body: Value) -> (u16, Value) {
        self.json(
            &Who::Service,
            reqwest::Method::POST,
            "/connect/v1/connections",
            Some(body),
        )
        .await
    }

    /// Another server over the same database and project, with other Connect settings.
    async fn another_server(&self, connect: ConnectSettings) -> String {
        let db = Db::connect(&format!("sqlite://{}", self.db_path.display()))
            .await
            .expect("db");
        serve(db, self._dir.path(), &self.master, connect).await
    }

    async fn secret(&self, name: &str, value: &str) {
        let res = self
            .http
            .put(format!("{}/v1/secrets/{name}", self.base))
            .header("apikey", &self.service)
            .json(&json!({ "value": value }))
            .send()
            .await
            .expect("secret");
        assert_eq!(res.status().as_u16(), 204);
    }

    /// A request as `who`: the service key, or a user's token (with an org).
    fn req(&self, who: &Who, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match who {
            Who::Service => req.header("apikey", &self.service),
            Who::User { token, org } => {
                let req = req.header("apikey", &self.public).bearer_auth(token);
                match org {
                    Some(org) => req.header("x-reactor-org", org),
                    None => req,
                }
            }
        }
    }

    async fn json(
        &self,
        who: &Who,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.req(who, method, path);
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

    async fn user(&self, email: &str, org: Option<&str>, invite: Option<&Value>) -> Who {
        let mut body = json!({"email": email, "password": "correct horse battery"});
        if let Some(t) = invite {
            body["invite_token"] = t.clone();
        }
        let res = self
            .http
            .post(format!("{}/auth/v1/signup", self.base))
            .header("apikey", &self.public)
            .json(&body)
            .send()
            .await
            .expect("signup");
        let session: Value = res.json().await.expect("json");
        let token = session["access_token"].as_str().expect("token").to_string();
        let who = Who::User { token, org: None };
        match (org, invite) {
            (Some(slug), None) => {
                let (status, made) = self
                    .json(
                        &who,
                        reqwest::Method::POST,
                        "/auth/v1/orgs",
                        Some(json!({"name": slug, "slug": slug})),
                    )
                    .await;
                assert_eq!(status, 201, "{made}");
                who.in_org(slug)
            }
            (Some(slug), Some(_)) => who.in_org(slug),
            _ => who,
        }
    }

    /// The whole dance for `who`: session, authorize, the provider's approval, callback.
    /// The callback's `Location`.
    async fn connect(&self, who: &Who, body: Value) -> String {
        let (status, session) = self
            .json(
                who,
                reqwest::Method::POST,
                "/connect/v1/sessions",
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{session}");
        let authorize = session["authorize_url"].as_str().expect("authorize_url");
        let to_provider = self.location(authorize).await;
        let to_callback = self.location(&to_provider).await;
        assert!(
            to_callback.starts_with(&format!("{}/connect/v1/oauth/callback?", self.base)),
            "{to_callback}"
        );
        self.location(&to_callback).await
    }

    /// Follows one redirect by hand: the `Location` of a 302/303/307.
    async fn location(&self, url: &str) -> String {
        let res = browse(&self.http, &self.jar, url).await;
        assert!(
            res.status().is_redirection(),
            "{url}: {} {}",
            res.status(),
            res.text().await.unwrap_or_default()
        );
        res.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("location")
            .to_string()
    }

    /// The status of a request sent as written: HTTP clients resolve `..` in a URL before
    /// sending it, and the point here is what the server does with one.
    async fn raw_status(&self, who: &Who, path: &str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let auth = match who {
            Who::Service => format!("apikey: {}\r\n", self.service),
            Who::User { token, org } => format!(
                "apikey: {}\r\nauthorization: Bearer {token}\r\n{}",
                self.public,
                org.as_ref()
                    .map(|o| format!("x-reactor-org: {o}\r\n"))
                    .unwrap_or_default()
            ),
        };
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line")
    }

    fn calls(&self) -> Vec<Value> {
        lock(&self.provider).api_calls.clone()
    }

    /// Moves a connection's token expiry to now, as if time had passed.
    fn expire(&self, id: &str) {
        let conn = rusqlite::Connection::open(&self.db_path).expect("open");
        let n = conn
            .execute(
                "update _reactor_connect_connections set expires_ms = ?1 where id = ?2",
                rusqlite::params![reactor_connect::now_ms(), id],
            )
            .expect("expire");
        assert_eq!(n, 1);
    }

    /// The runs of a job, once `n` exist.
    async fn runs(&self, job: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self
                .json(
                    &Who::Service,
                    reqwest::Method::GET,
                    &format!("/jobs/v1/{job}/runs"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let runs = body.as_array().cloned().unwrap_or_default();
            if runs.len() >= n {
                return runs;
            }
            assert!(Instant::now() < deadline, "no run of {job}: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[derive(Clone)]
enum Who {
    Service,
    User { token: String, org: Option<String> },
}

impl Who {
    fn in_org(self, slug: &str) -> Who {
        match self {
            Who::User { token, .. } => Who::User {
                token,
                org: Some(slug.to_string()),
            },
            other => other,
        }
    }
}

fn query_of(url: &str) -> BTreeMap<String, String> {
    let q = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

#[tokio::test]
async fn a_user_connects_calls_through_the_proxy_and_tokens_refresh() {
    let h = Harness::start().await;
    let alice = h.user("alice@example.com", Some("acme"), None).await;

    let (status, list) = h
        .json(
            &alice,
            reqwest::Method::GET,
            "/connect/v1/integrations",
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["integrations"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["basic", "fake", "hooks", "keyed", "machine"]);

    // The authorize step sends the browser to the provider with state, PKCE and scopes.
    let (status, session) = h
        .json(
            &alice,
            reqwest::Method::POST,
            "/connect/v1/sessions",
            Some(json!({"integration": "fake", "redirect_to": "http://app.test/done"})),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let to_provider = h
        .location(session["authorize_url"].as_str().expect("url"))
        .await;
    let q = query_of(&to_provider);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["scope"], "read write");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(
        q["redirect_uri"],
        format!("{}/connect/v1/oauth/callback", h.base)
    );
    assert!(q["state"].len() >= 32);
    let to_callback = h.location(&to_provider).await;
    let back = h.location(&to_callback).await;
    assert!(
        back.starts_with("http://app.test/done?connection_id="),
        "{back}"
    );
    let id = query_of(&back)["connection_id"].clone();

    // The state worked once: the same callback again is refused and stores nothing.
    let res = browse(&h.http, &h.jar, &to_callback).await;
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "bad_state");

    // Listed without its credentials.
    let res = h
        .req(&alice, reqwest::Method::GET, "/connect/v1/connections")
        .send()
        .await
        .expect("list");
    let text = res.text().await.expect("body");
    assert!(
        !text.contains("access-") && !text.contains("refresh-"),
        "{text}"
    );
    let listed: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        listed["connections"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["connections"][0]["id"], id.as_str());
    assert_eq!(listed["connections"][0]["status"], "active");
    assert_eq!(listed["connections"][0]["scopes"], json!(["read", "write"]));

    // The proxy: the provider's token goes in, Reactor's key and the caller's token do not.
    let res = h
        .req(
            &alice,
            reqwest::Method::POST,
            &format!("/connect/v1/proxy/{id}/users/me?page=2"),
        )
        .header("x-custom", "kept")
        .body("hello")
        .send()
        .await
        .expect("proxy");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()
            .get("x-reactor-proxied")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "marked as the provider's answer"
    );
    assert!(
        res.headers().get("set-cookie").is_none(),
        "the provider's cookies stay out"
    );
    let seen: Value = res.json().await.expect("json");
    assert_eq!(seen["path"], "/api/users/me");
    assert_eq!(seen["query"], "page=2");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], "hello");
    assert_eq!(seen["x_custom"], "kept");
    assert_eq!(seen["apikey"], Value::Null);
    let first_access = lock(&h.provider).access.clone().expect("access");
    assert_eq!(seen["authorization"], format!("Bearer {first_access}"));
    assert_eq!(
        lock(&h.provider).refreshes,
        0,
        "a fresh token is not refreshed"
    );

    // The caller cannot leave the provider's API.
    let calls = h.calls().len();
    for path in [
        "../oauth/token",
        "%2e%2e/oauth/token",
        "x/../../oauth/token",
        "%2E%2E/oauth/token",
    ] {
        let status = h
            .raw_status(&alice, &format!("/connect/v1/proxy/{id}/{path}"))
            .await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(h.calls().len(), calls, "nothing reached the provider");

    // Time passes: the token expires; the next call refreshes first, with the rotated
    // refresh token kept for the next time.
    h.expire(&id);
    let res = h
        .req(
            &alice,
            reqwest::Method::GET,
            &format!("/connect/v1/proxy/{id}/ping"),
        )
        .send()
        .await
        .expect("proxy");
    assert_eq!(res.status().as_u16(), 200);
    let seen: Value = res.json().await.expect("json");
    let second_access = lock(&h.provider).access.clone().expect("access");
    assert_ne!(first_access, second_access);
    assert_eq!(seen["authorization"], format!("Bearer {second_access}"));
    assert_eq!(lock(&h.provider).refreshes, 1);
    h.expire(&id);
    let res = h
        .req(
            &alice,
            reqwest::Method::GET,
            &format!("/connect/v1/proxy/{id}/ping"),
        )
        .send()
        .await
        .expect("proxy");
    assert_eq!(res.status().as_u16(), 200);
    {
        let p = lock(&h.provider);
        assert_eq!(p.refreshes, 2, "the rotated refresh token was used");
        assert_eq!(p.double_spends, 0);
    }
    let (_, info) = h
        .json(
            &alice,
            reqwest::Method::GET,
            &format!("/connect/v1/connections/{id}"),
            None,
        )
        .await;
    assert!(info["last_refresh_at"].is_string(), "{info}");

    // The grant is revoked at the provider: the refresh fails for good, the connection is
    // marked, the call is refused, and a job hears of it.
    lock(&h.provider).revoked = true;
    h.expire(&id);
    let (status, body) = h
        .json(
            &alice,
            reqwest::Method::GET,
            &format!("/connect/v1/proxy/{id}/ping"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "connection_failed");
    let (_, info) = h
        .json(
            &alice,
            reqwest::Method::GET,
            &format!("/connect/v1/connections/{id}"),
            None,
        )
        .await;
    assert_eq!(info["status"], "failed");
    assert!(
        info["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid_grant")),
        "{info}"
    );
    let runs = h.runs("on-failed", 1).await;
    assert_eq!(runs[0]["payload"]["connection_id"], id.as_str());
    assert_eq!(runs[0]["payload"]["integration"], "fake");
    let calls_before = h.calls().len();
    let (status, _) = h
        .json(
            &alice,
            reqwest::Method::GET,
            &format!("/connect/v1/proxy/{id}/ping"),
            None,
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        h.calls().len(),
        calls_before,
        "a failed connection calls nothing"
    );

    // Deleted, it is gone.
    let res = h
        .req(
            &alice,
            reqwest::Method::DELETE,
            &format!("/connect/v1/connections/{id}"),
        )
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status().as_u16(), 204);
    let (status, _) = h
        .json(
            &alice,
            reqwest::Method::GET,
            &format!("/connect/v1/connections/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn refusals_change_nothing_and_orgs_never_share_connections() {
    let h = Harness::start().await;
    let alice = h.user("alice@example.com", Some("acme"), None).await;
    let bob = h.user("bob@example.com", Some("globex"), None).await;
    let (status, invite) = h
        .json(
            &alice,
            reqwest::Method::POST,
            "/auth/v1/orgs/acme/invites",
            Some(json!({"email": "carol@example.com"})),
        )
        .await;
    assert_eq!(status, 201, "{invite}");
    let carol = h
        .user("carol@example.com", Some("acme"), Some(&invite["token"]))
        .await;

    let back = h
        .connect(
            &alice,
            json!({"integration": "fake", "redirect_to": "http://app.test/"}),
        )
        .await;
    let id = query_of(&back)["connection_id"].clone();

    // Carol, in Acme, shares Acme's connection; Bob, in Globex, cannot see, use or delete it.
    let (status, listed) = h
        .json(
            &carol,
            reqwest::Method::GET,
            "/connect/v1/connections",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["connections"][0]["id"], id.as_str());
    let (status, listed) = h
        .json(&bob, reqwest::Method::GET, "/connect/v1/connections", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["connections"], json!([]));
    let calls = h.calls().len();
    for (method, path) in [
        (
            reqwest::Method::GET,
            format!("/connect/v1/connections/{id}"),
        ),
        (
            reqwest::Method::GET,
            format!("/connect/v1/proxy/{id}/users/me"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/connect/v1/connections/{id}"),
        ),
    ] {
        let (status, body) = h.json(&bob, method.clone(), &path, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    assert_eq!(h.calls().len(), calls, "nothing reached the provider");
    let (status, _) = h
        .json(
            &alice,
            reqwest::Method::GET,
            &format!("/connect/v1/connections/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "still there");

    // A forged state: refused, nothing stored.
    let res = h
        .http
        .get(format!(
            "{}/connect/v1/oauth/callback?code=code-1&state=forged",
            h.base
        ))
        .send()
        .await
        .expect("forged");
    assert_eq!(res.status().as_u16(), 400);
    // Another browser (an attacker's link to a victim) cannot finish a dance this browser
    // started: refused, and the rightful browser still can.
    let (status, session) = h
        .json(
            &carol,
            reqwest::Method::POST,
            "/connect/v1/sessions",
            Some(json!({"integration": "fake", "redirect_to": "http://app.test/"})),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let to_provider = h
        .location(session["authorize_url"].as_str().expect("url"))
        .await;
    let to_callback = h.location(&to_provider).await;
    let res = h.http.get(&to_callback).send().await.expect("no cookie");
    assert_eq!(res.status().as_u16(), 400);
    // The right cookie's name, another value: still refused.
    let state = query_of(&to_callback)["state"].clone();
    let name = format!(
        "reactor_connect_{}",
        &hex::encode(Sha256::digest(state.as_bytes()))[..16]
    );
    let stranger = Jar::new(vec![format!("{name}=forged")]);
    let res = browse(&h.http, &stranger, &to_callback).await;
    assert_eq!(res.status().as_u16(), 400);
    let back = h.location(&to_callback).await;
    assert!(back.contains("connection_id="), "{back}");

    // A redirect to an origin the integration does not allow: no session at all.
    let (status, body) = h
        .json(
            &alice,
            reqwest::Method::POST,
            "/connect/v1/sessions",
            Some(json!({"integration": "fake", "redirect_to": "https://evil.test/steal"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "redirect_not_allowed");
    // An unknown session token.
    let res = h
        .http
        .get(format!(
            "{}/connect/v1/oauth/fake/authorize?session=nope",
            h.base
        ))
        .send()
        .await
        .expect("authorize");
    assert_eq!(res.status().as_u16(), 400);
    // The user says no at the provider: back to the app with the error, nothing stored.
    let (status, listed) = h
        .json(
            &Who::Service,
            reqwest::Method::GET,
            "/connect/v1/connections",
            None,
        )
        .await;
    assert_eq!(status, 200);
    let before = listed["connections"].as_array().map(Vec::len);
    let (status, session) = h
        .json(
            &bob,
            reqwest::Method::POST,
            "/connect/v1/sessions",
            Some(json!({"integration": "fake", "redirect_to": "http://app.test/"})),
        )
        .await;
    assert_eq!(status, 201);
    let to_provider = h
        .location(session["authorize_url"].as_str().expect("url"))
        .await;
    let denied = to_provider.replace("scope=read+write", "scope=deny");
    let to_callback = h.location(&denied).await;
    let back = h.location(&to_callback).await;
    assert_eq!(query_of(&back)["error"], "access_denied");
    let (_, listed) = h
        .json(
            &Who::Service,
            reqwest::Method::GET,
            "/connect/v1/connections",
            None,
        )
        .await;
    assert_eq!(listed["connections"].as_array().map(Vec::len), before);

    // The bare public key reaches nothing; a user cannot act for an end user.
    let res = h
        .http
        .get(format!("{}/connect/v1/connections", h.base))
        .header("apikey", &h.public)
        .send()
        .await
        .expect("anon");
    assert_eq!(res.status().as_u16(), 401);
    let (status, _) = h
        .json(
            &alice,
            reqwest::Method::POST,
            "/connect/v1/sessions",
            Some(json!({"integration": "fake", "end_user": {"id": "x"}})),
        )
        .await;
    assert_eq!(status, 403);

    // Webhooks: a good Stripe signature is an event for Jobs; a tampered one is refused.
    let payload = r#"{"type":"invoice.paid","id":"evt_1"}"#;
    let now = reactor_connect::now_ms() / 1000;
    let signature = reactor_connect::webhook::sign(
        reactor_connect::catalog::WebhookScheme::Stripe,
        "whsec_test",
        payload.as_bytes(),
        now,
    );
    let post = |sig: String, body: &'static str| {
        h.http
            .post(format!("{}/connect/v1/webhooks/hooks", h.base))
            .header("stripe-signature", sig)
            .body(body)
            .send()
    };
    let res = post(signature.clone(), r#"{"type":"invoice.paid","id":"evt_2"}"#)
        .await
        .expect("tampered");
    assert_eq!(res.status().as_u16(), 403);
    let res = post(signature.replace("v1=", "v1=00"), payload)
        .await
        .expect("bad sig");
    assert_eq!(res.status().as_u16(), 403);
    let res = post(signature, payload).await.expect("webhook");
    assert_eq!(res.status().as_u16(), 202);
    let runs = h.runs("on-hook", 1).await;
    assert_eq!(runs.len(), 1, "only the verified delivery became a run");
    assert_eq!(runs[0]["payload"]["payload"]["id"], "evt_1");
}

#[tokio::test]
async fn keys_basic_auth_client_credentials_and_429_retries() {
    let h = Harness::start().await;
    let end_user = json!({"id": "customer-42", "org_id": "tenant-7"});

    // An API key, for an end user of the app (the service key acts for them).
    let (status, made) = h
        .create(json!({"integration": "keyed", "api_key": "sk_test_123", "end_user": end_user}))
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["end_user_id"], "customer-42");
    assert_eq!(made["auth_mode"], "api_key");
    assert!(!made.to_string().contains("sk_test_123"));
    let id = made["id"].as_str().expect("id").to_string();
    let (status, seen) = h
        .json(
            &Who::Service,
            reqwest::Method::GET,
            &format!("/connect/v1/proxy/{id}/charges"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["path"], "/api/v1/charges");
    assert_eq!(seen["authorization"], "Bearer sk_test_123");
    // The base path holds: a path may not climb above /api/v1.
    let status = h
        .raw_status(&Who::Service, &format!("/connect/v1/proxy/{id}/../other"))
        .await;
    assert_eq!(status, 400);

    // Missing credentials are a 400 naming what is missing.
    let (status, body) = h
        .create(json!({"integration": "basic", "username": "u", "end_user": end_user}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("`password`")),
        "{body}"
    );
    let (status, made) = h
        .create(json!({"integration": "basic", "username": "u", "password": "p w", "end_user": end_user}))
        .await;
    assert_eq!(status, 201, "{made}");
    let basic = made["id"].as_str().expect("id").to_string();

    // A 429 is retried after the provider's retry-after, and the caller sees the success.
    lock(&h.provider).limited = 1;
    let calls = h.calls().len();
    let started = Instant::now();
    let (status, seen) = h
        .json(
            &Who::Service,
            reqwest::Method::GET,
            &format!("/connect/v1/proxy/{basic}/limited"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{seen}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for retry-after"
    );
    assert_eq!(h.calls().len(), calls + 2);
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode("u:p w");
    assert_eq!(seen["authorization"], format!("Basic {expected}"));

    // Bodies stream both ways: 3 MiB up (more than is held for retries), chunks down as the
    // provider writes them.
    let big = "x".repeat(3 * 1024 * 1024);
    let res = h
        .req(
            &Who::Service,
            reqwest::Method::PUT,
            &format!("/connect/v1/proxy/{basic}/upload"),
        )
        .body(big)
        .send()
        .await
        .expect("upload");
    assert_eq!(res.status().as_u16(), 200);
    let seen: Value = res.json().await.expect("json");
    assert_eq!(seen["body"], format!("{} bytes", 3 * 1024 * 1024));
    let res = h
        .req(
            &Who::Service,
            reqwest::Method::GET,
            &format!("/connect/v1/proxy/{basic}/slow"),
        )
        .send()
        .await
        .expect("slow");
    let started = Instant::now();
    let mut arrivals = Vec::new();
    let mut stream = res.bytes_stream();
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        chunk.expect("chunk");
        arrivals.push(started.elapsed());
    }
    assert!(
        arrivals.len() >= 2
            && arrivals[arrivals.len() - 1] - arrivals[0] >= Duration::from_millis(400),
        "the answer was buffered: {arrivals:?}"
    );

    // Client credentials: the server fetches the token itself.
    let (status, made) = h
        .create(json!({"integration": "machine", "end_user": end_user}))
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(lock(&h.provider).client_credentials, 1);
    let machine = made["id"].as_str().expect("id").to_string();
    let (status, seen) = h
        .json(
            &Who::Service,
            reqwest::Method::GET,
            &format!("/connect/v1/proxy/{machine}/x"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{seen}");
    assert!(
        seen["authorization"]
            .as_str()
            .is_some_and(|a| a.starts_with("Bearer cc-access-"))
    );

    // OAuth integrations need the browser; unknown ones are 404.
    let (status, _) = h
        .create(json!({"integration": "fake", "end_user": end_user}))
        .await;
    assert_eq!(status, 400);
    let (status, body) = h
        .create(json!({"integration": "nope", "api_key": "k", "end_user": end_user}))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, listed) = h
        .json(
            &Who::Service,
            reqwest::Method::GET,
            "/connect/v1/connections?end_user_id=customer-42",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["connections"].as_array().map(Vec::len), Some(3));
}

/// Two `reactor-server` processes over one Postgres refresh one connection at the same
/// moment: the refresh token is spent once, and both calls succeed.
#[tokio::test]
async fn two_servers_spend_a_refresh_token_once() {
    let Some(url) = reactor_db::testing::fresh_postgres_database("connect_refresh").await else {
        return;
    };
    let (provider_url, provider) = fake_provider().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_project(dir.path(), &provider_url);
    let service = support::keys_create(&url, "svc");
    let master = reactor_core::seal::MasterKey::generate().to_base64();
    let start = |port: u16| {
        support::Proc(
            std::process::Command::new(support::BIN)
                .env("REACTOR_DATABASE_URL", &url)
                .env("REACTOR_LISTEN", format!("127.0.0.1:{port}"))
                .env("REACTOR_PROJECT", dir.path())
                .env("REACTOR_MASTER_KEY", &master)
                .env(
                    "REACTOR_CACHE_DIR",
                    dir.path().join(format!("cache-{port}")),
                )
                .env("REACTOR_STORAGE_PATH", dir.path().join("objects"))
                .env("REACTOR_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    };
    let (p1, p2) = (support::free_port(), support::free_port());
    let _a = start(p1);
    let _b = start(p2);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let (a, b) = (
        format!("http://127.0.0.1:{p1}"),
        format!("http://127.0.0.1:{p2}"),
    );
    support::wait_up(&http, &a).await;
    support::wait_up(&http, &b).await;
    let res = http
        .put(format!("{a}/v1/secrets/CLIENT_SECRET"))
        .header("apikey", &service)
        .json(&json!({"value": CLIENT_SECRET}))
        .send()
        .await
        .expect("secret");
    assert_eq!(res.status().as_u16(), 204);

    // The dance on server A, for an end user; the callback lands on A too.
    let res = http
        .post(format!("{a}/connect/v1/sessions"))
        .header("apikey", &service)
        .json(&json!({"integration": "fake", "end_user": {"id": "u-1"}}))
        .send()
        .await
        .expect("session");
    assert_eq!(res.status().as_u16(), 201);
    let session: Value = res.json().await.expect("json");
    let jar = Jar::default();
    let follow = async |url: &str| {
        let res = browse(&http, &jar, url).await;
        res.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let to_provider = follow(session["authorize_url"].as_str().expect("url"))
        .await
        .expect("to provider");
    let to_callback = follow(&to_provider).await.expect("to callback");
    let res = browse(&http, &jar, &to_callback).await;
    assert_eq!(res.status().as_u16(), 200, "no redirect_to: a page");
    let done: Value = res.json().await.expect("json");
    let id = done["connection_id"].as_str().expect("id").to_string();

    // Expire the token, then call through both servers at once.
    let pg = sqlx::PgPool::connect(&url).await.expect("pg");
    sqlx::query("update reactor.connect_connections set expires_ms = $1 where id = $2")
        .bind(reactor_connect::now_ms())
        .bind(&id)
        .execute(&pg)
        .await
        .expect("expire");
    let call = |base: String| {
        let http = http.clone();
        let service = service.clone();
        let id = id.clone();
        async move {
            let res = http
                .get(format!("{base}/connect/v1/proxy/{id}/ping"))
                .header("apikey", &service)
                .send()
                .await
                .expect("proxy");
            let status = res.status().as_u16();
            (status, res.text().await.unwrap_or_default())
        }
    };
    let (ra, rb) = tokio::join!(call(a.clone()), call(b.clone()));
    assert_eq!(ra.0, 200, "{}", ra.1);
    assert_eq!(rb.0, 200, "{}", rb.1);
    let p = lock(&provider);
    assert_eq!(p.refreshes, 1, "one refresh for two replicas");
    assert_eq!(
        p.double_spends, 0,
        "the refresh token was never spent twice"
    );
}

#[tokio::test]
async fn a_new_vault_key_seals_every_credential_again() {
    let old = reactor_core::seal::MasterKey::generate().to_base64();
    let h = Harness::start_with(ConnectSettings {
        vault_key: Some(old.clone()),
        ..Default::default()
    })
    .await;
    let (status, made) = h
        .create(
            json!({"integration": "keyed", "api_key": "sk_test_rotate", "end_user": {"id": "u"}}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().expect("id").to_string();
    let sealed = |h: &Harness| -> String {
        let conn = rusqlite::Connection::open(&h.db_path).expect("open");
        conn.query_row(
            "select credentials from _reactor_connect_connections where id = ?1",
            [&id],
            |r| r.get(0),
        )
        .expect("row")
    };
    let before = sealed(&h);
    assert!(
        !before.contains("sk_test_rotate"),
        "sealed at rest: {before}"
    );

    // A server given a new key, the old one as previous: it seals everything again at start.
    let new = reactor_core::seal::MasterKey::generate().to_base64();
    let base = h
        .another_server(ConnectSettings {
            vault_key: Some(new),
            previous_vault_keys: vec![old],
            ..Default::default()
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sealed(&h) == before {
        assert!(Instant::now() < deadline, "never sealed again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key_id = |s: &str| s.split(':').nth(1).map(str::to_string);
    assert_ne!(key_id(&sealed(&h)), key_id(&before), "named by the new key");
    // …and the credentials still work through the new server.
    let res = h
        .http
        .get(format!("{base}/connect/v1/proxy/{id}/v1/charges"))
        .header("apikey", &h.service)
        .send()
        .await
        .expect("proxy");
    assert_eq!(res.status().as_u16(), 200);
    let seen: Value = res.json().await.expect("json");
    assert_eq!(seen["authorization"], "Bearer sk_test_rotate");
    // A server without the key that sealed them cannot open them, and says so.
    let lost = h
        .another_server(ConnectSettings {
            vault_key: Some(reactor_core::seal::MasterKey::generate().to_base64()),
            ..Default::default()
        })
        .await;
    let res = h
        .http
        .get(format!("{lost}/connect/v1/proxy/{id}/v1/charges"))
        .header("apikey", &h.service)
        .send()
        .await
        .expect("proxy");
    assert_eq!(res.status().as_u16(), 500);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "vault");
}

#[tokio::test]
async fn tokens_about_to_expire_are_refreshed_in_the_background() {
    let h = Harness::start_with(ConnectSettings {
        refresh_every_secs: Some(1),
        ..Default::default()
    })
    .await;
    let alice = h.user("alice@example.com", None, None).await;
    let soon = query_of(
        &h.connect(
            &alice,
            json!({"integration": "fake", "redirect_to": "http://app.test/"}),
        )
        .await,
    )["connection_id"]
        .clone();
    let later = query_of(
        &h.connect(
            &alice,
            json!({"integration": "fake", "redirect_to": "http://app.test/"}),
        )
        .await,
    )["connection_id"]
        .clone();
    // One expires in five minutes; the other in an hour (and was made just now).
    let conn = rusqlite::Connection::open(&h.db_path).expect("open");
    conn.execute(
        "update _reactor_connect_connections set expires_ms = ?1 where id = ?2",
        rusqlite::params![reactor_connect::now_ms() + 300_000, soon],
    )
    .expect("expire");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, info) = h
            .json(
                &alice,
                reqwest::Method::GET,
                &format!("/connect/v1/connections/{soon}"),
                None,
            )
            .await;
        if info["last_refresh_at"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "never refreshed: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        lock(&h.provider).refreshes,
        1,
        "no call needed it; one refresh"
    );
    let (_, info) = h
        .json(
            &alice,
            reqwest::Method::GET,
            &format!("/connect/v1/connections/{later}"),
            None,
        )
        .await;
    assert_eq!(info["last_refresh_at"], Value::Null, "not due: left alone");
}
