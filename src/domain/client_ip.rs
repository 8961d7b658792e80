//! The client's IP address for rate limits: the socket peer, unless the peer is
//! one of `TRUSTED_PROXIES`, whose forwarding header (`TRUSTED_PROXY_HEADER`:
//! `X-Forwarded-For` or `Forwarded`) is then believed. Headers from anyone else, and
//! the other header from anyone, are ignored: any client can write them.

use actix_web::HttpRequest;
use ipnet::IpNet;
use std::net::IpAddr;

use crate::config::{parse_trusted_proxies, ProxyHeader};

pub struct TrustedProxies {
    networks: Vec<IpNet>,
    header: ProxyHeader,
}

impl TrustedProxies {
    /// The networks of `TRUSTED_PROXIES`, parsed with the configuration, and the header
    /// they write.
    pub fn new(networks: &[IpNet], header: ProxyHeader) -> TrustedProxies {
        TrustedProxies { networks: networks.to_vec(), header }
    }

    /// `value` written as `TRUSTED_PROXIES` is: a comma-separated CIDR list, where a bare
    /// address means just that address.
    pub fn parse(value: &str, header: ProxyHeader) -> Result<TrustedProxies, String> {
        let networks = parse_trusted_proxies(value).map_err(|e| format!("invalid configuration: {e}"))?;
        Ok(TrustedProxies::new(&networks, header))
    }

    fn trusts(&self, ip: &IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(ip))
    }

    /// The client address of `request` (empty when the peer is unknown).
    pub fn client_ip(&self, request: &HttpRequest) -> String {
        let Some(peer) = request.peer_addr().map(|a| a.ip()) else { return String::new() };
        let name = match self.header {
            ProxyHeader::XForwardedFor => "x-forwarded-for",
            ProxyHeader::Forwarded => "forwarded",
        };
        // Bytes that are not text stay in, as hops that are no address: they end the walk.
        let lines: Vec<_> = request.headers().get_all(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        self.resolve(peer, &lines.join(",")).to_string()
    }

    /// Walks the forwarding chain `header` (the value of `TRUSTED_PROXY_HEADER`) from the
    /// nearest hop back while the hop that added it is trusted; the first untrusted address
    /// is the client. Each hop was written by the one to its right, so once that one is
    /// not trusted, or a hop is no address (a trusted proxy writes none such), the rest
    /// is the client's own writing and the walk ends, as nginx's `real_ip_recursive` does.
    pub fn resolve(&self, peer: IpAddr, header: &str) -> IpAddr {
        // A dual-stack listener sees an IPv4 peer as `::ffff:a.b.c.d`: it is that IPv4 address.
        let mut client = peer.to_canonical();
        let peer = client;
        if !self.trusts(&peer) || header.trim().is_empty() {
            return client;
        }
        for hop in header.split(',').rev() {
            let address = match self.header {
                ProxyHeader::XForwardedFor => parse_hop(hop.trim()),
                ProxyHeader::Forwarded => forwarded_for(hop).and_then(parse_hop),
            };
            let Some(address) = address else { break };
            client = address.to_canonical();
            if !self.trusts(&client) {
                break;
            }
        }
        client
    }
}

