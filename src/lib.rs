//! otpgate: one-time-password login backend for messenger apps.

pub mod address;
pub mod allocator;
pub mod app_settings;
pub mod captcha;
pub mod client_ip;
pub mod config;
pub mod courier;
pub mod error;
pub mod fuzz_targets;
pub mod http;
pub mod keys;
pub mod login;
pub mod otp;
pub mod phone;
pub mod ratelimit;
pub mod senders;
pub mod sms_limits;
pub mod storage;
pub mod templates;
pub mod upstream;

// Sessions, contact sync, profiles and notifications.
pub mod contacts;
pub mod ops;
pub mod outbox;
pub mod schema;
pub mod sessions;
pub mod users;
// Operations
pub mod cli;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod request_log;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use client_ip::TrustedProxies;
use config::Config;
use keys::{KeySource, ServerKeys};
use login::LoginFlow;
use senders::Senders;
use storage::Db;

/// Everything a request handler needs, shared by all workers.
pub struct AppState {
    pub db: Arc<Db>,
    pub login: LoginFlow,
    /// What the login reply tells each app besides its token.
    pub apps: app_settings::AppSettings,
    // Sessions, contact sync and notifications.
    pub contact_limits: Arc<contacts::ContactLimits>,
    /// Sends queued notifications; spawn `outbox.clone().run()` once per process.
    pub outbox: Arc<outbox::Outbox>,
    // Operations.
    pub readiness: health::Readiness,
    pub http: server::HttpSettings,
    // Production sending and SMS-fraud defences.
    pub proxies: TrustedProxies,
}

impl AppState {
    /// Opens the database and builds the login flow with the given senders
    /// (normally `senders::build(&config)`; tests pass a recording sender).
    pub fn new(config: &Config, senders: Senders) -> Result<AppState, String> {
        let stored_key = storage::setting_before_open(&config.database_path, keys::LEGACY_SETTING)
            .map_err(|e| format!("cannot open database {}: {e}", config.database_path))?;
        let keys = server_keys(config, stored_key.as_deref())?;
        let seal = keys.seal.clone();
        let db =
            Db::open_after(&config.database_path, config.db_pool_size, |conn| remove_secrets_in_clear(conn, &seal, stored_key.is_some()))
                .map_err(|e| format!("cannot open database {}: {e}", config.database_path))?;
        let login = LoginFlow::new(config, Arc::clone(&db), &keys, senders)?;
        let outbox = Arc::new(outbox::Outbox::new(config, Arc::clone(&db))?);
        Ok(AppState {
            db,
            login,
            apps: app_settings::AppSettings::from_config(config)?,
            contact_limits: Arc::new(contacts::ContactLimits::from_config(config)),
            outbox,
            readiness: health::Readiness::from_config(config)?,
            http: server::HttpSettings::from_config(config),
            proxies: TrustedProxies::parse(&config.trusted_proxies)?,
        })
    }

    /// Called once the server has stopped: stops the courier and the outbox, waits up to
    /// `grace` for the sends under way to be recorded (messages still queued stay in the
    /// database and are sent after the next start) and closes the database cleanly.
    pub async fn shutdown(&self, grace: Duration) {
        self.login.courier.stop();
        // Both wait for sends under way to be recorded before the database closes.
        tokio::join!(self.login.courier.drain(grace), self.outbox.drain(grace));
        if let Err(e) = self.db.close() {
            tracing::warn!("closing the database failed: {e}");
        }
    }

    /// Starts, on the current runtime, what runs beside the requests: the courier (which
    /// also sends messages left queued before a restart), the notification outbox and
    /// housekeeping every minute.
    pub fn start_background_tasks(self: Arc<Self>) {
        tokio::task::spawn_local(self.login.courier.clone().run());
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

    /// Drops expired codes, expired sessions, finished courier messages and idle
    /// rate-limit entries, so none grows without bound.
    pub async fn housekeeping(&self) -> Result<Purged, storage::StorageError> {
        self.login.limits.purge();
        self.login.sms_limits.purge();
        self.contact_limits.purge();
        self.login.courier.purge_finished().await?;
        let purged = self
            .db
            .call(|conn| {
                let now = storage::now();
                Ok(Purged { codes: storage::purge_expired(conn, now)?, sessions: sessions::purge_expired(conn, now)? })
            })
            .await?;
        metrics::OTP_EXPIRED.inc_by(purged.codes as u64);
        Ok(purged)
    }
}

/// Marks a database whose file was rewritten once no secret or code was left in clear in it.
const REWRITTEN_SETTING: &str = "rewritten_without_secrets";

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

/// Leaves no secret in clear in the database: deletes a key kept there by an earlier
/// release (once it is in its key file), encrypts messages queued in clear, and rewrites
/// the file once so no old page keeps either.
fn remove_secrets_in_clear(conn: &mut rusqlite::Connection, seal: &keys::MessageSeal, had_key: bool) -> rusqlite::Result<()> {
    let sealed = courier::seal_rows_in_clear(conn, seal)?;
    storage::remove_setting(conn, keys::LEGACY_SETTING)?;
    if had_key || sealed > 0 || storage::setting(conn, REWRITTEN_SETTING)?.is_none() {
        storage::rewrite_file(conn)?;
        storage::set_setting(conn, REWRITTEN_SETTING, &storage::now().to_le_bytes())?;
    }
    if sealed > 0 {
        tracing::info!(messages = sealed, "encrypted the messages an earlier release kept in clear, and rewrote the database file");
    }
    Ok(())
}

/// What one round of housekeeping removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub codes: usize,
    pub sessions: usize,
}
