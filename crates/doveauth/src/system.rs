//! Reads how loaded the machine is, for the creation rules.

use std::fs;
use std::io;
use std::path::Path;

use crate::policy::Capacity;

/// Current load, available memory and free space on the file system that
/// holds `mailboxes_dir`.
pub fn read_capacity(mailboxes_dir: &Path) -> io::Result<Capacity> {
    Ok(Capacity {
        load_1m: parse_loadavg(&fs::read_to_string("/proc/loadavg")?)?,
        available_memory: parse_mem_available(&fs::read_to_string("/proc/meminfo")?)?,
        free_disk_space: free_space(mailboxes_dir)?,
    })
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {what}"))
}

fn parse_loadavg(text: &str) -> io::Result<f64> {
    text.split_whitespace()
        .next()
        .and_then(|first| first.parse().ok())
        .ok_or_else(|| invalid("/proc/loadavg"))
}

fn parse_mem_available(text: &str) -> io::Result<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| invalid("MemAvailable in /proc/meminfo"))
}

/// Space available to unprivileged users, as `df` reports it. The
/// mailboxes directory may not exist yet on a new relay; then its
/// nearest existing ancestor decides.
fn free_space(dir: &Path) -> io::Result<u64> {
    let existing = dir
        .ancestors()
        .find(|path| path.exists())
        .unwrap_or_else(|| Path::new("/"));
    let stats = nix::sys::statvfs::statvfs(existing)?;
    Ok(stats
        .blocks_available()
        .saturating_mul(stats.fragment_size()))
}

#[cfg(test)]
mod tests {
    use super::{parse_loadavg, parse_mem_available, read_capacity};

    #[test]
    fn parses_proc_files() {
        assert!(
            (parse_loadavg("0.52 0.58 0.59 2/1234 5678\n").expect("parse") - 0.52).abs() < 1e-9
        );
        assert!(parse_loadavg("").is_err());
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(meminfo).expect("parse"), 2048 * 1024);
        assert!(parse_mem_available("MemTotal: 1 kB\n").is_err());
    }

    #[test]
    fn reads_this_machine() {
        let capacity = read_capacity(std::path::Path::new("/nonexistent/mail")).expect("read");
        assert!(capacity.load_1m >= 0.0);
        assert!(capacity.available_memory > 0);
        assert!(capacity.free_disk_space > 0);
    }
}
