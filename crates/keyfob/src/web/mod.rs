//! What the web surfaces share: the API (`http`), the dashboard and the end users' pages all see
//! the client's address the same way, and the two sets of pages keep their cookies — login, form
//! token, device — by the same rules, each under its own path and names.

pub mod client_ip;
pub mod login;
pub mod pages;

pub use client_ip::ClientIp;
pub use login::{LoginFields, LoginOutcome, check_login};
pub use pages::{DASHBOARD, Pages, USER_PAGES};
