//! Sessions over HTTP: tokens, AUTHFAIL, logout, devices, and the device limit.

use crate::common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PHONE: &str = "18005551234";

#[actix_web::test]
async fn every_session_op_needs_a_live_token() {
    let server = TestServer::start(&[]).await;
    let token = server.log_in(PHONE, None).await;
    for op in ["devices", "getcontacts", "delcontacts", "profile", "me"] {
        assert_error(&server.call(json!({ "op": op, "phones": "18005550001", "name": "x" })).await, 401, "AUTHFAIL");
        assert_error(&server.call_op(op, "not-a-token", json!({})).await, 401, "AUTHFAIL");
        assert_error(&server.call_op(op, &format!("{token}x"), json!({})).await, 401, "AUTHFAIL");
    }
    // Logout always answers OK, as the reference does: the apps log out locally only on OK.
    assert_eq!(assert_ok(server.call(json!({ "op": "logout" })).await)["ended"], 0);

    // The token works as a JSON field, a form field, a query parameter and a bearer header.
    assert_ok(server.call_op("me", &token, json!({})).await);
    let form = server.client().post(server.api()).form(&[("op", "me"), ("token", token.as_str())]);
    assert_ok(server.send(form).await);
    let query = server.client().get(server.api()).query(&[("op", "me"), ("token", token.as_str())]);
    assert_ok(server.send(query).await);
    let bearer = server.client().post(server.api()).bearer_auth(&token).json(&json!({ "op": "me" }));
    assert_ok(server.send(bearer).await);
    let wrong_bearer = server.client().post(server.api()).bearer_auth("nope").json(&json!({ "op": "me" }));
    assert_error(&server.send(wrong_bearer).await, 401, "AUTHFAIL");
}

#[actix_web::test]
async fn an_expired_session_is_refused() {
    let server = TestServer::start_on_manual_clock(&[("TOKEN_EXPIRY_MINS", "60")]).await;
    let token = server.log_in(PHONE, None).await;
    server.clock.advance(std::time::Duration::from_secs(3599));
    assert_ok(server.call_op("me", &token, json!({})).await);
    server.clock.advance(std::time::Duration::from_secs(1));
    assert_error(&server.call_op("me", &token, json!({})).await, 401, "AUTHFAIL");
}

#[actix_web::test]
async fn sessions_keep_only_a_token_hash_with_appid_device_and_expiry() {
    let server = TestServer::start(&[("TOKEN_EXPIRY_MINS", "60")]).await;
    let token = server.log_in(PHONE, Some("android-123")).await;
    let row = server.column("SELECT token_sha256 || ' ' || appid || ' ' || device || ' ' || (expires_at - created_at) FROM sessions");
    let [hash, appid, device, lifetime]: [&str; 4] = row[0].split(' ').collect::<Vec<_>>().try_into().unwrap();
    let lifetime: i64 = lifetime.parse().unwrap();
    assert_eq!(hash, hex::encode(Sha256::digest(token.as_bytes())));
    assert_eq!((appid, device), (APPID, "android-123"));
    assert!((3599..=3601).contains(&lifetime), "expiry is the one asked of upstream: {lifetime}");
    server.stop().await;
    if backend::on_postgres() {
        return;
    }
    for file in ["otpgate.db", "otpgate.db-wal"] {
        let bytes = std::fs::read(server.dir.path().join(file)).unwrap_or_default();
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "the token is stored in {file}");
    }
    assert!(!logs().contains(&token), "the token reached the log");
}

#[actix_web::test]
async fn logout_ends_this_session_only_and_is_idempotent() {
    let server = TestServer::start(&[]).await;
    let phone_token = server.log_in(PHONE, Some("phone")).await;
    let tablet_token = server.log_in(PHONE, Some("tablet")).await;
    let reply = assert_ok(server.call_op("logout", &phone_token, json!({})).await);
    assert_eq!(reply["ended"], 1);
    assert_error(&server.call_op("me", &phone_token, json!({})).await, 401, "AUTHFAIL");
    let again = assert_ok(server.call_op("logout", &phone_token, json!({})).await);
    assert_eq!(again["ended"], 0, "an ended session logs out fine");
    assert_ok(server.call_op("me", &tablet_token, json!({})).await);
}

