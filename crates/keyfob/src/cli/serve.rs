//! `keyfob serve`: runs the server until it is stopped.

use crate::config::Config;
use crate::startup::Application;

pub(super) async fn run(config: Config) -> anyhow::Result<()> {
    crate::telemetry::init(config.log_json);
    let app = Application::build(config).await?;
    let url = app.state().config.issuer();
    println!("Keyfob is listening on {}", app.local_addr());
    println!("Dashboard: {url}/dashboard");
    tracing::info!(addr = %app.local_addr(), backend = app.state().store.backend(), "serving");
    app.run_until_stopped().await
}
