//! An authorization request (`GET /auth?…`): reading it, finding its application, and checking it
//! against that application by the rules of `keyfob_domain::authorize`, which also builds the
//! redirects that answer it.
//!
//! The client and its redirect URI are checked first: until both are known good, nothing may be
//! sent to the redirect URI, so a bad one gets an error page. Every other problem is reported to
//! the application by a redirect carrying `error`, `error_description` and `state`.
//!
//! The request travels through the login and consent pages as its own query parameters (and as
//! hidden fields of the consent form), and is checked again in full wherever it comes back: the
//! browser can change it, so nothing in it is trusted without checking.

use keyfob_domain::authorize::{
    self, ClientPolicy, Interaction, LoginFacts, RedirectError, RequestParams,
};
pub use keyfob_domain::authorize::{AuthError, ResponseType, add_params, error_location};
use keyfob_domain::identity::{IdentityScopes, scope_string};
use keyfob_domain::input::InputError;
use keyfob_domain::permission::Permission;
use keyfob_store::AppRow;
use serde::{Deserialize, Serialize};

use crate::state::AppState;
use crate::web::UserLogin;

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
    /// OpenID Connect's `none`, `login`, `consent`, `select_account`, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The oldest login the application accepts, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// The email the application expects the user to log in with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_hint: Option<String>,
    /// OpenID Connect's `nonce`, returned in the id_token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// OpenID Connect's request objects: read only to be refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_uri: Option<String>,
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

    /// The request as it carries on once the user has logged in (or signed up) for it: that login
    /// answers `prompt=login` (and `select_account`), `max_age` and `login_hint`, so they are
    /// taken out; kept, they would send the user back to the login page. (The browser could take
    /// them out itself, so they never proved anything: the login's time is what does.)
    pub fn after_login(&self) -> AuthorizeParams {
        AuthorizeParams {
            prompt: authorize::interaction::prompt_after_login(self.prompt.as_deref()),
            max_age: None,
            login_hint: None,
            ..self.clone()
        }
    }

    /// What the request says about the pages to show, if it can be read (else `GET /auth` reports
    /// the error to the application).
    pub fn interaction(&self) -> Option<Interaction> {
        Interaction::parse(
            self.prompt.as_deref(),
            self.max_age.as_deref(),
            self.login_hint.as_deref(),
        )
        .ok()
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

    /// What an authorization request from this application is checked against.
    fn policy(&self) -> ClientPolicy<'_> {
        ClientPolicy {
            public: self.app.public,
            allow_fragment: self.app.allow_fragment,
            max_permissions: &self.app.max_permissions,
        }
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

impl ClientError {
    /// What the application's developer needs to fix the request: the OAuth error code and what
    /// was received, never what the application registered (the page is anyone's to see).
    pub fn for_developer(&self, params: &AuthorizeParams) -> String {
        let client_id = shown(params.client_id.as_deref());
        let redirect_uri = shown(params.redirect_uri.as_deref());
        let detail = match self {
            ClientError::MissingClient => "no `client_id` was received.".to_owned(),
            ClientError::UnknownClient => {
                format!("no application has the `client_id` received, `{client_id}`.")
            }
            ClientError::MissingRedirect => format!(
                "no `redirect_uri` was received for `client_id` `{client_id}`; it may be left \
                 out only by an application that registered exactly one."
            ),
            ClientError::UnregisteredRedirect => format!(
                "the `redirect_uri` received, `{redirect_uri}`, is not one that `client_id` \
                 `{client_id}` registered; it must match one exactly, character for character."
            ),
        };
        let code = match self {
            ClientError::UnknownClient => "invalid_client",
            _ => "invalid_request",
        };
        format!("For the application's developer: error `{code}`: {detail}")
    }
}

/// A received value as an error page shows it: at most 200 characters, without the backticks
/// that mark code in the page's messages.
fn shown(value: Option<&str>) -> String {
    let value = value.unwrap_or_default();
    let mut out: String = value.chars().take(200).filter(|c| *c != '`').collect();
    if value.chars().count() > 200 {
        out.push('…');
    }
    out
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
    match authorize::resolve_redirect(&app.redirect_uris, given) {
        Ok(redirect_uri) => Ok(Client { app, redirect_uri }),
        Err(RedirectError::Unregistered) => Err(ClientError::UnregisteredRedirect),
        Err(RedirectError::Missing) => Err(ClientError::MissingRedirect),
    }
}

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub client: Client,
    pub response_type: ResponseType,
    /// What the application asks for, each within its maximum, duplicates dropped.
    pub permissions: Vec<Permission>,
    /// The identity scopes asked for (`openid`, `profile`, `email`).
    pub identity: IdentityScopes,
    /// The `nonce` for the id_token.
    pub nonce: Option<String>,
    pub state: Option<String>,
    /// The PKCE S256 challenge, for `response_type=code`.
    pub code_challenge: Option<String>,
    /// What decides the pages shown: `prompt`, `max_age`, `login_hint`.
    pub interaction: Interaction,
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
            prompt: self.interaction.prompt.to_param(),
            max_age: self
                .interaction
                .max_age
                .map(|age| age.as_secs().to_string()),
            login_hint: self
                .interaction
                .login_hint
                .as_ref()
                .map(|email| email.as_str().to_owned()),
            nonce: self.nonce.clone(),
            request: None,
            request_uri: None,
        }
    }

    /// What is requested, space-separated: the identity scopes, then the permissions.
    pub fn scope(&self) -> String {
        scope_string(self.identity, &self.permissions)
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

/// What the rules of `prompt`, `max_age` and `login_hint` read of a login.
pub fn facts(user: &UserLogin) -> LoginFacts<'_> {
    LoginFacts {
        authenticated_at: user.authenticated_at(),
        email: &user.email,
    }
}

