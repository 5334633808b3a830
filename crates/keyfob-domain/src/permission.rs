//! Permissions: `<resource>.read` grants GET and HEAD on a resource, `<resource>.write` grants POST,
//! PUT, PATCH and DELETE. `*` stands for every ordinary resource. A few resource names are reserved
//! for Keyfob's own capabilities (`sensitive`, `audit`): a wildcard never grants them, they must be
//! named.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Resource names a wildcard does not cover: capabilities rather than collections. Beyond
/// revealing sensitive values and reading the audit log, these are the management API's
/// (`/api/keys`, `/api/tokens`, …): managing the account's credentials and its users' access is
/// handed to a key deliberately, by name, never by `*.read` or `*.write`.
pub const RESERVED_RESOURCES: &[&str] = &[
    "sensitive",
    "audit",
    "keys",
    "tokens",
    "apps",
    "users",
    "grants",
];

/// The longest resource name, in characters.
pub const MAX_RESOURCE_LEN: usize = 64;

/// What a permission lets its holder do to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Read,
    Write,
}

impl Action {
    /// The action an HTTP method needs, or `None` for methods no permission grants
    /// (OPTIONS, TRACE, CONNECT, …).
    pub fn for_method(method: &str) -> Option<Action> {
        match method {
            "GET" | "HEAD" => Some(Action::Read),
            "POST" | "PUT" | "PATCH" | "DELETE" => Some(Action::Write),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
        }
    }
}

/// Why a permission string was refused. The message names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error("permission `{0}` is not of the form <resource>.read or <resource>.write")]
    Malformed(String),
    #[error(
        "permission `{0}` has an invalid resource name: use a letter, then up to 63 letters, digits, `_` or `-`, or `*`"
    )]
    BadResource(String),
    #[error("permission `{0}` has an unknown action: use `read` or `write`")]
    BadAction(String),
}

/// A resource name as it appears in a permission or in `/api/{resource}`.
pub fn is_valid_resource_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    name.len() <= MAX_RESOURCE_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// One permission: a resource (or `*`) and an action.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    resource: String,
    action: Action,
}

impl Permission {
    pub fn new(resource: &str, action: Action) -> Result<Self, PermissionError> {
        format!("{resource}.{}", action.as_str()).parse()
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn action(&self) -> Action {
        self.action
    }

    pub fn is_wildcard(&self) -> bool {
        self.resource == "*"
    }

    /// Whether holding this permission allows `action` on `resource`.
    pub fn grants(&self, resource: &str, action: Action) -> bool {
        if self.action != action {
            return false;
        }
        if self.is_wildcard() {
            return !RESERVED_RESOURCES.contains(&resource);
        }
        self.resource == resource
    }
}

impl FromStr for Permission {
    type Err = PermissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (resource, action) = s
            .rsplit_once('.')
            .ok_or_else(|| PermissionError::Malformed(s.to_owned()))?;
        if resource.is_empty() || action.is_empty() {
            return Err(PermissionError::Malformed(s.to_owned()));
        }
        let action = match action {
            "read" => Action::Read,
            "write" => Action::Write,
            _ => return Err(PermissionError::BadAction(s.to_owned())),
        };
        if resource != "*" && !is_valid_resource_name(resource) {
            return Err(PermissionError::BadResource(s.to_owned()));
        }
        Ok(Permission {
            resource: resource.to_owned(),
            action,
        })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.resource, self.action.as_str())
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a credential may do: everything in its account (an API key), or a list of permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionSet {
    /// An API key: every resource and capability of its account.
    All,
    /// A token's or a restricted key's permissions, sorted and without duplicates; shared, so that
    /// the verify path hands a cached list to each request without copying it.
    Only(std::sync::Arc<[Permission]>),
}

impl PermissionSet {
    /// Builds a set from a list, sorting it and dropping duplicates. An empty list is refused by the
    /// caller where it matters (minting); here it simply grants nothing.
    pub fn only(mut permissions: Vec<Permission>) -> Self {
        permissions.sort();
        permissions.dedup();
        PermissionSet::Only(permissions.into())
    }

