//! The state the verify path reads: live API keys by hash, revoked token ids, the API keys whose
//! tokens are refused, and API-key uses not yet written. Nothing here touches the database;
//! [`super::sync`] keeps it current, and [`super::lookup`] reads a key through on a miss.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use keyfob_store::{
    AccountId, ApiKeyRow, AppRow, ClientId, FamilyId, Jti, KeyId, Strings, TokenCutoff,
};

use keyfob_domain::PermissionSet;
use keyfob_domain::key_policy::RateLimit;
use keyfob_domain::time::Timestamp;

use super::lookup::KeyLookups;

/// A live API key, as the verify path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub id: KeyId,
    pub account_id: AccountId,
    pub key_hash: String,
    /// What it may do: the whole account, or a list.
    pub permissions: PermissionSet,
    /// From when it, and every token it minted, is refused.
    pub expires_at: Option<Timestamp>,
    /// Its limit across the cluster, as configured (each node enforces its share).
    pub rate_limit: Option<RateLimit>,
}

impl KeyEntry {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

impl From<&ApiKeyRow> for KeyEntry {
    fn from(row: &ApiKeyRow) -> Self {
        KeyEntry {
            id: row.id.clone(),
            account_id: row.account_id.clone(),
            key_hash: row.key_hash.clone(),
            permissions: row.permission_set(),
            expires_at: row.expires_at,
            rate_limit: row.rate_limit(),
        }
    }
}

/// Why a token minted by an API key is refused although its own id is not revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCutoffReason {
    /// The key that minted it is revoked: every token it minted is refused.
    KeyRevoked,
    /// Every token the key had minted up to an instant was revoked, this one included.
    TokensRevoked,
}

pub struct AuthIndex {
    /// Live keys by SHA-256 hash.
    keys_by_hash: RwLock<HashMap<String, Arc<KeyEntry>>>,
    /// The same keys by id, for the tokens they minted (expiry, rate limit). Expired keys stay
    /// in both maps until revoked, so that what they minted is refused as expired.
    keys_by_id: RwLock<HashMap<KeyId, Arc<KeyEntry>>>,
    /// Counts every removal of keys, so that a read-through that started before one does not put
    /// back a key revoked meanwhile.
    key_removals: AtomicU64,
    /// API key id → the tokens of it that are refused ([`TokenCutoff::before`]) and until when
    /// that matters (the last such token's expiry). One entry per key, not per token.
    cutoffs: RwLock<HashMap<KeyId, TokenCutoff>>,
    /// Reads through to the database on an index miss: single-flight, rate-limited, with a
    /// bounded negative cache.
    pub(super) lookups: KeyLookups,
    /// Revoked token ids and when they expire: kept until then.
    revoked: RwLock<HashMap<Jti, Timestamp>>,
    /// Ended sessions (refresh families) and until when their access tokens could still be
    /// alive.
    revoked_sessions: RwLock<HashMap<FamilyId, Timestamp>>,
    /// Browser origins registered on live applications: the only ones CORS answers.
    origins: RwLock<std::collections::HashSet<String>>,
    /// Applications by `client_id`, filled on first use: the token endpoint reads one per request.
    /// An `app.changed` entry in the change feed drops the entry; a full reload drops them all.
    apps: RwLock<HashMap<ClientId, AppRow>>,
    /// Per-key rate-limit budgets.
    pub budgets: super::limits::KeyBudgets,
    /// Requests per key and day, and each key's last use, written in batches.
    pub usage: super::usage::UsageTally,
}

impl AuthIndex {
    /// An empty index whose read-through on a key miss is limited to `lookups_per_second`.
    pub fn new(lookups_per_second: u32) -> AuthIndex {
        AuthIndex {
            keys_by_hash: RwLock::default(),
            keys_by_id: RwLock::default(),
            key_removals: AtomicU64::new(0),
            cutoffs: RwLock::default(),
            lookups: KeyLookups::new(lookups_per_second),
            revoked: RwLock::default(),
            revoked_sessions: RwLock::default(),
            origins: RwLock::default(),
            apps: RwLock::default(),
            budgets: super::limits::KeyBudgets::default(),
            usage: super::usage::UsageTally::default(),
        }
    }

