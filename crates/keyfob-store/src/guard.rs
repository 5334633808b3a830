//! Surviving a database outage. [`Breaker`] watches every call a [`Guarded`] store makes: a call
//! that finds no connection, loses its connection or misses its deadline makes the database
//! suspect, and a probe (a fresh connection and `SELECT 1`, never the pool's) decides. While the
//! probe fails the database is *down*: calls fail at once with [`Unreachable::Down`] instead of
//! each waiting out a timeout, and the probe retries every `probe_interval` until the database
//! answers, when calls go through again. Errors about one statement or row (a constraint, a bad
//! value) say nothing about the database and never count.
//!
//! The pool's connections are judged by the same watch (see [`Breaker::keep_connection`]): one
//! made before the latest failure may be a dead or hung socket, so it is closed instead of being
//! pinged (a ping on a black-holed socket never returns) or handed out again.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keyfob_domain::mail::LinkPurpose;
use keyfob_domain::query::ListQuery;

use crate::error::Unreachable;
use crate::model::*;
use crate::types::Strings;
use crate::{Result, Store, StoreError, Timestamp};
use keyfob_domain::ids::{
    AccountId, ClientId, FamilyId, GrantId, Jti, KeyId, Kid, OwnerId, RecordId, UserId,
};

/// How long database calls may take, and how often a database that is down is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The longest one store call (a query, or a whole transaction) may take, waiting for a
    /// connection included, before it is abandoned with [`Unreachable::TimedOut`].
    pub operation: Duration,
    /// The longest a call may wait for a connection, and a probe for its answer.
    pub connect: Duration,
    /// While the database is down, how long between two probes.
    pub probe_interval: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            operation: Duration::from_secs(5),
            connect: Duration::from_secs(2),
            probe_interval: Duration::from_millis(500),
        }
    }
}

/// One attempt to reach the database from scratch.
pub(crate) type Probe =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send>> + Send + Sync>;

/// The database's health as this process sees it; shared by a [`Guarded`] store and its pool.
pub(crate) struct Breaker {
    timeouts: Timeouts,
    probe: Probe,
    /// Calls fail at once while set.
    down: AtomicBool,
    /// Set while a probe task runs, so there is only ever one.
    probing: AtomicBool,
    /// When the latest connection failure was seen, in nanoseconds since `epoch` (0: never).
    failed_at: AtomicU64,
    epoch: Instant,
    me: Weak<Breaker>,
}

impl Breaker {
    pub(crate) fn new(timeouts: Timeouts, probe: Probe) -> Arc<Breaker> {
        Arc::new_cyclic(|me| Breaker {
            timeouts,
            probe,
            down: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            failed_at: AtomicU64::new(0),
            epoch: Instant::now(),
            me: me.clone(),
        })
    }

