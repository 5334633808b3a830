//! What every handler shares.

use std::sync::Arc;

use keyfob_domain::time::Timestamp;
use keyfob_store::Store;

use crate::audit::AuditLog;
use crate::auth::AuthIndex;
use crate::config::Config;
use crate::crypto::MasterKey;
use crate::logins::Logins;
use crate::passwords::Passwords;
use crate::tokens::{TokenRecorder, TokenService, load_key_set};
use crate::vault::Vault;

/// Cloned for every request (by the router, once per layer): one reference count, however many
/// parts it holds.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub master: Arc<MasterKey>,
    pub tokens: Arc<TokenService>,
    pub recorder: TokenRecorder,
    pub audit: AuditLog,
    pub vault: Arc<Vault>,
    /// Session starts and refresh-token rotations, written in batches.
    pub writes: crate::sessions::SessionWrites,
    pub index: Arc<AuthIndex>,
    pub passwords: Passwords,
    /// Login budgets, device cookies and pre-login form tokens.
    pub logins: Arc<Logins>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// SHA-256 of the bearer token `/metrics` asks for, when one is set.
    pub metrics_token: Option<String>,
    /// The queue of outgoing mail.
    pub mail: crate::mail::Mailer,
    /// Passkey ceremonies in progress on this node.
    pub passkeys: crate::passkeys::Ceremonies,
}

impl Shared {
    /// The application with `client_id`, from the in-memory cache or else the database.
    pub async fn find_app(
        &self,
        client_id: &str,
    ) -> keyfob_store::Result<Option<keyfob_store::AppRow>> {
        if let Some(app) = self.index.app(client_id) {
            return Ok(Some(app));
        }
        let app = self.store.find_app(&client_id.into()).await?;
        if let Some(app) = &app {
            self.index.remember_app(app);
        }
        Ok(app)
    }

    /// Reloads the signing keys from the database (after a rotation on any node).
    pub async fn reload_signing_keys(&self) -> anyhow::Result<()> {
        let rows = self.store.list_signing_keys().await?;
        let keys = load_key_set(&rows, &self.master, Timestamp::now())?;
        self.tokens.replace_keys(keys);
        Ok(())
    }
}
