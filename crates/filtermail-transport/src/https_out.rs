//! HTTPS delivery to another chatmail relay: `POST /mxdeliv` with the
//! envelope in headers and the message as body. HTTP/2 connections are
//! kept per host and multiplexed; HTTP/1.1 ones serve one request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chatmail_smtp::Reply;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use crate::connect::{CONNECT_TIMEOUT, connect};
use crate::reply::parse_reply_text;

const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// Response headers, HTTP/1.1 (hyper's read buffer) and HTTP/2.
const MAX_ANSWER_HEADER_BYTES: usize = 64 * 1024;
const MAX_H2_HOSTS: usize = 1000;
/// A relay gets this long to take a message over HTTPS.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How an HTTPS attempt ended.
#[derive(Debug)]
pub enum HttpsOutcome {
    /// The relay answered for the message: a reply per recipient.
    Answered(Vec<Reply>),
    /// Not a chatmail relay's /mxdeliv (404, 405, or no SMTP reply in the
    /// answer, whatever its status): use SMTP.
    NotOffered(String),
    /// No connection, TLS failure, or trouble before the message was
    /// sent: use SMTP.
    Failed(String),
    /// The message was sent but no trustworthy answer came (a timeout, a
    /// broken connection, 502/503/504 without an SMTP reply): the peer
    /// may have it, so it must not be sent again at once.
    Uncertain(String),
    /// The message was sent and nothing came back within the timeout: as
    /// uncertain, and the host counts as failed (a tarpit must not hold
    /// delivery slots one message after another).
    Unanswered(String),
}

type RequestBody = SentSignal<Full<Bytes>>;

pub struct HttpsClient {
    /// Multiplexed connections by authority and certificate policy: one
    /// opened with relaxed checks is never used where checks are required.
    h2: Mutex<HashMap<String, SendRequest<RequestBody>>>,
    /// How long a request may wait for its whole answer.
    answer_timeout: Duration,
}

impl Default for HttpsClient {
    fn default() -> Self {
        Self::new(REQUEST_TIMEOUT)
    }
}

impl HttpsClient {
    #[must_use]
    pub fn new(answer_timeout: Duration) -> Self {
        Self {
            h2: Mutex::default(),
            answer_timeout,
        }
    }
}

pub struct HttpsTarget<'a> {
    pub host: &'a str,
    pub addresses: &'a [IpAddr],
    pub port: u16,
    pub tls: Arc<ClientConfig>,
    /// The certificate policy `tls` carries (part of the pool key).
    pub policy: &'static str,
}

/// A request body that says when it was handed over whole.
pub struct SentSignal<B> {
    inner: B,
    sent: Arc<AtomicBool>,
}

impl<B: Body + Unpin> Body for SentSignal<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if self.inner.is_end_stream() {
            self.sent.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl HttpsClient {
    pub async fn deliver(
        &self,
        target: &HttpsTarget<'_>,
        mail_from: &str,
        rcpt_to: &[String],
        message: &Bytes,
    ) -> HttpsOutcome {
        let authority = if target.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) {
            format!("[{}]:{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        let mut builder = Request::post(format!("https://{authority}/mxdeliv"));
        if !mail_from.is_empty() {
            builder = builder.header("X-Mail-From", mail_from);
        }
        for rcpt in rcpt_to {
            builder = builder.header("X-Mail-To", rcpt.as_str());
        }
        let sent = Arc::new(AtomicBool::new(false));
        let body = SentSignal {
            inner: Full::new(message.clone()),
            sent: Arc::clone(&sent),
        };
        let request = match builder.body(body) {
            Ok(request) => request,
            Err(error) => {
                return HttpsOutcome::NotOffered(format!("cannot build request: {error}"));
            }
        };
        let pool_key = format!("{authority} {}", target.policy);
        let exchange = async {
            let response = self.send(target, &pool_key, request).await?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|error| error.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let failure = match tokio::time::timeout(self.answer_timeout, exchange).await {
            Ok(Ok((status, body))) => return map_answer(status, &body, rcpt_to.len()),
            Ok(Err(error)) => error,
            Err(_) if sent.load(Ordering::Acquire) => {
                return HttpsOutcome::Unanswered(format!(
                    "no answer within {} s of sending the message",
                    self.answer_timeout.as_secs()
                ));
            }
            Err(_) => "timed out".to_owned(),
        };
        if sent.load(Ordering::Acquire) {
            HttpsOutcome::Uncertain(format!("after the message was sent: {failure}"))
        } else {
            HttpsOutcome::Failed(failure)
        }
    }

    async fn send(
        &self,
        target: &HttpsTarget<'_>,
        pool_key: &str,
        request: Request<RequestBody>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let pooled = self.pooled_h2(pool_key);
        if let Some(mut sender) = pooled {
            if sender.ready().await.is_ok() {
                return sender
                    .send_request(request)
                    .await
                    .map_err(|e| e.to_string());
            }
            self.forget_h2(pool_key);
        }
        let tcp = connect(target.addresses, target.port).await?;
        let name = crate::tls::server_name(target.host)?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TlsConnector::from(Arc::clone(&target.tls)).connect(name, tcp),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|error| format!("TLS: {error}"))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .max_header_list_size(MAX_ANSWER_HEADER_BYTES as u32)
                    .handshake(io)
                    .await
                    .map_err(|error| error.to_string())?;
            tokio::spawn(connection);
            let response = sender.send_request(request);
            self.keep_h2(pool_key, sender);
            response.await.map_err(|error| error.to_string())
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
                .max_buf_size(MAX_ANSWER_HEADER_BYTES)
                .handshake(io)
                .await
                .map_err(|error| error.to_string())?;
            tokio::spawn(connection);
            sender
                .send_request(request)
                .await
                .map_err(|error| error.to_string())
        }
    }
}

impl HttpsClient {
    fn pooled_h2(&self, authority: &str) -> Option<SendRequest<RequestBody>> {
        self.h2
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(authority)
            .cloned()
    }

