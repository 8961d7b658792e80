use actix_web::{web, App, HttpServer};
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

use otpgate::config::Config;
use otpgate::{http, senders, AppState};

#[actix_web::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("otpgate: {e}");
            return ExitCode::from(2);
        }
    };
    if config.app_token.is_empty() {
        tracing::warn!("APP_TOKEN is not set: the upstream platform will refuse to issue tokens until it is");
    }
    let state = match senders::build(&config).and_then(|senders| AppState::new(&config, senders)) {
        Ok(state) => web::Data::new(state),
        Err(e) => {
            eprintln!("otpgate: {e}");
            return ExitCode::from(2);
        }
    };
    actix_web::rt::spawn(state.clone().into_inner().run_maintenance(Duration::from_secs(60)));
    // The courier sends queued code messages, including those left from before a restart.
    actix_web::rt::spawn(state.login.courier.clone().run());

    let server = {
        let state = state.clone();
        HttpServer::new(move || App::new().configure(http::configure(state.clone())))
    };
    let server = match server.bind(&config.bind) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("otpgate: cannot listen on BIND={}: {e}", config.bind);
            return ExitCode::from(2);
        }
    };
    tracing::info!(bind = %config.bind, sender = %config.otp_sender, database = %config.database_path, "otpgate listening");
    match server.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otpgate: server error: {e}");
            ExitCode::FAILURE
        }
    }
}
