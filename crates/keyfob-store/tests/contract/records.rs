//! Records of the generic resource API: create, read, patch, delete and list, within a scope.

use keyfob_domain::query::ListQuery;
use keyfob_store::{AccountId, RecordRow, RecordScope, StoreError};
use serde_json::{Value, json};

use crate::contract;
use crate::helpers::*;

fn record(account_id: &str, resource: &str, doc: Value, at: Timestamp) -> RecordRow {
    RecordRow {
        id: id("rec"),
        account_id: account_id.into(),
        resource: resource.into(),
        owner_user_id: None,
        doc,
        created_at: at,
        updated_at: at,
    }
}

fn scope<'a>(account_id: &'a AccountId, resource: &'a str) -> RecordScope<'a> {
    RecordScope {
        account_id,
        resource,
        owner_user_id: None,
    }
}

/// A listing as the API parses it from its query string.
fn query(pairs: &[(&str, &str)]) -> ListQuery {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ListQuery::from_pairs(&pairs).unwrap()
}

/// The `name` of each record a listing answers, and the total it reports.
async fn names(db: &TestStore, scope: &RecordScope<'_>, q: &[(&str, &str)]) -> (Vec<String>, u64) {
    let (rows, total) = db.list_records(scope, &query(q)).await.unwrap();
    let names = rows
        .iter()
        .map(|r| r.doc["name"].as_str().unwrap().to_owned())
        .collect();
    (names, total)
}

