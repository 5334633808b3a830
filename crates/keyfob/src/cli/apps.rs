//! `keyfob apps`: applications that start user sessions — registered, listed, shown, edited,
//! given a new secret, disabled, enabled and deleted. Running servers see each change within
//! their sync interval (the change feed).

use anyhow::Context;
use clap::Subcommand;
use keyfob_domain::time::{Timestamp, parse_span};
use keyfob_store::{AppRow, ClientId};

use crate::audit::Actor;
use crate::config::Config;
use crate::services::apps::AppChanges;
use crate::services::{self, Caller, Site};
use crate::startup::open_storage;

/// A session limit on the command line: seconds, or `none` for no limit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit(Option<i64>);

fn limit(text: &str) -> Result<Limit, String> {
    match text {
        "none" | "never" => Ok(Limit(None)),
        _ => text
            .parse()
            .map(|secs| Limit(Some(secs)))
            .map_err(|_| "a whole number of seconds, or `none`".to_owned()),
    }
}

#[derive(Subcommand, Debug)]
pub(super) enum AppsCommand {
    /// Register an application; prints `client_id` (and `client_secret` for a confidential app)
    /// as JSON.
    Create {
        /// The account's id or an owner's email.
        #[arg(long)]
        account: String,
        #[arg(long)]
        name: String,
        /// An exact redirect URI; repeat for several.
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// An exact address the app may send the browser to after logging the user out
        /// (OpenID Connect RP-initiated logout); repeat for several.
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// A browser origin allowed to call Keyfob from the page (CORS); repeat for several.
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// A public app (single-page or mobile): no secret, PKCE required.
        #[arg(long)]
        public: bool,
        /// The most permissions the app may ask a user for, comma-separated.
        #[arg(long, default_value = "*.read,*.write")]
        max_permissions: String,
        /// End a session when its refresh token goes unused this many seconds (default: never).
        #[arg(long, value_name = "SECS")]
        refresh_idle_secs: Option<i64>,
        /// End a session this many seconds after login, however much it is used (default: never).
        #[arg(long, value_name = "SECS")]
        refresh_max_age_secs: Option<i64>,
        /// Let the app receive tokens in the URL fragment (`response_type=token`); off by default.
        #[arg(long)]
        allow_fragment: bool,
    },
    /// One line per application of an account: client id, name, kind, state, created.
    List {
        /// The account's id or an owner's email.
        #[arg(long)]
        account: String,
    },
    /// An application's settings, as JSON (never its secret).
    Show { client_id: String },
    /// Change an application's settings by the rules of registration; prints them as JSON. A
    /// list flag given replaces the whole list (give it once with an empty value to empty it).
    Update {
        client_id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "redirect-uri")]
        redirect_uris: Option<Vec<String>>,
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Option<Vec<String>>,
        #[arg(long = "origin")]
        origins: Option<Vec<String>>,
        #[arg(long)]
        max_permissions: Option<String>,
        /// Seconds, or `none`.
        #[arg(long, value_name = "SECS", value_parser = limit)]
        refresh_idle_secs: Option<Limit>,
        /// Seconds, or `none`.
        #[arg(long, alias = "refresh-max-age-secs", value_name = "SECS", value_parser = limit)]
        refresh_absolute_secs: Option<Limit>,
        #[arg(long, value_name = "true|false")]
        allow_fragment: Option<bool>,
        /// The logo the consent page shows (https, or http on localhost; empty: none).
        #[arg(long, value_name = "URL")]
        logo_uri: Option<String>,
        /// The application's home page, linked from the consent page (empty: none).
        #[arg(long, value_name = "URL")]
        homepage_uri: Option<String>,
        /// Its privacy policy, linked from the consent page (empty: none).
        #[arg(long, value_name = "URL")]
        policy_uri: Option<String>,
    },
    /// Give a confidential application a new secret, printed once as JSON; the old one keeps
    /// working for the overlap (e.g. 24h, 15m, 0 for none), then only the new one does.
    RotateSecret {
        client_id: String,
        #[arg(long, default_value = "24h", value_parser = |s: &str| parse_span(s))]
        overlap: std::time::Duration,
    },
    /// Refuse an application everywhere and end its sessions, until enabled again.
    Disable { client_id: String },
    /// Accept a disabled application again (its ended sessions stay ended).
    Enable { client_id: String },
    /// Delete an application: its sessions end, its grants are revoked, its client id is never
    /// issued again.
    Delete { client_id: String },
}

/// An application as `show` and `update` print it.
fn describe(app: &AppRow) -> serde_json::Value {
    serde_json::json!({
        "client_id": app.client_id,
        "account_id": app.account_id,
        "name": app.name,
        "public": app.public,
        "redirect_uris": app.redirect_uris.to_vec(),
        "post_logout_redirect_uris": app.post_logout_redirect_uris.to_vec(),
        "origins": app.origins.to_vec(),
        "max_permissions": app.max_permissions.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "refresh_idle_secs": app.refresh_idle_secs,
        "refresh_absolute_secs": app.refresh_absolute_secs,
        "allow_fragment": app.allow_fragment,
        "logo_uri": app.links.logo_uri,
        "homepage_uri": app.links.homepage_uri,
        "policy_uri": app.links.policy_uri,
        "created_at": app.created_at.rfc3339(),
        "disabled_at": app.revoked_at.map(Timestamp::rfc3339),
        "previous_secret_expires_at": app
            .previous_secret_expires_at
            .filter(|until| *until > Timestamp::now())
            .map(Timestamp::rfc3339),
    })
}

