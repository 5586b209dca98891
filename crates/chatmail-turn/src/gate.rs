//! In front of the TURN server, on the socket clients talk to: refuses,
//! with the answer RFC 8656 gives and the client's own message
//! integrity, what the server itself cannot be told to refuse:
//!
//! - CreatePermission and ChannelBind for a peer the filter refuses
//!   (`403 Forbidden`), so a client learns at once that it cannot reach
//!   it (and the relayed socket drops such packets anyway);
//! - an Allocate beyond `turn_max_allocations_per_user` for its username
//!   (`486 Allocation Quota Reached`). Allocations are counted from the
//!   server's own success answers, and let go when the server reports an
//!   allocation closed.
//!
//! - a request whose credentials are not this relay's or have expired
//!   (`401 Unauthorized`, as RFC 8489 9.2.4 says; the server underneath
//!   answers 400), so that a client fetches new ones.
//!
//! Everything else, and requests without credentials (the server asks
//! for them), passes untouched.

use std::any::Any;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use stun::attributes::{
    ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
};
use stun::error_code::{
    CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, CODE_UNAUTHORIZED, ErrorCode, ErrorCodeAttribute,
};
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, MAGIC_COOKIE, METHOD_ALLOCATE,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, Message, MessageType, Setter,
};
use tokio::net::UdpSocket;
use webrtc_util::Conn;

use crate::auth::Auth;
use crate::metrics::{Refused, TurnMetrics};
use crate::peers::PeerFilter;

/// Allocate requests awaiting the server's answer at most: the server
/// answers each at once, so only a server fault leaves one waiting, and
/// such leftovers must not pile up.
const MAX_ASKING: usize = 65_536;

/// Allocations per username, shared by every listener.
#[derive(Default)]
pub struct Quota {
    /// Who holds the allocation of each client 5-tuple (listener, client).
    holders: HashMap<(SocketAddr, SocketAddr), String>,
    /// Allocations held by each username.
    held: HashMap<String, u32>,
    /// Allocate requests answered but not yet seen answered: their
    /// username by 5-tuple.
    asking: HashMap<(SocketAddr, SocketAddr), String>,
}

impl Quota {
    fn count(&self, username: &str) -> u32 {
        self.held.get(username).copied().unwrap_or(0)
    }

    fn granted(&mut self, five_tuple: (SocketAddr, SocketAddr)) {
        let Some(username) = self.asking.remove(&five_tuple) else {
            return;
        };
        if self.holders.contains_key(&five_tuple) {
            return;
        }
        *self.held.entry(username.clone()).or_default() += 1;
        self.holders.insert(five_tuple, username);
    }

    /// The server closed the allocation of `five_tuple`.
    pub fn released(&mut self, five_tuple: (SocketAddr, SocketAddr)) {
        let Some(username) = self.holders.remove(&five_tuple) else {
            return;
        };
        if let Some(count) = self.held.get_mut(&username) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.held.remove(&username);
            }
        }
    }
}

/// What every listener's gate holds to: the same credentials, filter
/// and quota.
#[derive(Clone)]
pub struct Policy {
    pub auth: Arc<Auth>,
    pub realm: String,
    pub filter: Arc<PeerFilter>,
    pub max_per_user: u32,
    pub quota: Arc<Mutex<Quota>>,
    pub metrics: TurnMetrics,
}

pub struct Gate {
    socket: UdpSocket,
    local: SocketAddr,
    policy: Policy,
}

/// What to do with one datagram from a client.
enum Verdict {
    Pass,
    /// Answer it with these bytes instead.
    Refuse(Vec<u8>),
}

impl Gate {
    pub fn new(socket: UdpSocket, policy: Policy) -> std::io::Result<Self> {
        let local = socket.local_addr()?;
        Ok(Self {
            socket,
            local,
            policy,
        })
    }

