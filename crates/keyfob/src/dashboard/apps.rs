//! The account's applications: list and register (a confidential app's client secret is shown
//! once, on the page that answers the form); then, on each app's own page, edit (by the rules of
//! registration), rotate the secret (shown once), disable, enable and delete. Only the account's
//! own applications: any other `client_id` is not found.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use keyfob_store::{AppRow, ClientId};
use serde::Deserialize;

use super::once;
use super::page::{Layout, PageError, PageForm, TimeView, render, render_with_status};
use crate::audit::Actor;
use crate::services::MAX_NAME_LEN;
use crate::services::apps::{AppChanges, NewApp};
use crate::services::{self, Caller, ServiceError, Site};
use crate::state::AppState;
use crate::web::filters;
use crate::web::{ClientIp, CsrfForm, OwnerLogin};

/// What the app page says when the `client_id` is not one of the account's live applications.
const NO_SUCH_APP: &str = "Your account has no application with this client id.";

#[derive(Template)]
#[template(path = "apps.html")]
pub struct AppsPage {
    layout: Layout,
    apps: Vec<AppView>,
    error: Option<String>,
    notice: Option<&'static str>,
    /// What was typed, kept when the form is shown again with an error.
    form: AppForm,
    max_name_len: usize,
    /// The field the error is about.
    error_field: &'static str,
}

pub struct AppView {
    client_id: String,
    name: String,
    public: bool,
    /// May receive tokens in the URL fragment.
    allow_fragment: bool,
    redirect_uris: Vec<String>,
    /// Where the app may send the browser after logging out.
    post_logout_redirect_uris: Vec<String>,
    origins: Vec<String>,
    max_permissions: String,
    /// The session limits in words, e.g. "idle 30 days, at most 90 days".
    session_limits: String,
    created: TimeView,
    /// Disabled: refused everywhere until enabled.
    revoked: bool,
    /// Until when the secret a rotation replaced still works.
    previous_secret_until: Option<TimeView>,
}

/// `86400` → "1 day", `90` → "90 seconds": the largest unit that divides evenly.
fn duration_words(secs: i64) -> String {
    let (n, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| secs % size == 0)
        .map_or((secs, "second"), |(size, unit)| (secs / size, unit));
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

fn session_limits(idle: Option<i64>, max_age: Option<i64>) -> String {
    match (idle, max_age) {
        (None, None) => "none".into(),
        (Some(idle), None) => format!("idle {}", duration_words(idle)),
        (None, Some(max)) => format!("at most {}", duration_words(max)),
        (Some(idle), Some(max)) => format!(
            "idle {}, at most {}",
            duration_words(idle),
            duration_words(max)
        ),
    }
}

impl From<AppRow> for AppView {
    fn from(row: AppRow) -> Self {
        AppView {
            public: row.public,
            allow_fragment: row.allow_fragment,
            redirect_uris: row.redirect_uris.into_vec(),
            post_logout_redirect_uris: row.post_logout_redirect_uris.into_vec(),
            origins: row.origins.into_vec(),
            max_permissions: row
                .max_permissions
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            session_limits: session_limits(row.refresh_idle_secs, row.refresh_absolute_secs),
            created: TimeView::from(row.created_at),
            revoked: row.revoked_at.is_some(),
            previous_secret_until: row
                .previous_secret_expires_at
                .filter(|until| *until > keyfob_store::Timestamp::now())
                .map(TimeView::from),
            client_id: row.client_id.into(),
            name: row.name,
        }
    }
}

/// The registration form. `kind` is `public` or `confidential`.
#[derive(Deserialize, Default)]
pub struct AppForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    redirect_uris: String,
    #[serde(default)]
    post_logout_redirect_uris: String,
    #[serde(default)]
    origins: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    max_permissions: String,
    /// Seconds, or blank for no limit.
    #[serde(default)]
    refresh_idle_secs: String,
    /// Seconds, or blank for no limit.
    #[serde(default)]
    refresh_max_age_secs: String,
    /// `on` when the app may receive tokens in the URL fragment.
    #[serde(default)]
    allow_fragment: Option<String>,
}

