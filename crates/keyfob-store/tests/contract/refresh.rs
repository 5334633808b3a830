//! Refresh families (user sessions) and the rotation of their refresh tokens.

use std::sync::Arc;

use crate::helpers::change_kind::*;
use keyfob_store::{RefreshRow, Rotation};

use crate::contract;
use crate::helpers::*;

/// A use of `old` at `now` that replaces it with a new token of `family_id`.
fn rotation(old: &str, family_id: &str, now: Timestamp, touch_family: bool) -> Rotation {
    Rotation {
        old_hash: old.into(),
        next: RefreshRow {
            token_hash: id("rt"),
            family_id: family_id.into(),
            permissions: json(r#"["deals.read"]"#),
            created_at: now,
            used_at: None,
            next_sealed: None,
        },
        next_sealed: format!("sealed-{}", id::<String>("pair")),
        now,
        touch_family,
    }
}

contract! {
    async fn a_refresh_session_reads_token_family_and_grant_together(db) {
        let grant = db.grant(r#"["deals.read","deals.write"]"#).await;
        let (family, refresh) = db.session(&grant).await;

        let session = db.find_refresh_session(&refresh).await.unwrap().unwrap();
        assert_eq!(
            Some(&session.token),
            db.find_refresh(&refresh).await.unwrap().as_ref()
        );
        assert_eq!(
            Some(&session.family),
            db.find_family(&family).await.unwrap().as_ref()
        );
        assert_eq!(session.family.grant_id, grant.id);
        assert_eq!(
            session.grant_permissions.as_ref(),
            Some(&grant.permissions)
        );
        assert!(db.find_refresh_session("nope").await.unwrap().is_none());
        assert!(db.find_refresh("nope").await.unwrap().is_none());
        assert!(db.find_family(&"nope".into()).await.unwrap().is_none());
    }

    async fn a_refresh_token_rotates_once(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (family, first) = db.session(&grant).await;
        let use_it = rotation(&first, &family, ts(T0 + 10), true);
        assert_eq!(
            db.rotate_refreshes(std::slice::from_ref(&use_it))
                .await
                .unwrap(),
            [true]
        );

        let used = db.find_refresh(&first).await.unwrap().unwrap();
        assert_eq!(used.used_at, Some(ts(T0 + 10)));
        assert_eq!(
            used.next_sealed.as_deref(),
            Some(use_it.next_sealed.as_str())
        );
        assert_eq!(
            db.find_refresh(&use_it.next.token_hash).await.unwrap(),
            Some(use_it.next.clone())
        );
        assert_eq!(
            db.find_family(&family).await.unwrap().unwrap().last_used_at,
            ts(T0 + 10)
        );

        // Used again (a replay, or the second tab): refused, and nothing is written.
        let replay = rotation(&first, &family, ts(T0 + 20), true);
        assert_eq!(
            db.rotate_refreshes(std::slice::from_ref(&replay))
                .await
                .unwrap(),
            [false]
        );
        assert_eq!(
            db.find_refresh(&replay.next.token_hash).await.unwrap(),
            None
        );
        assert_eq!(db.find_refresh(&first).await.unwrap(), Some(used));
        assert_eq!(
            db.find_family(&family).await.unwrap().unwrap().last_used_at,
            ts(T0 + 10)
        );
        let unknown = rotation("no-such-token", &family, ts(T0 + 20), false);
        assert_eq!(db.rotate_refreshes(&[unknown]).await.unwrap(), [false]);
        assert!(db.rotate_refreshes(&[]).await.unwrap().is_empty());
        assert_eq!(db.count("refresh_tokens").await, 2);
    }

    async fn rotations_in_one_batch_win_once_each_and_touch_when_asked(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (a_family, a) = db.session(&grant).await;
        let (b_family, b) = db.session(&grant).await;
        let batch = [
            rotation(&a, &a_family, ts(T0 + 5), false),
            rotation(&b, &b_family, ts(T0 + 6), true),
            rotation(&a, &a_family, ts(T0 + 7), true),
        ];
        assert_eq!(
            db.rotate_refreshes(&batch).await.unwrap(),
            [true, true, false]
        );

        assert!(
            db.find_refresh(&batch[0].next.token_hash)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            db.find_refresh(&batch[1].next.token_hash)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            db.find_refresh(&batch[2].next.token_hash)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            db.find_refresh(&a).await.unwrap().unwrap().used_at,
            Some(ts(T0 + 5))
        );
        // The family is touched only when the winning use asks.
        assert_eq!(
            db.find_family(&a_family)
                .await
                .unwrap()
                .unwrap()
                .last_used_at,
            ts(T0)
        );
        assert_eq!(
            db.find_family(&b_family)
                .await
                .unwrap()
                .unwrap()
                .last_used_at,
            ts(T0 + 6)
        );
    }

    async fn concurrent_uses_of_one_refresh_token_win_once(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (family, first) = db.session(&grant).await;
        let store = Arc::clone(&db.store);
        let tries: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&store);
                let item = rotation(&first, &family, ts(T0 + i), true);
                tokio::spawn(async move {
                    store
                        .rotate_refreshes(std::slice::from_ref(&item))
                        .await
                        .unwrap()
                        == [true]
                })
            })
            .collect();
        let mut wins = 0;
        for attempt in tries {
            wins += usize::from(attempt.await.unwrap());
        }
        assert_eq!(wins, 1);
        assert_eq!(db.count("refresh_tokens").await, 2);
    }

    async fn a_family_ends_once_and_is_logged(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (family, _) = db.session(&grant).await;

        assert!(db.revoke_family(&family, ts(T0 + 10)).await.unwrap());
        assert!(!db.revoke_family(&family, ts(T0 + 20)).await.unwrap());
        assert!(!db.revoke_family(&"nope".into(), ts(T0 + 20)).await.unwrap());
        assert_eq!(
            db.find_family(&family).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 10))
        );
        assert_eq!(
            db.revoked_families_since(ts(T0)).await.unwrap(),
            [(family.clone(), ts(T0 + 10))]
        );
        assert!(db.revoked_families_since(ts(T0 + 10)).await.unwrap().is_empty());
        let ended: Vec<_> = db
            .feed()
            .await
            .into_iter()
            .filter(|(kind, _)| kind == SESSION_REVOKED)
            .collect();
        assert_eq!(ended, [(SESSION_REVOKED.to_owned(), family.to_string())]);
    }

    async fn a_users_sessions_end_in_one_app_or_all(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (one, _) = db.session(&grant).await;
        let (two, _) = db.session(&grant).await;
        // The same user in a second app.
        let account = db.account().await;
        let app = db.app(&account).await;
        let elsewhere = db
            .upsert_grant(&keyfob_store::GrantRow {
                id: id("grant"),
                client_id: app.client_id.clone(),
                account_id: account,
                ..grant.clone()
            })
            .await
            .unwrap();
        let (three, _) = db.session(&elsewhere).await;
        assert!(db.revoke_family(&two, ts(T0 + 1)).await.unwrap());

        let ended = db
            .revoke_user_families(&grant.user_id, Some(&grant.client_id), ts(T0 + 5))
            .await;
        assert_eq!(ended.unwrap(), 1, "only the live one in that app");
        assert_eq!(
            db.find_family(&one).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 5))
        );
        assert_eq!(
            db.find_family(&two).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 1))
        );
        assert_eq!(
            db.find_family(&three).await.unwrap().unwrap().revoked_at,
            None
        );

        assert_eq!(
            db.revoke_user_families(&grant.user_id, None, ts(T0 + 9))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            db.find_family(&three).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 9))
        );
        assert_eq!(
            db.revoke_user_families(&grant.user_id, None, ts(T0 + 9))
                .await
                .unwrap(),
            0
        );
        let mut since = db.revoked_families_since(ts(T0 + 1)).await.unwrap();
        since.sort_by_key(|(_, at)| *at);
        assert_eq!(since, [(one, ts(T0 + 5)), (three, ts(T0 + 9))]);
        assert_eq!(
            db.feed()
                .await
                .iter()
                .filter(|(kind, _)| kind == SESSION_REVOKED)
                .count(),
            3
        );
    }

    async fn sealed_retry_answers_are_kept_then_cleared(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let (family, first) = db.session(&grant).await;
        let early = rotation(&first, &family, ts(T0 + 10), false);
        assert_eq!(
            db.rotate_refreshes(std::slice::from_ref(&early))
                .await
                .unwrap(),
            [true]
        );
        let late = rotation(&early.next.token_hash, &family, ts(T0 + 50), false);
        assert_eq!(
            db.rotate_refreshes(std::slice::from_ref(&late))
                .await
                .unwrap(),
            [true]
        );

        let mut kept = db.sealed_refresh_answers().await.unwrap();
        kept.sort();
        let mut expected = vec![
            (first.clone(), early.next_sealed.clone()),
            (early.next.token_hash.clone(), late.next_sealed.clone()),
        ];
        expected.sort();
        assert_eq!(kept, expected);

        // Answers of uses before the instant are forgotten; the use itself is not.
        db.clear_sealed_refresh(ts(T0 + 50)).await.unwrap();
        assert_eq!(
            db.sealed_refresh_answers().await.unwrap(),
            [(early.next.token_hash.clone(), late.next_sealed.clone())]
        );
        let cleared = db.find_refresh(&first).await.unwrap().unwrap();
        assert_eq!(
            (cleared.used_at, cleared.next_sealed),
            (Some(ts(T0 + 10)), None)
        );
    }
}