contract! {
    async fn a_record_is_created_read_replaced_and_deleted(db) {
        let account = db.account().await;
        let doc = json!({
            "name": "Zoë's deal",
            "amount": 12.5,
            "big": 9_007_199_254_740_993_i64,
            "open": true,
            "tags": ["a", "b"],
            "nested": {"deep": {"x": null}}
        });
        let row = record(&account, "deals", doc, ts(T0));
        db.insert_record(&row).await.unwrap();
        let deals = scope(&account, "deals");
        assert_eq!(
            db.get_record(&deals, &row.id).await.unwrap(),
            Some(row.clone())
        );

        let patched = json!({"name": "Renamed", "amount": 13});
        assert!(
            db.update_record(&deals, &row.id, &patched, ts(T0 + 5))
                .await
                .unwrap()
        );
        let stored = db.get_record(&deals, &row.id).await.unwrap().unwrap();
        assert_eq!(
            stored,
            RecordRow {
                doc: patched,
                updated_at: ts(T0 + 5),
                ..row.clone()
            }
        );
        assert!(
            !db.update_record(&deals, &"nope".into(), &json!({}), ts(T0 + 6))
                .await
                .unwrap()
        );

        assert!(db.delete_record(&deals, &row.id).await.unwrap());
        assert_eq!(db.get_record(&deals, &row.id).await.unwrap(), None);
        assert!(!db.delete_record(&deals, &row.id).await.unwrap());
        assert!(
            !db.update_record(&deals, &row.id, &json!({}), ts(T0 + 7))
                .await
                .unwrap()
        );
    }

    async fn a_taken_record_id_is_a_conflict(db) {
        let account = db.account().await;
        let row = record(&account, "deals", json!({"name": "first"}), ts(T0));
        db.insert_record(&row).await.unwrap();
        let twin = RecordRow {
            doc: json!({"name": "second"}),
            ..row.clone()
        };
        let err = db.insert_record(&twin).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict("id")), "{err:?}");
        assert_eq!(
            db.get_record(&scope(&account, "deals"), &row.id)
                .await
                .unwrap(),
            Some(row)
        );
    }

    async fn records_are_isolated_by_account_resource_and_owner(db) {
        let account = db.account().await;
        let stranger = db.account().await;
        let mut mine = record(&account, "deals", json!({"name": "mine"}), ts(T0));
        mine.owner_user_id = Some("user-1".into());
        db.insert_record(&mine).await.unwrap();
        let theirs_scope = scope(&stranger, "deals");
        let notes_scope = scope(&account, "notes");
        let other_user = RecordScope {
            owner_user_id: Some(&"user-2".into()),
            ..scope(&account, "deals")
        };
        let owner = RecordScope {
            owner_user_id: Some(&"user-1".into()),
            ..scope(&account, "deals")
        };

        for outside in [&theirs_scope, &notes_scope, &other_user] {
            assert_eq!(db.get_record(outside, &mine.id).await.unwrap(), None);
            assert!(
                !db.update_record(outside, &mine.id, &json!({"name": "x"}), ts(T0 + 1))
                    .await
                    .unwrap()
            );
            assert!(!db.delete_record(outside, &mine.id).await.unwrap());
            assert_eq!(
                db.list_records(outside, &query(&[])).await.unwrap(),
                (vec![], 0)
            );
        }
        // Refused writes changed nothing.
        assert_eq!(
            db.get_record(&owner, &mine.id).await.unwrap(),
            Some(mine.clone())
        );
        // The account itself (an API key) sees every user's records.
        assert_eq!(
            db.get_record(&scope(&account, "deals"), &mine.id)
                .await
                .unwrap(),
            Some(mine.clone())
        );
        assert!(
            db.update_record(&owner, &mine.id, &json!({"name": "new"}), ts(T0 + 2))
                .await
                .unwrap()
        );
        assert!(db.delete_record(&owner, &mine.id).await.unwrap());
    }

    async fn listings_page_sort_and_filter_alike_on_both_backends(db) {
        let account = db.account().await;
        let rows = [
            record(
                &account,
                "deals",
                json!({"name": "a", "n": 10, "stage": "won", "vip": true, "owner": {"team": "x"}}),
                ts(T0 + 1),
            ),
            record(
                &account,
                "deals",
                json!({"name": "b", "n": 9, "stage": "lost", "vip": false, "owner": {"team": "y"}}),
                ts(T0 + 2),
            ),
            record(
                &account,
                "deals",
                json!({"name": "c", "n": 100, "stage": "won", "vip": false, "owner": {"team": "x"}}),
                ts(T0 + 3),
            ),
            record(
                &account,
                "deals",
                json!({"name": "d", "n": 2.5, "stage": "open"}),
                ts(T0 + 4),
            ),
        ];
        for row in &rows {
            db.insert_record(row).await.unwrap();
        }
        db.insert_record(&record(&account, "notes", json!({"name": "note"}), ts(T0)))
            .await
            .unwrap();
        let deals = scope(&account, "deals");
        let (store, within) = (&db, &deals);
        let names = move |q: &'static [(&'static str, &'static str)]| names(store, within, q);
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

        // Newest first by default; pages count the whole match.
        assert_eq!(names(&[]).await, (list(&["d", "c", "b", "a"]), 4));
        assert_eq!(
            names(&[("limit", "3"), ("page", "2")]).await,
            (list(&["a"]), 4)
        );
        // Numbers sort as numbers, not as text; either way round.
        assert_eq!(
            names(&[("sort", "n")]).await,
            (list(&["d", "b", "a", "c"]), 4)
        );
        assert_eq!(
            names(&[("sort", "-n")]).await,
            (list(&["c", "a", "b", "d"]), 4)
        );
        assert_eq!(
            names(&[("sort", "createdAt")]).await,
            (list(&["a", "b", "c", "d"]), 4)
        );
        // Equality on text, numbers, booleans, nested fields and the record's own columns.
        assert_eq!(
            names(&[("where[stage][equals]", "won")]).await,
            (list(&["c", "a"]), 2)
        );
        assert_eq!(
            names(&[("where[n][equals]", "100")]).await,
            (list(&["c"]), 1)
        );
        assert_eq!(
            names(&[("where[n][equals]", "2.5")]).await,
            (list(&["d"]), 1)
        );
        assert_eq!(
            names(&[("where[vip][equals]", "true")]).await,
            (list(&["a"]), 1)
        );
        assert_eq!(
            names(&[("where[vip][equals]", "false")]).await,
            (list(&["c", "b"]), 2)
        );
        assert_eq!(
            names(&[("where[owner.team][equals]", "x"), ("sort", "name")]).await,
            (list(&["a", "c"]), 2)
        );
        assert_eq!(
            names(&[
                ("where[stage][equals]", "won"),
                ("where[owner.team][equals]", "y")
            ])
            .await,
            (list(&[]), 0)
        );
        assert_eq!(
            names(&[("where[missing][equals]", "x")]).await,
            (list(&[]), 0)
        );
        let created = (T0 + 2).to_string();
        let (rows_by_time, total) = db
            .list_records(
                &deals,
                &query(&[("where[createdAt][equals]", created.as_str())]),
            )
            .await
            .unwrap();
        assert_eq!((rows_by_time.len(), total), (1, 1));
        assert_eq!(rows_by_time[0].doc["name"], "b");
        let (by_id, _) = db
            .list_records(
                &deals,
                &query(&[("where[id][equals]", rows[2].id.as_str())]),
            )
            .await
            .unwrap();
        assert_eq!(by_id, [rows[2].clone()]);
        // A filter and a sort on a document field together, with paging.
        assert_eq!(
            names(&[
                ("where[stage][equals]", "won"),
                ("sort", "-n"),
                ("limit", "1"),
                ("page", "2")
            ])
            .await,
            (list(&["a"]), 2)
        );
    }

    async fn resources_are_listed_with_their_counts(db) {
        let account = db.account().await;
        for (resource, n) in [("deals", 3), ("notes", 1), ("contacts", 2)] {
            for _ in 0..n {
                db.insert_record(&record(&account, resource, json!({}), ts(T0)))
                    .await
                    .unwrap();
            }
        }
        db.insert_record(&record(&db.account().await, "secret", json!({}), ts(T0)))
            .await
            .unwrap();
        let listed = db.list_resources(&account).await.unwrap();
        assert_eq!(
            listed,
            [
                ("contacts".to_owned(), 2),
                ("deals".to_owned(), 3),
                ("notes".to_owned(), 1)
            ]
        );
        assert!(db.list_resources(&"nobody".into()).await.unwrap().is_empty());
    }
}
