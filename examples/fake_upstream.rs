//! A local stand-in for the messaging platform, for trying the login flow without
//! an app token: `cargo run --example fake_upstream` then start the service with
//! `UPSTREAM_URL=http://127.0.0.1:9000/ APP_TOKEN=dev cargo run --release`.

#[path = "../tests/common/fake_upstream.rs"]
#[allow(dead_code)]
mod fake_upstream;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".into());
    let upstream = fake_upstream::FakeUpstream::start_on(bind.parse().expect("address like 127.0.0.1:9000"));
    eprintln!("fake upstream useradd listening on {}", upstream.url());
    std::future::pending::<()>().await;
    Ok(())
}
