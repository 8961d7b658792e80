//! Delivery receipts over real HTTP: the fakes of Twilio, Vonage and MessageBird report
//! on the messages they accepted, signed by each provider's own scheme, to the URL the
//! sender gave (under `PUBLIC_URL`, posted to the service's own address as a reverse
//! proxy would); WhatsApp's notifications are built and signed the same way. The
//! receipt is recorded on the message's row, a forged one changes nothing, a replay
//! changes the row once, and a code reported undelivered goes out again through the
//! next instance of its route while it can still be used.
//!
//! Counters are per process and the suite runs in parallel: each test names its
//! instances after itself, so the series labelled by instance are its own, and each
//! provider's refused signatures are counted by one test only.

use crate::common::fake_providers::{
    messagebird_jwt, twilio_signature, vonage_signature, whatsapp_report, whatsapp_signature, Accepted, FakeProvider, Provider, ReceiptKey,
    Report, Script, Status,
};
use crate::common::*;
use otpgate::domain::clock::Clock;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// What the providers are given; the tests post to the service's own address.
const PUBLIC_URL: &str = "https://login.example.com";
const UK: &str = "447400123456";
const US: &str = "12025550123";
const FRANCE: &str = "33612345678";
/// 2026-01-01T00:00:00Z.
const NEW_YEAR: i64 = 1_767_225_600;

/// The three instances of one test, named `twilio_<tag>`, `vonage_<tag>` and `bird_<tag>`,
/// each on a fake of its own and with keys of its own.
struct Setup {
    server: TestServer,
    twilio: Arc<FakeProvider>,
    vonage: Arc<FakeProvider>,
    bird: Arc<FakeProvider>,
    tag: String,
}

impl Setup {
    fn name(&self, kind: &str) -> String {
        format!("{kind}_{}", self.tag)
    }

    fn twilio_key(&self) -> String {
        format!("{}-auth-token", self.name("twilio"))
    }

    fn vonage_key(&self) -> String {
        format!("{}-signature-secret", self.name("vonage"))
    }

    fn bird_key(&self) -> String {
        format!("{}-signing-key", self.name("bird"))
    }

    /// The signed report of `status` on the one message `fake` accepted for `phone`.
    fn report(&self, fake: &FakeProvider, phone: &str, status: Status<'_>) -> Report {
        let (twilio, vonage, bird) = (self.twilio_key(), self.vonage_key(), self.bird_key());
        let key = match fake.provider {
            Provider::Twilio | Provider::TwilioVoice => ReceiptKey::Twilio(&twilio),
            Provider::WhatsApp => panic!("WhatsApp notifications are built by whatsapp_report"),
            Provider::Vonage => ReceiptKey::Vonage(&vonage, "md5hash"),
            Provider::MessageBird => ReceiptKey::MessageBird(&bird),
        };
        fake.report(&accepted_for(fake, phone), status, key)
    }

    async fn send(&self, report: &Report) -> u16 {
        report.send(&self.server.url).await.0
    }
}

/// `routes`: prefix → kinds (`twilio`, `vonage`, `bird`) in order.
async fn start(tag: &str, routes: &[(&str, &[&str])], extra: &[(&str, &str)]) -> Setup {
    start_on(tag, routes, extra, Clock::system(), Arc::new(tempfile::tempdir().unwrap())).await
}

async fn start_on(tag: &str, routes: &[(&str, &[&str])], extra: &[(&str, &str)], clock: Clock, dir: Arc<tempfile::TempDir>) -> Setup {
    let (twilio, vonage, bird) =
        (FakeProvider::start(Provider::Twilio), FakeProvider::start(Provider::Vonage), FakeProvider::start(Provider::MessageBird));
    start_with_fakes(tag, routes, extra, clock, dir, (twilio, vonage, bird)).await
}

