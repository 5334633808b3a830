//! `keyfob apps`: applications that start user sessions.

use clap::Subcommand;

use crate::config::Config;
use crate::services;
use crate::startup::open_storage;

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
}

pub(super) async fn run(config: &Config, command: AppsCommand) -> anyhow::Result<()> {
    let AppsCommand::Create {
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
    } = command;
    let (store, _) = open_storage(config).await?;
    let account = services::accounts::resolve_account(store.as_ref(), &account).await?;
    let created = services::apps::create_app(
        store.as_ref(),
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
    )
    .await?;
    let mut out = serde_json::json!({ "client_id": created.app.client_id });
    if let Some(secret) = created.client_secret {
        out["client_secret"] = secret.into();
    }
    println!("{out}");
    Ok(())
}
