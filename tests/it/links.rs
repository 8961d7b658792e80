//! Linked addresses: a signed-in user proves a second address; a login through it is
//! the same user and the platform is asked to link the two (`linkto`).

use crate::common::local_issuer::{keys, LocalIssuer};
use crate::common::*;
use serde_json::{json, Value};

const ANN: &str = "18005550001";
const ANN_MAIL: &str = "ann@example.com";
const BOB: &str = "18005550002";

/// Sends a code to `email` and answers it.
async fn code_for_email(server: &TestServer, email: &str) -> String {
    assert_ok(server.call(json!({ "op": "login", "appid": APPID, "email": email })).await);
    server.sender.last_code(email)
}

fn email_login(email: &str, code: &str) -> Value {
    json!({ "op": "login", "appid": APPID, "email": email, "otp": code })
}

#[actix_web::test]
async fn a_linked_e_mail_logs_in_as_the_same_user_and_upstream_links_the_two() {
    let server = TestServer::start(&[]).await;
    let by_phone = server.log_in(ANN, Some("ann-phone")).await;
    assert_ok(server.call_op("profile", &by_phone, json!({ "status": "hiking" })).await);

    let code = code_for_email(&server, ANN_MAIL).await;
    let linked = assert_ok(server.call_op("link", &by_phone, json!({ "appid": APPID, "email": "Ann@Example.com", "otp": code })).await);
    assert_eq!(linked["linked"][0]["address"], ANN_MAIL, "{linked}");
    assert_eq!(linked["linked"][0]["kind"], "email");
    assert_eq!(server.scalar(&format!("SELECT count(*) FROM otp_challenges WHERE address = '{ANN_MAIL}'")), 0, "the code is used up");
    assert_eq!(server.upstream.issued(), 1, "linking mints no token");

    let code = code_for_email(&server, ANN_MAIL).await;
    let (status, reply) = server.call(email_login(ANN_MAIL, &code)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!((&reply["email"], &reply["status"]), (&json!(ANN_MAIL), &json!("hiking")), "Ann's own profile: {reply}");
    let useradd = server.upstream.received().last().unwrap().json();
    assert_eq!(useradd["user"]["address"], ANN_MAIL);
    assert_eq!(useradd["user"]["token"]["linkto"], ANN, "{useradd}");
    assert!(server.upstream.received()[0].json()["user"]["token"].get("linkto").is_none(), "a login by the own address names none");

    let by_mail = reply["token"].as_str().unwrap().to_string();
    assert_eq!(server.scalar("SELECT count(*) FROM users"), 1);
    let me = assert_ok(server.call_op("me", &by_mail, json!({})).await);
    assert_eq!((&me["profile"]["phone"], &me["linked"][0]["address"]), (&json!(ANN), &json!(ANN_MAIL)), "{me}");
    let devices = assert_ok(server.call_op("devices", &by_phone, json!({})).await);
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2, "{devices}");
    assert_eq!(devices["linked"][0]["address"], ANN_MAIL);
}

#[actix_web::test]
async fn an_address_of_another_account_or_the_own_one_is_not_linked() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(ANN, None).await;
    server.log_in(BOB, None).await;

    let code = server.start_login(BOB).await;
    let reply = server.call_op("link", &ann, json!({ "appid": APPID, "phone": BOB, "otp": code })).await;
    assert_error(&reply, 400, "BADPARAM");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("another account"), "{}", reply.1);
    let (status, _) = server.call(verify(BOB, &code)).await;
    assert_eq!(status, 200, "the refused link gave Bob's code back");

    let code = server.start_login(ANN).await;
    let reply = server.call_op("link", &ann, json!({ "appid": APPID, "phone": ANN, "otp": code })).await;
    assert!(reply.1["errmsg"].as_str().unwrap().contains("made with"), "{}", reply.1);

    let code = code_for_email(&server, ANN_MAIL).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_error(&server.call_op("link", &ann, json!({ "appid": APPID, "email": ANN_MAIL, "otp": wrong })).await, 401, "BADCODE");
    assert_error(&server.call_op("link", &ann, json!({ "appid": APPID, "email": ANN_MAIL })).await, 400, "BADPARAM");
    assert_error(&server.call_op("link", "not-a-token", json!({ "appid": APPID, "email": ANN_MAIL, "otp": code })).await, 401, "AUTHFAIL");
    assert_eq!(server.scalar("SELECT count(*) FROM linked_addresses"), 0);

    // Once linked to Ann, the address is no one else's to link.
    assert_ok(server.call_op("link", &ann, json!({ "appid": APPID, "email": ANN_MAIL, "otp": code })).await);
    let bob = server.log_in(BOB, None).await;
    let code = code_for_email(&server, ANN_MAIL).await;
    assert_error(&server.call_op("link", &bob, json!({ "appid": APPID, "email": ANN_MAIL, "otp": code })).await, 400, "BADPARAM");
}

