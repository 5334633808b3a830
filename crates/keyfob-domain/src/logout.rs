//! The rules of RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), apart from HTTP and
//! storage: which application a logout request names, where the browser may be sent afterwards,
//! and Keyfob's own parameter that ends the application's session too.
//!
//! An address to send the browser to after logging out (`post_logout_redirect_uri`) is registered
//! per application, by the same rules as a redirect URI, and must match a registered one exactly.
//! One that does not is never followed: the user sees an error page instead, which never lists
//! what is registered.

use crate::oauth;

/// Keyfob's parameter of the end-session endpoint that asks to end the application's session
/// (the refresh family the `id_token_hint`'s `sid` names) along with the user's login.
pub const END_APP_SESSION_PARAM: &str = "end_app_session";

/// Why a logout request cannot be followed. Each is shown to the user on an error page; none
/// redirects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutError {
    /// `client_id` and the `id_token_hint` name different applications.
    #[error(
        "the client_id does not match the application the id_token_hint was issued to, so the \
         request cannot be trusted"
    )]
    ClientMismatch,
    /// A `post_logout_redirect_uri` was given, but neither `client_id` nor an `id_token_hint`
    /// says which application it belongs to.
    #[error(
        "the post_logout_redirect_uri cannot be checked: the request names no application \
         (give client_id or id_token_hint)"
    )]
    NoClient,
    /// The `post_logout_redirect_uri` is not registered for the application, exactly.
    #[error(
        "the application asked to send you to an address it has not registered for after \
         logging out (post_logout_redirect_uri), so you were not sent there"
    )]
    Unregistered,
    /// `end_app_session` holds something other than `true` or `false`.
    #[error("the parameter `end_app_session` must be `true` or `false`")]
    BadEndAppSession,
    /// `end_app_session=true` without an `id_token_hint` whose `sid` names the session.
    #[error(
        "`end_app_session=true` needs an id_token_hint that names the application's session \
         (its `sid` claim)"
    )]
    NoSessionToEnd,
}

/// The application a logout request names: from `client_id`, from the `id_token_hint`
/// (`hint_client`, its `azp` or `aud`), or `None` when neither names one. When both do, they must
/// name the same one. An empty `client_id` counts as none.
pub fn settle_client<'a>(
    client_id: Option<&'a str>,
    hint_client: Option<&'a str>,
) -> Result<Option<&'a str>, LogoutError> {
    let client_id = client_id.filter(|c| !c.is_empty());
    match (client_id, hint_client) {
        (Some(given), Some(hinted)) if given != hinted => Err(LogoutError::ClientMismatch),
        (Some(given), _) => Ok(Some(given)),
        (None, hinted) => Ok(hinted),
    }
}

/// Whether `given` is one of the application's registered post-logout redirect URIs: exactly,
/// byte for byte, as redirect URIs are matched (no trailing slash, case or query added).
pub fn post_logout_redirect_matches(registered: &[String], given: &str) -> bool {
    oauth::redirect_matches(registered, given)
}

/// Where the browser may go after logging out: nowhere when no `post_logout_redirect_uri` is given
/// (Keyfob shows its own page), else the one given, if the application (`registered`, `None` when
/// the request names no application) registered it exactly.
pub fn resolve_post_logout_redirect(
    registered: Option<&[String]>,
    given: Option<&str>,
) -> Result<Option<String>, LogoutError> {
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        return Ok(None);
    };
    let registered = registered.ok_or(LogoutError::NoClient)?;
    if post_logout_redirect_matches(registered, given) {
        Ok(Some(given.to_owned()))
    } else {
        Err(LogoutError::Unregistered)
    }
}

/// Reads `end_app_session`: absent or `false` leaves the application's session alone; `true` asks
/// to end it, which needs the session's id (`hint_sid`, the `id_token_hint`'s `sid`).
pub fn parse_end_app_session(
    raw: Option<&str>,
    hint_sid: Option<&str>,
) -> Result<bool, LogoutError> {
    match raw {
        None | Some("false") => Ok(false),
        Some("true") if hint_sid.is_some_and(|sid| !sid.is_empty()) => Ok(true),
        Some("true") => Err(LogoutError::NoSessionToEnd),
        Some(_) => Err(LogoutError::BadEndAppSession),
    }
}

