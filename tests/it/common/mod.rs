//! Test harness: the real HTTP service on a loopback port, a fake upstream,
//! a recording sender and captured logs.
#![allow(dead_code)]

pub mod backend;
pub mod fake_providers;
pub mod fake_upstream;
pub mod local_issuer;
pub mod redis_servers;

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpServer};
use async_trait::async_trait;
use serde_json::Value;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use tracing::Instrument;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use otpgate::config::Config;
use otpgate::delivery::courier::Courier;
use otpgate::delivery::senders::{Accepted, OtpMessage, OtpSender, SendError, Senders};
use otpgate::domain::clock::Clock;
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

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        self.attempted.lock().unwrap().push(message.clone());
        if self.fail.load(Ordering::SeqCst) {
            return Err("provider unavailable (test)".into());
        }
        self.sent.lock().unwrap().push(message.clone());
        Ok(Accepted::default())
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
    /// Tags every log line of this server (see [`TestServer::logs`]).
    id: u64,
    /// The time the service's rules run on; `advance` it on a server started on a manual clock.
    pub clock: Clock,
    pub upstream: Arc<FakeUpstream>,
    pub sender: Arc<RecordingSender>,
    pub dir: Arc<tempfile::TempDir>,
    pub state: web::Data<AppState>,
    handle: ServerHandle,
    courier: Arc<Courier>,
    client: reqwest::Client,
    outbox_task: actix_web::rt::task::JoinHandle<()>,
    /// The PostgreSQL database this server uses, when the suite runs on PostgreSQL.
    database_url: Option<String>,
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
        ("LIMIT_START_PER_PHONE_PER_DAY", "0".into()),
        ("LIMIT_START_PER_IP_PER_HOUR", "0".into()),
        ("LIMIT_VERIFY_PER_PHONE_PER_HOUR", "0".into()),
        ("LIMIT_VERIFY_PER_PHONE_PER_DAY", "0".into()),
        ("LIMIT_VERIFY_PER_IP_PER_HOUR", "0".into()),
        ("LIMIT_START_PER_SUBNET_PER_HOUR", "0".into()),
        ("LIMIT_START_PER_CALLING_CODE_PER_HOUR", "0".into()),
        ("SMS_BUDGET_PER_HOUR", "0".into()),
        // Tests of the budget send from one IP: its share is turned on where tested.
        ("SMS_BUDGET_IP_SHARE", "0".into()),
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

    /// A fresh service whose rules run on a manual clock (see [`TestServer::clock`]).
    pub async fn start_on_manual_clock(env: &[(&str, &str)]) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Self::start_full(env, FakeUpstream::start(), dir, Delivery::Recording, Clock::manual()).await
    }

    /// A service over a given database directory and upstream.
    pub async fn start_with(
        env: &[(&str, &str)],
        upstream: Arc<FakeUpstream>,
        dir: Arc<tempfile::TempDir>,
        delivery: Delivery,
    ) -> TestServer {
        Self::start_full(env, upstream, dir, delivery, Clock::system()).await
    }

    /// A service over a given database directory, upstream, delivery and clock.
    pub async fn start_full(
        env: &[(&str, &str)],
        upstream: Arc<FakeUpstream>,
        dir: Arc<tempfile::TempDir>,
        delivery: Delivery,
        clock: Clock,
    ) -> TestServer {
        capture_logs();
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("test_server", test_server = id);
        let mut vars = base_env(&upstream, &dir);
        let database_url = backend::postgres_url().map(|server| backend::database_for(&server, &dir));
        if let Some(url) = &database_url {
            vars.insert("DATABASE_URL".into(), url.clone());
            if !env.iter().any(|(k, _)| k.starts_with("OTP_SECRET")) {
                vars.insert("OTP_SECRET".into(), "a-test-secret-shared-by-instances".into());
            }
        }
        if let Some(url) = backend::redis_url() {
            vars.insert("REDIS_URL".into(), url);
            // Keys of their own: tests (and runs on other machines) run side by side on one Redis.
            vars.insert("REDIS_PREFIX".into(), format!("otpgate-test-{:016x}-{id}", backend::run_tag()));
        }
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_vars(vars).expect("test configuration is valid");
        let sender = Arc::new(RecordingSender::default());
        let senders = match delivery {
            Delivery::Configured => otpgate::delivery::senders::build(&config).expect("senders build"),
            Delivery::Recording => Senders::all(sender.clone()),
        };
        let state =
            web::Data::new(AppState::with_clock(&config, senders, clock.clone()).instrument(span.clone()).await.expect("service starts"));
        let outbox_task = actix_web::rt::spawn(state.outbox.clone().run().instrument(span.clone()));
        let courier = state.login.codes.courier.clone();
        actix_web::rt::spawn(courier.clone().run().instrument(span.clone()));
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            let span = span.clone();
            // Every request's log lines carry this server's tag.
            server::app(app_state.clone()).wrap_fn(move |request, service| {
                use actix_web::dev::Service;
                service.call(request).instrument(span.clone())
            })
        })
        .workers(2)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let client = http_client();
        TestServer { url, id, clock, upstream, sender, dir, state, handle, courier, client, outbox_task, database_url }
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

    /// A direct connection to the service's SQLite database, for what only SQLite has
    /// (see [`backend::sqlite_only`]); [`TestServer::scalar`] and [`TestServer::execute`] work on both.
    pub fn db(&self) -> rusqlite::Connection {
        assert!(self.database_url.is_none(), "db() opens the SQLite file; this server runs on PostgreSQL");
        rusqlite::Connection::open(self.dir.path().join("otpgate.db")).unwrap()
    }

    /// The integer a query answers (its first column of its first row), on either backend.
    pub fn scalar(&self, sql: &str) -> i64 {
        match &self.database_url {
            Some(url) => backend::run_sql(url, sql).first().cloned().flatten().map_or(0, |v| v.parse().expect("an integer")),
            None => self.db().query_row(sql, [], |r| r.get::<_, Option<i64>>(0)).unwrap().unwrap_or(0),
        }
    }

    /// The first column of every row a query answers, as text, on either backend.
    pub fn column(&self, sql: &str) -> Vec<String> {
        match &self.database_url {
            Some(url) => backend::run_sql(url, sql).into_iter().map(Option::unwrap_or_default).collect(),
            None => {
                let db = self.db();
                let mut query = db.prepare(sql).unwrap();
                let rows = query.query_map([], |r| r.get::<_, rusqlite::types::Value>(0)).unwrap();
                rows.map(|value| match value.unwrap() {
                    rusqlite::types::Value::Integer(n) => n.to_string(),
                    rusqlite::types::Value::Text(text) => text,
                    other => format!("{other:?}"),
                })
                .collect()
            }
        }
    }

    /// Runs statements (SQL both backends understand) against the service's database.
    pub fn execute(&self, sql: &str) {
        match &self.database_url {
            Some(url) => {
                backend::run_sql(url, sql);
            }
            None => self.db().execute_batch(sql).unwrap(),
        }
    }
}

