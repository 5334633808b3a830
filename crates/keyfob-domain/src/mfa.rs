//! A second factor: time-based one-time codes (TOTP, RFC 6238) from an authenticator app, and
//! recovery codes for when the app is lost.
//!
//! - A secret is 20 random bytes (160 bits, RFC 4226's recommendation). Codes are HMAC-SHA-1,
//!   6 digits, one per 30-second step, the settings every authenticator app reads from an
//!   `otpauth://` URI. A code of the step before or after the current one is accepted too
//!   (a clock a little off, a code typed as it changed); [`TotpSecret::check`] answers the step a
//!   code belongs to, so that the caller can refuse a code of a step already used (replay).
//! - Recovery codes are 16 characters of Crockford's base32 (80 random bits), shown as four groups
//!   of four; each works once, in place of a code. Only their SHA-256 is stored.
//! - What someone types is read by [`parse_code`]: six digits (spaces allowed) are a TOTP code,
//!   anything else of a recovery code's shape is one (case, dashes and spaces ignored).

use rand::RngCore;
use totp_rs::{Algorithm, TOTP};

use crate::secret::hash_secret;

/// Bytes in a TOTP secret.
pub const SECRET_LEN: usize = 20;
/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Digits in a code.
pub const DIGITS: u8 = 6;
/// Steps of drift accepted either way.
pub const SKEW: u8 = 1;
/// Recovery codes in a set.
pub const RECOVERY_CODES: usize = 10;
/// Characters in a recovery code (without its dashes).
const RECOVERY_LEN: usize = 16;
/// Crockford's base32: no `i`, `l`, `o`, `u`, so that a code read aloud or copied by hand is
/// not misread.
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A TOTP secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(…)")
    }
}

/// Why a secret read back could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a TOTP secret must be {SECRET_LEN} bytes")]
pub struct BadSecret;

impl TotpSecret {
    /// A new random secret.
    pub fn generate() -> TotpSecret {
        let mut bytes = vec![0u8; SECRET_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        TotpSecret(bytes)
    }

    /// A secret from its bytes (as opened from storage).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<TotpSecret, BadSecret> {
        if bytes.len() == SECRET_LEN {
            Ok(TotpSecret(bytes))
        } else {
            Err(BadSecret)
        }
    }

    /// The raw bytes, to seal.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The code generator for single steps (no skew: [`TotpSecret::check`] walks the window
    /// itself, to know the step a code belongs to).
    fn totp(&self, issuer: Option<&str>, account: &str) -> TOTP {
        TOTP::new(
            Algorithm::SHA1,
            usize::from(DIGITS),
            0,
            STEP_SECS,
            self.0.clone(),
            issuer.map(label_part),
            label_part(account),
        )
        .expect("a 160-bit secret with RFC 6238's settings and labels without a colon are valid")
    }

    /// The secret in base32 without padding, for typing into an authenticator app by hand.
    pub fn base32(&self) -> String {
        self.totp(None, "").get_secret_base32()
    }

    /// The `otpauth://totp/…` URI an authenticator app reads from a QR code: the issuer and the
    /// account's label (its email), SHA-1, 6 digits, 30 s.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        self.totp(Some(issuer), account).get_url()
    }

    /// The time step `code` belongs to, if it is this secret's code for the step of `unix_secs`
    /// or the one before or after (each compared in constant time); `None` otherwise.
    pub fn check(&self, code: &str, unix_secs: u64) -> Option<u64> {
        let totp = self.totp(None, "");
        let now = step_of(unix_secs);
        let skew = u64::from(SKEW);
        let mut matched = None;
        // Every step of the window is computed and compared, whichever matches.
        for step in now.saturating_sub(skew)..=now + skew {
            if totp.check(code, step * STEP_SECS) {
                matched = Some(step);
            }
        }
        matched
    }

    /// The code for the step of `unix_secs`.
    pub fn code_at(&self, unix_secs: u64) -> String {
        self.totp(None, "").generate(unix_secs)
    }
}

/// An otpauth label's part: the format reserves the colon.
fn label_part(text: &str) -> String {
    text.replace(':', " ")
}

/// The time step of `unix_secs`.
pub fn step_of(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// What someone typed in a code field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactorCode {
    /// Six digits from the authenticator app.
    Totp(String),
    /// A recovery code, normalised (lower case, no dashes): hash it with [`recovery_hash`].
    Recovery(String),
}

/// Why a code field was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("enter the 6-digit code from your authenticator app, or a recovery code")]
    Missing,
    #[error("that is neither a 6-digit code nor a recovery code")]
    Malformed,
}

