//! `/data/v1` conformance: PostgREST's grammar and HTTP conventions, and row-level security
//! between organizations, over real HTTP against a real server.
//!
//! The cases are data: each names a caller, a request and the exact status, body (or error
//! code) and `Content-Range` a PostgREST client would get. The same list is meant to run on
//! every adapter; a failure report lists every case that differed, not just the first.

use reactor_core::{KeyTier, keys};
use reactor_db::Db;
use reactor_db::testing::fresh_postgres_database;
use reactor_server::config::ServerConfig;
use reactor_server::{AppState, Server};
use serde_json::{Value, json};

const LIBRARY: &str = include_str!("fixtures/library.sql");
const TODO: &str = include_str!("../../../examples/todo/data/migrations/0001_init.sql");
const TODO_LISTS: &str = include_str!("../../../examples/todo/data/migrations/0002_lists.sql");
const LIST_NOTES: &str = include_str!("fixtures/list_notes.sql");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anon,
    Service,
    /// A signed-in user of the tenancy fixture.
    User(&'static str),
}

#[derive(Debug, Clone)]
enum Expect {
    Json(Value),
    /// An error body: only `code` is compared.
    Code(&'static str),
    Text(&'static str),
    Empty,
}

#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    who: Who,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
    status: u16,
    expect: Expect,
    content_range: Option<&'static str>,
}

fn case(name: &'static str, method: &'static str, path: &str) -> Case {
    Case {
        name,
        who: Who::Anon,
        method,
        path: format!("/data/v1{path}"),
        headers: Vec::new(),
        body: None,
        status: 200,
        expect: Expect::Empty,
        content_range: None,
    }
}

fn get(name: &'static str, path: &str) -> Case {
    case(name, "GET", path)
}

impl Case {
    fn who(mut self, who: Who) -> Case {
        self.who = who;
        self
    }
    fn header(mut self, name: &'static str, value: &str) -> Case {
        self.headers.push((name, value.to_string()));
        self
    }
    fn body(mut self, body: Value) -> Case {
        self.body = Some(body);
        self
    }
    fn json(mut self, status: u16, body: Value) -> Case {
        self.status = status;
        self.expect = Expect::Json(body);
        self
    }
    fn error(mut self, status: u16, code: &'static str) -> Case {
        self.status = status;
        self.expect = Expect::Code(code);
        self
    }
    fn text(mut self, status: u16, body: &'static str) -> Case {
        self.status = status;
        self.expect = Expect::Text(body);
        self
    }
    fn empty(mut self, status: u16) -> Case {
        self.status = status;
        self.expect = Expect::Empty;
        self
    }
    fn range(mut self, r: &'static str) -> Case {
        self.content_range = Some(r);
        self
    }
}

fn ids(ids: &[i64]) -> Value {
    Value::Array(ids.iter().map(|i| json!({"id": i})).collect())
}

struct Harness {
    base: String,
    public_key: String,
    service_key: String,
    http: reqwest::Client,
    /// Access tokens of the tenancy fixture's users, and the org each acts in.
    users: Vec<(&'static str, String, String)>,
}

impl Harness {
    async fn start(url: &str) -> Harness {
        Harness::start_with(url, |_| {}).await
    }

    async fn start_with(url: &str, configure: impl FnOnce(&mut ServerConfig)) -> Harness {
        let db = Db::connect(url).await.expect("db");
        let public = keys::generate(KeyTier::Public);
        db.insert_api_key(&public, "test").await.expect("key");
        let service = keys::generate(KeyTier::Service);
        db.insert_api_key(&service, "admin").await.expect("key");
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let endpoint = server.endpoint().expect("endpoint");
        let mut config = ServerConfig::new(
            server.local_addr().expect("addr"),
            url.to_string(),
            vec![
                reactor_core::Capability::Identity,
                reactor_core::Capability::Data,
            ],
        );
        configure(&mut config);
        let state = AppState::start(db, &config, &endpoint)
            .await
            .expect("state");
        tokio::spawn(server.run(state, std::future::pending()));
        Harness {
            base: endpoint,
            public_key: public.secret,
            service_key: service.secret,
            http: reqwest::Client::new(),
            users: Vec::new(),
        }
    }

    async fn send(
        &self,
        who: Who,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&Value>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let key = match who {
            Who::Service => &self.service_key,
            _ => &self.public_key,
        };
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("apikey", key);
        if let Who::User(name) = who {
            let (_, token, org) = self
                .users
                .iter()
                .find(|(n, _, _)| *n == name)
                .expect("known user");
            req = req.bearer_auth(token).header("x-reactor-org", org);
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, headers, res.text().await.expect("body"))
    }

    async fn service(&self, method: &str, path: &str, body: Value) -> Value {
        let prefer = [("prefer", "missing=default".to_string())];
        let (status, _, text) = self
            .send(Who::Service, method, path, &prefer, Some(&body))
            .await;
        assert!(status < 300, "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn migrate(&self, files: &[(&str, &str)]) {
        let files: Vec<Value> = files
            .iter()
            .map(|(name, sql)| json!({"name": name, "sql": sql}))
            .collect();
        let applied = self
            .service(
                "POST",
                "/data/v1/admin/migrations",
                json!({ "files": files }),
            )
            .await;
        assert_eq!(
            applied["applied"].as_array().map(Vec::len),
            Some(files.len())
        );
    }

    /// Runs every case and returns a line per mismatch.
    async fn run(&self, cases: &[Case]) -> Vec<String> {
        let mut failures = Vec::new();
        for c in cases {
            let (status, headers, text) = self
                .send(c.who, c.method, &c.path, &c.headers, c.body.as_ref())
                .await;
            let mut problems = Vec::new();
            if status != c.status {
                problems.push(format!("status {status}, expected {}", c.status));
            }
            match &c.expect {
                Expect::Json(want) => {
                    let got: Value =
                        serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
                    if &got != want {
                        problems.push(format!("body {got}, expected {want}"));
                    }
                }
                Expect::Code(code) => {
                    let got: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if got["code"].as_str() != Some(code) {
                        problems.push(format!("error {text}, expected code {code}"));
                    }
                }
                Expect::Text(want) => {
                    if text != *want {
                        problems.push(format!("body {text:?}, expected {want:?}"));
                    }
                }
                Expect::Empty => {
                    if !text.is_empty() {
                        problems.push(format!("body {text:?}, expected none"));
                    }
                }
            }
            if let Some(want) = c.content_range {
                let got = headers
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if got != want {
                    problems.push(format!("Content-Range {got:?}, expected {want:?}"));
                }
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "[{}] {} {}: {}",
                    c.name,
                    c.method,
                    c.path,
                    problems.join("; ")
                ));
            }
        }
        failures
    }

