//! Command parsing: smtp-proto, plus RFC 5321 address literals
//! (`user@[192.0.2.1]`, `user@[IPv6:2001:db8::1]`), which smtp-proto
//! refuses but IP-only relays use for every address.

use std::net::{Ipv4Addr, Ipv6Addr};

use smtp_proto::{Error, Request};

/// Stands in for an address literal while smtp-proto parses the rest of
/// the line; `.invalid` (RFC 2606) can never be a real domain.
const STAND_IN: &[u8] = b"literal@address-literal.invalid";

pub fn parse_command(line: &[u8]) -> Result<Request<String>, Error> {
    match Request::parse(&mut line.iter()) {
        Err(error @ (Error::InvalidSenderAddress | Error::InvalidRecipientAddress)) => {
            parse_with_address_literal(line).ok_or(error)
        }
        other => other.map(Request::into_owned),
    }
}

fn parse_with_address_literal(line: &[u8]) -> Option<Request<String>> {
    let open = line.iter().position(|&b| b == b'<')?;
    let close = open + line.get(open..)?.iter().position(|&b| b == b'>')?;
    let address = std::str::from_utf8(line.get(open + 1..close)?).ok()?;
    if !is_address_literal_mailbox(address) {
        return None;
    }
    let mut substituted = line.get(..=open)?.to_vec();
    substituted.extend_from_slice(STAND_IN);
    substituted.extend_from_slice(line.get(close..)?);
    let request = Request::parse(&mut substituted.iter()).ok()?.into_owned();
    Some(match request {
        Request::Mail { mut from } => {
            from.address = address.to_owned();
            Request::Mail { from }
        }
        Request::Rcpt { mut to } => {
            to.address = address.to_owned();
            Request::Rcpt { to }
        }
        _ => return None,
    })
}

/// `local@[IPv4]` or `local@[IPv6:addr]` with a plain local part.
fn is_address_literal_mailbox(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_ascii_graphic() && !"<>()[]\\,;:@\"".contains(c));
    let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return false;
    };
    let literal_ok = match literal.strip_prefix("IPv6:") {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => literal.parse::<Ipv4Addr>().is_ok(),
    };
    local_ok && literal_ok
}

#[cfg(test)]
mod tests {
    use super::parse_command;
    use smtp_proto::{Error, Request};

    fn address(line: &[u8]) -> Result<String, Error> {
        match parse_command(line)? {
            Request::Mail { from } => Ok(from.address),
            Request::Rcpt { to } => Ok(to.address),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn address_literals() {
        assert_eq!(
            address(b"MAIL FROM:<a@[127.0.0.1]>\r\n").as_deref(),
            Ok("a@[127.0.0.1]")
        );
        assert_eq!(
            address(b"MAIL FROM:<a@[IPv6:2001:db8::1]> BODY=8BITMIME SIZE=10\r\n").as_deref(),
            Ok("a@[IPv6:2001:db8::1]")
        );
        assert_eq!(
            address(b"RCPT TO:<b.c@[10.0.0.1]> NOTIFY=NEVER\r\n").as_deref(),
            Ok("b.c@[10.0.0.1]")
        );
        assert_eq!(
            address(b"MAIL FROM:<a@example.org>\r\n").as_deref(),
            Ok("a@example.org")
        );
        match parse_command(b"MAIL FROM:<a@[IPv6:2001:db8::1]> BODY=8BITMIME SIZE=10\r\n") {
            Ok(Request::Mail { from }) => assert_eq!(from.size, 10),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_literals_stay_errors() {
        for line in [
            &b"MAIL FROM:<a@[999.0.0.1]>\r\n"[..],
            b"MAIL FROM:<a@[example.org]>\r\n",
            b"RCPT TO:<@[127.0.0.1]>\r\n",
            b"RCPT TO:<a b@[127.0.0.1]>\r\n",
            b"MAIL FROM:<a@[127.0.0.1]> XYZZY\r\n",
        ] {
            assert!(
                parse_command(line).is_err(),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