async fn start_with_fakes(
    tag: &str,
    routes: &[(&str, &[&str])],
    extra: &[(&str, &str)],
    clock: Clock,
    dir: Arc<tempfile::TempDir>,
    (twilio, vonage, bird): (Arc<FakeProvider>, Arc<FakeProvider>, Arc<FakeProvider>),
) -> Setup {
    let name = |kind: &str| format!("{kind}_{tag}");
    let providers = json!({
        name("twilio"): {"kind": "twilio", "account_sid": "AC1", "auth_token": format!("{}-auth-token", name("twilio")),
            "from": "Example", "base_url": twilio.url()},
        name("vonage"): {"kind": "vonage", "api_key": "vkey", "api_secret": "vonage-api-secret", "from": "Example",
            "signature_secret": format!("{}-signature-secret", name("vonage")), "signature_method": "md5hash", "base_url": vonage.url()},
        name("bird"): {"kind": "messagebird", "access_key": "bird-access-key", "originator": "Example",
            "signing_key": format!("{}-signing-key", name("bird")), "base_url": bird.url()},
    })
    .to_string();
    let routes: serde_json::Map<String, Value> =
        routes.iter().map(|(prefix, kinds)| (prefix.to_string(), json!(kinds.iter().map(|kind| name(kind)).collect::<Vec<_>>()))).collect();
    let routes = Value::Object(routes).to_string();
    let mut env = vec![("SMS_PROVIDERS", providers.as_str()), ("SMS_ROUTES", routes.as_str()), ("PUBLIC_URL", PUBLIC_URL)];
    env.extend_from_slice(extra);
    let server = TestServer::start_full(&env, FakeUpstream::start(), dir, Delivery::Configured, clock).await;
    Setup { server, twilio, vonage, bird, tag: tag.to_string() }
}

/// The one message `fake` accepted for `phone`.
fn accepted_for(fake: &FakeProvider, phone: &str) -> Accepted {
    let accepted: Vec<Accepted> = fake.accepted().into_iter().filter(|message| message.to == phone).collect();
    assert_eq!(accepted.len(), 1, "{:?} accepted {} messages for {phone}", fake.provider, accepted.len());
    accepted.into_iter().next().unwrap()
}

/// The code inside the default message, "Your code is 123456".
fn code_in(text: &str) -> String {
    text.rsplit(' ').next().unwrap().trim_end_matches('.').to_string()
}

/// The courier row of the latest message to a phone, as far as receipts concern it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    status: String,
    instance: String,
    receipt_status: String,
    receipt_error: String,
    receipt_at: i64,
    failed_via: String,
    sealed: bool,
}

fn row_of(server: &TestServer, phone: &str) -> Row {
    let latest = format!("FROM courier WHERE address = '{phone}' ORDER BY id DESC LIMIT 1");
    let text = |column: &str| server.column(&format!("SELECT coalesce({column}, '') {latest}")).remove(0);
    Row {
        status: text("status"),
        instance: text("instance"),
        receipt_status: text("receipt_status"),
        receipt_error: text("receipt_error"),
        receipt_at: server.scalar(&format!("SELECT coalesce(receipt_at, 0) {latest}")),
        failed_via: text("failed_via"),
        sealed: server.scalar(&format!("SELECT count(*) FROM (SELECT sealed {latest}) AS latest WHERE sealed IS NOT NULL")) == 1,
    }
}

