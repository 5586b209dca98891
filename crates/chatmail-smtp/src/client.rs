//! Reinjection into Postfix: a small SMTP client with a pool of reusable
//! connections that pipelines the envelope when the server offers it, and
//! sends a one-recipient message with it as one BDAT chunk when CHUNKING
//! is offered too.
//! Postfix's own answer is returned exactly; our failures become 4xx so
//! that nothing is lost.

use std::borrow::Cow;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{EXT_CHUNKING, EXT_PIPELINING, EhloResponse};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::reply::Reply;
use crate::step::{step_timer, within};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("timed out")]
    Timeout,
    #[error("unexpected reply: {0}")]
    Unexpected(String),
    /// A 421 before anything was committed: the server closes the
    /// connection (an idle one it timed out, or a shutdown).
    #[error("server closing the connection: {0}")]
    Closing(String),
}

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole reply, all its lines: an EHLO answer takes well under 1 KiB
/// (RFC 5321 4.5.3.1.5 allows 512 octets a line). Every byte read from a
/// server counts against this before it is buffered, so a server that
/// streams an endless line or endless continuation lines costs no more.
pub const MAX_REPLY_BYTES: usize = 16 * 1024;

struct Connection {
    stream: BufReader<TcpStream>,
    pipelining: bool,
    /// RFC 3030 BDAT, which Postfix's smtpd offers by default.
    chunking: bool,
    /// The time limit of each read (see [`crate::step`]).
    reads: Pin<Box<Sleep>>,
}

/// Where the failure happened: before the message was committed (safe to
/// retry on a fresh connection) or after (must not be resent).
enum Failure {
    BeforeCommit(ClientError),
    AfterCommit(ClientError),
}

impl Connection {
    async fn open(addr: &str, helo: &str) -> Result<Self, ClientError> {
        let stream = timed(TcpStream::connect(addr)).await??;
        let _ = stream.set_nodelay(true);
        let mut connection = Self {
            stream: BufReader::new(stream),
            pipelining: false,
            chunking: false,
            reads: Box::pin(step_timer()),
        };
        let (greeting, _) = connection.read_reply().await?;
        if greeting.code != 220 {
            return Err(ClientError::Unexpected(greeting.to_string()));
        }
        connection
            .write(format!("EHLO {helo}\r\n").as_bytes())
            .await?;
        let (ehlo, raw) = connection.read_reply().await?;
        if ehlo.code != 250 {
            return Err(ClientError::Unexpected(ehlo.to_string()));
        }
        let capabilities =
            EhloResponse::parse(&mut raw.iter()).map_or(0, |response| response.capabilities);
        connection.pipelining = capabilities & EXT_PIPELINING != 0;
        connection.chunking = capabilities & EXT_CHUNKING != 0;
        Ok(connection)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        write_command(self.stream.get_mut(), bytes).await
    }

    async fn read_reply(&mut self) -> Result<(Reply, Vec<u8>), ClientError> {
        read_reply_on(&mut self.stream, self.reads.as_mut()).await
    }

    /// The answer to a transaction's first command. A 421 there refuses
    /// nothing: the server is closing the connection (Postfix answers
    /// every command of a session it timed out so), and a fresh one may
    /// carry the message.
    async fn read_first_reply(&mut self) -> Result<Reply, ClientError> {
        let (reply, _) = self.read_reply().await?;
        if reply.code == 421 {
            return Err(ClientError::Closing(reply.to_string()));
        }
        Ok(reply)
    }

    /// Whether the server has hung up or spoken on this idle connection
    /// (Postfix says 421 and closes after smtpd_timeout): then it cannot
    /// carry a transaction.
    fn closed_while_idle(&self) -> bool {
        if !self.stream.buffer().is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        !matches!(
            self.stream.get_ref().try_read(&mut probe),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock
        )
    }

