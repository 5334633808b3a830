//! API keys: creating, finding, revoking, last-used times, and "revoke all tokens of this key".

use crate::helpers::change_kind::*;
use keyfob_store::{StoreError, TokenCutoff};

use crate::contract;
use crate::helpers::*;

contract! {
    async fn a_key_is_found_by_id_and_hash_listed_and_logged(db) {
        let account = db.account().await;
        let older = db.key(&account, ts(T0)).await;
        let newer = db.key(&account, ts(T0 + 10)).await;
        let other = db.key(&db.account().await, ts(T0)).await;

        assert_eq!(
            db.find_api_key(&older.id).await.unwrap(),
            Some(older.clone())
        );
        assert_eq!(
            db.find_api_key_by_hash(&newer.key_hash).await.unwrap(),
            Some(newer.clone())
        );
        assert_eq!(db.find_api_key(&"nope".into()).await.unwrap(), None);
        assert_eq!(db.find_api_key_by_hash("nope").await.unwrap(), None);
        // An account's keys, newest first, and no other account's.
        assert_eq!(
            db.list_api_keys(&account).await.unwrap(),
            [newer.clone(), older.clone()]
        );
        let mut live: Vec<String> = db
            .active_api_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.id.into())
            .collect();
        live.sort();
        let mut expected = vec![older.id.clone(), newer.id.clone(), other.id.clone()];
        expected.sort();
        assert_eq!(live, expected);
        assert_eq!(
            db.feed().await,
            [
                (API_KEY_CREATED.to_owned(), older.id.to_string()),
                (API_KEY_CREATED.to_owned(), newer.id.to_string()),
                (API_KEY_CREATED.to_owned(), other.id.to_string()),
            ]
        );
    }

    async fn a_key_is_revoked_once_and_stays_findable_by_hash(db) {
        let account = db.account().await;
        let key = db.key(&account, ts(T0)).await;

        assert!(
            db.revoke_api_key(Some(&account), &key.id, ts(T0 + 100))
                .await
                .unwrap()
        );
        // Revoked twice: refused, and the first time stands.
        assert!(
            !db.revoke_api_key(Some(&account), &key.id, ts(T0 + 200))
                .await
                .unwrap()
        );
        assert!(!db.revoke_api_key(None, &key.id, ts(T0 + 300)).await.unwrap());

        let stored = db
            .find_api_key_by_hash(&key.key_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.revoked_at, Some(ts(T0 + 100)));
        assert!(db.active_api_keys().await.unwrap().is_empty());
        // Listed still, for the dashboard's history.
        assert_eq!(db.list_api_keys(&account).await.unwrap(), [stored]);
        let revocations: Vec<_> = db
            .feed()
            .await
            .into_iter()
            .filter(|(kind, _)| kind == API_KEY_REVOKED)
            .collect();
        assert_eq!(revocations, [(API_KEY_REVOKED.to_owned(), key.id.to_string())]);
    }

    async fn another_accounts_key_is_not_revoked(db) {
        let owner = db.account().await;
        let stranger = db.account().await;
        let key = db.key(&owner, ts(T0)).await;

        assert!(
            !db.revoke_api_key(Some(&stranger), &key.id, ts(T0 + 1))
                .await
                .unwrap()
        );
        assert_eq!(
            db.find_api_key(&key.id).await.unwrap().unwrap().revoked_at,
            None
        );
        assert!(
            !db.feed()
                .await
                .iter()
                .any(|(kind, _)| kind == API_KEY_REVOKED)
        );
        assert!(
            !db.revoke_api_key(Some(&owner), &"no-such-key".into(), ts(T0 + 1))
                .await
                .unwrap()
        );

        // Without an account (the operator's CLI) any key may be revoked.
        assert!(db.revoke_api_key(None, &key.id, ts(T0 + 2)).await.unwrap());
        assert_eq!(
            db.find_api_key(&key.id).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 2))
        );
    }

    async fn a_taken_key_hash_is_refused_and_logs_nothing(db) {
        let account = db.account().await;
        let key = db.key(&account, ts(T0)).await;
        let mut twin = key_row(&account, ts(T0 + 1));
        twin.key_hash = key.key_hash.clone();

        let err = db.insert_api_key(&twin).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict("API key")), "{err:?}");
        assert_eq!(db.find_api_key(&twin.id).await.unwrap(), None);
        assert_eq!(db.feed().await, [(API_KEY_CREATED.to_owned(), key.id.to_string())]);
    }

    async fn last_used_times_only_move_forward(db) {
        let account = db.account().await;
        let a = db.key(&account, ts(T0)).await;
        let b = db.key(&account, ts(T0)).await;

        db.touch_api_keys(&[use_of(&a.id, T0 + 500, Some("10.0.0.1")), use_of(&b.id, T0 + 10, None)])
            .await
            .unwrap();
        db.touch_api_keys(&[use_of(&a.id, T0 + 100, Some("10.0.0.2")), use_of(&"gone".into(), T0 + 1, None)])
            .await
            .unwrap();
        db.touch_api_keys(&[]).await.unwrap();
        assert_eq!(
            db.find_api_key(&a.id).await.unwrap().unwrap().last_used_at,
            Some(ts(T0 + 500))
        );
        assert_eq!(
            db.find_api_key(&b.id).await.unwrap().unwrap().last_used_at,
            Some(ts(T0 + 10))
        );

        db.touch_api_keys(&[use_of(&b.id, T0 + 900, Some("10.0.0.3"))])
            .await
            .unwrap();
        assert_eq!(
            db.find_api_key(&b.id).await.unwrap().unwrap().last_used_at,
            Some(ts(T0 + 900))
        );
        // The address of the use kept: the latest, never an older one.
        assert_eq!(
            db.find_api_key(&a.id).await.unwrap().unwrap().last_used_ip.as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            db.find_api_key(&b.id).await.unwrap().unwrap().last_used_ip.as_deref(),
            Some("10.0.0.3")
        );
        // Last-used times are not changes other nodes must load.
        assert_eq!(db.feed().await.len(), 2);
    }

    async fn revoking_a_keys_tokens_sets_a_cutoff_that_only_moves_forward(db) {
        let account = db.account().await;
        let key = db.key(&account, ts(T0)).await;
        let early = token_row(&account, Some(&key.id), ts(T0 + 10));
        let at_cutoff = token_row(&account, Some(&key.id), ts(T0 + 20));
        let late = token_row(&account, Some(&key.id), ts(T0 + 30));
        db.insert_tokens(&[early.clone(), at_cutoff.clone(), late.clone()])
            .await
            .unwrap();
        let now = ts(T0 + 40);
        assert!(db.token_cutoffs(None, now).await.unwrap().is_empty());

        assert!(
            db.revoke_key_tokens(Some(&account), &key.id, ts(T0 + 20))
                .await
                .unwrap()
        );
        let stored = db.find_api_key(&key.id).await.unwrap().unwrap();
        assert_eq!(stored.tokens_revoked_before, Some(ts(T0 + 20)));
        assert_eq!(stored.revoked_at, None, "the key itself stays live");
        // Tokens minted up to the instant read as revoked then; later ones do not.
        assert_eq!(
            db.find_token(&early.jti).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 20))
        );
        assert_eq!(
            db.find_token(&at_cutoff.jti)
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            Some(ts(T0 + 20))
        );
        assert_eq!(
            db.find_token(&late.jti).await.unwrap().unwrap().revoked_at,
            None
        );
        // The verify path's cutoff lasts as long as the last refused token lives.
        let cutoff = TokenCutoff {
            before: ts(T0 + 20),
            until: at_cutoff.expires_at,
        };
        assert_eq!(
            db.token_cutoffs(None, now).await.unwrap(),
            [(key.id.clone(), cutoff)]
        );
        assert_eq!(
            db.token_cutoffs(Some(&key.id), now).await.unwrap(),
            [(key.id.clone(), cutoff)]
        );
        assert!(
            db.token_cutoffs(Some(&"other".into()), now)
                .await
                .unwrap()
                .is_empty()
        );
        // Once those tokens have expired there is nothing left to refuse.
        assert!(
            db.token_cutoffs(None, at_cutoff.expires_at)
                .await
                .unwrap()
                .is_empty()
        );

        // An earlier or equal instant, another account, an unknown key: refused, nothing changes.
        assert!(
            !db.revoke_key_tokens(Some(&account), &key.id, ts(T0 + 15))
                .await
                .unwrap()
        );
        assert!(!db.revoke_key_tokens(None, &key.id, ts(T0 + 20)).await.unwrap());
        let stranger = db.account().await;
        assert!(
            !db.revoke_key_tokens(Some(&stranger), &key.id, ts(T0 + 35))
                .await
                .unwrap()
        );
        assert!(
            !db.revoke_key_tokens(None, &"no-such-key".into(), ts(T0 + 35))
                .await
                .unwrap()
        );
        let stored = db.find_api_key(&key.id).await.unwrap().unwrap();
        assert_eq!(stored.tokens_revoked_before, Some(ts(T0 + 20)));
        let logged: Vec<_> = db
            .feed()
            .await
            .into_iter()
            .filter(|(kind, _)| kind == API_KEY_TOKENS_REVOKED)
            .collect();
        assert_eq!(
            logged,
            [(API_KEY_TOKENS_REVOKED.to_owned(), key.id.to_string())]
        );

        // A later instant moves it forward.
        assert!(db.revoke_key_tokens(None, &key.id, ts(T0 + 30)).await.unwrap());
        assert_eq!(
            db.find_token(&late.jti).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 30))
        );
    }

    async fn a_revoked_key_refuses_every_token_it_minted(db) {
        let account = db.account().await;
        let key = db.key(&account, ts(T0)).await;
        let kept = db.key(&account, ts(T0)).await;
        let first = token_row(&account, Some(&key.id), ts(T0 + 10));
        let second = token_row(&account, Some(&key.id), ts(T0 + 50));
        let unrelated = token_row(&account, Some(&kept.id), ts(T0 + 10));
        db.insert_tokens(&[first.clone(), second.clone(), unrelated.clone()])
            .await
            .unwrap();

        assert!(db.revoke_api_key(None, &key.id, ts(T0 + 60)).await.unwrap());
        let cutoff = TokenCutoff {
            before: Timestamp::MAX,
            until: second.expires_at,
        };
        assert_eq!(
            db.token_cutoffs(None, ts(T0 + 70)).await.unwrap(),
            [(key.id.clone(), cutoff)]
        );
        assert_eq!(
            db.find_token(&first.jti).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 60))
        );
        assert_eq!(
            db.find_token(&unrelated.jti)
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            None
        );
        // A revoked key's tokens cannot be revoked "all at once" again.
        assert!(!db.revoke_key_tokens(None, &key.id, ts(T0 + 70)).await.unwrap());
    }

    async fn a_key_of_an_unknown_account_is_refused_and_logs_nothing(db) {
        let key = key_row("no-such-account", ts(T0));
        let err = db.insert_api_key(&key).await.unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{err:?}");
        assert_eq!(db.find_api_key(&key.id).await.unwrap(), None);
        assert!(db.feed().await.is_empty());
    }

    async fn a_key_keeps_its_permissions_expiry_and_rate_limit(db) {
        let account = db.account().await;
        let mut row = key_row(&account, ts(T0));
        row.permissions = Some(json(r#"["deals.read","sensitive.read"]"#));
        row.expires_at = Some(ts(T0 + 90 * DAY));
        row.rate_limit_requests = Some(600);
        row.rate_limit_window_secs = Some(60);
        db.insert_api_key(&row).await.unwrap();
        let read = db.find_api_key(&row.id).await.unwrap().unwrap();
        assert_eq!(read, row);
        assert_eq!(read.rate_limit().unwrap().to_string(), "600/min");
        assert!(read.permission_set().is_restricted());
        assert!(!read.is_dead(ts(T0 + 90 * DAY - 1)));
        assert!(read.is_dead(ts(T0 + 90 * DAY)));
        // An expired key is still loaded by the nodes (its tokens are refused as expired).
        assert!(db.active_api_keys().await.unwrap().iter().any(|k| k.id == row.id));
    }

    async fn rolling_a_key_adds_the_new_one_and_ends_the_old_after_the_overlap(db) {
        let account = db.account().await;
        let old = db.key(&account, ts(T0)).await;
        let mut new = key_row(&account, ts(T0 + 100));
        new.rolled_from = Some(old.id.clone());
        let feed_before = db.feed().await.len();
        // Not another account's key.
        assert!(!db.roll_api_key(Some(&db.account().await), &old.id, &new, ts(T0 + HOUR), ts(T0 + 100)).await.unwrap());
        assert_eq!(db.find_api_key(&new.id).await.unwrap(), None);
        assert!(db.roll_api_key(Some(&account), &old.id, &new, ts(T0 + HOUR), ts(T0 + 100)).await.unwrap());
        assert_eq!(db.find_api_key(&old.id).await.unwrap().unwrap().expires_at, Some(ts(T0 + HOUR)));
        assert_eq!(db.find_api_key(&new.id).await.unwrap().unwrap(), new);
        let feed = db.feed().await;
        assert_eq!(
            feed[feed_before..],
            [
                ("api_key.changed".to_owned(), old.id.to_string()),
                (API_KEY_CREATED.to_owned(), new.id.to_string()),
            ]
        );
        // A later overlap never lengthens the old key's life; a key that expired cannot roll.
        let newer = key_row(&account, ts(T0 + 200));
        assert!(db.roll_api_key(None, &old.id, &newer, ts(T0 + 2 * HOUR), ts(T0 + 200)).await.unwrap());
        assert_eq!(db.find_api_key(&old.id).await.unwrap().unwrap().expires_at, Some(ts(T0 + HOUR)));
        let again = key_row(&account, ts(T0 + HOUR));
        assert!(!db.roll_api_key(None, &old.id, &again, ts(T0 + 2 * HOUR), ts(T0 + HOUR)).await.unwrap());
        assert_eq!(db.find_api_key(&again.id).await.unwrap(), None);
        // Nor can a revoked key.
        db.revoke_api_key(None, &new.id, ts(T0 + 300)).await.unwrap();
        let spare = key_row(&account, ts(T0 + 400));
        assert!(!db.roll_api_key(None, &new.id, &spare, ts(T0 + HOUR), ts(T0 + 400)).await.unwrap());
    }

    async fn usage_adds_up_per_key_day_and_way_in(db) {
        use keyfob_store::{UsageCounts, UsageRow, UsageVia};
        let account = db.account().await;
        let key = db.key(&account, ts(T0)).await;
        let other = db.key(&db.account().await, ts(T0)).await;
        let row = |key_id: &keyfob_store::KeyId, day, via, ok, limited| UsageRow {
            key_id: key_id.clone(),
            day,
            via,
            counts: UsageCounts { ok, client_errors: 1, limited, server_errors: 0 },
        };
        db.add_key_usage(&[
            row(&key.id, 10, UsageVia::Key, 5, 0),
            row(&key.id, 10, UsageVia::Token, 2, 0),
            row(&key.id, 11, UsageVia::Key, 1, 3),
            row(&other.id, 11, UsageVia::Key, 9, 9),
        ])
        .await
        .unwrap();
        db.add_key_usage(&[row(&key.id, 10, UsageVia::Key, 4, 1)]).await.unwrap();
        db.add_key_usage(&[]).await.unwrap();
        let rows = db.key_usage(&account, None, 10).await.unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0], row(&key.id, 10, UsageVia::Key, 9, 1).with_client_errors(2));
        assert_eq!(rows[1].via, UsageVia::Token);
        assert_eq!(rows[2].counts.limited, 3);
        // From a day on, of one key, never another account's.
        assert_eq!(db.key_usage(&account, Some(&key.id), 11).await.unwrap().len(), 1);
        assert!(db.key_usage(&account, Some(&other.id), 0).await.unwrap().is_empty());
        // Usage is no change other nodes must load.
        assert!(!db.feed().await.iter().any(|(kind, _)| kind.contains("usage")));
    }
}