    fn forget_h2(&self, authority: &str) {
        self.h2
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(authority);
    }

    fn keep_h2(&self, authority: &str, sender: SendRequest<RequestBody>) {
        let mut pool = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() >= MAX_H2_HOSTS {
            pool.retain(|_, sender| !sender.is_closed());
        }
        if pool.len() < MAX_H2_HOSTS {
            pool.insert(authority.to_owned(), sender);
        }
    }
}

/// What an answer means. Only an SMTP reply in the body is a mail
/// server's answer: a 2xx with a 2xx reply is delivery, a 4xx/5xx with a
/// 4xx/5xx reply is that reply, 413 is "too big". 502, 503 and 504
/// without a reply come from a proxy in front of a relay that may have
/// taken the message. Anything else (404, 405, a page from a web server
/// that is no relay, whatever its status) means no /mxdeliv here.
fn map_answer(status: StatusCode, body: &[u8], recipients: usize) -> HttpsOutcome {
    let text = String::from_utf8_lossy(body);
    let smtp = parse_reply_text(&text);
    if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
        return HttpsOutcome::NotOffered(format!("HTTP {status}"));
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        let reply = smtp.unwrap_or(Reply::new(
            552,
            "5.3.4",
            "Message too big for the recipient's relay",
        ));
        return HttpsOutcome::Answered(vec![reply; recipients]);
    }
    let failed = status.is_client_error() || status.is_server_error();
    match smtp {
        Some(reply) if status.is_success() && reply.is_positive() => {
            HttpsOutcome::Answered(vec![reply; recipients])
        }
        Some(reply) if failed && !reply.is_positive() => {
            HttpsOutcome::Answered(vec![reply; recipients])
        }
        _ if matches!(status.as_u16(), 502..=504) => {
            HttpsOutcome::Uncertain(format!("HTTP {status} without an SMTP reply"))
        }
        _ => HttpsOutcome::NotOffered(format!("HTTP {status} without a mail answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(outcome: HttpsOutcome) -> Vec<u16> {
        match outcome {
            HttpsOutcome::Answered(replies) => replies.iter().map(|r| r.code).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_are_mapped_deliberately() {
        assert_eq!(
            replies(map_answer(StatusCode::OK, b"250 2.0.0 OK\r\n", 2)),
            [250, 250]
        );
        assert_eq!(
            replies(map_answer(
                StatusCode::BAD_REQUEST,
                b"523 Encryption Needed\r\n",
                1
            )),
            [523]
        );
        assert_eq!(
            replies(map_answer(
                StatusCode::BAD_REQUEST,
                b"451 4.7.5 try later",
                1
            )),
            [451]
        );
        assert_eq!(
            replies(map_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                b"451 4.3.1 busy",
                1
            )),
            [451]
        );
        assert_eq!(
            replies(map_answer(StatusCode::PAYLOAD_TOO_LARGE, b"", 1)),
            [552]
        );
        // Not a relay's answer, whatever the status: SMTP is tried.
        for (status, body) in [
            (StatusCode::OK, &b""[..]),
            (StatusCode::OK, b"<html>Welcome to nginx!</html>"),
            (StatusCode::OK, b"550 a refusal with a success status"),
            (StatusCode::CREATED, b"{\"ok\": true}"),
            (StatusCode::NOT_FOUND, b"Not Found"),
            (StatusCode::METHOD_NOT_ALLOWED, b"550 no"),
            (StatusCode::BAD_REQUEST, b"<html>bad request</html>"),
            (StatusCode::FOUND, b""),
        ] {
            assert!(
                matches!(map_answer(status, body, 1), HttpsOutcome::NotOffered(_)),
                "{status} {body:?}"
            );
        }
        // A proxy's gateway errors: the relay behind may have the message.
        for status in [
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT,
        ] {
            assert!(matches!(
                map_answer(status, b"<html>gateway</html>", 1),
                HttpsOutcome::Uncertain(_)
            ));
        }
    }
}
