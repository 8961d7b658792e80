//! The production SMS providers and the webhook sender, each against a local fake
//! that checks the exact request it receives, and their error mapping.

use crate::common::*;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

const PHONE: &str = "18005551234";

/// A service whose configured sender talks to `provider`.
async fn server_with(env: &[(&str, &str)]) -> TestServer {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    TestServer::start_with(env, FakeUpstream::start(), dir, Delivery::Configured).await
}

/// A fake provider answering `status` and `body`, and its base URL.
fn provider(status: u16, body: &str) -> (Arc<FakeUpstream>, String) {
    let provider = FakeUpstream::start();
    provider.set_mode(Mode::Reply(status, body.into()));
    let base = format!("http://{}", provider.addr);
    (provider, base)
}

/// The code inside a message rendered from "{appname}: {otp} ({minutes} min)".
fn code_in(text: &str) -> String {
    let code =
        text.strip_prefix("Example: ").and_then(|t| t.strip_suffix(" (5 min)")).unwrap_or_else(|| panic!("template not rendered: {text}"));
    code.to_string()
}

#[actix_web::test]
async fn twilio_request_and_login() {
    let (twilio, base) = provider(201, r#"{"sid":"SM1","status":"queued"}"#);
    let server = server_with(&[
        ("OTP_SENDER", "twilio"),
        ("TWILIO_BASE_URL", &base),
        ("TWILIO_ACCOUNT_SID", "AC0123"),
        ("TWILIO_AUTH_TOKEN", "twilio-secret-token"),
        ("TWILIO_FROM", "+15005550006"),
        ("OTP_MESSAGE", "{appname}: {otp} ({minutes} min)"),
        ("APP_NAMES", r#"{"com.example.app":"Example"}"#),
    ])
    .await;
    assert_eq!(server.call(login(PHONE)).await.0, 200);

    let received = twilio.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/2010-04-01/Accounts/AC0123/Messages.json");
    let basic = format!("Basic {}", BASE64.encode("AC0123:twilio-secret-token"));
    assert_eq!(received[0].authorization.as_deref(), Some(basic.as_str()));
    assert_eq!(received[0].header("content-type"), Some("application/x-www-form-urlencoded"));
    let form = received[0].form();
    assert_eq!(form["To"], "+18005551234");
    assert_eq!(form["From"], "+15005550006");
    assert!(!form.contains_key("MessagingServiceSid"));
    let code = code_in(&form["Body"]);
    assert_eq!(server.call(verify(PHONE, &code)).await.0, 200);
}

#[actix_web::test]
async fn twilio_messaging_service_and_invalid_number() {
    let (twilio, base) = provider(400, r#"{"code":21211,"message":"Invalid 'To' Phone Number","status":400}"#);
    let server = server_with(&[
        ("OTP_SENDER", "twilio"),
        ("TWILIO_BASE_URL", &base),
        ("TWILIO_ACCOUNT_SID", "AC0456"),
        ("TWILIO_AUTH_TOKEN", "twilio-secret-2"),
        ("TWILIO_MESSAGING_SERVICE_SID", "MG42"),
    ])
    .await;
    assert_error(&server.call(login("18005550009")).await, 502, "SENDFAILED");
    let form = twilio.received()[0].form();
    assert_eq!(form["MessagingServiceSid"], "MG42");
    assert!(!form.contains_key("From"));
    let logs = logs();
    assert!(server.logs().contains("twilio answered HTTP 400: error 21211: Invalid 'To' Phone Number"), "{logs}");
    assert!(!logs.contains("twilio-secret-2"));
}

#[actix_web::test]
async fn vonage_request_and_refused_message() {
    let (vonage, base) = provider(200, r#"{"message-count":"1","messages":[{"to":"18005551234","status":"0"}]}"#);
    let server = server_with(&[
        ("OTP_SENDER", "vonage"),
        ("VONAGE_BASE_URL", &base),
        ("VONAGE_API_KEY", "vkey"),
        ("VONAGE_API_SECRET", "vonage-secret-9"),
        ("VONAGE_FROM", "Example"),
    ])
    .await;
    assert_eq!(server.call(login(PHONE)).await.0, 200);
    let received = vonage.received();
    assert_eq!(received[0].path, "/sms/json");
    let body = received[0].json();
    assert_eq!(body["api_key"], "vkey");
    assert_eq!(body["api_secret"], "vonage-secret-9");
    assert_eq!(body["from"], "Example");
    assert_eq!(body["to"], PHONE);
    let code = body["text"].as_str().unwrap().strip_prefix("Your code is ").unwrap().to_string();
    assert_eq!(server.call(verify(PHONE, &code)).await.0, 200);

    // A 200 reply can still refuse the message.
    let refused = r#"{"message-count":"1","messages":[{"status":"3","error-text":"Invalid to number vonage-secret-9"}]}"#;
    vonage.set_mode(Mode::Reply(200, refused.into()));
    assert_error(&server.call(login("18005550003")).await, 502, "SENDFAILED");
    let logs = logs();
    assert!(server.logs().contains("vonage refused the message: status 3: Invalid to number"), "{logs}");
    assert!(!logs.contains("vonage-secret-9"), "an echoed secret is redacted");
}

#[actix_web::test]
async fn messagebird_request_and_server_error() {
    let (messagebird, base) = provider(201, r#"{"id":"m1"}"#);
    let server = server_with(&[
        ("OTP_SENDER", "messagebird"),
        ("MESSAGEBIRD_BASE_URL", &base),
        ("MESSAGEBIRD_ACCESS_KEY", "live_mbkey7"),
        ("MESSAGEBIRD_ORIGINATOR", "Example"),
    ])
    .await;
    assert_eq!(server.call(login(PHONE)).await.0, 200);
    let received = messagebird.received();
    assert_eq!(received[0].path, "/messages");
    assert_eq!(received[0].authorization.as_deref(), Some("AccessKey live_mbkey7"));
    let body = received[0].json();
    assert_eq!(body["originator"], "Example");
    assert_eq!(body["recipients"], json!([PHONE]));
    assert!(body["body"].as_str().unwrap().starts_with("Your code is "));

    messagebird.set_mode(Mode::Reply(503, "upstream unavailable".into()));
    assert_error(&server.call(login("18005550002")).await, 502, "SENDFAILED");
    let logs = logs();
    assert!(server.logs().contains("messagebird answered HTTP 503: upstream unavailable"), "{logs}");
    assert!(!logs.contains("live_mbkey7"));
}

#[actix_web::test]
async fn provider_timeout_is_sendfailed() {
    let (messagebird, base) = provider(200, "{}");
    messagebird.set_mode(Mode::Slow(Duration::from_millis(1500)));
    let server = server_with(&[
        ("OTP_SENDER", "messagebird"),
        ("MESSAGEBIRD_BASE_URL", &base),
        ("MESSAGEBIRD_ACCESS_KEY", "k"),
        ("MESSAGEBIRD_ORIGINATOR", "Example"),
        ("PROVIDER_TIMEOUT_SECS", "1"),
    ])
    .await;
    assert_error(&server.call(login("18005550001")).await, 502, "SENDFAILED");
    assert!(server.logs().contains("messagebird: timed out"), "{}", server.logs());
}

#[actix_web::test]
async fn webhook_event_is_signed() {
    let (hook, _) = provider(204, "");
    let url = hook.url();
    let server = server_with(&[("OTP_SENDER", "webhook"), ("WEBHOOK_URL", &url), ("WEBHOOK_SECRET", "whsec_c2VjcmV0LWtleQ==")]).await;
    assert_eq!(server.call(login(PHONE)).await.0, 200);
    assert_eq!(server.call(json!({ "op": "login", "email": "ann@example.com", "appid": APPID })).await.0, 200);

    let received = hook.received();
    assert_eq!(received.len(), 2);
    for (request, channel, to) in [(&received[0], "sms", PHONE), (&received[1], "email", "ann@example.com")] {
        let body = request.json();
        assert_eq!(body["type"], "otp");
        assert_eq!(body["channel"], channel);
        assert_eq!(body["to"], to);
        assert_eq!(body["appid"], APPID);
        assert_eq!(body["message"], format!("Your code is {}", body["otp"].as_str().unwrap()));
        let id = request.header("webhook-id").expect("webhook-id");
        let timestamp = request.header("webhook-timestamp").expect("webhook-timestamp");
        assert!(id.starts_with("msg_"));
        assert!((timestamp.parse::<i64>().unwrap() - otpgate::store::now()).abs() < 60);
        // Recomputed as a receiver would, with the base64-decoded secret.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret-key").unwrap();
        mac.update(format!("{id}.{timestamp}.{}", request.body).as_bytes());
        let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
        assert_eq!(request.header("webhook-signature"), Some(expected.as_str()));
    }
    let code = received[0].json()["otp"].as_str().unwrap().to_string();
    assert_eq!(server.call(verify(PHONE, &code)).await.0, 200);

    hook.set_mode(Mode::Reply(410, r#"{"error":"gone"}"#.into()));
    assert_error(&server.call(login("18005550009")).await, 502, "SENDFAILED");
}

#[actix_web::test]
async fn a_provider_without_credentials_does_not_start() {
    for (sender, missing) in [
        ("twilio", "TWILIO_ACCOUNT_SID"),
        ("vonage", "VONAGE_API_KEY"),
        ("messagebird", "MESSAGEBIRD_ACCESS_KEY"),
        ("webhook", "WEBHOOK_URL"),
    ] {
        // Refused as the settings are read, before any sender is built.
        let error = otpgate::config::Config::from_vars([("OTP_SENDER", sender)]).err();
        let error = error.unwrap_or_else(|| panic!("{sender} accepted without credentials"));
        assert!(error.contains(missing), "{error}");
    }
}

#[actix_web::test]
async fn webhook_retries_keep_the_message_id() {
    let (hook, _) = provider(204, "");
    hook.set_mode(Mode::Sequence(vec![(503, String::new()), (204, String::new())]));
    let url = hook.url();
    let server = server_with(&[
        ("OTP_SENDER", "webhook"),
        ("WEBHOOK_URL", &url),
        ("WEBHOOK_SECRET", "plain-secret"),
        ("COURIER_MAX_ATTEMPTS", "3"),
        ("COURIER_RETRY_BASE_MS", "50"),
    ])
    .await;
    assert_eq!(server.call(login(PHONE)).await.0, 200);
    assert!(eventually(30, async || hook.received().len() >= 2).await, "no retry");
    let received = hook.received();
    assert_eq!(received[0].header("webhook-id"), received[1].header("webhook-id"), "receivers can drop duplicates");
    assert_eq!(received[0].body, received[1].body);
    assert_eq!(server.call(login("18005550001")).await.0, 200);
    assert_ne!(hook.received()[2].header("webhook-id"), received[0].header("webhook-id"), "another message, another id");
}