    /// Runs one transaction; the flag says whether the connection may be
    /// reused afterwards.
    async fn transaction(
        &mut self,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[u8],
    ) -> Result<(Reply, bool), Failure> {
        let before = Failure::BeforeCommit;
        let commands = EnvelopeCommands::new(mail_from, rcpt_to);
        // With one recipient the whole transaction goes out in one write
        // and its answers come back in one read: a refused MAIL or RCPT
        // leaves no valid recipient, so the server refuses the BDAT too and
        // nothing is delivered. With more, a refused RCPT next to accepted
        // ones would deliver to those before we could stop it.
        if self.pipelining && self.chunking && rcpt_to.len() == 1 {
            return self.chunked_transaction(commands, message).await;
        }
        let mut refusal = None;
        if self.pipelining {
            let mut batch = commands.bytes;
            batch.extend_from_slice(b"DATA\r\n");
            self.write(&batch).await.map_err(before)?;
            for answered in 0..commands.ends.len() {
                let reply = if answered == 0 {
                    self.read_first_reply().await
                } else {
                    self.read_reply().await.map(|(reply, _)| reply)
                }
                .map_err(before)?;
                if !reply.is_positive() && refusal.is_none() {
                    refusal = Some(reply);
                }
            }
            let (data, _) = self.read_reply().await.map_err(before)?;
            if let Some(refusal) = refusal {
                if data.code == 354 {
                    // The server wants the message now; the only way to
                    // not deliver it to the other recipients is to hang up.
                    return Ok((refusal, false));
                }
                self.reset().await.map_err(before)?;
                return Ok((refusal, true));
            }
            if data.code != 354 {
                self.reset().await.map_err(before)?;
                return Ok((data, true));
            }
        } else {
            for (n, command) in commands.each().enumerate() {
                self.write(command).await.map_err(before)?;
                let reply = if n == 0 {
                    self.read_first_reply().await
                } else {
                    self.read_reply().await.map(|(reply, _)| reply)
                }
                .map_err(before)?;
                if !reply.is_positive() {
                    self.reset().await.map_err(before)?;
                    return Ok((reply, true));
                }
            }
            self.write(b"DATA\r\n").await.map_err(before)?;
            let (data, _) = self.read_reply().await.map_err(before)?;
            if data.code != 354 {
                self.reset().await.map_err(before)?;
                return Ok((data, true));
            }
        }
        let after = Failure::AfterCommit;
        timed(write_data(self.stream.get_mut(), message))
            .await
            .and_then(|written| written.map_err(ClientError::from))
            .map_err(after)?;
        let (reply, _) = self.read_reply().await.map_err(after)?;
        Ok((reply, true))
    }

    /// MAIL, RCPT and `BDAT n LAST` with the message, pipelined. The
    /// message goes as it is (BDAT needs no dot-stuffing), ending in CRLF
    /// as in DATA form.
    async fn chunked_transaction(
        &mut self,
        commands: EnvelopeCommands,
        message: &[u8],
    ) -> Result<(Reply, bool), Failure> {
        let line_end: &[u8] = if message.ends_with(b"\r\n") || message.is_empty() {
            b""
        } else {
            b"\r\n"
        };
        let size = message.len() + line_end.len();
        let in_one_write = message.len() <= STUFF_IN_ONE_WRITE;
        let mut batch = commands.bytes;
        batch.reserve(32 + if in_one_write { size } else { 0 });
        // Writing into a Vec cannot fail.
        let _ = write!(batch, "BDAT {size} LAST\r\n");
        let written = if in_one_write {
            batch.extend_from_slice(message);
            batch.extend_from_slice(line_end);
            self.write(&batch).await
        } else {
            self.write_all_of(&[&batch, message, line_end]).await
        };
        // Until the server has answered anything, a failure is most
        // likely a pooled connection it closed while idle, so a fresh
        // connection may send the message again (at worst twice, as when
        // a final reply is lost, never not at all). Once it has answered,
        // the message may be queued whatever follows.
        written.map_err(Failure::BeforeCommit)?;
        let mut refusal = None;
        for answered in 0..commands.ends.len() {
            let reply = if answered == 0 {
                self.read_first_reply()
                    .await
                    .map_err(Failure::BeforeCommit)?
            } else {
                self.read_reply().await.map_err(Failure::AfterCommit)?.0
            };
            if !reply.is_positive() && refusal.is_none() {
                refusal = Some(reply);
            }
        }
        let (chunk, _) = self.read_reply().await.map_err(Failure::AfterCommit)?;
        // The first refusal says why; the BDAT's answer to a transaction
        // left without recipients would only repeat it vaguely.
        Ok((refusal.unwrap_or(chunk), true))
    }