    /// Seeds the library through the API itself (the service key, as an operator would).
    async fn seed_library(&self) {
        self.service(
            "POST",
            "/data/v1/authors",
            json!([
                {"id": 1, "name": "Ursula", "country": "US", "born": "1929-10-21"},
                {"id": 2, "name": "Stanisław", "country": "PL", "born": "1921-09-12"},
                {"id": 3, "name": "Octavia", "country": "US"}
            ]),
        )
        .await;
        self.service(
            "POST",
            "/data/v1/books",
            json!([
                {"id": 1, "title": "A Wizard of Earthsea", "author_id": 1, "pages": 183, "price": 9.99,
                 "tags": ["fantasy", "classic"], "meta": {"series": "Earthsea", "n": 1}, "published": true,
                 "rating": 4.5, "isbn": "111"},
                {"id": 2, "title": "The Dispossessed", "author_id": 1, "pages": 387, "price": 12.5,
                 "tags": ["scifi", "classic"], "meta": {"series": null}, "published": true, "rating": 4.7,
                 "isbn": "222"},
                {"id": 3, "title": "Solaris", "author_id": 2, "pages": 204, "price": 11,
                 "tags": ["scifi"], "meta": {"n": 3}, "published": true, "rating": 4.1, "isbn": "333"},
                {"id": 4, "title": "Kindred", "author_id": 3, "pages": 264, "tags": [], "published": false},
                {"id": 5, "title": "Untitled"}
            ]),
        )
        .await;
        self.service(
            "POST",
            "/data/v1/readers",
            json!([{"id": 1, "name": "Ann"}, {"id": 2, "name": "Ben"}]),
        )
        .await;
        self.service(
            "POST",
            "/data/v1/reads",
            json!([{"reader_id": 1, "book_id": 1}, {"reader_id": 1, "book_id": 3}, {"reader_id": 2, "book_id": 1}]),
        )
        .await;
        self.service(
            "POST",
            "/data/v1/employees",
            json!([{"id": 1, "name": "Boss"}, {"id": 2, "name": "Mid", "manager_id": 1}, {"id": 3, "name": "Low", "manager_id": 2}]),
        )
        .await;
    }

    async fn call_json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("apikey", &self.public_key)
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Runs tests/js/postgrest.mjs: the unmodified `@supabase/postgrest-js` against this
    /// server, from node. It leaves the data as it found it.
    async fn postgrest_js(&self) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
        assert!(
            dir.join("node_modules/@supabase/postgrest-js").exists(),
            "run `npm ci --prefix {}` (scripts/test does)",
            dir.display()
        );
        let token = |name: &str| {
            self.users
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, t, _)| t.clone())
                .expect("user")
        };
        let mut cmd = std::process::Command::new("node");
        cmd.arg("postgrest.mjs")
            .current_dir(&dir)
            .env("REACTOR_DATA_URL", format!("{}/data/v1", self.base))
            .env("REACTOR_PUBLIC_KEY", &self.public_key)
            .env("ALICE_TOKEN", token("alice"))
            .env("BOB_TOKEN", token("bob"));
        // Blocking on node here would stall the server this runtime also drives.
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join")
            .expect("node runs");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "postgrest-js against {}:\n{said}{}",
            self.base,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Two organizations: alice owns acme and invites carol as a member; bob owns globex.
    async fn tenancy(&mut self) {
        let signup = async |h: &Harness, email: &str, invite: Option<&Value>| {
            let mut body = json!({"email": email, "password": "correct horse battery"});
            if let Some(t) = invite {
                body["invite_token"] = t.clone();
            }
            let (status, session) = h.call_json("POST", "/auth/v1/signup", None, body).await;
            assert_eq!(status, 200, "{session}");
            session["access_token"].as_str().expect("token").to_string()
        };
        let alice = signup(self, "alice@example.com", None).await;
        let bob = signup(self, "bob@example.com", None).await;
        let (status, acme) = self
            .call_json(
                "POST",
                "/auth/v1/orgs",
                Some(&alice),
                json!({"name": "Acme", "slug": "acme"}),
            )
            .await;
        assert_eq!(status, 201, "{acme}");
        let (status, globex) = self
            .call_json(
                "POST",
                "/auth/v1/orgs",
                Some(&bob),
                json!({"name": "Globex", "slug": "globex"}),
            )
            .await;
        assert_eq!(status, 201, "{globex}");
        let (status, invite) = self
            .call_json(
                "POST",
                "/auth/v1/orgs/acme/invites",
                Some(&alice),
                json!({"email": "carol@example.com"}),
            )
            .await;
        assert_eq!(status, 201, "{invite}");
        let carol = signup(self, "carol@example.com", Some(&invite["token"])).await;
        self.users = vec![
            ("alice", alice, "acme".into()),
            ("bob", bob, "globex".into()),
            ("carol", carol, "acme".into()),
        ];
    }
}

