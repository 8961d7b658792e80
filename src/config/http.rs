//! The public HTTP listener: where it listens, whom it believes and what it accepts.

use ipnet::{IpNet, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

use super::values::{choice, List};

/// The public HTTP listener and the bounds of its requests.
#[derive(Clone, Deserialize, Serialize)]
pub struct HttpSettings {
    #[serde(default = "defaults::bind")]
    pub bind: String,
    /// Browser origins allowed by CORS; `*` allows any; none turns CORS off.
    #[serde(default = "defaults::cors_origins")]
    pub cors_origins: List,
    /// Reverse proxies whose forwarding header (`trusted_proxy_header`) is believed.
    #[serde(default, deserialize_with = "trusted_proxies")]
    pub trusted_proxies: List<IpNet>,
    /// The one header the trusted proxies write the client address in.
    #[serde(default = "defaults::trusted_proxy_header")]
    pub trusted_proxy_header: ProxyHeader,
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

choice!(
    /// Where a trusted proxy writes the client address, `TRUSTED_PROXY_HEADER`. Only that
    /// header is read: a proxy passes the other on as the client wrote it.
    ProxyHeader, "TRUSTED_PROXY_HEADER", "X-Forwarded-For or Forwarded", {
    XForwardedFor = "X-Forwarded-For",
    /// RFC 7239's `for=`.
    Forwarded = "Forwarded",
});

/// The shortest prefix `TRUSTED_PROXIES` accepts: a wider network takes in public
/// addresses, whose holders could then write their own client address. No IPv4 range
/// shorter than /8 is all private; for IPv6 ULAs, fd00::/8 is the range in use.
const SHORTEST_TRUSTED_PREFIX: u8 = 8;

/// `TRUSTED_PROXIES` as written: CIDR ranges, comma-separated; a bare address means just
/// that address. A network wider than /8 (`0.0.0.0/0`, `::/0`...) is refused.
pub fn parse_trusted_proxies(text: &str) -> Result<List<IpNet>, String> {
    List::parse_with(text, |entry| {
        let network = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("TRUSTED_PROXIES entry {entry:?} is not an address or CIDR range"))?;
        if effective_prefix(&network) < SHORTEST_TRUSTED_PREFIX {
            return Err(format!(
                "TRUSTED_PROXIES entry {entry:?} is wider than /8 and takes in addresses any client may hold, \
                 who could then choose its own address: list only your proxies' addresses (e.g. 127.0.0.1)"
            ));
        }
        Ok(network)
    })
}

/// The prefix length of `network`, or for an IPv6 network over IPv4-mapped addresses
/// (`::ffff:a.b.c.d`, the peers of a dual-stack listener) that of the IPv4 range it covers.
fn effective_prefix(network: &IpNet) -> u8 {
    let IpNet::V6(v6) = network else { return network.prefix_len() };
    let mapped = Ipv6Net::new(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 96).expect("96 is a valid IPv6 prefix");
    if v6.contains(&mapped) || mapped.contains(v6) {
        v6.prefix_len().saturating_sub(96)
    } else {
        v6.prefix_len()
    }
}

fn trusted_proxies<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<List<IpNet>, D::Error> {
    parse_trusted_proxies(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

mod defaults {
    use super::{List, ProxyHeader};

    pub fn bind() -> String {
        "127.0.0.1:8080".into()
    }
    /// The web app calls from its own origin; tokens travel in bodies or bearer headers,
    /// never in cookies, so allowing any origin grants other sites nothing.
    pub fn cors_origins() -> List {
        List::from("*")
    }
    /// What nginx's `proxy_add_x_forwarded_for` writes.
    pub fn trusted_proxy_header() -> ProxyHeader {
        ProxyHeader::XForwardedFor
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
