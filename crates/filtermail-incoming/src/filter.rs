use std::sync::Arc;
use std::time::Instant;

use chatmail_config::{Config, EnvelopeAddress, MailDomain, Mailboxes, canonical_address};
use chatmail_e2ee::{ParsedMessage, Verdict};
use chatmail_metrics::{FilterMetrics, Outcome};
use chatmail_smtp::{
    AddressRole, DataOutcome, Envelope, Reinjector, Reply, SmtpHandler, reinjection_outcome,
};

use crate::dkim::{DkimFailure, DkimVerifier};
use crate::refused::RefusedMail;

/// The relay's reply for mail that is not end-to-end encrypted, as the
/// program we replace gives it.
const ENCRYPTION_NEEDED: Reply = Reply::new(523, "", "Encryption Needed: Invalid Unencrypted Mail");
const BAD_FROM: Reply = Reply::new(
    500,
    "",
    "Invalid FROM header: not exactly one From header with one address",
);
/// Our own users' mail never comes in from outside: Postfix delivers it
/// locally. Such a From is forged (and an IP-only relay has no DKIM to
/// tell).
const OWN_DOMAIN_FROM: Reply = Reply::new(
    550,
    "5.7.1",
    "From address of this relay in mail from outside",
);
/// Idle connections kept open to Postfix's reinjection port.
const MAX_IDLE_REINJECT_CONNECTIONS: usize = 64;

/// How the origin of domain senders is checked.
pub enum OriginCheck {
    Dkim(Arc<DkimVerifier>),
    /// FILTERMAIL_SKIP_DKIM=1: for tests only.
    Skip,
}

/// The checks for mail arriving from other servers, shared by the SMTP
/// and the HTTP front door, so both give the same answer to a message.
pub struct IncomingFilter {
    mail_domain: MailDomain,
    mailboxes: Mailboxes,
    origin: OriginCheck,
    refused: Option<RefusedMail>,
    reinjector: Reinjector,
    metrics: FilterMetrics,
}

impl IncomingFilter {
    #[must_use]
    pub fn new(config: &Config, origin: OriginCheck, metrics: FilterMetrics) -> Self {
        let reinject_addr = format!(
            "{}:{}",
            config.postfix_host, config.postfix_reinject_port_incoming
        );
        Self {
            mail_domain: config.mail_domain.clone(),
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
            metrics,
        }
    }

    /// What this filter counts (the HTTP door counts its own refusals).
    #[must_use]
    pub fn metrics(&self) -> &FilterMetrics {
        &self.metrics
    }

    /// The account a recipient names: mail from outside is only for our
    /// own accounts, in their canonical form.
    pub fn local_recipient(&self, recipient: &str) -> Result<String, Reply> {
        self.recipient_account(recipient)
            .map_err(|(outcome, reply)| {
                self.metrics.count(outcome);
                reply
            })
    }

    fn recipient_account(&self, recipient: &str) -> Result<String, (Outcome, Reply)> {
        match canonical_address(recipient, &self.mail_domain) {
            Ok(EnvelopeAddress::Local(account)) => Ok(account),
            Ok(EnvelopeAddress::Remote(_)) => {
                tracing::info!("refused: recipient of another domain");
                Err((Outcome::RelayDenied, Reply::RELAY_DENIED))
            }
            Err(refusal) => {
                tracing::info!(%refusal, "refused a recipient address");
                Err((
                    Outcome::BadAddress,
                    Reply::address_refused(AddressRole::Recipient, refusal),
                ))
            }
        }
    }

    /// Checks one message and reinjects it when it passes; the reply is
    /// Postfix's answer, our refusal, or a 4xx for our own failures.
    pub async fn deliver(&self, envelope: &Envelope, message: Vec<u8>) -> Reply {
        self.metrics.received(message.len());
        let message = Arc::new(message);
        let started = Instant::now();
        let checked = self.check(envelope, &message).await;
        self.metrics.checked_in(started.elapsed());
        let reply = match checked {
            Ok(Checked::Deliver { sender, recipients }) => {
                let reply = self.reinjector.send(&sender, &recipients, &message).await;
                tracing::debug!(%reply, "reinjected");
                self.metrics.count(reinjection_outcome(&reply));
                return reply;
            }
            Ok(Checked::Discard) => {
                tracing::info!("no recipient left; accepted and discarded");
                self.metrics.count(Outcome::Discarded);
                return Reply::new(250, "2.0.0", "OK");
            }
            Err((outcome, refusal)) => {
                self.metrics.count(outcome);
                refusal
            }
        };
        if !reply.is_transient()
            && let Some(refused) = &self.refused
        {
            refused.keep(&reply, Arc::clone(&message)).await;
        }
        reply
    }

