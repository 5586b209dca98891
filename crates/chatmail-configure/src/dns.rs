//! The DNS records a domain relay needs, in zone-file form
//! (`chatmail-configure dns`), and the check of what DNS answers against
//! them (`chatmail-configure dns --check`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use chatmail_config::Config;
use hickory_proto::rr::{RData, RecordSet, RecordType, RrKey};
use hickory_proto::serialize::txt::Parser;
use sha2::{Digest as _, Sha256};

const TTL: u32 = 3600;

/// How long senders may cache the MTA-STS policy: four weeks.
const MTA_STS_MAX_AGE: u32 = 2_419_200;

/// The MTA-STS policy a domain relay serves at
/// `https://mta-sts.<domain>/.well-known/mta-sts.txt`: mail for it goes to
/// its own host only, over verified TLS.
#[must_use]
pub fn mta_sts_policy(domain: &str) -> String {
    format!("version: STSv1\nmode: enforce\nmx: {domain}\nmax_age: {MTA_STS_MAX_AGE}\n")
}

/// What goes into the zone besides chatmail.ini.
pub struct ZoneInput<'a> {
    /// The DKIM TXT value (`v=DKIM1; k=rsa; p=...`), if the relay signs.
    pub dkim_record: Option<&'a str>,
    /// The relay's public addresses, for A and AAAA.
    pub addresses: &'a [IpAddr],
}

/// A TXT value as zone-file strings: quoted, 255 bytes at most each.
fn txt(value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect();
    strings.join(" ")
}

/// Every record of the relay at `config`'s domain, with a comment for
/// each group, in zone-file form.
#[must_use]
pub fn zone(config: &Config, input: &ZoneInput<'_>) -> String {
    let domain = config.mail_domain.address_domain();
    let fqdn = format!("{domain}.");
    let mut zone = format!(
        "; DNS records of the chatmail relay {domain} (chatmail-configure dns).\n\
         ; Add them to the zone of {domain}; `chatmail-configure dns --check`\n\
         ; compares them with what DNS answers.\n"
    );
    if input.addresses.is_empty() {
        zone.push_str("\n; The relay's addresses (A, AAAA): pass --ipv4 / --ipv6.\n");
    }
    let mut record = |comment: &str, name: &str, rtype: &str, data: &str| {
        if !comment.is_empty() {
            let _ = writeln!(zone, "\n; {comment}");
        }
        let _ = writeln!(zone, "{name:<32} {TTL} IN {rtype:<5} {data}");
    };
    for (n, address) in input.addresses.iter().enumerate() {
        let comment = if n == 0 { "The relay's addresses." } else { "" };
        let rtype = if address.is_ipv4() { "A" } else { "AAAA" };
        record(comment, &fqdn, rtype, &address.to_string());
    }
    record(
        "Mail for the domain goes to the relay itself.",
        &fqdn,
        "MX",
        &format!("10 {fqdn}"),
    );
    record(
        "Only the relay sends the domain's mail (SPF), and receivers refuse \
         what fails DKIM or SPF alignment (DMARC).",
        &fqdn,
        "TXT",
        &txt("v=spf1 a -all"),
    );
    record(
        "",
        &format!("_dmarc.{fqdn}"),
        "TXT",
        &txt("v=DMARC1; p=reject; adkim=s; aspf=s"),
    );
    if let Some(dkim) = input.dkim_record {
        record(
            "The key other relays verify the relay's DKIM signatures with.",
            &format!("{}._domainkey.{fqdn}", config.dkim_selector),
            "TXT",
            &txt(dkim),
        );
    }
    let policy_id = hex_prefix(&Sha256::digest(mta_sts_policy(&domain).as_bytes()));
    record(
        "MTA-STS: senders use verified TLS to the relay (the policy is served \
         by the relay's nginx site at mta-sts.<domain>).",
        &format!("mta-sts.{fqdn}"),
        "CNAME",
        &fqdn,
    );
    record(
        "",
        &format!("_mta-sts.{fqdn}"),
        "TXT",
        &txt(&format!("v=STSv1; id={policy_id}")),
    );
    record(
        "Mail clients' automatic configuration (autoconfig), served by the \
         relay's nginx site at autoconfig.<domain>.",
        &format!("autoconfig.{fqdn}"),
        "CNAME",
        &fqdn,
    );
    let reports = config
        .privacy_mail
        .clone()
        .unwrap_or_else(|| format!("postmaster@{domain}"));
    record(
        "Where senders report TLS failures (TLS-RPT).",
        &format!("_smtp._tls.{fqdn}"),
        "TXT",
        &txt(&format!("v=TLSRPTv1; rua=mailto:{reports}")),
    );
    record(
        "Where clients find submission and IMAP (RFC 6186).",
        &format!("_submission._tcp.{fqdn}"),
        "SRV",
        &format!("0 1 587 {fqdn}"),
    );
    for (service, port) in [("submissions", 465), ("imap", 143), ("imaps", 993)] {
        record(
            "",
            &format!("_{service}._tcp.{fqdn}"),
            "SRV",
            &format!("0 1 {port} {fqdn}"),
        );
    }
    record(
        "Only Let's Encrypt may issue certificates for the domain.",
        &fqdn,
        "CAA",
        "0 issue \"letsencrypt.org\"",
    );
    zone
}

