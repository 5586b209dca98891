//! Envelope addresses in one canonical form. Postfix, Dovecot and the
//! chatmail daemons must agree on whose mailbox a message lands in, so
//! every door turns the address a peer gave into the account it names,
//! or refuses it. Forms that Postfix would rewrite into another address
//! (the percent hack, bang paths, source routes, a trailing dot) are
//! refused rather than interpreted, and so are forms that no account can
//! have: what passes here is what Postfix and Dovecot deliver to.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::domain::MailDomain;

/// RFC 5321 4.5.3.1: a path holds at most 256 octets with its brackets.
const MAX_ADDRESS: usize = 254;
const MAX_LOCAL_PART: usize = 64;
const MAX_DOMAIN: usize = 253;
const MAX_LABEL: usize = 63;

/// An address that passed [`canonical_address`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EnvelopeAddress {
    /// An account of this relay, in lower case: the name of its mailbox
    /// directory and the user Dovecot delivers to.
    Local(String),
    /// An address of another domain: the local part as given (other
    /// servers may tell case apart), the domain in lower case.
    Remote(String),
}

impl EnvelopeAddress {
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Local(address) | Self::Remote(address) => address,
        }
    }

    #[must_use]
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local(_))
    }

    /// The part after the `@`.
    #[must_use]
    pub fn domain(&self) -> &str {
        self.as_str()
            .rsplit_once('@')
            .map_or("", |(_, domain)| domain)
    }

    /// Whether the domain is an address literal (`[192.0.2.1]`,
    /// `[IPv6:2001:db8::1]`); canonical addresses only carry valid ones.
    #[must_use]
    pub fn has_address_literal(&self) -> bool {
        self.domain().starts_with('[')
    }

    #[must_use]
    pub fn into_string(self) -> String {
        match self {
            Self::Local(address) | Self::Remote(address) => address,
        }
    }
}

impl std::fmt::Display for EnvelopeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefusal {
    #[error("the address is empty")]
    Empty,
    #[error("the address is too long")]
    TooLong,
    #[error("the address has characters other than printable ASCII")]
    NotPrintableAscii,
    #[error("the address has no domain")]
    NoDomain,
    #[error("the local part is empty")]
    EmptyLocalPart,
    #[error("the local part is not a plain dot-atom")]
    BadLocalPart,
    #[error("the domain is not a valid domain name")]
    BadDomain,
    #[error("the address literal is not an IPv4 or IPv6 address")]
    BadAddressLiteral,
    #[error("source routes are not accepted")]
    SourceRoute,
    #[error("quoted local parts are not accepted")]
    Quoted,
    #[error("the percent hack (user%domain@relay) is not accepted")]
    PercentHack,
    #[error("bang paths (host!user) are not accepted")]
    BangPath,
    #[error("a trailing dot in the domain is not accepted")]
    TrailingDot,
    #[error("no account of this relay has such a name")]
    NotAnAccountName,
}

impl AddressRefusal {
    /// Whether the address is malformed (RFC 5321 syntax), as opposed to
    /// a well-formed address this relay refuses on purpose.
    #[must_use]
    pub fn is_syntax_error(self) -> bool {
        matches!(
            self,
            Self::Empty
                | Self::TooLong
                | Self::NotPrintableAscii
                | Self::NoDomain
                | Self::EmptyLocalPart
                | Self::BadLocalPart
                | Self::BadDomain
                | Self::BadAddressLiteral
        )
    }
}

/// The canonical form of `address` (a mailbox as an SMTP path or an
/// `X-Mail-To` header carries it, without angle brackets) for a relay
/// whose domain is `mail_domain`, or why it is refused.
///
/// Local addresses are lower-cased, as Dovecot does at login and
/// delivery; their local part must be one an account can have (what
/// doveauth creates: `[a-z0-9._-]` as a dot-atom).
pub fn canonical_address(
    address: &str,
    mail_domain: &MailDomain,
) -> Result<EnvelopeAddress, AddressRefusal> {
    if address.is_empty() {
        return Err(AddressRefusal::Empty);
    }
    if address.len() > MAX_ADDRESS {
        return Err(AddressRefusal::TooLong);
    }
    // One pass for both; refused in the order the rules are listed.
    let (mut printable, mut quoted) = (true, false);
    for byte in address.bytes() {
        printable &= byte.is_ascii_graphic();
        quoted |= matches!(byte, b'"' | b'\\');
    }
    if !printable {
        return Err(AddressRefusal::NotPrintableAscii);
    }
    if address.starts_with('@') {
        return Err(AddressRefusal::SourceRoute);
    }
    if quoted {
        return Err(AddressRefusal::Quoted);
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(AddressRefusal::NoDomain);
    };
    check_local_part(local)?;
    let domain = Domain::parse(domain)?;
    // Every address of every message passes here: the result is built in
    // one allocation.
    if domain.is(mail_domain) {
        let mut account = String::with_capacity(local.len() + 1 + domain.text.len());
        account.extend(local.chars().map(|c| c.to_ascii_lowercase()));
        if !is_account_name(&account) {
            return Err(AddressRefusal::NotAnAccountName);
        }
        account.push('@');
        // The canonical text of our own domain is its address domain.
        account.push_str(&domain.text);
        debug_assert_eq!(domain.text, mail_domain.address_domain());
        return Ok(EnvelopeAddress::Local(account));
    }
    let mut remote = String::with_capacity(local.len() + 1 + domain.text.len());
    remote.push_str(local);
    remote.push('@');
    remote.push_str(&domain.text);
    Ok(EnvelopeAddress::Remote(remote))
}

