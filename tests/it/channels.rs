//! Channels: codes by WhatsApp (an authentication template on the Cloud API) and by a
//! voice call (Twilio's Calls API), the `channel` field of a login start that puts the
//! route's instances of a channel first, a second start that sends the same code again
//! over another channel, and the reply's `channel`. Every provider is a fake speaking its
//! real API on loopback.

use crate::common::fake_providers::{FakeProvider, Provider, Script};
use crate::common::*;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

use otpgate::domain::clock::Clock;

const UK: &str = "447400123456";
const FRANCE: &str = "33612345678";
const GERMANY: &str = "4915112345678";
const SPAIN: &str = "34612345678";

const WHATSAPP_TOKEN: &str = "wa-token-secret-1";

struct Channels {
    server: TestServer,
    /// `sms`, a Twilio Messages instance.
    sms: Arc<FakeProvider>,
    /// `wa`, a WhatsApp Cloud API instance.
    wa: Arc<FakeProvider>,
    /// `call`, a Twilio voice instance.
    call: Arc<FakeProvider>,
}

/// A service whose instances `sms`, `wa` and `call` are on their fakes, over `routes`.
async fn channels_on(routes: Value, extra: &[(&str, &str)], clock: Clock) -> Channels {
    let (sms, wa, call) =
        (FakeProvider::start(Provider::Twilio), FakeProvider::start(Provider::WhatsApp), FakeProvider::start(Provider::TwilioVoice));
    let providers = json!({
        "sms": {"kind": "twilio", "account_sid": "AC1", "auth_token": "twilio-secret-1", "from": "Example", "base_url": sms.url()},
        "wa": {"kind": "whatsapp", "phone_number_id": "106540352242922", "access_token": WHATSAPP_TOKEN, "template": "login_code",
               "language": "en_GB", "base_url": wa.url()},
        "call": {"kind": "twilio_voice", "account_sid": "AC2", "auth_token": "voice-secret-1", "from": "+15005550006", "base_url": call.url()},
    })
    .to_string();
    let routes = routes.to_string();
    let mut env = vec![("SMS_PROVIDERS", providers.as_str()), ("SMS_ROUTES", routes.as_str()), ("PHONE_MOBILE_ONLY", "false")];
    env.extend_from_slice(extra);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_full(&env, FakeUpstream::start(), dir, Delivery::Configured, clock).await;
    Channels { server, sms, wa, call }
}

async fn channels(routes: Value, extra: &[(&str, &str)]) -> Channels {
    channels_on(routes, extra, Clock::system()).await
}

fn start(phone: &str, channel: &str) -> Value {
    let mut request = login(phone);
    request["channel"] = channel.into();
    request
}

fn verify_with(phone: &str, code: &str, challenge: &Value) -> Value {
    let mut request = verify(phone, code);
    request["challenge"] = challenge.clone();
    request
}

/// The code inside the default message, "Your code is 123456".
fn code_in_sms(text: &str) -> String {
    text.rsplit(' ').next().unwrap().trim_end_matches('.').to_string()
}

/// The code a call's TwiML reads out: the digits of its first `<Say>`.
fn code_in_call(twiml: &str) -> String {
    let said = twiml.split("<Say>").nth(1).and_then(|say| say.split("</Say>").next()).unwrap();
    said.chars().filter(char::is_ascii_digit).collect()
}

/// The TwiML of a call that reads `code` out twice.
fn call_reading(code: &str) -> String {
    let spaced = code.chars().map(String::from).collect::<Vec<_>>().join(", ");
    format!("<Response><Say>Your code is {spaced}.</Say><Pause length=\"2\"/><Say>Again: {spaced}.</Say></Response>")
}

/// The newest courier row of `phone`: (status, instance, provider's id, channel).
fn row_of(server: &TestServer, phone: &str) -> (String, String, String, String) {
    let query = |column: &str| {
        server.column(&format!("SELECT coalesce({column}, '') FROM courier WHERE address = '{phone}' ORDER BY id DESC LIMIT 1")).remove(0)
    };
    (query("status"), query("instance"), query("provider_message_id"), query("channel"))
}

