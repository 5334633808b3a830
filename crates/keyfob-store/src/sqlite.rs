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
        Ok(SqliteStore::new(pool))
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

/// What a SQLite backup holds, read without changing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    /// The value of the setting asked for (the master key's check value), if the backup has one.
    pub setting: Option<String>,
    /// The newest migration applied to it.
    pub migration: Option<i64>,
}

/// The file path of a SQLite URL (`sqlite://path`, `sqlite:path` or a plain path).
pub fn sqlite_path(url: &str) -> &Path {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    Path::new(path.split('?').next().unwrap_or(path))
}

/// The newest migration this build knows.
pub fn latest_sqlite_migration() -> i64 {
    sqlx::migrate!("./migrations/sqlite")
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// Copies the live database at `url` into the new file `to`, consistently while other processes
/// read and write it: `VACUUM INTO` copies one read transaction's view of it (a snapshot; writers
/// carry on), compacted. `to` must not exist; it is made readable by its owner only. The copy's
/// integrity is checked before this returns.
pub async fn back_up_sqlite(url: &str, to: &Path) -> Result<()> {
    let from = sqlite_path(url);
    if !from.exists() {
        return Err(io_error(format!(
            "there is no database at {}",
            from.display()
        )));
    }
    if to.exists() {
        return Err(io_error(format!(
            "{} exists already: give a new file",
            to.display()
        )));
    }
    // The copy gets the original's mode from SQLite only if the file is new; an empty file made
    // here first, private, is taken as it is.
    make_private(to)?;
    let options = SqliteConnectOptions::new()
        .filename(from)
        .read_only(true)
        .busy_timeout(Duration::from_secs(30));
    let copied = async {
        let mut conn = sqlx::ConnectOptions::connect(&options).await?;
        sqlx::query("VACUUM INTO ?1")
            .bind(to.to_string_lossy().into_owned())
            .execute(&mut conn)
            .await?;
        sqlx::Connection::close(conn).await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    if let Err(err) = copied {
        let _ = std::fs::remove_file(to);
        return Err(err.into());
    }
    if let Err(err) = check_integrity(to).await {
        let _ = std::fs::remove_file(to);
        return Err(err);
    }
    Ok(())
}

/// Reads a backup file without changing it: its integrity, the setting `name`, and its newest
/// migration.
pub async fn inspect_sqlite_backup(path: &Path, name: &str) -> Result<BackupFacts> {
    check_integrity(path).await?;
    let mut conn = read_only(path).await?;
    let has = |table: &'static str| {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        )
        .bind(table)
    };
    let setting = if has("settings").fetch_one(&mut conn).await? > 0 {
        sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE name = ?1")
            .bind(name)
            .fetch_optional(&mut conn)
            .await?
    } else {
        None
    };
    let migration = if has("_sqlx_migrations").fetch_one(&mut conn).await? > 0 {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT max(version) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(&mut conn)
        .await?
    } else {
        None
    };
    sqlx::Connection::close(conn).await?;
    Ok(BackupFacts { setting, migration })
}

async fn read_only(path: &Path) -> Result<sqlx::SqliteConnection> {
    if !path.is_file() {
        return Err(io_error(format!("there is no file at {}", path.display())));
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(30));
    Ok(sqlx::ConnectOptions::connect(&options).await?)
}

/// `PRAGMA integrity_check` of the database file at `path`: an error unless it says `ok`.
async fn check_integrity(path: &Path) -> Result<()> {
    let mut conn = read_only(path).await?;
    let found: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .map_err(|err| {
            io_error(format!(
                "{} is not a SQLite database: {err}",
                path.display()
            ))
        })?;
    sqlx::Connection::close(conn).await?;
    if found != ["ok"] {
        return Err(io_error(format!(
            "{} is damaged: {}",
            path.display(),
            found.join("; ")
        )));
    }
    Ok(())
}

fn io_error(message: String) -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(message)))
}
