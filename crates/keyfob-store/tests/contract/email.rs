//! Links mailed to owners and end users (each works once), verified addresses, and what an owner
//! manages of their own security: their password, their logins, their account's rule on
//! unverified users.

use keyfob_domain::mail::{LinkPurpose, PersonKind};
use keyfob_store::{EmailLinkRow, OwnerLoginRow, StoreError};

use crate::contract;
use crate::helpers::*;

fn link(
    purpose: LinkPurpose,
    person: PersonKind,
    subject_id: &str,
    email: &str,
    at: i64,
) -> EmailLinkRow {
    EmailLinkRow {
        token_hash: id("link"),
        purpose,
        person,
        subject_id: subject_id.into(),
        email: email.into(),
        next: Some("client_id=app&state=s".into()),
        created_at: ts(at),
        expires_at: ts(at + 30 * MINUTE),
        used_at: None,
    }
}

fn login(owner: &keyfob_store::Owner, hash: &str) -> OwnerLoginRow {
    OwnerLoginRow {
        id_hash: hash.into(),
        owner_id: owner.id.clone(),
        account_id: owner.account_id.clone(),
        csrf_token: "csrf".into(),
        created_at: ts(T0),
        expires_at: ts(T0 + 60 * MINUTE),
        ip: Some("192.0.2.1".into()),
        user_agent: Some("Firefox".into()),
    }
}