    async fn check(
        &self,
        envelope: &Envelope,
        message: &Arc<Vec<u8>>,
    ) -> Result<Checked, (Outcome, Reply)> {
        // Read before the message is examined, refused after its From is
        // (as ever): the policy needs the recipients.
        let recipients = self.active_recipients(&envelope.rcpt_to);
        let examined = {
            let message = Arc::clone(message);
            let domain = self.mail_domain.clone();
            let policy_recipients = recipients
                .as_ref()
                .map_or_else(|_| Vec::new(), Clone::clone);
            chatmail_daemon::cpu_work(message.len(), move || {
                examine(&message, &domain, &policy_recipients)
            })
            .await
        };
        let (from, verdict) = match examined {
            Ok(examined) => examined?,
            Err(error) => {
                tracing::error!(%error, "the message check failed");
                return Err((Outcome::Error, Reply::TEMPORARY_FAILURE));
            }
        };
        // Forwarders legitimately send with another envelope sender; the
        // message is taken, but a bounce must not go to a forged address.
        // Local parts are compared without case, as the From check of the
        // sender's relay and its users' clients do.
        let sender = match canonical_address(envelope.sender(), &self.mail_domain) {
            Ok(sender) if sender.as_str().eq_ignore_ascii_case(from.as_str()) => {
                sender.as_str().to_owned()
            }
            _ => {
                tracing::debug!("envelope sender differs from From; reinjecting with <>");
                String::new()
            }
        };
        let recipients = recipients?;
        if recipients.is_empty() {
            return Ok(Checked::Discard);
        }
        if let Verdict::Cleartext(reason) = verdict {
            self.check_cleartext_allowed(&recipients, reason)?;
        }
        self.check_origin(message, &from).await?;
        Ok(Checked::Deliver { sender, recipients })
    }

    /// The recipients without the disabled ones. Each door accepts local
    /// accounts only; a recipient that is none refuses the message.
    fn active_recipients(&self, rcpt_to: &[String]) -> Result<Vec<String>, (Outcome, Reply)> {
        let mut recipients = Vec::with_capacity(rcpt_to.len());
        for rcpt in rcpt_to {
            let account = self.recipient_account(rcpt)?;
            let mailbox = self.mailboxes.mailbox(&account).map_err(|error| {
                tracing::error!(%error, "a canonical account is no mailbox name");
                (Outcome::Error, Reply::TEMPORARY_FAILURE)
            })?;
            match mailbox.is_disabled() {
                Ok(true) => tracing::debug!(rcpt, "dropping disabled recipient"),
                Ok(false) => recipients.push(account),
                Err(error) => {
                    tracing::error!(%error, "cannot check whether a recipient is disabled");
                    return Err((Outcome::Error, Reply::TEMPORARY_FAILURE));
                }
            }
        }
        Ok(recipients)
    }