/// A list flag as given: empty values dropped, so that one empty value empties the list.
fn list(values: Option<Vec<String>>) -> Option<Vec<String>> {
    values.map(|v| v.into_iter().filter(|s| !s.trim().is_empty()).collect())
}

pub(super) async fn run(config: &Config, command: AppsCommand) -> anyhow::Result<()> {
    let (store, _) = open_storage(config).await?;
    let site = Site::Cli(store.as_ref());
    let by = Caller::new(Actor::operator(), "");
    match command {
        AppsCommand::Create {
            account,
            name,
            redirect_uris,
            post_logout_redirect_uris,
            origins,
            public,
            max_permissions,
            refresh_idle_secs,
            refresh_max_age_secs,
            allow_fragment,
        } => {
            let account = services::accounts::resolve_account(store.as_ref(), &account).await?;
            let created = services::apps::register(
                site,
                &account.id,
                services::apps::NewApp {
                    name,
                    redirect_uris,
                    post_logout_redirect_uris,
                    origins,
                    public,
                    max_permissions,
                    refresh_idle_secs,
                    refresh_max_age_secs,
                    allow_fragment,
                },
                &by,
            )
            .await?;
            let mut out = serde_json::json!({ "client_id": created.app.client_id });
            if let Some(secret) = created.client_secret {
                out["client_secret"] = secret.into();
            }
            println!("{out}");
        }
        AppsCommand::List { account } => {
            let account = services::accounts::resolve_account(store.as_ref(), &account).await?;
            for app in store.list_apps(&account.id).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    app.client_id,
                    app.name,
                    if app.public { "public" } else { "confidential" },
                    if app.revoked_at.is_some() {
                        "disabled"
                    } else {
                        "active"
                    },
                    app.created_at.rfc3339(),
                );
            }
        }
        AppsCommand::Show { client_id } => {
            let app =
                services::apps::find(store.as_ref(), None, &ClientId::from(client_id)).await?;
            println!("{}", serde_json::to_string_pretty(&describe(&app))?);
        }
        AppsCommand::Update {
            client_id,
            name,
            redirect_uris,
            post_logout_redirect_uris,
            origins,
            max_permissions,
            refresh_idle_secs,
            refresh_absolute_secs,
            allow_fragment,
            logo_uri,
            homepage_uri,
            policy_uri,
        } => {
            let client_id = ClientId::from(client_id);
            let changes = AppChanges {
                name,
                redirect_uris: list(redirect_uris),
                post_logout_redirect_uris: list(post_logout_redirect_uris),
                origins: list(origins),
                max_permissions,
                refresh_idle_secs: refresh_idle_secs.map(|l| l.0),
                refresh_max_age_secs: refresh_absolute_secs.map(|l| l.0),
                allow_fragment,
            };
            // The links are checked before anything changes.
            let links_given = logo_uri.is_some() || homepage_uri.is_some() || policy_uri.is_some();
            if links_given {
                for (field, value) in [
                    ("logo_uri", &logo_uri),
                    ("homepage_uri", &homepage_uri),
                    ("policy_uri", &policy_uri),
                ] {
                    if let Some(value) = value {
                        services::apps::check_link(field, value)?;
                    }
                }
            }
            let mut app = services::apps::update(site, None, &client_id, changes, &by).await?;
            if links_given {
                let keep = |given: Option<String>, now: &Option<String>| {
                    given.unwrap_or_else(|| now.clone().unwrap_or_default())
                };
                let logo = keep(logo_uri, &app.links.logo_uri);
                let homepage = keep(homepage_uri, &app.links.homepage_uri);
                let policy = keep(policy_uri, &app.links.policy_uri);
                app = services::apps::set_links(
                    site, None, &client_id, &logo, &homepage, &policy, &by,
                )
                .await?;
            }
            println!("{}", serde_json::to_string_pretty(&describe(&app))?);
        }
        AppsCommand::RotateSecret { client_id, overlap } => {
            let client_id = ClientId::from(client_id);
            let secret =
                services::apps::rotate_secret(site, None, &client_id, overlap, &by).await?;
            let until = (!overlap.is_zero()).then(|| (Timestamp::now() + overlap).rfc3339());
            println!(
                "{}",
                serde_json::json!({
                    "client_id": client_id,
                    "client_secret": secret,
                    "previous_secret_expires_at": until,
                })
            );
        }
        AppsCommand::Disable { client_id } => {
            services::apps::set_disabled(site, None, &ClientId::from(client_id.clone()), true, &by)
                .await
                .context("cannot disable the application")?;
            println!("disabled {client_id}");
        }
        AppsCommand::Enable { client_id } => {
            services::apps::set_disabled(
                site,
                None,
                &ClientId::from(client_id.clone()),
                false,
                &by,
            )
            .await
            .context("cannot enable the application")?;
            println!("enabled {client_id}");
        }
        AppsCommand::Delete { client_id } => {
            services::apps::delete(site, None, &ClientId::from(client_id.clone()), &by)
                .await
                .context("cannot delete the application")?;
            println!("deleted {client_id}");
        }
    }
    Ok(())
}
