use std::fmt;
use std::net::Ipv4Addr;

/// The relay's mail domain: a DNS name, or an IPv4 address for an IP-only
/// relay whose users are `user@[1.2.3.4]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailDomain {
    Name(String),
    Ipv4(Ipv4Addr),
}

impl MailDomain {
    /// Accepts `example.org`, `1.2.3.4` and `[1.2.3.4]`. Names are
    /// lower-cased; anything that is neither a plausible DNS name nor an IPv4
    /// address is refused with a reason.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bare = text
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<Ipv4Addr>() {
            return Ok(Self::Ipv4(ip));
        }
        if bare.len() != text.len() {
            return Err("an address literal must be an IPv4 address".into());
        }
        let name = text.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.len() > 253 {
            return Err("a domain name must have 1 to 253 characters".into());
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !name.split('.').all(label_ok) {
            return Err("not a valid domain name".into());
        }
        Ok(Self::Name(name))
    }

    /// The domain part of user addresses: `example.org` or `[1.2.3.4]`.
    #[must_use]
    pub fn address_domain(&self) -> String {
        match self {
            Self::Name(name) => name.clone(),
            Self::Ipv4(ip) => format!("[{ip}]"),
        }
    }

    /// The relay's host name: the domain itself, or for an IP-only relay the
    /// reverse-pointer name (`4.3.2.1.in-addr.arpa`).
    #[must_use]
    pub fn hostname(&self) -> String {
        match self {
            Self::Name(name) => name.clone(),
            Self::Ipv4(ip) => {
                let [a, b, c, d] = ip.octets();
                format!("{d}.{c}.{b}.{a}.in-addr.arpa")
            }
        }
    }

    #[must_use]
    pub fn is_ip(&self) -> bool {
        matches!(self, Self::Ipv4(_))
    }
}

/// As written in chatmail.ini: the bare name or IPv4 address.
impl fmt::Display for MailDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ipv4(ip) => write!(f, "{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MailDomain;

    #[test]
    fn names_are_lowercased() {
        let domain = MailDomain::parse("Chat.Example.ORG").expect("valid");
        assert_eq!(domain.address_domain(), "chat.example.org");
        assert_eq!(domain.hostname(), "chat.example.org");
        assert!(!domain.is_ip());
    }

    #[test]
    fn ipv4_becomes_literal_and_reverse_pointer() {
        for text in ["1.2.3.4", "[1.2.3.4]"] {
            let domain = MailDomain::parse(text).expect("valid");
            assert_eq!(domain.address_domain(), "[1.2.3.4]");
            assert_eq!(domain.hostname(), "4.3.2.1.in-addr.arpa");
            assert_eq!(domain.to_string(), "1.2.3.4");
            assert!(domain.is_ip());
        }
    }

    #[test]
    fn rejects_bad_domains() {
        for bad in [
            "",
            "exa mple.org",
            "a..b",
            "-a.org",
            "[::1]",
            "[example.org]",
            "a/b",
            "x@y",
        ] {
            assert!(MailDomain::parse(bad).is_err(), "{bad:?}");
        }
    }
}