/// Starts a login for `phone` and waits until its message is recorded as sent by `instance`.
async fn sent_through(server: &TestServer, phone: &str, instance: &str) -> Row {
    assert_ok(server.call(login(phone)).await);
    let sent = async || Some(row_of(server, phone)).filter(|row| row.status == "sent" && row.instance == instance);
    eventually_some(30, sent).await.unwrap_or_else(|| panic!("not sent by {instance}: {:?}", row_of(server, phone)))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The value of one series (`name{labels}`) at `/metrics`; 0 when it is not there.
async fn metric(server: &TestServer, series: &str) -> f64 {
    let text = server.client().get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|line| line.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')));
    line.map_or(0.0, |line| line.rsplit_once(' ').unwrap().1.parse().unwrap())
}

#[actix_web::test]
async fn fake_signatures_match_the_providers_published_examples() {
    // Twilio's request-validator example (twilio-python and twilio-node test suites).
    let params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
        ("Caller", "+14158675309"),
    ];
    assert_eq!(twilio_signature("https://mycompany.com/myapp.php?foo=1&bar=2", &params, "12345"), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
    let repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")];
    assert_eq!(twilio_signature("https://mycompany.com/myapp.php?foo=1&bar=2", &repeated, "12345"), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    // Vonage's signature tests (vonage-python-sdk 3.x).
    let fields = [("a", "1"), ("b", "2"), ("timestamp", "1461605396")];
    assert_eq!(vonage_signature(&fields, "secret", "md5hash"), "6af838ef94998832dbfc29020b564830");
    assert_eq!(vonage_signature(&fields, "secret", "sha256"), "a321e824b9b816be7c3f28859a31749a098713d39f613c80d455bbaffae1cd24");
    // MessageBird's reference case "Valid JWT with URL parameters and payload - POST": our
    // token carries the same hashes, and theirs verifies under the same key and algorithm.
    let (key, url, payload) =
        ("36efdd1aace2e26cd490f0d951138253bef2f7c6d34d18981da781555cc4cebb", "https://example.com/path?bar=1&foo=2", b"Hello, World!");
    let reference = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiI5M2U1NTAwNi1hMGU4LTQ1MjYtYTE5MC1mYTVmZjAwZWExMTYiLCJ1cmxfaGFzaCI6IjQxZjA1ZjBkZGQwYTIyYWIyMDlhYzQ2ZjQ3YzQ1NzJkOWNlZmEyNTdlZDc0YjI0MDA0YmFlNzUzZWNlNmMyNjAiLCJwYXlsb2FkX2hhc2giOiJkZmZkNjAyMWJiMmJkNWIwYWY2NzYyOTA4MDllYzNhNTMxOTFkZDgxYzdmNzBhNGIyODY4OGEzNjIxODI5ODZmIn0._H--TOuYFLpeEH39-rg5E3IHVkjHozBcaKVWPRC5m9I";
    let claims = |token: &str| {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_secret(key.as_bytes()), &validation).unwrap().claims
    };
    let (theirs, ours) = (claims(reference), claims(&messagebird_jwt(url, payload, key, 1_625_479_200)));
    for claim in ["iss", "nbf", "exp", "url_hash", "payload_hash"] {
        assert_eq!(ours[claim], theirs[claim], "{claim}");
    }
    // Meta's WhatsApp Node.js SDK test.
    assert_eq!(whatsapp_signature(b"test", "TEST_APP_SECRET"), "sha256=0c61947b610d4f45e65f3d680e26027121ec2413e77598bcb6cfc6e0d9888221");
}

#[actix_web::test]
async fn each_providers_signed_receipt_is_recorded_on_its_message() {
    let s = start("recorded", &[("44", &["twilio"]), ("1", &["vonage"]), ("*", &["bird"])], &[]).await;
    sent_through(&s.server, UK, &s.name("twilio")).await;
    sent_through(&s.server, US, &s.name("vonage")).await;
    sent_through(&s.server, FRANCE, &s.name("bird")).await;
    let callbacks: Vec<String> = [&s.twilio, &s.vonage, &s.bird].iter().map(|fake| fake.accepted()[0].callback.clone().unwrap()).collect();
    assert_eq!(
        callbacks,
        [format!("{PUBLIC_URL}/delivery/twilio"), format!("{PUBLIC_URL}/delivery/vonage"), format!("{PUBLIC_URL}/delivery/messagebird")]
    );

    let before = unix_now();
    assert_eq!(s.send(&s.report(&s.twilio, UK, Status::new("sent"))).await, 200);
    assert_eq!(row_of(&s.server, UK).receipt_status, "sent");
    assert_eq!(s.send(&s.report(&s.twilio, UK, Status::new("undelivered").error("30007"))).await, 200);
    assert_eq!(s.send(&s.report(&s.vonage, US, Status::new("delivered").at(NEW_YEAR))).await, 200);
    assert_eq!(s.send(&s.report(&s.bird, FRANCE, Status::new("delivery_failed").error("5").at(NEW_YEAR + 60))).await, 200);
    let after = unix_now();

    let uk = row_of(&s.server, UK);
    assert_eq!((uk.receipt_status.as_str(), uk.receipt_error.as_str(), uk.status.as_str()), ("undelivered", "30007", "sent"));
    assert!((before..=after).contains(&uk.receipt_at), "Twilio gives no time: the arrival's, {} in {before}..={after}", uk.receipt_at);
    assert_eq!(uk.failed_via, s.name("twilio"), "a failure names the instance");
    let us = row_of(&s.server, US);
    assert_eq!((us.receipt_status.as_str(), us.receipt_error.as_str(), us.receipt_at), ("delivered", "", NEW_YEAR));
    let france = row_of(&s.server, FRANCE);
    assert_eq!((france.receipt_status.as_str(), france.receipt_error.as_str(), france.receipt_at), ("undelivered", "5", NEW_YEAR + 60));
    // Vonage may report in the query string of a GET as well.
    let fake_vonage = accepted_for(&s.vonage, US);
    let get = s.vonage.report(&fake_vonage, Status::new("delivered"), ReceiptKey::Vonage(&s.vonage_key(), "md5hash"));
    let fields: serde_json::Map<String, Value> = serde_json::from_slice(&get.body).unwrap();
    let query: Vec<(String, String)> = fields.into_iter().map(|(name, value)| (name, value.as_str().unwrap().to_string())).collect();
    let get = Report {
        method: reqwest::Method::GET,
        url: format!("{}?{}", get.url, serde_urlencoded::to_string(&query).unwrap()),
        headers: Vec::new(),
        body: Vec::new(),
    };
    assert_eq!(s.send(&get).await, 200, "a replay as a GET, taken and changing nothing");
    assert_eq!(row_of(&s.server, US), us);
}

#[actix_web::test]
async fn forged_receipts_are_refused_and_change_nothing() {
    let s = start("forged", &[("44", &["twilio"]), ("1", &["vonage"]), ("*", &["bird"])], &[]).await;
    let untouched = [
        sent_through(&s.server, UK, &s.name("twilio")).await,
        sent_through(&s.server, US, &s.name("vonage")).await,
        sent_through(&s.server, FRANCE, &s.name("bird")).await,
    ];
    let refused = |provider: &str| format!("otpgate_receipts_refused_total{{provider=\"{provider}\",reason=\"signature\"}}");
    let before = [
        metric(&s.server, &refused("twilio")).await,
        metric(&s.server, &refused("vonage")).await,
        metric(&s.server, &refused("messagebird")).await,
    ];
    let truncated = |report: &Report, header: &str| {
        let value = report.header(header).unwrap();
        report.clone().with_header(header, Some(value[..value.len() - 4].to_string()))
    };

    let twilio = s.report(&s.twilio, UK, Status::new("undelivered").error("30007"));
    let other_account = s.twilio.report(&accepted_for(&s.twilio, UK), Status::new("undelivered"), ReceiptKey::Twilio("another-auth-token"));
    let twilio_forged = [
        twilio.clone().tampered("undelivered", "delivered"),
        truncated(&twilio, "x-twilio-signature"),
        twilio.clone().with_header("x-twilio-signature", None),
        other_account,
    ];

    let vonage = s.report(&s.vonage, US, Status::new("failed").error("2"));
    let with_sig = |sig: Option<String>| {
        let mut fields: serde_json::Map<String, Value> = serde_json::from_slice(&vonage.body).unwrap();
        match sig {
            Some(sig) => fields.insert("sig".into(), json!(sig)),
            None => fields.remove("sig"),
        };
        Report { body: serde_json::to_vec(&fields).unwrap(), ..vonage.clone() }
    };
    let sig: String = serde_json::from_slice::<Value>(&vonage.body).unwrap()["sig"].as_str().unwrap().to_string();
    let vonage_forged = [
        vonage.clone().tampered("\"failed\"", "\"delivered\""),
        with_sig(Some(sig[..sig.len() - 4].to_string())),
        with_sig(None),
        s.vonage.report(&accepted_for(&s.vonage, US), Status::new("failed"), ReceiptKey::Vonage("another-secret", "md5hash")),
    ];

    let bird = s.report(&s.bird, FRANCE, Status::new("delivery_failed").error("5"));
    let (path, query) = bird.url.split_once('?').unwrap();
    let mut reordered: Vec<&str> = query.split('&').collect();
    reordered.reverse();
    let bird_forged = [
        bird.clone().tampered("delivery_failed", "delivered"),
        Report { url: format!("{path}?{}", reordered.join("&")), ..bird.clone() },
        truncated(&bird, "messagebird-signature-jwt"),
        bird.clone().with_header("messagebird-signature-jwt", None),
        s.bird.report(&accepted_for(&s.bird, FRANCE), Status::new("delivery_failed"), ReceiptKey::MessageBird("another-signing-key")),
    ];

    for forged in twilio_forged.iter().chain(&vonage_forged).chain(&bird_forged) {
        let (status, body) = forged.send(&s.server.url).await;
        assert_eq!(status, 403, "{forged:?}: {body}");
    }
    let rows = [row_of(&s.server, UK), row_of(&s.server, US), row_of(&s.server, FRANCE)];
    assert_eq!(rows, untouched, "nothing changed");
    let after = [
        metric(&s.server, &refused("twilio")).await,
        metric(&s.server, &refused("vonage")).await,
        metric(&s.server, &refused("messagebird")).await,
    ];
    assert_eq!([after[0] - before[0], after[1] - before[1], after[2] - before[2]], [4.0, 4.0, 5.0]);

    // Twilio and Vonage sort what they sign, so the order of the fields is theirs to choose.
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&twilio.body).unwrap();
    let reversed: Vec<(String, String)> = form.into_iter().rev().collect();
    let twilio_reordered = Report { body: serde_urlencoded::to_string(&reversed).unwrap().into_bytes(), ..twilio.clone() };
    assert_eq!(s.send(&twilio_reordered).await, 200);
    assert_eq!(s.send(&vonage).await, 200);
    assert_eq!(s.send(&bird).await, 200);
    let statuses = [UK, US, FRANCE].map(|phone| row_of(&s.server, phone).receipt_status);
    assert_eq!(statuses, ["undelivered", "undelivered", "undelivered"], "the genuine reports are taken");
}