#[actix_web::test]
async fn whatsapp_sends_an_authentication_template_with_the_code_in_its_body_and_button() {
    let c = channels(json!({"*": ["wa"]}), &[]).await;
    let reply = assert_ok(c.server.call(login(UK)).await);
    assert_eq!(reply["channel"], "whatsapp", "{reply}");
    let sent = c.wa.accepted();
    assert_eq!(sent.len(), 1);
    let message = &sent[0];
    let code = message.text.clone();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    assert_eq!(message.path, "/v21.0/106540352242922/messages");
    assert_eq!(message.authorization.as_deref(), Some("Bearer wa-token-secret-1"));
    assert!(message.content_type.as_deref().is_some_and(|t| t.starts_with("application/json")), "{:?}", message.content_type);
    let expected = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+447400123456",
        "type": "template",
        "template": {
            "name": "login_code",
            "language": {"code": "en_GB"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": code}]},
                {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": code}]},
            ],
        },
    });
    assert_eq!(message.fields, expected);
    assert!(eventually(30, async || row_of(&c.server, UK).0 == "sent").await);
    let (_, instance, id, channel) = row_of(&c.server, UK);
    assert_eq!((instance.as_str(), id.as_str(), channel.as_str()), ("wa", message.id.as_str(), ""), "no channel was asked for");
    assert!(id.starts_with("wamid."), "the id is the reply's messages[0].id: {id}");
    let reply = assert_ok(c.server.call(verify(UK, &code)).await);
    assert!(reply["token"].is_string());
}

#[actix_web::test]
async fn what_says_nothing_against_the_number_hands_the_code_from_whatsapp_to_sms_at_once() {
    let c = channels(json!({"*": ["wa", "sms"]}), &[]).await;
    c.wa.script(UK, Script::Undeliverable);
    c.wa.script(FRANCE, Script::Unavailable);
    for (phone, error) in [(UK, "error 131026"), (FRANCE, "error 130429")] {
        let reply = assert_ok(c.server.call(login(phone)).await);
        assert_eq!(reply["channel"], "sms", "{phone}: the instance that carried it: {reply}");
        assert!(c.sms.accepted().iter().any(|m| m.to == phone), "{phone}: SMS took it in the same start");
        assert!(eventually(30, async || row_of(&c.server, phone).0 == "sent").await);
        assert_eq!(row_of(&c.server, phone).1, "sms");
        assert!(c.server.logs().contains(&format!("whatsapp answered HTTP 400: {error}")), "{}", c.server.logs());
    }
    assert_eq!(c.server.scalar("SELECT max(attempts) FROM courier"), 1, "one attempt, two instances");
    let code = code_in_sms(&c.sms.accepted()[0].text);
    assert_ok(c.server.call(verify(UK, &code)).await);

    // A token Meta does not take is the instance's fault, not the number's.
    c.wa.take_only_token("another-token");
    assert_eq!(assert_ok(c.server.call(login(GERMANY)).await)["channel"], "sms");
    assert!(c.server.logs().contains("whatsapp answered HTTP 401: error 190"), "{}", c.server.logs());
    assert!(!c.server.logs().contains(WHATSAPP_TOKEN), "the access token reached the log");

    // A number WhatsApp refuses outright is not offered to SMS.
    c.wa.take_only_token(WHATSAPP_TOKEN);
    c.wa.script(SPAIN, Script::RefuseNumber);
    assert_error(&c.server.call(login(SPAIN)).await, 502, "SENDFAILED");
    assert!(c.sms.accepted().iter().all(|m| m.to != SPAIN));
}

