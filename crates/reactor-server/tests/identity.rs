//! `/auth/v1` over real HTTP, one suite run against SQLite and Postgres alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reactor_core::{Capability, KeyTier, keys};
use reactor_db::Db;
use reactor_db::testing::fresh_postgres_database;
use reactor_identity::jwt::{AccessClaims, Keyring, StoredKey};
use reactor_identity::{Identity, IdentityConfig, SignupOutcome};
use reactor_server::{AppState, Server};
use serde_json::{Value, json};

struct Harness {
    base: String,
    public_key: String,
    service_key: String,
    clock: Arc<AtomicI64>,
    http: reqwest::Client,
}

impl Harness {
    async fn start(url: &str) -> Harness {
        Harness::start_with(
            url,
            IdentityConfig {
                refresh_reuse_grace_secs: 0.5,
                login_attempts_per_email: 3,
                login_attempts_per_address: 8,
                login_window_secs: 300,
                dev_mailbox: true,
                custom_roles: vec!["billing".into()],
                ..IdentityConfig::default()
            },
        )
        .await
    }

    async fn start_with(url: &str, config: IdentityConfig) -> Harness {
        let db = Db::connect(url).await.expect("db");
        let clock = Arc::new(AtomicI64::new(1_900_000_000));
        let tick = Arc::clone(&clock);
        let identity = Identity::start(&db, config, Arc::new(move || tick.load(Ordering::SeqCst)))
            .await
            .expect("identity");
        let public = keys::generate(KeyTier::Public);
        db.insert_api_key(&public, "test").await.expect("key");
        let service = keys::generate(KeyTier::Service);
        db.insert_api_key(&service, "admin").await.expect("key");
        let state = AppState::new(db, vec![Capability::Identity], Some(identity));
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let base = format!("http://{}", server.local_addr().expect("addr"));
        tokio::spawn(server.run(state, std::future::pending()));
        Harness {
            base,
            public_key: public.secret,
            service_key: service.secret,
            clock,
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request with the public key and, when given, a user's access token.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.send(&self.public_key, method, path, token, body).await
    }

    /// Sends a request with the service key.
    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(&self.service_key, method, path, None, body).await
    }

