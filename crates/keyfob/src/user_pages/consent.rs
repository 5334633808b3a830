//! `GET /auth` and the consent page: who is asking for what, the user's answer, and the answer
//! sent back to the application (a code, or tokens in the fragment).
//!
//! What a grant keeps: the permissions the user allowed this time, plus those granted before that
//! this request did not ask about. A permission asked for again and unticked is taken out, so the
//! consent page always says exactly what will be stored for what it shows. A grant that already
//! covers everything requested skips the page, except when the tokens themselves are to travel in
//! the URL fragment (`response_type=token`, only for applications that turn it on): then the user
//! is asked every time, and told so.

use std::time::Duration;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use keyfob_domain::identity::IdentityScopes;
use keyfob_domain::ids::{GrantId, UserId};
use keyfob_domain::oauth;
use keyfob_domain::permission::Permission;
use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_domain::time::Timestamp;
use keyfob_store::{AuthCodeRow, GrantRow, Permissions};
use serde::Deserialize;

use super::page::{
    UserForm, UserLayout, UserPageError, allowing_image_from, content_security_policy, found, page,
    see_other,
};
use super::request::{
    AuthError, AuthRequest, AuthorizeParams, ResponseType, add_params, check_client, check_request,
    error_location, facts,
};
use crate::audit::{Actor, AuditEvent};
use crate::dashboard::page::PageError;
use crate::sessions::{self, ACCESS_TOKEN_SECS, SessionError};
use crate::state::AppState;
use crate::web::{ClientIp, UserLogin};

/// How long an authorization code may wait to be exchanged.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Template)]
#[template(path = "auth/consent.html")]
struct ConsentPage {
    layout: UserLayout,
    app_name: String,
    /// Where the user will be sent back, for them to recognise.
    destination: String,
    /// The answer carries the tokens themselves, in the address (`response_type=token`).
    in_fragment: bool,
    /// What the application learns about the user (identity scopes), in words.
    identity: Vec<&'static str>,
    permissions: Vec<PermissionView>,
    params: AuthorizeParams,
    /// What the application registered for its users to recognise it by.
    logo_uri: Option<String>,
    homepage_uri: Option<String>,
    policy_uri: Option<String>,
}

struct PermissionView {
    value: String,
    words: String,
    /// Granted already; asked again because something else is new.
    granted: bool,
}

/// The consent form: the request again (checked again in full), the ticked permissions, the
/// answer.
#[derive(Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    response_type: Option<String>,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    code_challenge_method: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    /// The ticked permissions.
    #[serde(default)]
    permission: Vec<String>,
    /// `allow` or `deny`.
    #[serde(default)]
    decision: String,
}

impl ConsentForm {
    fn params(&self) -> AuthorizeParams {
        AuthorizeParams {
            client_id: self.client_id.clone(),
            redirect_uri: self.redirect_uri.clone(),
            permissions: None,
            scope: self.scope.clone(),
            state: self.state.clone(),
            response_type: self.response_type.clone(),
            code_challenge: self.code_challenge.clone(),
            code_challenge_method: self.code_challenge_method.clone(),
            // Not carried: `prompt`, `max_age` and `login_hint` have decided which pages to show
            // by the time this one is answered, and the answer is the user's.
            prompt: None,
            max_age: None,
            login_hint: None,
            nonce: self.nonce.clone(),
            request: None,
            request_uri: None,
        }
    }
}

