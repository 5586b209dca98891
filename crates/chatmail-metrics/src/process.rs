//! The process's own figures, read from /proc at each scrape, under the
//! names Prometheus client libraries give them.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads /proc/self at each scrape; a figure that cannot be read is left
/// out rather than failing the scrape.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(process) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = process.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            encode(
                &mut encoder,
                "process_cpu_seconds",
                "User and system CPU time spent.",
                &cpu,
            )?;
            let rss = stat.rss.saturating_mul(procfs::page_size());
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size.",
                rss,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size.",
                stat.vsize,
            )?;
            if let Ok(boot) = procfs::boot_time_secs() {
                let start = boot as f64 + stat.starttime as f64 / ticks;
                let start_gauge = ConstGauge::new(start);
                encode(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch.",
                    &start_gauge,
                )?;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |now| now.as_secs_f64());
                let uptime = ConstGauge::new((now - start).max(0.0));
                encode(
                    &mut encoder,
                    "process_uptime_seconds",
                    "Seconds since the process started.",
                    &uptime,
                )?;
            }
        }
        if let Ok(open) = process.fd_count() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors.",
                open as u64,
            )?;
        }
        if let Ok(limits) = process.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Limit of open file descriptors.",
                max,
            )?;
        }
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encode(encoder, name, help, &ConstGauge::new(value))
}

fn encode(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}
