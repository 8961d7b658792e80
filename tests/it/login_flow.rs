//! The two-step login over HTTP: codes, attempts, expiry, replay, limits, restarts.

use crate::common::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const PHONE: &str = "18005551234";

#[actix_web::test]
async fn two_step_login_returns_the_upstream_token() {
    let server = TestServer::start(&[]).await;
    let (status, started) = server.call(login("+1 800-555-1234")).await;
    assert_eq!(status, 200);
    assert_eq!(started["result"], true);
    assert_eq!(started["op"], "login");
    assert!(started["ts"].as_i64().unwrap() > 1_700_000_000);
    assert!(started.get("token").is_none());

    let code = server.sender.last_code(PHONE);
    assert_eq!(code.len(), 6);
    let sent = server.sender.sent.lock().unwrap()[0].clone();
    assert_eq!(sent.text, format!("Your code is {code}"));
    assert_eq!(sent.appid, APPID);

    let mut request = verify(PHONE, &code);
    request["device"] = json!("android-123");
    let (status, reply) = server.call(request).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["result"], true);
    assert_eq!(reply["token"], "usertoken-1");
    assert_eq!(reply["phone"], PHONE);
    assert_eq!(reply["uid"], 1001);

    let received = server.upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].json(),
        json!({
            "op": "useradd",
            "token": APP_TOKEN,
            "user": { "address": PHONE, "name": "Ann", "token": { "appid": APPID, "expiry": 525600, "device": "android-123" } }
        })
    );
}

#[actix_web::test]
async fn wrong_code_is_refused_and_counts_down() {
    let server = TestServer::start(&[("OTP_MAX_ATTEMPTS", "3")]).await;
    let code = server.start_login(PHONE).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let reply = server.call(verify(PHONE, wrong)).await;
    assert_error(&reply, 401, "BADCODE");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("2 attempts left"), "{}", reply.1);
    let reply = server.call(verify(PHONE, wrong)).await;
    assert!(reply.1["errmsg"].as_str().unwrap().ends_with("wrong code; 1 attempt left"), "{}", reply.1);
    assert!(server.upstream.received().is_empty());

    let (status, reply) = server.call(verify(PHONE, &code)).await;
    assert_eq!((status, &reply["token"]), (200, &json!("usertoken-1")), "a wrong guess does not kill a live code");
}

#[actix_web::test]
async fn exhausted_attempts_kill_the_code() {
    let server = TestServer::start(&[("OTP_MAX_ATTEMPTS", "3")]).await;
    let code = server.start_login(PHONE).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_error(&server.call(verify(PHONE, wrong)).await, 401, "BADCODE");
    assert_error(&server.call(verify(PHONE, wrong)).await, 401, "BADCODE");
    assert_error(&server.call(verify(PHONE, wrong)).await, 401, "TOOMANYATTEMPTS");
    assert_error(&server.call(verify(PHONE, &code)).await, 401, "TOOMANYATTEMPTS");
    assert!(server.upstream.received().is_empty());

    let fresh = server.start_login(PHONE).await;
    let (status, _) = server.call(verify(PHONE, &fresh)).await;
    assert_eq!(status, 200, "a new code starts a new count");
}

#[actix_web::test]
async fn expired_code_is_refused() {
    let server = TestServer::start_on_manual_clock(&[("OTP_TTL_SECS", "300")]).await;
    let code = server.start_login(PHONE).await;
    let twin = server.start_login("18005550002").await;
    // At its 299th second a code still works; at its 300th it is refused.
    server.clock.advance(Duration::from_secs(299));
    assert_eq!(server.call(verify("18005550002", &twin)).await.0, 200);
    server.clock.advance(Duration::from_secs(1));
    assert_error(&server.call(verify(PHONE, &code)).await, 401, "BADCODE");
    assert_eq!(server.upstream.received().len(), 1, "only the valid code reached upstream");
}

#[actix_web::test]
async fn a_used_code_cannot_be_replayed() {
    let server = TestServer::start(&[]).await;
    let code = server.start_login(PHONE).await;
    assert_eq!(server.call(verify(PHONE, &code)).await.0, 200);
    assert_error(&server.call(verify(PHONE, &code)).await, 401, "BADCODE");
    assert_eq!(server.upstream.received().len(), 1);
}