/// Checks everything after the client (see [`authorize::check_request`]). The error carries the
/// response type to answer with (the query when the response type itself is unknown).
pub fn check_request(
    client: Client,
    params: &AuthorizeParams,
) -> Result<AuthRequest, (Box<Client>, ResponseType, AuthError)> {
    let raw = RequestParams {
        response_type: params.response_type.as_deref(),
        permissions: params.permissions.as_deref(),
        scope: params.scope.as_deref(),
        code_challenge: params.code_challenge.as_deref(),
        code_challenge_method: params.code_challenge_method.as_deref(),
        prompt: params.prompt.as_deref(),
        max_age: params.max_age.as_deref(),
        login_hint: params.login_hint.as_deref(),
        nonce: params.nonce.as_deref(),
        request: params.request.as_deref(),
        request_uri: params.request_uri.as_deref(),
    };
    match authorize::check_request(&client.policy(), &raw) {
        Ok(checked) => Ok(AuthRequest {
            client,
            response_type: checked.response_type,
            permissions: checked.permissions,
            identity: checked.identity,
            nonce: checked.nonce,
            state: params.state.clone().filter(|s| !s.is_empty()),
            code_challenge: checked.code_challenge,
            interaction: checked.interaction,
        }),
        Err((mode, error)) => Err((Box::new(client), mode, error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CB: &str = "https://app.example.com/cb";

    fn app(public: bool, uris: &[&str], max: &str) -> AppRow {
        AppRow {
            client_id: "app_1".into(),
            account_id: "acc".into(),
            name: "Demo".into(),
            public,
            client_secret_hash: None,
            redirect_uris: uris.iter().map(|u| u.to_string()).collect(),
            post_logout_redirect_uris: Default::default(),
            origins: Default::default(),
            max_permissions: max.split(',').map(|p| p.parse().unwrap()).collect(),
            refresh_idle_secs: None,
            refresh_absolute_secs: None,
            allow_fragment: true,
            created_at: keyfob_store::Timestamp::UNIX_EPOCH,
            revoked_at: None,
            previous_secret_hash: None,
            previous_secret_expires_at: None,
            deleted_at: None,
            links: Default::default(),
        }
    }

    fn params(query: &str) -> AuthorizeParams {
        AuthorizeParams::from_query(query).unwrap()
    }

    #[test]
    fn a_redirect_uri_that_cannot_be_settled_is_an_error_page() {
        let one = app(false, &[CB], "deals.read");
        assert_eq!(
            resolve_redirect(one.clone(), None).unwrap().redirect_uri,
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
    fn a_checked_request_carries_on_as_parameters() {
        let challenge = keyfob_domain::oauth::s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let client = resolve_redirect(app(true, &[CB], "deals.read,deals.write"), None).unwrap();
        let p = params(&format!(
            "client_id=app_1&scope=deals.read,deals.write&state=xyz\
             &code_challenge={challenge}&code_challenge_method=S256"
        ));
        let request = check_request(client.clone(), &p).unwrap();
        assert_eq!(request.response_type, ResponseType::Code);
        assert_eq!(request.scope(), "deals.read deals.write");
        assert_eq!(request.state.as_deref(), Some("xyz"));
        assert_eq!(request.code_challenge.as_deref(), Some(challenge.as_str()));
        let onward = request.params();
        assert_eq!(onward.redirect_uri.as_deref(), Some(CB));
        assert_eq!(onward.scope.as_deref(), Some("deals.read deals.write"));
        assert_eq!(onward.code_challenge_method.as_deref(), Some("S256"));
        let again = check_request(client.clone(), &onward).unwrap();
        assert_eq!(again.params(), onward);

        // An empty state is no state.
        let request = check_request(
            client.clone(),
            &params(&format!(
                "permissions=deals.read&state=&code_challenge={challenge}&code_challenge_method=S256"
            )),
        )
        .unwrap();
        assert_eq!(request.state, None);

        // A refusal hands the client back, with where to report the error.
        let (back, mode, error) = check_request(
            client,
            &params("permissions=cars.read&response_type=token&state=s"),
        )
        .expect_err("refused");
        assert_eq!(back.redirect_uri, CB);
        assert_eq!(mode, ResponseType::Token);
        assert_eq!(error.code, "invalid_scope");
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

    #[test]
    fn prompt_max_age_and_login_hint_carry_on_until_a_login_answers_them() {
        let client = resolve_redirect(app(false, &[CB], "deals.read"), None).unwrap();
        let p = params(
            "client_id=app_1&scope=deals.read&prompt=consent+login&max_age=060\
             &login_hint=Ada%40Example.com",
        );
        let request = check_request(client.clone(), &p).unwrap();
        let onward = request.params();
        assert_eq!(onward.prompt.as_deref(), Some("login consent"));
        assert_eq!(onward.max_age.as_deref(), Some("60"));
        assert_eq!(onward.login_hint.as_deref(), Some("ada@example.com"));
        assert_eq!(
            check_request(client.clone(), &onward).unwrap().params(),
            onward
        );

        let after = onward.after_login();
        assert_eq!(after.prompt.as_deref(), Some("consent"));
        assert_eq!((after.max_age, after.login_hint), (None, None));
        assert_eq!(after.scope, onward.scope);
        assert_eq!(
            params("client_id=app_1&prompt=login").after_login(),
            params("client_id=app_1")
        );

        // A hint that is no email is not carried on.
        let request = check_request(client.clone(), &params("scope=deals.read&login_hint=ada"));
        assert_eq!(request.unwrap().params().login_hint, None);

        // Unreadable values are reported to the application, naming the parameter.
        for (query, named) in [
            ("scope=deals.read&max_age=abc", "max_age"),
            ("scope=deals.read&prompt=none+login", "prompt"),
        ] {
            let (_, _, error) = check_request(client.clone(), &params(query)).expect_err(query);
            assert_eq!(error.code, "invalid_request");
            assert!(error.description.contains(named), "{}", error.description);
        }
        assert!(params("max_age=abc").interaction().is_none());
        assert!(params("max_age=5").interaction().is_some());
    }
}
