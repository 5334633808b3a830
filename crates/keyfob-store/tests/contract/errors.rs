//! How failures read: what is not there is `None` or `false`, a taken name is a `Conflict`, a
//! missing row a write refers to is a database error, and none of them leaves half a write.

use keyfob_store::{AuthCodeRow, GrantRow, RecordScope, StoreError, TokenFilter};

use crate::contract;
use crate::helpers::*;

contract! {
    async fn what_is_not_there_reads_as_none_empty_or_false(db) {
        let none = "nothing";
        assert!(db.find_account(&none.into()).await.unwrap().is_none());
        assert!(db.find_owner(&none.into()).await.unwrap().is_none());
        assert!(db.find_owner_by_email(none).await.unwrap().is_none());
        assert!(db.find_api_key(&none.into()).await.unwrap().is_none());
        assert!(db.find_api_key_by_hash(none).await.unwrap().is_none());
        assert!(db.find_token(&none.into()).await.unwrap().is_none());
        assert!(db.find_app(&none.into()).await.unwrap().is_none());
        assert!(db.find_user(&none.into()).await.unwrap().is_none());
        assert!(db.find_user_by_email(none).await.unwrap().is_none());
        assert!(db.find_user_login(none, ts(T0)).await.unwrap().is_none());
        assert!(db.find_owner_login(none, ts(T0)).await.unwrap().is_none());
        assert!(db.find_grant(&none.into(), &none.into()).await.unwrap().is_none());
        assert!(db.find_grant_by_id(&none.into()).await.unwrap().is_none());
        assert!(db.find_auth_code(none).await.unwrap().is_none());
        assert!(db.find_family(&none.into()).await.unwrap().is_none());
        assert!(db.find_refresh(none).await.unwrap().is_none());
        assert!(db.find_refresh_session(none).await.unwrap().is_none());
        assert!(db.find_account_vault(&none.into()).await.unwrap().is_none());
        assert!(db.get_setting(none).await.unwrap().is_none());
        let scope = RecordScope {
            account_id: &none.into(),
            resource: "deals",
            owner_user_id: None,
        };
        assert!(db.get_record(&scope, &none.into()).await.unwrap().is_none());

        assert!(db.list_api_keys(&none.into()).await.unwrap().is_empty());
        assert!(db.list_tokens(&none.into(), 10).await.unwrap().is_empty());
        assert!(db.list_apps(&none.into()).await.unwrap().is_empty());
        assert!(db.list_user_grants(&none.into()).await.unwrap().is_empty());
        assert!(db.list_account_grants(&none.into()).await.unwrap().is_empty());
        let tokens = TokenFilter {
            account_id: &none.into(),
            api_key_id: None,
            permission: None,
            status: None,
            text: None,
            now: ts(T0),
            limit: 10,
            offset: 0,
        };
        assert_eq!(db.list_tokens_page(&tokens).await.unwrap(), (vec![], 0));
        assert!(db.active_api_keys().await.unwrap().is_empty());
        assert!(db.list_signing_keys().await.unwrap().is_empty());
        assert!(db.list_account_vaults().await.unwrap().is_empty());
        assert!(db.live_app_origins().await.unwrap().is_empty());
        assert!(db.token_cutoffs(None, ts(T0)).await.unwrap().is_empty());
        assert!(db.revoked_tokens(ts(T0)).await.unwrap().is_empty());
        assert!(db.revoked_families_since(Timestamp::UNIX_EPOCH).await.unwrap().is_empty());
        assert!(db.sealed_refresh_answers().await.unwrap().is_empty());

        assert!(!db.revoke_grant(&none.into(), ts(T0)).await.unwrap());
        assert!(
            !db.update_record(&scope, &none.into(), &serde_json::json!({}), ts(T0))
                .await
                .unwrap()
        );
        assert!(!db.delete_record(&scope, &none.into()).await.unwrap());
        assert!(!db.set_sensitive_fields(&none.into(), &json("[]"), ts(T0)).await.unwrap());
        assert_eq!(db.delete_user_logins(&none.into(), None).await.unwrap(), 0);
        // Deleting what is not there is not an error.
        db.delete_owner_login(none).await.unwrap();
        db.delete_user_login(none).await.unwrap();
        db.change_user_password(&none.into(), "x", ts(T0)).await.unwrap();
        assert!(db.feed().await.is_empty());
    }

    async fn a_conflict_is_about_one_row_not_the_database(db) {
        let (account, owner) = db.account_and_owner().await;
        for _ in 0..5 {
            let again = keyfob_store::Owner {
                id: id("owner"),
                ..owner.clone()
            };
            let err = db.create_account(&account, &again).await.unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
            assert!(!err.is_connection_failure());
            assert!(!err.is_known_outage());
        }
        // Calls keep going through (on PostgreSQL the outage guard has not tripped).
        db.ping().await.unwrap();
        assert_eq!(db.find_account(&account.id).await.unwrap(), Some(account));
    }

    async fn a_write_referring_to_a_missing_row_is_refused_whole(db) {
        let user = db.user().await;
        let grant = GrantRow {
            id: id("grant"),
            user_id: user.id.clone(),
            client_id: "no-such-app".into(),
            account_id: "no-such-account".into(),
            permissions: json("[]"),
            identity: Default::default(),
            created_at: ts(T0),
            updated_at: ts(T0),
            revoked_at: None,
        };
        let err = db.upsert_grant(&grant).await.unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{err:?}");
        assert!(!err.is_connection_failure());
        assert!(db.find_grant_by_id(&grant.id).await.unwrap().is_none());

        // A session batch whose second item names a missing grant: the first item's code is not
        // used up and no family is written.
        let real = db.grant(r#"["deals.read"]"#).await;
        let code = AuthCodeRow {
            code_hash: id("code"),
            client_id: real.client_id.clone(),
            user_id: real.user_id.clone(),
            grant_id: real.id.clone(),
            redirect_uri: "https://app.example/cb".into(),
            permissions: real.permissions.clone(),
            identity: Default::default(),
            nonce: None,
            auth_time: None,
            code_challenge: None,
            family_id: None,
            created_at: ts(T0),
            expires_at: ts(T0 + MINUTE),
            used_at: None,
        };
        db.insert_auth_code(&code).await.unwrap();
        let good = new_session(&real, Some(&code.code_hash));
        let bad = new_session(
            &GrantRow {
                id: "no-such-grant".into(),
                ..real.clone()
            },
            None,
        );
        let err = db.start_families(&[good, bad]).await.unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{err:?}");
        assert_eq!(
            db.find_auth_code(&code.code_hash).await.unwrap(),
            Some(code)
        );
        assert_eq!(db.count("refresh_families").await, 0);
        assert_eq!(db.count("refresh_tokens").await, 0);
    }

    async fn stored_data_that_no_longer_reads_is_corrupt_not_empty(db) {
        let account = db.account().await;
        let app = db.app(&account).await;
        let grant = db.grant(r#"["deals.read"]"#).await;
        // One column each: a list that is not JSON, a permission that does not parse, an actor
        // kind and an algorithm this version does not know.
        db.raw(&format!(
            "UPDATE apps SET origins = 'not json' WHERE client_id = '{}'",
            app.client_id
        ))
        .await
        .unwrap();
        db.raw(&format!(
            "UPDATE grants SET permissions = '[\"deals.fly\"]' WHERE id = '{}'",
            grant.id
        ))
        .await
        .unwrap();
        let corrupt = |result: Result<_, StoreError>| match result {
            Err(StoreError::Corrupt(what)) => what,
            Err(other) => panic!("expected corrupt data, got {other}"),
            Ok(_) => panic!("expected corrupt data, got a value"),
        };
        corrupt(db.find_app(&app.client_id).await.map(|_| ()));
        corrupt(db.live_app_origins().await.map(|_| ()));
        let what = corrupt(db.find_grant_by_id(&grant.id).await.map(|_| ()));
        assert!(what.contains("deals.fly"), "{what}");

        db.raw(
            "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, created_at, activates_at) \
             VALUES ('k-odd', 'HS256', 'x', '{}', 1, 1)",
        )
        .await
        .unwrap();
        let what = corrupt(db.list_signing_keys().await.map(|_| ()));
        assert!(what.contains("HS256"), "{what}");
    }

    async fn a_change_kind_from_a_newer_node_is_read_not_refused(db) {
        db.raw(
            "INSERT INTO changes (kind, subject, created_at) VALUES ('owner.mfa_changed', 'o-1', 5)",
        )
        .await
        .unwrap();
        let changes = db.changes_since(Timestamp::UNIX_EPOCH).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].kind,
            keyfob_store::ChangeKind::Other("owner.mfa_changed".into())
        );
        assert_eq!(changes[0].subject, "o-1");
    }
}
