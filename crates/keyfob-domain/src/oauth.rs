//! The rules of user sessions, apart from HTTP: how requested permissions are read, how a
//! redirect URI must match, PKCE, and how a permission reads on the consent page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::permission::{Action, Permission, PermissionError};
use crate::secret::constant_time_eq;

/// Longest redirect URI or origin accepted.
pub const MAX_URI_LEN: usize = 2048;

/// Reads `permissions` or `scope`: comma- or space-separated, duplicates dropped, order kept.
pub fn parse_scope(input: &str) -> Result<Vec<Permission>, PermissionError> {
    let mut out: Vec<Permission> = Vec::new();
    for item in input
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        let permission: Permission = item.parse()?;
        if !out.contains(&permission) {
            out.push(permission);
        }
    }
    Ok(out)
}

/// Whether an application whose ceiling is `max` may be granted `wanted`. Reserved capabilities
/// (`sensitive.read`, `audit.read`, …) are never within any ceiling: no user can grant them.
pub fn within(max: &[Permission], wanted: &Permission) -> bool {
    if crate::permission::RESERVED_RESOURCES.contains(&wanted.resource()) {
        return false;
    }
    max.iter().any(|m| {
        m == wanted
            || (m.is_wildcard()
                && !wanted.is_wildcard()
                && m.grants(wanted.resource(), wanted.action()))
    })
}

/// Why the scope a `client_credentials` request asks for cannot be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("{0}")]
    Invalid(#[from] PermissionError),
    /// The permissions asked for beyond the application's maximum, by name.
    #[error("outside the application's maximum permissions: {}", .0.join(", "))]
    Outside(Vec<String>),
}

/// The permissions an application gets for itself with the `client_credentials` grant: its whole
/// ceiling `max` when it names none (`scope` absent, or empty), else what it names (parsed as
/// [`parse_scope`] does), every one [`within`] the ceiling; otherwise the error names each that
/// is not.
pub fn app_scope(
    max: &[Permission],
    requested: Option<&str>,
) -> Result<Vec<Permission>, ScopeError> {
    let asked = parse_scope(requested.unwrap_or_default())?;
    if asked.is_empty() {
        return Ok(max
            .iter()
            .filter(|p| !crate::permission::RESERVED_RESOURCES.contains(&p.resource()))
            .cloned()
            .collect());
    }
    let outside: Vec<String> = asked
        .iter()
        .filter(|p| !within(max, p))
        .map(ToString::to_string)
        .collect();
    if outside.is_empty() {
        Ok(asked)
    } else {
        Err(ScopeError::Outside(outside))
    }
}

/// Why a redirect URI or origin cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("`{0}` is not an absolute http(s) URL without a fragment")]
    NotAbsolute(String),
    #[error("`{0}` uses plain http: only https, or http on localhost, is allowed")]
    Insecure(String),
    #[error("`{0}` is not an origin: scheme, host and optional port, nothing else")]
    NotAnOrigin(String),
}

/// Splits `scheme://authority/rest`, checking the scheme and that nothing is empty.
fn split_url(uri: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = uri.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return None;
    }
    Some((scheme, authority, path))
}

fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split(']')
            .next()
            .map(|h| &h[1..])
            .unwrap_or(authority);
    }
    authority.split(':').next().unwrap_or(authority)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host == "127.0.0.1" || host == "::1"
}

/// Checks a redirect URI before it is registered: absolute, http(s), no fragment, and https
/// unless it is on the loopback interface.
pub fn check_redirect_uri(uri: &str) -> Result<(), UriError> {
    let bad = || UriError::NotAbsolute(uri.chars().take(200).collect());
    if uri.len() > MAX_URI_LEN || uri.contains('#') || uri.chars().any(char::is_control) {
        return Err(bad());
    }
    let (scheme, authority, _) = split_url(uri).ok_or_else(bad)?;
    if scheme == "http" && !is_loopback(host_of(authority)) {
        return Err(UriError::Insecure(uri.to_owned()));
    }
    Ok(())
}

/// Checks a browser origin before it is registered: `scheme://host[:port]`, nothing after.
pub fn check_origin(origin: &str) -> Result<(), UriError> {
    let bad = || UriError::NotAnOrigin(origin.chars().take(200).collect());
    if origin.len() > MAX_URI_LEN {
        return Err(bad());
    }
    let (scheme, authority, path) = split_url(origin).ok_or_else(bad)?;
    if !path.is_empty() {
        return Err(bad());
    }
    if scheme == "http" && !is_loopback(host_of(authority)) {
        return Err(UriError::Insecure(origin.to_owned()));
    }
    Ok(())
}

/// A redirect URI matches only if it equals a registered one exactly, byte for byte.
pub fn redirect_matches(registered: &[String], given: &str) -> bool {
    registered.iter().any(|r| r == given)
}