contract! {
    async fn a_verification_link_works_once_and_verifies_the_address_it_was_sent_to(db) {
        let (_, owner) = db.account_and_owner().await;
        assert_eq!(owner.email_verified_at, None);
        let sent = link(LinkPurpose::Verify, PersonKind::Owner, owner.id.as_str(), &owner.email, T0);
        db.insert_email_link(&sent).await.unwrap();

        // Found while unused and live, for its own purpose only.
        assert_eq!(
            db.find_email_link(&sent.token_hash, LinkPurpose::Verify, ts(T0)).await.unwrap(),
            Some(sent.clone())
        );
        assert_eq!(db.find_email_link(&sent.token_hash, LinkPurpose::Reset, ts(T0)).await.unwrap(), None);
        assert_eq!(db.find_email_link(&sent.token_hash, LinkPurpose::Verify, ts(T0 + 30 * MINUTE)).await.unwrap(), None);
        // Not usable as a reset link.
        assert_eq!(db.use_reset_link(&sent.token_hash, "$argon2id$new", ts(T0)).await.unwrap(), None);
        assert_eq!(db.find_owner(&owner.id).await.unwrap().unwrap().password_hash, owner.password_hash);

        let used = db.use_verify_link(&sent.token_hash, ts(T0 + MINUTE)).await.unwrap().unwrap();
        assert_eq!(used.used_at, Some(ts(T0 + MINUTE)));
        assert_eq!(used.next.as_deref(), Some("client_id=app&state=s"));
        assert_eq!(
            db.find_owner(&owner.id).await.unwrap().unwrap().email_verified_at,
            Some(ts(T0 + MINUTE))
        );
        // Once only.
        assert_eq!(db.use_verify_link(&sent.token_hash, ts(T0 + MINUTE)).await.unwrap(), None);
        assert_eq!(db.find_email_link(&sent.token_hash, LinkPurpose::Verify, ts(T0)).await.unwrap(), None);
        assert_eq!(db.use_verify_link("unknown", ts(T0)).await.unwrap(), None);
    }

    async fn an_expired_or_superseded_link_does_nothing(db) {
        let user = db.user().await;
        let old = link(LinkPurpose::Verify, PersonKind::User, user.id.as_str(), &user.email, T0);
        db.insert_email_link(&old).await.unwrap();
        let expired = link(LinkPurpose::Reset, PersonKind::User, user.id.as_str(), &user.email, T0);
        db.insert_email_link(&expired).await.unwrap();
        assert_eq!(db.use_reset_link(&expired.token_hash, "$argon2id$new", ts(T0 + 30 * MINUTE)).await.unwrap(), None);
        assert_eq!(db.find_user(&user.id).await.unwrap().unwrap().password_hash, user.password_hash);

        // A newer link of the same purpose makes the older one void; another purpose's stays.
        let newer = link(LinkPurpose::Verify, PersonKind::User, user.id.as_str(), &user.email, T0 + MINUTE);
        db.insert_email_link(&newer).await.unwrap();
        assert_eq!(db.use_verify_link(&old.token_hash, ts(T0 + 2 * MINUTE)).await.unwrap(), None);
        assert_eq!(db.find_user(&user.id).await.unwrap().unwrap().email_verified_at, None);
        assert!(db.use_verify_link(&newer.token_hash, ts(T0 + 2 * MINUTE)).await.unwrap().is_some());
        assert_eq!(
            db.find_user(&user.id).await.unwrap().unwrap().email_verified_at,
            Some(ts(T0 + 2 * MINUTE))
        );

        // A link sent to an address the person no longer has verifies nothing.
        let (_, owner) = db.account_and_owner().await;
        let stale = link(LinkPurpose::Verify, PersonKind::Owner, owner.id.as_str(), "old@example.com", T0);
        db.insert_email_link(&stale).await.unwrap();
        assert!(db.use_verify_link(&stale.token_hash, ts(T0)).await.unwrap().is_some());
        assert_eq!(db.find_owner(&owner.id).await.unwrap().unwrap().email_verified_at, None);

        db.prune_expired(ts(T0 + 40 * MINUTE)).await.unwrap();
        assert_eq!(db.count("email_tokens").await, 0);
    }

    async fn a_reset_link_sets_the_password_and_ends_every_login_and_session_of_a_user(db) {
        let grant = db.grant(r#"["deals.read"]"#).await;
        let user = db.find_user(&grant.user_id).await.unwrap().unwrap();
        let (family, _) = db.session(&grant).await;
        db.insert_user_login(&keyfob_store::UserLoginRow {
            id_hash: "cookie".into(),
            user_id: user.id.clone(),
            csrf_token: "c".into(),
            created_at: ts(T0),
            expires_at: ts(T0 + 60 * MINUTE),
        })
        .await
        .unwrap();
        let sent = link(LinkPurpose::Reset, PersonKind::User, user.id.as_str(), &user.email, T0);
        db.insert_email_link(&sent).await.unwrap();

        let at = ts(T0 + MINUTE);
        let used = db.use_reset_link(&sent.token_hash, "$argon2id$new", at).await.unwrap().unwrap();
        assert_eq!(used.subject_id, user.id.as_str());
        let after = db.find_user(&user.id).await.unwrap().unwrap();
        assert_eq!(after.password_hash, "$argon2id$new");
        assert_eq!(after.password_changed_at, at);
        assert_eq!(after.email_verified_at, Some(at));
        assert_eq!(db.find_user_login("cookie", ts(T0)).await.unwrap(), None);
        assert_eq!(db.find_family(&family).await.unwrap().unwrap().revoked_at, Some(at));
        assert!(db.feed().await.contains(&(change_kind::SESSION_REVOKED.into(), family.to_string())));

        // Once only.
        assert_eq!(db.use_reset_link(&sent.token_hash, "$argon2id$again", at).await.unwrap(), None);
        assert_eq!(db.find_user(&user.id).await.unwrap().unwrap().password_hash, "$argon2id$new");
    }

    async fn a_reset_link_of_an_owner_ends_their_logins_and_keeps_an_earlier_verification(db) {
        let (_, owner) = db.account_and_owner().await;
        let verify = link(LinkPurpose::Verify, PersonKind::Owner, owner.id.as_str(), &owner.email, T0);
        db.insert_email_link(&verify).await.unwrap();
        db.use_verify_link(&verify.token_hash, ts(T0)).await.unwrap().unwrap();
        db.insert_owner_login(&login(&owner, "a")).await.unwrap();
        let moving = link(LinkPurpose::ChangeEmail, PersonKind::Owner, owner.id.as_str(), "x@example.com", T0);
        db.insert_email_link(&moving).await.unwrap();
        let sent = link(LinkPurpose::Reset, PersonKind::Owner, owner.id.as_str(), &owner.email, T0);
        db.insert_email_link(&sent).await.unwrap();

        db.use_reset_link(&sent.token_hash, "$argon2id$new", ts(T0 + MINUTE)).await.unwrap().unwrap();
        let after = db.find_owner(&owner.id).await.unwrap().unwrap();
        assert_eq!(after.password_hash, "$argon2id$new");
        assert_eq!(after.email_verified_at, Some(ts(T0)));
        assert_eq!(db.find_owner_login("a", ts(T0)).await.unwrap(), None);
        assert_eq!(db.use_change_email_link(&moving.token_hash, ts(T0)).await.unwrap(), None);
    }

    async fn a_change_of_email_link_moves_the_owner_to_the_new_address_unless_it_is_taken(db) {
        let (_, owner) = db.account_and_owner().await;
        let (_, other) = db.account_and_owner().await;
        let taken = link(LinkPurpose::ChangeEmail, PersonKind::Owner, owner.id.as_str(), &other.email, T0);
        db.insert_email_link(&taken).await.unwrap();
        let err = db.use_change_email_link(&taken.token_hash, ts(T0)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        // Nothing changed, and the link is still there to use once the address is free.
        assert_eq!(db.find_owner(&owner.id).await.unwrap().unwrap().email, owner.email);
        assert!(db.find_email_link(&taken.token_hash, LinkPurpose::ChangeEmail, ts(T0)).await.unwrap().is_some());

        let sent = link(LinkPurpose::ChangeEmail, PersonKind::Owner, owner.id.as_str(), "new@example.com", T0);
        db.insert_email_link(&sent).await.unwrap();
        // The newer link made the first void.
        assert_eq!(db.find_email_link(&taken.token_hash, LinkPurpose::ChangeEmail, ts(T0)).await.unwrap(), None);
        let used = db.use_change_email_link(&sent.token_hash, ts(T0 + MINUTE)).await.unwrap().unwrap();
        assert_eq!(used.email, "new@example.com");
        let after = db.find_owner(&owner.id).await.unwrap().unwrap();
        assert_eq!(after.email, "new@example.com");
        assert_eq!(after.email_verified_at, Some(ts(T0 + MINUTE)));
        assert_eq!(db.find_owner_by_email(&owner.email).await.unwrap(), None);
        assert_eq!(db.use_change_email_link(&sent.token_hash, ts(T0 + MINUTE)).await.unwrap(), None);
    }

    async fn an_owner_lists_and_ends_their_own_logins_and_changes_their_password(db) {
        let (account, owner) = db.account_and_owner().await;
        let (_, stranger) = db.account_and_owner().await;
        for hash in ["a", "b", "c"] {
            db.insert_owner_login(&login(&owner, hash)).await.unwrap();
        }
        db.insert_owner_login(&login(&stranger, "s")).await.unwrap();
        let mine = db.list_owner_logins(&owner.id, ts(T0)).await.unwrap();
        assert_eq!(mine.iter().map(|l| l.id_hash.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(mine[0].ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(mine[0].user_agent.as_deref(), Some("Firefox"));
        assert!(db.list_owner_logins(&owner.id, ts(T0 + 60 * MINUTE)).await.unwrap().is_empty());

        // One's own only.
        assert!(!db.delete_owner_login_of(&owner.id, "s").await.unwrap());
        assert!(db.find_owner_login("s", ts(T0)).await.unwrap().is_some());
        assert!(db.delete_owner_login_of(&owner.id, "c").await.unwrap());
        assert!(!db.delete_owner_login_of(&owner.id, "c").await.unwrap());

        let pending = link(LinkPurpose::ChangeEmail, PersonKind::Owner, owner.id.as_str(), "new@example.com", T0);
        db.insert_email_link(&pending).await.unwrap();
        let verify = link(LinkPurpose::Verify, PersonKind::Owner, owner.id.as_str(), &owner.email, T0);
        db.insert_email_link(&verify).await.unwrap();
        assert_eq!(db.change_owner_password(&owner.id, "$argon2id$new", Some("a")).await.unwrap(), Some(1));
        // A change of email (or a reset) asked for before the new password does not outlive it;
        // a verification link does.
        assert_eq!(db.use_change_email_link(&pending.token_hash, ts(T0)).await.unwrap(), None);
        assert!(db.find_email_link(&verify.token_hash, LinkPurpose::Verify, ts(T0)).await.unwrap().is_some());
        assert_eq!(db.find_owner(&owner.id).await.unwrap().unwrap().password_hash, "$argon2id$new");
        assert!(db.find_owner_login("a", ts(T0)).await.unwrap().is_some());
        assert!(db.find_owner_login("b", ts(T0)).await.unwrap().is_none());
        assert!(db.find_owner_login("s", ts(T0)).await.unwrap().is_some());
        assert_eq!(db.change_owner_password(&"nobody".into(), "$argon2id$x", None).await.unwrap(), None);

        assert_eq!(db.delete_owner_logins(&owner.id, None).await.unwrap(), 1);
        assert!(db.list_owner_logins(&owner.id, ts(T0)).await.unwrap().is_empty());

        assert!(!db.find_account(&account.id).await.unwrap().unwrap().require_verified_users);
        assert!(db.set_require_verified_users(&account.id, true).await.unwrap());
        assert!(db.find_account(&account.id).await.unwrap().unwrap().require_verified_users);
        assert!(!db.set_require_verified_users(&"nope".into(), true).await.unwrap());
    }
}
