//! Second factors: a confirmed TOTP factor per owner or user, the step of the last code accepted
//! (advanced only forward, once per step, whoever asks at once), recovery codes used once and
//! replaced as a set, removal, the secrets a master-key rotation seals again, and the account
//! setting that requires a factor of every owner.

use keyfob_store::{FactorHolder, Resealed, TotpFactorRow};

use crate::contract;
use crate::helpers::*;

fn factor(holder: &FactorHolder, secret: &str, last_step: i64) -> TotpFactorRow {
    TotpFactorRow {
        holder: holder.clone(),
        secret: secret.into(),
        last_step,
        created_at: ts(T0),
    }
}

fn codes(prefix: &str) -> Vec<String> {
    (0..10).map(|i| format!("{prefix}-{i}")).collect()
}

contract! {
    async fn a_factor_is_stored_once_with_its_recovery_codes(db) {
        let (_, owner) = db.account_and_owner().await;
        let user = db.user().await;
        let holder = FactorHolder::Owner(owner.id.clone());
        // The same id as a user is another holder.
        let same_id_user = FactorHolder::User(owner.id.to_string().into());
        assert_eq!(db.find_totp_factor(&holder).await.unwrap(), None);
        assert_eq!(db.unused_recovery_codes(&holder).await.unwrap(), 0);

        let first = factor(&holder, "sealed-1", 100);
        assert!(db.insert_totp_factor(&first, &codes("a")).await.unwrap());
        assert_eq!(db.find_totp_factor(&holder).await.unwrap(), Some(first.clone()));
        assert_eq!(db.unused_recovery_codes(&holder).await.unwrap(), 10);
        // A second confirmation (another tab) changes nothing.
        assert!(!db.insert_totp_factor(&factor(&holder, "sealed-2", 200), &codes("b")).await.unwrap());
        assert_eq!(db.find_totp_factor(&holder).await.unwrap(), Some(first));
        assert!(!db.use_recovery_code(&holder, "b-0", ts(T0)).await.unwrap());
        assert_eq!(db.find_totp_factor(&same_id_user).await.unwrap(), None);

        let theirs = FactorHolder::User(user.id.clone());
        assert!(db.insert_totp_factor(&factor(&theirs, "sealed-u", 1), &codes("u")).await.unwrap());
        assert!(!db.use_recovery_code(&holder, "u-0", ts(T0)).await.unwrap(), "another holder's code");
        assert_eq!(db.count("totp_factors").await, 2);
        assert_eq!(db.count("totp_recovery_codes").await, 20);
    }

    async fn a_step_is_accepted_once_and_only_forward(db) {
        let (_, owner) = db.account_and_owner().await;
        let holder = FactorHolder::Owner(owner.id.clone());
        assert!(!db.advance_totp_step(&holder, 5).await.unwrap(), "no factor");
        db.insert_totp_factor(&factor(&holder, "s", 100), &codes("a")).await.unwrap();
        assert!(!db.advance_totp_step(&holder, 100).await.unwrap(), "the confirming code's step");
        assert!(!db.advance_totp_step(&holder, 99).await.unwrap());
        assert!(db.advance_totp_step(&holder, 101).await.unwrap());
        assert!(!db.advance_totp_step(&holder, 101).await.unwrap(), "a replay");
        assert!(db.advance_totp_step(&holder, 103).await.unwrap());
        assert!(!db.advance_totp_step(&holder, 102).await.unwrap(), "an earlier step");
        assert_eq!(db.find_totp_factor(&holder).await.unwrap().unwrap().last_step, 103);

        // Many at once with the same step: exactly one wins.
        let won = at_once(&db, |store| {
            let holder = holder.clone();
            async move { store.advance_totp_step(&holder, 104).await }
        })
        .await;
        assert_eq!(won, 1);
    }

    async fn recovery_codes_are_used_once_and_replaced_as_a_set(db) {
        let (_, owner) = db.account_and_owner().await;
        let holder = FactorHolder::Owner(owner.id.clone());
        assert!(!db.replace_recovery_codes(&holder, &codes("x"), ts(T0)).await.unwrap(), "no factor");
        assert_eq!(db.count("totp_recovery_codes").await, 0);
        db.insert_totp_factor(&factor(&holder, "s", 1), &codes("a")).await.unwrap();
        assert!(db.use_recovery_code(&holder, "a-3", ts(T0 + 1)).await.unwrap());
        assert!(!db.use_recovery_code(&holder, "a-3", ts(T0 + 2)).await.unwrap(), "used already");
        assert!(!db.use_recovery_code(&holder, "nope", ts(T0 + 2)).await.unwrap());
        assert_eq!(db.unused_recovery_codes(&holder).await.unwrap(), 9);
        let won = at_once(&db, |store| {
            let holder = holder.clone();
            async move { store.use_recovery_code(&holder, "a-4", ts(T0 + 3)).await }
        })
        .await;
        assert_eq!(won, 1);

        assert!(db.replace_recovery_codes(&holder, &codes("b"), ts(T0 + 5)).await.unwrap());
        assert_eq!(db.unused_recovery_codes(&holder).await.unwrap(), 10);
        assert!(!db.use_recovery_code(&holder, "a-5", ts(T0 + 6)).await.unwrap(), "the old set");
        assert!(db.use_recovery_code(&holder, "b-5", ts(T0 + 6)).await.unwrap());
    }

    async fn removing_a_factor_removes_its_codes(db) {
        let (_, owner) = db.account_and_owner().await;
        let user = db.user().await;
        let holder = FactorHolder::Owner(owner.id.clone());
        let other = FactorHolder::User(user.id.clone());
        assert!(!db.delete_totp_factor(&holder).await.unwrap());
        db.insert_totp_factor(&factor(&holder, "s", 1), &codes("a")).await.unwrap();
        db.insert_totp_factor(&factor(&other, "t", 1), &codes("b")).await.unwrap();
        assert!(db.delete_totp_factor(&holder).await.unwrap());
        assert_eq!(db.find_totp_factor(&holder).await.unwrap(), None);
        assert!(!db.use_recovery_code(&holder, "a-0", ts(T0)).await.unwrap());
        assert_eq!(db.count("totp_recovery_codes").await, 10, "the other holder's stay");
        // A new factor starts afresh.
        assert!(db.insert_totp_factor(&factor(&holder, "s2", 7), &codes("c")).await.unwrap());
        assert_eq!(db.unused_recovery_codes(&holder).await.unwrap(), 10);
    }

    async fn a_master_key_rotation_reseals_totp_secrets(db) {
        db.init_setting("master_key_check", "old-check").await.unwrap();
        let (_, owner) = db.account_and_owner().await;
        let user = db.user().await;
        let a = FactorHolder::Owner(owner.id.clone());
        let b = FactorHolder::User(user.id.clone());
        db.insert_totp_factor(&factor(&a, "old-a", 5), &codes("a")).await.unwrap();
        db.insert_totp_factor(&factor(&b, "old-b", 6), &codes("b")).await.unwrap();
        let mut listed = db.list_totp_secrets().await.unwrap();
        listed.sort_by(|x, y| x.1.cmp(&y.1));
        assert_eq!(listed, [(a.clone(), "old-a".to_owned()), (b.clone(), "old-b".to_owned())]);

        db.write_resealed(&Resealed {
            check: "new-check".into(),
            totp_secrets: vec![(a.clone(), "new-a".into()), (b.clone(), "new-b".into())],
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(db.find_totp_factor(&a).await.unwrap().unwrap().secret, "new-a");
        let b_row = db.find_totp_factor(&b).await.unwrap().unwrap();
        assert_eq!((b_row.secret.as_str(), b_row.last_step), ("new-b", 6));
        assert_eq!(db.unused_recovery_codes(&b).await.unwrap(), 10);
    }

    async fn an_account_may_require_a_factor_of_its_owners(db) {
        let (account, owner) = db.account_and_owner().await;
        let holder = FactorHolder::Owner(owner.id.clone());
        assert!(!db.account_requires_mfa(&account.id).await.unwrap());
        assert!(!db.owner_must_enrol(&owner.id).await.unwrap());
        assert!(db.set_account_requires_mfa(&account.id, true).await.unwrap());
        assert!(db.account_requires_mfa(&account.id).await.unwrap());
        assert!(db.owner_must_enrol(&owner.id).await.unwrap());
        db.insert_totp_factor(&factor(&holder, "s", 1), &codes("a")).await.unwrap();
        assert!(!db.owner_must_enrol(&owner.id).await.unwrap());
        // Another account is not concerned, nor an unknown one or owner.
        let (other, other_owner) = db.account_and_owner().await;
        assert!(!db.account_requires_mfa(&other.id).await.unwrap());
        assert!(!db.owner_must_enrol(&other_owner.id).await.unwrap());
        assert!(!db.set_account_requires_mfa(&"acct-none".into(), true).await.unwrap());
        assert!(!db.owner_must_enrol(&"owner-none".into()).await.unwrap());
        assert!(!db.account_requires_mfa(&"acct-none".into()).await.unwrap());
        assert!(db.set_account_requires_mfa(&account.id, false).await.unwrap());
        assert!(!db.account_requires_mfa(&account.id).await.unwrap());
        // An account's row still reads as before.
        assert_eq!(db.find_account(&account.id).await.unwrap(), Some(account));
    }
}

/// Runs `call` eight times at once, each on its own task, and counts those that answered `true`.
async fn at_once<F, Fut>(db: &TestStore, call: F) -> usize
where
    F: Fn(std::sync::Arc<dyn keyfob_store::Store>) -> Fut,
    Fut: std::future::Future<Output = keyfob_store::Result<bool>> + Send + 'static,
{
    let tasks: Vec<_> = (0..8)
        .map(|_| tokio::spawn(call(db.store.clone())))
        .collect();
    let mut won = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() {
            won += 1;
        }
    }
    won
}