    async fn write_all_of(&mut self, pieces: &[&[u8]]) -> Result<(), ClientError> {
        for piece in pieces {
            self.write(piece).await?;
        }
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), ClientError> {
        self.write(b"RSET\r\n").await?;
        self.read_reply().await.map(drop)
    }
}

/// MAIL and RCPT commands of one transaction, written into one buffer
/// (sent whole when pipelining, command by command otherwise).
struct EnvelopeCommands {
    bytes: Vec<u8>,
    /// Where each command ends in `bytes`.
    ends: Vec<usize>,
}

impl EnvelopeCommands {
    fn new(mail_from: &str, rcpt_to: &[String]) -> Self {
        // Room for the commands' fixed text too, and the DATA a
        // pipelining client appends.
        let addresses = mail_from.len() + rcpt_to.iter().map(String::len).sum::<usize>();
        let mut bytes = Vec::with_capacity(addresses + 48 + 16 * rcpt_to.len());
        let mut ends = Vec::with_capacity(rcpt_to.len() + 1);
        bytes.extend_from_slice(b"MAIL FROM:<");
        bytes.extend_from_slice(mail_from.as_bytes());
        bytes.extend_from_slice(b"> BODY=8BITMIME");
        if !mail_from.is_ascii() || rcpt_to.iter().any(|rcpt| !rcpt.is_ascii()) {
            bytes.extend_from_slice(b" SMTPUTF8");
        }
        bytes.extend_from_slice(b"\r\n");
        ends.push(bytes.len());
        for rcpt in rcpt_to {
            bytes.extend_from_slice(b"RCPT TO:<");
            bytes.extend_from_slice(rcpt.as_bytes());
            bytes.extend_from_slice(b">\r\n");
            ends.push(bytes.len());
        }
        Self { bytes, ends }
    }

    fn each(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| self.bytes.get(start..end).unwrap_or_default())
    }
}

/// Reads one possibly multi-line SMTP reply, returning it and its raw
/// bytes; each line must come within the step timeout, the whole reply
/// within [`MAX_REPLY_BYTES`].
pub async fn read_reply<R: AsyncBufRead + Unpin>(
    stream: &mut R,
) -> Result<(Reply, Vec<u8>), ClientError> {
    let timer = step_timer();
    tokio::pin!(timer);
    read_reply_on(stream, timer.as_mut()).await
}

/// As [`read_reply`], on a timer the caller keeps.
async fn read_reply_on<R: AsyncBufRead + Unpin>(
    stream: &mut R,
    mut timer: Pin<&mut Sleep>,
) -> Result<(Reply, Vec<u8>), ClientError> {
    // Room for a usual one-line reply.
    let mut raw = Vec::with_capacity(64);
    loop {
        let before = raw.len();
        // One byte more than allowed tells an overrun from a reply that
        // fills the limit exactly.
        let allowed = (MAX_REPLY_BYTES + 1 - before) as u64;
        let mut limited = (&mut *stream).take(allowed);
        let line = limited.read_until(b'\n', &mut raw);
        let read = within(timer.as_mut(), STEP_TIMEOUT, line)
            .await
            .ok_or(ClientError::Timeout)??;
        if read == 0 {
            return Err(ClientError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        if raw.len() > MAX_REPLY_BYTES {
            return Err(ClientError::Unexpected("reply too long".into()));
        }
        let line = raw.get(before..).unwrap_or_default();
        if line.get(3) != Some(&b'-') {
            break;
        }
    }
    let response = ResponseReceiver::default()
        .parse(&mut raw.iter())
        .map_err(|_| ClientError::Unexpected(String::from_utf8_lossy(&raw).into_owned()))?;
    let reply = Reply {
        code: response.code,
        enhanced: enhanced_code(response.esc),
        text: response.message.into(),
    };
    Ok((reply, raw))
}

/// RFC 3463 `class.subject.detail`; the codes of a usual transaction
/// need no allocation.
fn enhanced_code(code: [u8; 3]) -> Cow<'static, str> {
    match code {
        [0, _, _] => Cow::Borrowed(""),
        [2, 0, 0] => Cow::Borrowed("2.0.0"),
        [2, 1, 0] => Cow::Borrowed("2.1.0"),
        [2, 1, 5] => Cow::Borrowed("2.1.5"),
        [class, subject, detail] => Cow::Owned(format!("{class}.{subject}.{detail}")),
    }
}

/// Writes `bytes` and flushes them within the step timeout. The flush
/// matters on TLS: a write that finds the socket full leaves the last
/// records in rustls's buffer, and the server would wait for them while
/// we wait for its reply.
pub async fn write_command<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> Result<(), ClientError> {
    timed(async {
        writer.write_all(bytes).await?;
        writer.flush().await
    })
    .await??;
    Ok(())
}

async fn timed<F: std::future::Future>(future: F) -> Result<F::Output, ClientError> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| ClientError::Timeout)
}

