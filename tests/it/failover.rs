//! PostgreSQL failovers under load: a primary and its streaming standby of the test's own,
//! the service given both hosts (`target_session_attrs=read-write`), logins running while the
//! primary is frozen (SIGSTOP: its connections stay open and nothing answers, the harder case
//! than a dead one), or made read-only as a switchover does, and the standby promoted. Every
//! login succeeds or gets a clean retryable error, no code is accepted twice, no token
//! upstream issued goes unrecorded, and logins succeed on the new primary.
//!
//! Runs in the PostgreSQL pass (DATABASE_URL set): it tests the PostgreSQL store and needs
//! only the PostgreSQL binaries, which that pass has; on SQLite it would test nothing new.
//! Replication is synchronous here, so that no acknowledged commit is lost by the failover;
//! what asynchronous replicas may lose is documented in docs/scaling.md, not tested.

use crate::common::*;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Concurrent clients logging in, so that some requests are in flight at the freeze.
const CLIENTS: usize = 4;
/// Logins that must succeed before the freeze, and after the promotion.
const LOGINS_EACH_SIDE: usize = 8;
/// Concurrent clients through a switchover, and how many of them wait for their token
/// when writes stop (the others' requests fail meanwhile).
const SWITCHOVER_CLIENTS: usize = 8;
const HELD_LOGINS: u64 = 4;

/// A running PostgreSQL server of this test.
struct Node {
    data: PathBuf,
    port: u16,
}

/// A primary and its standby in a temporary directory, stopped when dropped (even when the
/// test fails), a frozen one thawed first so that it can clean up after itself.
struct Pair {
    dir: tempfile::TempDir,
    primary: Node,
    standby: Node,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for node in [&self.primary, &self.standby] {
            signal_all(&node.data, libc::SIGCONT);
            let stopped = pg(&["pg_ctl", "-D", path(&node.data), "-m", "immediate", "-w", "stop"]).output();
            if !stopped.is_ok_and(|output| output.status.success()) {
                signal_all(&node.data, libc::SIGKILL);
            }
        }
        let _ = &self.dir;
    }
}

/// A command of the PostgreSQL binaries, run as `postgres` when the test runs as root (CI
/// does): initdb and the server refuse root.
fn pg(args: &[&str]) -> Command {
    let program = format!("{BIN_DIR}/{}", args[0]);
    // SAFETY: geteuid has no preconditions.
    let mut command = if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", &program]);
        command
    } else {
        Command::new(program)
    };
    // A directory `postgres` may enter, whoever runs the test.
    command.args(&args[1..]).current_dir("/");
    command
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Runs a PostgreSQL command to its end; panics with its output when it fails.
fn run(args: &[&str]) {
    let output = pg(args).output().unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(output.status.success(), "{args:?}: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
}

/// A port nothing listens on at the moment.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The server's processes: the postmaster first, then its children.
fn processes(data: &Path) -> Vec<i32> {
    let Ok(pid_file) = std::fs::read_to_string(data.join("postmaster.pid")) else { return Vec::new() };
    let Some(postmaster) = pid_file.lines().next().and_then(|line| line.trim().parse::<i32>().ok()) else { return Vec::new() };
    let mut found = vec![postmaster];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (name) state ppid ...": the name may hold spaces and parentheses.
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<i32>().ok());
        if parent == Some(postmaster) {
            found.push(pid);
        }
    }
    found
}

fn signal_all(data: &Path, signal: libc::c_int) {
    for pid in processes(data) {
        // SAFETY: kill has no memory preconditions; a pid that is gone answers ESRCH.
        unsafe { libc::kill(pid, signal) };
    }
}

