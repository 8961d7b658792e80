//! The client's IP address for rate limits: the socket peer, unless the peer is
//! one of `TRUSTED_PROXIES`, whose `X-Forwarded-For` / `Forwarded` headers are then
//! believed. Headers from anyone else are ignored: any client can write them.

use actix_web::HttpRequest;
use ipnet::IpNet;
use std::net::IpAddr;

use crate::config::parse_trusted_proxies;

pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// The networks of `TRUSTED_PROXIES`, parsed with the configuration.
    pub fn new(networks: &[IpNet]) -> TrustedProxies {
        TrustedProxies { networks: networks.to_vec() }
    }

    /// `value` written as `TRUSTED_PROXIES` is: a comma-separated CIDR list, where a bare
    /// address means just that address.
    pub fn parse(value: &str) -> Result<TrustedProxies, String> {
        let networks = parse_trusted_proxies(value).map_err(|e| format!("invalid configuration: {e}"))?;
        Ok(TrustedProxies::new(&networks))
    }

    fn trusts(&self, ip: &IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(ip))
    }

    /// The client address of `request` (empty when the peer is unknown).
    pub fn client_ip(&self, request: &HttpRequest) -> String {
        let Some(peer) = request.peer_addr().map(|a| a.ip()) else { return String::new() };
        let header = |name: &str| request.headers().get_all(name).filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
        self.resolve(peer, &header("forwarded"), &header("x-forwarded-for")).to_string()
    }

    /// Walks the forwarding chain from the nearest hop back, skipping trusted proxies;
    /// the first untrusted address is the client. `Forwarded` (RFC 7239) wins over `X-Forwarded-For`.
    pub fn resolve(&self, peer: IpAddr, forwarded: &str, x_forwarded_for: &str) -> IpAddr {
        if !self.trusts(&peer) {
            return peer;
        }
        let chain: Vec<IpAddr> = if forwarded.trim().is_empty() {
            x_forwarded_for.split(',').filter_map(|hop| parse_hop(hop.trim())).collect()
        } else {
            forwarded
                .split(',')
                .filter_map(|element| {
                    element.split(';').find_map(|pair| pair.trim().strip_prefix("for=").or(pair.trim().strip_prefix("For=")))
                })
                .filter_map(|hop| parse_hop(hop.trim().trim_matches('"')))
                .collect()
        };
        let mut client = peer;
        for hop in chain.into_iter().rev() {
            client = hop;
            if !self.trusts(&hop) {
                break;
            }
        }
        client
    }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `[::1]` or `[::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    hop.rsplit_once(':')?.0.parse().ok()
}

/// The network an address belongs to for the per-network limit: its /24 (IPv4) or /64 (IPv6),
/// since one attacker usually holds a whole block.
pub fn network_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => IpNet::new(IpAddr::V4(v4), 24).map(|n| n.trunc().to_string()).unwrap_or_default(),
        Ok(IpAddr::V6(v6)) => IpNet::new(IpAddr::V6(v6), 64).map(|n| n.trunc().to_string()).unwrap_or_default(),
        Err(_) => ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_count_only_from_trusted_peers() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1").unwrap();
        assert_eq!(proxies.resolve(ip("203.0.113.9"), "", "198.51.100.7"), ip("203.0.113.9"), "untrusted peer");
        assert_eq!(proxies.resolve(ip("10.1.2.3"), "", "198.51.100.7"), ip("198.51.100.7"));
        // A client-written first hop is skipped: the nearest untrusted hop wins.
        assert_eq!(proxies.resolve(ip("10.1.2.3"), "", "1.1.1.1, 198.51.100.7, 10.9.9.9"), ip("198.51.100.7"));
        assert_eq!(proxies.resolve(ip("192.168.1.1"), r#"for="[2001:db8::1]:4711";proto=https"#, "1.1.1.1"), ip("2001:db8::1"));
        assert_eq!(proxies.resolve(ip("10.1.2.3"), "", "garbage"), ip("10.1.2.3"));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        assert_eq!(network_key("198.51.100.77"), "198.51.100.0/24");
        assert_eq!(network_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
    }
}
