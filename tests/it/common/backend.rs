//! Which database and limiter the suite runs on: SQLite and in-process limits, or, when
//! the test process has `DATABASE_URL` (and `REDIS_URL`), a fresh PostgreSQL database per
//! test directory (created here, dropped when the directory is gone) and Redis keys of
//! their own. Under `CI=true` a server that is set but cannot be reached fails the test.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

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
    let (url, statements) = (url.to_string(), statements.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL cannot be reached: {e}"));
            tokio::spawn(connection);
            let messages = client.simple_query(&statements).await.unwrap_or_else(|e| panic!("{statements}: {e}"));
            messages
                .into_iter()
                .filter_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(String::from)),
                    _ => None,
                })
                .collect()
        })
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The databases made for test directories, so each directory's servers share one and it
/// is dropped once the directory is gone.
static DATABASES: Mutex<Option<HashMap<PathBuf, TestDatabase>>> = Mutex::new(None);

/// A database's name and the directory it belongs to.
type TestDatabase = (String, Weak<tempfile::TempDir>);

/// The PostgreSQL database of `dir` (created on first use), as a URL.
pub fn database_for(server: &str, dir: &Arc<tempfile::TempDir>) -> String {
    let mut databases = DATABASES.lock().unwrap();
    let databases = databases.get_or_insert_with(|| {
        drop_left_by_earlier_runs(server);
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
    let name = format!("otpgate_t{}_{}", std::process::id(), rand_suffix());
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

fn rand_suffix() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// Test databases whose process is gone (a run that ended or was killed) are dropped.
fn drop_left_by_earlier_runs(server: &str) {
    let names = run_sql(server, "SELECT datname FROM pg_database WHERE datname LIKE 'otpgate\\_t%'");
    for name in names.into_iter().flatten() {
        let pid = name.trim_start_matches("otpgate_t").split('_').next().and_then(|pid| pid.parse::<u32>().ok());
        let running = pid.is_some_and(|pid| pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !running {
            run_sql(server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}