    fn quota(&self) -> std::sync::MutexGuard<'_, Quota> {
        self.policy
            .quota
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn inspect(&self, datagram: &[u8], client: SocketAddr) -> Verdict {
        // ChannelData, Send indications and anything else that is no
        // request looked at here passes without being decoded.
        if !matches!(
            message_type(datagram),
            Some(ALLOCATE_REQUEST | REFRESH_REQUEST | PERMISSION_REQUEST | CHANNEL_BIND_REQUEST)
        ) || !stun::message::is_message(datagram)
        {
            return Verdict::Pass;
        }
        let mut message = Message::new();
        message.raw = datagram.to_vec();
        if message.decode().is_err() || message.typ.class != CLASS_REQUEST {
            return Verdict::Pass;
        }
        let method = message.typ.method;
        // The server asks a request without credentials for them.
        if !message.contains(ATTR_MESSAGE_INTEGRITY) {
            return Verdict::Pass;
        }
        let Some((username, key)) = self.authenticate(&mut message, client) else {
            tracing::debug!(%client, "TURN request with credentials that are not ours");
            self.policy.metrics.refused(Refused::Credentials);
            return unauthorized(&message, &self.policy.realm);
        };
        if method == METHOD_ALLOCATE {
            return self.allocate(&message, client, username, key);
        }
        if method != METHOD_CREATE_PERMISSION && method != METHOD_CHANNEL_BIND {
            return Verdict::Pass;
        }
        for peer in peer_addresses(&message) {
            if let Err(refusal) = self.policy.filter.check(peer) {
                tracing::debug!(%peer, reason = refusal.label(), "refused a TURN permission");
                self.policy.metrics.refused(Refused::Peer(refusal));
                return refusal_answer(&message, CODE_FORBIDDEN, b"Forbidden", key);
            }
        }
        Verdict::Pass
    }

    fn allocate(
        &self,
        message: &Message,
        client: SocketAddr,
        username: String,
        key: Vec<u8>,
    ) -> Verdict {
        let five_tuple = (self.local, client);
        let mut quota = self.quota();
        // A retransmission or a second Allocate on a 5-tuple that holds one
        // is the server's to answer.
        if quota.holders.contains_key(&five_tuple) {
            return Verdict::Pass;
        }
        if self.policy.max_per_user > 0 && quota.count(&username) >= self.policy.max_per_user {
            drop(quota);
            self.policy.metrics.refused(Refused::UserQuota);
            return refusal_answer(
                message,
                CODE_ALLOC_QUOTA_REACHED,
                b"Allocation Quota Reached",
                key,
            );
        }
        if quota.asking.len() >= MAX_ASKING {
            quota.asking.clear();
        }
        quota.asking.insert(five_tuple, username);
        Verdict::Pass
    }

    /// The request's username and key, when its message integrity holds.
    fn authenticate(&self, message: &mut Message, client: SocketAddr) -> Option<(String, Vec<u8>)> {
        let (username, found) = message.attributes.get(ATTR_USERNAME);
        if !found {
            return None;
        }
        let (realm, found) = message.attributes.get(ATTR_REALM);
        if !found || realm.value != self.policy.realm.as_bytes() {
            return None;
        }
        let username = String::from_utf8(username.value).ok()?;
        let key = self
            .policy
            .auth
            .key(&username, &self.policy.realm, client)?;
        MessageIntegrity(key.clone()).check(message).ok()?;
        Some((username, key))
    }

    /// Notes the server's answers to Allocate requests.
    fn outgoing(&self, datagram: &[u8], client: SocketAddr) {
        // Data indications carry the relayed packets: only answers to
        // Allocate are decoded.
        if !matches!(
            message_type(datagram),
            Some(ALLOCATE_SUCCESS | ALLOCATE_ERROR)
        ) || !stun::message::is_message(datagram)
        {
            return;
        }
        let mut message = Message::new();
        message.raw = datagram.to_vec();
        if message.decode().is_err() || message.typ.method != METHOD_ALLOCATE {
            return;
        }
        let five_tuple = (self.local, client);
        let mut quota = self.quota();
        if message.typ.class == CLASS_SUCCESS_RESPONSE {
            quota.granted(five_tuple);
        } else if message.typ.class == CLASS_ERROR_RESPONSE {
            quota.asking.remove(&five_tuple);
        }
    }
}