/// Where to send the browser after logging out: `uri` with `state` added to its query, if given.
pub fn logout_location(uri: &str, state: Option<&str>) -> String {
    match state {
        Some(state) => crate::authorize::add_params(
            uri,
            crate::authorize::ResponseType::Code,
            &[("state", state)],
        ),
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: &str = "https://app.example.com/logged-out";

    fn registered() -> Vec<String> {
        vec![
            AFTER.to_owned(),
            "http://localhost:3000/bye?from=kf".to_owned(),
        ]
    }

    #[test]
    fn post_logout_redirect_uris_match_exactly() {
        let registered = registered();
        assert!(post_logout_redirect_matches(&registered, AFTER));
        assert!(post_logout_redirect_matches(
            &registered,
            "http://localhost:3000/bye?from=kf"
        ));
        for near in [
            "https://app.example.com/logged-out/",
            "https://app.example.com/logged-out?x=1",
            "https://APP.example.com/logged-out",
            "https://app.example.com/Logged-out",
            "https://app.example.com/logged-out#x",
            "https://app.example.com.evil.test/logged-out",
            "http://app.example.com/logged-out",
            "http://localhost:3000/bye",
            "http://localhost:3000/bye?from=kf&x=1",
            "",
        ] {
            assert!(!post_logout_redirect_matches(&registered, near), "{near}");
        }
        assert!(!post_logout_redirect_matches(&[], AFTER));
    }

    #[test]
    fn the_client_is_named_once_or_agreed_on() {
        assert_eq!(settle_client(None, None), Ok(None));
        assert_eq!(settle_client(Some(""), None), Ok(None));
        assert_eq!(settle_client(Some("app_a"), None), Ok(Some("app_a")));
        assert_eq!(settle_client(None, Some("app_a")), Ok(Some("app_a")));
        assert_eq!(
            settle_client(Some("app_a"), Some("app_a")),
            Ok(Some("app_a"))
        );
        assert_eq!(
            settle_client(Some("app_a"), Some("app_b")),
            Err(LogoutError::ClientMismatch)
        );
    }

    #[test]
    fn a_redirect_after_logout_needs_its_application_and_an_exact_match() {
        let registered = registered();
        assert_eq!(resolve_post_logout_redirect(None, None), Ok(None));
        assert_eq!(resolve_post_logout_redirect(None, Some("")), Ok(None));
        assert_eq!(
            resolve_post_logout_redirect(Some(&registered), None),
            Ok(None)
        );
        assert_eq!(
            resolve_post_logout_redirect(Some(&registered), Some(AFTER)),
            Ok(Some(AFTER.to_owned()))
        );
        assert_eq!(
            resolve_post_logout_redirect(None, Some(AFTER)),
            Err(LogoutError::NoClient)
        );
        assert_eq!(
            resolve_post_logout_redirect(Some(&registered), Some("https://evil.test/")),
            Err(LogoutError::Unregistered)
        );
        assert_eq!(
            resolve_post_logout_redirect(Some(&[]), Some(AFTER)),
            Err(LogoutError::Unregistered)
        );
        // The error never names what is registered.
        let message = LogoutError::Unregistered.to_string();
        assert!(!message.contains("app.example.com"), "{message}");
    }

    #[test]
    fn ending_the_application_session_is_asked_for_plainly() {
        assert_eq!(parse_end_app_session(None, None), Ok(false));
        assert_eq!(parse_end_app_session(Some("false"), Some("fam")), Ok(false));
        assert_eq!(parse_end_app_session(Some("true"), Some("fam")), Ok(true));
        assert_eq!(
            parse_end_app_session(Some("true"), None),
            Err(LogoutError::NoSessionToEnd)
        );
        assert_eq!(
            parse_end_app_session(Some("true"), Some("")),
            Err(LogoutError::NoSessionToEnd)
        );
        for bad in ["", "1", "yes", "TRUE", "refresh"] {
            assert_eq!(
                parse_end_app_session(Some(bad), Some("fam")),
                Err(LogoutError::BadEndAppSession),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_state_goes_back_in_the_query() {
        assert_eq!(logout_location(AFTER, None), AFTER);
        assert_eq!(
            logout_location(AFTER, Some("a b&c")),
            format!("{AFTER}?state=a+b%26c")
        );
        assert_eq!(
            logout_location("http://localhost:3000/bye?from=kf", Some("s")),
            "http://localhost:3000/bye?from=kf&state=s"
        );
    }
}
