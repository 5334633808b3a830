//! The table of settings. Each one can be given in the `--config` TOML file, as a `KEYFOB_*`
//! environment variable and as a flag, each source over the one before it and all over the
//! default. The sources are merged first and the result is checked once, here, so that a value
//! out of range is refused with the place it came from rather than clamped.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Config, SigningAlg, default_database_url};

/// Where the data lives when `data_dir` is not given.
pub const DEFAULT_DATA_DIR: &str = "./keyfob-data";

/// Every setting, as one source gives it: `None` where that source says nothing. The field names
/// are the TOML keys; each flag and variable is named in its `#[arg]`. Flags are global, so they
/// may stand before or after the subcommand.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(deny_unknown_fields)]
#[rustfmt::skip] // one line per setting's names, so that the struct reads as a table
#[command(next_help_heading = "Settings (each also a --config key and a KEYFOB_* variable)")]
pub struct Settings {
    /// Where the SQLite database and the master key live [default: ./keyfob-data].
    #[arg(long, global = true, env = "KEYFOB_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `postgres://…` for PostgreSQL [default: SQLite at DATA_DIR/keyfob.db].
    #[arg(long, global = true, env = "KEYFOB_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// PostgreSQL: the longest one database call may take before it is abandoned with a 503 [default: 5000].
    #[arg(long, global = true, env = "KEYFOB_DATABASE_TIMEOUT_MS", value_name = "MS")]
    pub database_timeout_ms: Option<u64>,
    /// PostgreSQL: the longest a call waits for a connection, and a probe for its answer [default: 2000].
    #[arg(long, global = true, env = "KEYFOB_DATABASE_CONNECT_TIMEOUT_MS", value_name = "MS")]
    pub database_connect_timeout_ms: Option<u64>,
    /// PostgreSQL: while the database is down, how often it is tried again [default: 500].
    #[arg(long, global = true, env = "KEYFOB_DATABASE_PROBE_INTERVAL_MS", value_name = "MS")]
    pub database_probe_interval_ms: Option<u64>,
    /// A file holding the master key (64 hex characters), readable by Keyfob's user only.
    #[arg(long, global = true, env = "KEYFOB_MASTER_KEY_FILE", value_name = "PATH")]
    pub master_key_file: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, global = true, env = "KEYFOB_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The URL clients reach Keyfob at (the tokens' issuer) [default: http://LISTEN].
    #[arg(long, global = true, env = "KEYFOB_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Algorithm of new signing keys [default: EdDSA].
    #[arg(long, global = true, env = "KEYFOB_SIGNING_ALG")]
    pub signing_alg: Option<SigningAlg>,
    /// The tokens' `aud` [default: keyfob].
    #[arg(long, global = true, env = "KEYFOB_AUDIENCE", value_name = "AUD")]
    pub audience: Option<String>,
    /// Lifetime of a minted token without `expires` [default: 365].
    #[arg(long, global = true, env = "KEYFOB_TOKEN_DEFAULT_DAYS", value_name = "DAYS")]
    pub token_default_days: Option<i64>,
    /// The furthest a minted token's `expires` may be [default: 732].
    #[arg(long, global = true, env = "KEYFOB_TOKEN_MAX_DAYS", value_name = "DAYS")]
    pub token_max_days: Option<i64>,
    /// Whether anyone may sign up on the dashboard [default: true].
    #[arg(long, global = true, env = "KEYFOB_SIGNUP_OPEN", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub signup_open: Option<bool>,
    /// Password hashes computed at once [default: half the cores].
    #[arg(long, global = true, env = "KEYFOB_PASSWORD_WORKERS", value_name = "N")]
    pub password_workers: Option<usize>,
    /// How often a node reads the change feed (revocations) [default: 500].
    #[arg(long, global = true, env = "KEYFOB_SYNC_INTERVAL_MS", value_name = "MS")]
    pub sync_interval_ms: Option<u64>,
    /// Most database reads per second for API keys the node does not know yet [default: 20].
    #[arg(long, global = true, env = "KEYFOB_KEY_LOOKUPS_PER_SECOND", value_name = "N")]
    pub key_lookups_per_second: Option<u32>,
    /// How many nodes serve together: each enforces 1/N of an API key's rate limit [default: 1].
    #[arg(long, global = true, env = "KEYFOB_RATE_LIMIT_NODES", value_name = "N")]
    pub rate_limit_nodes: Option<u32>,
    /// Largest request body [default: 65536].
    #[arg(long, global = true, env = "KEYFOB_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Failed password checks (and sign-ups) per client address per minute [default: 10].
    #[arg(long, global = true, env = "KEYFOB_LOGIN_ATTEMPTS_PER_MINUTE", value_name = "N")]
    pub login_attempts_per_minute: Option<u32>,
    /// Failed password checks for one email from one address per 15 minutes [default: 5].
    #[arg(long, global = true, env = "KEYFOB_LOGIN_ATTEMPTS_PER_EMAIL_AND_ADDRESS", value_name = "N")]
    pub login_attempts_per_email_and_address: Option<u32>,
    /// Failed password checks for one email per hour, from browsers without its device cookie [default: 50].
    #[arg(long, global = true, env = "KEYFOB_LOGIN_ATTEMPTS_PER_EMAIL", value_name = "N")]
    pub login_attempts_per_email: Option<u32>,
    /// Failed password checks per 15 minutes from a browser with the email's device cookie [default: 10].
    #[arg(long, global = true, env = "KEYFOB_LOGIN_ATTEMPTS_PER_DEVICE", value_name = "N")]
    pub login_attempts_per_device: Option<u32>,
    /// Failed logins one account's audit log takes from one address per window [default: 5].
    #[arg(long, global = true, env = "KEYFOB_AUDIT_ANONYMOUS_EVENTS", value_name = "N")]
    pub audit_anonymous_events: Option<u32>,
    /// That window [default: 600].
    #[arg(long, global = true, env = "KEYFOB_AUDIT_ANONYMOUS_WINDOW_SECS", value_name = "SECS")]
    pub audit_anonymous_window_secs: Option<u64>,
    /// How long a used refresh token, presented again, still gets the same new pair [default: 30].
    #[arg(long, global = true, env = "KEYFOB_REFRESH_GRACE_SECS", value_name = "SECS")]
    pub refresh_grace_secs: Option<i64>,
    /// Memory for verified JWTs; 0 turns the cache off [default: 8388608].
    #[arg(long, global = true, env = "KEYFOB_TOKEN_CACHE_BYTES", value_name = "BYTES")]
    pub token_cache_bytes: Option<u64>,
    /// A load balancer or proxy (address or network, e.g. 10.0.0.0/8) whose X-Forwarded-For is
    /// believed for the client's address; repeat, or comma-separate in the variable.
    #[arg(long = "trusted-proxy", global = true, env = "KEYFOB_TRUSTED_PROXIES", value_delimiter = ',', value_name = "NET")]
    pub trusted_proxies: Option<Vec<String>>,
    /// Time a client has to send a request line and headers [default: 10].
    #[arg(long, global = true, env = "KEYFOB_HEADER_TIMEOUT_SECS", value_name = "SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Time a client has to send a whole request body [default: 30].
    #[arg(long, global = true, env = "KEYFOB_BODY_TIMEOUT_SECS", value_name = "SECS")]
    pub body_timeout_secs: Option<u64>,
    /// How long a kept-alive connection may wait for its next request [default: 75].
    #[arg(long, global = true, env = "KEYFOB_IDLE_TIMEOUT_SECS", value_name = "SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Connections served at once [default: from the open-file limit, at most 10000].
    #[arg(long, global = true, env = "KEYFOB_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections one client address (an IPv6 /64) may hold [default: 256].
    #[arg(long, global = true, env = "KEYFOB_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Log lines as JSON, one object per line (logs go to stderr; `KEYFOB_LOG` filters them)
    /// [default: false].
    #[arg(long, global = true, env = "KEYFOB_LOG_JSON", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub log_json: Option<bool>,
    /// One log line per answer: method, route, status, latency, request id, account and kind of
    /// credential (target `keyfob::access`) [default: false].
    #[arg(long, global = true, env = "KEYFOB_ACCESS_LOG", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub access_log: Option<bool>,
    /// Serve `/metrics` on this address instead of on LISTEN (e.g. 127.0.0.1:9090).
    #[arg(long, global = true, env = "KEYFOB_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// A file holding a bearer token (at least 16 characters) that `/metrics` then asks for.
    #[arg(long, global = true, env = "KEYFOB_METRICS_TOKEN_FILE", value_name = "PATH")]
    pub metrics_token_file: Option<PathBuf>,
    /// Where mail goes out: `smtp://[user:password@]host[:port]` (STARTTLS when offered;
    /// `?tls=required` or `?tls=none`) or `smtps://…` (TLS from the start) [default: none: mail is
    /// written to DATA_DIR/outbox/ and its link logged].
    #[arg(long, global = true, env = "KEYFOB_SMTP_URL", value_name = "URL")]
    pub smtp_url: Option<String>,
    /// A PEM file of certificates to trust for the SMTP server, besides the system's roots.
    #[arg(long, global = true, env = "KEYFOB_SMTP_CA_FILE", value_name = "PATH")]
    pub smtp_ca_file: Option<PathBuf>,
    /// The sender of every message, `Name <address>` or an address [default: Keyfob <keyfob@localhost>].
    #[arg(long, global = true, env = "KEYFOB_MAIL_FROM", value_name = "MAILBOX")]
    pub mail_from: Option<String>,
    /// Messages the mail-sending forms send per hour for one client address [default: 20].
    #[arg(long, global = true, env = "KEYFOB_MAIL_PER_ADDRESS_PER_HOUR", value_name = "N")]
    pub mail_per_address_per_hour: Option<u32>,
    /// Messages the mail-sending forms send per hour to one email address [default: 5].
    #[arg(long, global = true, env = "KEYFOB_MAIL_PER_EMAIL_PER_HOUR", value_name = "N")]
    pub mail_per_email_per_hour: Option<u32>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// The `--config` file, by the path it was given as.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A flag, as `--name`.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) | Origin::Flag(name) => f.write_str(name),
        }
    }
}

