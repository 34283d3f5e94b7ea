//! Data: the project's own tables.
//!
//! Today: the migration engine ([`migrations`]) — the project's SQL files, in PostgreSQL's
//! dialect, applied in name order, each once, recorded with a checksum, all pending ones in one
//! transaction. Postgres (O2) runs them as written; the SQLite (O1) translation, the schema
//! cache and the `/data/v1` API follow.

pub mod http;
pub mod migrations;
pub mod query;