    pub fn key_by_hash(&self, hash: &str) -> Option<Arc<KeyEntry>> {
        self.keys_by_hash
            .read()
            .expect("index lock poisoned")
            .get(hash)
            .cloned()
    }

    /// A key the index holds (live or expired, not revoked) by its id.
    pub fn key_by_id(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.keys_by_id
            .read()
            .expect("index lock poisoned")
            .get(id)
            .cloned()
    }

    pub fn add_key(&self, row: &ApiKeyRow) {
        if row.revoked_at.is_some() {
            self.remove_key(&row.id);
            return;
        }
        // A key created after its hash was looked up in vain (it cannot be guessed, but the rule
        // is simple): the negative answer must not outlive it.
        self.lookups.forget(&row.key_hash);
        let entry = Arc::new(KeyEntry::from(row));
        let mut keys = self.keys_by_hash.write().expect("index lock poisoned");
        keys.insert(row.key_hash.clone(), entry.clone());
        self.keys_by_id
            .write()
            .expect("index lock poisoned")
            .insert(row.id.clone(), entry);
    }

    /// How many times keys were removed so far; see [`AuthIndex::add_key_read_through`].
    pub fn key_removals(&self) -> u64 {
        self.key_removals.load(Ordering::SeqCst)
    }

    /// Adds a key read from the database on an index miss, unless a key was removed since
    /// `removals_before` was read (before the database read): the row may predate a revocation
    /// that this node has already applied. `None` when it was not added.
    pub fn add_key_read_through(
        &self,
        row: &ApiKeyRow,
        removals_before: u64,
    ) -> Option<Arc<KeyEntry>> {
        if row.revoked_at.is_some() {
            return None;
        }
        let mut keys = self.keys_by_hash.write().expect("index lock poisoned");
        // Checked under the write lock that removals also take, so none slips in between.
        if self.key_removals.load(Ordering::SeqCst) != removals_before {
            return None;
        }
        let entry = Arc::new(KeyEntry::from(row));
        keys.insert(row.key_hash.clone(), entry.clone());
        self.keys_by_id
            .write()
            .expect("index lock poisoned")
            .insert(row.id.clone(), entry.clone());
        Some(entry)
    }

    pub fn remove_key(&self, id: &str) {
        let mut keys = self.keys_by_hash.write().expect("index lock poisoned");
        self.key_removals.fetch_add(1, Ordering::SeqCst);
        keys.retain(|_, entry| entry.id != id);
        self.keys_by_id
            .write()
            .expect("index lock poisoned")
            .remove(id);
        self.budgets.forget(id);
    }

    /// Refuses every token `key_id` minted up to `before`, remembered until `until`,
    /// and at least until the next full reload has seen any token minted meanwhile elsewhere.
    pub fn refuse_key_tokens(
        &self,
        key_id: &KeyId,
        before: Timestamp,
        until: Timestamp,
        now: Timestamp,
    ) {
        let mut cutoffs = self.cutoffs.write().expect("index lock poisoned");
        cutoffs.retain(|_, c| c.until > now);
        let entry = cutoffs
            .entry(key_id.clone())
            .or_insert(TokenCutoff { before, until });
        entry.before = entry.before.max(before);
        entry.until = entry.until.max(until);
    }

    /// Adds cutoffs read from the database and forgets those whose tokens have all expired.
    /// Cutoffs only ever grow (a key is never un-revoked), so merging is always right.
    pub fn merge_cutoffs(&self, items: Vec<(KeyId, TokenCutoff)>, now: Timestamp) {
        let mut cutoffs = self.cutoffs.write().expect("index lock poisoned");
        cutoffs.retain(|_, c| c.until > now);
        for (key_id, cutoff) in items {
            let entry = cutoffs.entry(key_id).or_insert(cutoff);
            entry.before = entry.before.max(cutoff.before);
            entry.until = entry.until.max(cutoff.until);
        }
    }