impl Pair {
    /// `None` (after saying why) when the binaries are missing outside CI.
    fn start() -> Option<Pair> {
        if !Path::new(BIN_DIR).join("initdb").exists() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "the failover test needs the PostgreSQL 15 binaries in {BIN_DIR}");
            println!("skipped: the failover test needs the PostgreSQL 15 binaries in {BIN_DIR}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let id = |flag: &str| {
                let output = Command::new("id").args([flag, "postgres"]).output().expect("id");
                String::from_utf8_lossy(&output.stdout).trim().parse::<u32>().expect("a postgres user")
            };
            std::os::unix::fs::chown(dir.path(), Some(id("-u")), Some(id("-g"))).unwrap();
        }
        let primary = Node { data: dir.path().join("primary"), port: free_port() };
        let standby = Node { data: dir.path().join("standby"), port: free_port() };
        let pair = Pair { primary, standby, dir };
        let sockets = path(pair.dir.path()).to_string();
        run(&["initdb", "-D", path(&pair.primary.data), "-U", "postgres", "-A", "trust", "--no-sync", "--no-instructions"]);
        // Synchronous: a commit is acknowledged once the standby has it, so the failover
        // loses none, and what the test sees is the service's doing.
        append(
            &pair.primary.data.join("postgresql.conf"),
            &format!(
                "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{sockets}'\nfsync = off\n\
                 shared_buffers = 16MB\nmax_connections = 50\nsynchronous_standby_names = '*'\n",
                pair.primary.port
            ),
        );
        pair.start_node(&pair.primary);
        let primary_port = pair.primary.port.to_string();
        run(&[
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            &primary_port,
            "-U",
            "postgres",
            "-D",
            path(&pair.standby.data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        ]);
        // Once promoted it has no standby to wait for.
        append(&pair.standby.data.join("postgresql.conf"), &format!("port = {}\nsynchronous_standby_names = ''\n", pair.standby.port));
        pair.start_node(&pair.standby);
        Some(pair)
    }

    fn start_node(&self, node: &Node) {
        let log = self.dir.path().join(format!("{}.log", node.port));
        run(&["pg_ctl", "-D", path(&node.data), "-l", path(&log), "-w", "-t", "60", "start"]);
    }

    /// The service's URL: both hosts, the primary first, standbys skipped.
    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write&sslmode=disable",
            self.primary.port, self.standby.port
        )
    }
}

fn append(file: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(file).unwrap().write_all(text.as_bytes()).unwrap();
}

/// The first column of each row `sql` answers on the server at `port`, or why not.
async fn query(port: u16, sql: &str) -> Result<Vec<Option<String>>, String> {
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?connect_timeout=5");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    actix_web::rt::spawn(connection);
    let messages = client.simple_query(sql).await.map_err(|e| e.to_string())?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(String::from)),
            _ => None,
        })
        .collect())
}

/// Polls `sql` on the server at `port` until its first row is `expected`, for up to 60 s.
async fn until_answers(port: u16, sql: &str, expected: &str) -> bool {
    eventually(60, async || query(port, sql).await.is_ok_and(|rows| rows.first().cloned().flatten().as_deref() == Some(expected))).await
}

/// One login through both steps, as a client sees it.
#[derive(Debug)]
struct Attempt {
    phone: String,
    /// Started after the standby was promoted.
    after_promotion: bool,
    start: (u16, Value),
    code: Option<String>,
    verify: Option<(u16, Value)>,
}

impl Attempt {
    fn token(&self) -> Option<&str> {
        self.verify.as_ref().filter(|(status, _)| *status == 200).and_then(|(_, reply)| reply["token"].as_str())
    }
}

/// Whether a reply is a success or an error the client is told to retry (the database
/// failed, or the request outlived REQUEST_TIMEOUT_SECS).
fn clean(reply: &(u16, Value)) -> bool {
    reply.0 == 200 || matches!((reply.0, reply.1["error"].as_str()), (503, Some("INTERNAL")) | (504, Some("TIMEOUT")))
}

/// The code the sender received for `phone`, once it has.
async fn code_for(server: &TestServer, phone: &str) -> Option<String> {
    let sent =
        |server: &TestServer| server.sender.sent.lock().unwrap().iter().rev().find(|m| m.to.as_str() == phone).map(|m| m.otp.clone());
    eventually(20, async || sent(server).is_some()).await;
    sent(server)
}

async fn log_in(server: &TestServer, phone: String, after_promotion: bool) -> Attempt {
    let start = server.call(login(&phone)).await;
    let mut attempt = Attempt { phone, after_promotion, start, code: None, verify: None };
    if attempt.start.0 != 200 {
        return attempt;
    }
    attempt.code = code_for(server, &attempt.phone).await;
    if let Some(code) = &attempt.code {
        attempt.verify = Some(server.call(verify(&attempt.phone, code)).await);
    }
    attempt
}

