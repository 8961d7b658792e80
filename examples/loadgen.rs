//! Load benchmark for otpgate: starts the real service (same code as production, a
//! SQLite file in a temporary directory) and a fake upstream on loopback, drives
//! keep-alive HTTP connections through each operation, and prints throughput and
//! latency with the ratio to a trivial route measured in the same run.
//!
//!     cargo run --release --example loadgen -- --secs 10 --conns 64
//!     cargo run --release --example loadgen -- --secs 10 --conns 64 --scale
//!
//! `--scale` then preloads a second database (`--users`, `--pending`) and reruns the
//! login operations on it, printing the ratio to the empty-database run.
//!
//! `--database-url postgres://…` runs the service on a fresh PostgreSQL database made on
//! that server (and dropped after), `--redis-url redis://…` keeps its limits in Redis,
//! and `--instances N` starts N services on them, the connections spread over them.
//! `--service-process` runs each instance in a child process of its own, so that the CPU
//! column counts the service alone (not the load generator or the fake upstream).
//!
//! `--target-url http://HOST:PORT/PATH --target-otp CODE` compares the service with
//! another backend of the same protocol (such as the reference PHP one), whose codes
//! are all `CODE`: login start and full login, on each in turn for `--rounds` rounds.

#[path = "../tests/it/common/fake_upstream.rs"]
#[allow(dead_code)]
mod fake_upstream;

#[path = "../tests/it/common/backend.rs"]
#[allow(dead_code)]
mod backend;

use actix_web::{web, HttpServer};
use async_trait::async_trait;
use hdrhistogram::Histogram;
use rand::Rng;
use rusqlite::params;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use otpgate::api::AppState;
use otpgate::config::Config;
use otpgate::delivery::senders::{Accepted, OtpMessage, OtpSender, SendError, Senders};

struct Args {
    secs: u64,
    conns: usize,
    scale: bool,
    users: u64,
    contacts: u64,
    pending: u64,
    /// Internal: fill this database and exit (run as a child process so that the
    /// preload's memory does not count in the measured process's peak RSS).
    preload_into: Option<String>,
    /// Internal: measure the service over this preloaded database directory, in a
    /// process of its own so that its peak RSS is its own.
    run_preloaded: Option<String>,
    database_url: Option<String>,
    redis_url: Option<String>,
    instances: usize,
    /// `--callgrind`: count the service's instructions per operation under valgrind, at
    /// these two request counts (see [`callgrind`]).
    callgrind: Option<(u64, u64)>,
    /// Internal: serve in this directory for a `--callgrind` parent (under valgrind) or a
    /// `--service-process` one, with its upstream at `upstream_url`.
    serve_child: Option<String>,
    upstream_url: Option<String>,
    /// `--callgrind-out DIR`: keep the dump files there, for callgrind_annotate.
    callgrind_out: Option<String>,
    /// `--callgrind-logins`: only the baseline and the two login runs (a few minutes less).
    callgrind_logins: bool,
    /// `--routes`: codes go through named instances on several routes, each taking delivery
    /// receipts (`PUBLIC_URL` set), instead of one sender.
    routes: bool,
    /// `--service-process`: every instance in a child process, its CPU time read from /proc.
    service_process: bool,
    /// Internal, for a child service: the benchmark's PostgreSQL database (on
    /// `database_url`'s server), made and dropped by the parent.
    database_name: Option<String>,
    /// Internal, for a child service: the Redis prefix every instance shares.
    redis_prefix: Option<String>,
    /// `--target-url`: another backend of the same protocol, compared with the service.
    target_url: Option<String>,
    /// `--target-otp`: the code the other backend accepts for every phone.
    target_otp: Option<String>,
    /// `--rounds`: rounds of the comparison, each measuring both backends.
    rounds: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        secs: 10,
        conns: 64,
        scale: false,
        users: 1_000_000,
        contacts: 10_000_000,
        pending: 100_000,
        preload_into: None,
        run_preloaded: None,
        database_url: None,
        redis_url: None,
        instances: 1,
        callgrind: None,
        serve_child: None,
        upstream_url: None,
        callgrind_out: None,
        callgrind_logins: false,
        routes: false,
        service_process: false,
        database_name: None,
        redis_prefix: None,
        target_url: None,
        target_otp: None,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut number = || it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--secs" => args.secs = number(),
            "--conns" => args.conns = number() as usize,
            "--users" => args.users = number(),
            "--pending" => args.pending = number(),
            "--contacts" => args.contacts = number(),
            "--preload-into" => args.preload_into = it.next(),
            "--run-preloaded" => args.run_preloaded = it.next(),
            "--scale" => args.scale = true,
            "--database-url" => args.database_url = it.next(),
            "--redis-url" => args.redis_url = it.next(),
            "--instances" => args.instances = (number() as usize).max(1),
            "--callgrind" => args.callgrind = args.callgrind.or(Some(CALLGRIND_REQUESTS)),
            "--callgrind-requests" => {
                let counts = it.next().and_then(|v| {
                    let (n1, n2) = v.split_once(',')?;
                    Some((n1.trim().parse::<u64>().ok()?, n2.trim().parse::<u64>().ok()?))
                });
                match counts {
                    Some((n1, n2)) if n1 < n2 => args.callgrind = Some((n1, n2)),
                    _ => panic!("--callgrind-requests needs two counts N1,N2 with N1 < N2, e.g. 200,1200"),
                }
            }
            "--serve-child" => args.serve_child = it.next(),
            "--service-process" => args.service_process = true,
            "--database-name" => args.database_name = it.next(),
            "--redis-prefix" => args.redis_prefix = it.next(),
            "--target-url" => args.target_url = it.next(),
            "--target-otp" => args.target_otp = it.next(),
            "--rounds" => args.rounds = number().max(1),
            "--upstream-url" => args.upstream_url = it.next(),
            "--callgrind-out" => args.callgrind_out = it.next(),
            "--callgrind-logins" => {
                args.callgrind = args.callgrind.or(Some(CALLGRIND_REQUESTS));
                args.callgrind_logins = true;
            }
            "--routes" => args.routes = true,
            other => panic!(
                "unknown flag {other}; flags: --secs N --conns N --scale --users N --contacts N --pending N --database-url URL --redis-url URL --instances N --service-process --target-url URL --target-otp CODE --rounds N --callgrind [--callgrind-requests N1,N2] [--callgrind-out DIR] [--callgrind-logins] [--routes]"
            ),
        }
    }
    args
}

/// Hands codes to the load generator in memory instead of delivering them.
#[derive(Default)]
struct MemorySender {
    codes: Mutex<HashMap<String, String>>,
    sent: AtomicU64,
}

#[async_trait]
impl OtpSender for MemorySender {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        self.codes.lock().unwrap().insert(message.to.as_str().to_string(), message.otp.clone());
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(Accepted::default())
    }
}

