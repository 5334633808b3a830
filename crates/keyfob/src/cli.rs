//! The `keyfob` command line. Every command takes `--data-dir`, `--database-url` and `--config`
//! (also from `KEYFOB_DATA_DIR`, `KEYFOB_DATABASE_URL`, `KEYFOB_CONFIG`). Errors are one line on
//! stderr and a non-zero exit; only secrets a command just made are printed.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use keyfob_domain::audit::action;

use crate::audit::{self, Actor, AuditEvent};
use crate::clock::{format_ms, now_ms};
use crate::config::{Config, FileConfig, SigningAlg, default_database_url};
use crate::crypto::MasterKey;
use crate::ops;
use crate::passwords::Passwords;
use crate::startup::{Application, open_storage};

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
    /// Where the SQLite database and the master key live.
    #[arg(
        long,
        global = true,
        env = "KEYFOB_DATA_DIR",
        default_value = "./keyfob-data"
    )]
    data_dir: PathBuf,
    /// `postgres://…` for PostgreSQL; default SQLite at DATA_DIR/keyfob.db.
    #[arg(long, global = true, env = "KEYFOB_DATABASE_URL")]
    database_url: Option<String>,
    /// A TOML file of settings (see README).
    #[arg(long, global = true, env = "KEYFOB_CONFIG")]
    config: Option<PathBuf>,
    /// The master key, 64 hex characters; default DATA_DIR/master.key, made on first start. On
    /// the command line it is visible to every user of the machine (`ps`): prefer
    /// --master-key-file or the environment variable.
    #[arg(long, global = true, env = "KEYFOB_MASTER_KEY", hide_env_values = true)]
    master_key: Option<String>,
    /// A file holding the master key (64 hex characters), readable by Keyfob's user only.
    #[arg(
        long,
        global = true,
        env = "KEYFOB_MASTER_KEY_FILE",
        value_name = "PATH"
    )]
    master_key_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
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
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KEYFOB_LISTEN")]
    listen: Option<SocketAddr>,
    /// The URL clients reach Keyfob at (the tokens' issuer); default http://LISTEN.
    #[arg(long, env = "KEYFOB_PUBLIC_URL")]
    public_url: Option<String>,
    /// Algorithm of new signing keys.
    #[arg(long, env = "KEYFOB_SIGNING_ALG")]
    signing_alg: Option<SigningAlg>,
    /// Log one JSON object per line (logs go to stderr; `KEYFOB_LOG` filters them).
    #[arg(long, env = "KEYFOB_LOG_JSON", default_value_t = false)]
    log_json: bool,
    /// A load balancer or proxy (address or network, e.g. 10.0.0.0/8) whose X-Forwarded-For is
    /// believed for the client's address; repeat, or comma-separate in the variable.
    #[arg(
        long = "trusted-proxy",
        env = "KEYFOB_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum AccountsCommand {
    /// Make an account and its owner; the password is read from stdin. Prints the account id.
    Create {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
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

#[derive(Subcommand, Debug)]
enum AppsCommand {
    /// Register an application; prints `client_id` (and `client_secret` for a confidential app)
    /// as JSON.
    Create {
        /// The account's id or an owner's email.
        #[arg(long)]
        account: String,
        #[arg(long)]
        name: String,
        /// An exact redirect URI; repeat for several.
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// A browser origin allowed to call Keyfob from the page (CORS); repeat for several.
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// A public app (single-page or mobile): no secret, PKCE required.
        #[arg(long)]
        public: bool,
        /// The most permissions the app may ask a user for, comma-separated.
        #[arg(long, default_value = "*.read,*.write")]
        max_permissions: String,
        /// End a session when its refresh token goes unused this many seconds (default: never).
        #[arg(long, value_name = "SECS")]
        refresh_idle_secs: Option<i64>,
        /// End a session this many seconds after login, however much it is used (default: never).
        #[arg(long, value_name = "SECS")]
        refresh_max_age_secs: Option<i64>,
        /// Let the app receive tokens in the URL fragment (`response_type=token`); off by default.
        #[arg(long)]
        allow_fragment: bool,
    },
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Make an end user; the password is read from stdin. Prints the user id.
    Create {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand, Debug)]
enum MasterKeyCommand {
    /// Make a new master key and seal again, under it, everything the old one sealed (signing
    /// keys, the accounts' data keys, refresh retry answers). Sensitive values are not
    /// re-encrypted. Restart every node with the new key afterwards.
    Rotate,
}

#[derive(Subcommand, Debug)]
enum SigningKeysCommand {
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
        kid: String,
    },
}

