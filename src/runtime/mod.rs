//! The composition root: builds every component from the configuration once, runs
//! what goes on beside the requests (the courier, the outbox, housekeeping), and the
//! command line.

pub mod cli;
pub mod logging;

use std::sync::Arc;
use std::time::Duration;

use crate::api::health::Readiness;
use crate::api::server;
use crate::api::AppState;
use crate::api::{HttpSettings, UploadsPerUser};
use crate::config::Config;
use crate::config::RateLimitOnError;
use crate::delivery::breakers::Breakers;
use crate::delivery::outbox;
use crate::delivery::senders::Senders;
use crate::domain::app_settings::AppSettings;
use crate::domain::breaker::SharedBreakers;
use crate::domain::client_ip::TrustedProxies;
use crate::domain::clock::Clock;
use crate::domain::keys::{self, KeySource, ServerKeys};
use crate::domain::metrics;
use crate::domain::ratelimit::{FailureLimit, SharedLimits};
use crate::runtime::cli::url_without_credentials;
use crate::service::accounts::Accounts;
use crate::service::contacts::{ContactLimits, Contacts};
use crate::service::groups::Groups;
use crate::service::links::Links;
use crate::service::login::LoginFlow;
use crate::service::operators::Operators;
use crate::service::receipts::Receipts;
use crate::service::sessions::Sessions;
use crate::service::uploads::Files;
use crate::service::users::Users;
use crate::store::shared_breakers::RedisBreakers;
use crate::store::shared_limits::RedisBuckets;
use crate::store::{self, Db};

impl AppState {
    /// Opens the database and builds the login flow with the given senders
    /// (normally `senders::build(&config)`; tests pass a recording sender).
    pub async fn new(config: &Config, senders: Senders) -> Result<AppState, String> {
        AppState::with_clock(config, senders, Clock::system()).await
    }

    /// [`AppState::new`] on the given clock (a manual one lets tests reach an expiry at once).
    pub async fn with_clock(config: &Config, senders: Senders, clock: Clock) -> Result<AppState, String> {
        let (db, keys) = open_database(config, clock).await?;
        let mut shared_breakers: Option<Arc<dyn SharedBreakers>> = None;
        let shared_limits = match config.redis.topology() {
            None => None,
            Some(topology) => {
                let allow = config.redis.rate_limit_on_error == RateLimitOnError::Allow;
                let policy = config.redis.rate_limit_on_error.as_str();
                let buckets = RedisBuckets::connect(topology, &config.redis.prefix, allow).await.map_err(|e| {
                    format!(
                        "{e} (REDIS_URL={}, RATE_LIMIT_ON_ERROR={policy})",
                        url_without_credentials(config.redis.url.as_deref().unwrap_or_default())
                    )
                })?;
                shared_breakers = Some(Arc::new(RedisBreakers::sharing(&buckets)));
                let shared = SharedLimits::new(Arc::new(buckets), keys.limit_key, allow);
                match shared.ping().await {
                    Ok(()) => tracing::info!("rate limits are shared through Redis (RATE_LIMIT_ON_ERROR={policy})"),
                    // Only RATE_LIMIT_ON_ERROR=allow starts without Redis.
                    Err(why) => tracing::warn!(
                        "Redis cannot be reached ({why}): starting with rate limits not enforced until it answers (RATE_LIMIT_ON_ERROR=allow)"
                    ),
                }
                Some(shared)
            }
        };
        let shared = shared_limits.as_ref();
        let names: Vec<String> = senders.instances.iter().map(|instance| instance.name.clone()).collect();
        let senders = senders.with_breakers(Breakers::new(&config.sms_breaker, names, db.clock().clone(), shared_breakers));
        let login = Arc::new(LoginFlow::new(config, Arc::clone(&db), &keys, senders, shared)?);
        let outbox = Arc::new(outbox::Outbox::new(config, Arc::clone(&db))?);
        let apps = AppSettings::from_config(config);
        let files = Arc::new(Files::new(config, Arc::clone(&db), apps.for_app("").download_url.clone(), shared)?);
        let links = Arc::new(Links::new(Arc::clone(&db), Arc::clone(&login)));
        let operator_failures = FailureLimit::per_hour(config.admin.failures_per_ip_per_hour, db.clock().clone());
        Ok(AppState {
            operator_failures,
            sessions: Sessions::new(Arc::clone(&db), Arc::clone(&links)),
            users: Users::new(Arc::clone(&db), Arc::clone(&links), Arc::clone(&files)),
            contacts: Contacts::new(Arc::clone(&db), ContactLimits::from_config(config, shared)),
            groups: Groups::new(config, Arc::clone(&db), Arc::clone(&files), shared)?,
            accounts: Accounts::new(Arc::clone(&db), Arc::clone(&login), Arc::clone(&files)),
            operators: Operators::new(Arc::clone(&db), Arc::clone(&links)),
            receipts: Receipts::new(config, Arc::clone(&db), Arc::clone(&login.codes.courier)),
            db,
            login,
            apps,
            files,
            links,
            shared_limits,
            outbox,
            readiness: Readiness::from_config(config)?,
            http: HttpSettings::from_config(config),
            uploads_before_token: Arc::new(tokio::sync::Semaphore::new(config.files.max_uploads_before_token)),
            uploads_per_user: UploadsPerUser::new(config.files.max_concurrent_uploads_per_user),
            proxies: TrustedProxies::new(&config.http.trusted_proxies, config.http.trusted_proxy_header),
            audit_retention_secs: i64::try_from(config.admin.audit_retention_days.saturating_mul(86_400)).unwrap_or(i64::MAX),
        })
    }

