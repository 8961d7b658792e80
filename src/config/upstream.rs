//! The platform's backend API, which issues the users' tokens.

use serde::{Deserialize, Serialize};

use super::values::{unless_empty, Secret};

/// The platform's backend API (`useradd`, messages).
#[derive(Clone, Deserialize, Serialize)]
pub struct UpstreamSettings {
    #[serde(default = "defaults::upstream_url", rename = "upstream_url")]
    pub url: String,
    #[serde(default = "defaults::upstream_connect_timeout_secs", rename = "upstream_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    #[serde(default = "defaults::upstream_timeout_secs", rename = "upstream_timeout_secs")]
    pub timeout_secs: u64,
    /// Secret app token for the upstream `useradd` call. Never logged or returned.
    #[serde(default, deserialize_with = "unless_empty")]
    pub app_token: Option<Secret>,
    /// The lifetime of the tokens upstream issues.
    #[serde(default = "defaults::token_expiry_mins")]
    pub token_expiry_mins: u64,
    /// 0: `/readyz` does not contact upstream; N: it does, and keeps the answer N seconds.
    #[serde(default)]
    pub readyz_upstream_cache_secs: u64,
}

/// The value of `UPSTREAM_URL` that selects the built-in stand-in for the platform.
pub const BUILTIN_UPSTREAM: &str = "builtin";
/// Logged at start and with every token the built-in stand-in mints.
pub const BUILTIN_UPSTREAM_WARNING: &str =
    "UPSTREAM_URL=builtin: tokens are minted locally for testing and are not valid on the messaging platform; set UPSTREAM_URL and APP_TOKEN for real logins";

mod defaults {
    pub fn upstream_url() -> String {
        "https://api.mesibo.com/backend/".into()
    }
    pub fn upstream_connect_timeout_secs() -> u64 {
        5
    }
    pub fn upstream_timeout_secs() -> u64 {
        10
    }
    pub fn token_expiry_mins() -> u64 {
        525_600
    }
}
