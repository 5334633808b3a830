//! Applications: registered with every URI (redirect and post-logout redirect), origin and
//! permission checked; then edited by the same rules, given a new secret, disabled, enabled and
//! deleted, by the account's owners (on the dashboard) or the operator (at the command line).
//!
//! Every change is logged in the change feed (`app.changed`), so each node drops its cached copy
//! and reloads CORS origins; disabling or deleting also ends the app's sessions, each logged, so
//! every node refuses their access tokens within its sync interval.

use std::time::Duration;

use keyfob_domain::audit::action;
use keyfob_domain::oauth;
use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_domain::time::Timestamp;
use keyfob_store::{AccountId, AppEdit, AppLinks, AppRow, ClientId, Permissions, Store};

use super::{Caller, MAX_NAME_LEN, ServiceError, Site};
use crate::audit::AuditEvent;

/// What registering an application needs.
#[derive(Debug, Clone, Default)]
pub struct NewApp {
    pub name: String,
    pub redirect_uris: Vec<String>,
    /// Where the app may send the browser after logging the user out (RP-initiated logout):
    /// exact addresses, by the rules of redirect URIs. May be empty.
    pub post_logout_redirect_uris: Vec<String>,
    pub origins: Vec<String>,
    /// A public app (a single-page or mobile app) has no secret and must use PKCE.
    pub public: bool,
    /// The most permissions the app may ask a user for, comma- or space-separated.
    pub max_permissions: String,
    /// A session ends when its refresh token goes unused this long (seconds); `None`: never.
    pub refresh_idle_secs: Option<i64>,
    /// A session ends this long after login whatever its use (seconds); `None`: never.
    pub refresh_max_age_secs: Option<i64>,
    /// Whether the app may receive tokens in the URL fragment (`response_type=token`, the
    /// guide's flow for apps without a back end). Off unless asked for: tokens in a URL are
    /// easier to leak (history, logs) than a code exchanged with PKCE.
    pub allow_fragment: bool,
}

/// The longest idle or absolute session limit an app may set: ten years, in seconds.
pub const MAX_SESSION_LIMIT_SECS: i64 = 10 * 365 * 24 * 3600;

/// A registered application and, for a confidential one, its secret (shown once).
#[derive(Debug)]
pub struct CreatedApp {
    pub app: AppRow,
    pub client_secret: Option<String>,
}

/// Registers an application in `account_id` ([`create_app`]) and audits it; the secret is
/// returned once and never recorded.
pub async fn register(
    site: Site<'_>,
    account_id: &AccountId,
    new: NewApp,
    by: &Caller<'_>,
) -> Result<CreatedApp, ServiceError> {
    let created = create_app(site.store(), account_id, new).await?;
    let app = &created.app;
    tracing::info!(client_id = %app.client_id, "application registered");
    site.done(
        AuditEvent::new(Some(account_id), by.actor.clone(), action::APP_CREATED)
            .target(app.client_id.as_str())
            .ip(by.ip)
            .detail(serde_json::json!({
                "name": app.name,
                "public": app.public,
                "redirect_uris": app.redirect_uris.to_vec(),
                "max_permissions": app.max_permissions.names(),
            })),
    )
    .await?;
    Ok(created)
}

/// Registers an application after checking every URI, origin and permission (not audited: see
/// [`register`]).
pub async fn create_app(
    store: &dyn Store,
    account_id: &AccountId,
    new: NewApp,
) -> Result<CreatedApp, ServiceError> {
    let (name, max) = check(&new)?;
    let client_secret = (!new.public).then(|| format!("kfs_{}", random_token()));
    let app = AppRow {
        client_id: format!("app_{}", uuid::Uuid::new_v4().simple()).into(),
        account_id: account_id.to_owned(),
        name: name.to_owned(),
        public: new.public,
        client_secret_hash: client_secret.as_deref().map(hash_secret),
        redirect_uris: new.redirect_uris.clone().into(),
        post_logout_redirect_uris: new.post_logout_redirect_uris.clone().into(),
        origins: new.origins.clone().into(),
        max_permissions: max,
        refresh_idle_secs: new.refresh_idle_secs,
        refresh_absolute_secs: new.refresh_max_age_secs,
        allow_fragment: new.allow_fragment,
        created_at: Timestamp::now(),
        revoked_at: None,
        previous_secret_hash: None,
        previous_secret_expires_at: None,
        deleted_at: None,
        links: Default::default(),
    };
    store.insert_app(&app).await?;
    Ok(CreatedApp { app, client_secret })
}

