//! `/api/{resource}`: every method against every permission, listing, bad inputs, and that no
//! account ever reaches another's records.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

async fn create(app: &TestApp, credential: &str, resource: &str, doc: Value) -> Value {
    let response = app
        .request(Method::POST, &format!("/api/{resource}"), Some(credential))
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn list(app: &TestApp, credential: &str, query: &str) -> Value {
    let response = app
        .get(&format!("/api/deals{query}"), credential)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.unwrap()
}

both_backends! {
    async fn crud_round_trip(app) {
        let (_, key) = app.account_with_key().await;
        let made = create(&app, &key, "deals", json!({"name": "Civic", "price": 100, "dealer": {"city": "Austin"}})).await;
        let id = made["id"].as_str().unwrap().to_owned();
        assert_eq!(made["name"], "Civic");
        assert!(made["createdAt"].is_string() && made["updatedAt"].is_string());

        let read: Value = app.get(&format!("/api/deals/{id}"), &key).send().await.unwrap().json().await.unwrap();
        assert_eq!(read, made);

        let patched: Value = app
            .request(Method::PATCH, &format!("/api/deals/{id}"), Some(&key))
            .json(&json!({"price": 90, "dealer": {"zip": "78701"}, "name": null}))
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(patched["price"], 90);
        assert_eq!(patched["dealer"], json!({"city": "Austin", "zip": "78701"}));
        assert!(patched.get("name").is_none());

        let replaced: Value = app
            .request(Method::PUT, &format!("/api/deals/{id}"), Some(&key))
            .json(&json!({"name": "Accord"}))
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(replaced["name"], "Accord");
        assert!(replaced.get("price").is_none());
        assert_eq!(replaced["id"], id.as_str());

        let response = app.request(Method::DELETE, &format!("/api/deals/{id}"), Some(&key)).send().await.unwrap();
        assert_eq!(response.status(), 204);
        let response = app.get(&format!("/api/deals/{id}"), &key).send().await.unwrap();
        expect_error(response, 404, "not_found").await;
        let response = app.request(Method::DELETE, &format!("/api/deals/{id}"), Some(&key)).send().await.unwrap();
        expect_error(response, 404, "not_found").await;
    }

    async fn every_method_against_every_permission(app) {
        let (_, key) = app.account_with_key().await;
        let id = create(&app, &key, "deals", json!({"n": 1})).await["id"].as_str().unwrap().to_owned();
        let item = format!("/api/deals/{id}");
        // (permissions, may read, may write)
        let grants: [(&[&str], bool, bool); 7] = [
            (&["deals.read"], true, false),
            (&["deals.write"], false, true),
            (&["deals.read", "deals.write"], true, true),
            (&["*.read"], true, false),
            (&["*.write"], false, true),
            (&["services.read", "services.write"], false, false),
            (&["sensitive.read"], false, false),
        ];
        for (permissions, can_read, can_write) in grants {
            let token = app.mint_token(&key, permissions).await;
            let reads = [(Method::GET, "/api/deals".to_owned()), (Method::GET, item.clone()), (Method::HEAD, item.clone())];
            for (method, path) in reads {
                let status = app.request(method.clone(), &path, Some(&token)).send().await.unwrap().status().as_u16();
                assert_eq!(status, if can_read { 200 } else { 403 }, "{permissions:?} {method} {path}");
            }
            let writes = [
                (Method::POST, "/api/deals".to_owned(), 201),
                (Method::PATCH, item.clone(), 200),
                (Method::PUT, item.clone(), 200),
            ];
            for (method, path, ok) in writes {
                let response = app.request(method.clone(), &path, Some(&token)).json(&json!({"n": 2})).send().await.unwrap();
                let status = response.status().as_u16();
                if can_write {
                    assert_eq!(status, ok, "{permissions:?} {method} {path}");
                } else {
                    let message = expect_error(response, 403, "forbidden").await;
                    assert!(message.contains("`deals.write`"), "{message}");
                }
            }
            if !can_read {
                let response = app.get("/api/deals", &token).send().await.unwrap();
                let message = expect_error(response, 403, "forbidden").await;
                assert!(message.contains("`deals.read`"), "{message}");
            }
        }
        // DELETE last: a writer deletes, a reader cannot.
        let reader = app.mint_token(&key, &["deals.read"]).await;
        let response = app.request(Method::DELETE, &item, Some(&reader)).send().await.unwrap();
        expect_error(response, 403, "forbidden").await;
        let writer = app.mint_token(&key, &["deals.write"]).await;
        let response = app.request(Method::DELETE, &item, Some(&writer)).send().await.unwrap();
        assert_eq!(response.status(), 204);
    }

    async fn listing_pages_sorts_and_filters(app) {
        let (_, key) = app.account_with_key().await;
        for (i, status) in [(1, "open"), (2, "closed"), (3, "open"), (4, "open"), (5, "closed")] {
            create(&app, &key, "deals", json!({"n": i, "status": status, "meta": {"rank": 10 - i}, "hot": i % 2 == 0})).await;
        }
        let all = list(&app, &key, "").await;
        assert_eq!(all["totalDocs"], 5);
        assert_eq!(all["limit"], 10);
        assert_eq!(all["page"], 1);
        assert_eq!(all["totalPages"], 1);
        assert_eq!(all["hasNextPage"], false);
        // Newest first by default.
        assert_eq!(all["docs"][0]["n"], 5);

        let page = list(&app, &key, "?limit=2&page=2&sort=n").await;
        assert_eq!(page["docs"].as_array().unwrap().iter().map(|d| d["n"].as_i64().unwrap()).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(page["totalPages"], 3);
        assert_eq!(page["hasNextPage"], true);
        let last = list(&app, &key, "?limit=2&page=3&sort=n").await;
        assert_eq!(last["hasNextPage"], false);
        assert_eq!(last["docs"].as_array().unwrap().len(), 1);

        let desc = list(&app, &key, "?sort=-meta.rank").await;
        assert_eq!(desc["docs"][0]["n"], 1);

        let open = list(&app, &key, "?where%5Bstatus%5D%5Bequals%5D=open&sort=n").await;
        assert_eq!(open["totalDocs"], 3);
        assert_eq!(open["docs"].as_array().unwrap().iter().map(|d| d["n"].as_i64().unwrap()).collect::<Vec<_>>(), vec![1, 3, 4]);
        let sorted_open = list(&app, &key, "?where%5Bstatus%5D%5Bequals%5D=open&sort=-n&limit=2").await;
        assert_eq!(sorted_open["totalDocs"], 3);
        assert_eq!(sorted_open["docs"].as_array().unwrap().iter().map(|d| d["n"].as_i64().unwrap()).collect::<Vec<_>>(), vec![4, 3]);
        let both = list(&app, &key, "?where%5Bstatus%5D%5Bequals%5D=open&where%5Bn%5D%5Bequals%5D=3").await;
        assert_eq!(both["totalDocs"], 1);
        let nested = list(&app, &key, "?where%5Bmeta.rank%5D%5Bequals%5D=7").await;
        assert_eq!(nested["docs"][0]["n"], 3);
        let boolean = list(&app, &key, "?where%5Bhot%5D%5Bequals%5D=true").await;
        assert_eq!(boolean["totalDocs"], 2);
        let none = list(&app, &key, "?where%5Bstatus%5D%5Bequals%5D=lost").await;
        assert_eq!(none["totalDocs"], 0);
        assert_eq!(none["totalPages"], 0);
    }

    async fn bad_inputs_are_named_and_change_nothing(app) {
        let (_, key) = app.account_with_key().await;
        let id = create(&app, &key, "deals", json!({"n": 1})).await["id"].as_str().unwrap().to_owned();
        let cases = [
            ("?limit=0", "`limit`"),
            ("?limit=101", "`limit`"),
            ("?page=0", "`page`"),
            ("?page=abc", "`page`"),
            ("?sort=a%3Bdrop", "`sort`"),
            ("?where%5Bx%27%5D%5Bequals%5D=1", "where"),
            ("?where%5Bx%5D%5Blike%5D=1", "where"),
            ("?bogus=1", "`bogus`"),
        ];
        for (query, needle) in cases {
            let response = app.get(&format!("/api/deals{query}"), &key).send().await.unwrap();
            let message = expect_error(response, 400, "invalid_query").await;
            assert!(message.contains(needle), "{query}: {message}");
        }
        let response = app.get("/api/9deals", &key).send().await.unwrap();
        expect_error(response, 400, "invalid_resource").await;
        let response = app.get("/api/sensitive", &key).send().await.unwrap();
        expect_error(response, 400, "reserved_resource").await;

        let bodies = [
            (json!([1, 2]), "JSON object"),
            (json!("text"), "JSON object"),
            (json!({"id": "mine"}), "`id`"),
            (json!({"createdAt": "x"}), "`createdAt`"),
        ];
        for (body, needle) in bodies {
            for (method, path) in [(Method::POST, "/api/deals".to_owned()), (Method::PUT, format!("/api/deals/{id}")), (Method::PATCH, format!("/api/deals/{id}"))] {
                let response = app.request(method.clone(), &path, Some(&key)).json(&body).send().await.unwrap();
                let message = expect_error(response, 400, "invalid_body").await;
                assert!(message.contains(needle), "{method} {body}: {message}");
            }
        }
        let response = app.request(Method::POST, "/api/deals", Some(&key)).header("content-type", "text/plain").body("{}").send().await.unwrap();
        expect_error(response, 415, "invalid_content_type").await;
        let response = app.request(Method::POST, "/api/deals", Some(&key)).header("content-type", "application/json").body("{").send().await.unwrap();
        expect_error(response, 400, "invalid_body").await;
        let big = json!({"pad": "x".repeat(100 * 1024)});
        let response = app.request(Method::POST, "/api/deals", Some(&key)).json(&big).send().await.unwrap();
        expect_error(response, 413, "body_too_large").await;
        let response = app.get("/api/deals/not-a-uuid", &key).send().await.unwrap();
        expect_error(response, 404, "not_found").await;

        // Still exactly the one record, unchanged.
        let all = list(&app, &key, "").await;
        assert_eq!(all["totalDocs"], 1);
        assert_eq!(all["docs"][0]["n"], 1);
    }

    async fn accounts_never_see_each_other(app) {
        let (_, key_a) = app.account_with_key().await;
        let (_, key_b) = app.account_with_key().await;
        let token_b = app.mint_token(&key_b, &["*.read", "*.write"]).await;
        let a_record = create(&app, &key_a, "deals", json!({"owner": "a"})).await;
        let a_id = a_record["id"].as_str().unwrap().to_owned();
        let item = format!("/api/deals/{a_id}");
        for credential in [&key_b, &token_b] {
            let listed = list(&app, credential, "").await;
            assert_eq!(listed["totalDocs"], 0);
            let filtered = list(&app, credential, &format!("?where%5Bid%5D%5Bequals%5D={a_id}")).await;
            assert_eq!(filtered["totalDocs"], 0);
            expect_error(app.get(&item, credential).send().await.unwrap(), 404, "not_found").await;
            for method in [Method::PATCH, Method::PUT] {
                let response = app.request(method, &item, Some(credential)).json(&json!({"owner": "b"})).send().await.unwrap();
                expect_error(response, 404, "not_found").await;
            }
            let response = app.request(Method::DELETE, &item, Some(credential)).send().await.unwrap();
            expect_error(response, 404, "not_found").await;
        }
        let still: Value = app.get(&item, &key_a).send().await.unwrap().json().await.unwrap();
        assert_eq!(still, a_record);
        // B's own records are B's alone.
        create(&app, &token_b, "deals", json!({"owner": "b"})).await;
        let a_list = list(&app, &key_a, "").await;
        assert_eq!(a_list["totalDocs"], 1);
        assert_eq!(a_list["docs"][0]["owner"], "a");
    }
}
