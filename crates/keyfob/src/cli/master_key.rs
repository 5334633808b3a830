//! `keyfob master-key`: rotating the master key.

use anyhow::bail;
use clap::Subcommand;

use keyfob_domain::audit::action;

use crate::audit::{self, Actor, AuditEvent};
use crate::config::Config;
use crate::crypto::MasterKey;
use crate::services;
use crate::startup::open_storage;

#[derive(Subcommand, Debug)]
pub(super) enum MasterKeyCommand {
    /// Make a new master key and seal again, under it, everything the old one sealed (signing
    /// keys, the accounts' data keys, refresh retry answers). Sensitive values are not
    /// re-encrypted. Restart every node with the new key afterwards.
    Rotate,
}

pub(super) async fn run(config: &Config, command: MasterKeyCommand) -> anyhow::Result<()> {
    let MasterKeyCommand::Rotate = command;
    let (store, old) = open_storage(config).await?;
    let new = MasterKey::generate();
    let from_config = config.master_key_hex.is_some();
    if from_config {
        // The key lives in configuration, which this command cannot change: show the new
        // one before the database depends on it, so it is never lost.
        println!("{}", new.to_hex());
    } else {
        new.write_pending(&config.master_key_path())?;
    }
    let done = match services::master_key::rotate_master_key(store.as_ref(), &old, &new).await {
        Ok(done) => done,
        Err(err) => {
            if from_config {
                bail!("{err}; nothing was changed and the key printed above is not in use");
            }
            MasterKey::discard_pending(&config.master_key_path());
            bail!("{err}; nothing was changed");
        }
    };
    if !from_config {
        MasterKey::install_pending(&config.master_key_path())?;
    }
    audit::record_now(
        store.as_ref(),
        AuditEvent::new(None, Actor::operator(), action::MASTER_KEY_ROTATED).detail(
            serde_json::json!({
                "signing_keys": done.signing_keys,
                "data_keys": done.data_keys,
                "refresh_answers": done.refresh_answers,
                "totp_secrets": done.totp_secrets,
            }),
        ),
    )
    .await?;
    let place = if from_config {
        "set KEYFOB_MASTER_KEY to the key above".to_owned()
    } else {
        format!("it is in {}", config.master_key_path().display())
    };
    eprintln!(
        "master key rotated: sealed again {} signing keys, {} data keys, {} refresh answers and {} TOTP secrets; {place}, and restart every node with it",
        done.signing_keys, done.data_keys, done.refresh_answers, done.totp_secrets
    );
    Ok(())
}
