//! What Keyfob leaves on disk is private: the data directory (0700), the SQLite database and its
//! `-wal`/`-shm` files (0600), the master key (0600); and the master key can be given in a file
//! rather than on a command line that every user of the machine can read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::cli::{fails_with, keyfob, stdout};
use crate::helpers::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A test database whose data directory does not exist yet: Keyfob makes it.
fn database_in_new_dir() -> (TestDb, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("keyfob-data");
    let url = format!("sqlite://{}", data.join("keyfob.db").display());
    (TestDb { url, dir }, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_directory_database_and_master_key_are_private() {
    let (db, data) = database_in_new_dir();
    let mut config = test_config(&db);
    config.data_dir = data.clone();
    let app = spawn_with(config, Arc::new(db)).await;
    // A write, so that SQLite has made its write-ahead log and shared-memory files.
    let (_, key) = app.account_with_key().await;
    assert_eq!(app.whoami_status(&key).await, 200);

    assert_eq!(mode(&data), 0o700, "data directory");
    for file in ["keyfob.db", "keyfob.db-wal", "keyfob.db-shm", "master.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_others_could_read_is_made_private_on_start() {
    let (db, data) = database_in_new_dir();
    // An older deployment: directory and files made with a permissive umask.
    let mut config = test_config(&db);
    config.data_dir = data.clone();
    let app = spawn_with(config.clone(), Arc::new(db)).await;
    app.account_with_key().await;
    let db = app.db.clone();
    drop(app);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for file in ["keyfob.db", "keyfob.db-wal", "keyfob.db-shm"] {
        let path = data.join(file);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    assert_eq!(mode(&data.join("keyfob.db")), 0o644);

    let app = spawn_with(config, db).await;
    app.account_with_key().await;
    for file in ["keyfob.db", "keyfob.db-wal", "keyfob.db-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

#[test]
fn the_master_key_can_come_from_a_file_and_a_key_on_the_command_line_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb {
        url: format!("sqlite://{}", dir.path().join("keyfob.db").display()),
        dir,
    };
    let key_file = db.dir.path().join("operator.key");
    let hex_key = "ab".repeat(32);
    std::fs::write(&key_file, format!("{hex_key}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key_file = key_file.to_str().unwrap();
    let password = format!("{PASSWORD}\n");

    // The file's key is the one the database is sealed with: no master.key is made.
    let created = keyfob(
        &db,
        &[
            "--master-key-file",
            key_file,
            "accounts",
            "create",
            "--email",
            "files@example.com",
        ],
        Some(&password),
    );
    let account = stdout(&created);
    assert!(
        String::from_utf8_lossy(&created.stderr).is_empty(),
        "no warning for a file"
    );
    assert!(!db.dir.path().join("master.key").exists());
    // The same key given as a value opens it too, with a warning that `ps` shows it.
    let listed = keyfob(
        &db,
        &[
            "keys",
            "list",
            "--account",
            account.trim(),
            "--master-key",
            &hex_key,
        ],
        None,
    );
    stdout(&listed);
    let warning = String::from_utf8_lossy(&listed.stderr);
    assert!(
        warning.contains("--master-key") && warning.contains("--master-key-file"),
        "{warning}"
    );
    // From the environment: no warning.
    let from_env = std::process::Command::new(env!("CARGO_BIN_EXE_keyfob"))
        .args([
            "--data-dir",
            db.dir.path().to_str().unwrap(),
            "--database-url",
            &db.url,
        ])
        .args(["keys", "list", "--account", account.trim()])
        .env("KEYFOB_MASTER_KEY", &hex_key)
        .env_remove("KEYFOB_MASTER_KEY_FILE")
        .env_remove("KEYFOB_CONFIG")
        .output()
        .unwrap();
    stdout(&from_env);
    assert!(String::from_utf8_lossy(&from_env.stderr).is_empty());

    // Another key, a missing file, or two keys at once are refused with one clear line.
    let other = db.dir.path().join("other.key");
    std::fs::write(&other, "cd".repeat(32)).unwrap();
    fails_with(
        &keyfob(
            &db,
            &[
                "--master-key-file",
                other.to_str().unwrap(),
                "keys",
                "list",
                "--account",
                account.trim(),
            ],
            None,
        ),
        "master key",
    );
    fails_with(
        &keyfob(
            &db,
            &[
                "--master-key-file",
                "/nonexistent/keyfob.key",
                "keys",
                "list",
                "--account",
                account.trim(),
            ],
            None,
        ),
        "/nonexistent/keyfob.key",
    );
    let both = keyfob(
        &db,
        &[
            "--master-key-file",
            key_file,
            "--master-key",
            &hex_key,
            "keys",
            "list",
            "--account",
            account.trim(),
        ],
        None,
    );
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("given twice"));
}
