//! `keyfob signing-keys`: publishing, listing and retiring token signing keys.

use anyhow::bail;
use clap::Subcommand;

use keyfob_domain::audit::action;
use keyfob_domain::ids::Kid;
use keyfob_domain::time::Timestamp;

use crate::audit::{self, Actor, AuditEvent};
use crate::config::{Config, SigningAlg};
use crate::services;
use crate::startup::open_storage;

#[derive(Subcommand, Debug)]
pub(super) enum SigningKeysCommand {
    /// Publish a new signing key, and switch to it after `--activate-in` seconds.
    Rotate {
        /// Seconds between publishing the key in the JWKS and signing with it.
        #[arg(long, default_value_t = 300, allow_negative_numbers = true)]
        activate_in: i64,
        /// Algorithm of the new key (default: the configured one).
        #[arg(long)]
        alg: Option<SigningAlg>,
    },
    /// One line per key: kid, algorithm, signs from, signs until, published until, state.
    List,
    /// Retire a key at once because it is compromised: it leaves the JWKS and every token it
    /// signed is refused by every running server within a second. If it is the key signing now,
    /// its published successor signs from now on; with none, publish one first
    /// (`rotate --activate-in 0`).
    Retire {
        /// The key's id (kid), as `signing-keys list` shows it.
        kid: Kid,
    },
}

pub(super) async fn run(config: &Config, command: SigningKeysCommand) -> anyhow::Result<()> {
    let (store, master) = open_storage(config).await?;
    match command {
        SigningKeysCommand::Rotate { activate_in, alg } => {
            if !(0..=7 * 86400).contains(&activate_in) {
                bail!("--activate-in must be from 0 to 604800 seconds");
            }
            let row = services::signing_keys::rotate_signing_key(
                store.as_ref(),
                &master,
                alg.unwrap_or(config.signing_alg),
                activate_in,
                config.token_max_days * 86400 + 3600,
            )
            .await?;
            audit::record_now(
                    store.as_ref(),
                    AuditEvent::new(None, Actor::operator(), action::SIGNING_KEY_ROTATED)
                        .target(&row.kid)
                        .detail(serde_json::json!({ "alg": row.alg, "activates_at": row.activates_at.rfc3339() })),
                )
                .await?;
            println!(
                "published {} ({}); it signs from {}",
                row.kid,
                row.alg,
                row.activates_at.rfc3339()
            );
        }
        SigningKeysCommand::List => {
            let now = Timestamp::now();
            for key in store.list_signing_keys().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    key.kid,
                    key.alg,
                    key.activates_at.rfc3339(),
                    key.retires_at
                        .map(Timestamp::rfc3339)
                        .unwrap_or_else(|| "-".into()),
                    key.expires_at
                        .map(Timestamp::rfc3339)
                        .unwrap_or_else(|| "-".into()),
                    signing_key_state(&key, now),
                );
            }
        }
        SigningKeysCommand::Retire { kid } => {
            let retired = services::signing_keys::retire_signing_key(store.as_ref(), &kid).await?;
            let heir = retired.heir.as_ref().map(|h| {
                serde_json::json!({
                    "kid": h.kid,
                    "signs_from": h.activates_at.rfc3339(),
                    "keeps_signing": h.keep_signing,
                })
            });
            audit::record_now(
                store.as_ref(),
                AuditEvent::new(None, Actor::operator(), action::SIGNING_KEY_RETIRED)
                    .target(&retired.kid)
                    .detail(serde_json::json!({ "successor": heir })),
            )
            .await?;
            match &retired.heir {
                Some(heir) => println!(
                    "retired {}; {} signs from now on; running servers refuse the tokens {} signed within a second",
                    retired.kid, heir.kid, retired.kid
                ),
                None => println!(
                    "retired {}; running servers refuse the tokens it signed within a second",
                    retired.kid
                ),
            }
        }
    }
    Ok(())
}

/// A signing key's state for `signing-keys list`.
fn signing_key_state(key: &keyfob_store::SigningKeyRow, now: Timestamp) -> String {
    if let Some(at) = key.revoked_at {
        format!(
            "retired {} (compromised; its tokens are refused)",
            at.rfc3339()
        )
    } else if key.expires_at.is_some_and(|e| e <= now) {
        "expired".into()
    } else if key.activates_at > now {
        "published".into()
    } else if key.retires_at.is_some_and(|r| r <= now) {
        "verifying only".into()
    } else {
        "signing".into()
    }
}
