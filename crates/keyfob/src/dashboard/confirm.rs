//! Confirmation pages for what cannot be undone: revoking a key, a token or a grant, removing a
//! user from the account, disabling an application (the sessions it ends stay ended), deleting
//! one. The lists link to these pages (`GET`), which
//! name what is about to go and carry the form that does it (`POST`, with the login's CSRF
//! token), beside a way back. No script is needed.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Html;
use keyfob_store::{ClientId, GrantId, Jti, KeyId, UserId};

use super::page::{Layout, PageError, render};
use crate::state::AppState;
use crate::web::OwnerLogin;

#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    layout: Layout,
    /// The page's title and heading: “Revoke the key?”.
    title: &'static str,
    /// Its name.
    name: String,
    /// What follows, in sentences.
    consequences: &'static str,
    /// Where the form posts.
    action: String,
    button: &'static str,
    /// The way back.
    cancel: String,
}

/// `GET /dashboard/keys/{id}/revoke`.
pub async fn revoke_key(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(id): Path<KeyId>,
) -> Result<Html<String>, PageError> {
    let key = state
        .store
        .find_api_key(&id)
        .await?
        .filter(|row| row.account_id == *login.account_id() && row.revoked_at.is_none())
        .ok_or_else(|| {
            PageError::NotFound("Your account has no live API key with this id.".into())
        })?;
    render(&ConfirmPage {
        layout: login.layout("keys"),
        title: "Revoke the key?",
        name: key.name,
        consequences: "Every request made with it, and with every token it minted, is refused \
             from then on. This cannot be undone: a key revoked stays revoked.",
        action: format!("/dashboard/keys/{id}/revoke"),
        button: "Revoke the key",
        cancel: format!("/dashboard/keys/{id}"),
    })
}

/// `GET /dashboard/tokens/{jti}/revoke`.
pub async fn revoke_token(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(jti): Path<Jti>,
) -> Result<Html<String>, PageError> {
    let token = state
        .store
        .find_token(&jti)
        .await?
        .filter(|row| row.account_id == *login.account_id() && row.revoked_at.is_none())
        .ok_or_else(|| {
            PageError::NotFound("Your account has no live token with this id.".into())
        })?;
    render(&ConfirmPage {
        layout: login.layout("tokens"),
        title: "Revoke the token?",
        name: token.name.unwrap_or_else(|| jti.to_string()),
        consequences: "Every request made with it is refused from then on. This cannot be \
             undone.",
        action: format!("/dashboard/tokens/{jti}/revoke"),
        button: "Revoke the token",
        cancel: "/dashboard/tokens".into(),
    })
}

/// `GET /dashboard/grants/{id}/revoke`.
pub async fn revoke_grant(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(id): Path<GrantId>,
) -> Result<Html<String>, PageError> {
    let missing = || PageError::NotFound("Your account has no live grant with this id.".into());
    let grant = state
        .store
        .find_grant_by_id(&id)
        .await?
        .filter(|row| row.account_id == *login.account_id() && row.revoked_at.is_none())
        .ok_or_else(missing)?;
    let user = state
        .store
        .find_user(&grant.user_id)
        .await?
        .ok_or_else(missing)?;
    let app = state
        .store
        .find_app(&grant.client_id)
        .await?
        .ok_or_else(missing)?;
    render(&ConfirmPage {
        layout: login.layout("grants"),
        title: "Revoke the grant?",
        name: format!("{} to {}", user.email, app.name),
        consequences: "The user's sessions in that application end, and it must ask them again \
             before it acts for them.",
        action: format!("/dashboard/grants/{id}/revoke"),
        button: "Revoke the grant",
        cancel: "/dashboard/grants".into(),
    })
}

/// `GET /dashboard/users/{user_id}/remove`.
pub async fn remove_user(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(user_id): Path<UserId>,
) -> Result<Html<String>, PageError> {
    let missing = || PageError::NotFound("No user of this account has this id.".into());
    let grants = state.store.list_account_grants(login.account_id()).await?;
    if !grants.iter().any(|g| g.user_id == user_id) {
        return Err(missing());
    }
    let user = state.store.find_user(&user_id).await?.ok_or_else(missing)?;
    render(&ConfirmPage {
        layout: login.layout("grants"),
        title: "Remove the user from this account?",
        name: user.email,
        consequences: "Every grant of theirs to this account's applications is revoked and their \
             sessions in them end. They keep their login, and may allow an application again.",
        action: format!("/dashboard/users/{user_id}/remove"),
        button: "Remove the user",
        cancel: "/dashboard/grants".into(),
    })
}

/// `GET /dashboard/apps/{client_id}/disable`: disabling can be undone, but the sessions it ends
/// cannot.
pub async fn disable_app(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(client_id): Path<ClientId>,
) -> Result<Html<String>, PageError> {
    let app =
        crate::services::apps::find(state.store.as_ref(), Some(login.account_id()), &client_id)
            .await
            .map_err(|err| {
                PageError::from_service(err, "Your account has no application with this client id.")
            })?;
    if app.revoked_at.is_some() {
        return Err(PageError::BadRequest(
            "The application is disabled already.".into(),
        ));
    }
    render(&ConfirmPage {
        layout: login.layout("apps"),
        title: "Disable the application?",
        name: app.name,
        consequences: "Keyfob refuses it at login and at the token endpoint, and every session              of its users ends at once: their tokens are refused on every node within a second.              It can be enabled again, but the sessions stay ended: its users log in again.",
        action: format!("/dashboard/apps/{client_id}/disable"),
        button: "Disable the application",
        cancel: format!("/dashboard/apps/{client_id}"),
    })
}

/// `GET /dashboard/apps/{client_id}/delete`.
pub async fn delete_app(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(client_id): Path<ClientId>,
) -> Result<Html<String>, PageError> {
    let app =
        crate::services::apps::find(state.store.as_ref(), Some(login.account_id()), &client_id)
            .await
            .map_err(|err| {
                PageError::from_service(err, "Your account has no application with this client id.")
            })?;
    render(&ConfirmPage {
        layout: login.layout("apps"),
        title: "Delete the application?",
        name: app.name,
        consequences: "Every grant its users gave it is revoked and their sessions end; its \
             client id is never issued again. This cannot be undone.",
        action: format!("/dashboard/apps/{client_id}/delete"),
        button: "Delete the application",
        cancel: format!("/dashboard/apps/{client_id}"),
    })
}