    pub(crate) fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Whether the database is known to be down.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Runs one store call: refused at once while the database is down, abandoned at the
    /// operation deadline, and its connection failures reported.
    pub(crate) async fn run<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        if self.is_down() {
            return Err(StoreError::Unavailable(Unreachable::Down));
        }
        // Pinned here rather than moved into the timeout, so that on a missed deadline the
        // failure is on record before the call (and the connection it holds) is dropped: the
        // pool then closes that connection rather than pinging a socket that may never answer.
        let mut call = pin!(call);
        let result = match tokio::time::timeout(self.timeouts.operation, call.as_mut()).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(Unreachable::TimedOut(
                self.timeouts.operation,
            ))),
        };
        if let Err(err) = &result
            && err.is_connection_failure()
        {
            self.failed(err);
        }
        result
    }

    /// Notes a connection failure and has a probe decide whether the database is down.
    pub(crate) fn failed(&self, err: &dyn std::fmt::Display) {
        let now = self.nanos(Instant::now());
        self.failed_at.fetch_max(now, Ordering::AcqRel);
        if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(error = %err, "a database call failed; probing the database");
            tokio::spawn(probe_until_up(self.me.clone()));
        }
    }

    /// Whether the pool may keep (or hand out) a connection of age `age`: not while the database
    /// is down, and not one made before the latest connection failure.
    pub(crate) fn keep_connection(&self, age: Duration) -> bool {
        if self.is_down() {
            return false;
        }
        let failed_at = self.failed_at.load(Ordering::Acquire);
        if failed_at == 0 {
            return true;
        }
        let made_at = self.nanos(Instant::now()).saturating_sub(nanos(age));
        made_at > failed_at
    }

    fn nanos(&self, at: Instant) -> u64 {
        // Never 0, which means "no failure yet".
        nanos(at.saturating_duration_since(self.epoch)).max(1)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Most probes in flight at once. Against a black hole each waits out its timeout; starting one
/// every interval rather than after the last gave up finds the database back within about an
/// interval (with the default timeouts, four cover the connect timeout).
const MAX_PROBES_IN_FLIGHT: usize = 4;

/// Probes until the database answers, one attempt every `probe_interval`: marks it down on a failed
/// attempt and up again on the first good one. Ends early when the store is gone.
async fn probe_until_up(breaker: Weak<Breaker>) {
    let mut attempts = tokio::task::JoinSet::new();
    loop {
        let Some(b) = breaker.upgrade() else { return };
        let Timeouts {
            connect,
            probe_interval,
            ..
        } = b.timeouts;
        if attempts.len() < MAX_PROBES_IN_FLIGHT {
            let probe = (b.probe)();
            attempts.spawn(async move {
                match tokio::time::timeout(connect, probe).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(_) => Err(format!("no answer within {connect:?}")),
                }
            });
        }
        drop(b);
        let next = tokio::time::sleep(probe_interval);
        tokio::pin!(next);
        loop {
            tokio::select! {
                Some(joined) = attempts.join_next() => {
                    let Some(b) = breaker.upgrade() else { return };
                    match joined {
                        Ok(Ok(())) => {
                            b.answered();
                            // Dropping `attempts` abandons the slower ones.
                            return;
                        }
                        Ok(Err(error)) => b.unreachable(&error),
                        Err(_) => {}
                    }
                }
                _ = &mut next => break,
            }
        }
    }
}

impl Breaker {
    /// A probe got its answer: calls go through again.
    fn answered(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::warn!("the database answers again; calls go through");
        } else {
            tracing::info!("the database answers; it was not down");
        }
        self.probing.store(false, Ordering::Release);
    }

    /// A probe failed: calls fail at once until one succeeds.
    fn unreachable(&self, error: &str) {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::error!(
                %error,
                "the database is unreachable; failing fast until it answers"
            );
        }
    }
}

/// A store whose every call goes through a [`Breaker`]. It implements [`Store`] by forwarding
/// each method through [`Breaker::run`]; the trait has no default methods, so a method added to
/// it cannot compile until it is forwarded here too.
pub struct Guarded<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

impl<S: Store> Guarded<S> {
    pub(crate) fn new(inner: S, breaker: Arc<Breaker>) -> Guarded<S> {
        Guarded { inner, breaker }
    }

    /// The store it guards, for the forwarding impls kept in other files.
    pub(crate) fn inner(&self) -> &S {
        &self.inner
    }

    /// Runs one call of the guarded store through the breaker.
    pub(crate) async fn run<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        self.breaker.run(call).await
    }
}

