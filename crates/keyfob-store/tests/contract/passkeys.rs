//! Passkeys: stored once per credential id, listed per holder, a sign-in recorded only against the
//! counter it was checked with (so a replayed or concurrent one is refused), removed only by
//! their holder.

use keyfob_store::{FactorHolder, PasskeyRow, PasskeyUse};

use crate::contract;
use crate::helpers::*;

fn passkey(holder: &FactorHolder, id: &str, name: &str, at: i64) -> PasskeyRow {
    PasskeyRow {
        credential_id: id.into(),
        holder: holder.clone(),
        name: name.into(),
        public_key: format!("pk-{id}"),
        dynamic_state: "AQAAAAAAAA".into(),
        sign_count: 0,
        created_at: ts(at),
        last_used_at: None,
    }
}

contract! {
    async fn a_passkey_is_stored_once_and_listed_for_its_holder(db) {
        let (_, owner) = db.account_and_owner().await;
        let user = db.user().await;
        let mine = FactorHolder::Owner(owner.id.clone());
        let theirs = FactorHolder::User(user.id.clone());
        assert!(db.list_passkeys(&mine).await.unwrap().is_empty());
        assert_eq!(db.find_passkey("cred-a").await.unwrap(), None);

        let a = passkey(&mine, "cred-a", "Laptop", T0);
        let b = passkey(&mine, "cred-b", "Phone", T0 + 1000);
        assert!(db.insert_passkey(&b).await.unwrap());
        assert!(db.insert_passkey(&a).await.unwrap());
        // The same credential id again, even for someone else, writes nothing.
        assert!(!db.insert_passkey(&passkey(&theirs, "cred-a", "Stolen", T0)).await.unwrap());
        assert!(db.insert_passkey(&passkey(&theirs, "cred-u", "Key", T0)).await.unwrap());

        assert_eq!(db.find_passkey("cred-a").await.unwrap(), Some(a.clone()));
        assert_eq!(db.list_passkeys(&mine).await.unwrap(), vec![a, b]);
        assert_eq!(db.list_passkeys(&theirs).await.unwrap().len(), 1);
        assert_eq!(db.count("passkeys").await, 3);
    }

    async fn a_sign_in_is_recorded_only_against_the_counter_it_was_checked_with(db) {
        let (_, owner) = db.account_and_owner().await;
        let holder = FactorHolder::Owner(owner.id.clone());
        db.insert_passkey(&passkey(&holder, "cred", "Laptop", T0)).await.unwrap();
        let first = PasskeyUse {
            credential_id: "cred",
            expected_sign_count: 0,
            dynamic_state: "AQAAAQAAAA",
            sign_count: 1,
            at: ts(T0 + 5000),
        };
        assert!(db.record_passkey_use(&first).await.unwrap());
        // The same change again (a replay, or another node at once) is refused.
        assert!(!db.record_passkey_use(&first).await.unwrap());
        assert!(!db.record_passkey_use(&PasskeyUse { credential_id: "nope", ..first.clone() }).await.unwrap());
        let row = db.find_passkey("cred").await.unwrap().unwrap();
        assert_eq!(row.sign_count, 1);
        assert_eq!(row.dynamic_state, "AQAAAQAAAA");
        assert_eq!(row.last_used_at, Some(ts(T0 + 5000)));
        assert!(db.record_passkey_use(&PasskeyUse {
            expected_sign_count: 1,
            sign_count: 7,
            ..first
        }).await.unwrap());
        assert_eq!(db.find_passkey("cred").await.unwrap().unwrap().sign_count, 7);
    }

    async fn only_its_holder_removes_a_passkey(db) {
        let (_, owner) = db.account_and_owner().await;
        let user = db.user().await;
        let mine = FactorHolder::Owner(owner.id.clone());
        let theirs = FactorHolder::User(user.id.clone());
        db.insert_passkey(&passkey(&mine, "cred", "Laptop", T0)).await.unwrap();
        assert!(!db.delete_passkey(&theirs, "cred").await.unwrap());
        assert!(!db.delete_passkey(&mine, "other").await.unwrap());
        assert_eq!(db.count("passkeys").await, 1);
        assert!(db.delete_passkey(&mine, "cred").await.unwrap());
        assert!(!db.delete_passkey(&mine, "cred").await.unwrap());
        assert_eq!(db.find_passkey("cred").await.unwrap(), None);
    }
}
