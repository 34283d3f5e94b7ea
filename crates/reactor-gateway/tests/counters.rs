//! The counters limits are enforced with, on both databases: a reservation takes every
//! counter it names or none, and racing reservations never together pass a cap.

use reactor_db::Db;
use reactor_gateway::store::{self, Caps, Check, Counters};

/// SQLite, and Postgres when the tests have one, each with the gateway's tables.
async fn databases(label: &str) -> Vec<(tempfile::TempDir, Db, Counters)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}", dir.path().join("g.db").display());
    let mut urls = vec![(dir, sqlite)];
    if let Some(url) = reactor_db::testing::fresh_postgres_database(label).await {
        urls.push((tempfile::tempdir().expect("tempdir"), url));
    }
    let mut dbs = Vec::new();
    for (dir, url) in urls {
        let db = connect(&url).await;
        let counters = Counters::new(&db);
        dbs.push((dir, db, counters));
    }
    dbs
}

async fn connect(url: &str) -> Db {
    let db = Db::connect(url).await.expect("connect");
    db.migrate().await.expect("migrate");
    db.apply_migrations("gateway", store::SQLITE, store::POSTGRES)
        .await
        .expect("gateway migrations");
    db
}

const OPEN: Caps = Caps {
    requests: i64::MAX,
    tokens: i64::MAX,
    cost_micro: i64::MAX,
};

fn check(scope: &str, period: &str, requests: i64, cost_micro: i64, caps: Caps) -> Check {
    Check {
        scope: scope.into(),
        period: period.into(),
        expires_ms: i64::MAX,
        requests,
        tokens: 0,
        cost_micro,
        caps,
    }
}

/// A counter's requests, found as the smallest cap a reservation of nothing fits under.
async fn requests_in(db: &Counters, scope: &str, period: &str) -> i64 {
    for n in 0..1000 {
        let probe = check(
            scope,
            period,
            0,
            0,
            Caps {
                requests: n,
                ..OPEN
            },
        );
        if store::reserve(db, vec![probe])
            .await
            .expect("probe")
            .is_none()
        {
            return n;
        }
    }
    panic!("more than 1000 requests in {scope} {period}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_reservation_takes_nothing() {
    for (_dir, db, counters) in databases("gwatomic").await {
        let engine = db.engine();
        let db = counters;
        let day = Caps {
            cost_micro: 100,
            ..OPEN
        };
        // Most of the day's spend is gone: the next request fits the minute but not the day.
        let spent = store::reserve(&db, vec![check("key:a", "d:1", 0, 90, day)]).await;
        assert_eq!(spent.expect("reserve"), None);
        let both = |cost| {
            vec![
                check("key:a", "m:1", 1, 0, OPEN),
                check("key:a", "d:1", 0, cost, day),
            ]
        };
        let refused = store::reserve(&db, both(20)).await.expect("reserve");
        assert_eq!(refused, Some(1), "{engine:?}: the day counter refuses");
        assert_eq!(
            requests_in(&db, "key:a", "m:1").await,
            0,
            "{engine:?}: the minute counter was given back"
        );
        // What still fits is taken, in both.
        assert_eq!(store::reserve(&db, both(10)).await.expect("reserve"), None);
        assert_eq!(requests_in(&db, "key:a", "m:1").await, 1, "{engine:?}");
        assert_eq!(
            store::reserve(&db, both(1)).await.expect("reserve"),
            Some(1)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_reservations_never_pass_a_cap() {
    for (_dir, db, counters) in databases("gwrace").await {
        let engine = db.engine();
        let db = counters;
        let caps = Caps {
            requests: 25,
            ..OPEN
        };
        let tasks: Vec<_> = (0..60)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    let one = check("key:r", "m:7", 1, 0, caps);
                    store::reserve(&db, vec![one])
                        .await
                        .expect("reserve")
                        .is_none()
                })
            })
            .collect();
        let mut taken = 0;
        for t in tasks {
            taken += usize::from(t.await.expect("task"));
        }
        assert_eq!(taken, 25, "{engine:?}");
        assert_eq!(requests_in(&db, "key:r", "m:7").await, 25);
    }
}

/// SQLite's counters are kept in memory: what they took reaches the table with the
/// recorder's settlement (once, however often it settles), so a restarted server — a new
/// ledger over the same file — starts from it; corrections to the estimates are paid too.
#[tokio::test]
async fn sqlite_counters_are_written_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = connect(&format!("sqlite://{}", dir.path().join("g.db").display())).await;
    let counters = Counters::new(&db);
    for _ in 0..3 {
        let taken = store::reserve(&counters, vec![check("key:w", "m:1", 1, 5, OPEN)]).await;
        assert_eq!(taken.expect("reserve"), None);
    }
    assert_eq!(requests_in(&counters, "key:w", "m:1").await, 3);
    assert_eq!(
        requests_in(&Counters::new(&db), "key:w", "m:1").await,
        0,
        "nothing written before the settlement"
    );
    let mut settlement = store::Settlement::default();
    settlement
        .adjust
        .insert(("key:w".into(), "m:1".into()), (0, -15));
    store::settle(&counters, settlement, 0)
        .await
        .expect("settle");
    store::settle(&counters, store::Settlement::default(), 0)
        .await
        .expect("settle again");
    let restarted = Counters::new(&db);
    assert_eq!(requests_in(&restarted, "key:w", "m:1").await, 3);
    // The three reservations' cost (15) was corrected to 0: a cap of 0 still fits.
    let free = Caps {
        cost_micro: 0,
        ..OPEN
    };
    let fits = store::reserve(&restarted, vec![check("key:w", "m:1", 0, 0, free)]).await;
    assert_eq!(fits.expect("reserve"), None);
    let over = store::reserve(&restarted, vec![check("key:w", "m:1", 0, 1, free)]).await;
    assert_eq!(over.expect("reserve"), Some(0));
}