/// Grammar cases over the library fixture.
fn reads() -> Vec<Case> {
    vec![
        get("columns in order", "/authors?select=id,name&order=id")
            .json(200, json!([{"id":1,"name":"Ursula"},{"id":2,"name":"Stanisław"},{"id":3,"name":"Octavia"}]))
            .range("0-2/*"),
        get("star is every column", "/readers?order=id")
            .json(200, json!([{"id":1,"name":"Ann"},{"id":2,"name":"Ben"}])),
        get("select spaces are ignored", "/readers?select=id, name&id=eq.2")
            .json(200, json!([{"id":2,"name":"Ben"}])),
        get("dates as ISO text", "/authors?select=born&id=eq.1").json(200, json!([{"born":"1929-10-21"}])),
        get("alias and cast", "/authors?select=key:id::text,name&id=eq.1")
            .json(200, json!([{"key":"1","name":"Ursula"}])),
        get("json paths", "/books?select=id,meta->>series,n:meta->n&id=in.(1,2,3)&order=id")
            .json(200, json!([{"id":1,"series":"Earthsea","n":1},{"id":2,"series":null,"n":null},{"id":3,"series":null,"n":3}])),
        get("json path filter", "/books?select=id&meta->>series=eq.Earthsea").json(200, ids(&[1])),
        get("arrays and json values", "/books?select=tags,meta,published,price&id=eq.1")
            .json(200, json!([{"tags":["fantasy","classic"],"meta":{"series":"Earthsea","n":1},"published":true,"price":9.99}])),
        get("eq", "/books?select=id&pages=eq.204").json(200, ids(&[3])),
        get("neq skips nulls", "/books?select=id&author_id=neq.1&order=id").json(200, ids(&[3, 4])),
        get("gt", "/books?select=id&pages=gt.200&order=id").json(200, ids(&[2, 3, 4])),
        get("gte", "/books?select=id&pages=gte.204&order=id").json(200, ids(&[2, 3, 4])),
        get("lt", "/books?select=id&pages=lt.204&order=id").json(200, ids(&[1])),
        get("lte", "/books?select=id&pages=lte.204&order=id").json(200, ids(&[1, 3])),
        get("gt on floats", "/books?select=id&rating=gt.4.4&order=id").json(200, ids(&[1, 2])),
        get("like is case-sensitive", "/books?select=id&title=like.the*").json(200, ids(&[])),
        get("like with *", "/books?select=id&title=like.The*").json(200, ids(&[2])),
        get("like with %", "/books?select=id&title=like.%25ol%25").json(200, ids(&[3])),
        get("ilike", "/books?select=id&title=ilike.*S*&order=id").json(200, ids(&[1, 2, 3])),
        get("match", "/books?select=id&title=match.^[KS]&order=id").json(200, ids(&[3, 4])),
        get("imatch", "/books?select=id&title=imatch.^k").json(200, ids(&[4])),
        get("in", "/books?select=id&id=in.(1,3,5)&order=id").json(200, ids(&[1, 3, 5])),
        get("in with quoted values", "/authors?select=id&name=in.(\"Ursula\",\"Octavia\")&order=id").json(200, ids(&[1, 3])),
        get("in empty list", "/books?select=id&id=in.()").json(200, ids(&[])),
        get("is null", "/books?select=id&author_id=is.null").json(200, ids(&[5])),
        get("not is null", "/books?select=id&author_id=not.is.null&order=id").json(200, ids(&[1, 2, 3, 4])),
        get("is true", "/books?select=id&published=is.true&order=id").json(200, ids(&[1, 2, 3])),
        get("is false", "/books?select=id&published=is.false&order=id").json(200, ids(&[4, 5])),
        get("eq on booleans", "/books?select=id&published=eq.false&order=id").json(200, ids(&[4, 5])),
        get("isdistinct", "/books?select=id&author_id=isdistinct.1&order=id").json(200, ids(&[3, 4, 5])),
        get("not gt leaves nulls out", "/books?select=id&pages=not.gt.200").json(200, ids(&[1])),
        get("cs on arrays", "/books?select=id&tags=cs.{classic}&order=id").json(200, ids(&[1, 2])),
        get("cd on arrays", "/books?select=id&tags=cd.{scifi,classic}&order=id").json(200, ids(&[2, 3, 4])),
        get("ov on arrays", "/books?select=id&tags=ov.{fantasy,scifi}&order=id").json(200, ids(&[1, 2, 3])),
        get("cs on jsonb", "/books?select=id&meta=cs.{\"n\":3}").json(200, ids(&[3])),
        get("fts", "/books?select=id&title=fts.wizard").json(200, ids(&[1])),
        get("fts with and", "/books?select=id&title=fts.wizard %26 earthsea").json(200, ids(&[1])),
        get("fts with a configuration", "/books?select=id&title=fts(simple).Solaris").json(200, ids(&[3])),
        get("plfts", "/books?select=id&title=plfts.earthsea wizard").json(200, ids(&[1])),
        get("phfts", "/books?select=id&title=phfts.wizard of earthsea").json(200, ids(&[1])),
        get("wfts", "/books?select=id&title=wfts.wizard -dragon").json(200, ids(&[1])),
        get("not fts", "/books?select=id&title=not.fts.wizard&order=id").json(200, ids(&[2, 3, 4, 5])),
        get("like(any)", "/books?select=id&title=like(any).{Sol*,Kin*}&order=id").json(200, ids(&[3, 4])),
        get("eq(any)", "/books?select=id&id=eq(any).{1,5}&order=id").json(200, ids(&[1, 5])),
        get("gt(all)", "/books?select=id&id=gt(all).{2,3}&order=id").json(200, ids(&[4, 5])),
        get("or", "/books?select=id&or=(pages.lt.190,pages.gt.300)&order=id").json(200, ids(&[1, 2])),
        get("nested and in or", "/books?select=id&or=(id.eq.1,and(published.is.false,pages.not.is.null))&order=id")
            .json(200, ids(&[1, 4])),
        get("not.or", "/books?select=id&not.or=(id.eq.1,id.eq.2)&order=id").json(200, ids(&[3, 4, 5])),
        get("and", "/books?select=id&and=(pages.gt.100,pages.lt.250)&order=id").json(200, ids(&[1, 3])),
        get("or with quoted value", "/authors?select=id&or=(name.eq.\"Octavia\",name.eq.\"x,y\")").json(200, ids(&[3])),
        get("or and filters combine", "/books?select=id&or=(id.eq.1,id.eq.3)&pages=gt.190").json(200, ids(&[3])),
        get("order desc nullslast", "/books?select=id&order=rating.desc.nullslast,id").json(200, ids(&[2, 1, 3, 4, 5])),
        get("order desc puts nulls first", "/books?select=id&order=rating.desc,id").json(200, ids(&[4, 5, 2, 1, 3])),
        get("order asc puts nulls last", "/books?select=id&order=pages.asc,id").json(200, ids(&[1, 3, 4, 2, 5])),
        get("order nullsfirst", "/books?select=id&order=pages.nullsfirst,id").json(200, ids(&[5, 1, 3, 4, 2])),
        get("limit and offset", "/books?select=id&order=id&limit=2&offset=1").json(200, ids(&[2, 3])).range("1-2/*"),
        get("Range header", "/books?select=id&order=id").header("range", "1-2").json(200, ids(&[2, 3])).range("1-2/*"),
        get("count exact with a range", "/books?select=id&order=id")
            .header("range", "0-1")
            .header("prefer", "count=exact")
            .json(206, ids(&[1, 2]))
            .range("0-1/5"),
        get("count exact, everything", "/books?select=id&order=id")
            .header("prefer", "count=exact")
            .json(200, ids(&[1, 2, 3, 4, 5]))
            .range("0-4/5"),
        get("count of filtered rows", "/books?select=id&published=is.true&limit=1&order=id")
            .header("prefer", "count=exact")
            .json(206, ids(&[1]))
            .range("0-0/3"),
        get("empty result range", "/books?select=id&id=eq.99").json(200, json!([])).range("*/*"),
        get("offset past the end", "/books?offset=10").header("prefer", "count=exact").error(416, "PGRST103"),
        case("HEAD has no body", "HEAD", "/books?order=id").header("prefer", "count=exact").empty(200).range("0-4/5"),
        get("single object", "/authors?select=name&id=eq.1")
            .header("accept", "application/vnd.pgrst.object+json")
            .json(200, json!({"name":"Ursula"})),
        get("single object refuses many", "/authors?select=name")
            .header("accept", "application/vnd.pgrst.object+json")
            .error(406, "PGRST116"),
        get("single object refuses none", "/authors?id=eq.99")
            .header("accept", "application/vnd.pgrst.object+json")
            .error(406, "PGRST116"),
        get("csv", "/authors?select=id,name,born&order=id")
            .header("accept", "text/csv")
            .text(200, "id,name,born\n1,Ursula,1929-10-21\n2,Stanisław,1921-09-12\n3,Octavia,\n"),
        get("unknown media type", "/authors").header("accept", "application/xml").error(406, "PGRST107"),
        // Embedding.
        get("many-to-one", "/books?select=title,author:authors(name)&id=in.(1,5)&order=id")
            .json(200, json!([{"title":"A Wizard of Earthsea","author":{"name":"Ursula"}},{"title":"Untitled","author":null}])),
        get("many-to-one by fk column hint", "/books?select=id,authors!author_id(name)&id=eq.3")
            .json(200, json!([{"id":3,"authors":{"name":"Stanisław"}}])),
        get("one-to-many", "/authors?select=name,books(id)&order=id&books.order=id")
            .json(200, json!([{"name":"Ursula","books":[{"id":1},{"id":2}]},{"name":"Stanisław","books":[{"id":3}]},{"name":"Octavia","books":[{"id":4}]}])),
        get("one-to-many filtered", "/authors?select=name,books(title)&id=eq.1&books.pages=gt.200")
            .json(200, json!([{"name":"Ursula","books":[{"title":"The Dispossessed"}]}])),
        get("one-to-many limited and ordered", "/authors?select=name,books(id)&id=eq.1&books.order=id.desc&books.limit=1")
            .json(200, json!([{"name":"Ursula","books":[{"id":2}]}])),
        get("one-to-many or filter", "/authors?select=id,books(id)&id=eq.1&books.or=(id.eq.2,pages.lt.100)")
            .json(200, json!([{"id":1,"books":[{"id":2}]}])),
        get("empty select in embed", "/authors?select=id,books()&id=eq.3").json(200, json!([{"id":3,"books":[{}]}])),
        get("inner embed filters parents", "/authors?select=name,books!inner(id)&books.published=is.false&order=id")
            .json(200, json!([{"name":"Octavia","books":[{"id":4}]}])),
        get("embed not null filter", "/authors?select=name,books(id)&books.pages=gt.300&books=not.is.null")
            .json(200, json!([{"name":"Ursula","books":[{"id":2}]}])),
        get("embed is null filter", "/authors?select=name,books(id)&books.pages=gt.300&books=is.null&order=id")
            .json(200, json!([{"name":"Stanisław","books":[]},{"name":"Octavia","books":[]}])),
        get("many-to-many", "/readers?select=name,books(id)&order=id&books.order=id")
            .json(200, json!([{"name":"Ann","books":[{"id":1},{"id":3}]},{"name":"Ben","books":[{"id":1}]}])),
        get("many-to-many reversed", "/books?select=id,readers(name)&id=eq.1&readers.order=name")
            .json(200, json!([{"id":1,"readers":[{"name":"Ann"},{"name":"Ben"}]}])),
        get("nested embeds", "/reads?select=reader:readers(name),book:books(title,author:authors(name))&reader_id=eq.2")
            .json(200, json!([{"reader":{"name":"Ben"},"book":{"title":"A Wizard of Earthsea","author":{"name":"Ursula"}}}])),
        get("star with embed", "/readers?select=*,reads(book_id)&id=eq.2")
            .json(200, json!([{"id":2,"name":"Ben","reads":[{"book_id":1}]}])),
        get("order by a to-one embed", "/books?select=id,authors(name)&author_id=not.is.null&order=authors(name),id")
            .json(200, json!([{"id":4,"authors":{"name":"Octavia"}},{"id":3,"authors":{"name":"Stanisław"}},{"id":1,"authors":{"name":"Ursula"}},{"id":2,"authors":{"name":"Ursula"}}])),
        get("self reference is ambiguous", "/employees?select=name,employees(name)").error(300, "PGRST201"),
        get("self reference up by column", "/employees?select=name,manager:employees!manager_id(name)&id=eq.3")
            .json(200, json!([{"name":"Low","manager":{"name":"Mid"}}])),
        get("self reference down by constraint", "/employees?select=name,reports:employees!employees_manager_id_fkey(name)&id=eq.1")
            .json(200, json!([{"name":"Boss","reports":[{"name":"Mid"}]}])),
        // Errors.
        get("unknown table", "/nope").error(404, "PGRST205"),
        get("unknown column", "/books?select=titel").error(400, "42703"),
        get("unknown filter column", "/books?nope=eq.1").error(400, "42703"),
        get("unknown order column", "/books?order=nope").error(400, "42703"),
        get("unknown operator", "/books?id=equals.1").error(400, "PGRST100"),
        get("bad is value", "/books?id=is.maybe").error(400, "PGRST100"),
        get("bad select", "/books?select=id,,title").error(400, "PGRST100"),
        get("unclosed embed", "/books?select=id,authors(name").error(400, "PGRST100"),
        get("bad limit", "/books?limit=-1").error(400, "PGRST100"),
        get("unclosed or", "/books?or=(id.eq.1").error(400, "PGRST100"),
        get("no relationship", "/authors?select=*,readers(*)").error(400, "PGRST200"),
        get("filter on a resource not embedded", "/authors?books.id=eq.1").error(400, "PGRST108"),
        get("value of the wrong type", "/books?id=eq.abc").error(400, "22P02"),
        get("unknown cast", "/books?select=id::money").error(400, "PGRST100"),
    ]
}