/// The settings merged so far, with where each value came from.
#[derive(Debug, Default)]
pub struct Layers {
    values: Map<String, Value>,
    origins: HashMap<String, Origin>,
}

impl Layers {
    pub fn new() -> Self {
        Layers::default()
    }

    /// Lays the TOML file's settings over what is there. An unknown key is refused.
    pub fn add_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let settings: Settings = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        self.add(&settings, |_| Origin::File(path.to_owned()))
    }

    /// Lays the environment's and the command line's settings, as clap read them into `settings`,
    /// over what is there; `matches` tells a variable from a flag.
    pub fn add_command_line(
        &mut self,
        settings: &Settings,
        matches: &ArgMatches,
    ) -> anyhow::Result<()> {
        let table = table();
        self.add(settings, |key| {
            let arg = table
                .get_arguments()
                .find(|a| a.get_id() == key)
                .expect("every field of Settings is an argument");
            match value_source(matches, key) {
                Some(ValueSource::EnvVariable) => Origin::Env(
                    arg.get_env()
                        .expect("every setting has a variable")
                        .to_string_lossy()
                        .into_owned(),
                ),
                _ => Origin::Flag(format!(
                    "--{}",
                    arg.get_long().expect("every setting has a flag")
                )),
            }
        })
    }

    fn add(&mut self, settings: &Settings, origin: impl Fn(&str) -> Origin) -> anyhow::Result<()> {
        let Value::Object(given) = serde_json::to_value(settings)? else {
            bail!("settings are not a table");
        };
        for (key, value) in given {
            if value.is_null() {
                continue;
            }
            self.origins.insert(key.clone(), origin(&key));
            self.values.insert(key, value);
        }
        Ok(())
    }

    /// The merged settings, checked, as the server's configuration.
    pub fn build(&self) -> anyhow::Result<Config> {
        let settings: Settings = serde_json::from_value(Value::Object(self.values.clone()))
            .context("merging the settings")?;
        Check { layers: self }.config(settings)
    }

    /// Where `key`'s value came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// Each setting in force, in the table's order, as a TOML line with where it came from in a
    /// comment (`# key (not set)` for one without a value). The password of a database URL is
    /// hidden.
    pub fn describe(&self, config: &Config) -> anyhow::Result<Vec<String>> {
        let Value::Object(values) = serde_json::to_value(Settings::of(config))? else {
            bail!("settings are not a table");
        };
        let mut lines = Vec::new();
        for arg in table().get_arguments() {
            let key = arg.get_id().as_str();
            let origin = self.origin(key);
            match values.get(key) {
                None | Some(Value::Null) => lines.push(format!("# {key} (not set)")),
                Some(value) => {
                    let mut value = toml::Value::try_from(value)
                        .with_context(|| format!("{key} as TOML"))?
                        .to_string();
                    if key == "database_url" || key == "smtp_url" {
                        value = without_password(&value);
                    }
                    lines.push(format!("{key} = {value}  # {origin}"));
                }
            }
        }
        Ok(lines)
    }
}