    async fn send(
        &self,
        key: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("apikey", key);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn signup(&self, email: &str, password: &str) -> Value {
        let (status, body) = self
            .call(
                "POST",
                "/auth/v1/signup",
                None,
                Some(json!({"email": email, "password": password, "data": {"plan": "free"}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn login(&self, email: &str, password: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/auth/v1/token?grant_type=password",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    async fn refresh(&self, token: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/auth/v1/token?grant_type=refresh_token",
            None,
            Some(json!({"refresh_token": token})),
        )
        .await
    }

    fn advance(&self, secs: i64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }
}

fn token_of(session: &Value) -> &str {
    session["access_token"].as_str().expect("access_token")
}

fn refresh_of(session: &Value) -> &str {
    session["refresh_token"].as_str().expect("refresh_token")
}

async fn users_and_sessions(h: &Harness) {
    // Sign up: a session in GoTrue's shape.
    let s = h.signup("Ada@Example.com", "correct horse battery").await;
    assert_eq!(s["token_type"], "bearer");
    assert_eq!(s["expires_in"], 3600);
    assert_eq!(s["user"]["email"], "ada@example.com");
    assert_eq!(s["user"]["aud"], "authenticated");
    assert_eq!(s["user"]["user_metadata"]["plan"], "free");
    assert!(s["user"]["id"].as_str().is_some_and(|id| id.len() == 36));
    let claims = decode(token_of(&s));
    assert_eq!(claims["sub"], s["user"]["id"]);
    assert_eq!(claims["role"], "authenticated");
    assert_eq!(claims["aud"], "authenticated");
    assert_eq!(claims["email"], "ada@example.com");
    assert!(claims["session_id"].is_string());
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        3600
    );

    // Bad signups.
    for (body, status, code) in [
        (
            json!({"email": "not-an-email", "password": "correct horse"}),
            400,
            "validation_failed",
        ),
        (
            json!({"email": "bob@example.com", "password": "short"}),
            422,
            "weak_password",
        ),
        (
            json!({"email": "ADA@example.com", "password": "another password"}),
            422,
            "user_already_exists",
        ),
        (json!({"email": "bob@example.com"}), 400, "bad_request"),
    ] {
        let (got, err) = h.call("POST", "/auth/v1/signup", None, Some(body)).await;
        assert_eq!((got, err["code"].as_str()), (status, Some(code)), "{err}");
        assert!(err["hint"].is_string());
    }
    let (status, err) = h.call("POST", "/auth/v1/signup", None, None).await;
    assert_eq!((status, err["code"].as_str()), (400, Some("bad_json")));

    // Password grant; a wrong password and an unknown email look the same.
    let (status, s2) = h.login("ada@example.com", "correct horse battery").await;
    assert_eq!(status, 200, "{s2}");
    assert!(s2["user"]["last_sign_in_at"].is_string());
    let (wrong_status, wrong) = h.login("ada@example.com", "wrong horse battery").await;
    let (unknown_status, unknown) = h.login("nobody@example.com", "wrong horse battery").await;
    assert_eq!(wrong_status, 400);
    assert_eq!((wrong_status, &wrong), (unknown_status, &unknown));
    assert_eq!(wrong["code"], "invalid_credentials");
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/token?grant_type=magic",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // The user, with and without the token.
    let (status, user) = h
        .call("GET", "/auth/v1/user", Some(token_of(&s2)), None)
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["email"], "ada@example.com");
    let (status, err) = h.call("GET", "/auth/v1/user", None, None).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (401, Some("no_authorization"))
    );
    // A user token without the project key is refused before any route.
    let res = h
        .http
        .get(format!("{}/auth/v1/user", h.base))
        .bearer_auth(token_of(&s2))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.expect("json")["code"],
        "missing_api_key"
    );

    // /v1/info knows the caller is a signed-in user.
    let (_, info) = h.call("GET", "/v1/info", Some(token_of(&s2)), None).await;
    assert_eq!(info["caller"]["role"], "reactor_authenticated");

    // Update metadata (merged; null removes) and the password.
    let (status, user) = h
        .call(
            "PUT",
            "/auth/v1/user",
            Some(token_of(&s2)),
            Some(json!({"data": {"name": "Ada", "plan": null}})),
        )
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["user_metadata"], json!({"name": "Ada"}));
    let (status, err) = h
        .call(
            "PUT",
            "/auth/v1/user",
            Some(token_of(&s2)),
            Some(json!({"password": "aaaaaaaaaaaa"})),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (422, Some("weak_password")));
    let (status, _) = h
        .call(
            "PUT",
            "/auth/v1/user",
            Some(token_of(&s2)),
            Some(json!({"password": "a brand new secret"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        h.login("ada@example.com", "correct horse battery").await.0,
        400
    );
    assert_eq!(
        h.login("ada@example.com", "a brand new secret").await.0,
        200
    );
    // Changing the password signed out the other session (the signup one).
    let (status, err) = h.refresh(refresh_of(&s)).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("refresh_token_not_found"))
    );
    // The session that changed it lives on.
    assert_eq!(h.refresh(refresh_of(&s2)).await.0, 200);

    let (status, settings) = h.call("GET", "/auth/v1/settings", None, None).await;
    assert_eq!(
        (status, settings["external"]["email"].as_bool()),
        (200, Some(true))
    );
}

async fn refresh_rotation_and_reuse(h: &Harness) {
    let s = h.signup("carol@example.com", "carol's password").await;
    let first = refresh_of(&s).to_string();

    let (status, s2) = h.refresh(&first).await;
    assert_eq!(status, 200, "{s2}");
    assert_ne!(refresh_of(&s2), first, "rotated on use");
    assert_eq!(
        decode(token_of(&s2))["session_id"],
        decode(token_of(&s))["session_id"]
    );

    // A second tab using the same token at once gets a working token too.
    let (status, tab) = h.refresh(&first).await;
    assert_eq!(status, 200, "{tab}");

    // Reuse after the grace window: theft; the whole session is revoked.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let (status, err) = h.refresh(&first).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("refresh_token_already_used"))
    );
    let (status, _) = h.refresh(refresh_of(&s2)).await;
    assert_eq!(
        status, 400,
        "the rotated descendant is revoked with its family"
    );
    let (status, err) = h
        .call("GET", "/auth/v1/user", Some(token_of(&s2)), None)
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (403, Some("session_not_found"))
    );

    let (status, err) = h.refresh("no-such-token").await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("refresh_token_not_found"))
    );
}

