use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Ports handed to test servers: below Linux's ephemeral range (32768 and
/// up), where the kernel picks the local port of every outgoing
/// connection. A port taken from that range can be occupied by a busy
/// test's client socket by the time a daemon binds it, and Linux refuses
/// that bind even with SO_REUSEADDR. Also below the Delta Chat tests' and
/// the local relay's port bases (20000 and up).
const TEST_PORTS: std::ops::Range<u16> = 10_000..20_000;

/// Where this process's next port search starts, within [`TEST_PORTS`].
static NEXT_PORT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A TCP port on 127.0.0.1 that nothing uses. Ports are handed out in
/// turn, so tests running in parallel never get the same one; each process
/// starts at an offset from its pid so that two test programs run side by
/// side rarely meet.
pub fn free_port() -> Result<u16> {
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT_PORT.compare_exchange(
        u32::MAX,
        std::process::id() % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT_PORT.fetch_add(1, Ordering::Relaxed) % span;
        let port = TEST_PORTS.start + u16::try_from(offset)?;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port in {TEST_PORTS:?}")
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, limit: Duration) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {limit:?}")
}

/// Waits until `path` exists.
pub fn wait_for_path(path: &Path, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if path.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{} did not appear after {limit:?}", path.display())
}

/// Prints a server's log to stderr, which the test runner shows for
/// failed tests.
pub fn dump_log(name: &str, path: &Path) {
    match fs::read_to_string(path) {
        Ok(text) => eprintln!(
            "----- {name} log ({}) -----\n{text}----- end of {name} log -----",
            path.display()
        ),
        Err(err) => eprintln!("----- {name} log {} unreadable: {err}", path.display()),
    }
}

/// Waits until `dir` holds at least `count` files and returns them.
pub fn wait_for_files(
    dir: &Path,
    count: usize,
    limit: Duration,
) -> Result<Vec<std::path::PathBuf>> {
    let deadline = Instant::now() + limit;
    loop {
        let files: Vec<_> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .collect()
            })
            .unwrap_or_default();
        if files.len() >= count {
            return Ok(files);
        }
        if Instant::now() > deadline {
            bail!(
                "{} holds {} files, not {count}, after {limit:?}",
                dir.display(),
                files.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a child with SIGTERM (letting a server stop its own children),
/// and with SIGKILL if it has not exited within `grace`.
pub fn terminate(child: &mut std::process::Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A memory figure of process `pid` in KiB from /proc (`VmRSS`,
/// `VmHWM`...); 0 when it cannot be read.
#[must_use]
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Asserts that process `pid`, resident at `idle_kib` before, has grown
/// at its peak by less than one and a half times `message_len` bytes:
/// it held the message, and no whole copy of it besides.
pub fn assert_held_one_copy(pid: u32, idle_kib: u64, message_len: usize) {
    let grown_kib = proc_status_kib(pid, "VmHWM").saturating_sub(idle_kib);
    let message_kib = (message_len / 1024) as u64;
    println!("message {message_kib} KiB, the process grew by {grown_kib} KiB");
    assert!(
        grown_kib < message_kib * 3 / 2,
        "the process grew by {grown_kib} KiB for a message of {message_kib} KiB"
    );
}

/// Raises this process's open-file limit to its hard limit, for tests
/// with a thousand connections at once (daemons started afterwards
/// inherit it, as systemd's LimitNOFILE gives them theirs).
pub fn raise_fd_limit() -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}
