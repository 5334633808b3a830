//! Which address a request comes from, when Keyfob runs behind proxies.
//!
//! Per-IP limits and the audit log need the client's address. Directly on the internet that is the
//! connection's peer. Behind a load balancer the peer is the balancer, and the client is in
//! `X-Forwarded-For` — a header anyone can send, so it is believed only as far as it was written
//! by proxies the operator listed as trusted.

use std::net::IpAddr;

use ipnet::IpNet;

/// The client's address: starting from the connection's `peer`, as long as the current address is
/// a trusted proxy, step one entry left in `X-Forwarded-For` (each proxy appends the address it
/// received the request from). `forwarded_for` holds the header's values in the order they came.
/// An entry that is not an IP address stops the walk at the last address known good.
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut current = peer.to_canonical();
    if !is_trusted(&current) {
        return current;
    }
    let hops = forwarded_for
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        current = ip.to_canonical();
        if !is_trusted(&current) {
            break;
        }
    }
    current
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a single address (`192.0.2.7`) into a network.
pub fn parse_trusted(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an IP address or network such as 10.0.0.0/8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_trusted(s).unwrap()).collect()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let got = client_ip(ip("203.0.113.9"), &["1.2.3.4"], &[]);
        assert_eq!(got, ip("203.0.113.9"), "a forged header is ignored");
    }

    #[test]
    fn a_trusted_proxy_passes_on_the_address_it_saw() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.1.2.3"), &["203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        // What the client wrote itself, left of the proxy's entry, is not believed.
        assert_eq!(
            client_ip(ip("10.1.2.3"), &["6.6.6.6, 203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        // Two proxies, one header each.
        assert_eq!(
            client_ip(
                ip("10.1.2.3"),
                &["6.6.6.6, 203.0.113.9", "10.9.9.9"],
                &trusted
            ),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("198.51.100.1"), &["10.0.0.1"], &trusted),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn garbage_stops_the_walk() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.1.2.3"), &["203.0.113.9, nonsense"], &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(client_ip(ip("10.1.2.3"), &[], &trusted), ip("10.1.2.3"));
    }

    #[test]
    fn mapped_addresses_and_single_hosts() {
        let trusted = nets(&["192.0.2.7", "2001:db8::/32"]);
        assert_eq!(
            client_ip(ip("::ffff:192.0.2.7"), &["203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("2001:db8::1"), &["2001:db9::5"], &trusted),
            ip("2001:db9::5")
        );
        assert!(parse_trusted("10.0.0.0/33").is_err());
        assert!(parse_trusted("proxy.internal").is_err());
    }
}
