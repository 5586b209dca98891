//! One SMTP or LMTP server session: an explicit state machine over
//! smtp-proto's command parser that hands each complete transaction to a
//! [`SmtpHandler`].

use std::future::Future;
use std::time::Duration;

use smtp_proto::{Error as ParseError, Request};

use crate::command::parse_command;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use chatmail_daemon::{MessageBudget, Reservation};

use crate::counters::SessionCounters;
use crate::data::{DataError, DataReader};
use crate::line::{Line, LineFramer};
use crate::rate::MinRate;
use crate::reply::Reply;
use crate::step::{step_timer, within};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    /// RFC 2033: LHLO instead of EHLO, one reply per recipient after DATA.
    Lmtp,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub protocol: Protocol,
    /// Announced in the greeting and EHLO reply.
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// How long to wait for the next command.
    pub command_timeout: Duration,
    /// How long to wait for more message data.
    pub data_timeout: Duration,
    /// How long the handler may take for one message. Postfix gives a
    /// before-queue filter 100 s (smtpd_proxy_timeout); answering 4xx
    /// well before that avoids a timeout after which the client resends.
    pub handler_timeout: Duration,
    /// Protocol errors tolerated before the connection is closed.
    pub max_errors: usize,
    /// How long a write may wait for the peer to read: a peer that stops
    /// reading must not hold its connection slot.
    pub write_timeout: Duration,
    /// The longest a session may last, however busy: a peer trickling
    /// commands just within each timeout still lets go of its slot.
    pub session_deadline: Duration,
    /// The daemon's budget for message bytes held at once (shared by all
    /// sessions of the daemon).
    pub budget: MessageBudget,
    /// Whose share of the budget a message counts against.
    pub share_by: ShareBy,
    /// A message body slower than this is cut off with a 4xx.
    pub min_rate: MinRate,
    /// Where the session counts connections and its own refusals.
    pub counters: SessionCounters,
}

impl SessionConfig {
    #[must_use]
    pub fn new(protocol: Protocol, hostname: impl Into<String>, max_message_size: usize) -> Self {
        Self {
            protocol,
            hostname: hostname.into(),
            max_message_size,
            max_recipients: 1000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(300),
            handler_timeout: Duration::from_secs(60),
            max_errors: 20,
            write_timeout: Duration::from_secs(60),
            session_deadline: Duration::from_secs(30 * 60),
            budget: MessageBudget::unlimited(),
            share_by: ShareBy::ClientAddress,
            min_rate: MinRate::default(),
            counters: SessionCounters::default(),
        }
    }
}

/// Who a message's bytes are charged to, for the fair share of the
/// daemon's message budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareBy {
    /// The client Postfix names with XFORWARD ADDR (a peer that names none
    /// is not bounded by a share: the filters' only peer is Postfix).
    ClientAddress,
    /// The envelope sender: the account, behind submission.
    Sender,
}

/// The per-transaction state that RSET, EHLO and a finished DATA reset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// `None` until MAIL; `Some("")` for the null reverse path.
    pub mail_from: Option<String>,
    pub rcpt_to: Vec<String>,
}

impl Envelope {
    #[must_use]
    pub fn sender(&self) -> &str {
        self.mail_from.as_deref().unwrap_or_default()
    }
}

/// The answer to a complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataOutcome {
    /// One answer for the whole message (for every recipient in LMTP).
    Message(Reply),
    /// LMTP: one answer per recipient, in RCPT order.
    PerRecipient(Vec<Reply>),
}

/// What a daemon does at each phase of a transaction.
pub trait SmtpHandler: Send + Sync + 'static {
    /// Called for MAIL; an error reply refuses the sender. What it returns
    /// is the sender the transaction records (a handler may canonicalise
    /// it); the null reverse path arrives as `""`.
    fn mail_from(&self, sender: &str) -> impl Future<Output = Result<String, Reply>> + Send {
        let sender = sender.to_owned();
        async { Ok(sender) }
    }

    /// Called for each RCPT; an error reply refuses that recipient. What
    /// it returns is the recipient the transaction records.
    fn rcpt_to(
        &self,
        envelope: &Envelope,
        recipient: &str,
    ) -> impl Future<Output = Result<String, Reply>> + Send {
        let _ = envelope;
        let recipient = recipient.to_owned();
        async { Ok(recipient) }
    }

    /// Called with the complete, unstuffed message (CRLF line endings).
    fn data(
        &self,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> impl Future<Output = DataOutcome> + Send;
}

enum State {
    Command,
    Data(Box<DataReader>),
}

enum Step {
    Continue,
    Close,
}

