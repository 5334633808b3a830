//! Mail Keyfob sends: the one-time links it mails (what each is for, how long it lasts, whom it
//! names) and where the mail goes out (an SMTP URL).
//!
//! A link carries a random token (`secret::random_token`) that is stored only as its SHA-256
//! hash, expires, and is used up by the one statement that acts on it, so that it works once.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What a mailed link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkPurpose {
    /// Confirms that the person reads mail at their address.
    Verify,
    /// Lets the person choose a new password.
    Reset,
    /// Moves an owner's login to a new address, which the link was mailed to.
    ChangeEmail,
}

impl LinkPurpose {
    pub const ALL: [LinkPurpose; 3] = [
        LinkPurpose::Verify,
        LinkPurpose::Reset,
        LinkPurpose::ChangeEmail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Verify => "verify",
            LinkPurpose::Reset => "reset",
            LinkPurpose::ChangeEmail => "change_email",
        }
    }

    /// How long a link works after it is made. A reset link is short-lived: it stands in for the
    /// password.
    pub fn lifetime(self) -> Duration {
        match self {
            LinkPurpose::Reset => Duration::from_secs(30 * 60),
            LinkPurpose::Verify | LinkPurpose::ChangeEmail => Duration::from_secs(24 * 60 * 60),
        }
    }

    /// The lifetime in words, for the mail that carries the link.
    pub fn lifetime_words(self) -> &'static str {
        match self {
            LinkPurpose::Reset => "30 minutes",
            LinkPurpose::Verify | LinkPurpose::ChangeEmail => "24 hours",
        }
    }
}

impl fmt::Display for LinkPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored name that is not a purpose or a kind of person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownName(pub String);

impl FromStr for LinkPurpose {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LinkPurpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// Whom a link is for: an account owner (dashboard) or an end user (the hosted pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersonKind {
    Owner,
    User,
}

impl PersonKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PersonKind::Owner => "owner",
            PersonKind::User => "user",
        }
    }
}

impl fmt::Display for PersonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PersonKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(PersonKind::Owner),
            "user" => Ok(PersonKind::User),
            other => Err(UnknownName(other.to_owned())),
        }
    }
}

/// How the connection to an SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte (port 465 by default).
    ImplicitTls,
    /// `smtp://` (the default): STARTTLS when the server offers it, plain otherwise.
    Opportunistic,
    /// `smtp://…?tls=required`: STARTTLS or no mail.
    StartTlsRequired,
    /// `smtp://…?tls=none`: never TLS (a relay on the same host).
    None,
}

/// Where mail goes out: `smtp://[user:password@]host[:port][?tls=required|none]` or
/// `smtps://[user:password@]host[:port]`. The user and password are percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub security: SmtpSecurity,
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Why an SMTP URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpUrlError {
    #[error("must start with smtp:// or smtps://")]
    Scheme,
    #[error("names no host")]
    Host,
    #[error("has a port that is not a number from 1 to 65535")]
    Port,
    #[error("has a user without a password, or a password that is not UTF-8")]
    Credentials,
    #[error("has `tls={0}`; use `tls=required` or `tls=none` (or neither), and only with smtp://")]
    Tls(String),
    #[error("may carry only the `tls` parameter, not a path or other parameters")]
    Extra,
}

