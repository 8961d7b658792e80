//! Fakes of the providers on loopback, speaking each one's documented request and reply
//! shapes (see ../shared/providers-reference.md): Twilio's Messages API, Vonage's SMS
//! API, MessageBird's REST API, Twilio's Calls API (voice) and the WhatsApp Cloud API.
//! Each can be scripted per number prefix to accept, fail for a while (HTTP 503 or a
//! throttle), refuse the number or the account's credentials, not reach it on its
//! channel, or never answer; each records what it accepted with the message id it gave.
//! The voice and WhatsApp fakes also refuse a request of the wrong shape as their APIs
//! do. Each reports the status of an accepted message to the callback URL the sender
//! gave, as the provider does: Twilio a signed form POST, Vonage a signed JSON DLR,
//! MessageBird a GET with a signed JWT (WhatsApp's signed status notification is built
//! by [`whatsapp_report`]). The signatures are computed here from each provider's
//! published scheme, not by the service's own code.

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Twilio,
    Vonage,
    MessageBird,
    /// Twilio's Calls API (`Calls.json`, TwiML inline).
    TwilioVoice,
    /// The WhatsApp Cloud API (`POST /{version}/{phone-number-id}/messages`).
    WhatsApp,
}

/// How the fake answers a message to a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Accept,
    /// A failure worth trying elsewhere: HTTP 503 (Vonage: status 1, throttled; WhatsApp:
    /// error 130429, rate limit hit).
    Unavailable,
    /// The number is refused for good: Twilio 21211, Vonage status 3, MessageBird error 9,
    /// WhatsApp error 100 (invalid parameter).
    RefuseNumber,
    /// The account's credentials are refused: HTTP 401 (Vonage: status 4).
    RefuseCredentials,
    /// The number cannot get messages on this channel: WhatsApp error 131026 (not a
    /// WhatsApp user); the other providers answer it as [`Script::RefuseNumber`].
    Undeliverable,
    /// Received and never answered: the sender's timeout ends it.
    Hang,
    /// Taken (recorded as accepted, as the provider would send it) and never answered:
    /// the sender cannot know the message went out.
    AcceptAndHang,
}

/// A message the fake accepted.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// E.164 digits, without `+`.
    pub to: String,
    /// The SMS text; a call's TwiML; the code a WhatsApp template was filled with.
    pub text: String,
    /// The id the fake answered with, which receipts name.
    pub id: String,
    /// Where the sender asked for status reports (`StatusCallback`, `callback`, `reportUrl`).
    pub callback: Option<String>,
    /// The request as it came: its path, `Authorization` and `Content-Type` headers, and
    /// its fields (a JSON body as sent, a form as an object of its fields).
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub fields: Value,
}

pub struct FakeProvider {
    pub provider: Provider,
    pub addr: SocketAddr,
    state: web::Data<State>,
    handle: ServerHandle,
}

struct State {
    provider: Provider,
    /// Longest matching prefix wins; `""` is the default.
    scripts: Mutex<HashMap<String, Script>>,
    accepted: Mutex<Vec<Accepted>>,
    /// The only access token the WhatsApp fake takes, once set; any other is invalid.
    valid_token: Mutex<Option<String>>,
    /// Every request that reached the send endpoint, answered or not.
    requests: AtomicU64,
    next_id: AtomicU64,
}

impl FakeProvider {
    /// Starts on a free loopback port, accepting every message; inside an actix runtime.
    pub fn start(provider: Provider) -> Arc<FakeProvider> {
        let state = web::Data::new(State {
            provider,
            scripts: Mutex::new(HashMap::from([(String::new(), Script::Accept)])),
            accepted: Mutex::default(),
            valid_token: Mutex::default(),
            requests: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        });
        let shared = state.clone();
        let server = HttpServer::new(move || App::new().app_data(shared.clone()).default_service(web::to(handle)))
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")
            .expect("bind fake provider");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Arc::new(FakeProvider { provider, addr, state, handle })
    }

    /// The base URL the provider's instance is configured with (`base_url`; WhatsApp's
    /// holds the Graph API version, as its default does).
    pub fn url(&self) -> String {
        match self.provider {
            Provider::WhatsApp => format!("http://{}/{WHATSAPP_VERSION}", self.addr),
            _ => format!("http://{}", self.addr),
        }
    }

