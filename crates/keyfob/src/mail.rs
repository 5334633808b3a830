//! Sending mail: a queue that a request puts a message on and never waits for, and one task that
//! delivers it, by SMTP (`smtp_url`) or, with none set, by writing it to `DATA_DIR/outbox/` as an
//! `.eml` file and logging its link, so that a local Keyfob needs no mail server.
//!
//! A delivery that fails for a passing reason (a connection refused, a 4xx answer) is tried again
//! later, up to [`RETRY_DELAYS`]; a permanent refusal (5xx) is logged and dropped. The queue is
//! bounded: when it is full a message is dropped and counted rather than holding a request up.
//! The queue lives in memory, so mail still waiting when the process stops is lost; the links
//! it carried can be asked for again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use askama::Template;
use keyfob_domain::mail::{SmtpSecurity, SmtpUrl};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::mpsc;

use crate::config::Config;

/// How many messages may wait to be sent.
const QUEUE: usize = 1024;
/// The waits before each further try of a message whose delivery failed for a passing reason.
pub const RETRY_DELAYS: [Duration; 5] = [
    Duration::from_secs(2),
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(1800),
];
/// The longest one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// A message to send: to whom, about what, and its words.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub to: String,
    pub subject: String,
    pub body: MailBody,
}

/// The words of a message, rendered as plain text and as HTML by the `mail/message.*`
/// templates: paragraphs, an optional button (a link), then smaller print.
#[derive(Debug, Clone, Default)]
pub struct MailBody {
    pub lines: Vec<String>,
    pub action: Option<MailAction>,
    pub after: Vec<String>,
}

/// A message's one link.
#[derive(Debug, Clone)]
pub struct MailAction {
    pub label: String,
    pub url: String,
}

#[derive(Template)]
#[template(path = "mail/message.txt")]
struct TextBody<'a> {
    body: &'a MailBody,
    footer: &'a str,
}

#[derive(Template)]
#[template(path = "mail/message.html")]
struct HtmlBody<'a> {
    subject: &'a str,
    body: &'a MailBody,
    footer: &'a str,
}

/// What every message says at its foot.
const FOOTER: &str = "Sent by Keyfob. You get this because someone entered your address on its pages; \
     if that was not you, you can ignore this message.";

/// A message on the queue.
struct Queued {
    message: Message,
    /// Who it is for and about what, for the log.
    to: String,
    subject: String,
    /// The link it carries, logged when the message goes to the outbox.
    link: Option<String>,
    /// Tries made so far.
    tries: usize,
}

/// Where messages go.
enum Transport {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// The URL without its password, for logs.
        shown: String,
    },
    Outbox(PathBuf),
}

/// The sending side of the queue. Cheap to share; [`Mailer::send`] never waits.
#[derive(Clone)]
pub struct Mailer {
    queue: mpsc::Sender<Queued>,
    from: Mailbox,
}

impl Mailer {
    /// Starts the task that delivers mail as `config` says: by SMTP with `smtp_url`, else to
    /// `DATA_DIR/outbox/`.
    pub fn start(config: &Config) -> anyhow::Result<Mailer> {
        let from: Mailbox = config
            .mail_from
            .parse()
            .with_context(|| format!("mail_from `{}` is not a mail address", config.mail_from))?;
        let transport = match &config.smtp_url {
            Some(url) => Transport::Smtp {
                transport: smtp_transport(url, config.smtp_ca_file.as_deref())?,
                shown: url.redacted(),
            },
            None => Transport::Outbox(config.data_dir.join("outbox")),
        };
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(deliver_all(
            Arc::new(transport),
            receiver,
            queue.downgrade(),
        ));
        Ok(Mailer { queue, from })
    }

    /// Puts a message on the queue, rendered. Never waits: with the queue full it is dropped,
    /// logged and counted.
    pub fn send(&self, mail: Outgoing) {
        let queued = match self.build(&mail) {
            Ok(queued) => queued,
            Err(err) => {
                tracing::error!(error = %err, subject = %mail.subject, "a message could not be built");
                metrics::counter!("keyfob_mail_total", "result" => "invalid").increment(1);
                return;
            }
        };
        if self.queue.try_send(queued).is_err() {
            tracing::warn!(subject = %mail.subject, "the mail queue is full; a message was dropped");
            metrics::counter!("keyfob_mail_total", "result" => "dropped").increment(1);
        }
    }

    fn build(&self, mail: &Outgoing) -> anyhow::Result<Queued> {
        let to: Mailbox = mail
            .to
            .parse()
            .context("the recipient is not a mail address")?;
        let text = TextBody {
            body: &mail.body,
            footer: FOOTER,
        }
        .render()?;
        let html = HtmlBody {
            subject: &mail.subject,
            body: &mail.body,
            footer: FOOTER,
        }
        .render()?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .multipart(MultiPart::alternative_plain_html(text, html))?;
        Ok(Queued {
            message,
            to: mail.to.clone(),
            subject: mail.subject.clone(),
            link: mail.body.action.as_ref().map(|a| a.url.clone()),
            tries: 0,
        })
    }
}

