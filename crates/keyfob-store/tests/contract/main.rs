//! The `Store` contract: every area of the trait, run on a fresh SQLite file and on a fresh
//! PostgreSQL schema (when `KEYFOB_TEST_POSTGRES_URL` is set), asserting what each method stores,
//! returns and logs, and that a refused write changes nothing.

mod helpers;

mod accounts;
mod api_keys;
mod apps;
mod apps_users;
mod audit;
mod changes;
mod codes;
mod email;
mod errors;
mod mfa;
mod passkeys;
mod records;
mod refresh;
mod settings;
mod signing;
mod tokens;
