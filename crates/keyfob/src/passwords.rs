//! Password hashing with argon2id, on the blocking pool and never more than `workers` at once, so
//! a flood of logins cannot starve the async threads that check tokens. Each hash works in a
//! 19 MiB buffer taken from a pool and given back, so the process holds at most one per worker.

use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq as _;
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
    memory: Arc<MemoryPool>,
}

/// Verified against when an email is unknown, so that both paths cost the same hash: a hash of a
/// random password nobody kept, made with [`params`] (a test checks they still agree). A match
/// would not count anyway. Kept as a constant rather than hashed at start-up, which would cost a
/// hash and hold a 19 MiB buffer from the start.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$Ci6pLqEi8hej/WI1exLFjA$PdNdA467PCY1x7//7kpJs59dsvu+AFzLyxmeGVufJW4";

/// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters")
}

/// Argon2's working memory (19 MiB a hash), kept and reused rather than allocated per hash.
///
/// Allocated per hash, each block of memory was freed on whichever blocking thread ran the hash, and
/// glibc kept it in that thread's arena for the next large request: after a login flood the process
/// held one 19 MiB buffer per thread that had ever hashed. Here a hash borrows a buffer and gives it
/// back, so at most one buffer per password worker exists, allocated when first needed and never
/// freed (the workers' semaphore bounds how many hashes run at once).
#[derive(Default)]
struct MemoryPool {
    free: Mutex<Vec<Vec<Block>>>,
}

impl MemoryPool {
    /// Runs `work` with `blocks` blocks of memory. A hash whose parameters need more than the
    /// standard ones (a PHC string made with other settings) gets a buffer of its own, freed after.
    fn with<T>(&self, blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
        let standard = params().block_count();
        if blocks > standard {
            return work(&mut vec![Block::default(); blocks]);
        }
        let taken = self.free.lock().expect("pool lock poisoned").pop();
        let mut buffer = taken.unwrap_or_else(|| vec![Block::default(); standard]);
        let result = work(&mut buffer[..blocks]);
        self.free.lock().expect("pool lock poisoned").push(buffer);
        result
    }

    #[cfg(test)]
    fn buffers(&self) -> usize {
        self.free.lock().expect("pool lock poisoned").len()
    }
}

fn hashing_error(e: impl std::fmt::Display) -> PasswordError {
    PasswordError::Hashing(e.to_string())
}

/// Hashes `password` with a new random salt into a PHC string, as `argon2`'s `hash_password` does.
fn hash_blocking(memory: &MemoryPool, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(hashing_error)?;
    let params = params();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    memory
        .with(params.block_count(), |blocks| {
            argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, blocks)
        })
        .map_err(hashing_error)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(hashing_error)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(hashing_error)?),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a PHC string with the algorithm, version, parameters and salt the
/// string names (so hashes made with other settings still verify), comparing in constant time.
fn verify_blocking(memory: &MemoryPool, password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let Ok(version) = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out_buf = [0u8; Output::MAX_LENGTH];
    let out = &mut out_buf[..expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let hashed = memory.with(params.block_count(), |blocks| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, blocks)
    });
    hashed.is_ok() && bool::from(out.ct_eq(expected.as_bytes()))
}

impl Passwords {
    pub fn new(workers: usize) -> Self {
        Passwords {
            permits: Arc::new(Semaphore::new(workers.max(1))),
            memory: Arc::new(MemoryPool::default()),
        }
    }

