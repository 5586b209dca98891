//! A stand-in for HTTPS services our daemons call: the push notification
//! service, and another relay's `/mxdeliv`. HTTPS (HTTP/2 or 1.1) with a
//! certificate from a test CA; it records each request (body, and the
//! envelope headers of /mxdeliv) and answers with scripted statuses and
//! bodies (200 with an empty body once the script is used up; `/mxdeliv`
//! answers a 2xx without a scripted body with a relay's `250` reply).

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

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub path: String,
    pub mail_from: Option<String>,
    pub mail_to: Vec<String>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct State {
    received: Vec<(Instant, String)>,
    requests: Vec<Recorded>,
    script: VecDeque<(u16, String)>,
    /// Answer used once the script is empty.
    default_status: Option<u16>,
    /// Keep no record of tokens (benchmarks).
    count_only: bool,
    /// Wait this long before each answer (a slow remote).
    delay: std::time::Duration,
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
        self.state()
            .script
            .extend(statuses.iter().map(|status| (*status, String::new())));
    }

    /// The statuses and bodies of the next answers, in order.
    pub fn script_answers(&self, answers: &[(u16, &str)]) {
        self.state().script.extend(
            answers
                .iter()
                .map(|(status, body)| (*status, (*body).to_owned())),
        );
    }

    /// Every request so far, with its headers.
    #[must_use]
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The status once the script is used up (200 unless set).
    pub fn set_default_status(&self, status: u16) {
        self.state().default_status = Some(status);
    }

    /// Makes every answer come this much later.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.state().delay = delay;
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
                        let header = |name: &str| -> Vec<String> {
                            request
                                .headers()
                                .get_all(name)
                                .iter()
                                .filter_map(|value| value.to_str().ok().map(str::to_owned))
                                .collect()
                        };
                        let mail_from = header("x-mail-from").into_iter().next();
                        let mail_to = header("x-mail-to");
                        let path = request.uri().path().to_owned();
                        let mxdeliv = path == "/mxdeliv";
                        let body = request.into_body().collect().await.map(|b| b.to_bytes());
                        let body = body.unwrap_or_default().to_vec();
                        count.fetch_add(1, Ordering::Relaxed);
                        let (status, answer, delay) = {
                            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                            if !state.count_only {
                                let token = String::from_utf8_lossy(&body).into_owned();
                                state.received.push((Instant::now(), token));
                                state.requests.push(Recorded {
                                    at: Instant::now(),
                                    path,
                                    mail_from,
                                    mail_to,
                                    body,
                                });
                            }
                            let default = (state.default_status.unwrap_or(200), String::new());
                            let (status, mut answer) = state.script.pop_front().unwrap_or(default);
                            // Without a scripted body, /mxdeliv answers as
                            // a relay does: the SMTP reply of a delivery.
                            if mxdeliv && answer.is_empty() && (200..300).contains(&status) {
                                answer = "250 2.0.0 Ok: queued\r\n".to_owned();
                            }
                            (status, answer, state.delay)
                        };
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let mut response = Response::new(Full::new(Bytes::from(answer)));
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
