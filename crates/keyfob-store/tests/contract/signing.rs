//! Signing keys: publishing, rotating and retiring them.

use crate::helpers::change_kind::*;
use keyfob_store::{SigningHeir, SigningKeyRow, StoreError};

use crate::contract;
use crate::helpers::*;

const DAY: i64 = 24 * 60 * MINUTE;

fn signing_key(created_at: Timestamp, activates_at: Timestamp) -> SigningKeyRow {
    SigningKeyRow {
        kid: id("kid"),
        alg: "ES256".parse().unwrap(),
        private_key: format!("sealed-{}", id::<String>("pk")),
        public_jwk: r#"{"kty":"EC","crv":"P-256"}"#.into(),
        created_at,
        activates_at,
        retires_at: None,
        expires_at: None,
        revoked_at: None,
    }
}

async fn stored(db: &TestStore, kid: &str) -> SigningKeyRow {
    db.list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.kid == kid)
        .unwrap()
}

contract! {
    async fn a_signing_key_is_published_and_logged(db) {
        let later = signing_key(ts(T0 + 1), ts(T0 + DAY));
        let first = signing_key(ts(T0), ts(T0));
        db.insert_signing_key(&later).await.unwrap();
        db.insert_signing_key(&first).await.unwrap();

        // In the order they sign.
        assert_eq!(
            db.list_signing_keys().await.unwrap(),
            [first.clone(), later.clone()]
        );
        assert_eq!(
            db.feed().await,
            [
                (SIGNING_KEYS_CHANGED.to_owned(), later.kid.into_string()),
                (SIGNING_KEYS_CHANGED.to_owned(), first.kid.into_string())
            ]
        );
    }

    async fn a_taken_kid_is_refused_and_logs_nothing(db) {
        let key = signing_key(ts(T0), ts(T0));
        db.insert_signing_key(&key).await.unwrap();
        let twin = SigningKeyRow {
            private_key: "other".into(),
            ..key.clone()
        };
        let err = db.insert_signing_key(&twin).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict("signing key id")),
            "{err:?}"
        );
        assert_eq!(db.list_signing_keys().await.unwrap(), [key]);
        assert_eq!(db.feed().await.len(), 1);

        // A rotation to a taken kid is refused whole: the current key is not retired.
        let current = db.list_signing_keys().await.unwrap().remove(0);
        let again = SigningKeyRow {
            activates_at: ts(T0 + DAY),
            ..current.clone()
        };
        let err = db.rotate_signing_key(&again, millis(DAY)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert_eq!(db.list_signing_keys().await.unwrap(), [current]);
        assert_eq!(db.feed().await.len(), 1);
    }

    async fn rotating_hands_over_at_the_next_keys_activation(db) {
        let current = signing_key(ts(T0), ts(T0));
        db.insert_signing_key(&current).await.unwrap();
        let next = signing_key(ts(T0 + 10), ts(T0 + 60 * MINUTE));
        db.rotate_signing_key(&next, millis(DAY)).await.unwrap();

        let old = stored(&db, &current.kid).await;
        assert_eq!(old.retires_at, Some(next.activates_at));
        assert_eq!(old.expires_at, Some(next.activates_at + millis(DAY)));
        assert_eq!(old.revoked_at, None);
        assert_eq!(stored(&db, &next.kid).await, next);
        assert_eq!(
            db.feed().await.last().unwrap(),
            &(SIGNING_KEYS_CHANGED.to_owned(), next.kid.to_string())
        );

        // A second rotation that activates sooner moves the hand-over earlier for both.
        let sooner = signing_key(ts(T0 + 20), ts(T0 + 30 * MINUTE));
        db.rotate_signing_key(&sooner, millis(DAY)).await.unwrap();
        assert_eq!(
            stored(&db, &current.kid).await.retires_at,
            Some(sooner.activates_at)
        );
        assert_eq!(
            stored(&db, &next.kid).await.retires_at,
            Some(sooner.activates_at)
        );
        // A rotation after the current key already retires leaves its retirement alone.
        let last = signing_key(ts(T0 + 30), ts(T0 + 90 * MINUTE));
        db.rotate_signing_key(&last, millis(DAY)).await.unwrap();
        assert_eq!(
            stored(&db, &current.kid).await.retires_at,
            Some(sooner.activates_at)
        );
        assert_eq!(
            stored(&db, &sooner.kid).await.retires_at,
            Some(last.activates_at)
        );
        assert_eq!(db.list_signing_keys().await.unwrap().len(), 4);
    }

    async fn retiring_a_key_revokes_it_and_brings_its_heir_forward(db) {
        let current = signing_key(ts(T0), ts(T0));
        db.insert_signing_key(&current).await.unwrap();
        let next = signing_key(ts(T0 + 10), ts(T0 + 60 * MINUTE));
        db.rotate_signing_key(&next, millis(DAY)).await.unwrap();

        let heir = SigningHeir {
            kid: next.kid.clone(),
            activates_at: ts(T0 + 100),
            keep_signing: true,
        };
        assert!(
            db.retire_signing_key(&current.kid, ts(T0 + 100), Some(&heir))
                .await
                .unwrap()
        );
        let retired = stored(&db, &current.kid).await;
        assert_eq!(
            (retired.revoked_at, retired.retires_at, retired.expires_at),
            (Some(ts(T0 + 100)), Some(ts(T0 + 100)), Some(ts(T0 + 100)))
        );
        let successor = stored(&db, &next.kid).await;
        assert_eq!(
            (
                successor.activates_at,
                successor.retires_at,
                successor.expires_at
            ),
            (ts(T0 + 100), None, None)
        );
        let changes = db.feed().await.len();

        // Retired twice, or unknown: refused, nothing changes, nothing is logged.
        let other_heir = SigningHeir {
            kid: next.kid.clone(),
            activates_at: ts(T0 + 999),
            keep_signing: false,
        };
        assert!(
            !db.retire_signing_key(&current.kid, ts(T0 + 200), Some(&other_heir))
                .await
                .unwrap()
        );
        assert!(!db.retire_signing_key(&"nope".into(), ts(T0 + 200), None).await.unwrap());
        assert_eq!(stored(&db, &current.kid).await, retired);
        assert_eq!(stored(&db, &next.kid).await, successor);
        assert_eq!(db.feed().await.len(), changes);
    }

    async fn retiring_a_key_without_an_heir_keeps_an_earlier_retirement(db) {
        let key = signing_key(ts(T0), ts(T0));
        db.insert_signing_key(&key).await.unwrap();
        let next = signing_key(ts(T0 + 1), ts(T0 + 10));
        db.rotate_signing_key(&next, millis(DAY)).await.unwrap();
        // It stopped signing at ts(T0 + 10); retired later, it stops being published at once.
        assert!(
            db.retire_signing_key(&key.kid, ts(T0 + 500), None)
                .await
                .unwrap()
        );
        let retired = stored(&db, &key.kid).await;
        assert_eq!(
            (retired.retires_at, retired.expires_at, retired.revoked_at),
            (Some(ts(T0 + 10)), Some(ts(T0 + 500)), Some(ts(T0 + 500)))
        );
        // A heir that does not keep signing keeps its own retirement.
        let heir = SigningHeir {
            kid: key.kid.clone(),
            activates_at: ts(T0),
            keep_signing: false,
        };
        assert!(
            db.retire_signing_key(&next.kid, ts(T0 + 600), Some(&heir))
                .await
                .unwrap()
        );
        assert_eq!(
            stored(&db, &key.kid).await,
            retired,
            "a revoked heir is not changed"
        );
        assert_eq!(
            db.feed()
                .await
                .into_iter()
                .filter(|(kind, _)| kind == SIGNING_KEYS_CHANGED)
                .count(),
            4
        );
    }
}
