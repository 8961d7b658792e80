//! `/metrics`: every counter moves by exactly what the requests caused. One test in
//! its own binary, because the registry is process-wide and tests run in parallel.

#[path = "it/common/mod.rs"]
mod common;

use common::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Series (`name{labels}`) to value.
async fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let response = server.client().get(format!("{}/metrics", server.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    assert!(!text.contains(APP_TOKEN));
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    let value = |m: &HashMap<String, f64>| m.get(series).copied().unwrap_or(0.0);
    value(after) - value(before)
}

#[actix_web::test]
async fn counters_follow_what_happened() {
    let server = TestServer::start(&[("LIMIT_START_PER_PHONE_PER_HOUR", "1")]).await;
    let before = scrape(&server).await;
    // Every metric is exported before its first event, so dashboards and alerts see zeros.
    for name in [
        "otpgate_otp_issued_total",
        "otpgate_otp_expired_total",
        "otpgate_upstream_failures_total",
        "otpgate_db_pool_wait_seconds_count",
        "otpgate_redis_request_duration_seconds_count",
        "otpgate_ratelimit_errors_total",
    ] {
        assert!(before.contains_key(name), "{name} missing from {before:?}");
    }

    let code = server.start_login("18005550001").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_error(&server.call(verify("18005550001", wrong)).await, 401, "BADCODE");
    server.upstream.set_mode(Mode::Reply(500, "down".into()));
    assert_error(&server.call(verify("18005550001", &code)).await, 502, "UPSTREAM");
    server.upstream.set_mode(Mode::Useradd);
    assert_eq!(server.call(verify("18005550001", &code)).await.0, 200);
    assert_error(&server.call(login("18005550001")).await, 429, "RATELIMIT");
    server.sender.fail.store(true, Ordering::SeqCst);
    assert_error(&server.call(login("18005550002")).await, 502, "SENDFAILED");
    server.sender.fail.store(false, Ordering::SeqCst);
    assert_error(&server.call(json!({ "op": "fly-18005550003", "appid": APPID })).await, 400, "BADOP");
    // A code nobody uses expires (here: its expiry moved into the past) and is counted when purged.
    server.start_login("18005550004").await;
    server.execute("UPDATE otp_challenges SET expires_at = 0 WHERE address = '18005550004'");
    server.state.housekeeping().await.unwrap();

    let after = scrape(&server).await;
    let expected = [
        (r#"otpgate_api_requests_total{op="login",result="ok"}"#, 3.0),
        (r#"otpgate_api_requests_total{op="login",result="BADCODE"}"#, 1.0),
        (r#"otpgate_api_requests_total{op="login",result="UPSTREAM"}"#, 1.0),
        (r#"otpgate_api_requests_total{op="login",result="RATELIMIT"}"#, 1.0),
        (r#"otpgate_api_requests_total{op="login",result="SENDFAILED"}"#, 1.0),
        (r#"otpgate_api_requests_total{op="unknown",result="BADOP"}"#, 1.0),
        (r#"otpgate_http_requests_total{route="/api",status="200"}"#, 3.0),
        (r#"otpgate_http_requests_total{route="/api",status="502"}"#, 2.0),
        (r#"otpgate_http_request_duration_seconds_count{route="/api"}"#, 8.0),
        ("otpgate_otp_issued_total", 2.0),
        ("otpgate_otp_verified_total", 2.0),
        (r#"otpgate_otp_failed_total{reason="wrong"}"#, 1.0),
        ("otpgate_otp_expired_total", 1.0),
        (r#"otpgate_sender_attempts_total{provider="recording"}"#, 3.0),
        (r#"otpgate_sender_failures_total{provider="recording"}"#, 1.0),
        ("otpgate_upstream_request_duration_seconds_count", 2.0),
        ("otpgate_upstream_failures_total", 1.0),
        (r#"otpgate_ratelimit_rejections_total{limiter="start_per_address"}"#, 1.0),
    ];
    for (series, value) in expected {
        assert_eq!(delta(&before, &after, series), value, "{series}");
    }
    assert!(delta(&before, &after, "otpgate_db_pool_wait_seconds_count") >= 8.0);
    // With Redis, each check of a limit that is on is one timed round trip.
    let redis_checks = delta(&before, &after, "otpgate_redis_request_duration_seconds_count");
    match common::backend::redis_url() {
        Some(_) => assert!(redis_checks >= 2.0, "{redis_checks}"),
        None => assert_eq!(redis_checks, 0.0),
    }
    // Labels carry only known names: no phone, op text or code.
    let text = after.keys().cloned().collect::<Vec<_>>().join("\n");
    assert!(!text.contains("1800555000") && !text.contains("fly") && !text.contains(&code), "{text}");

    // The gauge is the queue as the courier last looked at it, which may have been while a
    // message was still in flight: with every message finished, its next look reads 0.
    assert!(after.contains_key("otpgate_courier_queue_depth"));
    assert_eq!(queue_depth_once_it_reads(&server, 0.0).await, 0.0);
    // A message whose delivery is being retried counts in the courier's queue depth.
    let retrying = TestServer::start(&[("COURIER_MAX_ATTEMPTS", "5"), ("COURIER_RETRY_BASE_MS", "60000")]).await;
    retrying.sender.fail.store(true, Ordering::SeqCst);
    assert_eq!(retrying.call(login("18005550077")).await.0, 200, "a transient failure is retried later");
    assert_eq!(queue_depth_once_it_reads(&retrying, 1.0).await, 1.0);
}

/// The courier's queue depth once it reads `expected`, or what it read last after 30 s.
async fn queue_depth_once_it_reads(server: &TestServer, expected: f64) -> f64 {
    let mut depth = f64::NAN;
    eventually(30, async || {
        depth = scrape(server).await.get("otpgate_courier_queue_depth").copied().unwrap_or(f64::NAN);
        depth == expected
    })
    .await;
    depth
}