/// Checks a request in full: a bad client or redirect URI is an error page; anything else wrong
/// is a redirect to the application with the error.
async fn checked(
    state: &AppState,
    params: &AuthorizeParams,
) -> Result<Result<AuthRequest, Response>, UserPageError> {
    let client = match check_client(state, params).await? {
        Ok(client) => client,
        Err(err) => {
            tracing::info!(reason = %err, "authorization request refused");
            return Err(
                PageError::BadRequest(format!("{err} {}", err.for_developer(params))).into(),
            );
        }
    };
    match check_request(client, params) {
        Ok(request) => Ok(Ok(request)),
        Err((client, mode, error)) => {
            tracing::info!(client_id = %client.app.client_id, error = error.code, "authorization request refused");
            let state_param = params.state.as_deref().filter(|s| !s.is_empty());
            Ok(Err(found(&error_location(
                &client.redirect_uri,
                mode,
                state_param,
                state.tokens.issuer(),
                &error,
            ))?))
        }
    }
}

/// The user's live grant to the request's application, and what it grants that the application
/// may still ask for (its identity scopes are in the row).
async fn live_grant(
    state: &AppState,
    user_id: &UserId,
    request: &AuthRequest,
) -> Result<Option<(GrantRow, Vec<Permission>)>, UserPageError> {
    let grant = state
        .store
        .find_grant(user_id, &request.client.app.client_id)
        .await?
        .filter(|g| g.revoked_at.is_none());
    let max = request.client.max_permissions();
    Ok(grant.map(|g| {
        let granted = g
            .permissions
            .iter()
            .filter(|p| oauth::within(max, p))
            .cloned()
            .collect();
        (g, granted)
    }))
}

/// `GET /auth`: checks the request; sends a user who is not logged in, or must log in again
/// (`prompt=login`, a login older than `max_age`, a `login_hint` naming someone else), to the
/// login page and back here afterwards; skips consent when a grant covers the request (unless
/// `prompt=consent`), and shows the consent page otherwise. With `prompt=none` no page is shown:
/// where one would be, the application gets `login_required`, `consent_required` or
/// `interaction_required` instead, and nothing is stored.
#[tracing::instrument(skip_all)]
pub async fn authorize(
    State(state): State<AppState>,
    user: Option<UserLogin>,
    RawQuery(query): RawQuery,
) -> Result<Response, UserPageError> {
    let Some(params) = AuthorizeParams::from_query(query.as_deref().unwrap_or_default()) else {
        return Err(PageError::BadRequest(
            "The link that brought you here is malformed (a parameter is repeated or unreadable)."
                .into(),
        )
        .into());
    };
    let request = match checked(&state, &params).await? {
        Ok(request) => request,
        Err(redirect) => return Ok(redirect),
    };
    let now = Timestamp::now();
    let login_need = match request
        .interaction
        .login_step(user.as_ref().map(facts), now)
    {
        Ok(need) => need,
        Err(error) => return refuse(&state, &request, &error),
    };
    let (Some(user), None) = (user, login_need) else {
        tracing::info!(need = ?login_need, client_id = %request.client.app.client_id, "login asked");
        return see_other(&format!(
            "{}?{}",
            super::LOGIN_PATH,
            request.params().to_query()
        ));
    };
    if let Some(gate) = super::recovery::verification_gate(
        &state,
        &user,
        &request.client.app,
        &request.params().to_query(),
    )
    .await?
    {
        if request.interaction.prompt.none {
            return refuse(&state, &request, &AuthError::email_not_verified());
        }
        return Ok(gate);
    }
    let granted = live_grant(&state, user.user_id(), &request).await?;
    let covering = granted
        .as_ref()
        .filter(|(grant, granted)| {
            request.permissions.iter().all(|p| granted.contains(p))
                && grant.identity.covers(request.identity)
        })
        .map(|(grant, _)| grant);
    match (
        request
            .interaction
            .consent_step(request.response_type, covering.is_some()),
        covering,
    ) {
        (Err(error), _) => return refuse(&state, &request, &error),
        (Ok(None), Some(grant)) => {
            let permissions: Vec<String> =
                request.permissions.iter().map(|p| p.to_string()).collect();
            tracing::info!(user_id = %user.user_id(), client_id = %request.client.app.client_id, "consent remembered");
            return issue(
                &state,
                &request,
                &user,
                grant,
                request.identity,
                &permissions,
            )
            .await;
        }
        // The consent page (no grant covers the request, or it must be asked anyway).
        _ => {}
    }
    let already: &[Permission] = granted.as_ref().map(|(_, g)| g.as_slice()).unwrap_or(&[]);
    let consent = ConsentPage {
        layout: UserLayout::of(&user),
        app_name: request.client.app.name.clone(),
        destination: destination(&request.client.redirect_uri),
        in_fragment: request.response_type == ResponseType::Token,
        identity: request
            .identity
            .describe()
            .into_iter()
            .map(|(_, words)| words)
            .collect(),
        permissions: request
            .permissions
            .iter()
            .map(|p| PermissionView {
                value: p.to_string(),
                words: oauth::describe(p),
                granted: already.contains(p),
            })
            .collect(),
        params: request.params(),
        logo_uri: request.client.app.links.logo_uri.clone(),
        homepage_uri: request.client.app.links.homepage_uri.clone(),
        policy_uri: request.client.app.links.policy_uri.clone(),
    };
    let policy = content_security_policy(Some(&request.client.redirect_uri));
    let policy = match &consent.logo_uri {
        Some(logo) => allowing_image_from(&policy, logo),
        None => policy,
    };
    page(StatusCode::OK, &consent, policy)
}

