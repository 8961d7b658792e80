//! The durable courier: retries with backoff on transient failures, no retry on
//! permanent ones, resumption after a restart, and no code left in clear.

use crate::common::*;
use std::sync::Arc;
use std::time::Duration;

const PHONE: &str = "18005551234";

/// A service sending through the HTTP SMS gateway `gateway`, with quick retries.
async fn server_over(gateway: &FakeUpstream, dir: Arc<tempfile::TempDir>, retry_base_ms: &str) -> TestServer {
    let url = gateway.url();
    let env = [
        ("OTP_SENDER", "http"),
        ("SMS_HTTP_URL", url.as_str()),
        ("COURIER_MAX_ATTEMPTS", "5"),
        ("COURIER_RETRY_BASE_MS", retry_base_ms),
        ("COURIER_WAIT_MS", "1000"),
    ];
    TestServer::start_with(&env, FakeUpstream::start(), dir, Delivery::Configured).await
}

/// Waits (at most 30 s, for a loaded machine) until the gateway has received `n` requests.
async fn wait_for_requests(gateway: &FakeUpstream, n: usize) {
    let arrived = eventually(30, async || gateway.received().len() >= n).await;
    assert!(arrived, "only {} of {n} requests arrived", gateway.received().len());
}

/// Courier rows still queued: the only ones the courier ever sends.
fn queued_rows(server: &TestServer) -> i64 {
    server.scalar("SELECT count(*) FROM courier WHERE status = 'queued'")
}

#[derive(Debug, PartialEq)]
struct Row {
    status: String,
    attempts: u32,
    /// Nothing of the message is left: not sealed, and (SQLite) not in the columns earlier releases wrote in clear.
    cleared: bool,
    last_error: Option<String>,
}

/// The courier row once it is no longer queued (waits at most 30 s).
async fn finished_row(server: &TestServer) -> Row {
    let cleared = match backend::on_postgres() {
        true => "SELECT count(*) FROM courier WHERE sealed IS NULL",
        false => "SELECT count(*) FROM courier WHERE sealed IS NULL AND body IS NULL AND otp IS NULL",
    };
    let finished = async || Some(server.column("SELECT status FROM courier").remove(0)).filter(|status| status != "queued");
    let status = eventually_some(30, finished).await.expect("the courier row is still queued after 30 s");
    let last_error = server.column("SELECT coalesce(last_error, '') FROM courier").remove(0);
    Row {
        status,
        attempts: server.scalar("SELECT attempts FROM courier") as u32,
        cleared: server.scalar(cleared) == 1,
        last_error: Some(last_error).filter(|e| !e.is_empty()),
    }
}

fn code_in(request: &Received) -> String {
    request.json()["text"].as_str().unwrap().strip_prefix("Your code is ").unwrap().to_string()
}

#[actix_web::test]
async fn transient_failures_are_retried_until_delivered() {
    let gateway = FakeUpstream::start();
    gateway.set_mode(Mode::Sequence(vec![(503, "busy".into()), (503, "busy".into()), (200, "{}".into())]));
    let server = server_over(&gateway, Arc::new(tempfile::tempdir().unwrap()), "100").await;

    // The first attempt failed but will be retried: the user is told the code is on its way.
    let (status, reply) = server.call(login(PHONE)).await;
    assert_eq!(status, 200, "{reply}");
    wait_for_requests(&gateway, 3).await;
    let received = gateway.received();
    let code = code_in(&received[2]);
    assert!(received.iter().all(|r| code_in(r) == code), "every attempt carries the same code");

    let row = finished_row(&server).await;
    assert_eq!((row.status.as_str(), row.attempts), ("sent", 3));
    assert!(row.cleared, "nothing of the code stays in the courier table");
    assert!(row.last_error.unwrap().contains("HTTP 503"));
    assert_eq!(server.call(verify(PHONE, &code)).await.0, 200);
    // Only queued rows are ever sent: with none left, no attempt can follow.
    assert_eq!(queued_rows(&server), 0);
    assert_eq!(gateway.received().len(), 3, "no attempt after success");
}

