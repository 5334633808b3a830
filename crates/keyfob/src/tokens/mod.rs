//! Signing and verifying Keyfob's JWTs.

mod keys;
mod recorder;
mod service;

pub use keys::{KeySet, generate_signing_key, load_key_set};
pub use recorder::TokenRecorder;
pub use service::{TokenError, TokenService, Verified};