#[actix_web::test]
async fn a_voice_call_reads_the_code_digit_by_digit_twice() {
    let c = channels(json!({"*": ["call"]}), &[("PUBLIC_URL", "https://login.example.com")]).await;
    let reply = assert_ok(c.server.call(login(UK)).await);
    assert_eq!(reply["channel"], "voice", "{reply}");
    let calls = c.call.accepted();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    let code = code_in_call(&call.text);
    assert_eq!(code.len(), 6, "{}", call.text);
    assert_eq!(call.path, "/2010-04-01/Accounts/AC2/Calls.json");
    let basic = base64::engine::general_purpose::STANDARD.encode("AC2:voice-secret-1");
    assert_eq!(call.authorization.as_deref(), Some(format!("Basic {basic}").as_str()));
    assert_eq!(call.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
    let expected = json!({
        "To": "+447400123456",
        "From": "+15005550006",
        "Twiml": call_reading(&code),
        "StatusCallback": "https://login.example.com/delivery/twilio",
    });
    assert_eq!(call.fields, expected, "exactly one of Url and Twiml");
    assert!(eventually(30, async || row_of(&c.server, UK).0 == "sent").await);
    let (_, instance, id, _) = row_of(&c.server, UK);
    assert_eq!((instance.as_str(), id.as_str()), ("call", call.id.as_str()));
    assert!(id.starts_with("CA"), "the call's sid: {id}");
    assert_ok(c.server.call(verify(UK, &code)).await);
}

#[actix_web::test]
async fn the_channel_field_puts_the_route_instances_of_that_channel_first() {
    let c = channels(json!({"*": ["sms", "wa", "call"]}), &[]).await;
    let reply = assert_ok(c.server.call(start(UK, "voice")).await);
    assert_eq!(reply["channel"], "voice");
    assert_eq!((c.call.accepted().len(), c.sms.requests(), c.wa.requests()), (1, 0, 0));
    assert!(eventually(30, async || row_of(&c.server, UK).0 == "sent").await);
    assert_eq!(row_of(&c.server, UK).3, "voice", "the courier row keeps the channel asked for");
    assert_ok(c.server.call(verify(UK, &code_in_call(&c.call.accepted()[0].text))).await);

    assert_eq!(assert_ok(c.server.call(start(FRANCE, "whatsapp")).await)["channel"], "whatsapp");
    assert_eq!((c.wa.accepted().len(), c.sms.requests()), (1, 0));

    // The rest of the route, in its order, is the fallback.
    c.call.script(GERMANY, Script::Unavailable);
    assert_eq!(assert_ok(c.server.call(start(GERMANY, "voice")).await)["channel"], "sms");
    assert_eq!((c.call.requests(), c.sms.accepted().len(), c.wa.requests()), (2, 1, 1));

    // Without a channel the route's order stands.
    assert_eq!(assert_ok(c.server.call(login(SPAIN)).await)["channel"], "sms");
    assert_eq!(row_of(&c.server, SPAIN).3, "");
}

#[actix_web::test]
async fn an_unknown_channel_or_one_the_route_lacks_is_refused_and_nothing_is_sent() {
    let c = channels(json!({"44": ["sms"], "*": ["wa", "sms"]}), &[]).await;
    for channel in ["pigeon", "SMS ", "email"] {
        let reply = c.server.call(start(FRANCE, channel)).await;
        assert_error(&reply, 400, "BADPARAM");
        assert!(reply.1["errmsg"].as_str().unwrap().contains("sms, whatsapp or voice"), "{}", reply.1);
    }
    let reply = c.server.call(start(UK, "whatsapp")).await;
    assert_error(&reply, 400, "BADPARAM");
    assert_eq!(reply.1["errmsg"], "channel whatsapp is not available for this number");
    assert_error(&c.server.call(start(FRANCE, "voice")).await, 400, "BADPARAM");
    assert_eq!(c.server.scalar("SELECT count(*) FROM courier") + c.server.scalar("SELECT count(*) FROM otp_challenges"), 0);
    assert_eq!(c.sms.requests() + c.wa.requests() + c.call.requests(), 0);

    // A blank channel is no channel; the route's own channels are taken.
    let mut blank = login(UK);
    blank["channel"] = "".into();
    assert_eq!(assert_ok(c.server.call(blank).await)["channel"], "sms");
    assert_eq!(assert_ok(c.server.call(start(FRANCE, "sms")).await)["channel"], "sms");
}

#[actix_web::test]
async fn a_second_start_for_another_channel_sends_the_same_code_again() {
    let clock = Clock::manual();
    let env = [("OTP_RESEND_SECS", "60"), ("LIMIT_START_PER_PHONE_PER_HOUR", "2")];
    let c = channels_on(json!({"*": ["sms", "call"]}), &env, clock.clone()).await;
    let first = assert_ok(c.server.call(login(UK)).await);
    assert_eq!(first["channel"], "sms");
    let code = code_in_sms(&c.sms.accepted()[0].text);

    // The resend window holds for another channel too.
    let reply = c.server.call(start(UK, "voice")).await;
    assert_error(&reply, 429, "RATELIMIT");
    assert_eq!(c.call.requests(), 0);

    clock.advance(Duration::from_secs(61));
    let second = assert_ok(c.server.call(start(UK, "voice")).await);
    assert_eq!(second["channel"], "voice");
    let calls = c.call.accepted();
    assert_eq!(calls.len(), 1);
    assert_eq!(code_in_call(&calls[0].text), code, "the call reads the code the SMS carried");
    assert_eq!(c.server.scalar("SELECT count(*) FROM otp_challenges"), 1);
    assert_eq!(c.server.scalar("SELECT count(DISTINCT otp_hash) FROM courier"), 1, "two messages of one code");
    assert_eq!(c.server.scalar("SELECT count(*) FROM courier"), 2);

    // A resend spends the start limits as any message does: a third start is refused.
    clock.advance(Duration::from_secs(61));
    assert_error(&c.server.call(start(UK, "sms")).await, 429, "RATELIMIT");
    assert_eq!((c.sms.requests(), c.call.requests()), (1, 1));

    // The challenge of the latest start is the one a verify sends back.
    assert_error(&c.server.call(verify_with(UK, &code, &first["challenge"])).await, 401, "BADCODE");
    let reply = assert_ok(c.server.call(verify_with(UK, &code, &second["challenge"])).await);
    assert!(reply["token"].is_string());
}

#[actix_web::test]
async fn a_resend_that_fails_leaves_valid_the_code_that_went_out() {
    let c = channels(json!({"*": ["sms", "call"]}), &[]).await;
    assert_ok(c.server.call(login(UK)).await);
    let code = code_in_sms(&c.sms.accepted()[0].text);
    assert!(eventually(30, async || row_of(&c.server, UK).0 == "sent").await);
    c.call.script(UK, Script::RefuseNumber);
    assert_error(&c.server.call(start(UK, "voice")).await, 502, "SENDFAILED");
    assert!(eventually(30, async || row_of(&c.server, UK).0 == "failed").await);
    assert_eq!(c.server.scalar("SELECT count(*) FROM otp_challenges"), 1, "the SMS carried this code: it stays");
    assert_ok(c.server.call(verify(UK, &code)).await);
}

#[actix_web::test]
async fn a_second_start_for_the_same_channel_sends_a_new_code() {
    let c = channels(json!({"*": ["sms", "call"]}), &[]).await;
    assert_ok(c.server.call(start(FRANCE, "voice")).await);
    assert_ok(c.server.call(start(FRANCE, "voice")).await);
    let calls = c.call.accepted();
    assert_eq!(calls.len(), 2);
    let (old, new) = (code_in_call(&calls[0].text), code_in_call(&calls[1].text));
    assert_eq!(c.server.scalar("SELECT count(*) FROM courier WHERE status = 'cancelled'"), 0);
    // Only the newer code is valid (two random codes are equal once in a million).
    if old != new {
        assert_error(&c.server.call(verify(FRANCE, &old)).await, 401, "BADCODE");
    }
    assert_ok(c.server.call(verify(FRANCE, &new)).await);
}

#[actix_web::test]
async fn the_mesibo_dialect_names_the_channel_only_to_a_start_that_asked_for_one() {
    let c = channels(json!({"*": ["sms", "call"]}), &[("API_DIALECT", "mesibo")]).await;
    let (status, reply) = c.server.call(login(UK)).await;
    assert_eq!((status, &reply["result"]), (200, &json!("OK")), "{reply}");
    assert!(reply.get("channel").is_none(), "the apps send no channel and get none back: {reply}");
    let (status, reply) = c.server.call(start(FRANCE, "voice")).await;
    assert_eq!((status, &reply["result"], &reply["channel"]), (200, &json!("OK"), &json!("voice")), "{reply}");
}
