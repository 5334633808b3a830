//! `keyfob accounts`: accounts and their owners.

use clap::Subcommand;

use crate::config::Config;
use crate::passwords::Passwords;
use crate::services;
use crate::startup::open_storage;

use super::read_password;

#[derive(Subcommand, Debug)]
pub(super) enum AccountsCommand {
    /// Make an account and its owner; the password is read from stdin. Prints the account id.
    Create {
        #[arg(long)]
        email: String,
    },
}

pub(super) async fn run(config: &Config, command: AccountsCommand) -> anyhow::Result<()> {
    match command {
        AccountsCommand::Create { email } => {
            let password = read_password()?;
            let (store, _) = open_storage(config).await?;
            let (account, _) = services::accounts::create_account(
                store.as_ref(),
                &Passwords::new(1),
                &email,
                password,
            )
            .await?;
            println!("{}", account.id);
        }
    }
    Ok(())
}
