//! Data's request connections on a real Postgres: statements of one caller share connections
//! (pipelined), a connection changes caller only when idle, a caller never runs on another's
//! session, a busy caller cannot starve another, and a transaction abandoned half-way is
//! rolled back with its connection.

use std::collections::HashSet;
use std::time::Duration;

use reactor_core::{KeyTier, Principal};
use reactor_db::Db;
use reactor_db::requests::{RequestPool, RequestPoolSize};
use reactor_db::testing::fresh_postgres_database;
use tokio_postgres::types::Type;

fn user(n: usize) -> Principal {
    let mut p = Principal::from_key("key_test", KeyTier::Public);
    p.user_id = Some(format!("00000000-0000-0000-0000-{n:012}"));
    p.org_id = Some("00000000-0000-0000-0000-0000000000ac".to_string());
    p.role = Some("member".to_string());
    p
}

async fn pool(
    label: &str,
    connections: usize,
    spread: usize,
) -> Option<(sqlx::PgPool, RequestPool)> {
    let size = RequestPoolSize {
        connections,
        spread,
    };
    let url = fresh_postgres_database(label).await?;
    let Db::Postgres(pg) = Db::connect(&url).await.expect("db") else {
        panic!("a postgres url opens postgres");
    };
    let requests = RequestPool::new(&pg, size).expect("request pool");
    Some((pg, requests))
}

/// Whom the statement ran as, and on which backend.
const WHO: &str =
    "select current_user::text, current_setting('reactor.user_id', true), pg_backend_pid()";

async fn who(requests: &RequestPool, p: &Principal) -> (String, String, i32) {
    let row = requests
        .query_one(p, WHO, &[], &[])
        .await
        .expect("statement");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn one_callers_statements_share_a_few_connections() {
    let Some((_pg, requests)) = pool("pool_share", 16, 8).await else {
        return;
    };
    let alice = user(1);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (requests, alice) = (requests.clone(), alice.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..20 {
                seen.push(who(&requests, &alice).await);
            }
            seen
        }));
    }
    let mut backends = HashSet::new();
    for task in tasks {
        for (role, user_id, pid) in task.await.expect("task") {
            assert_eq!(role, "reactor_authenticated");
            assert_eq!(Some(user_id), alice.user_id);
            backends.insert(pid);
        }
    }
    // 64 statements at a time, at most 8 per connection: more than one connection, and
    // never more than the pool's 16.
    assert!(
        backends.len() > 1 && backends.len() <= 16,
        "{} backends",
        backends.len()
    );
}

#[tokio::test]
async fn callers_never_run_on_each_others_session() {
    // Two connections for twelve callers: sessions are switched all the time.
    let Some((_pg, requests)) = pool("pool_switch", 2, 4).await else {
        return;
    };
    let mut tasks = Vec::new();
    for n in 0..12 {
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let me = user(n % 6);
            let service = Principal::from_key("key_svc", KeyTier::Service);
            for i in 0..30 {
                let p = if (n + i) % 5 == 0 { &service } else { &me };
                let (role, user_id, _) = who(&requests, p).await;
                assert_eq!(role, p.db_role().name());
                assert_eq!(user_id, p.user_id.clone().unwrap_or_default());
            }
        }));
    }
    for task in tasks {
        task.await.expect("every statement ran as its own caller");
    }
}

#[tokio::test]
async fn a_busy_caller_cannot_starve_another() {
    let Some((_pg, requests)) = pool("pool_starve", 1, 64).await else {
        return;
    };
    let busy = user(1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hammers = Vec::new();
    for _ in 0..16 {
        let (requests, busy, stop) = (requests.clone(), busy.clone(), stop.clone());
        hammers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                who(&requests, &busy).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The one connection is always busy with the other caller; this one still gets it.
    let other = user(2);
    let (_, user_id, _) = tokio::time::timeout(Duration::from_secs(10), who(&requests, &other))
        .await
        .expect("served while another caller keeps the connection busy");
    assert_eq!(Some(user_id), other.user_id);
    let exclusive = tokio::time::timeout(Duration::from_secs(10), requests.exclusive(&other))
        .await
        .expect("an exclusive connection too");
    drop(exclusive.expect("exclusive"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hammers {
        h.await.expect("hammer");
    }
}

#[tokio::test]
async fn an_abandoned_transaction_is_rolled_back_with_its_connection() {
    let Some((pg, requests)) = pool("pool_abandon", 1, 8).await else {
        return;
    };
    sqlx::raw_sql("create table marks (n integer primary key)")
        .execute(&pg)
        .await
        .expect("table");
    let service = Principal::from_key("key_svc", KeyTier::Service);
    let insert = "insert into marks values ($1) returning n";
    let count = "select count(*) from marks";

    // A transaction that inserted `n`, left open for the caller to end.
    let inserted = async |n: i64| {
        let mut conn = requests.exclusive(&service).await.expect("exclusive");
        conn.begin(false).await.expect("begin");
        conn.query_one(insert, &[Type::INT8], &[&n])
            .await
            .expect("insert");
        conn
    };
    // Committed.
    inserted(1).await.commit().await.expect("commit");
    // Rolled back on purpose.
    inserted(2).await.rollback().await.expect("rollback");
    // Abandoned: the request went away inside its transaction.
    drop(inserted(3).await);
    // A read-only transaction refuses writes.
    let mut conn = requests.exclusive(&service).await.expect("exclusive");
    conn.begin(true).await.expect("begin read only");
    let refused = conn
        .query_one(insert, &[Type::INT8], &[&4_i64])
        .await
        .expect_err("read only");
    assert!(refused.to_string().contains("read-only"), "{refused}");
    conn.rollback().await.expect("rollback");

    // The pool's one connection is usable again, and only the committed row exists.
    let row = requests
        .query_one(&service, count, &[], &[])
        .await
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), 1);
    let n: i64 = sqlx::query_scalar(count)
        .fetch_one(&pg)
        .await
        .expect("count");
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_statement_error_keeps_the_connection_and_a_drifted_session_drops_it() {
    let Some((_pg, requests)) = pool("pool_errors", 1, 8).await else {
        return;
    };
    let alice = user(1);
    let (_, _, first) = who(&requests, &alice).await;
    let e = requests
        .query_one(&alice, "select 1/0", &[], &[])
        .await
        .expect_err("division by zero");
    assert!(e.to_string().contains("division by zero"), "{e}");
    let (_, _, same) = who(&requests, &alice).await;
    assert_eq!(first, same, "an ordinary error keeps the connection");
    // The session guard's error says the session is not what the pool believes.
    let guard = "select reactor.assert_session('reactor_anon', '', '', '')";
    requests
        .query_one(&alice, guard, &[], &[])
        .await
        .expect_err("alice is not anonymous");
    let (role, _, next) = who(&requests, &alice).await;
    assert_eq!(role, "reactor_authenticated");
    assert_ne!(first, next, "the connection was replaced");
}