    /// Cleartext is delivered only when no recipient refuses it (older
    /// accounts were created without `enforceE2EEincoming`).
    fn check_cleartext_allowed(
        &self,
        recipients: &[String],
        reason: &str,
    ) -> Result<(), (Outcome, Reply)> {
        for rcpt in recipients {
            let Ok(mailbox) = self.mailboxes.mailbox(rcpt) else {
                return Err((Outcome::Error, Reply::TEMPORARY_FAILURE));
            };
            match mailbox.enforces_e2ee_incoming() {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(reason, "refused unencrypted incoming mail");
                    return Err((Outcome::NotEncrypted, ENCRYPTION_NEEDED));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read a recipient's encryption setting");
                    return Err((Outcome::Error, Reply::TEMPORARY_FAILURE));
                }
            }
        }
        Ok(())
    }

    /// Domain senders must prove their origin with DKIM; senders with a
    /// (well-formed) address literal have no DNS to publish a key in.
    async fn check_origin(
        &self,
        message: &Arc<Vec<u8>>,
        from: &EnvelopeAddress,
    ) -> Result<(), (Outcome, Reply)> {
        if from.has_address_literal() {
            return Ok(());
        }
        let OriginCheck::Dkim(verifier) = &self.origin else {
            return Ok(());
        };
        let verified = {
            let (verifier, message) = (Arc::clone(verifier), Arc::clone(message));
            let domain = from.domain().to_owned();
            chatmail_daemon::cpu_work_async(message.len(), async move {
                verifier.verify(&message, &domain).await
            })
            .await
        };
        let verified = verified.map_err(|error| {
            tracing::error!(%error, "the DKIM check failed");
            (Outcome::Error, Reply::TEMPORARY_FAILURE)
        })?;
        match verified {
            Ok(()) => Ok(()),
            // The texts of the program we replace, our detail after them.
            Err(DkimFailure::Missing(detail)) => {
                tracing::info!(%detail, "refused: no DKIM signature by the From domain");
                let text = if detail.is_empty() {
                    "No DKIM signature found".to_owned()
                } else {
                    format!("No DKIM signature found: {detail}")
                };
                Err((Outcome::DkimMissing, Reply::owned(554, "5.7.1", text)))
            }
            Err(DkimFailure::Invalid(reason)) => {
                tracing::info!(%reason, "refused: DKIM check failed");
                Err((
                    Outcome::DkimInvalid,
                    Reply::owned(
                        554,
                        "5.7.1",
                        format!("No valid DKIM signature found: {reason}"),
                    ),
                ))
            }
            Err(DkimFailure::Temporary(reason)) => {
                tracing::warn!(%reason, "DKIM key lookup failed temporarily");
                Err((
                    Outcome::DkimTempfail,
                    Reply::owned(
                        451,
                        "4.7.5",
                        format!("DKIM key lookup failed, try again later: {reason}"),
                    ),
                ))
            }
        }
    }
}

/// The From check and the encryption policy: the CPU work on the whole
/// message, parsed once for both.
fn examine(
    message: &[u8],
    mail_domain: &MailDomain,
    recipients: &[String],
) -> Result<(EnvelopeAddress, Verdict), (Outcome, Reply)> {
    let parsed = ParsedMessage::parse(message);
    let from = checked_from(mail_domain, parsed.from_address())
        .map_err(|reply| (Outcome::FromMismatch, reply))?;
    let policy = chatmail_e2ee::Envelope {
        mail_from: from.as_str(),
        rcpt_to: recipients,
    };
    let verdict = parsed.classify(&policy, chatmail_e2ee::Direction::Incoming);
    // The lines existing dashboards (mtail) count, once per message (the
    // sender's domain only: addresses go to debug level).
    match verdict {
        Verdict::Encrypted => tracing::info!("Incoming: Filtering encrypted mail."),
        Verdict::MailerDaemonReport => {
            tracing::info!(
                "Incoming: Filtering mailer-daemon message from *@{}",
                from.domain()
            );
        }
        _ => tracing::info!("Incoming: Filtering unencrypted mail."),
    }
    Ok((from, verdict))
}

/// The From header's address in canonical form: one of another domain,
/// or a well-formed address literal.
fn checked_from(mail_domain: &MailDomain, from: Option<String>) -> Result<EnvelopeAddress, Reply> {
    let Some(from) = from else {
        tracing::info!("refused: no usable From header");
        return Err(BAD_FROM);
    };
    match canonical_address(&from, mail_domain) {
        Ok(EnvelopeAddress::Local(_)) => {
            tracing::info!("refused: From address of this relay from outside");
            Err(OWN_DOMAIN_FROM)
        }
        Ok(remote) => Ok(remote),
        Err(refusal) => {
            tracing::info!(%refusal, "refused: invalid From address");
            Err(Reply::owned(
                500,
                "",
                format!("Invalid from address <{from}>: {refusal}"),
            ))
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
    async fn rcpt_to(&self, _envelope: &Envelope, recipient: &str) -> Result<String, Reply> {
        self.local_recipient(recipient)
    }

    async fn data(&self, envelope: Envelope, message: Vec<u8>) -> DataOutcome {
        DataOutcome::Message(self.deliver(&envelope, message).await)
    }
}
