//! Second factors (TOTP, RFC 6238) for owners and end users, the same for both sets of pages: the
//! rules are `keyfob_domain::mfa`'s, the rows `keyfob_store::MfaStore`'s; here is what joins them.
//!
//! - **Secrets** are sealed with the master key, bound to whose they are (`secret_aad`). During
//!   enrolment the new secret travels in the page's form, sealed under another binding
//!   (`enrolment_aad`), so that showing the page writes nothing: only a confirmed factor is
//!   stored, with the step of the code that confirmed it.
//! - **Codes** ([`check_code`]) are checked under the login budgets (`crate::logins`), as a
//!   password is: a wrong code counts, a right one is given back. A TOTP code is accepted once:
//!   its time step must be later than the last one accepted, which one conditional UPDATE
//!   records (`MfaStore::advance_totp_step`), so two nodes cannot both accept it. A recovery code
//!   is used up the same way.
//! - **Logins** of someone with a factor stop after the password: instead of a login cookie the
//!   browser gets a *pending* cookie (signed with a key derived from the master key, bound to the
//!   owner's or user's id, five minutes, see `Logins::pending_cookie`), which the code page turns
//!   into a login once a code is right.

use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::SameSite;
use keyfob_domain::mfa::{SecondFactorCode, TotpSecret, new_recovery_codes, parse_code};
use keyfob_domain::time::Timestamp;
use keyfob_store::{FactorHolder, Owner, StoreError, TotpFactorRow, UserRow};

use crate::audit::AuditEvent;
use crate::logins::{LoginKind, PENDING_LIFETIME};
use crate::state::AppState;
use crate::web::{LoginSubject, PageError, Pages};

/// The one answer to a wrong code, whichever way it was wrong (not this step's, used already, no
/// such recovery code).
pub const CODE_REFUSED: &str = "The code is incorrect or was already used. Enter the current code from your authenticator \
     app, or an unused recovery code.";

/// The answer to an empty code field.
pub const CODE_MISSING: &str =
    "Enter the 6-digit code from your authenticator app, or one of your recovery codes.";

/// Someone who can hold a second factor: an owner or an end user.
pub trait MfaSubject: LoginSubject {
    /// Their factor's key in the store.
    fn holder(&self) -> FactorHolder;
}

impl MfaSubject for Owner {
    fn holder(&self) -> FactorHolder {
        FactorHolder::Owner(self.id.clone())
    }
}

impl MfaSubject for UserRow {
    fn holder(&self) -> FactorHolder {
        FactorHolder::User(self.id.clone())
    }
}

/// What binds a stored secret to whose it is.
pub fn secret_aad(holder: &FactorHolder) -> Vec<u8> {
    format!("keyfob totp secret v1:{}:{}", holder.kind(), holder.id()).into_bytes()
}

/// What binds a secret in an enrolment form to whose it is.
fn enrolment_aad(holder: &FactorHolder) -> Vec<u8> {
    format!("keyfob totp enrolment v1:{}:{}", holder.kind(), holder.id()).into_bytes()
}

/// The issuer authenticator apps show beside the code: the host name of the public URL (what
/// tells one deployment from another), or `Keyfob` when that is an address or `localhost`, as
/// on a developer's machine. Never a port: the otpauth label reserves the colon.
pub fn issuer(state: &AppState) -> String {
    issuer_of(&state.config)
}

fn issuer_of(config: &crate::config::Config) -> String {
    let host = config
        .public_url
        .as_deref()
        .map(|url| {
            url.split_once("://")
                .map_or(url, |(_, rest)| rest)
                .split(['/', '?', '#'])
                .next()
                .unwrap_or_default()
        })
        .map(|authority| {
            // `[v6]:port`, `host:port`, `host`.
            match authority.rsplit_once(':') {
                Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
                _ => authority,
            }
        })
        .unwrap_or_default();
    let named = !host.is_empty()
        && !host.starts_with('[')
        && host.parse::<std::net::IpAddr>().is_err()
        && !host.eq_ignore_ascii_case("localhost");
    if named {
        host.to_owned()
    } else {
        "Keyfob".to_owned()
    }
}

