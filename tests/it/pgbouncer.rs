//! The service behind PgBouncer in transaction pooling (`pool_mode = transaction`), the usual
//! way to put many instances in front of one PostgreSQL: each transaction (each statement
//! outside one) may run on another server connection, so nothing may rely on what an earlier
//! one left on its server, such as a named prepared statement. With `DB_STATEMENTS=unnamed`
//! concurrent full logins (their codes sent through the courier), address-book uploads and
//! syncs, and the joined notices of the outbox all succeed through a pool of two server
//! connections.
//!
//! Runs in the PostgreSQL pass (DATABASE_URL set), in front of the suite's server and the
//! test's own database; needs the `pgbouncer` binary (Debian's package), which CI installs.

use crate::common::*;
use crate::failover::free_port;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// Server connections PgBouncer keeps: fewer than the service's own, so that each of
/// these carries the transactions of several of the service's connections.
const SERVER_CONNECTIONS: usize = 2;
/// Users logging in at once, and as many newcomers in their address books.
const USERS: usize = 12;

/// The `pgbouncer` binary, or `None` (after saying why) when it is missing outside CI.
fn pgbouncer_binary() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path.split(':').chain(["/usr/sbin", "/usr/local/sbin"]).map(|dir| Path::new(dir).join("pgbouncer")).find(|p| p.is_file());
    if found.is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: the pgbouncer binary must be installed");
        println!("skipped: pgbouncer is not installed");
    }
    found
}

/// A PgBouncer process of this test, in front of one database, killed when dropped.
struct PgBouncer {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl PgBouncer {
    /// Starts PgBouncer in transaction pooling in front of the database at `database_url`,
    /// and waits until it accepts connections.
    async fn start(binary: &Path, database_url: &str) -> PgBouncer {
        let server = reqwest::Url::parse(database_url).expect("DATABASE_URL is a URL");
        let mut target = format!(
            "host={} port={} dbname={} user={}",
            server.host_str().unwrap_or("127.0.0.1"),
            server.port().unwrap_or(5432),
            server.path().trim_start_matches('/'),
            if server.username().is_empty() { "postgres" } else { server.username() },
        );
        if let Some(password) = server.password() {
            target.push_str(&format!(" password={password}"));
        }
        let mut last_log = String::new();
        // A free port may be taken before PgBouncer binds it: then another is tried.
        for _ in 0..4 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let config = format!(
                "[databases]\notpgate = {target}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = any\npool_mode = transaction\ndefault_pool_size = {SERVER_CONNECTIONS}\nmin_pool_size = 0\n\
                 reserve_pool_size = 0\nmax_client_conn = 200\nlogfile = {log}\npidfile = {pid}\n",
                log = dir.path().join("pgbouncer.log").display(),
                pid = dir.path().join("pgbouncer.pid").display(),
            );
            let config_file = dir.path().join("pgbouncer.ini");
            std::fs::write(&config_file, config).unwrap();
            let mut command = Command::new(binary);
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                // PgBouncer refuses to run as root (CI runs as root): it switches user.
                let id = |flag: &str| {
                    let output = Command::new("id").args([flag, "postgres"]).output().expect("id");
                    String::from_utf8_lossy(&output.stdout).trim().parse::<u32>().expect("a postgres user")
                };
                std::os::unix::fs::chown(dir.path(), Some(id("-u")), Some(id("-g"))).unwrap();
                command.args(["-u", "postgres"]);
            }
            let child = command.arg(&config_file).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("pgbouncer starts");
            let mut bouncer = PgBouncer { port, dir, child };
            let settled = eventually(30, async || bouncer.exited() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await;
            if settled && !bouncer.exited() {
                return bouncer;
            }
            last_log = bouncer.log();
        }
        panic!("pgbouncer did not start: {last_log}");
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|status| status.is_some())
    }

    /// The service's URL: the database through PgBouncer.
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/otpgate?sslmode=disable", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The code the recording sender received for `phone`, if any.
fn code_sent_to(server: &TestServer, phone: &str) -> Option<String> {
    server.sender.sent.lock().unwrap().iter().rev().find(|m| m.to.as_str() == phone).map(|m| m.otp.clone())
}

