//! Applications, end users, their grants, and the login sessions of users and owners.

use crate::helpers::change_kind::*;
use keyfob_store::{GrantRow, OwnerLoginRow, StoreError, UserLoginRow, UserRow};

use crate::contract;
use crate::helpers::*;

contract! {
    async fn an_app_is_stored_listed_and_logged(db) {
        let account = db.account().await;
        let first = db.app(&account).await;
        let mut second = app_row(&account);
        second.public = false;
        second.client_secret_hash = Some("secret-hash".into());
        second.origins = json(r#"["https://admin.example","http://localhost:3000"]"#);
        second.post_logout_redirect_uris =
            json(r#"["https://admin.example/bye","http://localhost:3000/bye?x=1"]"#);
        second.refresh_idle_secs = None;
        second.refresh_absolute_secs = Some(86_400);
        second.allow_fragment = true;
        second.created_at = ts(T0 + 1);
        db.insert_app(&second).await.unwrap();
        let elsewhere = db.app(&db.account().await).await;

        assert_eq!(
            db.find_app(&second.client_id).await.unwrap(),
            Some(second.clone())
        );
        assert_eq!(db.find_app(&"nope".into()).await.unwrap(), None);
        assert_eq!(
            db.list_apps(&account).await.unwrap(),
            [second.clone(), first.clone()]
        );
        let mut origins = db.live_app_origins().await.unwrap();
        origins.sort();
        let mut expected = vec![
            first.origins.clone(),
            second.origins.clone(),
            elsewhere.origins,
        ];
        expected.sort();
        assert_eq!(origins, expected);
        let logged: Vec<_> = db
            .feed()
            .await
            .into_iter()
            .filter(|(kind, _)| kind == APP_CHANGED)
            .collect();
        assert_eq!(logged.len(), 3);
        assert_eq!(logged[1], (APP_CHANGED.to_owned(), second.client_id.to_string()));
    }

    async fn an_app_registered_before_logout_addresses_has_none(db) {
        let account = db.account().await;
        let app = db.app(&account).await;
        // A row written before the column existed takes its default: an empty list.
        db.raw(&format!(
            "INSERT INTO apps (client_id, account_id, name, public, redirect_uris, origins, \
             max_permissions, created_at) SELECT 'app_old', account_id, 'Old', public, \
             redirect_uris, origins, max_permissions, created_at FROM apps WHERE client_id = '{}'",
            app.client_id
        ))
        .await
        .unwrap();
        let old = db.find_app(&"app_old".into()).await.unwrap().unwrap();
        assert!(old.post_logout_redirect_uris.is_empty());
        assert_eq!(old.redirect_uris, app.redirect_uris);

        db.raw(&format!(
            "UPDATE apps SET post_logout_redirect_uris = 'not json' WHERE client_id = '{}'",
            app.client_id
        ))
        .await
        .unwrap();
        match db.find_app(&app.client_id).await {
            Err(StoreError::Corrupt(what)) => {
                assert!(what.contains("post_logout_redirect_uris"), "{what}")
            }
            other => panic!("expected corrupt data, got {other:?}"),
        }
    }

    async fn a_taken_client_id_is_refused_and_logs_nothing(db) {
        let account = db.account().await;
        let app = db.app(&account).await;
        let mut twin = app_row(&account);
        twin.client_id = app.client_id.clone();
        twin.name = "Twin".into();

        let err = db.insert_app(&twin).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict("client id")), "{err:?}");
        assert_eq!(
            db.find_app(&app.client_id).await.unwrap().unwrap().name,
            "Web"
        );
        assert_eq!(
            db.feed()
                .await
                .iter()
                .filter(|(kind, _)| kind == APP_CHANGED)
                .count(),
            1
        );
    }

    async fn users_are_found_by_id_and_email_and_emails_are_unique(db) {
        let user = db.user().await;
        assert_eq!(db.find_user(&user.id).await.unwrap(), Some(user.clone()));
        assert_eq!(
            db.find_user_by_email(&user.email).await.unwrap(),
            Some(user.clone())
        );
        assert_eq!(db.find_user(&"nope".into()).await.unwrap(), None);

        let twin = UserRow {
            id: id("user"),
            ..user.clone()
        };
        let err = db.insert_user(&twin).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict("email")), "{err:?}");
        assert_eq!(db.find_user(&twin.id).await.unwrap(), None);
        assert_eq!(
            db.find_user_by_email(&user.email).await.unwrap(),
            Some(user)
        );
    }

    async fn a_grant_is_created_then_replaced_and_revived(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        assert_eq!(grant.revoked_at, None);
        assert_eq!(
            db.find_grant_by_id(&grant.id).await.unwrap(),
            Some(grant.clone())
        );
        assert_eq!(
            db.find_grant(&grant.user_id, &grant.client_id)
                .await
                .unwrap(),
            Some(grant.clone())
        );
        assert_eq!(
            db.find_grant(&grant.user_id, &"other-app".into()).await.unwrap(),
            None
        );

        // The same user and app again: the permissions are replaced, the grant keeps its id.
        let again = GrantRow {
            id: id("grant"),
            permissions: json(r#"["deals.read","deals.write"]"#),
            created_at: ts(T0 + 50),
            updated_at: ts(T0 + 50),
            ..grant.clone()
        };
        let stored = db.upsert_grant(&again).await.unwrap();
        assert_eq!(
            stored,
            GrantRow {
                permissions: again.permissions.clone(),
                updated_at: ts(T0 + 50),
                ..grant.clone()
            }
        );
        assert_eq!(db.find_grant_by_id(&again.id).await.unwrap(), None);
        assert_eq!(db.count("grants").await, 1);

        // Revoked, it leaves the user's list but not the account's; granted again, it revives.
        assert!(db.revoke_grant(&grant.id, ts(T0 + 60)).await.unwrap());
        assert!(
            db.list_user_grants(&grant.user_id)
                .await
                .unwrap()
                .is_empty()
        );
        let listed = db.list_account_grants(&grant.account_id).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].revoked_at, Some(ts(T0 + 60)));
        let revived = db
            .upsert_grant(&GrantRow {
                updated_at: ts(T0 + 70),
                ..again
            })
            .await
            .unwrap();
        assert_eq!(revived.id, grant.id);
        assert_eq!(revived.revoked_at, None);
        assert_eq!(
            db.list_user_grants(&grant.user_id).await.unwrap(),
            [revived]
        );
    }

    async fn revoking_a_grant_ends_its_sessions_once(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (family, refresh) = db.session(&grant).await;
        let (other_family, _) = db.session(&db.grant(r#"["deals.read"]"#).await).await;

        assert!(db.revoke_grant(&grant.id, ts(T0 + 100)).await.unwrap());
        assert_eq!(
            db.find_family(&family).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 100))
        );
        assert_eq!(
            db.find_family(&other_family)
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            None
        );
        let session = db.find_refresh_session(&refresh).await.unwrap().unwrap();
        assert_eq!(
            session.grant_permissions, None,
            "a revoked grant grants nothing"
        );

        assert!(!db.revoke_grant(&grant.id, ts(T0 + 200)).await.unwrap());
        assert!(!db.revoke_grant(&"nope".into(), ts(T0 + 200)).await.unwrap());
        assert_eq!(
            db.find_grant_by_id(&grant.id)
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            Some(ts(T0 + 100))
        );
        assert_eq!(
            db.find_family(&family).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 100))
        );
        let ended: Vec<_> = db
            .feed()
            .await
            .into_iter()
            .filter(|(kind, _)| kind == SESSION_REVOKED)
            .collect();
        assert_eq!(ended, [(SESSION_REVOKED.to_owned(), family.to_string())]);
    }

    async fn a_new_password_ends_every_session_of_its_user_only(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (family, _) = db.session(&grant).await;
        let other = db.grant(r#"["deals.read"]"#).await;
        let (other_family, _) = db.session(&other).await;
        for (user, hash) in [(&grant.user_id, "mine"), (&other.user_id, "theirs")] {
            db.insert_user_login(&UserLoginRow {
                id_hash: hash.into(),
                user_id: user.clone(),
                csrf_token: "csrf".into(),
                created_at: ts(T0),
                expires_at: ts(T0 + 60 * MINUTE),
            })
            .await
            .unwrap();
        }

        db.change_user_password(&grant.user_id, "$argon2id$new", ts(T0 + 5))
            .await
            .unwrap();
        let user = db.find_user(&grant.user_id).await.unwrap().unwrap();
        assert_eq!(
            (user.password_hash.as_str(), user.password_changed_at),
            ("$argon2id$new", ts(T0 + 5))
        );
        assert_eq!(
            db.find_family(&family).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 5))
        );
        assert!(db.find_user_login("mine", ts(T0)).await.unwrap().is_none());

        assert_eq!(
            db.find_family(&other_family)
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            None
        );
        assert!(db.find_user_login("theirs", ts(T0)).await.unwrap().is_some());
        assert_eq!(
            db.find_user(&other.user_id)
                .await
                .unwrap()
                .unwrap()
                .password_hash,
            "$argon2id$old"
        );
        let ended: Vec<_> = db
            .feed()
            .await
            .into_iter()
            .filter(|(kind, _)| kind == SESSION_REVOKED)
            .collect();
        assert_eq!(ended, [(SESSION_REVOKED.to_owned(), family.to_string())]);
    }

    async fn user_logins_expire_and_end_one_or_all_but_one(db) {
        let user = db.user().await;
        let other = db.user().await;
        let login = |hash: &str, user_id: &str, expires_at| UserLoginRow {
            id_hash: hash.into(),
            user_id: user_id.into(),
            csrf_token: format!("csrf-{hash}"),
            created_at: ts(T0),
            expires_at,
        };
        for row in [
            login("a", &user.id, ts(T0 + MINUTE)),
            login("b", &user.id, ts(T0 + MINUTE)),
            login("c", &user.id, ts(T0 + MINUTE)),
            login("d", &other.id, ts(T0 + MINUTE)),
        ] {
            db.insert_user_login(&row).await.unwrap();
        }

        let found = db.find_user_login("a", ts(T0)).await.unwrap().unwrap();
        assert_eq!(found, login("a", &user.id, ts(T0 + MINUTE)));
        assert!(
            db.find_user_login("a", ts(T0 + MINUTE))
                .await
                .unwrap()
                .is_none(),
            "expired"
        );
        assert!(db.find_user_login("zz", ts(T0)).await.unwrap().is_none());

        db.delete_user_login("a").await.unwrap();
        assert!(db.find_user_login("a", ts(T0)).await.unwrap().is_none());
        // "Log out everywhere else" keeps the current login.
        assert_eq!(
            db.delete_user_logins(&user.id, Some("b")).await.unwrap(),
            1
        );
        assert!(db.find_user_login("b", ts(T0)).await.unwrap().is_some());
        assert!(db.find_user_login("c", ts(T0)).await.unwrap().is_none());
        assert_eq!(db.delete_user_logins(&user.id, None).await.unwrap(), 1);
        assert!(db.find_user_login("b", ts(T0)).await.unwrap().is_none());
        assert!(db.find_user_login("d", ts(T0)).await.unwrap().is_some());
    }

    async fn dashboard_sessions_expire_and_are_pruned(db) {
        let (account, owner) = db.account_and_owner().await;
        let session = |hash: &str, expires_at| OwnerLoginRow {
            id_hash: hash.into(),
            owner_id: owner.id.clone(),
            account_id: account.id.clone(),
            csrf_token: "csrf".into(),
            created_at: ts(T0),
            expires_at,
            ip: None,
            user_agent: None,
        };
        db.insert_owner_login(&session("short", ts(T0 + MINUTE)))
            .await
            .unwrap();
        db.insert_owner_login(&session("long", ts(T0 + 60 * MINUTE)))
            .await
            .unwrap();
        db.insert_owner_login(&session("gone", ts(T0 + 60 * MINUTE)))
            .await
            .unwrap();

        assert_eq!(
            db.find_owner_login("short", ts(T0)).await.unwrap(),
            Some(session("short", ts(T0 + MINUTE)))
        );
        assert_eq!(db.find_owner_login("short", ts(T0 + MINUTE)).await.unwrap(), None);
        db.delete_owner_login("gone").await.unwrap();
        assert_eq!(db.find_owner_login("gone", ts(T0)).await.unwrap(), None);

        db.prune_expired(ts(T0 + 2 * MINUTE)).await.unwrap();
        assert_eq!(db.count("dashboard_sessions").await, 1);
        assert!(
            db.find_owner_login("long", ts(T0 + 2 * MINUTE))
                .await
                .unwrap()
                .is_some()
        );
    }
}
