//! Throttling password checks, and the signed values that go with logins: device cookies and the
//! CSRF tokens of the forms shown before login.
//!
//! # Throttling
//!
//! A password check is throttled so that an attacker's failures slow the attacker, not the owner
//! of the account on another address (OWASP's "Slow Down Online Guessing Attacks with Device
//! Cookies"). Every check (owner and end-user logins, the reveal form's and the password change's
//! re-check) goes through [`Logins::begin`]:
//!
//! - a browser holding a valid **device cookie** for the email (issued after a successful login,
//!   signed, bound to the email) is a trusted client: it has its own budget
//!   (`login_attempts_per_device` per 15 minutes) and nothing else, so it gets in whatever
//!   strangers do to the account; once its own budget is spent it is treated as untrusted;
//! - any other client needs room in three budgets: one per email *and* client address
//!   (`login_attempts_per_email_and_address` per 15 minutes), one per client address whatever the
//!   email (`login_attempts_per_minute`, against password spraying), and one per email for all
//!   untrusted clients together (`login_attempts_per_email` per hour), so that many addresses
//!   guessing one password are slowed too.
//!
//! Only failures count: an attempt is taken from each budget before the password is checked (so
//! concurrent guesses cannot overshoot) and given back when the password was right. IPv6 clients
//! are counted by their /64 network, which one subscriber usually holds whole.

use std::net::IpAddr;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use keyfob_domain::email::Email;
use keyfob_domain::time::Timestamp;
use rand::RngCore;

use crate::config::Config;
use crate::crypto::MasterKey;
use crate::http::rate_limit::{Key, RateLimiter, key_of};

/// Whose password is checked. Owners and end users are separate people with separate emails, so
/// their budgets are separate too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    Owner,
    User,
}

impl LoginKind {
    fn tag(self) -> &'static [u8] {
        match self {
            LoginKind::Owner => b"owner",
            LoginKind::User => b"user",
        }
    }
}

/// How long a device cookie is believed after its login.
pub const DEVICE_LIFETIME: time::Duration = time::Duration::days(180);

const ADDRESS_WINDOW: Duration = Duration::from_secs(60);
const EMAIL_AND_ADDRESS_WINDOW: Duration = Duration::from_secs(15 * 60);
const EMAIL_WINDOW: Duration = Duration::from_secs(60 * 60);
const DEVICE_WINDOW: Duration = Duration::from_secs(15 * 60);
const MAIL_WINDOW: Duration = Duration::from_secs(60 * 60);

/// The login budgets, the limiter of sign-ups, and the keys that sign device cookies and form
/// tokens.
pub struct Logins {
    /// Other attempts limited per minute under a key of the caller's choosing (sign-ups per
    /// address).
    general: RateLimiter,
    address: RateLimiter,
    email_and_address: RateLimiter,
    email: RateLimiter,
    device: RateLimiter,
    /// Mail the forms send, per client address and per email address (see [`Logins::mail`]).
    mail_address: RateLimiter,
    mail_email: RateLimiter,
    devices: Signer,
    forms: Signer,
    /// Signs the cookie that holds a login between its password and its second factor.
    pending: Signer,
}

impl Logins {
    /// The budgets `config` sets, with keys derived from the master key (so every node of a
    /// service accepts the others' cookies and tokens).
    pub fn new(config: &Config, master: &MasterKey) -> Logins {
        Logins {
            general: RateLimiter::new(config.login_attempts_per_minute, ADDRESS_WINDOW),
            address: RateLimiter::new(config.login_attempts_per_minute, ADDRESS_WINDOW),
            email_and_address: RateLimiter::new(
                config.login_attempts_per_email_and_address,
                EMAIL_AND_ADDRESS_WINDOW,
            ),
            email: RateLimiter::new(config.login_attempts_per_email, EMAIL_WINDOW),
            device: RateLimiter::new(config.login_attempts_per_device, DEVICE_WINDOW),
            mail_address: RateLimiter::new(config.mail_per_address_per_hour, MAIL_WINDOW),
            mail_email: RateLimiter::new(config.mail_per_email_per_hour, MAIL_WINDOW),
            devices: Signer(master.derive_hmac_key(b"keyfob device cookie v1")),
            forms: Signer(master.derive_hmac_key(b"keyfob pre-login form token v1")),
            pending: Signer(master.derive_hmac_key(b"keyfob second-factor pending login v1")),
        }
    }