/// Whether `local` (lower case) is a local part doveauth would create an
/// account for, length rules aside.
#[must_use]
pub fn is_account_name(local: &str) -> bool {
    is_dot_atom_of(local, ACCOUNT)
}

fn check_local_part(local: &str) -> Result<(), AddressRefusal> {
    if local.is_empty() {
        return Err(AddressRefusal::EmptyLocalPart);
    }
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressRefusal::TooLong);
    }
    let dot_atom = is_dot_atom_of(local, ATEXT);
    // Postfix would route these elsewhere (allow_percent_hack,
    // swap_bangpath); an `@` left in the local part came out of quotes.
    if local.contains('%') {
        return Err(AddressRefusal::PercentHack);
    }
    if local.contains('!') {
        return Err(AddressRefusal::BangPath);
    }
    if local.contains('@') {
        return Err(AddressRefusal::Quoted);
    }
    if !dot_atom {
        return Err(AddressRefusal::BadLocalPart);
    }
    Ok(())
}

// Classes of bytes in addresses, looked up in one table rather than
// tested rule by rule: every address of every message passes here, and
// a message has several.

/// RFC 5322 3.2.3 atext.
const ATEXT: u8 = 1;
/// What doveauth puts in an account name, dots aside: `[a-z0-9_-]`.
const ACCOUNT: u8 = 2;
/// What a domain label holds: `[A-Za-z0-9_-]`.
const LABEL: u8 = 4;

const fn byte_class(byte: u8) -> u8 {
    let alphanumeric = byte.is_ascii_alphanumeric();
    let mut class = 0;
    if alphanumeric
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        )
    {
        class |= ATEXT;
    }
    if byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'_' | b'-') {
        class |= ACCOUNT;
    }
    if alphanumeric || matches!(byte, b'_' | b'-') {
        class |= LABEL;
    }
    class
}

#[allow(clippy::indexing_slicing, reason = "the loop stays below 256")]
static BYTE_CLASSES: [u8; 256] = {
    let mut classes = [0; 256];
    let mut byte = 0;
    while byte < 256 {
        classes[byte] = byte_class(byte as u8);
        byte += 1;
    }
    classes
};

fn in_class(byte: u8, class: u8) -> bool {
    BYTE_CLASSES
        .get(usize::from(byte))
        .is_some_and(|classes| classes & class != 0)
}

/// Whether `text` is a dot-atom (dots only between non-empty atoms)
/// whose other bytes are all in `class`; in one pass.
fn is_dot_atom_of(text: &str, class: u8) -> bool {
    // A dot first would end an empty atom.
    let mut after_dot = true;
    for byte in text.bytes() {
        if byte == b'.' {
            if after_dot {
                return false;
            }
            after_dot = true;
        } else if in_class(byte, class) {
            after_dot = false;
        } else {
            return false;
        }
    }
    !after_dot
}

/// A checked domain part, with its canonical text (the address's own
/// text when that is canonical already, as it mostly is).
struct Domain<'a> {
    text: Cow<'a, str>,
    kind: DomainKind,
}

enum DomainKind {
    Name,
    Ipv4(Ipv4Addr),
    Ipv6,
}

impl<'a> Domain<'a> {
    fn parse(domain: &'a str) -> Result<Self, AddressRefusal> {
        if domain.is_empty() {
            return Err(AddressRefusal::NoDomain);
        }
        if let Some(inner) = domain.strip_prefix('[') {
            return Self::literal(inner);
        }
        if domain.len() > 1 && domain.ends_with('.') {
            return Err(AddressRefusal::TrailingDot);
        }
        let text = if domain.bytes().any(|byte| byte.is_ascii_uppercase()) {
            Cow::Owned(domain.to_ascii_lowercase())
        } else {
            Cow::Borrowed(domain)
        };
        if text.len() > MAX_DOMAIN || !is_domain_name(text.as_bytes()) {
            return Err(AddressRefusal::BadDomain);
        }
        Ok(Self {
            text,
            kind: DomainKind::Name,
        })
    }