fn writes() -> Vec<Case> {
    vec![
        case("insert one, minimal", "POST", "/notes")
            .body(json!({"id": 1, "body": "first"}))
            .empty(201),
        case("insert returns the row", "POST", "/notes")
            .header("prefer", "return=representation")
            .body(json!({"id": 2, "body": "second", "kind": "todo"}))
            .json(201, json!([{"id":2,"body":"second","kind":"todo"}])),
        case("insert many, select shapes the answer", "POST", "/notes?select=id")
            .header("prefer", "return=representation")
            .body(json!([{"id": 3, "body": "a"}, {"id": 4, "body": "b"}]))
            .json(201, json!([{"id":3},{"id":4}])),
        case("missing keys take defaults with missing=default", "POST", "/notes")
            .header("prefer", "return=representation,missing=default")
            .body(json!([{"id": 5, "body": "x", "kind": "todo"}, {"id": 6}]))
            .json(201, json!([{"id":5,"body":"x","kind":"todo"},{"id":6,"body":"empty","kind":"plain"}])),
        case("missing keys are null without it", "POST", "/notes")
            .body(json!([{"id": 7, "body": "x", "kind": "todo"}, {"id": 8}]))
            .error(400, "23502"),
        case("absent columns take defaults", "POST", "/notes")
            .header("prefer", "return=representation")
            .body(json!({"id": 9}))
            .json(201, json!([{"id":9,"body":"empty","kind":"plain"}])),
        case("columns= limits what is written", "POST", "/notes?columns=id,body")
            .header("prefer", "return=representation")
            .body(json!({"id": 10, "body": "kept", "kind": "ignored"}))
            .json(201, json!([{"id":10,"body":"kept","kind":"plain"}])),
        case("an empty batch writes nothing", "POST", "/notes")
            .header("prefer", "return=representation")
            .body(json!([]))
            .json(201, json!([])),
        case("an empty batch into no table", "POST", "/nothing")
            .body(json!([]))
            .error(404, "PGRST205"),
        case("duplicate key", "POST", "/notes").body(json!({"id": 1})).error(409, "23505"),
        case("foreign key violation", "POST", "/books").body(json!({"id": 50, "title": "x", "author_id": 99})).error(409, "23503"),
        case("not null violation", "POST", "/books").body(json!({"id": 51})).error(400, "23502"),
        case("unknown column in body", "POST", "/notes").body(json!({"id": 11, "colour": "red"})).error(400, "42703"),
        case("invalid json", "POST", "/notes").body(json!("just a string")).error(400, "PGRST102"),
        case("a failed batch writes nothing", "POST", "/notes")
            .body(json!([{"id": 12}, {"id": 1}]))
            .error(409, "23505"),
        get("…nothing", "/notes?id=eq.12").json(200, json!([])),
        case("upsert merges", "POST", "/notes")
            .header("prefer", "return=representation,resolution=merge-duplicates")
            .body(json!([{"id": 1, "body": "merged"}, {"id": 13, "body": "new"}]))
            .json(201, json!([{"id":1,"body":"merged","kind":"plain"},{"id":13,"body":"new","kind":"plain"}])),
        case("upsert ignores", "POST", "/notes")
            .header("prefer", "return=representation,resolution=ignore-duplicates")
            .body(json!([{"id": 1, "body": "ignored"}, {"id": 14, "body": "new"}]))
            .json(201, json!([{"id":14,"body":"new","kind":"plain"}])),
        case("upsert on another unique column", "POST", "/books?on_conflict=isbn&select=id,title")
            .header("prefer", "return=representation,resolution=merge-duplicates")
            .body(json!({"id": 3, "isbn": "333", "title": "Solaris (2nd ed.)"}))
            .json(201, json!([{"id":3,"title":"Solaris (2nd ed.)"}])),
        case("headers-only gives Location", "POST", "/notes")
            .header("prefer", "return=headers-only")
            .body(json!({"id": 15}))
            .empty(201),
        case("put inserts a whole row", "PUT", "/notes?id=eq.20")
            .header("prefer", "return=representation")
            .body(json!({"id": 20, "body": "put", "kind": "todo"}))
            .json(200, json!([{"id":20,"body":"put","kind":"todo"}])),
        case("put replaces it", "PUT", "/notes?id=eq.20")
            .body(json!({"id": 20, "body": "replaced", "kind": "done"}))
            .empty(204),
        get("…replaced", "/notes?id=eq.20&select=body,kind").json(200, json!([{"body":"replaced","kind":"done"}])),
        case("put with another key in the body", "PUT", "/notes?id=eq.20")
            .body(json!({"id": 21, "body": "x"}))
            .error(400, "PGRST115"),
        case("put without the key in the URL", "PUT", "/notes?body=eq.x")
            .body(json!({"id": 20, "body": "x"}))
            .error(400, "PGRST105"),
        case("put with more than the key", "PUT", "/notes?id=eq.20&kind=eq.done")
            .body(json!({"id": 20, "body": "x"}))
            .error(400, "PGRST105"),
        case("put of an array", "PUT", "/notes?id=eq.20")
            .body(json!([{"id": 20}]))
            .error(400, "PGRST102"),
        case("delete what put made", "DELETE", "/notes?id=eq.20").empty(204),
        case("patch returns rows", "PATCH", "/notes?id=in.(3,4)&order=id")
            .header("prefer", "return=representation")
            .body(json!({"kind": "done"}))
            .json(200, json!([{"id":3,"body":"a","kind":"done"},{"id":4,"body":"b","kind":"done"}])),
        case("patch minimal", "PATCH", "/notes?id=eq.3").body(json!({"body": "aa"})).empty(204).range("0-0/*"),
        case("patch without a filter is refused", "PATCH", "/notes").body(json!({"kind": "x"})).error(400, "21000"),
        case("patch with an unknown column", "PATCH", "/notes?id=eq.3").body(json!({"nope": 1})).error(400, "42703"),
        case("patch matching nothing", "PATCH", "/notes?id=eq.99")
            .header("prefer", "return=representation")
            .body(json!({"kind": "x"}))
            .json(200, json!([])),
        case("singular patch of many rolls back", "PATCH", "/notes?id=in.(3,4)")
            .header("accept", "application/vnd.pgrst.object+json")
            .body(json!({"kind": "rolled back"}))
            .error(406, "PGRST116"),
        get("…unchanged", "/notes?select=kind&id=in.(3,4)").json(200, json!([{"kind":"done"},{"kind":"done"}])),
        case("delete returns rows", "DELETE", "/notes?id=eq.4")
            .header("prefer", "return=representation")
            .json(200, json!([{"id":4,"body":"b","kind":"done"}])),
        case("delete minimal", "DELETE", "/notes?id=eq.3").empty(204),
        case("delete without a filter is refused", "DELETE", "/notes").error(400, "21000"),
        get("what remains", "/notes?select=id&order=id").json(200, ids(&[1, 2, 5, 6, 9, 10, 13, 14, 15])),
        case("delete blocked by a foreign key", "DELETE", "/authors?id=eq.1").error(409, "23503"),
        case("write then embed in the answer", "POST", "/books?select=id,author:authors(name)")
            .header("prefer", "return=representation")
            .body(json!({"id": 6, "title": "Lathe", "author_id": 1}))
            .json(201, json!([{"id":6,"author":{"name":"Ursula"}}])),
        // rpc.
        case("rpc scalar", "POST", "/rpc/add_them").body(json!({"a": 1, "b": 2})).json(200, json!(3)),
        get("rpc scalar by GET", "/rpc/add_them?a=40&b=2").json(200, json!(42)),
        get("rpc set filtered like a table", "/rpc/books_by?author=1&select=id&order=id").json(200, ids(&[1, 2, 6])),
        case("rpc set by POST", "POST", "/rpc/books_by?select=title&id=eq.3")
            .body(json!({"author": 2}))
            .json(200, json!([{"title":"Solaris (2nd ed.)"}])),
        case("rpc one row is an object", "POST", "/rpc/book_by_id?select=id,title")
            .body(json!({"book_id": 2}))
            .json(200, json!({"id":2,"title":"The Dispossessed"})),
        case("rpc volatile by POST", "POST", "/rpc/rename_author").body(json!({"author": 3, "new_name": "O. Butler"})).json(200, json!(3)),
        get("rpc volatile by GET is refused", "/rpc/rename_author?author=3&new_name=x").error(405, "25006"),
        case("rpc unknown function", "POST", "/rpc/nope").body(json!({})).error(404, "PGRST202"),
        case("rpc unknown argument", "POST", "/rpc/add_them").body(json!({"a": 1, "c": 2})).error(404, "PGRST202"),
        case("rpc missing argument", "POST", "/rpc/add_them").body(json!({"a": 1})).error(404, "PGRST202"),
        get("rpc changed the row", "/authors?select=name&id=eq.3").json(200, json!([{"name":"O. Butler"}])),
    ]
}

