//! PostgreSQL, for several nodes sharing one database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::Result;
use crate::sql::{JsonDialect, impl_store};

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and migrates the database (concurrent starts are serialised by the
    /// migrator's advisory lock).
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }
}

impl JsonDialect for PgStore {
    fn text_at(p: &str) -> String {
        format!("(doc #>> CAST({p} AS TEXT[]))")
    }

    fn value_at(p: &str) -> String {
        format!("(doc #> CAST({p} AS TEXT[]))")
    }

    type Path = Vec<String>;
    type Db = sqlx::Postgres;

    fn path(segments: &[String]) -> Vec<String> {
        segments.to_vec()
    }
}

impl_store!(PgStore, "postgres", sqlx::postgres::PgArguments, "BEGIN");
