//! The public HTTP listener: where it listens, whom it believes and what it accepts.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::values::List;

/// The public HTTP listener and the bounds of its requests.
#[derive(Clone, Deserialize, Serialize)]
pub struct HttpSettings {
    #[serde(default = "defaults::bind")]
    pub bind: String,
    /// Browser origins allowed by CORS; `*` allows any; none turns CORS off.
    #[serde(default = "defaults::cors_origins")]
    pub cors_origins: List,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` is believed.
    #[serde(default, deserialize_with = "trusted_proxies")]
    pub trusted_proxies: List<IpNet>,
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

/// `TRUSTED_PROXIES` as written: CIDR ranges, comma-separated; a bare address means just
/// that address.
pub fn parse_trusted_proxies(text: &str) -> Result<List<IpNet>, String> {
    List::parse_with(text, |entry| {
        entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| format!("TRUSTED_PROXIES entry {entry:?} is not an address or CIDR range"))
    })
}

fn trusted_proxies<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<List<IpNet>, D::Error> {
    parse_trusted_proxies(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

mod defaults {
    use super::List;

    pub fn bind() -> String {
        "127.0.0.1:8080".into()
    }
    /// The web app calls from its own origin; tokens travel in bodies or bearer headers,
    /// never in cookies, so allowing any origin grants other sites nothing.
    pub fn cors_origins() -> List {
        List::from("*")
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
