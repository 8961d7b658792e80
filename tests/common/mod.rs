//! Test harness: the real HTTP service on a loopback port, a fake upstream,
//! a recording sender and captured logs.
#![allow(dead_code)]

pub mod fake_upstream;

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpServer};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};

use otpgate::config::Config;
use otpgate::delivery::courier::Courier;
use otpgate::delivery::senders::{OtpMessage, OtpSender, SendError, Senders};
use otpgate::{api::server, api::AppState};

#[allow(unused_imports)]
pub use fake_upstream::{FakeUpstream, Mode, Received};

pub const APP_TOKEN: &str = "app-token-5ecret-7f3a9c";
pub const APPID: &str = "com.example.app";

/// Hands codes to the test instead of delivering them; can be told to fail.
#[derive(Default)]
pub struct RecordingSender {
    pub sent: Mutex<Vec<OtpMessage>>,
    /// Every message it was asked to send, failed attempts included.
    pub attempted: Mutex<Vec<OtpMessage>>,
    pub fail: AtomicBool,
}

#[async_trait]
impl OtpSender for RecordingSender {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn send(&self, message: &OtpMessage) -> Result<(), SendError> {
        self.attempted.lock().unwrap().push(message.clone());
        if self.fail.load(Ordering::SeqCst) {
            return Err("provider unavailable (test)".into());
        }
        self.sent.lock().unwrap().push(message.clone());
        Ok(())
    }
}

impl RecordingSender {
    pub fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    /// The code most recently sent to `address` (already normalised).
    pub fn last_code(&self, address: &str) -> String {
        let sent = self.sent.lock().unwrap();
        let message = sent.iter().rev().find(|m| m.to.as_str() == address).unwrap_or_else(|| panic!("no code sent to {address}"));
        message.otp.clone()
    }
}

/// Where codes go: to the test's recording sender, or through the senders the configuration names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Recording,
    Configured,
}

pub struct TestServer {
    pub url: String,
    pub upstream: Arc<FakeUpstream>,
    pub sender: Arc<RecordingSender>,
    pub dir: Arc<tempfile::TempDir>,
    pub state: web::Data<AppState>,
    handle: ServerHandle,
    courier: Arc<Courier>,
    client: reqwest::Client,
    outbox_task: actix_web::rt::task::JoinHandle<()>,
}

