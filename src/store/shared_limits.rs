//! The rate-limit buckets in Redis, shared by every instance: one GCRA step per check,
//! in one Lua script run atomically by Redis, on Redis's clock.

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

use crate::domain::ratelimit::{SharedBuckets, Taken};

/// The longest a check waits for Redis before it counts as failed.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// governor's GCRA, step for step, on Redis's clock in milliseconds: a key never seen
/// starts at `now + t`; `n` fit when `tat + t*(n-1) - tau <= now` (tau = t * burst);
/// taking them moves `tat` to `max(tat, now) + t*n`. The key expires once its bucket is
/// full again. Answers -1 when taken, or else the wait in milliseconds.
const GCRA: &str = r"
local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local tau = t * burst
local tat = tonumber(redis.call('GET', KEYS[1])) or (now + t)
local earliest = tat + t * (n - 1) - tau
if now < earliest then
  return math.ceil(earliest - now)
end
local next_tat = math.max(tat, now) + t * n
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now))
return -1
";

pub struct RedisBuckets {
    connection: ConnectionManager,
    script: redis::Script,
    /// Namespaces the keys (`REDIS_PREFIX`), so services can share one Redis.
    prefix: String,
}

impl RedisBuckets {
    /// Connects to Redis at `url` (it reconnects by itself after a failure).
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisBuckets, String> {
        let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1);
        let connection = tokio::time::timeout(4 * REDIS_TIMEOUT, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| "Redis did not answer".to_string())?
            .map_err(|e| format!("cannot connect to Redis: {e}"))?;
        Ok(RedisBuckets { connection, script: redis::Script::new(GCRA), prefix: prefix.to_string() })
    }
}

#[async_trait]
impl SharedBuckets for RedisBuckets {
    async fn take(&self, key: &str, n: u32, per_unit: Duration, burst: u32) -> Result<Taken, String> {
        let mut connection = self.connection.clone();
        let per_unit_ms = per_unit.as_secs_f64() * 1000.0;
        let mut call = self.script.key(format!("{}:rl:{key}", self.prefix));
        call.arg(per_unit_ms).arg(burst).arg(n);
        // EVALSHA, falling back to EVAL once when Redis does not know the script yet.
        let answer: i64 = tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async(&mut connection))
            .await
            .map_err(|_| "Redis did not answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(match u64::try_from(answer) {
            Ok(wait_ms) => Taken::Wait(Duration::from_millis(wait_ms.max(1))),
            Err(_) => Taken::Yes,
        })
    }

    async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        let pong: String = tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async(&mut connection))
            .await
            .map_err(|_| "Redis did not answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("Redis answered {pong:?} to PING"))
        }
    }
}
