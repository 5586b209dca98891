//! `GET /metrics` over HTTP/1.1 for a Prometheus scraper: few connections,
//! short timeouts, nothing read from the peer but a request head.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chatmail_config::{Config, MetricsDaemon};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

pub const PATH: &str = "/metrics";

/// A scraper needs one connection; a few more let an operator's curl in.
const MAX_CONNECTIONS: usize = 8;
/// A request head must arrive within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// However busy, a connection is closed after this long (scrapers
/// reconnect).
const CONNECTION_DEADLINE: Duration = Duration::from_secs(120);
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Running connections get this long to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The bound metrics socket of a daemon, bound before the daemon serves
/// mail so that a taken address stops it at start, naming the key.
pub struct Endpoint {
    listener: std::net::TcpListener,
    key: String,
}

impl Endpoint {
    /// Binds `addr`, the value of chatmail.ini's `key`.
    pub fn bind(key: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("{key}: cannot listen on {addr}"))?;
        listener
            .set_nonblocking(true)
            .with_context(|| format!("{key}: setting up {addr}"))?;
        Ok(Self {
            listener,
            key: key.to_owned(),
        })
    }

    /// Binds the address chatmail.ini gives `daemon`; `None` where its
    /// key is empty.
    pub fn for_daemon(config: &Config, daemon: MetricsDaemon) -> anyhow::Result<Option<Self>> {
        config
            .metrics_listen(daemon)
            .map(|addr| Self::bind(daemon.config_key(), addr))
            .transpose()
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `registry` in a task of the current tokio runtime until the
    /// runtime stops; nothing for `None`.
    pub fn spawn_optional(endpoint: Option<Self>, registry: Registry) -> anyhow::Result<()> {
        endpoint.map_or(Ok(()), |endpoint| endpoint.spawn(registry))
    }

    /// Serves `registry` in a task of the current tokio runtime until the
    /// runtime stops.
    pub fn spawn(self, registry: Registry) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .with_context(|| format!("{}: setting up the listener", self.key))?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics at {PATH}");
        }
        tokio::spawn(serve(listener, Arc::new(registry)));
        Ok(())
    }
}

async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    chatmail_daemon::serve_connections(
        listener,
        MAX_CONNECTIONS,
        SHUTDOWN_GRACE,
        std::future::pending(),
        move |stream, _stop| {
            let registry = Arc::clone(&registry);
            async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&request, &registry);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEADER_BYTES)
                    .serve_connection(TokioIo::new(stream), service);
                // A connection past its deadline is simply dropped.
                if let Ok(Err(error)) = tokio::time::timeout(CONNECTION_DEADLINE, connection).await
                {
                    tracing::debug!(%error, "metrics connection failed");
                }
            }
        },
    )
    .await;
}

fn respond(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if request.uri().path() != PATH {
        return text(StatusCode::NOT_FOUND, "only /metrics is served here\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut body = String::new();
    if let Err(error) = prometheus_text::encode(&mut body, registry) {
        tracing::error!(%error, "cannot encode the metrics");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn ask(addr: SocketAddr, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn serves_the_registry_at_metrics_only() {
        let mut registry = crate::registry();
        let counter = Counter::<u64>::default();
        registry.register("test_events", "Events", counter.clone());
        counter.inc_by(3);
        let endpoint = Endpoint::bind("metrics_listen_test", "127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = endpoint.local_addr().expect("addr");
        endpoint.spawn(registry).expect("spawn");

        let answer = ask(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("text/plain; version=0.0.4"), "{answer}");
        assert!(answer.contains("\ntest_events_total 3\n"), "{answer}");
        assert!(answer.contains("\nprocess_open_fds "), "{answer}");
        assert!(
            answer.contains("\nprocess_resident_memory_bytes "),
            "{answer}"
        );

        let answer = ask(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let answer = ask(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    }

    /// Peers that connect and send nothing hold a connection slot only
    /// until the header timeout; then a scraper gets in again.
    #[tokio::test]
    async fn silent_peers_cannot_keep_the_scraper_out() {
        let endpoint = Endpoint::bind("metrics_listen_test", "127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = endpoint.local_addr().expect("addr");
        endpoint.spawn(crate::registry()).expect("spawn");
        let mut silent = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        let started = std::time::Instant::now();
        let scrape = ask(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let answer = tokio::time::timeout(HEADER_TIMEOUT * 2, scrape)
            .await
            .expect("answered once the silent peers timed out");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() >= HEADER_TIMEOUT / 2,
            "every slot was taken: the scrape waited"
        );
    }

    #[test]
    fn a_taken_address_names_the_key() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let error = Endpoint::bind("metrics_listen_doveauth", addr)
            .err()
            .expect("the address is taken");
        let message = format!("{error:#}");
        assert!(message.contains("metrics_listen_doveauth"), "{message}");
        assert!(message.contains(&addr.to_string()), "{message}");
    }
}
