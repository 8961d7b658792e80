//! Assembles the HTTP service (routes plus the shared middleware: request log,
//! CORS, and the `/api` timeout) and runs it with a graceful shutdown.

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Condition, Next};
use actix_web::{web, App, HttpServer};
use std::time::Duration;

use crate::api::op::API_PATHS;
use crate::api::reply::reply;
use crate::config::{Config, Dialect};
use crate::domain::error::{ApiError, ErrorCode};
use crate::domain::metrics;
use crate::{api::admin, api::health, api::http, api::openapi, api::receipts, api::request_log, api::AppState};

/// The whole service as an actix `App`; `main` and the tests serve exactly this.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<ServiceRequest, Config = (), Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error, InitError = ()>,
> {
    let settings = &state.http;
    let cors = cors(&settings.cors_origins);
    // The last `wrap` runs first: the log sees every request, then CORS answers preflights.
    App::new()
        .wrap(Condition::new(!settings.cors_origins.is_empty(), cors))
        .wrap(from_fn(preflight_no_content))
        .wrap(from_fn(request_log::log_requests))
        .configure(configure(state))
}

/// Registers the routes and the shared state on an actix `App`.
fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state);
        for path in API_PATHS {
            // The timeout wraps the resource, not the App: it must not hold the request while routing.
            cfg.service(web::resource(*path).wrap(from_fn(time_limit)).route(web::post().to(http::api)).route(web::get().to(http::api)));
        }
        // Resources rather than bare routes: another method answers 405 with Allow, not 404.
        cfg.service(web::resource("/files/{name}").route(web::get().to(http::serve_file)))
            .service(web::resource("/healthz").route(web::get().to(health::healthz)))
            .service(web::resource("/readyz").route(web::get().to(health::readyz)))
            .service(web::resource("/metrics").route(web::get().to(metrics::serve)))
            .service(web::resource("/openapi.json").route(web::get().to(openapi::serve)));
        // Providers' delivery receipts: public, signed by the provider, behind the request log only.
        cfg.service(web::resource("/delivery/twilio").route(web::post().to(receipts::twilio)))
            .service(web::resource("/delivery/vonage").route(web::post().to(receipts::vonage)).route(web::get().to(receipts::vonage)))
            .service(
                web::resource("/delivery/messagebird")
                    .route(web::post().to(receipts::messagebird))
                    .route(web::get().to(receipts::messagebird)),
            )
            .service(
                web::resource("/delivery/whatsapp")
                    .route(web::post().to(receipts::whatsapp))
                    .route(web::get().to(receipts::whatsapp_handshake)),
            );
    }
}

/// Tokens travel in bodies and bearer headers, never in cookies, so no credentials mode.
fn cors(origins: &[String]) -> Cors {
    let request_id = header::HeaderName::from_static(request_log::REQUEST_ID_HEADER);
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_headers([header::CONTENT_TYPE, header::AUTHORIZATION, request_id.clone()])
        .expose_headers([header::RETRY_AFTER, request_id])
        .max_age(3600);
    for origin in origins {
        // Config validation accepts only `*` and http(s) origins.
        cors = if origin == "*" { cors.allow_any_origin().send_wildcard() } else { cors.allowed_origin(origin) };
    }
    cors
}

/// A preflight that CORS allowed answers 204 No Content, as browsers and proxies expect
/// of a reply without a body (actix-cors answers 200).
async fn preflight_no_content(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let preflight = request.method() == actix_web::http::Method::OPTIONS;
    let mut response = next.call(request).await?;
    if preflight
        && response.status() == actix_web::http::StatusCode::OK
        && response.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        *response.response_mut().status_mut() = actix_web::http::StatusCode::NO_CONTENT;
    }
    Ok(response)
}

/// Answers `TIMEOUT` when a request takes longer than `REQUEST_TIMEOUT_SECS`.
pub(crate) async fn time_limit(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse, actix_web::Error> {
    let (limit, dialect) = request
        .app_data::<web::Data<AppState>>()
        .map_or((Duration::from_secs(30), Dialect::Mesibo), |state| (state.http.request_timeout, state.http.dialect));
    let http_request = request.request().clone();
    match tokio::time::timeout(limit, next.call(request)).await {
        Ok(response) => Ok(response?.map_into_boxed_body()),
        Err(_) => {
            let error = ApiError::new(ErrorCode::Timeout, format!("the request took longer than {} seconds; retry", limit.as_secs()));
            Ok(ServiceResponse::new(http_request, reply(dialect, "", Err(error))))
        }
    }
}

/// The HTTP workers [`serve`] runs, one thread each: one per available CPU (actix's own
/// default, made explicit so the database pool can be sized to it).
pub fn http_workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get).min(512)
}

/// Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight requests
/// finish within `SHUTDOWN_GRACE_SECS`, and closes the database.
pub async fn serve(config: &Config, state: web::Data<AppState>) -> Result<(), String> {
    let server = {
        let state = state.clone();
        HttpServer::new(move || app(state.clone()))
    };
    let server = server
        .workers(http_workers())
        .shutdown_timeout(config.http.shutdown_grace_secs)
        // actix stops abruptly on SIGINT; both signals get the graceful path below.
        .disable_signals()
        .bind(&config.http.bind)
        .map_err(|e| format!("cannot listen on BIND={}: {e}", config.http.bind))?;
    let addresses: Vec<String> = server.addrs().iter().map(ToString::to_string).collect();
    let server = server.run();
    let operator = operator_server(config, &state)?;
    let handles = [Some(server.handle()), operator.as_ref().map(|operator| operator.handle())];
    actix_web::rt::spawn(async move {
        let signal = shutdown_signal().await;
        tracing::info!(signal, "shutting down: no new connections, finishing in-flight requests");
        for handle in handles.into_iter().flatten() {
            handle.stop(true).await;
        }
    });
    tracing::info!(bind = %addresses.join(","), database = %config.database.path, "otpgate listening");
    if let Some(operator) = operator {
        actix_web::rt::spawn(async move {
            if let Err(e) = operator.await {
                tracing::error!("operator API server error: {e}");
            }
        });
    }
    server.await.map_err(|e| format!("server error: {e}"))?;
    state.shutdown(Duration::from_secs(config.http.shutdown_grace_secs)).await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// The operator API's server on `ADMIN_BIND`, when it is set.
fn operator_server(config: &Config, state: &web::Data<AppState>) -> Result<Option<actix_web::dev::Server>, String> {
    // ADMIN_TOKEN is required with ADMIN_BIND (config::validate): never served without one.
    let (Some(bind), Some(token)) = (&config.admin.bind, &config.admin.token) else {
        return Ok(None);
    };
    let (state, token) = (state.clone(), token.clone());
    let server = HttpServer::new(move || admin::app(state.clone(), &token))
        .workers(1)
        .shutdown_timeout(config.http.shutdown_grace_secs)
        .disable_signals()
        .bind(bind)
        .map_err(|e| format!("cannot listen on ADMIN_BIND={bind}: {e}"))?;
    let addresses: Vec<String> = server.addrs().iter().map(ToString::to_string).collect();
    tracing::info!(admin_bind = %addresses.join(","), "operator API listening");
    Ok(Some(server.run()))
}

async fn shutdown_signal() -> &'static str {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the service with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
