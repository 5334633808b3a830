//! The rules of an authorization request (`GET /auth?…`), apart from HTTP and storage: which
//! redirect URI answers it, what is checked after the client (response type, fragment mode,
//! permissions within the application's maximum, PKCE, then `prompt`, `max_age` and `login_hint`),
//! the errors reported to the application, and how the redirect that carries an answer is built.
//! Which pages the user is shown is [`interaction`]'s.

pub mod interaction;

pub use interaction::{ConsentNeed, Interaction, LoginFacts, LoginNeed, Prompt};

use crate::identity::{self, IdentityScopes};
use crate::oauth;
use crate::permission::Permission;

/// The longest `nonce` kept, in characters.
pub const MAX_NONCE_LEN: usize = 512;

/// How the answer travels back: in the query (`code`) or in the fragment (`token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseType {
    Code,
    Token,
}

impl ResponseType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::Code => "code",
            ResponseType::Token => "token",
        }
    }
}

/// An error reported to the application by redirect (RFC 6749 §4.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub code: &'static str,
    pub description: String,
}

impl AuthError {
    pub(crate) fn new(code: &'static str, description: impl Into<String>) -> AuthError {
        AuthError {
            code,
            description: description.into(),
        }
    }

    /// The user said no (or allowed nothing).
    pub fn access_denied() -> AuthError {
        AuthError::new("access_denied", "the user denied the request")
    }

    /// The application's account takes only users who confirmed their email, and this one has
    /// not: a page would ask them to, which `prompt=none` does not allow.
    pub fn email_not_verified() -> AuthError {
        AuthError::new(
            "interaction_required",
            "the user must confirm their email address before signing in to this application",
        )
    }
}

/// What the request is checked against: the application's settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientPolicy<'a> {
    /// A public application (no secret) must use PKCE.
    pub public: bool,
    /// Whether the application may receive tokens in the URL fragment (`response_type=token`).
    pub allow_fragment: bool,
    /// The permissions the application may ask for at most.
    pub max_permissions: &'a [Permission],
}

/// The parameters of the request that the check reads, as sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestParams<'a> {
    pub response_type: Option<&'a str>,
    /// Comma- or space-separated; wins over `scope` when both are given.
    pub permissions: Option<&'a str>,
    /// The OAuth name of `permissions`.
    pub scope: Option<&'a str>,
    pub code_challenge: Option<&'a str>,
    pub code_challenge_method: Option<&'a str>,
    /// Space-separated `none`, `login`, `consent`, `select_account` (OpenID Connect).
    pub prompt: Option<&'a str>,
    /// Seconds.
    pub max_age: Option<&'a str>,
    pub login_hint: Option<&'a str>,
    /// OpenID Connect's `nonce`, returned in the id_token.
    pub nonce: Option<&'a str>,
    /// OpenID Connect's request objects, which Keyfob does not read: present, they are refused
    /// (`request_not_supported`, `request_uri_not_supported`) rather than ignored, since what
    /// they hold would be taken for what the query says.
    pub request: Option<&'a str>,
    pub request_uri: Option<&'a str>,
}

/// A request that passed [`check_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub response_type: ResponseType,
    /// What the application asks for, each within its maximum, duplicates dropped.
    pub permissions: Vec<Permission>,
    /// The identity scopes asked for (`openid`, `profile`, `email`): any application may.
    pub identity: IdentityScopes,
    /// The PKCE S256 challenge, for `response_type=code`.
    pub code_challenge: Option<String>,
    /// What decides the pages shown: `prompt`, `max_age`, `login_hint`.
    pub interaction: Interaction,
    /// The `nonce` to return in the id_token (empty is none).
    pub nonce: Option<String>,
}

