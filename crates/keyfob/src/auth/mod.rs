//! Who is calling: the in-memory index of API keys and revoked tokens, the change feed that keeps
//! it current on every node, the read-through for keys it does not know yet, and the extractor
//! that turns `Authorization` into a [`Principal`].

mod extract;
mod index;
pub mod limits;
mod lookup;
pub mod meter;
mod sync;
pub mod usage;

pub use extract::{Auth, authenticate, authenticate_reading_through};
pub use index::{AuthIndex, KeyCutoffReason, KeyEntry};
pub use lookup::{LOOKUP_TIMEOUT, NEGATIVE_CAPACITY};
pub use sync::{SyncHandle, catch_up, note_key_cutoff, spawn_sync};

pub use keyfob_domain::Principal;
