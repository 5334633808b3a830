//! Who logs in on Keyfob's pages, and the password check of a login form.
//!
//! Account owners log in on the dashboard and end users on their own pages. [`LoginSubject`] holds
//! what differs between the two — the pages and their cookies, the error page, the store calls —
//! so that the password check ([`check_login`]), sign-up ([`super::sign_up`]) and the login cookie
//! ([`super::Login`]) are written once.
//!
//! The password check: the form's signed token, then the login budgets (`crate::logins`) before
//! any password is hashed, then the password, with an unknown email costing the same hash as a
//! wrong password.

use axum::response::IntoResponse;
use axum_extra::extract::CookieJar;
use keyfob_domain::email::Email;
use keyfob_domain::mail::PersonKind;
use keyfob_store::{Owner, OwnerLoginRow, StoreError, Timestamp, UserLoginRow, UserRow};

use super::login_cookie::LoginRow;
use super::{DASHBOARD, Pages, USER_PAGES};
use crate::dashboard::page::PageError;
use crate::services::{self, ServiceError};
use crate::state::AppState;
use crate::user_pages::UserPageError;

/// The dashboard's answer to a sign-up while the operator has closed it.
const SIGNUP_CLOSED: &str =
    "Sign-up is closed on this server. Ask its operator to create an account for you.";

