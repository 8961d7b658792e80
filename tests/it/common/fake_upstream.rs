//! A stand-in for the messaging platform's HTTP API (and, in `Reply` mode, any
//! HTTP endpoint such as an SMS gateway). Records every request it receives.

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Mode {
    /// Answer `useradd` like the real platform: a fresh token per call.
    Useradd,
    /// Wait, then answer like `Useradd`.
    Slow(Duration),
    /// Never answer (within any test's life): whatever the caller gets, it did not come from here.
    Hang,
    /// Answer with this status and body whatever the request.
    Reply(u16, String),
    /// Answer with this status and the request's own body, as some providers quote it in errors.
    Echo(u16),
    /// Answer with these replies in turn; the last one repeats.
    Sequence(Vec<(u16, String)>),
}

impl Mode {
    /// The mode for the next request; a `Sequence` moves on by one.
    fn pop_scripted(&mut self) -> Mode {
        match self {
            Mode::Sequence(replies) if replies.len() > 1 => {
                let (status, body) = replies.remove(0);
                Mode::Reply(status, body)
            }
            Mode::Sequence(replies) => {
                let (status, body) = replies[0].clone();
                Mode::Reply(status, body)
            }
            other => other.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Received {
    pub authorization: Option<String>,
    pub body: String,
    /// Path and query, e.g. `/backend/`.
    pub path: String,
    /// Every header, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("request body is JSON")
    }

    /// The form-encoded body as name → value.
    pub fn form(&self) -> std::collections::HashMap<String, String> {
        serde_urlencoded::from_str(&self.body).expect("request body is a form")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: web::Data<Shared>,
    handle: Mutex<Option<ServerHandle>>,
}

struct Shared {
    mode: Mutex<Mode>,
    received: Mutex<Vec<Received>>,
    /// Off for load runs, where keeping every request would distort memory use.
    recording: AtomicBool,
    issued: AtomicU64,
    /// When set, `op:"message"` calls fail with HTTP 500 (useradd still works).
    fail_messages: AtomicBool,
    /// When set, `op:"message"` calls are received and never answered.
    hang_messages: AtomicBool,
    /// When set, group operations are refused (`result:false`).
    refuse_groups: AtomicBool,
    groups_created: AtomicU64,
    /// How many more `useradd` calls to hold (see [`FakeUpstream::hold_useradd`]).
    to_hold: AtomicU64,
    /// True while held `useradd` calls wait.
    holding: tokio::sync::watch::Sender<bool>,
    /// `useradd` calls waiting to be released.
    held_useradd: AtomicU64,
}

impl FakeUpstream {
    /// Starts on a free loopback port; must be called inside an actix runtime.
    pub fn start() -> Arc<FakeUpstream> {
        Self::start_on("127.0.0.1:0".parse().unwrap())
    }

    pub fn start_on(addr: SocketAddr) -> Arc<FakeUpstream> {
        let state = web::Data::new(Shared {
            mode: Mutex::new(Mode::Useradd),
            received: Mutex::default(),
            recording: AtomicBool::new(true),
            issued: AtomicU64::new(0),
            fail_messages: AtomicBool::new(false),
            hang_messages: AtomicBool::new(false),
            refuse_groups: AtomicBool::new(false),
            groups_created: AtomicU64::new(0),
            to_hold: AtomicU64::new(0),
            holding: tokio::sync::watch::Sender::new(false),
            held_useradd: AtomicU64::new(0),
        });
        let upstream = FakeUpstream { addr, state, handle: Mutex::new(None) };
        Arc::new(upstream.listen())
    }

    fn listen(mut self) -> Self {
        self.addr = self.serve();
        self
    }

    /// Binds `self.addr` and serves in the background; returns the bound address.
    fn serve(&self) -> SocketAddr {
        let state = self.state.clone();
        let server = HttpServer::new(move || App::new().app_data(state.clone()).default_service(web::to(handle)))
            .workers(1)
            .disable_signals()
            .bind(self.addr)
            .expect("bind fake upstream");
        let addr = server.addrs()[0];
        let server = server.run();
        *self.handle.lock().unwrap() = Some(server.handle());
        actix_web::rt::spawn(server);
        addr
    }

    pub fn url(&self) -> String {
        format!("http://{}/backend/", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn set_recording(&self, on: bool) {
        self.state.recording.store(on, Ordering::SeqCst);
    }

    /// How many tokens `useradd` has issued.
    pub fn issued(&self) -> u64 {
        self.state.issued.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The `op:"message"` calls received (failed ones included), in order.
    pub fn messages(&self) -> Vec<Value> {
        self.received().iter().filter_map(|r| serde_json::from_str::<Value>(&r.body).ok()).filter(|m| m["op"] == "message").collect()
    }

    /// Makes `op:"message"` and `op:"userdel"` calls fail (HTTP 500) or succeed again.
    pub fn fail_messages(&self, fail: bool) {
        self.state.fail_messages.store(fail, Ordering::SeqCst);
    }

    /// Makes `op:"message"` calls hang (useradd still works), as a platform that took the
    /// request and never answered.
    pub fn hang_messages(&self, hang: bool) {
        self.state.hang_messages.store(hang, Ordering::SeqCst);
    }

    /// Makes group operations fail with `result:false`, or succeed again.
    pub fn refuse_groups(&self, refuse: bool) {
        self.state.refuse_groups.store(refuse, Ordering::SeqCst);
    }

    /// Holds the next `count` `useradd` calls, each answered once released: a test can act
    /// while logins wait for their token.
    pub fn hold_useradd(&self, count: u64) {
        self.state.holding.send_replace(true);
        self.state.to_hold.store(count, Ordering::SeqCst);
    }

    /// Answers the held `useradd` calls, and holds no more.
    pub fn release_useradd(&self) {
        self.state.to_hold.store(0, Ordering::SeqCst);
        self.state.holding.send_replace(false);
    }

    /// How many `useradd` calls are being held.
    pub fn held_useradd(&self) -> u64 {
        self.state.held_useradd.load(Ordering::SeqCst)
    }

    /// The `op:"userdel"` calls received (failed ones included), in order.
    pub fn userdel_calls(&self) -> Vec<Value> {
        self.received().iter().filter_map(|r| serde_json::from_str::<Value>(&r.body).ok()).filter(|m| m["op"] == "userdel").collect()
    }

    /// The group operations received (refused ones included), in order.
    pub fn group_calls(&self) -> Vec<Value> {
        self.received()
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
            .filter(|m| m["op"].as_str().is_some_and(|op| op.starts_with("group")))
            .collect()
    }

    /// Stops listening: calls now fail with "connection refused".
    pub async fn stop(&self) {
        let handle = self.handle.lock().unwrap().take();
        if let Some(handle) = handle {
            handle.stop(false).await;
        }
    }

    /// Listens again on the same port.
    pub fn restart(&self) {
        self.serve();
    }
}

async fn handle(request: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let body = String::from_utf8_lossy(&body).into_owned();
    let authorization = request.headers().get("authorization").and_then(|v| v.to_str().ok()).map(String::from);
    let path = request.uri().path_and_query().map_or_else(String::new, |p| p.to_string());
    let headers = request.headers().iter().map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    if shared.recording.load(Ordering::SeqCst) {
        shared.received.lock().unwrap().push(Received { authorization, body: body.clone(), path, headers });
    }
    if body.contains(r#""op":"useradd""#) {
        wait_while_held(&shared).await;
    }
    let mode = shared.mode.lock().unwrap().pop_scripted();
    match mode {
        Mode::Reply(status, reply) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).content_type("application/json").body(reply)
        }
        Mode::Echo(status) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).content_type("application/json").body(body)
        }
        Mode::Slow(delay) => {
            actix_web::rt::time::sleep(delay).await;
            platform(&body, &shared)
        }
        Mode::Hang => {
            actix_web::rt::time::sleep(Duration::from_secs(24 * 3600)).await;
            HttpResponse::GatewayTimeout().finish()
        }
        Mode::Useradd | Mode::Sequence(_) if shared.hang_messages.load(Ordering::SeqCst) && body.contains(r#""op":"message""#) => {
            actix_web::rt::time::sleep(Duration::from_secs(24 * 3600)).await;
            HttpResponse::GatewayTimeout().finish()
        }
        Mode::Useradd | Mode::Sequence(_) => platform(&body, &shared),
    }
}

/// Returns at once, or once released when this call is one to hold (see [`FakeUpstream::hold_useradd`]).
async fn wait_while_held(shared: &Shared) {
    let mut holding = shared.holding.subscribe();
    if shared.to_hold.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)).is_err() {
        return;
    }
    shared.held_useradd.fetch_add(1, Ordering::SeqCst);
    let _ = holding.wait_for(|holding| !holding).await;
    shared.held_useradd.fetch_sub(1, Ordering::SeqCst);
}

