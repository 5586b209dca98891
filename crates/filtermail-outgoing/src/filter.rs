use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmail_config::{
    Config, EnvelopeAddress, MailDomain, Mailbox, Mailboxes, MetricsDaemon, canonical_address,
};
use chatmail_e2ee::{ParsedMessage, Verdict};
use chatmail_metrics::{Direction, Endpoint, FilterMetrics, Outcome};
use chatmail_smtp::{
    AddressRole, DataOutcome, Envelope, Protocol, Reinjector, Reply, SessionConfig,
    SessionCounters, SmtpHandler, reinjection_outcome,
};
use tokio::net::TcpListener;

use chatmail_daemon::AccountRateLimiter;

/// The relay's reply for mail that is not end-to-end encrypted, as the
/// program we replace gives it.
const ENCRYPTION_NEEDED: Reply = Reply::new(523, "", "Encryption Needed: Invalid Unencrypted Mail");
/// Users submit as their own account only (Postfix checks that it is the
/// login; this is the same rule for any other path to the filter).
const NOT_LOCAL_SENDER: Reply = Reply::new(
    553,
    "5.7.1",
    "Sender address is not an account of this relay",
);
/// How often senders at rest are forgotten by the rate limiter.
const RATE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Idle connections kept open to Postfix's reinjection port.
const MAX_IDLE_REINJECT_CONNECTIONS: usize = 64;

pub struct OutgoingFilter {
    mail_domain: MailDomain,
    mailboxes: Mailboxes,
    limiter: Option<AccountRateLimiter>,
    /// Recipients per account and minute: one message to a thousand
    /// addresses is not a free amplifier.
    recipient_limiter: Option<AccountRateLimiter>,
    reinjector: Reinjector,
    metrics: FilterMetrics,
}

impl OutgoingFilter {
    #[must_use]
    pub fn new(config: &Config, metrics: FilterMetrics) -> Self {
        let reinject_addr = format!("{}:{}", config.postfix_host, config.postfix_reinject_port);
        Self {
            mail_domain: config.mail_domain.clone(),
            mailboxes: config.mailboxes(),
            limiter: AccountRateLimiter::new(
                config.max_user_send_per_minute,
                config.max_user_send_burst_size,
            ),
            recipient_limiter: AccountRateLimiter::new(
                config.max_user_recipients_per_minute,
                config.max_user_recipients_per_minute,
            ),
            reinjector: Reinjector::new(
                reinject_addr,
                config.mail_domain.hostname(),
                MAX_IDLE_REINJECT_CONNECTIONS,
            ),
            metrics,
        }
    }

    /// The mailbox behind a canonical address, when it is one of ours.
    fn mailbox(&self, address: &str) -> Option<Mailbox> {
        canonical_address(address, &self.mail_domain)
            .ok()
            .and_then(|address| self.mailboxes.account(&address))
    }

    /// Whether `address` (canonical) is one of our accounts switched off
    /// by the operator.
    fn is_disabled(&self, address: &str) -> std::io::Result<bool> {
        self.mailbox(address)
            .map_or(Ok(false), |mailbox| mailbox.is_disabled())
    }

    async fn check_and_reinject(&self, envelope: Envelope, message: Vec<u8>) -> Reply {
        self.metrics.received(message.len());
        let (outcome, reply) = self.check_and_reinject_counted(envelope, message).await;
        self.metrics.count(outcome);
        reply
    }

