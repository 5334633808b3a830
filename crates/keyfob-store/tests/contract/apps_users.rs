//! Applications and end users after creation: edits, secret rotation, disabling, deletion, and a
//! user removed from one account.

use crate::helpers::change_kind::*;
use keyfob_store::{AppEdit, GrantRow, UserFilter, UserLoginRow};

use crate::contract;
use crate::helpers::*;

/// A grant of `user_id` to a new app of `account`.
async fn grant_in(
    db: &TestStore,
    account: &keyfob_store::AccountId,
    user: &keyfob_store::UserId,
) -> GrantRow {
    let app = db.app(account).await;
    db.upsert_grant(&GrantRow {
        id: id("grant"),
        user_id: user.clone(),
        client_id: app.client_id,
        account_id: account.clone(),
        permissions: json(r#"["deals.read"]"#),
        identity: Default::default(),
        created_at: ts(T0),
        updated_at: ts(T0),
        revoked_at: None,
    })
    .await
    .unwrap()
}

/// The sessions the feed says ended.
async fn ended(db: &TestStore) -> Vec<String> {
    let mut ended: Vec<String> = db
        .feed()
        .await
        .into_iter()
        .filter(|(kind, _)| kind == SESSION_REVOKED)
        .map(|(_, subject)| subject)
        .collect();
    ended.sort();
    ended
}

contract! {
    async fn an_app_is_edited_within_its_account_and_logged(db) {
        let account = db.account().await;
        let app = db.app(&account).await;
        let other = db.account().await;
        let edit = AppEdit {
            name: "Renamed".into(),
            redirect_uris: json(r#"["https://new.example/cb"]"#),
            post_logout_redirect_uris: json(r#"["https://new.example/bye"]"#),
            origins: json("[]"),
            max_permissions: json(r#"["deals.read"]"#),
            refresh_idle_secs: None,
            refresh_absolute_secs: Some(60),
            allow_fragment: true,
        };
        assert!(!db.update_app(Some(&other), &app.client_id, &edit, ts(T0 + 1)).await.unwrap(), "another account's");
        assert_eq!(db.find_app(&app.client_id).await.unwrap(), Some(app.clone()), "unchanged");
        assert!(!db.update_app(None, &"nope".into(), &edit, ts(T0 + 1)).await.unwrap());

        assert!(db.update_app(Some(&account), &app.client_id, &edit, ts(T0 + 2)).await.unwrap());
        let now = db.find_app(&app.client_id).await.unwrap().unwrap();
        assert_eq!(now.name, "Renamed");
        assert_eq!(now.redirect_uris, edit.redirect_uris);
        assert_eq!(now.post_logout_redirect_uris, edit.post_logout_redirect_uris);
        assert!(now.origins.is_empty());
        assert_eq!(now.max_permissions, edit.max_permissions);
        assert_eq!((now.refresh_idle_secs, now.refresh_absolute_secs), (None, Some(60)));
        assert!(now.allow_fragment);
        assert_eq!((now.public, now.created_at), (app.public, app.created_at), "not editable");
        let logged = db.feed().await.into_iter().filter(|(k, s)| k == APP_CHANGED && s.as_str() == app.client_id.as_str()).count();
        assert_eq!(logged, 2, "registered, then edited once");
        assert!(db.live_app_origins().await.unwrap().iter().all(|o| o.is_empty()));
    }

    async fn a_rotated_secret_keeps_the_old_one_for_the_overlap(db) {
        let account = db.account().await;
        let mut row = app_row(&account);
        row.public = false;
        row.client_secret_hash = Some("hash-1".into());
        db.insert_app(&row).await.unwrap();
        let public = db.app(&account).await;
        assert!(!db.rotate_app_secret(None, &public.client_id, "x", None, ts(T0)).await.unwrap(), "a public app has none");
        assert!(!db.rotate_app_secret(Some(&db.account().await), &row.client_id, "x", None, ts(T0)).await.unwrap());

        let until = ts(T0 + 10 * MINUTE);
        assert!(db.rotate_app_secret(Some(&account), &row.client_id, "hash-2", Some(until), ts(T0)).await.unwrap());
        let app = db.find_app(&row.client_id).await.unwrap().unwrap();
        assert_eq!(app.client_secret_hash.as_deref(), Some("hash-2"));
        assert_eq!(app.previous_secret_hash.as_deref(), Some("hash-1"));
        assert_eq!(app.previous_secret_expires_at, Some(until));
        assert!(app.accepts_secret_hash("hash-2", ts(T0 + 1)));
        assert!(app.accepts_secret_hash("hash-1", ts(T0 + 1)), "during the overlap");
        assert!(!app.accepts_secret_hash("hash-1", until), "after it");
        assert!(!app.accepts_secret_hash("hash-3", ts(T0 + 1)));

        // Without an overlap the old one is refused at once.
        assert!(db.rotate_app_secret(None, &row.client_id, "hash-3", None, ts(T0 + 1)).await.unwrap());
        let app = db.find_app(&row.client_id).await.unwrap().unwrap();
        assert_eq!((&app.previous_secret_hash, app.previous_secret_expires_at), (&None, None));
        assert!(!app.accepts_secret_hash("hash-2", ts(T0 + 2)));
        assert!(app.accepts_secret_hash("hash-3", ts(T0 + 2)));
    }

    async fn disabling_an_app_ends_its_sessions_and_enabling_keeps_them_ended(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (one, _) = db.session(&grant).await;
        let (two, _) = db.session(&grant).await;
        let bystander = db.grant(r#"["deals.read"]"#).await;
        let (kept, _) = db.session(&bystander).await;

        assert!(!db.set_app_disabled(Some(&bystander.account_id), &grant.client_id, true, ts(T0 + 1)).await.unwrap(), "another account's");
        assert!(!db.set_app_disabled(None, &grant.client_id, false, ts(T0 + 1)).await.unwrap(), "enabled already");
        assert!(db.set_app_disabled(Some(&grant.account_id), &grant.client_id, true, ts(T0 + 2)).await.unwrap());
        assert!(!db.set_app_disabled(None, &grant.client_id, true, ts(T0 + 3)).await.unwrap(), "disabled already");
        let app = db.find_app(&grant.client_id).await.unwrap().unwrap();
        assert_eq!(app.revoked_at, Some(ts(T0 + 2)));
        let mut expected = vec![one.to_string(), two.to_string()];
        expected.sort();
        assert_eq!(ended(&db).await, expected);
        assert_eq!(db.find_family(&kept).await.unwrap().unwrap().revoked_at, None);
        assert_eq!(db.live_app_origins().await.unwrap().len(), 1, "only the bystander's");
        // The ended sessions are remembered for the revoked set.
        let remembered = db.revoked_families_since(ts(T0)).await.unwrap();
        assert_eq!(remembered.len(), 2);

        assert!(db.set_app_disabled(None, &grant.client_id, false, ts(T0 + 4)).await.unwrap());
        assert_eq!(db.find_app(&grant.client_id).await.unwrap().unwrap().revoked_at, None);
        assert!(db.find_family(&one).await.unwrap().unwrap().revoked_at.is_some(), "stays ended");
    }

    async fn a_deleted_app_is_gone_but_its_id_stays_taken(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (family, _) = db.session(&grant).await;
        let account = grant.account_id.clone();
        assert!(!db.delete_app(Some(&db.account().await), &grant.client_id, ts(T0 + 1)).await.unwrap());
        assert!(db.delete_app(Some(&account), &grant.client_id, ts(T0 + 2)).await.unwrap());
        assert!(!db.delete_app(None, &grant.client_id, ts(T0 + 3)).await.unwrap(), "deleted already");

        let app = db.find_app(&grant.client_id).await.unwrap().unwrap();
        assert_eq!((app.deleted_at, app.revoked_at), (Some(ts(T0 + 2)), Some(ts(T0 + 2))));
        assert_eq!(app.client_secret_hash, None);
        assert!(db.list_apps(&account).await.unwrap().is_empty());
        assert!(db.list_account_grants(&account).await.unwrap().is_empty());
        assert!(db.find_grant_by_id(&grant.id).await.unwrap().unwrap().revoked_at.is_some());
        assert_eq!(ended(&db).await, [family.to_string()]);
        // Nothing brings it back, and its id cannot be registered again.
        assert!(!db.set_app_disabled(None, &grant.client_id, false, ts(T0 + 4)).await.unwrap());
        let edit = AppEdit {
            name: "x".into(),
            redirect_uris: app.redirect_uris.clone(),
            post_logout_redirect_uris: app.post_logout_redirect_uris.clone(),
            origins: app.origins.clone(),
            max_permissions: app.max_permissions.clone(),
            refresh_idle_secs: None,
            refresh_absolute_secs: None,
            allow_fragment: false,
        };
        assert!(!db.update_app(None, &grant.client_id, &edit, ts(T0 + 4)).await.unwrap());
        let mut again = app_row(&account);
        again.client_id = grant.client_id.clone();
        assert!(db.insert_app(&again).await.is_err());
    }

    async fn users_are_listed_by_email(db) {
        let a = db.user().await;
        let b = db.user().await;
        let all = db.list_users(&UserFilter { email_contains: None, limit: 100 }).await.unwrap();
        assert!(all.contains(&a) && all.contains(&b));
        let fragment = a.email[..12].to_uppercase();
        let found = db.list_users(&UserFilter { email_contains: Some(&fragment), limit: 100 }).await.unwrap();
        assert_eq!(found, std::slice::from_ref(&a));
        let none = db.list_users(&UserFilter { email_contains: Some("%"), limit: 100 }).await.unwrap();
        assert!(none.is_empty(), "wildcards are matched as typed");
        let one = db.list_users(&UserFilter { email_contains: Some("@example.com"), limit: 1 }).await.unwrap();
        assert_eq!(one.len(), 1);
    }

    async fn a_disabled_user_loses_every_session_and_login(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (family, _) = db.session(&grant).await;
        let login = UserLoginRow {
            id_hash: id("login"),
            user_id: grant.user_id.clone(),
            csrf_token: "c".into(),
            created_at: ts(T0),
            expires_at: ts(T0 + 60 * MINUTE),
        };
        db.insert_user_login(&login).await.unwrap();
        assert!(!db.set_user_disabled(&grant.user_id, false, ts(T0 + 1)).await.unwrap(), "enabled already");
        assert!(!db.set_user_disabled(&"nope".into(), true, ts(T0 + 1)).await.unwrap());
        assert!(db.set_user_disabled(&grant.user_id, true, ts(T0 + 2)).await.unwrap());
        let user = db.find_user(&grant.user_id).await.unwrap().unwrap();
        assert_eq!(user.disabled_at, Some(ts(T0 + 2)));
        assert_eq!(ended(&db).await, [family.to_string()]);
        assert_eq!(db.find_user_login(&login.id_hash, ts(T0 + 3)).await.unwrap(), None);
        assert!(db.set_user_disabled(&grant.user_id, false, ts(T0 + 4)).await.unwrap());
        assert_eq!(db.find_user(&grant.user_id).await.unwrap().unwrap().disabled_at, None);
    }

    async fn a_deleted_user_leaves_nothing_behind(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let user = grant.user_id.clone();
        let (family, _) = db.session(&grant).await;
        let bystander = db.grant(r#"["deals.read"]"#).await;
        let (kept, _) = db.session(&bystander).await;
        let u = user.as_str();
        let acc = grant.account_id.as_str();
        for sql in [
            format!("INSERT INTO user_sessions (id_hash, user_id, csrf_token, created_at, expires_at) VALUES ('l-{u}', '{u}', 'c', 1, 9999999999999)"),
            format!("INSERT INTO auth_codes (code_hash, client_id, user_id, grant_id, redirect_uri, permissions, created_at, expires_at) VALUES ('c-{u}', '{}', '{u}', '{}', 'https://app.example/cb', '[]', 1, 2)", grant.client_id, grant.id),
            format!("INSERT INTO email_tokens (token_hash, purpose, subject_kind, subject_id, email, created_at, expires_at) VALUES ('e-{u}', 'verify', 'user', '{u}', 'x@example.com', 1, 2)"),
            format!("INSERT INTO totp_factors (holder_kind, holder_id, secret, last_step, created_at) VALUES ('user', '{u}', 's', 0, 1)"),
            format!("INSERT INTO totp_recovery_codes (holder_kind, holder_id, code_hash, created_at) VALUES ('user', '{u}', 'h', 1)"),
            format!("INSERT INTO passkeys (credential_id, holder_kind, holder_id, name, public_key, dynamic_state, sign_count, created_at) VALUES ('p-{u}', 'user', '{u}', 'n', 'k', 'd', 0, 1)"),
            format!("INSERT INTO records (id, account_id, resource, owner_user_id, doc, created_at, updated_at) VALUES ('r-{u}', '{acc}', 'deals', '{u}', '{{}}', 1, 1)"),
            // The same id as an owner's holder: not theirs, so kept.
            format!("INSERT INTO totp_factors (holder_kind, holder_id, secret, last_step, created_at) VALUES ('owner', '{u}', 's', 0, 1)"),
        ] {
            db.raw(&sql).await.unwrap();
        }
        assert!(!db.delete_user(&"nope".into(), ts(T0 + 1)).await.unwrap());
        assert!(db.delete_user(&user, ts(T0 + 2)).await.unwrap());
        assert!(!db.delete_user(&user, ts(T0 + 3)).await.unwrap(), "deleted already");

        assert_eq!(db.find_user(&user).await.unwrap(), None);
        for (table, column) in [
            ("users", "id"),
            ("grants", "user_id"),
            ("auth_codes", "user_id"),
            ("refresh_families", "user_id"),
            ("user_sessions", "user_id"),
            ("email_tokens", "subject_id"),
            ("totp_recovery_codes", "holder_id"),
            ("passkeys", "holder_id"),
            ("records", "owner_user_id"),
        ] {
            let left = db.scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {column} = '{u}'")).await;
            assert_eq!(left, 0, "{table}");
        }
        let left = db.scalar(&format!("SELECT COUNT(*) FROM refresh_tokens WHERE family_id = '{family}'")).await;
        assert_eq!(left, 0, "refresh_tokens");
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM totp_factors WHERE holder_id = '{u}'")).await, 1, "the owner's");
        // Its ended session stays in the feed, and so in the revoked set after a reload.
        assert_eq!(ended(&db).await, [family.to_string()]);
        let remembered = db.revoked_families_since(ts(T0)).await.unwrap();
        assert_eq!(remembered, [(family.clone(), ts(T0 + 2))]);
        // Everyone else is untouched.
        assert!(db.find_user(&bystander.user_id).await.unwrap().is_some());
        assert_eq!(db.find_family(&kept).await.unwrap().unwrap().revoked_at, None);
    }

    async fn a_user_removed_from_one_account_keeps_the_others(db) {
        let user = db.user().await;
        let here = db.account().await;
        let there = db.account().await;
        let a = grant_in(&db, &here, &user.id).await;
        let b = grant_in(&db, &here, &user.id).await;
        let elsewhere = grant_in(&db, &there, &user.id).await;
        let (fa, _) = db.session(&a).await;
        let (fb, _) = db.session(&b).await;
        let (kept, _) = db.session(&elsewhere).await;
        assert!(db.revoke_grant(&b.id, ts(T0 + 1)).await.unwrap());

        assert_eq!(db.remove_user_from_account(&here, &user.id, ts(T0 + 2)).await.unwrap(), 1, "one live grant left");
        assert_eq!(db.remove_user_from_account(&here, &user.id, ts(T0 + 3)).await.unwrap(), 0);
        assert!(db.find_grant_by_id(&a.id).await.unwrap().unwrap().revoked_at.is_some());
        assert!(db.find_family(&fa).await.unwrap().unwrap().revoked_at.is_some());
        assert!(db.find_family(&fb).await.unwrap().unwrap().revoked_at.is_some());
        assert_eq!(db.find_grant_by_id(&elsewhere.id).await.unwrap().unwrap().revoked_at, None);
        assert_eq!(db.find_family(&kept).await.unwrap().unwrap().revoked_at, None);
        assert!(db.find_user(&user.id).await.unwrap().unwrap().disabled_at.is_none());
    }
}
