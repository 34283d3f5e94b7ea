//! The migration engine against the machine's Postgres, with the scaffold's own first
//! migration (the one `reactor init` writes) as the subject.

use reactor_core::{KeyTier, Principal};
use reactor_data::migrations::{self, MigrationError, MigrationFile, Status};
use reactor_db::testing::fresh_postgres_database;
use reactor_db::{Db, postgres};

const SCAFFOLD: &str = include_str!("../../reactor-cli/templates/init/0001_init.sql");

fn member(user: &str, org: &str) -> Principal {
    let mut p = Principal::from_key("key", KeyTier::Public);
    p.user_id = Some(user.into());
    p.org_id = Some(org.into());
    p.role = Some("member".into());
    p
}

#[tokio::test]
async fn postgres_migrations_apply_once_atomically_and_report_where_they_fail() {
    let Some(url) = fresh_postgres_database("migrations").await else {
        return;
    };
    let db = Db::connect(&url).await.expect("db");
    let Db::Postgres(pool) = &db else {
        panic!("postgres")
    };

    // A server's data is never one command away from deletion.
    assert!(matches!(
        migrations::reset(&db).await,
        Err(MigrationError::ResetRefused)
    ));

    let first = MigrationFile::new("0001_init.sql", SCAFFOLD);
    assert_eq!(
        migrations::migrate(&db, std::slice::from_ref(&first))
            .await
            .expect("migrate"),
        ["0001_init.sql"]
    );
    assert!(
        migrations::migrate(&db, std::slice::from_ref(&first))
            .await
            .expect("again")
            .is_empty(),
        "each once"
    );
    let states = migrations::status(&db, std::slice::from_ref(&first))
        .await
        .expect("status");
    assert_eq!(states[0].status, Status::Applied);

    // The scaffold's policies keep organizations apart, under real RLS.
    let (alice, bob) = (
        "00000000-0000-0000-0000-00000000000a",
        "00000000-0000-0000-0000-00000000000b",
    );
    let (acme, globex) = (
        "00000000-0000-0000-0000-0000000000ac",
        "00000000-0000-0000-0000-0000000000bc",
    );
    for (user, org, title) in [(alice, acme, "acme todo"), (bob, globex, "globex todo")] {
        let mut tx = postgres::begin_as(pool, &member(user, org))
            .await
            .expect("begin");
        sqlx::query("insert into todos (title) values ($1)")
            .bind(title)
            .execute(&mut *tx)
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
    }
    let mut tx = postgres::begin_as(pool, &member(alice, acme))
        .await
        .expect("begin");
    let seen: Vec<String> = sqlx::query_scalar("select title from todos")
        .fetch_all(&mut *tx)
        .await
        .expect("select");
    assert_eq!(seen, ["acme todo"]);
    let forged = sqlx::query("insert into todos (title, org_id) values ('sneaky', $1::uuid)")
        .bind(globex)
        .execute(&mut *tx)
        .await
        .expect_err("another org's row is refused");
    assert_eq!(
        forged.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("42501")
    );
    drop(tx);

    // A failing file: nothing of it, nor of the files after it, is applied.
    let broken = MigrationFile::new(
        "0002_tags.sql",
        "create table tags (id int primary key);\n\ncreate tabel oops (x int);\n",
    );
    let later = MigrationFile::new("0003_more.sql", "create table more (id int);");
    let files = [first.clone(), broken, later];
    match migrations::migrate(&db, &files).await {
        Err(e @ MigrationError::Failed { .. }) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with("0002_tags.sql:3:8: syntax error at or near \"tabel\""),
                "{shown}"
            );
            assert!(
                shown.contains("SQLSTATE 42601") && shown.contains("nothing was applied"),
                "{shown}"
            );
            assert!(e.hint().is_some());
        }
        other => panic!("expected a located failure, got {other:?}"),
    }
    let tags: Option<String> = sqlx::query_scalar("select to_regclass('public.tags')::text")
        .fetch_one(pool)
        .await
        .expect("q");
    assert_eq!(
        tags, None,
        "the failed file's first statement was rolled back"
    );
    let states = migrations::status(&db, &files).await.expect("status");
    let pending: Vec<&str> = states
        .iter()
        .filter(|s| s.status == Status::Pending)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(pending, ["0002_tags.sql", "0003_more.sql"]);

    // An applied file that changed is refused by name, and nothing else is applied.
    let edited = MigrationFile::new("0001_init.sql", format!("{SCAFFOLD}\n-- edited"));
    let later = MigrationFile::new("0003_more.sql", "create table more (id int);");
    match migrations::migrate(&db, &[edited.clone(), later.clone()]).await {
        Err(MigrationError::Modified { name }) => assert_eq!(name, "0001_init.sql"),
        other => panic!("expected Modified, got {other:?}"),
    }
    let states = migrations::status(&db, &[edited, later])
        .await
        .expect("status");
    assert_eq!(states[0].status, Status::Modified);
    assert_eq!(states[1].status, Status::Pending);
}

