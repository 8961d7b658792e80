//! Where the data and the shared rate limits live: SQLite or PostgreSQL, and Redis.

use serde::{Deserialize, Serialize};

use super::redis_url::RedisTopology;
use super::values::{choice, unless_empty};

/// The database: the SQLite file, or PostgreSQL shared by several instances.
#[derive(Clone, Deserialize, Serialize)]
pub struct DatabaseSettings {
    #[serde(default = "defaults::database_path", rename = "database_path")]
    pub path: String,
    /// `postgres://user:password@host/db`: keep the data in PostgreSQL, shared by several
    /// instances; unset: the SQLite file at DATABASE_PATH. `?sslmode=require` asks for TLS.
    /// Several hosts (`host1:5432,host2:5432`, or `?host=h1,h2`) are tried in turn;
    /// `?target_session_attrs=read-write` skips standbys.
    #[serde(default, deserialize_with = "unless_empty", rename = "database_url")]
    pub url: Option<String>,
    /// SQLite: reader connections; PostgreSQL: connections per instance. 0: sized to the
    /// HTTP workers (see `runtime::pool_size`).
    #[serde(default, rename = "db_pool_size")]
    pub pool_size: usize,
    /// PostgreSQL: longest one host may take to accept a connection and finish its
    /// handshake (TLS, startup, authentication, the read-write check); then the next is tried.
    #[serde(default = "defaults::db_connect_timeout_ms", rename = "db_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// PostgreSQL: longest one operation waits for the server's answers (a frozen server
    /// answers nothing); then it fails, or runs again on a fresh connection where that is safe.
    #[serde(default = "defaults::db_query_timeout_ms", rename = "db_query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// PostgreSQL: how statements reach the server, `DB_STATEMENTS` (see [`DbStatements`]).
    #[serde(default = "defaults::db_statements", rename = "db_statements")]
    pub statements: DbStatements,
}

choice!(
    /// How the PostgreSQL store sends its statements, `DB_STATEMENTS`.
    DbStatements, "DB_STATEMENTS", "prepared or unnamed", {
    /// Each statement prepared once per connection and named there, then only bound and
    /// run: the fewest bytes and the least parsing, but it needs the same server session
    /// from one transaction to the next.
    Prepared = "prepared",
    /// Each statement sent unnamed, with its parameters' types, parsed and planned anew:
    /// nothing named is left on the server, so it works behind a transaction-pooling proxy
    /// (PgBouncer's `pool_mode = transaction`), which may change the server session
    /// between transactions.
    Unnamed = "unnamed",
});

/// Redis, which keeps every rate limit when it is set.
#[derive(Clone, Deserialize, Serialize)]
pub struct RedisSettings {
    /// `redis://host:6379` (or `redis+cluster://…`, `redis+sentinel://…/master`, see
    /// [`RedisTopology`]): keep every rate limit in Redis, shared by every instance;
    /// unset: in each process's memory.
    #[serde(default, deserialize_with = "unless_empty", rename = "redis_url")]
    pub url: Option<String>,
    /// Starts the name of every Redis key, so several services can share one Redis.
    #[serde(default = "defaults::redis_prefix", rename = "redis_prefix")]
    pub prefix: String,
    /// What a limit does when Redis cannot be asked: `deny` (refuse with INTERNAL) or `allow`.
    #[serde(default = "defaults::rate_limit_on_error")]
    pub rate_limit_on_error: RateLimitOnError,
    /// REDIS_URL parsed, at load.
    #[serde(skip)]
    pub(super) topology: Option<RedisTopology>,
}

impl RedisSettings {
    /// Where the shared rate limits live; `None` without `REDIS_URL`.
    pub fn topology(&self) -> Option<&RedisTopology> {
        self.topology.as_ref()
    }

    pub(super) fn parse_topology(&self) -> Result<Option<RedisTopology>, String> {
        match self.url.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(url) => RedisTopology::parse(url).map(Some),
        }
    }
}

choice!(
    /// What a rate limit does when its shared store (Redis) cannot be asked, `RATE_LIMIT_ON_ERROR`.
    RateLimitOnError, "RATE_LIMIT_ON_ERROR", "deny or allow", {
    /// Refuse: an open limiter is an open SMS bill.
    Deny = "deny",
    Allow = "allow",
});

mod defaults {
    pub fn database_path() -> String {
        "./otpgate.db".into()
    }
    pub fn db_connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn db_query_timeout_ms() -> u64 {
        10_000
    }
    pub fn db_statements() -> super::DbStatements {
        super::DbStatements::Prepared
    }
    pub fn redis_prefix() -> String {
        "otpgate".into()
    }
    pub fn rate_limit_on_error() -> super::RateLimitOnError {
        super::RateLimitOnError::Deny
    }
}