impl MemorySender {
    /// The code last sent to `phone`. A service in this process has handed it over before
    /// it answers; one in a child process (`--callgrind`) reports it on a pipe, which may
    /// be read a moment after the reply.
    async fn take(&self, phone: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(code) = self.codes.lock().unwrap().remove(phone) {
                return Some(code);
            }
            if Instant::now() > deadline {
                return None;
            }
            actix_web::rt::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A minimal HTTP/1.1 keep-alive client: cheap enough that the load generator
/// leaves the two cores to the service.
struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).await.expect("connect to the service");
        stream.set_nodelay(true).unwrap();
        let (read, writer) = stream.into_split();
        Connection { reader: BufReader::new(read), writer, line: String::new() }
    }

    async fn request(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(request.as_bytes()).await?;
        self.line.clear();
        self.reader.read_line(&mut self.line).await?;
        let status = self.line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (mut length, mut chunked) = (0, false);
        loop {
            self.line.clear();
            self.reader.read_line(&mut self.line).await?;
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.trim().eq_ignore_ascii_case("chunked");
                }
            }
        }
        let mut body = Vec::new();
        if !chunked {
            body.resize(length, 0);
            self.reader.read_exact(&mut body).await?;
        } else {
            // PHP behind nginx answers in chunks: each a hex size line, the bytes and CRLF,
            // ended by a chunk of size 0 and an empty line (no trailers are expected).
            loop {
                self.line.clear();
                self.reader.read_line(&mut self.line).await?;
                let size = usize::from_str_radix(self.line.trim_end().split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
                let start = body.len();
                body.resize(start + size + 2, 0);
                self.reader.read_exact(&mut body[start..]).await?;
                body.truncate(start + size);
                if size == 0 {
                    break;
                }
            }
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Operation {
    /// `GET /healthz`: the ceiling of the HTTP stack.
    Baseline,
    /// `op=login` without a code.
    Start,
    /// Start, then verify with the code, which calls upstream useradd.
    FullLogin,
    /// `op=getcontacts` with 200 phones, half of them users: a first upload.
    Contacts,
    /// `op=getcontacts` with 200 phones of which 180 are contacts already (an address
    /// book uploaded again with a few new numbers).
    Resync,
    /// `op=getcontacts` with the last reply's `ts` and no phones: what apps send most.
    SinceTs,
}

const OPERATIONS: [Operation; 6] =
    [Operation::Baseline, Operation::Start, Operation::FullLogin, Operation::Contacts, Operation::Resync, Operation::SinceTs];
const CONTACTS_PER_REQUEST: u64 = 200;
/// Phones of a re-sync that are contacts already: 90 %.
const KNOWN_PER_RESYNC: usize = 180;

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Operation::Baseline => "baseline GET /healthz",
            Operation::Start => "login start",
            Operation::FullLogin => "full login",
            Operation::Contacts => "getcontacts (200 phones)",
            Operation::Resync => "getcontacts re-sync (90% known)",
            Operation::SinceTs => "getcontacts since ts",
        }
    }

    /// The getcontacts runs: each connection logs in once first.
    fn needs_session(self) -> bool {
        matches!(self, Operation::Contacts | Operation::Resync | Operation::SinceTs)
    }

    /// Phones of each operation have their own prefix, so counts can be checked per operation.
    fn phone(self, n: u64) -> String {
        let prefix = match self {
            Operation::Start => "1415",
            Operation::Contacts => "1718",
            _ => "1650",
        };
        format!("{prefix}{}", 2_000_000 + n)
    }
}

/// What the load generator needs of the services it drives: where they listen and the
/// codes they sent.
struct Driver {
    /// One per instance; connection `i` goes to `addrs[i % len]`.
    addrs: Vec<SocketAddr>,
    sender: Arc<MemorySender>,
    next_phone: AtomicU64,
    /// Phones of existing users, `prefix` + (2_000_000 + n) for n below the count: half of
    /// every contact upload.
    user_phones: std::sync::OnceLock<(&'static str, u64)>,
}

impl Driver {
    fn new(addrs: Vec<SocketAddr>, sender: Arc<MemorySender>) -> Driver {
        Driver { addrs, sender, next_phone: AtomicU64::new(0), user_phones: Default::default() }
    }
}

/// The services under load.
struct Service {
    driver: Driver,
    instances: Instances,
    upstream: Arc<fake_upstream::FakeUpstream>,
    database: Database,
}

/// Where the instances run.
enum Instances {
    /// In this process, with the load generator and the fake upstream.
    InProcess(Vec<web::Data<AppState>>),
    /// Each in a child process of its own (`--service-process`), so that its CPU time can
    /// be read apart from the load generator's.
    Children(Mutex<Vec<ChildService>>),
}

impl Service {
    /// CPU seconds so far of the processes that run the service: this whole process when
    /// the instances run in it, else the children alone.
    fn cpu_seconds(&self) -> f64 {
        match &self.instances {
            Instances::InProcess(_) => cpu_seconds(None),
            Instances::Children(children) => children.lock().unwrap().iter().map(|c| cpu_seconds(Some(c.pid))).sum(),
        }
    }

    /// The peak RSS of the process running the service (the largest child's, for children).
    fn peak_rss_mb(&self) -> f64 {
        match &self.instances {
            Instances::InProcess(_) => peak_rss_mb(None),
            Instances::Children(children) => children.lock().unwrap().iter().map(|c| peak_rss_mb(Some(c.pid))).fold(0.0, f64::max),
        }
    }

    /// Stops every instance, then drops the benchmark's PostgreSQL database, if any.
    async fn stop(&self) {
        match &self.instances {
            Instances::InProcess(states) => {
                if let Database::Postgres { .. } = self.database {
                    for state in states {
                        state.shutdown(Duration::from_secs(1)).await;
                    }
                }
            }
            Instances::Children(children) => {
                for child in children.lock().unwrap().iter_mut() {
                    child.stop();
                }
            }
        }
        self.database.drop_postgres();
    }
}

/// A service in a child process (`--serve-child`): it reports where it listens and every
/// code it sends on standard output, and stops when its standard input closes.
struct ChildService {
    child: std::process::Child,
    pid: u32,
    stdin: Option<std::process::ChildStdin>,
    /// The lines of its standard output other than codes.
    events: std::sync::mpsc::Receiver<String>,
}

impl ChildService {
    /// Starts `command`, whose codes go to `sender`, and waits until it listens.
    fn spawn(mut command: std::process::Command, sender: Arc<MemorySender>) -> std::io::Result<(ChildService, SocketAddr)> {
        use std::io::BufRead;
        let mut child = command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn()?;
        let (events, reports) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((phone, otp)) = line.strip_prefix("code ").and_then(|rest| rest.split_once(' ')) {
                    sender.codes.lock().unwrap().insert(phone.to_string(), otp.to_string());
                    sender.sent.fetch_add(1, Ordering::Relaxed);
                } else if events.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut service = ChildService { pid: child.id(), child, stdin, events: reports };
        match service.wait_for("listening ").and_then(|addr| addr.parse::<SocketAddr>().ok()) {
            Some(addr) => Ok((service, addr)),
            None => {
                let _ = service.child.kill();
                Err(std::io::Error::other("the child service did not start (its stderr is above)"))
            }
        }
    }

    /// The rest of the next line of its output that starts with `prefix`.
    fn wait_for(&self, prefix: &str) -> Option<String> {
        loop {
            let line = self.events.recv_timeout(Duration::from_secs(600)).ok()?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Some(rest.trim().to_string());
            }
        }
    }

    /// Closes its standard input and waits for it to end; true if it ended well.
    fn stop(&mut self) -> bool {
        drop(self.stdin.take());
        self.child.wait().is_ok_and(|status| status.success())
    }
}