impl SmtpUrl {
    pub fn parse(input: &str) -> Result<SmtpUrl, SmtpUrlError> {
        let (implicit, rest) = if let Some(rest) = input.strip_prefix("smtps://") {
            (true, rest)
        } else if let Some(rest) = input.strip_prefix("smtp://") {
            (false, rest)
        } else {
            return Err(SmtpUrlError::Scheme);
        };
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority.contains('/') {
            return Err(SmtpUrlError::Extra);
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(info) => {
                let (user, password) = info.split_once(':').ok_or(SmtpUrlError::Credentials)?;
                let decode = |s: &str| {
                    percent_decode_str(s)
                        .decode_utf8()
                        .map(|c| c.into_owned())
                        .map_err(|_| SmtpUrlError::Credentials)
                };
                let user = decode(user)?;
                if user.is_empty() {
                    return Err(SmtpUrlError::Credentials);
                }
                Some((user, decode(password)?))
            }
        };
        let (host, port) = split_host_port(hostport)?;
        let mut security = if implicit {
            SmtpSecurity::ImplicitTls
        } else {
            SmtpSecurity::Opportunistic
        };
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            for (name, value) in serde_urlencoded::from_str::<Vec<(String, String)>>(query)
                .map_err(|_| SmtpUrlError::Extra)?
            {
                if name != "tls" {
                    return Err(SmtpUrlError::Extra);
                }
                security = match (implicit, value.as_str()) {
                    (false, "required") => SmtpSecurity::StartTlsRequired,
                    (false, "none") => SmtpSecurity::None,
                    (false, "opportunistic") => SmtpSecurity::Opportunistic,
                    _ => return Err(SmtpUrlError::Tls(value.chars().take(40).collect())),
                };
            }
        }
        let port = port.unwrap_or(match security {
            SmtpSecurity::ImplicitTls => 465,
            _ => 587,
        });
        Ok(SmtpUrl {
            security,
            host,
            port,
            credentials,
        })
    }

    /// The URL without its password, for logs and `keyfob settings`.
    pub fn redacted(&self) -> String {
        self.format(true)
    }

    /// The URL in full, password included, as [`SmtpUrl::parse`] reads it back.
    pub fn to_url(&self) -> String {
        self.format(false)
    }

    fn format(&self, hide_password: bool) -> String {
        let scheme = match self.security {
            SmtpSecurity::ImplicitTls => "smtps",
            _ => "smtp",
        };
        let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let user = match &self.credentials {
            Some((user, _)) if hide_password => format!("{}:***@", encode(user)),
            Some((user, password)) => format!("{}:{}@", encode(user), encode(password)),
            None => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let tls = match self.security {
            SmtpSecurity::StartTlsRequired => "?tls=required",
            SmtpSecurity::None => "?tls=none",
            _ => "",
        };
        format!("{scheme}://{user}{host}:{}{tls}", self.port)
    }
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), SmtpUrlError> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(SmtpUrlError::Host)?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or(SmtpUrlError::Port)?),
            ),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || host.contains(['@', ' ', '[', ']']) {
        return Err(SmtpUrlError::Host);
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(SmtpUrlError::Port)?,
        ),
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_kinds_round_trip_through_their_names() {
        for p in LinkPurpose::ALL {
            assert_eq!(p.as_str().parse::<LinkPurpose>(), Ok(p));
        }
        for k in [PersonKind::Owner, PersonKind::User] {
            assert_eq!(k.as_str().parse::<PersonKind>(), Ok(k));
        }
        assert!("admin".parse::<PersonKind>().is_err());
        assert!("login".parse::<LinkPurpose>().is_err());
    }

    #[test]
    fn a_reset_link_lasts_half_an_hour() {
        assert_eq!(LinkPurpose::Reset.lifetime(), Duration::from_secs(1800));
        assert!(LinkPurpose::Verify.lifetime() > LinkPurpose::Reset.lifetime());
    }

    #[test]
    fn smtp_urls_are_read_with_their_defaults() {
        let url = SmtpUrl::parse("smtp://mail.example.com").unwrap();
        assert_eq!(url.security, SmtpSecurity::Opportunistic);
        assert_eq!((url.host.as_str(), url.port), ("mail.example.com", 587));
        assert_eq!(url.credentials, None);

        let url = SmtpUrl::parse("smtps://me%40example.com:p%3Ass@smtp.example.com").unwrap();
        assert_eq!(url.security, SmtpSecurity::ImplicitTls);
        assert_eq!(url.port, 465);
        assert_eq!(
            url.credentials,
            Some(("me@example.com".into(), "p:ss".into()))
        );
        assert_eq!(
            url.redacted(),
            "smtps://me%40example%2Ecom:***@smtp.example.com:465"
        );
        assert_eq!(SmtpUrl::parse(&url.to_url()), Ok(url.clone()));
        assert!(!format!("{url:?}").contains("p:ss"));

        let url = SmtpUrl::parse("smtp://127.0.0.1:2525/?tls=none").unwrap();
        assert_eq!(url.security, SmtpSecurity::None);
        assert_eq!(url.port, 2525);
        let url = SmtpUrl::parse("smtp://[::1]:25?tls=required").unwrap();
        assert_eq!(url.security, SmtpSecurity::StartTlsRequired);
        assert_eq!((url.host.as_str(), url.port), ("::1", 25));
        assert_eq!(url.redacted(), "smtp://[::1]:25?tls=required");
    }

    #[test]
    fn bad_smtp_urls_are_refused_with_the_reason() {
        for (input, err) in [
            ("http://mail.example.com", SmtpUrlError::Scheme),
            ("mail.example.com:25", SmtpUrlError::Scheme),
            ("smtp://", SmtpUrlError::Host),
            ("smtp://:25", SmtpUrlError::Host),
            ("smtp://host:0", SmtpUrlError::Port),
            ("smtp://host:70000", SmtpUrlError::Port),
            ("smtp://host:x", SmtpUrlError::Port),
            ("smtp://user@host", SmtpUrlError::Credentials),
            ("smtp://:pw@host", SmtpUrlError::Credentials),
            ("smtp://host/path", SmtpUrlError::Extra),
            ("smtp://host?port=2", SmtpUrlError::Extra),
            ("smtp://host?tls=maybe", SmtpUrlError::Tls("maybe".into())),
            ("smtps://host?tls=none", SmtpUrlError::Tls("none".into())),
        ] {
            assert_eq!(SmtpUrl::parse(input), Err(err), "{input}");
        }
    }
}
