//! Running the service: its logs and the operator API.

use serde::{Deserialize, Serialize};

use super::values::{choice, unless_empty, Secret};

/// The log.
#[derive(Clone, Deserialize, Serialize)]
pub struct LoggingSettings {
    /// `text` for people, `json` (one object per line) for log shippers.
    #[serde(default = "defaults::log_format", rename = "log_format")]
    pub format: LogFormat,
}

/// The operator API and the audit trail it reads. (`ADMIN_*`, and `AUDIT_RETENTION_DAYS`)
#[derive(Clone, Deserialize, Serialize)]
pub struct AdminSettings {
    /// `host:port` of the operator API, a listener of its own apart from BIND; unset: off.
    #[serde(default, deserialize_with = "unless_empty", rename = "admin_bind")]
    pub bind: Option<String>,
    /// Bearer token of the operator API: required with ADMIN_BIND, 32 characters or more.
    #[serde(default, deserialize_with = "unless_empty", rename = "admin_token")]
    pub token: Option<Secret>,
    /// Failed operator API logins a client IP may make per hour; beyond them it is refused
    /// for any token but the right one until the hour is over. 0: no limit.
    #[serde(default = "defaults::admin_failures_per_ip_per_hour", rename = "admin_failures_per_ip_per_hour")]
    pub failures_per_ip_per_hour: u32,
    /// Days the audit trail keeps a security event.
    #[serde(default = "defaults::audit_retention_days")]
    pub audit_retention_days: u64,
}

choice!(
    /// `LOG_FORMAT`: text for people, JSON (one object per line) for log shippers.
    LogFormat, "LOG_FORMAT", "text or json", {
    Text = "text",
    Json = "json",
});

mod defaults {
    pub fn log_format() -> super::LogFormat {
        super::LogFormat::Text
    }
    pub fn admin_failures_per_ip_per_hour() -> u32 {
        10
    }
    pub fn audit_retention_days() -> u64 {
        90
    }
}