    /// From now on, numbers starting with `prefix` (E.164 digits; `""` for all others) get `script`.
    pub fn script(&self, prefix: &str, script: Script) {
        self.state.scripts.lock().unwrap().insert(prefix.to_string(), script);
    }

    /// From now on the WhatsApp fake takes only this access token, as Meta takes only the
    /// tokens it issued: any other is answered 401, error 190.
    pub fn take_only_token(&self, token: &str) {
        *self.state.valid_token.lock().unwrap() = Some(token.to_string());
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.state.accepted.lock().unwrap().clone()
    }

    /// Requests to the send endpoint so far, refused and unanswered ones included.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// The Graph API version the WhatsApp fake serves.
const WHATSAPP_VERSION: &str = "v21.0";

/// The request's fields: a JSON body as sent, a form as an object of its fields.
fn fields_of(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok().or_else(|| {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
        Some(Value::Object(form.into_iter().map(|(k, v)| (k, json!(v))).collect()))
    })
}

/// A message as each provider's send request carries it: recipient, text, callback.
fn read_message(provider: Provider, fields: &Value) -> Option<(String, String, Option<String>)> {
    let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_string);
    match provider {
        Provider::Twilio => Some((text("To")?.trim_start_matches('+').to_string(), text("Body")?, text("StatusCallback"))),
        Provider::TwilioVoice => Some((text("To")?.trim_start_matches('+').to_string(), text("Twiml")?, text("StatusCallback"))),
        Provider::Vonage => Some((text("to")?, text("text")?, text("callback"))),
        Provider::MessageBird => {
            let to =
                fields["recipients"][0].as_str().map(str::to_string).or_else(|| fields["recipients"][0].as_u64().map(|n| n.to_string()))?;
            Some((to, fields["body"].as_str()?.to_string(), fields["reportUrl"].as_str().map(str::to_string)))
        }
        // Status reports go to the webhook registered at Meta, not per message.
        Provider::WhatsApp => Some((text("to")?.trim_start_matches('+').to_string(), whatsapp_code(fields)?, None)),
    }
}

/// The code an authentication template carries: in its body's parameter and in its
/// copy-code button (a URL button, `index` "0" or 0), the same in both, at most 15 characters.
fn whatsapp_code(fields: &Value) -> Option<String> {
    let components = fields["template"]["components"].as_array()?;
    let of_type = |kind: &str| components.iter().find(|c| c["type"] == kind);
    let body = of_type("body")?["parameters"][0].clone();
    let button = of_type("button")?;
    let index_zero = button["index"] == "0" || button["index"] == 0;
    let in_button = button["parameters"][0].clone();
    let code = body["text"].as_str()?;
    let shaped = body["type"] == "text" && button["sub_type"] == "url" && index_zero && in_button["type"] == "text";
    (shaped && in_button["text"] == code && code.chars().count() <= 15).then(|| code.to_string())
}

/// What the WhatsApp Cloud API answers a request it cannot take as an authentication
/// template message: an invalid token, or a malformed message.
fn whatsapp_refusal(request: &HttpRequest, fields: &Value, valid_token: Option<&str>) -> Option<HttpResponse> {
    let bearer = request.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let valid = bearer.is_some_and(|token| !token.trim().is_empty() && valid_token.is_none_or(|valid| valid == token));
    if !valid {
        return Some(HttpResponse::Unauthorized().json(json!({"error": {
            "message": "Invalid OAuth access token - Cannot parse access token", "type": "OAuthException", "code": 190, "fbtrace_id": "AbCdEf12345"
        }})));
    }
    let shaped = fields["messaging_product"] == "whatsapp"
        && fields["type"] == "template"
        && fields["template"]["name"].as_str().is_some_and(|name| !name.is_empty())
        && fields["template"]["language"]["code"].as_str().is_some_and(|code| !code.is_empty())
        && whatsapp_code(fields).is_some();
    (!shaped).then(|| {
        whatsapp_error(
            100,
            "(#100) Invalid parameter",
            "the message is not an authentication template with the code in its body and button",
        )
    })
}

fn whatsapp_error(code: u32, message: &str, details: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": {
        "message": message, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details}, "fbtrace_id": "AbCdEf12345"
    }}))
}

