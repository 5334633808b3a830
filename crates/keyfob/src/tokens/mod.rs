//! Signing and verifying Keyfob's JWTs.

mod hint;
mod keys;
mod provider;
mod recorder;
mod service;

pub use hint::IdTokenHint;
pub use keys::{KeySet, generate_signing_key, load_key_set, signing_key_aad};
pub use recorder::TokenRecorder;
pub use service::{DEFAULT_CACHE_BYTES, TokenError, TokenService, Verified};
