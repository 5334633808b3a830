//! The links Keyfob mails to owners and end users, the same for both: email verification,
//! password reset, and the note to someone whose address was used to sign up again.
//!
//! A link carries a random token; only its SHA-256 hash is stored, with what it is for, whom it
//! names, the address it went to and when it expires (`keyfob_domain::mail::LinkPurpose`). The
//! statement that acts on a link also uses it up, so it works once.
//!
//! A forgotten-password request must not tell whether anyone has the address, by its answer or by
//! its timing: the form answers the same page at once, and the lookup, the link and the message
//! happen afterwards, off the request ([`request_reset`]).

use keyfob_domain::email::Email;
use keyfob_domain::mail::LinkPurpose;
use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_domain::time::Timestamp;
use keyfob_store::EmailLinkRow;

use super::LoginSubject;
use crate::mail::{MailAction, MailBody, Outgoing};
use crate::state::AppState;
use crate::web::PageError;

/// The path, under the pages' root (`/dashboard` or `/auth`), that each link opens.
pub fn link_path(purpose: LinkPurpose) -> &'static str {
    match purpose {
        LinkPurpose::Verify => "/verify",
        LinkPurpose::Reset => "/reset",
        LinkPurpose::ChangeEmail => "/account/email/confirm",
    }
}

/// The absolute address of a link for `T`'s pages.
fn link_url<T: LoginSubject>(state: &AppState, purpose: LinkPurpose, token: &str) -> String {
    format!(
        "{}{}{}?token={token}",
        state.tokens.issuer().trim_end_matches('/'),
        T::PAGES.path.trim_end_matches('/'),
        link_path(purpose)
    )
}

/// Makes a link for `subject`, stores it (the earlier unused links of the same purpose stop
/// working) and returns its address. `email` is where it goes (a new address, for a change of
/// email); `next` is kept with it (an end user's authorization request).
async fn new_link<T: LoginSubject>(
    state: &AppState,
    subject: &T,
    purpose: LinkPurpose,
    email: &str,
    next: Option<String>,
) -> Result<String, PageError> {
    let token = random_token();
    let now = Timestamp::now();
    state
        .store
        .insert_email_link(&EmailLinkRow {
            token_hash: hash_secret(&token),
            purpose,
            person: T::PERSON,
            subject_id: subject.id_str().to_owned(),
            email: email.to_owned(),
            next: next.filter(|n| !n.is_empty()),
            created_at: now,
            expires_at: now + purpose.lifetime(),
            used_at: None,
        })
        .await?;
    Ok(link_url::<T>(state, purpose, &token))
}

/// Where the pages are, for the words of a message: the dashboard, or the application's login.
fn place<T: LoginSubject>() -> &'static str {
    match T::PERSON {
        keyfob_domain::mail::PersonKind::Owner => "the Keyfob dashboard",
        keyfob_domain::mail::PersonKind::User => "your account",
    }
}

/// Mails `subject` a link that verifies their address.
pub async fn send_verification<T: LoginSubject>(
    state: &AppState,
    subject: &T,
    next: Option<String>,
) -> Result<(), PageError> {
    let purpose = LinkPurpose::Verify;
    let url = new_link(state, subject, purpose, subject.email(), next).await?;
    state.mail.send(Outgoing {
        to: subject.email().to_owned(),
        subject: "Confirm your email address".into(),
        body: MailBody {
            lines: vec![format!(
                "Confirm that {} is your address for {}.",
                subject.email(),
                place::<T>()
            )],
            action: Some(MailAction {
                label: "Confirm my email address".into(),
                url,
            }),
            after: vec![format!(
                "The link works once, for {}. If you did not sign up, ignore this message: nothing \
                 happens without it.",
                purpose.lifetime_words()
            )],
        },
    });
    Ok(())
}

/// Mails `subject` a link to choose a new password.
async fn send_reset<T: LoginSubject>(
    state: &AppState,
    subject: &T,
    next: Option<String>,
) -> Result<(), PageError> {
    let purpose = LinkPurpose::Reset;
    let url = new_link(state, subject, purpose, subject.email(), next).await?;
    state.mail.send(Outgoing {
        to: subject.email().to_owned(),
        subject: "Reset your password".into(),
        body: MailBody {
            lines: vec![format!(
                "Someone asked to reset the password of {} on {}.",
                subject.email(),
                place::<T>()
            )],
            action: Some(MailAction {
                label: "Choose a new password".into(),
                url,
            }),
            after: vec![format!(
                "The link works once, for {}. Choosing a new password logs you out everywhere. If \
                 you did not ask for this, ignore this message: your password stays as it is.",
                purpose.lifetime_words()
            )],
        },
    });
    Ok(())
}

/// What became of a forgotten-password request, for the audit log.
pub enum ResetRequest<T> {
    /// A link was mailed to this person.
    Sent(T),
    /// No one of this kind has the address; nothing was sent.
    NoSuchPerson,
}

/// Looks `email` up among `T` and, if someone has it, mails them a reset link. Meant to run off
/// the request (spawned), so that its answer and its timing are the same either way; it first
/// waits a random 20 to 120 ms, so that its work does not even compete with the answer's.
pub async fn request_reset<T: LoginSubject>(
    state: &AppState,
    email: &str,
    next: Option<String>,
) -> Result<ResetRequest<T>, PageError> {
    let pause = 20 + u64::from(rand::random::<u8>()) * 100 / 255;
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
    let Ok(email) = Email::parse(email) else {
        return Ok(ResetRequest::NoSuchPerson);
    };
    match T::find_by_email(state, email.as_str()).await? {
        Some(subject) => {
            send_reset(state, &subject, next).await?;
            Ok(ResetRequest::Sent(subject))
        }
        None => Ok(ResetRequest::NoSuchPerson),
    }
}