/// Checks everything after the client: response type, permissions, PKCE, `prompt`, `max_age`, in
/// that order (`login_hint` is never an error: a hint Keyfob cannot use is dropped). The error
/// carries the response type to answer with (the query when the response type itself is unknown).
pub fn check_request(
    policy: &ClientPolicy<'_>,
    params: &RequestParams<'_>,
) -> Result<Checked, (ResponseType, AuthError)> {
    let response_type = match params.response_type {
        // The guide's requests name no response type: a code. OpenID Connect's always do.
        None | Some("") if asks_openid(params) => {
            return Err((
                ResponseType::Code,
                AuthError::new(
                    "invalid_request",
                    "response_type is required with the openid scope: use `code`",
                ),
            ));
        }
        None | Some("") | Some("code") => ResponseType::Code,
        Some("token") => ResponseType::Token,
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            return Err((
                ResponseType::Code,
                AuthError::new(
                    "unsupported_response_type",
                    format!("response_type `{shown}` is not supported: use `code` or `token`"),
                ),
            ));
        }
    };
    let fail = |error: AuthError| Err((response_type, error));
    if params.request.is_some_and(|r| !r.is_empty()) {
        return fail(AuthError::new(
            "request_not_supported",
            "request objects (`request`) are not supported: send the parameters in the query",
        ));
    }
    if params.request_uri.is_some_and(|r| !r.is_empty()) {
        return fail(AuthError::new(
            "request_uri_not_supported",
            "request objects by reference (`request_uri`) are not supported: send the parameters \
             in the query",
        ));
    }
    if response_type == ResponseType::Token && !policy.allow_fragment {
        return fail(AuthError::new(
            "unauthorized_client",
            "this application may not receive tokens in the URL fragment (response_type=token): \
             use the code flow with PKCE, or turn fragment mode on for the application",
        ));
    }
    let requested = params.permissions.or(params.scope).unwrap_or_default();
    let (permissions, identity) = match identity::parse_requested(requested) {
        Ok(asked) if asked.is_empty() => {
            return fail(AuthError::new(
                "invalid_scope",
                "no permissions were requested: send `permissions` (or `scope`)",
            ));
        }
        Ok(asked) => (asked.permissions, asked.identity),
        Err(err) => return fail(AuthError::new("invalid_scope", err.to_string())),
    };
    if let Some(beyond) = permissions
        .iter()
        .find(|p| !oauth::within(policy.max_permissions, p))
    {
        return fail(AuthError::new(
            "invalid_scope",
            format!("the application may not ask for `{beyond}`"),
        ));
    }
    let mut code_challenge = None;
    if response_type == ResponseType::Code {
        match (params.code_challenge, params.code_challenge_method) {
            (None | Some(""), None | Some("")) => {}
            (Some(challenge), Some("S256")) if oauth::valid_challenge(challenge) => {
                code_challenge = Some(challenge.to_owned());
            }
            (Some(_), Some("S256")) => {
                return fail(AuthError::new(
                    "invalid_request",
                    "code_challenge must be 43 base64url characters (the S256 of the verifier)",
                ));
            }
            _ => {
                return fail(AuthError::new(
                    "invalid_request",
                    "PKCE needs code_challenge with code_challenge_method=S256; \
                     no other method is supported",
                ));
            }
        }
        if policy.public && code_challenge.is_none() {
            return fail(AuthError::new(
                "invalid_request",
                "this public application must send code_challenge with \
                 code_challenge_method=S256 (PKCE)",
            ));
        }
    }
    let interaction = match Interaction::parse(params.prompt, params.max_age, params.login_hint) {
        Ok(interaction) => interaction,
        Err(error) => return fail(error),
    };
    let nonce = params.nonce.filter(|n| !n.is_empty());
    if nonce.is_some_and(|n| n.chars().count() > MAX_NONCE_LEN) {
        return fail(AuthError::new(
            "invalid_request",
            format!("nonce is longer than {MAX_NONCE_LEN} characters"),
        ));
    }
    Ok(Checked {
        response_type,
        permissions,
        identity,
        code_challenge,
        interaction,
        nonce: nonce.map(str::to_owned),
    })
}