/// PKCE (RFC 7636): a verifier is 43 to 128 characters of `[A-Za-z0-9-._~]`.
pub fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A challenge is the base64url SHA-256 of a verifier: 43 characters.
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The S256 challenge of a verifier.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` answers `challenge` (S256), compared in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    valid_verifier(verifier) && constant_time_eq(&s256(verifier), challenge)
}

/// The permissions a user allowed on the consent page: those of `asked` whose box was ticked.
/// Anything ticked that was not asked for is ignored (the form comes from the browser).
pub fn consented(asked: &[Permission], ticked: &[String]) -> Vec<Permission> {
    asked
        .iter()
        .filter(|p| ticked.iter().any(|t| *t == p.to_string()))
        .cloned()
        .collect()
}

/// What a grant holds after the user answers a request: what it held before that the request did
/// not ask about, and of what it asked, what the user `allowed` now (so unticking a permission
/// takes it back). Sorted, each once.
pub fn merged_grant(
    before: &[Permission],
    asked: &[Permission],
    allowed: &[Permission],
) -> Vec<String> {
    let mut grant: Vec<String> = before
        .iter()
        .filter(|p| !asked.contains(p))
        .chain(allowed)
        .map(ToString::to_string)
        .collect();
    grant.sort();
    grant.dedup();
    grant
}

/// A resource's name as words a person reads: camelCase, PascalCase, snake_case and kebab-case
/// split into lower-case words (`creditApplications`, `credit_applications` and
/// `credit-applications` all read “credit applications”). A run of capitals is one word
/// (`HTTPRequests` reads “http requests”); digits stay with the word before them.
pub fn resource_words(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' || c == '-' || c == '.' || c.is_whitespace() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        if c.is_uppercase() && !word.is_empty() {
            let prev = chars[i - 1];
            // The last capital of a run starts a word when a lower-case word follows
            // (`HTTPRequests`), not when only a plural `s` does (`userIDs`).
            let plural_s = chars.get(i + 1) == Some(&'s')
                && !chars.get(i + 2).is_some_and(|n| n.is_lowercase());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase()) && !plural_s;
            // `dealNotes` (a lower letter or digit before) or `HTTPRequests` starts a word.
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                words.push(std::mem::take(&mut word));
            }
        }
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words.join(" ")
}

/// How a permission reads on the consent page.
pub fn describe(permission: &Permission) -> String {
    let what = if permission.is_wildcard() {
        "all of your data".to_owned()
    } else {
        format!("your {}", resource_words(permission.resource()))
    };
    match (permission.resource(), permission.action()) {
        ("sensitive", Action::Read) => "See sensitive values in full".to_owned(),
        ("audit", Action::Read) => "Read the audit log".to_owned(),
        (_, Action::Read) => format!("See {what}"),
        (_, Action::Write) => format!("Create, change and delete {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_counts_only_ticked_permissions_that_were_asked_for() {
        let asked = parse_scope("deals.read deals.write").unwrap();
        let ticked = vec!["deals.read".to_owned(), "admin.write".to_owned()];
        let allowed = consented(&asked, &ticked);
        assert_eq!(allowed, parse_scope("deals.read").unwrap());
        assert!(consented(&asked, &[]).is_empty());
    }

    #[test]
    fn a_grant_keeps_what_was_not_asked_and_takes_the_answer_for_what_was() {
        let before = parse_scope("contacts.read deals.read deals.write").unwrap();
        let asked = parse_scope("deals.read deals.write").unwrap();
        let allowed = parse_scope("deals.read").unwrap();
        // deals.write was asked and unticked: taken back; contacts.read was not asked: kept.
        assert_eq!(
            merged_grant(&before, &asked, &allowed),
            ["contacts.read", "deals.read"]
        );
        // A first grant is the answer; nothing is listed twice.
        assert_eq!(
            merged_grant(&[], &asked, &asked),
            ["deals.read", "deals.write"]
        );
        assert_eq!(
            merged_grant(&allowed, &parse_scope("contacts.read").unwrap(), &allowed),
            ["deals.read"]
        );
    }

    fn perms(s: &str) -> Vec<String> {
        parse_scope(s)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn reserved_capabilities_are_never_within_a_ceiling() {
        let max = parse_scope("sensitive.read audit.read deals.read").unwrap();
        for wanted in ["sensitive.read", "audit.read"] {
            assert!(!within(&max, &wanted.parse().unwrap()), "{wanted}");
        }
        assert!(within(&max, &"deals.read".parse().unwrap()));
    }

    #[test]
    fn scopes_split_on_commas_and_spaces() {
        assert_eq!(
            perms("deals.read,deals.write"),
            ["deals.read", "deals.write"]
        );
        assert_eq!(
            perms("deals.read deals.write  deals.read"),
            ["deals.read", "deals.write"]
        );
        assert_eq!(perms(" , "), Vec::<String>::new());
        assert!(parse_scope("deals.read,bogus").is_err());
    }

    #[test]
    fn an_app_gets_its_ceiling_or_what_it_names_within_it() {
        let max = parse_scope("deals.read *.write").unwrap();
        let names = |v: Vec<Permission>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            names(app_scope(&max, None).unwrap()),
            ["deals.read", "*.write"]
        );
        assert_eq!(
            names(app_scope(&max, Some(" ")).unwrap()),
            ["deals.read", "*.write"]
        );
        assert_eq!(
            names(app_scope(&max, Some("cars.write deals.read")).unwrap()),
            ["cars.write", "deals.read"]
        );
        assert_eq!(
            app_scope(&max, Some("deals.read cars.read sensitive.write *.read")),
            Err(ScopeError::Outside(vec![
                "cars.read".into(),
                "sensitive.write".into(),
                "*.read".into()
            ]))
        );
        let message = app_scope(&max, Some("cars.read")).unwrap_err().to_string();
        assert_eq!(
            message,
            "outside the application's maximum permissions: cars.read"
        );
        assert!(matches!(
            app_scope(&max, Some("deals.read bogus")),
            Err(ScopeError::Invalid(_))
        ));
    }

    #[test]
    fn ceilings() {
        let max = parse_scope("deals.read *.write").unwrap();
        let p = |s: &str| s.parse::<Permission>().unwrap();
        assert!(within(&max, &p("deals.read")));
        assert!(within(&max, &p("cars.write")));
        assert!(within(&max, &p("*.write")));
        assert!(!within(&max, &p("cars.read")));
        assert!(!within(&max, &p("*.read")));
        assert!(!within(&max, &p("sensitive.write")));
    }

    #[test]
    fn redirect_uris_are_checked_and_matched_exactly() {
        assert!(check_redirect_uri("https://app.example.com/callback").is_ok());
        assert!(check_redirect_uri("http://localhost:3000/cb").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1:5173/cb?x=1").is_ok());
        assert!(matches!(
            check_redirect_uri("http://app.example.com/cb"),
            Err(UriError::Insecure(_))
        ));
        for bad in [
            "/cb",
            "app.example.com/cb",
            "javascript:alert(1)",
            "https://app.example.com/cb#x",
            "https://user@evil.com/",
            "ftp://x.com/",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
        let registered = vec!["https://app.example.com/callback".to_owned()];
        assert!(redirect_matches(
            &registered,
            "https://app.example.com/callback"
        ));
        for near in [
            "https://app.example.com/callback/",
            "https://app.example.com/callback?x=1",
            "https://APP.example.com/callback",
            "https://app.example.com/Callback",
            "https://app.example.com.evil.com/callback",
            "https://app.example.com/callback/../callback",
        ] {
            assert!(!redirect_matches(&registered, near), "{near}");
        }
    }

    #[test]
    fn origins() {
        assert!(check_origin("https://app.example.com").is_ok());
        assert!(check_origin("http://localhost:3000").is_ok());
        assert!(check_origin("https://app.example.com/").is_err());
        assert!(check_origin("https://app.example.com/x").is_err());
        assert!(check_origin("http://app.example.com").is_err());
    }

    #[test]
    fn pkce_s256() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(s256(verifier), challenge);
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
            challenge
        ));
        assert!(!pkce_matches("short", &s256("short")));
        assert!(valid_challenge(challenge));
        assert!(!valid_challenge("abc"));
    }

    #[test]
    fn consent_wording() {
        let p = |s: &str| describe(&s.parse().unwrap());
        assert_eq!(p("deals.read"), "See your deals");
        assert_eq!(p("deals.write"), "Create, change and delete your deals");
        assert_eq!(p("*.read"), "See all of your data");
        assert_eq!(
            p("creditApplications.write"),
            "Create, change and delete your credit applications"
        );
    }

    #[test]
    fn resource_names_read_as_words() {
        for (name, words) in [
            ("deals", "deals"),
            ("creditApplications", "credit applications"),
            ("CreditApplications", "credit applications"),
            ("credit_applications", "credit applications"),
            ("credit-applications", "credit applications"),
            ("credit__applications_", "credit applications"),
            ("HTTPRequests", "http requests"),
            ("userIDs", "user ids"),
            ("invoices2024Archive", "invoices2024 archive"),
            ("v2_customerNotes", "v2 customer notes"),
            ("", ""),
        ] {
            assert_eq!(resource_words(name), words, "{name}");
        }
    }
}
