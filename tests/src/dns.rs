//! A small authoritative DNS server on loopback for tests: it answers UDP
//! and TCP queries from records the test adds (TXT for DKIM keys, MX and
//! A for relays), can sign one zone with DNSSEC, and can be switched to
//! stay silent or fail, to show how the daemons handle a DNS outage.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_proto::dnssec::crypto::Ed25519SigningKey;
use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, RRSIG};
use hickory_proto::dnssec::{DnssecSigner, SigningKey as _};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordSet, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// How the server reacts to queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMode {
    /// Answers from its records: NXDOMAIN for unknown names.
    Answer,
    /// Reads queries and never answers.
    Silent,
    /// Answers every query with SERVFAIL.
    ServFail,
}

#[derive(Default)]
struct Zone {
    records: HashMap<(LowerName, RecordType), Vec<RData>>,
    mode: Option<DnsMode>,
    /// Queries read so far, answered or not.
    queries: usize,
    /// The SOA minimum of negative answers, when not the default.
    negative_ttl: Option<u32>,
    signed: Option<SignedZone>,
}

/// A DNSSEC-signed zone: answers under it carry RRSIGs made on the fly.
struct SignedZone {
    apex: Name,
    dnskey: DNSKEY,
    signer: DnssecSigner,
    /// Serve signatures that do not verify (a forged answer).
    broken: bool,
}

impl SignedZone {
    fn new(apex: Name) -> Self {
        let pkcs8 = Ed25519SigningKey::generate_pkcs8().expect("key generation");
        let key = Ed25519SigningKey::from_pkcs8(&pkcs8).expect("generated key");
        let public = key.to_public_key().expect("public key");
        let dnskey = DNSKEY::new(true, true, false, public);
        let signer = DnssecSigner::new(
            dnskey.clone(),
            Box::new(key),
            apex.clone(),
            std::time::Duration::from_secs(86_400),
        );
        Self {
            apex,
            dnskey,
            signer,
            broken: false,
        }
    }

    /// The RRSIG over `answers` (one RRset).
    fn sign(&self, name: &Name, answers: &[RData]) -> Option<Record> {
        let first = answers.first()?;
        let mut rrset = RecordSet::with_ttl(name.clone(), first.record_type(), TTL);
        for rdata in answers {
            rrset.add_rdata(rdata.clone());
        }
        let inception = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        let rrsig = RRSIG::from_rrset(&rrset, DNSClass::IN, inception, &self.signer).ok()?;
        let rrsig = if self.broken {
            let mut signature = rrsig.sig().to_vec();
            if let Some(byte) = signature.first_mut() {
                *byte ^= 0xff;
            }
            RRSIG::from_sig(rrsig.input().clone(), signature)
        } else {
            rrsig
        };
        Some(Record::from_rdata(
            name.clone(),
            TTL,
            RData::DNSSEC(DNSSECRData::RRSIG(rrsig)),
        ))
    }
}

/// A running server; it stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const TTL: u32 = 300;
/// How long resolvers may keep an answer that a name or record does not
/// exist (the SOA's minimum), unless a test sets it.
const NEGATIVE_TTL: u32 = 60;

impl DnsServer {
    /// Starts a server on `ip` at a free port (UDP and TCP share it).
    pub async fn start(ip: IpAddr) -> std::io::Result<Self> {
        // Retry until a port is free for both protocols.
        loop {
            let udp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
            if let Ok(tcp) = TcpListener::bind(udp.local_addr()?).await {
                return Self::serve(udp, tcp);
            }
        }
    }