/// Settings every test starts from: limits and the resend interval off, so each
/// test turns on only what it checks.
fn base_env(upstream: &FakeUpstream, dir: &tempfile::TempDir) -> BTreeMap<String, String> {
    [
        ("DATABASE_PATH", dir.path().join("otpgate.db").to_string_lossy().into_owned()),
        // These tests check the boolean results and HTTP statuses of the json dialect;
        // tests/compatibility.rs checks the mesibo dialect the apps read.
        ("API_DIALECT", "json".into()),
        ("APP_TOKEN", APP_TOKEN.into()),
        ("UPSTREAM_URL", upstream.url()),
        ("UPSTREAM_TIMEOUT_SECS", "2".into()),
        ("OTP_RESEND_SECS", "0".into()),
        ("LIMIT_START_PER_PHONE_PER_HOUR", "0".into()),
        ("LIMIT_START_PER_IP_PER_HOUR", "0".into()),
        ("LIMIT_VERIFY_PER_PHONE_PER_HOUR", "0".into()),
        ("LIMIT_VERIFY_PER_IP_PER_HOUR", "0".into()),
        ("LIMIT_START_PER_SUBNET_PER_HOUR", "0".into()),
        ("LIMIT_START_PER_CALLING_CODE_PER_HOUR", "0".into()),
        ("SMS_BUDGET_PER_HOUR", "0".into()),
        // The protocol's example numbers are US toll-free (1800555xxxx), which cannot get SMS.
        ("PHONE_MOBILE_ONLY", "false".into()),
        // One delivery attempt: a failure is answered SENDFAILED at once. Courier tests turn retries on.
        ("COURIER_MAX_ATTEMPTS", "1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl TestServer {
    /// A fresh service with its own database, fake upstream and recording sender.
    pub async fn start(env: &[(&str, &str)]) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Self::start_with(env, FakeUpstream::start(), dir, Delivery::Recording).await
    }

    /// A service over a given database directory and upstream.
    pub async fn start_with(
        env: &[(&str, &str)],
        upstream: Arc<FakeUpstream>,
        dir: Arc<tempfile::TempDir>,
        delivery: Delivery,
    ) -> TestServer {
        capture_logs();
        let mut vars = base_env(&upstream, &dir);
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_vars(vars).expect("test configuration is valid");
        let sender = Arc::new(RecordingSender::default());
        let senders = match delivery {
            Delivery::Configured => otpgate::delivery::senders::build(&config).expect("senders build"),
            Delivery::Recording => Senders::all(sender.clone()),
        };
        let state = web::Data::new(AppState::new(&config, senders).expect("service starts"));
        let outbox_task = actix_web::rt::spawn(state.outbox.clone().run());
        let courier = state.login.courier.clone();
        actix_web::rt::spawn(courier.clone().run());
        let app_state = state.clone();
        let server = HttpServer::new(move || server::app(app_state.clone())).workers(2).disable_signals().bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        TestServer { url, upstream, sender, dir, state, handle, courier, client: reqwest::Client::new(), outbox_task }
    }

    /// Stops serving, sending notifications and the courier (queued messages stay in the database), as a process exit would.
    pub async fn stop(&self) {
        self.outbox_task.abort();
        self.handle.stop(true).await;
        self.courier.stop();
    }

    /// POSTs a JSON body to /api.
    pub async fn call(&self, body: Value) -> (u16, Value) {
        self.send(self.client.post(self.api()).json(&body)).await
    }

    /// POSTs a JSON body to /api from another loopback address (e.g. 127.0.0.2).
    pub async fn call_from(&self, ip: &str, body: Value) -> (u16, Value) {
        let client = reqwest::Client::builder().local_address(ip.parse::<IpAddr>().unwrap()).build().unwrap();
        self.send(client.post(self.api()).json(&body)).await
    }

    pub fn api(&self) -> String {
        format!("{}/api", self.url)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends any request and parses the JSON reply; every reply is checked for the app token.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let (status, _, body) = self.send_full(request).await;
        (status, body)
    }

    pub async fn send_full(&self, request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = request.send().await.expect("service answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        assert!(!text.contains(APP_TOKEN), "the app token leaked into a reply: {text}");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("reply is not JSON: {text}"));
        (status, headers, body)
    }

    /// Starts a login for `phone` and returns the code the sender received.
    pub async fn start_login(&self, phone: &str) -> String {
        let (status, reply) = self.call(login(phone)).await;
        assert_eq!((status, &reply["result"]), (200, &Value::Bool(true)), "{reply}");
        self.sender.last_code(phone)
    }
}

impl TestServer {
    /// Logs `phone` in through both steps, from `device` when given; returns the access token.
    pub async fn log_in(&self, phone: &str, device: Option<&str>) -> String {
        let code = self.start_login(phone).await;
        let mut request = verify(phone, &code);
        if let Some(device) = device {
            request["device"] = device.into();
        }
        let (status, reply) = self.call(request).await;
        assert_eq!(status, 200, "{reply}");
        reply["token"].as_str().expect("a token").to_string()
    }

    /// Calls an op that needs a session: `{"op":op,"token":token}` plus the fields of `extra`.
    pub async fn call_op(&self, op: &str, token: &str, extra: Value) -> (u16, Value) {
        let mut request = serde_json::json!({ "op": op, "token": token });
        if let Value::Object(fields) = extra {
            request.as_object_mut().unwrap().extend(fields);
        }
        self.call(request).await
    }

    /// A direct connection to the service's database, for arranging and checking state.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("otpgate.db")).unwrap()
    }
}

/// Asserts a successful reply and returns its body.
pub fn assert_ok(reply: (u16, Value)) -> Value {
    assert_eq!((reply.0, &reply.1["result"]), (200, &Value::Bool(true)), "{}", reply.1);
    reply.1
}

/// Polls `condition` every 50 ms for up to `secs` seconds.
pub async fn eventually(secs: u64, mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 20 {
        if condition() {
            return true;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    condition()
}

/// `{"op":"login","phone":..,"appid":..,"name":"Ann"}`
pub fn login(phone: &str) -> Value {
    serde_json::json!({ "op": "login", "phone": phone, "appid": APPID, "name": "Ann" })
}

/// The login request with a code.
pub fn verify(phone: &str, otp: &str) -> Value {
    let mut request = login(phone);
    request["otp"] = otp.into();
    request
}

/// Asserts a failure reply with the given HTTP status and error code.
pub fn assert_error(reply: &(u16, Value), status: u16, code: &str) {
    assert_eq!(reply.1["result"], false, "{}", reply.1);
    assert_eq!(reply.1["error"], code, "{}", reply.1);
    assert_eq!(reply.0, status, "{}", reply.1);
    assert!(reply.1["errmsg"].as_str().is_some_and(|m| !m.is_empty()), "{}", reply.1);
    assert!(reply.1["ts"].as_i64().is_some(), "{}", reply.1);
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogCapture;

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt().with_ansi(false).with_max_level(tracing::Level::DEBUG).with_writer(|| LogCapture).init();
    });
}

/// Everything the service logged so far in this test binary.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}