#[actix_web::test]
async fn a_body_over_the_limit_is_refused_before_it_is_read() {
    let s = start("limit", &[("*", &["twilio"])], &[]).await;
    let too_large = "otpgate_receipts_refused_total{provider=\"twilio\",reason=\"too_large\"}";
    let before = metric(&s.server, too_large).await;
    // Signed by the instance's key, but without a message id: read whole, verified, and
    // only then found not to be a receipt.
    let url = format!("{PUBLIC_URL}/delivery/twilio");
    let signed = |size: usize| {
        let padding = "x".repeat(size - "Padding=".len());
        let signature = twilio_signature(&url, &[("Padding", &padding)], &s.twilio_key());
        let headers = vec![("content-type".into(), "application/x-www-form-urlencoded".into()), ("x-twilio-signature".into(), signature)];
        Report { method: reqwest::Method::POST, url: url.clone(), headers, body: format!("Padding={padding}").into_bytes() }
    };
    let at_limit = signed(64 * 1024);
    assert_eq!(at_limit.body.len(), 65536);
    assert_eq!(at_limit.send(&s.server.url).await.0, 400, "at the limit: read, its signature checked, then its fields");
    let (status, reply) = signed(64 * 1024 + 1).send(&s.server.url).await;
    assert_eq!((status, reply.as_str()), (413, "a delivery receipt is at most 65536 bytes"));

    // A length over the limit is refused without waiting for the body, which never comes.
    let address = s.server.url.trim_start_matches("http://").to_string();
    let head = format!("POST /delivery/twilio HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10485760\r\n\r\nMessageSid=SM1");
    assert!(raw_exchange(&address, head.as_bytes()).await.starts_with("HTTP/1.1 413"));
    // Without a length, reading stops at the limit.
    let chunk = "x".repeat(16 * 1024);
    let mut chunked =
        format!("POST /delivery/twilio HTTP/1.1\r\nHost: {address}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    for _ in 0..5 {
        chunked.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked.push_str("0\r\n\r\n");
    assert!(raw_exchange(&address, chunked.as_bytes()).await.starts_with("HTTP/1.1 413"));
    assert_eq!(metric(&s.server, too_large).await - before, 3.0);
}

/// Writes `request` on a new connection and reads what the service answers first.
async fn raw_exchange(address: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut reply)).await.expect("an answer within 30 s").unwrap();
    String::from_utf8_lossy(&reply[..read]).into_owned()
}