fn hex_prefix(digest: &[u8]) -> String {
    digest.iter().take(8).fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// The records of a zone text for `domain`, by name and type.
pub fn parse_zone(text: &str, domain: &str) -> Result<BTreeMap<RrKey, RecordSet>, String> {
    let origin = hickory_proto::rr::Name::from_ascii(domain)
        .map_err(|error| format!("{domain} is no domain name: {error}"))?;
    Parser::new(text, None, Some(origin))
        .parse()
        .map(|(_, records)| records)
        .map_err(|error| format!("the zone does not parse: {error}"))
}

/// A record's data as compared: TXT strings joined (DNS may split a long
/// value differently), everything else as hickory writes it, lower case.
#[must_use]
pub fn comparable(data: &RData) -> String {
    match data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// What DNS answered for one name and type, against what it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub name: String,
    pub record_type: RecordType,
    /// Expected values DNS does not have.
    pub missing: Vec<String>,
    /// What DNS has instead (empty: nothing at all).
    pub found: Vec<String>,
}

/// Compares the expected records with what `resolver` answers.
pub async fn check(
    expected: &BTreeMap<RrKey, RecordSet>,
    resolver: &chatmail_dns::TokioResolver,
) -> Result<Vec<Mismatch>, String> {
    let mut mismatches = Vec::new();
    for (key, set) in expected {
        let found: Vec<String> = lookup(resolver, set.name().clone(), key.record_type)
            .await?
            .iter()
            .map(comparable)
            .collect();
        let missing: Vec<String> = set
            .records_without_rrsigs()
            .map(|record| comparable(&record.data))
            .filter(|value| !found.contains(value))
            .collect();
        if !missing.is_empty() {
            mismatches.push(Mismatch {
                name: set.name().to_ascii(),
                record_type: key.record_type,
                missing,
                found,
            });
        }
    }
    Ok(mismatches)
}

/// DNS's answers for `name` and `record_type` through `resolver`: none
/// when the name or the type does not exist.
async fn lookup(
    resolver: &chatmail_dns::TokioResolver,
    name: hickory_proto::rr::Name,
    record_type: RecordType,
) -> Result<Vec<RData>, String> {
    match resolver.lookup(name.clone(), record_type).await {
        Ok(found) => Ok(found
            .answers()
            .iter()
            .filter(|record| record.record_type() == record_type)
            .map(|record| record.data.clone())
            .collect()),
        Err(error) if error.is_no_records_found() || error.is_nx_domain() => Ok(Vec::new()),
        Err(error) => Err(format!("{name} {record_type}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config() -> Config {
        Config::from_ini_str(
            "[params]\nmail_domain = chat.example.org\nprivacy_mail = privacy@example.org\n",
            Path::new("chatmail.ini"),
        )
        .expect("valid test ini")
    }

    #[test]
    fn the_printed_zone_parses_with_every_record() {
        let long_key = format!("v=DKIM1; k=rsa; p={}", "A".repeat(392));
        let addresses = [
            "192.0.2.1".parse().expect("ip"),
            "2001:db8::1".parse().expect("ip"),
        ];
        let zone = zone(
            &config(),
            &ZoneInput {
                dkim_record: Some(&long_key),
                addresses: &addresses,
            },
        );
        let records = parse_zone(&zone, "chat.example.org").expect("parses");
        let types: Vec<(String, RecordType)> = records
            .values()
            .map(|set| (set.name().to_ascii(), set.record_type()))
            .collect();
        for (name, rtype) in [
            ("chat.example.org.", RecordType::A),
            ("chat.example.org.", RecordType::AAAA),
            ("chat.example.org.", RecordType::MX),
            ("chat.example.org.", RecordType::TXT),
            ("chat.example.org.", RecordType::CAA),
            ("_dmarc.chat.example.org.", RecordType::TXT),
            ("opendkim._domainkey.chat.example.org.", RecordType::TXT),
            ("mta-sts.chat.example.org.", RecordType::CNAME),
            ("autoconfig.chat.example.org.", RecordType::CNAME),
            ("_mta-sts.chat.example.org.", RecordType::TXT),
            ("_smtp._tls.chat.example.org.", RecordType::TXT),
            ("_submission._tcp.chat.example.org.", RecordType::SRV),
            ("_submissions._tcp.chat.example.org.", RecordType::SRV),
            ("_imap._tcp.chat.example.org.", RecordType::SRV),
            ("_imaps._tcp.chat.example.org.", RecordType::SRV),
        ] {
            assert!(
                types.contains(&(name.to_owned(), rtype)),
                "{name} {rtype} in\n{zone}"
            );
        }
        // The key survives the split into 255-byte strings.
        let dkim = records
            .values()
            .find(|set| set.name().to_ascii().starts_with("opendkim."))
            .and_then(|set| set.records_without_rrsigs().next())
            .map(|record| comparable(&record.data));
        assert_eq!(dkim.as_deref(), Some(long_key.as_str()));
        assert!(zone.contains("rua=mailto:privacy@example.org"), "{zone}");
    }
}
