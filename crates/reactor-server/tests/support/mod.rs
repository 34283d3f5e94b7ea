//! What the tests that run `reactor-server` as a process share.
#![allow(dead_code)] // Each test binary uses its own part.

use std::process::{Child, Command};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_reactor-server");

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// `reactor-server keys create` on `database_url`: the key, printed once.
pub fn keys_create(database_url: &str, tier: &str) -> String {
    let out = Command::new(BIN)
        .args(["keys", "create", "--tier", tier, "--name", "test"])
        .env("REACTOR_DATABASE_URL", database_url)
        .output()
        .expect("run keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// Waits until `base` answers `/healthz`.
pub async fn wait_up(http: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} never came up");
}
