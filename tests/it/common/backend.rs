//! Which database and limiter the suite runs on: SQLite and in-process limits, or, when
//! the test process has `DATABASE_URL` (and `REDIS_URL`), a fresh PostgreSQL database per
//! test directory (created here, dropped when the directory is gone) and Redis keys of
//! their own, all named with the run's tag. Under `CI=true` a server that is set but cannot be reached fails the test.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// A server URL from the test process's environment.
fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|url| !url.trim().is_empty())
}

/// The PostgreSQL server the suite runs on, if any.
pub fn postgres_url() -> Option<String> {
    from_env("DATABASE_URL")
}

pub fn redis_url() -> Option<String> {
    from_env("REDIS_URL")
}

pub fn on_postgres() -> bool {
    postgres_url().is_some()
}

/// True (after printing why) when the test checks something only SQLite has: the caller
/// returns early. On PostgreSQL the suite's other tests cover the same rules.
pub fn sqlite_only(what: &str) -> bool {
    if on_postgres() {
        println!("skipped on PostgreSQL: {what} is about the SQLite file");
        return true;
    }
    false
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).expect("DATABASE_URL is a URL");
    parsed.set_path(&format!("/{database}"));
    parsed.to_string()
}

/// Runs `statements` on the server at `url` from a thread of its own (the caller may be
/// inside a runtime, and may be a synchronous closure); answers the first column of
/// each row of the last statement, as text.
pub fn run_sql(url: &str, statements: &str) -> Vec<Option<String>> {
    let statements = statements.to_string();
    on_server(url, move |client| Box::pin(async move { rows(&client, &statements).await }))
}

/// Runs `work` on one connection (one session) to the server at `url`, from a thread of
/// its own.
fn on_server<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(tokio_postgres::Client) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    let url = url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL cannot be reached: {e}"));
            tokio::spawn(connection);
            work(client).await
        })
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The first column of each row of the last of `statements`, as text.
async fn rows(client: &tokio_postgres::Client, statements: &str) -> Vec<Option<String>> {
    let messages = client.simple_query(statements).await.unwrap_or_else(|e| panic!("{statements}: {e}"));
    messages
        .into_iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(String::from)),
            _ => None,
        })
        .collect()
}

/// This run's random tag. It names what the run makes on shared servers (databases
/// `otpgate_run_<tag>_…`, Redis prefixes), so that runs on several machines sharing one
/// server never take another's for their own; a process id is only unique on one machine.
pub fn run_tag() -> u64 {
    static TAG: OnceLock<u64> = OnceLock::new();
    *TAG.get_or_init(|| rand::random::<u64>() | 1)
}

/// Starts the name of every database a run makes; its tag follows, in hex.
pub const DATABASE_PREFIX: &str = "otpgate_run_";

/// The databases made for test directories, so each directory's servers share one and it
/// is dropped once the directory is gone.
static DATABASES: Mutex<Option<HashMap<PathBuf, TestDatabase>>> = Mutex::new(None);

/// A database's name and the directory it belongs to.
type TestDatabase = (String, Weak<tempfile::TempDir>);

/// The PostgreSQL database of `dir` (created on first use), as a URL.
pub fn database_for(server: &str, dir: &Arc<tempfile::TempDir>) -> String {
    let mut databases = DATABASES.lock().unwrap();
    let databases = databases.get_or_insert_with(|| {
        // Before this run makes a database, so that no other run can take it for an ended run's.
        hold_run_lock(server);
        drop_left_by_ended_runs(server);
        HashMap::new()
    });
    // Directories that are gone take their databases with them.
    databases.retain(|_, (name, dir)| {
        let alive = dir.strong_count() > 0;
        if !alive {
            run_sql(server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
        alive
    });
    let key = dir.path().to_path_buf();
    if let Some((name, _)) = databases.get(&key) {
        return with_database(server, name);
    }
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let name = format!("{DATABASE_PREFIX}{:016x}_{}", run_tag(), NEXT.fetch_add(1, Ordering::Relaxed));
    run_sql(server, &format!("CREATE DATABASE {name}"));
    databases.insert(key, (name.clone(), Arc::downgrade(dir)));
    with_database(server, &name)
}

/// Drops the database of `dir`, once the last holder of `dir` lets go of it.
pub fn release(server: &str, dir: &Arc<tempfile::TempDir>) {
    if Arc::strong_count(dir) > 1 {
        return;
    }
    let name = DATABASES.lock().unwrap().as_mut().and_then(|databases| databases.remove(dir.path())).map(|(name, _)| name);
    if let Some(name) = name {
        run_sql(server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}

/// The advisory lock that says the run tagged `tag` is alive.
fn run_lock(tag: u64) -> i64 {
    tag as i64
}

/// Takes this run's advisory lock on a connection of its own, kept until the process
/// exits: the server frees the lock when that connection closes, however the run ends
/// (a killed run's socket is closed by its system; a machine that is gone, after the
/// server's TCP keepalive gives up on it).
fn hold_run_lock(server: &str) {
    let (url, (taken, lock_taken)) = (server.to_string(), std::sync::mpsc::channel());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let connected = tokio_postgres::connect(&url, tokio_postgres::NoTls).await;
            let (client, connection) = match connected {
                Ok(connected) => connected,
                Err(e) => return taken.send(Err(e.to_string())).unwrap(),
            };
            tokio::spawn(connection);
            let locked = client.simple_query(&format!("SELECT pg_advisory_lock({})", run_lock(run_tag()))).await;
            taken.send(locked.map(|_| ()).map_err(|e| e.to_string())).unwrap();
            // Holds the connection, and with it the lock, for the rest of the process.
            std::future::pending::<()>().await
        })
    });
    let outcome = lock_taken.recv().expect("the lock's thread answers");
    outcome.unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL cannot be reached: {e}"));
}

/// Drops the databases of runs that are over (ended or killed, on any machine) and only
/// theirs: a live run holds its lock, so a run's lock this session can take belongs to no
/// live run. Databases named otherwise are never touched.
pub fn drop_left_by_ended_runs(server: &str) {
    on_server(server, |client| {
        Box::pin(async move {
            let pattern = DATABASE_PREFIX.replace('_', "\\_");
            for name in
                rows(&client, &format!("SELECT datname FROM pg_database WHERE datname LIKE '{pattern}%'")).await.into_iter().flatten()
            {
                let tag = name.strip_prefix(DATABASE_PREFIX).and_then(|rest| rest.split('_').next());
                let Some(tag) = tag.and_then(|tag| u64::from_str_radix(tag, 16).ok()).filter(|tag| *tag != run_tag()) else {
                    continue;
                };
                let lock = run_lock(tag);
                if rows(&client, &format!("SELECT pg_try_advisory_lock({lock})")).await == [Some("t".to_string())] {
                    rows(&client, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                    rows(&client, &format!("SELECT pg_advisory_unlock({lock})")).await;
                }
            }
        })
    })
}
