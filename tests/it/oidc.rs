//! Sign-in with an OpenID Connect ID token, against a local issuer: what is accepted,
//! what is refused and why, and how the issuer's keys are fetched and rotated.

use crate::common::local_issuer::{keys, LocalIssuer, CLIENT_ID};
use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

const EMAIL: &str = "ann@example.com";

fn id_token_login(id_token: &str) -> Value {
    json!({ "op": "login", "appid": APPID, "name": "Ann", "provider": "local", "id_token": id_token })
}

async fn server_for(issuer: &LocalIssuer, claim: &str) -> TestServer {
    TestServer::start_on_manual_clock(&[("OIDC_PROVIDERS", &issuer.provider_setting(claim))]).await
}

#[actix_web::test]
async fn an_id_token_from_the_issuer_signs_in_and_gets_the_upstream_token() {
    let [key, ..] = keys();
    let issuer = LocalIssuer::start(&[key]);
    let server = server_for(&issuer, "email").await;
    let claims = issuer.claims("Ann@Example.com", server.clock.now());

    let (status, reply) = server.call(id_token_login(&key.sign(&claims))).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!((&reply["token"], &reply["email"], &reply["uid"]), (&json!("usertoken-1"), &json!(EMAIL), &json!(1001)));
    assert_eq!(
        server.upstream.received()[0].json()["user"],
        json!({ "address": EMAIL, "name": "Ann", "token": { "appid": APPID, "expiry": 525600 } }),
        "the verified e-mail address is the address upstream mints the token for"
    );
    assert!(server.sender.attempted.lock().unwrap().is_empty(), "no code is sent for an ID token");
    let token = reply["token"].as_str().unwrap();
    assert_eq!(assert_ok(server.call_op("me", token, json!({})).await).get("result"), Some(&json!(true)));

    // The same address by an e-mail code is the same user.
    assert_ok(server.call(json!({ "op": "login", "appid": APPID, "email": EMAIL })).await);
    let code = server.sender.last_code(EMAIL);
    let (status, by_code) = server.call(json!({ "op": "login", "appid": APPID, "email": EMAIL, "otp": code })).await;
    assert_eq!(status, 200, "{by_code}");
    assert_eq!(server.scalar("SELECT count(*) FROM users"), 1);
    assert_eq!(server.scalar("SELECT count(*) FROM sessions"), 2);
    assert_eq!(server.scalar("SELECT count(*) FROM audit_events WHERE event = 'login'"), 2);
    assert!(!server.logs().contains(&key.sign(&claims)[..40]), "the ID token is not logged");
    issuer.stop().await;
}

#[actix_web::test]
async fn an_rs256_token_as_google_and_apple_sign_them_signs_in_and_its_key_signs_for_no_other() {
    let [es256, _, _, rs256] = keys();
    let issuer = LocalIssuer::start(&[rs256, es256]);
    let server = server_for(&issuer, "email").await;
    let claims = issuer.claims(EMAIL, server.clock.now());
    let (status, reply) = server.call(id_token_login(&rs256.sign(&claims))).await;
    assert_eq!((status, &reply["email"]), (200, &json!(EMAIL)), "{reply}");

    // A token that names the RSA key but claims another algorithm is refused.
    let reply = server.call(id_token_login(&es256.sign_as(rs256.kid, &claims))).await;
    assert_error(&reply, 401, "BADIDTOKEN");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("not its key's"), "{}", reply.1);
    issuer.stop().await;
}