    async fn check_and_reinject_counted(
        &self,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> (Outcome, Reply) {
        // The session recorded the canonical account that MAIL named.
        let sender = envelope.sender();
        let rcpt_to = envelope.rcpt_to.as_slice();
        let message = Arc::new(message);
        let started = Instant::now();
        let examined = {
            let (message, sender) = (Arc::clone(&message), sender.to_owned());
            let (rcpt_to, domain) = (rcpt_to.to_vec(), self.mail_domain.clone());
            chatmail_daemon::cpu_work(message.len(), move || {
                examine(&message, &sender, &rcpt_to, &domain)
            })
            .await
        };
        self.metrics.checked_in(started.elapsed());
        let verdict = match examined {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(refusal)) => return refusal,
            Err(error) => {
                tracing::error!(%error, "the message check failed");
                return (Outcome::Error, Reply::TEMPORARY_FAILURE);
            }
        };
        let disabled_sender = match self.is_disabled(sender) {
            Ok(disabled) => disabled,
            Err(error) => {
                tracing::error!(%error, "cannot check whether the sender is disabled");
                return (Outcome::Error, Reply::TEMPORARY_FAILURE);
            }
        };
        let mut recipients = Vec::with_capacity(rcpt_to.len());
        for rcpt in rcpt_to {
            match self.is_disabled(rcpt) {
                Ok(true) => tracing::debug!(rcpt, "dropping disabled recipient"),
                Ok(false) => recipients.push(rcpt.clone()),
                Err(error) => {
                    tracing::error!(%error, "cannot check whether a recipient is disabled");
                    return (Outcome::Error, Reply::TEMPORARY_FAILURE);
                }
            }
        }
        if disabled_sender || recipients.is_empty() {
            tracing::info!(disabled_sender, "accepted and discarded");
            return (Outcome::Discarded, Reply::new(250, "2.0.0", "OK"));
        }
        let reply = self.reinjector.send(sender, &recipients, &message).await;
        tracing::debug!(%reply, ?verdict, "reinjected");
        (reinjection_outcome(&reply), reply)
    }
}

/// The From check and the encryption policy: the CPU work on the whole
/// message, parsed once for both.
fn examine(
    message: &[u8],
    sender: &str,
    rcpt_to: &[String],
    mail_domain: &MailDomain,
) -> Result<Verdict, (Outcome, Reply)> {
    let parsed = ParsedMessage::parse(message);
    match parsed.from_address() {
        Some(from)
            if canonical_address(&from, mail_domain).is_ok_and(|from| from.as_str() == sender) => {}
        Some(from) => {
            tracing::info!("refused: From header does not match the envelope sender");
            return Err((
                Outcome::FromMismatch,
                Reply::owned(500, "", format!("Invalid FROM <{from}> for <{sender}>")),
            ));
        }
        None => {
            tracing::info!("refused: no usable From header");
            return Err((
                Outcome::FromMismatch,
                Reply::new(
                    500,
                    "",
                    "Invalid FROM header: not exactly one From header with one address",
                ),
            ));
        }
    }
    let policy = chatmail_e2ee::Envelope {
        mail_from: sender,
        rcpt_to,
    };
    let verdict = parsed.classify(&policy, chatmail_e2ee::Direction::Outgoing);
    // The lines existing dashboards (mtail) count, once per message.
    if verdict == Verdict::Encrypted {
        tracing::info!("Outgoing: Filtering encrypted mail.");
    } else {
        tracing::info!("Outgoing: Filtering unencrypted mail.");
    }
    if let Verdict::Cleartext(reason) = verdict {
        tracing::info!(reason, "refused unencrypted outgoing mail");
        return Err((Outcome::NotEncrypted, ENCRYPTION_NEEDED));
    }
    Ok(verdict)
}