struct Session<'a, H> {
    handler: &'a H,
    config: &'a SessionConfig,
    envelope: Envelope,
    /// The budget this transaction's message holds.
    reservation: Reservation,
    /// The client address Postfix passed with XFORWARD.
    client_address: Option<String>,
    /// When the current message's data began, and how many bytes of it
    /// have arrived (for the minimum rate).
    data_started: tokio::time::Instant,
    data_received: usize,
    greeted: bool,
    errors: usize,
    out: Vec<u8>,
}

const READ_BUFFER: usize = 16 * 1024;

/// Serves one connection until QUIT, a timeout, too many errors, EOF or
/// the session deadline.
pub async fn run_session<S, H>(stream: S, handler: &H, config: &SessionConfig)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: SmtpHandler,
{
    let mut stream = stream;
    let served = tokio::time::timeout(
        config.session_deadline,
        serve_commands(&mut stream, handler, config),
    )
    .await;
    if served.is_err() {
        let mut out = Vec::new();
        Reply::SESSION_TOO_LONG.write_to(&mut out);
        let _ = write_within(&mut stream, &out, config.write_timeout).await;
    }
}

/// Writes `bytes`, unless the peer does not take them within `limit`.
async fn write_within<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> bool {
    matches!(
        tokio::time::timeout(limit, stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

async fn serve_commands<S, H>(stream: &mut S, handler: &H, config: &SessionConfig)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: SmtpHandler,
{
    let mut session = Session {
        handler,
        config,
        envelope: Envelope::default(),
        reservation: config.budget.reservation(),
        client_address: None,
        data_started: tokio::time::Instant::now(),
        data_received: 0,
        greeted: false,
        errors: 0,
        out: Vec::new(),
    };
    let greeting = match config.protocol {
        Protocol::Smtp => format!("220 {} ESMTP\r\n", config.hostname),
        Protocol::Lmtp => format!("220 {} LMTP\r\n", config.hostname),
    };
    if !write_within(stream, greeting.as_bytes(), config.write_timeout).await {
        return;
    }
    // One timer for all reads (see `crate::step`). Writes keep a timer of
    // their own each: it is registered only if the write waits, and
    // replies rarely do.
    let reads = step_timer();
    tokio::pin!(reads);
    let mut lines = LineFramer::default();
    let mut state = State::Command;
    // Read into without zeroing it first: Postfix's before-queue filter
    // connections often carry one message each.
    let mut buffer = Vec::with_capacity(READ_BUFFER);
    loop {
        let wait = match state {
            State::Command => config.command_timeout,
            State::Data(_) => config.data_timeout.min(session.data_rate_deadline()),
        };
        buffer.clear();
        let read = match within(reads.as_mut(), wait, stream.read_buf(&mut buffer)).await {
            None => {
                let reply = match state {
                    State::Data(_) if wait < config.data_timeout => {
                        config.counters.too_slow.inc();
                        Reply::TOO_SLOW
                    }
                    _ => Reply::TIMEOUT,
                };
                reply.write_to(&mut session.out);
                let _ = write_within(stream, &session.out, config.write_timeout).await;
                return;
            }
            Some(Ok(0) | Err(_)) => return,
            Some(Ok(read)) => read,
        };
        if matches!(state, State::Data(_)) {
            session.data_received = session.data_received.saturating_add(read);
        }
        let mut input = buffer.iter();
        let mut step = Step::Continue;
        while matches!(step, Step::Continue) && !input.as_slice().is_empty() {
            step = match &mut state {
                State::Command => match lines.next_line(&mut input) {
                    Line::NeedMore => break,
                    Line::TooLong => session.error(&Reply::LINE_TOO_LONG),
                    Line::Complete(line) => match xforward_attributes(&line) {
                        Some(attributes) => session.xforward(attributes),
                        None => match parse_command(&line) {
                            Ok(request) => session.command(request, &mut state).await,
                            Err(error) => session.protocol_error(&error),
                        },
                    },
                },
                State::Data(reader) => {
                    // Bytes are reserved before they are buffered.
                    if reader.is_storing() {
                        let needed = reader.buffered() + input.as_slice().len();
                        if !session.reservation.cover(needed).await {
                            tracing::warn!("message budget spent; refusing a message for now");
                            reader.refuse(DataError::NoMemory);
                            session.reservation = config.budget.reservation();
                        }
                    }
                    match reader.ingest(&mut input) {
                        None => break,
                        Some(result) => {
                            state = State::Command;
                            session.finish_data(result).await;
                            Step::Continue
                        }
                    }
                }
            };
        }
        // Everything the client pipelined in this read is answered at once.
        if !session.out.is_empty() {
            if !write_within(stream, &session.out, config.write_timeout).await {
                return;
            }
            session.out.clear();
        }
        if matches!(step, Step::Close) {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

impl<H: SmtpHandler> Session<'_, H> {
    fn reply(&mut self, reply: &Reply) {
        reply.write_to(&mut self.out);
    }

    fn error(&mut self, reply: &Reply) -> Step {
        self.reply(reply);
        self.errors += 1;
        if self.errors > self.config.max_errors {
            self.reply(&Reply::TOO_MANY_ERRORS);
            return Step::Close;
        }
        Step::Continue
    }

    fn protocol_error(&mut self, error: &ParseError) -> Step {
        let reply = match error {
            ParseError::ResponseTooLong => Reply::LINE_TOO_LONG,
            ParseError::UnknownCommand => Reply::UNKNOWN_COMMAND,
            ParseError::InvalidSenderAddress => Reply::BAD_SENDER,
            ParseError::InvalidRecipientAddress => Reply::BAD_RECIPIENT,
            ParseError::InvalidParameter { .. } | ParseError::UnsupportedParameter { .. } => {
                Reply::UNSUPPORTED_PARAMETER
            }
            _ => Reply::SYNTAX_ERROR,
        };
        self.error(&reply)
    }

    fn ehlo_reply(&self) -> Reply {
        let text = format!(
            "{}\nPIPELINING\n8BITMIME\nSIZE {}\nENHANCEDSTATUSCODES\nSMTPUTF8\nXFORWARD ADDR",
            self.config.hostname, self.config.max_message_size
        );
        Reply::owned(250, "", text)
    }

    /// Postfix's XFORWARD (sent to a proxy filter that announces it):
    /// the client it speaks for. Only ADDR is kept.
    fn xforward(&mut self, attributes: Vec<(String, String)>) -> Step {
        if !self.greeted || self.envelope.mail_from.is_some() {
            return self.error(&Reply::BAD_SEQUENCE);
        }
        for (name, value) in attributes {
            if name.eq_ignore_ascii_case("ADDR") {
                // Postfix's words for an address it does not know.
                let known = !value.starts_with('[') && value.len() <= MAX_CLIENT_ADDRESS;
                self.client_address = known.then_some(value);
            }
        }
        self.reply(&Reply::OK);
        Step::Continue
    }

    /// An empty reservation for the message about to start, charged to
    /// its client.
    fn message_reservation(&self) -> Reservation {
        let client = match self.config.share_by {
            ShareBy::ClientAddress => self.client_address.as_deref(),
            ShareBy::Sender => self.envelope.mail_from.as_deref(),
        };
        match client {
            Some(client) => self.config.budget.reservation_for(client),
            None => self.config.budget.reservation(),
        }
    }

    /// How much longer the current body may take to reach the minimum
    /// rate with the bytes it has sent.
    fn data_rate_deadline(&self) -> Duration {
        self.config
            .min_rate
            .allowed_time(self.data_received)
            .saturating_sub(self.data_started.elapsed())
    }

    async fn command(&mut self, request: Request<String>, state: &mut State) -> Step {
        let lmtp = self.config.protocol == Protocol::Lmtp;
        match request {
            Request::Ehlo { .. } if !lmtp => {
                self.greeted = true;
                self.envelope = Envelope::default();
                let reply = self.ehlo_reply();
                self.reply(&reply);
            }
            Request::Lhlo { .. } if lmtp => {
                self.greeted = true;
                self.envelope = Envelope::default();
                let reply = self.ehlo_reply();
                self.reply(&reply);
            }
            Request::Helo { .. } if !lmtp => {
                self.greeted = true;
                self.envelope = Envelope::default();
                let reply = Reply::owned(250, "", self.config.hostname.clone());
                self.reply(&reply);
            }
            Request::Ehlo { .. } | Request::Lhlo { .. } | Request::Helo { .. } => {
                return self.error(&Reply::UNKNOWN_COMMAND);
            }
            Request::Mail { from } => {
                if !self.greeted {
                    return self.error(&Reply::NEED_HELO);
                }
                if self.envelope.mail_from.is_some() {
                    return self.error(&Reply::NESTED_MAIL);
                }
                if from.size > self.config.max_message_size {
                    self.config.counters.too_large.inc();
                    self.reply(&Reply::MESSAGE_TOO_BIG);
                    return Step::Continue;
                }
                match self.handler.mail_from(&from.address).await {
                    Ok(sender) => {
                        self.envelope.mail_from = Some(sender);
                        self.reply(&Reply::SENDER_OK);
                    }
                    Err(reply) => self.reply(&reply),
                }
            }
            Request::Rcpt { to } => {
                if self.envelope.mail_from.is_none() {
                    return self.error(&Reply::NEED_MAIL);
                }
                if self.envelope.rcpt_to.len() >= self.config.max_recipients {
                    self.reply(&Reply::TOO_MANY_RECIPIENTS);
                    return Step::Continue;
                }
                match self.handler.rcpt_to(&self.envelope, &to.address).await {
                    Ok(recipient) => {
                        self.envelope.rcpt_to.push(recipient);
                        self.reply(&Reply::RECIPIENT_OK);
                    }
                    Err(reply) => self.reply(&reply),
                }
            }
            Request::Data => {
                if self.envelope.mail_from.is_none() {
                    return self.error(&Reply::NEED_MAIL);
                }
                if self.envelope.rcpt_to.is_empty() {
                    return self.error(&Reply::NEED_RCPT);
                }
                // Bytes are reserved as they arrive, never for a declared
                // size: a peer that announces much and sends little holds
                // little.
                self.reservation = self.message_reservation();
                self.data_started = tokio::time::Instant::now();
                self.data_received = 0;
                self.reply(&Reply::START_DATA);
                *state = State::Data(Box::new(DataReader::new(self.config.max_message_size)));
            }
            Request::Rset => {
                self.envelope = Envelope::default();
                self.reply(&Reply::RESET);
            }
            Request::Noop { .. } => self.reply(&Reply::OK),
            Request::Vrfy { .. } => self.reply(&Reply::CANNOT_VERIFY),
            Request::Quit => {
                self.reply(&Reply::BYE);
                return Step::Close;
            }
            _ => return self.error(&Reply::NOT_IMPLEMENTED),
        }
        Step::Continue
    }

    async fn finish_data(&mut self, result: Result<Vec<u8>, DataError>) {
        let envelope = std::mem::take(&mut self.envelope);
        // The message keeps its bytes of the budget until it is handled.
        let _reservation =
            std::mem::replace(&mut self.reservation, self.config.budget.reservation());
        let recipients = envelope.rcpt_to.len();
        let counters = &self.config.counters;
        let outcome = match result {
            Err(DataError::TooBig) => {
                counters.too_large.inc();
                DataOutcome::Message(Reply::MESSAGE_TOO_BIG)
            }
            Err(DataError::BareNewline) => {
                counters.malformed.inc();
                DataOutcome::Message(Reply::BARE_NEWLINE)
            }
            Err(DataError::NoMemory) => {
                counters.busy.inc();
                DataOutcome::Message(Reply::NO_MEMORY)
            }
            Ok(message) => {
                let check = self.handler.data(envelope, message);
                match tokio::time::timeout(self.config.handler_timeout, check).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        tracing::warn!("message check timed out");
                        counters.timed_out.inc();
                        DataOutcome::Message(Reply::CHECK_TIMEOUT)
                    }
                }
            }
        };
        match (self.config.protocol, outcome) {
            (Protocol::Smtp, DataOutcome::Message(reply)) => self.reply(&reply),
            (Protocol::Smtp, DataOutcome::PerRecipient(replies)) => {
                let reply = replies
                    .into_iter()
                    .next()
                    .unwrap_or(Reply::TEMPORARY_FAILURE);
                self.reply(&reply);
            }
            (Protocol::Lmtp, DataOutcome::Message(reply)) => {
                for _ in 0..recipients {
                    self.reply(&reply);
                }
            }
            (Protocol::Lmtp, DataOutcome::PerRecipient(replies)) => {
                let mut replies = replies.into_iter();
                for _ in 0..recipients {
                    let reply = replies.next().unwrap_or(Reply::TEMPORARY_FAILURE);
                    self.reply(&reply);
                }
            }
        }
    }
}

/// The longest client address XFORWARD may name (an IPv6 address with
/// its `IPV6:` prefix is about 50).
const MAX_CLIENT_ADDRESS: usize = 64;

/// The `NAME=value` attributes of an XFORWARD command line, or `None`
/// when the line is another command. Values are xtext (RFC 3461), which
/// Postfix uses only for characters an address never has.
fn xforward_attributes(line: &[u8]) -> Option<Vec<(String, String)>> {
    // Every command line passes here: most are told apart by their verb.
    let verb = line.get(..9)?;
    if !verb.eq_ignore_ascii_case(b"XFORWARD ") {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    let text = text.trim_end_matches(['\r', '\n']);
    let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !verb.eq_ignore_ascii_case("XFORWARD") {
        return None;
    }
    Some(
        rest.split_ascii_whitespace()
            .filter_map(|attribute| attribute.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
    )
}
