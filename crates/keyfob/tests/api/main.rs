//! Integration tests: each starts the real server on port 0 with a fresh database, on SQLite and,
//! where `KEYFOB_TEST_POSTGRES_URL` is set, on PostgreSQL too.

mod db_proxy;
mod helpers;
mod mailbox;
mod routes;

mod api_keys;
mod apps_users;
mod audit;
mod authorize;
mod browser;
mod chrome;
mod cli;
mod client_credentials;
mod connections;
mod dashboard;
mod error_bodies;
mod every_page;
mod files;
mod hostile_input;
mod key_lookup;
mod key_policies;
mod key_revocation;
mod logins;
mod mail;
mod manage;
mod metrics;
mod mint;
mod oauth_client;
mod oidc;
mod openapi;
mod outage;
mod pages;
mod passkeys;
mod resources;
mod revocation;
mod session_browser;
mod sessions;
mod settings;
mod telemetry;
mod tokens;
mod totp;
mod vault;
mod vault_browser;
mod vault_dashboard;