/// A primary and its standby, streaming synchronously; `None` (the test skipped) outside
/// the PostgreSQL pass or without the PostgreSQL binaries.
async fn streaming_pair() -> Option<Pair> {
    if !backend::on_postgres() {
        println!("skipped: the failover test runs in the PostgreSQL pass (DATABASE_URL)");
        return None;
    }
    let pair = Pair::start()?;
    assert!(
        until_answers(pair.primary.port, "SELECT sync_state FROM pg_stat_replication", "sync").await,
        "the standby never streamed synchronously"
    );
    Some(pair)
}

/// Logs in new phones, one after another, until `stop`.
async fn client(server: &TestServer, attempts: &RefCell<Vec<Attempt>>, next_phone: &Cell<u32>, promoted: &Cell<bool>, stop: &Cell<bool>) {
    while !stop.get() {
        let phone = format!("1800555{:04}", next_phone.replace(next_phone.get() + 1));
        let attempt = log_in(server, phone, promoted.get()).await;
        attempts.borrow_mut().push(attempt);
    }
}

#[actix_web::test]
async fn logins_survive_a_frozen_primary_and_the_promotion_of_its_standby() {
    let Some(pair) = streaming_pair().await else { return };
    let url = pair.url();
    let server = TestServer::start(&[
        ("DATABASE_URL", url.as_str()),
        ("DB_POOL_SIZE", "6"),
        ("DB_CONNECT_TIMEOUT_MS", "1000"),
        ("DB_QUERY_TIMEOUT_MS", "3000"),
        ("MAX_DEVICES", "100"),
    ])
    .await;

    let attempts = RefCell::new(Vec::<Attempt>::new());
    let (next_phone, promoted, stop) = (Cell::new(0u32), Cell::new(false), Cell::new(false));
    let succeeded =
        |after_promotion: bool| attempts.borrow().iter().filter(|a| a.after_promotion == after_promotion && a.token().is_some()).count();
    let failover = async {
        assert!(eventually(60, async || succeeded(false) >= LOGINS_EACH_SIDE).await, "logins before the failover: {:?}", attempts.borrow());
        signal_all(&pair.primary.data, libc::SIGSTOP);
        let standby = pair.standby.data.clone();
        actix_web::rt::task::spawn_blocking(move || run(&["pg_ctl", "-D", path(&standby), "-w", "-t", "60", "promote"])).await.unwrap();
        promoted.set(true);
        let recovered = eventually(60, async || succeeded(true) >= LOGINS_EACH_SIDE).await;
        stop.set(true);
        recovered
    };
    let clients = futures_util::future::join_all((0..CLIENTS).map(|_| client(&server, &attempts, &next_phone, &promoted, &stop)));
    let (_, recovered) = futures_util::future::join(clients, failover).await;
    let attempts = attempts.into_inner();
    assert!(recovered, "logins after the promotion: {:?}", attempts.iter().filter(|a| a.after_promotion).collect::<Vec<_>>());
    // A verify cut off at its COMMIT by the freeze may leave its code held until the claim
    // times out, or used up by a login recorded anyway.
    no_code_twice_and_no_token_lost(&server, pair.standby.port, &attempts, FailedCodes::WorkOrAreUsedUp).await;

    // The freeze was met: operations on the frozen primary's connections timed out, and a
    // new connection passed over it for the standby.
    let logs = server.logs();
    assert!(logs.contains("PostgreSQL connection lost (PostgreSQL did not answer within 3000 ms"), "{logs}");
    let passed_over = format!("host=127.0.0.1:{}", pair.primary.port);
    assert!(logs.lines().any(|line| line.contains(&passed_over) && line.contains("no answer within 1000 ms")), "{logs}");
    server.stop().await;
}

