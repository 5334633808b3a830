//! What the outage guard costs on the request path, against a real PostgreSQL: the same
//! `SELECT 1` through the guarded store (`keyfob_store::open`, as the server runs it) and through a
//! plain pool configured as before the guard (16 connections, ping before acquire, no hooks),
//! one call at a time and 32 at once, in rounds where each goes first in turn, so that load on the
//! machine hits both alike.
//!
//!     KEYFOB_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!         cargo run --release -p keyfob-store --example guard_overhead

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;

const CALLS: usize = 2_000;
const CONCURRENT: usize = 32;
const ROUNDS: usize = 9;

#[tokio::main]
async fn main() {
    let url = std::env::var("KEYFOB_TEST_POSTGRES_URL")
        .expect("set KEYFOB_TEST_POSTGRES_URL to a PostgreSQL database");
    // A schema of its own, so the migrations do not touch anything else.
    let schema = format!("kf_bench_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");

    let guarded = keyfob_store::open(&scoped, keyfob_store::Timeouts::default())
        .await
        .unwrap();
    let plain = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&scoped)
        .await
        .unwrap();

    let mut results: [[Vec<f64>; 2]; 2] = Default::default();
    for round in 0..ROUNDS {
        for (i, concurrent) in [1, CONCURRENT].into_iter().enumerate() {
            // Each goes first in every other round.
            if round % 2 == 0 {
                results[0][i].push(run(concurrent, guarded_call(guarded.clone())).await);
                results[1][i].push(run(concurrent, plain_call(plain.clone())).await);
            } else {
                results[1][i].push(run(concurrent, plain_call(plain.clone())).await);
                results[0][i].push(run(concurrent, guarded_call(guarded.clone())).await);
            }
        }
    }
    println!("median µs per call over {ROUNDS} rounds of {CALLS} calls (SELECT 1)");
    println!(
        "{:<10} {:>12} {:>14}",
        "",
        "one at once",
        format!("{CONCURRENT} at once")
    );
    for (name, row) in ["guarded", "plain"].iter().zip(&results) {
        println!(
            "{name:<10} {:>12.1} {:>14.1}",
            median(&row[0]),
            median(&row[1])
        );
    }

    plain.close().await;
    drop(guarded);
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

/// One call to measure, made afresh each time.
type Call =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

fn guarded_call(store: Arc<dyn keyfob_store::Store>) -> Call {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move { store.ping().await.unwrap() })
    })
}

fn plain_call(pool: sqlx::PgPool) -> Call {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        })
    })
}

/// Microseconds per call: `CALLS` calls, `concurrent` at a time.
async fn run(concurrent: usize, call: Call) -> f64 {
    let start = Instant::now();
    let per_task = CALLS / concurrent;
    let tasks: Vec<_> = (0..concurrent)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    call().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed().as_secs_f64() * 1e6 / (per_task * concurrent) as f64
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
