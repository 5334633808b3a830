//! Applications: registered with every URI (redirect and post-logout redirect), origin and
//! permission checked.

use keyfob_domain::oauth;
use keyfob_domain::secret::{hash_secret, random_token};
use keyfob_domain::time::Timestamp;
use keyfob_store::{AccountId, AppRow, Store};

use super::{MAX_NAME_LEN, ServiceError};

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

/// Registers an application after checking every URI, origin and permission.
pub async fn create_app(
    store: &dyn Store,
    account_id: &AccountId,
    new: NewApp,
) -> Result<CreatedApp, ServiceError> {
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
        max_permissions: max.iter().cloned().collect(),
        refresh_idle_secs: new.refresh_idle_secs,
        refresh_absolute_secs: new.refresh_max_age_secs,
        allow_fragment: new.allow_fragment,
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    store.insert_app(&app).await?;
    Ok(CreatedApp { app, client_secret })
}