/// The `for=` address of one `Forwarded` element (`for="[2001:db8::1]:4711";proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then(|| value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `[::1]` or `[::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    let (address, port) = match hop.strip_prefix('[') {
        Some(rest) => {
            let (address, rest) = rest.split_once(']')?;
            (address, if rest.is_empty() { None } else { Some(rest.strip_prefix(':')?) })
        }
        None => hop.rsplit_once(':').map(|(address, port)| (address, Some(port)))?,
    };
    if port.is_some_and(|port| port.parse::<u16>().is_err()) {
        return None;
    }
    address.parse().ok()
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

    fn proxies(networks: &str) -> TrustedProxies {
        TrustedProxies::parse(networks, ProxyHeader::XForwardedFor).unwrap()
    }

    #[test]
    fn headers_count_only_from_trusted_peers() {
        let proxies = proxies("10.0.0.0/8, 192.168.1.1");
        assert_eq!(proxies.resolve(ip("203.0.113.9"), "198.51.100.7"), ip("203.0.113.9"), "untrusted peer");
        assert_eq!(proxies.resolve(ip("10.1.2.3"), "198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(proxies.resolve(ip("10.1.2.3"), ""), ip("10.1.2.3"));
        // A client-written first hop is skipped: the nearest untrusted hop wins.
        assert_eq!(proxies.resolve(ip("10.1.2.3"), "1.1.1.1, 198.51.100.7, 10.9.9.9"), ip("198.51.100.7"));
        assert_eq!(proxies.resolve(ip("10.1.2.3"), "198.51.100.7:4711, [2001:db8::2]:80"), ip("2001:db8::2"));
        assert_eq!(proxies.resolve(ip("10.1.2.3"), "garbage"), ip("10.1.2.3"));
        assert!(TrustedProxies::parse("10.0.0.0/33", ProxyHeader::XForwardedFor).is_err());
    }

    #[test]
    fn a_hop_that_is_no_address_ends_the_walk() {
        let proxies = proxies("10.0.0.0/8");
        // The trusted 10.9.9.9 did not write "garbage": it and all left of it are the
        // client's own, so the client is the last proxy reached, never 1.1.1.1.
        assert_eq!(proxies.resolve(ip("10.1.2.3"), "1.1.1.1, garbage, 10.9.9.9"), ip("10.9.9.9"));
        assert_eq!(proxies.resolve(ip("10.1.2.3"), "1.1.1.1, , 10.9.9.9"), ip("10.9.9.9"));
        assert_eq!(proxies.resolve(ip("10.1.2.3"), "1.1.1.1,\u{fffd}"), ip("10.1.2.3"));
    }

    #[test]
    fn only_the_configured_header_is_believed() {
        let by_x_forwarded_for = proxies("10.0.0.0/8");
        let by_forwarded = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1", ProxyHeader::Forwarded).unwrap();
        let peer = ip("10.1.2.3");
        // nginx appends to X-Forwarded-For but passes a client's Forwarded on unchanged.
        assert_eq!(by_x_forwarded_for.resolve(peer, "for=1.1.1.1"), peer, "a Forwarded value read as X-Forwarded-For is no address");
        assert_eq!(by_forwarded.resolve(peer, "198.51.100.7"), peer, "an X-Forwarded-For value read as Forwarded has no for=");
        assert_eq!(by_forwarded.resolve(ip("192.168.1.1"), r#"for="[2001:db8::1]:4711";proto=https"#), ip("2001:db8::1"));
        assert_eq!(by_forwarded.resolve(peer, "for=1.1.1.1, For=198.51.100.7;proto=https, for=10.9.9.9"), ip("198.51.100.7"));
        // An element without for= (or with an obfuscated one) says nothing of the client.
        assert_eq!(by_forwarded.resolve(peer, "for=1.1.1.1, proto=https"), peer);
        assert_eq!(by_forwarded.resolve(peer, "for=1.1.1.1, for=_hidden"), peer);
    }

    #[test]
    fn networks_that_take_in_the_internet_are_refused() {
        for wide in ["0.0.0.0/0", "::/0", "0.0.0.0/1", "128.0.0.0/7", "2000::/3", "::ffff:0.0.0.0/96", "::ffff:0.0.0.0/100", "::/8"] {
            let refused = TrustedProxies::parse(&format!("127.0.0.1, {wide}"), ProxyHeader::XForwardedFor).err();
            assert!(refused.as_deref().is_some_and(|why| why.contains("wider than /8")), "{wide}: {refused:?}");
        }
        for narrow in ["10.0.0.0/8", "172.16.0.0/12", "127.0.0.1", "fd00::/8", "::1", "::ffff:10.0.0.0/104"] {
            assert!(TrustedProxies::parse(narrow, ProxyHeader::XForwardedFor).is_ok(), "{narrow}");
        }
    }

    #[test]
    fn ipv4_mapped_peers_and_hops_are_their_ipv4_address() {
        let proxies = TrustedProxies::parse("127.0.0.1", ProxyHeader::XForwardedFor).unwrap();
        assert_eq!(proxies.resolve(ip("::ffff:127.0.0.1"), "198.51.100.7"), ip("198.51.100.7"), "a trusted proxy on a dual-stack listener");
        assert_eq!(proxies.resolve(ip("::ffff:203.0.113.9"), ""), ip("203.0.113.9"));
        assert_eq!(proxies.resolve(ip("127.0.0.1"), "198.51.100.7, ::ffff:127.0.0.1"), ip("198.51.100.7"));
    }

    #[test]
    fn a_hop_with_a_port_that_is_no_port_is_no_address() {
        assert_eq!(parse_hop("1.2.3.4:5678"), Some(ip("1.2.3.4")));
        assert_eq!(parse_hop("[2001:db8::1]:4711"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("1.2.3.4:junk"), None);
        assert_eq!(parse_hop("[2001:db8::1]junk"), None);
        assert_eq!(parse_hop("[2001:db8::1]:99999"), None);
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        assert_eq!(network_key("198.51.100.77"), "198.51.100.0/24");
        assert_eq!(network_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
    }
}
