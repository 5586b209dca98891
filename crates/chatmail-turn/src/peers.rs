//! Which peers a TURN allocation may exchange packets with. A TURN server
//! is a UDP proxy for anyone holding credentials, and credentials are
//! handed to every account: without a filter it would reach the relay's
//! own loopback services and its private networks. Refused: loopback,
//! unspecified, private (RFC 1918, IPv6 unique local), shared (CGNAT),
//! link-local, multicast and broadcast, documentation, benchmarking and
//! reserved ranges, and the relay's own addresses; IPv4-mapped,
//! IPv4-compatible, NAT64 and 6to4 IPv6 addresses are judged by the IPv4
//! address inside them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a peer is refused (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An address of a range that is not the public internet.
    Internal,
    /// One of the relay's own addresses.
    Own,
    /// Port 0, which nothing listens on.
    PortZero,
}

impl Refusal {
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Internal => "internal_peer",
            Self::Own => "own_address",
            Self::PortZero => "port_zero",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PeerFilter {
    allow_private: bool,
    own: Vec<IpAddr>,
}

impl PeerFilter {
    /// `own`: the relay's addresses (refused even when public).
    #[must_use]
    pub fn new(allow_private: bool, own: Vec<IpAddr>) -> Self {
        let own = own.into_iter().map(|ip| ip.to_canonical()).collect();
        Self { allow_private, own }
    }

    pub fn check(&self, peer: SocketAddr) -> Result<(), Refusal> {
        if peer.port() == 0 {
            return Err(Refusal::PortZero);
        }
        if self.allow_private {
            return Ok(());
        }
        let ip = peer.ip().to_canonical();
        if is_internal(ip) {
            return Err(Refusal::Internal);
        }
        if self.own.contains(&ip) {
            return Err(Refusal::Own);
        }
        Ok(())
    }
}

/// Whether `ip` belongs to a range that is not the public internet.
#[must_use]
pub fn is_internal(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        // "this network" 0/8, shared address space (CGNAT) 100.64/10,
        // IETF protocol assignments 192.0.0/24, benchmarking 198.18/15,
        // reserved 240/4.
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        let [h1, h2] = high.to_be_bytes();
        let [l1, l2] = low.to_be_bytes();
        Ipv4Addr::new(h1, h2, l1, l2)
    };
    // IPv4-compatible ::a.b.c.d (deprecated) and NAT64 64:ff9b::/96 carry
    // an IPv4 address in their last 32 bits; 6to4 2002::/16 in bits 16-47.
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return is_internal_v4(embedded_v4(segments[6], segments[7]));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_internal_v4(embedded_v4(segments[6], segments[7]));
    }
    if segments[0] == 0x2002 {
        return is_internal_v4(embedded_v4(segments[1], segments[2]));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // unique local fc00::/7, link-local fe80::/10, site-local fec0::/10
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
        || (segments[0] & 0xffc0) == 0xfec0
        // documentation 2001:db8::/32 and 3fff::/20, discard-only 100::/64,
        // ORCHID and other IETF assignments 2001::/23
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
        || (segments[0] & 0xfff0) == 0x3ff0
        || segments[..4] == [0x100, 0, 0, 0]
        || (segments[0] == 0x2001 && segments[1] < 0x0200)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[test]
    fn internal_ranges_are_refused() {
        let filter = PeerFilter::new(false, vec!["203.0.114.7".parse().expect("ip")]);
        for internal in [
            "127.0.0.1:7",
            "127.255.255.254:7",
            "0.0.0.0:7",
            "0.1.2.3:7",
            "10.1.2.3:7",
            "172.16.0.1:7",
            "172.31.255.255:7",
            "192.168.1.1:7",
            "100.64.0.1:7",
            "100.127.255.255:7",
            "169.254.169.254:7",
            "224.0.0.1:7",
            "239.255.255.250:7",
            "255.255.255.255:7",
            "240.0.0.1:7",
            "192.0.0.8:7",
            "192.0.2.1:7",
            "198.51.100.1:7",
            "203.0.113.1:7",
            "198.18.0.1:7",
            "[::1]:7",
            "[::]:7",
            "[::ffff:127.0.0.1]:7",
            "[::ffff:10.0.0.1]:7",
            "[::127.0.0.1]:7",
            "[64:ff9b::a00:1]:7",
            "[2002:c0a8:101::1]:7",
            "[fc00::1]:7",
            "[fd12:3456::1]:7",
            "[fe80::1]:7",
            "[fec0::1]:7",
            "[ff02::1]:7",
            "[2001:db8::1]:7",
            "[3fff::1]:7",
            "[100::1]:7",
            "[2001::1]:7",
        ] {
            assert_eq!(
                filter.check(peer(internal)),
                Err(Refusal::Internal),
                "{internal}"
            );
        }
        assert_eq!(filter.check(peer("203.0.114.7:7")), Err(Refusal::Own));
        assert_eq!(
            filter.check(peer("[::ffff:203.0.114.7]:7")),
            Err(Refusal::Own)
        );
        assert_eq!(filter.check(peer("8.8.8.8:0")), Err(Refusal::PortZero));
    }

    #[test]
    fn public_addresses_pass() {
        let filter = PeerFilter::new(false, Vec::new());
        for public in [
            "8.8.8.8:3478",
            "1.1.1.1:53",
            "100.128.0.1:7",
            "172.32.0.1:7",
            "192.169.0.1:7",
            "[2a00:1450:4001::200e]:443",
            "[::ffff:8.8.8.8]:7",
            "[64:ff9b::808:808]:7",
            "[2002:808:808::1]:7",
        ] {
            assert_eq!(filter.check(peer(public)), Ok(()), "{public}");
        }
    }

    #[test]
    fn allow_private_is_for_local_relays() {
        let filter = PeerFilter::new(true, Vec::new());
        assert_eq!(filter.check(peer("127.0.0.1:9")), Ok(()));
        assert_eq!(filter.check(peer("127.0.0.1:0")), Err(Refusal::PortZero));
    }
}