#[actix_web::test]
async fn a_replayed_receipt_changes_the_message_once() {
    let s = start("replay", &[("*", &["twilio"])], &[]).await;
    sent_through(&s.server, UK, &s.name("twilio")).await;
    let delivered = s.report(&s.twilio, UK, Status::new("delivered"));
    assert_eq!(s.send(&delivered).await, 200);
    let recorded = row_of(&s.server, UK);
    assert_eq!(recorded.receipt_status, "delivered");
    for _ in 0..4 {
        assert_eq!(s.send(&delivered).await, 200);
    }
    let concurrent = futures_util::future::join_all((0..5).map(|_| delivered.send(&s.server.url))).await;
    assert!(concurrent.iter().all(|(status, _)| *status == 200), "{concurrent:?}");
    // Receipts come out of order too: an earlier status does not move it back.
    assert_eq!(s.send(&s.report(&s.twilio, UK, Status::new("sent"))).await, 200);
    assert_eq!(s.send(&s.report(&s.twilio, UK, Status::new("undelivered").error("30008"))).await, 200);
    assert_eq!(row_of(&s.server, UK), recorded, "one change, whatever came after it");

    let instance = s.name("twilio");
    let receipts = format!("otpgate_delivery_receipts_total{{country=\"44\",instance=\"{instance}\",status=\"delivered\"}}");
    assert_eq!(metric(&s.server, &receipts).await, 1.0);
    let latency = format!("otpgate_delivery_receipt_seconds_count{{country=\"44\",instance=\"{instance}\"}}");
    assert_eq!(metric(&s.server, &latency).await, 1.0);
}

