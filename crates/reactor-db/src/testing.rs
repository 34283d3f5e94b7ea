//! Helpers for tests that need a real Postgres: each test gets a database of its own,
//! created on the server `REACTOR_TEST_DATABASE_URL` names.

use sqlx::Connection;

/// The variable CI sets to the machine's PostgreSQL.
pub const TEST_DATABASE_VAR: &str = "REACTOR_TEST_DATABASE_URL";

/// Creates a fresh, uniquely named database and returns its URL; `None` (after saying so in
/// one line) when `REACTOR_TEST_DATABASE_URL` is unset. Panics when it is set but unusable,
/// so CI fails instead of skipping.
pub async fn fresh_postgres_database(label: &str) -> Option<String> {
    let Some(base) = std::env::var(TEST_DATABASE_VAR)
        .ok()
        .filter(|v| !v.is_empty())
    else {
        eprintln!("skipping {label}: {TEST_DATABASE_VAR} is not set");
        return None;
    };
    let name = format!(
        "reactor_test_{}_{}",
        label
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(20)
            .collect::<String>()
            .to_lowercase(),
        std::process::id() as u64 * 1_000_000 + u64::from(rand_suffix())
    );
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("{TEST_DATABASE_VAR}={base} is set but unreachable: {e}"));
    // `name` is made here of ASCII letters, digits and `_`.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    Some(with_database(&base, &name))
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos % 10_000) * 100 + NEXT.fetch_add(1, Ordering::Relaxed) % 100
}

/// `base` with its database path replaced by `name`.
fn with_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let root = match head[after_scheme..].find('/') {
        Some(slash) => &head[..after_scheme + slash],
        None => head,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }
}
