//! The cookies of a set of HTML pages: the dashboard (owners) and the end users' pages each have
//! a login cookie, a form-token cookie for the forms shown before login, and a device cookie, all
//! `HttpOnly`, scoped to the pages' path, `Secure` when the public URL is HTTPS.
//!
//! The forms shown before login have no login to bind a CSRF token to, so they use a signed
//! double-submit cookie: a random value signed with a key derived from the master key
//! (`Logins::form_token`), in a cookie the form must repeat. A value the browser or anyone else
//! made up is refused, however well it matches. After a successful login the browser gets a
//! device cookie (`Logins::device_cookie`), which lets it try that password on its own budget.

use std::time::Duration;

use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use keyfob_domain::secret::constant_time_eq;

use crate::dashboard::page::PageError;
use crate::logins::{DEVICE_LIFETIME, LoginKind};
use crate::state::AppState;

/// One set of pages and its cookies.
#[derive(Debug)]
pub struct Pages {
    /// Who logs in on these pages.
    pub kind: LoginKind,
    /// The path every cookie is scoped to.
    pub path: &'static str,
    /// Where a request without a login is sent.
    pub login_path: &'static str,
    /// The login cookie.
    pub login_cookie: &'static str,
    /// The double-submit cookie of the forms shown before login.
    pub form_cookie: &'static str,
    /// The cookie that marks a browser someone has logged in from (see `crate::logins`).
    pub device_cookie: &'static str,
    /// What these pages' form tokens are signed for, so one set's token is no good on the other.
    pub form_scope: &'static str,
    /// The form-token cookie's `SameSite`.
    pub form_same_site: SameSite,
    /// How long a login lasts, and a form token with it.
    pub login_lifetime: time::Duration,
}

/// The dashboard's pages, where account owners log in.
pub const DASHBOARD: Pages = Pages {
    kind: LoginKind::Owner,
    path: "/dashboard",
    login_path: "/dashboard/login",
    login_cookie: "kf_session",
    form_cookie: "kf_form",
    device_cookie: "kf_device",
    form_scope: "dashboard",
    form_same_site: SameSite::Strict,
    login_lifetime: time::Duration::hours(12),
};

/// The end users' pages (`/auth`, login, sign-up, consent, grants), where an application's users
/// log in.
pub const USER_PAGES: Pages = Pages {
    kind: LoginKind::User,
    path: "/auth",
    login_path: "/auth/login",
    login_cookie: "kf_user",
    form_cookie: "kf_user_form",
    device_cookie: "kf_user_device",
    form_scope: "auth",
    // Lax, not Strict: a user arriving from an application's site (a cross-site navigation) must
    // be able to use a token set earlier; a cross-site POST still never carries it.
    form_same_site: SameSite::Lax,
    login_lifetime: time::Duration::days(7),
};

impl Pages {
    /// A cookie only these pages receive and no script can read, that lasts `max_age`.
    pub fn cookie(
        &self,
        state: &AppState,
        name: &'static str,
        value: String,
        same_site: SameSite,
        max_age: time::Duration,
    ) -> Cookie<'static> {
        Cookie::build((name, value))
            .path(self.path)
            .http_only(true)
            .secure(state.config.secure_cookies())
            .same_site(same_site)
            .max_age(max_age)
            .build()
    }

    /// The login cookie carrying `token`.
    pub fn login_cookie(&self, state: &AppState, token: String) -> Cookie<'static> {
        self.cookie(
            state,
            self.login_cookie,
            token,
            SameSite::Lax,
            self.login_lifetime,
        )
    }

    /// The browser's login token, if it sent one.
    pub fn login_token<'j>(&self, jar: &'j CookieJar) -> Option<&'j str> {
        jar.get(self.login_cookie).map(|c| c.value())
    }

    /// Clears the login cookie (the caller ends the login in the database).
    pub fn clear_login(&self, state: &AppState, jar: CookieJar) -> CookieJar {
        let mut removal = self.cookie(
            state,
            self.login_cookie,
            String::new(),
            SameSite::Lax,
            time::Duration::ZERO,
        );
        removal.make_removal();
        jar.add(removal)
    }

    /// The double-submit token for a form shown before login: the browser's existing one if this
    /// service signed it and it has not expired (so several tabs keep working), or a new one set
    /// in a cookie.
    pub fn form_token(&self, state: &AppState, jar: CookieJar) -> (CookieJar, String) {
        if let Some(existing) = jar.get(self.form_cookie)
            && self.form_token_is_valid(state, existing.value())
        {
            let value = existing.value().to_owned();
            return (jar, value);
        }
        let token = state.logins.form_token(self.form_scope);
        let cookie = self.cookie(
            state,
            self.form_cookie,
            token.clone(),
            self.form_same_site,
            self.login_lifetime,
        );
        (jar.add(cookie), token)
    }

    fn form_token_is_valid(&self, state: &AppState, token: &str) -> bool {
        let max_age = Duration::from_secs(self.login_lifetime.whole_seconds().unsigned_abs());
        state
            .logins
            .form_token_is_valid(self.form_scope, token, max_age)
    }

    /// Checks that a form shown before login sent back the token in its cookie, and that the
    /// token is one this service signed for these pages.
    pub fn check_form_token(
        &self,
        state: &AppState,
        jar: &CookieJar,
        submitted: &str,
    ) -> Result<(), PageError> {
        match jar.get(self.form_cookie) {
            Some(cookie)
                if constant_time_eq(submitted, cookie.value())
                    && self.form_token_is_valid(state, cookie.value()) =>
            {
                Ok(())
            }
            _ => {
                tracing::warn!(pages = self.form_scope, "form refused: bad CSRF token");
                Err(PageError::csrf())
            }
        }
    }

    /// Gives the browser a device cookie for `email` after a successful login.
    pub fn remember_device(&self, state: &AppState, jar: CookieJar, email: &str) -> CookieJar {
        jar.add(self.cookie(
            state,
            self.device_cookie,
            state.logins.device_cookie(self.kind, email),
            SameSite::Strict,
            DEVICE_LIFETIME,
        ))
    }

    /// The browser's device cookie, if it sent one.
    pub fn device_token<'j>(&self, jar: &'j CookieJar) -> Option<&'j str> {
        jar.get(self.device_cookie).map(|c| c.value())
    }
}
