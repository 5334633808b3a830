//! Password hashing with argon2id, on the blocking pool and never more than `workers` at once, so
//! a flood of logins cannot starve the async threads that check tokens.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Shortest and longest passwords accepted.
pub const MIN_PASSWORD_LEN: usize = 10;
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {MIN_PASSWORD_LEN} characters long")]
    TooShort,
    #[error("the password must be at most {MAX_PASSWORD_LEN} characters long")]
    TooLong,
    #[error("this password is one of the most commonly used ones; choose another")]
    Common,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Passwords too common to accept, one a line, lower case; `#` starts a comment line.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// Whether `password` is on the list of common passwords, ignoring case.
pub fn is_common_password(password: &str) -> bool {
    static LIST: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    let list = LIST.get_or_init(|| {
        COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    });
    list.contains(password.to_lowercase().as_str())
}

/// Checks a new password: its length, and that it is not one of the most common ones.
pub fn check_new_password(password: &str) -> Result<(), PasswordError> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(PasswordError::TooShort);
    }
    if len > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong);
    }
    if is_common_password(password) {
        return Err(PasswordError::Common);
    }
    Ok(())
}

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash of nothing, verified against when an email is unknown so both paths cost the same.
    dummy_hash: Arc<String>,
}

fn argon2() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

impl Passwords {
    pub fn new(workers: usize) -> Self {
        Passwords {
            permits: Arc::new(Semaphore::new(workers.max(1))),
            dummy_hash: Arc::new(hash_blocking("keyfob-dummy-password").expect("hashing works")),
        }
    }

    /// Hashes a new password (its length already checked).
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|e| PasswordError::Hashing(e.to_string()))?
    }

    /// Checks a password against a stored hash, or against a dummy when there is none, so an
    /// unknown email takes as long as a wrong password.
    pub async fn verify(&self, password: String, phc: Option<String>) -> bool {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_hash.as_str().to_owned());
        let ok = tokio::task::spawn_blocking(move || verify_blocking(&password, &phc))
            .await
            .unwrap_or(false);
        ok && known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_fail() {
        let passwords = Passwords::new(1);
        let phc = passwords
            .hash("correct horse battery".into())
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(
            passwords
                .verify("correct horse battery".into(), Some(phc.clone()))
                .await
        );
        assert!(
            !passwords
                .verify("wrong horse battery".into(), Some(phc))
                .await
        );
        assert!(!passwords.verify("keyfob-dummy-password".into(), None).await);
    }

    #[test]
    fn length_rules() {
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("long enough pw").is_ok());
        assert!(check_new_password(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        assert!(is_common_password("password"));
        assert!(is_common_password("QwertyUIOP"));
        assert!(matches!(
            check_new_password("1234567890"),
            Err(PasswordError::Common)
        ));
        assert!(matches!(
            check_new_password("Password123"),
            Err(PasswordError::Common)
        ));
        assert!(!is_common_password("correct horse battery staple"));
        assert!(
            COMMON_PASSWORDS
                .lines()
                .filter(|l| !l.starts_with('#'))
                .count()
                >= 300
        );
    }
}