/// What `measure` drives: how a connection is opened and one operation is done on it,
/// and whose CPU time counts.
#[async_trait(?Send)]
trait Load {
    fn addrs(&self) -> &[SocketAddr];
    /// What a connection of an operation sets up before it is measured.
    async fn session(&self, operation: Operation, conn: &mut Connection) -> Session;
    async fn one(&self, operation: Operation, conn: &mut Connection, session: &mut Session) -> Result<(), String>;
    fn cpu_seconds(&self) -> f64;
    fn peak_rss_mb(&self) -> f64;
}

#[async_trait(?Send)]
impl Load for Service {
    fn addrs(&self) -> &[SocketAddr] {
        &self.driver.addrs
    }

    async fn session(&self, operation: Operation, conn: &mut Connection) -> Session {
        if operation.needs_session() {
            Session::open(&self.driver, operation, conn).await
        } else {
            Session::default()
        }
    }

    async fn one(&self, operation: Operation, conn: &mut Connection, session: &mut Session) -> Result<(), String> {
        one(&self.driver, operation, conn, session).await
    }

    fn cpu_seconds(&self) -> f64 {
        Service::cpu_seconds(self)
    }

    fn peak_rss_mb(&self) -> f64 {
        Service::peak_rss_mb(self)
    }
}

const APPID: &str = "com.example.bench";

/// What a connection of a getcontacts run keeps between its requests.
#[derive(Default)]
struct Session {
    token: String,
    /// The address book a re-sync sends again.
    book: Vec<String>,
    /// The `ts` of the last reply, for a sync of changes.
    ts: i64,
}

