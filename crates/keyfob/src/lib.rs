//! Keyfob: API keys, scoped JWTs and resources behind one HTTP server.
//!
//! [`startup::Application`] builds the server the binary runs and the tests start; [`cli`] is the
//! `keyfob` command. Domain rules live in `keyfob-domain`, storage in `keyfob-store`.

pub mod audit;
pub mod auth;
pub mod batch;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dashboard;
pub mod http;
pub mod logins;
pub mod mail;
pub mod measures;
pub mod mfa;
pub mod passkeys;
pub mod passwords;
pub mod services;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tokens;
pub mod user_pages;
pub mod vault;
pub mod web;

pub use config::Config;
pub use startup::Application;
