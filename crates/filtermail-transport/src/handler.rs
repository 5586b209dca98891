//! The LMTP side: Postfix hands over each message with its recipients;
//! they are split by destination, destinations are delivered in
//! parallel, and each recipient gets its own reply, in RCPT order.
//!
//! Two bounds keep a queue flush from swamping the transport: one global
//! semaphore on deliveries in flight (waited on for a limited time), and
//! a per-destination queue limit and circuit breaker checked already at
//! RCPT time, so Postfix gets a 4xx for an over-queued or dead destination
//! before it even sends the message.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatmail_config::{EnvelopeAddress, MailDomain, canonical_address};
use chatmail_metrics::GaugeHold;
use chatmail_smtp::{AddressRole, DataOutcome, Envelope, Reply, SmtpHandler};
use futures_util::future::join_all;
use tokio::sync::Semaphore;

use crate::deliver::{Deliverer, internal_reply};
use crate::destination::Destination;
use crate::metrics::{FastTempfail, Protocol, TransportMetrics};
use crate::state::{Busy, Destinations};

/// Destinations tracked at once (idle ones are forgotten first).
const TRACKED_DESTINATIONS: NonZeroUsize = NonZeroUsize::new(50_000).expect("non-zero");

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deliveries in flight at once, over all destinations.
    pub max_deliveries: usize,
    /// Messages queued or in flight per destination.
    pub per_destination: usize,
    /// How long a delivery waits for a global slot before giving up.
    pub slot_wait: Duration,
    /// Every delivery ends within this time, well inside Postfix's
    /// lmtp_data_done_timeout (600 s): a timeout there would make Postfix
    /// deliver the message twice.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_deliveries: 1000,
            per_destination: 30,
            slot_wait: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
        }
    }
}

pub struct Transport {
    mail_domain: MailDomain,
    deliverer: Arc<Deliverer>,
    destinations: Destinations,
    global: Arc<Semaphore>,
    limits: Limits,
    metrics: TransportMetrics,
}

fn fast_tempfail_reason(busy: Busy) -> FastTempfail {
    match busy {
        Busy::Full => FastTempfail::DestinationFull,
        Busy::Dead => FastTempfail::DestinationPaused,
    }
}

fn busy_reply(destination: &Destination, busy: Busy) -> Reply {
    match busy {
        Busy::Full => Reply::owned(
            451,
            "4.4.5",
            format!("Too many messages queued for {destination}; try again later"),
        ),
        Busy::Dead => Reply::owned(
            451,
            "4.4.1",
            format!("{destination} was not reachable just now; try again later"),
        ),
    }
}

impl Transport {
    #[must_use]
    pub fn new(
        mail_domain: MailDomain,
        deliverer: Deliverer,
        limits: Limits,
        metrics: TransportMetrics,
    ) -> Self {
        Self {
            mail_domain,
            deliverer: Arc::new(deliverer),
            destinations: Destinations::new(
                TRACKED_DESTINATIONS,
                metrics.destinations_paused.clone(),
            ),
            global: Arc::new(Semaphore::new(limits.max_deliveries.max(1))),
            limits,
            metrics,
        }
    }

    /// Destinations currently tracked.
    #[must_use]
    pub fn tracked_destinations(&self) -> usize {
        self.destinations.len()
    }

