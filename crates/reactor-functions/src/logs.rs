//! What handlers wrote to `console`, kept per function in memory (bounded), with a sequence
//! number so `reactor functions logs --follow` can ask for what came after the last line it saw.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::Notify;

use crate::js::Level;

/// Lines kept per function; older ones are dropped first.
pub const LINES_PER_FUNCTION: usize = 1000;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogLine {
    /// Increases across all functions of this server process.
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub invocation: String,
    pub level: &'static str,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct LogBook {
    /// Also print each line on stderr (`reactor dev`, where the terminal is the log).
    echo: bool,
    seq: AtomicU64,
    lines: Mutex<HashMap<String, VecDeque<LogLine>>>,
    appended: Notify,
}

impl LogBook {
    pub fn new(echo: bool) -> LogBook {
        LogBook {
            echo,
            ..LogBook::default()
        }
    }

    pub fn append(&self, function: &str, invocation: &str, level: Level, message: &str) {
        let line = LogLine {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time: reactor_core::time::utc_now_millis(),
            invocation: invocation.to_string(),
            level: level.as_str(),
            message: message.to_string(),
        };
        if self.echo {
            eprintln!("{function} {:5} [{invocation}] {message}", line.level);
        }
        {
            let mut lines = self.lock();
            let kept = lines.entry(function.to_string()).or_default();
            if kept.len() == LINES_PER_FUNCTION {
                kept.pop_front();
            }
            kept.push_back(line);
        }
        self.appended.notify_waiters();
    }

    /// The lines of `function` after `after` (a `seq`), oldest first, at most `limit`.
    pub fn read(&self, function: &str, after: u64, limit: usize) -> Vec<LogLine> {
        let lines = self.lock();
        let Some(kept) = lines.get(function) else {
            return Vec::new();
        };
        let mut out: Vec<LogLine> = kept
            .iter()
            .rev()
            .take_while(|l| l.seq > after)
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// The kept lines of one invocation of `function`, oldest first: only those are copied
    /// (a job reads its run's lines this way after every run).
    pub fn read_invocation(&self, function: &str, invocation: &str) -> Vec<LogLine> {
        let lines = self.lock();
        lines.get(function).map_or_else(Vec::new, |kept| {
            kept.iter()
                .filter(|l| l.invocation == invocation)
                .cloned()
                .collect()
        })
    }

    /// Like [`read`](Self::read), but waits up to `wait` for a first new line.
    pub async fn follow(
        &self,
        function: &str,
        after: u64,
        limit: usize,
        wait: std::time::Duration,
    ) -> Vec<LogLine> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.appended.notified();
            let lines = self.read(function, after, limit);
            if !lines.is_empty() || tokio::time::Instant::now() >= deadline {
                return lines;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.read(function, after, limit);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<LogLine>>> {
        // Appends and reads keep the map consistent at every step; a panic elsewhere cannot
        // leave it half-written.
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines_per_function_and_reads_after_a_cursor() {
        let book = LogBook::default();
        for i in 0..LINES_PER_FUNCTION + 5 {
            book.append("a", "inv", Level::Info, &format!("line {i}"));
        }
        book.append("b", "inv", Level::Error, "other");
        let all = book.read("a", 0, usize::MAX);
        assert_eq!(all.len(), LINES_PER_FUNCTION);
        assert_eq!(all[0].message, "line 5");
        let tail = book.read("a", all[all.len() - 3].seq, usize::MAX);
        assert_eq!(tail.len(), 2);
        assert_eq!(book.read("b", 0, 10)[0].level, "error");
        assert!(book.read("c", 0, 10).is_empty());
        assert_eq!(book.read("a", 0, 2).len(), 2, "the limit keeps the newest");
    }

    #[test]
    fn one_invocations_lines_are_read_alone() {
        let book = LogBook::default();
        for i in 0..10 {
            book.append(
                "f",
                &format!("inv-{}", i % 3),
                Level::Info,
                &format!("line {i}"),
            );
        }
        book.append("g", "inv-1", Level::Info, "another function");
        let lines = book.read_invocation("f", "inv-1");
        let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["line 1", "line 4", "line 7"]);
        assert!(book.read_invocation("f", "inv-9").is_empty());
        assert!(book.read_invocation("h", "inv-1").is_empty());
    }
}