/// An enrolment in progress, as its page shows it.
pub struct Enrolment {
    /// The secret, sealed for the form's hidden field.
    pub sealed: String,
    /// The secret in base32, to type in by hand.
    pub base32: String,
    /// The `otpauth://` URI.
    pub uri: String,
    /// The URI as a QR code, inline SVG.
    pub qr_svg: String,
}

impl Enrolment {
    /// A new secret for `holder`, labelled with `email`.
    pub fn start(state: &AppState, holder: &FactorHolder, email: &str) -> Enrolment {
        let secret = TotpSecret::generate();
        let sealed = state.master.seal(secret.as_bytes(), &enrolment_aad(holder));
        Enrolment::of(state, &secret, sealed, email)
    }

    /// The enrolment a form sent back, if its sealed secret is `holder`'s and opens.
    pub fn resume(
        state: &AppState,
        holder: &FactorHolder,
        email: &str,
        sealed: &str,
    ) -> Option<(Enrolment, TotpSecret)> {
        let bytes = state.master.open(sealed, &enrolment_aad(holder)).ok()?;
        let secret = TotpSecret::from_bytes(bytes).ok()?;
        let enrolment = Enrolment::of(state, &secret, sealed.to_owned(), email);
        Some((enrolment, secret))
    }

    fn of(state: &AppState, secret: &TotpSecret, sealed: String, email: &str) -> Enrolment {
        let uri = secret.otpauth_uri(&issuer(state), email);
        Enrolment {
            sealed,
            base32: secret.base32(),
            qr_svg: qr_svg(&uri),
            uri,
        }
    }
}

/// `text` as a QR code in inline SVG (no XML declaration, so it can sit in an HTML page).
fn qr_svg(text: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(text.as_bytes()) else {
        return String::new();
    };
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    match svg.find("<svg") {
        Some(start) => svg[start..].replacen(
            "<svg ",
            "<svg role=\"img\" aria-label=\"QR code of the secret\" ",
            1,
        ),
        None => svg,
    }
}

/// What became of a confirmation.
pub enum Confirmation {
    /// Stored; these recovery codes are to be shown once.
    Enrolled(Vec<String>),
    /// The code is not the secret's current one.
    WrongCode,
    /// The holder has a factor already (confirmed in another tab).
    AlreadyEnrolled,
}

/// Confirms an enrolment with a current code of its secret: stores the factor, sealed for
/// storage, with the code's step as the last one used, and a new set of recovery codes.
pub async fn confirm(
    state: &AppState,
    holder: &FactorHolder,
    secret: &TotpSecret,
    code: &str,
) -> Result<Confirmation, PageError> {
    let Ok(SecondFactorCode::Totp(code)) = parse_code(code) else {
        return Ok(Confirmation::WrongCode);
    };
    let Some(step) = secret.check(&code, now_secs()) else {
        return Ok(Confirmation::WrongCode);
    };
    let codes = new_recovery_codes();
    let factor = TotpFactorRow {
        holder: holder.clone(),
        secret: state.master.seal(secret.as_bytes(), &secret_aad(holder)),
        last_step: i64::try_from(step).unwrap_or(i64::MAX),
        created_at: Timestamp::now(),
    };
    if !state
        .store
        .insert_totp_factor(&factor, &hashes(&codes))
        .await?
    {
        return Ok(Confirmation::AlreadyEnrolled);
    }
    Ok(Confirmation::Enrolled(codes))
}

/// Makes a new set of recovery codes for `holder`, replacing the old set; `None` when the holder
/// has no factor (removed meanwhile).
pub async fn regenerate_recovery_codes(
    state: &AppState,
    holder: &FactorHolder,
) -> Result<Option<Vec<String>>, PageError> {
    let codes = new_recovery_codes();
    let replaced = state
        .store
        .replace_recovery_codes(holder, &hashes(&codes), Timestamp::now())
        .await?;
    Ok(replaced.then_some(codes))
}

