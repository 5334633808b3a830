//! OpenID Connect's identity scopes: `openid` (sign the user in and say who they are: an id_token
//! and the userinfo endpoint), `profile` and `email` (which claims about the user come with it).
//! They are asked for in `scope` beside permissions, consented to on the same page, kept with the
//! grant, the authorization code and the session, and never grant access to data: permissions do.

use std::fmt;
use std::str::FromStr;

use crate::oauth;
use crate::permission::{Permission, PermissionError};

/// The identity scopes of a request, a grant or a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IdentityScopes {
    /// `openid`: an id_token, the userinfo endpoint, the user's `sub`.
    pub openid: bool,
    /// `profile`: the claims of the user's profile Keyfob holds (`updated_at`).
    pub profile: bool,
    /// `email`: `email` and `email_verified`.
    pub email: bool,
}

impl IdentityScopes {
    /// No identity scope.
    pub const NONE: IdentityScopes = IdentityScopes {
        openid: false,
        profile: false,
        email: false,
    };

    /// `openid` alone.
    pub const OPENID: IdentityScopes = IdentityScopes {
        openid: true,
        profile: false,
        email: false,
    };

    /// Every identity scope Keyfob serves, as `scopes_supported` lists them.
    pub const WORDS: [&'static str; 3] = ["openid", "profile", "email"];

    /// Whether `word` is an identity scope, and adds it if so.
    fn take(&mut self, word: &str) -> bool {
        match word {
            "openid" => self.openid = true,
            "profile" => self.profile = true,
            "email" => self.email = true,
            _ => return false,
        }
        true
    }

    pub fn is_empty(self) -> bool {
        self == IdentityScopes::NONE
    }

    /// Whether every scope of `other` is in `self`.
    pub fn covers(self, other: IdentityScopes) -> bool {
        (self.openid || !other.openid)
            && (self.profile || !other.profile)
            && (self.email || !other.email)
    }

    /// The scopes of either.
    pub fn union(self, other: IdentityScopes) -> IdentityScopes {
        IdentityScopes {
            openid: self.openid || other.openid,
            profile: self.profile || other.profile,
            email: self.email || other.email,
        }
    }

    /// The scopes, space-separated, in a fixed order (`openid profile email`); empty for none.
    pub fn as_str(self) -> &'static str {
        match (self.openid, self.profile, self.email) {
            (false, false, false) => "",
            (true, false, false) => "openid",
            (false, true, false) => "profile",
            (false, false, true) => "email",
            (true, true, false) => "openid profile",
            (true, false, true) => "openid email",
            (false, true, true) => "profile email",
            (true, true, true) => "openid profile email",
        }
    }

    /// Each scope as a word, in the order of [`IdentityScopes::as_str`].
    pub fn words(self) -> impl Iterator<Item = &'static str> {
        self.as_str().split(' ').filter(|w| !w.is_empty())
    }

    /// What the user is told on the consent page, one line per scope.
    pub fn describe(self) -> Vec<(&'static str, &'static str)> {
        let mut lines = Vec::new();
        if self.openid {
            lines.push(("openid", "Know who you are (your user id on this server)"));
        }
        if self.email {
            lines.push((
                "email",
                "See your email address, and whether it has been verified",
            ));
        }
        if self.profile {
            lines.push((
                "profile",
                "See your basic profile (when it was last changed)",
            ));
        }
        lines
    }
}

impl fmt::Display for IdentityScopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored list of identity scopes that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an identity scope: use openid, profile or email")]
pub struct UnknownIdentityScope(pub String);

impl FromStr for IdentityScopes {
    type Err = UnknownIdentityScope;

    /// Reads scopes separated by spaces (as stored and as [`IdentityScopes::as_str`] writes them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut scopes = IdentityScopes::NONE;
        for word in s.split(' ').filter(|w| !w.is_empty()) {
            if !scopes.take(word) {
                return Err(UnknownIdentityScope(word.chars().take(40).collect()));
            }
        }
        Ok(scopes)
    }
}

/// What a `scope` (or `permissions`) parameter asks for: permissions, and identity scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestedScope {
    /// Each once, in the order asked.
    pub permissions: Vec<Permission>,
    pub identity: IdentityScopes,
}

