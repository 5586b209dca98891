//! Where a recipient's mail goes: a domain (looked up in DNS) or an IP
//! literal (delivered to that address).

use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Domain(String),
    Ip(IpAddr),
}

impl Destination {
    /// The destination of `recipient` (`local@domain`), `None` when it has
    /// no usable domain.
    #[must_use]
    pub fn of(recipient: &str) -> Option<Self> {
        let (_, domain) = recipient.rsplit_once('@')?;
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let literal = literal
                .strip_prefix("IPv6:")
                .or_else(|| literal.strip_prefix("ipv6:"))
                .unwrap_or(literal);
            return literal.parse().ok().map(Self::Ip);
        }
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let valid = !domain.is_empty()
            && domain.len() <= 253
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        valid.then_some(Self::Domain(domain))
    }

    /// Test relays (IP literals, domains starting with `_`) may present
    /// self-signed certificates.
    #[must_use]
    pub fn accepts_self_signed(&self) -> bool {
        match self {
            Self::Ip(_) => true,
            Self::Domain(domain) => domain.starts_with('_'),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(domain) => f.write_str(domain),
            Self::Ip(ip) => write!(f, "[{ip}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            Destination::of("a@Example.ORG"),
            Some(Destination::Domain("example.org".into()))
        );
        assert_eq!(
            Destination::of("a@[127.0.0.2]"),
            Some(Destination::Ip("127.0.0.2".parse().unwrap()))
        );
        assert_eq!(
            Destination::of("a@[IPv6:::1]"),
            Some(Destination::Ip("::1".parse().unwrap()))
        );
        assert_eq!(Destination::of("a@[bad]"), None);
        assert_eq!(Destination::of("nodomain"), None);
        assert!(
            Destination::of("a@_test.relay")
                .unwrap()
                .accepts_self_signed()
        );
        assert!(
            !Destination::of("a@example.org")
                .unwrap()
                .accepts_self_signed()
        );
    }
}