    async fn deliver_one(
        &self,
        destination: &Destination,
        mail_from: &str,
        rcpt_to: &[String],
        message: &Bytes,
    ) -> Vec<Reply> {
        let state = self.destinations.get(destination);
        let slot = match state.enter(self.limits.per_destination) {
            Ok(slot) => slot,
            Err(busy) => {
                self.metrics
                    .fast_tempfail(fast_tempfail_reason(busy), rcpt_to.len());
                return vec![busy_reply(destination, busy); rcpt_to.len()];
            }
        };
        let permit = tokio::time::timeout(
            self.limits.slot_wait,
            Arc::clone(&self.global).acquire_owned(),
        )
        .await;
        let Ok(Ok(_permit)) = permit else {
            self.metrics
                .fast_tempfail(FastTempfail::NoSlot, rcpt_to.len());
            let reply = Reply::new(
                451,
                "4.3.2",
                "Too many deliveries in progress; try again later",
            );
            return vec![reply; rcpt_to.len()];
        };
        let _in_use = GaugeHold::new(&self.metrics.slots_in_use);
        let started = Instant::now();
        let delivery =
            self.deliverer
                .deliver(destination, slot.state(), mail_from, rcpt_to, message);
        let (protocol, replies) = match tokio::time::timeout(self.limits.deadline, delivery).await {
            Ok(answered) => answered,
            Err(_) => {
                tracing::warn!(%destination, "delivery took too long; Postfix will retry");
                let reply = Reply::new(451, "4.4.7", "Delivery took too long; try again later");
                (Protocol::None, vec![reply; rcpt_to.len()])
            }
        };
        self.metrics
            .delivered(protocol, &replies, started.elapsed());
        replies
    }

    /// The canonical recipient and its destination, refused here already
    /// when it can never be delivered: a malformed address, or an address
    /// literal in an internal range. (Postfix routes only other domains
    /// here; what it routes is delivered, whatever the domain.)
    fn destination(&self, recipient: &str) -> Result<(String, Destination), Reply> {
        let address = canonical_address(recipient, &self.mail_domain)
            .map(EnvelopeAddress::into_string)
            .map_err(|refusal| Reply::address_refused(AddressRole::Recipient, refusal))?;
        let destination = Destination::of(&address).ok_or(Reply::BAD_RECIPIENT)?;
        if let Destination::Ip(ip) = destination
            && !self.deliverer.may_contact(ip)
        {
            tracing::info!(%destination, "refused: internal address literal");
            return Err(internal_reply(&destination, &ip.to_string()));
        }
        Ok((address, destination))
    }
}

impl SmtpHandler for Transport {
    async fn rcpt_to(&self, _envelope: &Envelope, recipient: &str) -> Result<String, Reply> {
        let (address, destination) = self.destination(recipient)?;
        match self
            .destinations
            .get(&destination)
            .check(self.limits.per_destination)
        {
            Some(busy) => {
                tracing::debug!(%destination, ?busy, "fast tempfail");
                self.metrics.fast_tempfail(fast_tempfail_reason(busy), 1);
                Err(busy_reply(&destination, busy))
            }
            None => Ok(address),
        }
    }

    async fn data(&self, envelope: Envelope, message: Vec<u8>) -> DataOutcome {
        let message = Bytes::from(message);
        let mut groups: BTreeMap<String, (Destination, Vec<usize>)> = BTreeMap::new();
        for (index, rcpt) in envelope.rcpt_to.iter().enumerate() {
            // Recipients passed rcpt_to, so each has a destination.
            if let Some(destination) = Destination::of(rcpt) {
                groups
                    .entry(destination.to_string())
                    .or_insert_with(|| (destination, Vec::new()))
                    .1
                    .push(index);
            }
        }
        let sender = envelope.sender();
        let deliveries = groups.values().map(|(destination, indexes)| {
            let rcpts: Vec<String> = indexes
                .iter()
                .filter_map(|&index| envelope.rcpt_to.get(index).cloned())
                .collect();
            let message = message.clone();
            async move {
                let replies = self
                    .deliver_one(destination, sender, &rcpts, &message)
                    .await;
                (indexes, replies)
            }
        });
        let mut replies = vec![Reply::TEMPORARY_FAILURE; envelope.rcpt_to.len()];
        for (indexes, group_replies) in join_all(deliveries).await {
            for (&index, reply) in indexes.iter().zip(group_replies) {
                if let Some(slot) = replies.get_mut(index) {
                    *slot = reply;
                }
            }
        }
        DataOutcome::PerRecipient(replies)
    }
}
