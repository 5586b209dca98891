//! Delivering one message to one destination: its MX hosts in order, on
//! each first HTTPS `/mxdeliv`, then SMTP with STARTTLS. Only failures to
//! talk to a host at all move on to the next one; any answer a server
//! gives is final and goes back per recipient.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatmail_dns::TokioResolver;
use chatmail_metrics::prometheus_client::metrics::gauge::Gauge;
use chatmail_smtp::Reply;
use lru::LruCache;

use crate::destination::Destination;
use crate::https_out::{HttpsClient, HttpsOutcome, HttpsTarget};
use crate::internal::is_internal;
use crate::metrics::Protocol;
use crate::mx::{self, Host};
use crate::reply::sanitize;
use crate::smtp_out::{ConnectionError, SmtpConnection, SmtpPool};
use crate::state::{DestinationState, Destinations};
use crate::tls::{TlsConfigs, policy_name};

/// Hosts where HTTPS failed but SMTP worked skip HTTPS this long.
const SKIP_HTTPS_FOR: Duration = Duration::from_secs(30 * 60);
const SKIP_HTTPS_HOSTS: NonZeroUsize = NonZeroUsize::new(10_000).expect("non-zero");

/// What the transport allows itself per remote host.
pub struct HostLimits {
    /// SMTP connections kept idle for reuse.
    pub idle_connections: usize,
    /// Deliveries in flight to one host address.
    pub in_flight: usize,
    /// How long an HTTPS delivery waits for its answer.
    pub https_timeout: Duration,
}

pub struct Ports {
    pub smtp: u16,
    pub https: u16,
}

/// The reply for a destination whose every address is internal.
pub fn internal_reply(destination: &Destination, addresses: &str) -> Reply {
    Reply::owned(
        550,
        "5.7.1",
        format!(
            "Delivery to {destination} refused: it resolves to internal addresses only \
             ({addresses}); see filtermail_transport_allow_private"
        ),
    )
}

pub struct Deliverer {
    resolver: TokioResolver,
    tls: TlsConfigs,
    https: HttpsClient,
    smtp_pool: SmtpPool,
    skip_https: Mutex<LruCache<String, Instant>>,
    helo: String,
    ports: Ports,
    /// Whether internal addresses ([`crate::internal`]) may be contacted.
    allow_private: bool,
    /// Deliveries in flight per host address: the per-destination bound
    /// counts recipient domains, and a thousand domains may name one host.
    per_address: Destinations,
    per_address_limit: usize,
}

/// The 4xx for a message that went out over HTTPS without a trustworthy
/// answer: Postfix retries later, and the host is then reached over SMTP.
fn retry_over_smtp(what: &str, host: &str, why: &str) -> Reply {
    Reply::owned(
        451,
        "4.4.2",
        format!("{what} from {host} over HTTPS ({why}); try again later"),
    )
}

/// What one host did with a message.
enum Delivered {
    /// It answered (a reply per recipient, or a 4xx for an answer that
    /// could not be trusted).
    Answered(Protocol, Vec<Reply>),
    /// It took the message and never answered (4xx per recipient).
    Unanswered(Protocol, Vec<Reply>),
}

/// Addresses whose deliveries in flight are counted (far more than the
/// hosts a relay talks to at once; busy ones are never forgotten).
const TRACKED_ADDRESSES: NonZeroUsize = NonZeroUsize::new(10_000).expect("non-zero");

impl Deliverer {
    #[must_use]
    pub fn new(
        resolver: TokioResolver,
        tls: TlsConfigs,
        helo: String,
        ports: Ports,
        allow_private: bool,
        hosts: HostLimits,
    ) -> Self {
        Self {
            allow_private,
            resolver,
            tls,
            https: HttpsClient::new(hosts.https_timeout),
            per_address: Destinations::new(TRACKED_ADDRESSES, Gauge::default()),
            per_address_limit: hosts.in_flight,
            smtp_pool: SmtpPool::new(hosts.idle_connections),
            skip_https: Mutex::new(LruCache::new(SKIP_HTTPS_HOSTS)),
            helo,
            ports,
        }
    }

