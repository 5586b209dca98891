//! A small authoritative DNS server on loopback for tests: it answers UDP
//! and TCP queries from records the test adds (TXT for DKIM keys, MX and
//! A for relays), and can be switched to stay silent or fail, to show how
//! the daemons handle a DNS outage.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
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
}

/// A running server; it stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const TTL: u32 = 300;

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

    pub fn set_mode(&self, mode: DnsMode) {
        self.zone().mode = Some(mode);
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
    let zone = zone.lock().unwrap_or_else(PoisonError::into_inner);
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
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
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
    let key = (name.clone(), question.query_type());
    match zone.records.get(&key) {
        Some(answers) => {
            for rdata in answers {
                response.add_answer(Record::from_rdata(
                    question.name().clone(),
                    TTL,
                    rdata.clone(),
                ));
            }
        }
        None if zone.records.keys().any(|(owner, _)| *owner == name) => {}
        None => response.metadata.response_code = ResponseCode::NXDomain,
    }
    response.to_vec().ok()
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
