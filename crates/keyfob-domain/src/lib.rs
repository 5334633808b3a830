//! Keyfob's domain rules, in plain Rust: what a permission is and what it grants, how a credential
//! is told apart and hashed, what an expiry may be, what a token claims, how a resource query is
//! read, what an authorization request may ask for and how it is answered, and where a logout
//! may lead. Nothing here knows about HTTP or SQL, so every rule is unit-tested on its own.

pub mod audit;
pub mod authorize;
pub mod claims;
#[cfg(feature = "sqlx")]
pub mod column;
pub mod credential;
pub mod document;
pub mod email;
pub mod expiry;
pub mod id_token;
pub mod identity;
pub mod ids;
pub mod input;
pub mod key_policy;
pub mod logout;
pub mod mail;
pub mod mfa;
pub mod net;
pub mod oauth;
pub mod permission;
pub mod principal;
pub mod query;
pub mod secret;
pub mod session;
pub mod signing;
pub mod time;
pub mod token_list;
pub mod vault;

pub use self::time::Timestamp;
pub use claims::Claims;
pub use credential::{ApiKey, Credential, CredentialError};
pub use expiry::{ExpiryError, ExpiryPolicy};
pub use permission::{Action, Permission, PermissionError, PermissionSet};
pub use principal::{Principal, PrincipalKind};