const ACME_LIST: &str = "00000000-0000-4000-8000-0000000000a1";
const GLOBEX_LIST: &str = "00000000-0000-4000-8000-0000000000b1";

/// Row-level security between two organizations, with the examples/todo policies.
fn tenancy() -> Vec<Case> {
    let alice = Who::User("alice");
    let bob = Who::User("bob");
    let carol = Who::User("carol");
    vec![
        case("alice adds to acme", "POST", "/todos?select=title,done")
            .who(alice)
            .header("prefer", "return=representation")
            .body(json!({"title": "ship it"}))
            .json(201, json!([{"title":"ship it","done":false}])),
        case("carol adds to acme", "POST", "/todos?select=title")
            .who(carol)
            .header("prefer", "return=representation")
            .body(json!({"title": "carol's"}))
            .json(201, json!([{"title":"carol's"}])),
        case("bob adds to globex", "POST", "/todos")
            .who(bob)
            .body(json!({"title": "globex plan"}))
            .empty(201),
        get("alice sees acme's todos", "/todos?select=title&order=title")
            .who(alice)
            .json(200, json!([{"title":"carol's"},{"title":"ship it"}])),
        get("carol sees acme's todos", "/todos?select=title&order=title")
            .who(carol)
            .json(200, json!([{"title":"carol's"},{"title":"ship it"}])),
        get("bob sees only globex", "/todos?select=title")
            .who(bob)
            .json(200, json!([{"title":"globex plan"}])),
        get("the public key sees nothing", "/todos?select=title").json(200, json!([])),
        get("counts respect policies", "/todos?select=title")
            .who(bob)
            .header("prefer", "count=exact")
            .json(200, json!([{"title":"globex plan"}]))
            .range("0-0/1"),
        get(
            "filters cannot reach past policies",
            "/todos?select=title&title=eq.ship it",
        )
        .who(bob)
        .json(200, json!([])),
        case("bob cannot write into acme", "POST", "/todos")
            .who(bob)
            .body(json!({"title": "sneaky", "org_id": "00000000-0000-0000-0000-000000000000"}))
            .error(403, "42501"),
        case("anon cannot write", "POST", "/todos")
            .body(json!({"title": "anon"}))
            .error(401, "42501"),
        case(
            "bob cannot update acme's rows",
            "PATCH",
            "/todos?title=eq.ship it",
        )
        .who(bob)
        .header("prefer", "return=representation")
        .body(json!({"title": "hacked"}))
        .json(200, json!([])),
        case(
            "carol cannot edit alice's todo",
            "PATCH",
            "/todos?title=eq.ship it",
        )
        .who(carol)
        .header("prefer", "return=representation")
        .body(json!({"done": true}))
        .json(200, json!([])),
        case(
            "alice edits her own",
            "PATCH",
            "/todos?title=eq.ship it&select=title,done",
        )
        .who(alice)
        .header("prefer", "return=representation")
        .body(json!({"done": true}))
        .json(200, json!([{"title":"ship it","done":true}])),
        case(
            "carol cannot delete alice's todo",
            "DELETE",
            "/todos?title=eq.ship it",
        )
        .who(carol)
        .header("prefer", "return=representation")
        .json(200, json!([])),
        case(
            "bob cannot delete acme's rows",
            "DELETE",
            "/todos?title=eq.ship it",
        )
        .who(bob)
        .header("prefer", "return=representation")
        .json(200, json!([])),
        case(
            "alice, an owner, deletes carol's",
            "DELETE",
            "/todos?title=eq.carol's&select=title",
        )
        .who(alice)
        .header("prefer", "return=representation")
        .json(200, json!([{"title":"carol's"}])),
        get(
            "the service key sees every org",
            "/todos?select=title&order=title",
        )
        .who(Who::Service)
        .json(200, json!([{"title":"globex plan"},{"title":"ship it"}])),
        // Lists: owners manage them, members read them, and a todo joins only its org's list.
        case("a member cannot create a list", "POST", "/lists")
            .who(carol)
            .body(json!({"name": "carol's list"}))
            .error(403, "42501"),
        case("an owner creates one", "POST", "/lists?select=name")
            .who(alice)
            .header("prefer", "return=representation")
            .body(json!({"id": ACME_LIST, "name": "Launch"}))
            .json(201, json!([{"name":"Launch"}])),
        case("bob creates globex's", "POST", "/lists")
            .who(bob)
            .body(json!({"id": GLOBEX_LIST, "name": "Globex plans"}))
            .empty(201),
        case(
            "a member files a todo in the org's list",
            "POST",
            "/todos?select=title",
        )
        .who(carol)
        .header("prefer", "return=representation")
        .body(json!({"title": "write the launch post", "list_id": ACME_LIST}))
        .json(201, json!([{"title":"write the launch post"}])),
        case("a todo cannot join another org's list", "POST", "/todos")
            .who(bob)
            .body(json!({"title": "sneak into acme's list", "list_id": ACME_LIST}))
            .error(403, "42501"),
        get(
            "embeds respect both tables' policies",
            "/lists?select=name,todos(title)",
        )
        .who(carol)
        .json(
            200,
            json!([{"name":"Launch","todos":[{"title":"write the launch post"}]}]),
        ),
        get("other orgs' lists stay hidden", "/lists?select=name")
            .who(bob)
            .json(200, json!([{"name":"Globex plans"}])),
        get(
            "bob's todos join no acme list",
            "/todos?select=title,lists(name)&list_id=not.is.null",
        )
        .who(bob)
        .json(200, json!([])),
        case(
            "a member cannot rename the list",
            "PATCH",
            "/lists?name=eq.Launch",
        )
        .who(carol)
        .header("prefer", "return=representation")
        .body(json!({"name": "Mine"}))
        .json(200, json!([])),
        case("notes on both orgs' lists", "POST", "/list_notes")
            .who(Who::Service)
            .body(json!([{"id": 1, "list_id": ACME_LIST, "body": "acme note"},
                         {"id": 2, "list_id": GLOBEX_LIST, "body": "globex note"}]))
            .empty(201),
        get(
            "a policy's subquery meets the other table's policy",
            "/list_notes?select=body",
        )
        .who(bob)
        .json(200, json!([{"body":"globex note"}])),
        get("…for every org", "/list_notes?select=body")
            .who(carol)
            .json(200, json!([{"body":"acme note"}])),
        get("…and anonymous callers see none", "/list_notes?select=body").json(200, json!([])),
        // An upsert may add what the insert policies allow, but overwrite only what the
        // update policies allow (here: nothing).
        case(
            "an upsert cannot overwrite past the update policies",
            "POST",
            "/list_notes",
        )
        .who(carol)
        .header("prefer", "resolution=merge-duplicates")
        .body(json!({"id": 1, "list_id": ACME_LIST, "body": "overwritten"}))
        .error(403, "42501"),
        case(
            "…ignoring duplicates is no overwrite",
            "POST",
            "/list_notes",
        )
        .who(carol)
        .header(
            "prefer",
            "return=representation,resolution=ignore-duplicates",
        )
        .body(json!({"id": 1, "list_id": ACME_LIST, "body": "overwritten"}))
        .json(201, json!([])),
        case("…and a new row goes in", "POST", "/list_notes?select=body")
            .who(carol)
            .header(
                "prefer",
                "return=representation,resolution=merge-duplicates",
            )
            .body(json!({"id": 3, "list_id": ACME_LIST, "body": "carol's note"}))
            .json(201, json!([{"body":"carol's note"}])),
        get(
            "…leaving the first note as it was",
            "/list_notes?select=body&order=id",
        )
        .who(carol)
        .json(200, json!([{"body":"acme note"},{"body":"carol's note"}])),
        case(
            "an owner cannot move a list to another org",
            "PATCH",
            "/lists?name=eq.Launch",
        )
        .who(alice)
        .body(json!({"org_id": "00000000-0000-0000-0000-000000000000"}))
        .error(403, "42501"),
    ]
}