/// The rules an application's settings must keep, at registration and at every edit: a printable
/// name, exact redirect URIs (at least one), exact post-logout redirect URIs and origins, a
/// non-empty set of permissions none of which is reserved, and session limits in range. Returns
/// the trimmed name and the parsed permissions.
fn check(new: &NewApp) -> Result<(&str, Permissions), ServiceError> {
    let invalid = |m: String| ServiceError::Invalid(m);
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "the app name must be 1 to {MAX_NAME_LEN} printable characters"
        )));
    }
    if new.redirect_uris.is_empty() {
        return Err(invalid("give at least one redirect URI".into()));
    }
    if new.redirect_uris.len() > 20
        || new.post_logout_redirect_uris.len() > 20
        || new.origins.len() > 20
    {
        return Err(invalid(
            "at most 20 redirect URIs, 20 post-logout redirect URIs and 20 origins".into(),
        ));
    }
    for uri in &new.redirect_uris {
        oauth::check_redirect_uri(uri).map_err(|e| invalid(e.to_string()))?;
    }
    for uri in &new.post_logout_redirect_uris {
        oauth::check_redirect_uri(uri)
            .map_err(|e| invalid(format!("post-logout redirect URI: {e}")))?;
    }
    for origin in &new.origins {
        oauth::check_origin(origin).map_err(|e| invalid(e.to_string()))?;
    }
    let max = oauth::parse_scope(&new.max_permissions).map_err(|e| invalid(e.to_string()))?;
    if let Some(reserved) = max
        .iter()
        .find(|p| keyfob_domain::permission::RESERVED_RESOURCES.contains(&p.resource()))
    {
        return Err(invalid(format!(
            "`{reserved}` cannot be granted by users to an application; only the account's API keys and the tokens they mint hold it"
        )));
    }
    if max.is_empty() {
        return Err(invalid(
            "give the most permissions the app may ask for, e.g. deals.read,deals.write".into(),
        ));
    }
    for (limit, what) in [
        (new.refresh_idle_secs, "idle limit"),
        (new.refresh_max_age_secs, "maximum session age"),
    ] {
        if limit.is_some_and(|secs| !(1..=MAX_SESSION_LIMIT_SECS).contains(&secs)) {
            return Err(invalid(format!(
                "the {what} must be a whole number of seconds from 1 to {MAX_SESSION_LIMIT_SECS}"
            )));
        }
    }
    Ok((name, max.iter().cloned().collect()))
}

/// The longest a rotated-out secret may keep working.
pub const MAX_SECRET_OVERLAP: Duration = Duration::from_secs(30 * 24 * 3600);

/// Changes to an application's settings; `None` leaves a setting as it is. A list given
/// replaces the whole list.
#[derive(Debug, Clone, Default)]
pub struct AppChanges {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
    pub origins: Option<Vec<String>>,
    /// Comma- or space-separated, as at registration.
    pub max_permissions: Option<String>,
    /// `Some(None)`: no idle limit.
    pub refresh_idle_secs: Option<Option<i64>>,
    /// `Some(None)`: no maximum session age.
    pub refresh_max_age_secs: Option<Option<i64>>,
    pub allow_fragment: Option<bool>,
}

/// The application `client_id` if it is not deleted and, when `account_id` is given, is that
/// account's; otherwise `NotFound`, whichever it was (an owner learns nothing of other accounts).
pub async fn find(
    store: &dyn Store,
    account_id: Option<&AccountId>,
    client_id: &ClientId,
) -> Result<AppRow, ServiceError> {
    store
        .find_app(client_id)
        .await?
        .filter(|app| app.deleted_at.is_none())
        .filter(|app| account_id.is_none_or(|id| app.account_id == *id))
        .ok_or_else(|| ServiceError::NotFound(format!("no application {client_id}")))
}