/// A planned switchover done by hand while logins run: the primary stops taking writes (as
/// a cluster manager makes it read-only or restarts it as a standby first: either way writes
/// there answer `read_only_sql_transaction` and a new connection is refused as not
/// read-write), then the standby is promoted. Logins that upstream has been asked for a
/// token when writes stop must record it once the standby takes over, and a verify that
/// failed must leave its code usable.
#[actix_web::test]
async fn a_switchover_through_a_read_only_primary_loses_no_token_and_strands_no_code() {
    let Some(pair) = streaming_pair().await else { return };
    let url = pair.url();
    let server = TestServer::start(&[
        ("DATABASE_URL", url.as_str()),
        ("DB_POOL_SIZE", "6"),
        ("DB_CONNECT_TIMEOUT_MS", "1000"),
        // Long enough for the promotion on a loaded machine: recording a login and giving a
        // code back are tried again for this long.
        ("DB_QUERY_TIMEOUT_MS", "10000"),
        // Tokens are held back for a while.
        ("UPSTREAM_TIMEOUT_SECS", "30"),
        ("REQUEST_TIMEOUT_SECS", "60"),
        ("MAX_DEVICES", "100"),
    ])
    .await;

    let attempts = RefCell::new(Vec::<Attempt>::new());
    let (next_phone, promoted, stop) = (Cell::new(0u32), Cell::new(false), Cell::new(false));
    let succeeded =
        |after_promotion: bool| attempts.borrow().iter().filter(|a| a.after_promotion == after_promotion && a.token().is_some()).count();
    let upstream = &server.upstream;
    let switchover = async {
        assert!(
            eventually(60, async || succeeded(false) >= LOGINS_EACH_SIDE).await,
            "logins before the switchover: {:?}",
            attempts.borrow()
        );
        // Some logins have claimed their code and wait for their token.
        upstream.hold_useradd(HELD_LOGINS);
        assert!(eventually(60, async || upstream.held_useradd() == HELD_LOGINS).await, "logins never reached upstream");
        query(pair.primary.port, "ALTER SYSTEM SET default_transaction_read_only = on").await.unwrap();
        query(pair.primary.port, "SELECT pg_reload_conf()").await.unwrap();
        // The other clients' requests fail for want of a host that takes writes.
        let failed = || attempts.borrow().iter().any(|a| a.start.0 != 200 || a.verify.as_ref().is_some_and(|(status, _)| *status != 200));
        assert!(eventually(60, async || failed()).await, "no request failed on the read-only primary: {:?}", attempts.borrow());
        // Upstream issues the held tokens, and the service tries to record them.
        upstream.release_useradd();
        let tried = || server.logs().contains("recording the login again") || server.logs().contains("the login could not be recorded");
        assert!(eventually(60, async || tried()).await, "no login was recorded while no host takes writes");
        let standby = pair.standby.data.clone();
        actix_web::rt::task::spawn_blocking(move || run(&["pg_ctl", "-D", path(&standby), "-w", "-t", "60", "promote"])).await.unwrap();
        promoted.set(true);
        let recovered = eventually(60, async || succeeded(true) >= LOGINS_EACH_SIDE).await;
        stop.set(true);
        recovered
    };
    let clients =
        futures_util::future::join_all((0..SWITCHOVER_CLIENTS).map(|_| client(&server, &attempts, &next_phone, &promoted, &stop)));
    let (_, recovered) = futures_util::future::join(clients, switchover).await;
    let attempts = attempts.into_inner();
    assert!(recovered, "logins after the promotion: {:?}", attempts.iter().filter(|a| a.after_promotion).collect::<Vec<_>>());
    // No COMMIT was cut off (the primary never went away): every code whose verify failed
    // was given back, and logs in now.
    no_code_twice_and_no_token_lost(&server, pair.standby.port, &attempts, FailedCodes::Work).await;
    server.stop().await;
}

/// What a code whose verify failed must do when tried again after the failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailedCodes {
    /// Log in: the failure gave the code back.
    Work,
    /// Log in, or be refused because a login recorded anyway used it up.
    WorkOrAreUsedUp,
}