impl SmtpHandler for OutgoingFilter {
    /// The sender must be one of our accounts, in its canonical form; the
    /// rate limit counts per account (Postfix has checked that it is the
    /// login, so per login).
    async fn mail_from(&self, sender: &str) -> Result<String, Reply> {
        let account = match canonical_address(sender, &self.mail_domain) {
            Ok(EnvelopeAddress::Local(account)) => account,
            Ok(EnvelopeAddress::Remote(_)) => {
                self.metrics.count(Outcome::RelayDenied);
                return Err(NOT_LOCAL_SENDER);
            }
            Err(refusal) => {
                self.metrics.count(Outcome::BadAddress);
                return Err(Reply::address_refused(AddressRole::Sender, refusal));
            }
        };
        if let Some(limiter) = &self.limiter
            && let Err(wait) = limiter.check(&account)
        {
            tracing::info!("sender over its rate limit");
            self.metrics.count(Outcome::RateLimited);
            let seconds = wait.as_secs().max(1);
            // The text of the program we replace (its enhanced code with
            // a colon), then when to try again.
            return Err(Reply::owned(
                450,
                "",
                format!("4.7.1: Too much mail from {account}, retry in {seconds} seconds"),
            ));
        }
        Ok(account)
    }

    async fn rcpt_to(&self, envelope: &Envelope, recipient: &str) -> Result<String, Reply> {
        let recipient = canonical_address(recipient, &self.mail_domain)
            .map(EnvelopeAddress::into_string)
            .map_err(|refusal| {
                self.metrics.count(Outcome::BadAddress);
                Reply::address_refused(AddressRole::Recipient, refusal)
            })?;
        let sender = envelope.sender();
        if let Some(limiter) = &self.recipient_limiter
            && let Err(wait) = limiter.check(sender)
        {
            tracing::info!("sender over its recipient limit");
            self.metrics.count(Outcome::RateLimited);
            let seconds = wait.as_secs().max(1);
            return Err(Reply::owned(
                450,
                "4.7.1",
                format!("Too many recipients from {sender}, retry in {seconds} seconds"),
            ));
        }
        Ok(recipient)
    }

    async fn data(&self, envelope: Envelope, message: Vec<u8>) -> DataOutcome {
        DataOutcome::Message(self.check_and_reinject(envelope, message).await)
    }
}

/// Runs the daemon: binds its metrics address and
/// filtermail_host:filtermail_smtp_port, then serves until SIGTERM or
/// SIGINT.
pub fn run_daemon(config: &Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let endpoint = Endpoint::for_daemon(config, MetricsDaemon::FiltermailOutgoing)?;
    let metrics = FilterMetrics::new(Direction::Outgoing);
    let mut registry = chatmail_metrics::registry();
    metrics.register(&mut registry);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        Endpoint::spawn_optional(endpoint, registry)?;
        let addr = format!("{}:{}", config.filtermail_host, config.filtermail_smtp_port);
        let listener = chatmail_daemon::bind_tcp(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, "filtermail-outgoing listening");
        run(
            config,
            listener,
            metrics,
            chatmail_daemon::shutdown_signal(),
        )
        .await;
        Ok(())
    })
}

/// Serves the filter on `listener` until `shutdown`, counting into
/// `metrics`.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    metrics: FilterMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let counters = SessionCounters::for_filter(&metrics);
    let filter = Arc::new(OutgoingFilter::new(config, metrics));
    let sweeper = Arc::clone(&filter);
    let sweep = tokio::spawn(async move {
        let mut interval = tokio::time::interval(RATE_SWEEP_INTERVAL);
        loop {
            interval.tick().await;
            for limiter in [&sweeper.limiter, &sweeper.recipient_limiter]
                .into_iter()
                .flatten()
            {
                limiter.sweep();
            }
        }
    });
    let max_message_size = config.max_message_bytes();
    let session = SessionConfig {
        budget: chatmail_daemon::MessageBudget::fairly_shared(
            config.message_memory_bytes(),
            config.client_share_bytes(),
        ),
        // Postfix has checked that the sender is the login.
        share_by: chatmail_smtp::ShareBy::Sender,
        counters,
        ..SessionConfig::new(
            Protocol::Smtp,
            config.mail_domain.hostname(),
            max_message_size,
        )
    };
    let max_connections = config.filter_connection_limit();
    chatmail_smtp::serve(listener, filter, session, max_connections, shutdown).await;
    sweep.abort();
}
