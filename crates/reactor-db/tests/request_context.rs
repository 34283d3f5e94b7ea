//! Requests run as their caller: real row-level security on Postgres, and on SQLite the same
//! helper functions answering with the caller, for the simulation to build on.

use reactor_core::{KeyTier, Principal};
use reactor_db::testing::fresh_postgres_database;
use reactor_db::{Db, postgres};

const ALICE: &str = "00000000-0000-0000-0000-00000000000a";
const BOB: &str = "00000000-0000-0000-0000-00000000000b";
const ACME: &str = "00000000-0000-0000-0000-0000000000ac";

fn user(id: &str) -> Principal {
    let mut p = Principal::from_key("key_test", KeyTier::Public);
    p.user_id = Some(id.to_string());
    p.org_id = Some(ACME.to_string());
    p.role = Some("member".to_string());
    p
}

#[tokio::test]
async fn postgres_requests_run_under_row_level_security() {
    let Some(url) = fresh_postgres_database("rls").await else {
        return;
    };
    let Db::Postgres(pool) = Db::connect(&url).await.expect("db") else {
        panic!("a postgres url opens postgres");
    };
    // A table the project's migrations would create, as the owner.
    sqlx::raw_sql(
        "create table notes (
             id serial primary key,
             owner uuid not null default reactor.user_id(),
             body text not null
         );
         alter table notes enable row level security;
         create policy notes_read on notes for select to reactor_authenticated using (owner = reactor.user_id());
         create policy notes_write on notes for insert to reactor_authenticated with check (owner = reactor.user_id());",
    )
    .execute(&pool)
    .await
    .expect("create table");

    let service = Principal::from_key("key_svc", KeyTier::Service);
    let mut tx = postgres::begin_as(&pool, &service)
        .await
        .expect("begin as service");
    for (owner, body) in [(ALICE, "alice 1"), (ALICE, "alice 2"), (BOB, "bob 1")] {
        sqlx::query("insert into notes (owner, body) values ($1::uuid, $2)")
            .bind(owner)
            .bind(body)
            .execute(&mut *tx)
            .await
            .expect("the service role bypasses RLS");
    }
    tx.commit().await.expect("commit");

    let visible = |p: Principal| {
        let pool = pool.clone();
        async move {
            let mut tx = postgres::begin_as(&pool, &p).await.expect("begin");
            let rows: Vec<String> = sqlx::query_scalar("select body from notes order by id")
                .fetch_all(&mut *tx)
                .await
                .expect("select");
            rows
        }
    };
    assert_eq!(visible(user(ALICE)).await, ["alice 1", "alice 2"]);
    assert_eq!(visible(user(BOB)).await, ["bob 1"]);
    assert!(
        visible(Principal::from_key("key_pub", KeyTier::Public))
            .await
            .is_empty(),
        "anon sees nothing"
    );
    assert_eq!(visible(service.clone()).await.len(), 3);

    // Writing a row for someone else is refused with Postgres's own code.
    let mut tx = postgres::begin_as(&pool, &user(BOB)).await.expect("begin");
    let err = sqlx::query("insert into notes (owner, body) values ($1::uuid, 'forged')")
        .bind(ALICE)
        .execute(&mut *tx)
        .await
        .expect_err("RLS refuses");
    let code = err
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("42501"), "{err}");
    drop(tx);

    // Defaults read the caller; the variables and the claims are set for the transaction.
    let mut tx = postgres::begin_as(&pool, &user(BOB)).await.expect("begin");
    let (owner, org, role, sub): (String, String, String, String) = sqlx::query_as(
        "insert into notes (body) values ('mine') returning owner::text, reactor.org_id()::text, reactor.role(),
             current_setting('request.jwt.claims')::json ->> 'sub'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("insert with defaults");
    assert_eq!(
        (owner.as_str(), org.as_str(), role.as_str(), sub.as_str()),
        (BOB, ACME, "member", BOB)
    );
    tx.commit().await.expect("commit");

    // Outside a request nothing lingers on the pooled connection.
    let (user_id, current_role): (Option<String>, String) =
        sqlx::query_as("select reactor.user_id()::text, current_user::text")
            .fetch_one(&pool)
            .await
            .expect("select");
    assert_eq!(user_id, None);
    assert_ne!(current_role, "reactor_authenticated");
}

#[tokio::test]
async fn sqlite_helpers_answer_with_the_caller_for_one_call_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Db::Sqlite(pool) = Db::connect(&format!(
        "sqlite://{}",
        dir.path().join("vars.db").display()
    ))
    .await
    .expect("db") else {
        panic!("a path opens sqlite");
    };
    let read = |conn: &mut rusqlite::Connection| {
        Ok(conn.query_row(
            "select reactor_user_id(), reactor_org_id(), reactor_role()",
            [],
            |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            },
        )?)
    };
    let seen = pool
        .with_principal(&user(ALICE), read)
        .await
        .expect("as alice");
    assert_eq!(
        seen,
        (Some(ALICE.into()), Some(ACME.into()), Some("member".into()))
    );
    // Every pooled connection is clean afterwards, including the one alice used.
    for _ in 0..8 {
        assert_eq!(pool.with(read).await.expect("plain"), (None, None, None));
    }
    let seen = pool.with_principal(&user(BOB), read).await.expect("as bob");
    assert_eq!(seen.0.as_deref(), Some(BOB));
}
