//! Building and running the application. The binary and the tests build it the same way.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use keyfob_domain::time::Timestamp;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::auth::{AuthIndex, SyncHandle, spawn_sync};
use crate::config::Config;
use crate::crypto::{CHECK_SETTING, MasterKey};
use crate::http;
use crate::logins::Logins;
use crate::passwords::Passwords;
use crate::services::signing_keys::ensure_signing_key;
use crate::state::{AppState, Shared};
use crate::tokens::{TokenRecorder, TokenService, load_key_set};
use crate::vault::Vault;

/// A built application: bound to its port, state loaded, ready to serve.
pub struct Application {
    listener: TcpListener,
    /// The shared lock on the SQLite database, held while serving (see `keyfob restore`).
    _database_lock: Option<std::fs::File>,
    /// The listener of `/metrics` alone, when it has an address of its own.
    metrics_listener: Option<TcpListener>,
    app: http::App,
    limits: http::serve::Limits,
    state: AppState,
    sync: SyncHandle,
}

/// The process-wide metrics recorder (tests build several applications in one process).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                crate::measures::describe();
            }
            let upkeep = handle.clone();
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// The SHA-256 of the bearer token in `path` (its first line, at least 16 characters).
fn read_metrics_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the metrics token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.len() < 16 {
        anyhow::bail!(
            "the metrics token in {} is shorter than 16 characters",
            path.display()
        );
    }
    Ok(keyfob_domain::secret::hash_secret(token))
}

/// Opens the store, checks the master key and makes the first signing key if needed.
pub async fn open_storage(
    config: &Config,
) -> anyhow::Result<(Arc<dyn keyfob_store::Store>, MasterKey)> {
    if config.database_url.starts_with("sqlite:") || !config.database_url.contains("://") {
        private_dir(&config.data_dir)?;
    }
    let store = keyfob_store::open(&config.database_url, config.database_timeouts)
        .await
        .with_context(|| "cannot open the database")?;
    let master = match (&config.master_key_hex, &config.master_key_file) {
        (Some(_), Some(_)) => anyhow::bail!(
            "the master key is given twice: use either --master-key-file (KEYFOB_MASTER_KEY_FILE) or KEYFOB_MASTER_KEY"
        ),
        (Some(hex), None) => MasterKey::from_hex(secrecy::ExposeSecret::expose_secret(hex))?,
        (None, Some(path)) => MasterKey::load(path)?,
        (None, None) => {
            private_dir(&config.data_dir)?;
            MasterKey::load_or_create(&config.master_key_path())?
        }
    };
    let stored = store
        .init_setting(CHECK_SETTING, &master.check_value())
        .await?;
    master.verify_check_value(&stored)?;
    ensure_signing_key(store.as_ref(), &master, config.signing_alg).await?;
    Ok((store, master))
}

/// Makes the data directory, readable by its owner only (0700): it holds the database and the
/// master key. One that exists already is left as it is, but reported if others may read it.
fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    if !dir.exists() {
        builder
            .create(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        return Ok(());
    }
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(dir) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %dir.display(),
                mode = format!("{mode:o}"),
                "the data directory can be read by other users; make it private (chmod 700)"
            );
        }
    }
    Ok(())
}

impl Application {
    pub async fn build(mut config: Config) -> anyhow::Result<Application> {
        // First, so that storage and connections alike get the raised limit.
        let open_files = http::serve::raise_open_file_limit();
        let database_lock = crate::cli::backup::hold_server_lock(&config)?;
        let (store, master) = open_storage(&config).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local = listener.local_addr()?;
        config.listen = local;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (metrics_listen)"))?;
                config.metrics_listen = Some(listener.local_addr()?);
                Some(listener)
            }
            None => None,
        };
        let metrics_token = match &config.metrics_token_file {
            Some(path) => Some(read_metrics_token(path)?),
            None => None,
        };
        if config.public_url.is_none() {
            config.public_url = Some(format!("http://{local}"));
        }
        let limits = http::serve::Limits::from_config(&config, open_files);
        let keys = load_key_set(&store.list_signing_keys().await?, &master, Timestamp::now())?;
        let master = Arc::new(master);
        let tokens = TokenService::new(
            keys,
            config.issuer(),
            config.audience.clone(),
            config.token_cache_bytes,
        );
        let state = AppState::new(Shared {
            recorder: TokenRecorder::spawn(store.clone()),
            audit: AuditLog::spawn(store.clone(), config.anonymous_audit_limit()),
            vault: Arc::new(Vault::new(store.clone(), master.clone())),
            writes: crate::sessions::SessionWrites::spawn(store.clone()),
            tokens: Arc::new(tokens),
            index: Arc::new(AuthIndex::new(config.key_lookups_per_second)),
            passwords: Passwords::new(config.password_workers),
            logins: Arc::new(Logins::new(&config, &master)),
            metrics: metrics_handle(),
            metrics_token,
            mail: crate::mail::Mailer::start(&config)?,
            passkeys: crate::passkeys::Ceremonies::default(),
            master,
            store,
            config: Arc::new(config.clone()),
        });
        let sync = spawn_sync(state.clone()).await?;
        let app = http::app(state.clone(), config.max_body_bytes);
        Ok(Application {
            _database_lock: database_lock,
            listener,
            metrics_listener,
            app,
            limits,
            state,
            sync,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.state.config.listen
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the process gets Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `stop` completes, then writes pending state and returns.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let metrics = self.metrics_listener.map(|listener| {
            let app = http::health::metrics_only(self.state.clone());
            tokio::spawn(async move {
                if let Err(err) = axum::serve(listener, app).await {
                    tracing::error!(error = %err, "the metrics listener stopped");
                }
            })
        });
        http::serve::serve(self.listener, self.app, self.limits, stop).await;
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        // The counts of throttled audit events are written before the node goes away.
        if let Err(err) = self.state.audit.close_anonymous_windows().await {
            tracing::error!(error = %err, "could not write the audit log's last summaries");
        }
        self.sync.stop().await;
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut sig) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            sig.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