impl RequestedScope {
    /// Whether nothing at all was asked for.
    pub fn is_empty(&self) -> bool {
        self.permissions.is_empty() && self.identity.is_empty()
    }

    /// Everything asked for as `scope` words: the identity scopes, then the permissions.
    pub fn to_scope(&self) -> String {
        scope_string(self.identity, &self.permissions)
    }
}

/// The `scope` of a response or a token: identity scopes first, then permissions, space-separated.
pub fn scope_string<P: fmt::Display>(identity: IdentityScopes, permissions: &[P]) -> String {
    identity
        .words()
        .map(str::to_owned)
        .chain(permissions.iter().map(ToString::to_string))
        .collect::<Vec<_>>()
        .join(" ")
}

/// OpenID Connect's other standard scopes, which Keyfob does not serve and ignores, as OpenID
/// Connect Core 1.0 §5.4 asks of scopes a server does not understand: `address` and `phone`
/// (Keyfob holds neither) and `offline_access` (every session has a refresh token). They are not
/// granted, so the answer's `scope` leaves them out; any other unknown word is refused, since it
/// would otherwise be a misspelt permission silently dropped.
pub const IGNORED_SCOPES: [&str; 3] = ["address", "phone", "offline_access"];

/// Reads a requested scope: words separated by spaces or commas, each an identity scope or a
/// permission ([`IGNORED_SCOPES`] are skipped). The first word that is neither is the error.
pub fn parse_requested(input: &str) -> Result<RequestedScope, PermissionError> {
    let mut identity = IdentityScopes::NONE;
    let mut rest = String::new();
    for word in input
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        if IGNORED_SCOPES.contains(&word) {
            continue;
        }
        if !identity.take(word) {
            rest.push_str(word);
            rest.push(' ');
        }
    }
    Ok(RequestedScope {
        permissions: oauth::parse_scope(&rest)?,
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_scopes_are_read_beside_permissions() {
        let asked = parse_requested("openid deals.read,email deals.read openid").unwrap();
        assert_eq!(
            asked.identity,
            IdentityScopes {
                openid: true,
                profile: false,
                email: true
            }
        );
        assert_eq!(asked.permissions, vec!["deals.read".parse().unwrap()]);
        assert_eq!(asked.to_scope(), "openid email deals.read");
        assert!(!asked.is_empty());

        let only = parse_requested("openid").unwrap();
        assert!(only.permissions.is_empty());
        assert_eq!(only.identity, IdentityScopes::OPENID);
        assert!(parse_requested(" , ").unwrap().is_empty());
        // OpenID Connect's scopes that Keyfob does not serve are ignored, not granted.
        let ignored = parse_requested("openid address phone offline_access deals.read").unwrap();
        assert_eq!(ignored.to_scope(), "openid deals.read");
        assert!(parse_requested("address").unwrap().is_empty());
        // Case matters, as for every scope word.
        assert!(parse_requested("OpenID").is_err());
        assert!(parse_requested("openid bogus").is_err());
    }

    #[test]
    fn stored_scopes_read_back_and_nothing_else_does() {
        for openid in [false, true] {
            for profile in [false, true] {
                for email in [false, true] {
                    let s = IdentityScopes {
                        openid,
                        profile,
                        email,
                    };
                    assert_eq!(s.as_str().parse::<IdentityScopes>().unwrap(), s);
                    assert_eq!(
                        s.words().count(),
                        [openid, profile, email].iter().filter(|b| **b).count()
                    );
                }
            }
        }
        assert_eq!(
            "deals.read"
                .parse::<IdentityScopes>()
                .unwrap_err()
                .to_string(),
            "`deals.read` is not an identity scope: use openid, profile or email"
        );
    }

    #[test]
    fn coverage_and_union() {
        let all: IdentityScopes = "openid profile email".parse().unwrap();
        let openid = IdentityScopes::OPENID;
        assert!(all.covers(openid));
        assert!(!openid.covers(all));
        assert!(openid.covers(IdentityScopes::NONE));
        assert_eq!(
            openid.union("email".parse().unwrap()).as_str(),
            "openid email"
        );
        assert_eq!(all.describe().len(), 3);
        assert!(IdentityScopes::NONE.describe().is_empty());
    }
}
