//! otpgate: one-time-password login backend for messenger apps.

pub mod address;
pub mod captcha;
pub mod client_ip;
pub mod config;
pub mod courier;
pub mod error;
pub mod http;
pub mod login;
pub mod otp;
pub mod phone;
pub mod ratelimit;
pub mod senders;
pub mod sms_limits;
pub mod storage;
pub mod templates;
pub mod upstream;

use rand::RngCore;
use std::sync::Arc;
use std::time::Duration;

use client_ip::TrustedProxies;
use config::Config;
use login::LoginFlow;
use senders::Senders;
use storage::Db;

/// Everything a request handler needs, shared by all workers.
pub struct AppState {
    pub db: Arc<Db>,
    pub login: LoginFlow,
    pub proxies: TrustedProxies,
}

impl AppState {
    /// Opens the database and builds the login flow with the given senders
    /// (normally `senders::build(&config)`; tests pass a recording sender).
    pub fn new(config: &Config, senders: Senders) -> Result<AppState, String> {
        let db = Db::open(&config.database_path, config.db_pool_size)
            .map_err(|e| format!("cannot open database {}: {e}", config.database_path))?;
        let otp_key = if config.otp_secret.is_empty() {
            // A key kept in the database survives restarts, so pending codes stay valid.
            db.blocking(|conn| {
                storage::setting_or_insert(conn, "otp_hash_key", || {
                    let mut key = vec![0u8; 32];
                    rand::rngs::OsRng.fill_bytes(&mut key);
                    key
                })
            })
            .map_err(|e| format!("cannot read the OTP hashing key: {e}"))?
        } else {
            config.otp_secret.as_bytes().to_vec()
        };
        let login = LoginFlow::new(config, Arc::clone(&db), &otp_key, senders)?;
        let proxies = TrustedProxies::parse(&config.trusted_proxies)?;
        Ok(AppState { db, login, proxies })
    }

    /// Periodic housekeeping: drops expired codes and idle rate-limit entries.
    pub async fn run_maintenance(self: Arc<Self>, every: Duration) {
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            self.login.limits.purge();
            self.login.sms_limits.purge();
            if let Err(e) = self.login.courier.purge_finished().await {
                tracing::warn!("purging finished courier messages failed: {e}");
            }
            match self.db.call(|conn| storage::purge_expired(conn, storage::now())).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!("purged {n} expired codes"),
                Err(e) => tracing::warn!("purging expired codes failed: {e}"),
            }
        }
    }
}
