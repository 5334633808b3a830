//! The dashboard: server-rendered pages where an account owner signs up, logs in, and manages the
//! account's API keys, minted tokens, applications and the grants its users gave them. Every page
//! but the passkey pages (which need the browser's WebAuthn API) works without JavaScript; every
//! form carries a CSRF token (see `crate::web::login_cookie`);
//! every page is sent with a strict Content-Security-Policy on top of the headers the HTTP layer
//! adds to every answer.

mod account;
mod apps;
mod audit;
mod charts;
mod confirm;
mod data;
mod grants;
mod keys;
pub mod once;
pub(crate) mod page;
mod passkeys;
mod profile;
mod recovery;
mod tokens;
mod totp;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use tower_http::set_header::SetResponseHeaderLayer;

use page::PageError;

use crate::state::AppState;
use crate::web::DASHBOARD;

/// The login cookie's name.
pub const LOGIN_COOKIE: &str = DASHBOARD.login_cookie;
/// The double-submit cookie of the sign-up and login forms.
pub const FORM_COOKIE: &str = DASHBOARD.form_cookie;
/// The cookie that marks a browser an owner has logged in from (see `crate::logins`).
pub const DEVICE_COOKIE: &str = DASHBOARD.device_cookie;
/// Where a request without a login is sent.
pub const LOGIN_PATH: &str = DASHBOARD.login_path;

/// Pages load only their own stylesheet, run no script, submit forms only to Keyfob, and cannot be
/// framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'none'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

const STYLESHEET: &str = include_str!("app.css");

/// The copy buttons' script (progressive enhancement: the pages work without it).
const COPY_SCRIPT: &str = include_str!("copy.js");

/// The policy of a page with copy buttons: the pages' own, with scripts from Keyfob itself
/// allowed (no inline script, no other origin).
pub const COPY_CSP: &str = crate::passkeys::SCRIPT_CSP;

/// Every dashboard route, under `/dashboard`. `state` serves the gate that sends an owner who
/// must set up a second factor to do so first (`totp::require_enrolment`).
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(account::home))
        .route("/dashboard/", get(account::home))
        .route(
            "/dashboard/signup",
            get(account::signup_page).post(account::signup),
        )
        .route(
            "/dashboard/login",
            get(account::login_page).post(account::login),
        )
        .route("/dashboard/logout", post(account::logout))
        .route(
            "/dashboard/forgot",
            get(recovery::forgot_page).post(recovery::forgot),
        )
        .route(
            "/dashboard/reset",
            get(recovery::reset_page).post(recovery::reset),
        )
        .route("/dashboard/verify", get(recovery::verify))
        .route("/dashboard/account", get(profile::show))
        .route(
            "/dashboard/account/password",
            post(profile::change_password),
        )
        .route("/dashboard/account/email", post(profile::change_email))
        .route(
            "/dashboard/account/email/confirm",
            get(profile::confirm_email),
        )
        .route(
            "/dashboard/account/verify",
            post(profile::resend_verification),
        )
        .route(
            "/dashboard/account/logins/end-others",
            post(profile::end_other_logins),
        )
        .route(
            "/dashboard/account/logins/{id}/end",
            post(profile::end_login),
        )
        .route("/dashboard/account/settings", post(profile::save_settings))
        .route("/dashboard/keys", get(keys::list).post(keys::create))
        .route("/dashboard/keys/{id}", get(keys::show))
        .route("/dashboard/keys/{id}/created", get(keys::created))
        .route("/dashboard/keys/{id}/roll", post(keys::roll))
        .route(
            "/dashboard/keys/{id}/revoke",
            get(confirm::revoke_key).post(keys::revoke),
        )
        .route(
            "/dashboard/keys/{id}/revoke-tokens",
            post(tokens::revoke_key_tokens),
        )
        .route("/dashboard/apps", get(apps::list).post(apps::create))
        .route(
            "/dashboard/apps/{client_id}",
            get(apps::show).post(apps::update),
        )
        .route("/dashboard/apps/{client_id}/secret", get(apps::secret))
        .route("/dashboard/apps/{client_id}/links", post(apps::set_links))
        .route(
            "/dashboard/apps/{client_id}/rotate-secret",
            post(apps::rotate_secret),
        )
        .route(
            "/dashboard/apps/{client_id}/disable",
            get(confirm::disable_app).post(apps::disable),
        )
        .route("/dashboard/apps/{client_id}/enable", post(apps::enable))
        .route(
            "/dashboard/apps/{client_id}/delete",
            get(confirm::delete_app).post(apps::delete),
        )
        .route(
            "/dashboard/users/{user_id}/remove",
            get(confirm::remove_user).post(grants::remove_user),
        )
        .route("/dashboard/grants", get(grants::list))
        .route(
            "/dashboard/grants/{id}/revoke",
            get(confirm::revoke_grant).post(grants::revoke),
        )
        .route("/dashboard/tokens", get(tokens::list))
        .route(
            "/dashboard/tokens/new",
            get(tokens::mint_form).post(tokens::mint),
        )
        .route("/dashboard/tokens/{jti}/minted", get(tokens::minted))
        .route(
            "/dashboard/tokens/{jti}/revoke",
            get(confirm::revoke_token).post(tokens::revoke),
        )
        .route("/dashboard/audit", get(audit::list))
        .route("/dashboard/data", get(data::collections))
        .route("/dashboard/data/_fields", post(data::save_fields))
        .route("/dashboard/data/{resource}", get(data::records))
        .route("/dashboard/data/{resource}/{id}", get(data::record))
        .route("/dashboard/data/{resource}/{id}/reveal", post(data::reveal))
        .route("/dashboard/security/totp", get(totp::page))
        .route("/dashboard/security/totp/confirm", post(totp::confirm))
        .route(
            "/dashboard/security/totp/recovery-codes",
            post(totp::recovery_codes),
        )
        .route("/dashboard/security/totp/remove", post(totp::remove))
        .route("/dashboard/security/totp/required", post(totp::required))
        .route(totp::CODE_PATH, get(totp::code_page).post(totp::code))
        .route(passkeys::PAGE_PATH, get(passkeys::page).post(passkeys::add))
        .route(
            "/dashboard/security/passkeys/remove",
            post(passkeys::remove),
        )
        .route(
            passkeys::SIGN_IN_PATH,
            get(passkeys::sign_in_form).post(passkeys::sign_in),
        )
        .route(
            "/dashboard/static/passkeys.js",
            get(crate::passkeys::script),
        )
        .route("/dashboard/static/app.css", get(stylesheet))
        .route("/dashboard/static/copy.js", get(copy_script))
        .route("/dashboard/{*rest}", any(not_found))
        // Before the layers, so that a 405 page carries the pages' policy too.
        .method_not_allowed_fallback(crate::http::guard::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state,
            totp::require_enrolment,
        ))
        // Unless the page set its own: the passkey pages allow Keyfob's own script.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}

async fn copy_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        COPY_SCRIPT,
    )
}

async fn not_found() -> PageError {
    PageError::NotFound("There is no such page.".into())
}
