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

#[path = "../tests/common/fake_upstream.rs"]
#[allow(dead_code)]
mod fake_upstream;

use actix_web::{web, App, HttpServer};
use async_trait::async_trait;
use rusqlite::params;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use otpgate::config::Config;
use otpgate::senders::{OtpMessage, OtpSender, Senders};
use otpgate::{http, AppState};

struct Args {
    secs: u64,
    conns: usize,
    scale: bool,
    users: u64,
    pending: u64,
}

fn parse_args() -> Args {
    let mut args = Args { secs: 10, conns: 64, scale: false, users: 1_000_000, pending: 100_000 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut number = || it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--secs" => args.secs = number(),
            "--conns" => args.conns = number() as usize,
            "--users" => args.users = number(),
            "--pending" => args.pending = number(),
            "--scale" => args.scale = true,
            other => panic!("unknown flag {other}; flags: --secs N --conns N --scale --users N --pending N"),
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

    async fn send(&self, message: &OtpMessage) -> Result<(), String> {
        self.codes.lock().unwrap().insert(message.to.as_str().to_string(), message.otp.clone());
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
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
        let mut length = 0;
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
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await?;
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
}

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Operation::Baseline => "baseline GET /healthz",
            Operation::Start => "login start",
            Operation::FullLogin => "full login",
        }
    }

    /// Phones of each operation have their own prefix, so counts can be checked per operation.
    fn phone(self, n: u64) -> String {
        let prefix = if self == Operation::Start { "1415" } else { "1650" };
        format!("{prefix}{}", 2_000_000 + n)
    }
}

struct Service {
    addr: SocketAddr,
    state: web::Data<AppState>,
    sender: Arc<MemorySender>,
    upstream: Arc<fake_upstream::FakeUpstream>,
    db_path: std::path::PathBuf,
    next_phone: AtomicU64,
}

const APPID: &str = "com.example.bench";

async fn one(service: &Service, operation: Operation, conn: &mut Connection) -> Result<(), String> {
    if operation == Operation::Baseline {
        let (status, _) = conn.request("GET", "/healthz", "").await.map_err(|e| e.to_string())?;
        return if status == 200 { Ok(()) } else { Err(format!("healthz {status}")) };
    }
    let phone = operation.phone(service.next_phone.fetch_add(1, Ordering::Relaxed));
    let start = format!(r#"{{"op":"login","phone":"{phone}","appid":"{APPID}","name":"Bench"}}"#);
    let (status, body) = conn.request("POST", "/api", &start).await.map_err(|e| e.to_string())?;
    if status != 200 || !body.contains(r#""result":true"#) {
        return Err(format!("start {status} {body}"));
    }
    let code = service.sender.codes.lock().unwrap().remove(&phone).ok_or("no code was sent")?;
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

struct Measured {
    done: u64,
    errors: u64,
    per_sec: f64,
    /// Process CPU time (service, fake upstream and load generator together) per operation.
    cpu_us_per_op: f64,
    latencies_us: Vec<u64>,
}

impl Measured {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_us.len()) - 1;
        self.latencies_us[index] as f64 / 1000.0
    }
}

