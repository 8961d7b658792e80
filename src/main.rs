use actix_web::web;
use clap::Parser;
use std::process::ExitCode;

use otpgate::config::Config;
use otpgate::runtime::cli::{self, Cli, Command};
use otpgate::{api::server, api::AppState, delivery::senders, runtime, runtime::logging};

/// Exit status for a configuration or start-up error.
const CONFIG_ERROR: u8 = 2;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => return fail(CONFIG_ERROR, &e),
    };
    // Held until `main` returns: dropping it writes out the log lines still queued.
    let _log = logging::init(config.logging.format);
    let command = cli.command.unwrap_or(Command::Serve);
    if command.reads_settings() {
        let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        for warning in Config::unknown_variable_warnings(names) {
            tracing::warn!("{warning}");
        }
    }
    if command.serves_or_checks() {
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
    }
    let result = match command {
        Command::Serve => return serve(config).await,
        Command::CheckConfig => cli::check_config(&config).await.map_err(|e| (CONFIG_ERROR, e)),
        Command::Migrate { from_sqlite } => cli::migrate(&config, from_sqlite.as_deref()).await.map_err(|e| (1, e)),
        Command::SendTest { to } => cli::send_test(&config, &to).await.map_err(|e| (1, e)),
        Command::Healthcheck { path } => cli::healthcheck(&config, &path).await.map_err(|e| (1, e)),
    };
    match result {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err((code, e)) => fail(code, &e),
    }
}

async fn serve(config: Config) -> ExitCode {
    // What check-config checks, checked alike; a Redis that cannot be reached is left to
    // the start below, which connects to it and says what it finds.
    if let Err(e) = runtime::check_surroundings(&config).await {
        return fail(CONFIG_ERROR, &e);
    }
    let senders = match senders::build(&config) {
        Ok(senders) => senders,
        Err(e) => return fail(CONFIG_ERROR, &e),
    };
    let state = match AppState::new(&config, senders).await {
        Ok(state) => web::Data::new(state),
        Err(e) => return fail(CONFIG_ERROR, &e),
    };
    state.clone().into_inner().start_background_tasks();
    match server::serve(&config, state).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("otpgate: {message}");
    ExitCode::from(code)
}