#[actix_web::test]
async fn unlinking_ends_the_sessions_that_came_through_the_address() {
    let server = TestServer::start(&[]).await;
    let by_phone = server.log_in(ANN, None).await;
    let code = code_for_email(&server, ANN_MAIL).await;
    assert_ok(server.call_op("link", &by_phone, json!({ "appid": APPID, "email": ANN_MAIL, "otp": code })).await);
    let code = code_for_email(&server, ANN_MAIL).await;
    let by_mail = server.call(email_login(ANN_MAIL, &code)).await.1["token"].as_str().unwrap().to_string();

    let own = server.call_op("unlink", &by_mail, json!({ "phone": ANN })).await;
    assert!(own.1["errmsg"].as_str().unwrap().contains("cannot be unlinked"), "{}", own.1);
    assert_error(&server.call_op("unlink", &by_phone, json!({ "email": "nobody@example.com" })).await, 400, "BADPARAM");
    assert_error(&server.call_op("unlink", &by_phone, json!({})).await, 400, "BADPARAM");

    let reply = assert_ok(server.call_op("unlink", &by_phone, json!({ "email": ANN_MAIL })).await);
    assert_eq!((&reply["ended"], &reply["linked"]), (&json!(1), &json!([])), "{reply}");
    assert_error(&server.call_op("me", &by_mail, json!({})).await, 401, "AUTHFAIL");
    assert_ok(server.call_op("me", &by_phone, json!({})).await);
    assert!(eventually(30, async || server.upstream.userdel_calls().len() == 1).await, "the platform is told");
    assert_eq!(server.upstream.userdel_calls()[0]["user"], json!({ "uid": "1002", "address": ANN_MAIL }));

    // The address is free again: a login through it makes a user of its own.
    let code = code_for_email(&server, ANN_MAIL).await;
    assert_eq!(server.call(email_login(ANN_MAIL, &code)).await.0, 200);
    assert!(server.upstream.received().last().unwrap().json()["user"]["token"].get("linkto").is_none());
    assert_eq!(server.scalar("SELECT count(*) FROM users"), 2);
    let events =
        server.column(&format!("SELECT event FROM audit_events WHERE address_hash = {} ORDER BY id", server.state.db.phone_hash(ANN)));
    assert_eq!(events, ["login", "address_linked", "address_unlinked"]);
}

#[actix_web::test]
async fn an_id_token_links_its_address_and_deleting_the_account_deletes_every_platform_user() {
    let [key, ..] = keys();
    let issuer = LocalIssuer::start(&[key]);
    let server = TestServer::start_on_manual_clock(&[("OIDC_PROVIDERS", &issuer.provider_setting("email"))]).await;
    let by_phone = server.log_in(ANN, None).await;
    let id_token = key.sign(&issuer.claims(ANN_MAIL, server.clock.now()));
    let linked = assert_ok(server.call_op("link", &by_phone, json!({ "appid": APPID, "provider": "local", "id_token": id_token })).await);
    assert_eq!(linked["linked"][0]["address"], ANN_MAIL);

    let (status, reply) =
        server.call(json!({ "op": "login", "appid": APPID, "provider": "local", "id_token": key.sign(&issuer.claims(ANN_MAIL, server.clock.now())) })).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(server.upstream.received().last().unwrap().json()["user"]["token"]["linkto"], ANN);
    assert_eq!(server.scalar("SELECT count(*) FROM users"), 1);

    // The operator finds the account by its linked address.
    let operator = otpgate::service::operators::Operator::from_client_ip("127.0.0.1".into());
    let user = server
        .state
        .operators
        .user(&operator, otpgate::store::operators::UserKey::Address(ANN_MAIL.into()))
        .await
        .unwrap()
        .expect("found by the linked address");
    assert_eq!((user.user.address.as_str(), user.linked[0].address.as_str()), (ANN, ANN_MAIL));

    // A fresh proof of the linked address deletes the account too.
    let fresh = key.sign(&issuer.claims(ANN_MAIL, server.clock.now()));
    assert_ok(server.call_op("deleteaccount", &by_phone, json!({ "appid": APPID, "provider": "local", "id_token": fresh })).await);
    for table in ["users", "sessions", "linked_addresses"] {
        assert_eq!(server.scalar(&format!("SELECT count(*) FROM {table}")), 0, "{table}");
    }
    assert!(eventually(30, async || server.upstream.userdel_calls().len() == 2).await, "both platform users are deleted");
    let mut deleted: Vec<Value> = server.upstream.userdel_calls().iter().map(|call| call["user"]["address"].clone()).collect();
    deleted.sort_by_key(Value::to_string);
    assert_eq!(deleted, [json!(ANN), json!(ANN_MAIL)]);
    issuer.stop().await;
}