/// The settings as a clap command of their own: the names of each one's flag and variable.
fn table() -> clap::Command {
    Settings::augment_args(clap::Command::new("settings"))
}

/// How `id` was given: looked up in `matches` and in its subcommands' (a global argument may be
/// given after the subcommand), a flag first.
fn value_source(matches: &ArgMatches, id: &str) -> Option<ValueSource> {
    let here = matches
        .try_get_raw(id)
        .ok()
        .flatten()
        .and_then(|_| matches.value_source(id));
    let below = matches
        .subcommand()
        .and_then(|(_, sub)| value_source(sub, id));
    match (here, below) {
        (Some(ValueSource::CommandLine), _) | (_, Some(ValueSource::CommandLine)) => {
            Some(ValueSource::CommandLine)
        }
        (Some(ValueSource::EnvVariable), _) | (_, Some(ValueSource::EnvVariable)) => {
            Some(ValueSource::EnvVariable)
        }
        (here, below) => here.or(below),
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`.
pub fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..authority_end]
        .rfind('@')
        .map(|i| scheme_end + i)
    else {
        return url.to_owned();
    };
    match url[scheme_end..at].find(':').map(|i| scheme_end + i) {
        Some(colon) => format!("{}:***{}", &url[..colon], &url[at..]),
        None => url.to_owned(),
    }
}

/// A setting's allowed values.
#[derive(Clone, Copy)]
enum Range<T> {
    AtLeast(T),
    Between(T, T),
}

impl<T: PartialOrd + fmt::Display + Copy> Range<T> {
    fn holds(self, value: T) -> bool {
        match self {
            Range::AtLeast(min) => value >= min,
            Range::Between(min, max) => value >= min && value <= max,
        }
    }
}

impl<T: fmt::Display> fmt::Display for Range<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Range::AtLeast(min) => write!(f, "at least {min}"),
            Range::Between(min, max) => write!(f, "from {min} to {max}"),
        }
    }
}

/// The one place settings are checked and turned into a [`Config`].
struct Check<'a> {
    layers: &'a Layers,
}

impl Check<'_> {
    /// `key` as its source names it: `KEYFOB_X`, `--x`, or `FILE: x`.
    fn name(&self, key: &str) -> String {
        match self.layers.origin(key) {
            Origin::File(path) => format!("{}: {key}", path.display()),
            Origin::Env(name) | Origin::Flag(name) => name,
            Origin::Default => key.to_owned(),
        }
    }

    fn refuse(&self, key: &str, why: impl fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}: {why}", self.name(key))
    }

    fn within<T: PartialOrd + fmt::Display + Copy>(
        &self,
        key: &str,
        value: Option<T>,
        range: Range<T>,
    ) -> anyhow::Result<Option<T>> {
        match value {
            Some(v) if !range.holds(v) => Err(self.refuse(key, format!("must be {range}"))),
            _ => Ok(value),
        }
    }

    fn config(&self, settings: Settings) -> anyhow::Result<Config> {
        use Range::{AtLeast, Between};
        // Taken apart whole, so that a setting added to the table does not compile until it is
        // applied here.
        let Settings {
            data_dir,
            database_url,
            database_timeout_ms,
            database_connect_timeout_ms,
            database_probe_interval_ms,
            master_key_file,
            listen,
            public_url,
            signing_alg,
            audience,
            token_default_days,
            token_max_days,
            signup_open,
            password_workers,
            sync_interval_ms,
            key_lookups_per_second,
            rate_limit_nodes,
            max_body_bytes,
            login_attempts_per_minute,
            login_attempts_per_email_and_address,
            login_attempts_per_email,
            login_attempts_per_device,
            audit_anonymous_events,
            audit_anonymous_window_secs,
            refresh_grace_secs,
            token_cache_bytes,
            trusted_proxies,
            header_timeout_secs,
            body_timeout_secs,
            idle_timeout_secs,
            max_connections,
            max_connections_per_ip,
            log_json,
            access_log,
            metrics_listen,
            metrics_token_file,
            smtp_url,
            smtp_ca_file,
            mail_from,
            mail_per_address_per_hour,
            mail_per_email_per_hour,
        } = settings;

        let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut c = Config::for_data_dir(&data_dir);
        match database_url {
            Some(url) if !url.is_empty() => c.database_url = url,
            _ => c.database_url = default_database_url(&data_dir),
        }
        let db = &mut c.database_timeouts;
        let ms = Duration::from_millis;
        if let Some(v) = self.within(
            "database_timeout_ms",
            database_timeout_ms,
            Between(100, 600_000),
        )? {
            db.operation = ms(v);
        }
        if let Some(v) = self.within(
            "database_connect_timeout_ms",
            database_connect_timeout_ms,
            Between(100, 60_000),
        )? {
            db.connect = ms(v);
        }
        if let Some(v) = self.within(
            "database_probe_interval_ms",
            database_probe_interval_ms,
            Between(50, 60_000),
        )? {
            db.probe_interval = ms(v);
        }
        c.master_key_file = master_key_file;

        if let Some(v) = listen {
            c.listen = v;
        }
        if let Some(url) = public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(self.refuse("public_url", "must start with http:// or https://"));
            }
            c.public_url = Some(url);
        }
        if let Some(v) = signing_alg {
            c.signing_alg = v;
        }
        if let Some(v) = audience {
            if v.trim().is_empty() {
                return Err(self.refuse("audience", "must not be empty"));
            }
            c.audience = v;
        }
        if let Some(v) = self.within("token_max_days", token_max_days, Between(1, 36_600))? {
            c.token_max_days = v;
        }
        let longest = c.token_max_days;
        if let Some(v) = self.within(
            "token_default_days",
            token_default_days,
            Between(1, longest),
        )? {
            c.token_default_days = v;
        }
        if c.token_default_days > c.token_max_days {
            // Only the maximum was given, below the default lifetime.
            return Err(self.refuse(
                "token_max_days",
                format!(
                    "must be at least token_default_days ({})",
                    c.token_default_days
                ),
            ));
        }
        if let Some(v) = signup_open {
            c.signup_open = v;
        }
        if let Some(v) = self.within("password_workers", password_workers, AtLeast(1))? {
            c.password_workers = v;
        }
        if let Some(v) = self.within("sync_interval_ms", sync_interval_ms, Between(50, 2000))? {
            c.sync_interval_ms = v;
        }
        if let Some(v) =
            self.within("key_lookups_per_second", key_lookups_per_second, AtLeast(1))?
        {
            c.key_lookups_per_second = v;
        }
        if let Some(v) = self.within("rate_limit_nodes", rate_limit_nodes, Between(1, 1000))? {
            c.rate_limit_nodes = v;
        }
        if let Some(v) = self.within("max_body_bytes", max_body_bytes, AtLeast(1))? {
            c.max_body_bytes = v;
        }
        if let Some(v) = self.within(
            "login_attempts_per_minute",
            login_attempts_per_minute,
            AtLeast(1),
        )? {
            c.login_attempts_per_minute = v;
        }
        if let Some(v) = self.within(
            "login_attempts_per_email_and_address",
            login_attempts_per_email_and_address,
            AtLeast(1),
        )? {
            c.login_attempts_per_email_and_address = v;
        }
        if let Some(v) = self.within(
            "login_attempts_per_email",
            login_attempts_per_email,
            AtLeast(1),
        )? {
            c.login_attempts_per_email = v;
        }
        if let Some(v) = self.within(
            "login_attempts_per_device",
            login_attempts_per_device,
            AtLeast(1),
        )? {
            c.login_attempts_per_device = v;
        }
        if let Some(v) = audit_anonymous_events {
            c.audit_anonymous_events = v;
        }
        if let Some(v) = self.within(
            "audit_anonymous_window_secs",
            audit_anonymous_window_secs,
            Between(1, 86_400),
        )? {
            c.audit_anonymous_window_secs = v;
        }
        if let Some(v) = self.within("refresh_grace_secs", refresh_grace_secs, Between(0, 600))? {
            c.refresh_grace_secs = v;
        }
        if let Some(v) = token_cache_bytes {
            c.token_cache_bytes = v;
        }
        if let Some(list) = trusted_proxies {
            c.trusted_proxies = list
                .iter()
                .map(|s| keyfob_domain::net::parse_trusted(s))
                .collect::<Result<_, _>>()
                .map_err(|e| self.refuse("trusted_proxies", e))?;
        }
        let secs = Duration::from_secs;
        if let Some(v) = self.within("header_timeout_secs", header_timeout_secs, AtLeast(1))? {
            c.header_timeout = secs(v);
        }
        if let Some(v) = self.within("body_timeout_secs", body_timeout_secs, AtLeast(1))? {
            c.body_timeout = secs(v);
        }
        if let Some(v) = self.within("idle_timeout_secs", idle_timeout_secs, AtLeast(1))? {
            c.idle_timeout = secs(v);
        }
        if let Some(v) = self.within("max_connections", max_connections, AtLeast(1))? {
            c.max_connections = Some(v);
        }
        if let Some(v) =
            self.within("max_connections_per_ip", max_connections_per_ip, AtLeast(1))?
        {
            c.max_connections_per_ip = v;
        }
        if let Some(v) = log_json {
            c.log_json = v;
        }
        if let Some(v) = access_log {
            c.access_log = v;
        }
        if let Some(addr) = metrics_listen {
            if addr == c.listen && addr.port() != 0 {
                return Err(self.refuse(
                    "metrics_listen",
                    format!("must differ from listen ({addr})"),
                ));
            }
            c.metrics_listen = Some(addr);
        }
        if let Some(path) = metrics_token_file {
            if path.as_os_str().is_empty() {
                return Err(self.refuse("metrics_token_file", "must not be empty"));
            }
            c.metrics_token_file = Some(path);
        }
        if let Some(url) = smtp_url.filter(|u| !u.is_empty()) {
            c.smtp_url = Some(
                keyfob_domain::mail::SmtpUrl::parse(&url)
                    .map_err(|e| self.refuse("smtp_url", e))?,
            );
        }
        c.smtp_ca_file = smtp_ca_file;
        if let Some(from) = mail_from {
            if from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(self.refuse("mail_from", "must be a mail address, or `Name <address>`"));
            }
            c.mail_from = from;
        }
        if let Some(v) = self.within(
            "mail_per_address_per_hour",
            mail_per_address_per_hour,
            AtLeast(1),
        )? {
            c.mail_per_address_per_hour = v;
        }
        if let Some(v) = self.within(
            "mail_per_email_per_hour",
            mail_per_email_per_hour,
            AtLeast(1),
        )? {
            c.mail_per_email_per_hour = v;
        }
        Ok(c)
    }
}

impl Settings {
    /// The settings a configuration stands for: the inverse of [`Layers::build`], for showing
    /// what is in force.
    pub fn of(c: &Config) -> Settings {
        Settings {
            data_dir: Some(c.data_dir.clone()),
            database_url: Some(c.database_url.clone()),
            database_timeout_ms: Some(millis(c.database_timeouts.operation)),
            database_connect_timeout_ms: Some(millis(c.database_timeouts.connect)),
            database_probe_interval_ms: Some(millis(c.database_timeouts.probe_interval)),
            master_key_file: c.master_key_file.clone(),
            listen: Some(c.listen),
            public_url: c.public_url.clone(),
            signing_alg: Some(c.signing_alg),
            audience: Some(c.audience.clone()),
            token_default_days: Some(c.token_default_days),
            token_max_days: Some(c.token_max_days),
            signup_open: Some(c.signup_open),
            password_workers: Some(c.password_workers),
            sync_interval_ms: Some(c.sync_interval_ms),
            key_lookups_per_second: Some(c.key_lookups_per_second),
            rate_limit_nodes: Some(c.rate_limit_nodes),
            max_body_bytes: Some(c.max_body_bytes),
            login_attempts_per_minute: Some(c.login_attempts_per_minute),
            login_attempts_per_email_and_address: Some(c.login_attempts_per_email_and_address),
            login_attempts_per_email: Some(c.login_attempts_per_email),
            login_attempts_per_device: Some(c.login_attempts_per_device),
            audit_anonymous_events: Some(c.audit_anonymous_events),
            audit_anonymous_window_secs: Some(c.audit_anonymous_window_secs),
            refresh_grace_secs: Some(c.refresh_grace_secs),
            token_cache_bytes: Some(c.token_cache_bytes),
            trusted_proxies: Some(c.trusted_proxies.iter().map(ToString::to_string).collect()),
            header_timeout_secs: Some(c.header_timeout.as_secs()),
            body_timeout_secs: Some(c.body_timeout.as_secs()),
            idle_timeout_secs: Some(c.idle_timeout.as_secs()),
            max_connections: c.max_connections,
            max_connections_per_ip: Some(c.max_connections_per_ip),
            log_json: Some(c.log_json),
            access_log: Some(c.access_log),
            metrics_listen: c.metrics_listen,
            metrics_token_file: c.metrics_token_file.clone(),
            smtp_url: c.smtp_url.as_ref().map(|u| u.to_url()),
            smtp_ca_file: c.smtp_ca_file.clone(),
            mail_from: Some(c.mail_from.clone()),
            mail_per_address_per_hour: Some(c.mail_per_address_per_hour),
            mail_per_email_per_hour: Some(c.mail_per_email_per_hour),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command of the settings alone.
    #[derive(clap::Parser, Debug)]
    struct Only {
        #[command(flatten)]
        settings: Settings,
    }

    #[test]
    fn every_setting_has_a_flag_and_a_variable_named_after_it() {
        for arg in table().get_arguments() {
            let id = arg.get_id().as_str();
            let env = arg.get_env().expect("a variable").to_string_lossy();
            assert_eq!(env, format!("KEYFOB_{}", id.to_uppercase()), "{id}");
            assert!(arg.get_long().is_some(), "{id} has a flag");
        }
        <Only as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn the_table_round_trips_through_a_configuration() {
        let mut layers = Layers::new();
        let given = Settings {
            listen: Some("127.0.0.1:9".parse().unwrap()),
            max_connections: Some(7),
            trusted_proxies: Some(vec!["10.0.0.0/8".into()]),
            ..Settings::default()
        };
        layers.add(&given, |_| Origin::Flag("test".into())).unwrap();
        let config = layers.build().unwrap();
        let shown = Settings::of(&config);
        assert_eq!(shown.listen, given.listen);
        assert_eq!(shown.max_connections, Some(7));
        assert_eq!(shown.trusted_proxies, given.trusted_proxies);
        let mut again = Layers::new();
        again.add(&shown, |_| Origin::Default).unwrap();
        assert_eq!(Settings::of(&again.build().unwrap()), shown);
    }

    #[test]
    fn a_password_in_a_database_url_is_hidden() {
        assert_eq!(
            without_password("postgres://kf:s3cret@db:5432/keyfob?sslmode=require"),
            "postgres://kf:***@db:5432/keyfob?sslmode=require"
        );
        assert_eq!(
            without_password("postgres://kf@db/keyfob"),
            "postgres://kf@db/keyfob"
        );
        assert_eq!(
            without_password("sqlite:///var/lib/a@b:c/keyfob.db"),
            "sqlite:///var/lib/a@b:c/keyfob.db"
        );
    }
}
