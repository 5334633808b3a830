//! Reading the mail Keyfob sends: from the outbox it writes when no SMTP server is set, or from a
//! real SMTP server the test starts (aiosmtpd, keeping what it accepts in a Maildir). Messages
//! are parsed as a mail client would (MIME parts, quoted-printable), never matched as raw text.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::TestApp;

/// One message as its reader sees it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Mail {
    /// The first link in the plain-text body whose path starts with `path`, as a path and query
    /// (the server's own address taken off).
    pub fn link(&self, path: &str) -> String {
        self.text
            .split_whitespace()
            .filter_map(|word| word.find("://").map(|_| word))
            .filter_map(|url| {
                let after_scheme = &url[url.find("://")? + 3..];
                let path_start = after_scheme.find('/')?;
                Some(after_scheme[path_start..].to_owned())
            })
            .find(|p| p.starts_with(path))
            .unwrap_or_else(|| panic!("no link to {path} in:\n{}", self.text))
    }
}

fn parse(bytes: &[u8]) -> Mail {
    let message = mail_parser::MessageParser::default()
        .parse(bytes)
        .expect("a readable message");
    let address = |list: Option<&mail_parser::Address>| {
        list.and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
            .to_owned()
    };
    Mail {
        to: address(message.to()),
        from: address(message.from()),
        subject: message.subject().unwrap_or_default().to_owned(),
        text: message
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
        html: message
            .body_html(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
    }
}

/// Every message in the files of `dirs`, oldest first: by name (the outbox's names and a
/// Maildir's start with the time), then by when they were written.
fn read_dirs(dirs: &[PathBuf]) -> Vec<Mail> {
    let mut files: Vec<(String, std::time::SystemTime, PathBuf)> = dirs
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_file())
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| {
            let modified = entry.metadata().and_then(|m| m.modified()).unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, modified, entry.path())
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, _, path)| parse(&std::fs::read(path).unwrap()))
        .collect()
}

/// The messages a server without SMTP wrote to `DATA_DIR/outbox/`.
pub fn outbox(app: &TestApp) -> Vec<Mail> {
    read_dirs(&[app.state.config.data_dir.join("outbox")])
}

