//! The audit log: appended in batches, listed per account, never changed or deleted.

use keyfob_store::{AccountId, AuditEventRow, AuditFilter, StoreError};

use crate::contract;
use crate::helpers::*;

fn event(account_id: Option<&str>, at: Timestamp, actor_id: &str, action: &str) -> AuditEventRow {
    AuditEventRow {
        id: id("evt"),
        account_id: account_id.map(AccountId::from),
        at,
        actor_kind: "api_key".parse().unwrap(),
        actor_id: actor_id.into(),
        action: action.into(),
        target: Some("deals/1".into()),
        ip: Some("203.0.113.7".into()),
        detail: Some(keyfob_store::JsonText(
            serde_json::json!({ "fields": ["ssn"] }),
        )),
    }
}

fn filter(account_id: &AccountId) -> AuditFilter<'_> {
    AuditFilter {
        account_id,
        action: None,
        actor_id: None,
        since: None,
        until: None,
        limit: 100,
        offset: 0,
    }
}

/// The ids a filter lists, checking the total counts the whole match.
async fn ids(db: &TestStore, f: AuditFilter<'_>, total: u64) -> Vec<String> {
    let (rows, counted) = db.list_audit_events(&f).await.unwrap();
    assert_eq!(counted, total);
    rows.into_iter().map(|e| e.id.into()).collect()
}

contract! {
    async fn events_are_appended_and_listed_newest_first(db) {
        let acct = db.account().await;
        let a = event(Some(&acct), ts(T0 + 1), "key-1", "record.read");
        let b = event(Some(&acct), ts(T0 + 2), "key-2", "record.reveal");
        let c = event(Some(&acct), ts(T0 + 3), "key-1", "record.reveal");
        let mut operator = event(None, ts(T0 + 4), "cli", "signing_key.rotated");
        operator.actor_kind = "operator".parse().unwrap();
        operator.target = None;
        operator.ip = None;
        operator.detail = None;
        // An event no account owns that an operator did not cause (a failed login for an unknown
        // email) is nobody's to read.
        let mut stray = event(None, ts(T0 + 5), "anon", "login.failed");
        stray.actor_kind = "anonymous".parse().unwrap();
        let elsewhere = event(Some("other-account"), ts(T0 + 6), "key-9", "record.read");
        db.insert_audit_events(&[a.clone(), b.clone()])
            .await
            .unwrap();
        db.insert_audit_events(&[c.clone(), operator.clone(), stray, elsewhere])
            .await
            .unwrap();
        db.insert_audit_events(&[]).await.unwrap();

        let (rows, total) = db.list_audit_events(&filter(&acct)).await.unwrap();
        assert_eq!(total, 4);
        assert_eq!(rows, [operator.clone(), c.clone(), b.clone(), a.clone()]);

        let base = filter(&acct);
        assert_eq!(
            ids(
                &db,
                AuditFilter {
                    action: Some("record.reveal"),
                    ..base
                },
                2
            )
            .await,
            [c.id.clone(), b.id.clone()]
        );
        assert_eq!(
            ids(
                &db,
                AuditFilter {
                    actor_id: Some("key-1"),
                    ..base
                },
                2
            )
            .await,
            [c.id.clone(), a.id.clone()]
        );
        // `since` is inclusive, `until` exclusive.
        assert_eq!(
            ids(
                &db,
                AuditFilter {
                    since: Some(ts(T0 + 2)),
                    until: Some(ts(T0 + 4)),
                    ..base
                },
                2
            )
            .await,
            [c.id.clone(), b.id.clone()]
        );
        assert_eq!(
            ids(
                &db,
                AuditFilter {
                    limit: 2,
                    offset: 1,
                    ..base
                },
                4
            )
            .await,
            [c.id.clone(), b.id.clone()]
        );
        assert_eq!(
            ids(&db, AuditFilter { offset: 10, ..base }, 4).await,
            Vec::<String>::new()
        );
    }

    async fn a_batch_with_a_taken_id_appends_none_of_it(db) {
        let acct = db.account().await;
        let first = event(Some(&acct), ts(T0), "key-1", "record.read");
        db.insert_audit_events(std::slice::from_ref(&first))
            .await
            .unwrap();
        let fresh = event(Some(&acct), ts(T0 + 1), "key-1", "record.read");
        let twin = AuditEventRow {
            action: "forged".into(),
            ..first.clone()
        };

        let err = db.insert_audit_events(&[fresh, twin]).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict("id")), "{err:?}");
        assert_eq!(
            db.list_audit_events(&filter(&acct)).await.unwrap(),
            (vec![first], 1)
        );
    }

    async fn events_cannot_be_changed_or_deleted_even_outside_the_store(db) {
        let acct = db.account().await;
        let kept = event(Some(&acct), ts(T0), "key-1", "record.reveal");
        db.insert_audit_events(std::slice::from_ref(&kept))
            .await
            .unwrap();

        let update = db
            .raw("UPDATE audit_events SET action = 'nothing.happened'")
            .await;
        let message = update.unwrap_err().to_string();
        assert!(message.contains("append-only"), "{message}");
        let delete = db
            .raw(&format!(
                "DELETE FROM audit_events WHERE id = '{}'",
                kept.id
            ))
            .await;
        let message = delete.unwrap_err().to_string();
        assert!(message.contains("append-only"), "{message}");
        assert_eq!(
            db.list_audit_events(&filter(&acct)).await.unwrap(),
            (vec![kept], 1)
        );
    }
}
