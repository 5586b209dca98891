//! The HTTP client that posts device tokens to the notification service:
//! one pooled client (HTTP/2 when the server offers it, so all
//! notifications share one connection), TLS through rustls with the
//! system's CAs plus an optional extra CA file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// A notification not answered within this time is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the service said about one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 2xx.
    Delivered,
    /// 410: the token is dead; forget it.
    TokenGone,
    /// Another answer a retry would not change (400, 403, 404, 413, a
    /// redirect...): the notification is dropped.
    Refused(String),
    /// A network error, a timeout, 429 or a 5xx: try again later.
    Retry(String),
}

/// What a status means for the notification.
fn answer(status: StatusCode) -> Answer {
    if status.is_success() {
        Answer::Delivered
    } else if status == StatusCode::GONE {
        Answer::TokenGone
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Answer::Retry(format!("status {status}"))
    } else {
        Answer::Refused(format!("status {status}"))
    }
}

pub struct PushClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
}

impl PushClient {
    pub fn new(url: &str, extra_ca: Option<&Path>) -> anyhow::Result<Self> {
        let url: Uri = url
            .parse()
            .with_context(|| format!("notification URL {url}"))?;
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system CA that rustls cannot parse is skipped, not fatal.
            let _ = roots.add(cert);
        }
        if let Some(path) = extra_ca {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
            {
                let cert = cert.with_context(|| format!("reading {}", path.display()))?;
                roots.add(cert).context("adding the extra CA")?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self { client, url })
    }

    /// Posts `token` as the body.
    pub async fn send(&self, token: &str) -> Answer {
        let request = match Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::copy_from_slice(token.as_bytes())))
        {
            Ok(request) => request,
            Err(error) => return Answer::Retry(error.to_string()),
        };
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            // Read the (small) body so the connection can be reused.
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(status)) => answer(status),
            Ok(Err(error)) => Answer::Retry(error.to_string()),
            Err(_) => Answer::Retry("timeout".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Answer, StatusCode, answer};

    #[test]
    fn only_what_may_change_is_retried() {
        for code in [200, 202, 204] {
            assert_eq!(
                answer(StatusCode::from_u16(code).unwrap()),
                Answer::Delivered
            );
        }
        assert_eq!(answer(StatusCode::GONE), Answer::TokenGone);
        for code in [429, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(matches!(answer(status), Answer::Retry(_)), "{code}");
        }
        for code in [301, 400, 401, 403, 404, 413, 422] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(matches!(answer(status), Answer::Refused(_)), "{code}");
        }
    }
}
