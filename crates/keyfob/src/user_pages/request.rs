//! An authorization request (`GET /auth?…`): reading it, checking it against the application, and
//! the redirects that answer it.
//!
//! The client and its redirect URI are checked first: until both are known good, nothing may be
//! sent to the redirect URI, so a bad one gets an error page. Every other problem is reported to
//! the application by a redirect carrying `error`, `error_description` and `state`.
//!
//! The request travels through the login and consent pages as its own query parameters (and as
//! hidden fields of the consent form), and is checked again in full wherever it comes back: the
//! browser can change it, so nothing in it is trusted without checking.

use keyfob_domain::input::InputError;
use keyfob_domain::oauth;
use keyfob_domain::permission::Permission;
use keyfob_store::AppRow;
use serde::{Deserialize, Serialize};

use crate::state::AppState;

/// The parameters of `GET /auth`, as sent. Unknown parameters are ignored (RFC 6749 §3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// Comma- or space-separated; `scope` is the OAuth name of the same thing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge_method: Option<String>,
}

impl AuthorizeParams {
    /// Reads a query string; `None` when it cannot be read (e.g. a parameter given twice, or one
    /// holding text Keyfob does not accept).
    pub fn from_query(query: &str) -> Option<AuthorizeParams> {
        keyfob_domain::input::check_urlencoded(query.as_bytes()).ok()?;
        serde_urlencoded::from_str(query).ok()
    }

    /// Reads the login and sign-up forms' `request` field: a query string inside a form field,
    /// decoded twice, so the form's own checks have not seen what it decodes to. Text Keyfob does
    /// not accept is refused, naming the parameter; anything else unreadable is no request at all.
    pub fn from_form_field(request: &str) -> Result<AuthorizeParams, InputError> {
        keyfob_domain::input::check_urlencoded(request.as_bytes())?;
        Ok(AuthorizeParams::from_query(request).unwrap_or_default())
    }

    /// The parameters as a query string, every value percent-encoded.
    pub fn to_query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    /// Whether no parameter was given at all (a plain visit to the login page).
    pub fn is_empty(&self) -> bool {
        *self == AuthorizeParams::default()
    }

    /// Where to continue after logging in: the authorization request again, or the user's grants.
    pub fn continue_path(&self) -> String {
        if self.is_empty() {
            super::GRANTS_PATH.to_owned()
        } else {
            format!("/auth?{}", self.to_query())
        }
    }
}

/// An application and the redirect URI to answer on, both checked.
#[derive(Debug, Clone)]
pub struct Client {
    pub app: AppRow,
    pub redirect_uri: String,
}

impl Client {
    /// The permissions the application may ask for at most.
    pub fn max_permissions(&self) -> &[Permission] {
        &self.app.max_permissions
    }
}

/// Why a client or redirect URI was refused: shown on an error page, never redirected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("The link that brought you here is missing the application's client_id.")]
    MissingClient,
    #[error("The application that sent you here is not known to this server, or was removed.")]
    UnknownClient,
    #[error(
        "The application that sent you here did not say where to send you back (redirect_uri)."
    )]
    MissingRedirect,
    #[error(
        "The application that sent you here asked to send you back to an address it has not \
         registered, so you were not sent there."
    )]
    UnregisteredRedirect,
}

/// Checks the client and its redirect URI, before anything else. With no `redirect_uri`, an
/// application that registered exactly one is answered there.
pub async fn check_client(
    state: &AppState,
    params: &AuthorizeParams,
) -> Result<Result<Client, ClientError>, keyfob_store::StoreError> {
    let Some(client_id) = params.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return Ok(Err(ClientError::MissingClient));
    };
    if client_id.len() > 200 {
        return Ok(Err(ClientError::UnknownClient));
    }
    let Some(app) = state
        .find_app(client_id)
        .await?
        .filter(|app| app.revoked_at.is_none())
    else {
        return Ok(Err(ClientError::UnknownClient));
    };
    Ok(resolve_redirect(app, params.redirect_uri.as_deref()))
}

fn resolve_redirect(app: AppRow, given: Option<&str>) -> Result<Client, ClientError> {
    let registered = &app.redirect_uris;
    let redirect_uri = match given {
        Some(uri) if oauth::redirect_matches(registered, uri) => uri.to_owned(),
        Some(_) => return Err(ClientError::UnregisteredRedirect),
        None if registered.len() == 1 => registered[0].clone(),
        None => return Err(ClientError::MissingRedirect),
    };
    Ok(Client { app, redirect_uri })
}

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

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub client: Client,
    pub response_type: ResponseType,
    /// What the application asks for, each within its maximum, duplicates dropped.
    pub permissions: Vec<Permission>,
    pub state: Option<String>,
    /// The PKCE S256 challenge, for `response_type=code`.
    pub code_challenge: Option<String>,
}

