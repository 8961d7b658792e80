//! Defences against SMS pumping: phone validation and country policy, the client
//! IP behind proxies, the extra limiters, the global SMS budget and the CAPTCHA.

use crate::common::*;
use serde_json::{json, Value};

const US_MOBILE: &str = "12125550123";
const UK_MOBILE: &str = "447400123456";

/// POSTs a login start for `phone` with extra headers.
async fn start_with_headers(server: &TestServer, phone: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = server.client().post(server.api()).json(&login(phone));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    server.send(request).await
}

#[actix_web::test]
async fn non_mobile_and_invalid_numbers_are_refused_when_mobile_only() {
    // A sender that delivers (the log sender sends nothing, and lets such numbers through).
    let real_sender = [("OTP_SENDER", "http"), ("SMS_HTTP_URL", "http://127.0.0.1:9/send")];
    let server = TestServer::start(&[("PHONE_MOBILE_ONLY", "true"), real_sender[0], real_sender[1]]).await;
    for (phone, what) in [("+1 800 555 1234", "toll-free"), ("+44 20 7946 0958", "fixed line"), ("+44 99 1234 5678", "no such range")] {
        assert_error(&server.call(login(phone)).await, 400, "BADPHONE");
        assert_eq!(server.sender.count(), 0, "{what}");
    }
    // Mobile numbers work and keep the stored/returned E.164-digits form.
    let code = server.start_login(UK_MOBILE).await;
    let (status, reply) = server.call(verify("+44 7400 123456", &code)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["phone"], UK_MOBILE);
}

#[actix_web::test]
async fn national_format_uses_the_default_region() {
    let server = TestServer::start(&[("DEFAULT_REGION", "GB")]).await;
    let (status, reply) = server.call(login("07400 123456")).await;
    assert_eq!(status, 200, "{reply}");
    let code = server.sender.last_code(UK_MOBILE);
    assert_eq!(server.call(verify("+447400123456", &code)).await.0, 200);
}

#[actix_web::test]
async fn countries_can_be_allowed_or_blocked() {
    let server = TestServer::start(&[("BLOCKED_COUNTRIES", "GB")]).await;
    let reply = server.call(login(UK_MOBILE)).await;
    assert_error(&reply, 400, "BADPHONE");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("not served"), "{}", reply.1);
    assert_eq!(server.call(login(US_MOBILE)).await.0, 200);

    let server = TestServer::start(&[("ALLOWED_COUNTRIES", "44")]).await;
    assert_error(&server.call(login(US_MOBILE)).await, 400, "BADPHONE");
    assert_eq!(server.call(login(UK_MOBILE)).await.0, 200);
    assert_eq!(server.sender.count(), 1);
}

#[actix_web::test]
async fn spoofed_forwarded_headers_from_an_untrusted_peer_change_nothing() {
    let server = TestServer::start(&[("LIMIT_START_PER_IP_PER_HOUR", "1")]).await;
    assert_eq!(start_with_headers(&server, "18005550001", &[("x-forwarded-for", "198.51.100.1")]).await.0, 200);
    let reply = start_with_headers(&server, "18005550002", &[("x-forwarded-for", "198.51.100.2"), ("forwarded", "for=198.51.100.3")]).await;
    assert_error(&reply, 429, "RATELIMIT");
    assert!(reply.1["retry_after"].as_u64().is_some_and(|s| s > 0));
}