#[async_trait]
impl<S: Store> Store for Guarded<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn pool_stats(&self) -> crate::PoolStats {
        self.inner.pool_stats()
    }

    async fn ping(&self) -> Result<()> {
        self.breaker.run(self.inner.ping()).await
    }

    async fn create_account(&self, account: &Account, owner: &Owner) -> Result<()> {
        self.breaker
            .run(self.inner.create_account(account, owner))
            .await
    }

    async fn find_account(&self, id: &AccountId) -> Result<Option<Account>> {
        self.breaker.run(self.inner.find_account(id)).await
    }

    async fn find_owner_by_email(&self, email: &str) -> Result<Option<Owner>> {
        self.breaker
            .run(self.inner.find_owner_by_email(email))
            .await
    }

    async fn find_owner(&self, id: &OwnerId) -> Result<Option<Owner>> {
        self.breaker.run(self.inner.find_owner(id)).await
    }

    async fn insert_api_key(&self, key: &ApiKeyRow) -> Result<()> {
        self.breaker.run(self.inner.insert_api_key(key)).await
    }

    async fn find_api_key(&self, id: &KeyId) -> Result<Option<ApiKeyRow>> {
        self.breaker.run(self.inner.find_api_key(id)).await
    }

    async fn find_api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRow>> {
        self.breaker
            .run(self.inner.find_api_key_by_hash(key_hash))
            .await
    }

    async fn list_api_keys(&self, account_id: &AccountId) -> Result<Vec<ApiKeyRow>> {
        self.breaker.run(self.inner.list_api_keys(account_id)).await
    }

    async fn active_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        self.breaker.run(self.inner.active_api_keys()).await
    }

    async fn revoke_api_key(
        &self,
        account_id: Option<&AccountId>,
        id: &KeyId,
        at: Timestamp,
    ) -> Result<bool> {
        self.breaker
            .run(self.inner.revoke_api_key(account_id, id, at))
            .await
    }

    async fn touch_api_keys(&self, uses: &[KeyUse]) -> Result<()> {
        self.breaker.run(self.inner.touch_api_keys(uses)).await
    }

    async fn roll_api_key(
        &self,
        account_id: Option<&AccountId>,
        old: &KeyId,
        new: &ApiKeyRow,
        old_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        self.breaker
            .run(
                self.inner
                    .roll_api_key(account_id, old, new, old_expires_at, now),
            )
            .await
    }

    async fn add_key_usage(&self, rows: &[UsageRow]) -> Result<()> {
        self.breaker.run(self.inner.add_key_usage(rows)).await
    }

    async fn add_token_usage(
        &self,
        rows: &[TokenUsageRow],
        uses: &[(Jti, Timestamp)],
    ) -> Result<()> {
        self.breaker
            .run(self.inner.add_token_usage(rows, uses))
            .await
    }

    async fn token_usage(
        &self,
        account_id: &AccountId,
        jtis: &[Jti],
        from_day: i64,
    ) -> Result<Vec<TokenUsageRow>> {
        self.breaker
            .run(self.inner.token_usage(account_id, jtis, from_day))
            .await
    }

    async fn key_usage(
        &self,
        account_id: &AccountId,
        key_id: Option<&KeyId>,
        from_day: i64,
    ) -> Result<Vec<UsageRow>> {
        self.breaker
            .run(self.inner.key_usage(account_id, key_id, from_day))
            .await
    }

    async fn insert_tokens(&self, tokens: &[TokenRow]) -> Result<()> {
        self.breaker.run(self.inner.insert_tokens(tokens)).await
    }

    async fn list_tokens_page(&self, filter: &TokenFilter<'_>) -> Result<(Vec<TokenRow>, u64)> {
        self.breaker.run(self.inner.list_tokens_page(filter)).await
    }

    async fn revoke_key_tokens(
        &self,
        account_id: Option<&AccountId>,
        key_id: &KeyId,
        at: Timestamp,
    ) -> Result<bool> {
        self.breaker
            .run(self.inner.revoke_key_tokens(account_id, key_id, at))
            .await
    }

    async fn token_cutoffs(
        &self,
        key_id: Option<&KeyId>,
        now: Timestamp,
    ) -> Result<Vec<(KeyId, TokenCutoff)>> {
        self.breaker
            .run(self.inner.token_cutoffs(key_id, now))
            .await
    }

    async fn retire_signing_key(
        &self,
        kid: &Kid,
        at: Timestamp,
        heir: Option<&SigningHeir>,
    ) -> Result<bool> {
        self.breaker
            .run(self.inner.retire_signing_key(kid, at, heir))
            .await
    }

    async fn list_tokens(&self, account_id: &AccountId, limit: u32) -> Result<Vec<TokenRow>> {
        self.breaker
            .run(self.inner.list_tokens(account_id, limit))
            .await
    }

    async fn revoke_token(&self, account_id: &AccountId, jti: &Jti, at: Timestamp) -> Result<bool> {
        self.breaker
            .run(self.inner.revoke_token(account_id, jti, at))
            .await
    }

    async fn revoked_tokens(&self, now: Timestamp) -> Result<Vec<(Jti, Timestamp)>> {
        self.breaker.run(self.inner.revoked_tokens(now)).await
    }

    async fn find_token(&self, jti: &Jti) -> Result<Option<TokenRow>> {
        self.breaker.run(self.inner.find_token(jti)).await
    }

    async fn insert_signing_key(&self, key: &SigningKeyRow) -> Result<()> {
        self.breaker.run(self.inner.insert_signing_key(key)).await
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRow>> {
        self.breaker.run(self.inner.list_signing_keys()).await
    }

    async fn rotate_signing_key(
        &self,
        next: &SigningKeyRow,
        keep_public_for: Duration,
    ) -> Result<()> {
        self.breaker
            .run(self.inner.rotate_signing_key(next, keep_public_for))
            .await
    }

    async fn insert_record(&self, record: &RecordRow) -> Result<()> {
        self.breaker.run(self.inner.insert_record(record)).await
    }

    async fn get_record(
        &self,
        scope: &RecordScope<'_>,
        id: &RecordId,
    ) -> Result<Option<RecordRow>> {
        self.breaker.run(self.inner.get_record(scope, id)).await
    }

    async fn list_records(
        &self,
        scope: &RecordScope<'_>,
        query: &ListQuery,
    ) -> Result<(Vec<RecordRow>, u64)> {
        self.breaker
            .run(self.inner.list_records(scope, query))
            .await
    }

    async fn update_record(
        &self,
        scope: &RecordScope<'_>,
        id: &RecordId,
        doc: &serde_json::Value,
        at: Timestamp,
    ) -> Result<bool> {
        self.breaker
            .run(self.inner.update_record(scope, id, doc, at))
            .await
    }

    async fn delete_record(&self, scope: &RecordScope<'_>, id: &RecordId) -> Result<bool> {
        self.breaker.run(self.inner.delete_record(scope, id)).await
    }

    async fn list_resources(&self, account_id: &AccountId) -> Result<Vec<(String, i64)>> {
        self.breaker
            .run(self.inner.list_resources(account_id))
            .await
    }

    async fn insert_app(&self, app: &AppRow) -> Result<()> {
        self.breaker.run(self.inner.insert_app(app)).await
    }

    async fn find_app(&self, client_id: &ClientId) -> Result<Option<AppRow>> {
        self.breaker.run(self.inner.find_app(client_id)).await
    }

    async fn list_apps(&self, account_id: &AccountId) -> Result<Vec<AppRow>> {
        self.breaker.run(self.inner.list_apps(account_id)).await
    }

    async fn live_app_origins(&self) -> Result<Vec<Strings>> {
        self.breaker.run(self.inner.live_app_origins()).await
    }

    async fn insert_user(&self, user: &UserRow) -> Result<()> {
        self.breaker.run(self.inner.insert_user(user)).await
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRow>> {
        self.breaker.run(self.inner.find_user_by_email(email)).await
    }

    async fn find_user(&self, id: &UserId) -> Result<Option<UserRow>> {
        self.breaker.run(self.inner.find_user(id)).await
    }

    async fn update_app(
        &self,
        account_id: Option<&AccountId>,
        client_id: &ClientId,
        edit: &AppEdit,
        at: Timestamp,
    ) -> Result<bool> {
        self.breaker
            .run(self.inner.update_app(account_id, client_id, edit, at))
            .await
    }

    async fn set_app_links(
        &self,
        account_id: Option<&AccountId>,
        client_id: &ClientId,
        links: &AppLinks,
        at: Timestamp,
    ) -> Result<bool> {
        self.breaker
            .run(self.inner.set_app_links(account_id, client_id, links, at))
            .await
    }

    async fn rotate_app_secret(
        &self,
        account_id: Option<&AccountId>,
        client_id: &ClientId,
        secret_hash: &str,
        previous_until: Option<Timestamp>,
        at: Timestamp,
    ) -> Result<bool> {
        self.breaker
            .run(self.inner.rotate_app_secret(
                account_id,
                client_id,
                secret_hash,
                previous_until,
                at,
            ))
            .await
    }

    async fn set_app_disabled(
        &self,
        account_id: Option<&AccountId>,
        client_id: &ClientId,
        disabled: bool,
        at: Timestamp,
    ) -> Result<bool> {
        self.breaker
            .run(
                self.inner
                    .set_app_disabled(account_id, client_id, disabled, at),
            )
            .await
    }

    async fn delete_app(
        &self,
        account_id: Option<&AccountId>,
        client_id: &ClientId,
        at: Timestamp,
    ) -> Result<bool> {
        self.breaker
            .run(self.inner.delete_app(account_id, client_id, at))
            .await
    }

    async fn list_users(&self, filter: &UserFilter<'_>) -> Result<Vec<UserRow>> {
        self.breaker.run(self.inner.list_users(filter)).await
    }

    async fn set_user_disabled(
        &self,
        user_id: &UserId,
        disabled: bool,
        at: Timestamp,
    ) -> Result<bool> {
        self.breaker
            .run(self.inner.set_user_disabled(user_id, disabled, at))
            .await
    }

    async fn delete_user(&self, user_id: &UserId, at: Timestamp) -> Result<bool> {
        self.breaker.run(self.inner.delete_user(user_id, at)).await
    }

    async fn remove_user_from_account(
        &self,
        account_id: &AccountId,
        user_id: &UserId,
        at: Timestamp,
    ) -> Result<u64> {
        self.breaker
            .run(self.inner.remove_user_from_account(account_id, user_id, at))
            .await
    }

    async fn change_user_password(
        &self,
        user_id: &UserId,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<()> {
        self.breaker
            .run(self.inner.change_user_password(user_id, password_hash, at))
            .await
    }

    async fn insert_user_login(&self, session: &UserLoginRow) -> Result<()> {
        self.breaker
            .run(self.inner.insert_user_login(session))
            .await
    }

    async fn find_user_login(&self, id_hash: &str, now: Timestamp) -> Result<Option<UserLoginRow>> {
        self.breaker
            .run(self.inner.find_user_login(id_hash, now))
            .await
    }

    async fn delete_user_login(&self, id_hash: &str) -> Result<()> {
        self.breaker
            .run(self.inner.delete_user_login(id_hash))
            .await
    }

    async fn delete_user_logins(&self, user_id: &UserId, except: Option<&str>) -> Result<u64> {
        self.breaker
            .run(self.inner.delete_user_logins(user_id, except))
            .await
    }

    async fn upsert_grant(&self, grant: &GrantRow) -> Result<GrantRow> {
        self.breaker.run(self.inner.upsert_grant(grant)).await
    }

    async fn find_grant(&self, user_id: &UserId, client_id: &ClientId) -> Result<Option<GrantRow>> {
        self.breaker
            .run(self.inner.find_grant(user_id, client_id))
            .await
    }

    async fn find_grant_by_id(&self, id: &GrantId) -> Result<Option<GrantRow>> {
        self.breaker.run(self.inner.find_grant_by_id(id)).await
    }

    async fn list_user_grants(&self, user_id: &UserId) -> Result<Vec<GrantRow>> {
        self.breaker.run(self.inner.list_user_grants(user_id)).await
    }

    async fn list_account_grants(&self, account_id: &AccountId) -> Result<Vec<GrantRow>> {
        self.breaker
            .run(self.inner.list_account_grants(account_id))
            .await
    }

    async fn revoke_grant(&self, id: &GrantId, at: Timestamp) -> Result<bool> {
        self.breaker.run(self.inner.revoke_grant(id, at)).await
    }

    async fn insert_auth_code(&self, code: &AuthCodeRow) -> Result<()> {
        self.breaker.run(self.inner.insert_auth_code(code)).await
    }

    async fn find_auth_code(&self, code_hash: &str) -> Result<Option<AuthCodeRow>> {
        self.breaker.run(self.inner.find_auth_code(code_hash)).await
    }

    async fn start_families(&self, items: &[NewFamily]) -> Result<Vec<bool>> {
        self.breaker.run(self.inner.start_families(items)).await
    }

    async fn find_family(&self, id: &FamilyId) -> Result<Option<FamilyRow>> {
        self.breaker.run(self.inner.find_family(id)).await
    }

    async fn find_refresh(&self, token_hash: &str) -> Result<Option<RefreshRow>> {
        self.breaker.run(self.inner.find_refresh(token_hash)).await
    }

    async fn find_refresh_session(&self, token_hash: &str) -> Result<Option<RefreshSession>> {
        self.breaker
            .run(self.inner.find_refresh_session(token_hash))
            .await
    }

    async fn rotate_refreshes(&self, items: &[Rotation]) -> Result<Vec<bool>> {
        self.breaker.run(self.inner.rotate_refreshes(items)).await
    }

    async fn revoke_family(&self, id: &FamilyId, at: Timestamp) -> Result<bool> {
        self.breaker.run(self.inner.revoke_family(id, at)).await
    }

    async fn revoke_user_families(
        &self,
        user_id: &UserId,
        client_id: Option<&ClientId>,
        at: Timestamp,
    ) -> Result<u64> {
        self.breaker
            .run(self.inner.revoke_user_families(user_id, client_id, at))
            .await
    }

    async fn revoked_families_since(&self, since: Timestamp) -> Result<Vec<(FamilyId, Timestamp)>> {
        self.breaker
            .run(self.inner.revoked_families_since(since))
            .await
    }

    async fn clear_sealed_refresh(&self, before: Timestamp) -> Result<()> {
        self.breaker
            .run(self.inner.clear_sealed_refresh(before))
            .await
    }

    async fn insert_owner_login(&self, session: &OwnerLoginRow) -> Result<()> {
        self.breaker
            .run(self.inner.insert_owner_login(session))
            .await
    }

    async fn find_owner_login(
        &self,
        id_hash: &str,
        now: Timestamp,
    ) -> Result<Option<OwnerLoginRow>> {
        self.breaker
            .run(self.inner.find_owner_login(id_hash, now))
            .await
    }

    async fn delete_owner_login(&self, id_hash: &str) -> Result<()> {
        self.breaker
            .run(self.inner.delete_owner_login(id_hash))
            .await
    }

    async fn list_owner_logins(
        &self,
        owner_id: &OwnerId,
        now: Timestamp,
    ) -> Result<Vec<OwnerLoginRow>> {
        self.breaker
            .run(self.inner.list_owner_logins(owner_id, now))
            .await
    }

    async fn delete_owner_login_of(&self, owner_id: &OwnerId, id_hash: &str) -> Result<bool> {
        self.breaker
            .run(self.inner.delete_owner_login_of(owner_id, id_hash))
            .await
    }

    async fn delete_owner_logins(&self, owner_id: &OwnerId, except: Option<&str>) -> Result<u64> {
        self.breaker
            .run(self.inner.delete_owner_logins(owner_id, except))
            .await
    }

    async fn change_owner_password(
        &self,
        owner_id: &OwnerId,
        password_hash: &str,
        keep: Option<&str>,
    ) -> Result<Option<u64>> {
        self.breaker
            .run(
                self.inner
                    .change_owner_password(owner_id, password_hash, keep),
            )
            .await
    }

    async fn set_require_verified_users(&self, account_id: &AccountId, on: bool) -> Result<bool> {
        self.breaker
            .run(self.inner.set_require_verified_users(account_id, on))
            .await
    }

    async fn insert_email_link(&self, link: &EmailLinkRow) -> Result<()> {
        self.breaker.run(self.inner.insert_email_link(link)).await
    }

    async fn find_email_link(
        &self,
        token_hash: &str,
        purpose: LinkPurpose,
        now: Timestamp,
    ) -> Result<Option<EmailLinkRow>> {
        self.breaker
            .run(self.inner.find_email_link(token_hash, purpose, now))
            .await
    }

    async fn use_verify_link(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<EmailLinkRow>> {
        self.breaker
            .run(self.inner.use_verify_link(token_hash, now))
            .await
    }

    async fn use_reset_link(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<Option<EmailLinkRow>> {
        self.breaker
            .run(self.inner.use_reset_link(token_hash, password_hash, now))
            .await
    }

    async fn use_change_email_link(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<EmailLinkRow>> {
        self.breaker
            .run(self.inner.use_change_email_link(token_hash, now))
            .await
    }

    async fn prune_expired(&self, now: Timestamp) -> Result<()> {
        self.breaker.run(self.inner.prune_expired(now)).await
    }

    async fn changes_since(&self, since: Timestamp) -> Result<Vec<Change>> {
        self.breaker.run(self.inner.changes_since(since)).await
    }

    async fn prune_changes(&self, before: Timestamp) -> Result<()> {
        self.breaker.run(self.inner.prune_changes(before)).await
    }

    async fn find_account_vault(&self, account_id: &AccountId) -> Result<Option<AccountVaultRow>> {
        self.breaker
            .run(self.inner.find_account_vault(account_id))
            .await
    }

    async fn init_account_vault(&self, vault: &AccountVaultRow) -> Result<AccountVaultRow> {
        self.breaker.run(self.inner.init_account_vault(vault)).await
    }

    async fn set_sensitive_fields(
        &self,
        account_id: &AccountId,
        fields: &Strings,
        at: Timestamp,
    ) -> Result<bool> {
        self.breaker
            .run(self.inner.set_sensitive_fields(account_id, fields, at))
            .await
    }

    async fn list_account_vaults(&self) -> Result<Vec<AccountVaultRow>> {
        self.breaker.run(self.inner.list_account_vaults()).await
    }

    async fn sealed_refresh_answers(&self) -> Result<Vec<(String, String)>> {
        self.breaker.run(self.inner.sealed_refresh_answers()).await
    }

    async fn write_resealed(&self, resealed: &Resealed) -> Result<()> {
        self.breaker.run(self.inner.write_resealed(resealed)).await
    }

    async fn insert_audit_events(&self, events: &[AuditEventRow]) -> Result<()> {
        self.breaker
            .run(self.inner.insert_audit_events(events))
            .await
    }

    async fn list_audit_events(
        &self,
        filter: &AuditFilter<'_>,
    ) -> Result<(Vec<AuditEventRow>, u64)> {
        self.breaker.run(self.inner.list_audit_events(filter)).await
    }

    async fn get_setting(&self, name: &str) -> Result<Option<String>> {
        self.breaker.run(self.inner.get_setting(name)).await
    }

    async fn init_setting(&self, name: &str, value: &str) -> Result<String> {
        self.breaker.run(self.inner.init_setting(name, value)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A breaker whose probe answers as `reachable` says, counting its attempts.
    fn breaker(reachable: Arc<AtomicBool>, probes: Arc<AtomicUsize>) -> Arc<Breaker> {
        let timeouts = Timeouts {
            operation: Duration::from_millis(100),
            connect: Duration::from_millis(100),
            probe_interval: Duration::from_millis(20),
        };
        Breaker::new(
            timeouts,
            Box::new(move || {
                probes.fetch_add(1, Ordering::SeqCst);
                let up = reachable.load(Ordering::SeqCst);
                Box::pin(async move {
                    if up {
                        Ok(())
                    } else {
                        Err(sqlx::Error::Io(
                            std::io::ErrorKind::ConnectionRefused.into(),
                        ))
                    }
                })
            }),
        )
    }

    fn refused() -> StoreError {
        sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()).into()
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..200 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("never {what}");
    }

    #[tokio::test]
    async fn statement_errors_never_count() {
        let probes = Arc::new(AtomicUsize::new(0));
        let b = breaker(Arc::new(AtomicBool::new(false)), probes.clone());
        for _ in 0..10 {
            let err = b
                .run(async { Err::<(), _>(StoreError::Conflict("email")) })
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Conflict("email")));
            let err = b
                .run(async { Err::<(), _>(sqlx::Error::RowNotFound.into()) })
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Database(_)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(probes.load(Ordering::SeqCst), 0);
        assert!(!b.is_down());
        assert!(b.keep_connection(Duration::from_secs(3600)));
    }

    #[tokio::test]
    async fn a_failure_the_probe_confirms_fails_calls_fast_until_the_probe_succeeds() {
        let reachable = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(AtomicUsize::new(0));
        let b = breaker(reachable.clone(), probes.clone());
        assert!(b.run(async { Err::<(), _>(refused()) }).await.is_err());
        until("down", || b.is_down()).await;

        // Refused without being tried, at once.
        let tried = AtomicBool::new(false);
        let err = b
            .run(async {
                tried.store(true, Ordering::SeqCst);
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(err.is_known_outage(), "{err}");
        assert!(!tried.load(Ordering::SeqCst));
        assert!(!b.keep_connection(Duration::ZERO));

        // Probed again and again, one at a time, until the database answers.
        until("probed three times", || probes.load(Ordering::SeqCst) >= 3).await;
        reachable.store(true, Ordering::SeqCst);
        until("up", || !b.is_down()).await;
        assert_eq!(b.run(async { Ok(7) }).await.unwrap(), 7);
        let settled = probes.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(probes.load(Ordering::SeqCst), settled, "probing stopped");
        // Connections made before the outage are not trusted; new ones are.
        assert!(!b.keep_connection(Duration::from_secs(3600)));
        assert!(b.keep_connection(Duration::ZERO));
    }

    #[tokio::test]
    async fn a_failure_the_probe_refutes_changes_nothing() {
        let probes = Arc::new(AtomicUsize::new(0));
        let b = breaker(Arc::new(AtomicBool::new(true)), probes.clone());
        assert!(b.run(async { Err::<(), _>(refused()) }).await.is_err());
        until("probed", || probes.load(Ordering::SeqCst) == 1).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!b.is_down());
        assert!(b.run(async { Ok(()) }).await.is_ok());
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_abandoned_and_counts() {
        let probes = Arc::new(AtomicUsize::new(0));
        let b = breaker(Arc::new(AtomicBool::new(false)), probes.clone());
        let start = Instant::now();
        let err = b
            .run(std::future::pending::<Result<()>>())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable(Unreachable::TimedOut(_))),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_millis(500));
        until("down", || b.is_down()).await;
    }

    #[tokio::test]
    async fn hung_probes_do_not_delay_finding_the_database_back() {
        // 1: hangs (a black hole), 2: answers.
        let state = Arc::new(std::sync::atomic::AtomicU8::new(1));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (probe_state, probe_flight) = (state.clone(), in_flight.clone());
        let b = Breaker::new(
            Timeouts {
                operation: Duration::from_millis(100),
                connect: Duration::from_millis(200),
                probe_interval: Duration::from_millis(50),
            },
            Box::new(move || {
                let state = probe_state.load(Ordering::SeqCst);
                let flight = probe_flight.clone();
                Box::pin(async move {
                    match state {
                        1 => {
                            flight.fetch_add(1, Ordering::SeqCst);
                            std::future::pending().await
                        }
                        _ => Ok(()),
                    }
                })
            }),
        );
        // Down once the first probe gives up.
        assert!(b.run(async { Err::<(), _>(refused()) }).await.is_err());
        until("down", || b.is_down()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // New probes start as hung ones give up, never more than the cap at once.
        assert!(in_flight.load(Ordering::SeqCst) > MAX_PROBES_IN_FLIGHT);
        assert!(b.is_down());
        let back = Instant::now();
        state.store(2, Ordering::SeqCst);
        until("up", || !b.is_down()).await;
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "{:?}",
            back.elapsed()
        );
    }

    #[tokio::test]
    async fn the_probe_ends_with_the_store() {
        let probes = Arc::new(AtomicUsize::new(0));
        let b = breaker(Arc::new(AtomicBool::new(false)), probes.clone());
        assert!(b.run(async { Err::<(), _>(refused()) }).await.is_err());
        until("down", || b.is_down()).await;
        drop(b);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = probes.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(probes.load(Ordering::SeqCst), after);
    }
}
