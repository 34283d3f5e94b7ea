//! The counters limits are enforced with, on both databases: a reservation takes every
//! counter it names or none, and racing reservations never together pass a cap.

use reactor_db::Db;
use reactor_gateway::store::{self, Caps, Check};

async fn databases(label: &str) -> Vec<(tempfile::TempDir, Db)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}", dir.path().join("g.db").display());
    let mut urls = vec![(dir, sqlite)];
    if let Some(url) = reactor_db::testing::fresh_postgres_database(label).await {
        urls.push((tempfile::tempdir().expect("tempdir"), url));
    }
    let mut dbs = Vec::new();
    for (dir, url) in urls {
        let db = Db::connect(&url).await.expect("connect");
        db.migrate().await.expect("migrate");
        db.apply_migrations("gateway", store::SQLITE, store::POSTGRES)
            .await
            .expect("gateway migrations");
        dbs.push((dir, db));
    }
    dbs
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
async fn requests_in(db: &Db, scope: &str, period: &str) -> i64 {
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
    for (_dir, db) in databases("gwatomic").await {
        let engine = db.engine();
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
    for (_dir, db) in databases("gwrace").await {
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
        assert_eq!(taken, 25, "{:?}", db.engine());
        assert_eq!(requests_in(&db, "key:r", "m:7").await, 25);
    }
}