/// Reads a code field: six digits (spaces between them allowed) or a recovery code.
pub fn parse_code(input: &str) -> Result<SecondFactorCode, CodeError> {
    let compact: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if compact.is_empty() {
        return Err(CodeError::Missing);
    }
    if compact.len() == usize::from(DIGITS) && compact.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(SecondFactorCode::Totp(compact));
    }
    normalized_recovery(&compact)
        .map(SecondFactorCode::Recovery)
        .ok_or(CodeError::Malformed)
}

/// A recovery code without dashes, lower case, with the letters Crockford's base32 reads as
/// digits (`o` as 0, `i` and `l` as 1) read so; `None` if it is not one's shape.
fn normalized_recovery(compact: &str) -> Option<String> {
    if compact.len() != RECOVERY_LEN {
        return None;
    }
    let normal: String = compact
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        })
        .collect();
    normal
        .bytes()
        .all(|b| RECOVERY_ALPHABET.contains(&b))
        .then_some(normal)
}

/// A new set of recovery codes, as shown (`xxxx-xxxx-xxxx-xxxx`).
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect()
}

fn new_recovery_code() -> String {
    let mut bytes = [0u8; RECOVERY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| char::from(RECOVERY_ALPHABET[usize::from(b & 31)]))
        .collect();
    chars
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// What the database keeps of a recovery code (as shown or as typed).
pub fn recovery_hash(code: &str) -> String {
    match parse_code(code) {
        Ok(SecondFactorCode::Recovery(normal)) => hash_secret(&normal),
        // Not a recovery code's shape: a hash that matches none.
        _ => hash_secret(&format!("not a recovery code: {code}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 vectors (8 digits there; the last 6 are the 6-digit codes).
    #[test]
    fn codes_match_rfc_6238() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap();
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(secret.code_at(time), code, "{time}");
            assert_eq!(secret.check(code, time), Some(step_of(time)));
        }
    }

    #[test]
    fn one_step_of_drift_is_accepted_either_way() {
        let secret = TotpSecret::generate();
        let now = 1_700_000_000;
        let code = secret.code_at(now);
        assert_eq!(secret.check(&code, now - 30), Some(step_of(now)));
        assert_eq!(secret.check(&code, now + 30), Some(step_of(now)));
        assert_eq!(secret.check(&code, now + 90), None);
        assert_eq!(secret.check(&code, now - 90), None);
        assert_eq!(secret.check("12345", now), None);
        assert_eq!(secret.check("+12345", now), None);
    }

    #[test]
    fn the_uri_names_issuer_and_account() {
        let secret = TotpSecret::generate();
        let uri = secret.otpauth_uri("Keyfob", "ada@example.com");
        assert!(
            uri.starts_with("otpauth://totp/Keyfob:ada%40example.com?"),
            "{uri}"
        );
        assert!(
            uri.contains(&format!("secret={}", secret.base32())),
            "{uri}"
        );
        assert!(uri.contains("issuer=Keyfob"), "{uri}");
        assert_eq!(secret.base32().len(), 32);
        // A colon in a label cannot break the URI.
        assert!(secret.otpauth_uri("a:b", "c:d").contains("a%20b:c%20d"));
        assert!(TotpSecret::from_bytes(vec![0; 19]).is_err());
        assert_eq!(format!("{secret:?}"), "TotpSecret(…)");
    }

    #[test]
    fn codes_are_read_as_typed() {
        assert_eq!(
            parse_code(" 123 456 "),
            Ok(SecondFactorCode::Totp("123456".into()))
        );
        assert_eq!(parse_code(""), Err(CodeError::Missing));
        assert_eq!(parse_code("  "), Err(CodeError::Missing));
        assert_eq!(parse_code("12345"), Err(CodeError::Malformed));
        assert_eq!(parse_code("12345a"), Err(CodeError::Malformed));
        assert_eq!(parse_code("garbage"), Err(CodeError::Malformed));
        assert_eq!(parse_code("１２３４５６"), Err(CodeError::Malformed));
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        for code in &codes {
            assert_eq!(code.len(), 19, "{code}");
            let typed = code.to_uppercase().replace('-', " ");
            let Ok(SecondFactorCode::Recovery(normal)) = parse_code(&typed) else {
                panic!("{typed}")
            };
            assert_eq!(recovery_hash(code), hash_secret(&normal));
            assert_eq!(recovery_hash(&typed), recovery_hash(code));
        }
        assert_ne!(codes[0], codes[1]);
        // O and I/L are read as the digits they look like.
        assert_eq!(
            parse_code("OIL0-0000-0000-0000"),
            Ok(SecondFactorCode::Recovery("0110000000000000".into()))
        );
        assert_eq!(parse_code("uuuu-0000-0000-0000"), Err(CodeError::Malformed));
        assert_ne!(recovery_hash("garbage"), recovery_hash("garbage2"));
    }
}