    /// Hashes a new password (its length already checked).
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        let memory = self.memory.clone();
        tokio::task::spawn_blocking(move || hash_blocking(&memory, &password))
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
        let phc = phc.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let memory = self.memory.clone();
        let ok = tokio::task::spawn_blocking(move || verify_blocking(&memory, &password, &phc))
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
        assert!(!passwords.verify("correct horse battery".into(), None).await);
    }

    /// Made by the code before the memory pool (`argon2`'s own `hash_password`, OWASP parameters)
    /// from the password "correct horse battery": such strings are in databases and must verify.
    const STORED_BEFORE: &str = "$argon2id$v=19$m=19456,t=2,p=1$cj3nU37D8bnp9doSVUpprg$BTG6zlUfGGM7unusbUYJRZT8CwIXVEzMqMp2Pjm5Zsk";

    /// A PHC string with parameters other than ours, in whichever direction (more memory than the
    /// pooled buffer, several lanes, an older version).
    fn made_by_the_argon2_crate(
        password: &str,
        algorithm: Algorithm,
        version: Version,
        params: Params,
    ) -> String {
        use argon2::password_hash::PasswordHasher as _;
        Argon2::new(algorithm, version, params)
            .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    }

    #[test]
    fn phc_strings_stored_before_still_verify() {
        let memory = MemoryPool::default();
        assert!(verify_blocking(
            &memory,
            "correct horse battery",
            STORED_BEFORE
        ));
        assert!(!verify_blocking(
            &memory,
            "correct horse battery!",
            STORED_BEFORE
        ));
        for (algorithm, version, params) in [
            (Algorithm::Argon2id, Version::V0x13, params()),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(8 * 1024, 1, 2, None).unwrap(),
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(24 * 1024, 1, 1, Some(64)).unwrap(),
            ),
            (
                Algorithm::Argon2i,
                Version::V0x10,
                Params::new(4 * 1024, 3, 1, None).unwrap(),
            ),
            (
                Algorithm::Argon2d,
                Version::V0x13,
                Params::new(4 * 1024, 1, 1, None).unwrap(),
            ),
        ] {
            let phc = made_by_the_argon2_crate("a password", algorithm, version, params);
            assert!(verify_blocking(&memory, "a password", &phc), "{phc}");
            assert!(!verify_blocking(&memory, "a passworD", &phc), "{phc}");
        }
        // Only the standard buffer is kept; the larger hash had its own, freed after.
        assert_eq!(memory.buffers(), 1);
        for broken in [
            "",
            "$argon2id$",
            &STORED_BEFORE[..STORED_BEFORE.len() - 4],
            "$scrypt$ln=4",
        ] {
            assert!(!verify_blocking(&memory, "correct horse battery", broken));
        }
    }

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_does() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(
            Algorithm::try_from(dummy.algorithm).unwrap(),
            Algorithm::Argon2id
        );
        assert_eq!(dummy.version, Some(Version::V0x13.into()));
        assert_eq!(
            Params::try_from(&dummy).unwrap().block_count(),
            params().block_count()
        );
        assert_eq!(dummy.params, ParamsString::try_from(&params()).unwrap());
        let memory = MemoryPool::default();
        let real = hash_blocking(&memory, "correct horse battery").unwrap();
        assert_eq!(PasswordHash::new(&real).unwrap().params, dummy.params);
        // Verifying against it is a full hash that fails.
        assert!(!verify_blocking(
            &memory,
            "correct horse battery",
            DUMMY_HASH
        ));
    }

    #[test]
    fn new_hashes_are_the_ones_the_argon2_crate_makes() {
        use argon2::password_hash::PasswordVerifier as _;
        let memory = MemoryPool::default();
        let phc = hash_blocking(&memory, "correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        let standard = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
        assert!(
            standard
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        assert!(
            standard
                .verify_password(b"correct horse batterY", &parsed)
                .is_err()
        );
    }

    #[test]
    fn reused_memory_gives_the_same_answers() {
        // One buffer for everything: each hash starts from the previous one's leftovers.
        let memory = MemoryPool::default();
        let passwords = ["first password", "second password", "third password"];
        let hashes: Vec<String> = passwords
            .iter()
            .map(|p| hash_blocking(&memory, p).unwrap())
            .collect();
        for (i, phc) in hashes.iter().enumerate() {
            for (j, password) in passwords.iter().enumerate() {
                assert_eq!(verify_blocking(&memory, password, phc), i == j);
            }
        }
        // Same salt and password: the same output whatever the buffer held before.
        let salt = b"sixteen byte slt";
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
        let mut fresh = [0u8; 32];
        argon2
            .hash_password_into(b"a password", salt, &mut fresh)
            .unwrap();
        let mut reused = [0u8; 32];
        memory.with(params().block_count(), |blocks| {
            argon2
                .hash_password_into_with_memory(b"a password", salt, &mut reused, blocks)
                .unwrap()
        });
        assert_eq!(fresh, reused);
        assert_eq!(memory.buffers(), 1);
    }

    #[cfg(target_os = "linux")]
    fn resident_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// A login flood runs hashes one after another on many blocking threads. Allocating each
    /// hash's 19 MiB left one such block in every thread's allocator arena; with the pool the
    /// process keeps one buffer per worker.
    #[cfg(target_os = "linux")]
    #[test]
    fn hashing_on_many_threads_keeps_one_buffer_per_worker() {
        const THREADS: usize = 12;
        let passwords = Passwords::new(1);
        let phc = hash_blocking(&passwords.memory, "a password").unwrap();
        let before = resident_bytes();
        let turn = Arc::new(Mutex::new(()));
        let done = Arc::new(std::sync::Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (memory, turn, done, phc) = (
                    passwords.memory.clone(),
                    turn.clone(),
                    done.clone(),
                    phc.clone(),
                );
                // The threads stay alive until all have hashed, as the blocking pool's do.
                std::thread::spawn(move || {
                    let ok = {
                        let _turn = turn.lock().unwrap();
                        verify_blocking(&memory, "a password", &phc)
                    };
                    done.wait();
                    ok
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().unwrap());
        }
        let grown = resident_bytes().saturating_sub(before);
        assert!(
            grown < 3 * 19 * 1024 * 1024,
            "resident memory grew by {} MiB",
            grown >> 20
        );
        assert_eq!(passwords.memory.buffers(), 1);
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