impl Session {
    /// Logs a fresh phone in; a re-sync or a sync of changes first uploads an address
    /// book, as the app's first sync did.
    async fn open(service: &Driver, operation: Operation, conn: &mut Connection) -> Session {
        let mut session = Session { token: log_in(service, conn).await, ..Session::default() };
        if operation != Operation::Contacts {
            session.book = contact_upload(service);
            let (status, reply) =
                getcontacts(conn, &session.token, &format!(r#""phones":[{}]"#, session.book.join(","))).await.expect("first sync");
            assert!(status == 200 && reply["result"] == "OK", "first sync: {reply}");
            session.ts = reply["ts"].as_i64().expect("a ts");
            session.book.truncate(KNOWN_PER_RESYNC);
        }
        session
    }
}

async fn getcontacts(conn: &mut Connection, token: &str, fields: &str) -> Result<(u16, serde_json::Value), String> {
    let body = format!(r#"{{"op":"getcontacts","token":"{token}",{fields}}}"#);
    let (status, body) = conn.request("POST", "/api", &body).await.map_err(|e| e.to_string())?;
    let reply = serde_json::from_str(&body).map_err(|_| format!("getcontacts {status} {body}"))?;
    Ok((status, reply))
}

async fn one(service: &Driver, operation: Operation, conn: &mut Connection, session: &mut Session) -> Result<(), String> {
    let fields = match operation {
        Operation::Contacts => Some(format!(r#""phones":[{}]"#, contact_upload(service).join(","))),
        Operation::Resync => {
            let new = (KNOWN_PER_RESYNC as u64..CONTACTS_PER_REQUEST).map(|_| stranger());
            Some(format!(r#""phones":[{}]"#, session.book.iter().cloned().chain(new).collect::<Vec<_>>().join(",")))
        }
        Operation::SinceTs => Some(format!(r#""ts":{}"#, session.ts)),
        _ => None,
    };
    if let Some(fields) = fields {
        let (status, reply) = getcontacts(conn, &session.token, &fields).await?;
        if status != 200 || reply["result"] != "OK" {
            return Err(format!("getcontacts {status} {reply}"));
        }
        session.ts = reply["ts"].as_i64().unwrap_or(session.ts);
        return Ok(());
    }
    if operation == Operation::Baseline {
        let (status, _) = conn.request("GET", "/healthz", "").await.map_err(|e| e.to_string())?;
        return if status == 200 { Ok(()) } else { Err(format!("healthz {status}")) };
    }
    let phone = operation.phone(service.next_phone.fetch_add(1, Ordering::Relaxed));
    let start = format!(r#"{{"op":"login","phone":"{phone}","appid":"{APPID}","name":"Bench"}}"#);
    let (status, body) = conn.request("POST", "/api", &start).await.map_err(|e| e.to_string())?;
    if status != 200 || !body.contains(r#""result":"OK""#) {
        return Err(format!("start {status} {body}"));
    }
    let code = service.sender.take(&phone).await.ok_or("no code was sent")?;
    if operation == Operation::Start {
        return Ok(());
    }
    let verify = format!(r#"{{"op":"login","phone":"{phone}","appid":"{APPID}","name":"Bench","otp":"{code}"}}"#);
    let (status, body) = conn.request("POST", "/api", &verify).await.map_err(|e| e.to_string())?;
    if status != 200 || !body.contains(r#""token":"usertoken-"#) {
        return Err(format!("verify {status} {body}"));
    }
    Ok(())
}

/// Logs a fresh phone in and returns its access token.
async fn log_in(service: &Driver, conn: &mut Connection) -> String {
    let phone = Operation::Contacts.phone(service.next_phone.fetch_add(1, Ordering::Relaxed));
    let start = format!(r#"{{"op":"login","phone":"{phone}","appid":"{APPID}"}}"#);
    conn.request("POST", "/api", &start).await.expect("login start");
    let code = service.sender.take(&phone).await.expect("code sent");
    let verify = format!(r#"{{"op":"login","phone":"{phone}","appid":"{APPID}","otp":"{code}"}}"#);
    let (_, body) = conn.request("POST", "/api", &verify).await.expect("login verify");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("JSON reply");
    reply["token"].as_str().expect("a token").to_string()
}

/// 200 quoted phones: half existing users, half strangers.
fn contact_upload(service: &Driver) -> Vec<String> {
    let (prefix, users) = *service.user_phones.get().expect("user phones are set before the contacts run");
    let mut rng = rand::thread_rng();
    (0..CONTACTS_PER_REQUEST)
        .map(|i| match i % 2 {
            0 => format!("\"{prefix}{}\"", 2_000_000 + rng.gen_range(0..users.max(1))),
            _ => stranger(),
        })
        .collect()
}

/// A quoted phone that is nobody's, most likely never uploaded before.
fn stranger() -> String {
    format!("\"1999{}\"", 2_000_000 + rand::thread_rng().gen_range(0..7_000_000))
}

struct Measured {
    done: u64,
    errors: u64,
    per_sec: f64,
    /// CPU time per operation of the processes that run the service: with the fake
    /// upstream and the load generator unless the service runs in child processes.
    cpu_us_per_op: f64,
    /// Microseconds, to 3 significant digits: a list of every latency grew with the
    /// request count and its memory counted in the peak RSS the benchmark reports.
    latencies_us: Histogram<u64>,
    /// The process's peak RSS when the run ended: shows which run raised it.
    peak_rss_mb: f64,
}

impl Measured {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.value_at_quantile(p) as f64 / 1000.0
    }
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid precision")
}

async fn measure<L: Load + 'static>(load: &Arc<L>, operation: Operation, args: &Args) -> Measured {
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let started = Instant::now();
    let cpu_before = load.cpu_seconds();
    let mut workers = Vec::new();
    for worker in 0..args.conns {
        let load = load.clone();
        let addr = load.addrs()[worker % load.addrs().len()];
        workers.push(actix_web::rt::spawn(async move {
            let mut conn = Connection::open(addr).await;
            let mut session = load.session(operation, &mut conn).await;
            let (mut latencies, mut errors, mut first_error) = (latency_histogram(), 0u64, None);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match load.one(operation, &mut conn, &mut session).await {
                    Ok(()) => latencies.record(t0.elapsed().as_micros() as u64).expect("the histogram grows to fit"),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        conn = Connection::open(addr).await;
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut measured =
        Measured { done: 0, errors: 0, per_sec: 0.0, cpu_us_per_op: 0.0, latencies_us: latency_histogram(), peak_rss_mb: 0.0 };
    for worker in workers {
        let (latencies, errors, first_error) = worker.await.unwrap();
        if let Some(e) = first_error {
            eprintln!("  {}: first error: {e}", operation.label());
        }
        measured.errors += errors;
        measured.latencies_us.add(latencies).expect("the histogram grows to fit");
    }
    let elapsed = started.elapsed().as_secs_f64();
    measured.done = measured.latencies_us.len();
    measured.per_sec = measured.done as f64 / elapsed;
    measured.cpu_us_per_op = (load.cpu_seconds() - cpu_before) * 1e6 / measured.done.max(1) as f64;
    measured.peak_rss_mb = load.peak_rss_mb();
    measured
}

/// Where the service under load keeps its data.
enum Database {
    Sqlite(std::path::PathBuf),
    /// A database of the benchmark's own on the server, dropped at the end.
    Postgres {
        server: String,
        name: String,
    },
}

impl Database {
    /// A new PostgreSQL database on `server`, or the SQLite file in `dir`.
    fn new(dir: &std::path::Path, server: Option<&str>) -> Database {
        match server {
            None => Database::Sqlite(dir.join("otpgate.db")),
            Some(server) => {
                let name = format!("otpgate_bench_{:016x}", rand::random::<u64>());
                backend::run_sql(server, &format!("CREATE DATABASE {name}"));
                Database::Postgres { server: server.to_string(), name }
            }
        }
    }

    /// The service's setting for it.
    fn setting(&self) -> (&'static str, String) {
        match self {
            Database::Sqlite(path) => ("DATABASE_PATH", path.to_string_lossy().into_owned()),
            Database::Postgres { server, name } => ("DATABASE_URL", backend::with_database(server, name)),
        }
    }

    fn drop_postgres(&self) {
        if let Database::Postgres { server, name } = self {
            backend::run_sql(server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

async fn start_service(dir: &std::path::Path, args: &Args) -> Arc<Service> {
    let upstream = fake_upstream::FakeUpstream::start();
    upstream.set_recording(false);
    let database = Database::new(dir, args.database_url.as_deref());
    assert!(args.instances == 1 || matches!(database, Database::Postgres { .. }), "--instances needs --database-url");
    // Every instance shares the limits kept in Redis.
    let redis_prefix = args.redis_prefix.clone().unwrap_or_else(random_redis_prefix);
    // Every instance hands its codes to the one load generator.
    let sender = Arc::new(MemorySender::default());
    let mut addrs = Vec::new();
    let instances = if args.service_process {
        let me = std::env::current_exe().unwrap();
        let mut children = Vec::new();
        for _ in 0..args.instances {
            let mut command = std::process::Command::new(&me);
            command.args(["--serve-child", &dir.to_string_lossy(), "--upstream-url", &upstream.url()]);
            if let Database::Postgres { server, name } = &database {
                command.args(["--database-url", server, "--database-name", name]);
            }
            if let Some(redis) = &args.redis_url {
                command.args(["--redis-url", redis, "--redis-prefix", &redis_prefix]);
            }
            let (child, addr) = ChildService::spawn(command, sender.clone()).expect("start the service in a child process");
            addrs.push(addr);
            children.push(child);
        }
        Instances::Children(Mutex::new(children))
    } else {
        let config = bench_config(dir, &database, &upstream.url(), &redis_prefix, args);
        let mut states = Vec::new();
        for _ in 0..args.instances {
            let (addr, state) = serve(&config, Senders::all(sender.clone())).await;
            addrs.push(addr);
            states.push(state);
        }
        Instances::InProcess(states)
    };
    Arc::new(Service { driver: Driver::new(addrs, sender), instances, upstream, database })
}

fn random_redis_prefix() -> String {
    format!("otpgate-bench-{:016x}", rand::random::<u64>())
}

/// Starts one instance of the service with its periodic tasks; returns where it listens.
async fn serve(config: &Config, senders: Senders) -> (SocketAddr, web::Data<AppState>) {
    let state = web::Data::new(AppState::new(config, senders).await.expect("service starts"));
    let server_state = state.clone();
    let server = HttpServer::new(move || otpgate::api::server::app(server_state.clone())).disable_signals().bind("127.0.0.1:0").unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    state.clone().into_inner().start_background_tasks();
    (addr, state)
}

/// The configuration of every measured service: its data in `dir` or `database`, the
/// upstream at `upstream_url`, its keys in Redis (if any) under `redis_prefix`.
fn bench_config(dir: &std::path::Path, database: &Database, upstream_url: &str, redis_prefix: &str, args: &Args) -> Config {
    // Set, not a key file: every instance and the preload hash phones alike.
    let mut vars =
        vec![database.setting(), ("FILES_DIR", dir.join("files").to_string_lossy().into_owned()), ("OTP_SECRET", BENCH_SECRET.into())];
    if let Some(redis) = &args.redis_url {
        vars.push(("REDIS_URL", redis.clone()));
        vars.push(("REDIS_PREFIX", redis_prefix.to_string()));
    }
    vars.extend([
        ("APP_TOKEN", "bench-app-token".into()),
        ("UPSTREAM_URL", upstream_url.to_string()),
        // All load comes from one IP in one country: the per-IP, per-network and per-calling-code
        // limits and the SMS budget are off; per-phone limits stay at their defaults.
        ("LIMIT_START_PER_IP_PER_HOUR", "0".into()),
        ("LIMIT_VERIFY_PER_IP_PER_HOUR", "0".into()),
        ("LIMIT_START_PER_SUBNET_PER_HOUR", "0".into()),
        ("LIMIT_START_PER_CALLING_CODE_PER_HOUR", "0".into()),
        // Every upload carries 100 numbers never seen before: an address-book load the
        // contact limits exist to refuse after a day's budget, measured here without them.
        ("LIMIT_NEW_CONTACTS_PER_IP_PER_DAY", "0".into()),
        ("LIMIT_NEW_CONTACTS_PER_USER_PER_DAY", "0".into()),
        ("MAX_CONTACTS_PER_USER", "1000000000".into()),
        ("SMS_BUDGET_PER_HOUR", "0".into()),
        // SQLite: reader connections; PostgreSQL: connections per instance, which also carry the writes.
        ("DB_POOL_SIZE", std::env::var("DB_POOL_SIZE").unwrap_or(if args.database_url.is_some() { "16" } else { "4" }.into())),
    ]);
    // PostgreSQL: prepared (the default) or unnamed statements, to compare their cost.
    if let Ok(statements) = std::env::var("DB_STATEMENTS") {
        vars.push(("DB_STATEMENTS", statements));
    }
    if args.routes {
        vars.push(("PUBLIC_URL", "https://login.example.com".into()));
    }
    Config::from_vars(vars).expect("bench configuration")
}

fn count(database: &Database, sql: &str) -> i64 {
    let db_path = match database {
        Database::Sqlite(path) => path,
        Database::Postgres { server, name } => {
            return backend::run_sql(&backend::with_database(server, name), sql)[0].as_deref().unwrap_or("0").parse().unwrap()
        }
    };
    let conn = rusqlite::Connection::open(db_path).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Fills the database as a long-running deployment would have it: `users` users with
/// `contacts` address-book rows among them, and `pending` codes of which one in ten
/// has expired (for the garbage collector to find).
fn preload(db_path: &str, users: u64, contacts: u64, pending: u64) {
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(db_path).unwrap();
    // The phone index grows with the inserts, as a deployment's does. (Built afterwards, it
    // loaded in half the time but packed full, so the measured run's first inserts split a
    // page each: getcontacts ran at 118 requests/s against 141 on this one, in one pair of
    // runs.) The large cache keeps the load near a minute; this process is not measured.
    conn.execute_batch("PRAGMA cache_size = -2000000").unwrap();
    let tx = conn.transaction().unwrap();
    let now = otpgate::store::now();
    {
        let phones = bench_phones();
        let mut insert = tx
            .prepare(
                "INSERT INTO users (address, address_hash, uid, name, created_at, last_login, ts) VALUES (?1, ?2, ?3, 'User', ?4, ?4, ?4)",
            )
            .unwrap();
        for n in 0..users {
            let address = format!("1212{}", 2_000_000 + n);
            insert.execute(params![address, phones.hash(&address), n.to_string(), now - 86_400]).unwrap();
        }
        let mut insert = tx.prepare("INSERT OR IGNORE INTO contacts (owner_id, phone_hash) VALUES (?1, ?2)").unwrap();
        let mut rng = rand::thread_rng();
        let per_user = contacts / users.max(1);
        for owner in 1..=users {
            for _ in 0..per_user {
                let phone = format!("1212{}", 2_000_000 + rng.gen_range(0..users));
                insert.execute(params![owner, phones.hash(&phone)]).unwrap();
            }
        }
        let mut insert = tx
            .prepare(
                "INSERT INTO otp_challenges (address, appid, otp_hash, created_at, expires_at, attempts) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            )
            .unwrap();
        for n in 0..pending {
            let expires = if n % 10 == 0 { now - 60 } else { now + 3600 };
            insert.execute(params![format!("1313{}", 2_000_000 + n), APPID, [n as u8; 32].to_vec(), now - 120, expires]).unwrap();
        }
    }
    tx.commit().unwrap();
    // What an operator's `PRAGMA optimize` would have done by now.
    conn.execute_batch("ANALYZE").unwrap();
    // A deployment that grew slowly has long since checkpointed its WAL; don't leave
    // the first request a checkpoint of the whole preload.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    let database = Database::Sqlite(db_path.into());
    let rows = |table: &str| count(&database, &format!("SELECT count(*) FROM {table}"));
    println!(
        "preloaded {} users, {} contacts and {} pending codes ({} already expired, for the periodic purge) in {:.1} s",
        rows("users"),
        rows("contacts"),
        rows("otp_challenges"),
        rows(&format!("otp_challenges WHERE expires_at <= {now}")),
        started.elapsed().as_secs_f64()
    );
}

/// `/proc/self/…` or `/proc/PID/…`.
fn proc_file(pid: Option<u32>, file: &str) -> String {
    let path = match pid {
        None => format!("/proc/self/{file}"),
        Some(pid) => format!("/proc/{pid}/{file}"),
    };
    std::fs::read_to_string(path).unwrap_or_default()
}

/// User plus system CPU seconds so far of this process or of process `pid`, all its threads.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let stat = proc_file(pid, "stat");
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn peak_rss_mb(pid: Option<u32>) -> f64 {
    let status = proc_file(pid, "status");
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    kb / 1024.0
}

fn print_header() {
    println!(
        "{:<31} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>10} {:>12}",
        "operation", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "ratio", "CPU us/op", "peak RSS MB"
    );
}

/// `ratio` to the baseline, when there is one in the run.
fn print_row(label: &str, m: &Measured, ratio: Option<f64>) {
    let ratio = ratio.map_or("-".to_string(), |r| format!("{r:.3}"));
    println!(
        "{:<31} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>9} {:>10.0} {:>12.1}",
        label,
        m.per_sec,
        m.percentile_ms(0.50),
        m.percentile_ms(0.90),
        m.percentile_ms(0.99),
        m.percentile_ms(1.0),
        m.errors,
        ratio,
        m.cpu_us_per_op,
        m.peak_rss_mb
    );
}

/// Runs every operation once; returns the measurements in `OPERATIONS` order.
async fn run_all(service: &Arc<Service>, args: &Args) -> Vec<Measured> {
    let mut results: Vec<Measured> = Vec::new();
    for operation in OPERATIONS {
        if operation == Operation::Contacts {
            // Without preloaded users, the users are those the full-login run made.
            let _ = service.driver.user_phones.set(("1650", results[2].done));
        }
        results.push(measure(service, operation, args).await);
    }
    print_header();
    for (operation, m) in OPERATIONS.iter().zip(&results) {
        print_row(operation.label(), m, Some(m.per_sec / results[0].per_sec));
    }
    results
}

/// Every start sent exactly one code, every full login used its code (none left over)
/// and got its own token. Workers finish the operation in hand at the deadline, so the
/// counts must match exactly. Each connection of a getcontacts run logged in once beforehand.
fn check_counts(service: &Service, results: &[Measured], args: &Args) -> bool {
    let full = results[2].done as i64;
    let setup_logins = args.conns as i64 * OPERATIONS.iter().filter(|o| o.needs_session()).count() as i64;
    let starts = (results[1].done + results[2].done) as i64 + setup_logins;
    let sent = service.driver.sender.sent.load(Ordering::Relaxed) as i64;
    let leftover = count(&service.database, "SELECT count(*) FROM otp_challenges WHERE address LIKE '1650%'");
    let users = count(&service.database, "SELECT count(*) FROM users WHERE address LIKE '1650%'");
    let issued = service.upstream.issued() as i64 - setup_logins;
    let ok = sent == starts && leftover == 0 && users == full && issued == full;
    println!(
        "counts: codes sent {sent} for {starts} completed starts; full logins {full}, tokens issued {issued}, users recorded {users}, \
         codes left unused by full logins {leftover} -> {}",
        if ok { "consistent" } else { "INCONSISTENT" }
    );
    ok
}

async fn garbage_collect(service: &Service) {
    let now = otpgate::store::now();
    let rows = |table: &str| count(&service.database, &format!("SELECT count(*) FROM {table}"));
    let expired = |table: &str| count(&service.database, &format!("SELECT count(*) FROM {table} WHERE expires_at <= {now}"));
    let (codes, expired_codes, sessions, expired_sessions) =
        (rows("otp_challenges"), expired("otp_challenges"), rows("sessions"), expired("sessions"));
    let Instances::InProcess(states) = &service.instances else {
        println!("garbage collection: not shown, the service runs in child processes");
        return;
    };
    let purged = states[0].housekeeping().await.expect("housekeeping");
    println!(
        "garbage collection: otp_challenges {codes} rows ({expired_codes} expired) -> {}, sessions {sessions} rows ({expired_sessions} expired) -> {} (purged {} codes, {} sessions)",
        rows("otp_challenges"),
        rows("sessions"),
        purged.codes,
        purged.sessions
    );
}

#[actix_web::main]
async fn main() {
    let args = parse_args();
    // The service's own default level unless RUST_LOG says otherwise: logging is part of
    // what a request costs. Send stderr to a file or /dev/null.
    let _log = otpgate::runtime::logging::init(otpgate::config::LogFormat::Text);
    println!("log level (RUST_LOG): {}", std::env::var("RUST_LOG").unwrap_or_else(|_| "info (the service's default)".into()));
    if let Some(dir) = &args.serve_child {
        return serve_child(std::path::Path::new(dir), &args).await;
    }
    if let Some(counts) = args.callgrind {
        let ok = callgrind(counts, &args).await;
        std::process::exit(if ok { 0 } else { 1 });
    }
    if let Some(db_path) = &args.preload_into {
        preload(db_path, args.users, args.contacts, args.pending);
        return;
    }
    if let Some(dir) = &args.run_preloaded {
        let database = Database::Sqlite(std::path::Path::new(dir).join("otpgate.db"));
        let codes = |which: &str| count(&database, &format!("SELECT count(*) FROM otp_challenges {which}"));
        let expired = format!("WHERE expires_at <= {}", otpgate::store::now());
        let before = (codes(""), codes(&expired));
        let service = start_service(std::path::Path::new(dir), &args).await;
        // The periodic task's first round runs as the service starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while codes(&expired) > 0 && Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "periodic purge at start: otp_challenges {} rows ({} expired) -> {} rows ({} expired)",
            before.0,
            before.1,
            codes(""),
            codes(&expired)
        );
        let _ = service.driver.user_phones.set(("1212", args.users));
        let loaded = run_all(&service, &args).await;
        let consistent = check_counts(&service, &loaded, &args);
        garbage_collect(&service).await;
        println!("peak RSS of this run: {:.1} MB", service.peak_rss_mb());
        for m in &loaded {
            println!("{THROUGHPUT_TAG} {}", m.per_sec);
        }
        let errors: u64 = loaded.iter().map(|m| m.errors).sum();
        std::process::exit(if errors == 0 && consistent { 0 } else { 1 });
    }
    assert!(!args.scale || args.database_url.is_none(), "--scale preloads a SQLite file; run it without --database-url");
    println!(
        "otpgate loadgen: {} s per operation, {} connections, {} cores, {} on {}{}{}",
        args.secs,
        args.conns,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        match args.instances {
            1 => "one instance".to_string(),
            n => format!("{n} instances"),
        },
        if args.database_url.is_some() { "PostgreSQL" } else { "SQLite" },
        if args.redis_url.is_some() { ", limits in Redis" } else { "" },
        if args.service_process { ", each instance in a child process (the CPU column is theirs alone)" } else { "" },
    );
    if args.target_url.is_some() {
        let ok = compare(&args).await;
        std::process::exit(if ok { 0 } else { 1 });
    }

    let empty_dir = tempfile::tempdir().unwrap();
    let service = start_service(empty_dir.path(), &args).await;
    println!("\n== empty database");
    println!("peak RSS once started: {:.1} MB", service.peak_rss_mb());
    let empty = run_all(&service, &args).await;
    let consistent = check_counts(&service, &empty, &args);
    garbage_collect(&service).await;
    println!("peak RSS of this run: {:.1} MB", service.peak_rss_mb());
    let errors: u64 = empty.iter().map(|m| m.errors).sum();
    let mut ok = errors == 0 && consistent;

    if args.scale {
        ok &= run_preloaded(&args, &empty);
    }
    service.stop().await;
    if !ok {
        eprintln!("FAILED: errors or inconsistent counts (see above)");
        std::process::exit(1);
    }
}

const THROUGHPUT_TAG: &str = "throughput-per-sec:";

/// The server secret of every measured service.
const BENCH_SECRET: &str = "bench-secret-shared-by-every-instance";

/// Hashes phones as the measured services do.
fn bench_phones() -> otpgate::domain::keys::PhoneHasher {
    otpgate::domain::keys::ServerKeys::from_secret(BENCH_SECRET.as_bytes()).phones
}

/// Preloads a database and measures it in child processes; prints the ratios to `empty`.
fn run_preloaded(args: &Args, empty: &[Measured]) -> bool {
    let scale_dir = tempfile::tempdir().unwrap();
    let db_path = scale_dir.path().join("otpgate.db");
    drop(otpgate::store::Db::open(&db_path.to_string_lossy(), 1, &bench_phones()).expect("create the schema"));
    let me = std::env::current_exe().unwrap();
    let sizes = ["--users", &args.users.to_string(), "--contacts", &args.contacts.to_string(), "--pending", &args.pending.to_string()]
        .map(String::from);
    let status = std::process::Command::new(&me)
        .args(["--preload-into", &db_path.to_string_lossy()])
        .args(&sizes)
        .status()
        .expect("run the preload");
    assert!(status.success(), "preload failed");

    println!("\n== preloaded database");
    let output = std::process::Command::new(&me)
        .args(["--run-preloaded", &scale_dir.path().to_string_lossy()])
        .args(["--secs", &args.secs.to_string(), "--conns", &args.conns.to_string()])
        .args(&sizes)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the preloaded measurement");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut loaded = Vec::new();
    for line in text.lines() {
        match line.strip_prefix(THROUGHPUT_TAG) {
            Some(value) => loaded.push(value.trim().parse::<f64>().unwrap_or(0.0)),
            None => println!("{line}"),
        }
    }
    println!("\nthroughput ratio, preloaded / empty database:");
    for (operation, (l, e)) in OPERATIONS.iter().zip(loaded.iter().zip(empty)).skip(1) {
        println!("  {:<31} {:.3}", operation.label(), l / e.per_sec);
    }
    output.status.success()
}

/// A backend driven by `--target-url` comparisons: the service, or another one of the
/// same protocol. Both are sent the same requests and their replies checked alike.
struct Target {
    name: &'static str,
    addrs: Vec<SocketAddr>,
    /// The request path, such as `/api` or the other backend's `/index.php`.
    path: String,
    codes: Codes,
    next_phone: AtomicU64,
    /// The service, when it is the target: whose CPU time counts. Otherwise this process's.
    service: Option<Arc<Service>>,
}

/// How the load generator learns the code of a login.
enum Codes {
    /// The service hands each code it sends to the load generator.
    Sent(Arc<MemorySender>),
    /// The other backend accepts this one code for every phone (set up so for the benchmark).
    Fixed(String),
}

impl Target {
    fn service(service: &Arc<Service>) -> Target {
        Target {
            name: "otpgate",
            addrs: service.driver.addrs.clone(),
            path: "/api".into(),
            codes: Codes::Sent(service.driver.sender.clone()),
            next_phone: AtomicU64::new(0),
            service: Some(service.clone()),
        }
    }

    /// The backend at `url` (`http://HOST:PORT/PATH`, plain HTTP), whose code is `otp`.
    fn external(url: &str, otp: &str) -> Target {
        use std::net::ToSocketAddrs;
        let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("--target-url {url}: only http:// URLs are supported"));
        let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
        let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
        let addr =
            authority.to_socket_addrs().ok().and_then(|mut a| a.next()).unwrap_or_else(|| panic!("--target-url {url}: unknown host"));
        Target {
            name: "target",
            addrs: vec![addr],
            path,
            codes: Codes::Fixed(otp.to_string()),
            next_phone: AtomicU64::new(0),
            service: None,
        }
    }
}

/// Parses a login reply, which must say `"result": "OK"` (in any JSON spacing).
fn login_reply(step: &str, status: u16, body: &str) -> Result<serde_json::Value, String> {
    let reply: serde_json::Value = serde_json::from_str(body).map_err(|_| format!("{step} {status} {body}"))?;
    if status != 200 || reply["result"] != "OK" {
        return Err(format!("{step} {status} {body}"));
    }
    Ok(reply)
}

#[async_trait(?Send)]
impl Load for Target {
    fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    async fn session(&self, _operation: Operation, _conn: &mut Connection) -> Session {
        Session::default()
    }

    async fn one(&self, operation: Operation, conn: &mut Connection, _session: &mut Session) -> Result<(), String> {
        assert!(matches!(operation, Operation::Start | Operation::FullLogin), "a comparison runs the login operations only");
        let phone = operation.phone(self.next_phone.fetch_add(1, Ordering::Relaxed));
        let start = format!(r#"{{"op":"login","phone":"{phone}","appid":"{APPID}","name":"Bench"}}"#);
        let (status, body) = conn.request("POST", &self.path, &start).await.map_err(|e| e.to_string())?;
        login_reply("start", status, &body)?;
        let code = match &self.codes {
            // Taken after a start too, as the other runs do, so the map stays small.
            Codes::Sent(sender) => sender.take(&phone).await.ok_or("no code was sent")?,
            Codes::Fixed(code) => code.clone(),
        };
        if operation == Operation::Start {
            return Ok(());
        }
        let verify = format!(r#"{{"op":"login","phone":"{phone}","appid":"{APPID}","name":"Bench","otp":"{code}"}}"#);
        let (status, body) = conn.request("POST", &self.path, &verify).await.map_err(|e| e.to_string())?;
        let reply = login_reply("verify", status, &body)?;
        if reply["token"].as_str().is_none_or(str::is_empty) {
            return Err(format!("verify without a token: {body}"));
        }
        Ok(())
    }

    fn cpu_seconds(&self) -> f64 {
        self.service.as_ref().map_or_else(|| cpu_seconds(None), |service| service.cpu_seconds())
    }

    fn peak_rss_mb(&self) -> f64 {
        self.service.as_ref().map_or_else(|| peak_rss_mb(None), |service| service.peak_rss_mb())
    }
}

/// `--target-url`: login start, then full login, on the service and on the other backend
/// in turn, `--rounds` times, each run `--secs` long on `--conns` connections; which
/// backend goes first alternates by round, so both see the same drift of a shared
/// machine. Prints each run, then the service's throughput over the other's.
async fn compare(args: &Args) -> bool {
    let url = args.target_url.as_deref().unwrap();
    let otp = args.target_otp.as_deref().expect("--target-url needs --target-otp CODE, the code the other backend accepts");
    let dir = tempfile::tempdir().unwrap();
    let service = start_service(dir.path(), args).await;
    let ours = Arc::new(Target::service(&service));
    let theirs = Arc::new(Target::external(url, otp));
    println!(
        "\n== otpgate against {url}: {} rounds; CPU us/op counts {} for otpgate, this process (the load generator) for the target",
        args.rounds,
        if args.service_process { "the service's processes" } else { "this process (service, fake upstream, load generator)" }
    );
    print_header();
    let operations = [Operation::Start, Operation::FullLogin];
    // Requests done and seconds spent, per operation, for (otpgate, target).
    let mut totals = [[(0u64, 0.0f64); 2]; 2];
    let mut ratios: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut ok = true;
    for round in 1..=args.rounds {
        for (i, operation) in operations.into_iter().enumerate() {
            let mut per_sec = [0.0; 2];
            let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
            for side in order {
                let target = if side == 0 { &ours } else { &theirs };
                let m = measure(target, operation, args).await;
                ok &= m.errors == 0;
                print_row(&format!("{} {}, round {round}", operation.label(), target.name), &m, None);
                per_sec[side] = m.per_sec;
                totals[i][side].0 += m.done;
                totals[i][side].1 += m.done as f64 / m.per_sec.max(f64::MIN_POSITIVE);
            }
            ratios[i].push(per_sec[0] / per_sec[1].max(f64::MIN_POSITIVE));
        }
    }
    println!("\nthroughput, otpgate / target (per round; over all rounds):");
    for (i, operation) in operations.iter().enumerate() {
        let rate = |(done, secs): (u64, f64)| done as f64 / secs.max(f64::MIN_POSITIVE);
        let rounds: Vec<String> = ratios[i].iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "  {:<12} {:>8.0} / {:>8.0} req/s = {:.2}x (rounds: {})",
            operation.label(),
            rate(totals[i][0]),
            rate(totals[i][1]),
            rate(totals[i][0]) / rate(totals[i][1]).max(f64::MIN_POSITIVE),
            rounds.join(", ")
        );
    }
    // Every otpgate start sent one code; every full login got a token from the fake upstream.
    let starts = totals[0][0].0 + totals[1][0].0;
    let sent = service.driver.sender.sent.load(Ordering::Relaxed);
    let issued = service.upstream.issued();
    let consistent = sent == starts && issued == totals[1][0].0;
    println!(
        "counts (otpgate): codes sent {sent} for {starts} completed starts, tokens issued {issued} for {} full logins -> {}",
        totals[1][0].0,
        if consistent { "consistent" } else { "INCONSISTENT" }
    );
    service.stop().await;
    ok && consistent
}

/// Requests per operation of the two counted runs of `--callgrind`.
const CALLGRIND_REQUESTS: (u64, u64) = (200, 1200);
/// Valgrind dumps the counts each time the service's process enters this function.
const CALLGRIND_MARK: &str = "loadgen_callgrind_mark";

/// `--callgrind`: the service runs in a child process under valgrind's callgrind (the
/// load generator and the fake upstream stay in this one, so only the service's
/// instructions count). Each operation runs on one connection, one request at a time,
/// with the service's instructions counted after `n1` and after `n2` requests;
/// instructions per operation are (Ir(n2) - Ir(n1)) / (n2 - n1), so what the first
/// requests cost once (lazily compiled metadata, caches filling) cancels out.
/// Deterministic enough to compare builds on any machine.
async fn callgrind((n1, n2): (u64, u64), args: &Args) -> bool {
    use std::io::Write;
    assert!(args.instances == 1, "--callgrind measures one instance");
    let upstream = fake_upstream::FakeUpstream::start();
    upstream.set_recording(false);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = args.callgrind_out.as_ref().map_or(dir.path().to_path_buf(), std::path::PathBuf::from);
    std::fs::create_dir_all(&out_dir).expect("create the --callgrind-out directory");
    let out_file = out_dir.join("callgrind.out");
    let me = std::env::current_exe().unwrap();
    let mut command = std::process::Command::new("valgrind");
    command
        .args(["--tool=callgrind", "--quiet", &format!("--dump-before={CALLGRIND_MARK}")])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&me)
        .args(["--serve-child", &dir.path().to_string_lossy(), "--upstream-url", &upstream.url()]);
    if let Some(url) = &args.database_url {
        command.args(["--database-url", url]);
    }
    if let Some(url) = &args.redis_url {
        command.args(["--redis-url", url]);
    }
    if args.routes {
        command.arg("--routes");
    }
    // The child reports `listening ADDR`, each code it sends (`code PHONE OTP`) and each dump (`marked`).
    let sender = Arc::new(MemorySender::default());
    let (mut child, addr) = match ChildService::spawn(command, sender.clone()) {
        Ok(started) => started,
        Err(e) => {
            eprintln!(
                "--callgrind runs the service under valgrind, which could not be started or did not start ({e}): apt-get install valgrind"
            );
            return false;
        }
    };
    let mut dumps = 0;
    // Has the child dump its counts; returns the instructions since the dump before, and its file.
    let mut dump = || -> Option<(u64, String)> {
        let stdin = child.stdin.as_mut()?;
        writeln!(stdin, "mark").ok()?;
        stdin.flush().ok()?;
        child.wait_for("marked")?;
        dumps += 1;
        let file = format!("{}.{dumps}", out_file.display());
        Some((dump_total(&std::fs::read_to_string(&file).ok()?)?, file))
    };

    println!(
        "otpgate loadgen --callgrind: the service under valgrind (callgrind), {} on one connection, {n1} then {n2} requests per operation",
        if args.database_url.is_some() { "PostgreSQL" } else { "SQLite" }
    );
    println!("{:<31} {:>14} {:>14} {:>10} {:>8}", "operation", format!("Ir({n1})"), format!("Ir({n2})"), "Ir/op", "secs");
    let driver = Driver::new(vec![addr], sender);
    let mut ok = true;
    let mut full_logins = 0;
    let mut kept = Vec::new();
    for operation in OPERATIONS {
        if args.callgrind_logins && operation.needs_session() {
            break;
        }
        if operation == Operation::Contacts {
            // The users are those the full-login run made.
            let _ = driver.user_phones.set(("1650", full_logins));
        }
        let started = Instant::now();
        let mut conn = Connection::open(addr).await;
        let mut session = if operation.needs_session() { Session::open(&driver, operation, &mut conn).await } else { Session::default() };
        let mut counted = Vec::new();
        let mut failed = None;
        // The first dump ends what is not counted (the connection, the session, the operation
        // before); then the first n1 requests, then the rest up to n2.
        for requests in [0, n1, n2 - n1] {
            for _ in 0..requests {
                if let Err(e) = one(&driver, operation, &mut conn, &mut session).await {
                    failed.get_or_insert(e);
                }
            }
            counted.push(dump());
        }
        if operation == Operation::FullLogin {
            full_logins = n2;
        }
        let (Some((ir1, _)), Some((rest, rest_file))) = (counted[1].clone(), counted[2].clone()) else {
            eprintln!("{}: the callgrind dump could not be read", operation.label());
            ok = false;
            break;
        };
        if let Some(e) = failed {
            eprintln!("{}: a request failed: {e}", operation.label());
            ok = false;
        }
        // Each dump counts from the one before: Ir(n2) is both together.
        let ir2 = ir1 + rest;
        let per_op = (ir2 - ir1) as f64 / (n2 - n1) as f64;
        println!("{:<31} {:>14} {:>14} {:>10.0} {:>8.1}", operation.label(), ir1, ir2, per_op, started.elapsed().as_secs_f64());
        if args.callgrind_out.is_some() {
            kept.push(format!("  {}: {rest_file}", operation.label()));
        }
    }
    if !kept.is_empty() {
        println!("the dumps of the last {n2} - {n1} requests of each operation, for callgrind_annotate:\n{}", kept.join("\n"));
    }
    // Closing its standard input ends the child.
    ok & child.stop()
}

/// The instruction count of a callgrind dump: its `summary:` line (or `totals:`).
fn dump_total(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("summary:")).or_else(|| text.lines().find_map(|l| l.strip_prefix("totals:")))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Reports each code sent on standard output, for the `--callgrind` parent.
struct PipeSender;

#[async_trait]
impl OtpSender for PipeSender {
    fn name(&self) -> &'static str {
        "pipe"
    }

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "code {} {}", message.to.as_str(), message.otp)
            .and_then(|()| out.flush())
            .map(|()| Accepted::default())
            .map_err(|e| SendError::transient(e.to_string()))
    }
}

/// `--routes`: two named instances taking receipts, on routes for three prefixes and `*`,
/// with the benchmark's numbers on a route of two.
fn routed_senders() -> Senders {
    use otpgate::config::Channel;
    use otpgate::delivery::senders::Instance;
    let instance = |name: &str| Instance {
        name: name.into(),
        kind: "twilio",
        channel: Channel::Sms,
        sender: Arc::new(PipeSender),
        takes_receipts: true,
    };
    let routes = [("44", vec![0, 1]), ("1876", vec![1]), ("33", vec![1, 0]), ("", vec![0, 1])];
    Senders::routed(vec![instance("sms_a"), instance("sms_b")], routes.map(|(prefix, route)| (prefix.to_string(), route)).to_vec(), None)
}

/// Where valgrind dumps the counts (`--dump-before`): the parent asks for each dump on
/// standard input. Kept out of line and unmangled so that valgrind finds it by name.
#[no_mangle]
#[inline(never)]
pub extern "C" fn loadgen_callgrind_mark() {
    std::hint::black_box(());
}

/// The child of `--callgrind` or `--service-process`: the service alone, until standard
/// input closes. With `--database-name` the database is the parent's, which drops it.
async fn serve_child(dir: &std::path::Path, args: &Args) {
    use std::io::{BufRead, Write};
    let database = match (&args.database_url, &args.database_name) {
        (Some(server), Some(name)) => Database::Postgres { server: server.clone(), name: name.clone() },
        (server, _) => Database::new(dir, server.as_deref()),
    };
    let upstream_url = args.upstream_url.as_deref().expect("--serve-child needs --upstream-url");
    let redis_prefix = args.redis_prefix.clone().unwrap_or_else(random_redis_prefix);
    let config = bench_config(dir, &database, upstream_url, &redis_prefix, args);
    let senders = match args.routes {
        true => routed_senders(),
        false => Senders::all(Arc::new(PipeSender)),
    };
    let (addr, state) = serve(&config, senders).await;
    println!("listening {addr}");
    std::io::stdout().flush().unwrap();
    let (closed, mut stop) = tokio::sync::mpsc::channel::<()>(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if line.trim() == "mark" {
                loadgen_callgrind_mark();
                println!("marked");
                let _ = std::io::stdout().flush();
            }
        }
        let _ = closed.blocking_send(());
    });
    stop.recv().await;
    state.shutdown(Duration::from_secs(1)).await;
    if args.database_name.is_none() {
        database.drop_postgres();
    }
}
