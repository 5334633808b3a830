//! `keyfob users`: the deployment's end users (one pool, shared by every account) — made for tests
//! and imports, listed, shown, disabled, enabled and deleted. These are the operator's: an owner
//! can only remove a user from their own account (the dashboard's users & grants page).

use anyhow::{Context, bail};
use clap::Subcommand;
use keyfob_domain::time::Timestamp;
use keyfob_store::{FactorHolder, Store, UserFilter, UserId, UserRow};

use crate::audit::Actor;
use crate::config::Config;
use crate::passwords::Passwords;
use crate::services::{self, Caller, Site};
use crate::startup::open_storage;

use super::read_password;

/// The most users `list` prints.
const MAX_LIST: u32 = 10_000;

#[derive(Subcommand, Debug)]
pub(super) enum UsersCommand {
    /// Make an end user; the password is read from stdin. Prints the user id.
    Create {
        #[arg(long)]
        email: String,
    },
    /// One line per user, oldest first: id, email, verified, created, state.
    List {
        /// Only users whose email contains this text (case-insensitive).
        #[arg(long)]
        email_contains: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIST)))]
        limit: u32,
    },
    /// A user as JSON: email, verified, created, state, grants per application, second factor
    /// and passkeys.
    Show {
        /// The user's id or email.
        user: String,
    },
    /// Refuse a user's logins and end every session of theirs, until enabled again.
    Disable {
        /// The user's id or email.
        user: String,
    },
    /// Let a disabled user log in again (their ended sessions stay ended).
    Enable {
        /// The user's id or email.
        user: String,
    },
    /// Delete a user and everything tied to them: sessions (ended first), grants, links,
    /// second factor, passkeys and the records they own.
    Delete {
        /// The user's id or email.
        user: String,
    },
}

/// The user an argument names, by id or (with an `@`) by email.
async fn resolve(store: &dyn Store, user: &str) -> anyhow::Result<UserRow> {
    let found = if user.contains('@') {
        store
            .find_user_by_email(&user.trim().to_lowercase())
            .await?
    } else {
        store.find_user(&UserId::from(user)).await?
    };
    match found {
        Some(row) => Ok(row),
        None => bail!("no user {user}"),
    }
}

async fn show(store: &dyn Store, user: &UserRow) -> anyhow::Result<serde_json::Value> {
    let mut grants = Vec::new();
    for grant in store.list_user_grants(&user.id).await? {
        let app = store.find_app(&grant.client_id).await?;
        grants.push(serde_json::json!({
            "client_id": grant.client_id,
            "app": app.map(|a| a.name),
            "account_id": grant.account_id,
            "permissions": grant.permissions.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "since": grant.created_at.rfc3339(),
        }));
    }
    let holder = FactorHolder::User(user.id.clone());
    let totp = store.find_totp_factor(&holder).await?.is_some();
    let recovery_codes = store.unused_recovery_codes(&holder).await?;
    let passkeys = store.list_passkeys(&holder).await?.len();
    Ok(serde_json::json!({
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified_at.is_some(),
        "created_at": user.created_at.rfc3339(),
        "disabled_at": user.disabled_at.map(Timestamp::rfc3339),
        "grants": grants,
        "totp": totp,
        "recovery_codes_left": recovery_codes,
        "passkeys": passkeys,
    }))
}

pub(super) async fn run(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    if let UsersCommand::Create { email } = &command {
        let password = read_password()?;
        let (store, _) = open_storage(config).await?;
        let user =
            services::users::create_user(store.as_ref(), &Passwords::new(1), email, password)
                .await?;
        println!("{}", user.id);
        return Ok(());
    }
    let (store, _) = open_storage(config).await?;
    let store = store.as_ref();
    let site = Site::Cli(store);
    let by = Caller::new(Actor::operator(), "");
    match command {
        UsersCommand::Create { .. } => unreachable!("handled above"),
        UsersCommand::List {
            email_contains,
            limit,
        } => {
            let filter = UserFilter {
                email_contains: email_contains.as_deref(),
                limit,
            };
            for user in store.list_users(&filter).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    user.id,
                    user.email,
                    if user.email_verified_at.is_some() {
                        "verified"
                    } else {
                        "unverified"
                    },
                    user.created_at.rfc3339(),
                    if user.disabled_at.is_some() {
                        "disabled"
                    } else {
                        "active"
                    },
                );
            }
        }
        UsersCommand::Show { user } => {
            let user = resolve(store, &user).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&show(store, &user).await?)?
            );
        }
        UsersCommand::Disable { user } => {
            let user = resolve(store, &user).await?;
            services::users::set_disabled(site, &user.id, true, &by)
                .await
                .context("cannot disable the user")?;
            println!("disabled {}", user.id);
        }
        UsersCommand::Enable { user } => {
            let user = resolve(store, &user).await?;
            services::users::set_disabled(site, &user.id, false, &by)
                .await
                .context("cannot enable the user")?;
            println!("enabled {}", user.id);
        }
        UsersCommand::Delete { user } => {
            let user = resolve(store, &user).await?;
            services::users::delete(site, &user.id, &by)
                .await
                .context("cannot delete the user")?;
            println!("deleted {}", user.id);
        }
    }
    Ok(())
}