/// Where the lines that start with a dot start. Searched as LF and dot
/// together, which are rare together, not line by line.
fn dot_line_starts(message: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let first = (message.first() == Some(&b'.')).then_some(0);
    let others = memchr::memmem::find_iter(message, b"\n.").map(|line_end| line_end + 1);
    first.into_iter().chain(others)
}

/// The message in DATA form: leading dots doubled, ending in CRLF, then
/// the terminating dot line.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    // Runs of lines are copied whole; only a line starting with a dot
    // gets its extra dot.
    let mut copied = 0;
    for start in dot_line_starts(message) {
        out.extend_from_slice(message.get(copied..start).unwrap_or_default());
        out.push(b'.');
        copied = start;
    }
    out.extend_from_slice(message.get(copied..).unwrap_or_default());
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Messages up to this size are copied into one buffer (dot-stuffed for
/// DATA, behind the commands for BDAT) and sent in one write; larger ones
/// are written piece by piece, never copied whole.
const STUFF_IN_ONE_WRITE: usize = 64 * 1024;

/// Writes `message` in DATA form (see [`dot_stuff`]) and flushes it (see
/// [`write_command`]).
pub async fn write_data<W: AsyncWrite + Unpin>(writer: &mut W, message: &[u8]) -> io::Result<()> {
    if message.len() <= STUFF_IN_ONE_WRITE {
        writer.write_all(&dot_stuff(message)).await?;
        return writer.flush().await;
    }
    let mut written = 0;
    for start in dot_line_starts(message) {
        writer
            .write_all(message.get(written..start).unwrap_or_default())
            .await?;
        writer.write_all(b".").await?;
        written = start;
    }
    writer
        .write_all(message.get(written..).unwrap_or_default())
        .await?;
    let end: &[u8] = if message.ends_with(b"\r\n") {
        b".\r\n"
    } else {
        b"\r\n.\r\n"
    };
    writer.write_all(end).await?;
    writer.flush().await
}

/// Sends messages to one SMTP server, keeping idle connections for reuse.
pub struct Reinjector {
    addr: String,
    helo: String,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

impl Reinjector {
    #[must_use]
    pub fn new(addr: impl Into<String>, helo: impl Into<String>, max_idle: usize) -> Self {
        Self {
            addr: addr.into(),
            helo: helo.into(),
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// An idle connection the server has not closed meanwhile.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(connection) = idle.pop() {
            if !connection.closed_while_idle() {
                return Some(connection);
            }
        }
        None
    }

    fn put_idle(&self, connection: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(connection);
        }
    }

    /// Sends one message. Returns the server's reply to it (which may be a
    /// refusal), or a 4xx when we could not get an answer, so the sender
    /// keeps the message and tries again.
    pub async fn send(&self, mail_from: &str, rcpt_to: &[String], message: &[u8]) -> Reply {
        // A pooled connection may have been closed by the server while
        // idle; then one fresh attempt follows.
        let mut pooled = self.take_idle();
        loop {
            let reused = pooled.is_some();
            let mut connection = match pooled.take() {
                Some(connection) => connection,
                None => match Connection::open(&self.addr, &self.helo).await {
                    Ok(connection) => connection,
                    Err(error) => {
                        tracing::warn!(addr = %self.addr, %error, "cannot connect for reinjection");
                        return Reply::new(
                            451,
                            "4.4.1",
                            "Cannot reach the mail queue, try again later",
                        );
                    }
                },
            };
            match connection.transaction(mail_from, rcpt_to, message).await {
                Ok((reply, reusable)) => {
                    if reusable {
                        self.put_idle(connection);
                    }
                    return reply;
                }
                Err(Failure::BeforeCommit(error)) if reused => {
                    tracing::debug!(%error, "pooled reinjection connection failed; reconnecting");
                }
                Err(Failure::BeforeCommit(error) | Failure::AfterCommit(error)) => {
                    tracing::warn!(addr = %self.addr, %error, "reinjection failed");
                    return Reply::new(
                        451,
                        "4.4.2",
                        "Lost the connection to the mail queue, try again later",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        ClientError, EnvelopeCommands, MAX_REPLY_BYTES, dot_stuff, enhanced_code, read_reply,
    };

    #[test]
    fn envelope_commands_whole_and_one_by_one() {
        let rcpts = ["a@example.org".to_owned(), "b@example.org".to_owned()];
        let commands = EnvelopeCommands::new("s@example.org", &rcpts);
        let expected = [
            "MAIL FROM:<s@example.org> BODY=8BITMIME\r\n",
            "RCPT TO:<a@example.org>\r\n",
            "RCPT TO:<b@example.org>\r\n",
        ];
        assert_eq!(commands.bytes, expected.concat().as_bytes());
        let each: Vec<&[u8]> = commands.each().collect();
        let expected: Vec<&[u8]> = expected.iter().map(|command| command.as_bytes()).collect();
        assert_eq!(each, expected);
        let utf8 = EnvelopeCommands::new("", &["ü@example.org".to_owned()]);
        assert!(
            utf8.bytes
                .starts_with(b"MAIL FROM:<> BODY=8BITMIME SMTPUTF8\r\n")
        );
    }

    #[test]
    fn enhanced_codes_are_spelled_out() {
        assert_eq!(enhanced_code([0, 0, 0]), "");
        assert_eq!(enhanced_code([2, 1, 5]), "2.1.5");
        assert_eq!(enhanced_code([5, 7, 1]), "5.7.1");
        assert_eq!(enhanced_code([4, 4, 21]), "4.4.21");
    }

    async fn read(bytes: &[u8]) -> Result<(u16, String), ClientError> {
        let mut reader = tokio::io::BufReader::new(bytes);
        read_reply(&mut reader)
            .await
            .map(|(reply, _)| (reply.code, reply.text.into_owned()))
    }

    #[tokio::test]
    async fn replies_are_bounded_before_they_are_buffered() {
        assert_eq!(
            read(b"250-first\r\n250 second\r\n").await.ok(),
            Some((250, "first\nsecond".to_owned()))
        );
        // One endless line, and endless continuation lines.
        let endless_line = [b"220 ".as_slice(), &[b'x'; 4 * MAX_REPLY_BYTES]].concat();
        assert!(matches!(
            read(&endless_line).await,
            Err(ClientError::Unexpected(_))
        ));
        let endless_lines = b"250-more\r\n".repeat(MAX_REPLY_BYTES);
        assert!(matches!(
            read(&endless_lines).await,
            Err(ClientError::Unexpected(_))
        ));
        assert!(matches!(
            read(b"250-cut\r\n").await,
            Err(ClientError::Io(_))
        ));
    }

    #[tokio::test]
    async fn large_messages_are_written_in_pieces_as_stuffed() {
        for message in [
            [
                b".first\r\n".as_slice(),
                &b"line\r\n".repeat(20_000),
                b"..x\r\n.\r\nend",
            ]
            .concat(),
            [&b"y\r\n".repeat(40_000)[..], b".\r\n"].concat(),
        ] {
            let mut written = Vec::new();
            super::write_data(&mut written, &message)
                .await
                .expect("write");
            assert_eq!(written, dot_stuff(&message));
            // A server reading the DATA form gets the message back.
            let mut reader = crate::data::DataReader::new(written.len());
            let read = reader.ingest(&mut written.iter());
            let mut expected = message.clone();
            if !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(read, Some(Ok(expected)));
        }
    }

    /// A stream that, as TLS does when the socket is full, takes bytes
    /// into a buffer and passes them on only when flushed.
    #[derive(Default)]
    struct WriteBehind {
        buffered: Vec<u8>,
        sent: Vec<u8>,
    }

    impl tokio::io::AsyncWrite for WriteBehind {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bytes: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.get_mut().buffered.extend_from_slice(bytes);
            std::task::Poll::Ready(Ok(bytes.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let this = self.get_mut();
            this.sent.append(&mut this.buffered);
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn commands_and_messages_leave_the_buffers() {
        let mut stream = WriteBehind::default();
        super::write_command(&mut stream, b"DATA\r\n")
            .await
            .expect("write");
        assert_eq!(stream.sent, b"DATA\r\n");
        for message in [b"small\r\n".to_vec(), b"large\r\n".repeat(20_000)] {
            let mut stream = WriteBehind::default();
            super::write_data(&mut stream, &message)
                .await
                .expect("write");
            assert!(stream.buffered.is_empty());
            assert_eq!(stream.sent, dot_stuff(&message));
        }
    }

    /// How the fake server ends its first connection after one message.
    #[derive(Clone, Copy)]
    enum Hangup {
        /// Says 421 at once and closes, as Postfix after smtpd_timeout.
        AtOnce,
        /// Answers the next command with 421 and closes.
        OnNextCommand,
    }

    /// One transaction per connection: MAIL, RCPT and `BDAT n LAST`.
    async fn serve_one_message(
        stream: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    ) -> std::io::Result<()> {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
        let mut line = String::new();
        let mut size = 0;
        while size == 0 {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(rest) = line.strip_prefix("BDAT ") {
                size = rest
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
            }
        }
        let mut body = vec![0; size];
        stream.read_exact(&mut body).await?;
        stream
            .get_mut()
            .write_all(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 queued\r\n")
            .await
    }

    async fn fake_postfix(hangup: Hangup) -> (String, tokio::task::JoinHandle<usize>) {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(async move {
            let mut connections = 0;
            while let Ok((stream, _)) = listener.accept().await {
                connections += 1;
                let mut stream = tokio::io::BufReader::new(stream);
                let mut line = String::new();
                let _ = stream.get_mut().write_all(b"220 fake\r\n").await;
                let _ = stream.read_line(&mut line).await;
                let _ = stream
                    .get_mut()
                    .write_all(b"250-fake\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
                    .await;
                if serve_one_message(&mut stream).await.is_err() {
                    continue;
                }
                if connections == 1 {
                    if let Hangup::OnNextCommand = hangup {
                        let _ = stream.read_line(&mut line).await;
                    }
                    let _ = stream
                        .get_mut()
                        .write_all(b"421 4.4.2 fake Error: timeout exceeded\r\n")
                        .await;
                    continue;
                }
                if connections == 2 {
                    return connections;
                }
            }
            connections
        });
        (addr, server)
    }

    /// A pooled connection the server closed while idle costs the next
    /// message nothing: it goes over a fresh connection, never back to the
    /// sender as Postfix's 421.
    #[tokio::test]
    async fn a_pooled_connection_closed_by_the_server_is_replaced() {
        for hangup in [Hangup::AtOnce, Hangup::OnNextCommand] {
            let (addr, server) = fake_postfix(hangup).await;
            let reinjector = super::Reinjector::new(addr, "test", 4);
            let rcpt = ["r@example.org".to_owned()];
            let first = reinjector.send("s@example.org", &rcpt, b"one\r\n").await;
            assert_eq!(first.code, 250, "{first}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let second = reinjector.send("s@example.org", &rcpt, b"two\r\n").await;
            assert_eq!(second.code, 250, "{second}");
            assert_eq!(server.await.expect("server"), 2, "one fresh connection");
        }
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(
            dot_stuff(b"a\r\n.\r\n.b\r\n."),
            b"a\r\n..\r\n..b\r\n..\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b""), b"\r\n.\r\n");
    }
}