#[tokio::test]
async fn postgres_conformance() {
    let Some(url) = fresh_postgres_database("data_conformance").await else {
        return;
    };
    conformance(&url).await;
}

#[tokio::test]
async fn sqlite_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance(&format!("sqlite://{}", dir.path().join("o1.db").display())).await;
}

/// The whole suite on one adapter.
async fn conformance(url: &str) {
    let mut h = Harness::start(url).await;
    h.migrate(&[
        ("0001_library.sql", LIBRARY),
        ("0002_todos.sql", TODO),
        ("0003_lists.sql", TODO_LISTS),
        ("0004_list_notes.sql", LIST_NOTES),
    ])
    .await;
    h.seed_library().await;
    h.tenancy().await;
    h.postgrest_js().await;

    let mut cases = reads();
    cases.extend(writes());
    cases.extend(tenancy());
    let failures = h.run(&cases).await;
    eprintln!("{} conformance cases run on {url}", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed on {url}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // headers-only answered with where the row lives.
    let (status, headers, _) = h
        .send(
            Who::Anon,
            "POST",
            "/data/v1/notes",
            &[("prefer", "return=headers-only".into())],
            Some(&json!({"id": 100})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some("/notes?id=eq.100")
    );

    // The OpenAPI document lists the tables with their columns.
    let (status, _, text) = h.send(Who::Anon, "GET", "/data/v1", &[], None).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).expect("openapi");
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/books"]["get"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["books"]["properties"]["pages"]["type"],
        "integer"
    );
    assert!(doc["paths"]["/rpc/add_them"]["post"].is_object());
    assert!(doc["paths"]["/notes"]["put"].is_object());
    // With the trailing slash too (a redirect the client follows).
    let (status, _, slash) = h.send(Who::Anon, "GET", "/data/v1/", &[], None).await;
    assert_eq!((status, slash), (200, text));
}

