//! Routes over named provider instances: the longest prefix picks the route, a
//! transient failure or a timeout moves on to the next instance within one login
//! start, a refused number does not, and the courier row names the instance and the
//! provider's message id. Every provider here is a fake speaking its real API.

use crate::common::fake_providers::{FakeProvider, Provider, Script};
use crate::common::*;
use serde_json::json;
use std::sync::Arc;

/// Instances `twilio_uk` (Twilio), `vonage` (Vonage) and `bird` (MessageBird) on their fakes.
fn providers_json(twilio: &FakeProvider, vonage: &FakeProvider, bird: &FakeProvider) -> String {
    json!({
        "twilio_uk": {"kind": "twilio", "account_sid": "AC1", "auth_token": "twilio-secret-1", "from": "Example", "base_url": twilio.url()},
        "vonage": {"kind": "vonage", "api_key": "vkey", "api_secret": "vonage-secret-1", "from": "Example", "base_url": vonage.url()},
        "bird": {"kind": "messagebird", "access_key": "bird-secret-1", "originator": "Example", "base_url": bird.url()},
    })
    .to_string()
}

struct Routed {
    server: TestServer,
    twilio: Arc<FakeProvider>,
    vonage: Arc<FakeProvider>,
    bird: Arc<FakeProvider>,
}

async fn routed(routes: serde_json::Value, extra: &[(&str, &str)]) -> Routed {
    let (twilio, vonage, bird) =
        (FakeProvider::start(Provider::Twilio), FakeProvider::start(Provider::Vonage), FakeProvider::start(Provider::MessageBird));
    let providers = providers_json(&twilio, &vonage, &bird);
    let routes = routes.to_string();
    let mut env = vec![("SMS_PROVIDERS", providers.as_str()), ("SMS_ROUTES", routes.as_str()), ("PHONE_MOBILE_ONLY", "false")];
    env.extend_from_slice(extra);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(&env, FakeUpstream::start(), dir, Delivery::Configured).await;
    Routed { server, twilio, vonage, bird }
}

/// The code inside the default message, "Your code is 123456".
fn code_in(text: &str) -> String {
    text.rsplit(' ').next().unwrap().trim_end_matches('.').to_string()
}

/// The courier row of the one message to `phone`: (status, instance, provider's id).
fn row_of(server: &TestServer, phone: &str) -> (String, String, String) {
    let query = |column: &str| {
        server.column(&format!("SELECT coalesce({column}, '') FROM courier WHERE address = '{phone}' ORDER BY id DESC LIMIT 1")).remove(0)
    };
    (query("status"), query("instance"), query("provider_message_id"))
}

const UK: &str = "447400123456";
const JAMAICA: &str = "18765550123";
const US: &str = "12025550123";
const FRANCE: &str = "33612345678";

#[actix_web::test]
async fn the_longest_prefix_picks_the_route() {
    let routes = json!({"44": ["twilio_uk"], "1876": ["bird"], "1": ["vonage"], "*": ["bird", "twilio_uk"]});
    let r = routed(routes, &[]).await;
    for phone in [UK, JAMAICA, US, FRANCE] {
        assert_ok(r.server.call(login(phone)).await);
    }
    let to = |fake: &FakeProvider| fake.accepted().into_iter().map(|m| m.to).collect::<Vec<_>>();
    assert_eq!(to(&r.twilio), [UK]);
    assert_eq!(to(&r.vonage), [US]);
    assert_eq!(to(&r.bird), [JAMAICA, FRANCE]);
    assert!(eventually(30, async || row_of(&r.server, JAMAICA).0 == "sent").await);
    let (status, instance, id) = row_of(&r.server, JAMAICA);
    assert_eq!((status.as_str(), instance.as_str(), id), ("sent", "bird", r.bird.accepted()[0].id.clone()));
}

