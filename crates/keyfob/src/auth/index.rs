//! The state the verify path reads: live API keys by hash, revoked token ids, and API-key uses not
//! yet written. Nothing here touches the database; [`super::sync`] keeps it current.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use keyfob_store::{ApiKeyRow, AppRow};

/// A live API key, as the verify path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub id: String,
    pub account_id: String,
    pub key_hash: String,
}

#[derive(Default)]
pub struct AuthIndex {
    /// Live keys by SHA-256 hash.
    keys_by_hash: RwLock<HashMap<String, KeyEntry>>,
    /// Revoked token ids and when they expire (Unix seconds): kept until then.
    revoked: RwLock<HashMap<String, i64>>,
    /// Ended sessions (refresh families) and until when (Unix seconds) their access tokens
    /// could still be alive.
    revoked_sessions: RwLock<HashMap<String, i64>>,
    /// Browser origins registered on live applications: the only ones CORS answers.
    origins: RwLock<std::collections::HashSet<String>>,
    /// Applications by `client_id`, filled on first use: the token endpoint reads one per request.
    /// An `app.changed` entry in the change feed drops the entry; a full reload drops them all.
    apps: RwLock<HashMap<String, AppRow>>,
    /// API key id → last use (ms), written in batches.
    uses: Mutex<HashMap<String, i64>>,
}

impl AuthIndex {
    pub fn key_by_hash(&self, hash: &str) -> Option<KeyEntry> {
        self.keys_by_hash
            .read()
            .expect("index lock poisoned")
            .get(hash)
            .cloned()
    }

    pub fn add_key(&self, row: &ApiKeyRow) {
        if row.revoked_at.is_some() {
            self.remove_key(&row.id);
            return;
        }
        self.keys_by_hash
            .write()
            .expect("index lock poisoned")
            .insert(
                row.key_hash.clone(),
                KeyEntry {
                    id: row.id.clone(),
                    account_id: row.account_id.clone(),
                    key_hash: row.key_hash.clone(),
                },
            );
    }

    pub fn remove_key(&self, id: &str) {
        self.keys_by_hash
            .write()
            .expect("index lock poisoned")
            .retain(|_, entry| entry.id != id);
    }

    /// Replaces every key at once (start-up and periodic full reloads).
    pub fn replace_keys(&self, rows: &[ApiKeyRow]) {
        let map = rows
            .iter()
            .filter(|r| r.revoked_at.is_none())
            .map(|r| {
                (
                    r.key_hash.clone(),
                    KeyEntry {
                        id: r.id.clone(),
                        account_id: r.account_id.clone(),
                        key_hash: r.key_hash.clone(),
                    },
                )
            })
            .collect();
        *self.keys_by_hash.write().expect("index lock poisoned") = map;
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .expect("index lock poisoned")
            .contains_key(jti)
    }

    pub fn revoke_token(&self, jti: &str, expires_at: i64) {
        self.revoked
            .write()
            .expect("index lock poisoned")
            .insert(jti.to_owned(), expires_at);
    }

    /// Adds revoked tokens and forgets those that have expired.
    pub fn merge_revoked(&self, items: Vec<(String, i64)>, now_secs: i64) {
        let mut revoked = self.revoked.write().expect("index lock poisoned");
        revoked.retain(|_, exp| *exp > now_secs);
        revoked.extend(items);
    }

    pub fn is_session_revoked(&self, sid: &str) -> bool {
        self.revoked_sessions
            .read()
            .expect("index lock poisoned")
            .contains_key(sid)
    }

    /// Remembers an ended session until `until` (Unix seconds), when its last access token has
    /// expired; forgets the ones past theirs.
    pub fn revoke_session(&self, sid: &str, until: i64, now_secs: i64) {
        let mut sessions = self.revoked_sessions.write().expect("index lock poisoned");
        sessions.retain(|_, t| *t > now_secs);
        sessions.insert(sid.to_owned(), until);
    }

    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins
            .read()
            .expect("index lock poisoned")
            .contains(origin)
    }

    /// Replaces the allowed origins with those of `apps` (each a JSON array of origins).
    pub fn replace_origins(&self, apps: &[String]) {
        let set = apps
            .iter()
            .filter_map(|json| serde_json::from_str::<Vec<String>>(json).ok())
            .flatten()
            .collect();
        *self.origins.write().expect("index lock poisoned") = set;
    }

    pub fn app(&self, client_id: &str) -> Option<AppRow> {
        self.apps
            .read()
            .expect("index lock poisoned")
            .get(client_id)
            .cloned()
    }

    pub fn remember_app(&self, app: &AppRow) {
        self.apps
            .write()
            .expect("index lock poisoned")
            .insert(app.client_id.clone(), app.clone());
    }

    /// Drops one application (`Some`) or all of them (`None`) from the cache.
    pub fn forget_apps(&self, client_id: Option<&str>) {
        let mut apps = self.apps.write().expect("index lock poisoned");
        match client_id {
            Some(id) => {
                apps.remove(id);
            }
            None => apps.clear(),
        }
    }

    pub fn note_use(&self, key_id: &str, at_ms: i64) {
        let mut uses = self.uses.lock().expect("index lock poisoned");
        match uses.get_mut(key_id) {
            Some(last) => *last = (*last).max(at_ms),
            None => {
                uses.insert(key_id.to_owned(), at_ms);
            }
        }
    }

    pub fn take_uses(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *self.uses.lock().expect("index lock poisoned"))
            .into_iter()
            .collect()
    }
}
