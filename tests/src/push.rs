//! A stand-in for the push notification service: HTTPS (HTTP/2 or 1.1)
//! with a certificate from a test CA, recording each token posted and
//! answering with scripted statuses (200 once the script is used up).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::tls::TestCa;

#[derive(Default)]
struct State {
    received: Vec<(Instant, String)>,
    script: VecDeque<u16>,
    /// Answer used once the script is empty.
    default_status: Option<u16>,
    /// Keep no record of tokens (benchmarks).
    count_only: bool,
}

pub struct PushServer {
    port: u16,
    state: Arc<Mutex<State>>,
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PushServer {
    /// Starts on 127.0.0.1 at a free port.
    pub async fn start(ca: &TestCa) -> Result<Self> {
        let acceptor = TlsAcceptor::from(Arc::new(ca.server_config()?));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State::default()));
        let count = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(
            listener,
            acceptor,
            Arc::clone(&state),
            Arc::clone(&count),
        ));
        Ok(Self {
            port,
            state,
            count,
            task,
        })
    }

    #[must_use]
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/notify", self.port)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The statuses of the next requests, in order.
    pub fn script(&self, statuses: &[u16]) {
        self.state().script.extend(statuses);
    }

    /// The status once the script is used up (200 unless set).
    pub fn set_default_status(&self, status: u16) {
        self.state().default_status = Some(status);
    }

    pub fn count_only(&self) {
        self.state().count_only = true;
    }

    /// Every request so far: when it came and the token it carried.
    #[must_use]
    pub fn received(&self) -> Vec<(Instant, String)> {
        self.state().received.clone()
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for PushServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<Mutex<State>>,
    count: Arc<AtomicU64>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        let count = Arc::clone(&count);
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let state = Arc::clone(&state);
                    let count = Arc::clone(&count);
                    async move {
                        let body = request.into_body().collect().await.map(|b| b.to_bytes());
                        let token = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                        count.fetch_add(1, Ordering::Relaxed);
                        let status = {
                            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                            if !state.count_only {
                                state.received.push((Instant::now(), token));
                            }
                            let default = state.default_status.unwrap_or(200);
                            state.script.pop_front().unwrap_or(default)
                        };
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = StatusCode::from_u16(status)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        Ok::<_, Infallible>(response)
                    }
                },
            );
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