#[actix_web::test]
async fn a_failing_instance_hands_the_code_to_the_next_within_one_start() {
    let r = routed(json!({"44": ["twilio_uk", "vonage"], "*": ["vonage"]}), &[]).await;
    r.twilio.script("44", Script::Unavailable);
    assert_ok(r.server.call(login(UK)).await);
    assert_eq!(r.twilio.requests(), 1, "the first instance was tried");
    let delivered = r.vonage.accepted();
    assert_eq!(delivered.len(), 1, "the second instance took it in the same start");
    assert!(eventually(30, async || row_of(&r.server, UK).0 == "sent").await);
    let (status, instance, id) = row_of(&r.server, UK);
    assert_eq!((status.as_str(), instance.as_str(), id.as_str()), ("sent", "vonage", delivered[0].id.as_str()));
    assert_eq!(r.server.scalar("SELECT attempts FROM courier"), 1, "one attempt, two instances");
    let reply = assert_ok(r.server.call(verify(UK, &code_in(&delivered[0].text))).await);
    assert!(reply["token"].is_string());
    let logs = r.server.logs();
    assert!(logs.contains("twilio answered HTTP 503: error 20503: Service unavailable; trying vonage"), "{logs}");
}

#[actix_web::test]
async fn a_provider_that_does_not_answer_is_left_after_its_timeout() {
    let r = routed(json!({"*": ["bird", "twilio_uk"]}), &[("PROVIDER_TIMEOUT_SECS", "1"), ("COURIER_WAIT_MS", "10000")]).await;
    r.bird.script("", Script::Hang);
    assert_ok(r.server.call(login(FRANCE)).await);
    assert_eq!(r.bird.requests(), 1);
    assert_eq!(r.twilio.accepted().len(), 1, "the next instance took it once the first timed out");
    assert!(eventually(30, async || row_of(&r.server, FRANCE).1 == "twilio_uk").await, "{:?}", row_of(&r.server, FRANCE));
}

#[actix_web::test]
async fn refused_credentials_are_the_instance_s_problem_and_the_next_takes_over() {
    let r = routed(json!({"*": ["bird", "twilio_uk"]}), &[]).await;
    r.bird.script("", Script::RefuseCredentials);
    assert_ok(r.server.call(login(FRANCE)).await);
    assert_eq!((r.bird.requests(), r.twilio.accepted().len()), (1, 1));
    let logs = r.server.logs();
    assert!(
        logs.contains("messagebird answered HTTP 401: error 2: Request not allowed (incorrect access_key); trying twilio_uk"),
        "{logs}"
    );
    assert!(!logs.contains("bird-secret-1"));
}

#[actix_web::test]
async fn a_refused_number_is_not_offered_to_the_next_instance() {
    let r = routed(json!({"*": ["twilio_uk", "vonage"]}), &[]).await;
    r.twilio.script("", Script::RefuseNumber);
    assert_error(&r.server.call(login(US)).await, 502, "SENDFAILED");
    assert_eq!(r.vonage.requests(), 0, "an invalid number is invalid at every provider");
    assert!(eventually(30, async || row_of(&r.server, US).0 == "failed").await);
}

#[actix_web::test]
async fn when_every_instance_fails_the_message_is_retried_from_the_first() {
    let r = routed(json!({"*": ["twilio_uk", "vonage"]}), &[("COURIER_MAX_ATTEMPTS", "100"), ("COURIER_RETRY_BASE_MS", "50")]).await;
    r.twilio.script("", Script::Unavailable);
    r.vonage.script("", Script::Unavailable);
    assert_ok(r.server.call(login(US)).await);
    assert!(eventually(30, async || r.twilio.requests() >= 2).await, "the retry starts again at the first instance");
    r.vonage.script("", Script::Accept);
    assert!(eventually(30, async || r.vonage.accepted().len() == 1).await);
    assert!(eventually(30, async || row_of(&r.server, US).0 == "sent").await);
    assert_eq!(row_of(&r.server, US).1, "vonage");
    assert!(r.twilio.accepted().is_empty() && r.bird.requests() == 0);
}