    /// Parses permission strings, failing on the first bad one.
    pub fn parse<I, S>(items: I) -> Result<Self, PermissionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let permissions = items
            .into_iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::only(permissions))
    }

    pub fn allows(&self, resource: &str, action: Action) -> bool {
        match self {
            PermissionSet::All => true,
            PermissionSet::Only(list) => list.iter().any(|p| p.grants(resource, action)),
        }
    }

    /// Whether the set allows what an HTTP method on a resource needs.
    pub fn allows_method(&self, resource: &str, method: &str) -> bool {
        Action::for_method(method).is_some_and(|action| self.allows(resource, action))
    }

    /// Whether holding this set lets its holder hand `permission` on: `All` covers everything; a
    /// list covers a permission it holds, and a wildcard in it covers the same action on any
    /// ordinary resource. A requested wildcard is covered only by that wildcard, and a reserved
    /// capability (`sensitive.read`) only by itself.
    pub fn covers(&self, permission: &Permission) -> bool {
        match self {
            PermissionSet::All => true,
            PermissionSet::Only(list) => list.iter().any(|held| {
                held == permission
                    || (held.is_wildcard()
                        && !permission.is_wildcard()
                        && held.grants(permission.resource(), permission.action()))
            }),
        }
    }

    /// What of `requested` this set does not cover (see [`PermissionSet::covers`]), in order.
    pub fn missing<'a>(&self, requested: &'a PermissionSet) -> Vec<&'a Permission> {
        match requested {
            PermissionSet::All => match self {
                PermissionSet::All => Vec::new(),
                // A list never covers full access; there is no single permission to name.
                PermissionSet::Only(_) => Vec::new(),
            },
            PermissionSet::Only(list) => list.iter().filter(|p| !self.covers(p)).collect(),
        }
    }

    /// Whether this is a list rather than full access.
    pub fn is_restricted(&self) -> bool {
        matches!(self, PermissionSet::Only(_))
    }

    /// The permission strings, for claims and listings. `All` lists as `["*"]`.
    pub fn to_strings(&self) -> Vec<String> {
        match self {
            PermissionSet::All => vec!["*".to_owned()],
            PermissionSet::Only(list) => list.iter().map(ToString::to_string).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Permission {
        s.parse().unwrap()
    }

    #[test]
    fn a_restricted_set_covers_only_what_it_holds() {
        let key = PermissionSet::parse(["deals.read", "*.write", "sensitive.read"]).unwrap();
        for ok in [
            "deals.read",
            "services.write",
            "deals.write",
            "sensitive.read",
            "*.write",
        ] {
            assert!(key.covers(&p(ok)), "{ok}");
        }
        // A wildcard never covers a reserved capability, nor is a wildcard covered by a list.
        for no in [
            "services.read",
            "*.read",
            "audit.write",
            "sensitive.write",
            "audit.read",
        ] {
            assert!(!key.covers(&p(no)), "{no}");
        }
        let asked = PermissionSet::parse(["deals.read", "services.read", "audit.write"]).unwrap();
        let missing: Vec<String> = key.missing(&asked).iter().map(|p| p.to_string()).collect();
        assert_eq!(missing, ["audit.write", "services.read"]);
        assert!(PermissionSet::All.missing(&asked).is_empty());
        assert!(PermissionSet::All.covers(&p("sensitive.read")));
        assert!(key.is_restricted());
        assert!(!PermissionSet::All.is_restricted());
    }

    #[test]
    fn read_grants_get_and_head_only() {
        let set = PermissionSet::only(vec![p("deals.read")]);
        assert!(set.allows_method("deals", "GET"));
        assert!(set.allows_method("deals", "HEAD"));
        for m in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"] {
            assert!(!set.allows_method("deals", m), "{m}");
        }
        assert!(!set.allows_method("services", "GET"));
    }

    #[test]
    fn write_grants_mutations_only() {
        let set = PermissionSet::only(vec![p("deals.write")]);
        for m in ["POST", "PUT", "PATCH", "DELETE"] {
            assert!(set.allows_method("deals", m), "{m}");
        }
        assert!(!set.allows_method("deals", "GET"));
        assert!(!set.allows_method("deals", "HEAD"));
    }

    #[test]
    fn wildcard_covers_resources_but_not_reserved_capabilities() {
        let set = PermissionSet::only(vec![p("*.read")]);
        assert!(set.allows("deals", Action::Read));
        assert!(set.allows("vehicles", Action::Read));
        assert!(!set.allows("deals", Action::Write));
        assert!(!set.allows("sensitive", Action::Read));
        assert!(!set.allows("audit", Action::Read));
        let named = PermissionSet::only(vec![p("sensitive.read")]);
        assert!(named.allows("sensitive", Action::Read));
    }

    #[test]
    fn management_is_never_granted_by_a_wildcard() {
        let set = PermissionSet::only(vec![p("*.read"), p("*.write")]);
        for resource in ["keys", "tokens", "apps", "users", "grants"] {
            for action in [Action::Read, Action::Write] {
                assert!(!set.allows(resource, action), "{resource}");
                assert!(PermissionSet::All.allows(resource, action), "{resource}");
            }
            let wanted = Permission::new(resource, Action::Read).unwrap();
            assert!(!set.covers(&wanted), "{resource}");
            assert!(PermissionSet::only(vec![wanted.clone()]).covers(&wanted));
        }
        let named = PermissionSet::only(vec![p("apps.read")]);
        assert!(named.allows("apps", Action::Read));
        assert!(!named.allows("apps", Action::Write));
    }

    #[test]
    fn api_keys_have_everything() {
        for m in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
            assert!(PermissionSet::All.allows_method("anything", m));
        }
        assert!(PermissionSet::All.allows("sensitive", Action::Read));
    }

    #[test]
    fn malformed_permissions_are_named() {
        let cases = [
            ("deals", PermissionError::Malformed("deals".into())),
            (".read", PermissionError::Malformed(".read".into())),
            ("deals.", PermissionError::Malformed("deals.".into())),
            (
                "deals.delete",
                PermissionError::BadAction("deals.delete".into()),
            ),
            (
                "1deals.read",
                PermissionError::BadResource("1deals.read".into()),
            ),
            (
                "de als.read",
                PermissionError::BadResource("de als.read".into()),
            ),
            ("a.b.read", PermissionError::BadResource("a.b.read".into())),
            ("**.read", PermissionError::BadResource("**.read".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(
                input.parse::<Permission>().unwrap_err(),
                expected,
                "{input}"
            );
        }
        let too_long = format!("{}.read", "a".repeat(65));
        assert!(too_long.parse::<Permission>().is_err());
        let longest = format!("{}.read", "a".repeat(64));
        assert!(longest.parse::<Permission>().is_ok());
    }

    #[test]
    fn sets_are_sorted_and_deduplicated() {
        let set = PermissionSet::parse(["deals.write", "deals.read", "deals.write"]).unwrap();
        assert_eq!(set.to_strings(), vec!["deals.read", "deals.write"]);
    }

    proptest! {
        #[test]
        fn valid_permissions_round_trip(resource in "[A-Za-z][A-Za-z0-9_-]{0,63}", write in any::<bool>()) {
            let action = if write { "write" } else { "read" };
            let text = format!("{resource}.{action}");
            let parsed: Permission = text.parse().unwrap();
            prop_assert_eq!(parsed.to_string(), text);
            prop_assert_eq!(parsed.resource(), resource.as_str());
        }

        #[test]
        fn parsing_never_panics_and_only_accepts_the_grammar(s in "\\PC{0,80}") {
            if let Ok(p) = s.parse::<Permission>() {
                prop_assert!(p.is_wildcard() || is_valid_resource_name(p.resource()));
                prop_assert_eq!(p.to_string(), s);
            }
        }

        #[test]
        fn a_permission_grants_exactly_its_methods(resource in "[a-z]{1,10}", other in "[a-z]{1,10}", method in prop::sample::select(vec!["GET","HEAD","POST","PUT","PATCH","DELETE","OPTIONS"])) {
            let read = PermissionSet::only(vec![Permission::new(&resource, Action::Read).unwrap()]);
            let write = PermissionSet::only(vec![Permission::new(&resource, Action::Write).unwrap()]);
            let is_read = matches!(method, "GET" | "HEAD");
            let is_write = matches!(method, "POST" | "PUT" | "PATCH" | "DELETE");
            prop_assert_eq!(read.allows_method(&resource, method), is_read);
            prop_assert_eq!(write.allows_method(&resource, method), is_write);
            if other != resource {
                prop_assert!(!read.allows_method(&other, method));
                prop_assert!(!write.allows_method(&other, method));
            }
        }
    }
}