    /// Whether the transport may connect to `ip`.
    #[must_use]
    pub fn may_contact(&self, ip: IpAddr) -> bool {
        self.allow_private || !is_internal(ip)
    }

    /// A reply per recipient of `rcpt_to`, all of `destination`, and the
    /// protocol that carried the answers.
    pub async fn deliver(
        &self,
        destination: &Destination,
        state: &DestinationState,
        mail_from: &str,
        rcpt_to: &[String],
        message: &Bytes,
    ) -> (Protocol, Vec<Reply>) {
        let hosts = match mx::hosts(&self.resolver, destination).await {
            Ok(hosts) => hosts,
            Err(reply) => return (Protocol::None, vec![reply; rcpt_to.len()]),
        };
        let self_signed_ok = destination.accepts_self_signed();
        let mut failures = Vec::new();
        let mut internal = Vec::new();
        let mut busy_hosts = 0;
        for host in &hosts {
            // Every address is checked before anything is contacted, and
            // only the ones checked are used: a second lookup could answer
            // differently.
            let addresses = match mx::addresses(&self.resolver, host).await {
                Ok(addresses) => addresses,
                Err(failure) => {
                    tracing::info!(host = %host.name, %failure, "cannot resolve this host");
                    failures.push(format!("{}: {failure}", host.name));
                    continue;
                }
            };
            let (permitted, refused): (Vec<IpAddr>, Vec<IpAddr>) =
                addresses.into_iter().partition(|ip| self.may_contact(*ip));
            if permitted.is_empty() {
                tracing::info!(host = %host.name, "refused: host has internal addresses only");
                internal.extend(refused);
                continue;
            }
            // Counted against the host's first address (the one tried
            // first): however many domains name it, it gets at most
            // filtermail_transport_host_limit deliveries at once.
            let Some(&first) = permitted.first() else {
                continue;
            };
            let Ok(_address_slot) = self
                .per_address
                .get(&Destination::Ip(first))
                .enter(self.per_address_limit)
            else {
                tracing::info!(host = %host.name, "too many deliveries in flight to this host");
                failures.push(format!("{}: too many deliveries in flight", host.name));
                busy_hosts += 1;
                continue;
            };
            match self
                .deliver_to_host(
                    host,
                    &permitted,
                    self_signed_ok,
                    mail_from,
                    rcpt_to,
                    message,
                )
                .await
            {
                Ok(Delivered::Answered(protocol, replies)) => {
                    state.reached();
                    return (protocol, replies.iter().map(sanitize).collect());
                }
                Ok(Delivered::Unanswered(protocol, replies)) => {
                    // The host took the message and never answered: the
                    // next messages wait for the breaker's probe instead
                    // of each holding a slot for the whole timeout.
                    state.connection_failed();
                    return (protocol, replies.iter().map(sanitize).collect());
                }
                Err(failure) => {
                    tracing::info!(host = %host.name, %failure, "cannot deliver to this host");
                    failures.push(format!("{}: {failure}", host.name));
                }
            }
        }
        if failures.is_empty() && !internal.is_empty() {
            let listed: Vec<String> = internal.iter().map(ToString::to_string).collect();
            let reply = internal_reply(destination, &listed.join(", "));
            return (Protocol::None, vec![reply; rcpt_to.len()]);
        }
        if busy_hosts > 0 && busy_hosts == failures.len() {
            // Busy is no failure of the destination: no breaker, a 4xx.
            let reply = Reply::owned(
                451,
                "4.4.5",
                format!(
                    "Too many deliveries in flight to the hosts of {destination}; try again later"
                ),
            );
            return (Protocol::None, vec![reply; rcpt_to.len()]);
        }
        state.connection_failed();
        let reason = sanitize(&Reply::owned(
            451,
            "4.4.1",
            format!("Cannot reach {destination}: {}", failures.join("; ")),
        ));
        (Protocol::None, vec![reason; rcpt_to.len()])
    }