#[tokio::test]
async fn files_are_read_in_name_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("0002_b.sql"), "select 2;").expect("write");
    std::fs::write(dir.path().join("0001_a.sql"), "select 1;").expect("write");
    std::fs::write(dir.path().join("notes.md"), "not a migration").expect("write");
    let files = migrations::read_dir(dir.path()).expect("read");
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["0001_a.sql", "0002_b.sql"]);
    assert!(
        migrations::read_dir(&dir.path().join("absent"))
            .expect("read")
            .is_empty()
    );
    std::fs::write(dir.path().join("0003_bad.sql"), [0xff, 0xfe]).expect("write");
    assert!(matches!(
        migrations::read_dir(dir.path()),
        Err(MigrationError::NotUtf8 { .. })
    ));
}

#[tokio::test]
async fn sqlite_migrations_translate_or_refuse_and_apply_atomically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::connect(&format!("sqlite://{}", dir.path().join("o1.db").display()))
        .await
        .expect("db");
    let scaffold = MigrationFile::new("0001_init.sql", SCAFFOLD);
    assert_eq!(
        migrations::migrate(&db, std::slice::from_ref(&scaffold))
            .await
            .expect("the scaffold translates"),
        ["0001_init.sql"]
    );
    let states = migrations::status(&db, std::slice::from_ref(&scaffold))
        .await
        .expect("status");
    assert_eq!(states[0].status, Status::Applied);
    let Db::Sqlite(pool) = &db else {
        panic!("sqlite")
    };
    let (policies, rls): (i64, i64) = pool
        .with(|conn| {
            Ok(conn.query_row(
                "select (select count(*) from _reactor_policies), (select count(*) from _reactor_rls)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .expect("records");
    assert_eq!((policies, rls), (4, 1));

    // A file with something O1 cannot keep the meaning of is refused where it stands, and the
    // file before it in the same run is not applied either.
    let good = MigrationFile::new(
        "0002_tags.sql",
        "create table tags (id integer primary key, name text not null);",
    );
    let bad = MigrationFile::new(
        "0003_crypto.sql",
        "-- needs an extension\ncreate table t (x int);\n  create extension pgcrypto;",
    );
    let files = [scaffold.clone(), good.clone(), bad];
    match migrations::migrate(&db, &files).await {
        Err(MigrationError::Untranslatable {
            file,
            line,
            column,
            hint,
            ..
        }) => {
            assert_eq!((file.as_str(), line, column), ("0003_crypto.sql", 3, 3));
            assert!(hint.contains("O2"), "{hint}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let tags: i64 = pool
        .with(|conn| {
            Ok(conn.query_row(
                "select count(*) from sqlite_schema where name in ('tags', 't')",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .expect("count");
    assert_eq!(tags, 0, "nothing of the failed run was applied");

    // A statement SQLite itself rejects is placed at its line.
    let failing = MigrationFile::new(
        "0003_dup.sql",
        "create table once (id int);\n\ncreate table once (id int);",
    );
    match migrations::migrate(&db, &[scaffold.clone(), good.clone(), failing]).await {
        Err(MigrationError::Failed { file, line, .. }) => {
            assert_eq!((file.as_str(), line), ("0003_dup.sql", 3));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(
        migrations::migrate(&db, &[scaffold, good])
            .await
            .expect("migrate"),
        ["0002_tags.sql"]
    );
}
