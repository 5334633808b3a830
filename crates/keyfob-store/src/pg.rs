//! PostgreSQL, for several nodes sharing one database.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, Postgres, QueryBuilder};

use crate::Result;
use crate::guard::{Breaker, Guarded, Timeouts};
use crate::sql::{Dialect, RowsAffected, SqlStore};

/// The store on PostgreSQL; [`PgStore::connect`] wraps it in a [`Guarded`] store.
pub type PgStore = SqlStore<Postgres>;

impl PgStore {
    /// Connects to `url` and migrates the database (concurrent starts are serialised by the
    /// migrator's advisory lock). Every call then goes through a [`Guarded`] store, so that an
    /// outage makes calls fail fast rather than each wait out `timeouts`.
    pub async fn connect(url: &str, timeouts: Timeouts) -> Result<Guarded<PgStore>> {
        let options = PgConnectOptions::from_str(url)?;
        let probe_options = options.clone();
        let breaker = Breaker::new(
            timeouts,
            Box::new(move || {
                let options = probe_options.clone();
                Box::pin(async move {
                    let mut conn = PgConnection::connect_with(&options).await?;
                    conn.ping().await?;
                    conn.close().await
                })
            }),
        );
        let pool = pool_options(&breaker).connect_with(options).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Guarded::new(PgStore::new(pool), breaker))
    }
}

/// The pool, judged by the breaker: a connection it does not trust is closed instead of pinged
/// (a ping on a black-holed socket never returns, and would hold its slot in the pool for good),
/// and the ping before handing a connection out has a deadline.
fn pool_options(breaker: &Arc<Breaker>) -> PgPoolOptions {
    let before = breaker.clone();
    let after = breaker.clone();
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(breaker.timeouts().connect)
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let breaker = before.clone();
            Box::pin(async move {
                if !breaker.keep_connection(meta.age) {
                    return Ok(false);
                }
                let deadline = breaker.timeouts().connect / 2;
                match tokio::time::timeout(deadline, conn.ping()).await {
                    Ok(Ok(())) => Ok(true),
                    Ok(Err(err)) => {
                        breaker.failed(&err);
                        Ok(false)
                    }
                    Err(_) => {
                        breaker.failed(&format!(
                            "an idle connection gave no answer within {deadline:?}"
                        ));
                        Ok(false)
                    }
                }
            })
        })
        .after_release(move |_conn, meta| {
            let keep = after.keep_connection(meta.age);
            Box::pin(std::future::ready(Ok(keep)))
        })
}

impl Dialect for Postgres {
    const BACKEND: &'static str = "postgres";
    const BEGIN: &'static str = "BEGIN";

    fn text_at(p: &str) -> String {
        format!("(doc #>> CAST({p} AS TEXT[]))")
    }

    fn value_at(p: &str) -> String {
        format!("(doc #> CAST({p} AS TEXT[]))")
    }

    type Path = Vec<String>;

    fn path(segments: &[String]) -> Vec<String> {
        segments.to_vec()
    }

    fn execute_built<'a, 'c: 'a, E>(
        builder: &'a mut QueryBuilder<'_, Postgres>,
        executor: E,
    ) -> impl Future<Output = Result<sqlx::postgres::PgQueryResult, sqlx::Error>> + Send + 'a
    where
        E: 'a + Executor<'c, Database = Postgres>,
    {
        builder.build().execute(executor)
    }

    fn fetch_texts_built<'a, 'c: 'a, E>(
        builder: &'a mut QueryBuilder<'_, Postgres>,
        executor: E,
    ) -> impl Future<Output = Result<Vec<String>, sqlx::Error>> + Send + 'a
    where
        E: 'a + Executor<'c, Database = Postgres>,
    {
        builder.build_query_scalar().fetch_all(executor)
    }

    fn fetch_rows_built<'a, 'c: 'a, E, T>(
        builder: &'a mut QueryBuilder<'_, Postgres>,
        executor: E,
    ) -> impl Future<Output = Result<Vec<T>, sqlx::Error>> + Send + 'a
    where
        E: 'a + Executor<'c, Database = Postgres>,
        T: for<'r> sqlx::FromRow<'r, <Postgres as sqlx::Database>::Row> + Send + Unpin + 'a,
    {
        builder.build_query_as::<T>().fetch_all(executor)
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::postgres::PgQueryResult::rows_affected(self)
    }
}
