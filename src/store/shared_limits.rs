//! The rate-limit buckets in Redis, shared by every instance: one GCRA step per check,
//! in one Lua script run atomically by Redis, on Redis's clock.
//!
//! Redis is one server, a Redis Cluster or a master found through Sentinel (see
//! [`RedisTopology`]). Every request shares one connection. When it breaks, a task of
//! its own reconnects, backing off; meanwhile Redis is known to be down and a check
//! fails at once instead of waiting for a connection that is refused anyway. A cluster
//! connection keeps one connection per node and mends them itself: a node that fails
//! fails only the checks whose buckets it holds.

use async_trait::async_trait;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{AsyncConnectionConfig, ErrorKind, IntoConnectionInfo, RedisError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

use crate::config::RedisTopology;
use crate::domain::ratelimit::{SharedBuckets, Take, Taken};

/// The longest a check waits for Redis before it counts as failed.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// The longest one attempt to connect may take (a Cluster or Sentinel asks several nodes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Pauses between attempts to reconnect while Redis is down: short at first, so a Redis
/// that restarts is back at once, then at most this long, so a dead one costs little.
const FIRST_RECONNECT_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_RECONNECT_PAUSE: Duration = Duration::from_secs(2);

/// governor's GCRA, step for step, on Redis's clock in milliseconds, for each bucket
/// `KEYS[i]` with `t, burst, n` in `ARGV[3i-2..3i]`: a key never seen starts at
/// `now + t`; `n` fit when `tat + t*(n-1) - tau <= now` (tau = t * burst); taking them
/// moves `tat` to `max(tat, now) + t*n`. Every bucket is checked before any is taken, so
/// they are taken all or none. A key expires once its bucket is full again. Answers
/// `{0, 0}` when taken, or else `{i, wait in milliseconds}` for the first that refused.
const GCRA: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local next_tats = {}
for i = 1, #KEYS do
  local t = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local n = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or (now + t)
  local earliest = tat + t * (n - 1) - t * burst
  if now < earliest then
    return {i, math.ceil(earliest - now)}
  end
  next_tats[i] = math.max(tat, now) + t * n
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.3f', next_tats[i]), 'PX', math.ceil(next_tats[i] - now))
end
return {0, 0}
";

/// How to reach Redis, made once from `REDIS_URL`.
enum Target {
    Server(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    Sentinel {
        // `Sentinel` asks its nodes through `&mut self`; only the reconnecting task does.
        sentinels: tokio::sync::Mutex<Sentinel>,
        /// The sentinels' URLs, to ask them ourselves what they know of `master`.
        sentinel_urls: Vec<String>,
        master: String,
        node: SentinelNodeConnectionInfo,
    },
}

/// Why a connection could not be made.
enum ConnectError {
    /// Redis did not answer, or refused: worth trying again.
    Unreachable(String),
    /// Redis answered, but is not what `REDIS_URL` says it is: trying again will not help.
    Misconfigured(String),
}

impl Target {
    fn from_topology(topology: &RedisTopology) -> Result<Target, String> {
        let bad = |e: RedisError| format!("REDIS_URL: {e}");
        Ok(match topology {
            RedisTopology::Server(url) => Target::Server(redis::Client::open(url.as_str()).map_err(bad)?),
            RedisTopology::Cluster(nodes) => Target::Cluster(
                ClusterClientBuilder::new(nodes.iter().map(String::as_str).collect::<Vec<_>>())
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT)
                    // Enough to follow a MOVED or ASK while slots migrate, quickly: the
                    // defaults retry for minutes, and a check must fail within its timeout.
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(bad)?,
            ),
            RedisTopology::Sentinel { sentinels: urls, master, credentials } => {
                let sentinels = Sentinel::build(urls.iter().map(String::as_str).collect::<Vec<_>>()).map_err(bad)?;
                // The master's credentials (and database 0), read as a URL would give them.
                let at = if credentials.is_empty() { String::new() } else { format!("{credentials}@") };
                let master_auth = format!("redis://{at}localhost").into_connection_info().map_err(bad)?.redis;
                let node = SentinelNodeConnectionInfo { tls_mode: None, redis_connection_info: Some(master_auth) };
                Target::Sentinel {
                    sentinels: tokio::sync::Mutex::new(sentinels),
                    sentinel_urls: urls.clone(),
                    master: master.clone(),
                    node,
                }
            }
        })
    }

    async fn connect(&self) -> Result<Link, ConnectError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.try_connect()).await {
            Ok(connected) => connected,
            Err(_) => Err(ConnectError::Unreachable(format!("no connection within {} ms", CONNECT_TIMEOUT.as_millis()))),
        }
    }

    async fn try_connect(&self) -> Result<Link, ConnectError> {
        let unreachable = |e: RedisError| ConnectError::Unreachable(e.to_string());
        let config = AsyncConnectionConfig::new().set_connection_timeout(REDIS_TIMEOUT).set_response_timeout(REDIS_TIMEOUT);
        match self {
            Target::Server(client) => {
                let mut connection = client.get_multiplexed_async_connection_with_config(&config).await.map_err(unreachable)?;
                refuse_cluster_node(&mut connection).await?;
                Ok(Link::Server(connection))
            }
            Target::Cluster(client) => Ok(Link::Cluster(client.get_async_connection().await.map_err(unreachable)?)),
            Target::Sentinel { sentinels, sentinel_urls, master, node } => {
                let found = sentinels.lock().await.async_master_for(master, Some(node)).await;
                let client = match found {
                    Ok(client) => client,
                    Err(e) if e.kind() == ErrorKind::MasterNameNotFoundBySentinel => {
                        return Err(why_no_master(sentinel_urls, master, &config).await)
                    }
                    Err(e) => return Err(unreachable(e)),
                };
                Ok(Link::Server(client.get_multiplexed_async_connection_with_config(&config).await.map_err(unreachable)?))
            }
        }
    }
}