/// Edits an application by the rules of registration ([`create_app`]); nothing changes when a
/// rule is broken. Returns the application as it is now.
pub async fn update(
    site: Site<'_>,
    account_id: Option<&AccountId>,
    client_id: &ClientId,
    changes: AppChanges,
    by: &Caller<'_>,
) -> Result<AppRow, ServiceError> {
    let app = find(site.store(), account_id, client_id).await?;
    let permissions = |p: &Permissions| p.iter().map(ToString::to_string).collect::<Vec<_>>();
    let merged = NewApp {
        name: changes.name.unwrap_or_else(|| app.name.clone()),
        redirect_uris: changes
            .redirect_uris
            .unwrap_or_else(|| app.redirect_uris.to_vec()),
        post_logout_redirect_uris: changes
            .post_logout_redirect_uris
            .unwrap_or_else(|| app.post_logout_redirect_uris.to_vec()),
        origins: changes.origins.unwrap_or_else(|| app.origins.to_vec()),
        public: app.public,
        max_permissions: changes
            .max_permissions
            .unwrap_or_else(|| permissions(&app.max_permissions).join(",")),
        refresh_idle_secs: changes.refresh_idle_secs.unwrap_or(app.refresh_idle_secs),
        refresh_max_age_secs: changes
            .refresh_max_age_secs
            .unwrap_or(app.refresh_absolute_secs),
        allow_fragment: changes.allow_fragment.unwrap_or(app.allow_fragment),
    };
    let (name, max) = check(&merged)?;
    let edit = AppEdit {
        name: name.to_owned(),
        redirect_uris: merged.redirect_uris.clone().into(),
        post_logout_redirect_uris: merged.post_logout_redirect_uris.clone().into(),
        origins: merged.origins.clone().into(),
        max_permissions: max,
        refresh_idle_secs: merged.refresh_idle_secs,
        refresh_absolute_secs: merged.refresh_max_age_secs,
        allow_fragment: merged.allow_fragment,
    };
    let changed: Vec<&str> = [
        ("name", edit.name != app.name),
        ("redirect_uris", edit.redirect_uris != app.redirect_uris),
        (
            "post_logout_redirect_uris",
            edit.post_logout_redirect_uris != app.post_logout_redirect_uris,
        ),
        ("origins", edit.origins != app.origins),
        (
            "max_permissions",
            edit.max_permissions != app.max_permissions,
        ),
        (
            "refresh_idle_secs",
            edit.refresh_idle_secs != app.refresh_idle_secs,
        ),
        (
            "refresh_absolute_secs",
            edit.refresh_absolute_secs != app.refresh_absolute_secs,
        ),
        ("allow_fragment", edit.allow_fragment != app.allow_fragment),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect();
    let at = Timestamp::now();
    if !site
        .store()
        .update_app(account_id, client_id, &edit, at)
        .await?
    {
        return Err(ServiceError::NotFound(format!(
            "no application {client_id}"
        )));
    }
    tracing::info!(%client_id, ?changed, "application updated");
    site.done(
        AuditEvent::new(Some(&app.account_id), by.actor.clone(), action::APP_UPDATED)
            .target(client_id.as_str())
            .ip(by.ip)
            .detail(serde_json::json!({ "fields": changed })),
    )
    .await?;
    find(site.store(), account_id, client_id).await
}

/// Checks one of an application's addresses for its users (`field` names it in the message): blank
/// is none; otherwise an absolute HTTPS address (HTTP on localhost), as a redirect URI.
/// A link the consent page shows (`field` names it in the error): blank is none.
pub fn check_link(field: &str, value: &str) -> Result<Option<String>, ServiceError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    oauth::check_redirect_uri(value)
        .map_err(|e| ServiceError::Invalid(format!("`{field}`: {e}")))?;
    Ok(Some(value.to_owned()))
}

