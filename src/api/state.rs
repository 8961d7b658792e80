//! What every request handler shares; built by `runtime` from the configuration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

use crate::api::health::Readiness;
use crate::config::{Config, Dialect};
use crate::delivery::outbox::Outbox;
use crate::domain::app_settings::AppSettings;
use crate::domain::client_ip::TrustedProxies;
use crate::domain::ratelimit::{FailureLimit, SharedLimits};
use crate::service::accounts::Accounts;
use crate::service::contacts::Contacts;
use crate::service::groups::Groups;
use crate::service::links::Links;
use crate::service::login::LoginFlow;
use crate::service::operators::Operators;
use crate::service::receipts::Receipts;
use crate::service::sessions::Sessions;
use crate::service::uploads::Files;
use crate::service::users::Users;
use crate::store::Db;

/// Everything a request handler needs, shared by all workers: the services the ops
/// call (each built once, holding what it needs), and what the HTTP layer itself keeps.
pub struct AppState {
    pub db: Arc<Db>,
    pub login: Arc<LoginFlow>,
    /// What the login reply tells each app besides its token.
    pub apps: AppSettings,
    /// Logout, devices and push registrations.
    pub sessions: Sessions,
    /// The caller's own profile.
    pub users: Users,
    /// Contact sync.
    pub contacts: Contacts,
    /// Groups, mirrored to the platform.
    pub groups: Groups,
    /// Uploaded photos and attachments.
    pub files: Arc<Files>,
    /// Linked addresses.
    pub links: Arc<Links>,
    /// Deleting accounts.
    pub accounts: Accounts,
    /// The operator API's lookups and revokes.
    pub operators: Operators,
    /// The providers' delivery receipts.
    pub receipts: Receipts,
    /// The rate-limit buckets every instance shares (Redis), when configured.
    pub shared_limits: Option<Arc<SharedLimits>>,
    /// Sends queued notifications; spawn `outbox.clone().run()` once per process.
    pub outbox: Arc<Outbox>,
    pub readiness: Readiness,
    pub http: HttpSettings,
    /// Multipart requests whose file part is being read before their token was seen
    /// (`MAX_UPLOADS_BEFORE_TOKEN`).
    pub uploads_before_token: Arc<Semaphore>,
    /// Uploads under way per user (`MAX_CONCURRENT_UPLOADS_PER_USER`).
    pub uploads_per_user: UploadsPerUser,
    pub proxies: TrustedProxies,
    /// How long the audit trail keeps an event, in seconds.
    pub audit_retention_secs: i64,
    /// Failed logins to the operator API, per client IP.
    pub operator_failures: FailureLimit,
}

/// The HTTP settings the middleware needs, taken from the configuration.
pub struct HttpSettings {
    pub dialect: Dialect,
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub max_contacts_body_bytes: usize,
    /// What a file part may add to a body, for the ops that take one.
    pub max_upload_bytes: usize,
    pub request_timeout: Duration,
    /// How long the rest of a form may take once its file is read before its token.
    pub upload_before_token_timeout: Duration,
}

impl HttpSettings {
    pub fn from_config(config: &Config) -> HttpSettings {
        HttpSettings {
            dialect: config.dialect(),
            cors_origins: config.http.cors_origins.to_vec(),
            max_body_bytes: config.http.max_body_bytes,
            max_contacts_body_bytes: config.http.max_contacts_body_bytes,
            max_upload_bytes: config.files.max_upload_bytes,
            request_timeout: Duration::from_secs(config.http.request_timeout_secs),
            upload_before_token_timeout: Duration::from_secs(config.files.upload_before_token_timeout_secs),
        }
    }
}

/// The uploads each user has under way in this process, at most `max` each: every one
/// holds its file in memory until it is answered.
pub struct UploadsPerUser {
    max: usize,
    running: Arc<Mutex<HashMap<i64, usize>>>,
}

/// One of a user's upload places, given back when dropped.
pub struct UploadPlace {
    running: Arc<Mutex<HashMap<i64, usize>>>,
    user_id: i64,
}

impl UploadsPerUser {
    pub fn new(max: usize) -> UploadsPerUser {
        UploadsPerUser { max, running: Arc::default() }
    }

    /// Takes one of `user_id`'s places; `None` when they are all taken.
    pub fn take(&self, user_id: i64) -> Option<UploadPlace> {
        let mut running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = running.entry(user_id).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(UploadPlace { running: Arc::clone(&self.running), user_id })
    }

    /// The places `user_id` holds now.
    pub fn held(&self, user_id: i64) -> usize {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&user_id).copied().unwrap_or(0)
    }
}

impl Drop for UploadPlace {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = running.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.user_id);
            }
        }
    }
}
