//! `keyfob backup` and `keyfob restore`: a consistent copy of the embedded SQLite database, made
//! while the server runs, and putting one back while it does not.
//!
//! A backup holds no master key: what the vault sealed stays sealed in it, and only the master key
//! it was made under opens it. `restore` checks that key before it changes anything.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use keyfob_domain::time::Timestamp;

use crate::config::Config;
use crate::crypto::{CHECK_SETTING, MasterKey};

#[derive(Args, Debug)]
pub(super) struct BackupArgs {
    /// The new file to write the copy to (it must not exist).
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
}

#[derive(Args, Debug)]
pub(super) struct RestoreArgs {
    /// A file `keyfob backup` wrote.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
}

/// Where backups of PostgreSQL come from instead.
const POSTGRES: &str = "the database is PostgreSQL: back it up with pg_dump and restore it with pg_restore (see docs/OPERATIONS.md); `keyfob backup` and `keyfob restore` are for the embedded SQLite database";

/// The lock a serving process holds (shared) on its SQLite database, and `restore` (exclusive).
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Holds a shared lock on the SQLite database's lock file while the server runs, so that
/// `keyfob restore` cannot replace the database under it.
pub fn hold_server_lock(config: &Config) -> anyhow::Result<Option<std::fs::File>> {
    if !is_sqlite(config) {
        return Ok(None);
    }
    let file = open_lock(config)?;
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("the database is being restored (keyfob restore); start again when it is done")
        }
        Err(std::fs::TryLockError::Error(err)) => Err(err).context("cannot lock the database"),
    }
}

fn open_lock(config: &Config) -> anyhow::Result<std::fs::File> {
    let path = lock_path(keyfob_store::sqlite_path(&config.database_url));
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))
}

fn is_sqlite(config: &Config) -> bool {
    !(config.database_url.starts_with("postgres://")
        || config.database_url.starts_with("postgresql://"))
}

pub(super) async fn backup(config: &Config, args: BackupArgs) -> anyhow::Result<()> {
    if !is_sqlite(config) {
        bail!(POSTGRES);
    }
    let from = keyfob_store::sqlite_path(&config.database_url).to_owned();
    keyfob_store::back_up_sqlite(&config.database_url, &args.to)
        .await
        .with_context(|| format!("cannot back up {}", from.display()))?;
    let bytes = std::fs::metadata(&args.to).map(|m| m.len()).unwrap_or(0);
    println!(
        "Backed up {} to {} ({bytes} bytes, {}).",
        from.display(),
        args.to.display(),
        Timestamp::now()
    );
    println!(
        "The master key is not in the backup: keep {} too, apart from it; without it no vault value in the backup can be read.",
        master_key_place(config)
    );
    Ok(())
}

pub(super) async fn restore(config: &Config, args: RestoreArgs) -> anyhow::Result<()> {
    if !is_sqlite(config) {
        bail!(POSTGRES);
    }
    let database = keyfob_store::sqlite_path(&config.database_url).to_owned();
    let lock = open_lock_for_restore(config, &database)?;

    // Everything is checked before anything changes.
    let facts = keyfob_store::inspect_sqlite_backup(&args.from, CHECK_SETTING)
        .await
        .with_context(|| format!("cannot use {} as a backup", args.from.display()))?;
    let newest = keyfob_store::latest_sqlite_migration();
    if let Some(version) = facts.migration
        && version > newest
    {
        bail!(
            "{} was made by a newer Keyfob (its schema is at {version}, this one knows up to {newest}): restore it with that version or a later one",
            args.from.display()
        );
    }
    let Some(check) = facts.setting else {
        bail!(
            "{} holds no master-key check: it is not a Keyfob database",
            args.from.display()
        );
    };
    let master = load_master_key(config)?;
    if master.verify_check_value(&check).is_err() {
        bail!(
            "{} was made under another master key than {}: nothing was changed. Put the master key it was made with in place (or point --master-key-file at it) and run restore again",
            args.from.display(),
            master_key_place(config)
        );
    }

    // The database in place is kept aside, as a consistent copy of its own.
    let mut kept = None;
    if database.exists() {
        let aside = aside_path(&database);
        keyfob_store::back_up_sqlite(&config.database_url, &aside)
            .await
            .with_context(|| format!("cannot keep a copy of {}", database.display()))?;
        kept = Some(aside);
    }
    // The backup goes in under a temporary name first, then takes the database's name at once.
    let incoming = sibling(&database, ".restoring");
    let _ = std::fs::remove_file(&incoming);
    copy_private(&args.from, &incoming)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = sibling(&database, suffix);
        if side.exists() {
            std::fs::remove_file(&side)
                .with_context(|| format!("cannot remove {}", side.display()))?;
        }
    }
    std::fs::rename(&incoming, &database).with_context(|| {
        format!(
            "cannot move {} to {}",
            incoming.display(),
            database.display()
        )
    })?;
    drop(lock);
    println!(
        "Restored {} from {}.",
        database.display(),
        args.from.display()
    );
    if let Some(kept) = kept {
        println!("The database it replaced is kept at {}.", kept.display());
    }
    println!(
        "Start the server: it applies any newer migrations to the restored database. Tokens revoked after the backup was made are valid again until they expire: revoke them again if that matters."
    );
    Ok(())
}

/// The exclusive lock on the database's lock file: refused while a server runs on it.
fn open_lock_for_restore(config: &Config, database: &Path) -> anyhow::Result<std::fs::File> {
    let file = open_lock(config)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "a Keyfob server is running on {}: stop it (every node using this database) before restoring",
            database.display()
        ),
        Err(std::fs::TryLockError::Error(err)) => Err(err).context("cannot lock the database"),
    }
}

/// The master key in force, without making one.
fn load_master_key(config: &Config) -> anyhow::Result<MasterKey> {
    match (&config.master_key_hex, &config.master_key_file) {
        (Some(_), Some(_)) => bail!(
            "the master key is given twice: use either --master-key-file (KEYFOB_MASTER_KEY_FILE) or KEYFOB_MASTER_KEY"
        ),
        (Some(hex), None) => MasterKey::from_hex(secrecy::ExposeSecret::expose_secret(hex)),
        (None, _) => {
            let path = config.master_key_path();
            if !path.exists() {
                bail!(
                    "there is no master key at {}: put the master key the backup was made with there (or give --master-key-file)",
                    path.display()
                );
            }
            MasterKey::load(&path)
        }
    }
}

fn master_key_place(config: &Config) -> String {
    if config.master_key_hex.is_some() {
        "the master key (KEYFOB_MASTER_KEY)".to_owned()
    } else {
        config.master_key_path().display().to_string()
    }
}

/// `keyfob.db.before-restore-20261201T101500Z`.
fn aside_path(database: &Path) -> PathBuf {
    let stamp = Timestamp::now()
        .to_date_time()
        .format(&time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "now".to_owned());
    sibling(database, &format!(".before-restore-{stamp}"))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Copies `from` to the new file `to`, readable by its owner only, and syncs it to disk.
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut target = options
        .open(to)
        .with_context(|| format!("cannot create {}", to.display()))?;
    let mut source =
        std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    std::io::copy(&mut source, &mut target)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    target.sync_all()?;
    Ok(())
}
