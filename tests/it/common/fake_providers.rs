//! Fakes of the SMS providers on loopback, speaking each one's documented request and
//! reply shapes (see ../shared/providers-reference.md): Twilio's Messages API, Vonage's
//! SMS API and MessageBird's REST API. Each can be scripted per number prefix to accept,
//! fail for a while (HTTP 503 or a throttle), refuse the number, or never answer; each
//! records what it accepted with the message id it gave.

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Twilio,
    Vonage,
    MessageBird,
}

/// How the fake answers a message to a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Accept,
    /// A failure worth trying elsewhere: HTTP 503 (Vonage: status 1, throttled).
    Unavailable,
    /// The number is refused for good: Twilio 21211, Vonage status 3, MessageBird error 9.
    RefuseNumber,
    /// The account's credentials are refused: HTTP 401 (Vonage: status 4).
    RefuseCredentials,
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
    pub text: String,
    /// The id the fake answered with, which receipts name.
    pub id: String,
    /// Where the sender asked for status reports (`StatusCallback`, `callback`, `reportUrl`).
    pub callback: Option<String>,
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

    /// The base URL the provider's instance is configured with (`base_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, numbers starting with `prefix` (E.164 digits; `""` for all others) get `script`.
    pub fn script(&self, prefix: &str, script: Script) {
        self.state.scripts.lock().unwrap().insert(prefix.to_string(), script);
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

/// A message as each provider's send request carries it: recipient, text, callback.
fn read_message(provider: Provider, body: &[u8]) -> Option<(String, String, Option<String>)> {
    match provider {
        Provider::Twilio => {
            let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).ok()?;
            let to = form.get("To")?.trim_start_matches('+').to_string();
            Some((to, form.get("Body")?.clone(), form.get("StatusCallback").cloned()))
        }
        Provider::Vonage => {
            let fields: HashMap<String, Value> = serde_json::from_slice(body).ok().or_else(|| {
                serde_urlencoded::from_bytes::<HashMap<String, String>>(body)
                    .ok()
                    .map(|f| f.into_iter().map(|(k, v)| (k, json!(v))).collect())
            })?;
            let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_string);
            Some((text("to")?, text("text")?, text("callback")))
        }
        Provider::MessageBird => {
            let body: Value = serde_json::from_slice(body).ok()?;
            let to =
                body["recipients"][0].as_str().map(str::to_string).or_else(|| body["recipients"][0].as_u64().map(|n| n.to_string()))?;
            Some((to, body["body"].as_str()?.to_string(), body["reportUrl"].as_str().map(str::to_string)))
        }
    }
}

async fn handle(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let path = request.path();
    let is_send = match state.provider {
        Provider::Twilio => path.starts_with("/2010-04-01/Accounts/") && path.ends_with("/Messages.json"),
        Provider::Vonage => path == "/sms/json",
        Provider::MessageBird => path == "/messages",
    };
    if !is_send || request.method() != actix_web::http::Method::POST {
        return HttpResponse::NotFound().finish();
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let Some((to, text, callback)) = read_message(state.provider, &body) else {
        return HttpResponse::BadRequest().body("unreadable message");
    };
    let script = {
        let scripts = state.scripts.lock().unwrap();
        let best = scripts.iter().filter(|(prefix, _)| to.starts_with(prefix.as_str())).max_by_key(|(prefix, _)| prefix.len());
        best.map_or(Script::Accept, |(_, script)| *script)
    };
    let n = state.next_id.fetch_add(1, Ordering::SeqCst);
    match (script, state.provider) {
        (Script::Hang, _) => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        (Script::AcceptAndHang, _) => {
            state.accepted.lock().unwrap().push(Accepted { to, text, id: format!("held-{n}"), callback });
            std::future::pending::<()>().await;
            unreachable!()
        }
        (Script::Accept, provider) => {
            let id = match provider {
                Provider::Twilio => format!("SM{n:032x}"),
                Provider::Vonage => format!("{n:016X}"),
                Provider::MessageBird => format!("{n:032x}"),
            };
            state.accepted.lock().unwrap().push(Accepted { to: to.clone(), text: text.clone(), id: id.clone(), callback });
            match provider {
                Provider::Twilio => HttpResponse::Created().json(json!({
                    "sid": id, "status": "queued", "to": format!("+{to}"), "body": text, "error_code": null,
                    "direction": "outbound-api", "api_version": "2010-04-01", "num_segments": "1",
                })),
                Provider::Vonage => HttpResponse::Ok().json(json!({
                    "message-count": "1",
                    "messages": [{"to": to, "message-id": id, "status": "0", "remaining-balance": "3.14", "message-price": "0.03", "network": "23410"}],
                })),
                Provider::MessageBird => HttpResponse::Created().json(json!({
                    "id": id, "href": format!("https://rest.messagebird.com/messages/{id}"), "direction": "mt", "type": "sms",
                    "body": text, "recipients": {"totalCount": 1, "totalSentCount": 1, "items": [{"recipient": to.parse::<u64>().unwrap_or(0), "status": "sent"}]},
                })),
            }
        }
        (Script::Unavailable, Provider::Vonage) => {
            HttpResponse::Ok().json(json!({"message-count": "1", "messages": [{"status": "1", "error-text": "Throttled"}]}))
        }
        (Script::Unavailable, Provider::Twilio) => HttpResponse::ServiceUnavailable()
            .json(json!({"code": 20503, "message": "Service unavailable", "more_info": "https://www.twilio.com/docs/errors/20503", "status": 503})),
        (Script::Unavailable, Provider::MessageBird) => {
            HttpResponse::ServiceUnavailable().json(json!({"errors": [{"code": 99, "description": "internal error", "parameter": null}]}))
        }
        (Script::RefuseNumber, Provider::Twilio) => HttpResponse::BadRequest().json(json!({
            "code": 21211, "message": "Invalid 'To' Phone Number", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400,
        })),
        (Script::RefuseNumber, Provider::Vonage) => {
            HttpResponse::Ok().json(json!({"message-count": "1", "messages": [{"status": "3", "error-text": "Invalid Message"}]}))
        }
        (Script::RefuseCredentials, Provider::Twilio) => HttpResponse::Unauthorized()
            .json(json!({"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401})),
        (Script::RefuseCredentials, Provider::Vonage) => {
            HttpResponse::Ok().json(json!({"message-count": "1", "messages": [{"status": "4", "error-text": "Bad Credentials"}]}))
        }
        (Script::RefuseCredentials, Provider::MessageBird) => HttpResponse::Unauthorized()
            .json(json!({"errors": [{"code": 2, "description": "Request not allowed (incorrect access_key)", "parameter": "access_key"}]})),
        (Script::RefuseNumber, Provider::MessageBird) => HttpResponse::UnprocessableEntity()
            .json(json!({"errors": [{"code": 9, "description": "no (correct) recipients found", "parameter": "recipients"}]})),
    }
}
