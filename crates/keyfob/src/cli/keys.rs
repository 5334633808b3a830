//! `keyfob keys`: API keys.

use anyhow::bail;
use clap::Subcommand;

use keyfob_domain::audit::action;
use keyfob_domain::ids::KeyId;
use keyfob_domain::key_policy::parse_span;
use keyfob_domain::time::Timestamp;
use keyfob_store::{ApiKeyRow, Permissions};

use crate::audit::{self, Actor, AuditEvent};
use crate::config::Config;
use crate::services;
use crate::services::keys::KeySpec;
use crate::startup::open_storage;

#[derive(Subcommand, Debug)]
pub(super) enum KeysCommand {
    /// Make an API key; prints the key alone, once. Without `--permissions` the key may do
    /// everything in its account, as the guide's keys do.
    Create {
        /// The account's id or an owner's email.
        #[arg(long)]
        account: String,
        #[arg(long)]
        name: String,
        /// Restrict the key to these permissions, comma-separated (`deals.read,services.write`).
        /// `*.read` covers every ordinary resource; `sensitive.read` and `audit.read` must be
        /// named.
        #[arg(long, value_name = "LIST")]
        permissions: Option<String>,
        /// Make the key expire after this long (`90d`, `24h`, `30m`; units s, m, h, d, w).
        #[arg(long, value_name = "SPAN")]
        expires_in: Option<String>,
        /// Limit the requests made with the key and its tokens (`600/min`; per s, min, h, day).
        #[arg(long, value_name = "N/UNIT")]
        rate_limit: Option<String>,
    },
    /// One line per key: id, name, prefix, created, last used (and from where), state,
    /// permissions, expiry, rate limit.
    List {
        #[arg(long)]
        account: String,
    },
    /// Replace a key by a new one with the same name, permissions, rate limit and lifetime;
    /// prints the new key alone, once. The old key keeps working for `--overlap`, then it and
    /// every token it minted are refused.
    Roll {
        key_id: String,
        /// How long the old key keeps working (`24h`; default `0s`: refused at once).
        #[arg(long, value_name = "SPAN", default_value = "0s")]
        overlap: String,
    },
    /// Revoke a key by its id; running servers refuse it, and every token it minted, within
    /// seconds.
    Revoke { key_id: String },
}

pub(super) async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let (store, _) = open_storage(config).await?;
    match command {
        KeysCommand::Create {
            account,
            name,
            permissions,
            expires_in,
            rate_limit,
        } => {
            let spec = KeySpec::parse(
                &name,
                permissions.as_deref(),
                expires_in.as_deref(),
                rate_limit.as_deref(),
            )?;
            let account = services::accounts::resolve_account(store.as_ref(), &account).await?;
            let (row, key) =
                services::keys::create_api_key(store.as_ref(), &account.id, &spec).await?;
            audit::record_now(
                store.as_ref(),
                AuditEvent::new(
                    Some(&account.id),
                    Actor::operator(),
                    action::API_KEY_CREATED,
                )
                .target(&row.id)
                .detail(serde_json::json!({
                    "name": row.name,
                    "prefix": row.prefix,
                    "permissions": row.permissions.as_ref().map(Permissions::names),
                    "expires": row.expires_at.map(Timestamp::rfc3339),
                    "rate_limit": row.rate_limit().map(|r| r.to_string()),
                })),
            )
            .await?;
            println!("{}", key.expose());
        }
        KeysCommand::List { account } => {
            let account = services::accounts::resolve_account(store.as_ref(), &account).await?;
            let now = Timestamp::now();
            for key in store.list_api_keys(&account.id).await? {
                println!("{}", list_line(&key, now));
            }
        }
        KeysCommand::Roll { key_id, overlap } => {
            let overlap = parse_span(&overlap).map_err(|e| anyhow::anyhow!("--overlap: {e}"))?;
            let key_id = KeyId::from(key_id);
            let rolled =
                services::keys::roll_api_key(store.as_ref(), None, &key_id, overlap).await?;
            let account = rolled.old.account_id.clone();
            audit::record_now(
                store.as_ref(),
                rolled.event(Some(&account), Actor::operator()),
            )
            .await?;
            eprintln!(
                "rolled {key_id} into {}; the old key works until {}",
                rolled.new.id,
                rolled
                    .old
                    .expires_at
                    .map(Timestamp::rfc3339)
                    .unwrap_or_else(|| "now".into())
            );
            println!("{}", rolled.key.expose());
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

/// One key as `keys list` prints it, tab-separated.
fn list_line(key: &ApiKeyRow, now: Timestamp) -> String {
    let state = match (key.revoked_at, key.expires_at) {
        (Some(at), _) => format!("revoked {}", at.rfc3339()),
        (None, Some(at)) if at <= now => format!("expired {}", at.rfc3339()),
        _ => "active".into(),
    };
    let last_used = match (key.last_used_at, &key.last_used_ip) {
        (Some(at), Some(ip)) => format!("{} from {ip}", at.rfc3339()),
        (Some(at), None) => at.rfc3339(),
        (None, _) => "never".into(),
    };
    [
        key.id.to_string(),
        key.name.clone(),
        key.prefix.clone(),
        key.created_at.rfc3339(),
        last_used,
        state,
        key.permissions
            .as_ref()
            .map(|p| p.names().join(","))
            .unwrap_or_else(|| "full access".into()),
        key.expires_at
            .map(|at| format!("expires {}", at.rfc3339()))
            .unwrap_or_else(|| "no expiry".into()),
        key.rate_limit()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "no limit".into()),
    ]
    .join("\t")
}