/// Both steps of a login: its token, or which step failed and how.
async fn full_login(server: &TestServer, phone: &str) -> Result<String, String> {
    let started = server.call(login(phone)).await;
    if started.0 != 200 {
        return Err(format!("{phone} start: {} {}", started.0, started.1));
    }
    // The start answers once the courier has handed the code to the sender.
    let code = code_sent_to(server, phone).ok_or_else(|| format!("{phone}: no code sent"))?;
    let verified = server.call(verify(phone, &code)).await;
    match verified.1["token"].as_str() {
        Some(token) if verified.0 == 200 => Ok(token.to_string()),
        _ => Err(format!("{phone} verify: {} {}", verified.0, verified.1)),
    }
}

/// `getcontacts` for `token` with `extra`: its reply, or how it failed.
async fn get_contacts(server: &TestServer, token: &str, extra: Value) -> Result<Value, String> {
    let reply = server.call_op("getcontacts", token, extra).await;
    match reply.0 == 200 && reply.1["result"] == true {
        true => Ok(reply.1),
        false => Err(format!("getcontacts: {} {}", reply.0, reply.1)),
    }
}

fn phones_of(reply: &Value) -> Vec<String> {
    reply["contacts"]
        .as_array()
        .map_or(Vec::new(), |contacts| contacts.iter().filter_map(|c| c["phone"].as_str().map(String::from)).collect())
}

#[actix_web::test]
async fn logins_contacts_codes_and_notices_work_behind_transaction_pooling() {
    let Some(server_url) = backend::postgres_url() else {
        println!("skipped: the PgBouncer test runs in the PostgreSQL pass (DATABASE_URL)");
        return;
    };
    let Some(binary) = pgbouncer_binary() else { return };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let bouncer = PgBouncer::start(&binary, &backend::database_for(&server_url, &dir)).await;
    let url = bouncer.url();
    // More connections than PgBouncer has to the server, so they share them.
    let env = [("DATABASE_URL", url.as_str()), ("DB_STATEMENTS", "unnamed"), ("DB_POOL_SIZE", "8"), ("SYSTEM_ADDRESS", "otpgate-bot")];
    let service = TestServer::start_with(&env, FakeUpstream::start(), dir, Delivery::Recording).await;
    let users: Vec<String> = (0..USERS).map(|i| format!("1800555{:04}", 1000 + i)).collect();
    let newcomers: Vec<String> = (0..USERS).map(|i| format!("1800555{:04}", 2000 + i)).collect();
    let mut failures = Vec::new();

    // Concurrent full logins; each user then uploads a newcomer's phone.
    let logins = futures_util::future::join_all(users.iter().map(|phone| full_login(&service, phone))).await;
    let tokens: Vec<String> = logins.into_iter().filter_map(|login| login.map_err(|e| failures.push(e)).ok()).collect();
    let uploads = tokens.iter().zip(&newcomers).map(|(token, newcomer)| get_contacts(&service, token, json!({ "phones": [newcomer] })));
    failures.extend(futures_util::future::join_all(uploads).await.into_iter().filter_map(Result::err));

    // The newcomers' first logins, at once: each queues a joined notice for its contact.
    let joined = futures_util::future::join_all(newcomers.iter().map(|phone| full_login(&service, phone))).await;
    failures.extend(joined.into_iter().filter_map(Result::err));

    // Each user's sync answers its newcomer.
    let syncs = futures_util::future::join_all(tokens.iter().map(|token| get_contacts(&service, token, json!({})))).await;
    for (i, sync) in syncs.into_iter().enumerate() {
        match sync {
            Ok(reply) if phones_of(&reply) == [newcomers[i].clone()] => {}
            Ok(reply) => failures.push(format!("{}'s sync: {reply}", users[i])),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{} failures through PgBouncer: {failures:#?}\n{}", failures.len(), service.logs());

    // The outbox delivers every notice, and each leaves it.
    let delivered = eventually(60, async || service.upstream.messages().len() >= USERS).await;
    let mut recipients: Vec<String> =
        service.upstream.messages().iter().map(|m| m["to"].as_str().unwrap_or_default().to_string()).collect();
    recipients.sort();
    assert!(delivered && recipients == users, "joined notices delivered to {recipients:?}\n{}", service.logs());
    assert!(eventually(60, async || service.scalar("SELECT count(*) FROM outbox") == 0).await, "the outbox empties");
    let logs = service.logs();
    assert!(!logs.contains("prepared statement"), "{logs}");
    assert_eq!(service.scalar("SELECT count(*) FROM courier WHERE status = 'queued'"), 0, "every code message was sent");
    service.stop().await;
    drop(bouncer);
}
