//! The vault in the dashboard: collections, records page by page, a record masked, a reveal that
//! asks for the password again and is audited, the sensitive field list, CSRF and isolation.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::dashboard::{Browser, csrf_in};
use crate::helpers::*;

const SSN: &str = "123-45-6789";
const CARD: &str = "4111111111111111";

async fn create(app: &TestApp, key: &str, doc: Value) -> String {
    let response = app
        .request(Method::POST, "/api/creditApplications", Some(key))
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

both_backends! {
    async fn the_data_browser_masks_and_reveals_with_the_password(app) {
        let owner = Browser::signed_up(&app).await;
        let key = owner.create_key("data").await;
        app.wait_until_status(&key, 200).await;
        let id = create(&app, &key, json!({"name": "Ann", "primaryApplicant": {"ssn": SSN}, "payment": {"cardNumber": CARD}})).await;
        for _ in 0..25 {
            create(&app, &key, json!({"n": 1})).await;
        }

        let (status, html) = owner.page("/dashboard/data").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("/dashboard/data/creditApplications") && html.contains(">26<"), "{html}");
        let (status, html) = owner.page("/dashboard/data/creditApplications").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("page 1") && html.contains("?page=2"));
        let (_, page2) = owner.page("/dashboard/data/creditApplications?page=2").await;
        assert!(page2.contains(&id), "the oldest record is on page 2");
        assert!(page2.contains("***-**-6789") && !page2.contains(SSN));

        let path = format!("/dashboard/data/creditApplications/{id}");
        let (status, html) = owner.page(&path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("***-**-6789") && html.contains("************1111"));
        assert!(!html.contains(SSN) && !html.contains(CARD));
        assert!(html.contains("value=\"primaryApplicant.ssn\""));
        let csrf = csrf_in(&html);
        let reveal = format!("{path}/reveal");

        // Without the right CSRF token, or with a wrong password: nothing revealed, nothing audited.
        let forged = owner.post(&reveal, &[("csrf", "x"), ("field", "primaryApplicant.ssn"), ("password", PASSWORD)]).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        assert!(!forged.text().await.unwrap().contains(SSN));
        let wrong = owner.post(&reveal, &[("csrf", &csrf), ("field", "primaryApplicant.ssn"), ("password", "not my password at all")]).await;
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
        let body = wrong.text().await.unwrap();
        assert!(body.contains("password is incorrect") && !body.contains(SSN));
        let bad_field = owner.post(&reveal, &[("csrf", &csrf), ("field", "name"), ("password", PASSWORD)]).await;
        assert_eq!(bad_field.status(), StatusCode::BAD_REQUEST);
        let none = audit_until(&app, &key, "action=sensitive.revealed", |_| true).await;
        assert!(none.is_empty());

        let shown = owner.post(&reveal, &[("csrf", &csrf), ("field", "primaryApplicant.ssn"), ("password", PASSWORD)]).await;
        assert_eq!(shown.status(), StatusCode::OK);
        let body = shown.text().await.unwrap();
        assert!(body.contains(SSN), "the SSN is shown");
        assert!(!body.contains(CARD), "only the field asked for");
        let events = audit_until(&app, &key, "action=sensitive.revealed", |d| !d.is_empty()).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["actor"]["kind"], "owner");
        assert_eq!(events[0]["detail"]["via"], "dashboard");
        assert_eq!(events[0]["target"], format!("creditApplications/{id}#primaryApplicant.ssn"));

        // Another account's owner never finds the record.
        let stranger = Browser::signed_up(&app).await;
        assert_eq!(stranger.get(&path).await.status(), StatusCode::NOT_FOUND);
        let (_, theirs) = stranger.page("/dashboard/data").await;
        assert!(!theirs.contains("creditApplications"));
        let stranger_csrf = stranger.csrf("/dashboard/data").await;
        let response = stranger.post(&reveal, &[("csrf", &stranger_csrf), ("field", "primaryApplicant.ssn"), ("password", PASSWORD)]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        // Bad collection or record ids are just not found.
        assert_eq!(owner.get("/dashboard/data/creditApplications/not-a-uuid").await.status(), StatusCode::NOT_FOUND);
        assert_eq!(owner.get("/dashboard/data/1bad").await.status(), StatusCode::NOT_FOUND);
    }

    async fn the_sensitive_field_list_is_edited_in_the_dashboard(app) {
        let owner = Browser::signed_up(&app).await;
        let key = owner.create_key("fields").await;
        app.wait_until_status(&key, 200).await;
        let (_, html) = owner.page("/dashboard/data").await;
        for name in ["ssn", "coApplicantSSN", "taxId", "cardNumber", "bankAccountNumber", "driversLicenseNumber"] {
            assert!(html.contains(name), "default {name}");
        }
        let csrf = csrf_in(&html);
        // Refused lists change nothing.
        for (fields, status) in [("cvv, ssn", StatusCode::BAD_REQUEST), ("ssn; drop", StatusCode::BAD_REQUEST), ("", StatusCode::BAD_REQUEST)] {
            let response = owner.post("/dashboard/data/_fields", &[("csrf", &csrf), ("fields", fields)]).await;
            assert_eq!(response.status(), status, "{fields}");
        }
        let forged = owner.post("/dashboard/data/_fields", &[("csrf", "nope"), ("fields", "ssn")]).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        let kept = app.get("/api/creditApplications?sort=taxId", &key).send().await.unwrap();
        expect_error(kept, 400, "sensitive_field").await;

        let before = create(&app, &key, json!({"taxId": "98-7654321"})).await;
        let saved = owner.post("/dashboard/data/_fields", &[("csrf", &csrf), ("fields", "ssn, motherMaidenName")]).await;
        assert_eq!(saved.status(), StatusCode::SEE_OTHER);
        let id = create(&app, &key, json!({"motherMaidenName": "Smithsonian", "taxId": "12-3456789"})).await;
        let read: Value = app.get(&format!("/api/creditApplications/{id}"), &key).send().await.unwrap().json().await.unwrap();
        assert_eq!(read["motherMaidenName"], "*******nian");
        assert_eq!(read["taxId"], "12-3456789", "no longer sensitive");
        let events = audit_until(&app, &key, "action=sensitive.fields_changed", |d| !d.is_empty()).await;
        assert_eq!(events[0]["detail"]["fields"], json!(["motherMaidenName", "ssn"]));
        assert!(!contains_bytes(&raw_database_text(&app).await, "Smithsonian"));
        // A value sealed while its field was listed stays sealed and masked, and can be revealed.
        let old: Value = app.get(&format!("/api/creditApplications/{before}"), &key).send().await.unwrap().json().await.unwrap();
        assert_eq!(old["taxId"], "******4321");
        let old: Value = app.get(&format!("/api/creditApplications/{before}?reveal=taxId"), &key).send().await.unwrap().json().await.unwrap();
        assert_eq!(old["taxId"], "98-7654321");
    }
}
