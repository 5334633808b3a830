//! Configuration: what the server runs with ([`Config`]), built from the table of settings in
//! [`settings`]: defaults, then an optional TOML file, then `KEYFOB_*` environment variables, then
//! flags. Secrets never appear in `Debug` output.

pub mod settings;

pub use settings::{Layers, Origin, Settings, without_password};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `From` of mail when `mail_from` is not set.
pub const DEFAULT_MAIL_FROM: &str = "Keyfob <keyfob@localhost>";

/// Which algorithm new signing keys use.
pub use keyfob_domain::signing::SigningAlg;

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The URL clients reach Keyfob at: the issuer of its tokens and the base of its links.
    /// Derived from the bound address when not given.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub signing_alg: SigningAlg,
    /// `aud` of every token.
    pub audience: String,
    pub token_default_days: i64,
    pub token_max_days: i64,
    pub signup_open: bool,
    /// Password hashes computed at once (each on its own blocking thread).
    pub password_workers: usize,
    /// How often each node reads the change feed (revocations, new keys).
    pub sync_interval_ms: u64,
    /// Most database reads per second for API keys this node does not know yet (made elsewhere a
    /// moment ago); over it, an unknown key is refused without a read, so random keys cannot
    /// flood the database.
    pub key_lookups_per_second: u32,
    /// How many nodes share the database: each enforces this share of an API key's rate limit
    /// (rounded up), so that together they allow about the key's limit.
    pub rate_limit_nodes: u32,
    pub max_body_bytes: usize,
    /// Failed password checks one client address may make per minute, whatever the email (and
    /// sign-ups per address per minute).
    pub login_attempts_per_minute: u32,
    /// Failed password checks for one email from one client address per 15 minutes.
    pub login_attempts_per_email_and_address: u32,
    /// Failed password checks for one email per hour from all clients without a device cookie
    /// for it together.
    pub login_attempts_per_email: u32,
    /// Failed password checks per 15 minutes from a browser with a device cookie for the email.
    pub login_attempts_per_device: u32,
    /// Events from unauthenticated clients (failed logins) an account's audit log takes from one
    /// client address per window; the rest are counted in one summary event.
    pub audit_anonymous_events: u32,
    /// That window, in seconds.
    pub audit_anonymous_window_secs: u64,
    /// How long a used refresh token, presented again, still gets the same new pair (seconds).
    pub refresh_grace_secs: i64,
    /// How often API-key last-used times are written (batched, never per request).
    pub last_used_flush_ms: u64,
    /// How often everything the verify path holds is reloaded from the database, as a safety net
    /// under the change feed.
    pub full_reload_ms: u64,
    /// PostgreSQL: the deadline of one database call, the wait for a connection, and how often a
    /// database found down is tried again (calls fail at once meanwhile).
    pub database_timeouts: keyfob_store::Timeouts,
    /// A hex master key given by the operator; otherwise read from `master_key_file`, or from
    /// `DATA_DIR/master.key`, made on first start.
    pub master_key_hex: Option<secrecy::SecretString>,
    /// A file holding the hex master key (kept out of the process list and the environment).
    pub master_key_file: Option<PathBuf>,
    /// How long a new signing key is published before it signs, in seconds.
    pub signing_key_publish_secs: i64,
    /// Load balancers and proxies in front of Keyfob: from these peers, the client's address is
    /// taken from `X-Forwarded-For` (see `keyfob_domain::net::client_ip`). Empty: the peer itself.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a client has to send a request's line and headers, counted from connecting, or
    /// on a kept-alive connection from the first byte of the next request.
    pub header_timeout: Duration,
    /// How long a client has to send a request's whole body, from when the server starts reading it.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (or a slow client take to
    /// read an answer) before it is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; beyond it, new connections wait to be accepted. `None`: derived
    /// from the open-file limit at start (see `http::serve::default_max_connections`).
    pub max_connections: Option<usize>,
    /// Connections one client address (an IPv6 /64) may hold at once; trusted proxies are exempt.
    pub max_connections_per_ip: usize,
    /// Memory for verified JWTs, in bytes (0: no cache, every request checks the signature).
    pub token_cache_bytes: u64,
    /// Log lines as JSON rather than text.
    pub log_json: bool,
    /// One log line per answer (target `keyfob::access`).
    pub access_log: bool,
    /// Serve `/metrics` on this address only (not on `listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// A file holding the bearer token `/metrics` asks for; `None`: no token asked.
    pub metrics_token_file: Option<PathBuf>,
    /// Where mail goes out; `None` writes every message to `DATA_DIR/outbox/` instead.
    pub smtp_url: Option<keyfob_domain::mail::SmtpUrl>,
    /// A PEM file of certificates to trust for the SMTP server besides the system's roots (a
    /// relay with a private CA).
    pub smtp_ca_file: Option<PathBuf>,
    /// The `From` of every message, `Name <address>` or an address.
    pub mail_from: String,
    /// Messages the mail-sending forms (sign-up, forgot password, verification, change of
    /// email) send per hour for one client address, and for one email address.
    pub mail_per_address_per_hour: u32,
    pub mail_per_email_per_hour: u32,
}