/// Runs the command line; the exit code says whether it worked.
pub async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    if given_on_command_line(&matches, "master_key") {
        eprintln!(
            "keyfob: warning: a master key given with --master-key is visible to every user of this machine (ps, /proc); use --master-key-file or KEYFOB_MASTER_KEY"
        );
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keyfob: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
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

fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

fn load_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let mut config = Config::for_data_dir(&global.data_dir);
    if let Some(path) = &global.config {
        config.apply_file(FileConfig::load(path)?)?;
    }
    if let Some(url) = &global.database_url {
        config.database_url = url.clone();
    } else if config.database_url.is_empty() {
        config.database_url = default_database_url(&global.data_dir);
    }
    if let Some(key) = &global.master_key {
        config.master_key_hex = Some(key.clone().into());
    }
    if let Some(path) = &global.master_key_file {
        config.master_key_file = Some(path.clone());
    }
    Ok(config)
}

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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = load_config(&cli.global)?;
    match cli.command {
        Command::Serve(args) => {
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            if let Some(url) = args.public_url {
                config.public_url = Some(url);
            }
            if let Some(alg) = args.signing_alg {
                config.signing_alg = alg;
            }
            if !args.trusted_proxies.is_empty() {
                config.set_trusted_proxies(&args.trusted_proxies)?;
            }
            crate::telemetry::init(args.log_json);
            let app = Application::build(config).await?;
            let url = app.state().config.issuer();
            println!("Keyfob is listening on {}", app.local_addr());
            println!("Dashboard: {url}/dashboard");
            tracing::info!(addr = %app.local_addr(), backend = app.state().store.backend(), "serving");
            app.run_until_stopped().await
        }
        Command::Accounts(AccountsCommand::Create { email }) => {
            let password = read_password()?;
            let (store, _) = open_storage(&config).await?;
            let (account, _) =
                ops::create_account(store.as_ref(), &Passwords::new(1), &email, password).await?;
            println!("{}", account.id);
            Ok(())
        }
        Command::Keys(command) => {
            let (store, _) = open_storage(&config).await?;
            match command {
                KeysCommand::Create { account, name } => {
                    let account = ops::resolve_account(store.as_ref(), &account).await?;
                    let (row, key) =
                        ops::create_api_key(store.as_ref(), &account.id, &name).await?;
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
                    let account = ops::resolve_account(store.as_ref(), &account).await?;
                    for key in store.list_api_keys(&account.id).await? {
                        println!(
                            "{}\t{}\t{}\t{}\t{}\t{}",
                            key.id,
                            key.name,
                            key.prefix,
                            format_ms(key.created_at),
                            key.last_used_at
                                .map(format_ms)
                                .unwrap_or_else(|| "never".into()),
                            key.revoked_at
                                .map(|t| format!("revoked {}", format_ms(t)))
                                .unwrap_or_else(|| "active".into()),
                        );
                    }
                }
                KeysCommand::Revoke { key_id } => {
                    if !store.revoke_api_key(None, &key_id, now_ms()).await? {
                        bail!("no live API key with id {key_id}");
                    }
                    let account = store.find_api_key(&key_id).await?.map(|k| k.account_id);
                    audit::record_now(
                        store.as_ref(),
                        AuditEvent::new(
                            account.as_deref(),
                            Actor::operator(),
                            action::API_KEY_REVOKED,
                        )
                        .target(&key_id),
                    )
                    .await?;
                    println!("revoked {key_id}");
                }
            }
            Ok(())
        }
        Command::Apps(AppsCommand::Create {
            account,
            name,
            redirect_uris,
            origins,
            public,
            max_permissions,
            refresh_idle_secs,
            refresh_max_age_secs,
            allow_fragment,
        }) => {
            let (store, _) = open_storage(&config).await?;
            let account = ops::resolve_account(store.as_ref(), &account).await?;
            let created = ops::create_app(
                store.as_ref(),
                &account.id,
                ops::NewApp {
                    name,
                    redirect_uris,
                    origins,
                    public,
                    max_permissions,
                    refresh_idle_secs,
                    refresh_max_age_secs,
                    allow_fragment,
                },
            )
            .await?;
            let mut out = serde_json::json!({ "client_id": created.app.client_id });
            if let Some(secret) = created.client_secret {
                out["client_secret"] = secret.into();
            }
            println!("{out}");
            Ok(())
        }
        Command::Users(UsersCommand::Create { email }) => {
            let password = read_password()?;
            let (store, _) = open_storage(&config).await?;
            let user =
                ops::create_user(store.as_ref(), &Passwords::new(1), &email, password).await?;
            println!("{}", user.id);
            Ok(())
        }
        Command::MasterKey(MasterKeyCommand::Rotate) => {
            let (store, old) = open_storage(&config).await?;
            let new = MasterKey::generate();
            let from_config = config.master_key_hex.is_some();
            if from_config {
                // The key lives in configuration, which this command cannot change: show the new
                // one before the database depends on it, so it is never lost.
                println!("{}", new.to_hex());
            } else {
                new.write_pending(&config.master_key_path())?;
            }
            let done = match ops::rotate_master_key(store.as_ref(), &old, &new).await {
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
                "master key rotated: sealed again {} signing keys, {} data keys and {} refresh answers; {place}, and restart every node with it",
                done.signing_keys, done.data_keys, done.refresh_answers
            );
            Ok(())
        }
        Command::SigningKeys(command) => {
            let (store, master) = open_storage(&config).await?;
            match command {
                SigningKeysCommand::Rotate { activate_in, alg } => {
                    if !(0..=7 * 86400).contains(&activate_in) {
                        bail!("--activate-in must be from 0 to 604800 seconds");
                    }
                    let row = ops::rotate_signing_key(
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
                            .detail(serde_json::json!({ "alg": row.alg, "activates_at": format_ms(row.activates_at) })),
                    )
                    .await?;
                    println!(
                        "published {} ({}); it signs from {}",
                        row.kid,
                        row.alg,
                        format_ms(row.activates_at)
                    );
                }
                SigningKeysCommand::List => {
                    let now = now_ms();
                    for key in store.list_signing_keys().await? {
                        println!(
                            "{}\t{}\t{}\t{}\t{}\t{}",
                            key.kid,
                            key.alg,
                            format_ms(key.activates_at),
                            key.retires_at.map(format_ms).unwrap_or_else(|| "-".into()),
                            key.expires_at.map(format_ms).unwrap_or_else(|| "-".into()),
                            signing_key_state(&key, now),
                        );
                    }
                }
                SigningKeysCommand::Retire { kid } => {
                    let retired = ops::retire_signing_key(store.as_ref(), &kid).await?;
                    let heir = retired.heir.as_ref().map(|h| {
                        serde_json::json!({
                            "kid": h.kid,
                            "signs_from": format_ms(h.activates_at),
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
    }
}

/// A signing key's state for `signing-keys list`.
fn signing_key_state(key: &keyfob_store::SigningKeyRow, now: i64) -> String {
    if let Some(at) = key.revoked_at {
        format!(
            "retired {} (compromised; its tokens are refused)",
            format_ms(at)
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
