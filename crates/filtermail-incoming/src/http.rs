//! `POST /mxdeliv`: other chatmail relays deliver over HTTPS (nginx
//! terminates TLS and proxies here). The envelope travels in headers, the
//! raw message in the body; the answer carries the SMTP reply text.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatmail_daemon::{MessageBudget, Reservation};
use chatmail_metrics::{GaugeHold, Outcome};
use chatmail_smtp::{Envelope, MinRate, Reply};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_io_timeout::TimeoutStream;

use crate::filter::IncomingFilter;

pub const PATH: &str = "/mxdeliv";
pub const HEADER_MAIL_FROM: &str = "x-mail-from";
pub const HEADER_MAIL_TO: &str = "x-mail-to";

/// A connection silent this long, idle or mid-request, is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The whole body must arrive within this time.
const BODY_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_STREAMS_PER_CONNECTION: u32 = 16;
const MAX_RECIPIENTS: usize = 1000;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Bounds of the HTTP door.
#[derive(Clone)]
pub struct HttpLimits {
    pub max_message_size: usize,
    pub max_connections: usize,
    /// The daemon's budget for message bytes, shared with the SMTP door.
    pub budget: MessageBudget,
    pub min_rate: MinRate,
}

/// Serves `/mxdeliv` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    filter: Arc<IncomingFilter>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let max_connections = limits.max_connections;
    let limits = Arc::new(limits);
    let connections_open = filter.metrics().connections_open("http");
    chatmail_daemon::serve_connections(
        listener,
        max_connections,
        SHUTDOWN_GRACE,
        shutdown,
        move |stream, stop| {
            let filter = Arc::clone(&filter);
            let limits = Arc::clone(&limits);
            let open = GaugeHold::new(&connections_open);
            let peer = stream.peer_addr().ok().map(|address| address.ip());
            async move {
                let _open = open;
                let mut stream = TimeoutStream::new(stream);
                stream.set_read_timeout(Some(IDLE_TIMEOUT));
                stream.set_write_timeout(Some(IDLE_TIMEOUT));
                let service = hyper::service::service_fn(move |request| {
                    let filter = Arc::clone(&filter);
                    let limits = Arc::clone(&limits);
                    async move { Ok::<_, Infallible>(handle(request, peer, &filter, &limits).await) }
                });
                let builder = builder();
                let connection = builder.serve_connection(TokioIo::new(Box::pin(stream)), service);
                tokio::pin!(connection);
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    () = stop.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(%error, "HTTP connection ended with an error");
                }
            }
        },
    )
    .await;
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .keep_alive_interval(IDLE_TIMEOUT)
        .keep_alive_timeout(IDLE_TIMEOUT);
    builder
}

async fn handle(
    request: Request<Incoming>,
    peer: Option<IpAddr>,
    filter: &IncomingFilter,
    limits: &HttpLimits,
) -> Response<Full<Bytes>> {
    if request.uri().path() != PATH {
        return text(StatusCode::NOT_FOUND, "Not Found");
    }
    if request.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let envelope = match envelope(request.headers(), filter) {
        Ok(envelope) => envelope,
        Err(reply) => return refusal(&reply),
    };
    let declared_length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let metrics = filter.metrics();
    if declared_length.is_some_and(|length| length > limits.max_message_size as u64) {
        metrics.count(Outcome::TooLarge);
        return too_large();
    }
    // The bytes are reserved as they arrive, never for a declared length,
    // and charged to the client. The message keeps them until it has been
    // handled.
    let mut reservation = match client(peer, request.headers()) {
        Some(client) => limits.budget.reservation_for(&client.to_string()),
        None => limits.budget.reservation(),
    };
    let declared = declared_length.and_then(|length| usize::try_from(length).ok());
    let body = tokio::time::timeout(
        BODY_TIMEOUT,
        read_body(
            request.into_body(),
            declared.unwrap_or(0),
            limits,
            &mut reservation,
        ),
    )
    .await;
    let message = match body {
        Ok(Ok(message)) => message,
        Ok(Err(BodyError::TooLarge)) => {
            metrics.count(Outcome::TooLarge);
            return too_large();
        }
        Ok(Err(BodyError::NoMemory)) => {
            metrics.count(Outcome::Busy);
            return busy();
        }
        Ok(Err(BodyError::TooSlow)) => {
            metrics.count(Outcome::TooSlow);
            return text(StatusCode::REQUEST_TIMEOUT, &Reply::TOO_SLOW.to_string());
        }
        Ok(Err(BodyError::Read(error))) => {
            tracing::debug!(%error, "reading an HTTP body failed");
            metrics.count(Outcome::Malformed);
            return text(StatusCode::BAD_REQUEST, "Bad Request");
        }
        Err(_) => {
            metrics.count(Outcome::Timeout);
            return text(StatusCode::REQUEST_TIMEOUT, "Request Timeout");
        }
    };
    let reply = filter.deliver(&envelope, message).await;
    drop(reservation);
    if reply.is_positive() {
        text(StatusCode::OK, &reply.to_string())
    } else {
        refusal(&reply)
    }
}