/// Request connections keep the caller's session between statements (one round trip per
/// request); a developer function that resets the role must not leave a connection acting as
/// the owner for the requests after it.
#[tokio::test]
async fn postgres_session_reset_by_a_function_fails_closed() {
    let Some(url) = fresh_postgres_database("data_session_guard").await else {
        return;
    };
    let h = Harness::start(&url).await;
    h.migrate(&[(
        "0001_secrets.sql",
        "create table secrets (id integer primary key, v text not null);
         alter table secrets enable row level security;
         create function escalate() returns integer language sql volatile as $$ reset role; select 1 $$;",
    )])
    .await;
    h.service(
        "POST",
        "/data/v1/secrets",
        json!([{"id": 1, "v": "s3cret"}]),
    )
    .await;
    let (status, _, body) = h
        .send(Who::Anon, "GET", "/data/v1/secrets", &[], None)
        .await;
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, _, body) = h
        .send(
            Who::Anon,
            "POST",
            "/data/v1/rpc/escalate",
            &[],
            Some(&json!({})),
        )
        .await;
    assert!(status == 500 || status == 200, "{status} {body}");
    // Whatever connection the reset touched, no later request reads as the owner.
    for _ in 0..40 {
        let (status, _, body) = h
            .send(Who::Anon, "GET", "/data/v1/secrets", &[], None)
            .await;
        assert!(!body.contains("s3cret"), "{status} {body}");
    }
    let (status, _, body) = h
        .send(Who::Anon, "GET", "/data/v1/secrets", &[], None)
        .await;
    assert_eq!((status, body.as_str()), (200, "[]"));
}