fn hashes(codes: &[String]) -> Vec<String> {
    codes
        .iter()
        .map(|c| keyfob_domain::mfa::recovery_hash(c))
        .collect()
}

/// How a code was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A TOTP code.
    Totp,
    /// A recovery code, with how many are left unused.
    Recovery { remaining: u64 },
}

impl Accepted {
    /// `totp` or `recovery`, for an event's detail.
    pub fn method(self) -> &'static str {
        match self {
            Accepted::Totp => "totp",
            Accepted::Recovery { .. } => "recovery",
        }
    }
}

/// What a code check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    Accepted(Accepted),
    /// Nothing was typed: asked again, without spending a budget.
    Missing,
    /// Wrong, already used, or garbage: counted as a failure.
    Refused,
    /// The holder has no factor (removed meanwhile).
    NoFactor,
}

/// Who types a code, for the login budgets: their email, the client's address and the browser's
/// device cookie.
pub struct Attempt<'a> {
    pub kind: LoginKind,
    pub email: &'a str,
    pub ip: &'a str,
    pub device: Option<&'a str>,
}

/// Checks a code typed by `holder` within the login budgets (a throttled attempt is a
/// `PageError::TooManyRequests`, before anything is checked). A TOTP code of a step not later
/// than the last one accepted is refused; a recovery code is used up.
pub async fn check_code(
    state: &AppState,
    holder: &FactorHolder,
    attempt: Attempt<'_>,
    code: &str,
) -> Result<CodeCheck, PageError> {
    let parsed = match parse_code(code) {
        Err(keyfob_domain::mfa::CodeError::Missing) => return Ok(CodeCheck::Missing),
        other => other,
    };
    let budget = state
        .logins
        .begin(attempt.kind, attempt.email, attempt.ip, attempt.device)
        .map_err(|retry_after| PageError::TooManyRequests { retry_after })?;
    let Some(factor) = state.store.find_totp_factor(holder).await? else {
        budget.succeeded();
        return Ok(CodeCheck::NoFactor);
    };
    let accepted = match parsed {
        Ok(SecondFactorCode::Totp(code)) => {
            let bytes = state
                .master
                .open(&factor.secret, &secret_aad(holder))
                .map_err(|e| PageError::Internal(e.context("opening a TOTP secret")))?;
            let secret = TotpSecret::from_bytes(bytes)
                .map_err(|e| PageError::Internal(anyhow::anyhow!("a stored TOTP secret: {e}")))?;
            match secret.check(&code, now_secs()) {
                Some(step) => {
                    let step = i64::try_from(step).unwrap_or(i64::MAX);
                    state
                        .store
                        .advance_totp_step(holder, step)
                        .await?
                        .then_some(Accepted::Totp)
                }
                None => None,
            }
        }
        Ok(SecondFactorCode::Recovery(normal)) => {
            let hash = keyfob_domain::secret::hash_secret(&normal);
            if state
                .store
                .use_recovery_code(holder, &hash, Timestamp::now())
                .await?
            {
                let remaining = state.store.unused_recovery_codes(holder).await?;
                Some(Accepted::Recovery { remaining })
            } else {
                None
            }
        }
        Err(_) => None,
    };
    Ok(match accepted {
        Some(how) => {
            budget.succeeded();
            CodeCheck::Accepted(how)
        }
        None => {
            budget.failed();
            CodeCheck::Refused
        }
    })
}

/// Whether `holder` has a confirmed factor.
pub async fn has_factor(state: &AppState, holder: &FactorHolder) -> Result<bool, StoreError> {
    Ok(state.store.find_totp_factor(holder).await?.is_some())
}

/// How many recovery codes `holder` has left.
pub async fn recovery_codes_left(
    state: &AppState,
    holder: &FactorHolder,
) -> Result<u64, StoreError> {
    state.store.unused_recovery_codes(holder).await
}

