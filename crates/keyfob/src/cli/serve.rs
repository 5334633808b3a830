//! `keyfob serve`: runs the server until it is stopped.

use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::startup::Application;

pub(super) async fn run(config: Config) -> anyhow::Result<()> {
    init_tracing(config.log_json);
    let app = Application::build(config).await?;
    let url = app.state().config.issuer();
    println!("Keyfob is listening on {}", app.local_addr());
    println!("Dashboard: {url}/dashboard");
    tracing::info!(addr = %app.local_addr(), backend = app.state().store.backend(), "serving");
    app.run_until_stopped().await
}

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_env("KEYFOB_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