/// What Twilio answers a call it cannot place: no `To` or `From`, not exactly one of
/// `Url` and `Twiml`, or TwiML that is not a `<Response>` within 4,000 characters.
fn call_refusal(fields: &Value) -> Option<HttpResponse> {
    let has = |name: &str| fields.get(name).and_then(Value::as_str).is_some_and(|v| !v.is_empty());
    let twiml = fields.get("Twiml").and_then(Value::as_str).unwrap_or_default();
    let twiml_ok = twiml.is_empty() || (twiml.starts_with("<Response>") && twiml.ends_with("</Response>") && twiml.chars().count() <= 4000);
    let shaped = has("To") && has("From") && (has("Url") != has("Twiml")) && twiml_ok;
    (!shaped).then(|| {
        HttpResponse::BadRequest()
            .json(json!({"code": 20001, "message": "Bad request", "more_info": "https://www.twilio.com/docs/errors/20001", "status": 400}))
    })
}

async fn handle(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let path = request.path().to_string();
    let segments: Vec<&str> = path.split('/').collect();
    let is_send = match state.provider {
        Provider::Twilio => path.starts_with("/2010-04-01/Accounts/") && path.ends_with("/Messages.json"),
        Provider::TwilioVoice => path.starts_with("/2010-04-01/Accounts/") && path.ends_with("/Calls.json"),
        Provider::Vonage => path == "/sms/json",
        Provider::MessageBird => path == "/messages",
        Provider::WhatsApp => {
            segments.len() == 4 && segments[1] == WHATSAPP_VERSION && !segments[2].is_empty() && segments[3] == "messages"
        }
    };
    if !is_send || request.method() != actix_web::http::Method::POST {
        return HttpResponse::NotFound().finish();
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let fields = fields_of(&body).unwrap_or(Value::Null);
    let refusal = match state.provider {
        Provider::WhatsApp => whatsapp_refusal(&request, &fields, state.valid_token.lock().unwrap().as_deref()),
        Provider::TwilioVoice => call_refusal(&fields),
        _ => None,
    };
    if let Some(refusal) = refusal {
        return refusal;
    }
    let Some((to, text, callback)) = read_message(state.provider, &fields) else {
        return HttpResponse::BadRequest().body("unreadable message");
    };
    let script = {
        let scripts = state.scripts.lock().unwrap();
        let best = scripts.iter().filter(|(prefix, _)| to.starts_with(prefix.as_str())).max_by_key(|(prefix, _)| prefix.len());
        best.map_or(Script::Accept, |(_, script)| *script)
    };
    let n = state.next_id.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    match (script, state.provider) {
        (Script::Hang, _) => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        (Script::AcceptAndHang, _) => {
            let accepted = Accepted {
                to,
                text,
                id: format!("held-{n}"),
                callback,
                path: path.clone(),
                authorization: header("authorization"),
                content_type: header("content-type"),
                fields: fields.clone(),
            };
            state.accepted.lock().unwrap().push(accepted);
            std::future::pending::<()>().await;
            unreachable!()
        }
        (Script::Accept, provider) => {
            let id = match provider {
                Provider::Twilio => format!("SM{n:032x}"),
                Provider::TwilioVoice => format!("CA{n:032x}"),
                Provider::Vonage => format!("{n:016X}"),
                Provider::MessageBird => format!("{n:032x}"),
                Provider::WhatsApp => format!("wamid.HBgL{n:024X}"),
            };
            let accepted = Accepted {
                to: to.clone(),
                text: text.clone(),
                id: id.clone(),
                callback,
                path: path.clone(),
                authorization: header("authorization"),
                content_type: header("content-type"),
                fields: fields.clone(),
            };
            state.accepted.lock().unwrap().push(accepted);
            match provider {
                Provider::Twilio => HttpResponse::Created().json(json!({
                    "sid": id, "status": "queued", "to": format!("+{to}"), "body": text, "error_code": null,
                    "direction": "outbound-api", "api_version": "2010-04-01", "num_segments": "1",
                })),
                Provider::TwilioVoice => HttpResponse::Created().json(json!({
                    "sid": id, "status": "queued", "to": format!("+{to}"), "from": fields["From"], "direction": "outbound-api",
                    "api_version": "2010-04-01", "answered_by": null, "duration": null,
                })),
                Provider::Vonage => HttpResponse::Ok().json(json!({
                    "message-count": "1",
                    "messages": [{"to": to, "message-id": id, "status": "0", "remaining-balance": "3.14", "message-price": "0.03", "network": "23410"}],
                })),
                Provider::MessageBird => HttpResponse::Created().json(json!({
                    "id": id, "href": format!("https://rest.messagebird.com/messages/{id}"), "direction": "mt", "type": "sms",
                    "body": text, "recipients": {"totalCount": 1, "totalSentCount": 1, "items": [{"recipient": to.parse::<u64>().unwrap_or(0), "status": "sent"}]},
                })),
                Provider::WhatsApp => HttpResponse::Ok().json(json!({
                    "messaging_product": "whatsapp", "contacts": [{"input": fields["to"], "wa_id": to}], "messages": [{"id": id}],
                })),
            }
        }
        (Script::Unavailable, Provider::Vonage) => {
            HttpResponse::Ok().json(json!({"message-count": "1", "messages": [{"status": "1", "error-text": "Throttled"}]}))
        }
        (Script::Unavailable, Provider::Twilio | Provider::TwilioVoice) => HttpResponse::ServiceUnavailable()
            .json(json!({"code": 20503, "message": "Service unavailable", "more_info": "https://www.twilio.com/docs/errors/20503", "status": 503})),
        (Script::Unavailable, Provider::MessageBird) => {
            HttpResponse::ServiceUnavailable().json(json!({"errors": [{"code": 99, "description": "internal error", "parameter": null}]}))
        }
        (Script::Unavailable, Provider::WhatsApp) => {
            whatsapp_error(130429, "(#130429) Rate limit hit", "Cloud API message throughput has been reached.")
        }
        (Script::Undeliverable, Provider::WhatsApp) => whatsapp_error(131026, "(#131026) Message Undeliverable.", "Message Undeliverable."),
        (Script::RefuseNumber | Script::Undeliverable, Provider::Twilio | Provider::TwilioVoice) => HttpResponse::BadRequest().json(json!({
            "code": 21211, "message": "Invalid 'To' Phone Number", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400,
        })),
        (Script::RefuseNumber | Script::Undeliverable, Provider::Vonage) => {
            HttpResponse::Ok().json(json!({"message-count": "1", "messages": [{"status": "3", "error-text": "Invalid Message"}]}))
        }
        (Script::RefuseCredentials, Provider::Twilio | Provider::TwilioVoice) => HttpResponse::Unauthorized()
            .json(json!({"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401})),
        (Script::RefuseCredentials, Provider::Vonage) => {
            HttpResponse::Ok().json(json!({"message-count": "1", "messages": [{"status": "4", "error-text": "Bad Credentials"}]}))
        }
        (Script::RefuseCredentials, Provider::MessageBird) => HttpResponse::Unauthorized()
            .json(json!({"errors": [{"code": 2, "description": "Request not allowed (incorrect access_key)", "parameter": "access_key"}]})),
        (Script::RefuseCredentials, Provider::WhatsApp) => HttpResponse::Unauthorized().json(json!({"error": {
            "message": "Error validating access token: Session has expired.", "type": "OAuthException", "code": 190, "fbtrace_id": "AbC123",
        }})),
        (Script::RefuseNumber | Script::Undeliverable, Provider::MessageBird) => HttpResponse::UnprocessableEntity()
            .json(json!({"errors": [{"code": 9, "description": "no (correct) recipients found", "parameter": "recipients"}]})),
        (Script::RefuseNumber, Provider::WhatsApp) => whatsapp_error(100, "(#100) Invalid parameter", "Invalid phone number."),
    }
}

/// What a status report says of a message.
#[derive(Clone, Debug)]
pub struct Status<'a> {
    /// In the provider's own words: Twilio `delivered`, `undelivered`, ...; Vonage
    /// `delivered`, `failed`, `expired`, `rejected`; MessageBird `delivered`,
    /// `delivery_failed`; WhatsApp `sent`, `delivered`, `failed`.
    pub status: &'a str,
    pub error_code: Option<&'a str>,
    /// Unix seconds of the status, for the providers that send one (not Twilio).
    pub at: Option<i64>,
}

impl<'a> Status<'a> {
    pub fn new(status: &'a str) -> Status<'a> {
        Status { status, error_code: None, at: None }
    }

    pub fn error(self, code: &'a str) -> Status<'a> {
        Status { error_code: Some(code), ..self }
    }

    pub fn at(self, at: i64) -> Status<'a> {
        Status { at: Some(at), ..self }
    }
}

/// A signed status report, ready to send; its parts are open so that a test can tamper
/// with them first.
#[derive(Clone, Debug)]
pub struct Report {
    pub method: reqwest::Method,
    /// The URL the provider was given (under `PUBLIC_URL`), which signatures cover; it is
    /// sent to the service's own address with the same path and query.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Report {
    /// Posts it to the service at `server` (its base URL): its status and reply body.
    pub async fn send(&self, server: &str) -> (u16, String) {
        let after_scheme = self.url.find("://").map_or(0, |at| at + 3);
        let path_and_query = self.url[after_scheme..].find('/').map_or("/", |at| &self.url[after_scheme + at..]);
        let mut request = reqwest::Client::new().request(self.method.clone(), format!("{server}{path_and_query}"));
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.body(self.body.clone()).send().await.expect("the service answers");
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, _)| header.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// The report with a header's value replaced (`None`: left out).
    pub fn with_header(mut self, name: &str, value: Option<String>) -> Report {
        self.headers.retain(|(header, _)| !header.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            self.headers.push((name.to_string(), value));
        }
        self
    }

    /// The report with `from` replaced by `to` in its body and URL, the signature kept.
    pub fn tampered(mut self, from: &str, to: &str) -> Report {
        let body = String::from_utf8(self.body).expect("a text body");
        assert!(body.contains(from) || self.url.contains(from), "nothing to tamper with: {from}");
        self.body = body.replace(from, to).into_bytes();
        self.url = self.url.replace(from, to);
        self
    }
}

/// How Twilio, Vonage and MessageBird sign their reports (the key of the instance's
/// settings: `auth_token`, `signature_secret` and `signature_method`, `signing_key`).
#[derive(Clone, Copy, Debug)]
pub enum ReceiptKey<'a> {
    Twilio(&'a str),
    /// The secret and the dashboard's signature method (`md5hash` or `sha256` here).
    Vonage(&'a str, &'a str),
    MessageBird(&'a str),
}

impl FakeProvider {
    /// The signed report of `status` for a message this fake accepted, to the callback URL
    /// the sender gave with it.
    pub fn report(&self, message: &Accepted, status: Status<'_>, key: ReceiptKey<'_>) -> Report {
        let url = message.callback.clone().expect("the sender asked for status reports");
        let now = unix_now();
        match (self.provider, key) {
            (Provider::Twilio, ReceiptKey::Twilio(auth_token)) => {
                let to = format!("+{}", message.to);
                let mut params = vec![
                    ("AccountSid", "AC1"),
                    ("ApiVersion", "2010-04-01"),
                    ("From", "Example"),
                    ("To", to.as_str()),
                    ("MessageSid", message.id.as_str()),
                    ("SmsSid", message.id.as_str()),
                    ("MessageStatus", status.status),
                    ("SmsStatus", status.status),
                ];
                params.extend(status.error_code.map(|code| ("ErrorCode", code)));
                Report {
                    method: reqwest::Method::POST,
                    headers: vec![
                        ("content-type".into(), "application/x-www-form-urlencoded".into()),
                        ("x-twilio-signature".into(), twilio_signature(&url, &params, auth_token)),
                    ],
                    body: serde_urlencoded::to_string(&params).unwrap().into_bytes(),
                    url,
                }
            }
            (Provider::Vonage, ReceiptKey::Vonage(secret, method)) => {
                let at = status.at.map_or_else(|| vonage_time(now), vonage_time);
                let now_text = now.to_string();
                let nonce = format!("{:032x}", rand::random::<u128>());
                let mut fields = vec![
                    ("msisdn", message.to.as_str()),
                    ("to", "Example"),
                    ("network-code", "23410"),
                    ("messageId", message.id.as_str()),
                    ("price", "0.03330000"),
                    ("status", status.status),
                    ("scts", "2001011400"),
                    ("err-code", status.error_code.unwrap_or("0")),
                    ("api-key", "vkey"),
                    ("message-timestamp", at.as_str()),
                    ("timestamp", now_text.as_str()),
                    ("nonce", nonce.as_str()),
                ];
                let sig = vonage_signature(&fields, secret, method);
                fields.push(("sig", sig.as_str()));
                let body: serde_json::Map<String, Value> = fields.iter().map(|(name, value)| (name.to_string(), json!(value))).collect();
                Report {
                    method: reqwest::Method::POST,
                    url,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: serde_json::to_vec(&body).unwrap(),
                }
            }
            (Provider::MessageBird, ReceiptKey::MessageBird(signing_key)) => {
                let mut query = vec![
                    ("id", message.id.clone()),
                    ("reference", String::new()),
                    ("recipient", message.to.clone()),
                    ("status", status.status.to_string()),
                    ("statusDatetime", rfc3339(status.at.unwrap_or(now))),
                ];
                query.extend(status.error_code.map(|code| ("statusErrorCode", code.to_string())));
                query.extend(status.error_code.map(|_| ("statusReason", "unknown subscriber".to_string())));
                let url = format!("{url}?{}", serde_urlencoded::to_string(&query).unwrap());
                let token = messagebird_jwt(&url, b"", signing_key, now);
                Report { method: reqwest::Method::GET, headers: vec![("messagebird-signature-jwt".into(), token)], body: Vec::new(), url }
            }
            (provider, key) => panic!("{provider:?} does not sign with {key:?}"),
        }
    }
}

/// Meta's status notification for a WhatsApp message, signed with the app secret, to the
/// webhook at `url`.
pub fn whatsapp_report(url: &str, message_id: &str, recipient: &str, status: Status<'_>, app_secret: &str) -> Report {
    let mut entry = json!({
        "id": message_id,
        "status": status.status,
        "timestamp": status.at.unwrap_or_else(unix_now).to_string(),
        "recipient_id": recipient,
    });
    if let Some(code) = status.error_code {
        entry["errors"] =
            json!([{"code": code.parse::<u64>().unwrap_or(0), "title": "Message undeliverable", "message": "Message undeliverable"}]);
    }
    let notification = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "statuses": [entry],
        }}]}],
    });
    let body = serde_json::to_vec(&notification).unwrap();
    let signature = whatsapp_signature(&body, app_secret);
    Report {
        method: reqwest::Method::POST,
        url: url.to_string(),
        headers: vec![("content-type".into(), "application/json".into()), ("x-hub-signature-256".into(), signature)],
        body,
    }
}