#[actix_web::test]
async fn id_tokens_that_do_not_verify_are_refused_and_sign_no_one_in() {
    let [key, _, attacker, _] = keys();
    let issuer = LocalIssuer::start(&[key]);
    let server = server_for(&issuer, "email").await;
    let now = server.clock.now();
    let claims = issuer.claims(EMAIL, now);
    let with = |name: &str, value: Value| {
        let mut claims = claims.clone();
        claims[name] = value;
        claims
    };
    let without = |name: &str| {
        let mut claims = claims.clone();
        claims.as_object_mut().unwrap().remove(name);
        claims
    };

    let cases = [
        ("a signature by another key under the issuer's key id", attacker.sign_as(key.kid, &claims), "signature does not verify"),
        ("a key the issuer does not publish", attacker.sign(&claims), "does not publish"),
        ("another app's audience", key.sign(&with("aud", json!("com.other.app"))), "another app"),
        ("issued to another app", key.sign(&with("azp", json!("com.other.app"))), "authorized party, azp"),
        ("another issuer", key.sign(&with("iss", json!("https://accounts.example.net"))), "another issuer"),
        ("an expired token", key.sign(&with("exp", json!(now - 61))), "expired"),
        ("a token issued in the future", key.sign(&with("iat", json!(now + 3600))), "not valid yet"),
        ("no expiry", key.sign(&without("exp")), "lacks"),
        ("an unverified e-mail", key.sign(&with("email_verified", json!(false))), "not verified"),
        ("Apple's unverified e-mail", key.sign(&with("email_verified", json!("false"))), "not verified"),
        ("no word on the e-mail's verification", key.sign(&without("email_verified")), "no email_verified claim"),
        ("no e-mail", key.sign(&without("email")), "no e-mail"),
        ("not a JWT", "not-a-token".to_string(), "not a signed JWT"),
    ];
    for (case, id_token, why) in cases {
        let reply = server.call(id_token_login(&id_token)).await;
        assert_error(&reply, 401, "BADIDTOKEN");
        let message = reply.1["errmsg"].as_str().unwrap();
        assert!(message.contains(why), "{case}: {message}");
    }

    // A nonce the app sent must be the token's.
    let mut request = id_token_login(&key.sign(&with("nonce", json!("n-1"))));
    request["nonce"] = json!("n-2");
    assert_error(&server.call(request.clone()).await, 401, "BADIDTOKEN");
    request["nonce"] = json!("n-1");
    assert_eq!(server.call(request).await.0, 200, "the right nonce signs in");

    assert_eq!(server.upstream.issued(), 1, "only the last token reached upstream");
    assert_eq!(server.scalar("SELECT count(*) FROM users"), 1);
    issuer.stop().await;
}

#[actix_web::test]
async fn an_issuer_silent_on_email_verified_cannot_sign_in_as_an_e_mail_account_unless_trusted() {
    let [key, ..] = keys();
    let issuer = LocalIssuer::start(&[key]);
    let server = server_for(&issuer, "email").await;
    // Ann's account, made with an e-mail code.
    assert_ok(server.call(json!({ "op": "login", "appid": APPID, "email": EMAIL })).await);
    let code = server.sender.last_code(EMAIL);
    assert_eq!(server.call(json!({ "op": "login", "appid": APPID, "email": EMAIL, "otp": code })).await.0, 200);

    // An issuer that lets its users set any e-mail address leaves out email_verified.
    let mut claims = issuer.claims(EMAIL, server.clock.now());
    claims.as_object_mut().unwrap().remove("email_verified");
    let reply = server.call(id_token_login(&key.sign(&claims))).await;
    assert_error(&reply, 401, "BADIDTOKEN");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("no email_verified claim"), "{}", reply.1);
    assert_eq!(server.upstream.issued(), 1, "only Ann's code login reached upstream");
    assert_eq!(server.scalar("SELECT count(*) FROM sessions"), 1);

    // An operator who knows the issuer verifies every address it puts in a token opts in.
    let trusting = TestServer::start_on_manual_clock(&[(
        "OIDC_PROVIDERS",
        &issuer.provider_setting_with("email", json!({ "email_verified_if_absent": true })),
    )])
    .await;
    let mut claims = issuer.claims(EMAIL, trusting.clock.now());
    claims.as_object_mut().unwrap().remove("email_verified");
    let (status, reply) = trusting.call(id_token_login(&key.sign(&claims))).await;
    assert_eq!((status, &reply["email"]), (200, &json!(EMAIL)), "{reply}");
    for unverified in [json!(false), json!("false")] {
        claims["email_verified"] = unverified;
        let reply = trusting.call(id_token_login(&key.sign(&claims))).await;
        assert_error(&reply, 401, "BADIDTOKEN");
        assert!(reply.1["errmsg"].as_str().unwrap().contains("not verified"), "a stated false is refused still: {}", reply.1);
    }
    claims["email_verified"] = json!("true");
    assert_eq!(trusting.call(id_token_login(&key.sign(&claims))).await.0, 200, "Apple's string form of true");
    assert_eq!(trusting.upstream.issued(), 2);
    issuer.stop().await;
}

