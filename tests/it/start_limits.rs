//! The limits on starts and guesses an attacker meets across codes: a start spends its
//! limits only when it sends, the home countries cannot be shut out or starved, one IP
//! cannot spend its network's share, and guesses sent with a challenge id are bounded
//! per phone across its codes.

use crate::common::*;
use serde_json::Value;

const UK_MOBILE: &str = "447400123456";

fn uk(n: u32) -> String {
    format!("4474001234{n:02}")
}

#[actix_web::test]
async fn starts_refused_as_too_soon_spend_no_calling_code_limit() {
    let server = TestServer::start(&[("LIMIT_START_PER_CALLING_CODE_PER_HOUR", "2"), ("OTP_RESEND_SECS", "60")]).await;
    assert_ok(server.call(login(&uk(1))).await);
    for _ in 0..5 {
        let reply = server.call(login(&uk(1))).await;
        assert_error(&reply, 429, "RATELIMIT");
        assert!(reply.1["errmsg"].as_str().unwrap().contains("moments ago"), "{}", reply.1);
    }
    assert_ok(server.call(login(&uk(2))).await);
    assert_error(&server.call(login(&uk(3))).await, 429, "RATELIMIT");
    assert_eq!(server.sender.count(), 2, "the limit counted the codes sent, not the requests");
}

#[actix_web::test]
async fn a_home_countrys_starts_cannot_shut_it_out() {
    let server = TestServer::start(&[("LIMIT_START_PER_CALLING_CODE_PER_HOUR", "2"), ("DEFAULT_REGION", "GB")]).await;
    for n in 0..5 {
        assert_ok(server.call_from(&format!("127.0.{n}.1"), login(&uk(n))).await);
    }
    assert_ok(server.call(login("18005550001")).await);
    assert_ok(server.call(login("18005550002")).await);
    assert_error(&server.call(login("18005550003")).await, 429, "RATELIMIT");
}

#[actix_web::test]
async fn foreign_traffic_cannot_spend_the_home_countries_reserve() {
    let env = [
        ("SMS_BUDGET_PER_HOUR", "10"),
        ("SMS_BUDGET_HOME_RESERVE", "30"),
        ("SMS_BUDGET_HOME_COUNTRIES", "44"),
        ("SMS_BUDGET_COUNTRY_SHARE", "0"),
    ];
    let server = TestServer::start(&env).await;
    // Seven foreign numbers from seven networks, as a spread-out attack would.
    for n in 0..7 {
        assert_ok(server.call_from(&format!("127.0.{n}.1"), login(&format!("1800555000{n}"))).await);
    }
    let reply = server.call_from("127.0.9.1", login("18005550009")).await;
    assert_error(&reply, 429, "RATELIMIT");
    assert!(reply.1["retry_after"].as_u64().is_some_and(|s| s > 0), "{}", reply.1);
    for n in 0..3 {
        assert_ok(server.call_from(&format!("127.1.{n}.1"), login(&uk(n))).await);
    }
    assert_error(&server.call_from("127.1.9.1", login(UK_MOBILE)).await, 429, "RATELIMIT");
    assert_eq!(server.sender.count(), 10);
}

#[actix_web::test]
async fn one_ip_cannot_spend_its_neighbours_share() {
    let env = [("SMS_BUDGET_PER_HOUR", "100"), ("SMS_BUDGET_NETWORK_SHARE", "10"), ("SMS_BUDGET_IP_SHARE", "2")];
    let server = TestServer::start(&env).await;
    assert_ok(server.call_from("127.0.0.1", login("18005550001")).await);
    assert_ok(server.call_from("127.0.0.1", login("18005550002")).await);
    assert_error(&server.call_from("127.0.0.1", login("18005550003")).await, 429, "RATELIMIT");
    for n in 2..6 {
        assert_ok(server.call_from(&format!("127.0.0.{n}"), login(&format!("1800555001{n}"))).await);
    }
    assert_eq!(server.sender.count(), 6);
}

/// A start's challenge id, from its reply.
async fn start(server: &TestServer, phone: &str) -> String {
    let reply = assert_ok(server.call(login(phone)).await);
    reply["challenge"].as_str().expect("a challenge id").to_string()
}

fn bound_guess(phone: &str, code: &str, challenge: &str) -> Value {
    let mut request = verify(phone, code);
    request["challenge"] = challenge.into();
    request
}

#[actix_web::test]
async fn guesses_with_the_challenge_id_are_bounded_per_phone_across_codes() {
    let env = [("LIMIT_VERIFY_PER_PHONE_PER_DAY", "3"), ("OTP_MAX_ATTEMPTS", "5")];
    let server = TestServer::start(&env).await;
    let phone = "18005550001";
    let wrong = |code: &str| if code == "000000" { "111111".to_string() } else { "000000".to_string() };

    // The attacker's own start: the first guess is free, three more spend the day's three.
    let challenge = start(&server, phone).await;
    let code = server.sender.last_code(phone);
    for _ in 0..4 {
        assert_error(&server.call(bound_guess(phone, &wrong(&code), &challenge)).await, 401, "BADCODE");
    }
    let reply = server.call(bound_guess(phone, &wrong(&code), &challenge)).await;
    assert_error(&reply, 429, "RATELIMIT");
    assert!(reply.1["retry_after"].as_u64().is_some_and(|s| s > 3600), "a guess comes back every 8 hours: {}", reply.1);

    // A new start gives one judged guess, no more.
    let challenge = start(&server, phone).await;
    let code = server.sender.last_code(phone);
    assert_error(&server.call(bound_guess(phone, &wrong(&code), &challenge)).await, 401, "BADCODE");
    assert_error(&server.call(bound_guess(phone, &wrong(&code), &challenge)).await, 429, "RATELIMIT");
    assert_error(&server.call(verify(phone, &code)).await, 429, "RATELIMIT");

    // The owner, who asked for a code and received it, still gets in at the first try.
    let challenge = start(&server, phone).await;
    let code = server.sender.last_code(phone);
    assert!(assert_ok(server.call(bound_guess(phone, &code, &challenge)).await)["token"].is_string());
}

#[actix_web::test]
async fn a_phone_is_sent_a_bounded_number_of_codes_a_day() {
    let server = TestServer::start(&[("LIMIT_START_PER_PHONE_PER_DAY", "2")]).await;
    assert_ok(server.call(login("18005550001")).await);
    assert_ok(server.call_from("127.0.0.2", login("18005550001")).await);
    let reply = server.call_from("127.0.1.3", login("18005550001")).await;
    assert_error(&reply, 429, "RATELIMIT");
    assert!(reply.1["retry_after"].as_u64().is_some_and(|s| s > 3600), "{}", reply.1);
    assert_ok(server.call(login("18005550002")).await);
}