/// The client a request is charged to: the address nginx names in
/// `X-Real-IP` when it is the peer (on loopback), else the peer's own.
/// A loopback peer naming nobody is not bounded by a client's share.
fn client(peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = peer?;
    if !peer.is_loopback() {
        return Some(peer);
    }
    headers.get("x-real-ip")?.to_str().ok()?.trim().parse().ok()
}

enum BodyError {
    TooLarge,
    NoMemory,
    TooSlow,
    Read(hyper::Error),
}

/// Room made at once for a body of a declared length: a small message
/// gets its buffer in one allocation; a larger one grows as its bytes
/// arrive, so that a peer declaring much and sending little holds little.
const FIRST_ROOM: usize = 256 * 1024;

/// The body as one message with CRLF line ends (HTTP clients may send
/// Unix line endings), converted as it arrives: the only copy made. The
/// buffer doubles as bytes arrive (up to the declared length and a CR on
/// each line of 32 octets or more); each size is reserved before it is
/// allocated. A body slower than the minimum rate is cut off.
async fn read_body(
    mut body: Incoming,
    declared_length: usize,
    limits: &HttpLimits,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, BodyError> {
    let expected = declared_length.min(limits.max_message_size);
    let expected_room = expected + expected / 32;
    let mut message = Vec::new();
    let mut received = 0usize;
    let mut previous = 0u8;
    // Once the budget is spent the rest of the body is read and dropped,
    // so that the sender gets the 503, not a connection closed under it.
    let mut refused = false;
    let started = tokio::time::Instant::now();
    loop {
        let rate_deadline = started + limits.min_rate.allowed_time(received);
        let Ok(frame) = tokio::time::timeout_at(rate_deadline, body.frame()).await else {
            return Err(BodyError::TooSlow);
        };
        let Some(frame) = frame else {
            return if refused {
                Err(BodyError::NoMemory)
            } else {
                Ok(message)
            };
        };
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue;
        };
        received = received.saturating_add(data.len());
        if received > limits.max_message_size {
            return Err(BodyError::TooLarge);
        }
        if refused {
            continue;
        }
        // Each LF may gain a CR: at most twice the bytes.
        let needed = message.len() + 2 * data.len();
        if needed > message.capacity() {
            let doubled = (2 * message.capacity()).max(FIRST_ROOM);
            let room = if needed <= expected_room {
                doubled.min(expected_room)
            } else {
                doubled
            }
            .max(needed);
            if !reservation.cover(room).await {
                refused = true;
                message = Vec::new();
                *reservation = limits.budget.reservation();
                continue;
            }
            message.reserve_exact(room - message.len());
        }
        append_crlf(&mut message, &data, &mut previous);
    }
}