#[actix_web::test]
async fn a_token_issued_to_another_client_is_refused_even_when_the_app_is_among_its_audience() {
    let [key, ..] = keys();
    let issuer = LocalIssuer::start(&[key]);
    let server = server_for(&issuer, "email").await;
    let mut claims = issuer.claims(EMAIL, server.clock.now());
    claims["aud"] = json!([CLIENT_ID, "com.other.app"]);
    claims["azp"] = json!("com.other.app");
    let reply = server.call(id_token_login(&key.sign(&claims))).await;
    assert_error(&reply, 401, "BADIDTOKEN");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("issued to another app"), "{}", reply.1);
    assert_eq!(server.upstream.issued(), 0);

    // Issued to one of the provider's client ids (Google names the Android client there).
    for azp in ["another.client", CLIENT_ID] {
        claims["azp"] = json!(azp);
        let (status, reply) = server.call(id_token_login(&key.sign(&claims))).await;
        assert_eq!(status, 200, "azp {azp}: {reply}");
    }
    issuer.stop().await;
}

#[actix_web::test]
async fn deleting_an_account_takes_an_id_token_issued_within_five_minutes() {
    let [key, ..] = keys();
    let issuer = LocalIssuer::start(&[key]);
    let server = server_for(&issuer, "sub").await;
    let (status, reply) = server.call(id_token_login(&key.sign(&issuer.claims(EMAIL, server.clock.now())))).await;
    assert_eq!(status, 200, "{reply}");
    let token = reply["token"].as_str().unwrap().to_string();
    let delete =
        |id_token: String| server.call_op("deleteaccount", &token, json!({ "appid": APPID, "provider": "local", "id_token": id_token }));

    // A token an hour from expiring, but issued five minutes and a second ago, as one
    // caught on its way to an earlier sign-in would be.
    let earlier = key.sign(&issuer.claims(EMAIL, server.clock.now()));
    server.clock.advance(Duration::from_secs(5 * 60 + 1));
    let reply = delete(earlier.clone()).await;
    assert_error(&reply, 401, "BADIDTOKEN");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("not fresh"), "{}", reply.1);
    assert_eq!(server.call(id_token_login(&earlier)).await.0, 200, "it still signs in, as its issuer means it to");

    let mut undated = issuer.claims(EMAIL, server.clock.now());
    undated.as_object_mut().unwrap().remove("iat");
    let reply = delete(key.sign(&undated)).await;
    assert_error(&reply, 401, "BADIDTOKEN");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("not fresh: it does not say when"), "{}", reply.1);
    assert_eq!(server.scalar("SELECT count(*) FROM users"), 1, "the account stays");
    assert_eq!(assert_ok(server.call_op("me", &token, json!({})).await)["result"], true);

    let fresh = key.sign(&issuer.claims(EMAIL, server.clock.now()));
    server.clock.advance(Duration::from_secs(5 * 60));
    assert_ok(delete(fresh).await);
    assert_eq!(server.scalar("SELECT count(*) FROM users"), 0);
    issuer.stop().await;
}

#[actix_web::test]
async fn expiry_leaves_a_minute_of_clock_skew() {
    let [key, ..] = keys();
    let issuer = LocalIssuer::start(&[key]);
    let server = server_for(&issuer, "email").await;
    let mut claims = issuer.claims(EMAIL, server.clock.now());
    claims["exp"] = json!(server.clock.now() - 30);
    assert_eq!(server.call(id_token_login(&key.sign(&claims))).await.0, 200, "30 s past expiry is within the leeway");
    server.clock.advance(Duration::from_secs(31));
    assert_error(&server.call(id_token_login(&key.sign(&claims))).await, 401, "BADIDTOKEN");
    issuer.stop().await;
}

