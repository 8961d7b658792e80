//! Upstream useradd failures: the client sees UPSTREAM, the code stays usable,
//! and the app token shows up in no reply and no log line.

use crate::common::*;
use serde_json::json;
use std::time::Duration;

const PHONE: &str = "18005551234";

/// Runs a login whose first verify meets `failure`, then retries with the same code.
async fn retry_after_failure(server: &TestServer, failure: Mode) {
    let code = server.start_login(PHONE).await;
    server.upstream.set_mode(failure);
    let reply = server.call(verify(PHONE, &code)).await;
    assert_error(&reply, 502, "UPSTREAM");
    assert!(reply.1.get("token").is_none());

    server.upstream.set_mode(Mode::Useradd);
    let (status, reply) = server.call(verify(PHONE, &code)).await;
    assert_eq!(status, 200, "the same code works once upstream recovers: {reply}");
    assert!(reply["token"].as_str().unwrap().starts_with("usertoken-"));
    assert_error(&server.call(verify(PHONE, &code)).await, 401, "BADCODE");
}

#[actix_web::test]
async fn upstream_500_keeps_the_code() {
    let server = TestServer::start(&[]).await;
    retry_after_failure(&server, Mode::Reply(500, "internal error".into())).await;
}

#[actix_web::test]
async fn upstream_result_false_keeps_the_code() {
    let server = TestServer::start(&[]).await;
    retry_after_failure(&server, Mode::Reply(200, r#"{"result":false,"error":"AUTHFAIL"}"#.into())).await;
}

#[actix_web::test]
async fn a_refusal_without_an_app_token_is_logged_with_the_reason() {
    let refusal = Mode::Reply(200, r#"{"result":false,"error":"AUTHFAIL"}"#.into());
    let hint = "APP_TOKEN is not set, and the platform refuses requests without it";
    for (app_token, hinted) in [("", true), (APP_TOKEN, false)] {
        let server = TestServer::start(&[("APP_TOKEN", app_token)]).await;
        let code = server.start_login(PHONE).await;
        server.upstream.set_mode(refusal.clone());
        let reply = server.call(verify(PHONE, &code)).await;
        assert_error(&reply, 502, "UPSTREAM");
        assert!(!reply.1.to_string().contains("APP_TOKEN"), "the reply is the apps' and stays as it was: {}", reply.1);
        let logs = server.logs();
        assert!(logs.contains("upstream useradd failed") && logs.contains("AUTHFAIL"), "{logs}");
        assert_eq!(logs.contains(hint), hinted, "APP_TOKEN={app_token:?}: {logs}");
    }
}

#[actix_web::test]
async fn upstream_garbage_keeps_the_code() {
    let server = TestServer::start(&[]).await;
    retry_after_failure(&server, Mode::Reply(200, "<html>bad gateway</html>".into())).await;
}

#[actix_web::test]
async fn upstream_reply_without_token_keeps_the_code() {
    let server = TestServer::start(&[]).await;
    retry_after_failure(&server, Mode::Reply(200, r#"{"result":true,"user":{"uid":5}}"#.into())).await;
}

#[actix_web::test]
async fn upstream_timeout_keeps_the_code() {
    let server = TestServer::start(&[("UPSTREAM_TIMEOUT_SECS", "1")]).await;
    retry_after_failure(&server, Mode::Slow(Duration::from_millis(1500))).await;
}

#[actix_web::test]
async fn upstream_down_keeps_the_code() {
    let server = TestServer::start(&[]).await;
    let code = server.start_login(PHONE).await;
    server.upstream.stop().await;
    assert_error(&server.call(verify(PHONE, &code)).await, 502, "UPSTREAM");
    server.upstream.restart();
    let (status, reply) = server.call(verify(PHONE, &code)).await;
    assert_eq!((status, &reply["token"]), (200, &json!("usertoken-1")), "{reply}");
}

#[actix_web::test]
async fn string_uid_and_multi_device_fields_pass_through() {
    let server = TestServer::start(&[]).await;
    let code = server.start_login(PHONE).await;
    server.upstream.set_mode(Mode::Reply(
        200,
        r#"{"result":true,"user":{"uid":"u-77","address":"18005551234","token":"tok-abc","linked":3,"linkto":"u-1"}}"#.into(),
    ));
    let (status, reply) = server.call(verify(PHONE, &code)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["uid"], "u-77");
    assert_eq!(reply["token"], "tok-abc");
    assert_eq!(reply["linked"], 3);
    assert_eq!(reply["linkto"], "u-1");
}

#[actix_web::test]
async fn an_echoed_app_token_reaches_neither_reply_nor_log() {
    let server = TestServer::start(&[]).await;
    let code = server.start_login(PHONE).await;
    // A misbehaving upstream that echoes the request, app token included.
    server.upstream.set_mode(Mode::Reply(400, format!(r#"{{"result":false,"echo":{{"token":"{APP_TOKEN}"}}}}"#)));
    let reply = server.call(verify(PHONE, &code)).await; // `call` itself asserts the reply has no app token
    assert_error(&reply, 502, "UPSTREAM");
    let logs = logs();
    assert!(server.logs().contains("upstream useradd failed"), "the failure is logged");
    assert!(server.logs().contains("[app token]"), "the echoed token is logged redacted");
    assert!(!logs.contains(APP_TOKEN), "the app token leaked into the log");
}

#[actix_web::test]
async fn tokens_in_successful_replies_never_reach_the_log() {
    let server = TestServer::start(&[]).await;
    let code = server.start_login(PHONE).await;
    // result:true with a token but no uid: refused, and the token must not be quoted.
    server.upstream.set_mode(Mode::Reply(200, r#"{"result":true,"user":{"token":"leaky-token-4f1c2"}}"#.into()));
    assert_error(&server.call(verify(PHONE, &code)).await, 502, "UPSTREAM");
    assert!(server.logs().contains("without user uid or token"));
    assert!(!logs().contains("leaky-token-4f1c2"));
}

#[actix_web::test]
async fn an_app_token_cut_at_the_log_limit_leaves_no_part_behind() {
    let server = TestServer::start(&[]).await;
    let code = server.start_login(PHONE).await;
    // The token straddles the 500th character, where logged bodies are cut.
    let body = format!("{}{APP_TOKEN}{}", "x".repeat(490), "y".repeat(100));
    server.upstream.set_mode(Mode::Reply(500, body));
    assert_error(&server.call(verify(PHONE, &code)).await, 502, "UPSTREAM");
    assert!(!logs().contains(&APP_TOKEN[..10]), "a prefix of the app token was logged");
}
