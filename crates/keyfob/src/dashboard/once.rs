//! Secrets shown once: a new API key, a rolled key, a new client secret. The form that makes one
//! does not show it (a reload of that answer would post the form again and make another): it
//! seals the secret into a short-lived cookie and redirects to a page that shows it, once, and
//! clears the cookie (post-redirect-get). A reload of that page shows that the secret was shown
//! already, never the secret again.
//!
//! The cookie is sealed with the master key (AES-GCM, see `crate::crypto`), bound to the login that
//! made the secret (its owner and CSRF token) and to the page that shows it, so that no other
//! login, page or browser can open it; it lasts [`LIFETIME`], is `HttpOnly`, `SameSite=Strict`,
//! and is sent only to the dashboard. Nothing is stored on the server, so any node can show it.

use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::SameSite;
use keyfob_domain::time::Timestamp;
use serde::{Deserialize, Serialize};

use crate::state::AppState;
use crate::web::{DASHBOARD, OwnerLogin};

/// The cookie's name.
pub const COOKIE: &str = "kf_once";
/// How long a secret waits to be shown.
pub const LIFETIME: time::Duration = time::Duration::minutes(5);

/// A secret to show, with what the page says about it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Shown {
    /// The page that shows it (`/dashboard/keys/{id}/created`, …): the slot opens only there.
    pub page: String,
    /// The key's or application's name.
    pub name: String,
    /// The secret.
    pub secret: String,
    /// Until when the secret it replaced keeps working (a roll or rotation with an overlap), in
    /// Unix milliseconds.
    pub old_until: Option<i64>,
    /// Whether it replaced another (a roll or rotation) rather than being the first.
    pub replaced: bool,
    /// Until when the slot may be opened, in Unix milliseconds.
    expires: i64,
}

impl Shown {
    pub fn new(page: String, name: String, secret: String) -> Shown {
        Shown {
            page,
            name,
            secret,
            old_until: None,
            replaced: false,
            expires: (Timestamp::now() + LIFETIME.unsigned_abs()).unix_ms(),
        }
    }

    /// A secret that replaced another, which keeps working until `old_until`, if any.
    pub fn replacing(mut self, old_until: Option<Timestamp>) -> Shown {
        self.replaced = true;
        self.old_until = old_until.map(Timestamp::unix_ms);
        self
    }
}

/// What binds a slot to the login that filled it and the page that opens it.
fn aad(login: &OwnerLogin, page: &str) -> Vec<u8> {
    format!(
        "keyfob shown once v1:{}:{}:{page}",
        login.owner_id(),
        login.csrf()
    )
    .into_bytes()
}

fn cookie(
    state: &AppState,
    value: String,
    max_age: time::Duration,
) -> axum_extra::extract::cookie::Cookie<'static> {
    DASHBOARD.cookie(state, COOKIE, value, SameSite::Strict, max_age)
}

/// Puts `shown` in the browser's slot, for its page to show once.
pub fn keep(state: &AppState, login: &OwnerLogin, jar: CookieJar, shown: &Shown) -> CookieJar {
    let json = serde_json::to_vec(shown).unwrap_or_default();
    let sealed = state.master.seal(&json, &aad(login, &shown.page));
    jar.add(cookie(state, sealed, LIFETIME))
}

/// Takes what the slot holds for `page`, if it is this login's and has not expired, and empties
/// the slot either way.
pub fn take(
    state: &AppState,
    login: &OwnerLogin,
    jar: CookieJar,
    page: &str,
) -> (CookieJar, Option<Shown>) {
    let shown = jar
        .get(COOKIE)
        .and_then(|c| state.master.open(c.value(), &aad(login, page)).ok())
        .and_then(|json| serde_json::from_slice::<Shown>(&json).ok())
        .filter(|shown| shown.page == page && shown.expires > Timestamp::now().unix_ms());
    let jar = if jar.get(COOKIE).is_some() {
        let mut removal = cookie(state, String::new(), time::Duration::ZERO);
        removal.make_removal();
        jar.add(removal)
    } else {
        jar
    };
    (jar, shown)
}
