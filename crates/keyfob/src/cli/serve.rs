//! `keyfob serve`: runs the server until it is stopped.
//!
//! On start it says, on stdout, where it listens and where its data and master key are (one JSON
//! object with `--log-json`, else a few lines of text), and logs the same at info.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::startup::Application;

/// Where the master key comes from, as the start-up message tells it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "from")]
enum MasterKeyPlace {
    /// A file: `master_key_file`, or `DATA_DIR/master.key`; `made` when this start made it.
    File { path: PathBuf, made: bool },
    /// `KEYFOB_MASTER_KEY` (or `--master-key`).
    Environment,
}

impl MasterKeyPlace {
    /// Read before the application is built, so that a key made by this start is told apart.
    fn of(config: &Config) -> MasterKeyPlace {
        if config.master_key_hex.is_some() {
            return MasterKeyPlace::Environment;
        }
        let path = config.master_key_path();
        let made = config.master_key_file.is_none() && !path.exists();
        MasterKeyPlace::File { path, made }
    }
}

/// What the start-up message says.
#[derive(Debug, Serialize)]
struct Started {
    message: &'static str,
    listen: String,
    url: String,
    dashboard: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<String>,
    /// `sqlite` or `postgres`.
    database: &'static str,
    /// The SQLite file, or the PostgreSQL URL without its password.
    database_location: String,
    data_dir: PathBuf,
    master_key: MasterKeyPlace,
}

/// Runs the server; its logs are set up already (by the command line, from `config`).
pub(super) async fn run(config: Config) -> anyhow::Result<()> {
    let json = config.log_json;
    let master_key = MasterKeyPlace::of(&config);
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(err) if json => {
            // With JSON logs, the reason is a log line like every other.
            tracing::error!(error = %super::one_line(&err), "keyfob could not start");
            return Err(super::Reported.into());
        }
        Err(err) => return Err(err),
    };
    let config = &app.state().config;
    let url = config.issuer();
    let started = Started {
        message: "Keyfob is listening",
        listen: app.local_addr().to_string(),
        dashboard: format!("{url}/dashboard"),
        metrics: config
            .metrics_listen
            .map(|addr| format!("http://{addr}/metrics")),
        url,
        database: app.state().store.backend(),
        database_location: database_location(&config.database_url),
        data_dir: config.data_dir.clone(),
        master_key,
    };
    if json {
        println!("{}", serde_json::to_string(&started)?);
    } else {
        for line in started_text(&started) {
            println!("{line}");
        }
    }
    tracing::info!(
        listen = %started.listen,
        url = %started.url,
        database = started.database,
        database_location = %started.database_location,
        data_dir = %started.data_dir.display(),
        master_key = %master_key_text(&started.master_key),
        "serving"
    );
    if let MasterKeyPlace::File { path, made: true } = &started.master_key {
        tracing::warn!(
            path = %path.display(),
            "a new master key was made: back it up, apart from the database; losing it loses every vault value"
        );
    }
    app.run_until_stopped().await
}

/// The start-up message as lines of text.
fn started_text(started: &Started) -> Vec<String> {
    let mut lines = vec![
        format!("Keyfob is listening on {}", started.listen),
        format!("Dashboard: {}", started.dashboard),
    ];
    if let Some(metrics) = &started.metrics {
        lines.push(format!("Metrics: {metrics}"));
    }
    let database = match started.database {
        "sqlite" => "SQLite",
        "postgres" => "PostgreSQL",
        other => other,
    };
    lines.push(format!(
        "Database: {database} at {}",
        started.database_location
    ));
    lines.push(format!("Data directory: {}", started.data_dir.display()));
    lines.push(format!(
        "Master key: {}",
        master_key_text(&started.master_key)
    ));
    lines.push(
        "  Back the master key up, apart from the database: losing it loses every vault value."
            .to_owned(),
    );
    lines
}

fn master_key_text(place: &MasterKeyPlace) -> String {
    match place {
        MasterKeyPlace::File { path, made: true } => format!("{} (made now)", path.display()),
        MasterKeyPlace::File { path, made: false } => path.display().to_string(),
        MasterKeyPlace::Environment => "from KEYFOB_MASTER_KEY".to_owned(),
    }
}

/// The database's place: the SQLite file's path, or the PostgreSQL URL without its password.
fn database_location(url: &str) -> String {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or(url.strip_prefix("sqlite:"))
    {
        return path.to_owned();
    }
    if !url.contains("://") {
        return url.to_owned();
    }
    crate::config::without_password(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_locations_hide_passwords() {
        assert_eq!(
            database_location("sqlite://./keyfob-data/keyfob.db"),
            "./keyfob-data/keyfob.db"
        );
        assert_eq!(
            database_location("postgres://kf:s3cret@db:5432/keyfob"),
            "postgres://kf:***@db:5432/keyfob"
        );
    }
}