impl AuthRequest {
    /// The request as hidden fields and query parameters carry it onward.
    pub fn params(&self) -> AuthorizeParams {
        AuthorizeParams {
            client_id: Some(self.client.app.client_id.to_string()),
            redirect_uri: Some(self.client.redirect_uri.clone()),
            permissions: None,
            scope: Some(self.scope()),
            state: self.state.clone(),
            response_type: Some(self.response_type.as_str().to_owned()),
            code_challenge: self.code_challenge.clone(),
            code_challenge_method: self.code_challenge.as_ref().map(|_| "S256".to_owned()),
        }
    }

    /// The requested permissions, space-separated.
    pub fn scope(&self) -> String {
        self.permissions
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The redirect that reports `error` to the application, from `issuer`.
    pub fn error_redirect(&self, issuer: &str, error: &AuthError) -> String {
        error_location(
            &self.client.redirect_uri,
            self.response_type,
            self.state.as_deref(),
            issuer,
            error,
        )
    }
}

/// An error reported to the application by redirect (RFC 6749 §4.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub code: &'static str,
    pub description: String,
}

impl AuthError {
    fn new(code: &'static str, description: impl Into<String>) -> AuthError {
        AuthError {
            code,
            description: description.into(),
        }
    }

    /// The user said no (or allowed nothing).
    pub fn access_denied() -> AuthError {
        AuthError::new("access_denied", "the user denied the request")
    }
}

