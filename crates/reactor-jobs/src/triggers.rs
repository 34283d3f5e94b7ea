//! Event triggers: a job on `data.insert|update|delete` of a table, `storage.object.created|
//! deleted` in a bucket, or `auth.user.created` is a database trigger on the table the change
//! happens in, which inserts the job's run in the same transaction as the change — so a
//! rolled-back insert enqueues nothing, and a committed one always enqueues its run.
//!
//! The triggers Reactor manages are named `reactor_job_…` (Postgres) / `_reactor_job_…`
//! (SQLite) after a hash of what they do, so syncing them is comparing names: those no longer
//! wanted are dropped and the missing ones made, in one transaction. On SQLite the row is
//! spelled out column by column, so a table's columns are part of the hash and a migration
//! that changes them makes a new trigger.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use reactor_manifest::Trigger;

use crate::JobSpec;

/// Where an event comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Source {
    /// A project table.
    Data(String),
    /// Storage's object rows, in one bucket.
    Storage(String),
    /// Identity's users.
    Users,
}

/// One trigger: after `op` on the source, a run of each job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Wanted {
    pub source: Source,
    /// `INSERT`, `UPDATE` or `DELETE`.
    pub op: &'static str,
    pub event: String,
    /// (job, max attempts), by name.
    pub jobs: Vec<(String, i32)>,
}

impl Wanted {
    pub fn hash_with(&self, extra: &str) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        extra.hash(&mut h);
        format!("{:016x}", h.finish())
    }
}

/// A trigger's place: its source, operation and event name.
type Place = (Source, &'static str, String);

/// The triggers the jobs want, one per (source, operation), events that share one merged.
pub(crate) fn wanted(specs: &[&JobSpec]) -> Vec<Wanted> {
    let mut by: BTreeMap<Place, Vec<(String, i32)>> = BTreeMap::new();
    for spec in specs {
        let Trigger::Event {
            event,
            table,
            bucket,
        } = &spec.trigger
        else {
            continue;
        };
        let found = match (event.as_str(), table, bucket) {
            ("data.insert", Some(t), _) => Some((Source::Data(t.clone()), "INSERT")),
            ("data.update", Some(t), _) => Some((Source::Data(t.clone()), "UPDATE")),
            ("data.delete", Some(t), _) => Some((Source::Data(t.clone()), "DELETE")),
            ("storage.object.created", _, Some(b)) => Some((Source::Storage(b.clone()), "INSERT")),
            ("storage.object.deleted", _, Some(b)) => Some((Source::Storage(b.clone()), "DELETE")),
            ("auth.user.created", _, _) => Some((Source::Users, "INSERT")),
            _ => None,
        };
        if let Some((source, op)) = found {
            by.entry((source, op, event.clone()))
                .or_default()
                .push((spec.name.clone(), spec.max_attempts));
        }
    }
    by.into_iter()
        .map(|((source, op, event), mut jobs)| {
            jobs.sort();
            Wanted {
                source,
                op,
                event,
                jobs,
            }
        })
        .collect()
}

/// A SQL string literal.
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A quoted SQL identifier.
pub(crate) fn ident(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}