#[actix_web::test]
async fn concurrent_verifies_with_one_code_yield_one_token() {
    let server = Arc::new(TestServer::start(&[]).await);
    server.upstream.set_mode(Mode::Slow(Duration::from_millis(200)));
    let code = server.start_login(PHONE).await;
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let (server, code) = (server.clone(), code.clone());
            actix_web::rt::spawn(async move { server.call(verify(PHONE, &code)).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for attempt in attempts {
        let reply = attempt.await.unwrap();
        match reply.0 {
            200 => tokens.push(reply.1["token"].clone()),
            _ => assert_error(&reply, 401, "BADCODE"),
        }
    }
    assert_eq!(tokens.len(), 1, "exactly one request may win: {tokens:?}");
    assert_eq!(server.upstream.received().len(), 1);
}

#[actix_web::test]
async fn a_resend_too_soon_is_refused_with_retry_after() {
    let server = TestServer::start(&[("OTP_RESEND_SECS", "30")]).await;
    let first = server.start_login(PHONE).await;
    let (status, headers, reply) = server.send_full(server.client().post(server.api()).json(&login(PHONE))).await;
    assert_error(&(status, reply.clone()), 429, "RATELIMIT");
    let wait = reply["retry_after"].as_u64().unwrap();
    assert!((1..=30).contains(&wait), "{reply}");
    assert_eq!(headers["retry-after"].to_str().unwrap(), wait.to_string());
    assert_eq!(server.sender.count(), 1, "no second message is sent");
    assert_eq!(server.call(verify(PHONE, &first)).await.0, 200, "the first code still works");
}

#[actix_web::test]
async fn a_new_code_replaces_the_previous_one() {
    let server = TestServer::start(&[]).await;
    let first = server.start_login(PHONE).await;
    let mut second = server.start_login(PHONE).await;
    while second == first {
        second = server.start_login(PHONE).await;
    }
    assert_error(&server.call(verify(PHONE, &first)).await, 401, "BADCODE");
    assert_eq!(server.call(verify(PHONE, &second)).await.0, 200);
}

#[actix_web::test]
async fn a_code_is_bound_to_the_app_that_asked_for_it() {
    let server = TestServer::start(&[]).await;
    let code = server.start_login(PHONE).await;
    let mut request = verify(PHONE, &code);
    request["appid"] = json!("com.other.app");
    let reply = server.call(request).await;
    assert_error(&reply, 401, "BADCODE");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("asked for by another app"), "{}", reply.1);
    assert!(server.upstream.received().is_empty());
}

#[actix_web::test]
async fn login_starts_are_limited_per_ip() {
    let server = TestServer::start(&[("LIMIT_START_PER_IP_PER_HOUR", "2")]).await;
    server.start_login("18005550001").await;
    server.start_login("18005550002").await;
    let reply = server.call(login("18005550003")).await;
    assert_error(&reply, 429, "RATELIMIT");
    assert!(reply.1["retry_after"].as_u64().unwrap() >= 1);
    assert_eq!(server.sender.count(), 2);
    assert_eq!(server.call_from("127.0.0.2", login("18005550003")).await.0, 200, "another IP has its own budget");
}

#[actix_web::test]
async fn login_starts_are_limited_per_phone() {
    let server = TestServer::start(&[("LIMIT_START_PER_PHONE_PER_HOUR", "2")]).await;
    server.start_login(PHONE).await;
    server.start_login(PHONE).await;
    assert_error(&server.call_from("127.0.0.2", login(PHONE)).await, 429, "RATELIMIT");
    assert_eq!(server.sender.count(), 2, "changing IP does not help");
    assert_eq!(server.call(login("18005550009")).await.0, 200, "another phone has its own budget");
}

#[actix_web::test]
async fn verifies_are_limited_per_ip_and_per_phone() {
    let server = TestServer::start(&[("LIMIT_VERIFY_PER_IP_PER_HOUR", "2"), ("LIMIT_VERIFY_PER_PHONE_PER_HOUR", "3")]).await;
    let code = server.start_login(PHONE).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_error(&server.call(verify(PHONE, wrong)).await, 401, "BADCODE");
    assert_error(&server.call(verify(PHONE, wrong)).await, 401, "BADCODE");
    assert_error(&server.call(verify(PHONE, &code)).await, 429, "RATELIMIT");
    assert_error(&server.call_from("127.0.0.2", verify(PHONE, wrong)).await, 401, "BADCODE");
    assert_error(&server.call_from("127.0.0.3", verify(PHONE, &code)).await, 429, "RATELIMIT");
}

#[actix_web::test]
async fn test_numbers_accept_their_fixed_code_and_send_nothing() {
    let server = TestServer::start(&[("TEST_OTPS", "+1 800 555 0000:123456, 18005550001:654321")]).await;
    assert_eq!(server.call(login("18005550000")).await.0, 200);
    assert_eq!(server.sender.count(), 0);
    assert_error(&server.call(verify("18005550000", "654321")).await, 401, "BADCODE");
    let (status, reply) = server.call(verify("18005550000", "123456")).await;
    assert_eq!((status, &reply["token"]), (200, &json!("usertoken-1")), "{reply}");
}

#[actix_web::test]
async fn pending_codes_survive_a_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let upstream = FakeUpstream::start();
    let first = TestServer::start_with(&[], upstream.clone(), dir.clone(), Delivery::Recording).await;
    let code = first.start_login(PHONE).await;
    first.stop().await;

    let second = TestServer::start_with(&[], upstream, dir, Delivery::Recording).await;
    let (status, reply) = second.call(verify(PHONE, &code)).await;
    assert_eq!((status, &reply["token"]), (200, &json!("usertoken-1")), "{reply}");
}

#[actix_web::test]
async fn codes_are_stored_only_as_hashes() {
    let server = TestServer::start(&[]).await;
    let code = server.start_login(PHONE).await;
    let hex_of = if backend::on_postgres() { "encode(otp_hash, 'hex')" } else { "hex(otp_hash)" };
    let stored = server.column(&format!("SELECT {hex_of} FROM otp_challenges WHERE address = '{PHONE}'")).remove(0);
    let stored = hex::decode(stored).unwrap();
    assert_eq!(stored.len(), 32);
    assert!(!stored.windows(code.len()).any(|w| w == code.as_bytes()));
    assert!(!hex::encode(&stored).contains(&code));
}