/// Answers like the platform: `useradd` and `message`, with a non-empty app token.
fn platform(body: &str, shared: &Shared) -> HttpResponse {
    let Ok(request) = serde_json::from_str::<Value>(body) else {
        return HttpResponse::BadRequest().json(json!({ "result": false, "error": "BADJSON" }));
    };
    if request["token"].as_str().is_none_or(str::is_empty) {
        return HttpResponse::Ok().json(json!({ "result": false, "error": "AUTHFAIL" }));
    }
    match request["op"].as_str() {
        Some("useradd") => useradd(&request, shared),
        Some("message") if shared.fail_messages.load(Ordering::SeqCst) => {
            HttpResponse::InternalServerError().json(json!({ "result": false, "error": "UNAVAILABLE" }))
        }
        Some("message") => HttpResponse::Ok().json(json!({ "op": "message", "result": true })),
        Some(op) if op.starts_with("group") && shared.refuse_groups.load(Ordering::SeqCst) => {
            HttpResponse::Ok().json(json!({ "op": op, "result": false, "error": "NOGROUP" }))
        }
        Some("groupadd") => {
            let gid = 5000 + shared.groups_created.fetch_add(1, Ordering::SeqCst) + 1;
            HttpResponse::Ok().json(json!({ "op": "groupadd", "result": true, "group": { "gid": gid } }))
        }
        Some(op @ ("groupset" | "groupeditmembers" | "groupdel")) => HttpResponse::Ok().json(json!({ "op": op, "result": true })),
        Some("userdel") if shared.fail_messages.load(Ordering::SeqCst) => {
            HttpResponse::InternalServerError().json(json!({ "result": false, "error": "UNAVAILABLE" }))
        }
        Some("userdel") => HttpResponse::Ok().json(json!({ "op": "userdel", "result": true })),
        _ => HttpResponse::Ok().json(json!({ "result": false, "error": "BADOP" })),
    }
}

fn useradd(request: &Value, shared: &Shared) -> HttpResponse {
    let n = shared.issued.fetch_add(1, Ordering::SeqCst) + 1;
    HttpResponse::Ok().json(json!({
        "op": "useradd",
        "result": true,
        "user": { "uid": 1000 + n, "address": request["user"]["address"], "token": format!("usertoken-{n}") },
    }))
}
