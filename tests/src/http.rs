//! A minimal HTTP client for `/mxdeliv`, over HTTP/1.1 or cleartext
//! HTTP/2 (prior knowledge), as a sending relay's transport would use.

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

/// An answer: the HTTP status and the body text.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub text: String,
}

/// Sends `request` to 127.0.0.1:`port` on a new connection.
pub async fn http_request(
    port: u16,
    version: HttpVersion,
    request: Request<Full<Bytes>>,
) -> Result<HttpAnswer> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let io = TokioIo::new(stream);
    let response = match version {
        HttpVersion::Http1 => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        }
        HttpVersion::Http2 => {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        }
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(HttpAnswer {
        status,
        text: String::from_utf8_lossy(&body).trim_end().to_owned(),
    })
}

/// `POST /mxdeliv` with the envelope in X-Mail-From / X-Mail-To headers.
pub async fn post_mxdeliv(
    port: u16,
    version: HttpVersion,
    mail_from: Option<&str>,
    rcpt_to: &[&str],
    message: &[u8],
) -> Result<HttpAnswer> {
    let mut builder = Request::post(format!("http://127.0.0.1:{port}/mxdeliv"));
    if let Some(from) = mail_from {
        builder = builder.header("X-Mail-From", from);
    }
    for rcpt in rcpt_to {
        builder = builder.header("X-Mail-To", *rcpt);
    }
    let request = builder.body(Full::new(Bytes::copy_from_slice(message)))?;
    http_request(port, version, request).await
}