/// Appends `chunk` with each bare LF made CRLF; `previous` carries the
/// last byte across chunks. Line ends are found by memchr, not byte by
/// byte: a 20 MB body is one pass of a vectorised search.
pub fn append_crlf(message: &mut Vec<u8>, chunk: &[u8], previous: &mut u8) {
    message.reserve(chunk.len());
    let mut start = 0;
    for line_end in memchr::memchr_iter(b'\n', chunk) {
        let before = match line_end.checked_sub(1) {
            Some(index) => chunk.get(index).copied().unwrap_or(0),
            None => *previous,
        };
        if before != b'\r' {
            message.extend_from_slice(chunk.get(start..line_end).unwrap_or_default());
            message.extend_from_slice(b"\r\n");
            start = line_end + 1;
        }
    }
    message.extend_from_slice(chunk.get(start..).unwrap_or_default());
    if let Some(&last) = chunk.last() {
        *previous = last;
    }
}

/// The envelope from `X-Mail-From` (absent: the null sender) and one
/// `X-Mail-To` per recipient, each an account of this relay.
pub fn envelope(headers: &HeaderMap, filter: &IncomingFilter) -> Result<Envelope, Reply> {
    envelope_fields(headers, filter).map_err(|(counted, reply)| {
        if !counted {
            filter.metrics().count(Outcome::BadAddress);
        }
        reply
    })
}

/// As [`envelope`]; the flag tells whether the refusal was counted
/// already (by the recipient check).
fn envelope_fields(
    headers: &HeaderMap,
    filter: &IncomingFilter,
) -> Result<Envelope, (bool, Reply)> {
    let uncounted = |reply| (false, reply);
    let mail_from = match headers.get(HEADER_MAIL_FROM) {
        None => String::new(),
        Some(value) => address(value, true).ok_or(uncounted(Reply::BAD_SENDER))?,
    };
    let mut rcpt_to = Vec::new();
    for value in headers.get_all(HEADER_MAIL_TO) {
        if rcpt_to.len() == MAX_RECIPIENTS {
            return Err(uncounted(Reply::TOO_MANY_RECIPIENTS));
        }
        let recipient = address(value, false).ok_or(uncounted(Reply::BAD_RECIPIENT))?;
        let account = filter
            .local_recipient(&recipient)
            .map_err(|reply| (true, reply))?;
        rcpt_to.push(account);
    }
    if rcpt_to.is_empty() {
        return Err(uncounted(Reply::NEED_RCPT));
    }
    Ok(Envelope {
        mail_from: Some(mail_from),
        rcpt_to,
    })
}

/// A bare address (`<...>` tolerated) as an SMTP path would carry it.
fn address(value: &HeaderValue, empty_ok: bool) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let text = text
        .strip_prefix('<')
        .and_then(|inner| inner.strip_suffix('>'))
        .unwrap_or(text);
    if text.is_empty() {
        return empty_ok.then(String::new);
    }
    let valid = text.len() <= 320
        && matches!(text.rsplit_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty())
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    valid.then(|| text.to_owned())
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\r\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A refusal: HTTP 400 whose body is the SMTP reply, which tells the
/// sending relay whether to try again (4xx) or bounce (5xx).
fn refusal(reply: &Reply) -> Response<Full<Bytes>> {
    text(StatusCode::BAD_REQUEST, &reply.to_string())
}

/// The budget for message bytes is spent: 503, with the SMTP reply
/// that tells the sending relay to try again later.
fn busy() -> Response<Full<Bytes>> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        &Reply::NO_MEMORY.to_string(),
    )
}