/// Why the sentinels gave no master named `master`. The redis crate says "not found"
/// both for a name no sentinel watches and for a master that is down or failing over
/// (one it cannot reach, or flagged down): asked by name, a sentinel answers nothing
/// for a name it does not watch, and the master's address for one it does, down or not.
async fn why_no_master(sentinel_urls: &[String], master: &str, config: &AsyncConnectionConfig) -> ConnectError {
    let mut answered = false;
    for url in sentinel_urls {
        let address = async {
            let mut sentinel = redis::Client::open(url.as_str())?.get_multiplexed_async_connection_with_config(config).await?;
            redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(master).query_async::<Option<(String, String)>>(&mut sentinel).await
        };
        match address.await {
            Ok(Some((host, port))) => {
                return ConnectError::Unreachable(format!(
                    "the master {master:?} the sentinels watch ({host}:{port}) is down or failing over"
                ))
            }
            Ok(None) => answered = true,
            Err(_) => {}
        }
    }
    if answered {
        ConnectError::Misconfigured(format!("no sentinel of REDIS_URL watches a master named {master:?}"))
    } else {
        ConnectError::Unreachable(format!("no sentinel of REDIS_URL answers for the master {master:?}"))
    }
}

/// A node of a Redis Cluster answers only for its own slots: every other key would fail
/// with MOVED, so one given as a plain `redis://` URL is refused.
async fn refuse_cluster_node(connection: &mut MultiplexedConnection) -> Result<(), ConnectError> {
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(connection)
        .await
        .map_err(|e| ConnectError::Unreachable(format!("INFO cluster: {e}")))?;
    if info.lines().any(|line| line.trim() == "cluster_enabled:1") {
        return Err(ConnectError::Misconfigured(
            "REDIS_URL is a node of a Redis Cluster: name the cluster's nodes as redis+cluster://host1:port,host2:port,… so each key reaches the node that holds it".into(),
        ));
    }
    Ok(())
}

/// The connection requests share: both kinds are cheap to clone and multiplex requests.
#[derive(Clone)]
pub(super) enum Link {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Link::Server(connection) => connection.req_packed_command(cmd),
            Link::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Link::Server(connection) => connection.req_packed_commands(cmd, offset, count),
            Link::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Server(connection) => connection.get_db(),
            Link::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Whether requests can be sent, as the reconnecting task last found.
#[derive(Clone)]
enum State {
    /// Connected; `generation` tells this connection from the ones before it.
    Up { link: Link, generation: u64 },
    /// The connection broke a moment ago and the task is making a new one.
    Reconnecting,
    /// The last attempt to connect failed, for this reason; the task keeps trying.
    Down(String),
}

/// What requests and the reconnecting task share (the breakers' requests too, see
/// `shared_breakers`).
pub(super) struct Connection {
    target: Target,
    state: watch::Sender<State>,
    /// Wakes the reconnecting task when a request finds the connection broken.
    broken: Notify,
}

impl Connection {
    /// The connection to send on, or at once why there is none. Right after a break it
    /// waits (up to the timeout) for the reconnecting task's first attempt.
    async fn link(&self) -> Result<(Link, u64), String> {
        let mut state = self.state.subscribe();
        if matches!(*state.borrow_and_update(), State::Reconnecting) {
            // Changed or not, the state is read again below.
            let _ = tokio::time::timeout(REDIS_TIMEOUT, state.changed()).await;
        }
        let current = state.borrow().clone();
        match current {
            State::Up { link, generation } => Ok((link, generation)),
            State::Down(why) => Err(format!("{why}; reconnecting in the background")),
            State::Reconnecting => Err("the connection to Redis broke; reconnecting in the background".into()),
        }
    }

