//! Who is calling: the in-memory index of API keys and revoked tokens, the change feed that keeps
//! it current on every node, and the extractor that turns `Authorization` into a [`Principal`].

mod extract;
mod index;
mod sync;

pub use extract::{Auth, authenticate};
pub use index::{AuthIndex, KeyEntry};
pub use sync::{SyncHandle, catch_up, spawn_sync};

pub use keyfob_domain::Principal;
