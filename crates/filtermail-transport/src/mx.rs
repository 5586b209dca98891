//! Finding the hosts of a destination: MX records by preference (RFC
//! 5321 5.1), the implicit MX when there is none, RFC 7505 null MX, and
//! IP literals as they are.

use std::net::IpAddr;

use chatmail_dns::TokioResolver;
use chatmail_smtp::Reply;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;

use crate::destination::Destination;

/// A host to try, with the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// DNS name (TLS server name) or IP literal.
    pub name: String,
    /// Filled in for IP literals; resolved later for names.
    pub addresses: Vec<IpAddr>,
}

/// The hosts of `destination` in the order to try them, or the reply for
/// all its recipients when there are none.
pub async fn hosts(
    resolver: &TokioResolver,
    destination: &Destination,
) -> Result<Vec<Host>, Reply> {
    let domain = match destination {
        Destination::Ip(ip) => {
            return Ok(vec![Host {
                name: ip.to_string(),
                addresses: vec![*ip],
            }]);
        }
        Destination::Domain(domain) => domain,
    };
    let fqdn = format!("{domain}.");
    match resolver.mx_lookup(fqdn.as_str()).await {
        Ok(lookup) => {
            let mut records: Vec<(u16, String)> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    hickory_resolver::proto::rr::RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                    )),
                    _ => None,
                })
                .collect();
            if records.len() == 1 && records.first().is_some_and(|(_, host)| host.is_empty()) {
                return Err(Reply::new(
                    556,
                    "5.1.10",
                    "Recipient domain accepts no mail (null MX)",
                ));
            }
            records.retain(|(_, host)| !host.is_empty());
            if records.is_empty() {
                return Ok(vec![implicit(domain)]);
            }
            // Stable: equal preferences keep the DNS server's order.
            records.sort_by_key(|(preference, _)| *preference);
            Ok(records
                .into_iter()
                .map(|(_, name)| Host {
                    name,
                    addresses: Vec::new(),
                })
                .collect())
        }
        Err(error) => match no_records(&error) {
            Some(ResponseCode::NXDomain) => Err(Reply::owned(
                550,
                "5.1.2",
                format!("Recipient domain {domain} does not exist"),
            )),
            // NODATA: no MX, so the domain is its own mail host.
            Some(ResponseCode::NoError) => Ok(vec![implicit(domain)]),
            _ => {
                tracing::info!(%error, "MX lookup failed");
                Err(Reply::new(
                    451,
                    "4.4.3",
                    "Cannot look up the recipient domain now; try again later",
                ))
            }
        },
    }
}

fn implicit(domain: &str) -> Host {
    Host {
        name: domain.to_owned(),
        addresses: Vec::new(),
    }
}

/// The response code of an authoritative "no records" answer.
fn no_records(error: &NetError) -> Option<ResponseCode> {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => Some(no_records.response_code),
        _ => None,
    }
}

/// The addresses of `host`, IPv6 and IPv4 (in the resolver's order).
pub async fn addresses(resolver: &TokioResolver, host: &Host) -> Result<Vec<IpAddr>, String> {
    if !host.addresses.is_empty() {
        return Ok(host.addresses.clone());
    }
    let lookup = resolver
        .lookup_ip(format!("{}.", host.name).as_str())
        .await
        .map_err(|error| error.to_string())?;
    let addresses: Vec<IpAddr> = lookup.iter().collect();
    if addresses.is_empty() {
        return Err("no addresses".into());
    }
    Ok(addresses)
}