/// The failover's outcome as clients and upstream see it, checked on the new primary at
/// `new_primary`: every reply a success or a clean error to retry, no code accepted twice,
/// each code whose verify failed tried again as `failed` says, and every token upstream
/// issued recorded as the session of the user it was issued for.
async fn no_code_twice_and_no_token_lost(server: &TestServer, new_primary: u16, attempts: &[Attempt], failed: FailedCodes) {
    let unclean: Vec<&Attempt> = attempts.iter().filter(|a| !clean(&a.start) || a.verify.as_ref().is_some_and(|v| !clean(v))).collect();
    assert!(unclean.is_empty(), "replies neither successes nor clean retryable errors: {unclean:?}");
    assert!(attempts.iter().all(|a| a.start.0 != 200 || a.code.is_some()), "a started login got no code");

    // No code is accepted twice: each accepted code is refused now, on the new primary.
    let mut logged_in: Vec<(String, String)> = attempts.iter().filter_map(|a| Some((a.phone.clone(), a.token()?.to_string()))).collect();
    for attempt in attempts.iter().filter(|a| a.token().is_some()) {
        let again = server.call(verify(&attempt.phone, attempt.code.as_deref().unwrap())).await;
        assert_eq!((again.0, again.1["error"].as_str()), (401, Some("BADCODE")), "{} accepted twice: {}", attempt.phone, again.1);
    }
    for attempt in attempts.iter().filter(|a| a.verify.as_ref().is_some_and(|(status, _)| *status != 200)) {
        let again = server.call(verify(&attempt.phone, attempt.code.as_deref().unwrap())).await;
        match (again.0, failed) {
            (200, _) => logged_in.push((attempt.phone.clone(), again.1["token"].as_str().unwrap().to_string())),
            (_, FailedCodes::WorkOrAreUsedUp) => assert_eq!(again.1["error"], "BADCODE", "{}: {}", attempt.phone, again.1),
            (_, FailedCodes::Work) => panic!("{}'s code, whose verify failed, does not log in: {}", attempt.phone, again.1),
        }
    }

    // Every token upstream issued is recorded, as the session of the user it was issued for.
    let rows =
        query(new_primary, "SELECT s.token_sha256 || ' ' || u.address FROM sessions s JOIN users u ON u.id = s.user_id").await.unwrap();
    let sessions: std::collections::HashMap<String, String> =
        rows.into_iter().flatten().filter_map(|row| row.split_once(' ').map(|(h, a)| (h.to_string(), a.to_string()))).collect();
    let issued = server.upstream.issued();
    let lost: Vec<u64> =
        (1..=issued).filter(|n| !sessions.contains_key(&otpgate::domain::account::token_hash(&format!("usertoken-{n}")))).collect();
    assert!(lost.is_empty(), "tokens upstream issued but no session holds: {lost:?} of {issued}");
    let tokens: std::collections::HashSet<&str> = logged_in.iter().map(|(_, token)| token.as_str()).collect();
    assert_eq!(tokens.len(), logged_in.len(), "a token was handed out twice");
    for (phone, token) in &logged_in {
        let holder = sessions.get(&otpgate::domain::account::token_hash(token));
        assert_eq!(holder, Some(phone), "the token of {phone}'s login");
    }
    for failed in attempts.iter().filter(|a| a.token().is_none()) {
        let (step, reply) = failed.verify.as_ref().map_or(("start", &failed.start), |verify| ("verify", verify));
        println!("{} failed at its {step}: {} {}", failed.phone, reply.0, reply.1["errmsg"]);
    }
    let failures = attempts.iter().filter(|a| a.token().is_none()).count();
    println!("{} logins, {} failed cleanly, {issued} tokens issued, all recorded", attempts.len(), failures);
}