/// An instance that failed most of its recent sends is passed over for a cool-down on
/// the service's clock, shows as degraded in /readyz (which stays ready) and in the
/// metrics, and gets one trial send once the cool-down is over.
#[actix_web::test]
async fn a_failing_instance_is_skipped_for_a_cool_down_then_tried_again() {
    let (twilio, vonage) = (FakeProvider::start(Provider::Twilio), FakeProvider::start(Provider::Vonage));
    let providers = json!({
        "twilio_breaker": {"kind": "twilio", "account_sid": "AC1", "auth_token": "t", "from": "Example", "base_url": twilio.url()},
        "vonage_breaker": {"kind": "vonage", "api_key": "k", "api_secret": "s", "from": "Example", "base_url": vonage.url()},
    })
    .to_string();
    let env = [
        ("SMS_PROVIDERS", providers.as_str()),
        ("SMS_ROUTES", r#"{"*": ["twilio_breaker", "vonage_breaker"]}"#),
        ("PHONE_MOBILE_ONLY", "false"),
        ("SMS_BREAKER_WINDOW", "4"),
        ("SMS_BREAKER_MIN_SENDS", "2"),
        ("SMS_BREAKER_COOLDOWN_SECS", "60"),
    ];
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server =
        TestServer::start_full(&env, FakeUpstream::start(), dir, Delivery::Configured, otpgate::domain::clock::Clock::manual()).await;
    let open_gauge = || otpgate::domain::metrics::SENDER_BREAKER_OPEN.with_label_values(&["twilio_breaker"]).get();
    let readyz = async || server.send(server.client().get(format!("{}/readyz", server.url))).await;

    twilio.script("", Script::Unavailable);
    for phone in ["12025550101", "12025550102"] {
        assert_ok(server.call(login(phone)).await);
    }
    assert_eq!((twilio.requests(), vonage.accepted().len()), (2, 2));
    assert_eq!(open_gauge(), 1, "both recent sends failed: the breaker is open");
    let (status, ready) = readyz().await;
    assert_eq!(status, 200, "another instance of the route works: {ready}");
    let senders = ready["checks"]["senders"].as_str().unwrap_or_default().to_string();
    assert!(senders.contains("twilio_breaker open") && senders.contains("every route has a working instance"), "{ready}");

    twilio.script("", Script::Accept);
    assert_ok(server.call(login("12025550103")).await);
    assert_eq!(twilio.requests(), 2, "skipped while open, healthy or not");
    assert_eq!(vonage.accepted().len(), 3);

    server.clock.advance(std::time::Duration::from_secs(61));
    assert_ok(server.call(login("12025550104")).await);
    assert_eq!(twilio.accepted().len(), 1, "after the cool-down one trial send goes through it");
    assert_eq!(open_gauge(), 0, "the trial succeeded: closed");
    assert!(readyz().await.1["checks"].get("senders").is_none());
}

/// When every instance of a route is skipped, they are tried anyway.
#[actix_web::test]
async fn a_route_whose_every_instance_is_open_still_tries_them() {
    let twilio = FakeProvider::start(Provider::Twilio);
    let providers = json!({
        "twilio_alone": {"kind": "twilio", "account_sid": "AC1", "auth_token": "t", "from": "Example", "base_url": twilio.url()},
    })
    .to_string();
    let env = [
        ("SMS_PROVIDERS", providers.as_str()),
        ("SMS_ROUTES", r#"{"*": ["twilio_alone"]}"#),
        ("PHONE_MOBILE_ONLY", "false"),
        ("SMS_BREAKER_MIN_SENDS", "1"),
    ];
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server =
        TestServer::start_full(&env, FakeUpstream::start(), dir, Delivery::Configured, otpgate::domain::clock::Clock::manual()).await;
    twilio.script("", Script::Unavailable);
    assert_error(&server.call(login("12025550105")).await, 502, "SENDFAILED");
    let (status, ready) = server.send(server.client().get(format!("{}/readyz", server.url))).await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready["checks"]["senders"].as_str().unwrap().contains("no working instance on route *: tried anyway"), "{ready}");
    twilio.script("", Script::Accept);
    assert_ok(server.call(login("12025550106")).await);
    assert_eq!(twilio.accepted().len(), 1, "the only instance was tried although its breaker was open");
}