/// Whether the request's scope names `openid` (read loosely: the scope is checked in full later).
fn asks_openid(params: &RequestParams<'_>) -> bool {
    params
        .permissions
        .or(params.scope)
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .any(|word| word == "openid")
}

/// Why no redirect URI could be settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// None was given, and the application did not register exactly one.
    #[error("no redirect_uri was given, and the application did not register exactly one")]
    Missing,
    /// The one given is not registered (it must match exactly).
    #[error("the redirect_uri is not registered for the application")]
    Unregistered,
}

/// The redirect URI to answer on: the one given if it is registered exactly, or with none given,
/// the application's only registered one.
pub fn resolve_redirect(
    registered: &[String],
    given: Option<&str>,
) -> Result<String, RedirectError> {
    match given {
        Some(uri) if oauth::redirect_matches(registered, uri) => Ok(uri.to_owned()),
        Some(_) => Err(RedirectError::Unregistered),
        None if registered.len() == 1 => Ok(registered[0].clone()),
        None => Err(RedirectError::Missing),
    }
}

/// `redirect_uri` with `params` added: to the query (after `&` if it has one already) or as the
/// fragment.
pub fn add_params(redirect_uri: &str, mode: ResponseType, params: &[(&str, &str)]) -> String {
    let encoded = serde_urlencoded::to_string(params).unwrap_or_default();
    match mode {
        ResponseType::Token => format!("{redirect_uri}#{encoded}"),
        ResponseType::Code => {
            let sep = if redirect_uri.ends_with('?') || redirect_uri.ends_with('&') {
                ""
            } else if redirect_uri.contains('?') {
                "&"
            } else {
                "?"
            };
            format!("{redirect_uri}{sep}{encoded}")
        }
    }
}