/// `X-Hub-Signature-256`: `sha256=` and the hex HMAC-SHA256 of the raw body by the app secret.
pub fn whatsapp_signature(body: &[u8], app_secret: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `X-Twilio-Signature`: Base64 HMAC-SHA1 by the auth token of the URL followed by each
/// parameter's name and value, sorted by name (a name's values sorted too).
pub fn twilio_signature(url: &str, params: &[(&str, &str)], auth_token: &str) -> String {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        sorted.entry(name).or_default().insert(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    for (name, values) in sorted {
        for value in values {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Vonage's `sig`: `&name=value` for every field, sorted by name, `&` and `=` in values
/// made `_`; then the MD5 of that and the secret (`md5hash`) or its HMAC-SHA256 (`sha256`).
pub fn vonage_signature(fields: &[(&str, &str)], secret: &str, method: &str) -> String {
    let mut sorted: Vec<&(&str, &str)> = fields.iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    let text: String = sorted.iter().map(|(name, value)| format!("&{name}={}", value.replace(['&', '='], "_"))).collect();
    match method {
        "md5hash" => hex::encode(md5::Md5::digest(format!("{text}{secret}").as_bytes())),
        "sha256" => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(text.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        other => panic!("the fake signs with md5hash or sha256, not {other}"),
    }
}

/// `MessageBird-Signature-JWT`: HS256 by the signing key, binding the full URL and the
/// body by their SHA-256, valid for a minute from `now`.
pub fn messagebird_jwt(url: &str, body: &[u8], signing_key: &str, now: i64) -> String {
    let mut claims = json!({
        "iss": "MessageBird",
        "nbf": now,
        "exp": now + 60,
        "jti": format!("{:032x}", rand::random::<u128>()),
        "url_hash": hex::encode(sha2::Sha256::digest(url.as_bytes())),
    });
    if !body.is_empty() {
        claims["payload_hash"] = json!(hex::encode(sha2::Sha256::digest(body)));
    }
    let key = jsonwebtoken::EncodingKey::from_secret(signing_key.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).unwrap()
}

/// `2020-01-01 12:00:00`, UTC: Vonage's `message-timestamp`.
fn vonage_time(at: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(at).unwrap();
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", at.year(), u8::from(at.month()), at.day(), at.hour(), at.minute(), at.second())
}

/// RFC 3339 in UTC: MessageBird's `statusDatetime`.
fn rfc3339(at: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(at).unwrap();
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00", at.year(), u8::from(at.month()), at.day(), at.hour(), at.minute(), at.second())
}
