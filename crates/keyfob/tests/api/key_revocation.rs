//! Tokens die with what made them: revoking an API key refuses every token it minted, "revoke all
//! tokens of this key" refuses the ones minted so far (and no others), and retiring a compromised
//! signing key takes it out of the JWKS and refuses every token it signed — on every node of one
//! database, within the revocation bound. Also the dashboard's token list: paged, filtered, and
//! its "revoke all tokens of this key" form.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use keyfob_domain::ids::AccountId;
use keyfob_domain::time::Timestamp;

use crate::both_backends;
use crate::dashboard::{Browser, account_of, location};
use crate::helpers::*;
use crate::revocation::{time_until_refused, two_nodes};

fn now() -> Timestamp {
    Timestamp::now()
}

/// The 401 message `node` answers `credential` with.
async fn refusal(node: &TestApp, credential: &str) -> String {
    let response = node.get("/auth/whoami", credential).send().await.unwrap();
    expect_error(response, 401, "unauthorized").await
}

async fn key_id_of(app: &TestApp, account: &str, key: &str) -> keyfob_store::KeyId {
    let hash = keyfob_domain::secret::hash_secret(key);
    app.state
        .store
        .list_api_keys(&account.into())
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.key_hash == hash)
        .unwrap()
        .id
}

fn header_of(token: &str) -> Value {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap()
}

