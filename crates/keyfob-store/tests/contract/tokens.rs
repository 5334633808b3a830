//! Minted tokens: recording them in batches, listing and filtering, revoking.

use crate::helpers::change_kind::*;
use keyfob_store::{AccountId, StoreError, TokenFilter, TokenRow, TokenStatus};

use crate::contract;
use crate::helpers::*;

fn jtis(rows: &[TokenRow]) -> Vec<&str> {
    rows.iter().map(|t| t.jti.as_str()).collect()
}

fn filter(account_id: &AccountId) -> TokenFilter<'_> {
    TokenFilter {
        account_id,
        api_key_id: None,
        permission: None,
        status: None,
        text: None,
        now: ts(T0 + 5 * MINUTE),
        limit: 100,
        offset: 0,
    }
}

/// The jtis a filter lists, checking the total agrees.
async fn list(db: &TestStore, f: TokenFilter<'_>) -> Vec<String> {
    let (rows, total) = db.list_tokens_page(&f).await.unwrap();
    assert_eq!(rows.len() as u64, total);
    rows.into_iter().map(|t| t.jti.into()).collect()
}

contract! {
    async fn tokens_are_recorded_in_a_batch_and_read_back(db) {
        let account = db.account().await;
        let key = db.key(&account, ts(T0)).await;
        let mut batch: Vec<TokenRow> = (0..3)
            .map(|i| token_row(&account, Some(&key.id), ts(T0 + i)))
            .collect();
        // A token minted by something other than a key (a user session) has no key.
        batch[1].api_key_id = None;
        batch[1].permissions = json(r#"["deals.read","notes.write"]"#);
        db.insert_tokens(&batch).await.unwrap();
        db.insert_tokens(&[]).await.unwrap();

        for token in &batch {
            assert_eq!(
                db.find_token(&token.jti).await.unwrap().as_ref(),
                Some(token)
            );
        }
        assert_eq!(db.find_token(&"nope".into()).await.unwrap(), None);
        // Newest first, up to the limit, and only this account's.
        let other = db.account().await;
        db.insert_tokens(&[token_row(&other, None, ts(T0 + 9))])
            .await
            .unwrap();
        let listed = db.list_tokens(&account, 2).await.unwrap();
        assert_eq!(
            jtis(&listed),
            [batch[2].jti.as_str(), batch[1].jti.as_str()]
        );
        assert_eq!(db.list_tokens(&account, 10).await.unwrap().len(), 3);
        // Recording tokens is not a change other nodes must load.
        assert_eq!(db.feed().await.len(), 1);
    }

    async fn a_batch_with_a_taken_jti_records_none_of_it(db) {
        let account = db.account().await;
        let first = token_row(&account, None, ts(T0));
        db.insert_tokens(std::slice::from_ref(&first))
            .await
            .unwrap();
        let fresh = token_row(&account, None, ts(T0 + 1));
        let mut again = token_row(&account, None, ts(T0 + 2));
        again.jti = first.jti.clone();

        let err = db.insert_tokens(&[fresh.clone(), again]).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict("id")), "{err:?}");
        assert_eq!(db.find_token(&fresh.jti).await.unwrap(), None);
        assert_eq!(db.find_token(&first.jti).await.unwrap(), Some(first));
        assert_eq!(db.count("tokens").await, 1);
    }

    async fn token_pages_are_newest_first_with_a_total(db) {
        let account = db.account().await;
        let tokens: Vec<TokenRow> = (0..5).map(|i| token_row(&account, None, ts(T0 + i))).collect();
        db.insert_tokens(&tokens).await.unwrap();
        db.insert_tokens(&[token_row(&db.account().await, None, ts(T0))])
            .await
            .unwrap();

        let page = |offset| TokenFilter {
            limit: 2,
            offset,
            ..filter(&account)
        };
        let (rows, total) = db.list_tokens_page(&page(0)).await.unwrap();
        assert_eq!(total, 5);
        assert_eq!(
            jtis(&rows),
            [tokens[4].jti.as_str(), tokens[3].jti.as_str()]
        );
        let (rows, total) = db.list_tokens_page(&page(4)).await.unwrap();
        assert_eq!((jtis(&rows), total), (vec![tokens[0].jti.as_str()], 5));
        let (rows, total) = db.list_tokens_page(&page(10)).await.unwrap();
        assert_eq!((rows.len(), total), (0, 5));
        let (rows, total) = db
            .list_tokens_page(&filter(&"no-such-account".into()))
            .await
            .unwrap();
        assert_eq!((rows.len(), total), (0, 0));
    }

    async fn token_pages_filter_by_key_permission_and_status(db) {
        let account = db.account().await;
        let key = db.key(&account, ts(T0)).await;
        let now = ts(T0 + 5 * MINUTE);
        let mut by_key = token_row(&account, Some(&key.id), ts(T0));
        by_key.permissions = json(r#"["deals.read"]"#);
        let mut writer = token_row(&account, None, ts(T0 + 1));
        writer.permissions = json(r#"["deals.write","deals_x.read"]"#);
        let mut expired = token_row(&account, None, ts(T0 + 2));
        expired.expires_at = now;
        expired.permissions = json(r#"["dealsyx.read"]"#);
        let revoked = token_row(&account, None, ts(T0 + 3));
        db.insert_tokens(&[
            by_key.clone(),
            writer.clone(),
            expired.clone(),
            revoked.clone(),
        ])
        .await
        .unwrap();
        assert!(
            db.revoke_token(&account, &revoked.jti, ts(T0 + 4))
                .await
                .unwrap()
        );

        let base = filter(&account);
        assert_eq!(
            list(
                &db,
                TokenFilter {
                    api_key_id: Some(&key.id),
                    ..base
                }
            )
            .await,
            [by_key.jti.as_str()]
        );
        // A permission matches exactly: not a prefix of another, and `_` is not a wildcard.
        assert_eq!(
            list(
                &db,
                TokenFilter {
                    permission: Some("deals.write"),
                    ..base
                }
            )
            .await,
            [writer.jti.as_str()]
        );
        assert_eq!(
            list(
                &db,
                TokenFilter {
                    permission: Some("deals.wr"),
                    ..base
                }
            )
            .await,
            Vec::<String>::new()
        );
        assert_eq!(
            list(
                &db,
                TokenFilter {
                    permission: Some("deals_x.read"),
                    ..base
                }
            )
            .await,
            [writer.jti.as_str()]
        );
        assert_eq!(
            list(
                &db,
                TokenFilter {
                    permission: Some("deals%"),
                    ..base
                }
            )
            .await,
            Vec::<String>::new()
        );
        assert_eq!(
            list(
                &db,
                TokenFilter {
                    status: Some(TokenStatus::Live),
                    ..base
                }
            )
            .await,
            [writer.jti.as_str(), by_key.jti.as_str()]
        );
        assert_eq!(
            list(
                &db,
                TokenFilter {
                    status: Some(TokenStatus::Expired),
                    ..base
                }
            )
            .await,
            [expired.jti.as_str()]
        );
        assert_eq!(
            list(
                &db,
                TokenFilter {
                    status: Some(TokenStatus::Revoked),
                    ..base
                }
            )
            .await,
            [revoked.jti.as_str()]
        );
        // A key's revocation shows in the status of the tokens it minted.
        assert!(db.revoke_api_key(None, &key.id, ts(T0 + 6)).await.unwrap());
        assert_eq!(
            list(
                &db,
                TokenFilter {
                    status: Some(TokenStatus::Revoked),
                    ..base
                }
            )
            .await,
            [revoked.jti.as_str(), by_key.jti.as_str()]
        );
        assert_eq!(
            list(
                &db,
                TokenFilter {
                    status: Some(TokenStatus::Live),
                    api_key_id: Some(&key.id),
                    ..base
                }
            )
            .await,
            Vec::<String>::new()
        );
    }

    async fn a_token_is_revoked_by_its_account_only_and_once(db) {
        let account = db.account().await;
        let stranger = db.account().await;
        let token = token_row(&account, None, ts(T0));
        db.insert_tokens(std::slice::from_ref(&token))
            .await
            .unwrap();

        assert!(
            !db.revoke_token(&stranger, &token.jti, ts(T0 + 1))
                .await
                .unwrap()
        );
        assert_eq!(
            db.find_token(&token.jti).await.unwrap().unwrap().revoked_at,
            None
        );
        assert!(db.revoked_tokens(ts(T0)).await.unwrap().is_empty());

        assert!(db.revoke_token(&account, &token.jti, ts(T0 + 2)).await.unwrap());
        assert!(!db.revoke_token(&account, &token.jti, ts(T0 + 3)).await.unwrap());
        assert!(!db.revoke_token(&account, &"nope".into(), ts(T0 + 3)).await.unwrap());
        assert_eq!(
            db.find_token(&token.jti).await.unwrap().unwrap().revoked_at,
            Some(ts(T0 + 2))
        );
        // Kept in the revoked set until it expires, then forgotten.
        assert_eq!(
            db.revoked_tokens(ts(T0 + 4)).await.unwrap(),
            [(token.jti.clone(), token.expires_at)]
        );
        assert!(
            db.revoked_tokens(token.expires_at)
                .await
                .unwrap()
                .is_empty()
        );
        let logged: Vec<_> = db
            .feed()
            .await
            .into_iter()
            .filter(|(kind, _)| kind == TOKEN_REVOKED)
            .collect();
        assert_eq!(logged, [(TOKEN_REVOKED.to_owned(), token.jti.to_string())]);
    }

    async fn token_pages_find_a_name_or_metadata(db) {
        let account = db.account().await;
        let key = db.key(&account, ts(T0)).await;
        let mut named = token_row(&account, Some(&key.id), ts(T0 + 1));
        named.name = Some("Nightly Export".into());
        let mut tagged = token_row(&account, Some(&key.id), ts(T0 + 2));
        let meta = serde_json::json!({"customer": "acme_corp", "ticket": 42});
        tagged.metadata = Some(keyfob_store::JsonText(meta.as_object().unwrap().clone()));
        let plain = token_row(&account, Some(&key.id), ts(T0 + 3));
        db.insert_tokens(&[named.clone(), tagged.clone(), plain.clone()]).await.unwrap();
        let search = |text: &'static str| TokenFilter { text: Some(text), ..filter(&account) };
        assert_eq!(list(&db, search("nightly")).await, [named.jti.to_string()]);
        assert_eq!(list(&db, search("ACME_")).await, [tagged.jti.to_string()]);
        assert_eq!(list(&db, search("42")).await, [tagged.jti.to_string()]);
        // `_` and `%` are text, not patterns.
        assert!(list(&db, search("acme%corp")).await.is_empty());
        assert!(list(&db, search("acme_c_rp")).await.is_empty());
        assert!(list(&db, search("nothing")).await.is_empty());
        // The name and metadata read back as written.
        let (rows, _) = db.list_tokens_page(&search("export")).await.unwrap();
        assert_eq!(rows[0].name.as_deref(), Some("Nightly Export"));
        let found = db.find_token(&tagged.jti).await.unwrap().unwrap();
        assert_eq!(found.metadata.unwrap().0["ticket"], 42);
    }

    async fn token_usage_adds_up_per_day_and_moves_last_use_forward(db) {
        use keyfob_store::{TokenUsageRow, UsageCounts};
        let account = db.account().await;
        let key = db.key(&account, ts(T0)).await;
        let token = token_row(&account, Some(&key.id), ts(T0 + 1));
        let other_account = db.account().await;
        let stranger = token_row(&other_account, None, ts(T0 + 2));
        db.insert_tokens(&[token.clone(), stranger.clone()]).await.unwrap();
        let row = |jti: &keyfob_store::Jti, day, ok| TokenUsageRow {
            jti: jti.clone(),
            day,
            counts: UsageCounts { ok, client_errors: 0, limited: 1, server_errors: 0 },
        };
        db.add_token_usage(
            &[row(&token.jti, 5, 2), row(&token.jti, 6, 1), row(&stranger.jti, 5, 7)],
            &[(token.jti.clone(), ts(T0 + 50)), (stranger.jti.clone(), ts(T0 + 60))],
        )
        .await
        .unwrap();
        db.add_token_usage(&[row(&token.jti, 5, 3)], &[(token.jti.clone(), ts(T0 + 40))])
            .await
            .unwrap();
        db.add_token_usage(&[], &[]).await.unwrap();
        let rows = db
            .token_usage(&account, &[token.jti.clone(), stranger.jti.clone()], 5)
            .await
            .unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].day, rows[0].counts.ok, rows[0].counts.limited), (5, 5, 2));
        assert_eq!(rows[1].day, 6);
        assert_eq!(db.token_usage(&account, std::slice::from_ref(&token.jti), 6).await.unwrap().len(), 1);
        assert!(db.token_usage(&account, &[], 0).await.unwrap().is_empty());
        // The last use only moves forward, and reads back with the token.
        let found = db.find_token(&token.jti).await.unwrap().unwrap();
        assert_eq!(found.last_used_at, Some(ts(T0 + 50)));
    }
}
