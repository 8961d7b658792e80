//! The SMS provider instances' circuit-breaker openings in Redis, seen by every process:
//! `<REDIS_PREFIX>:breaker:{<instance>}` holds until when (Unix milliseconds) the
//! instance is skipped, and expires with the cool-down. The requests go over the rate
//! limits' connection ([`RedisBuckets`]), with its topology (one server, Cluster or
//! Sentinel), its timeout and its reconnecting: while Redis is down a request fails at
//! once, and each process goes on deciding from its own sends.

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::breaker::SharedBreakers;
use crate::store::shared_limits::{Connection, Reconnecting, RedisBuckets};

pub struct RedisBreakers {
    connection: Arc<Connection>,
    /// Keeps the connection mended while the breakers outlive the buckets.
    _reconnecting: Arc<Reconnecting>,
    prefix: String,
}

impl RedisBreakers {
    /// The breakers over `buckets`' connection and under its `REDIS_PREFIX`: one
    /// connection per process, whichever needs it.
    pub fn sharing(buckets: &RedisBuckets) -> RedisBreakers {
        RedisBreakers {
            connection: Arc::clone(&buckets.connection),
            _reconnecting: Arc::clone(&buckets.reconnecting),
            prefix: buckets.prefix.clone(),
        }
    }

    /// The instance is its own hash tag (`{…}`), as a rate-limit bucket is: in a Redis
    /// Cluster each key lives on the node of its slot.
    fn key(&self, instance: &str) -> String {
        format!("{}:breaker:{{{instance}}}", self.prefix)
    }
}

#[async_trait]
impl SharedBreakers for RedisBreakers {
    async fn opened_until(&self, instance: &str) -> Result<Option<i64>, String> {
        let key = self.key(instance);
        let until: Option<String> = self
            .connection
            .run(|mut link| {
                let key = key.as_str();
                async move { redis::cmd("GET").arg(key).query_async(&mut link).await }
            })
            .await?;
        until.map(|until| until.parse().map_err(|_| format!("{key} holds {until:?}, not a time in milliseconds"))).transpose()
    }

    async fn open(&self, instance: &str, until_ms: i64, cooldown: Duration) -> Result<(), String> {
        let key = self.key(instance);
        let keep_ms = u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX).max(1);
        self.connection
            .run(|mut link| {
                let key = key.as_str();
                async move { redis::cmd("SET").arg(key).arg(until_ms).arg("PX").arg(keep_ms).query_async::<()>(&mut link).await }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisTopology;

    #[tokio::test]
    async fn redis_refusing_fails_each_request_at_once() {
        // A port just given up by a listener: connections to it are refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let topology = RedisTopology::Server(format!("redis://127.0.0.1:{port}"));
        let buckets = RedisBuckets::connect(&topology, "t", true).await.expect("starts without Redis");
        let breakers = RedisBreakers::sharing(&buckets);
        assert_eq!(breakers.key("twilio_uk"), "t:breaker:{twilio_uk}");
        // Known down: answered from the state the reconnecting task keeps, not by connecting.
        let failed = breakers.opened_until("twilio_uk").await.unwrap_err();
        assert!(failed.contains("reconnecting in the background"), "{failed}");
        let failed = breakers.open("twilio_uk", 1, Duration::from_secs(60)).await.unwrap_err();
        assert!(failed.contains("reconnecting in the background"), "{failed}");
    }
}