#[actix_web::test]
async fn a_trusted_proxy_passes_the_client_address() {
    let server = TestServer::start(&[("LIMIT_START_PER_IP_PER_HOUR", "1"), ("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    assert_eq!(start_with_headers(&server, "18005550001", &[("x-forwarded-for", "198.51.100.1")]).await.0, 200);
    assert_eq!(start_with_headers(&server, "18005550002", &[("x-forwarded-for", "198.51.100.2")]).await.0, 200);
    assert_eq!(start_with_headers(&server, "18005550003", &[("x-forwarded-for", "[2001:db8::7]:443")]).await.0, 200);
    let reply = start_with_headers(&server, "18005550009", &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_error(&reply, 429, "RATELIMIT");
    // 127.0.0.2 is not trusted: its headers are ignored and its own address counts.
    let untrusted = reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    for (phone, forwarded_for, status) in [("18005551234", "198.51.100.20", 200), ("18005550000", "198.51.100.21", 429)] {
        let request = untrusted.post(server.api()).json(&login(phone)).header("x-forwarded-for", forwarded_for);
        assert_eq!(server.send(request).await.0, status, "{forwarded_for}");
    }
}

/// POSTs a login start for `phone` as nginx passes on one from `client` who wrote
/// `X-Forwarded-For: {spoofed}` and `Forwarded: for={spoofed}`: it appends to the first
/// and passes the second on unchanged.
async fn start_through_nginx(server: &TestServer, phone: &str, spoofed: &str, client: &str) -> (u16, Value) {
    let (x_forwarded_for, forwarded) = (format!("{spoofed}, {client}"), format!("for={spoofed}"));
    start_with_headers(server, phone, &[("x-forwarded-for", &x_forwarded_for), ("forwarded", &forwarded)]).await
}

#[actix_web::test]
async fn a_client_behind_a_trusted_proxy_cannot_choose_its_address() {
    // The test client plays the proxy at 127.0.0.1.
    let server = TestServer::start(&[("LIMIT_START_PER_IP_PER_HOUR", "3"), ("TRUSTED_PROXIES", "127.0.0.1")]).await;
    for (phone, spoofed) in [("18005550001", "203.0.113.1"), ("18005550002", "203.0.113.2"), ("18005550003", "203.0.113.3")] {
        assert_eq!(start_through_nginx(&server, phone, spoofed, "198.51.100.50").await.0, 200, "{spoofed}");
    }
    // A fourth address of its choosing: still counted as 198.51.100.50, which has spent its 3.
    assert_error(&start_through_nginx(&server, "18005550004", "203.0.113.4", "198.51.100.50").await, 429, "RATELIMIT");
    assert_eq!(start_through_nginx(&server, "18005550005", "203.0.113.4", "198.51.100.51").await.0, 200, "another client");
}

#[actix_web::test]
async fn a_proxy_that_writes_forwarded_is_believed_in_that_header_only() {
    let server =
        TestServer::start(&[("LIMIT_START_PER_IP_PER_HOUR", "2"), ("TRUSTED_PROXIES", "127.0.0.1"), ("TRUSTED_PROXY_HEADER", "Forwarded")])
            .await;
    for (phone, spoofed, status) in
        [("18005550001", "203.0.113.1", 200), ("18005550002", "203.0.113.2", 200), ("18005550003", "203.0.113.3", 429)]
    {
        // This proxy appends to Forwarded; X-Forwarded-For is the client's own.
        let forwarded = format!("for={spoofed}, for=\"198.51.100.50:4711\"");
        let reply = start_with_headers(&server, phone, &[("forwarded", &forwarded), ("x-forwarded-for", spoofed)]).await;
        assert_eq!(reply.0, status, "{spoofed}: {}", reply.1);
    }
}

#[actix_web::test]
async fn starts_are_limited_per_network() {
    let server = TestServer::start(&[("LIMIT_START_PER_SUBNET_PER_HOUR", "2")]).await;
    assert_eq!(server.call_from("127.0.0.1", login("18005550001")).await.0, 200);
    assert_eq!(server.call_from("127.0.0.2", login("18005550002")).await.0, 200);
    assert_error(&server.call_from("127.0.0.3", login("18005550003")).await, 429, "RATELIMIT");
    assert_eq!(server.call_from("127.0.1.1", login("18005550003")).await.0, 200, "another /24");
}

#[actix_web::test]
async fn starts_are_limited_per_calling_code() {
    let server = TestServer::start(&[("LIMIT_START_PER_CALLING_CODE_PER_HOUR", "2")]).await;
    assert_eq!(server.call(login("18005550001")).await.0, 200);
    assert_eq!(server.call(login(US_MOBILE)).await.0, 200);
    assert_error(&server.call(login("18005550002")).await, 429, "RATELIMIT");
    assert_eq!(server.call(login(UK_MOBILE)).await.0, 200, "another calling code");
    assert_eq!(server.sender.count(), 3);
}

#[actix_web::test]
async fn the_global_budget_stops_all_sms() {
    let no_shares = [("SMS_BUDGET_NETWORK_SHARE", "0"), ("SMS_BUDGET_COUNTRY_SHARE", "0")];
    let server = TestServer::start(&[&[("SMS_BUDGET_PER_HOUR", "2"), ("OTP_RESEND_SECS", "60")][..], &no_shares].concat()).await;
    assert_eq!(server.call(login("18005550001")).await.0, 200);
    // A resend refused by the resend window sends nothing, so it spends nothing.
    let resend = server.call(login("18005550001")).await;
    assert_error(&resend, 429, "RATELIMIT");
    assert!(resend.1["errmsg"].as_str().unwrap().contains("moments ago"), "{}", resend.1);
    assert_eq!(server.call(login(UK_MOBILE)).await.0, 200);
    for phone in ["18005550002", US_MOBILE, "18005550003"] {
        let reply = server.call(login(phone)).await;
        assert_error(&reply, 429, "RATELIMIT");
        assert!(reply.1["retry_after"].as_u64().is_some_and(|s| s > 0));
    }
    assert_eq!(server.sender.count(), 2, "nothing was sent past the budget");
    assert_eq!(server.logs().matches("SMS_BUDGET_PER_HOUR is spent").count(), 1, "one ERROR, not one per request");
    // E-mail is not SMS: it still works.
    assert_eq!(server.call(json!({ "op": "login", "email": "ann@example.com", "appid": APPID })).await.0, 200);
}

#[actix_web::test]
async fn one_client_network_cannot_spend_the_whole_budget() {
    let env = [("SMS_BUDGET_PER_HOUR", "10"), ("SMS_BUDGET_NETWORK_SHARE", "20"), ("SMS_BUDGET_COUNTRY_SHARE", "0")];
    let server = TestServer::start(&env).await;
    assert_eq!(server.call_from("127.0.0.1", login("18005550001")).await.0, 200);
    assert_eq!(server.call_from("127.0.0.2", login("18005550002")).await.0, 200);
    for (ip, phone) in [("127.0.0.3", "18005550003"), ("127.0.0.4", UK_MOBILE)] {
        let reply = server.call_from(ip, login(phone)).await;
        assert_error(&reply, 429, "RATELIMIT");
        assert!(reply.1["retry_after"].as_u64().is_some_and(|s| s > 0), "{}", reply.1);
    }
    assert_eq!(server.sender.count(), 2, "the network's share is 2 of 10");
    assert_eq!(server.call_from("127.0.1.1", login("18005550003")).await.0, 200, "another /24 still gets codes");
    assert_eq!(server.call_from("127.0.2.1", login(UK_MOBILE)).await.0, 200);
    assert_eq!(server.sender.count(), 4);
}

#[actix_web::test]
async fn one_country_cannot_spend_the_whole_budget_but_the_home_country_may() {
    let env = [("SMS_BUDGET_PER_HOUR", "10"), ("SMS_BUDGET_COUNTRY_SHARE", "20"), ("SMS_BUDGET_NETWORK_SHARE", "0")];
    let server = TestServer::start(&env).await;
    assert_eq!(server.call(login("18005550001")).await.0, 200);
    assert_eq!(server.call(login(US_MOBILE)).await.0, 200);
    let reply = server.call(login("18005550002")).await;
    assert_error(&reply, 429, "RATELIMIT");
    assert!(reply.1["retry_after"].as_u64().is_some_and(|s| s > 0), "{}", reply.1);
    assert_eq!(server.call(login(UK_MOBILE)).await.0, 200, "another country still gets codes");
    assert_eq!(server.sender.count(), 3);

    let server = TestServer::start(&[&env[..], &[("SMS_BUDGET_HOME_COUNTRIES", "US")]].concat()).await;
    for n in 0..5 {
        assert_eq!(server.call(login(&format!("1800555001{n}"))).await.0, 200, "a home country has no share");
    }
    assert_eq!(server.call(login(UK_MOBILE)).await.0, 200);
    assert_eq!(server.call(login("447400123457")).await.0, 200);
    assert_error(&server.call(login("447400123458")).await, 429, "RATELIMIT");
}

#[actix_web::test]
async fn satellite_numbers_are_refused_unless_allowed() {
    let server = TestServer::start(&[]).await;
    for phone in ["881612345678", "870301234567", "8823421234"] {
        let reply = server.call(login(phone)).await;
        assert_error(&reply, 400, "BADPHONE");
        assert!(reply.1["errmsg"].as_str().unwrap().contains("satellite"), "{}", reply.1);
    }
    assert_eq!(server.sender.count(), 0);
    assert_eq!(server.call(login(UK_MOBILE)).await.0, 200, "the rest of the world is served");

    let server = TestServer::start(&[("PHONE_ALLOW_SATELLITE", "true")]).await;
    assert_eq!(server.call(login("881612345678")).await.0, 200);
    assert_eq!(server.sender.last_code("881612345678").len(), 6);
}

#[actix_web::test]
async fn captcha_is_verified_on_login_start() {
    let siteverify = FakeUpstream::start();
    siteverify.set_mode(Mode::Reply(200, r#"{"success":true}"#.into()));
    let url = siteverify.url();
    let server = TestServer::start_with(
        &[("CAPTCHA_PROVIDER", "turnstile"), ("CAPTCHA_SECRET", "captcha-secret"), ("CAPTCHA_VERIFY_URL", &url)],
        siteverify.clone(),
        std::sync::Arc::new(tempfile::tempdir().unwrap()),
        Delivery::Recording,
    )
    .await;

    assert_error(&server.call(login("18005550001")).await, 400, "CAPTCHA");
    assert!(siteverify.received().is_empty(), "no token, no call");

    let mut request = login("18005550001");
    request["captcha_token"] = "widget-token".into();
    assert_eq!(server.call(request.clone()).await.0, 200);
    let form = siteverify.received()[0].form();
    assert_eq!(
        (form["secret"].as_str(), form["response"].as_str(), form["remoteip"].as_str()),
        ("captcha-secret", "widget-token", "127.0.0.1")
    );

    siteverify.set_mode(Mode::Reply(200, r#"{"success":false,"error-codes":["invalid-input-response"]}"#.into()));
    assert_error(&server.call(request).await, 400, "CAPTCHA");
    assert_eq!(server.sender.count(), 1);
    // Verifying a code needs no CAPTCHA.
    let code = server.sender.last_code("18005550001");
    siteverify.set_mode(Mode::Useradd);
    assert_eq!(server.call(verify("18005550001", &code)).await.0, 200);
}

/// Refusals read the same for a registered user's phone and for an unknown one.
#[actix_web::test]
async fn refusals_do_not_reveal_registered_users() {
    let server = TestServer::start(&[("LIMIT_START_PER_PHONE_PER_HOUR", "1"), ("BLOCKED_COUNTRIES", "44")]).await;
    let registered = "18005550001";
    let code = server.start_login(registered).await;
    assert_eq!(server.call(verify(registered, &code)).await.0, 200);

    let unknown = "18005550002";
    assert_eq!(server.call(login(unknown)).await.0, 200);
    let without_ts = |(status, mut reply): (u16, Value)| {
        reply.as_object_mut().unwrap().remove("ts");
        (status, reply["error"].clone(), reply["errmsg"].clone())
    };
    let limited_registered = without_ts(server.call(login(registered)).await);
    let limited_unknown = without_ts(server.call(login(unknown)).await);
    assert_eq!(limited_registered.1, "RATELIMIT");
    assert_eq!(limited_registered, limited_unknown);
    let blocked = without_ts(server.call(login(UK_MOBILE)).await);
    assert_eq!(blocked.1, "BADPHONE");
}

#[actix_web::test]
async fn test_numbers_bypass_the_sms_policy() {
    let server =
        TestServer::start(&[("PHONE_MOBILE_ONLY", "true"), ("ALLOWED_COUNTRIES", "GB"), ("TEST_OTPS", "18005550000:123456")]).await;
    assert_eq!(server.call(login("+1 800 555 0000")).await.0, 200);
    assert_eq!(server.call(verify("18005550000", "123456")).await.0, 200);
    assert_eq!(server.sender.count(), 0);
    assert_error(&server.call(login("18005550001")).await, 400, "BADPHONE");
}
