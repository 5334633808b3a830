//! Keeps a node's in-memory state in step with the database: every `sync_interval` it reads the
//! change feed's recent entries (keys created or revoked, tokens revoked, signing keys rotated) and
//! applies the ones it has not seen; every minute it reloads everything, as a safety net; and it
//! writes API-key last-used times and usage counts in batches. Nothing here runs on the request path.
//!
//! When the database is unreachable, what is in memory stays as it is (a failed read never
//! replaces anything), so keys and tokens keep being verified; last-used times wait for the next
//! write; and the first poll that works again is followed by a full reload, since the outage may
//! have hidden changes for longer than the poll's look-back.

use std::collections::HashMap;
use std::time::Duration;

use keyfob_domain::time::Timestamp;
use keyfob_store::{Change, ChangeKind, FamilyId, Jti, KeyId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// How far back each poll reads. Longer than any transaction, so a change committed late (its id
/// drawn before a later one's) is still seen.
const LOOKBACK: Duration = Duration::from_secs(30);
const KEEP_CHANGES: Duration = Duration::from_secs(24 * 3600);

/// Stops the background tasks when dropped or on [`SyncHandle::stop`].
pub struct SyncHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SyncHandle {
    /// Stops the loop after writing pending last-used times.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Loads everything once, then keeps it current in the background.
pub async fn spawn_sync(state: AppState) -> anyhow::Result<SyncHandle> {
    let mut seen = HashMap::new();
    // Mark the feed's recent entries as seen before the full load that covers them.
    for change in state
        .store
        .changes_since(Timestamp::now() - LOOKBACK)
        .await?
    {
        seen.insert(change.id, change.created_at);
    }
    full_reload(&state).await?;
    let (stop, mut stopped) = watch::channel(false);
    let interval = Duration::from_millis(state.config.sync_interval_ms);
    let task = tokio::spawn(async move {
        let mut poll = tokio::time::interval(interval);
        let mut reload =
            tokio::time::interval(state.config.full_reload().max(Duration::from_millis(10)));
        let mut outage = Outage::default();
        let mut flush = tokio::time::interval(Duration::from_millis(
            state.config.last_used_flush_ms.max(10),
        ));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reload.tick().await;
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    match apply_changes(&state, &mut seen).await {
                        Ok(()) if outage.ended() => {
                            if let Err(err) = full_reload(&state).await {
                                outage.failed(&err, "reloading after an outage failed");
                            }
                        }
                        Ok(()) => {}
                        Err(err) => outage.failed(&err, "reading the change feed failed"),
                    }
                }
                _ = reload.tick() => {
                    if let Err(err) = full_reload(&state).await {
                        outage.failed(&err, "reloading keys and revocations failed");
                        continue;
                    }
                    if let Err(err) = state.store.prune_changes(Timestamp::now() - KEEP_CHANGES).await {
                        tracing::warn!(error = %err, "pruning the change feed failed");
                    }
                    // Codes are kept a day past expiry so a late replay is still recognised.
                    if let Err(err) = state.store.prune_expired(Timestamp::now() - KEEP_CHANGES).await {
                        tracing::warn!(error = %err, "pruning expired sessions failed");
                    }
                    let grace = state.config.refresh_grace();
                    if let Err(err) = state.store.clear_sealed_refresh(Timestamp::now() - 2 * grace).await {
                        tracing::warn!(error = %err, "clearing refresh retry answers failed");
                    }
                }
                _ = flush.tick() => flush_uses(&state).await,
                _ = stopped.changed() => {
                    flush_uses(&state).await;
                    break;
                }
            }
        }
    });
    Ok(SyncHandle {
        stop,
        task: Some(task),
    })
}

/// Applies the change feed's recent entries now, on this node, so that a revocation made here is
/// refused by the very next request rather than after the next poll. Applying an entry twice is
/// harmless, so the background loop's bookkeeping is left alone.
pub async fn catch_up(state: &AppState) -> anyhow::Result<()> {
    for change in state
        .store
        .changes_since(Timestamp::now() - LOOKBACK)
        .await?
    {
        apply(state, &change).await?;
    }
    Ok(())
}

/// Whether the change feed could not be read lately, so that an outage is logged once rather
/// than at every poll, and followed by a full reload.
#[derive(Default)]
struct Outage {
    failing: bool,
}

impl Outage {
    fn failed(&mut self, err: &anyhow::Error, what: &str) {
        if std::mem::replace(&mut self.failing, true) {
            tracing::debug!(error = %err, "{what}");
        } else {
            tracing::warn!(error = %err, "{what}; keeping what is in memory until it works again");
        }
    }

    /// Called after a good poll: whether it ends an outage.
    fn ended(&mut self) -> bool {
        std::mem::replace(&mut self.failing, false)
    }
}

