//! The embedded default: one SQLite file in WAL mode.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::Result;
use crate::sql::{JsonDialect, impl_store};

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or a plain path) and
    /// migrates it.
    pub async fn connect(url: &str) -> Result<Self> {
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

/// `$."a"."b"`: segments are validated by the domain, so quoting them is enough.
fn json_path(segments: &[String]) -> String {
    let mut path = String::from("$");
    for s in segments {
        path.push_str(&format!(".\"{s}\""));
    }
    path
}

impl JsonDialect for SqliteStore {
    fn text_at(p: &str) -> String {
        format!(
            "(CASE json_type(doc, {p}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' \
             ELSE CAST(json_extract(doc, {p}) AS TEXT) END)"
        )
    }

    fn value_at(p: &str) -> String {
        format!("json_extract(doc, {p})")
    }

    type Path = String;
    type Db = sqlx::Sqlite;

    fn path(segments: &[String]) -> String {
        json_path(segments)
    }
}

impl_store!(
    SqliteStore,
    "sqlite",
    sqlx::sqlite::SqliteArguments,
    "BEGIN IMMEDIATE"
);