impl Drop for TestServer {
    /// The test's PostgreSQL database goes with the last server over its directory.
    fn drop(&mut self) {
        if let Some(server) = backend::postgres_url() {
            backend::release(&server, &self.dir);
        }
    }
}

/// Asserts a successful reply and returns its body.
/// A client that opens a connection per request. A pooled connection left idle while a
/// test works (building a large photo, waiting for a state) may be closed by the server's
/// keep-alive timer just as the next request is written on it, and that request then
/// fails with no reply; how long the test worked decides, so the machine's load would.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("an HTTP client")
}

pub fn assert_ok(reply: (u16, Value)) -> Value {
    assert_eq!((reply.0, &reply.1["result"]), (200, &Value::Bool(true)), "{}", reply.1);
    reply.1
}

/// Polls `condition` every 50 ms until it holds or `secs` seconds have passed, and says
/// whether it held. Every test that waits for a state waits through this (or
/// [`eventually_some`]): the deadline is generous, so a loaded machine only makes it slower.
pub async fn eventually(secs: u64, mut condition: impl AsyncFnMut() -> bool) -> bool {
    eventually_some(secs, async || condition().await.then_some(())).await.is_some()
}

/// [`eventually`] for a probe that finds something: what it found first, or None when it
/// found nothing within `secs` seconds.
pub async fn eventually_some<T>(secs: u64, mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
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

/// Every line logged in this test binary.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// The lines each test server logged, by its id: what its requests, its background
/// tasks and what they spawned logged, and nothing of the tests running beside it.
static SERVER_LOGS: Mutex<Option<HashMap<u64, Vec<u8>>>> = Mutex::new(None);

thread_local! {
    /// The test server of the event being written on this thread.
    static EVENT_SERVER: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The test server a span belongs to: its own `test_server` field, or its parent's.
struct ServerTag(u64);

struct TagLayer;

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TagLayer {
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        struct Find(Option<u64>);
        impl tracing::field::Visit for Find {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "test_server" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut found = Find(None);
        attrs.record(&mut found);
        let span = ctx.span(id).expect("a new span is known");
        let tag = found.0.or_else(|| span.parent().and_then(|parent| parent.extensions().get::<ServerTag>().map(|tag| tag.0)));
        if let Some(tag) = tag {
            span.extensions_mut().insert(ServerTag(tag));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let tag = ctx.event_span(event).and_then(|span| span.extensions().get::<ServerTag>().map(|tag| tag.0));
        EVENT_SERVER.with(|current| current.set(tag));
    }
}

struct LogCapture;

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        if let Some(server) = EVENT_SERVER.with(Cell::get) {
            SERVER_LOGS.lock().unwrap().get_or_insert_with(HashMap::new).entry(server).or_default().extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// DEBUG for everything, except what the service itself quiets (see `runtime::logging`).
fn debug_but_quieted() -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::new("debug");
    for directive in otpgate::runtime::logging::QUIETED {
        filter = filter.add_directive(directive.parse().unwrap());
    }
    filter
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // The tag layer comes first, so it has marked the event's server when the output layer writes it.
        tracing_subscriber::registry()
            .with(TagLayer)
            .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(|| LogCapture))
            .with(debug_but_quieted())
            .init();
    });
}

/// Everything logged so far in this test binary, by every test: for checking that a
/// secret reached no log at all.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

impl TestServer {
    /// What this server logged so far, and nothing that other tests' servers logged.
    pub fn logs(&self) -> String {
        let all = SERVER_LOGS.lock().unwrap();
        String::from_utf8_lossy(all.as_ref().and_then(|servers| servers.get(&self.id)).map_or(&[][..], Vec::as_slice)).into_owned()
    }
}
