//! Accounts and their owners.

use keyfob_domain::email::Email;
use keyfob_domain::time::Timestamp;
use keyfob_store::{Account, AccountId, Owner, OwnerId, Store};

use super::ServiceError;
use crate::passwords::{Passwords, check_new_password};

/// Makes an account with its first owner.
pub async fn create_account(
    store: &dyn Store,
    passwords: &Passwords,
    email: &str,
    password: String,
) -> Result<(Account, Owner), ServiceError> {
    let email = Email::parse(email).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    check_new_password(&password).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    if store.find_owner_by_email(email.as_str()).await?.is_some() {
        return Err(keyfob_store::StoreError::Conflict("email").into());
    }
    let password_hash = passwords
        .hash(password)
        .await
        .map_err(|e| ServiceError::Internal(e.into()))?;
    let now = Timestamp::now();
    let account = Account {
        id: AccountId::from(uuid::Uuid::now_v7().to_string()),
        name: email.as_str().to_owned(),
        created_at: now,
        require_verified_users: false,
    };
    let owner = Owner {
        id: OwnerId::from(uuid::Uuid::now_v7().to_string()),
        account_id: account.id.clone(),
        email: email.as_str().to_owned(),
        password_hash,
        created_at: now,
        email_verified_at: None,
    };
    store.create_account(&account, &owner).await?;
    Ok((account, owner))
}

/// Finds an account by its id or by an owner's email.
pub async fn resolve_account(
    store: &dyn Store,
    id_or_email: &str,
) -> Result<Account, ServiceError> {
    let not_found = || ServiceError::NotFound(format!("no account {id_or_email}"));
    if id_or_email.contains('@') {
        let email = Email::parse(id_or_email).map_err(|_| not_found())?;
        let owner = store
            .find_owner_by_email(email.as_str())
            .await?
            .ok_or_else(not_found)?;
        return store
            .find_account(&owner.account_id)
            .await?
            .ok_or_else(not_found);
    }
    store
        .find_account(&AccountId::from(id_or_email))
        .await?
        .ok_or_else(not_found)
}