/// Sets what the consent page shows of an application besides its name: its logo, home page and
/// privacy policy (blank: none). Audited as an update naming the fields that changed.
pub async fn set_links(
    site: Site<'_>,
    account_id: Option<&AccountId>,
    client_id: &ClientId,
    logo_uri: &str,
    homepage_uri: &str,
    policy_uri: &str,
    by: &Caller<'_>,
) -> Result<AppRow, ServiceError> {
    let app = find(site.store(), account_id, client_id).await?;
    let links = AppLinks {
        logo_uri: check_link("logo_uri", logo_uri)?,
        homepage_uri: check_link("homepage_uri", homepage_uri)?,
        policy_uri: check_link("policy_uri", policy_uri)?,
    };
    let changed: Vec<&str> = [
        ("logo_uri", links.logo_uri != app.links.logo_uri),
        ("homepage_uri", links.homepage_uri != app.links.homepage_uri),
        ("policy_uri", links.policy_uri != app.links.policy_uri),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect();
    if !site
        .store()
        .set_app_links(account_id, client_id, &links, Timestamp::now())
        .await?
    {
        return Err(ServiceError::NotFound(format!(
            "no application {client_id}"
        )));
    }
    site.done(
        AuditEvent::new(Some(&app.account_id), by.actor.clone(), action::APP_UPDATED)
            .target(client_id.as_str())
            .ip(by.ip)
            .detail(serde_json::json!({ "fields": changed })),
    )
    .await?;
    find(site.store(), account_id, client_id).await
}

/// Gives a confidential application a new secret, returned once (only its hash is kept). The
/// old secret keeps working for `overlap` (zero: refused at once), long enough to deploy the
/// new one; then only the new one does.
pub async fn rotate_secret(
    site: Site<'_>,
    account_id: Option<&AccountId>,
    client_id: &ClientId,
    overlap: Duration,
    by: &Caller<'_>,
) -> Result<String, ServiceError> {
    let app = find(site.store(), account_id, client_id).await?;
    if app.public {
        return Err(ServiceError::Invalid(
            "a public application has no secret to rotate".into(),
        ));
    }
    if overlap > MAX_SECRET_OVERLAP {
        return Err(ServiceError::Invalid(format!(
            "the overlap may be at most {} days",
            MAX_SECRET_OVERLAP.as_secs() / 86_400
        )));
    }
    let secret = format!("kfs_{}", random_token());
    let at = Timestamp::now();
    let until = (!overlap.is_zero()).then(|| at + overlap);
    if !site
        .store()
        .rotate_app_secret(account_id, client_id, &hash_secret(&secret), until, at)
        .await?
    {
        return Err(ServiceError::NotFound(format!(
            "no application {client_id}"
        )));
    }
    tracing::info!(%client_id, overlap_secs = overlap.as_secs(), "application secret rotated");
    site.done(
        AuditEvent::new(
            Some(&app.account_id),
            by.actor.clone(),
            action::APP_SECRET_ROTATED,
        )
        .target(client_id.as_str())
        .ip(by.ip)
        .detail(serde_json::json!({ "overlap_secs": overlap.as_secs() })),
    )
    .await?;
    Ok(secret)
}

/// Disables an application (refused at authorization and the token endpoint, its sessions ended
/// and their access tokens refused) or enables it again.
pub async fn set_disabled(
    site: Site<'_>,
    account_id: Option<&AccountId>,
    client_id: &ClientId,
    disabled: bool,
    by: &Caller<'_>,
) -> Result<(), ServiceError> {
    let app = find(site.store(), account_id, client_id).await?;
    let at = Timestamp::now();
    if !site
        .store()
        .set_app_disabled(account_id, client_id, disabled, at)
        .await?
    {
        return Err(ServiceError::Invalid(format!(
            "the application is already {}",
            if disabled { "disabled" } else { "enabled" }
        )));
    }
    let what = if disabled {
        action::APP_DISABLED
    } else {
        action::APP_ENABLED
    };
    tracing::info!(%client_id, what, "application disabled or enabled");
    site.done(
        AuditEvent::new(Some(&app.account_id), by.actor.clone(), what)
            .target(client_id.as_str())
            .ip(by.ip),
    )
    .await
}

/// Deletes an application: its sessions end, its grants are revoked, its secrets are forgotten,
/// and its `client_id` stays taken (the row is kept, marked deleted, and never shown again).
pub async fn delete(
    site: Site<'_>,
    account_id: Option<&AccountId>,
    client_id: &ClientId,
    by: &Caller<'_>,
) -> Result<(), ServiceError> {
    let app = find(site.store(), account_id, client_id).await?;
    if !site
        .store()
        .delete_app(account_id, client_id, Timestamp::now())
        .await?
    {
        return Err(ServiceError::NotFound(format!(
            "no application {client_id}"
        )));
    }
    tracing::info!(%client_id, "application deleted");
    site.done(
        AuditEvent::new(Some(&app.account_id), by.actor.clone(), action::APP_DELETED)
            .target(client_id.as_str())
            .ip(by.ip)
            .detail(serde_json::json!({ "name": app.name })),
    )
    .await
}