    async fn deliver_to_host(
        &self,
        host: &Host,
        addresses: &[IpAddr],
        self_signed_ok: bool,
        mail_from: &str,
        rcpt_to: &[String],
        message: &Bytes,
    ) -> Result<Delivered, String> {
        let https_key = format!("{}:{}", host.name, self.ports.https);
        let mut https_failed = None;
        if !self.skips_https(&https_key) {
            let target = HttpsTarget {
                host: &host.name,
                addresses,
                port: self.ports.https,
                tls: self.tls.for_peer(self_signed_ok, true),
                policy: policy_name(self_signed_ok),
            };
            match self
                .https
                .deliver(&target, mail_from, rcpt_to, message)
                .await
            {
                HttpsOutcome::Answered(replies) => {
                    return Ok(Delivered::Answered(Protocol::Https, replies));
                }
                HttpsOutcome::Unanswered(why) => {
                    tracing::info!(host = %host.name, %why, "HTTPS delivery unanswered");
                    self.skip_https_for_a_while(https_key);
                    let reply = retry_over_smtp("No answer", &host.name, &why);
                    return Ok(Delivered::Unanswered(
                        Protocol::Https,
                        vec![reply; rcpt_to.len()],
                    ));
                }
                HttpsOutcome::Uncertain(why) => {
                    // Postfix retries later; by then this host is reached
                    // over SMTP, so a broken /mxdeliv delays mail but never
                    // holds it, and the message is not sent twice at once.
                    tracing::info!(host = %host.name, %why, "HTTPS delivery uncertain");
                    self.skip_https_for_a_while(https_key);
                    let reply = retry_over_smtp("No clear answer", &host.name, &why);
                    return Ok(Delivered::Answered(
                        Protocol::Https,
                        vec![reply; rcpt_to.len()],
                    ));
                }
                HttpsOutcome::NotOffered(why) | HttpsOutcome::Failed(why) => {
                    tracing::debug!(host = %host.name, %why, "no HTTPS delivery; trying SMTP");
                    https_failed = Some(why);
                }
            }
        }
        let replies = self
            .smtp(host, addresses, self_signed_ok, mail_from, rcpt_to, message)
            .await
            .map_err(|error| match &https_failed {
                Some(https) => format!("HTTPS: {https}; SMTP: {error}"),
                None => format!("SMTP: {error}"),
            })?;
        if https_failed.is_some() {
            self.skip_https_for_a_while(https_key);
        }
        Ok(Delivered::Answered(Protocol::Smtp, replies))
    }

    fn skip_https_for_a_while(&self, key: String) {
        self.skip_https
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(key, Instant::now() + SKIP_HTTPS_FOR);
    }

    fn skips_https(&self, key: &str) -> bool {
        let mut skip = self
            .skip_https
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match skip.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                skip.pop(key);
                false
            }
            None => false,
        }
    }

    /// SMTP on a pooled connection if there is one (retried once on a
    /// fresh connection if the pooled one fails or says 421), else fresh.
    async fn smtp(
        &self,
        host: &Host,
        addresses: &[IpAddr],
        self_signed_ok: bool,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[u8],
    ) -> Result<Vec<Reply>, ConnectionError> {
        let key = format!(
            "{}:{} {}",
            host.name,
            self.ports.smtp,
            policy_name(self_signed_ok)
        );
        if let Some(mut connection) = self.smtp_pool.take(&key) {
            match connection.send(mail_from, rcpt_to, message).await {
                Ok(delivered) if delivered.replies.iter().all(|reply| reply.code == 421) => {
                    tracing::debug!(host = %host.name, "pooled connection said 421; reconnecting");
                }
                Ok(delivered) => {
                    if delivered.reusable {
                        self.smtp_pool.put(&key, connection);
                    }
                    return Ok(delivered.replies);
                }
                Err(error) => {
                    tracing::debug!(host = %host.name, %error, "pooled connection failed; reconnecting");
                }
            }
        }
        let tcp = crate::connect::connect(addresses, self.ports.smtp)
            .await
            .map_err(ConnectionError::Connect)?;
        let name = crate::tls::server_name(&host.name).map_err(ConnectionError::Tls)?;
        let tls = self.tls.for_peer(self_signed_ok, false);
        let mut connection = SmtpConnection::open(tcp, &self.helo, tls, name).await?;
        let delivered = connection.send(mail_from, rcpt_to, message).await?;
        if delivered.reusable {
            self.smtp_pool.put(&key, connection);
        }
        Ok(delivered.replies)
    }
}