    /// Called once the server has stopped: stops the courier and the outbox, waits up to
    /// `grace` for the sends under way to be recorded (messages still queued stay in the
    /// database and are sent after the next start) and closes the database cleanly.
    pub async fn shutdown(&self, grace: Duration) {
        self.login.codes.courier.stop();
        // Both wait for sends under way to be recorded before the database closes.
        tokio::join!(self.login.codes.courier.drain(grace), self.outbox.drain(grace));
        if let Err(e) = self.db.close() {
            tracing::warn!("closing the database failed: {e}");
        }
    }

    /// Starts, on the current runtime, what runs beside the requests: the courier (which
    /// also sends messages left queued before a restart), the notification outbox and
    /// housekeeping every minute.
    pub fn start_background_tasks(self: Arc<Self>) {
        tokio::task::spawn_local(self.login.codes.courier.clone().run());
        tokio::task::spawn_local(self.outbox.clone().run());
        tokio::task::spawn_local(self.run_maintenance(Duration::from_secs(60)));
    }

    /// Periodic housekeeping, every `every`.
    pub async fn run_maintenance(self: Arc<Self>, every: Duration) {
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            match self.housekeeping().await {
                Ok(Purged { codes: 0, sessions: 0 }) => {}
                Ok(Purged { codes, sessions }) => tracing::debug!("purged {codes} expired codes and {sessions} expired sessions"),
                Err(e) => tracing::warn!("housekeeping failed: {e}"),
            }
        }
    }

    /// Drops expired codes, expired sessions, finished courier messages, audit events
    /// past AUDIT_RETENTION_DAYS and idle rate-limit entries, so none grows without bound.
    pub async fn housekeeping(&self) -> Result<Purged, store::StorageError> {
        self.login.codes.limits.purge();
        self.login.codes.start_limits.purge();
        self.contacts.purge();
        self.groups.purge();
        self.files.limits.purge();
        self.login.codes.courier.purge_finished().await?;
        let (codes, sessions) = self.db.purge_expired(self.db.clock().now()).await?;
        self.db.purge_audit(self.db.clock().now().saturating_sub(self.audit_retention_secs)).await?;
        let purged = Purged { codes, sessions };
        metrics::OTP_EXPIRED.inc_by(purged.codes as u64);
        Ok(purged)
    }
}

/// The tasks [`AppState::start_background_tasks`] starts, each of which holds a connection
/// while it works.
const BACKGROUND_TASKS: usize = 3;

/// PostgreSQL connections per HTTP worker by default: a worker interleaves many requests,
/// each holding a connection only while it waits for the database, so one connection per
/// worker leaves the worker idle (see docs/performance.md).
const PG_CONNECTIONS_PER_WORKER: usize = 8;
/// The most connections an instance opens by default, so that three instances stay below
/// PostgreSQL's default `max_connections` (100).
const PG_DEFAULT_MAX: usize = 32;
/// The fewest SQLite reader connections by default (the earlier fixed default).
const SQLITE_MIN_READERS: usize = 4;

/// `DB_POOL_SIZE`, or a size from the HTTP workers: on PostgreSQL, where every read and
/// write goes through the pool, [`PG_CONNECTIONS_PER_WORKER`] per worker plus one for each
/// background task, at most [`PG_DEFAULT_MAX`]; on SQLite a reader per worker, at least
/// [`SQLITE_MIN_READERS`].
pub fn pool_size(config: &Config) -> usize {
    let workers = server::http_workers();
    match config.database.pool_size {
        0 if config.database.url.is_none() => workers.max(SQLITE_MIN_READERS),
        0 => (workers * PG_CONNECTIONS_PER_WORKER + BACKGROUND_TASKS).min(PG_DEFAULT_MAX),
        size => size,
    }
}

