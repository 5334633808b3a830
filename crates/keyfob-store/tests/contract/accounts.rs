//! Accounts and their owners, and the store's own identity.

use keyfob_store::{Account, Owner, StoreError};

use crate::contract;
use crate::helpers::*;

contract! {
    async fn names_its_backend_and_answers_a_ping(db) {
        let expected = match db.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        assert_eq!(db.backend(), expected);
        db.ping().await.unwrap();
    }

    async fn an_account_and_its_owner_are_created_together(db) {
        let account = Account {
            id: id("acct"),
            name: "Acme Ltd".into(),
            created_at: ts(T0),
            require_verified_users: false,
        };
        let owner = Owner {
            id: id("owner"),
            account_id: account.id.clone(),
            email: "ada@example.com".into(),
            password_hash: "$argon2id$v=19$hash".into(),
            created_at: ts(T0 + 1),
            email_verified_at: None,
        };
        db.create_account(&account, &owner).await.unwrap();

        assert_eq!(
            db.find_account(&account.id).await.unwrap(),
            Some(account.clone())
        );
        assert_eq!(db.find_owner(&owner.id).await.unwrap(), Some(owner.clone()));
        assert_eq!(
            db.find_owner_by_email("ada@example.com").await.unwrap(),
            Some(owner)
        );
        assert_eq!(db.find_account(&"nope".into()).await.unwrap(), None);
        assert_eq!(db.find_owner(&"nope".into()).await.unwrap(), None);
        // Emails are matched exactly; normalising them is the caller's rule.
        assert_eq!(
            db.find_owner_by_email("ADA@example.com").await.unwrap(),
            None
        );
    }

    async fn a_taken_owner_email_refuses_the_whole_account(db) {
        let (_, taken) = db.account_and_owner().await;

        let account = Account {
            id: id("acct"),
            name: "Second".into(),
            created_at: ts(T0),
            require_verified_users: false,
        };
        let owner = Owner {
            id: id("owner"),
            account_id: account.id.clone(),
            email: taken.email.clone(),
            password_hash: "x".into(),
            created_at: ts(T0),
            email_verified_at: None,
        };
        let err = db.create_account(&account, &owner).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict("email")), "{err:?}");
        // The account row went in first, in the same transaction: it is gone too.
        assert_eq!(db.find_account(&account.id).await.unwrap(), None);
        assert_eq!(db.find_owner(&owner.id).await.unwrap(), None);
        assert_eq!(db.count("accounts").await, 1);
        assert_eq!(
            db.find_owner_by_email(&taken.email).await.unwrap(),
            Some(taken)
        );
    }

    async fn a_taken_account_id_is_a_conflict(db) {
        let first = db.account().await;
        let account = Account {
            id: first.clone(),
            name: "Again".into(),
            created_at: ts(T0 + 5),
            require_verified_users: false,
        };
        let owner = Owner {
            id: id("owner"),
            account_id: first.clone(),
            email: "new@example.com".into(),
            password_hash: "x".into(),
            created_at: ts(T0),
            email_verified_at: None,
        };
        let err = db.create_account(&account, &owner).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict("id")), "{err:?}");
        assert_eq!(db.find_account(&first).await.unwrap().unwrap().name, "Acme");
        assert_eq!(
            db.find_owner_by_email("new@example.com").await.unwrap(),
            None
        );
    }
}