/// Sends `error` back to the application (a page was needed and `prompt=none` allows none).
fn refuse(
    state: &AppState,
    request: &AuthRequest,
    error: &AuthError,
) -> Result<Response, UserPageError> {
    tracing::info!(client_id = %request.client.app.client_id, error = error.code, "authorization request answered without a page");
    found(&request.error_redirect(state.tokens.issuer(), error))
}

/// `POST /auth/consent`: the user's answer.
#[tracing::instrument(skip_all)]
pub async fn decide(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user: Option<UserLogin>,
    UserForm(form): UserForm<ConsentForm>,
) -> Result<Response, UserPageError> {
    let params = form.params();
    let Some(user) = user else {
        // The login ended meanwhile: log in again, then the request is asked again.
        return see_other(&format!("{}?{}", super::LOGIN_PATH, params.to_query()));
    };
    user.check_csrf(&form.csrf)?;
    let request = match checked(&state, &params).await? {
        Ok(request) => request,
        Err(redirect) => return Ok(redirect),
    };
    if let Some(gate) = super::recovery::verification_gate(
        &state,
        &user,
        &request.client.app,
        &request.params().to_query(),
    )
    .await?
    {
        return Ok(gate);
    }
    let client_id = request.client.app.client_id.clone();
    let allowed = oauth::consented(&request.permissions, &form.permission);
    // Identity scopes are allowed with the answer as a whole; permissions one by one.
    if form.decision != "allow" || (allowed.is_empty() && request.identity.is_empty()) {
        tracing::info!(user_id = %user.user_id(), %client_id, "consent denied");
        return found(&request.error_redirect(state.tokens.issuer(), &AuthError::access_denied()));
    }
    let (before, identity_before) = live_grant(&state, user.user_id(), &request)
        .await?
        .map(|(grant, granted)| (granted, grant.identity))
        .unwrap_or_default();
    let stored = oauth::merged_grant(&before, &request.permissions, &allowed);
    let identity = identity_before.union(request.identity);
    let now = Timestamp::now();
    let grant = state
        .store
        .upsert_grant(&GrantRow {
            id: GrantId::from(uuid::Uuid::now_v7().to_string()),
            user_id: user.user_id().clone(),
            client_id: client_id.clone(),
            account_id: request.client.app.account_id.clone(),
            permissions: Permissions::parse(&stored).map_err(anyhow::Error::from)?,
            identity,
            created_at: now,
            updated_at: now,
            revoked_at: None,
        })
        .await?;
    tracing::info!(user_id = %user.user_id(), %client_id, grant_id = %grant.id, "consent given");
    state.audit.record(
        AuditEvent::new(
            Some(&grant.account_id),
            Actor::user(user.user_id()),
            keyfob_domain::audit::action::GRANT_GIVEN,
        )
        .target(&grant.id)
        .ip(&ip)
        .detail(serde_json::json!({
            "client_id": client_id,
            "permissions": stored,
            "identity": identity.as_str(),
        })),
    );
    let permissions: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    issue(
        &state,
        &request,
        &user,
        &grant,
        request.identity,
        &permissions,
    )
    .await
}

