//! Redis servers of a test's own (never the suite's shared one): `redis-server` processes
//! on free ports in temporary directories, without persistence, killed when dropped
//! (a failing test included). They run in the pass with `REDIS_URL`, where Redis is
//! installed; under `CI=true` missing binaries fail the test instead of skipping it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether tests of private Redis servers run here; prints why not when they do not.
pub fn available() -> bool {
    if super::backend::redis_url().is_none() {
        println!("skipped: runs in the pass with REDIS_URL");
        return false;
    }
    let installed = ["redis-server", "redis-cli"]
        .iter()
        .all(|binary| Command::new(binary).arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success()));
    if !installed {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: redis-server and redis-cli must be installed");
        println!("skipped: redis-server and redis-cli are not installed");
    }
    installed
}

/// A port nothing listens on, whose cluster bus port (port + 10000) is free too.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

pub struct RedisProcess {
    pub port: u16,
    args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisProcess {
    /// Starts `redis-server` with `extra` arguments and waits until it answers PING.
    pub async fn start(extra: &[&str]) -> RedisProcess {
        RedisProcess::launch(None, extra).await
    }

    /// A sentinel watching `master` as `mymaster`, alone: it fails the master over
    /// to a replica a second after the master stops answering.
    pub async fn sentinel(master: &RedisProcess) -> RedisProcess {
        let config = format!(
            "sentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\n",
            master.port
        );
        RedisProcess::launch(Some(config), &["--sentinel"]).await
    }

    async fn launch(config: Option<String>, extra: &[&str]) -> RedisProcess {
        // A free port may be taken before redis-server binds it: then another is tried.
        for _ in 0..4 {
            let mut redis = RedisProcess::prepare(config.clone(), extra);
            if redis.spawn().await {
                return redis;
            }
        }
        let mut redis = RedisProcess::prepare(config, extra);
        redis.restart().await;
        redis
    }

    fn prepare(config: Option<String>, extra: &[&str]) -> RedisProcess {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut args = Vec::new();
        if let Some(config) = config {
            // A configuration file comes first; a sentinel rewrites it as it learns.
            let path = dir.path().join("redis.conf");
            std::fs::write(&path, config).unwrap();
            args.push(path.to_string_lossy().into_owned());
        }
        args.extend(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"].map(String::from));
        args.extend(["--port".into(), port.to_string(), "--dir".into(), dir.path().to_string_lossy().into_owned()]);
        args.extend(extra.iter().map(|arg| arg.to_string()));
        RedisProcess { port, args, dir, child: None }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): its port still takes connections, but nothing
    /// answers, as a node stalled by its host or a cut network looks.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server runs");
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
        assert!(sent.success(), "kill -{signal} {}", child.id());
    }

    /// Starts the server again on its port (empty: it keeps nothing) and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.spawn().await, "redis-server on {} did not start: {}", self.port, self.log());
    }

    /// Starts the server and waits until it answers PING (true) or exits (false).
    async fn spawn(&mut self) -> bool {
        self.kill();
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new("redis-server").args(&self.args).stdout(log).stderr(Stdio::null()).spawn().expect("redis-server starts");
        self.child = Some(child);
        let settled = super::eventually(30, async || {
            let exited = self.child.as_mut().is_none_or(|child| child.try_wait().is_ok_and(|status| status.is_some()));
            exited || self.answers_ping()
        })
        .await;
        settled && self.answers_ping()
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reply = [0; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }

    /// `redis-cli` against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &self.port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
