use std::sync::Arc;

use chatmail_config::{Config, Mailboxes};
use chatmail_e2ee::{Direction, Verdict, classify, from_header_address};
use chatmail_smtp::{DataOutcome, Envelope, Reinjector, Reply, SmtpHandler};

use crate::dkim::{DkimFailure, DkimVerifier};
use crate::refused::RefusedMail;

/// The relay's reply for mail that is not end-to-end encrypted, as the
/// program we replace gives it.
const ENCRYPTION_NEEDED: Reply = Reply::new(523, "", "Encryption Needed: Invalid Unencrypted Mail");
const BAD_FROM: Reply = Reply::new(500, "5.7.1", "Missing or invalid From header");
/// Idle connections kept open to Postfix's reinjection port.
const MAX_IDLE_REINJECT_CONNECTIONS: usize = 64;

/// How the origin of domain senders is checked.
pub enum OriginCheck {
    Dkim(Box<DkimVerifier>),
    /// FILTERMAIL_SKIP_DKIM=1: for tests only.
    Skip,
}

/// The checks for mail arriving from other servers, shared by the SMTP
/// and the HTTP front door, so both give the same answer to a message.
pub struct IncomingFilter {
    domain: String,
    mailboxes: Mailboxes,
    origin: OriginCheck,
    refused: Option<RefusedMail>,
    reinjector: Reinjector,
}

impl IncomingFilter {
    #[must_use]
    pub fn new(config: &Config, origin: OriginCheck) -> Self {
        let reinject_addr = format!(
            "{}:{}",
            config.postfix_host, config.postfix_reinject_port_incoming
        );
        Self {
            domain: config.mail_domain.address_domain(),
            mailboxes: config.mailboxes(),
            origin,
            refused: config
                .filtermail_refused_mail_dir
                .clone()
                .map(RefusedMail::new),
            reinjector: Reinjector::new(
                reinject_addr,
                config.mail_domain.hostname(),
                MAX_IDLE_REINJECT_CONNECTIONS,
            ),
        }
    }

    /// Checks one message and reinjects it when it passes; the reply is
    /// Postfix's answer, our refusal, or a 4xx for our own failures.
    pub async fn deliver(&self, envelope: &Envelope, message: Vec<u8>) -> Reply {
        let message = Arc::new(message);
        let reply = match self.check(envelope, &message).await {
            Ok(Checked::Deliver { sender, recipients }) => {
                let reply = self.reinjector.send(&sender, &recipients, &message).await;
                tracing::debug!(%reply, "reinjected");
                return reply;
            }
            Ok(Checked::Discard) => {
                tracing::info!("no recipient left; accepted and discarded");
                return Reply::new(250, "2.0.0", "OK");
            }
            Err(refusal) => refusal,
        };
        if !reply.is_transient()
            && let Some(refused) = &self.refused
        {
            refused.keep(&reply, Arc::clone(&message)).await;
        }
        reply
    }

    async fn check(&self, envelope: &Envelope, message: &[u8]) -> Result<Checked, Reply> {
        let Some(from) = from_header_address(message) else {
            tracing::info!("refused: no usable From header");
            return Err(BAD_FROM);
        };
        // Forwarders legitimately send with another envelope sender; the
        // message is taken, but a bounce must not go to a forged address.
        let sender = if envelope.sender().eq_ignore_ascii_case(&from) {
            from.clone()
        } else {
            tracing::debug!("envelope sender differs from From; reinjecting with <>");
            String::new()
        };
        let recipients = self.active_recipients(&envelope.rcpt_to)?;
        if recipients.is_empty() {
            return Ok(Checked::Discard);
        }
        let policy = chatmail_e2ee::Envelope {
            mail_from: &from,
            rcpt_to: &recipients,
        };
        if let Verdict::Cleartext(reason) = classify(message, &policy, Direction::Incoming) {
            self.check_cleartext_allowed(&recipients, reason)?;
        }
        self.check_origin(message, &from).await?;
        Ok(Checked::Deliver { sender, recipients })
    }

    /// The recipients without the disabled ones.
    fn active_recipients(&self, rcpt_to: &[String]) -> Result<Vec<String>, Reply> {
        let mut recipients = Vec::with_capacity(rcpt_to.len());
        for rcpt in rcpt_to {
            let disabled = self
                .mailboxes
                .local(rcpt, &self.domain)
                .map_or(Ok(false), |mailbox| mailbox.is_disabled());
            match disabled {
                Ok(true) => tracing::debug!(rcpt, "dropping disabled recipient"),
                Ok(false) => recipients.push(rcpt.clone()),
                Err(error) => {
                    tracing::error!(%error, "cannot check whether a recipient is disabled");
                    return Err(Reply::TEMPORARY_FAILURE);
                }
            }
        }
        Ok(recipients)
    }

    /// Cleartext is delivered only when no recipient refuses it (older
    /// accounts were created without `enforceE2EEincoming`).
    fn check_cleartext_allowed(&self, recipients: &[String], reason: &str) -> Result<(), Reply> {
        for rcpt in recipients {
            let Some(mailbox) = self.mailboxes.local(rcpt, &self.domain) else {
                continue;
            };
            match mailbox.enforces_e2ee_incoming() {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(reason, "refused unencrypted incoming mail");
                    return Err(ENCRYPTION_NEEDED);
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read a recipient's encryption setting");
                    return Err(Reply::TEMPORARY_FAILURE);
                }
            }
        }
        Ok(())
    }

    /// Domain senders must prove their origin with DKIM; IP-literal
    /// senders have no DNS to publish a key in.
    async fn check_origin(&self, message: &[u8], from: &str) -> Result<(), Reply> {
        let Some((_, from_domain)) = from.rsplit_once('@') else {
            return Err(BAD_FROM);
        };
        if from_domain.starts_with('[') {
            return Ok(());
        }
        let OriginCheck::Dkim(verifier) = &self.origin else {
            return Ok(());
        };
        match verifier.verify(message, from_domain).await {
            Ok(()) => Ok(()),
            Err(DkimFailure::Invalid(reason)) => {
                tracing::info!(%reason, "refused: DKIM check failed");
                Err(Reply::owned(
                    554,
                    "5.7.1",
                    format!("DKIM check failed: {reason}"),
                ))
            }
            Err(DkimFailure::Temporary(reason)) => {
                tracing::warn!(%reason, "DKIM key lookup failed temporarily");
                Err(Reply::owned(
                    451,
                    "4.7.5",
                    format!("DKIM key lookup failed, try again later: {reason}"),
                ))
            }
        }
    }
}

enum Checked {
    Deliver {
        sender: String,
        recipients: Vec<String>,
    },
    /// Every recipient is disabled.
    Discard,
}

impl SmtpHandler for IncomingFilter {
    async fn data(&self, envelope: Envelope, message: Vec<u8>) -> DataOutcome {
        DataOutcome::Message(self.deliver(&envelope, message).await)
    }
}