#[actix_web::test]
async fn rotated_keys_are_fetched_when_a_token_names_one_and_not_more_than_once_a_minute() {
    let [old, new, ..] = keys();
    let issuer = LocalIssuer::start(&[old]);
    let server = server_for(&issuer, "email").await;

    assert_eq!(server.call(id_token_login(&old.sign(&issuer.claims(EMAIL, server.clock.now())))).await.0, 200);
    assert_eq!(server.call(id_token_login(&old.sign(&issuer.claims(EMAIL, server.clock.now())))).await.0, 200);
    assert_eq!(issuer.key_fetches(), 1, "the keys are cached");

    // The issuer rotates: the new key only. Made-up key ids must not make the server
    // fetch at will, so a fetch moments after the last one waits a minute.
    issuer.publish(&[new]);
    let reply = server.call(id_token_login(&new.sign(&issuer.claims(EMAIL, server.clock.now())))).await;
    assert_error(&reply, 401, "BADIDTOKEN");
    assert_eq!(issuer.key_fetches(), 1);

    server.clock.advance(Duration::from_secs(61));
    let reply = server.call(id_token_login(&new.sign(&issuer.claims(EMAIL, server.clock.now())))).await;
    assert_eq!(reply.0, 200, "the unknown key id fetched the keys again: {}", reply.1);
    assert_eq!(issuer.key_fetches(), 2);

    let reply = server.call(id_token_login(&old.sign(&issuer.claims(EMAIL, server.clock.now())))).await;
    assert_error(&reply, 401, "BADIDTOKEN");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("does not publish"), "the withdrawn key no longer verifies");
    issuer.stop().await;
}

#[actix_web::test]
async fn an_issuer_that_fails_is_asked_again_after_ten_seconds_not_by_every_sign_in() {
    let [key, ..] = keys();
    let issuer = LocalIssuer::start(&[key]);
    issuer.fail_keys(true);
    let server = server_for(&issuer, "email").await;
    let id_token = || key.sign(&issuer.claims(EMAIL, server.clock.now()));
    assert_error(&server.call(id_token_login(&id_token())).await, 502, "IDPROVIDER");
    assert_error(&server.call(id_token_login(&id_token())).await, 502, "IDPROVIDER");
    assert_eq!(issuer.key_fetches(), 1, "the second sign-in was answered without asking the issuer");

    issuer.fail_keys(false);
    server.clock.advance(Duration::from_secs(9));
    assert_error(&server.call(id_token_login(&id_token())).await, 502, "IDPROVIDER");
    server.clock.advance(Duration::from_secs(1));
    let (status, reply) = server.call(id_token_login(&id_token())).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(issuer.key_fetches(), 2);
    issuer.stop().await;
}

#[actix_web::test]
async fn a_provider_by_subject_signs_in_an_account_without_an_e_mail_address() {
    let [key, ..] = keys();
    let issuer = LocalIssuer::start(&[key]);
    let server = server_for(&issuer, "sub").await;
    let mut claims = issuer.claims(EMAIL, server.clock.now());
    claims.as_object_mut().unwrap().remove("email");

    let (status, reply) = server.call(id_token_login(&key.sign(&claims))).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["account"], "local:248289761001");
    assert_eq!(server.upstream.received()[0].json()["user"]["address"], "local:248289761001");
    let token = reply["token"].as_str().unwrap().to_string();
    let me = assert_ok(server.call_op("me", &token, json!({})).await);
    assert_eq!(me["result"], true, "{me}");

    // Deleting the account takes a fresh ID token, since no code can reach it.
    let reply = server.call_op("deleteaccount", &token, json!({ "appid": APPID, "otp": "123456" })).await;
    assert_error(&reply, 401, "BADCODE");
    let fresh = key.sign(&claims);
    let reply = server.call_op("deleteaccount", &token, json!({ "appid": APPID, "provider": "local", "id_token": fresh })).await;
    assert_ok(reply);
    assert_eq!(server.scalar("SELECT count(*) FROM users"), 0);
    issuer.stop().await;
}

#[actix_web::test]
async fn an_unreachable_issuer_or_unknown_provider_is_told_apart_from_a_bad_token() {
    let [key, ..] = keys();
    let issuer = LocalIssuer::start(&[key]);
    let server = server_for(&issuer, "email").await;
    let id_token = key.sign(&issuer.claims(EMAIL, server.clock.now()));
    issuer.stop().await;
    assert_error(&server.call(id_token_login(&id_token)).await, 502, "IDPROVIDER");

    let mut request = id_token_login(&id_token);
    request["provider"] = json!("myspace");
    let reply = server.call(request).await;
    assert_error(&reply, 400, "BADPARAM");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("one of: local"), "{}", reply.1);

    let plain = TestServer::start(&[]).await;
    let reply = plain.call(id_token_login(&id_token)).await;
    assert_error(&reply, 400, "BADPARAM");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("OIDC_PROVIDERS"), "{}", reply.1);
    assert_eq!(server.upstream.issued() + plain.upstream.issued(), 0);
}