/// STUN message types (RFC 8489 5: method and class bits together) of
/// what the gate looks at.
const ALLOCATE_REQUEST: u16 = 0x0003;
const REFRESH_REQUEST: u16 = 0x0004;
const PERMISSION_REQUEST: u16 = 0x0008;
const CHANNEL_BIND_REQUEST: u16 = 0x0009;
const ALLOCATE_SUCCESS: u16 = 0x0103;
const ALLOCATE_ERROR: u16 = 0x0113;

/// The message type of a datagram's STUN header.
fn message_type(datagram: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*datagram.first()?, *datagram.get(1)?]))
}

/// `401 Unauthorized` for credentials that are not ours: with the realm
/// and the request's own nonce, and no message integrity (there is no key
/// the client shares).
fn unauthorized(request: &Message, realm: &str) -> Verdict {
    let mut answer = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(request.transaction_id),
        Box::new(MessageType::new(request.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code: CODE_UNAUTHORIZED,
            reason: b"Unauthorized".to_vec(),
        }),
        Box::new(Copied(ATTR_REALM, realm.as_bytes().to_vec())),
    ];
    let (nonce, found) = request.attributes.get(ATTR_NONCE);
    if found {
        setters.push(Box::new(Copied(ATTR_NONCE, nonce.value)));
    }
    match answer.build(&setters) {
        Ok(()) => Verdict::Refuse(answer.raw),
        Err(_) => Verdict::Refuse(Vec::new()),
    }
}

/// An attribute written as it is.
struct Copied(stun::attributes::AttrType, Vec<u8>);

impl Setter for Copied {
    fn add_to(&self, message: &mut Message) -> Result<(), stun::Error> {
        message.add(self.0, &self.1);
        Ok(())
    }
}

/// An error answer to `request` carrying `code`, signed with `key`.
fn refusal_answer(request: &Message, code: ErrorCode, reason: &[u8], key: Vec<u8>) -> Verdict {
    let mut answer = Message::new();
    let setters: [Box<dyn Setter>; 4] = [
        Box::new(request.transaction_id),
        Box::new(MessageType::new(request.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.to_vec(),
        }),
        Box::new(MessageIntegrity(key)),
    ];
    match answer.build(&setters) {
        Ok(()) => Verdict::Refuse(answer.raw),
        // Nothing to answer with: the request is dropped, never passed.
        Err(_) => Verdict::Refuse(Vec::new()),
    }
}

/// Every XOR-PEER-ADDRESS of a request (a CreatePermission may carry
/// several), decoded as RFC 8489 14.2 says.
fn peer_addresses(message: &Message) -> Vec<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    message
        .attributes
        .0
        .iter()
        .filter(|attribute| attribute.typ == ATTR_XOR_PEER_ADDRESS)
        .filter_map(|attribute| {
            let value = &attribute.value;
            let family = *value.get(1)?;
            let port =
                u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
            let ip = match family {
                0x01 => {
                    let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
                    let octets: Vec<u8> = raw.iter().zip(cookie).map(|(a, b)| a ^ b).collect();
                    IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(octets).ok()?))
                }
                0x02 => {
                    let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
                    let mask = cookie.iter().chain(message.transaction_id.0.iter());
                    let octets: Vec<u8> = raw.iter().zip(mask).map(|(a, b)| a ^ b).collect();
                    IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(octets).ok()?))
                }
                _ => return None,
            };
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

#[async_trait]
impl Conn for Gate {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(std::io::Error::other("the TURN socket is never connected").into())
    }

    async fn recv(&self, _buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(std::io::Error::other("the TURN socket is read with recv_from").into())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (len, client) = self.socket.recv_from(buf).await?;
            match self.inspect(buf.get(..len).unwrap_or_default(), client) {
                Verdict::Pass => return Ok((len, client)),
                Verdict::Refuse(answer) => {
                    if !answer.is_empty() {
                        let _ = self.socket.send_to(&answer, client).await;
                    }
                }
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(std::io::Error::other("the TURN socket is written with send_to").into())
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.outgoing(buf, target);
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
}