async fn logout_scopes(h: &Harness) {
    h.signup("dan@example.com", "dan's password").await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(h.login("dan@example.com", "dan's password").await.1);
    }
    // local: this session only.
    let (status, _) = h
        .call(
            "POST",
            "/auth/v1/logout",
            Some(token_of(&sessions[0])),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(h.refresh(refresh_of(&sessions[0])).await.0, 400);
    assert_eq!(
        h.call("GET", "/auth/v1/user", Some(token_of(&sessions[0])), None)
            .await
            .0,
        403
    );
    assert_eq!(
        h.call("GET", "/auth/v1/user", Some(token_of(&sessions[1])), None)
            .await
            .0,
        200
    );
    // others: all but this one.
    let (status, _) = h
        .call(
            "POST",
            "/auth/v1/logout?scope=others",
            Some(token_of(&sessions[1])),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(h.refresh(refresh_of(&sessions[2])).await.0, 400);
    assert_eq!(
        h.call("GET", "/auth/v1/user", Some(token_of(&sessions[1])), None)
            .await
            .0,
        200
    );
    // global: everything.
    let fresh = h.login("dan@example.com", "dan's password").await.1;
    let (status, _) = h
        .call(
            "POST",
            "/auth/v1/logout?scope=global",
            Some(token_of(&sessions[1])),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(h.refresh(refresh_of(&fresh)).await.0, 400);
    assert_eq!(
        h.call("GET", "/auth/v1/user", Some(token_of(&sessions[1])), None)
            .await
            .0,
        403
    );
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/logout?scope=everyone",
            Some(token_of(&fresh)),
            None,
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (400, Some("bad_request")));
}

async fn hostile_tokens(h: &Harness) {
    let s = h.signup("eve@example.com", "eve's password").await;
    let token = token_of(&s).to_string();
    let parts: Vec<&str> = token.split('.').collect();

    let mut edited = decode(&token);
    edited["sub"] = json!("00000000-0000-0000-0000-000000000000");
    let forged = format!("{}.{}.{}", parts[0], encode(&edited), parts[2]);
    let kid = decode_header(&token)["kid"].clone();
    let none = format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        parts[1]
    );
    let hs = format!(
        "{}.{}.{}",
        encode(&json!({"alg": "HS256", "typ": "JWT", "kid": kid})),
        parts[1],
        parts[2]
    );
    let claims: AccessClaims = serde_json::from_value(decode(&token)).expect("claims");
    let foreign_key = StoredKey {
        kid: kid.as_str().expect("kid").to_string(),
        ..StoredKey::generate(0, None).expect("key")
    };
    let foreign = Keyring::new(&[foreign_key], 3600, None)
        .expect("ring")
        .sign(&claims)
        .expect("sign");

    for (what, bad) in [
        ("edited claims", forged),
        ("alg none", none),
        ("HS256", hs),
        ("another key", foreign),
        ("garbage", "a.b.c".into()),
    ] {
        let (status, err) = h.call("GET", "/auth/v1/user", Some(&bad), None).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (401, Some("bad_jwt")),
            "{what}: {err}"
        );
    }

    // Expiry, by the server's clock.
    assert_eq!(
        h.call("GET", "/auth/v1/user", Some(&token), None).await.0,
        200
    );
    h.advance(3601);
    let (status, err) = h.call("GET", "/auth/v1/user", Some(&token), None).await;
    assert_eq!((status, err["code"].as_str()), (401, Some("jwt_expired")));
    let (status, renewed) = h.refresh(refresh_of(&s)).await;
    assert_eq!(
        status, 200,
        "a refresh still works after the access token expired"
    );
    assert_eq!(
        h.call("GET", "/auth/v1/user", Some(token_of(&renewed)), None)
            .await
            .0,
        200
    );
}

async fn jwks_is_public(h: &Harness) {
    let res = reqwest::get(format!("{}/auth/v1/.well-known/jwks.json", h.base))
        .await
        .expect("jwks");
    assert_eq!(res.status(), 200);
    let jwks: Value = res.json().await.expect("json");
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (
            keys[0]["kty"].as_str(),
            keys[0]["crv"].as_str(),
            keys[0]["alg"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert!(keys[0].get("d").is_none(), "never the private half");
}

/// Failed sign-ins are limited per email and per client address, with Retry-After, and an
/// unknown email is throttled exactly like a known one.
async fn sign_in_throttle(h: &Harness) {
    h.advance(300); // a fresh window
    h.signup("gus@example.com", "gus's password").await;
    h.signup("hal@example.com", "hal's password").await;
    for _ in 0..3 {
        assert_eq!(
            h.login("gus@example.com", "not gus's password").await.0,
            400
        );
        assert_eq!(h.login("ghost@example.com", "whatever it is").await.0, 400);
    }
    let res = h
        .http
        .post(format!("{}/auth/v1/token?grant_type=password", h.base))
        .header("apikey", &h.public_key)
        .json(&json!({"email": "gus@example.com", "password": "gus's password"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 429, "even the right password waits");
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=300).contains(&retry), "{retry}");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "over_request_rate_limit");
    let (status, ghost) = h.login("ghost@example.com", "whatever it is").await;
    assert_eq!(
        (status, ghost["code"].as_str()),
        (429, Some("over_request_rate_limit"))
    );

    // Six failures from this address so far; two more reach its limit of eight.
    for _ in 0..2 {
        assert_eq!(
            h.login("hal@example.com", "not hal's password").await.0,
            400
        );
    }
    assert_eq!(
        h.login("hal@example.com", "hal's password").await.0,
        429,
        "per address"
    );

    h.advance(300);
    assert_eq!(
        h.login("gus@example.com", "gus's password").await.0,
        200,
        "the next window"
    );
}

async fn rotation_over_http(h: &Harness) {
    let s = h.signup("rot@example.com", "rot's password").await;
    let (status, err) = h
        .call("POST", "/auth/v1/admin/signing-keys/rotate", None, None)
        .await;
    assert_eq!((status, err["code"].as_str()), (403, Some("not_admin")));
    let (status, rotated) = h
        .admin("POST", "/auth/v1/admin/signing-keys/rotate", None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    let jwks: Value = reqwest::get(format!("{}/auth/v1/.well-known/jwks.json", h.base))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2), "{jwks}");
    assert_eq!(
        h.call("GET", "/auth/v1/user", Some(token_of(&s)), None)
            .await
            .0,
        200,
        "old tokens still verify"
    );
    let (_, fresh) = h.login("rot@example.com", "rot's password").await;
    assert_eq!(decode_header(token_of(&fresh))["kid"], rotated["kid"]);
}