/// A blank field is no limit; anything else must be a whole number (its range is checked by
/// [`services::apps::create_app`]).
fn optional_secs(text: &str, what: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("the {what} must be a whole number of seconds, or blank"))
}

/// The field of the application form an error message is about, so that the page can tie the
/// message to it and put the cursor there.
fn app_error_field(message: &str, form: &AppForm) -> &'static str {
    let quoted = message.split('`').nth(1).unwrap_or_default();
    let holds = |text: &str| !quoted.is_empty() && text.lines().any(|l| l.trim() == quoted);
    if message.contains("app name") {
        "name"
    } else if message.contains("idle limit") {
        "refresh_idle_secs"
    } else if message.contains("maximum session age") {
        "refresh_max_age_secs"
    } else if message.contains("post-logout") || holds(&form.post_logout_redirect_uris) {
        "post_logout_redirect_uris"
    } else if message.contains("redirect URI") || holds(&form.redirect_uris) {
        "redirect_uris"
    } else if message.contains("origin") || holds(&form.origins) {
        "origins"
    } else {
        "max_permissions"
    }
}

/// One entry a line, blank lines skipped.
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn apps_page(
    state: &AppState,
    login: &OwnerLogin,
    error: Option<String>,
    form: AppForm,
) -> Result<AppsPage, PageError> {
    let apps = state.store.list_apps(login.account_id()).await?;
    Ok(AppsPage {
        layout: login.layout("apps"),
        apps: apps.into_iter().map(AppView::from).collect(),
        error_field: error
            .as_deref()
            .map_or("", |message| app_error_field(message, &form)),
        error,
        notice: None,
        form,
        max_name_len: MAX_NAME_LEN,
    })
}

/// `GET /dashboard/apps`.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn list(
    login: OwnerLogin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let form = AppForm {
        kind: "confidential".into(),
        ..AppForm::default()
    };
    let mut page = apps_page(&state, &login, None, form).await?;
    if query.as_deref() == Some(&format!("done={DELETED}")) {
        page.notice = Some(
            "The application is deleted: its users' sessions have ended and its grants are revoked.",
        );
    }
    render(&page)
}

/// `POST /dashboard/apps`: registers an application (the rules are [`services::apps::create_app`]'s)
/// and audits it.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn create(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    jar: CookieJar,
    PageForm(form): PageForm<AppForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let limits = optional_secs(&form.refresh_idle_secs, "idle limit").and_then(|idle| {
        Ok((
            idle,
            optional_secs(&form.refresh_max_age_secs, "maximum session age")?,
        ))
    });
    let (refresh_idle_secs, refresh_max_age_secs) = match limits {
        Ok(limits) => limits,
        Err(message) => {
            let page = apps_page(&state, &login, Some(message), form).await?;
            return render_with_status(StatusCode::BAD_REQUEST, &page);
        }
    };
    let new = NewApp {
        name: form.name.clone(),
        redirect_uris: lines(&form.redirect_uris),
        post_logout_redirect_uris: lines(&form.post_logout_redirect_uris),
        origins: lines(&form.origins),
        public: form.kind == "public",
        max_permissions: form.max_permissions.clone(),
        refresh_idle_secs,
        refresh_max_age_secs,
        allow_fragment: form.allow_fragment.is_some(),
    };
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    match services::apps::register(Site::Node(&state), login.account_id(), new, &by).await {
        Ok(created) => {
            let page = secret_page(&created.app.client_id);
            let shown = once::Shown::new(
                page.clone(),
                created.app.name,
                created.client_secret.unwrap_or_default(),
            );
            Ok((once::keep(&state, &login, jar, &shown), Redirect::to(&page)).into_response())
        }
        Err(ServiceError::Invalid(message)) => {
            let page = apps_page(&state, &login, Some(message), form).await?;
            render_with_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(ServiceError::Store(err)) => Err(err.into()),
        Err(err) => Err(PageError::Internal(err.into())),
    }
}