    /// Counts one attempt under `key` (`login_attempts_per_minute`); `Err(seconds)` says when to
    /// retry.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.general.check(key)
    }

    /// Counts one message a form is about to send to `email` for a client at `address`, or
    /// refuses it with the seconds to wait: `mail_per_address_per_hour` per client address (an
    /// IPv6 /64), `mail_per_email_per_hour` per email, whether or not anyone has that email, so
    /// that the answer says nothing about it. Keeps Keyfob from being used to flood an inbox.
    pub fn mail(&self, address: &str, email: &str) -> Result<(), u64> {
        // The email's budget first: a refusal there leaves the address's budget to other emails.
        self.mail_email
            .take(key_of(&[b"mail+email", normalized(email).as_bytes()]))?;
        let address = network_of(address);
        self.mail_address.take(key_of(&[b"mail+address", &address]))
    }

    /// Takes one attempt at checking `email`'s password from `address` (with the browser's device
    /// cookie, if any), or refuses it with the seconds to wait. Call
    /// [`LoginAttempt::succeeded`] when the password was right; dropping the attempt counts it as
    /// a failure.
    pub fn begin(
        &self,
        kind: LoginKind,
        email: &str,
        address: &str,
        device_cookie: Option<&str>,
    ) -> Result<LoginAttempt<'_>, u64> {
        let email = normalized(email);
        if let Some(nonce) = device_cookie.and_then(|c| self.device_nonce(kind, &email, c)) {
            let key = key_of(&[b"device", kind.tag(), email.as_bytes(), &nonce]);
            if self.device.take(key).is_ok() {
                return Ok(LoginAttempt {
                    taken: vec![(&self.device, key)],
                    trusted: true,
                });
            }
        }
        let address = network_of(address);
        let budgets = [
            (
                &self.email_and_address,
                key_of(&[b"email+address", kind.tag(), email.as_bytes(), &address]),
            ),
            (&self.address, key_of(&[b"address", &address])),
            (
                &self.email,
                key_of(&[b"email", kind.tag(), email.as_bytes()]),
            ),
        ];
        let mut taken: Vec<(&RateLimiter, Key)> = Vec::with_capacity(budgets.len());
        for (limiter, key) in budgets {
            if let Err(retry_after) = limiter.take(key) {
                // The password is not checked: what was taken goes back.
                for (limiter, key) in taken {
                    limiter.give_back(key);
                }
                return Err(retry_after);
            }
            taken.push((limiter, key));
        }
        Ok(LoginAttempt {
            taken,
            trusted: false,
        })
    }

    /// A new device cookie's value for `email`: the browser it is given to may try that email's
    /// password on its own budget from now on.
    pub fn device_cookie(&self, kind: LoginKind, email: &str) -> String {
        let email = normalized(email);
        self.devices
            .sign(&[b"device", kind.tag(), email.as_bytes()])
    }

    /// The random part of a device cookie this service made for `email`, if it is one and has not
    /// expired.
    fn device_nonce(&self, kind: LoginKind, email: &str, cookie: &str) -> Option<[u8; NONCE_LEN]> {
        let max_age = Duration::from_secs(DEVICE_LIFETIME.whole_seconds().unsigned_abs());
        self.devices
            .verify(cookie, &[b"device", kind.tag(), email.as_bytes()], max_age)
    }

    /// A new CSRF token for the forms shown before login on `pages` (`dashboard` or `auth`).
    pub fn form_token(&self, pages: &'static str) -> String {
        self.forms.sign(&[b"form", pages.as_bytes()])
    }

    /// Whether `token` is a form token this service made for `pages`, at most `max_age` ago.
    pub fn form_token_is_valid(&self, pages: &'static str, token: &str, max_age: Duration) -> bool {
        self.forms
            .verify(token, &[b"form", pages.as_bytes()], max_age)
            .is_some()
    }
}

/// How long a login waits for its second factor's code after the password was right.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(5 * 60);

