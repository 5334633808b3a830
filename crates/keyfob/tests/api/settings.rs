//! The table of settings, through the `keyfob` binary: every setting from the TOML file, the
//! environment and a flag, each over the one before; values out of range refused with their source
//! named; unknown TOML keys refused. `keyfob settings` prints what is in force and where it came
//! from.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use crate::cli::fails_with;

/// One setting: its TOML key, variable and flag, then a value for each source as that source
/// writes it and as `keyfob settings` prints it back (a TOML value). Each source's value differs
/// from the one before, so the winner shows.
struct Row {
    key: &'static str,
    env: &'static str,
    flag: &'static str,
    file: &'static str,
    env_value: &'static str,
    env_shown: &'static str,
    flag_value: &'static str,
    flag_shown: &'static str,
}

const fn row(
    key: &'static str,
    env: &'static str,
    flag: &'static str,
    [file, env_value, env_shown, flag_value, flag_shown]: [&'static str; 5],
) -> Row {
    Row {
        key,
        env,
        flag,
        file,
        env_value,
        env_shown,
        flag_value,
        flag_shown,
    }
}

/// A number given the same way in each source.
const fn number(
    key: &'static str,
    env: &'static str,
    flag: &'static str,
    n: [&'static str; 3],
) -> Row {
    row(key, env, flag, [n[0], n[1], n[1], n[2], n[2]])
}

#[rustfmt::skip]
const TABLE: &[Row] = &[
    row("data_dir", "KEYFOB_DATA_DIR", "--data-dir", [r#""/srv/a""#, "/srv/b", r#""/srv/b""#, "/srv/c", r#""/srv/c""#]),
    row("database_url", "KEYFOB_DATABASE_URL", "--database-url", [r#""sqlite:///srv/a.db""#, "postgres://kf:pw@db/b", r#""postgres://kf:***@db/b""#, "sqlite:///srv/c.db", r#""sqlite:///srv/c.db""#]),
    number("database_timeout_ms", "KEYFOB_DATABASE_TIMEOUT_MS", "--database-timeout-ms", ["1000", "2000", "3000"]),
    number("database_connect_timeout_ms", "KEYFOB_DATABASE_CONNECT_TIMEOUT_MS", "--database-connect-timeout-ms", ["300", "400", "500"]),
    number("database_probe_interval_ms", "KEYFOB_DATABASE_PROBE_INTERVAL_MS", "--database-probe-interval-ms", ["100", "200", "300"]),
    row("master_key_file", "KEYFOB_MASTER_KEY_FILE", "--master-key-file", [r#""/srv/a.key""#, "/srv/b.key", r#""/srv/b.key""#, "/srv/c.key", r#""/srv/c.key""#]),
    row("listen", "KEYFOB_LISTEN", "--listen", [r#""127.0.0.1:9001""#, "127.0.0.1:9002", r#""127.0.0.1:9002""#, "[::1]:9003", r#""[::1]:9003""#]),
    row("public_url", "KEYFOB_PUBLIC_URL", "--public-url", [r#""https://a.example""#, "https://b.example", r#""https://b.example""#, "https://c.example", r#""https://c.example""#]),
    row("signing_alg", "KEYFOB_SIGNING_ALG", "--signing-alg", [r#""ES256""#, "EdDSA", r#""EdDSA""#, "ES256", r#""ES256""#]),
    row("audience", "KEYFOB_AUDIENCE", "--audience", [r#""a""#, "b", r#""b""#, "c", r#""c""#]),
    number("token_default_days", "KEYFOB_TOKEN_DEFAULT_DAYS", "--token-default-days", ["10", "20", "30"]),
    number("token_max_days", "KEYFOB_TOKEN_MAX_DAYS", "--token-max-days", ["100", "200", "300"]),
    row("signup_open", "KEYFOB_SIGNUP_OPEN", "--signup-open", ["false", "true", "true", "false", "false"]),
    number("password_workers", "KEYFOB_PASSWORD_WORKERS", "--password-workers", ["3", "4", "5"]),
    number("sync_interval_ms", "KEYFOB_SYNC_INTERVAL_MS", "--sync-interval-ms", ["100", "200", "300"]),
    number("key_lookups_per_second", "KEYFOB_KEY_LOOKUPS_PER_SECOND", "--key-lookups-per-second", ["30", "40", "50"]),
    number("rate_limit_nodes", "KEYFOB_RATE_LIMIT_NODES", "--rate-limit-nodes", ["2", "3", "4"]),
    number("max_body_bytes", "KEYFOB_MAX_BODY_BYTES", "--max-body-bytes", ["1000", "2000", "3000"]),
    number("login_attempts_per_minute", "KEYFOB_LOGIN_ATTEMPTS_PER_MINUTE", "--login-attempts-per-minute", ["11", "12", "13"]),
    number("login_attempts_per_email_and_address", "KEYFOB_LOGIN_ATTEMPTS_PER_EMAIL_AND_ADDRESS", "--login-attempts-per-email-and-address", ["6", "7", "8"]),
    number("login_attempts_per_email", "KEYFOB_LOGIN_ATTEMPTS_PER_EMAIL", "--login-attempts-per-email", ["51", "52", "53"]),
    number("login_attempts_per_device", "KEYFOB_LOGIN_ATTEMPTS_PER_DEVICE", "--login-attempts-per-device", ["14", "15", "16"]),
    number("audit_anonymous_events", "KEYFOB_AUDIT_ANONYMOUS_EVENTS", "--audit-anonymous-events", ["0", "1", "2"]),
    number("audit_anonymous_window_secs", "KEYFOB_AUDIT_ANONYMOUS_WINDOW_SECS", "--audit-anonymous-window-secs", ["60", "120", "180"]),
    number("refresh_grace_secs", "KEYFOB_REFRESH_GRACE_SECS", "--refresh-grace-secs", ["0", "10", "600"]),
    number("token_cache_bytes", "KEYFOB_TOKEN_CACHE_BYTES", "--token-cache-bytes", ["0", "1024", "2048"]),
    row("trusted_proxies", "KEYFOB_TRUSTED_PROXIES", "--trusted-proxy", [r#"["10.0.0.0/8"]"#, "10.1.0.0/16,192.0.2.7", r#"["10.1.0.0/16", "192.0.2.7/32"]"#, "::1", r#"["::1/128"]"#]),
    number("header_timeout_secs", "KEYFOB_HEADER_TIMEOUT_SECS", "--header-timeout-secs", ["1", "2", "3"]),
    number("body_timeout_secs", "KEYFOB_BODY_TIMEOUT_SECS", "--body-timeout-secs", ["4", "5", "6"]),
    number("idle_timeout_secs", "KEYFOB_IDLE_TIMEOUT_SECS", "--idle-timeout-secs", ["7", "8", "9"]),
    number("max_connections", "KEYFOB_MAX_CONNECTIONS", "--max-connections", ["1", "2", "3"]),
    number("max_connections_per_ip", "KEYFOB_MAX_CONNECTIONS_PER_IP", "--max-connections-per-ip", ["4", "5", "6"]),
    row("log_json", "KEYFOB_LOG_JSON", "--log-json", ["true", "false", "false", "true", "true"]),
    row("access_log", "KEYFOB_ACCESS_LOG", "--access-log", ["true", "false", "false", "true", "true"]),
    row("metrics_listen", "KEYFOB_METRICS_LISTEN", "--metrics-listen", [r#""127.0.0.1:9101""#, "127.0.0.1:9102", r#""127.0.0.1:9102""#, "[::1]:9103", r#""[::1]:9103""#]),
    row("metrics_token_file", "KEYFOB_METRICS_TOKEN_FILE", "--metrics-token-file", [r#""/srv/a.token""#, "/srv/b.token", r#""/srv/b.token""#, "/srv/c.token", r#""/srv/c.token""#]),
    row("smtp_url", "KEYFOB_SMTP_URL", "--smtp-url", [r#""smtp://a.example:25""#, "smtps://u:pw@b.example", r#""smtps://u:***@b.example:465""#, "smtp://c.example:2525?tls=required", r#""smtp://c.example:2525?tls=required""#]),
    row("smtp_ca_file", "KEYFOB_SMTP_CA_FILE", "--smtp-ca-file", [r#""/srv/a.pem""#, "/srv/b.pem", r#""/srv/b.pem""#, "/srv/c.pem", r#""/srv/c.pem""#]),
    row("mail_from", "KEYFOB_MAIL_FROM", "--mail-from", [r#""a@example.com""#, "Keyfob <b@example.com>", r#""Keyfob <b@example.com>""#, "c@example.com", r#""c@example.com""#]),
    number("mail_per_address_per_hour", "KEYFOB_MAIL_PER_ADDRESS_PER_HOUR", "--mail-per-address-per-hour", ["21", "22", "23"]),
    number("mail_per_email_per_hour", "KEYFOB_MAIL_PER_EMAIL_PER_HOUR", "--mail-per-email-per-hour", ["6", "7", "8"]),
];

/// `keyfob` with exactly these variables (nothing from the test's own environment) and arguments.
fn keyfob(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyfob"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("keyfob runs")
}

/// `keyfob settings`' lines as key → (value, where it came from).
fn settings(env: &[(&str, &str)], args: &[&str]) -> BTreeMap<String, (String, String)> {
    let output = keyfob(env, &[args, &["settings"]].concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(" = ")?;
            let (value, origin) = rest.rsplit_once("  # ")?;
            Some((key.to_owned(), (value.to_owned(), origin.to_owned())))
        })
        .collect()
}

fn write_toml(dir: &Path, text: &str) -> String {
    let path = dir.join("keyfob.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn every_setting_is_taken_from_the_file_then_the_environment_then_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file: String = TABLE
        .iter()
        .map(|r| format!("{} = {}\n", r.key, r.file))
        .collect();
    let path = write_toml(dir.path(), &file);
    let env: Vec<(&str, &str)> = TABLE.iter().map(|r| (r.env, r.env_value)).collect();
    let flags: Vec<String> = TABLE
        .iter()
        .map(|r| format!("{}={}", r.flag, r.flag_value))
        .collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();

    let from_file = settings(&[], &["--config", &path]);
    let from_env = settings(&env, &["--config", &path]);
    let from_flags = settings(&env, &[&["--config", path.as_str()][..], &flags].concat());
    for r in TABLE {
        assert_eq!(
            from_file[r.key],
            (r.file.to_owned(), path.clone()),
            "{}",
            r.key
        );
        assert_eq!(
            from_env[r.key],
            (r.env_shown.to_owned(), r.env.to_owned()),
            "{}",
            r.key
        );
        assert_eq!(
            from_flags[r.key],
            (r.flag_shown.to_owned(), r.flag.to_owned()),
            "{}",
            r.key
        );
    }
    // The table above is the whole table: a new setting must be added to it (and to the README).
    let listed: Vec<&str> = TABLE.iter().map(|r| r.key).collect();
    assert_eq!(from_flags.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut sorted = listed.clone();
        sorted.sort();
        sorted
    });
}

#[test]
fn flags_may_follow_the_subcommand_and_a_value_may_be_split_from_its_flag() {
    let out = keyfob(
        &[],
        &[
            "--log-json",
            "settings",
            "--max-connections",
            "9",
            "--trusted-proxy",
            "::1",
        ],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("log_json = true  # --log-json"), "{text}");
    assert!(
        text.contains("max_connections = 9  # --max-connections"),
        "{text}"
    );
    assert!(
        text.contains(r#"trusted_proxies = ["::1/128"]  # --trusted-proxy"#),
        "{text}"
    );
}

#[test]
fn without_any_source_each_setting_has_its_default() {
    let shown = settings(&[], &[]);
    for (key, (_, origin)) in &shown {
        assert_eq!(origin, "default", "{key}");
    }
    assert_eq!(shown["listen"].0, r#""127.0.0.1:8080""#);
    assert_eq!(shown["header_timeout_secs"].0, "10");
    assert_eq!(shown["token_cache_bytes"].0, "8388608");
    assert_eq!(
        shown["database_url"].0,
        r#""sqlite://./keyfob-data/keyfob.db""#
    );
    // A data directory from a source moves the default database with it.
    let moved = settings(&[("KEYFOB_DATA_DIR", "/srv/kf")], &[]);
    assert_eq!(
        moved["database_url"],
        (
            r#""sqlite:///srv/kf/keyfob.db""#.to_owned(),
            "default".to_owned()
        )
    );
}

/// Settings with a range, and a value outside it.
const OUT_OF_RANGE: &[(&str, &str, &str)] = &[
    ("database_timeout_ms", "99", "must be from 100 to 600000"),
    (
        "database_connect_timeout_ms",
        "60001",
        "must be from 100 to 60000",
    ),
    (
        "database_probe_interval_ms",
        "49",
        "must be from 50 to 60000",
    ),
    ("token_max_days", "0", "must be from 1 to 36600"),
    ("token_default_days", "733", "must be from 1 to 732"),
    ("password_workers", "0", "must be at least 1"),
    ("sync_interval_ms", "2001", "must be from 50 to 2000"),
    ("key_lookups_per_second", "0", "must be at least 1"),
    ("rate_limit_nodes", "0", "must be from 1 to 1000"),
    ("max_body_bytes", "0", "must be at least 1"),
    ("login_attempts_per_minute", "0", "must be at least 1"),
    (
        "login_attempts_per_email_and_address",
        "0",
        "must be at least 1",
    ),
    ("login_attempts_per_email", "0", "must be at least 1"),
    ("login_attempts_per_device", "0", "must be at least 1"),
    (
        "audit_anonymous_window_secs",
        "86401",
        "must be from 1 to 86400",
    ),
    ("refresh_grace_secs", "-1", "must be from 0 to 600"),
    ("header_timeout_secs", "0", "must be at least 1"),
    ("body_timeout_secs", "0", "must be at least 1"),
    ("idle_timeout_secs", "0", "must be at least 1"),
    ("max_connections", "0", "must be at least 1"),
    ("max_connections_per_ip", "0", "must be at least 1"),
];

#[test]
fn a_value_out_of_range_is_refused_with_its_source_named() {
    let dir = tempfile::tempdir().unwrap();
    for &(key, bad, why) in OUT_OF_RANGE {
        let row = TABLE.iter().find(|r| r.key == key).unwrap();
        let path = write_toml(dir.path(), &format!("{key} = {bad}\n"));
        fails_with(
            &keyfob(&[], &["--config", &path, "settings"]),
            &format!("keyfob: {path}: {key}: {why}"),
        );
        fails_with(
            &keyfob(&[(row.env, bad)], &["settings"]),
            &format!("keyfob: {}: {why}", row.env),
        );
        fails_with(
            &keyfob(&[], &["settings", &format!("{}={bad}", row.flag)]),
            &format!("keyfob: {}: {why}", row.flag),
        );
    }
}

#[test]
fn a_refused_value_stops_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    // The server refuses to start, and so does a command that only opens the database.
    for command in [
        &["serve"][..],
        &["keys", "list", "--account", "a@example.com"],
    ] {
        let out = keyfob(
            &[("KEYFOB_MAX_CONNECTIONS", "0"), ("KEYFOB_DATA_DIR", &data)],
            command,
        );
        fails_with(&out, "keyfob: KEYFOB_MAX_CONNECTIONS: must be at least 1");
    }
    // Text settings have their own rules.
    fails_with(
        &keyfob(&[("KEYFOB_PUBLIC_URL", "keyfob.example")], &["settings"]),
        "keyfob: KEYFOB_PUBLIC_URL: must start with http:// or https://",
    );
    fails_with(
        &keyfob(&[], &["settings", "--audience="]),
        "keyfob: --audience: must not be empty",
    );
    fails_with(
        &keyfob(
            &[("KEYFOB_TRUSTED_PROXIES", "10.0.0.0/8,nope")],
            &["settings"],
        ),
        "keyfob: KEYFOB_TRUSTED_PROXIES: `nope` is not an IP address or network",
    );
    // A value that is not one at all, from the environment, is refused by the variable's name.
    let out = keyfob(&[("KEYFOB_LISTEN", "nope")], &["settings"]);
    fails_with(&out, "keyfob: KEYFOB_LISTEN: invalid value 'nope'");
    let out = keyfob(&[("KEYFOB_SIGNUP_OPEN", "maybe")], &["settings"]);
    fails_with(&out, "keyfob: KEYFOB_SIGNUP_OPEN: invalid value 'maybe'");
    // A maximum token lifetime below the default lifetime, when only the maximum is given.
    fails_with(
        &keyfob(&[("KEYFOB_TOKEN_MAX_DAYS", "30")], &["settings"]),
        "keyfob: KEYFOB_TOKEN_MAX_DAYS: must be at least token_default_days (365)",
    );
}

#[test]
fn only_the_value_in_force_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_toml(dir.path(), "max_connections = 0\n");
    let shown = settings(&[("KEYFOB_MAX_CONNECTIONS", "5")], &["--config", &path]);
    assert_eq!(
        shown["max_connections"],
        ("5".to_owned(), "KEYFOB_MAX_CONNECTIONS".to_owned())
    );
}

#[test]
fn an_unknown_key_in_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_toml(dir.path(), "max_conections = 5\n");
    fails_with(
        &keyfob(&[], &["--config", &path, "settings"]),
        "unknown field `max_conections`",
    );
    // A value of the wrong type, too.
    let path = write_toml(dir.path(), "max_connections = \"many\"\n");
    fails_with(
        &keyfob(&[], &["--config", &path, "serve"]),
        "invalid config file",
    );
}

#[test]
fn the_readme_documents_every_setting_with_its_three_names() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for r in TABLE {
        let line = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", r.key)))
            .unwrap_or_else(|| panic!("README has a row for {}", r.key));
        assert!(line.contains(&format!("`{}`", r.env)), "{line}");
        assert!(line.contains(&format!("`{}`", r.flag)), "{line}");
    }
}
