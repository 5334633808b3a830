//! End users made by an operator or a test (users normally sign up on Keyfob's pages).

use keyfob_domain::email::Email;
use keyfob_domain::time::Timestamp;
use keyfob_store::{Store, UserId, UserRow};

use super::ServiceError;
use crate::passwords::{Passwords, check_new_password};

/// Makes an end user (imports and tests; users normally sign up on Keyfob's pages).
pub async fn create_user(
    store: &dyn Store,
    passwords: &Passwords,
    email: &str,
    password: String,
) -> Result<UserRow, ServiceError> {
    let email = Email::parse(email).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    check_new_password(&password).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    if store.find_user_by_email(email.as_str()).await?.is_some() {
        return Err(keyfob_store::StoreError::Conflict("email").into());
    }
    let password_hash = passwords
        .hash(password)
        .await
        .map_err(|e| ServiceError::Internal(e.into()))?;
    let now = Timestamp::now();
    let user = UserRow {
        id: UserId::from(uuid::Uuid::now_v7().to_string()),
        email: email.as_str().to_owned(),
        password_hash,
        created_at: now,
        password_changed_at: now,
        email_verified_at: None,
    };
    store.insert_user(&user).await?;
    Ok(user)
}