    /// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 4.1.3), written in
    /// the one form Rust's parsers accept: no leading zeros, no other tags.
    fn literal(inner: &str) -> Result<Self, AddressRefusal> {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err(if inner.ends_with("].") {
                AddressRefusal::TrailingDot
            } else {
                AddressRefusal::BadAddressLiteral
            });
        };
        let tag = inner.get(..5);
        if tag.is_some_and(|tag| tag.eq_ignore_ascii_case("IPv6:")) {
            let ip: Ipv6Addr = inner
                .get(5..)
                .and_then(|ip| ip.parse().ok())
                .ok_or(AddressRefusal::BadAddressLiteral)?;
            return Ok(Self {
                text: Cow::Owned(format!("[IPv6:{ip}]")),
                kind: DomainKind::Ipv6,
            });
        }
        let ip: Ipv4Addr = inner
            .parse()
            .map_err(|_| AddressRefusal::BadAddressLiteral)?;
        Ok(Self {
            text: Cow::Owned(format!("[{ip}]")),
            kind: DomainKind::Ipv4(ip),
        })
    }

    fn is(&self, mail_domain: &MailDomain) -> bool {
        match (mail_domain, &self.kind) {
            (MailDomain::Name(name), DomainKind::Name) => *name == *self.text,
            (MailDomain::Ipv4(ours), DomainKind::Ipv4(ip)) => ours == ip,
            _ => false,
        }
    }
}

/// Labels of `[A-Za-z0-9_-]`, 1 to 63 long, not starting or ending with
/// a hyphen, between single dots; in one pass.
fn is_domain_name(name: &[u8]) -> bool {
    let mut label_start = 0;
    for (at, &byte) in name.iter().enumerate() {
        if byte == b'.' {
            if !is_label(name.get(label_start..at).unwrap_or_default()) {
                return false;
            }
            label_start = at + 1;
        } else if !in_class(byte, LABEL) {
            return false;
        }
    }
    is_label(name.get(label_start..).unwrap_or_default())
}

/// A label's length and ends (its bytes are checked by the caller).
fn is_label(label: &[u8]) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL
        && label.first() != Some(&b'-')
        && label.last() != Some(&b'-')
}

#[cfg(test)]
mod tests {
    use super::{AddressRefusal as Refused, EnvelopeAddress, canonical_address};
    use crate::domain::MailDomain;

    type Case = (&'static str, Result<EnvelopeAddress, Refused>, &'static str);

    fn local(text: &str) -> Result<EnvelopeAddress, Refused> {
        Ok(EnvelopeAddress::Local(text.to_owned()))
    }

    fn remote(text: &str) -> Result<EnvelopeAddress, Refused> {
        Ok(EnvelopeAddress::Remote(text.to_owned()))
    }

