//! `keyfob users`: end users, made from the command line for tests and imports.

use clap::Subcommand;

use crate::config::Config;
use crate::passwords::Passwords;
use crate::services;
use crate::startup::open_storage;

use super::read_password;

#[derive(Subcommand, Debug)]
pub(super) enum UsersCommand {
    /// Make an end user; the password is read from stdin. Prints the user id.
    Create {
        #[arg(long)]
        email: String,
    },
}

pub(super) async fn run(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create { email } => {
            let password = read_password()?;
            let (store, _) = open_storage(config).await?;
            let user =
                services::users::create_user(store.as_ref(), &Passwords::new(1), &email, password)
                    .await?;
            println!("{}", user.id);
        }
    }
    Ok(())
}
