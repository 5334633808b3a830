use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    keyfob::cli::main().await
}