#[actix_web::test]
async fn an_undelivered_code_goes_out_again_through_the_next_instance() {
    let s = start("resend", &[("*", &["twilio", "vonage"])], &[]).await;
    let (twilio, vonage) = (s.name("twilio"), s.name("vonage"));
    let first = sent_through(&s.server, UK, &twilio).await;
    assert!(first.sealed, "kept for a resend: the route has another instance");
    let text = accepted_for(&s.twilio, UK).text;

    // Reported undelivered, again and again and at once: sent again once.
    let undelivered = s.report(&s.twilio, UK, Status::new("undelivered").error("30007"));
    let answers = futures_util::future::join_all((0..5).map(|_| undelivered.send(&s.server.url))).await;
    assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
    assert_eq!(metric(&s.server, &format!("otpgate_delivery_resends_total{{instance=\"{twilio}\"}}")).await, 1.0);
    let resent = async || Some(row_of(&s.server, UK)).filter(|row| row.status == "sent" && row.instance == vonage);
    let resent = eventually_some(30, resent).await.unwrap_or_else(|| panic!("not sent again: {:?}", row_of(&s.server, UK)));
    assert_eq!(accepted_for(&s.vonage, UK).text, text, "the same code");
    assert_eq!(resent.failed_via, twilio);
    assert_eq!(resent.receipt_status, "", "the new message has had no receipt yet");
    assert!(!resent.sealed, "no instance is left for another resend");
    assert_eq!(s.server.scalar(&format!("SELECT attempts FROM courier WHERE address = '{UK}'")), 2);

    // The last instance reports it undelivered too: there is nowhere left to send it.
    assert_eq!(s.send(&s.report(&s.vonage, UK, Status::new("failed").error("3"))).await, 200);
    let last = row_of(&s.server, UK);
    assert_eq!((last.status.as_str(), last.receipt_status.as_str()), ("sent", "undelivered"), "not queued again");
    assert_eq!(last.failed_via, format!("{twilio},{vonage}"));
    assert_eq!((s.twilio.requests(), s.vonage.requests()), (1, 1));
    assert_eq!(metric(&s.server, &format!("otpgate_delivery_resends_total{{instance=\"{vonage}\"}}")).await, 0.0);

    let reply = assert_ok(s.server.call(verify(UK, &code_in(&text))).await);
    assert!(reply["token"].is_string(), "the code sent twice still logs in: {reply}");
}

