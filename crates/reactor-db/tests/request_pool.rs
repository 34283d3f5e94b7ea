//! Data's request connections on a real Postgres: statements of one caller share connections
//! (pipelined), a connection changes caller only when idle, a caller never runs on another's
//! session, a busy caller cannot starve another, and a transaction abandoned half-way is
//! rolled back with its connection.

use std::collections::HashSet;
use std::time::Duration;

use reactor_core::{KeyTier, Principal};
use reactor_db::Db;
use reactor_db::requests::{Batching, RequestPool, RequestPoolSize};
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

/// A pool of one connection over a fresh database with a `marks` table (and `more` SQL run
/// after it), and the service key that writes it.
async fn marks_pool(
    label: &str,
    spread: usize,
    more: &'static str,
) -> Option<(sqlx::PgPool, RequestPool, Principal)> {
    let (pg, requests) = pool(label, 1, spread).await?;
    for sql in ["create table marks (n bigint primary key)", more] {
        sqlx::raw_sql(sql).execute(&pg).await.expect("setup");
    }
    Some((
        pg,
        requests,
        Principal::from_key("key_svc", KeyTier::Service),
    ))
}

/// Spawns one statement with one integer parameter; answers its first column, or the error.
fn spawn_one(
    requests: &RequestPool,
    principal: &Principal,
    batching: Batching,
    sql: &'static str,
    n: i64,
) -> tokio::task::JoinHandle<Result<Option<i64>, String>> {
    let (requests, principal) = (requests.clone(), principal.clone());
    tokio::spawn(async move {
        requests
            .query_one(&principal, sql, &[Type::INT8], &[&n], batching)
            .await
            .map(|row| row.int(0).expect("int"))
            .map_err(|e| e.to_string())
    })
}

/// Whom the statement ran as, and on which backend.
const WHO: &str =
    "select current_user::text, current_setting('reactor.user_id', true), pg_backend_pid()";

async fn who(requests: &RequestPool, p: &Principal) -> (String, String, i32) {
    let row = requests
        .query_one(p, WHO, &[], &[], Batching::Shared)
        .await
        .expect("statement");
    let text = |i| row.text(i).expect("text").unwrap_or_default().to_string();
    let pid = row.int(2).expect("int").expect("a pid");
    (text(0), text(1), i32::try_from(pid).expect("a pid fits"))
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
    let Some((pg, requests, service)) = marks_pool("pool_abandon", 8, "").await else {
        return;
    };
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
        .query_one(&service, count, &[], &[], Batching::Shared)
        .await
        .expect("count");
    assert_eq!(row.int(0).expect("int"), Some(1));
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
        .query_one(&alice, "select 1/0", &[], &[], Batching::Shared)
        .await
        .expect_err("division by zero");
    assert!(e.to_string().contains("division by zero"), "{e}");
    let (_, _, same) = who(&requests, &alice).await;
    assert_eq!(first, same, "an ordinary error keeps the connection");
    // The session guard's error says the session is not what the pool believes.
    let guard = "select reactor.assert_session('reactor_anon', '', '', '')";
    requests
        .query_one(&alice, guard, &[], &[], Batching::Shared)
        .await
        .expect_err("alice is not anonymous");
    let (role, _, next) = who(&requests, &alice).await;
    assert_eq!(role, "reactor_authenticated");
    assert_ne!(first, next, "the connection was replaced");
}

#[tokio::test]
async fn queued_statements_share_a_sync_and_every_one_commits() {
    let Some((pg, requests, service)) = marks_pool("pool_batch", 64, "").await else {
        return;
    };
    let insert = "insert into marks values ($1) returning n";
    let tasks: Vec<_> = (0..64_i64)
        .map(|n| spawn_one(&requests, &service, Batching::Shared, insert, n))
        .collect();
    for (n, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.expect("task"), Ok(Some(n as i64)));
    }
    let sent = requests.sent();
    assert!(
        sent.syncs < sent.statements,
        "64 statements queued on one connection go out in batches: {sent:?}"
    );
    let rows: i64 = sqlx::query_scalar("select count(*) from marks")
        .fetch_one(&pg)
        .await
        .expect("count");
    assert_eq!(rows, 64);
}