async fn admin_api(h: &Harness) {
    // The public key is refused on every admin route.
    for (method, path) in [
        ("GET", "/auth/v1/admin/users"),
        ("POST", "/auth/v1/admin/users"),
        ("DELETE", "/auth/v1/admin/users/x"),
    ] {
        let (status, err) = h
            .call(method, path, None, Some(json!({"email": "x@example.com"})))
            .await;
        assert_eq!(
            (status, err["code"].as_str()),
            (403, Some("not_admin")),
            "{method} {path}"
        );
    }

    let (status, ivy) = h
        .admin(
            "POST",
            "/auth/v1/admin/users",
            Some(json!({"email": "Ivy@example.com", "password": "ivy's password", "email_confirm": true,
                        "role": "admin", "app_metadata": {"tier": "gold"}})),
        )
        .await;
    assert_eq!(status, 200, "{ivy}");
    assert_eq!(ivy["email"], "ivy@example.com");
    assert_eq!(ivy["server_role"], "admin");
    assert!(ivy["email_confirmed_at"].is_string());
    assert_eq!(ivy["app_metadata"]["tier"], "gold");
    assert_eq!(ivy["app_metadata"]["provider"], "email");
    let ivy_id = ivy["id"].as_str().expect("id").to_string();
    let (status, ivy_session) = h.login("ivy@example.com", "ivy's password").await;
    assert_eq!(status, 200);

    let (status, nopw) = h
        .admin(
            "POST",
            "/auth/v1/admin/users",
            Some(json!({"email": "jay@example.com"})),
        )
        .await;
    assert_eq!(status, 200, "{nopw}");
    assert!(nopw["email_confirmed_at"].is_null());
    assert_eq!(
        h.login("jay@example.com", "anything at all").await.0,
        400,
        "no password, no sign-in"
    );
    let (status, err) = h
        .admin(
            "POST",
            "/auth/v1/admin/users",
            Some(json!({"email": "jay@example.com"})),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (422, Some("user_already_exists"))
    );
    let (status, err) = h
        .admin(
            "POST",
            "/auth/v1/admin/users",
            Some(json!({"email": "kim@example.com", "role": "god"})),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (400, Some("bad_request")));

    let (status, all) = h
        .admin("GET", "/auth/v1/admin/users?per_page=1&page=2", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(all["users"].as_array().map(Vec::len), Some(1));
    assert!(all["total"].as_i64().is_some_and(|t| t >= 2));

    let (status, got) = h
        .admin("GET", &format!("/auth/v1/admin/users/{ivy_id}"), None)
        .await;
    assert_eq!(
        (status, got["email"].as_str()),
        (200, Some("ivy@example.com"))
    );
    for missing in ["00000000-0000-0000-0000-000000000000", "not-a-uuid"] {
        let (status, err) = h
            .admin("GET", &format!("/auth/v1/admin/users/{missing}"), None)
            .await;
        assert_eq!(
            (status, err["code"].as_str()),
            (404, Some("user_not_found"))
        );
    }

    // Ban: no sign-in, existing sessions end; lifting it restores sign-in.
    let path = format!("/auth/v1/admin/users/{ivy_id}");
    let (status, banned) = h
        .admin("PUT", &path, Some(json!({"ban_duration": "24h"})))
        .await;
    assert_eq!(status, 200, "{banned}");
    let (status, err) = h.login("ivy@example.com", "ivy's password").await;
    assert_eq!((status, err["code"].as_str()), (403, Some("user_banned")));
    assert_eq!(h.refresh(refresh_of(&ivy_session)).await.0, 400);
    let (status, err) = h
        .admin("PUT", &path, Some(json!({"ban_duration": "forever"})))
        .await;
    assert_eq!((status, err["code"].as_str()), (400, Some("bad_request")));
    assert_eq!(
        h.admin("PUT", &path, Some(json!({"ban_duration": "none"})))
            .await
            .0,
        200
    );
    assert_eq!(h.login("ivy@example.com", "ivy's password").await.0, 200);

    // Role, metadata, confirmation.
    let (status, updated) = h
        .admin("PUT", &path, Some(json!({"role": null, "app_metadata": {"tier": null, "seats": 5}, "email_confirm": false})))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert!(updated.get("server_role").is_none());
    assert_eq!(updated["app_metadata"]["seats"], 5);
    assert!(updated["app_metadata"].get("tier").is_none());
    assert!(updated["email_confirmed_at"].is_null());
    let (_, kept) = h
        .admin("PUT", &path, Some(json!({"user_metadata": {"x": 1}})))
        .await;
    assert!(
        kept.get("server_role").is_none(),
        "an absent role keeps the role"
    );

    // Delete.
    let (status, _) = h.admin("DELETE", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(h.admin("GET", &path, None).await.0, 404);
    assert_eq!(h.admin("DELETE", &path, None).await.0, 404);
    assert_eq!(h.login("ivy@example.com", "ivy's password").await.0, 400);
}

async fn organizations(h: &Harness) {
    h.advance(300); // a fresh throttle window
    let alice = h.signup("alice@example.com", "alice's password").await;
    let carol = h.signup("carol.org@example.com", "carol's password").await;
    let mallory = h.signup("mallory@example.com", "mallory's password").await;
    let (a, c, m) = (token_of(&alice), token_of(&carol), token_of(&mallory));

    let (status, acme) = h
        .call(
            "POST",
            "/auth/v1/orgs",
            Some(a),
            Some(json!({"name": "Acme Inc."})),
        )
        .await;
    assert_eq!(status, 201, "{acme}");
    assert_eq!(
        (acme["slug"].as_str(), acme["role"].as_str()),
        (Some("acme-inc"), Some("owner"))
    );
    let acme_id = acme["id"].as_str().expect("id").to_string();
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/orgs",
            Some(m),
            Some(json!({"name": "Acme", "slug": "acme-inc"})),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("org_slug_taken"))
    );
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/orgs",
            Some(m),
            Some(json!({"name": "X", "slug": "Bad Slug"})),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (400, Some("bad_request")));
    let (_, mine) = h.call("GET", "/auth/v1/orgs", Some(a), None).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1));
    let (_, none) = h.call("GET", "/auth/v1/orgs", Some(m), None).await;
    assert_eq!(none, json!([]));

    // Switching the active org through a refresh puts it in the token.
    let (status, refused) = h
        .call(
            "POST",
            "/auth/v1/token?grant_type=refresh_token",
            None,
            Some(json!({"refresh_token": refresh_of(&mallory), "org_id": "acme-inc"})),
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("not_a_member"))
    );
    assert_eq!(
        h.refresh(refresh_of(&mallory)).await.0,
        200,
        "a refused switch does not spend the token"
    );
    let (status, alice_acme) = h
        .call(
            "POST",
            "/auth/v1/token?grant_type=refresh_token",
            None,
            Some(json!({"refresh_token": refresh_of(&alice), "org_id": "acme-inc"})),
        )
        .await;
    assert_eq!(status, 200, "{alice_acme}");
    let claims = decode(token_of(&alice_acme));
    assert_eq!(
        (claims["org_id"].as_str(), claims["org_role"].as_str()),
        (Some(acme_id.as_str()), Some("owner"))
    );
    let (_, info) = h
        .call("GET", "/v1/info", Some(token_of(&alice_acme)), None)
        .await;
    assert_eq!(
        (
            info["caller"]["org_id"].as_str(),
            info["caller"]["org_role"].as_str()
        ),
        (Some(acme_id.as_str()), Some("owner"))
    );
    // The session remembers its org across refreshes.
    let (_, again) = h.refresh(refresh_of(&alice_acme)).await;
    assert_eq!(decode(token_of(&again))["org_id"], json!(acme_id));

    // Invitations: by owners and admins, to one address, once, for a while.
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/orgs/acme-inc/invites",
            Some(m),
            Some(json!({"email": "x@example.com"})),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (403, Some("not_a_member")));
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/orgs/acme-inc/invites",
            Some(a),
            Some(json!({"email": "x@example.com", "role": "emperor"})),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (400, Some("bad_request")));
    let (status, bob_invite) = h
        .call(
            "POST",
            "/auth/v1/orgs/acme-inc/invites",
            Some(a),
            Some(json!({"email": "Bob@example.com"})),
        )
        .await;
    assert_eq!(status, 201, "{bob_invite}");
    assert_eq!(
        (bob_invite["email"].as_str(), bob_invite["role"].as_str()),
        (Some("bob@example.com"), Some("member"))
    );
    let (status, bob) = h
        .call(
            "POST",
            "/auth/v1/signup",
            None,
            Some(
                json!({"email": "bob@example.com", "password": "bob's password",
        "invite_token": bob_invite["token"]}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{bob}");
    let claims = decode(token_of(&bob));
    assert_eq!(
        (claims["org_id"].as_str(), claims["org_role"].as_str()),
        (Some(acme_id.as_str()), Some("member"))
    );
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/signup",
            None,
            Some(
                json!({"email": "bob2@example.com", "password": "bob's password",
        "invite_token": bob_invite["token"]}),
            ),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invite_not_found")),
        "used once"
    );
    assert_eq!(
        h.login("bob2@example.com", "bob's password").await.0,
        400,
        "a refused invitation creates no user"
    );

    let (_, carol_invite) = h
        .call(
            "POST",
            "/auth/v1/orgs/acme-inc/invites",
            Some(a),
            Some(json!({"email": "carol.org@example.com", "role": "admin"})),
        )
        .await;
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/invites/accept",
            Some(m),
            Some(json!({"token": carol_invite["token"]})),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (403, Some("invite_email_mismatch"))
    );
    let (status, joined) = h
        .call(
            "POST",
            "/auth/v1/invites/accept",
            Some(c),
            Some(json!({"token": carol_invite["token"]})),
        )
        .await;
    assert_eq!(
        (status, joined["role"].as_str()),
        (200, Some("admin")),
        "{joined}"
    );
    let (_, late) = h
        .call(
            "POST",
            "/auth/v1/orgs/acme-inc/invites",
            Some(a),
            Some(json!({"email": "late@example.com"})),
        )
        .await;
    h.advance(8 * 24 * 3600);
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/signup",
            None,
            Some(
                json!({"email": "late@example.com", "password": "late's password",
        "invite_token": late["token"]}),
            ),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invite_expired"))
    );
    // Eight days on, the access tokens above have expired: sign in again.
    let a = token_of(&h.login("alice@example.com", "alice's password").await.1).to_string();
    let c = token_of(&h.login("carol.org@example.com", "carol's password").await.1).to_string();
    let b_session = h.login("bob@example.com", "bob's password").await.1;
    let b = token_of(&b_session).to_string();

    let (status, members) = h
        .call(
            "GET",
            &format!("/auth/v1/orgs/{acme_id}/members"),
            Some(&b),
            None,
        )
        .await;
    assert_eq!(status, 200, "{members}");
    let roles: Vec<(&str, &str)> = members
        .as_array()
        .expect("array")
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap_or(""),
                m["role"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("alice@example.com", "owner"),
            ("bob@example.com", "member"),
            ("carol.org@example.com", "admin")
        ]
    );
    let id_of = |email: &str| {
        members
            .as_array()
            .expect("array")
            .iter()
            .find(|m| m["email"] == email)
            .and_then(|m| m["user_id"].as_str())
            .expect("member")
            .to_string()
    };
    let (alice_id, bob_id, carol_id) = (
        id_of("alice@example.com"),
        id_of("bob@example.com"),
        id_of("carol.org@example.com"),
    );

    // Roles: members manage nothing; admins manage members but not owners.
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/orgs/acme-inc/invites",
            Some(&b),
            Some(json!({"email": "y@example.com"})),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (403, Some("insufficient_role"))
    );
    let path = |user: &str| format!("/auth/v1/orgs/acme-inc/members/{user}");
    assert_eq!(
        h.call(
            "PUT",
            &path(&alice_id),
            Some(&b),
            Some(json!({"role": "member"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        h.call(
            "PUT",
            &path(&bob_id),
            Some(&c),
            Some(json!({"role": "owner"}))
        )
        .await
        .0,
        403,
        "admins do not grant owner"
    );
    assert_eq!(
        h.call("DELETE", &path(&alice_id), Some(&c), None).await.0,
        403,
        "admins do not remove owners"
    );
    let bob_path = path(&bob_id);
    let set = |role: &str| h.call("PUT", &bob_path, Some(&c), Some(json!({"role": role})));
    assert_eq!(set("billing").await.0, 204, "a custom role from config");
    assert_eq!(set("janitor").await.0, 400, "an undeclared role");
    assert_eq!(
        h.call(
            "PUT",
            &path(&bob_id),
            Some(&c),
            Some(json!({"role": "admin"}))
        )
        .await
        .0,
        204
    );

    // The last owner cannot leave or be demoted.
    let (status, err) = h
        .call("POST", "/auth/v1/orgs/acme-inc/leave", Some(&a), None)
        .await;
    assert_eq!((status, err["code"].as_str()), (409, Some("last_owner")));
    assert_eq!(
        h.call(
            "PUT",
            &path(&alice_id),
            Some(&a),
            Some(json!({"role": "member"}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        h.call(
            "PUT",
            &path(&carol_id),
            Some(&a),
            Some(json!({"role": "owner"}))
        )
        .await
        .0,
        204
    );
    assert_eq!(
        h.call("POST", "/auth/v1/orgs/acme-inc/leave", Some(&a), None)
            .await
            .0,
        204
    );
    assert_eq!(
        h.call("GET", "/auth/v1/orgs/acme-inc/members", Some(&a), None)
            .await
            .0,
        403
    );

    // X-Reactor-Org names the org per request, checked against membership.
    let with_org = |token: &str, org: &str| {
        h.http
            .get(format!("{}/v1/info", h.base))
            .header("apikey", &h.public_key)
            .bearer_auth(token.to_string())
            .header("x-reactor-org", org.to_string())
            .send()
    };
    let info: Value = with_org(&c, "acme-inc")
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            info["caller"]["org_id"].as_str(),
            info["caller"]["org_role"].as_str()
        ),
        (Some(acme_id.as_str()), Some("owner"))
    );
    for org in ["no-such-org", &acme_id] {
        let res = with_org(&a, org).await.expect("request");
        assert_eq!(res.status(), 403, "{org}");
        assert_eq!(
            res.json::<Value>().await.expect("json")["code"],
            "not_a_member"
        );
    }
    let res = h
        .http
        .get(format!("{}/v1/info", h.base))
        .header("apikey", &h.public_key)
        .header("x-reactor-org", "acme-inc")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401, "the header needs a user");

    // A removed member's session loses the org at its next refresh.
    let (_, bob_acme) = h
        .call(
            "POST",
            "/auth/v1/token?grant_type=refresh_token",
            None,
            Some(json!({"refresh_token": refresh_of(&b_session), "org_id": acme_id})),
        )
        .await;
    assert_eq!(
        h.call("DELETE", &path(&bob_id), Some(&c), None).await.0,
        204
    );
    let (status, after) = h.refresh(refresh_of(&bob_acme)).await;
    assert_eq!(status, 200);
    assert!(decode(token_of(&after))["org_id"].is_null());
}

/// The newest email to `to` in the dev mailbox, waiting for it to be queued.
async fn email_to(h: &Harness, to: &str) -> Value {
    for _ in 0..100 {
        let (status, mails) = h
            .admin("GET", &format!("/auth/v1/dev/mailbox?to={to}"), None)
            .await;
        assert_eq!(status, 200, "{mails}");
        if let Some(mail) = mails.as_array().and_then(|m| m.first()) {
            return mail.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no email to {to}");
}

/// The code in an email body: the 40 characters after "code: ".
fn code_in(mail: &Value) -> String {
    let body = mail["body"].as_str().expect("body");
    let at = body.find("code: ").expect("a code") + "code: ".len();
    body[at..at + 40].to_string()
}

/// Reset emails are limited per address (whether or not it has an account) and per client:
/// nobody can flood an inbox through the server.
async fn recovery_throttle(h: &Harness) {
    h.signup("flo@example.com", "flo's password").await;
    let ask = |email: &'static str| {
        h.http
            .post(format!("{}/auth/v1/recover", h.base))
            .header("apikey", &h.public_key)
            .json(&json!({ "email": email }))
            .send()
    };
    for email in ["flo@example.com", "ghost-flo@example.com"] {
        for _ in 0..3 {
            assert_eq!(ask(email).await.expect("recover").status(), 200);
        }
        let res = ask(email).await.expect("recover");
        assert_eq!(res.status(), 429, "{email}");
        let retry: u64 = res.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=3600).contains(&retry), "{retry}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["code"], "over_email_send_rate_limit");
    }
    // Other addresses are unaffected until the client's own limit.
    assert_eq!(
        ask("someone-else@example.com")
            .await
            .expect("recover")
            .status(),
        200
    );
}

async fn recovery(h: &Harness) {
    h.signup("rita@example.com", "rita's old password").await;
    let (status, body) = h
        .call(
            "POST",
            "/auth/v1/recover",
            None,
            Some(json!({"email": "Rita@example.com"})),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({})));
    // An unknown address gets the same answer, and no email.
    let (status, body) = h
        .call(
            "POST",
            "/auth/v1/recover",
            None,
            Some(json!({"email": "nobody@example.com"})),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({})));
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/recover",
            None,
            Some(json!({"email": "not an email"})),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("validation_failed"))
    );

    let mail = email_to(h, "rita@example.com").await;
    assert_eq!(mail["subject"], "Reset your password");
    assert!(
        mail["body"]
            .as_str()
            .is_some_and(|b| b.contains("/auth/v1/verify?type=recovery&token="))
    );
    let code = code_in(&mail);
    let (status, session) = h
        .call(
            "POST",
            "/auth/v1/verify",
            None,
            Some(json!({"type": "recovery", "token": code})),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let (status, _) = h
        .call(
            "PUT",
            "/auth/v1/user",
            Some(token_of(&session)),
            Some(json!({"password": "rita's new password"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        h.login("rita@example.com", "rita's new password").await.0,
        200
    );
    // Single use, and only for its kind.
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/verify",
            None,
            Some(json!({"type": "recovery", "token": code})),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (403, Some("otp_expired")));
    let (status, _) = h
        .call(
            "POST",
            "/auth/v1/verify",
            None,
            Some(json!({"type": "magic", "token": code})),
        )
        .await;
    assert_eq!(status, 400);

    // The emailed link: verified, then redirected to the site with the session in the fragment.
    h.call(
        "POST",
        "/auth/v1/recover",
        None,
        Some(json!({"email": "rita@example.com"})),
    )
    .await;
    let mut link_code = code_in(&email_to(h, "rita@example.com").await);
    for _ in 0..100 {
        if link_code != code {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        link_code = code_in(&email_to(h, "rita@example.com").await);
    }
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let res = no_redirects
        .get(format!(
            "{}/auth/v1/verify?type=recovery&token={link_code}&redirect_to=https://evil.example",
            h.base
        ))
        .send()
        .await
        .expect("link");
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        location.starts_with("http://127.0.0.1:8080#access_token="),
        "only the site is a target: {location}"
    );
    let res = no_redirects
        .get(format!(
            "{}/auth/v1/verify?type=recovery&token={link_code}",
            h.base
        ))
        .send()
        .await
        .expect("link");
    let location = res.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(location.contains("#error=otp_expired"), "{location}");
}

async fn confirmation_required(url: &str) {
    let h = Harness::start_with(
        url,
        IdentityConfig {
            confirm_email: true,
            dev_mailbox: true,
            ..IdentityConfig::default()
        },
    )
    .await;
    let (status, user) = h
        .call(
            "POST",
            "/auth/v1/signup",
            None,
            Some(json!({"email": "una@example.com", "password": "una's password"})),
        )
        .await;
    assert_eq!(status, 200, "{user}");
    assert!(
        user.get("access_token").is_none(),
        "no session before confirmation: {user}"
    );
    assert!(user["email_confirmed_at"].is_null());
    let (status, err) = h.login("una@example.com", "una's password").await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("email_not_confirmed"))
    );
    // A wrong password still says only that.
    assert_eq!(
        h.login("una@example.com", "not una's password").await.1["code"],
        "invalid_credentials"
    );

    let mail = email_to(&h, "una@example.com").await;
    assert_eq!(mail["subject"], "Confirm your email address");
    let code = code_in(&mail);
    h.advance(3601);
    let (status, err) = h
        .call(
            "POST",
            "/auth/v1/verify",
            None,
            Some(json!({"type": "signup", "token": code})),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (403, Some("otp_expired")),
        "expired after an hour"
    );

    let (_, vic) = h
        .call(
            "POST",
            "/auth/v1/signup",
            None,
            Some(json!({"email": "vic@example.com", "password": "vic's password"})),
        )
        .await;
    assert!(vic["email_confirmed_at"].is_null());
    let code = code_in(&email_to(&h, "vic@example.com").await);
    let (status, session) = h
        .call(
            "POST",
            "/auth/v1/verify",
            None,
            Some(json!({"type": "email", "token_hash": code})),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    assert!(session["user"]["email_confirmed_at"].is_string());
    assert_eq!(h.login("vic@example.com", "vic's password").await.0, 200);

    // Without dev mode there is no mailbox to read.
    let plain = Harness::start_with(url, IdentityConfig::default()).await;
    let (status, err) = plain.admin("GET", "/auth/v1/dev/mailbox", None).await;
    assert_eq!((status, err["code"].as_str()), (404, Some("not_found")));
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

fn decode(token: &str) -> Value {
    decode_part(token.split('.').nth(1).expect("payload"))
}

fn decode_header(token: &str) -> Value {
    decode_part(token.split('.').next().expect("header"))
}

fn encode(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

async fn suite(url: &str) {
    let h = Harness::start(url).await;
    jwks_is_public(&h).await;
    users_and_sessions(&h).await;
    refresh_rotation_and_reuse(&h).await;
    logout_scopes(&h).await;
    hostile_tokens(&h).await;
    sign_in_throttle(&h).await;
    admin_api(&h).await;
    rotation_over_http(&h).await;
    organizations(&h).await;
    recovery(&h).await;
    recovery_throttle(&h).await;
    confirmation_required(url).await;
}

#[tokio::test]
async fn identity_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    suite(&format!("sqlite://{}", dir.path().join("id.db").display())).await;
}

#[tokio::test]
async fn identity_on_postgres() {
    let Some(url) = fresh_postgres_database("identity").await else {
        return;
    };
    suite(&url).await;
}

/// Rotation through the capability: old tokens keep working, new ones carry the new kid, and
/// a second server over the same database learns the new key.
#[tokio::test]
async fn signing_key_rotation_reaches_other_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("rot.db").display());
    let db = Db::connect(&url).await.expect("db");
    let clock = reactor_identity::system_clock();
    let a = Identity::start(&db, IdentityConfig::default(), Arc::clone(&clock))
        .await
        .expect("a");
    let b = Identity::start(&db, IdentityConfig::default(), clock)
        .await
        .expect("b");
    let SignupOutcome::Session(session) = a
        .signup("fay@example.com", "fay's password", None, None)
        .await
        .expect("signup")
    else {
        panic!("without confirmation a sign-up signs in");
    };
    let old_kid = decode_header(&session.access_token)["kid"].clone();

    let new_kid = a.rotate_signing_key().await.expect("rotate");
    assert_ne!(json!(new_kid), old_kid);
    assert!(
        a.verify_access_token(&session.access_token).await.is_ok(),
        "old tokens still verify"
    );
    let fresh = a
        .password_grant("fay@example.com", "fay's password", None, None)
        .await
        .expect("login");
    assert_eq!(decode_header(&fresh.access_token)["kid"], json!(new_kid));
    assert!(
        b.verify_access_token(&fresh.access_token).await.is_ok(),
        "replica b reloads on an unknown kid"
    );
    assert_eq!(a.jwks()["keys"].as_array().map(Vec::len), Some(2));
}