#[derive(Template)]
#[template(path = "app.html")]
pub struct AppPage {
    layout: Layout,
    app: AppView,
    error: Option<String>,
    notice: Option<&'static str>,
    /// The edit form, filled with the app's settings or with what was typed.
    form: AppForm,
    max_name_len: usize,
    /// The field the error is about.
    error_field: &'static str,
    /// The form of what users see, filled with the app's addresses or with what was typed, and
    /// its error, and the field the error is about.
    links: LinksForm,
    links_error: Option<String>,
    links_error_field: &'static str,
}

/// The logo, home page and privacy-policy addresses, as typed.
#[derive(Deserialize, Default)]
pub struct LinksForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    logo_uri: String,
    #[serde(default)]
    homepage_uri: String,
    #[serde(default)]
    policy_uri: String,
}

impl LinksForm {
    fn of(app: &AppRow) -> LinksForm {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        LinksForm {
            csrf: String::new(),
            logo_uri: text(&app.links.logo_uri),
            homepage_uri: text(&app.links.homepage_uri),
            policy_uri: text(&app.links.policy_uri),
        }
    }
}

/// `POST /dashboard/apps/{client_id}/links`: the logo, home page and privacy policy users see on
/// the consent page.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), client_id = %client_id))]
pub async fn set_links(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(client_id): Path<ClientId>,
    PageForm(form): PageForm<LinksForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let app = account_app(&state, &login, &client_id).await?;
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    let account = Some(login.account_id());
    let result = services::apps::set_links(
        Site::Node(&state),
        account,
        &client_id,
        &form.logo_uri,
        &form.homepage_uri,
        &form.policy_uri,
        &by,
    )
    .await;
    match result {
        Ok(_) => Ok(
            Redirect::to(&format!("/dashboard/apps/{client_id}?done={UPDATED}")).into_response(),
        ),
        Err(ServiceError::Invalid(message)) => {
            let mut page = app_page(&login, app, None, None, None);
            page.links_error_field = ["logo_uri", "homepage_uri", "policy_uri"]
                .into_iter()
                .find(|f| message.contains(&format!("`{f}`")))
                .unwrap_or_default();
            page.links_error = Some(message);
            page.links = form;
            render_with_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(err) => Err(PageError::from_service(err, NO_SUCH_APP)),
    }
}

#[derive(Template)]
#[template(path = "app_secret.html")]
pub struct AppSecretPage {
    layout: Layout,
    name: String,
    client_id: String,
    /// A public application has no secret.
    public: bool,
    /// `None`: shown once already (or opened too late, or in another login).
    client_secret: Option<String>,
    /// Whether a rotation made it, rather than the registration.
    rotated: bool,
    /// Until when the old secret keeps working, if at all.
    old_until: Option<TimeView>,
}

/// The rotation form: how long the old secret keeps working, in seconds.
#[derive(Deserialize, Default)]
pub struct RotateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    overlap_secs: String,
}

/// The overlaps the rotation form offers, in seconds: none, an hour, a day, a week.
pub const OVERLAPS: [u64; 4] = [0, 3_600, 86_400, 7 * 86_400];

const UPDATED: &str = "updated";
const DISABLED: &str = "disabled";
const ENABLED: &str = "enabled";
const DELETED: &str = "deleted";

impl AppForm {
    /// The edit form filled with `app`'s settings.
    fn of(app: &AppRow) -> AppForm {
        AppForm {
            csrf: String::new(),
            name: app.name.clone(),
            redirect_uris: app.redirect_uris.join("\n"),
            post_logout_redirect_uris: app.post_logout_redirect_uris.join("\n"),
            origins: app.origins.join("\n"),
            kind: if app.public { "public" } else { "confidential" }.into(),
            max_permissions: app
                .max_permissions
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            refresh_idle_secs: app
                .refresh_idle_secs
                .map(|s| s.to_string())
                .unwrap_or_default(),
            refresh_max_age_secs: app
                .refresh_absolute_secs
                .map(|s| s.to_string())
                .unwrap_or_default(),
            allow_fragment: app.allow_fragment.then(|| "on".into()),
        }
    }
}

