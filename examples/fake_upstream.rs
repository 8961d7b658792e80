//! The built-in stand-in for the messaging platform (`UPSTREAM_URL=builtin`), served
//! over HTTP for setups where otpgate itself must call a URL: `cargo run --example
//! fake_upstream` then start the service with
//! `UPSTREAM_URL=http://127.0.0.1:9000/ APP_TOKEN=dev cargo run --release`.

use actix_web::{web, App, HttpResponse, HttpServer};
use otpgate::delivery::upstream::builtin;
use serde_json::Value;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".into());
    let server = HttpServer::new(|| {
        App::new()
            .default_service(web::post().to(|request: web::Json<Value>| async move { HttpResponse::Ok().json(builtin::answer(&request)) }))
    })
    .bind(&bind)?;
    eprintln!("fake messaging platform listening on http://{bind}/ ({})", builtin::WARNING);
    server.run().await
}