/// Two primaries: the standby promoted by hand (`pg_ctl promote`, no cluster manager to
/// fence the old primary), which still runs and takes writes. An instance given both hosts,
/// the old primary first, whose connections end (as when the old primary restarts), and an
/// instance started afresh write to neither: requests answer a retryable error, /readyz
/// fails and an ERROR names both hosts. Once the old primary is stopped the new one is
/// used; if the old one then comes back alone, it is refused as behind the timeline the
/// instance wrote to.
#[actix_web::test]
async fn with_two_primaries_the_service_writes_to_neither() {
    let Some(pair) = streaming_pair().await else { return };
    let url = pair.url();
    let server = TestServer::start(&[("DATABASE_URL", url.as_str()), ("DB_POOL_SIZE", "4"), ("DB_CONNECT_TIMEOUT_MS", "1000")]).await;
    server.log_in("18005550001", None).await;

    // The split: the old primary stops waiting for its standby, which is promoted unfenced.
    query(pair.primary.port, "ALTER SYSTEM SET synchronous_standby_names = ''").await.unwrap();
    query(pair.primary.port, "SELECT pg_reload_conf()").await.unwrap();
    let standby = pair.standby.data.clone();
    actix_web::rt::task::spawn_blocking(move || run(&["pg_ctl", "-D", path(&standby), "-w", "-t", "60", "promote"])).await.unwrap();
    for port in [pair.primary.port, pair.standby.port] {
        assert!(until_answers(port, "SELECT NOT pg_is_in_recovery()", "t").await, "{port} takes no writes");
    }
    let codes = "SELECT count(*) FROM otp_challenges";
    let codes_before = (query(pair.primary.port, codes).await.unwrap(), query(pair.standby.port, codes).await.unwrap());
    query(
        pair.primary.port,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .await
    .unwrap();

    let hosts = [format!("127.0.0.1:{}", pair.primary.port), format!("127.0.0.1:{}", pair.standby.port)];
    let refused = server.call(login("18005550002")).await;
    assert_eq!((refused.0, refused.1["error"].as_str()), (503, Some("INTERNAL")), "{}", refused.1);
    let (status, ready) = server.send(server.client().get(format!("{}/readyz", server.url))).await;
    let said = ready["checks"]["database"].as_str().unwrap_or_default();
    assert!(status == 503 && said.contains("split brain") && hosts.iter().all(|host| said.contains(host)), "{status} {ready}");
    let logs = server.logs();
    let named = |line: &&str| line.contains("ERROR") && line.contains("split brain") && hosts.iter().all(|host| line.contains(host));
    assert!(logs.lines().any(|line| named(&line)), "no ERROR naming both primaries: {logs}");
    let codes_after = (query(pair.primary.port, codes).await.unwrap(), query(pair.standby.port, codes).await.unwrap());
    assert_eq!(codes_after, codes_before, "a code was written during the split brain");

    // An instance started now refuses too, and says why.
    let fresh = actix_web::rt::task::spawn_blocking({
        let url = url.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_otpgate"))
                .arg("migrate")
                .env_clear()
                .env("DATABASE_URL", url)
                .env("OTP_SECRET", "a-test-secret-shared-by-instances")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&fresh.stderr);
    assert!(!fresh.status.success() && stderr.contains("split brain"), "a fresh instance: {stderr}");

    // Fenced: the old primary stopped, the new one is used.
    run(&["pg_ctl", "-D", path(&pair.primary.data), "-m", "fast", "-w", "stop"]);
    assert!(logs_in_within_a_minute(&server, "18005550003").await, "no login once the old primary was stopped");

    // The old primary back alone, the new one gone: it is behind the timeline written to.
    pair.start_node(&pair.primary);
    run(&["pg_ctl", "-D", path(&pair.standby.data), "-m", "immediate", "-w", "stop"]);
    let codes_before = query(pair.primary.port, codes).await.unwrap();
    let refused = server.call(login("18005550004")).await;
    assert_eq!((refused.0, refused.1["error"].as_str()), (503, Some("INTERNAL")), "{}", refused.1);
    let behind = format!("PostgreSQL host {} not used: it takes writes on timeline 1, behind timeline 2", hosts[0]);
    let logs = server.logs();
    assert!(logs.lines().any(|line| line.contains("ERROR") && line.contains(&behind)), "no ERROR refusing the old primary: {logs}");
    assert_eq!(query(pair.primary.port, codes).await.unwrap(), codes_before, "a code was written to the old primary");
    server.stop().await;
}

/// Whether a login start for `phone` succeeds within a minute of tries.
async fn logs_in_within_a_minute(server: &TestServer, phone: &str) -> bool {
    eventually(60, async || server.call(login(phone)).await.0 == 200).await
}