/// Someone who logs in on Keyfob's pages with an email and a password: an account owner
/// ([`Owner`], on the dashboard) or an end user ([`UserRow`], on the end users' pages).
pub trait LoginSubject: Sized + Send + Sync + 'static {
    /// The pages they log in on, with those pages' cookies.
    const PAGES: &'static Pages;
    /// The key, with the client's address after it, that sign-ups on those pages are counted
    /// under.
    const SIGNUP_BUDGET: &'static str;
    /// The error page of those pages.
    type Error: From<PageError> + IntoResponse + Send;
    /// Their logins' rows in the database.
    type LoginRow: LoginRow;

    /// Which kind of person they are, for the links mailed to them.
    const PERSON: PersonKind;

    /// Their id, as text.
    fn id_str(&self) -> &str;

    /// Their email.
    fn email(&self) -> &str;

    /// Whether they have followed a link mailed to their address.
    fn email_verified(&self) -> bool;

    /// The one with this id, if any.
    fn find_by_id(
        state: &AppState,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self>, StoreError>> + Send;

    /// The PHC string of their password.
    fn password_hash(&self) -> &str;

    /// Whether the sign-up form is open to them; `Err` is the page that says it is not.
    fn may_sign_up(_state: &AppState) -> Result<(), PageError> {
        Ok(())
    }

    /// The one with this (already parsed) email, if any.
    fn find_by_email(
        state: &AppState,
        email: &str,
    ) -> impl Future<Output = Result<Option<Self>, StoreError>> + Send;

    /// Makes one, by the rules of the service that does: the email, the password policy, the
    /// hash computed off the async threads, a unique email.
    fn create(
        state: &AppState,
        email: &str,
        password: String,
    ) -> impl Future<Output = Result<Self, ServiceError>> + Send;

    /// The row of a new login of theirs, from `client`.
    fn new_login(
        &self,
        id_hash: String,
        csrf_token: String,
        created_at: Timestamp,
        expires_at: Timestamp,
        client: &LoginClient<'_>,
    ) -> Self::LoginRow;

    /// Stores a new login.
    fn insert_login(
        state: &AppState,
        row: &Self::LoginRow,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The login whose cookie hashes to `id_hash`, live at `now`, with the email of whom it names;
    /// `None` if the login has ended or they no longer exist.
    fn find_login(
        state: &AppState,
        id_hash: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<(Self::LoginRow, String)>, StoreError>> + Send;

    /// Ends the login whose cookie hashes to `id_hash`.
    fn delete_login(
        state: &AppState,
        id_hash: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl LoginSubject for Owner {
    const PAGES: &'static Pages = &DASHBOARD;
    const SIGNUP_BUDGET: &'static str = "dashboard-signup-ip";
    type Error = PageError;
    type LoginRow = OwnerLoginRow;
    const PERSON: PersonKind = PersonKind::Owner;

    fn id_str(&self) -> &str {
        self.id.as_str()
    }

    fn email(&self) -> &str {
        &self.email
    }

    fn email_verified(&self) -> bool {
        self.email_verified_at.is_some()
    }

    async fn find_by_id(state: &AppState, id: &str) -> Result<Option<Owner>, StoreError> {
        state.store.find_owner(&id.into()).await
    }

    fn password_hash(&self) -> &str {
        &self.password_hash
    }

    fn may_sign_up(state: &AppState) -> Result<(), PageError> {
        if state.config.signup_open {
            Ok(())
        } else {
            Err(PageError::Forbidden(SIGNUP_CLOSED.into()))
        }
    }

    async fn find_by_email(state: &AppState, email: &str) -> Result<Option<Owner>, StoreError> {
        state.store.find_owner_by_email(email).await
    }

    /// Makes an account with them as its first owner.
    async fn create(
        state: &AppState,
        email: &str,
        password: String,
    ) -> Result<Owner, ServiceError> {
        let (_, owner) = services::accounts::create_account(
            state.store.as_ref(),
            &state.passwords,
            email,
            password,
        )
        .await?;
        Ok(owner)
    }

    fn new_login(
        &self,
        id_hash: String,
        csrf_token: String,
        created_at: Timestamp,
        expires_at: Timestamp,
        client: &LoginClient<'_>,
    ) -> OwnerLoginRow {
        OwnerLoginRow {
            id_hash,
            owner_id: self.id.clone(),
            account_id: self.account_id.clone(),
            csrf_token,
            created_at,
            expires_at,
            ip: client.ip.map(str::to_owned),
            user_agent: client.user_agent.map(str::to_owned),
        }
    }

    async fn insert_login(state: &AppState, row: &OwnerLoginRow) -> Result<(), StoreError> {
        state.store.insert_owner_login(row).await
    }

    async fn find_login(
        state: &AppState,
        id_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(OwnerLoginRow, String)>, StoreError> {
        let Some(row) = state.store.find_owner_login(id_hash, now).await? else {
            return Ok(None);
        };
        let owner = state.store.find_owner(&row.owner_id).await?;
        Ok(owner.map(|owner| (row, owner.email)))
    }

    async fn delete_login(state: &AppState, id_hash: &str) -> Result<(), StoreError> {
        state.store.delete_owner_login(id_hash).await
    }
}

impl LoginSubject for UserRow {
    const PAGES: &'static Pages = &USER_PAGES;
    const SIGNUP_BUDGET: &'static str = "user-signup-ip";
    type Error = UserPageError;
    type LoginRow = UserLoginRow;
    const PERSON: PersonKind = PersonKind::User;

    fn id_str(&self) -> &str {
        self.id.as_str()
    }

    fn email(&self) -> &str {
        &self.email
    }

    fn email_verified(&self) -> bool {
        self.email_verified_at.is_some()
    }

    async fn find_by_id(state: &AppState, id: &str) -> Result<Option<UserRow>, StoreError> {
        state.store.find_user(&id.into()).await
    }

    fn password_hash(&self) -> &str {
        &self.password_hash
    }

    async fn find_by_email(state: &AppState, email: &str) -> Result<Option<UserRow>, StoreError> {
        state.store.find_user_by_email(email).await
    }

    async fn create(
        state: &AppState,
        email: &str,
        password: String,
    ) -> Result<UserRow, ServiceError> {
        services::users::create_user(state.store.as_ref(), &state.passwords, email, password).await
    }

    fn new_login(
        &self,
        id_hash: String,
        csrf_token: String,
        created_at: Timestamp,
        expires_at: Timestamp,
        _client: &LoginClient<'_>,
    ) -> UserLoginRow {
        UserLoginRow {
            id_hash,
            user_id: self.id.clone(),
            csrf_token,
            created_at,
            expires_at,
        }
    }

    async fn insert_login(state: &AppState, row: &UserLoginRow) -> Result<(), StoreError> {
        state.store.insert_user_login(row).await
    }

    async fn find_login(
        state: &AppState,
        id_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(UserLoginRow, String)>, StoreError> {
        let Some(row) = state.store.find_user_login(id_hash, now).await? else {
            return Ok(None);
        };
        // A disabled user's logins were ended; one that raced the disabling ends here.
        let user = state.store.find_user(&row.user_id).await?;
        Ok(user
            .filter(|user| user.disabled_at.is_none())
            .map(|user| (row, user.email)))
    }

    async fn delete_login(state: &AppState, id_hash: &str) -> Result<(), StoreError> {
        state.store.delete_user_login(id_hash).await
    }
}

/// The browser a login is started from, as an owner sees it among their logins.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoginClient<'a> {
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// What a login form's password check found.
pub enum LoginOutcome<T> {
    /// The password is theirs.
    Verified(T),
    /// It is not, or no one has this email; `T` is whom the email named, for the audit log.
    Refused(Option<T>),
}

/// What a login form sends.
pub struct LoginFields<'a> {
    pub csrf: &'a str,
    pub email: &'a str,
    pub password: String,
}

/// Checks a login form's token and, within the login budgets, its password, for a client at
/// `ip` on `T`'s pages. A throttled attempt is a `PageError::TooManyRequests`, before any
/// password is hashed.
pub async fn check_login<T: LoginSubject>(
    state: &AppState,
    jar: &CookieJar,
    ip: &str,
    fields: LoginFields<'_>,
) -> Result<LoginOutcome<T>, PageError> {
    let LoginFields {
        csrf,
        email,
        password,
    } = fields;
    let pages = T::PAGES;
    pages.check_form_token(state, jar, csrf)?;
    let attempt = state
        .logins
        .begin(pages.kind, email, ip, pages.device_token(jar))
        .map_err(|retry_after| {
            crate::measures::login_checked(who(pages.kind), "throttled");
            PageError::TooManyRequests { retry_after }
        })?;
    let subject = match Email::parse(email) {
        Ok(email) => T::find_by_email(state, email.as_str()).await?,
        Err(_) => None,
    };
    let phc = subject.as_ref().map(|s| s.password_hash().to_owned());
    let verified = state.passwords.verify(password, phc).await;
    match subject {
        Some(subject) if verified => {
            crate::measures::login_checked(who(pages.kind), "ok");
            attempt.succeeded();
            Ok(LoginOutcome::Verified(subject))
        }
        other => {
            crate::measures::login_checked(who(pages.kind), "failed");
            attempt.failed();
            Ok(LoginOutcome::Refused(other))
        }
    }
}

/// Who logs in on pages of `kind`, as the metrics name them.
fn who(kind: crate::logins::LoginKind) -> &'static str {
    match kind {
        crate::logins::LoginKind::Owner => "owner",
        crate::logins::LoginKind::User => "user",
    }
}