#[actix_web::test]
async fn a_resend_that_fails_keeps_the_code() {
    let s = start("resend_fails", &[("*", &["twilio", "vonage"])], &[]).await;
    sent_through(&s.server, UK, &s.name("twilio")).await;
    s.vonage.script("", Script::Unavailable);
    assert_eq!(s.send(&s.report(&s.twilio, UK, Status::new("undelivered"))).await, 200);
    let failed = async || Some(row_of(&s.server, UK)).filter(|row| row.status == "failed");
    let row = eventually_some(30, failed).await.unwrap_or_else(|| panic!("the resend did not end: {:?}", row_of(&s.server, UK)));
    assert_eq!((row.failed_via.as_str(), row.sealed), (s.name("twilio").as_str(), false));
    assert_eq!(s.vonage.requests(), 1, "the resend was tried");
    // Twilio's report may have been wrong, or the message may arrive late: the code it
    // carried still logs in.
    let reply = assert_ok(s.server.call(verify(UK, &code_in(&accepted_for(&s.twilio, UK).text))).await);
    assert!(reply["token"].is_string());
}

#[actix_web::test]
async fn a_used_code_is_not_sent_again() {
    let s = start("used", &[("*", &["twilio", "vonage"])], &[]).await;
    assert!(sent_through(&s.server, UK, &s.name("twilio")).await.sealed);
    assert_ok(s.server.call(verify(UK, &code_in(&accepted_for(&s.twilio, UK).text))).await);
    assert_eq!(s.send(&s.report(&s.twilio, UK, Status::new("undelivered"))).await, 200);
    let row = row_of(&s.server, UK);
    assert_eq!((row.status.as_str(), row.receipt_status.as_str()), ("sent", "undelivered"), "recorded, not queued again");
    assert_eq!(s.vonage.requests(), 0);
}

#[actix_web::test]
async fn an_expired_code_is_not_sent_again() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let s = start_on("expired", &[("*", &["twilio", "vonage"])], &[("OTP_TTL_SECS", "300")], Clock::manual(), dir).await;
    assert!(sent_through(&s.server, UK, &s.name("twilio")).await.sealed);
    s.server.clock.advance(Duration::from_secs(301));
    assert_eq!(s.send(&s.report(&s.twilio, UK, Status::new("undelivered"))).await, 200);
    let row = row_of(&s.server, UK);
    assert_eq!((row.status.as_str(), row.receipt_status.as_str()), ("sent", "undelivered"), "recorded, not queued again");
    assert_eq!(s.vonage.requests(), 0);
}

#[actix_web::test]
async fn a_route_left_without_another_instance_sends_nothing_again() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let first = start_on("shrunk", &[("*", &["twilio", "vonage"])], &[], Clock::system(), dir.clone()).await;
    assert!(sent_through(&first.server, UK, &first.name("twilio")).await.sealed);
    first.server.stop().await;
    // Restarted with the second instance taken off the route: the message is kept sealed,
    // but no instance remains to carry it.
    let fakes = (first.twilio.clone(), first.vonage.clone(), first.bird.clone());
    let second = start_with_fakes("shrunk", &[("*", &["twilio"])], &[], Clock::system(), dir, fakes).await;
    assert_eq!(second.send(&second.report(&second.twilio, UK, Status::new("undelivered"))).await, 200);
    let row = row_of(&second.server, UK);
    assert_eq!((row.status.as_str(), row.receipt_status.as_str()), ("sent", "undelivered"), "recorded, not queued again");
    assert_eq!(second.vonage.requests(), 0);
}

#[actix_web::test]
async fn a_receipt_for_a_message_we_do_not_know_is_ignored() {
    let s = start("unknown", &[("*", &["twilio"])], &[]).await;
    let ours = sent_through(&s.server, UK, &s.name("twilio")).await;
    let stranger = Accepted { id: "SM0123456789abcdef0123456789abcdef".into(), ..accepted_for(&s.twilio, UK) };
    let report = s.twilio.report(&stranger, Status::new("undelivered"), ReceiptKey::Twilio(&s.twilio_key()));
    assert_eq!(s.send(&report).await, 200);
    // A status nobody acts on (Twilio's `queued`, `sending`) is taken and changes nothing either.
    assert_eq!(s.send(&s.report(&s.twilio, UK, Status::new("sending"))).await, 200);
    assert_eq!(row_of(&s.server, UK), ours);
}

