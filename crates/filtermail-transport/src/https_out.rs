//! HTTPS delivery to another chatmail relay: `POST /mxdeliv` with the
//! envelope in headers and the message as body. HTTP/2 connections are
//! kept per host and multiplexed; HTTP/1.1 ones serve one request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chatmail_smtp::Reply;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use crate::connect::{CONNECT_TIMEOUT, connect};
use crate::reply::parse_reply_text;

const MAX_ANSWER_BYTES: usize = 16 * 1024;
const MAX_H2_HOSTS: usize = 1000;
/// A relay gets this long to take a message over HTTPS.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How an HTTPS attempt ended.
#[derive(Debug)]
pub enum HttpsOutcome {
    /// The relay answered for the message: a reply per recipient.
    Answered(Vec<Reply>),
    /// Not a chatmail relay's /mxdeliv (404, 405, or not a mail answer):
    /// use SMTP.
    NotOffered(String),
    /// No connection, TLS failure, timeout: use SMTP.
    Failed(String),
}

#[derive(Default)]
pub struct HttpsClient {
    h2: Mutex<HashMap<String, SendRequest<Full<Bytes>>>>,
}

pub struct HttpsTarget<'a> {
    pub host: &'a str,
    pub addresses: &'a [IpAddr],
    pub port: u16,
    pub tls: Arc<ClientConfig>,
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
        let request = match builder.body(Full::new(message.clone())) {
            Ok(request) => request,
            Err(error) => {
                return HttpsOutcome::NotOffered(format!("cannot build request: {error}"));
            }
        };
        let exchange = async {
            let response = self.send(target, &authority, request).await?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|error| error.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return HttpsOutcome::Failed(error),
            Err(_) => return HttpsOutcome::Failed("timed out".into()),
        };
        map_answer(status, &body, rcpt_to.len())
    }

    async fn send(
        &self,
        target: &HttpsTarget<'_>,
        authority: &str,
        request: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let pooled = self.pooled_h2(authority);
        if let Some(mut sender) = pooled {
            if sender.ready().await.is_ok() {
                return sender
                    .send_request(request)
                    .await
                    .map_err(|e| e.to_string());
            }
            self.forget_h2(authority);
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
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|error| error.to_string())?;
            tokio::spawn(connection);
            let response = sender.send_request(request);
            self.keep_h2(authority, sender);
            response.await.map_err(|error| error.to_string())
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
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
    fn pooled_h2(&self, authority: &str) -> Option<SendRequest<Full<Bytes>>> {
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

    fn keep_h2(&self, authority: &str, sender: SendRequest<Full<Bytes>>) {
        let mut pool = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() >= MAX_H2_HOSTS {
            pool.retain(|_, sender| !sender.is_closed());
        }
        if pool.len() < MAX_H2_HOSTS {
            pool.insert(authority.to_owned(), sender);
        }
    }
}

/// What an answer means: 2xx is delivery; 4xx/5xx whose body is an SMTP
/// reply is that reply; anything else is not a chatmail relay's answer.
fn map_answer(status: StatusCode, body: &[u8], recipients: usize) -> HttpsOutcome {
    let text = String::from_utf8_lossy(body);
    let smtp = parse_reply_text(&text);
    if status.is_success() {
        let reply = smtp
            .filter(Reply::is_positive)
            .unwrap_or_else(|| Reply::new(250, "2.0.0", "Delivered over HTTPS"));
        return HttpsOutcome::Answered(vec![reply; recipients]);
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        let reply = smtp.unwrap_or(Reply::new(
            552,
            "5.3.4",
            "Message too big for the recipient's relay",
        ));
        return HttpsOutcome::Answered(vec![reply; recipients]);
    }
    match smtp {
        Some(reply)
            if (status.is_client_error() || status.is_server_error())
                && status != StatusCode::NOT_FOUND
                && status != StatusCode::METHOD_NOT_ALLOWED
                && !reply.is_positive() =>
        {
            HttpsOutcome::Answered(vec![reply; recipients])
        }
        _ => HttpsOutcome::NotOffered(format!("HTTP {status}")),
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
        assert_eq!(replies(map_answer(StatusCode::OK, b"", 1)), [250]);
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
            replies(map_answer(StatusCode::PAYLOAD_TOO_LARGE, b"", 1)),
            [552]
        );
        for (status, body) in [
            (StatusCode::NOT_FOUND, &b"Not Found"[..]),
            (StatusCode::METHOD_NOT_ALLOWED, b"550 no"),
            (StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>"),
            (StatusCode::FOUND, b""),
        ] {
            assert!(matches!(
                map_answer(status, body, 1),
                HttpsOutcome::NotOffered(_)
            ));
        }
    }
}