    /// Whether a token `key_id` minted at `issued()` (computed only when the key has a cutoff)
    /// is refused, and why.
    pub fn key_cutoff(
        &self,
        key_id: &str,
        issued: impl FnOnce() -> Timestamp,
    ) -> Option<KeyCutoffReason> {
        let cutoffs = self.cutoffs.read().expect("index lock poisoned");
        let cutoff = cutoffs.get(key_id)?;
        if cutoff.before == Timestamp::MAX {
            Some(KeyCutoffReason::KeyRevoked)
        } else if issued() <= cutoff.before {
            Some(KeyCutoffReason::TokensRevoked)
        } else {
            None
        }
    }

    /// Database reads the key read-through has made so far.
    pub fn lookups_made(&self) -> u64 {
        self.lookups.reads()
    }

    /// Unknown key hashes remembered now (at most [`super::NEGATIVE_CAPACITY`]).
    pub fn negative_cached(&self) -> usize {
        self.lookups.negative_len()
    }

    /// How many keys' cutoffs are held (for tests and metrics).
    pub fn cutoff_count(&self) -> usize {
        self.cutoffs.read().expect("index lock poisoned").len()
    }

    /// Replaces every key at once (start-up and periodic full reloads). Rate-limit budgets of
    /// keys that remain are kept.
    pub fn replace_keys(&self, rows: &[ApiKeyRow]) {
        let entries: Vec<Arc<KeyEntry>> = rows
            .iter()
            .filter(|r| r.revoked_at.is_none())
            .map(|r| Arc::new(KeyEntry::from(r)))
            .collect();
        let by_hash = entries
            .iter()
            .map(|e| (e.key_hash.clone(), e.clone()))
            .collect();
        let by_id: HashMap<KeyId, Arc<KeyEntry>> =
            entries.into_iter().map(|e| (e.id.clone(), e)).collect();
        let mut keys = self.keys_by_hash.write().expect("index lock poisoned");
        // It may drop keys: a read-through in flight must not put one back.
        self.key_removals.fetch_add(1, Ordering::SeqCst);
        *keys = by_hash;
        self.budgets.retain(|id| by_id.contains_key(id));
        *self.keys_by_id.write().expect("index lock poisoned") = by_id;
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .expect("index lock poisoned")
            .contains_key(jti)
    }

    pub fn revoke_token(&self, jti: &Jti, expires_at: Timestamp) {
        self.revoked
            .write()
            .expect("index lock poisoned")
            .insert(jti.clone(), expires_at);
    }

    /// Adds revoked tokens and forgets those that have expired.
    pub fn merge_revoked(&self, items: Vec<(Jti, Timestamp)>, now: Timestamp) {
        let mut revoked = self.revoked.write().expect("index lock poisoned");
        revoked.retain(|_, exp| *exp > now);
        revoked.extend(items);
    }

    pub fn is_session_revoked(&self, sid: &str) -> bool {
        self.revoked_sessions
            .read()
            .expect("index lock poisoned")
            .contains_key(sid)
    }

    /// Remembers an ended session until `until`, when its last access token has expired; forgets
    /// the ones past theirs.
    pub fn revoke_session(&self, sid: &FamilyId, until: Timestamp, now: Timestamp) {
        let mut sessions = self.revoked_sessions.write().expect("index lock poisoned");
        sessions.retain(|_, t| *t > now);
        sessions.insert(sid.clone(), until);
    }

    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins
            .read()
            .expect("index lock poisoned")
            .contains(origin)
    }

    /// Replaces the allowed origins with those of `apps` (each a JSON array of origins).
    pub fn replace_origins(&self, apps: &[Strings]) {
        let set = apps.iter().flatten().cloned().collect();
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
}