/// Checks everything after the client: response type, permissions, PKCE. The error carries the
/// response type to answer with (the query when the response type itself is unknown).
pub fn check_request(
    client: Client,
    params: &AuthorizeParams,
) -> Result<AuthRequest, (Box<Client>, ResponseType, AuthError)> {
    let state = params.state.clone().filter(|s| !s.is_empty());
    let fail =
        |client: Client, rt: ResponseType, error: AuthError| Err((Box::new(client), rt, error));
    let response_type = match params.response_type.as_deref() {
        None | Some("") | Some("code") => ResponseType::Code,
        Some("token") => ResponseType::Token,
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            return fail(
                client,
                ResponseType::Code,
                AuthError::new(
                    "unsupported_response_type",
                    format!("response_type `{shown}` is not supported: use `code` or `token`"),
                ),
            );
        }
    };
    if response_type == ResponseType::Token && !client.app.allow_fragment {
        return fail(
            client,
            response_type,
            AuthError::new(
                "unauthorized_client",
                "this application may not receive tokens in the URL fragment (response_type=token): \
                 use the code flow with PKCE, or turn fragment mode on for the application",
            ),
        );
    }
    let requested = params
        .permissions
        .as_deref()
        .or(params.scope.as_deref())
        .unwrap_or_default();
    let permissions = match oauth::parse_scope(requested) {
        Ok(p) if p.is_empty() => {
            return fail(
                client,
                response_type,
                AuthError::new(
                    "invalid_scope",
                    "no permissions were requested: send `permissions` (or `scope`)",
                ),
            );
        }
        Ok(p) => p,
        Err(err) => {
            return fail(
                client,
                response_type,
                AuthError::new("invalid_scope", err.to_string()),
            );
        }
    };
    let max = client.max_permissions();
    if let Some(beyond) = permissions.iter().find(|p| !oauth::within(max, p)) {
        return fail(
            client,
            response_type,
            AuthError::new(
                "invalid_scope",
                format!("the application may not ask for `{beyond}`"),
            ),
        );
    }
    let mut code_challenge = None;
    if response_type == ResponseType::Code {
        match (
            params.code_challenge.as_deref(),
            params.code_challenge_method.as_deref(),
        ) {
            (None | Some(""), None | Some("")) => {}
            (Some(challenge), Some("S256")) if oauth::valid_challenge(challenge) => {
                code_challenge = Some(challenge.to_owned());
            }
            (Some(_), Some("S256")) => {
                return fail(
                    client,
                    response_type,
                    AuthError::new(
                        "invalid_request",
                        "code_challenge must be 43 base64url characters (the S256 of the verifier)",
                    ),
                );
            }
            _ => {
                return fail(
                    client,
                    response_type,
                    AuthError::new(
                        "invalid_request",
                        "PKCE needs code_challenge with code_challenge_method=S256; \
                         no other method is supported",
                    ),
                );
            }
        }
        if client.app.public && code_challenge.is_none() {
            return fail(
                client,
                response_type,
                AuthError::new(
                    "invalid_request",
                    "this public application must send code_challenge with \
                     code_challenge_method=S256 (PKCE)",
                ),
            );
        }
    }
    Ok(AuthRequest {
        client,
        response_type,
        permissions,
        state,
        code_challenge,
    })
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

    fn app(public: bool, uris: &[&str], max: &str) -> AppRow {
        AppRow {
            client_id: "app_1".into(),
            account_id: "acc".into(),
            name: "Demo".into(),
            public,
            client_secret_hash: None,
            redirect_uris: uris.iter().map(|u| u.to_string()).collect(),
            origins: Default::default(),
            max_permissions: max.split(',').map(|p| p.parse().unwrap()).collect(),
            refresh_idle_secs: None,
            refresh_absolute_secs: None,
            allow_fragment: true,
            created_at: 0,
            revoked_at: None,
        }
    }

    fn params(query: &str) -> AuthorizeParams {
        AuthorizeParams::from_query(query).unwrap()
    }

    fn check(app: AppRow, query: &str) -> Result<AuthRequest, AuthError> {
        let p = params(query);
        let client = resolve_redirect(app, p.redirect_uri.as_deref()).unwrap();
        check_request(client, &p).map_err(|(_, _, e)| e)
    }

    const CB: &str = "https://app.example.com/cb";

    #[test]
    fn the_redirect_uri_must_be_registered_exactly() {
        let one = app(false, &[CB], "deals.read");
        assert_eq!(
            resolve_redirect(one.clone(), None).unwrap().redirect_uri,
            CB
        );
        assert_eq!(
            resolve_redirect(one.clone(), Some(CB))
                .unwrap()
                .redirect_uri,
            CB
        );
        assert_eq!(
            resolve_redirect(one, Some("https://app.example.com/cb/")).unwrap_err(),
            ClientError::UnregisteredRedirect
        );
        let two = app(false, &[CB, "https://app.example.com/other"], "deals.read");
        assert_eq!(
            resolve_redirect(two, None).unwrap_err(),
            ClientError::MissingRedirect
        );
    }

    #[test]
    fn requests_are_checked_against_the_application() {
        let confidential = app(false, &[CB], "deals.read,deals.write");
        let ok = check(confidential.clone(), "permissions=deals.read&state=xyz").unwrap();
        assert_eq!(ok.response_type, ResponseType::Code);
        assert_eq!(ok.scope(), "deals.read");
        assert_eq!(ok.state.as_deref(), Some("xyz"));
        let ok = check(confidential.clone(), "scope=deals.read+deals.write").unwrap();
        assert_eq!(ok.scope(), "deals.read deals.write");

        let code = |q: &str| check(confidential.clone(), q).unwrap_err().code;
        assert_eq!(code("permissions=cars.read"), "invalid_scope");
        assert_eq!(code("permissions="), "invalid_scope");
        assert_eq!(code(""), "invalid_scope");
        assert_eq!(code("permissions=bogus"), "invalid_scope");
        assert_eq!(
            code("permissions=deals.read&response_type=id_token"),
            "unsupported_response_type"
        );
        assert_eq!(
            code("permissions=deals.read&code_challenge=abc&code_challenge_method=S256"),
            "invalid_request"
        );
        let challenge = oauth::s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            code(&format!(
                "permissions=deals.read&code_challenge={challenge}&code_challenge_method=plain"
            )),
            "invalid_request"
        );

        let public = app(true, &[CB], "deals.read");
        assert_eq!(
            check(public.clone(), "permissions=deals.read")
                .unwrap_err()
                .code,
            "invalid_request"
        );
        let ok = check(
            public.clone(),
            &format!(
                "permissions=deals.read&code_challenge={challenge}&code_challenge_method=S256"
            ),
        )
        .unwrap();
        assert_eq!(ok.code_challenge.as_deref(), Some(challenge.as_str()));
        let token = check(public.clone(), "permissions=deals.read&response_type=token").unwrap();
        assert_eq!(token.response_type, ResponseType::Token);
    }

    #[test]
    fn tokens_in_the_fragment_need_the_app_to_allow_them() {
        let mut closed = app(true, &[CB], "deals.read");
        closed.allow_fragment = false;
        let p = params("permissions=deals.read&response_type=token");
        let client = resolve_redirect(closed.clone(), None).unwrap();
        let (_, mode, error) = check_request(client, &p).expect_err("refused");
        assert_eq!(error.code, "unauthorized_client");
        assert_eq!(
            mode,
            ResponseType::Token,
            "reported where the app looks: the fragment"
        );
        // The code flow is unaffected.
        assert!(check(closed, "permissions=deals.read&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256").is_ok());
    }

    #[test]
    fn answers_go_in_the_query_or_the_fragment() {
        let error = AuthError::access_denied();
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
            add_params(
                "https://x.test/cb?v=1",
                ResponseType::Code,
                &[("code", "c")]
            ),
            "https://x.test/cb?v=1&code=c"
        );
        assert_eq!(
            add_params(CB, ResponseType::Token, &[("token", "t"), ("state", "s")]),
            "https://app.example.com/cb#token=t&state=s"
        );
    }

    #[test]
    fn parameters_survive_a_round_trip() {
        let p =
            params("client_id=app_1&redirect_uri=https%3A%2F%2Fa.test%2Fcb%3Fx%3D1&state=%26%3D");
        assert_eq!(AuthorizeParams::from_query(&p.to_query()).unwrap(), p);
        assert!(AuthorizeParams::from_query("state=a&state=b").is_none());
        assert!(AuthorizeParams::default().is_empty());
        assert_eq!(AuthorizeParams::default().continue_path(), "/auth/grants");
    }
}