/// Reads everything the verify path holds. Each part is read before it replaces what is in
/// memory, so a failed read leaves the old state in place: an outage never empties the index.
async fn full_reload(state: &AppState) -> anyhow::Result<()> {
    let keys = state.store.active_api_keys().await?;
    state.index.replace_keys(&keys);
    let now = Timestamp::now();
    let revoked = state.store.revoked_tokens(now).await?;
    state.index.merge_revoked(revoked, now);
    let cutoffs = state.store.token_cutoffs(None, now).await?;
    state.index.merge_cutoffs(cutoffs, now);
    let window = crate::sessions::ENDED_SESSION_MEMORY;
    for (sid, at) in state.store.revoked_families_since(now - window).await? {
        state.index.revoke_session(&sid, at + window, now);
    }
    state.reload_signing_keys().await?;
    state.index.forget_apps(None);
    state
        .index
        .replace_origins(&state.store.live_app_origins().await?);
    Ok(())
}

async fn apply_changes(state: &AppState, seen: &mut HashMap<i64, Timestamp>) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let changes = state.store.changes_since(now - LOOKBACK).await?;
    seen.retain(|_, at| *at >= now - 2 * LOOKBACK);
    for change in changes {
        if seen.contains_key(&change.id) {
            continue;
        }
        apply(state, &change).await?;
        seen.insert(change.id, change.created_at);
    }
    Ok(())
}

async fn apply(state: &AppState, change: &Change) -> anyhow::Result<()> {
    match &change.kind {
        ChangeKind::ApiKeyCreated | ChangeKind::ApiKeyChanged => {
            if let Some(row) = state
                .store
                .find_api_key(&KeyId::from(change.subject.as_str()))
                .await?
            {
                state.index.add_key(&row);
            }
        }
        ChangeKind::ApiKeyRevoked => {
            state.index.remove_key(&change.subject);
            refuse_key_tokens(state, &KeyId::from(change.subject.as_str()), Timestamp::MAX).await?;
        }
        // The change is logged at the instant the tokens were revoked up to.
        ChangeKind::ApiKeyTokensRevoked => {
            refuse_key_tokens(
                state,
                &KeyId::from(change.subject.as_str()),
                change.created_at,
            )
            .await?;
        }
        ChangeKind::TokenRevoked => {
            let jti = Jti::from(change.subject.as_str());
            let exp = match state.store.find_token(&jti).await? {
                Some(token) => token.expires_at,
                None => Timestamp::now() + LOOKBACK,
            };
            state.index.revoke_token(&jti, exp);
        }
        ChangeKind::SigningKeysChanged => state.reload_signing_keys().await?,
        ChangeKind::AppChanged => {
            state.index.forget_apps(Some(&change.subject));
            state
                .index
                .replace_origins(&state.store.live_app_origins().await?);
        }
        ChangeKind::SessionRevoked => {
            let now = Timestamp::now();
            let until = change.created_at + crate::sessions::ENDED_SESSION_MEMORY;
            state
                .index
                .revoke_session(&FamilyId::from(change.subject.as_str()), until, now);
        }
        ChangeKind::Other(kind) => tracing::debug!(kind, "ignoring unknown change"),
    }
    Ok(())
}

/// Refuses the tokens `key_id` minted at or before `before` (`Timestamp::MAX`: all of them), at
/// once and for as long as the last of them lives (read from the database).
async fn refuse_key_tokens(
    state: &AppState,
    key_id: &KeyId,
    before: Timestamp,
) -> anyhow::Result<()> {
    let now = Timestamp::now();
    note_key_cutoff(state, key_id, before, now);
    if let Some((_, cutoff)) = state.store.token_cutoffs(Some(key_id), now).await?.pop() {
        state
            .index
            .refuse_key_tokens(key_id, before, cutoff.until, now);
    }
    Ok(())
}

/// Refuses the tokens `key_id` minted at or before `before` (`Timestamp::MAX`: all of them) on
/// this node now, without a database read: for the node that made the change, so its very next
/// request is refused. Kept at least two full reloads, by when any token minted elsewhere
/// meanwhile is seen in the database and keeps the cutoff as long as it lives.
pub fn note_key_cutoff(state: &AppState, key_id: &KeyId, before: Timestamp, now: Timestamp) {
    let floor = now + 2 * state.config.full_reload();
    state.index.refuse_key_tokens(key_id, before, floor, now);
}

/// Writes the usage counted since the last flush and the keys' last uses. A failed write keeps
/// them for the next (one entry per key and day, so bounded).
async fn flush_uses(state: &AppState) {
    let (counts, uses) = state.index.usage.take();
    if !counts.is_empty()
        && let Err(err) = state.store.add_key_usage(&counts).await
    {
        log_flush_failure(&err, counts.len(), "writing API-key usage failed");
        state.index.usage.put_back_counts(counts);
    }
    if !uses.is_empty()
        && let Err(err) = state.store.touch_api_keys(&uses).await
    {
        log_flush_failure(&err, uses.len(), "writing last-used times failed");
        state.index.usage.put_back_uses(uses);
    }
    let (token_counts, token_uses) = state.index.usage.take_tokens();
    if !token_uses.is_empty()
        && let Err(err) = state
            .store
            .add_token_usage(&token_counts, &token_uses)
            .await
    {
        log_flush_failure(&err, token_uses.len(), "writing token usage failed");
        state.index.usage.put_back_tokens(token_counts, token_uses);
    }
}

fn log_flush_failure(err: &keyfob_store::StoreError, count: usize, what: &str) {
    if err.is_known_outage() {
        tracing::debug!(error = %err, count, "{what}");
    } else {
        tracing::warn!(error = %err, count, "{what}");
    }
}
