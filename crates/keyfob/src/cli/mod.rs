//! The `keyfob` command line. Every command takes `--config` (or `KEYFOB_CONFIG`), the master key,
//! and every setting of the table in `config::settings` as a flag or a `KEYFOB_*` variable. Errors
//! are one line on stderr and a non-zero exit; only secrets a command just made are printed.

mod accounts;
mod apps;
pub mod backup;
mod keys;
mod master_key;
mod serve;
mod settings;
mod signing_keys;
mod users;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, Layers, Settings};

use accounts::AccountsCommand;
use apps::AppsCommand;
use keys::KeysCommand;
use master_key::MasterKeyCommand;
use signing_keys::SigningKeysCommand;
use users::UsersCommand;

#[derive(Parser, Debug)]
#[command(
    name = "keyfob",
    version,
    about = "Authentication and authorization for APIs"
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// A TOML file of settings (see README).
    #[arg(long, global = true, env = "KEYFOB_CONFIG")]
    config: Option<PathBuf>,
    /// The master key, 64 hex characters; default DATA_DIR/master.key, made on first start. On
    /// the command line it is visible to every user of the machine (`ps`): prefer
    /// --master-key-file or the environment variable.
    #[arg(long, global = true, env = "KEYFOB_MASTER_KEY", hide_env_values = true)]
    master_key: Option<String>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve,
    /// Print the settings in force, one TOML line each, with where each value came from.
    Settings,
    /// Manage accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage applications (user sessions).
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Manage end users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage the master key.
    #[command(subcommand)]
    MasterKey(MasterKeyCommand),
    /// Manage token signing keys.
    #[command(subcommand, name = "signing-keys")]
    SigningKeys(SigningKeysCommand),
    /// Copy the SQLite database to a new file, consistently, while the server runs.
    Backup(backup::BackupArgs),
    /// Put a backup back in place of the SQLite database (the server must be stopped; the master
    /// key must be the one the backup was made under).
    Restore(backup::RestoreArgs),
}

/// Runs the command line; the exit code says whether it worked.
pub async fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(err) => match bad_variable(&err) {
            Some(line) => {
                eprintln!("keyfob: {line}");
                return ExitCode::from(2);
            }
            None => err.exit(),
        },
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    match run(cli, &matches).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<Reported>() => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("keyfob: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// A value clap could not parse that came from an environment variable rather than the flag clap
/// names, as `KEYFOB_LISTEN: invalid value 'x': …`.
fn bad_variable(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    // "--listen <ADDR>", "--signup-open[=<BOOL>]"
    let flag = arg.split([' ', '[', '=']).next()?;
    let typed = std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if typed {
        return None;
    }
    let command = Cli::command();
    let env = command
        .get_arguments()
        .find(|a| a.get_long().is_some_and(|long| flag == format!("--{long}")))?
        .get_env()?
        .to_string_lossy()
        .into_owned();
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => value.clone(),
        _ => std::env::var(&env).ok()?,
    };
    let why = std::error::Error::source(err)
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    Some(format!("{env}: invalid value '{value}'{why}"))
}

/// Whether the argument `id` was typed on the command line (not taken from the environment), at
/// the top or in any subcommand (global arguments may follow the subcommand).
fn given_on_command_line(matches: &clap::ArgMatches, id: &str) -> bool {
    let here = matches.try_get_raw(id).ok().flatten().is_some()
        && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    here || matches
        .subcommand()
        .is_some_and(|(_, sub)| given_on_command_line(sub, id))
}

/// An error already logged where it happened (with JSON logs), not to be printed again.
#[derive(Debug)]
struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("logged")
    }
}

impl std::error::Error for Reported {}

fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

/// The configuration from the settings' sources, in order: defaults, the `--config` file, the
/// environment and the flags (clap read those two into `global`, `matches` tells which was which).
fn load_config(global: &GlobalArgs, matches: &ArgMatches) -> anyhow::Result<(Config, Layers)> {
    let mut layers = Layers::new();
    if let Some(path) = &global.config {
        layers.add_file(path)?;
    }
    layers.add_command_line(&global.settings, matches)?;
    let mut config = layers.build()?;
    if let Some(key) = &global.master_key {
        config.master_key_hex = Some(key.clone().into());
    }
    Ok((config, layers))
}

/// A password from stdin (at most 4 KiB, without the final line break).
fn read_password() -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut input)
        .context("cannot read the password from stdin")?;
    let password = input.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("give the password on stdin");
    }
    Ok(password)
}

const MASTER_KEY_ON_COMMAND_LINE: &str = "a master key given with --master-key is visible to every user of this machine (ps, /proc); use --master-key-file or KEYFOB_MASTER_KEY";

/// Runs one command with the configuration in force.
async fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    let (config, layers) = load_config(&cli.global, matches)?;
    let serving = matches!(cli.command, Command::Serve);
    if serving {
        // From here on the server's logs, JSON ones included, carry every line.
        crate::telemetry::init(config.log_json);
    }
    if given_on_command_line(matches, "master_key") {
        if serving {
            tracing::warn!("{MASTER_KEY_ON_COMMAND_LINE}");
        } else {
            eprintln!("keyfob: warning: {MASTER_KEY_ON_COMMAND_LINE}");
        }
    }
    match cli.command {
        Command::Serve => serve::run(config).await,
        Command::Settings => settings::run(&config, &layers),
        Command::Accounts(command) => accounts::run(&config, command).await,
        Command::Keys(command) => keys::run(&config, command).await,
        Command::Apps(command) => apps::run(&config, command).await,
        Command::Users(command) => users::run(&config, command).await,
        Command::MasterKey(command) => master_key::run(&config, command).await,
        Command::SigningKeys(command) => signing_keys::run(&config, command).await,
        Command::Backup(args) => backup::backup(&config, args).await,
        Command::Restore(args) => backup::restore(&config, args).await,
    }
}