/// Opens the database the configuration names (PostgreSQL at DATABASE_URL, or else the
/// SQLite file at DATABASE_PATH) and finds the server keys.
pub(crate) async fn open_database(config: &Config, clock: Clock) -> Result<(Arc<Db>, ServerKeys), String> {
    if let Some(url) = &config.database.url {
        let keys = server_keys(config, None)?;
        let settings = store::postgres::PgSettings {
            pool_size: pool_size(config),
            connect_timeout: std::time::Duration::from_millis(config.database.connect_timeout_ms),
            query_timeout: std::time::Duration::from_millis(config.database.query_timeout_ms),
            statements: config.database.statements,
        };
        let db = Db::connect_postgres(url, settings, clock, &keys.phones)
            .await
            .map_err(|e| format!("cannot open the PostgreSQL database at {}: {e}", url_without_credentials(url)))?;
        return Ok((db, keys));
    }
    let stored_key = store::setting_before_open(&config.database.path, keys::LEGACY_SETTING)
        .map_err(|e| format!("cannot open database {}: {e}", config.database.path))?;
    let keys = server_keys(config, stored_key.as_deref())?;
    let db = Db::open_without_secrets(&config.database.path, pool_size(config), clock, &keys, stored_key.is_some())
        .map_err(|e| format!("cannot open database {}: {e}", config.database.path))?;
    Ok((db, keys))
}

/// Finds the server secret (see [`keys::load_secret`]) and says where it is.
/// `stored` is a key an earlier release kept in the database.
fn server_keys(config: &Config, stored: Option<&[u8]>) -> Result<ServerKeys, String> {
    let loaded = keys::load_secret(config, stored)?;
    let place = match &loaded.source {
        KeySource::Setting => "OTP_SECRET".to_string(),
        KeySource::File(path) => format!("the key file {}", path.display()),
    };
    match (stored, loaded.created_file) {
        (Some(_), true) => tracing::info!("moved the OTP key out of the database into {place}"),
        (None, true) => tracing::info!("created {place} (mode 0600): back it up apart from the database"),
        (Some(old), false) if old != loaded.secret => {
            tracing::warn!(
                "removing an OTP key kept in the database; the key is {place} (codes issued under the old key must be asked for again)"
            )
        }
        (Some(_), false) => tracing::info!("removing the copy of the OTP key kept in the database; the key is {place}"),
        (None, false) => tracing::debug!("OTP key: {place}"),
    }
    Ok(ServerKeys::from_secret(&loaded.secret))
}

/// What `serve` needs of the world beyond the settings' values, checked alike by `serve`,
/// before it builds anything, and by `check-config`, which creates nothing: the server
/// secret's key file, DATABASE_URL as the PostgreSQL driver reads it, and that Redis, when
/// it answers, is what REDIS_URL says (a Cluster's node given as one server is refused).
/// Answers the warnings: a Redis that cannot be reached from here is not checked.
pub async fn check_surroundings(config: &Config) -> Result<Vec<String>, String> {
    // A named key file that is missing is refused, unless the SQLite database holds an
    // earlier release's key to move there.
    keys::check_secret(config, || {
        config.database.url.is_none()
            && store::setting_before_open(&config.database.path, keys::LEGACY_SETTING).is_ok_and(|key| key.is_some())
    })?;
    if let Some(url) = &config.database.url {
        store::postgres::check_url(url).map_err(|why| format!("invalid configuration: DATABASE_URL {why}"))?;
    }
    let mut warnings = Vec::new();
    if let Some(topology) = config.redis.topology() {
        let at = url_without_credentials(config.redis.url.as_deref().unwrap_or_default());
        match store::shared_limits::probe(topology).await {
            Ok(None) => {}
            Ok(Some(why)) => warnings.push(format!("Redis at {at} cannot be reached from here ({why}); not checked")),
            Err(why) => return Err(format!("REDIS_URL {at}: {why}")),
        }
    }
    Ok(warnings)
}

/// What one round of housekeeping removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub codes: usize,
    pub sessions: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_vars(vars.iter().copied()).expect("a valid configuration")
    }

    #[test]
    fn the_pool_is_sized_to_the_http_workers_unless_set() {
        let workers = server::http_workers();
        assert!(workers >= 1);
        assert_eq!(pool_size(&config(&[])), workers.max(4), "SQLite: a reader per worker, at least 4");
        let postgres = [("DATABASE_URL", "postgres://db/otpgate"), ("OTP_SECRET", "0123456789abcdef0123")];
        let expected = (8 * workers + BACKGROUND_TASKS).min(32);
        assert_eq!(pool_size(&config(&postgres)), expected, "PostgreSQL: 8 per worker and the background tasks, at most 32");
        let set = [("DATABASE_URL", "postgres://db/otpgate"), ("OTP_SECRET", "0123456789abcdef0123"), ("DB_POOL_SIZE", "7")];
        assert_eq!(pool_size(&config(&set)), 7);
        assert_eq!(pool_size(&config(&[("DB_POOL_SIZE", "2")])), 2);
    }
}
