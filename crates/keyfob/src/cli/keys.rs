//! `keyfob keys`: API keys.

use anyhow::bail;
use clap::Subcommand;

use keyfob_domain::audit::action;
use keyfob_domain::ids::KeyId;
use keyfob_domain::time::Timestamp;

use crate::audit::{self, Actor, AuditEvent};
use crate::config::Config;
use crate::services;
use crate::startup::open_storage;

#[derive(Subcommand, Debug)]
pub(super) enum KeysCommand {
    /// Make an API key; prints the key alone, once.
    Create {
        /// The account's id or an owner's email.
        #[arg(long)]
        account: String,
        #[arg(long)]
        name: String,
    },
    /// One line per key: id, name, prefix, created, last used, revoked.
    List {
        #[arg(long)]
        account: String,
    },
    /// Revoke a key by its id; running servers refuse it, and every token it minted, within
    /// seconds.
    Revoke { key_id: String },
}

pub(super) async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let (store, _) = open_storage(config).await?;
    match command {
        KeysCommand::Create { account, name } => {
            let account = services::accounts::resolve_account(store.as_ref(), &account).await?;
            let (row, key) =
                services::keys::create_api_key(store.as_ref(), &account.id, &name).await?;
            audit::record_now(
                store.as_ref(),
                AuditEvent::new(
                    Some(&account.id),
                    Actor::operator(),
                    action::API_KEY_CREATED,
                )
                .target(&row.id)
                .detail(serde_json::json!({ "name": row.name, "prefix": row.prefix })),
            )
            .await?;
            println!("{}", key.expose());
        }
        KeysCommand::List { account } => {
            let account = services::accounts::resolve_account(store.as_ref(), &account).await?;
            for key in store.list_api_keys(&account.id).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    key.id,
                    key.name,
                    key.prefix,
                    key.created_at.rfc3339(),
                    key.last_used_at
                        .map(Timestamp::rfc3339)
                        .unwrap_or_else(|| "never".into()),
                    key.revoked_at
                        .map(|t| format!("revoked {}", t.rfc3339()))
                        .unwrap_or_else(|| "active".into()),
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            let key_id = KeyId::from(key_id);
            if !store
                .revoke_api_key(None, &key_id, Timestamp::now())
                .await?
            {
                bail!("no live API key with id {key_id}");
            }
            let account = store.find_api_key(&key_id).await?.map(|k| k.account_id);
            audit::record_now(
                store.as_ref(),
                AuditEvent::new(account.as_ref(), Actor::operator(), action::API_KEY_REVOKED)
                    .target(&key_id),
            )
            .await?;
            println!("revoked {key_id}");
        }
    }
    Ok(())
}
