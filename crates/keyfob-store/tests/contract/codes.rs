//! Authorization codes: stored by hash, exchanged once for a session, even under concurrency.

use std::sync::Arc;

use keyfob_store::{AuthCodeRow, GrantRow};

use crate::contract;
use crate::helpers::*;

async fn code(db: &TestStore, grant: &GrantRow) -> AuthCodeRow {
    let code = AuthCodeRow {
        code_hash: id("code"),
        client_id: grant.client_id.clone(),
        user_id: grant.user_id.clone(),
        grant_id: grant.id.clone(),
        redirect_uri: "https://app.example/cb".into(),
        permissions: grant.permissions.clone(),
        identity: Default::default(),
        nonce: None,
        auth_time: None,
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        family_id: None,
        created_at: ts(T0),
        expires_at: ts(T0 + MINUTE),
        used_at: None,
    };
    db.insert_auth_code(&code).await.unwrap();
    code
}

contract! {
    async fn a_code_is_stored_by_hash_and_pruned_when_expired(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let stored = code(&db, &grant).await;
        let mut plain = code(&db, &grant).await;
        assert_eq!(
            db.find_auth_code(&stored.code_hash).await.unwrap(),
            Some(stored.clone())
        );
        assert_eq!(db.find_auth_code("nope").await.unwrap(), None);
        // A code without PKCE (a confidential app) reads back without a challenge.
        plain.code_challenge = None;
        plain.code_hash = id("code");
        db.insert_auth_code(&plain).await.unwrap();
        assert_eq!(
            db.find_auth_code(&plain.code_hash).await.unwrap(),
            Some(plain)
        );

        db.prune_expired(ts(T0 + MINUTE - 1)).await.unwrap();
        assert!(
            db.find_auth_code(&stored.code_hash)
                .await
                .unwrap()
                .is_some()
        );
        db.prune_expired(ts(T0 + MINUTE + 1)).await.unwrap();
        assert_eq!(db.find_auth_code(&stored.code_hash).await.unwrap(), None);
        assert_eq!(db.count("auth_codes").await, 0);
    }

    async fn a_code_starts_one_session_and_is_tied_to_it(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let stored = code(&db, &grant).await;
        let winner = new_session(&grant, Some(&stored.code_hash));
        assert_eq!(
            db.start_families(std::slice::from_ref(&winner))
                .await
                .unwrap(),
            [true]
        );

        let used = db.find_auth_code(&stored.code_hash).await.unwrap().unwrap();
        assert_eq!(used.used_at, Some(ts(T0 + 1_000)));
        assert_eq!(used.family_id.as_deref(), Some(winner.family.id.as_str()));
        assert_eq!(
            db.find_family(&winner.family.id).await.unwrap(),
            Some(winner.family.clone())
        );
        assert_eq!(
            db.find_refresh(&winner.first.token_hash).await.unwrap(),
            Some(winner.first.clone())
        );

        // Used again later: refused, and neither its family nor its token is written.
        let late = new_session(&grant, Some(&stored.code_hash));
        assert_eq!(
            db.start_families(std::slice::from_ref(&late))
                .await
                .unwrap(),
            [false]
        );
        assert_eq!(db.find_family(&late.family.id).await.unwrap(), None);
        assert_eq!(db.find_refresh(&late.first.token_hash).await.unwrap(), None);
        let still = db.find_auth_code(&stored.code_hash).await.unwrap().unwrap();
        assert_eq!(still, used, "the code stays tied to the first session");
        // An unknown code starts nothing.
        let unknown = new_session(&grant, Some("no-such-code"));
        assert_eq!(db.start_families(&[unknown]).await.unwrap(), [false]);
        assert_eq!(db.count("refresh_families").await, 1);
    }

    async fn a_code_used_twice_in_one_batch_wins_once(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let stored = code(&db, &grant).await;
        let other = code(&db, &grant).await;
        let batch = [
            new_session(&grant, Some(&stored.code_hash)),
            new_session(&grant, Some(&stored.code_hash)),
            new_session(&grant, None),
            new_session(&grant, Some(&other.code_hash)),
        ];
        assert_eq!(
            db.start_families(&batch).await.unwrap(),
            [true, false, true, true]
        );
        assert!(db.start_families(&[]).await.unwrap().is_empty());

        for (item, written) in batch.iter().zip([true, false, true, true]) {
            assert_eq!(
                db.find_family(&item.family.id).await.unwrap().is_some(),
                written
            );
            assert_eq!(
                db.find_refresh(&item.first.token_hash)
                    .await
                    .unwrap()
                    .is_some(),
                written
            );
        }
        let used = db.find_auth_code(&stored.code_hash).await.unwrap().unwrap();
        assert_eq!(used.family_id.as_deref(), Some(batch[0].family.id.as_str()));
    }

    async fn concurrent_exchanges_of_one_code_start_one_session(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let stored = code(&db, &grant).await;
        let store = Arc::clone(&db.store);
        let tries: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                let item = new_session(&grant, Some(&stored.code_hash));
                tokio::spawn(async move {
                    let won = store
                        .start_families(std::slice::from_ref(&item))
                        .await
                        .unwrap();
                    (item.family.id, won == [true])
                })
            })
            .collect();
        let mut winners = Vec::new();
        for attempt in tries {
            let (family, won) = attempt.await.unwrap();
            if won {
                winners.push(family);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one exchange wins: {winners:?}");
        assert_eq!(db.count("refresh_families").await, 1);
        assert_eq!(db.count("refresh_tokens").await, 1);
        let used = db.find_auth_code(&stored.code_hash).await.unwrap().unwrap();
        assert_eq!(used.family_id.as_ref(), Some(&winners[0]));
    }
}