fn too_large() -> Response<Full<Bytes>> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &Reply::MESSAGE_TOO_BIG.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crlf_lines(chunks: &[&[u8]]) -> Vec<u8> {
        let mut message = Vec::new();
        let mut previous = 0;
        for chunk in chunks {
            append_crlf(&mut message, chunk, &mut previous);
        }
        message
    }

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(crlf_lines(&[b"a\nb\r\nc\n"]), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf_lines(&[b""]), b"");
        assert_eq!(crlf_lines(&[b"\n\n"]), b"\r\n\r\n");
        // A CRLF split between chunks stays one line end.
        assert_eq!(crlf_lines(&[b"a\r", b"\nb\n"]), b"a\r\nb\r\n");
        assert_eq!(crlf_lines(&[b"a", b"\n"]), b"a\r\n");
    }

    /// Every string of up to seven CR, LF and other octets, cut into two
    /// or three chunks at every point, converts as a byte-by-byte reading
    /// of the whole converts it.
    #[test]
    fn line_endings_convert_however_the_chunks_fall() {
        fn byte_by_byte(text: &[u8]) -> Vec<u8> {
            let mut converted = Vec::new();
            let mut before = 0;
            for &byte in text {
                if byte == b'\n' && before != b'\r' {
                    converted.push(b'\r');
                }
                converted.push(byte);
                before = byte;
            }
            converted
        }
        let alphabet = [b'\r', b'\n', b'a'];
        for len in 0..=7u32 {
            for mut code in 0..3usize.pow(len) {
                let text: Vec<u8> = (0..len)
                    .map(|_| {
                        let byte = alphabet[code % 3];
                        code /= 3;
                        byte
                    })
                    .collect();
                let expected = byte_by_byte(&text);
                for first in 0..=text.len() {
                    for second in first..=text.len() {
                        let chunks = [&text[..first], &text[first..second], &text[second..]];
                        assert_eq!(
                            crlf_lines(&chunks),
                            expected,
                            "{text:?} at {first}, {second}"
                        );
                    }
                }
            }
        }
    }

    fn filter() -> IncomingFilter {
        let config = chatmail_config::Config::from_ini_str(
            "[params]\nmail_domain = 127.0.0.1\n",
            std::path::Path::new("chatmail.ini"),
        )
        .expect("valid test config");
        IncomingFilter::new(
            &config,
            crate::filter::OriginCheck::Skip,
            chatmail_metrics::FilterMetrics::new(chatmail_metrics::Direction::Incoming),
        )
    }

    #[test]
    fn envelope_headers() {
        let filter = filter();
        let mut headers = HeaderMap::new();
        headers.append(HEADER_MAIL_TO, HeaderValue::from_static("<a@[127.0.0.1]>"));
        headers.append(HEADER_MAIL_TO, HeaderValue::from_static("B@[127.0.0.1]"));
        let parsed = envelope(&headers, &filter).unwrap();
        assert_eq!(parsed.sender(), "");
        assert_eq!(parsed.rcpt_to, ["a@[127.0.0.1]", "b@[127.0.0.1]"]);

        headers.insert(HEADER_MAIL_FROM, HeaderValue::from_static("c@example.org"));
        assert_eq!(envelope_sender(&headers), Ok("c@example.org".to_owned()));
        headers.insert(HEADER_MAIL_FROM, HeaderValue::from_static("no address"));
        assert_eq!(envelope_sender(&headers), Err(Reply::BAD_SENDER));

        headers.remove(HEADER_MAIL_FROM);
        headers.append(HEADER_MAIL_TO, HeaderValue::from_static("x y@z"));
        assert_eq!(envelope(&headers, &filter), Err(Reply::BAD_RECIPIENT));
        assert_eq!(envelope(&HeaderMap::new(), &filter), Err(Reply::NEED_RCPT));
    }

    #[test]
    fn recipients_must_be_local_accounts() {
        let filter = filter();
        for (recipient, code) in [
            ("anyone@elsewhere.example", 550),
            ("a@[127.0.0.2]", 550),
            ("a@[127.0.0.1].", 553),
            ("a%[127.0.0.1]@[127.0.0.1]", 553),
            ("@x.example:a@[127.0.0.1]", 553),
            ("a@[IPv4:127.0.0.1]", 501),
        ] {
            let mut headers = HeaderMap::new();
            headers.append(HEADER_MAIL_TO, HeaderValue::from_static("ok@[127.0.0.1]"));
            headers.append(HEADER_MAIL_TO, HeaderValue::from_str(recipient).unwrap());
            let refusal = envelope(&headers, &filter).expect_err(recipient);
            assert_eq!(refusal.code, code, "{recipient}: {refusal}");
        }
    }

    fn envelope_sender(headers: &HeaderMap) -> Result<String, Reply> {
        envelope(headers, &filter()).map(|envelope| envelope.sender().to_owned())
    }
}