/// The audit events of a code check done by a logged-in owner or user, at `at` (`reveal`,
/// `remove`, `recovery_codes`): a wrong code, or a recovery code used up. `event` makes the
/// event of an action with its account, actor, target, address and user agent.
pub fn audit_check(
    state: &AppState,
    check: CodeCheck,
    at: &str,
    event: impl FnOnce(&'static str) -> AuditEvent,
) {
    let action = match check {
        CodeCheck::Refused => keyfob_domain::audit::action::MFA_FAILED,
        CodeCheck::Accepted(Accepted::Recovery { .. }) => {
            keyfob_domain::audit::action::MFA_RECOVERY_USED
        }
        _ => return,
    };
    let mut detail = serde_json::json!({ "at": at });
    if let CodeCheck::Accepted(Accepted::Recovery { remaining }) = check {
        detail["remaining"] = remaining.into();
    }
    state.audit.record(event(action).detail(detail));
}

/// The pending-login cookie's name on `pages`.
fn pending_cookie_name(pages: &Pages) -> &'static str {
    match pages.kind {
        LoginKind::Owner => "kf_mfa",
        LoginKind::User => "kf_user_mfa",
    }
}

/// Marks the browser as having given `subject`'s password, their login waiting for a code.
pub fn defer_login<T: MfaSubject>(state: &AppState, jar: CookieJar, subject: &T) -> CookieJar {
    let pages = T::PAGES;
    let value = state
        .logins
        .pending_cookie(pages.kind, subject.holder().id());
    let lifetime =
        time::Duration::seconds(i64::try_from(PENDING_LIFETIME.as_secs()).unwrap_or(i64::MAX));
    jar.add(pages.cookie(
        state,
        pending_cookie_name(pages),
        value,
        SameSite::Strict,
        lifetime,
    ))
}

/// Whom the browser's pending-login cookie names, if it holds a valid one and they still exist.
pub async fn pending_subject<T: MfaSubject>(
    state: &AppState,
    jar: &CookieJar,
) -> Result<Option<T>, PageError> {
    let pages = T::PAGES;
    let Some(cookie) = jar.get(pending_cookie_name(pages)) else {
        return Ok(None);
    };
    let Some(id) = state.logins.pending_subject(pages.kind, cookie.value()) else {
        tracing::info!(
            pages = pages.form_scope,
            "pending login refused: bad or expired cookie"
        );
        return Ok(None);
    };
    Ok(T::find_by_id(state, &id).await?)
}

/// Clears the pending-login cookie.
pub fn clear_pending<T: MfaSubject>(state: &AppState, jar: CookieJar) -> CookieJar {
    let pages = T::PAGES;
    let mut removal = pages.cookie(
        state,
        pending_cookie_name(pages),
        String::new(),
        SameSite::Strict,
        time::Duration::ZERO,
    );
    removal.make_removal();
    jar.add(removal)
}

/// The answer when the pending login is missing, forged or expired.
pub fn pending_expired() -> PageError {
    PageError::Forbidden(
        "This login has expired (the code must be entered within five minutes of the password) \
         or did not start in this browser. Nothing was changed. Log in again."
            .into(),
    )
}

fn now_secs() -> u64 {
    u64::try_from(Timestamp::now().unix_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_issuer_is_the_public_host_or_keyfob() {
        let issuer = |url: &str| {
            let mut config = crate::config::Config::for_data_dir("unused");
            config.public_url = Some(url.to_owned());
            super::issuer_of(&config)
        };
        assert_eq!(issuer("https://auth.example.com"), "auth.example.com");
        assert_eq!(
            issuer("https://auth.example.com:8443/base/"),
            "auth.example.com"
        );
        assert_eq!(issuer("http://127.0.0.1:8080"), "Keyfob");
        assert_eq!(issuer("http://[::1]:8080"), "Keyfob");
        assert_eq!(issuer("http://localhost:8080"), "Keyfob");
        assert_eq!(
            super::issuer_of(&crate::config::Config::for_data_dir("unused")),
            "Keyfob"
        );
    }
}
