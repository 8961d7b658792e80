//! What every request handler shares; built by `runtime` from the configuration.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

use crate::api::health::Readiness;
use crate::config::{Config, Dialect};
use crate::delivery::outbox::Outbox;
use crate::domain::app_settings::AppSettings;
use crate::domain::client_ip::TrustedProxies;
use crate::domain::ratelimit::{FailureLimit, SharedLimits};
use crate::service::contacts::ContactLimits;
use crate::service::groups::Groups;
use crate::service::login::LoginFlow;
use crate::service::uploads::Files;
use crate::store::Db;

/// Everything a request handler needs, shared by all workers.
pub struct AppState {
    pub db: Arc<Db>,
    pub login: LoginFlow,
    /// What the login reply tells each app besides its token.
    pub apps: AppSettings,
    pub contact_limits: Arc<ContactLimits>,
    /// Groups, mirrored to the platform.
    pub groups: Groups,
    /// Uploaded photos and attachments.
    pub files: Files,
    /// The rate-limit buckets every instance shares (Redis), when configured.
    pub shared_limits: Option<Arc<SharedLimits>>,
    /// Sends queued notifications; spawn `outbox.clone().run()` once per process.
    pub outbox: Arc<Outbox>,
    pub readiness: Readiness,
    pub http: HttpSettings,
    /// Multipart requests whose file part is being read before their token was seen
    /// (`MAX_UPLOADS_BEFORE_TOKEN`).
    pub uploads_before_token: Arc<Semaphore>,
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
        }
    }
}
