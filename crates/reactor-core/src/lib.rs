//! Types shared by every Reactor crate.
//!
//! Nothing here touches a database or a socket: these are the words the capability crates,
//! the server and the CLI use to talk to each other — who is calling ([`Principal`]), what
//! went wrong ([`ApiError`], rendered as `{code, message, details, hint}`), what an API key
//! looks like ([`keys`]) and which capabilities exist ([`Capability`]).

mod capability;
mod error;
mod extract;
pub mod keys;
mod principal;
pub mod seal;
pub mod time;

pub use capability::{Capability, UnknownCapability};
pub use error::ApiError;
pub use extract::JsonBody;
pub use principal::{DbRole, KeyTier, Principal};
