//! End users' pages on Keyfob's own origin: `GET /auth` (where an application's session starts),
//! login, sign-up and logout (the pages' own, and an application's at `/auth/end-session`), the
//! consent page, and the page where a user sees and revokes their grants and changes their
//! password.
//!
//! Every page works without JavaScript, every form carries a CSRF token (see
//! `crate::web::login_cookie`), and every answer forbids framing (`frame-ancestors 'none'`,
//! `X-Frame-Options: DENY`).

mod account;
mod consent;
mod end_session;
mod grants;
mod page;
mod passkeys;
mod recovery;
mod request;
mod totp;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use tower_http::set_header::SetResponseHeaderLayer;

pub(crate) use account::capitalized;
pub use page::DEFAULT_CSP;
pub(crate) use page::UserPageError;
pub use request::AuthorizeParams;

use crate::state::AppState;
use crate::web::USER_PAGES;

/// The login cookie's name.
pub const USER_COOKIE: &str = USER_PAGES.login_cookie;
/// The double-submit cookie of the login and sign-up forms.
pub const USER_FORM_COOKIE: &str = USER_PAGES.form_cookie;
/// The cookie that marks a browser an end user has logged in from (see `crate::logins`).
pub const USER_DEVICE_COOKIE: &str = USER_PAGES.device_cookie;
/// Where a request without a login is sent.
pub const LOGIN_PATH: &str = USER_PAGES.login_path;
/// The end-session endpoint (OpenID Connect RP-Initiated Logout), where applications log users
/// out.
pub const END_SESSION_PATH: &str = "/auth/end-session";
/// A logged-in user's own page.
pub const GRANTS_PATH: &str = "/auth/grants";

/// Every end-user route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth", get(consent::authorize))
        .route("/auth/consent", post(consent::decide))
        .route("/auth/login", get(account::login_page).post(account::login))
        .route(
            "/auth/signup",
            get(account::signup_page).post(account::signup),
        )
        .route("/auth/logout", post(account::logout))
        .route(
            "/auth/forgot",
            get(recovery::forgot_page).post(recovery::forgot),
        )
        .route(
            "/auth/reset",
            get(recovery::reset_page).post(recovery::reset),
        )
        .route("/auth/verify", get(recovery::verify))
        .route("/auth/verify/resend", post(recovery::resend))
        .route(
            END_SESSION_PATH,
            get(end_session::end_session).post(end_session::end_session_form),
        )
        .route("/auth/end-session/confirm", post(end_session::confirm))
        .route("/auth/grants", get(grants::list))
        .route(
            "/auth/grants/{id}/revoke",
            get(grants::confirm_revoke).post(grants::revoke),
        )
        .route("/auth/logout-everywhere", post(grants::logout_everywhere))
        .route("/auth/password", post(grants::change_password))
        .route(totp::PAGE_PATH, get(totp::manage))
        .route("/auth/security/totp/confirm", post(totp::confirm))
        .route(
            "/auth/security/totp/recovery-codes",
            post(totp::recovery_codes),
        )
        .route("/auth/security/totp/remove", post(totp::remove))
        .route(totp::CODE_PATH, get(totp::code_page).post(totp::code))
        .route(
            passkeys::PAGE_PATH,
            get(passkeys::manage).post(passkeys::add),
        )
        .route("/auth/security/passkeys/remove", post(passkeys::remove))
        .route(
            passkeys::SIGN_IN_PATH,
            get(passkeys::sign_in_form).post(passkeys::sign_in),
        )
        // Before the layer, so that a 405 page carries the pages' policy too.
        .method_not_allowed_fallback(crate::http::guard::method_not_allowed)
        // A page that names an application's origin in `form-action` sets its own policy.
        // No Cross-Origin-Opener-Policy here: an application may open these pages in a popup
        // and must keep its handle on it.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DEFAULT_CSP),
        ))
}
