//! Settings, the accounts' vaults, and writing back what a master-key rotation sealed again.

use keyfob_store::{AccountVaultRow, RefreshRow, Resealed, Rotation, SigningKeyRow};

use crate::contract;
use crate::helpers::*;

fn vault(account_id: &str, data_key: &str) -> AccountVaultRow {
    AccountVaultRow {
        account_id: account_id.into(),
        data_key: data_key.into(),
        sensitive_fields: json(r#"["ssn"]"#),
        created_at: ts(T0),
        updated_at: ts(T0),
    }
}

contract! {
    async fn a_setting_is_set_once(db) {
        assert_eq!(db.get_setting("master_key_check").await.unwrap(), None);
        assert_eq!(
            db.init_setting("master_key_check", "first").await.unwrap(),
            "first"
        );
        // A second node starting at once gets the value the first one set.
        assert_eq!(
            db.init_setting("master_key_check", "second").await.unwrap(),
            "first"
        );
        assert_eq!(
            db.get_setting("master_key_check").await.unwrap().as_deref(),
            Some("first")
        );
        assert_eq!(db.get_setting("other").await.unwrap(), None);
    }

    async fn the_first_vault_of_an_account_wins(db) {
        let account = db.account().await;
        assert_eq!(db.find_account_vault(&account).await.unwrap(), None);
        assert!(
            !db.set_sensitive_fields(&account, &json(r#"["card"]"#), ts(T0 + 1))
                .await
                .unwrap()
        );

        let first = vault(&account, "sealed-1");
        assert_eq!(db.init_account_vault(&first).await.unwrap(), first);
        assert_eq!(
            db.init_account_vault(&vault(&account, "sealed-2"))
                .await
                .unwrap(),
            first
        );

        assert!(
            db.set_sensitive_fields(&account, &json(r#"["ssn","card"]"#), ts(T0 + 5))
                .await
                .unwrap()
        );
        let stored = db.find_account_vault(&account).await.unwrap().unwrap();
        assert_eq!(
            stored,
            AccountVaultRow {
                sensitive_fields: json(r#"["ssn","card"]"#),
                updated_at: ts(T0 + 5),
                ..first
            }
        );
        let other = db.account().await;
        db.init_account_vault(&vault(&other, "sealed-3"))
            .await
            .unwrap();
        assert_eq!(db.list_account_vaults().await.unwrap().len(), 2);
    }

    async fn resealed_secrets_are_written_together(db) {
        db.init_setting("master_key_check", "old-check")
            .await
            .unwrap();
        let account = db.account().await;
        db.init_account_vault(&vault(&account, "old-data-key"))
            .await
            .unwrap();
        let key = SigningKeyRow {
            kid: id("kid"),
            alg: "ES256".parse().unwrap(),
            private_key: "old-private".into(),
            public_jwk: "{}".into(),
            created_at: ts(T0),
            activates_at: ts(T0),
            retires_at: None,
            expires_at: None,
            revoked_at: None,
        };
        db.insert_signing_key(&key).await.unwrap();
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (family, first) = db.session(&grant).await;
        let rotation = Rotation {
            old_hash: first.clone(),
            next: RefreshRow {
                token_hash: id("rt"),
                family_id: family,
                permissions: json("[]"),
                created_at: ts(T0),
                used_at: None,
                next_sealed: None,
            },
            next_sealed: "old-pair".into(),
            now: ts(T0),
            touch_family: false,
        };
        db.rotate_refreshes(&[rotation]).await.unwrap();

        db.write_resealed(&Resealed {
            check: "new-check".into(),
            signing_keys: vec![(key.kid.clone(), "new-private".into())],
            data_keys: vec![(account.clone(), "new-data-key".into())],
            refresh_answers: vec![(first.clone(), "new-pair".into())],
            ..Default::default()
        })
        .await
        .unwrap();

        assert_eq!(
            db.get_setting("master_key_check").await.unwrap().as_deref(),
            Some("new-check")
        );
        assert_eq!(
            db.list_signing_keys().await.unwrap()[0].private_key,
            "new-private"
        );
        assert_eq!(
            db.find_account_vault(&account)
                .await
                .unwrap()
                .unwrap()
                .data_key,
            "new-data-key"
        );
        assert_eq!(
            db.sealed_refresh_answers().await.unwrap(),
            [(first, "new-pair".to_owned())]
        );
    }
}
