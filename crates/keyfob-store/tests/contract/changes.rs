//! The change feed other nodes poll: every write they must notice logs one entry, in its own
//! transaction, and a write that changed nothing logs nothing.

use crate::helpers::change_kind::*;

use crate::contract;
use crate::helpers::*;

contract! {
    async fn each_write_logs_its_change_in_order(db) {
        let account = db.account().await;
        let key = db.key(&account, ts(T0 + 1)).await;
        let token = token_row(&account, Some(&key.id), ts(T0 + 2));
        db.insert_tokens(std::slice::from_ref(&token))
            .await
            .unwrap();
        assert!(db.revoke_token(&account, &token.jti, ts(T0 + 3)).await.unwrap());
        assert!(db.revoke_key_tokens(None, &key.id, ts(T0 + 4)).await.unwrap());
        assert!(db.revoke_api_key(None, &key.id, ts(T0 + 5)).await.unwrap());
        let app = app_row(&account);
        db.insert_app(&app).await.unwrap();
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (family, _) = db.session(&grant).await;
        assert!(db.revoke_family(&family, ts(T0 + 6)).await.unwrap());

        let changes = db.changes_since(Timestamp::UNIX_EPOCH).await.unwrap();
        let mine: Vec<(&str, &str, Timestamp)> = changes
            .iter()
            .filter(|c| c.subject != grant.client_id)
            .map(|c| (c.kind.as_str(), c.subject.as_str(), c.created_at))
            .collect();
        assert_eq!(
            mine,
            [
                (API_KEY_CREATED, key.id.as_str(), ts(T0 + 1)),
                (TOKEN_REVOKED, token.jti.as_str(), ts(T0 + 3)),
                (API_KEY_TOKENS_REVOKED, key.id.as_str(), ts(T0 + 4)),
                (API_KEY_REVOKED, key.id.as_str(), ts(T0 + 5)),
                (APP_CHANGED, app.client_id.as_str(), ts(T0)),
                (SESSION_REVOKED, family.as_str(), ts(T0 + 6)),
            ]
        );
        // Ids grow with each entry, so a poller can tell which it has seen.
        assert!(changes.windows(2).all(|w| w[0].id < w[1].id));
    }

    async fn the_feed_is_read_from_a_cursor_and_pruned(db) {
        let account = db.account().await;
        let early = db.key(&account, ts(T0)).await;
        let middle = db.key(&account, ts(T0 + 10)).await;
        let late = db.key(&account, ts(T0 + 20)).await;

        let store = &db;
        let subjects = move |since| async move {
            store
                .changes_since(since)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.subject)
                .collect::<Vec<_>>()
        };
        // The cursor is inclusive: an entry logged at the instant polled is seen.
        assert_eq!(
            subjects(ts(T0 + 10)).await,
            [middle.id.clone(), late.id.clone()]
        );
        assert_eq!(subjects(ts(T0 + 21)).await, Vec::<String>::new());
        assert_eq!(subjects(Timestamp::UNIX_EPOCH).await.len(), 3);

        db.prune_changes(ts(T0 + 10)).await.unwrap();
        assert_eq!(subjects(Timestamp::UNIX_EPOCH).await, [middle.id.clone(), late.id.clone()]);
        // Pruning the feed forgets the entries, not what they were about.
        assert!(db.find_api_key(&early.id).await.unwrap().is_some());
    }

    async fn refused_or_empty_writes_log_nothing(db) {
        let account = db.account().await;
        let grant = db.grant(r#"["deals.read"]"#).await;
        let before = db.feed().await;

        assert!(!db.revoke_api_key(None, &"no-key".into(), ts(T0)).await.unwrap());
        assert!(!db.revoke_key_tokens(None, &"no-key".into(), ts(T0)).await.unwrap());
        assert!(!db.revoke_token(&account, &"no-token".into(), ts(T0)).await.unwrap());
        assert!(!db.revoke_family(&"no-family".into(), ts(T0)).await.unwrap());
        assert_eq!(
            db.revoke_user_families(&grant.user_id, None, ts(T0))
                .await
                .unwrap(),
            0
        );
        assert!(!db.retire_signing_key(&"no-kid".into(), ts(T0), None).await.unwrap());
        db.insert_tokens(&[]).await.unwrap();
        db.touch_api_keys(&[use_of(&"no-key".into(), T0, None)]).await.unwrap();
        // Writes other nodes need not load: records, users, grants, sessions.
        db.insert_record(&keyfob_store::RecordRow {
            id: id("rec"),
            account_id: account.clone(),
            resource: "deals".into(),
            owner_user_id: None,
            doc: serde_json::json!({}),
            created_at: ts(T0),
            updated_at: ts(T0),
        })
        .await
        .unwrap();
        db.user().await;

        assert_eq!(db.feed().await, before);
    }
}