/// The newest message to `to` whose subject holds `subject`, once `read` finds it (mail leaves
/// from a queue, a moment after the request).
pub async fn wait_for(read: impl Fn() -> Vec<Mail>, to: &str, subject: &str) -> Mail {
    for _ in 0..200 {
        if let Some(mail) = read()
            .into_iter()
            .rev()
            .find(|m| m.to == to && m.subject.contains(subject))
        {
            return mail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no message to {to} about {subject:?}; there are: {:#?}",
        read()
    );
}

/// The `n`th message (from 1) to `to` whose subject holds `subject`, once `read` finds it.
pub async fn wait_for_nth(read: impl Fn() -> Vec<Mail>, to: &str, subject: &str, n: usize) -> Mail {
    for _ in 0..200 {
        let matching: Vec<Mail> = read()
            .into_iter()
            .filter(|m| m.to == to && m.subject.contains(subject))
            .collect();
        if let Some(mail) = matching.into_iter().nth(n - 1) {
            return mail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no message {n} to {to} about {subject:?}; there are: {:#?}",
        read()
    );
}

/// The newest message in the outbox to `to` about `subject`.
pub async fn outbox_mail(app: &TestApp, to: &str, subject: &str) -> Mail {
    wait_for(|| outbox(app), to, subject).await
}

/// How many messages to `to` are in `mails`.
pub fn count_to(mails: &[Mail], to: &str) -> usize {
    mails.iter().filter(|m| m.to == to).count()
}

/// A real SMTP server on a free loopback port, as long as this lives.
pub struct SmtpSink {
    _child: Child,
    dir: tempfile::TempDir,
    port: u16,
    credentials: Option<(String, String)>,
}

/// The Python with aiosmtpd installed: `KEYFOB_TEST_PYTHON`, Debian's, or the one on the path.
fn python_with_aiosmtpd() -> Option<String> {
    let candidates = std::env::var("KEYFOB_TEST_PYTHON")
        .ok()
        .into_iter()
        .chain(["/usr/bin/python3".to_owned(), "python3".to_owned()]);
    candidates.into_iter().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Whether aiosmtpd is there; without it a test is skipped with a note, or fails under
/// `KEYFOB_REQUIRE_SMTP=1`.
fn available() -> bool {
    if python_with_aiosmtpd().is_some() {
        return true;
    }
    if std::env::var("KEYFOB_REQUIRE_SMTP").as_deref() == Ok("1") {
        panic!("aiosmtpd is not installed (apt-get install python3-aiosmtpd)");
    }
    eprintln!("skipped: aiosmtpd is not installed (apt-get install python3-aiosmtpd)");
    false
}

impl SmtpSink {
    /// Starts the server, requiring AUTH with `credentials` if given. `None` (the test is
    /// skipped) when aiosmtpd is not installed, unless `KEYFOB_REQUIRE_SMTP=1`, as CI sets.
    pub async fn start(credentials: Option<(&str, &str)>) -> Option<SmtpSink> {
        if !available() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Some(SmtpSink::start_on(port, credentials).await)
    }

    /// Starts a server that offers STARTTLS with a certificate for 127.0.0.1 from a CA of its
    /// own, and takes no message before it; also returns the CA's PEM file, for
    /// `smtp_ca_file`. `None` as for [`SmtpSink::start`].
    pub async fn start_tls() -> Option<(SmtpSink, PathBuf)> {
        if !available() {
            return None;
        }
        let pki = tempfile::tempdir().unwrap().keep();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&pki)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Keyfob test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            pki.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = SmtpSink::start_with(
            port,
            None,
            &[
                ("SINK_TLS_CERT", pki.join("server.pem")),
                ("SINK_TLS_KEY", pki.join("server.key")),
            ],
        )
        .await;
        Some((sink, pki.join("ca.pem")))
    }

    /// Starts the server on `port` (aiosmtpd must be installed).
    pub async fn start_on(port: u16, credentials: Option<(&str, &str)>) -> SmtpSink {
        SmtpSink::start_with(port, credentials, &[]).await
    }

    async fn start_with(
        port: u16,
        credentials: Option<(&str, &str)>,
        env: &[(&str, PathBuf)],
    ) -> SmtpSink {
        let python = python_with_aiosmtpd().expect("aiosmtpd is installed");
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/smtp_sink.py");
        let mut command = Command::new(python);
        command
            .arg(script)
            .arg(port.to_string())
            .arg(dir.path().join("maildir"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
            .kill_on_drop(true);
        if let Some((user, password)) = credentials {
            command.args([user, password]);
        }
        let mut child = command.spawn().expect("the SMTP server starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the SMTP server is ready in time")
            .unwrap();
        assert_eq!(ready.as_deref(), Some("ready"));
        SmtpSink {
            _child: child,
            dir,
            port,
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
        }
    }

    /// The URL Keyfob sends through: `smtp://` (STARTTLS if offered, which it is not here),
    /// with the credentials the server requires.
    pub fn url(&self) -> String {
        match &self.credentials {
            Some((user, password)) => format!("smtp://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("smtp://127.0.0.1:{}", self.port),
        }
    }

    /// Every message the server accepted, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let maildir = self.dir.path().join("maildir");
        read_dirs(&[maildir.join("new"), maildir.join("cur")])
    }

    /// The newest message to `to` about `subject`, once it arrives.
    pub async fn mail(&self, to: &str, subject: &str) -> Mail {
        wait_for(|| self.messages(), to, subject).await
    }
}

/// Runs a test body once on SQLite and once on PostgreSQL, as `both_backends!` does, with a
/// server that sends its mail through a real SMTP server started for it: the body gets the
/// server and the SMTP server (`run(app, sink)`). Skipped as [`SmtpSink::start`] is without
/// aiosmtpd.
#[macro_export]
macro_rules! smtp_both_backends {
    ($(async fn $name:ident($app:ident, $sink:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($app: $crate::helpers::TestApp, $sink: $crate::mailbox::SmtpSink) $body

                async fn on(backend: $crate::helpers::Backend) {
                    let Some(sink) = $crate::mailbox::SmtpSink::start(None).await else {
                        return;
                    };
                    match $crate::mailbox::spawn_sending_to(backend, &sink.url(), |_| {}).await {
                        Some(app) => run(app, sink).await,
                        None => eprintln!("skipped: KEYFOB_TEST_POSTGRES_URL is not set"),
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    on($crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    on($crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// A server on `backend` that sends mail through `smtp_url` from `Acme sign-in
/// <no-reply@acme.example>`, adjusted by `adjust`; `None` when the backend's half is skipped.
pub async fn spawn_sending_to(
    backend: crate::helpers::Backend,
    smtp_url: &str,
    adjust: impl FnOnce(&mut keyfob::Config),
) -> Option<TestApp> {
    let db = crate::helpers::fresh_db(backend).await?;
    let mut config = crate::helpers::test_config(&db);
    config.smtp_url = Some(keyfob_domain::mail::SmtpUrl::parse(smtp_url).unwrap());
    config.mail_from = "Acme sign-in <no-reply@acme.example>".into();
    adjust(&mut config);
    Some(crate::helpers::spawn_with(config, std::sync::Arc::new(db)).await)
}