/// An SMTP transport for `url`: STARTTLS when offered (or required), implicit TLS for
/// `smtps://`, with the system's trusted roots and those of `ca_file`; login when the URL
/// carries a user.
fn smtp_transport(
    url: &SmtpUrl,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let extra = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("smtp_ca_file: cannot read {}", path.display()))?;
            Some(Certificate::from_pem(&pem).with_context(|| {
                format!("smtp_ca_file: {} holds no PEM certificate", path.display())
            })?)
        }
        None => None,
    };
    let tls = || {
        let mut builder = TlsParameters::builder(url.host.clone());
        if let Some(cert) = extra.clone() {
            builder = builder.add_root_certificate(cert);
        }
        builder.build().context("TLS settings for the SMTP host")
    };
    let tls = match url.security {
        SmtpSecurity::ImplicitTls => Tls::Wrapper(tls()?),
        SmtpSecurity::Opportunistic => Tls::Opportunistic(tls()?),
        SmtpSecurity::StartTlsRequired => Tls::Required(tls()?),
        SmtpSecurity::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host.clone())
        .port(url.port)
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT));
    if let Some((user, password)) = &url.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}

/// The delivering task: one message at a time, each failure that may pass put back on the queue
/// after its delay. Ends when every [`Mailer`] is gone and the queue is empty.
async fn deliver_all(
    transport: Arc<Transport>,
    mut receiver: mpsc::Receiver<Queued>,
    requeue: mpsc::WeakSender<Queued>,
) {
    // Messages waiting out a retry delay, off the queue: at most as many as the queue holds, so
    // that a mail server that stays down cannot make them pile up.
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    while let Some(mut queued) = receiver.recv().await {
        queued.tries += 1;
        match deliver(&transport, &queued).await {
            Ok(()) => {
                metrics::counter!("keyfob_mail_total", "result" => "sent").increment(1);
            }
            Err(Failure::Permanent(err)) => {
                tracing::error!(error = %err, to = %queued.to, subject = %queued.subject,
                    "the mail server refused a message; it is dropped");
                metrics::counter!("keyfob_mail_total", "result" => "refused").increment(1);
            }
            Err(Failure::Passing(err)) => {
                let Some(delay) = RETRY_DELAYS.get(queued.tries - 1).copied() else {
                    tracing::error!(error = %err, to = %queued.to, subject = %queued.subject,
                        tries = queued.tries, "a message could not be delivered; it is dropped");
                    metrics::counter!("keyfob_mail_total", "result" => "failed").increment(1);
                    continue;
                };
                use std::sync::atomic::Ordering::Relaxed;
                if waiting.fetch_add(1, Relaxed) >= QUEUE {
                    waiting.fetch_sub(1, Relaxed);
                    tracing::error!(error = %err, subject = %queued.subject,
                        "a message could not be delivered and too many wait to be tried again; it is dropped");
                    metrics::counter!("keyfob_mail_total", "result" => "dropped").increment(1);
                    continue;
                }
                tracing::warn!(error = %err, subject = %queued.subject, tries = queued.tries,
                    retry_in_secs = delay.as_secs(), "a message could not be delivered yet");
                metrics::counter!("keyfob_mail_retries_total").increment(1);
                let requeue = requeue.clone();
                let waiting = waiting.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    waiting.fetch_sub(1, Relaxed);
                    if let Some(queue) = requeue.upgrade()
                        && queue.try_send(queued).is_err()
                    {
                        metrics::counter!("keyfob_mail_total", "result" => "dropped").increment(1);
                    }
                });
            }
        }
    }
}

/// Why a delivery failed.
enum Failure {
    /// Worth trying again: no connection, a timeout, a 4xx answer, a full disk.
    Passing(String),
    /// Not worth it: the server refused the message for good (5xx).
    Permanent(String),
}

async fn deliver(transport: &Transport, queued: &Queued) -> Result<(), Failure> {
    match transport {
        Transport::Smtp { transport, shown } => {
            match transport.send(queued.message.clone()).await {
                Ok(_) => {
                    tracing::info!(to = %queued.to, subject = %queued.subject, server = %shown, "mail sent");
                    Ok(())
                }
                Err(err) if err.is_permanent() => Err(Failure::Permanent(err.to_string())),
                Err(err) => Err(Failure::Passing(err.to_string())),
            }
        }
        Transport::Outbox(dir) => {
            let path = write_to_outbox(dir, &queued.message.formatted())
                .await
                .map_err(|err| Failure::Passing(format!("{err:#}")))?;
            tracing::info!(
                to = %queued.to,
                subject = %queued.subject,
                file = %path.display(),
                link = queued.link.as_deref().unwrap_or("-"),
                "mail written to the outbox (no smtp_url is set)"
            );
            Ok(())
        }
    }
}

/// Writes a message to `dir` as `<time>-<id>.eml`, readable by Keyfob's user only (it may hold
/// a live link).
async fn write_to_outbox(dir: &std::path::Path, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let name = format!(
        "{}-{}.eml",
        time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
        uuid::Uuid::new_v4().simple()
    );
    let path = dir.join(&name);
    // Written under another name and renamed, so that a reader never sees half a message.
    let partial = dir.join(format!(".{name}.part"));
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
    tokio::io::AsyncWriteExt::flush(&mut file).await?;
    drop(file);
    tokio::fs::rename(&partial, &path)
        .await
        .with_context(|| format!("renaming {}", partial.display()))?;
    Ok(path)
}
