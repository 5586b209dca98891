//! Postfix only listens on addresses of the machine's interfaces, and
//! only 127.0.0.1 is one by default: other loopback addresses are added
//! to `lo` (until the next reboot).

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result};

use crate::processes::run;

pub fn ensure_assigned(address: Ipv4Addr) -> Result<()> {
    let output = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "lo"])
        .output()
        .context("running ip (package iproute2)")?;
    let listed = String::from_utf8_lossy(&output.stdout);
    let assigned = listed
        .split_whitespace()
        .filter_map(|word| word.split_once('/'))
        .any(|(ip, _)| ip.parse() == Ok(address));
    if !assigned {
        println!("adding {address} to the loopback interface (ip addr add {address}/32 dev lo)");
        run(
            Command::new("ip")
                .args(["addr", "add"])
                .arg(format!("{address}/32"))
                .args(["dev", "lo"]),
            "ip addr add",
        )?;
    }
    Ok(())
}