/// Where to send the browser to report `error`. Like every authorization response it names the
/// `iss`uer (RFC 9207), so a client talking to several servers can tell which one answered.
pub fn error_location(
    redirect_uri: &str,
    mode: ResponseType,
    state: Option<&str>,
    issuer: &str,
    error: &AuthError,
) -> String {
    let mut params = vec![
        ("error", error.code),
        ("error_description", error.description.as_str()),
    ];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("iss", issuer));
    add_params(redirect_uri, mode, &params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CB: &str = "https://app.example.com/cb";
    /// The S256 of RFC 7636's example verifier.
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn max(list: &str) -> Vec<Permission> {
        list.split(',').map(|p| p.parse().unwrap()).collect()
    }

    fn policy(max_permissions: &[Permission]) -> ClientPolicy<'_> {
        ClientPolicy {
            public: false,
            allow_fragment: true,
            max_permissions,
        }
    }

    fn uris(list: &[&str]) -> Vec<String> {
        list.iter().map(|u| u.to_string()).collect()
    }

    fn perms(p: &str) -> RequestParams<'_> {
        RequestParams {
            permissions: Some(p),
            ..RequestParams::default()
        }
    }

    fn scope_of(checked: &Checked) -> Vec<String> {
        checked
            .permissions
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The error `check_request` answers with, and where it is reported.
    fn refused(policy: &ClientPolicy<'_>, params: &RequestParams<'_>) -> (ResponseType, AuthError) {
        check_request(policy, params).expect_err("refused")
    }

    #[test]
    fn the_redirect_uri_must_be_registered_exactly() {
        let one = uris(&[CB]);
        assert_eq!(resolve_redirect(&one, None).unwrap(), CB);
        assert_eq!(resolve_redirect(&one, Some(CB)).unwrap(), CB);
        assert_eq!(
            resolve_redirect(&one, Some("https://app.example.com/cb/")),
            Err(RedirectError::Unregistered)
        );
        assert_eq!(
            resolve_redirect(&one, Some("https://APP.example.com/cb")),
            Err(RedirectError::Unregistered)
        );
        let two = uris(&[CB, "https://app.example.com/other"]);
        assert_eq!(resolve_redirect(&two, None), Err(RedirectError::Missing));
        assert_eq!(
            resolve_redirect(&two, Some("https://app.example.com/other")).unwrap(),
            "https://app.example.com/other"
        );
        assert_eq!(resolve_redirect(&[], None), Err(RedirectError::Missing));
        assert_eq!(
            resolve_redirect(&[], Some(CB)),
            Err(RedirectError::Unregistered)
        );
    }

    #[test]
    fn a_request_within_the_maximum_passes() {
        let max = max("deals.read,deals.write");
        let ok = check_request(&policy(&max), &perms("deals.read")).unwrap();
        assert_eq!(
            ok,
            Checked {
                response_type: ResponseType::Code,
                permissions: vec!["deals.read".parse().unwrap()],
                identity: IdentityScopes::NONE,
                code_challenge: None,
                interaction: Interaction::default(),
                nonce: None,
            }
        );
        let by_scope = RequestParams {
            scope: Some("deals.read deals.write deals.read"),
            ..RequestParams::default()
        };
        let ok = check_request(&policy(&max), &by_scope).unwrap();
        assert_eq!(scope_of(&ok), ["deals.read", "deals.write"]);
        // `permissions` wins over `scope`.
        let both = RequestParams {
            permissions: Some("deals.write"),
            scope: Some("deals.read"),
            ..RequestParams::default()
        };
        assert_eq!(
            scope_of(&check_request(&policy(&max), &both).unwrap()),
            ["deals.write"]
        );
        for response_type in [None, Some(""), Some("code")] {
            let p = RequestParams {
                response_type,
                ..perms("deals.read")
            };
            assert_eq!(
                check_request(&policy(&max), &p).unwrap().response_type,
                ResponseType::Code
            );
        }
    }

    #[test]
    fn an_unknown_response_type_is_reported_in_the_query() {
        let max = max("deals.read");
        let p = RequestParams {
            response_type: Some("id_token"),
            ..perms("deals.read")
        };
        let (mode, error) = refused(&policy(&max), &p);
        assert_eq!(mode, ResponseType::Code);
        assert_eq!(error.code, "unsupported_response_type");
        assert_eq!(
            error.description,
            "response_type `id_token` is not supported: use `code` or `token`"
        );
        // What is echoed back is cut to 40 characters.
        let long = "x".repeat(100);
        let p = RequestParams {
            response_type: Some(&long),
            ..perms("deals.read")
        };
        let (_, error) = refused(&policy(&max), &p);
        assert_eq!(
            error.description,
            format!(
                "response_type `{}` is not supported: use `code` or `token`",
                "x".repeat(40)
            )
        );
        // The response type is checked before anything else.
        let p = RequestParams {
            response_type: Some("id_token"),
            ..RequestParams::default()
        };
        assert_eq!(
            refused(&policy(&max), &p).1.code,
            "unsupported_response_type"
        );
    }

    #[test]
    fn tokens_in_the_fragment_need_the_app_to_allow_them() {
        let max = max("deals.read");
        let closed = ClientPolicy {
            public: true,
            allow_fragment: false,
            max_permissions: &max,
        };
        let token = RequestParams {
            response_type: Some("token"),
            ..perms("deals.read")
        };
        let (mode, error) = refused(&closed, &token);
        assert_eq!(error.code, "unauthorized_client");
        assert_eq!(
            mode,
            ResponseType::Token,
            "reported where the app looks: the fragment"
        );
        // Checked before the permissions.
        let nothing = RequestParams {
            response_type: Some("token"),
            ..RequestParams::default()
        };
        assert_eq!(refused(&closed, &nothing).1.code, "unauthorized_client");
        // The code flow is unaffected.
        let code = RequestParams {
            code_challenge: Some(CHALLENGE),
            code_challenge_method: Some("S256"),
            ..perms("deals.read")
        };
        assert!(check_request(&closed, &code).is_ok());
        // An application that allows it gets the token flow, PKCE or not, even when public.
        let open = ClientPolicy {
            allow_fragment: true,
            ..closed
        };
        let ok = check_request(&open, &token).unwrap();
        assert_eq!(ok.response_type, ResponseType::Token);
        assert_eq!(ok.code_challenge, None);
    }

    #[test]
    fn permissions_must_be_requested_readable_and_within_the_maximum() {
        let max = max("deals.read");
        let refused_scope = |p: RequestParams<'_>| {
            let (mode, error) = refused(&policy(&max), &p);
            assert_eq!(error.code, "invalid_scope");
            assert_eq!(mode, ResponseType::Code);
            error.description
        };
        let none = "no permissions were requested: send `permissions` (or `scope`)";
        assert_eq!(refused_scope(RequestParams::default()), none);
        assert_eq!(refused_scope(perms("")), none);
        assert_eq!(refused_scope(perms(" , ")), none);
        // An empty `permissions` is not replaced by `scope`.
        assert_eq!(
            refused_scope(RequestParams {
                permissions: Some(""),
                scope: Some("deals.read"),
                ..RequestParams::default()
            }),
            none
        );
        assert_eq!(
            refused_scope(perms("bogus")),
            "bogus".parse::<Permission>().unwrap_err().to_string()
        );
        assert_eq!(
            refused_scope(perms("deals.read,cars.read")),
            "the application may not ask for `cars.read`"
        );
        assert_eq!(
            refused_scope(perms("deals.write")),
            "the application may not ask for `deals.write`"
        );
        // Reported in the fragment for the token flow.
        let p = RequestParams {
            response_type: Some("token"),
            ..perms("cars.read")
        };
        assert_eq!(refused(&policy(&max), &p).0, ResponseType::Token);
    }

    #[test]
    fn pkce_takes_only_a_valid_s256_challenge() {
        let max = max("deals.read");
        let with = |challenge: Option<&'static str>, method: Option<&'static str>| RequestParams {
            code_challenge: challenge,
            code_challenge_method: method,
            ..perms("deals.read")
        };
        let ok = check_request(&policy(&max), &with(Some(CHALLENGE), Some("S256"))).unwrap();
        assert_eq!(ok.code_challenge.as_deref(), Some(CHALLENGE));
        assert_eq!(
            CHALLENGE,
            oauth::s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        );
        // Empty is the same as absent.
        for (c, m) in [
            (None, None),
            (Some(""), None),
            (None, Some("")),
            (Some(""), Some("")),
        ] {
            let ok = check_request(&policy(&max), &with(c, m)).unwrap();
            assert_eq!(ok.code_challenge, None);
        }

        let malformed = "code_challenge must be 43 base64url characters (the S256 of the verifier)";
        let (mode, error) = refused(&policy(&max), &with(Some("abc"), Some("S256")));
        assert_eq!((mode, error.code), (ResponseType::Code, "invalid_request"));
        assert_eq!(error.description, malformed);
        let (_, error) = refused(&policy(&max), &with(Some(""), Some("S256")));
        assert_eq!(error.description, malformed);

        let unsupported = "PKCE needs code_challenge with code_challenge_method=S256; \
                           no other method is supported";
        for (c, m) in [
            (Some(CHALLENGE), Some("plain")),
            (Some(CHALLENGE), Some("s256")),
            (Some(CHALLENGE), None),
            (Some(CHALLENGE), Some("")),
            (None, Some("S256")),
        ] {
            let (_, error) = refused(&policy(&max), &with(c, m));
            assert_eq!(error.code, "invalid_request", "{c:?} {m:?}");
            assert_eq!(error.description, unsupported, "{c:?} {m:?}");
        }

        // The permissions are checked first.
        let p = RequestParams {
            code_challenge: Some("abc"),
            code_challenge_method: Some("plain"),
            ..perms("cars.read")
        };
        assert_eq!(refused(&policy(&max), &p).1.code, "invalid_scope");
    }

    #[test]
    fn a_public_application_must_use_pkce_for_a_code() {
        let max = max("deals.read");
        let public = ClientPolicy {
            public: true,
            ..policy(&max)
        };
        let (mode, error) = refused(&public, &perms("deals.read"));
        assert_eq!(mode, ResponseType::Code);
        assert_eq!(error.code, "invalid_request");
        assert_eq!(
            error.description,
            "this public application must send code_challenge with \
             code_challenge_method=S256 (PKCE)"
        );
        let p = RequestParams {
            code_challenge: Some(CHALLENGE),
            code_challenge_method: Some("S256"),
            ..perms("deals.read")
        };
        assert_eq!(
            check_request(&public, &p)
                .unwrap()
                .code_challenge
                .as_deref(),
            Some(CHALLENGE)
        );
        // A bad challenge is reported as such, not as a missing one.
        let bad = RequestParams {
            code_challenge: Some("abc"),
            ..p
        };
        assert_eq!(
            refused(&public, &bad).1.description,
            "code_challenge must be 43 base64url characters (the S256 of the verifier)"
        );
    }

    #[test]
    fn the_token_flow_ignores_pkce_parameters() {
        let max = max("deals.read");
        let p = RequestParams {
            response_type: Some("token"),
            code_challenge: Some("abc"),
            code_challenge_method: Some("plain"),
            ..perms("deals.read")
        };
        let ok = check_request(&policy(&max), &p).unwrap();
        assert_eq!(ok.response_type, ResponseType::Token);
        assert_eq!(ok.code_challenge, None);
    }

    #[test]
    fn identity_scopes_need_no_permission_and_any_application_may_ask() {
        let max = max("deals.read");
        let p = RequestParams {
            response_type: Some("code"),
            scope: Some("openid email"),
            nonce: Some("n-0S6_WzA2Mj"),
            ..RequestParams::default()
        };
        let ok = check_request(&policy(&max), &p).unwrap();
        assert!(ok.permissions.is_empty());
        assert_eq!(ok.identity.as_str(), "openid email");
        assert_eq!(ok.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
        let both = RequestParams {
            response_type: Some("code"),
            scope: Some("openid deals.read profile"),
            nonce: Some(""),
            ..RequestParams::default()
        };
        let ok = check_request(&policy(&max), &both).unwrap();
        assert_eq!(scope_of(&ok), ["deals.read"]);
        assert_eq!(ok.identity.as_str(), "openid profile");
        assert_eq!(ok.nonce, None, "an empty nonce is none");
        // A permission beyond the maximum is still refused beside them.
        let beyond = RequestParams {
            response_type: Some("code"),
            scope: Some("openid deals.write"),
            ..RequestParams::default()
        };
        assert_eq!(refused(&policy(&max), &beyond).1.code, "invalid_scope");
        // A nonce too long to keep is refused, naming it.
        let long = "n".repeat(MAX_NONCE_LEN + 1);
        let p = RequestParams {
            response_type: Some("code"),
            scope: Some("openid"),
            nonce: Some(&long),
            ..RequestParams::default()
        };
        let (_, error) = refused(&policy(&max), &p);
        assert_eq!(error.code, "invalid_request");
        assert_eq!(error.description, "nonce is longer than 512 characters");
    }

    #[test]
    fn an_openid_request_names_its_response_type_and_request_objects_are_refused() {
        let max = max("deals.read");
        let p = RequestParams {
            scope: Some("openid deals.read"),
            ..RequestParams::default()
        };
        let (mode, error) = refused(&policy(&max), &p);
        assert_eq!((mode, error.code), (ResponseType::Code, "invalid_request"));
        assert!(error.description.starts_with("response_type is required"));
        // The guide's requests, without openid, still default to a code.
        assert!(check_request(&policy(&max), &perms("deals.read")).is_ok());
        for (request, request_uri, code) in [
            (
                Some("eyJhbGciOiJub25lIn0.e30."),
                None,
                "request_not_supported",
            ),
            (
                None,
                Some("https://app.example/r/1"),
                "request_uri_not_supported",
            ),
        ] {
            let p = RequestParams {
                response_type: Some("code"),
                request,
                request_uri,
                ..perms("deals.read")
            };
            assert_eq!(refused(&policy(&max), &p).1.code, code);
        }
        // Empty is absent.
        let p = RequestParams {
            request: Some(""),
            ..perms("deals.read")
        };
        assert!(check_request(&policy(&max), &p).is_ok());
    }

    #[test]
    fn prompt_and_max_age_are_checked_last_and_reported_where_the_app_looks() {
        let max = max("deals.read");
        let with = |prompt: Option<&'static str>, max_age: Option<&'static str>| RequestParams {
            prompt,
            max_age,
            login_hint: Some("Ada@Example.com"),
            ..perms("deals.read")
        };
        let ok = check_request(&policy(&max), &with(Some("login consent"), Some("300"))).unwrap();
        assert!(ok.interaction.prompt.login && ok.interaction.prompt.consent);
        assert_eq!(
            ok.interaction.max_age,
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            ok.interaction.login_hint.as_ref().map(|e| e.as_str()),
            Some("ada@example.com")
        );
        // Absent, the request is as it always was.
        let plain = check_request(&policy(&max), &perms("deals.read")).unwrap();
        assert_eq!(plain.interaction, Interaction::default());

        for (p, m, named) in [
            (Some("none login"), None, "prompt=none"),
            (Some("bogus"), None, "prompt `bogus`"),
            (None, Some("abc"), "max_age"),
            (None, Some("-1"), "max_age"),
            (None, Some("99999999999"), "max_age"),
        ] {
            let (mode, error) = refused(&policy(&max), &with(p, m));
            assert_eq!((mode, error.code), (ResponseType::Code, "invalid_request"));
            assert!(
                error.description.starts_with(named),
                "{}",
                error.description
            );
        }
        // In the fragment for the token flow.
        let token = RequestParams {
            response_type: Some("token"),
            ..with(None, Some("abc"))
        };
        assert_eq!(refused(&policy(&max), &token).0, ResponseType::Token);
        // After the permissions.
        let both = RequestParams {
            max_age: Some("abc"),
            ..perms("cars.read")
        };
        assert_eq!(refused(&policy(&max), &both).1.code, "invalid_scope");
    }

    #[test]
    fn answers_go_in_the_query_or_the_fragment() {
        let error = AuthError::access_denied();
        assert_eq!(error.code, "access_denied");
        assert_eq!(
            error_location(
                CB,
                ResponseType::Code,
                Some("a b"),
                "https://id.test",
                &error
            ),
            "https://app.example.com/cb?error=access_denied\
             &error_description=the+user+denied+the+request&state=a+b&iss=https%3A%2F%2Fid.test"
        );
        assert_eq!(
            error_location(CB, ResponseType::Token, None, "https://id.test", &error),
            "https://app.example.com/cb#error=access_denied\
             &error_description=the+user+denied+the+request&iss=https%3A%2F%2Fid.test"
        );
        assert_eq!(
            add_params(
                "https://x.test/cb?v=1",
                ResponseType::Code,
                &[("code", "c")]
            ),
            "https://x.test/cb?v=1&code=c"
        );
        assert_eq!(
            add_params("https://x.test/cb?", ResponseType::Code, &[("code", "c")]),
            "https://x.test/cb?code=c"
        );
        assert_eq!(
            add_params(
                "https://x.test/cb?v=1&",
                ResponseType::Code,
                &[("code", "c")]
            ),
            "https://x.test/cb?v=1&code=c"
        );
        assert_eq!(
            add_params(CB, ResponseType::Token, &[("token", "t"), ("state", "s")]),
            "https://app.example.com/cb#token=t&state=s"
        );
        assert_eq!(ResponseType::Code.as_str(), "code");
        assert_eq!(ResponseType::Token.as_str(), "token");
    }
}