/// Mails the holder of an address that someone tried to sign up with again: they have an
/// account already, and can log in or reset their password. Sign-up answers as if the account
/// were new, so the form says nothing about who has one.
pub fn send_already_registered<T: LoginSubject>(state: &AppState, subject: &T, request: &str) {
    let root = format!(
        "{}{}",
        state.tokens.issuer().trim_end_matches('/'),
        T::PAGES.path.trim_end_matches('/')
    );
    let query = if request.is_empty() {
        String::new()
    } else {
        format!("?{request}")
    };
    state.mail.send(Outgoing {
        to: subject.email().to_owned(),
        subject: "You already have an account".into(),
        body: MailBody {
            lines: vec![
                format!(
                    "Someone tried to create an account with {} on {}, but you already have one.",
                    subject.email(),
                    place::<T>()
                ),
                "If that was you, log in instead. If you forgot your password, use \"Forgot \
                 password?\" on the login page."
                    .into(),
            ],
            action: Some(MailAction {
                label: "Log in".into(),
                url: format!("{root}/login{query}"),
            }),
            after: vec![
                "If it was not you, you can ignore this message: no account was made and your \
                 password was not changed."
                    .into(),
            ],
        },
    });
}

/// Mails an owner's new address a link that moves their login to it, and their current address
/// a note that a change was asked for.
pub async fn send_change_email(
    state: &AppState,
    owner: &keyfob_store::Owner,
    new_email: &str,
) -> Result<(), PageError> {
    let purpose = LinkPurpose::ChangeEmail;
    let url = new_link(state, owner, purpose, new_email, None).await?;
    state.mail.send(Outgoing {
        to: new_email.to_owned(),
        subject: "Confirm your new email address".into(),
        body: MailBody {
            lines: vec![format!(
                "Confirm that you want to log in to the Keyfob dashboard as {new_email} instead of \
                 {}.",
                owner.email
            )],
            action: Some(MailAction {
                label: "Confirm my new address".into(),
                url,
            }),
            after: vec![format!(
                "The link works once, for {}. Nothing changes without it.",
                purpose.lifetime_words()
            )],
        },
    });
    state.mail.send(Outgoing {
        to: owner.email.clone(),
        subject: "Your email address is about to change".into(),
        body: MailBody {
            lines: vec![
                format!(
                    "Someone logged in as you asked to move your Keyfob dashboard login from {} to \
                     {new_email}. It changes once the link mailed to the new address is followed.",
                    owner.email
                ),
                "If this was not you, change your password now: a new password ends the request."
                    .into(),
            ],
            action: None,
            after: vec![],
        },
    });
    Ok(())
}

/// Mails `subject` that their password was changed, so that a change they did not make does not
/// go unnoticed.
pub fn send_password_changed<T: LoginSubject>(state: &AppState, subject: &T) {
    state.mail.send(Outgoing {
        to: subject.email().to_owned(),
        subject: "Your password was changed".into(),
        body: MailBody {
            lines: vec![format!(
                "The password of {} on {} was just changed, and every other login ended.",
                subject.email(),
                place::<T>()
            )],
            action: None,
            after: vec![
                "If you did not do this, reset your password at once with \"Forgot password?\" on \
                 the login page, and tell whoever runs this server."
                    .into(),
            ],
        },
    });
}

/// What became of a reset form.
pub enum ResetOutcome {
    /// The link does not work (unknown, used, expired, superseded): nothing changed.
    DeadLink,
    /// The passwords were refused; the form is shown again for `email` with `message`, and the
    /// link still works.
    Refused { email: String, message: String },
    /// The new password is set and every login (and session) of the person ended; the link is
    /// used up.
    Done(EmailLinkRow),
}

/// Sets a new password with a reset link: the link must work, the two passwords match and pass
/// the password policy; then the hash, computed off the async threads, is written by the one
/// statement that uses the link (`Store::use_reset_link`). The same for owners and end users.
pub async fn reset_password(
    state: &AppState,
    token: &str,
    password: String,
    confirm: &str,
) -> Result<ResetOutcome, PageError> {
    let Some(hash) = token_hash(token) else {
        return Ok(ResetOutcome::DeadLink);
    };
    let now = Timestamp::now();
    let Some(link) = state
        .store
        .find_email_link(&hash, LinkPurpose::Reset, now)
        .await?
    else {
        return Ok(ResetOutcome::DeadLink);
    };
    let refused = |message: String| ResetOutcome::Refused {
        email: link.email.clone(),
        message,
    };
    if password != confirm {
        return Ok(refused("The two passwords do not match.".into()));
    }
    if let Err(err) = crate::passwords::check_new_password(&password) {
        return Ok(refused(crate::user_pages::capitalized(&err.to_string())));
    }
    let password_hash = state
        .passwords
        .hash(password)
        .await
        .map_err(|e| PageError::Internal(e.into()))?;
    Ok(
        match state
            .store
            .use_reset_link(&hash, &password_hash, Timestamp::now())
            .await?
        {
            Some(link) => ResetOutcome::Done(link),
            None => ResetOutcome::DeadLink,
        },
    )
}

/// The token of a link as the page got it: a link's token is 43 URL-safe base64 characters; any
/// other value is treated as a link that does not work, without a database read.
pub fn token_hash(token: &str) -> Option<String> {
    (token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| hash_secret(token))
}
