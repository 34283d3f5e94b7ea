//! One contract suite for the system tables, run against SQLite and Postgres alike.

use reactor_core::KeyTier;
use reactor_core::keys;
use reactor_db::testing::fresh_postgres_database;
use reactor_db::{Db, Engine};

async fn contract(url: &str, engine: Engine) {
    let db = Db::connect(url).await.expect("connect");
    assert_eq!(db.engine(), engine);
    // A second start over the same database finds the schema current.
    let again = Db::connect(url).await.expect("reconnect");
    again.ping().await.expect("ping");

    assert_eq!(db.project().await.expect("project"), None);
    db.set_project("todo-1234abcd", "Todo")
        .await
        .expect("set project");
    db.set_project("todo-1234abcd", "Todo app")
        .await
        .expect("set project twice");
    let project = again.project().await.expect("project").expect("recorded");
    assert_eq!(
        (project.id.as_str(), project.name.as_str()),
        ("todo-1234abcd", "Todo app")
    );

    let public = keys::generate(KeyTier::Public);
    let service = keys::generate(KeyTier::Service);
    db.insert_api_key(&public, "browser")
        .await
        .expect("insert pub");
    db.insert_api_key(&service, "ci").await.expect("insert svc");

    let found = db
        .find_api_key(&keys::hash(&public.secret))
        .await
        .expect("find")
        .expect("present");
    assert_eq!(
        (found.id.as_str(), found.name.as_str(), found.tier),
        (public.id.as_str(), "browser", KeyTier::Public)
    );
    assert_eq!(found.prefix, public.prefix);
    assert!(!found.revoked);
    assert_eq!(found.last_used_at, None);
    assert!(
        found.created_at.starts_with("20"),
        "RFC 3339 time: {}",
        found.created_at
    );
    assert_eq!(
        db.find_api_key(&keys::hash("rk_pub_unknown"))
            .await
            .expect("find"),
        None
    );

    db.touch_api_key(&public.id).await.expect("touch");
    let touched = db
        .find_api_key(&public.hash)
        .await
        .expect("find")
        .expect("present");
    assert!(touched.last_used_at.is_some());

    let listed = db.list_api_keys().await.expect("list");
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|k| k.tier == KeyTier::Service && k.name == "ci")
    );

    assert!(db.revoke_api_key(&service.id).await.expect("revoke"));
    assert!(
        !db.revoke_api_key(&service.id).await.expect("revoke twice"),
        "already revoked"
    );
    assert!(!db.revoke_api_key("key_nope").await.expect("revoke unknown"));
    let revoked = again
        .find_api_key(&service.hash)
        .await
        .expect("find")
        .expect("present");
    assert!(
        revoked.revoked,
        "a revoke is visible through another handle at once"
    );
}

#[tokio::test]
async fn sqlite_system_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/reactor.db");
    contract(&format!("sqlite://{}", path.display()), Engine::Sqlite).await;
}

#[tokio::test]
async fn postgres_system_tables() {
    let Some(url) = fresh_postgres_database("system_tables").await else {
        return;
    };
    contract(&url, Engine::Postgres).await;
}

#[tokio::test]
async fn postgres_replicas_migrating_at_once_apply_each_version_once() {
    let Some(url) = fresh_postgres_database("concurrent_migrate").await else {
        return;
    };
    let starts = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { Db::connect(&url).await.map(|_| ()) })
    });
    for start in starts {
        start.await.expect("join").expect("every replica starts");
    }
}

#[tokio::test]
async fn unreachable_postgres_is_a_clear_error_without_the_password() {
    let err = Db::connect("postgres://user:hunter2@127.0.0.1:1/db")
        .await
        .expect_err("no server on port 1");
    let shown = err.to_string();
    assert!(shown.contains("cannot connect to Postgres"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}