/// One of the account's live applications, or the page that says there is none.
async fn account_app(
    state: &AppState,
    login: &OwnerLogin,
    client_id: &ClientId,
) -> Result<AppRow, PageError> {
    services::apps::find(state.store.as_ref(), Some(login.account_id()), client_id)
        .await
        .map_err(|err| PageError::from_service(err, NO_SUCH_APP))
}

fn app_page(
    login: &OwnerLogin,
    app: AppRow,
    form: Option<AppForm>,
    error: Option<String>,
    notice: Option<&'static str>,
) -> AppPage {
    let form = form.unwrap_or_else(|| AppForm::of(&app));
    let links = LinksForm::of(&app);
    let error_field = error
        .as_deref()
        .map_or("", |message| app_error_field(message, &form));
    AppPage {
        error_field,
        links,
        links_error: None,
        links_error_field: "",
        layout: login.layout("apps"),
        app: AppView::from(app),
        error,
        notice,
        form,
        max_name_len: MAX_NAME_LEN,
    }
}

/// `GET /dashboard/apps/{client_id}`: one application, with its edit form and actions.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), client_id = %client_id))]
pub async fn show(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(client_id): Path<ClientId>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let app = account_app(&state, &login, &client_id).await?;
    let notice = match query.as_deref().and_then(|q| q.strip_prefix("done=")) {
        Some(UPDATED) => Some("The application's settings are saved."),
        Some(DISABLED) => Some(
            "The application is disabled: Keyfob refuses it, and its users' sessions have ended.",
        ),
        Some(ENABLED) => Some("The application is enabled again."),
        _ => None,
    };
    render(&app_page(&login, app, None, None, notice))
}

/// `POST /dashboard/apps/{client_id}`: saves the edit form, by the rules of registration
/// ([`services::apps::update`]); a form that breaks one is shown again, nothing changed.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), client_id = %client_id))]
pub async fn update(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(client_id): Path<ClientId>,
    PageForm(form): PageForm<AppForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let app = account_app(&state, &login, &client_id).await?;
    let limits = optional_secs(&form.refresh_idle_secs, "idle limit").and_then(|idle| {
        Ok((
            idle,
            optional_secs(&form.refresh_max_age_secs, "maximum session age")?,
        ))
    });
    let (idle, max_age) = match limits {
        Ok(limits) => limits,
        Err(message) => {
            let page = app_page(&login, app, Some(form), Some(message), None);
            return render_with_status(StatusCode::BAD_REQUEST, &page);
        }
    };
    let changes = AppChanges {
        name: Some(form.name.clone()),
        redirect_uris: Some(lines(&form.redirect_uris)),
        post_logout_redirect_uris: Some(lines(&form.post_logout_redirect_uris)),
        origins: Some(lines(&form.origins)),
        max_permissions: Some(form.max_permissions.clone()),
        refresh_idle_secs: Some(idle),
        refresh_max_age_secs: Some(max_age),
        allow_fragment: Some(form.allow_fragment.is_some()),
    };
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    let account = Some(login.account_id());
    match services::apps::update(Site::Node(&state), account, &client_id, changes, &by).await {
        Ok(_) => Ok(
            Redirect::to(&format!("/dashboard/apps/{client_id}?done={UPDATED}")).into_response(),
        ),
        Err(ServiceError::Invalid(message)) => {
            let page = app_page(&login, app, Some(form), Some(message), None);
            render_with_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(err) => Err(PageError::from_service(err, NO_SUCH_APP)),
    }
}

/// `POST /dashboard/apps/{client_id}/rotate-secret`: a new secret, shown once; the old one keeps
/// working for the overlap chosen.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), client_id = %client_id))]
pub async fn rotate_secret(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(client_id): Path<ClientId>,
    jar: CookieJar,
    PageForm(form): PageForm<RotateForm>,
) -> Result<Response, PageError> {
    login.check_csrf(&form.csrf)?;
    let app = account_app(&state, &login, &client_id).await?;
    let overlap = form
        .overlap_secs
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|secs| OVERLAPS.contains(secs))
        .map(Duration::from_secs)
        .ok_or_else(|| {
            PageError::BadRequest(
                "choose how long the old secret keeps working: none, an hour, a day or a week"
                    .into(),
            )
        })?;
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    let account = Some(login.account_id());
    let secret =
        services::apps::rotate_secret(Site::Node(&state), account, &client_id, overlap, &by)
            .await
            .map_err(|err| PageError::from_service(err, NO_SUCH_APP))?;
    let page = secret_page(&client_id);
    let old_until = (!overlap.is_zero()).then(|| keyfob_store::Timestamp::now() + overlap);
    let shown = once::Shown::new(page.clone(), app.name, secret).replacing(old_until);
    Ok((once::keep(&state, &login, jar, &shown), Redirect::to(&page)).into_response())
}