/// Answers the application: a one-time code in the query, or a session's tokens in the fragment.
/// The code keeps what its exchange needs for an id_token: the identity scopes, the `nonce` and
/// when the user logged in.
async fn issue(
    state: &AppState,
    request: &AuthRequest,
    user: &UserLogin,
    grant: &GrantRow,
    identity: IdentityScopes,
    permissions: &[String],
) -> Result<Response, UserPageError> {
    let user_id = user.user_id();
    let redirect_uri = &request.client.redirect_uri;
    let state_param = request.state.as_deref();
    match request.response_type {
        ResponseType::Code => {
            let code = random_token();
            let now = Timestamp::now();
            state
                .store
                .insert_auth_code(&AuthCodeRow {
                    code_hash: hash_secret(&code),
                    client_id: request.client.app.client_id.clone(),
                    user_id: user_id.to_owned(),
                    grant_id: grant.id.clone(),
                    redirect_uri: redirect_uri.clone(),
                    permissions: Permissions::parse(permissions).map_err(anyhow::Error::from)?,
                    identity,
                    nonce: request.nonce.clone(),
                    auth_time: Some(user.authenticated_at()),
                    code_challenge: request.code_challenge.clone(),
                    family_id: None,
                    created_at: now,
                    expires_at: now + CODE_LIFETIME,
                    used_at: None,
                })
                .await?;
            let mut params = vec![("code", code.as_str())];
            if let Some(s) = state_param {
                params.push(("state", s));
            }
            params.push(("iss", state.tokens.issuer()));
            found(&add_params(redirect_uri, ResponseType::Code, &params))
        }
        ResponseType::Token => {
            let pair = sessions::start(
                state,
                &request.client.app,
                user_id,
                grant,
                permissions,
                // The URL fragment carries no id_token (`response_type=token` is OAuth's, not
                // OpenID Connect's); the session's scopes still open userinfo.
                sessions::SignIn {
                    identity,
                    auth_time: Some(user.authenticated_at()),
                    nonce: None,
                    id_token: false,
                },
                None,
            )
            .await
            .map_err(|e| match e {
                SessionError::Store(err) => PageError::from(err),
                other => PageError::Internal(anyhow::anyhow!(other)),
            })?;
            let expires = Timestamp::from_unix_secs(pair.expires_at).rfc3339();
            let expires_in = ACCESS_TOKEN_SECS.to_string();
            let mut params = vec![
                ("token", pair.access_token.as_str()),
                ("refresh_token", pair.refresh_token.as_str()),
                ("expires", expires.as_str()),
                ("access_token", pair.access_token.as_str()),
                ("token_type", "Bearer"),
                ("expires_in", expires_in.as_str()),
                ("scope", pair.scope.as_str()),
            ];
            if let Some(s) = state_param {
                params.push(("state", s));
            }
            params.push(("iss", state.tokens.issuer()));
            found(&add_params(redirect_uri, ResponseType::Token, &params))
        }
    }
}

/// The scheme and host a redirect URI leads to, as the consent page names it.
fn destination(redirect_uri: &str) -> String {
    let rest = redirect_uri
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(redirect_uri);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destination_is_the_host() {
        assert_eq!(
            destination("https://app.example.com:8443/cb?x=1"),
            "app.example.com:8443"
        );
        assert_eq!(destination("http://localhost/cb"), "localhost");
    }
}