/// A minimal SMTP server on loopback speaking the real protocol: it accepts every message
/// and hands each one's DATA to the test.
async fn smtp_sink() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            let _ = write.write_all(b"354 go on\r\n").await;
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(&l);
                                data.push('\n');
                            }
                            let _ = tx.send(data);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = write.write_all(reply).await;
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn invitations_are_delivered_over_smtp() {
    use reactor_identity::mail::{MailerConfig, SmtpConfig, SmtpTls};
    let (port, mut inbox) = smtp_sink().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("smtp.db").display());
    let h = Harness::start_with(
        &url,
        IdentityConfig {
            mailer: MailerConfig::Smtp(SmtpConfig {
                host: "127.0.0.1".into(),
                port,
                username: None,
                password: None,
                from: "Acme <no-reply@acme.test>".into(),
                tls: SmtpTls::None,
            }),
            ..IdentityConfig::default()
        },
    )
    .await;
    let owner = h.signup("owner@example.com", "owner's password").await;
    let (status, _) = h
        .call(
            "POST",
            "/auth/v1/orgs",
            Some(token_of(&owner)),
            Some(json!({"name": "Acme"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, invite) = h
        .call(
            "POST",
            "/auth/v1/orgs/acme/invites",
            Some(token_of(&owner)),
            Some(json!({"email": "new@example.com"})),
        )
        .await;
    assert_eq!(status, 201);
    let data = tokio::time::timeout(std::time::Duration::from_secs(10), inbox.recv())
        .await
        .expect("delivered in time")
        .expect("a message");
    assert!(data.contains("Subject: You are invited"), "{data}");
    assert!(data.contains("To: new@example.com"), "{data}");
    assert!(data.contains("From: Acme <no-reply@acme.test>"), "{data}");
    assert!(
        data.contains(invite["token"].as_str().expect("token")),
        "{data}"
    );
}