async fn jwks_kids(node: &TestApp) -> Vec<String> {
    let set: Value = node.public_json("/.well-known/jwks.json").await;
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls until `ready` holds, for up to 2 seconds (the revocation bound); returns how long it took.
async fn within_the_bound<F, Fut>(what: &str, mut ready: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if ready().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not within 2 s");
}

async fn tokens_die_with_their_key(backend: Backend) {
    let Some((a, b)) = two_nodes(backend).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let (account, key) = a.account_with_key().await;
    let other_key = a.create_key(&AccountId::from(account.as_str())).await;
    b.wait_until_status(&key, 200).await;
    let token = a.mint_token(&key, &["deals.read"]).await;
    let spare = a.mint_token(&key, &["deals.write"]).await;
    let unrelated = a.mint_token(&other_key, &["deals.read"]).await;
    for node in [&a, &b] {
        for t in [&token, &spare, &unrelated] {
            assert_eq!(node.whoami_status(t).await, 200);
        }
    }

    let key_id = key_id_of(&a, &account, &key).await;
    assert!(
        a.state
            .store
            .revoke_api_key(None, &key_id, now())
            .await
            .unwrap()
    );
    // Node B learns of it from the change feed: every token of the key, cached or not, is refused.
    let took = time_until_refused(&b, &token).await;
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    let took = time_until_refused(&a, &spare).await;
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    for node in [&a, &b] {
        for t in [&token, &spare] {
            let message = refusal(node, t).await;
            assert!(
                message.contains("API key that has been revoked"),
                "{message}"
            );
        }
        assert_eq!(
            node.whoami_status(&unrelated).await,
            200,
            "another key's token"
        );
        assert_eq!(node.whoami_status(&key).await, 401);
    }
    // The dashboard's list says so too.
    let rows = a
        .state
        .store
        .list_tokens(&AccountId::from(account.as_str()), 10)
        .await
        .unwrap();
    let token_rows: Vec<_> = rows
        .iter()
        .filter(|r| r.api_key_id.as_deref() == Some(key_id.as_str()))
        .collect();
    assert_eq!(token_rows.len(), 2);
    assert!(token_rows.iter().all(|r| r.revoked_at.is_some()));

    // A node started afterwards loads the refusal with everything else.
    let mut config = a.state.config.as_ref().clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.public_url = Some("http://keyfob.test".into());
    let c = spawn_with(config, a.db.clone()).await;
    assert!(refusal(&c, &token).await.contains("revoked"));
    assert_eq!(c.whoami_status(&unrelated).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_keys_tokens_are_refused_on_every_node_on_sqlite() {
    tokens_die_with_their_key(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_keys_tokens_are_refused_on_every_node_on_postgres() {
    tokens_die_with_their_key(Backend::Postgres).await;
}

async fn revoke_all_tokens_of_one_key(backend: Backend) {
    let Some((a, b)) = two_nodes(backend).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let (account, key) = a.account_with_key().await;
    let other_key = a.create_key(&AccountId::from(account.as_str())).await;
    b.wait_until_status(&key, 200).await;
    b.wait_until_status(&other_key, 200).await;
    let old: Vec<String> = futures_mint(&a, &key, 3).await;
    let unrelated = a.mint_token(&other_key, &["deals.read"]).await;
    for t in old.iter().chain([&unrelated]) {
        assert_eq!(b.whoami_status(t).await, 200);
    }

    let key_id = key_id_of(&a, &account, &key).await;
    let stranger = a.create_account("stranger@example.com").await;
    assert!(
        !a.state
            .store
            .revoke_key_tokens(Some(&stranger), &key_id, now())
            .await
            .unwrap(),
        "another account cannot"
    );
    assert!(
        a.state
            .store
            .revoke_key_tokens(Some(&AccountId::from(account.as_str())), &key_id, now())
            .await
            .unwrap()
    );
    let took = time_until_refused(&b, &old[0]).await;
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    // Within a second, one token minted a moment before the cutoff, and one after.
    let later_b = b.mint_token(&key, &["deals.read"]).await;
    let later_a = a.mint_token(&key, &["deals.read"]).await;
    within_the_bound("node A refuses the old tokens", || async {
        a.whoami_status(&old[2]).await == 401
    })
    .await;
    for node in [&a, &b] {
        for t in &old {
            let message = refusal(node, t).await;
            assert!(message.contains("every token of its API key"), "{message}");
        }
        assert_eq!(node.whoami_status(&key).await, 200, "the key stays live");
        assert_eq!(
            node.whoami_status(&unrelated).await,
            200,
            "other keys' tokens"
        );
        assert_eq!(node.whoami_status(&later_a).await, 200, "later tokens");
        assert_eq!(node.whoami_status(&later_b).await, 200, "later tokens");
    }
    // Revoking the key itself refuses the later ones too.
    assert!(
        a.state
            .store
            .revoke_api_key(Some(&AccountId::from(account.as_str())), &key_id, now())
            .await
            .unwrap()
    );
    time_until_refused(&b, &later_a).await;
    assert!(
        refusal(&b, &later_b)
            .await
            .contains("API key that has been revoked")
    );
    // A revoked key has no tokens left to revoke.
    assert!(
        !a.state
            .store
            .revoke_key_tokens(Some(&AccountId::from(account.as_str())), &key_id, now())
            .await
            .unwrap()
    );
}

async fn futures_mint(app: &TestApp, key: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(app.mint_token(key, &["deals.read"]).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_all_tokens_of_a_key_spares_the_rest_on_sqlite() {
    revoke_all_tokens_of_one_key(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_all_tokens_of_a_key_spares_the_rest_on_postgres() {
    revoke_all_tokens_of_one_key(Backend::Postgres).await;
}

async fn retire_a_compromised_signing_key(backend: Backend) {
    let Some((a, b)) = two_nodes(backend).await else {
        eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set");
        return;
    };
    let store = a.state.store.clone();
    let (_, key) = a.account_with_key().await;
    b.wait_until_status(&key, 200).await;
    let old_kid = store.list_signing_keys().await.unwrap()[0].kid.clone();

    // The only key cannot be retired: nothing could sign.
    let err = keyfob::services::signing_keys::retire_signing_key(store.as_ref(), &old_kid)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("only signing key") && err.contains("signing-keys rotate"),
        "{err}"
    );

    let token = a.mint_token(&key, &["deals.read"]).await;
    assert_eq!(header_of(&token)["kid"], old_kid.as_str());
    // Both nodes have verified it once, so it sits in their verified-token caches.
    assert_eq!(a.whoami_status(&token).await, 200);
    assert_eq!(b.whoami_status(&token).await, 200);

    // A successor is published, to sign in five minutes.
    let next = keyfob::services::signing_keys::rotate_signing_key(
        store.as_ref(),
        &a.state.master,
        keyfob::config::SigningAlg::EdDsa,
        300,
        3600,
    )
    .await
    .unwrap();
    for node in [&a, &b] {
        within_the_bound("the successor is published", || async {
            jwks_kids(node).await.contains(&next.kid.to_string())
        })
        .await;
    }

    let retired = keyfob::services::signing_keys::retire_signing_key(store.as_ref(), &old_kid)
        .await
        .unwrap();
    assert_eq!(retired.heir.as_ref().unwrap().kid, next.kid);
    for node in [&a, &b] {
        let took = within_the_bound("the retired key leaves the JWKS", || async {
            !jwks_kids(node).await.contains(&old_kid.to_string())
        })
        .await;
        assert!(took < Duration::from_secs(2));
        assert_eq!(jwks_kids(node).await, vec![next.kid.clone()]);
        let message = refusal(node, &token).await;
        assert!(
            message.contains("signing key has been retired"),
            "{message}"
        );
    }
    // The successor signs from now on, on both nodes, and its tokens work everywhere.
    for minter in [&a, &b] {
        let fresh = minter.mint_token(&key, &["deals.read"]).await;
        assert_eq!(header_of(&fresh)["kid"], next.kid.as_str());
        assert_eq!(a.whoami_status(&fresh).await, 200);
        assert_eq!(b.whoami_status(&fresh).await, 200);
    }
    let rows = store.list_signing_keys().await.unwrap();
    let old_row = rows.iter().find(|r| r.kid == old_kid).unwrap();
    assert!(old_row.revoked_at.is_some());
    // A later rotation does not bring the retired key back into the JWKS.
    keyfob::services::signing_keys::rotate_signing_key(
        store.as_ref(),
        &a.state.master,
        keyfob::config::SigningAlg::EdDsa,
        0,
        3600,
    )
    .await
    .unwrap();
    let old_row = store
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.kid == old_kid)
        .unwrap();
    assert!(old_row.expires_at.unwrap() <= now());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!jwks_kids(&b).await.contains(&old_kid.to_string()));
    assert!(refusal(&b, &token).await.contains("retired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_signing_key_is_refused_on_every_node_on_sqlite() {
    retire_a_compromised_signing_key(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_signing_key_is_refused_on_every_node_on_postgres() {
    retire_a_compromised_signing_key(Backend::Postgres).await;
}

/// A page's text with the character references the templates write turned back into characters.
fn unescape(html: &str) -> String {
    html.replace("<code>", "`")
        .replace("</code>", "`")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
        .replace("&#96;", "`")
        .replace("&#39;", "'")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
}

/// The token ids listed on a tokens page, in order.
fn listed_jtis(html: &str) -> Vec<String> {
    html.match_indices("<tr id=\"token-")
        .map(|(at, m)| {
            let start = at + m.len();
            html[start..start + html[start..].find('"').unwrap()].to_owned()
        })
        .collect()
}

/// The tokens of `account`, newest first, as the store lists them.
async fn jtis(app: &TestApp, account: &str) -> Vec<String> {
    app.state
        .store
        .list_tokens(&account.into(), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.jti.into())
        .collect()
}

both_backends! {
    async fn the_tokens_page_pages_and_filters(app) {
        let browser = Browser::signed_up(&app).await;
        let account = account_of(&app, &browser.email).await;
        let decoy_key = browser.create_key("decoys").await;
        let strong_key = browser.create_key("strong").await;
        let strong_id = key_id_of(&app, &account, &strong_key).await;
        let decoy_id = key_id_of(&app, &account, &decoy_key).await;
        // A powerful token first, then 25 decoys on top of it.
        let strong = app.mint_token(&strong_key, &["deals.write", "audit.read"]).await;
        let strong_jti = decode_jti(&strong);
        for _ in 0..25 {
            app.mint_token(&decoy_key, &["deals.read"]).await;
        }
        let all = jtis(&app, &account).await;
        assert_eq!(all.len(), 26);
        assert_eq!(all.last(), Some(&strong_jti), "the oldest");

        // Paging: ten a page, newest first, every token on exactly one page.
        let (status, first) = browser.page("/dashboard/tokens?limit=10").await;
        assert_eq!(status, StatusCode::OK);
        assert!(first.contains("26 tokens; page 1 of 3"), "{first}");
        assert_eq!(listed_jtis(&first), all[..10].to_vec());
        assert!(first.contains("page=2") && first.contains("rel=\"next\""));
        assert!(!first.contains("rel=\"prev\""));
        let (_, third) = browser.page("/dashboard/tokens?limit=10&page=3").await;
        assert_eq!(listed_jtis(&third), all[20..].to_vec());
        assert!(third.contains(&strong_jti) && !third.contains("rel=\"next\""));
        let (_, beyond) = browser.page("/dashboard/tokens?limit=10&page=4").await;
        assert!(listed_jtis(&beyond).is_empty() && beyond.contains("No tokens match"));
        // The default page holds 50, so the whole list fits.
        let (_, default) = browser.page("/dashboard/tokens").await;
        assert_eq!(listed_jtis(&default), all);

        // By key, by permission: the strong token cannot hide.
        let (_, by_key) = browser.page(&format!("/dashboard/tokens?key={strong_id}")).await;
        assert_eq!(listed_jtis(&by_key), vec![strong_jti.clone()]);
        assert!(by_key.contains("Revoke all tokens of strong"), "{by_key}");
        let (_, by_key) = browser.page(&format!("/dashboard/tokens?key={decoy_id}&limit=5")).await;
        assert!(by_key.contains("25 tokens; page 1 of 5"));
        assert!(!listed_jtis(&by_key).contains(&strong_jti));
        for permission in ["deals.write", "audit.read"] {
            let (_, html) = browser.page(&format!("/dashboard/tokens?permission={permission}")).await;
            assert_eq!(listed_jtis(&html), vec![strong_jti.clone()], "{permission}");
        }
        let (_, html) = browser.page("/dashboard/tokens?permission=deals.read&limit=100").await;
        assert_eq!(listed_jtis(&html).len(), 25);
        // `_` is a LIKE wildcard in SQL; here it matches only itself.
        let (status, html) = browser.page("/dashboard/tokens?permission=deals_write.read").await;
        assert_eq!(status, StatusCode::OK);
        assert!(listed_jtis(&html).is_empty());

        // By state.
        let (_, live) = browser.page("/dashboard/tokens?status=live&limit=100").await;
        assert_eq!(listed_jtis(&live).len(), 26);
        assert_eq!(browser.revoke("tokens", &strong_jti).await.status(), StatusCode::SEE_OTHER);
        let (_, revoked) = browser.page("/dashboard/tokens?status=revoked").await;
        assert_eq!(listed_jtis(&revoked), vec![strong_jti.clone()]);
        let (_, live) = browser.page("/dashboard/tokens?status=live&limit=100").await;
        assert_eq!(listed_jtis(&live).len(), 25);
        let (_, expired) = browser.page("/dashboard/tokens?status=expired").await;
        assert!(listed_jtis(&expired).is_empty());
        // Filters combine, and stay in the paging links.
        let (_, html) = browser
            .page(&format!("/dashboard/tokens?key={decoy_id}&status=live&permission=deals.read&limit=10&page=2"))
            .await;
        assert_eq!(listed_jtis(&html), all[10..20].to_vec());
        assert!(
            unescape(&html).contains(&format!("key={decoy_id}&permission=deals.read&status=live&limit=10&page=3")),
            "{html}"
        );

        // Bad filters and pages: a 400 page naming the parameter, never a 500.
        let (stranger, _) = app.account_with_key().await;
        let strangers_key = app.create_key(&AccountId::from(stranger.as_str())).await;
        let strangers_key_id = key_id_of(&app, &stranger, &strangers_key).await;
        for (query, needle) in [
            ("page=0", "`page`"),
            ("page=-1", "`page`"),
            ("page=abc", "`page`"),
            ("page=99999999999", "`page`"),
            ("limit=1000", "`limit`"),
            ("status=dead", "`status`"),
            ("key=nonsense", "`key`"),
            ("key=%27%20OR%201%3D1", "`key`"),
            (&format!("key={strangers_key_id}"), "no API key of this account"),
            ("permission=deals.delete", "`permission`"),
            ("permission=%25", "`permission`"),
            ("sort=jti", "`sort`"),
            ("status=live&status=revoked", "more than once"),
        ] {
            let (status, html) = browser.page(&format!("/dashboard/tokens?{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            assert!(unescape(&html).contains(needle), "{query}: {html}");
            assert!(listed_jtis(&html).is_empty(), "{query}");
        }
    }

    async fn revoke_all_tokens_of_a_key_in_the_dashboard(app) {
        let browser = Browser::signed_up(&app).await;
        let account = account_of(&app, &browser.email).await;
        let key = browser.create_key("leaky").await;
        let other = browser.create_key("fine").await;
        let key_id = key_id_of(&app, &account, &key).await;
        let old = app.mint_token(&key, &["deals.write"]).await;
        let unrelated = app.mint_token(&other, &["deals.write"]).await;
        let path = format!("/dashboard/keys/{key_id}/revoke-tokens");
        let csrf = browser.csrf(&format!("/dashboard/tokens?key={key_id}")).await;

        // No confirmation, or a forged form: nothing happens.
        let response = browser.post(&path, &[("csrf", &csrf)]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.text().await.unwrap().contains("Nothing was revoked"));
        let response = browser.post(&path, &[("csrf", "x".repeat(43).as_str()), ("confirm", "yes")]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.whoami_status(&old).await, 200);
        // Another account's owner cannot revoke this key's tokens.
        let intruder = Browser::signed_up(&app).await;
        let intruder_csrf = intruder.csrf("/dashboard/tokens").await;
        let response = intruder.post(&path, &[("csrf", &intruder_csrf), ("confirm", "yes")]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(app.whoami_status(&old).await, 200);

        let response = browser.post(&path, &[("csrf", &csrf), ("confirm", "yes")]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let next = location(&response).to_owned();
        assert_eq!(next, format!("/dashboard/tokens?key={key_id}&done=key-tokens-revoked"));
        // This node refuses at once.
        let message = refusal(&app, &old).await;
        assert!(message.contains("every token of its API key"), "{message}");
        assert_eq!(app.whoami_status(&key).await, 200);
        assert_eq!(app.whoami_status(&unrelated).await, 200);
        let later = app.mint_token(&key, &["deals.write"]).await;
        assert_eq!(app.whoami_status(&later).await, 200);

        let (status, html) = browser.page(&next).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Every token this key had minted was revoked"));
        let (_, revoked) = browser.page(&format!("/dashboard/tokens?key={key_id}&status=revoked")).await;
        assert_eq!(listed_jtis(&revoked), vec![decode_jti(&old)]);
        let (_, live) = browser.page(&format!("/dashboard/tokens?key={key_id}&status=live")).await;
        assert_eq!(listed_jtis(&live), vec![decode_jti(&later)]);

        // Audited, with who and from where.
        let docs = audit_until(&app, &other, "action=api_key.tokens_revoked", |docs| !docs.is_empty()).await;
        assert!(has_event(&docs, "api_key.tokens_revoked", Some(&key_id)));
        assert_eq!(docs[0]["actor"]["kind"], "owner");

        // A revoked key offers no such form, and the form finds no live key.
        assert_eq!(browser.revoke("keys", &key_id).await.status(), StatusCode::SEE_OTHER);
        let (_, html) = browser.page(&format!("/dashboard/tokens?key={key_id}")).await;
        assert!(!html.contains(&path));
        let response = browser.post(&path, &[("csrf", &csrf), ("confirm", "yes")]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(refusal(&app, &later).await.contains("API key that has been revoked"));
    }
}
