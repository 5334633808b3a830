use thiserror::Error;

/// What can go wrong in storage. A unique-constraint violation names what was taken, so the HTTP
/// layer can answer 409 instead of 500.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} is already taken")]
    Conflict(&'static str),
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                let text = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
                StoreError::Conflict(conflict_field(&text))
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err),
            _ => StoreError::Database(err),
        }
    }
}

/// Names the taken field from a constraint name or a SQLite message.
fn conflict_field(text: &str) -> &'static str {
    if text.contains("email") {
        "email"
    } else if text.contains("key_hash") {
        "API key"
    } else if text.contains("client_id") {
        "client id"
    } else if text.contains("kid") {
        "signing key id"
    } else {
        "id"
    }
}
