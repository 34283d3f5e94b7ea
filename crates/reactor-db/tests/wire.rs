//! Data's protocol client (`reactor_db::wire`) logging in to a PostgreSQL cluster of its own,
//! whose `pg_hba.conf` asks each role for another password method (SCRAM-SHA-256, md5,
//! cleartext), over TCP, after setting the roles up over the cluster's Unix socket.
//!
//! The shared test server trusts every connection, so it cannot show that passwords work.
//! The cluster is made with the machine's `initdb`, run as the `postgres` system user; where
//! there is none (no PostgreSQL server binaries, not root), the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use reactor_db::wire::{Batching, Client, Counters, WireError};

struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A server binary to run as the `postgres` system user.
    fn as_postgres(bin: &Path, program: &str) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        command
    }

    fn run(bin: &Path, program: &str, args: &[&str]) {
        let out = Cluster::as_postgres(bin, program)
            .args(args)
            .output()
            .expect("runuser");
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> Option<Cluster> {
        let root = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&root.stdout).trim() != "0" {
            eprintln!(
                "skipped: making a PostgreSQL cluster needs root (to run initdb as postgres)"
            );
            return None;
        }
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .next()?;
        let bin = version.path().join("bin");
        if !bin.join("initdb").exists() {
            eprintln!("skipped: no initdb in {}", bin.display());
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let chown = Command::new("chown")
            .args(["postgres:"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(chown.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = Cluster { bin, dir, port };
        let data = cluster.data();
        let data = data.to_str().expect("utf-8 path");
        Cluster::run(
            &cluster.bin,
            "initdb",
            &["-D", data, "-U", "postgres", "-E", "UTF8", "--no-sync"],
        );
        std::fs::write(
            cluster.data().join("pg_hba.conf"),
            "local all postgres trust\n\
             host all scram_user 127.0.0.1/32 scram-sha-256\n\
             host all md5_user 127.0.0.1/32 md5\n\
             host all plain_user 127.0.0.1/32 password\n",
        )
        .expect("pg_hba.conf");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            cluster.port,
            cluster.dir.path().display()
        );
        let log = cluster.dir.path().join("log");
        Cluster::run(
            &cluster.bin,
            "pg_ctl",
            &[
                "-D",
                data,
                "-w",
                "-o",
                &options,
                "-l",
                log.to_str().expect("utf-8"),
                "start",
            ],
        );
        Some(cluster)
    }

    async fn connect(&self, url: &str) -> Result<Client, WireError> {
        Client::connect(&url.parse().expect("url"), Arc::new(Counters::default())).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Cluster::as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test]
async fn logs_in_with_scram_md5_and_cleartext_passwords() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    // The Unix socket, trusted: where the roles are made.
    let admin = cluster
        .connect(&format!(
            "host={} port={} user=postgres dbname=postgres",
            cluster.dir.path().display(),
            cluster.port
        ))
        .await
        .expect("the Unix socket");
    admin
        .simple(
            "set password_encryption = 'scram-sha-256';
             create role scram_user login password 'pw-scram';
             set password_encryption = 'md5';
             create role md5_user login password 'pw-md5';
             create role plain_user login password 'pw-plain';",
        )
        .await
        .expect("roles");
    let stored = admin
        .query_one(
            "select string_agg(rolname || ':' || left(rolpassword, 3), ',' order by rolname)
             from pg_authid where rolname like '%_user'",
            &[],
            &[],
            Batching::Shared,
        )
        .await
        .expect("stored");
    assert_eq!(
        stored.text(0).expect("text"),
        Some("md5_user:md5,plain_user:md5,scram_user:SCR"),
        "each role's password is stored the way its method needs"
    );

    let port = cluster.port;
    for (user, password) in [
        ("scram_user", "pw-scram"),
        ("md5_user", "pw-md5"),
        ("plain_user", "pw-plain"),
    ] {
        let client = cluster
            .connect(&format!(
                "postgres://{user}:{password}@127.0.0.1:{port}/postgres"
            ))
            .await
            .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
        let row = client
            .query_one("select current_user::text", &[], &[], Batching::Shared)
            .await
            .expect("query");
        assert_eq!(row.text(0).expect("text"), Some(user));

        let wrong = cluster
            .connect(&format!("postgres://{user}:nope@127.0.0.1:{port}/postgres"))
            .await
            .expect_err("a wrong password");
        assert_eq!(
            wrong.as_db().map(|e| e.code.as_str()),
            Some("28P01"),
            "{user}: {wrong}"
        );
        let missing = cluster
            .connect(&format!("postgres://{user}@127.0.0.1:{port}/postgres"))
            .await
            .expect_err("no password");
        assert!(missing.to_string().contains("has none"), "{missing}");
    }
}
