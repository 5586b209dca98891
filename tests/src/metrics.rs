//! Scraping the metrics endpoints of the daemons (and Dovecot's stats
//! service) the way Prometheus does, and reading single series.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use bytes::Bytes;
use chatmail_config::MetricsDaemon;
use http_body_util::Full;
use hyper::Request;

use crate::http::{HttpVersion, http_request};
use crate::process::free_port;

/// chatmail.ini keys giving every metrics endpoint its own free loopback
/// port, so that relays of parallel tests do not collide.
pub fn metrics_ini_values() -> Result<Vec<(String, String)>> {
    MetricsDaemon::ALL
        .iter()
        .map(|daemon| {
            Ok((
                daemon.config_key().to_owned(),
                format!("127.0.0.1:{}", free_port()?),
            ))
        })
        .collect()
}

/// One scrape: every series with its value.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    series: BTreeMap<String, f64>,
}

impl Scrape {
    /// `GET /metrics` on 127.0.0.1:`port`.
    pub async fn fetch(port: u16) -> Result<Self> {
        let request = Request::get("/metrics")
            .header("host", format!("127.0.0.1:{port}"))
            .body(Full::new(Bytes::new()))?;
        let answer = http_request(port, HttpVersion::Http1, request)
            .await
            .with_context(|| format!("scraping 127.0.0.1:{port}"))?;
        anyhow::ensure!(
            answer.status == 200,
            "scraping 127.0.0.1:{port}: HTTP {}: {}",
            answer.status,
            answer.text
        );
        Ok(Self::parse(answer.text))
    }

    /// Reads the text format: `name{labels} value` lines, comments aside.
    #[must_use]
    pub fn parse(text: String) -> Self {
        let series = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.trim().to_owned(), value.trim().parse().ok()?))
            })
            .collect();
        Self { text, series }
    }

    /// The value of one series, written as the endpoint writes it:
    /// `filtermail_messages_total{direction="outgoing",outcome="accepted"}`.
    pub fn value(&self, series: &str) -> Result<f64> {
        self.series
            .get(series)
            .copied()
            .with_context(|| format!("no series {series} in:\n{}", self.text))
    }

    /// The sum over every series whose name (before any labels) is `name`.
    #[must_use]
    pub fn sum(&self, name: &str) -> f64 {
        self.series
            .iter()
            .filter(|(series, _)| series.split('{').next() == Some(name))
            .map(|(_, value)| value)
            .sum()
    }
}
