//! The relayed side of each allocation: a UDP socket per allocation
//! whose every packet, either way, passes the peer filter, the
//! allocation's bandwidth bound and its lifetime bound. The TURN server
//! also refuses permissions for filtered peers (see [`crate::gate`]); this
//! is the second lock, on the socket itself.

use std::any::Any;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::net::UdpSocket;
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

use crate::metrics::{Refused, TurnMetrics};
use crate::peers::PeerFilter;

/// The bounds every allocation is held to.
#[derive(Debug, Clone, Copy)]
pub struct AllocationLimits {
    /// Allocations at once on the whole server (0: no limit).
    pub max_allocations: u32,
    pub max_lifetime: Duration,
    /// Bytes per second each way.
    pub max_bandwidth: u64,
}

/// Makes the relayed socket of each new allocation, on the address the
/// client reached the server on.
pub struct RelayGenerator {
    pub address: IpAddr,
    pub filter: Arc<PeerFilter>,
    pub limits: AllocationLimits,
    /// Allocations open on the whole server (shared by all listeners).
    pub open: Arc<AtomicU32>,
    pub metrics: TurnMetrics,
}

#[async_trait]
impl RelayAddressGenerator for RelayGenerator {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        if use_ipv4 != self.address.is_ipv4() {
            return Err(turn::Error::Other(
                "no relay address of that family here".into(),
            ));
        }
        let max = self.limits.max_allocations;
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (max == 0 || open < max).then_some(open + 1)
            });
        if taken.is_err() {
            tracing::warn!(max, "TURN allocations at the limit; refusing another");
            self.metrics.refused(Refused::Capacity);
            return Err(turn::Error::Other("insufficient capacity".into()));
        }
        let socket = match UdpSocket::bind(SocketAddr::new(self.address, requested_port)).await {
            Ok(socket) => socket,
            Err(error) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(turn::Error::Other(error.to_string()));
            }
        };
        let relay_addr = socket
            .local_addr()
            .map_err(|error| turn::Error::Other(error.to_string()))?;
        self.metrics.allocations.inc();
        self.metrics.allocations_open.inc();
        let conn = FilteredConn {
            socket,
            filter: Arc::clone(&self.filter),
            created: Instant::now(),
            max_lifetime: self.limits.max_lifetime,
            inbound: bandwidth(self.limits.max_bandwidth),
            outbound: bandwidth(self.limits.max_bandwidth),
            open: Arc::clone(&self.open),
            closed: AtomicBool::new(false),
            metrics: self.metrics.clone(),
        };
        Ok((Arc::new(conn), relay_addr))
    }
}

/// A token bucket of `bytes_per_second` that holds one second's worth.
fn bandwidth(bytes_per_second: u64) -> Option<DefaultDirectRateLimiter> {
    let rate = NonZeroU32::new(u32::try_from(bytes_per_second).unwrap_or(u32::MAX))?;
    Some(RateLimiter::direct(Quota::per_second(rate)))
}

/// One allocation's relayed socket.
pub struct FilteredConn {
    socket: UdpSocket,
    filter: Arc<PeerFilter>,
    created: Instant,
    max_lifetime: Duration,
    inbound: Option<DefaultDirectRateLimiter>,
    outbound: Option<DefaultDirectRateLimiter>,
    open: Arc<AtomicU32>,
    closed: AtomicBool,
    metrics: TurnMetrics,
}

impl FilteredConn {
    /// Whether a packet of `len` bytes to or from `peer` may pass.
    fn passes(
        &self,
        peer: SocketAddr,
        len: usize,
        limiter: Option<&DefaultDirectRateLimiter>,
    ) -> bool {
        if let Err(refusal) = self.filter.check(peer) {
            self.metrics.refused(Refused::Peer(refusal));
            return false;
        }
        if self.created.elapsed() > self.max_lifetime {
            self.metrics.refused(Refused::Lifetime);
            return false;
        }
        let cost = NonZeroU32::new(u32::try_from(len).unwrap_or(u32::MAX));
        if let (Some(limiter), Some(cost)) = (limiter, cost)
            && !matches!(limiter.check_n(cost), Ok(Ok(())))
        {
            self.metrics.refused(Refused::Bandwidth);
            return false;
        }
        self.metrics.packets_relayed.inc();
        self.metrics
            .bytes_relayed
            .inc_by(u64::try_from(len).unwrap_or(u64::MAX));
        true
    }

    fn release(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.metrics.allocations_open.dec();
        }
    }
}

impl Drop for FilteredConn {
    fn drop(&mut self) {
        self.release();
    }
}

#[async_trait]
impl Conn for FilteredConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(io_error("a relayed socket is never connected"))
    }

    async fn recv(&self, _buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(io_error("a relayed socket is read with recv_from"))
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (len, peer) = self.socket.recv_from(buf).await?;
            if self.passes(peer, len, self.inbound.as_ref()) {
                return Ok((len, peer));
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(io_error("a relayed socket is written with send_to"))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.passes(target, buf.len(), self.outbound.as_ref()) {
            // Dropped as UDP drops: the client's call adapts or ends.
            return Ok(buf.len());
        }
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.release();
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
}

fn io_error(text: &str) -> webrtc_util::Error {
    webrtc_util::Error::from(std::io::Error::other(text.to_owned()))
}