    /// Marks connection `generation` broken (unless a newer one replaced it already) and
    /// wakes the reconnecting task.
    fn lost(&self, generation: u64) {
        let replaced = self.state.send_if_modified(|state| match state {
            State::Up { generation: current, .. } if *current == generation => {
                *state = State::Reconnecting;
                true
            }
            _ => false,
        });
        if replaced {
            self.broken.notify_one();
        }
    }

    /// Sends `request` on the shared connection. A request that finds the connection
    /// closed (Redis restarted since the last one) is sent again once on a new one: it
    /// never reached Redis. One cut off mid-way is sent again too; at worst that counts a
    /// check twice, which errs towards refusing.
    pub(super) async fn run<T, F>(&self, request: impl Fn(Link) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        for attempt in 0..2 {
            let (link, generation) = self.link().await?;
            let cluster = matches!(link, Link::Cluster(_));
            match tokio::time::timeout(REDIS_TIMEOUT, request(link)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => {
                    let broken = breaks_connection(&e, cluster);
                    if broken {
                        self.lost(generation);
                    }
                    if !(broken && attempt == 0 && e.is_connection_dropped()) {
                        return Err(e.to_string());
                    }
                }
                Err(_) => {
                    // Silence from a connection that looks open (a cut network): a new one
                    // is made, and checks fail at once until it is. In a cluster the silence
                    // is one node's: only the checks whose buckets it holds wait for it, and
                    // replacing the connection would stall the checks the others answer.
                    if !cluster {
                        self.lost(generation);
                    }
                    return Err("Redis did not answer in time".into());
                }
            }
        }
        unreachable!("the second attempt returns")
    }
}

/// Errors after which the connection is not worth using again: it is closed, or it
/// reaches a node that no longer takes writes (a demoted master). A cluster connection
/// never is: it reconnects to each node, and learns the slots again, by itself, and an
/// error of one node (CLUSTERDOWN for a slot nobody serves, say) is that node's alone.
fn breaks_connection(e: &RedisError, cluster: bool) -> bool {
    if cluster {
        return false;
    }
    e.is_io_error() || e.is_unrecoverable_error() || matches!(e.kind(), ErrorKind::ReadOnly | ErrorKind::MasterDown)
}

/// Makes a new connection whenever the last one broke, pausing longer after each
/// failed attempt; ends when the buckets and the breakers sharing their connection are dropped.
async fn keep_connected(connection: Arc<Connection>) {
    let mut generation = 0;
    loop {
        if !matches!(*connection.state.borrow(), State::Down(_)) {
            connection.broken.notified().await;
        }
        let mut pause = FIRST_RECONNECT_PAUSE;
        let mut told_misconfigured = false;
        loop {
            match connection.target.connect().await {
                Ok(link) => {
                    generation += 1;
                    connection.state.send_replace(State::Up { link, generation });
                    break;
                }
                Err(ConnectError::Unreachable(why)) => {
                    connection.state.send_replace(State::Down(why));
                }
                Err(ConnectError::Misconfigured(why)) => {
                    if !told_misconfigured {
                        tracing::error!("{why}");
                        told_misconfigured = true;
                    }
                    connection.state.send_replace(State::Down(why));
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_RECONNECT_PAUSE);
        }
    }
}

/// The reconnecting task, stopped once nothing holds the connection any more.
pub(super) struct Reconnecting(tokio::task::JoinHandle<()>);

impl Drop for Reconnecting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct RedisBuckets {
    pub(super) connection: Arc<Connection>,
    pub(super) reconnecting: Arc<Reconnecting>,
    script: redis::Script,
    /// Namespaces the keys (`REDIS_PREFIX`), so services can share one Redis.
    pub(super) prefix: String,
}

impl RedisBuckets {
    /// Connects to Redis as `topology` says, on the current runtime (where the
    /// reconnecting task runs). When Redis cannot be reached, `start_without` decides:
    /// true starts without it (checks fail until it answers), false fails. Redis that
    /// is not what `REDIS_URL` says (a cluster node given as one server) always fails.
    pub async fn connect(topology: &RedisTopology, prefix: &str, start_without: bool) -> Result<RedisBuckets, String> {
        let target = Target::from_topology(topology)?;
        let state = match target.connect().await {
            Ok(link) => State::Up { link, generation: 0 },
            Err(ConnectError::Misconfigured(why)) => return Err(why),
            Err(ConnectError::Unreachable(why)) if start_without => State::Down(why),
            Err(ConnectError::Unreachable(why)) => return Err(format!("cannot connect to Redis: {why}")),
        };
        let connection = Arc::new(Connection { target, state: watch::Sender::new(state), broken: Notify::new() });
        let reconnecting = Arc::new(Reconnecting(tokio::spawn(keep_connected(Arc::clone(&connection)))));
        Ok(RedisBuckets { connection, reconnecting, script: redis::Script::new(GCRA), prefix: prefix.to_string() })
    }

    /// Runs the script on `keys` (the Redis keys of `takes`): `None` when taken, or the
    /// index of the first bucket that refused and its wait.
    async fn take_keys(&self, keys: &[String], takes: &[Take]) -> Result<Option<(usize, Duration)>, String> {
        let (refused, wait_ms): (i64, u64) = self
            .connection
            .run(|mut link| {
                let mut call = self.script.prepare_invoke();
                for (key, take) in keys.iter().zip(takes) {
                    call.key(key).arg(take.per_unit.as_secs_f64() * 1000.0).arg(take.burst).arg(take.n);
                }
                // EVALSHA, falling back to EVAL once when Redis does not know the script yet.
                async move { call.invoke_async(&mut link).await }
            })
            .await?;
        match usize::try_from(refused) {
            Ok(0) => Ok(None),
            Ok(first) if first <= takes.len() => Ok(Some((first - 1, Duration::from_millis(wait_ms.max(1))))),
            _ => Err(format!("the rate-limit script answered bucket {refused} of {}", takes.len())),
        }
    }
}

/// Checks that Redis is what `REDIS_URL` says, for `check-config`: `Ok(None)` when it is,
/// `Ok(Some(why))` when it cannot be reached (the configuration may be checked elsewhere).
pub async fn probe(topology: &RedisTopology) -> Result<Option<String>, String> {
    match Target::from_topology(topology)?.connect().await {
        Ok(_) => Ok(None),
        Err(ConnectError::Unreachable(why)) => Ok(Some(why)),
        Err(ConnectError::Misconfigured(why)) => Err(why),
    }
}

#[async_trait]
impl SharedBuckets for RedisBuckets {
    async fn take(&self, key: &str, n: u32, per_unit: Duration, burst: u32) -> Result<Taken, String> {
        // The bucket is its own hash tag (`{…}`), so a Redis Cluster spreads buckets over its nodes.
        let keys = [format!("{}:rl:{{{key}}}", self.prefix)];
        Ok(match self.take_keys(&keys, &[Take { key: key.to_string(), n, per_unit, burst }]).await? {
            None => Taken::Yes,
            Some((_, wait)) => Taken::Wait(wait),
        })
    }

    async fn take_all(&self, group: &str, takes: &[Take]) -> Result<Option<(usize, Duration)>, String> {
        // One hash tag for the group: a script's keys must be in one slot of a Redis Cluster.
        let keys: Vec<String> = takes.iter().map(|take| format!("{}:rl:{{{group}}}:{}", self.prefix, take.key)).collect();
        self.take_keys(&keys, takes).await
    }

    async fn ping(&self) -> Result<(), String> {
        let pong = self
            .connection
            .run(|mut link| async move {
                match link {
                    // A cluster answers PING from any one node; its own view says whether every slot is served.
                    Link::Cluster(_) => {
                        let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut link).await?;
                        Ok(if info.lines().any(|line| line.trim() == "cluster_state:ok") { "PONG".to_string() } else { info })
                    }
                    Link::Server(_) => redis::cmd("PING").query_async::<String>(&mut link).await,
                }
            })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("Redis answered {:?}", pong.lines().next().unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn redis_refusing_is_known_down_at_once_and_no_start_without_it_unless_allowed() {
        // A port just given up by a listener: connections to it are refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let topology = RedisTopology::Server(format!("redis://127.0.0.1:{port}"));
        let refused = RedisBuckets::connect(&topology, "t", false).await.err().expect("no start without Redis");
        assert!(refused.starts_with("cannot connect to Redis"), "{refused}");
        let buckets = RedisBuckets::connect(&topology, "t", true).await.expect("starts without Redis");
        // Known down: the check answers from the state the reconnecting task keeps, not by connecting.
        assert!(matches!(*buckets.connection.state.borrow(), State::Down(_)));
        let failed = buckets.take("k", 1, Duration::from_secs(1), 1).await.unwrap_err();
        assert!(failed.contains("reconnecting in the background"), "{failed}");
        assert!(buckets.ping().await.unwrap_err().contains("reconnecting in the background"));
    }
}