impl Logins {
    /// The value of the cookie that says `subject_id`'s password was right a moment ago and their
    /// login waits for a second factor's code: the id, then a signed value bound to it.
    pub fn pending_cookie(&self, kind: LoginKind, subject_id: &str) -> String {
        let signed = self
            .pending
            .sign(&[b"mfa pending", kind.tag(), subject_id.as_bytes()]);
        format!("{subject_id}.{signed}")
    }

    /// The id a pending-login cookie names, if this service signed it for that id less than
    /// [`PENDING_LIFETIME`] ago.
    pub fn pending_subject(&self, kind: LoginKind, cookie: &str) -> Option<String> {
        let (id, signed) = cookie.rsplit_once('.')?;
        if id.is_empty() || id.len() > 128 {
            return None;
        }
        self.pending
            .verify(
                signed,
                &[b"mfa pending", kind.tag(), id.as_bytes()],
                PENDING_LIFETIME,
            )
            .map(|_| id.to_owned())
    }
}

/// One password check's share of the budgets. Dropped, it stays counted as a failure: a request
/// abandoned half-way (the client hung up during the hash) must not get its attempt back, or
/// hanging up would buy password hashes for free.
#[must_use = "call `succeeded` or `failed` once the password is checked"]
pub struct LoginAttempt<'a> {
    taken: Vec<(&'a RateLimiter, Key)>,
    trusted: bool,
}

impl LoginAttempt<'_> {
    /// The password was right: the attempt is given back to every budget it was taken from.
    pub fn succeeded(self) {
        for (limiter, key) in self.taken {
            limiter.give_back(key);
        }
    }

    /// The password was wrong: the attempt stays counted.
    pub fn failed(self) {}

    /// Whether the attempt came from a browser with a valid device cookie for the email.
    pub fn trusted(&self) -> bool {
        self.trusted
    }
}

/// An email as its budgets know it: the stored form when it is a valid address, so that case and
/// spaces do not make new budgets; otherwise trimmed and lower-cased.
fn normalized(email: &str) -> String {
    match Email::parse(email) {
        Ok(email) => email.as_str().to_owned(),
        Err(_) => email.trim().to_lowercase(),
    }
}

/// The network a client address is counted by: an IPv4 address itself, an IPv6 address's /64.
fn network_of(address: &str) -> Vec<u8> {
    match address.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.octets().to_vec(),
        Ok(IpAddr::V6(v6)) => v6.octets()[..8].to_vec(),
        Err(_) => address.as_bytes().to_vec(),
    }
}

const NONCE_LEN: usize = 16;
const TIME_LEN: usize = 8;
const TAG_LEN: usize = 32;
const SIGNED_LEN: usize = NONCE_LEN + TIME_LEN + TAG_LEN;

/// Makes and checks values signed for one purpose: 16 random bytes and the second they were made,
/// followed by an HMAC-SHA256 tag over both and a context (what the value is for), in base64url.
struct Signer(hmac::Key);

impl Signer {
    fn sign(&self, context: &[&[u8]]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.sign_at(context, nonce, now_secs())
    }

    fn sign_at(&self, context: &[&[u8]], nonce: [u8; NONCE_LEN], issued: u64) -> String {
        let mut value = Vec::with_capacity(SIGNED_LEN);
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&issued.to_be_bytes());
        let tag = hmac::sign(&self.0, &message(context, &value));
        value.extend_from_slice(tag.as_ref());
        B64.encode(value)
    }

    /// The random part of `value` if this signer made it for `context` at most `max_age` ago.
    /// The tag is compared in constant time.
    fn verify(&self, value: &str, context: &[&[u8]], max_age: Duration) -> Option<[u8; NONCE_LEN]> {
        if value.len() > 2 * SIGNED_LEN {
            return None;
        }
        let bytes = B64.decode(value).ok()?;
        if bytes.len() != SIGNED_LEN {
            return None;
        }
        let (signed, tag) = bytes.split_at(NONCE_LEN + TIME_LEN);
        hmac::verify(&self.0, &message(context, signed), tag).ok()?;
        let (nonce, issued) = signed.split_at(NONCE_LEN);
        let issued = u64::from_be_bytes(issued.try_into().ok()?);
        let now = now_secs();
        // A minute of leeway for clocks of nodes that disagree.
        if issued > now + 60 || now.saturating_sub(issued) > max_age.as_secs() {
            return None;
        }
        nonce.try_into().ok()
    }
}