    /// Each case: the address, its canonical form or refusal, the rule.
    fn check(mail_domain: &str, cases: &[Case]) {
        let ours = MailDomain::parse(mail_domain).expect("valid");
        for (address, expected, rule) in cases {
            let got = canonical_address(address, &ours);
            assert_eq!(&got, expected, "{rule}: {address}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn domain_relay() {
        check("chat.example.org", &[
            ("victim@chat.example.org", local("victim@chat.example.org"), "plain"),
            ("Victim@Chat.Example.ORG", local("victim@chat.example.org"), "case folds to the account"),
            ("a.b-c_d@chat.example.org", local("a.b-c_d@chat.example.org"), "account characters"),
            ("Bob+x@Other.Example", remote("Bob+x@other.example"), "remote keeps its local part"),
            ("victim@chat.example.org.", Err(Refused::TrailingDot), "Postfix strips a trailing dot"),
            ("victim%chat.example.org@chat.example.org", Err(Refused::PercentHack), "percent hack"),
            ("victim%x@other.example", Err(Refused::PercentHack), "percent hack, remote"),
            ("chat.example.org!victim@chat.example.org", Err(Refused::BangPath), "bang path"),
            ("@a.example:victim@chat.example.org", Err(Refused::SourceRoute), "source route"),
            ("\"victim\"@chat.example.org", Err(Refused::Quoted), "quoted local part"),
            ("victim@chat.example.org@other.example", Err(Refused::Quoted), "an @ from inside quotes"),
            ("vic tim@chat.example.org", Err(Refused::NotPrintableAscii), "space"),
            ("victim@chät.example.org", Err(Refused::NotPrintableAscii), "IDN in UTF-8"),
            ("victim@xn--cht-qla.example.org", remote("victim@xn--cht-qla.example.org"), "punycode is another name"),
            ("victim+tag@chat.example.org", Err(Refused::NotAnAccountName), "no subaddresses"),
            ("victim.@chat.example.org", Err(Refused::BadLocalPart), "trailing dot in the local part"),
            (".victim@chat.example.org", Err(Refused::BadLocalPart), "leading dot"),
            ("vic..tim@other.example", Err(Refused::BadLocalPart), "double dot"),
            ("victim@chat..example.org", Err(Refused::BadDomain), "empty label"),
            ("victim@-chat.example.org", Err(Refused::BadDomain), "hyphen"),
            ("victim@[chat.example.org]", Err(Refused::BadAddressLiteral), "name in brackets"),
            ("victim@[192.0.2.1]", remote("victim@[192.0.2.1]"), "a literal is not a domain relay's"),
            ("victim", Err(Refused::NoDomain), "no domain"),
            ("victim@", Err(Refused::NoDomain), "empty domain"),
            ("@chat.example.org", Err(Refused::SourceRoute), "empty local part"),
            ("", Err(Refused::Empty), "the null path is the caller's business"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn punycode_relay() {
        check("xn--bcher-kva.example", &[
            ("victim@XN--BCHER-KVA.example", local("victim@xn--bcher-kva.example"), "case"),
            ("victim@bücher.example", Err(Refused::NotPrintableAscii), "U-label"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn ip_relay() {
        check("127.0.0.1", &[
            ("victim@[127.0.0.1]", local("victim@[127.0.0.1]"), "plain"),
            ("VICTIM@[127.0.0.1]", local("victim@[127.0.0.1]"), "case"),
            ("victim@[127.0.0.1].", Err(Refused::TrailingDot), "trailing dot"),
            ("victim@[IPv4:127.0.0.1]", Err(Refused::BadAddressLiteral), "no IPv4 tag"),
            ("victim@[127.000.000.001]", Err(Refused::BadAddressLiteral), "leading zeros"),
            ("victim@[127.1]", Err(Refused::BadAddressLiteral), "short form"),
            ("victim@[2130706433]", Err(Refused::BadAddressLiteral), "number"),
            ("victim@127.0.0.1", remote("victim@127.0.0.1"), "without brackets: a name, not ours"),
            ("victim@[127.0.0.1", Err(Refused::BadAddressLiteral), "unclosed"),
            ("victim@[IPv6:::ffff:127.0.0.1]", remote("victim@[IPv6:::ffff:127.0.0.1]"), "mapped IPv6 is not ours"),
            ("victim@[ipv6:2001:DB8::1]", remote("victim@[IPv6:2001:db8::1]"), "IPv6 written canonically"),
            ("victim@[IPv6:2001:db8::g]", Err(Refused::BadAddressLiteral), "bad IPv6"),
            ("victim@[127.0.0.2]", remote("victim@[127.0.0.2]"), "another relay"),
            ("victim%[127.0.0.1]@[127.0.0.1]", Err(Refused::PercentHack), "percent hack"),
        ]);
    }

    #[test]
    fn byte_classes_are_the_rfc_sets() {
        for byte in 0..=255u8 {
            let alphanumeric = byte.is_ascii_alphanumeric();
            let atext = alphanumeric || b"!#$%&'*+-/=?^_`{|}~".contains(&byte);
            let account =
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-".contains(&byte);
            let label = alphanumeric || b"_-".contains(&byte);
            assert_eq!(super::in_class(byte, super::ATEXT), atext, "{byte}");
            assert_eq!(super::in_class(byte, super::ACCOUNT), account, "{byte}");
            assert_eq!(super::in_class(byte, super::LABEL), label, "{byte}");
        }
    }

    #[test]
    fn refusals_tell_syntax_from_policy() {
        assert!(Refused::BadDomain.is_syntax_error());
        assert!(!Refused::PercentHack.is_syntax_error());
        assert!(!Refused::NotAnAccountName.is_syntax_error());
    }

    #[test]
    fn long_addresses_are_refused() {
        let ours = MailDomain::parse("example.org").expect("valid");
        let long_local = format!("{}@example.org", "a".repeat(65));
        assert_eq!(canonical_address(&long_local, &ours), Err(Refused::TooLong));
        let long = format!("a@{}.org", "b".repeat(260));
        assert_eq!(canonical_address(&long, &ours), Err(Refused::TooLong));
    }
}
