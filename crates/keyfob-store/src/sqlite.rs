//! The embedded default: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, QueryBuilder, Sqlite};

use crate::sql::{Dialect, RowsAffected, SqlStore};
use crate::{Result, StoreError};

/// The store on SQLite.
pub type SqliteStore = SqlStore<Sqlite>;

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
        make_private(options.get_filename())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

/// Keeps the database readable by its owner only: a new file is created with mode 0600 before
/// SQLite opens it (SQLite gives its `-wal` and `-shm` files the database file's mode), and an
/// existing database or side file that others may read is made private. Whatever is in them —
/// hashes, sealed keys, records — is nobody else's business.
fn make_private(path: &Path) -> Result<()> {
    let name = path.as_os_str();
    if name.is_empty() || name == ":memory:" {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if !path.exists() {
            // A zero-length file is a valid empty database to SQLite.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|err| private_error(path, err))?;
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = name.to_owned();
            file.push(suffix);
            let file = Path::new(&file);
            let Ok(meta) = std::fs::metadata(file) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))
                    .map_err(|err| private_error(file, err))?;
                tracing::warn!(
                    path = %file.display(),
                    was = format!("{mode:o}"),
                    "made the database file private (mode 600)"
                );
            }
        }
    }
    Ok(())
}

fn private_error(path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::new(
        err.kind(),
        format!(
            "cannot make the database file {} private: {err}",
            path.display()
        ),
    )))
}

/// `$."a"."b"`: segments are validated by the domain, so quoting them is enough.
fn json_path(segments: &[String]) -> String {
    let mut path = String::from("$");
    for s in segments {
        path.push_str(&format!(".\"{s}\""));
    }
    path
}

impl Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";
    const BEGIN: &'static str = "BEGIN IMMEDIATE";

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

    fn path(segments: &[String]) -> String {
        json_path(segments)
    }

    fn execute_built<'a, 'c: 'a, E>(
        builder: &'a mut QueryBuilder<'_, Sqlite>,
        executor: E,
    ) -> impl Future<Output = Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>> + Send + 'a
    where
        E: 'a + Executor<'c, Database = Sqlite>,
    {
        builder.build().execute(executor)
    }

    fn fetch_texts_built<'a, 'c: 'a, E>(
        builder: &'a mut QueryBuilder<'_, Sqlite>,
        executor: E,
    ) -> impl Future<Output = Result<Vec<String>, sqlx::Error>> + Send + 'a
    where
        E: 'a + Executor<'c, Database = Sqlite>,
    {
        builder.build_query_scalar().fetch_all(executor)
    }

    fn fetch_rows_built<'a, 'c: 'a, E, T>(
        builder: &'a mut QueryBuilder<'_, Sqlite>,
        executor: E,
    ) -> impl Future<Output = Result<Vec<T>, sqlx::Error>> + Send + 'a
    where
        E: 'a + Executor<'c, Database = Sqlite>,
        T: for<'r> sqlx::FromRow<'r, <Sqlite as sqlx::Database>::Row> + Send + Unpin + 'a,
    {
        builder.build_query_as::<T>().fetch_all(executor)
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::sqlite::SqliteQueryResult::rows_affected(self)
    }
}