/// Where a new client secret is shown once.
fn secret_page(client_id: &ClientId) -> String {
    format!("/dashboard/apps/{client_id}/secret")
}

/// `GET /dashboard/apps/{client_id}/secret`: the application just registered, or its secret just
/// rotated, with the secret shown this once; opened again, the page says it was shown already.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), client_id = %client_id))]
pub async fn secret(
    login: OwnerLogin,
    State(state): State<AppState>,
    Path(client_id): Path<ClientId>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    let app = account_app(&state, &login, &client_id).await?;
    let (jar, shown) = once::take(&state, &login, jar, &secret_page(&client_id));
    let page = AppSecretPage {
        layout: login.layout("apps"),
        name: app.name,
        client_id: client_id.into(),
        public: app.public,
        rotated: shown.as_ref().is_some_and(|s| s.replaced),
        old_until: shown
            .as_ref()
            .and_then(|s| s.old_until)
            .map(|ms| TimeView::from(keyfob_store::Timestamp::from_unix_ms(ms))),
        client_secret: shown.map(|s| s.secret).filter(|s| !s.is_empty()),
    };
    let policy = [(header::CONTENT_SECURITY_POLICY, super::COPY_CSP)];
    Ok((policy, jar, render(&page)?).into_response())
}

/// `POST /dashboard/apps/{client_id}/disable`.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), client_id = %client_id))]
pub async fn disable(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(client_id): Path<ClientId>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Redirect, PageError> {
    set_disabled(login, state, ip, client_id, form, true).await
}

/// `POST /dashboard/apps/{client_id}/enable`.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), client_id = %client_id))]
pub async fn enable(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(client_id): Path<ClientId>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Redirect, PageError> {
    set_disabled(login, state, ip, client_id, form, false).await
}

async fn set_disabled(
    login: OwnerLogin,
    state: AppState,
    ip: String,
    client_id: ClientId,
    form: CsrfForm,
    disabled: bool,
) -> Result<Redirect, PageError> {
    login.check_csrf(&form.csrf)?;
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    let account = Some(login.account_id());
    services::apps::set_disabled(Site::Node(&state), account, &client_id, disabled, &by)
        .await
        .map_err(|err| PageError::from_service(err, NO_SUCH_APP))?;
    let done = if disabled { DISABLED } else { ENABLED };
    Ok(Redirect::to(&format!(
        "/dashboard/apps/{client_id}?done={done}"
    )))
}

/// `POST /dashboard/apps/{client_id}/delete`: the app's sessions end and its grants are revoked;
/// its client id is never issued again.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id(), client_id = %client_id))]
pub async fn delete(
    login: OwnerLogin,
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(client_id): Path<ClientId>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Redirect, PageError> {
    login.check_csrf(&form.csrf)?;
    let by = Caller::new(Actor::owner(login.owner_id()), &ip);
    let account = Some(login.account_id());
    services::apps::delete(Site::Node(&state), account, &client_id, &by)
        .await
        .map_err(|err| PageError::from_service(err, NO_SUCH_APP))?;
    Ok(Redirect::to(&format!("/dashboard/apps?done={DELETED}")))
}