    /// Starts a server at a given address.
    pub async fn start_at(addr: SocketAddr) -> std::io::Result<Self> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(addr).await?;
        Self::serve(udp, tcp)
    }

    fn serve(udp: UdpSocket, tcp: TcpListener) -> std::io::Result<Self> {
        let zone = Arc::new(Mutex::new(Zone::default()));
        let addr = udp.local_addr()?;
        let udp_task = tokio::spawn(serve_udp(udp, Arc::clone(&zone)));
        let tcp_task = tokio::spawn(serve_tcp(tcp, Arc::clone(&zone)));
        Ok(Self {
            addr,
            zone,
            tasks: vec![udp_task, tcp_task],
        })
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries the server has read, answered or not.
    pub fn queries(&self) -> usize {
        self.zone().queries
    }

    pub fn set_mode(&self, mode: DnsMode) {
        self.zone().mode = Some(mode);
    }

    /// How long negative answers may be kept, by their SOA (60 s unless
    /// set).
    pub fn set_negative_ttl(&self, seconds: u32) {
        self.zone().negative_ttl = Some(seconds);
    }

    fn zone(&self) -> std::sync::MutexGuard<'_, Zone> {
        self.zone.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, name: &str, rdata: RData) {
        let name = LowerName::from(Name::from_ascii(name).expect("valid test name"));
        self.zone()
            .records
            .entry((name, rdata.record_type()))
            .or_default()
            .push(rdata);
    }

    /// Adds every record of a zone file's records (as
    /// `chatmail_configure::dns::parse_zone` returns them).
    pub fn add_zone(
        &self,
        records: &std::collections::BTreeMap<hickory_proto::rr::RrKey, RecordSet>,
    ) {
        for set in records.values() {
            for record in set.records_without_rrsigs() {
                self.add(&set.name().to_ascii(), record.data.clone());
            }
        }
    }

    /// Adds one TXT record made of `strings`. A string longer than a DNS
    /// character-string (255 bytes) is split, as zone files do for long
    /// DKIM keys.
    pub fn add_txt(&self, name: &str, strings: &[&str]) {
        let strings = strings
            .iter()
            .flat_map(|s| s.as_bytes().chunks(255))
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect();
        self.add(name, RData::TXT(TXT::new(strings)));
    }

    pub fn add_mx(&self, name: &str, preference: u16, exchange: &str) {
        let exchange = Name::from_ascii(exchange).expect("valid test name");
        self.add(name, RData::MX(MX::new(preference, exchange)));
    }

    pub fn add_ip(&self, name: &str, ip: IpAddr) {
        let rdata = match ip {
            IpAddr::V4(ip) => RData::A(A(ip)),
            IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
        };
        self.add(name, rdata);
    }

    /// Signs the zone at `apex` with a new key: answers under it carry
    /// RRSIGs when the query asks for them (DO bit). Returns the trust
    /// anchor for a resolver, a DNSKEY line in zone-file form.
    pub fn sign_zone(&self, apex: &str) -> String {
        let apex = Name::from_ascii(apex).expect("valid test name");
        let zone = SignedZone::new(apex.clone());
        let anchor = format!("{apex} 3600 IN DNSKEY {}\n", zone.dnskey);
        self.zone().signed = Some(zone);
        anchor
    }

    /// From now on, signatures of the signed zone do not verify.
    pub fn break_signatures(&self) {
        if let Some(zone) = self.zone().signed.as_mut() {
            zone.broken = true;
        }
    }

    /// Removes every record of `name`.
    pub fn remove(&self, name: &str) {
        let name = LowerName::from(Name::from_ascii(name).expect("valid test name"));
        self.zone().records.retain(|(owner, _), _| *owner != name);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The answer to `query`, or `None` when the server is to stay silent.
fn respond(zone: &Mutex<Zone>, query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut zone = zone.lock().unwrap_or_else(PoisonError::into_inner);
    zone.queries += 1;
    let mode = zone.mode.unwrap_or(DnsMode::Answer);
    if mode == DnsMode::Silent {
        return None;
    }
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.message_type = MessageType::Response;
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(request.queries.iter().cloned());
    let dnssec_ok = request
        .edns
        .as_ref()
        .is_some_and(|edns| edns.flags().dnssec_ok);
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.enable_dnssec();
        response.set_edns(edns);
    }
    let Some(question) = request.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response.to_vec().ok();
    };
    if mode == DnsMode::ServFail {
        response.metadata.response_code = ResponseCode::ServFail;
        return response.to_vec().ok();
    }
    let name = LowerName::from(question.name());
    let signed = zone
        .signed
        .as_ref()
        .filter(|signed| dnssec_ok && signed.apex.zone_of(question.name()));
    let apex_keys;
    let key = (name.clone(), question.query_type());
    let found = match signed {
        Some(signed)
            if question.query_type() == RecordType::DNSKEY && signed.apex == *question.name() =>
        {
            apex_keys = vec![RData::DNSSEC(DNSSECRData::DNSKEY(signed.dnskey.clone()))];
            Some(&apex_keys)
        }
        _ => zone.records.get(&key),
    };
    match found {
        Some(answers) => {
            for rdata in answers {
                response.add_answer(Record::from_rdata(
                    question.name().clone(),
                    TTL,
                    rdata.clone(),
                ));
            }
            if let Some(rrsig) = signed.and_then(|signed| signed.sign(question.name(), answers)) {
                response.add_answer(rrsig);
            }
        }
        None => {
            if !zone.records.keys().any(|(owner, _)| *owner == name) {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            // As authoritative servers must (RFC 2308 section 3), so that
            // resolvers may keep the negative answer.
            if signed.is_none() && question.query_type() != RecordType::SOA {
                let ttl = zone.negative_ttl.unwrap_or(NEGATIVE_TTL);
                response.add_authority(soa_of(question.name(), ttl));
            }
        }
    }
    response.to_vec().ok()
}

/// The SOA of the zone `name` is taken to lie in (its last two labels),
/// with `ttl` as its minimum.
fn soa_of(name: &Name, ttl: u32) -> Record {
    let apex = name.trim_to(2);
    let soa = SOA::new(
        Name::from_ascii("ns.test.").expect("valid test name"),
        Name::from_ascii("hostmaster.test.").expect("valid test name"),
        1,
        3600,
        600,
        86_400,
        ttl,
    );
    Record::from_rdata(apex, ttl, RData::SOA(soa))
}

async fn serve_udp(socket: UdpSocket, zone: Arc<Mutex<Zone>>) {
    let mut buffer = vec![0; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        if let Some(answer) = buffer.get(..len).and_then(|query| respond(&zone, query)) {
            let _ = socket.send_to(&answer, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Mutex<Zone>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let zone = Arc::clone(&zone);
        tokio::spawn(async move {
            loop {
                let Ok(len) = stream.read_u16().await else {
                    return;
                };
                let mut query = vec![0; usize::from(len)];
                if stream.read_exact(&mut query).await.is_err() {
                    return;
                }
                let Some(answer) = respond(&zone, &query) else {
                    continue;
                };
                let Ok(answer_len) = u16::try_from(answer.len()) else {
                    return;
                };
                if stream.write_u16(answer_len).await.is_err()
                    || stream.write_all(&answer).await.is_err()
                {
                    return;
                }
            }
        });
    }
}
