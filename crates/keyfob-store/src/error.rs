use std::time::Duration;

use thiserror::Error;

/// What can go wrong in storage. A unique-constraint violation names what was taken, so the HTTP
/// layer can answer 409 instead of 500.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} is already taken")]
    Conflict(&'static str),
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] Unreachable),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Why the database could not serve a call. Only [`Unreachable::Connection`] and
/// [`Unreachable::TimedOut`] say something about the database as a whole, so only they make the
/// store suspect an outage (see [`StoreError::is_connection_failure`]).
#[derive(Debug, Error)]
pub enum Unreachable {
    /// No connection could be made or kept: refused, reset, closed, or none free in time.
    #[error(transparent)]
    Connection(sqlx::Error),
    /// The call got no answer within the operation deadline.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// The database is known to be down; the call was refused without trying.
    #[error("it is down and is being probed; failing fast until it answers")]
    Down,
    /// Another writer holds SQLite's lock longer than the busy timeout. The file is fine.
    #[error(transparent)]
    Busy(sqlx::Error),
}

impl StoreError {
    /// Whether this error says the database cannot be reached (a lost or refused connection, a
    /// deadline missed), as opposed to a problem with one statement or row.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(Unreachable::Connection(_) | Unreachable::TimedOut(_))
        )
    }

    /// Whether the call was refused at once because the database is known to be down. Such
    /// errors are expected while it is, and need not be logged one by one.
    pub fn is_known_outage(&self) -> bool {
        matches!(self, StoreError::Unavailable(Unreachable::Down))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                let text = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
                StoreError::Conflict(conflict_field(&text))
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| is_connection_code(&c)) => {
                StoreError::Unavailable(Unreachable::Connection(err))
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| is_sqlite_busy(&c)) => {
                StoreError::Unavailable(Unreachable::Busy(err))
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Unreachable::Connection(err)),
            // The one rule for stored data that no longer reads (see `types`).
            sqlx::Error::ColumnDecode { index, source } => {
                StoreError::Corrupt(format!("column {index}: {source}"))
            }
            _ => StoreError::Database(err),
        }
    }
}

/// PostgreSQL's codes for a lost connection: class 08 (connection exception), and the server
/// shutting down, crashing or still starting (57P01, 57P02, 57P03).
fn is_connection_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// SQLite's SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes (the low byte).
fn is_sqlite_busy(code: &str) -> bool {
    code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

/// Names the taken field from a constraint name or a SQLite message. SQLite names the column
/// (`apps.client_id`); PostgreSQL names the constraint, and a primary key's is `<table>_pkey`.
fn conflict_field(text: &str) -> &'static str {
    if text.contains("email") {
        "email"
    } else if text.contains("key_hash") {
        "API key"
    } else if text.contains("client_id") || text.contains("apps_pkey") {
        "client id"
    } else if text.contains("kid") || text.contains("signing_keys_pkey") {
        "signing key id"
    } else {
        "id"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_codes_are_connection_failures() {
        for code in ["08006", "08001", "08P01", "57P01", "57P02", "57P03"] {
            assert!(is_connection_code(code), "{code}");
        }
        // Unique violation, serialization failure, query canceled, syntax error, SQLite's codes.
        for code in ["23505", "40001", "57014", "42601", "5", "2067"] {
            assert!(!is_connection_code(code), "{code}");
        }
        for code in ["5", "6", "261", "517", "773", "262"] {
            assert!(is_sqlite_busy(code), "{code}");
        }
        for code in ["2067", "1", "19", "57P01"] {
            assert!(!is_sqlite_busy(code), "{code}");
        }
    }

    /// Both backends name the same field, whichever way their messages put it.
    #[test]
    fn conflicts_name_the_field_on_both_backends() {
        for (sqlite, postgres, field) in [
            (
                "UNIQUE constraint failed: owners.email",
                "owners_email_key",
                "email",
            ),
            (
                "UNIQUE constraint failed: users.email",
                "users_email_key",
                "email",
            ),
            (
                "UNIQUE constraint failed: api_keys.key_hash",
                "api_keys_key_hash_key",
                "API key",
            ),
            (
                "UNIQUE constraint failed: apps.client_id",
                "apps_pkey",
                "client id",
            ),
            (
                "UNIQUE constraint failed: signing_keys.kid",
                "signing_keys_pkey",
                "signing key id",
            ),
            ("UNIQUE constraint failed: records.id", "records_pkey", "id"),
            ("UNIQUE constraint failed: tokens.jti", "tokens_pkey", "id"),
        ] {
            assert_eq!(conflict_field(sqlite), field, "{sqlite}");
            let message =
                format!("{postgres} duplicate key value violates unique constraint \"{postgres}\"");
            assert_eq!(conflict_field(&message), field, "{message}");
        }
    }

    #[test]
    fn pool_and_socket_errors_are_connection_failures_and_row_errors_are_not() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(StoreError::from(sqlx::Error::Io(io)).is_connection_failure());
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_connection_failure());
        assert!(
            StoreError::Unavailable(Unreachable::TimedOut(Duration::from_secs(1)))
                .is_connection_failure()
        );
        let decode = sqlx::Error::ColumnNotFound("x".into());
        assert!(!StoreError::from(decode).is_connection_failure());
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_connection_failure());
        assert!(!StoreError::Conflict("email").is_connection_failure());
        assert!(!StoreError::Unavailable(Unreachable::Down).is_connection_failure());
        assert!(StoreError::Unavailable(Unreachable::Down).is_known_outage());
    }

    /// A locked SQLite file is a 503 to retry, never an outage that trips the breaker.
    #[tokio::test]
    async fn a_locked_sqlite_file_is_busy_not_down() {
        use sqlx::Connection;
        use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
        let path = std::env::temp_dir().join(format!(
            "keyfob-busy-{}-{}.db",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let mut holder = SqliteConnection::connect_with(&options).await.unwrap();
        let mut other = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut holder)
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .unwrap();
        let err: StoreError = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut other)
            .await
            .unwrap_err()
            .into();
        assert!(
            matches!(err, StoreError::Unavailable(Unreachable::Busy(_))),
            "{err:?}"
        );
        assert!(!err.is_connection_failure());
        drop((holder, other));
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}
