//! Data: the project's own tables behind PostgREST's URL grammar on `/data/v1`.
//!
//! Request flow: [`http`] reads the URL and headers into a [`grammar`] AST; [`api`] renders it
//! against the [`schema`] cache ([`render`] for reads, [`mutate`] for writes and rpc) into one
//! statement with bound values, and runs it in a transaction carrying the caller, so row-level
//! security applies. A read's statement is rendered once per query shape and kept
//! ([`templates`]); later reads of that shape bind their values to it. [`migrations`] applies
//! the project's SQL files; [`query`] is the service key's SQL console.

pub mod api;
pub mod error;
pub mod grammar;
pub mod http;
pub mod migrations;
pub mod mutate;
pub mod openapi;
pub mod query;
pub mod render;
pub mod schema;
mod sqlite_catalog;
mod sqlite_errors;
mod templates;
pub mod translate;
pub mod types;

pub use api::{DEFAULT_REQUEST_CONNECTIONS, Data, DataConfig};
pub use error::DataError;
