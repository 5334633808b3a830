//! What the web surfaces share: the API (`http`), the dashboard and the end users' pages all see
//! the client's address the same way, and the two sets of pages keep their cookies — login, form
//! token, device — by the same rules, each under its own path and names. Owners and end users log
//! in, sign up and log out through the same code, which [`LoginSubject`] makes each kind's.

pub mod client_ip;
pub mod error;
pub mod filters;
pub mod login;
pub mod login_cookie;
pub mod pages;
pub mod recovery;
pub mod signup;

use serde::Deserialize;

pub use client_ip::ClientIp;
pub use error::PageError;
pub use login::{LoginClient, LoginFields, LoginOutcome, LoginSubject, check_login};
pub use login_cookie::{Login, OwnerLogin, UserLogin};
pub use pages::{DASHBOARD, Pages, USER_PAGES};
pub use signup::{SignupFields, SignupOutcome, sign_up};

/// A form whose only field is its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}
