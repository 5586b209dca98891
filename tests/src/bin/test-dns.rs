//! The tests' DNS server as a program, for the Delta Chat tests: serves
//! zone files (as `chatmail-configure dns` prints them) on a loopback
//! address until killed. Prints `ready` once it answers.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use relay_tests::DnsServer;

#[derive(Parser)]
struct Cli {
    /// Where to answer (UDP and TCP); loopback only.
    #[arg(long)]
    listen: SocketAddr,
    /// DOMAIN=FILE: a zone file whose names are relative to DOMAIN
    /// (repeatable).
    #[arg(long = "zone", value_name = "DOMAIN=FILE")]
    zones: Vec<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !cli.listen.ip().is_loopback() {
        bail!("--listen {} is not a loopback address", cli.listen);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let server = DnsServer::start_at(cli.listen).await?;
        for zone in &cli.zones {
            let (domain, file) = zone
                .split_once('=')
                .with_context(|| format!("{zone:?} is not DOMAIN=FILE"))?;
            let text = std::fs::read_to_string(PathBuf::from(file))
                .with_context(|| format!("reading {file}"))?;
            let records =
                chatmail_configure::dns::parse_zone(&text, domain).map_err(anyhow::Error::msg)?;
            server.add_zone(&records);
        }
        println!("ready");
        std::future::pending::<()>().await;
        Ok(())
    })
}