/// What a tag covers: the context's parts, each length-prefixed, then the signed bytes.
fn message(context: &[&[u8]], signed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + signed.len());
    for part in context {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(signed);
    out
}

fn now_secs() -> u64 {
    u64::try_from(Timestamp::now().unix_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logins(master: &MasterKey, configure: impl FnOnce(&mut Config)) -> Logins {
        let mut config = Config::for_data_dir("unused");
        config.login_attempts_per_minute = 10;
        config.login_attempts_per_email_and_address = 3;
        config.login_attempts_per_email = 5;
        config.login_attempts_per_device = 4;
        configure(&mut config);
        Logins::new(&config, master)
    }

    const OWNER: &str = "owner@example.com";

    fn fail(logins: &Logins, email: &str, address: &str, device: Option<&str>) -> Result<(), u64> {
        logins
            .begin(LoginKind::Owner, email, address, device)
            .map(drop)
    }

    #[test]
    fn failures_from_one_address_leave_other_addresses_their_way_in() {
        let logins = logins(&MasterKey::generate(), |_| {});
        for _ in 0..3 {
            fail(&logins, OWNER, "203.0.113.1", None).unwrap();
        }
        let retry = fail(&logins, OWNER, "203.0.113.1", None).unwrap_err();
        assert!((1..=15 * 60).contains(&retry), "{retry}");
        // Case and spaces do not make a new budget.
        assert!(fail(&logins, " Owner@Example.COM ", "203.0.113.1", None).is_err());
        // The owner elsewhere still gets a check, and a right password costs nothing.
        for _ in 0..10 {
            logins
                .begin(LoginKind::Owner, OWNER, "198.51.100.2", None)
                .unwrap()
                .succeeded();
        }
    }

    #[test]
    fn many_addresses_spend_the_emails_budget_but_not_a_device_cookies() {
        let logins = logins(&MasterKey::generate(), |_| {});
        let device = logins.device_cookie(LoginKind::Owner, OWNER);
        for n in 0..5 {
            fail(&logins, OWNER, &format!("203.0.113.{n}"), None).unwrap();
        }
        assert!(fail(&logins, OWNER, "198.51.100.9", None).is_err());
        // Another kind of login with the same email has its own budgets.
        assert!(
            logins
                .begin(LoginKind::User, OWNER, "198.51.100.9", None)
                .is_ok()
        );
        let attempt = logins
            .begin(LoginKind::Owner, OWNER, "198.51.100.9", Some(&device))
            .unwrap();
        assert!(attempt.trusted());
        attempt.succeeded();
        // A device cookie speaks for its email only, and only of this service.
        let other = logins.device_cookie(LoginKind::Owner, "other@example.com");
        assert!(fail(&logins, OWNER, "198.51.100.9", Some(&other)).is_err());
        let stranger = logins_with_other_key();
        let forged = stranger.device_cookie(LoginKind::Owner, OWNER);
        assert!(fail(&logins, OWNER, "198.51.100.9", Some(&forged)).is_err());
    }

    fn logins_with_other_key() -> Logins {
        logins(&MasterKey::generate(), |_| {})
    }

    #[test]
    fn a_device_cookie_has_its_own_budget() {
        let logins = logins(&MasterKey::generate(), |c| c.login_attempts_per_email = 100);
        let device = logins.device_cookie(LoginKind::Owner, OWNER);
        for _ in 0..4 {
            let attempt = logins
                .begin(LoginKind::Owner, OWNER, "203.0.113.1", Some(&device))
                .unwrap();
            assert!(attempt.trusted());
        }
        // Spent: the browser is treated as any other client.
        let attempt = logins
            .begin(LoginKind::Owner, OWNER, "203.0.113.1", Some(&device))
            .unwrap();
        assert!(!attempt.trusted());
    }

    #[test]
    fn one_address_spraying_emails_is_refused() {
        let logins = logins(&MasterKey::generate(), |_| {});
        for n in 0..10 {
            fail(
                &logins,
                &format!("user{n}@example.com"),
                "203.0.113.1",
                None,
            )
            .unwrap();
        }
        assert!(fail(&logins, "fresh@example.com", "203.0.113.1", None).is_err());
        // The refusal took nothing from the email's own budgets.
        for _ in 0..3 {
            fail(&logins, "fresh@example.com", "198.51.100.1", None).unwrap();
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let logins = logins(&MasterKey::generate(), |_| {});
        for n in 0..3 {
            fail(&logins, OWNER, &format!("2001:db8:1:2::{n:x}"), None).unwrap();
        }
        assert!(fail(&logins, OWNER, "2001:db8:1:2:ffff::1", None).is_err());
        assert!(fail(&logins, OWNER, "2001:db8:1:3::1", None).is_ok());
        assert_eq!(network_of("::ffff:192.0.2.1"), network_of("192.0.2.1"));
    }

    #[test]
    fn form_tokens_are_this_services_own() {
        let master = MasterKey::generate();
        let logins = logins(&master, |_| {});
        let day = Duration::from_secs(86_400);
        let token = logins.form_token("dashboard");
        assert!(logins.form_token_is_valid("dashboard", &token, day));
        // Another node with the same master key accepts it.
        assert!(logins_again(&master).form_token_is_valid("dashboard", &token, day));
        // Not for the other pages, not under another master key.
        assert!(!logins.form_token_is_valid("auth", &token, day));
        assert!(!logins_with_other_key().form_token_is_valid("dashboard", &token, day));
        // Made-up values, however well shaped, are refused.
        for planted in [
            keyfob_domain::secret::random_token(),
            "A".repeat(token.len()),
            String::new(),
            format!("{token}A"),
            token[..token.len() - 1].to_owned(),
        ] {
            assert!(
                !logins.form_token_is_valid("dashboard", &planted, day),
                "{planted}"
            );
        }
        // One changed bit of the random part breaks the tag.
        let mut bytes = B64.decode(&token).unwrap();
        bytes[0] ^= 1;
        assert!(!logins.form_token_is_valid("dashboard", &B64.encode(bytes), day));
    }

    fn logins_again(master: &MasterKey) -> Logins {
        logins(master, |_| {})
    }

    #[test]
    fn pending_cookies_name_whom_they_were_made_for() {
        let master = MasterKey::generate();
        let logins = logins(&master, |_| {});
        let cookie = logins.pending_cookie(LoginKind::Owner, "owner-1");
        assert_eq!(
            logins.pending_subject(LoginKind::Owner, &cookie).as_deref(),
            Some("owner-1")
        );
        assert_eq!(
            logins_again(&master)
                .pending_subject(LoginKind::Owner, &cookie)
                .as_deref(),
            Some("owner-1")
        );
        // Not for end users, not for another id, not under another key, not made up.
        assert_eq!(logins.pending_subject(LoginKind::User, &cookie), None);
        let (_, signed) = cookie.split_once('.').unwrap();
        assert_eq!(
            logins.pending_subject(LoginKind::Owner, &format!("owner-2.{signed}")),
            None
        );
        assert_eq!(
            logins_with_other_key().pending_subject(LoginKind::Owner, &cookie),
            None
        );
        for planted in ["", ".", "owner-1", "owner-1.", ".abc", "owner-1.AAAA"] {
            assert_eq!(
                logins.pending_subject(LoginKind::Owner, planted),
                None,
                "{planted}"
            );
        }
        // Expired after five minutes.
        let old = logins.pending.sign_at(
            &[b"mfa pending", LoginKind::Owner.tag(), b"owner-1"],
            [1; NONCE_LEN],
            now_secs() - 301,
        );
        assert_eq!(
            logins.pending_subject(LoginKind::Owner, &format!("owner-1.{old}")),
            None
        );
    }

    #[test]
    fn signed_values_expire() {
        let logins = logins(&MasterKey::generate(), |_| {});
        let context: &[&[u8]] = &[b"form", b"dashboard"];
        let old = logins
            .forms
            .sign_at(context, [7; NONCE_LEN], now_secs() - 3_600);
        assert!(
            logins
                .forms
                .verify(&old, context, Duration::from_secs(7_200))
                .is_some()
        );
        assert!(
            logins
                .forms
                .verify(&old, context, Duration::from_secs(1_800))
                .is_none()
        );
        let future = logins
            .forms
            .sign_at(context, [7; NONCE_LEN], now_secs() + 3_600);
        assert!(
            logins
                .forms
                .verify(&future, context, Duration::from_secs(7_200))
                .is_none()
        );
    }
}