#[actix_web::test]
async fn logout_all_ends_every_session_of_the_user() {
    let server = TestServer::start(&[]).await;
    let tokens = [server.log_in(PHONE, Some("a")).await, server.log_in(PHONE, Some("b")).await, server.log_in(PHONE, None).await];
    let other = server.log_in("18005559999", None).await;
    let reply = assert_ok(server.call_op("logout", &tokens[0], json!({ "all": true })).await);
    assert_eq!(reply["ended"], 3);
    for token in &tokens {
        assert_error(&server.call_op("me", token, json!({})).await, 401, "AUTHFAIL");
    }
    assert_ok(server.call_op("me", &other, json!({})).await);
}

fn devices_of(reply: &Value) -> Vec<String> {
    let mut devices: Vec<String> = reply["devices"].as_array().unwrap().iter().map(|d| d["device"].as_str().unwrap().to_string()).collect();
    devices.sort();
    devices
}

#[actix_web::test]
async fn devices_lists_live_sessions_without_tokens() {
    let server = TestServer::start(&[]).await;
    let first = server.log_in(PHONE, Some("android-1")).await;
    let second = server.log_in(PHONE, Some("ios-2")).await;
    let (status, reply) = server.call_op("devices", &second, json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(devices_of(&reply), ["android-1", "ios-2"]);
    let text = reply.to_string();
    assert!(!text.contains(&first) && !text.contains(&second), "no token in the list: {text}");
    let current: Vec<&Value> = reply["devices"].as_array().unwrap().iter().filter(|d| d["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["device"], "ios-2");
    assert_eq!(current[0]["appid"], APPID);
    assert!(current[0]["created"].as_i64().unwrap() > 1_700_000_000);
    assert!(current[0]["last_seen"].as_i64().unwrap() >= current[0]["created"].as_i64().unwrap());
}

#[actix_web::test]
async fn the_device_limit_evicts_the_least_recently_used_session() {
    let server = TestServer::start(&[("MAX_DEVICES", "3")]).await;
    let a = server.log_in(PHONE, Some("dev-a")).await;
    let b = server.log_in(PHONE, Some("dev-b")).await;
    let c = server.log_in(PHONE, Some("dev-c")).await;
    // Using dev-a makes dev-b the least recently used.
    assert_ok(server.call_op("me", &a, json!({})).await);
    let d = server.log_in(PHONE, Some("dev-d")).await;

    assert_error(&server.call_op("me", &b, json!({})).await, 401, "AUTHFAIL");
    for token in [&a, &c, &d] {
        assert_ok(server.call_op("me", token, json!({})).await);
    }
    let reply = assert_ok(server.call_op("devices", &d, json!({})).await);
    assert_eq!(devices_of(&reply), ["dev-a", "dev-c", "dev-d"]);
    assert!(server.logs().contains("device limit reached"), "the eviction is logged");
}

#[actix_web::test]
async fn a_re_login_from_the_same_device_replaces_its_session() {
    let server = TestServer::start(&[("MAX_DEVICES", "2")]).await;
    let a = server.log_in(PHONE, Some("dev-a")).await;
    let b = server.log_in(PHONE, Some("dev-b")).await;
    let b_again = server.log_in(PHONE, Some("dev-b")).await;
    assert_ne!(b, b_again);
    assert_error(&server.call_op("me", &b, json!({})).await, 401, "AUTHFAIL");
    assert_ok(server.call_op("me", &a, json!({})).await);
    let reply = assert_ok(server.call_op("devices", &b_again, json!({})).await);
    assert_eq!(devices_of(&reply), ["dev-a", "dev-b"], "nothing was evicted");
}