#[actix_web::test]
async fn permanent_failures_are_not_retried() {
    let gateway = FakeUpstream::start();
    gateway.set_mode(Mode::Reply(400, r#"{"code":21211,"message":"Invalid 'To' Phone Number"}"#.into()));
    let server = server_over(&gateway, Arc::new(tempfile::tempdir().unwrap()), "100").await;

    assert_error(&server.call(login(PHONE)).await, 502, "SENDFAILED");
    let row = finished_row(&server).await;
    assert_eq!((row.status.as_str(), row.attempts, row.cleared), ("failed", 1, true));
    assert!(row.last_error.unwrap().contains("error 21211"));
    assert_eq!(queued_rows(&server), 0);
    assert_eq!(gateway.received().len(), 1, "an invalid number is not retried");
    assert_eq!(server.scalar("SELECT count(*) FROM otp_challenges"), 0, "the undelivered code is gone");
}

#[actix_web::test]
async fn queued_messages_are_sent_after_a_restart() {
    let gateway = FakeUpstream::start();
    gateway.set_mode(Mode::Reply(503, "down".into()));
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let first = server_over(&gateway, dir.clone(), "800").await;
    assert_eq!(first.call(login(PHONE)).await.0, 200);
    first.stop().await;
    assert_eq!(gateway.received().len(), 1);

    // A new process over the same database picks the message up when its retry falls due.
    gateway.set_mode(Mode::Reply(200, "{}".into()));
    let second = server_over(&gateway, dir, "800").await;
    wait_for_requests(&gateway, 2).await;
    let code = code_in(&gateway.received()[1]);
    let row = finished_row(&second).await;
    assert_eq!((row.status.as_str(), row.attempts), ("sent", 2));
    assert_eq!(second.call(verify(PHONE, &code)).await.0, 200);
}

#[actix_web::test]
async fn a_replaced_code_is_not_retried() {
    let gateway = FakeUpstream::start();
    gateway.set_mode(Mode::Reply(503, "down".into()));
    let server = server_over(&gateway, Arc::new(tempfile::tempdir().unwrap()), "300").await;
    assert_eq!(server.call(login(PHONE)).await.0, 200);
    // A newer request replaces the code; the first message's retry is then pointless.
    gateway.set_mode(Mode::Reply(200, "{}".into()));
    assert_eq!(server.call(login(PHONE)).await.0, 200);
    let statuses = || server.column("SELECT status FROM courier ORDER BY id");
    // The worker cancels the first message at its next look at the queue, instead of retrying it.
    assert!(eventually(30, async || statuses() == ["cancelled", "sent"]).await, "{:?}", statuses());
    assert_eq!(gateway.received().len(), 2, "the replaced code was not sent again");
}

#[actix_web::test]
async fn an_echoed_code_is_not_logged() {
    let gateway = FakeUpstream::start();
    // The gateway's error reply quotes the request, code included.
    gateway.set_mode(Mode::Echo(400));
    let server = server_over(&gateway, Arc::new(tempfile::tempdir().unwrap()), "100").await;
    assert_error(&server.call(login("18005550009")).await, 502, "SENDFAILED");
    let code = code_in(&gateway.received()[0]);
    let logs = logs();
    assert!(!logs.contains(&format!("Your code is {code}")), "{logs}");
    // The number is masked as well, like every phone in the log.
    assert!(server.logs().contains(r#"SMS gateway answered HTTP 400: {"to":"1800555****","text":"Your code is [code]"}"#), "{logs}");
    let row = finished_row(&server).await;
    assert!(!row.last_error.unwrap().contains(&code));
}

#[actix_web::test]
async fn retries_stop_when_the_code_expires() {
    let gateway = FakeUpstream::start();
    gateway.set_mode(Mode::Reply(503, "down".into()));
    let url = gateway.url();
    let env = [
        ("OTP_SENDER", "http"),
        ("SMS_HTTP_URL", url.as_str()),
        ("OTP_TTL_SECS", "2"),
        ("COURIER_MAX_ATTEMPTS", "50"),
        ("COURIER_RETRY_BASE_MS", "200"),
    ];
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let clock = otpgate::domain::clock::Clock::manual();
    // Expiry is kept in whole seconds: starting on one makes the code live exactly 2000 ms.
    clock.advance(Duration::from_millis((1000 - clock.now_ms().rem_euclid(1000)) as u64));
    let server = TestServer::start_full(&env, FakeUpstream::start(), dir, Delivery::Configured, clock.clone()).await;
    assert_eq!(server.call(login(PHONE)).await.0, 200);
    // Attempts at 0, 200, 600 and 1400 ms; the next retry (3000 ms) falls after the expiry.
    let attempts = || server.scalar("SELECT attempts FROM courier");
    for (done, wait_ms) in [(1, 200), (2, 400), (3, 800)] {
        assert!(eventually(30, async || attempts() == done).await, "attempt {done} was not recorded: {}", attempts());
        assert_eq!(queued_rows(&server), 1, "retried after attempt {done}");
        clock.advance(Duration::from_millis(wait_ms));
    }
    let row = finished_row(&server).await;
    assert_eq!(row.status, "failed", "{row:?}");
    assert_eq!(row.attempts, 4, "no retry is scheduled past the code's expiry: {row:?}");
    assert_eq!(gateway.received().len(), 4);
    assert_eq!(queued_rows(&server), 0, "nothing is left to send for an expired code");
    assert!(row.cleared);
}

#[actix_web::test]
async fn shutdown_waits_for_a_delivery_in_flight() {
    let gateway = FakeUpstream::start();
    gateway.set_mode(Mode::Slow(Duration::from_millis(800)));
    let url = gateway.url();
    let env = [("OTP_SENDER", "http"), ("SMS_HTTP_URL", url.as_str()), ("COURIER_WAIT_MS", "100")];
    let server = TestServer::start_with(&env, FakeUpstream::start(), Arc::new(tempfile::tempdir().unwrap()), Delivery::Configured).await;
    // The request stops waiting after 100 ms; the attempt goes on.
    assert_eq!(server.call(login(PHONE)).await.0, 200);
    server.state.shutdown(Duration::from_secs(3)).await;
    // The delivery was recorded before the database closed, so a restart will not send it again.
    assert_eq!(server.column("SELECT status FROM courier"), ["sent"]);
}