async fn measure(service: &Arc<Service>, operation: Operation, args: &Args) -> Measured {
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let mut workers = Vec::new();
    for _ in 0..args.conns {
        let service = service.clone();
        workers.push(actix_web::rt::spawn(async move {
            let mut conn = Connection::open(service.addr).await;
            let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0u64, None);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match one(&service, operation, &mut conn).await {
                    Ok(()) => latencies.push(t0.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        conn = Connection::open(service.addr).await;
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut measured = Measured { done: 0, errors: 0, per_sec: 0.0, cpu_us_per_op: 0.0, latencies_us: Vec::new() };
    for worker in workers {
        let (latencies, errors, first_error) = worker.await.unwrap();
        if let Some(e) = first_error {
            eprintln!("  {}: first error: {e}", operation.label());
        }
        measured.errors += errors;
        measured.latencies_us.extend(latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    measured.done = measured.latencies_us.len() as u64;
    measured.per_sec = measured.done as f64 / elapsed;
    measured.cpu_us_per_op = (cpu_seconds() - cpu_before) * 1e6 / measured.done.max(1) as f64;
    measured.latencies_us.sort_unstable();
    measured
}

async fn start_service(dir: &std::path::Path) -> Arc<Service> {
    let upstream = fake_upstream::FakeUpstream::start();
    upstream.set_recording(false);
    let db_path = dir.join("otpgate.db");
    let config = Config::from_vars([
        ("DATABASE_PATH", db_path.to_string_lossy().into_owned()),
        ("APP_TOKEN", "bench-app-token".into()),
        ("UPSTREAM_URL", upstream.url()),
        // All load comes from one IP: per-IP limits off, per-phone limits at their defaults.
        ("LIMIT_START_PER_IP_PER_HOUR", "0".into()),
        ("LIMIT_VERIFY_PER_IP_PER_HOUR", "0".into()),
        ("DB_POOL_SIZE", std::env::var("DB_POOL_SIZE").unwrap_or("4".into())),
    ])
    .expect("bench configuration");
    let sender = Arc::new(MemorySender::default());
    let state = web::Data::new(AppState::new(&config, Senders::all(sender.clone())).expect("service starts"));
    let server_state = state.clone();
    let server =
        HttpServer::new(move || App::new().configure(http::configure(server_state.clone()))).disable_signals().bind("127.0.0.1:0").unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    Arc::new(Service { addr, state, sender, upstream, db_path, next_phone: AtomicU64::new(0) })
}

fn count(db_path: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db_path).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Fills the database as a long-running deployment would have it.
fn preload(db_path: &std::path::Path, users: u64, pending: u64) {
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(db_path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare("INSERT INTO users (address, uid, name, created_at, last_login, token_sha256) VALUES (?1, ?2, 'User', 1700000000, 1700000000, ?3)")
            .unwrap();
        for n in 0..users {
            insert.execute(params![format!("1212{}", 2_000_000 + n), n.to_string(), format!("{n:064x}")]).unwrap();
        }
        // One in ten pending codes has already expired, for the garbage collector to find.
        let now = otpgate::storage::now();
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
    // A deployment that grew slowly has long since checkpointed its WAL; don't leave
    // the first request a checkpoint of the whole preload.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    println!("preloaded {users} users and {pending} pending codes in {:.1} s", started.elapsed().as_secs_f64());
}

/// User plus system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    kb / 1024.0
}

fn print_header() {
    println!(
        "{:<24} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}",
        "operation", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "ratio"
    );
}

fn print_row(label: &str, m: &Measured, ratio: f64) {
    println!(
        "{:<24} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>9.3} {:>10.0}",
        label,
        m.per_sec,
        m.percentile_ms(0.50),
        m.percentile_ms(0.90),
        m.percentile_ms(0.99),
        m.percentile_ms(1.0),
        m.errors,
        ratio,
        m.cpu_us_per_op
    );
}

/// Runs every operation once; returns the measurements in `[Baseline, Start, FullLogin]` order.
async fn run_all(service: &Arc<Service>, args: &Args) -> Vec<Measured> {
    let mut results = Vec::new();
    for operation in [Operation::Baseline, Operation::Start, Operation::FullLogin] {
        results.push(measure(service, operation, args).await);
    }
    print_header();
    for (operation, m) in [Operation::Baseline, Operation::Start, Operation::FullLogin].iter().zip(&results) {
        print_row(operation.label(), m, m.per_sec / results[0].per_sec);
    }
    results
}

/// Every start sent exactly one code, every full login used its code (none left over)
/// and got its own token. Workers finish the operation in hand at the deadline, so the
/// counts must match exactly.
fn check_counts(service: &Service, results: &[Measured]) -> bool {
    let full = results[2].done as i64;
    let starts = (results[1].done + results[2].done) as i64;
    let sent = service.sender.sent.load(Ordering::Relaxed) as i64;
    let leftover = count(&service.db_path, "SELECT count(*) FROM otp_challenges WHERE address LIKE '1650%'");
    let users = count(&service.db_path, "SELECT count(*) FROM users WHERE address LIKE '1650%'");
    let issued = service.upstream.issued() as i64;
    // An unfinished full login at the deadline may have started without verifying: allow one per connection.
    let ok = sent == starts && leftover == 0 && users == full && issued == full;
    println!(
        "counts: codes sent {sent} for {starts} completed starts; full logins {full}, tokens issued {issued}, users recorded {users}, codes left unused by full logins {leftover} -> {}",
        if ok { "consistent" } else { "INCONSISTENT" }
    );
    ok
}

async fn garbage_collect(service: &Service) {
    let before = count(&service.db_path, "SELECT count(*) FROM otp_challenges");
    let expired = count(&service.db_path, &format!("SELECT count(*) FROM otp_challenges WHERE expires_at <= {}", otpgate::storage::now()));
    let purged = service.state.housekeeping().await.expect("housekeeping");
    let after = count(&service.db_path, "SELECT count(*) FROM otp_challenges");
    println!("garbage collection: otp_challenges {before} rows ({expired} expired) -> {after} rows after purging {}", purged.codes);
}

#[actix_web::main]
async fn main() {
    let args = parse_args();
    println!(
        "otpgate loadgen: {} s per operation, {} connections, {} cores",
        args.secs,
        args.conns,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let empty_dir = tempfile::tempdir().unwrap();
    let service = start_service(empty_dir.path()).await;
    println!("\n== empty database");
    let empty = run_all(&service, &args).await;
    let mut consistent = check_counts(&service, &empty);
    garbage_collect(&service).await;

    if args.scale {
        let scale_dir = tempfile::tempdir().unwrap();
        drop(start_service(scale_dir.path()).await); // creates the schema
        preload(&scale_dir.path().join("otpgate.db"), args.users, args.pending);
        let service = start_service(scale_dir.path()).await;
        println!("\n== database with {} users and {} pending codes", args.users, args.pending);
        let loaded = run_all(&service, &args).await;
        consistent &= check_counts(&service, &loaded);
        println!("\nthroughput ratio, loaded / empty database:");
        for (operation, (l, e)) in [Operation::Start, Operation::FullLogin].iter().zip(loaded.iter().zip(&empty).skip(1)) {
            println!("  {:<22} {:.3}", operation.label(), l.per_sec / e.per_sec);
        }
        garbage_collect(&service).await;
    }

    println!("\npeak RSS: {:.1} MB", peak_rss_mb());
    let errors: u64 = empty.iter().map(|m| m.errors).sum();
    if errors > 0 || !consistent {
        eprintln!("FAILED: {errors} errors, counts consistent: {consistent}");
        std::process::exit(1);
    }
}