#[actix_web::test]
async fn without_public_url_no_receipts_are_taken() {
    let server = TestServer::start(&[]).await;
    let post = || server.client().post(format!("{}/delivery/twilio", server.url)).body("MessageSid=SM1&MessageStatus=delivered").send();
    for _ in 0..2 {
        assert_eq!(post().await.unwrap().status(), 404);
    }
    let handshake = format!("{}/delivery/whatsapp?hub.mode=subscribe&hub.challenge=1&hub.verify_token=t", server.url);
    assert_eq!(server.client().get(handshake).send().await.unwrap().status(), 404);
    assert_eq!(server.logs().matches("delivery receipts are refused: PUBLIC_URL is not set").count(), 1, "said once");
}

#[actix_web::test]
async fn whatsapp_status_notifications_and_the_webhook_check() {
    let (app_secret, verify_token) = ("whatsapp-app-secret", "whatsapp-verify-token");
    let (wa, sms) = (FakeProvider::start(Provider::WhatsApp), FakeProvider::start(Provider::Twilio));
    let providers = json!({
        "wa_check": {"kind": "whatsapp", "phone_number_id": "106540352242922", "access_token": "wa-access-token",
            "template": "otp", "app_secret": app_secret, "verify_token": verify_token, "base_url": wa.url()},
        "sms_check": {"kind": "twilio", "account_sid": "AC9", "auth_token": "sms-check-token", "from": "Example", "base_url": sms.url()},
    })
    .to_string();
    let env = [
        ("SMS_PROVIDERS", providers.as_str()),
        ("SMS_ROUTES", r#"{"*": ["wa_check", "sms_check"]}"#),
        ("PUBLIC_URL", PUBLIC_URL),
        ("PHONE_MOBILE_ONLY", "false"),
    ];
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(&env, FakeUpstream::start(), dir, Delivery::Configured).await;
    let refused = "otpgate_receipts_refused_total{provider=\"whatsapp\",reason=\"signature\"}";
    let before = metric(&server, refused).await;

    // WhatsApp takes the code; the user turns out not to be on WhatsApp.
    assert_ok(server.call(login(UK)).await);
    let taken = wa.accepted();
    assert_eq!(taken.len(), 1);
    let wamid = taken[0].id.clone();
    assert!(wamid.starts_with("wamid."), "{wamid}");
    assert!(eventually(30, async || row_of(&server, UK).instance == "wa_check").await);
    let untouched = row_of(&server, UK);

    let url = format!("{PUBLIC_URL}/delivery/whatsapp");
    let report = whatsapp_report(&url, &wamid, UK, Status::new("failed").error("131026").at(NEW_YEAR), app_secret);
    let forged = [
        report.clone().tampered("\"failed\"", "\"delivered\""),
        report.clone().with_header("x-hub-signature-256", None),
        whatsapp_report(&url, &wamid, UK, Status::new("failed"), "another-app-secret"),
    ];
    for forged in &forged {
        assert_eq!(forged.send(&server.url).await.0, 403);
    }
    assert_eq!(row_of(&server, UK), untouched);
    assert!(sms.accepted().is_empty(), "a forged failure sends nothing");
    assert_eq!(report.send(&server.url).await.0, 200);
    assert!(eventually(30, async || sms.accepted().len() == 1).await, "the failed WhatsApp message falls back to SMS at once");
    // The WhatsApp fake records the code its template carried as the text.
    let (code, resent) = (&taken[0].text, sms.accepted()[0].text.clone());
    assert!(resent.ends_with(code.as_str()), "the same code by SMS: {resent}");
    // The row now records the second instance's send, and that WhatsApp failed it.
    let sms_id = sms.accepted()[0].id.clone();
    assert!(eventually(30, async || row_of(&server, UK).instance == "sms_check").await);
    let row = row_of(&server, UK);
    assert_eq!((row.status.as_str(), row.failed_via.as_str(), row.receipt_status.as_str()), ("sent", "wa_check", ""));
    assert_eq!(server.column(&format!("SELECT provider_message_id FROM courier WHERE address = '{UK}'")), [sms_id]);

    // Meta registers the webhook with a GET that must echo its challenge.
    let check =
        |token: &str| format!("{}/delivery/whatsapp?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={token}", server.url);
    let answer = server.client().get(check(verify_token)).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "1158201444");
    assert_eq!(server.client().get(check("a-guess")).send().await.unwrap().status(), 403);
    assert_eq!(metric(&server, refused).await - before, 4.0);
}