/// `[data] connections` bounds the Postgres backends Data requests use: six read-only rpc
/// calls that each hold a connection for 0.3 s run on six backends by default and on two
/// when the setting says two (the others wait their turn, none fails).
#[tokio::test]
async fn postgres_request_connections_follow_the_setting() {
    for (label, setting, expected) in [
        ("data_conns_two", Some(2), 2),
        ("data_conns_default", None, 6),
    ] {
        let Some(url) = fresh_postgres_database(label).await else {
            return;
        };
        let h = Harness::start_with(&url, |config| config.data.connections = setting).await;
        h.migrate(&[(
            "0001_nap.sql",
            "create function nap() returns integer language sql stable as $$ select 1 from pg_sleep(0.3) $$;",
        )])
        .await;
        let calls = (0..6).map(|_| h.send(Who::Anon, "GET", "/data/v1/rpc/nap", &[], None));
        for (status, _, body) in futures_util::future::join_all(calls).await {
            assert_eq!((status, body.as_str()), (200, "1"), "{label}");
        }
        let db = sqlx::PgPool::connect(&url).await.expect("connect");
        let backends: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = current_database() and application_name = $1",
        )
        .bind(reactor_db::requests::APPLICATION_NAME)
        .fetch_one(&db)
        .await
        .expect("count");
        assert_eq!(backends, expected, "{label}: request connections");
    }
}

/// Writes of one caller sent at once share one request connection and its `Sync`s: the
/// ones that fail (a duplicate key, a check) get their own error and status, every other
/// one commits exactly once; and an rpc (whose effects might reach outside the database)
/// has a `Sync` of its own, so a failure queued behind it never makes it run twice.
#[tokio::test]
async fn postgres_concurrent_writes_settle_one_by_one() {
    let Some(url) = fresh_postgres_database("data_batches").await else {
        return;
    };
    let h = Harness::start_with(&url, |config| config.data.connections = Some(1)).await;
    h.migrate(&[(
        "0001_tags.sql",
        "create table tags (name text primary key check (name <> 'bad'));
         create sequence calls;
         create function bump() returns bigint language sql as $$ select nextval('calls') $$;
         create function nap() returns integer language sql as $$ select 1 from pg_sleep(1) $$;",
    )])
    .await;
    // `nap` holds the one connection while `bump` and then a failing insert queue behind it.
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(150));
    let bad = json!({"name": "bad"});
    let (napped, bumped, refused) = tokio::join!(
        h.send(Who::Service, "POST", "/data/v1/rpc/nap", &[], None),
        async {
            pause().await;
            h.send(Who::Service, "POST", "/data/v1/rpc/bump", &[], None)
                .await
        },
        async {
            pause().await;
            pause().await;
            h.send(Who::Service, "POST", "/data/v1/tags", &[], Some(&bad))
                .await
        },
    );
    assert_eq!((napped.0, napped.2.as_str()), (200, "1"));
    assert_eq!((bumped.0, bumped.2.as_str()), (200, "1"), "bump ran once");
    assert_eq!(refused.0, 400, "{}", refused.2);

    h.service("POST", "/data/v1/tags", json!({"name": "taken"}))
        .await;
    let mut names: Vec<String> = (0..24).map(|i| format!("t{i}")).collect();
    names.extend(["taken", "bad", "t3"].map(String::from));
    let bodies: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
    let inserts = bodies
        .iter()
        .map(|body| h.send(Who::Service, "POST", "/data/v1/tags", &[], Some(body)));
    let inserts = futures_util::future::join_all(inserts).await;
    let statuses: Vec<u16> = inserts.iter().map(|(status, _, _)| *status).collect();
    let created = statuses.iter().filter(|s| **s == 201).count();
    // t0..t23 and one of the two t3; the other t3 and "taken" conflict, "bad" fails its check.
    assert_eq!(created, 24, "{statuses:?}");
    assert_eq!(statuses[24], 409, "{}", inserts[24].2);
    assert!(inserts[24].2.contains("23505"), "{}", inserts[24].2);
    assert_eq!(statuses[25], 400, "{}", inserts[25].2);
    assert!(inserts[25].2.contains("23514"), "{}", inserts[25].2);
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        2,
        "{statuses:?}"
    );
    let db = sqlx::PgPool::connect(&url).await.expect("connect");
    let rows: i64 = sqlx::query_scalar("select count(*) from tags")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(rows, 25);
}

/// The range operators, on Postgres only: range types do not translate to SQLite, and O1
/// refuses the migration that declares one (with its place and a hint) rather than storing
/// something else.
#[tokio::test]
async fn postgres_range_operators() {
    const SLOTS: &str = "create table slots (id integer primary key, during int4range not null);";
    let Some(url) = fresh_postgres_database("data_ranges").await else {
        return;
    };
    let h = Harness::start(&url).await;
    h.migrate(&[("0001_slots.sql", SLOTS)]).await;
    h.service(
        "POST",
        "/data/v1/slots",
        json!([{"id": 1, "during": "[1,5)"}, {"id": 2, "during": "[5,10)"}, {"id": 3, "during": "[20,30)"}]),
    )
    .await;
    let cases = vec![
        get("sl", "/slots?select=id&during=sl.[10,20)&order=id").json(200, ids(&[1, 2])),
        get("sr", "/slots?select=id&during=sr.[10,20)").json(200, ids(&[3])),
        get("nxr", "/slots?select=id&during=nxr.[0,6)&order=id").json(200, ids(&[1])),
        get("nxl", "/slots?select=id&during=nxl.[5,6)&order=id").json(200, ids(&[2, 3])),
        get("adj", "/slots?select=id&during=adj.[10,20)&order=id").json(200, ids(&[2, 3])),
        get("ov on ranges", "/slots?select=id&during=ov.[4,6)&order=id").json(200, ids(&[1, 2])),
        get("cs with an element", "/slots?select=id&during=cs.[7,8)").json(200, ids(&[2])),
        get("not a range", "/slots?select=id&during=ov.nope").error(400, "22P02"),
    ];
    let failures = h.run(&cases).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let dir = tempfile::tempdir().expect("tempdir");
    let o1 = Harness::start(&format!("sqlite://{}", dir.path().join("o1.db").display())).await;
    let files = json!({"files": [{"name": "0001_slots.sql", "sql": SLOTS}]});
    let (status, _, body) = o1
        .send(
            Who::Service,
            "POST",
            "/data/v1/admin/migrations",
            &[],
            Some(&files),
        )
        .await;
    let err: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("unsupported_on_sqlite")),
        "{body}"
    );
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("0001_slots.sql:1:1") && m.contains("int4range")),
        "{body}"
    );
    assert!(
        err["hint"].as_str().is_some_and(|h| h.contains("O2")),
        "{body}"
    );
}
