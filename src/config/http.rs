//! The public HTTP listener: where it listens, whom it believes and what it accepts.

use serde::{Deserialize, Serialize};

/// The public HTTP listener and the bounds of its requests.
#[derive(Clone, Deserialize, Serialize)]
pub struct HttpSettings {
    #[serde(default = "defaults::bind")]
    pub bind: String,
    /// Browser origins allowed by CORS, comma-separated; `*` allows any; empty turns CORS off.
    #[serde(default = "defaults::cors_origins")]
    pub cors_origins: String,
    /// CIDR list of reverse proxies whose `X-Forwarded-For` / `Forwarded` is believed.
    #[serde(default)]
    pub trusted_proxies: String,
    /// Largest request body of every op but the contact ops.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest body of `getcontacts`/`delcontacts`, which carry whole address books.
    #[serde(default = "defaults::max_contacts_body_bytes")]
    pub max_contacts_body_bytes: usize,
    /// A request still unanswered after this long gets `TIMEOUT`.
    #[serde(default = "defaults::request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// How long SIGTERM/SIGINT waits for in-flight requests before closing them.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
}

impl HttpSettings {
    /// `CORS_ORIGINS` split into its entries.
    pub fn cors_origin_list(&self) -> Vec<&str> {
        self.cors_origins.split(',').map(str::trim).filter(|o| !o.is_empty()).collect()
    }
}

mod defaults {
    pub fn bind() -> String {
        "127.0.0.1:8080".into()
    }
    /// The web app calls from its own origin; tokens travel in bodies or bearer headers,
    /// never in cookies, so allowing any origin grants other sites nothing.
    pub fn cors_origins() -> String {
        "*".into()
    }
    pub fn max_body_bytes() -> usize {
        64 * 1024
    }
    /// A contact upload of MAX_CONTACTS_PER_REQUEST (5000) formatted phones fits.
    pub fn max_contacts_body_bytes() -> usize {
        256 * 1024
    }
    pub fn request_timeout_secs() -> u64 {
        30
    }
    pub fn shutdown_grace_secs() -> u64 {
        20
    }
}