impl Config {
    /// How long a used refresh token still gets the same new pair.
    pub fn refresh_grace(&self) -> Duration {
        keyfob_domain::time::secs(self.refresh_grace_secs)
    }

    /// How often everything the verify path holds is reloaded.
    pub fn full_reload(&self) -> Duration {
        Duration::from_millis(self.full_reload_ms)
    }

    /// Defaults for a data directory: SQLite inside it, loopback on 8080.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let data_dir = data_dir.into();
        let listen: SocketAddr = "127.0.0.1:8080".parse().expect("valid address");
        Config {
            listen,
            public_url: None,
            database_url: default_database_url(&data_dir),
            data_dir,
            signing_alg: SigningAlg::EdDsa,
            audience: "keyfob".to_owned(),
            token_default_days: 365,
            token_max_days: 2 * 366,
            signup_open: true,
            password_workers: default_password_workers(),
            sync_interval_ms: 500,
            key_lookups_per_second: 20,
            rate_limit_nodes: 1,
            max_body_bytes: 64 * 1024,
            login_attempts_per_minute: 10,
            login_attempts_per_email_and_address: 5,
            login_attempts_per_email: 50,
            login_attempts_per_device: 10,
            audit_anonymous_events: 5,
            audit_anonymous_window_secs: 600,
            last_used_flush_ms: 5000,
            full_reload_ms: 60_000,
            database_timeouts: keyfob_store::Timeouts::default(),
            refresh_grace_secs: 30,
            master_key_hex: None,
            master_key_file: None,
            signing_key_publish_secs: 0,
            trusted_proxies: Vec::new(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections: None,
            max_connections_per_ip: 256,
            token_cache_bytes: crate::tokens::DEFAULT_CACHE_BYTES,
            log_json: false,
            access_log: false,
            metrics_listen: None,
            metrics_token_file: None,
            smtp_url: None,
            smtp_ca_file: None,
            mail_from: DEFAULT_MAIL_FROM.to_owned(),
            mail_per_address_per_hour: 20,
            mail_per_email_per_hour: 5,
        }
    }

    /// Sets the trusted proxies from addresses or networks (`10.0.0.0/8`, `192.0.2.7`).
    pub fn set_trusted_proxies<S: AsRef<str>>(&mut self, list: &[S]) -> anyhow::Result<()> {
        self.trusted_proxies = list
            .iter()
            .map(|s| keyfob_domain::net::parse_trusted(s.as_ref()))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("trusted proxies: {e}"))?;
        Ok(())
    }

    /// The public URL without a trailing slash: the `iss` of every token.
    pub fn issuer(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// The file the master key is read from when it is not given as a value: `master_key_file`,
    /// or `DATA_DIR/master.key` (made on first start).
    pub fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    /// How many events from unauthenticated clients the audit log takes per account and address.
    pub fn anonymous_audit_limit(&self) -> crate::audit::AnonymousLimit {
        crate::audit::AnonymousLimit {
            events: self.audit_anonymous_events,
            window: std::time::Duration::from_secs(self.audit_anonymous_window_secs.max(1)),
        }
    }

    /// Whether cookies must be `Secure` (served over HTTPS).
    pub fn secure_cookies(&self) -> bool {
        self.issuer().starts_with("https://")
    }
}

/// SQLite at `DIR/keyfob.db`.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("keyfob.db").display())
}

/// Half the cores, at least one: password hashing must leave room for token checks.
fn default_password_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| (n.get() / 2).max(1))
        .unwrap_or(1)
}
