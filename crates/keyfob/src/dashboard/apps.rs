//! The account's applications: list and register (a confidential app's client secret is shown
//! once, on the page that answers the form).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use keyfob_store::AppRow;
use serde::Deserialize;

use super::page::{Layout, PageError, PageForm, TimeView, render, render_with_status};
use crate::services::MAX_NAME_LEN;
use crate::services::apps::NewApp;
use crate::services::{self, ServiceError};
use crate::state::AppState;
use crate::web::OwnerLogin;

#[derive(Template)]
#[template(path = "apps.html")]
pub struct AppsPage {
    layout: Layout,
    apps: Vec<AppView>,
    error: Option<String>,
    /// What was typed, kept when the form is shown again with an error.
    form: AppForm,
    max_name_len: usize,
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
    revoked: bool,
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
            client_id: row.client_id.into(),
            name: row.name,
        }
    }
}

#[derive(Template)]
#[template(path = "app_created.html")]
pub struct AppCreatedPage {
    layout: Layout,
    name: String,
    client_id: String,
    client_secret: Option<String>,
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
        error,
        form,
        max_name_len: MAX_NAME_LEN,
    })
}

/// `GET /dashboard/apps`.
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn list(
    login: OwnerLogin,
    State(state): State<AppState>,
) -> Result<Html<String>, PageError> {
    let form = AppForm {
        kind: "confidential".into(),
        ..AppForm::default()
    };
    render(&apps_page(&state, &login, None, form).await?)
}

/// `POST /dashboard/apps`: registers an application (the rules are [`services::apps::create_app`]'s).
#[tracing::instrument(skip_all, fields(account_id = %login.account_id()))]
pub async fn create(
    login: OwnerLogin,
    State(state): State<AppState>,
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
    match services::apps::create_app(state.store.as_ref(), login.account_id(), new).await {
        Ok(created) => {
            tracing::info!(client_id = %created.app.client_id, "application registered in the dashboard");
            let page = AppCreatedPage {
                layout: login.layout("apps"),
                name: created.app.name,
                client_id: created.app.client_id.into(),
                client_secret: created.client_secret,
            };
            Ok(render(&page)?.into_response())
        }
        Err(ServiceError::Invalid(message)) => {
            let page = apps_page(&state, &login, Some(message), form).await?;
            render_with_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(ServiceError::Store(err)) => Err(err.into()),
        Err(err) => Err(PageError::Internal(err.into())),
    }
}