#[tokio::test]
async fn a_statement_failing_in_a_batch_fails_alone_and_the_others_commit() {
    let more = "insert into marks values (1000); create sequence once";
    let Some((pg, requests, service)) = marks_pool("pool_batch_fail", 64, more).await else {
        return;
    };
    // The connection exists and acts as the service key before anything is queued.
    who(&requests, &service).await;
    let run_as = |batching, sql, n| spawn_one(&requests, &service, batching, sql, n);
    let run = |sql, n| run_as(Batching::Shared, sql, n);
    let pause = std::time::Duration::from_millis(100);
    // Holds the connection while the rest queue, so they go out as one batch, in this order:
    // a statement asking for a `Sync` of its own (a sequence is not rolled back, so it shows
    // whether it ran twice), a failure before the insert's first Parse (which PostgreSQL then
    // skips), inserts, a duplicate of an existing row, and two inserts of one new key.
    let slow = run("select $1 from pg_sleep(1)", 0);
    tokio::time::sleep(pause).await;
    let own = run_as(Batching::Own, "select nextval('once') + $1", 0);
    tokio::time::sleep(pause).await;
    let zero = run("select 1 / ($1 - $1)", 1);
    tokio::time::sleep(pause).await;
    let insert = "insert into marks values ($1) returning n";
    let mut fresh = Vec::new();
    for n in 0..8 {
        fresh.push(run(insert, n));
    }
    let existing = run(insert, 1000);
    let twice = [run(insert, 2000), run(insert, 2000)];

    assert_eq!(slow.await.expect("task"), Ok(Some(0)));
    assert_eq!(own.await.expect("task"), Ok(Some(1)));
    let zero = zero.await.expect("task").expect_err("division by zero");
    assert!(zero.contains("division by zero"), "{zero}");
    for (n, task) in fresh.into_iter().enumerate() {
        assert_eq!(task.await.expect("task"), Ok(Some(n as i64)));
    }
    let existing = existing.await.expect("task").expect_err("duplicate");
    assert!(existing.contains("23505"), "{existing}");
    let mut outcomes = Vec::new();
    for task in twice {
        outcomes.push(task.await.expect("task"));
    }
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "one of two inserts of one key commits: {outcomes:?}"
    );
    assert!(requests.sent().resent > 0, "{:?}", requests.sent());
    let rows: Vec<i64> = sqlx::query_scalar("select n from marks order by n")
        .fetch_all(&pg)
        .await
        .expect("rows");
    assert_eq!(rows, [0, 1, 2, 3, 4, 5, 6, 7, 1000, 2000]);
    let once: i64 = sqlx::query_scalar("select last_value from once")
        .fetch_one(&pg)
        .await
        .expect("sequence");
    assert_eq!(once, 1, "a statement with a Sync of its own ran once");
}

#[tokio::test]
async fn a_statement_given_up_before_it_was_sent_never_runs() {
    let Some((pg, requests, service)) = marks_pool("pool_given_up", 8, "").await else {
        return;
    };
    who(&requests, &service).await;
    let insert = "insert into marks values ($1) returning n";
    let run = |sql, n| spawn_one(&requests, &service, Batching::Shared, sql, n);
    let pause = Duration::from_millis(100);
    let slow = run("select $1 from pg_sleep(1)", 0);
    tokio::time::sleep(pause).await;
    // Queued behind `slow`, then its request goes away (a client that hung up).
    let gone = run(insert, 1);
    tokio::time::sleep(pause).await;
    gone.abort();
    assert_eq!(slow.await.expect("task"), Ok(Some(0)));
    let next = tokio::time::timeout(Duration::from_secs(10), run(insert, 2))
        .await
        .expect("the connection still serves statements")
        .expect("task");
    assert_eq!(next, Ok(Some(2)));
    let rows: Vec<i64> = sqlx::query_scalar("select n from marks")
        .fetch_all(&pg)
        .await
        .expect("rows");
    assert_eq!(rows, [2]);
}

#[tokio::test]
async fn prepared_statements_are_closed_past_the_cache_size() {
    let Some((_pg, requests)) = pool("pool_prepared", 1, 8).await else {
        return;
    };
    let service = Principal::from_key("key_svc", KeyTier::Service);
    // More distinct texts than a connection keeps prepared (512), one after the other.
    for k in 0..600_i64 {
        let sql = format!("select $1::bigint + {k}");
        let row = requests
            .query_one(&service, &sql, &[Type::INT8], &[&1_i64], Batching::Shared)
            .await
            .expect("statement");
        assert_eq!(row.int(0).expect("int"), Some(1 + k));
    }
    let row = requests
        .query_one(
            &service,
            "select count(*) from pg_prepared_statements",
            &[],
            &[],
            Batching::Shared,
        )
        .await
        .expect("count");
    let prepared = row.int(0).expect("int").expect("a count");
    assert!(
        prepared <= 512,
        "the connection holds {prepared} prepared statements"
    );
}
